"""The incident-window fit at the scale of weeks of data (issue 16): known steps in long synthetic series, the
coarse-to-fine search against the exact one, and a series far too long for the old n x n search.
No timing asserts: a long series completing with the right answer is the property."""

import numpy as np
import pandas as pd
import pytest

from runbook_lib.diagnose import incident_window as window
from runbook_lib.diagnose.symptoms import best_lag

WEEK_AT_15S = 40_320


def series(parts: list[tuple[int, float]], noise: float = 0.05, seed: int = 0,
           diurnal: float = 0.0) -> pd.Series:
    """Piecewise-constant levels (samples, level) at 15 s, with multiplicative noise and a daily cycle."""
    lvl = np.concatenate([np.full(k, float(v)) for k, v in parts])
    n = len(lvl)
    rng = np.random.default_rng(seed)
    cycle = np.exp(diurnal * np.sin(2 * np.pi * np.arange(n) * 15 / 86_400))
    idx = pd.date_range("2026-11-23", periods=n, freq="15s", tz="UTC")
    return pd.Series(lvl * cycle * np.exp(rng.normal(0, noise, n)), index=idx, name="latency_p95_ms")


@pytest.mark.parametrize("n", [300, WEEK_AT_15S])  # the exact search, and the coarse-to-fine one
def test_step_up_and_back(n):
    a, b = int(n * 0.6), int(n * 0.6) + max(30, n // 40)
    s = series([(a, 40), (b - a, 800), (n - b, 45)], diurnal=0.1)
    w = window.find_incident_window(s)
    assert w.incident == (s.index[a], s.index[b - 1])
    assert w.baseline == (s.index[0], s.index[a - 1]) and w.recovery == (s.index[b], s.index[-1])
    # the medians, within the +-10% daily cycle
    assert 36 < w.baseline_level < 44 and 700 < w.incident_level < 900 and 40 < w.recovery_level < 50


def test_step_with_no_recovery():
    a = 25_000
    s = series([(a, 40), (WEEK_AT_15S - a, 800)], seed=1)
    w = window.find_incident_window(s)
    assert w.incident == (s.index[a], s.index[-1]) and w.recovery is None and w.recovery_level is None


def test_short_spike_in_a_week_is_found():
    # 3 minutes at 20x in 7 days: the grid (stride 40) cannot place it, the fine level around the best grid
    # pair does (plain binary segmentation misses spikes like this one)
    a = 31_000
    s = series([(a, 40), (12, 800), (WEEK_AT_15S - a - 12, 42)], seed=2)
    w = window.find_incident_window(s)
    assert w.incident == (s.index[a], s.index[a + 11])


def test_cache_hit_ratio_drop_lower_is_worse():
    a, b = 20_000, 22_000
    s = series([(a, 0.8), (b - a, 0.05), (WEEK_AT_15S - b, 0.78)], noise=0.03, seed=3)
    s = s.rename("cache_hit_ratio")
    w = window.find_incident_window(s, higher_is_worse=False)
    assert w.incident == (s.index[a], s.index[b - 1]) and w.incident_level < 0.1


@pytest.mark.parametrize("seed", [4, 5])
def test_healthy_week_flags_no_incident(seed):
    # noise and a +-20% daily cycle, no step: no level change of 2x, so no incident window
    s = series([(WEEK_AT_15S, 40)], noise=0.1, seed=seed, diurnal=0.2)
    with pytest.raises(window.NoLevelChange, match="no level change of 2x or more"):
        window.find_incident_window(s)


@pytest.mark.parametrize("seed", range(6))
def test_coarse_to_fine_matches_the_exact_search(seed, monkeypatch):
    # above EXACT_SEARCH_POINTS the pairs are searched on a grid then refined; on incident shapes this
    # finds the change points the exhaustive search does
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(window.EXACT_SEARCH_POINTS + 100, 2_500))
    a = int(rng.integers(50, n // 2))
    b = a + int(rng.integers(12, n // 3))
    ratio = float(np.exp(rng.uniform(np.log(3), np.log(30))))
    parts = [(a, 40), (b - a, 40 * ratio), (n - b, 40 * rng.uniform(0.8, 1.5))] if seed % 2 else \
        [(a, 40), (n - a, 40 * ratio)]
    y = np.log(series(parts, noise=float(rng.uniform(0.02, 0.2)), seed=seed).to_numpy())
    coarse = window.segment(y)
    monkeypatch.setattr(window, "EXACT_SEARCH_POINTS", 10**9)
    assert coarse == window.segment(y)
    assert coarse[0] == a


def test_a_series_far_beyond_the_old_grid_completes():
    # 200k samples (~35 days at 15 s): the old n x n search needed 320 GB per grid; this runs in O(n)
    n, a, b = 200_000, 150_000, 152_000
    s = series([(a, 40), (b - a, 800), (n - b, 45)], seed=6)
    w = window.find_incident_window(s)
    assert w.incident == (s.index[a], s.index[b - 1]) and w.recovery[0] == s.index[b]


def test_best_lag_is_the_pandas_shift_and_corr():
    # best_lag sums over array slices; the definition it keeps is x.shift(lag).corr(y), gaps dropped
    rng = np.random.default_rng(7)
    idx = pd.date_range("2026-11-23", periods=3_000, freq="15s", tz="UTC")
    x = pd.Series(rng.normal(0, 1, 3_000).cumsum(), index=idx)
    y = x.shift(4) + rng.normal(0, 0.5, 3_000)
    x[rng.random(3_000) < 0.01] = np.nan
    lag, corr = best_lag(x, y)
    assert lag == 4
    assert corr == pytest.approx(x.shift(4).corr(y), abs=1e-9)
