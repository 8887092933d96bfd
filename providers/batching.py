"""Sending a batch of submissions: checks, splitting, and one request per part.

Results always come back one per submission, in the order given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.dispatch.ports import RouteKind, Submission, SubmitOutcome
from gateway.errors import PermanentProviderError, ProviderError
from providers.http import SignedJsonApi
from providers.wire import SubmitResponse, outcomes

Send = Callable[[Sequence[Submission]], Awaitable[list[SubmitOutcome]]]
SendRoute = Callable[[RouteKind, Sequence[Submission]], Awaitable[list[SubmitOutcome]]]
Fields = Callable[[Submission], dict[str, Any]]


def check_batch(
    name: str, routes: frozenset[RouteKind], max_batch: int, batch: Sequence[Submission]
) -> None:
    """``ValueError`` (a caller's bug) for an oversized batch or a route this provider lacks."""
    if len(batch) > max_batch:
        raise ValueError(f"{name}: batch of {len(batch)} over {max_batch}")
    foreign = sorted({s.route for s in batch} - routes)
    if foreign:
        raise ValueError(f"{name}: does not carry route(s) {', '.join(foreign)}")


async def post_batch(
    api: SignedJsonApi,
    path: str,
    batch: Sequence[Submission],
    callback_url: str,
    fields: Fields,
) -> list[SubmitOutcome]:
    """``{"callback_url", "messages": [{"client_ref", "to", **fields(s)}]}`` → outcomes."""
    payload = {
        "callback_url": callback_url,
        "messages": [{"client_ref": s.message_id, "to": s.to, **fields(s)} for s in batch],
    }
    return outcomes(batch, await api.post(path, payload, SubmitResponse))


async def by_route(batch: Sequence[Submission], send: SendRoute) -> list[SubmitOutcome]:
    """One request per route, sent concurrently.

    A single-route batch behaves as one request: its whole-batch errors are
    raised. In a mixed batch a part's ``ProviderError`` becomes the error of
    each of that part's messages, so the other parts' results are not lost.
    """
    parts: dict[RouteKind, list[int]] = {}
    for i, s in enumerate(batch):
        parts.setdefault(s.route, []).append(i)
    if len(parts) <= 1:
        return await send(batch[0].route, batch) if batch else []
    answers = await asyncio.gather(
        *(send(route, [batch[i] for i in idx]) for route, idx in parts.items()),
        return_exceptions=True,
    )
    merged: dict[int, SubmitOutcome] = {}
    for idx, answer in zip(parts.values(), answers, strict=True):
        if isinstance(answer, ProviderError):
            answer = [SubmitOutcome(batch[i].message_id, error=answer) for i in idx]
        elif isinstance(answer, BaseException):
            raise answer
        merged.update(zip(idx, answer, strict=True))
    return [merged[i] for i in range(len(batch))]


async def payload_required(batch: Sequence[Submission], send: Send) -> list[SubmitOutcome]:
    """Send the submissions that have a payload; the others fail permanently, unsent."""
    missing = {i for i, s in enumerate(batch) if s.payload is None}
    if not missing:
        return await send(batch)
    sendable = [s for i, s in enumerate(batch) if i not in missing]
    sent = iter(await send(sendable) if sendable else [])
    return [
        SubmitOutcome(s.message_id, error=PermanentProviderError("missing_payload", s.route))
        if i in missing
        else next(sent)
        for i, s in enumerate(batch)
    ]
