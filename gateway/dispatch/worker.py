"""A background worker: runs ``run_once`` again at once while it finds work, else waits for
a wake-up or ``idle_s``; an exception is logged and the loop goes on."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.logging import get_logger

log = get_logger("gateway.worker")


class PollingWorker:
    name = "worker"
    idle_s = 1.0

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> bool | int:
        raise NotImplementedError

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                busy = bool(await self.run_once())
            except Exception:
                log.exception("worker_round_failed", worker=self.name)
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.idle_s)
                self._wake.clear()
