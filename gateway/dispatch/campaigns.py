"""Campaign fan-out: stream the audience in bounded parts, one message per recipient.

Each part's messages are written with the campaign's cursor in one transaction, in order
(a part is written only where the one before it left the cursor), and the database
refuses a second message for the same campaign and recipient, so a restart in the middle
resumes where it stopped and never sends anyone twice.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cards.variables import SharedVariables
from gateway.clock import Clock
from gateway.dispatch.worker import PollingWorker
from gateway.domain.messages import Link, NewMessage, Rendered, Status
from gateway.domain.routing import preference
from gateway.domain.segments import Rule, parse_rule
from gateway.errors import InvalidInput
from gateway.ids import new_id
from gateway.logging import get_logger
from gateway.storage.audience import CampaignRow, Recipient, SqliteAudience
from gateway.usecases.campaigns import choose_variant
from gateway.usecases.catalog import Catalog, LoadedTemplate
from gateway.usecases.sending import render_for_send

log = get_logger("gateway.campaigns")

DEFAULT_TZ = "Asia/Shanghai"
# Once this many of a fan-out's writes are queued, the oldest must be done before the next
# part renders (see ``_fan_out_batch``): so up to two are queued while a part renders. With
# one write at a time the fan-out waited on every commit, and campaigns to 200,000 ran ~20 %
# slower; with this at 2, one run read 4,166 msg/s against 5,049 (docs/BENCHMARKS.md, the
# sixteenth session).
_QUEUED_PARTS = 3


@dataclass(frozen=True, slots=True)
class Refused:
    """A variant's stored version that fails today's checks, and why."""

    template_id: str
    version: int
    body: dict[str, Any]
    detail: str


@dataclass(slots=True)
class _Variants:
    """What a batch looks up once: each variant's template, each brand as JSON, and each
    template's check of the campaign's variables."""

    templates: dict[str, LoadedTemplate | Refused | None] = field(default_factory=dict)
    brands: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    shared: dict[str, SharedVariables] = field(default_factory=dict)


class CampaignRunner(PollingWorker):
    name = "campaigns"
    idle_s = 1.0

    def __init__(
        self,
        audience: SqliteAudience,
        catalog: Catalog,
        clock: Clock,
        link_base_url: str,
        on_messages: Callable[[int], None],
        *,
        batch: int,
        write_batch: int | None = None,
    ) -> None:
        super().__init__()
        self._audience = audience
        self._catalog = catalog
        self._clock = clock
        self._links = link_base_url
        self._on_messages = on_messages
        self._batch = batch
        self._write_batch = min(write_batch or batch, batch)

    async def run_once(self) -> bool:
        """One batch for every campaign that has work; answers whether any had."""
        now = self._clock.now()
        busy = False
        for campaign in await self._audience.active_campaigns(now):
            try:
                busy = await self._advance(campaign, now) or busy
            except Exception:  # one campaign's trouble must not hold up anyone else's
                log.exception("campaign_round_failed", campaign_id=campaign.campaign_id)
        return busy

    async def _advance(self, campaign: CampaignRow, now: float) -> bool:
        """Starts a due campaign, fans out its next batch, or completes it; answers whether
        there was work."""
        if campaign.state == "scheduled":
            if campaign.start_at > now:
                return False
            await self._audience.set_campaign_state(
                campaign.campaign_id, "running", now, expect=("scheduled",)
            )
        if not campaign.fanned_out:
            return await self._fan_out_batch(campaign)
        if not await self._audience.has_pending(campaign.campaign_id):
            await self._audience.set_campaign_state(
                campaign.campaign_id, "completed", now, expect=("running",)
            )
            log.info("campaign_completed", campaign_id=campaign.campaign_id)
        return False

    async def run_until_idle(self, rounds: int = 10_000) -> None:
        for _ in range(rounds):
            if not await self.run_once():
                return

    async def _recipients(
        self, c: CampaignRow, rule: Rule | None, after: str | None, limit: int
    ) -> tuple[list[Recipient], bool]:
        """The next ``limit`` recipients after ``after`` (by the audience's rule, or from its
        list when ``rule`` is None), and whether they are the last."""
        if rule is None:
            phones: list[str] = c.body["audience"]["recipients"]
            start = 0 if after is None else bisect.bisect_right(phones, after)
            chunk = phones[start : start + limit]
            known = await self._audience.recipients(c.tenant_id, chunk)
            out = [known.get(p) or Recipient(p, [], {}, DEFAULT_TZ) for p in chunk]
            return out, start + limit >= len(phones)
        found = await self._audience.stream(c.tenant_id, rule, after, limit)
        return found, len(found) < limit

    async def _fan_out_batch(self, c: CampaignRow) -> bool:
        """Fans out the next ``batch`` recipients in parts of ``write_batch``, each read,
        rendered and written in turn.

        The next part is read while one renders, and a part's write is queued as soon as it
        is rendered; once ``_QUEUED_PARTS`` are queued, the oldest must be done before the next
        part renders. So the writer always has the next parts waiting, and no more than a few
        parts' recipients and messages are held at once, however large the batch. Each
        part's write carries its cursor and goes in only if the campaign's cursor is still
        where the part starts: when a write fails, none after it is written, and the next
        round resumes after the last part written.
        """
        audience = c.body["audience"]
        rule = None if "recipients" in audience else parse_rule(audience["rule"])
        now = self._clock.now()
        variants = _Variants()
        cursor = c.cursor
        writing: list[asyncio.Task[int | None]] = []  # queued writes, oldest first
        read = written = 0
        done = False

        def read_next() -> asyncio.Task[tuple[list[Recipient], bool]]:
            limit = min(self._write_batch, self._batch - read)
            return asyncio.ensure_future(self._recipients(c, rule, cursor, limit))

        reading: asyncio.Task[tuple[list[Recipient], bool]] | None = read_next()
        try:
            while reading is not None:
                part, done = await reading
                read += len(part)
                last = done or read >= self._batch
                after, cursor = cursor, part[-1].phone if part else cursor
                reading = None if last else read_next()  # read while this part renders
                messages = await self._render(c, part, now, variants)
                writing.append(
                    asyncio.ensure_future(
                        self._audience.fan_out(c.campaign_id, messages, cursor, done, now, after)
                    )
                )
                del part, messages  # held by its write only, until that is done
                while writing and (len(writing) >= _QUEUED_PARTS or last):
                    new = await writing.pop(0)
                    if new is None:  # paused or cancelled meanwhile, or this round's campaign
                        return False  # row was out of date: nothing more is written
                    written += self._written(new)
        finally:
            if reading is not None:
                reading.cancel()
            for task in writing:
                # the round stopped while this write was queued: it goes on by itself (and
                # writes nothing unless the part before it was written), and is counted or
                # logged when it is done
                task.add_done_callback(functools.partial(self._leftover, c.campaign_id))
        return (read > 0 and not done) or bool(written)

    def _written(self, new: int) -> int:
        if new:
            self._on_messages(new)
        return new

    def _leftover(self, campaign_id: str, task: asyncio.Task[int | None]) -> None:
        """A write still queued when its round stopped, now done: its messages are counted
        (and the dispatcher woken) as any part's are, or its failure is logged."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("campaign_write_failed", campaign_id=campaign_id, error=repr(error))
        elif new := task.result():
            self._written(new)

    async def _render(
        self, c: CampaignRow, recipients: list[Recipient], now: float, variants: _Variants
    ) -> list[NewMessage]:
        """Each recipient's message: its variant rendered, or failed when it cannot be."""
        messages = []
        for r in recipients:
            template_id = choose_variant(c.campaign_id, r.phone, c.body["variants"])
            if template_id not in variants.templates:
                variants.templates[template_id] = await self._variant(c, template_id)
            loaded = variants.templates[template_id]
            if loaded is None:
                continue
            if isinstance(loaded, Refused):
                messages.append(self._refused_message(c, r, loaded, now))
            else:
                checker = variants.shared.get(template_id)
                if checker is None:
                    checker = variants.shared[template_id] = SharedVariables(
                        loaded.spec.variables, c.body["variables"]
                    )
                messages.append(await self._message(c, r, loaded, now, variants.brands, checker))
        return messages

    async def _variant(self, c: CampaignRow, template_id: str) -> LoadedTemplate | Refused | None:
        """The variant's version the campaign was made with (the latest for a campaign made
        before versions were kept), or why it cannot be rendered: stored before a check it
        fails was added. Its recipients then get failed messages, so the campaign still
        completes, instead of the campaign failing every round for ever."""
        version = next(
            (v.get("version") for v in c.body["variants"] if v["template_id"] == template_id),
            None,
        )
        try:
            return await self._catalog.template(c.tenant_id, template_id, version)
        except InvalidInput as exc:
            record = await self._catalog.record(c.tenant_id, template_id, version)
            if record is None:
                raise
            log.error("campaign_variant_refused", campaign_id=c.campaign_id, error=exc.detail)
            return Refused(record.template_id, record.version, record.body, exc.detail)

    def _refused_message(
        self, c: CampaignRow, r: Recipient, refused: Refused, now: float
    ) -> NewMessage:
        category = refused.body.get("category")
        return self._new_message(
            c,
            r,
            now,
            category=category if category in ("marketing", "transactional") else "marketing",
            template_id=refused.template_id,
            template_version=refused.version,
            rendered=Rendered("", None, str(refused.body.get("kind")), {}, error=refused.detail),
            status=Status.FAILED,
            reason="render_error",
        )

    def _new_message(self, c: CampaignRow, r: Recipient, now: float, **fields: Any) -> NewMessage:
        """A message of campaign ``c`` to ``r``, made ``now``; ``fields`` are the rest."""
        due = max(now, c.start_at)
        return NewMessage(
            id=new_id(int(now * 1000)),
            tenant_id=c.tenant_id,
            to=r.phone,
            created_at=now,
            due_at=due,
            expires_at=due + int(c.body["ttl_seconds"]),
            campaign_id=c.campaign_id,
            timezone=r.timezone,
            **fields,
        )

    async def _message(
        self,
        c: CampaignRow,
        r: Recipient,
        loaded: LoadedTemplate,
        now: float,
        brands: dict[str | None, dict[str, Any]],
        variables: SharedVariables,
    ) -> NewMessage:
        spec = loaded.spec
        context, problems = variables.check(r.attrs)
        brand_info = brands.get(spec.brand_id)
        if brand_info is None:
            brand = await self._catalog.brand(c.tenant_id, spec.brand_id)
            brand_info = brands[spec.brand_id] = brand.model_dump(mode="json") if brand else {}
        links: tuple[Link, ...] = ()
        status: str
        reason: str | None
        if problems:  # this recipient lacks what the template needs: a failed message
            detail = "; ".join(f"variables.{n}: {m}" for n, m in problems)
            status, reason = Status.FAILED, "render_error"
            rendered = Rendered("", None, spec.kind, brand_info, error=detail)
        else:
            status, reason, rendered, links = render_for_send(
                loaded, brand_info, context, self._links
            )
        policy: dict[str, Any] = {"window": c.body.get("window")}
        if c.body.get("frequency_cap") is not None:
            policy["frequency_cap"] = c.body["frequency_cap"]
        return self._new_message(
            c,
            r,
            now,
            category=spec.category,
            template_id=loaded.record.template_id,
            template_version=loaded.record.version,
            rendered=rendered,
            route_pref=preference(None, spec.routes),
            status=status,
            reason=reason,
            links=links,
            policy=policy,
        )
