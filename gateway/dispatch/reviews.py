"""Submitting template versions to the vendors' review, durably, and taking their verdicts.

A ``pending`` review row is written with the template version itself; this loop
submits it (retrying with backoff), and the vendor's signed callback records
approval or rejection. The router only uses a vendor for versions it approved.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace

from cards.sms import compose
from cards.vendors import Skip, vendor_payload
from gateway.clock import Clock
from gateway.dispatch.ports import ReviewResult, TemplateReviewer
from gateway.dispatch.worker import PollingWorker
from gateway.domain.retry import backoff
from gateway.errors import InvalidInput, PermanentProviderError, RetryableProviderError
from gateway.logging import get_logger
from gateway.storage.base import ReviewState, Store, parse_template_ref
from gateway.usecases.catalog import Catalog

log = get_logger("gateway.reviews")


class ReviewSubmitter(PollingWorker):
    name = "reviews"
    idle_s = 1.0

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        reviewers: Mapping[str, TemplateReviewer],
        clock: Clock,
        callback_base: str,
        *,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self._store = store
        self._catalog = catalog
        self._reviewers = reviewers
        self._clock = clock
        self._callback_base = callback_base
        self._rng = rng or random.Random()

    async def run_once(self) -> int:
        """Submits every review that is due; answers how many it tried."""
        due = await self._store.due_reviews(self._clock.now(), 50)
        for review in due:
            await self._submit(review)
        return len(due)

    async def _submit(self, review: ReviewState) -> None:
        now = self._clock.now()
        reviewer = self._reviewers.get(review.vendor)
        try:
            loaded = await self._catalog.template(
                review.tenant_id, review.template_id, review.version
            )
        except InvalidInput:  # a version stored before a check it fails: nothing to review
            await self._store.update_review(
                replace(review, state="not_applicable", reason="fails_checks", updated_at=now)
            )
            return
        if reviewer is None or loaded is None or loaded.compiled.card is None:
            await self._store.update_review(
                replace(review, state="not_applicable", reason="no_reviewer", updated_at=now)
            )
            return
        spec = loaded.spec
        brand = await self._catalog.brand(review.tenant_id, spec.brand_id)
        brand_info = brand.model_dump(mode="json") if brand else {"name": "", "signature": ""}
        try:
            card = vendor_payload(
                review.vendor, loaded.compiled.card, spec.kind, brand_info
            ).payload
        except Skip as skip:
            await self._store.update_review(
                replace(review, state="not_applicable", reason=skip.reason, updated_at=now)
            )
            return
        sms_text = compose(
            brand_info.get("signature", ""),
            spec.fallback_text,
            marketing=spec.category == "marketing",
            link=None,
            link_in_text=True,
        )
        callback = f"{self._callback_base}/callbacks/{review.vendor}/review"
        attempt = review.attempts + 1
        try:
            review_id = await reviewer.submit_review(
                review.template_ref, spec.category, card, sms_text, callback
            )
        except RetryableProviderError as exc:
            delay = backoff(attempt, base_s=2.0, max_s=600.0, defer=exc.defer, rng=self._rng)
            log.info("review_retry", vendor=review.vendor, ref=review.template_ref, error=str(exc))
            await self._store.update_review(
                replace(review, attempts=attempt, next_at=now + delay, updated_at=now)
            )
            return
        except PermanentProviderError as exc:
            await self._store.update_review(
                replace(
                    review,
                    state="rejected",
                    reason=f"submit_failed: {exc.code}",
                    attempts=attempt,
                    updated_at=now,
                )
            )
            return
        log.info("review_submitted", vendor=review.vendor, ref=review.template_ref)
        await self._store.update_review(
            replace(
                review, state="submitted", review_id=review_id, attempts=attempt, updated_at=now
            )
        )


async def record_verdicts(
    store: Store, catalog: Catalog, clock: Clock, vendor: str, results: list[ReviewResult]
) -> int:
    """Applies a vendor's verdicts; answers how many matched a review we asked for."""
    applied = 0
    for result in results:
        review = await store.find_review(vendor, result.review_id) if result.review_id else None
        if review is None:
            ref = parse_template_ref(result.template_ref)
            if ref is None:
                continue
            states = await store.reviews_for(*ref)
            review = next((s for s in states if s.vendor == vendor), None)
        if review is None or review.state in ("approved", "rejected", "not_applicable"):
            continue
        await store.update_review(
            replace(review, state=result.status, reason=result.reason, updated_at=clock.now())
        )
        catalog.forget_reviews(review.tenant_id, review.template_id, review.version)
        applied += 1
    return applied
