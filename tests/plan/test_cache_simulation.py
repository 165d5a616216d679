"""The request-by-request TTL cache simulation: it agrees with the closed forms of ``recommend``, and it
shows why warmed keys get their expiry spread over half the TTL (``warm.TTL_JITTER``)."""

from __future__ import annotations

import numpy as np
import pytest

from runbook_lib.plan import cache_simulation as sim
from runbook_lib.plan import cache_sizing as rec
from runbook_lib.plan import cache_warming as warm

# The lab's load (runbook_lib/lab/load.py at 18 req/s): users pages, user orders, products, dashboard.
LAB = [(9.9, 1.1, 4000), (4.5, 1.1, 100_000), (2.7, 1.1, 50), (0.9, 1.1, 1)]


def test_one_key_hits_lambda_t_over_one_plus_lambda_t():
    hits, lookups = sim.simulate([(0.5, 0.0, 1)], ttl_s=10, duration_s=20_000, window_s=20_000, seed=1)
    assert hits[0] / lookups[0] == pytest.approx(5 / 6, abs=0.01)  # 0.5 x 10 / (1 + 0.5 x 10)


def test_a_zipf_family_settles_at_the_predicted_hit_ratio():
    hits, lookups = sim.simulate([(10.0, 1.0, 1000)], ttl_s=300, duration_s=7200, window_s=600, seed=2)
    settled = hits[1:].sum() / lookups[1:].sum()  # after the first TTL
    assert settled == pytest.approx(rec.steady_hit_ratio(10.0, 1.0, 1000, 300), abs=0.01)


def test_the_lab_load_settles_near_the_closed_form_at_a_30_min_ttl():
    ratio = sim.expected_windows(LAB, 1800, 3600, warm_seen_s=300, jitter=warm.TTL_JITTER, runs=2)
    closed = sum(r * rec.steady_hit_ratio(r, s, n, 1800) for r, s, n in LAB) / sum(r for r, _, _ in LAB)
    assert closed == pytest.approx(0.867, abs=0.001)
    assert ratio[30:].mean() == pytest.approx(closed, abs=0.01)


def _dip(ratio: np.ndarray, first: int, last: int) -> float:
    """The lowest mean of 3 consecutive windows among windows first..last."""
    return float(np.convolve(ratio[first:last], np.ones(3) / 3, "valid").min())


def test_warm_jitter_over_half_the_ttl_avoids_the_recurring_expiry_dip():
    # every key seen over 5 min warmed, 30 min TTL, the lab's load for 70 min, one-minute windows
    narrow, wide = (sim.expected_windows(LAB, 1800, 4200, warm_seen_s=300, jitter=j, runs=3) for j in (0.1, 0.5))
    assert warm.TTL_JITTER == 0.5
    # expiring within 27-30 min, the warmed keys are asked for again at once: a dip of ~5 points ...
    assert _dip(narrow, 20, 36) < 0.82 and _dip(wide, 20, 36) > 0.84
    # ... that comes back a TTL later (their rewrites keep the phase), smaller; spread, it does not
    assert _dip(narrow, 50, 66) < _dip(wide, 50, 66) - 0.01
