"""The lab backend's resilience mechanisms, per replica: a token bucket rate limit and a circuit breaker.

Both are small state machines over an injected clock (``time.monotonic`` by default), so tests drive them
without sleeping. Written here rather than taken from a library, on purpose: ``aiolimiter`` is built around
awaiting capacity (its ``has_capacity()`` does not say when the next token comes, which Retry-After needs),
``limits`` would fit the bucket but is a new dependency (with its storage abstraction) for some 15 lines, and
``pybreaker`` counts consecutive failures, not an error ratio over a time window. Neither class takes a lock:
a replica runs one event loop, and no method awaits.

* ``TokenBucket(rate, burst)``: ``take()`` spends one token and returns 0, or returns how many seconds until
  the next token (the request is refused: 429 with Retry-After).
* ``CircuitBreaker(error_ratio, window_s, min_requests, open_s)``: closed, it records each guarded request's
  outcome over a sliding window of the last ``window_s`` seconds and opens when at least ``min_requests`` were
  seen and at least ``error_ratio`` of them failed. Open, ``allow()`` refuses for ``open_s`` seconds; then it is
  half-open and lets exactly one trial request through: its success closes the breaker, its failure opens it
  again for another ``open_s``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self.clock = float(rate), int(burst), clock
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self) -> float:
        """0.0 when a token was spent (admit the request), else the seconds until one is available."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class CircuitBreaker:
    """Opens on an error ratio over a sliding time window; see the module for the states."""

    def __init__(self, error_ratio: float, window_s: float, min_requests: int, open_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, str], None] | None = None):
        if not 0 < error_ratio <= 1 or window_s <= 0 or min_requests < 1 or open_s <= 0:
            raise ValueError("a breaker needs 0 < error_ratio <= 1, window_s > 0, min_requests >= 1, open_s > 0")
        self.error_ratio, self.window_s, self.min_requests, self.open_s = error_ratio, window_s, min_requests, open_s
        self.clock, self.on_change = clock, on_change
        self.state = CLOSED
        self.opened_at = 0.0
        self.outcomes: deque[tuple[float, bool]] = deque()  # (time, failed) of the guarded requests, oldest first
        self.errors = 0  # failed ones among self.outcomes
        self.trial_in_flight = False

    def _set(self, state: str) -> None:
        old, self.state = self.state, state
        if old != state and self.on_change:
            self.on_change(old, state)

    def _open(self, now: float) -> None:
        self.opened_at = now
        self.outcomes.clear()
        self.errors = 0
        self.trial_in_flight = False
        self._set(OPEN)

    def _prune(self, now: float) -> None:
        while self.outcomes and self.outcomes[0][0] <= now - self.window_s:
            _, failed = self.outcomes.popleft()
            self.errors -= failed

    def allow(self) -> bool:
        """May this request use the pool? Open: no, until open_s passed; then one trial request (half-open)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.open_s:
                return False
            self._set(HALF_OPEN)
        if self.trial_in_flight:  # half-open: the trial request is still out
            return False
        self.trial_in_flight = True
        return True

    def abandon(self) -> None:
        """A request ``allow()`` let through ended without an outcome (cancelled): give a half-open trial back."""
        if self.state == HALF_OPEN:
            self.trial_in_flight = False

    def record(self, failed: bool) -> None:
        """The outcome of a request ``allow()`` let through (call it exactly once for each)."""
        now = self.clock()
        if self.state == HALF_OPEN:
            if failed:
                self._open(now)
            else:
                self.trial_in_flight = False
                self._set(CLOSED)
            return
        if self.state == OPEN:  # a request admitted before the breaker opened: its outcome is old news
            return
        self.outcomes.append((now, failed))
        self.errors += failed
        self._prune(now)
        n = len(self.outcomes)
        if n >= self.min_requests and self.errors / n >= self.error_ratio:
            self._open(now)
