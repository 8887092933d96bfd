"""A circuit breaker per provider: a dead provider costs nothing while it is dead.

Closed: calls go through; ``threshold`` consecutive failures open it. Open: no
calls for ``cooldown_s``. Then half-open: one probe batch goes through; its
success closes the circuit, its failure opens it for another cooldown.
"""

from __future__ import annotations

from gateway.clock import Clock

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(self, clock: Clock, *, threshold: int = 5, cooldown_s: float = 10.0) -> None:
        self._clock = clock
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        if self._clock.now() - self.opened_at < self.cooldown_s:
            return OPEN
        return HALF_OPEN

    def allow(self) -> bool:
        """Whether a call may go now; in half-open, only one probe at a time."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def blocked(self) -> bool:
        """Whether routing should pass this provider over (open, or a probe in flight)."""
        state = self.state
        return state == OPEN or (state == HALF_OPEN and self._probing)

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - self._clock.now())

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._probing = False

    def failure(self) -> None:
        self.failures += 1
        if self._probing or self.failures >= self.threshold:
            self.opened_at = self._clock.now()
        self._probing = False
