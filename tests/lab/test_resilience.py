"""The lab backend's token bucket and circuit breaker as state machines, on an injected clock (no sleeps)."""

from __future__ import annotations

import pytest

from runbook_lib.lab.resilience import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, TokenBucket
from runbook_lib.model import AppKnobs


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def test_bucket_admits_the_burst_then_refuses_with_the_wait_until_the_next_token():
    clock = Clock()
    bucket = TokenBucket(rate=4.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.25)  # empty: one token every 1/4 s
    clock.advance(0.1)
    assert bucket.take() == pytest.approx(0.15)
    clock.advance(0.15)
    assert bucket.take() == 0.0


def test_bucket_at_its_rate_never_refuses_and_never_saves_more_than_the_burst():
    clock = Clock()
    bucket = TokenBucket(rate=10.0, burst=2, clock=clock)
    for _ in range(200):  # 10 req/s exactly at the rate, after the burst is spent
        assert bucket.take() == 0.0
        clock.advance(0.1)
    clock.advance(3600)  # an idle hour refills to the burst, not to 36,000 tokens
    assert [bucket.take() == 0.0 for _ in range(3)] == [True, True, False]


def test_bucket_refuses_bad_settings():
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)


def _breaker(clock, **kw):
    changes = []
    b = CircuitBreaker(**{"error_ratio": 0.5, "window_s": 10, "min_requests": 4, "open_s": 30, **kw},
                       clock=clock, on_change=lambda old, new: changes.append((old, new)))
    return b, changes


def test_breaker_stays_closed_below_min_requests_or_below_the_ratio():
    clock = Clock()
    b, _ = _breaker(clock)
    for _ in range(3):  # all failed, but only 3 < min_requests
        assert b.allow()
        b.record(failed=True)
    assert b.state == CLOSED
    b2, _ = _breaker(clock)
    for failed in (False, False, True, False, False, True):  # never above 33 % once 4 were seen
        b2.record(failed)
    assert b2.state == CLOSED and b2.allow()


def test_breaker_opens_at_the_ratio_refuses_for_open_s_then_lets_one_trial_through():
    clock = Clock()
    b, changes = _breaker(clock)
    for failed in (False, True, False, True):  # 2 of 4 = 50 %: at the ratio with min_requests seen
        assert b.allow()
        b.record(failed)
    assert b.state == OPEN and changes == [(CLOSED, OPEN)]
    clock.advance(29.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.allow() and b.state == HALF_OPEN  # the trial
    assert not b.allow() and not b.allow()  # only one while it is out
    b.record(failed=False)
    assert b.state == CLOSED and b.allow()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_a_failed_trial_opens_again_for_another_open_s():
    clock = Clock()
    b, changes = _breaker(clock, min_requests=1, error_ratio=1.0)
    b.record(failed=True)
    clock.advance(30)
    assert b.allow()
    b.record(failed=True)
    assert b.state == OPEN
    clock.advance(29)
    assert not b.allow()
    clock.advance(1)
    assert b.allow() and b.state == HALF_OPEN
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]


def test_an_abandoned_trial_is_given_back():
    clock = Clock()
    b, _ = _breaker(clock, min_requests=1, error_ratio=1.0)
    b.record(failed=True)
    clock.advance(30)
    assert b.allow() and not b.allow()
    b.abandon()  # the trial request was cancelled: no outcome
    assert b.allow() and b.state == HALF_OPEN


def test_errors_older_than_the_window_no_longer_count():
    clock = Clock()
    b, _ = _breaker(clock)
    for _ in range(3):
        b.record(failed=True)
    clock.advance(10)  # those three leave the 10 s window
    for failed in (True, False, False, False):  # 1 of 4 in the window: 25 %
        b.record(failed)
    assert b.state == CLOSED
    assert (len(b.outcomes), b.errors) == (4, 1)


def test_outcomes_of_requests_admitted_before_it_opened_do_not_count_while_open():
    clock = Clock()
    b, _ = _breaker(clock, min_requests=2, error_ratio=1.0)
    b.record(failed=True)
    b.record(failed=True)
    assert b.state == OPEN
    b.record(failed=False)  # a slow request admitted while closed returns now
    assert b.state == OPEN and not b.allow()


@pytest.mark.parametrize("kw", [dict(error_ratio=0), dict(error_ratio=1.5), dict(window_s=0),
                                dict(min_requests=0), dict(open_s=0)])
def test_breaker_refuses_bad_settings(kw):
    with pytest.raises(ValueError):
        _breaker(Clock(), **kw)


def test_the_knobs_default_to_off_and_are_validated():
    k = AppKnobs()
    assert k.rate_limit_rps == 0 and k.breaker_error_ratio == 0 and k.problems() == []
    bad = AppKnobs(rate_limit_rps=-1, rate_limit_burst=0, breaker_error_ratio=2, breaker_window_s=0,
                   breaker_min_requests=0, breaker_open_s=-5)
    assert [p.split()[0] for p in bad.problems()] == ["rate_limit_rps", "rate_limit_burst", "breaker_error_ratio",
                                                      "breaker_window_s", "breaker_min_requests", "breaker_open_s"]
