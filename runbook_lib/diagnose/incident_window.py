"""Find the incident window in the data: where the primary signal changed level, and back.

Least-squares segmentation of log(primary signal) into 1, 2 or 3 constant-mean segments, chosen by BIC.
Log scale because latency moves by ratios (40 ms -> 800 ms is a 20x step).

The fit, O(n) time and memory per series of n samples:

- the cost of a segment ``y[i:j]`` (squared deviations from its mean) is O(1) from the cumulative sums of
  ``y`` and ``y**2``, so a whole array of candidate splits is scored in one vectorised expression;
- one change point: every split point is scored (exact, O(n));
- two change points: up to EXACT_SEARCH_POINTS samples every pair is scored, as before (exact; the bundled
  incidents, 322 samples, are well inside this). Longer series are searched coarse to fine: every pair of a
  grid of stride min(n / EXACT_SEARCH_POINTS, sqrt n) (exact costs, only the candidate positions are
  coarse), then every pair within one stride of the best grid pair, again around the new best until it
  stays put. The grid has at most ~0.5 M pairs below 1 M samples and n / 2 above, the fine level ~4
  stride^2 <= 4 n per pass, scored in blocks of PAIR_BLOCK: O(n) time, O(n) memory;
- BIC chooses between the 0-, 1- and 2-change fits.

The exact search it replaces built n x n grids: fine for the bundled 27 minutes, 13 GB per grid for a
week at 15 s (40,320 samples). Against that exact search, on 300 random incident shapes of 1,100-5,000
samples (steps of 1.3-30x up and back, without recovery, on a ramp, on a daily cycle; 2-50% noise), the
coarse-to-fine search gave the same window on 298; on the other two both fits cost within 0.2% of each
other (an incident start on a ramp). tests/diagnose/test_incident_window_scale.py checks it on step shapes.

Not plain binary segmentation (best single split, then the best split of either side): its greedy first
split need not be an edge of the incident. Measured against the exact search on 3,000 random incident
shapes (40-500 samples, steps of 1.3-30x, 2-50% noise) it gave a different window on 1.2% of them,
including short 20x spikes it missed altogether (no level change), even with each change point re-fitted
between its neighbours afterwards. Not ``ruptures`` either: its ``l2`` cost slices the signal for each
candidate (``var(signal[start:end])``), so Binseg/Dynp scoring every split point is O(n^2) unless ``jump``
subsamples the candidates, which moves the change points; PELT is O(n^2) when, as here, a long series
has only one or two changes; and BIC over k needs the cost per k anyway.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from runbook_lib.errors import NoIncidentFound, NoLevelChange
from runbook_lib.model import IncidentWindow

# A level change smaller than this (as a ratio of segment means) is noise, not an incident.
# 2x is well above the ~5-10% sampling noise of a 30 s rate() and well below the 10-20x of a real page.
MIN_LEVEL_RATIO = 2.0
# Segments shorter than this many samples are not trusted as baseline or incident (5 min at 30 s).
MIN_SEGMENT_POINTS = 10
# Up to this many samples (8.5 h at 30 s, 4.3 h at 15 s) every pair of change points is scored: ~0.5 M
# pairs, a few ms. Beyond, it is the coarse grid's size, so the first level stays at ~0.5 M pairs up to
# 1 M samples (where sqrt n takes over as the stride).
EXACT_SEARCH_POINTS = 1024
# Pairs scored per vectorised block: 2 MB per float64 temporary, whatever the series length.
PAIR_BLOCK = 1 << 18
# Passes of the fine level: on 400 random step shapes (1,100-60,000 samples) the best pair moved at most
# twice (plus the pass that confirms it); the bound only stops a pathological series walking the window
# across the whole range.
MAX_REFINE_PASSES = 10


def _segment_cost(y: np.ndarray):
    """cost(i, j): sum of squared deviations of y[i:j] from its mean, vectorised over arrays i, j."""
    c1 = np.concatenate([[0.0], np.cumsum(y)])
    c2 = np.concatenate([[0.0], np.cumsum(y * y)])

    def cost(i, j):
        n = j - i
        s = c1[j] - c1[i]
        return (c2[j] - c2[i]) - s * s / np.maximum(n, 1)

    return cost


def _best_pair(cost, i_cand: np.ndarray, j_cand: np.ndarray, n: int, min_size: int) -> tuple[float, int, int]:
    """The cheapest 3-segment fit with change points i in ``i_cand``, j in ``j_cand`` (sorted; ``j - i`` at
    least ``min_size``), scored in blocks of rows. Ties go to the smallest i, then j (the exact search's
    order)."""
    best = (np.inf, -1, -1)
    if not len(i_cand) or not len(j_cand):
        return best
    last = cost(j_cand, n)[None, :]
    rows = max(1, PAIR_BLOCK // len(j_cand))
    for a in range(0, len(i_cand), rows):
        i = i_cand[a:a + rows, None]
        c = np.where(j_cand[None, :] - i >= min_size, cost(0, i) + cost(i, j_cand[None, :]) + last, np.inf)
        k = int(np.argmin(c))
        if c.flat[k] < best[0]:
            r, q = divmod(k, len(j_cand))
            best = (float(c.flat[k]), int(i[r, 0]), int(j_cand[q]))
    return best


def _two_changes(cost, n: int, min_size: int) -> tuple[float, list[int]] | None:
    """The best 2-change fit: exact up to EXACT_SEARCH_POINTS samples, coarse to fine beyond."""
    if n < 3 * min_size:
        return None
    every_i, every_j = np.arange(min_size, n - 2 * min_size + 1), np.arange(2 * min_size, n - min_size + 1)
    if n <= EXACT_SEARCH_POINTS:
        c, i, j = _best_pair(cost, every_i, every_j, n, min_size)
        return c, [i, j]
    stride = min(math.ceil(n / EXACT_SEARCH_POINTS), math.isqrt(n - 1) + 1)
    grid = np.arange(min_size, n - min_size + 1, stride)
    c, i, j = _best_pair(cost, grid, grid, n, min_size)
    if i < 0:  # no grid pair fits: n - 3 * min_size < stride, so every pair is only a few
        c, i, j = _best_pair(cost, every_i, every_j, n, min_size)
        return c, [i, j]
    for _ in range(MAX_REFINE_PASSES):
        near_i = np.arange(max(min_size, i - stride), min(n - 2 * min_size, i + stride) + 1)
        near_j = np.arange(max(2 * min_size, j - stride), min(n - min_size, j + stride) + 1)
        c2, i2, j2 = _best_pair(cost, near_i, near_j, n, min_size)
        if c2 >= c:  # the window's best is where we are: settled
            break
        c, i, j = c2, i2, j2
    return c, [i, j]


def segment(y: np.ndarray, min_size: int = MIN_SEGMENT_POINTS) -> list[int]:
    """Change points (indices where a new segment starts) of the best 0-, 1- or 2-change fit by BIC.
    O(n) time and memory (see the module docstring)."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    cost = _segment_cost(y)
    best = {0: (float(cost(0, n)), [])}
    idx = np.arange(min_size, n - min_size + 1)
    if len(idx):
        costs = cost(0, idx) + cost(idx, n)
        k = int(np.argmin(costs))
        best[1] = (float(costs[k]), [int(idx[k])])
    two = _two_changes(cost, n, min_size)
    if two is not None:
        best[2] = two

    def bic(k):
        c = max(best[k][0], 1e-12)
        return n * np.log(c / n) + 2 * (k + 1) * np.log(n)  # k change points + k+1 means

    return best[min(best, key=bic)][1]


def find_incident_window(series: pd.Series, higher_is_worse: bool = True) -> IncidentWindow:
    """The baseline, incident and (if the data has it) recovery spans of ``series``."""
    s = series.dropna()
    s = s[s > 0]
    if len(s) < 2 * MIN_SEGMENT_POINTS:
        raise NoIncidentFound(f"{series.name}: only {len(s)} usable samples, need at least {2 * MIN_SEGMENT_POINTS}")
    y = np.log(s.to_numpy())
    cps = segment(y)
    bounds = [0, *cps, len(s)]
    # neighbouring segments less than MIN_LEVEL_RATIO apart are one level (e.g. a ramp and its plateau)
    merged = [bounds[0]]
    for i in range(1, len(bounds) - 1):
        left = float(np.median(s.iloc[merged[-1]:bounds[i]]))
        right = float(np.median(s.iloc[bounds[i]:bounds[i + 1]]))
        if max(left, right) / min(left, right) >= MIN_LEVEL_RATIO:
            merged.append(bounds[i])
    bounds = [*merged, len(s)]
    pairs = list(zip(bounds[:-1], bounds[1:]))
    levels = [float(np.median(s.iloc[a:b])) for a, b in pairs]
    spans = [(s.index[a], s.index[b - 1]) for a, b in pairs]
    if len(levels) == 1:
        raise NoLevelChange(f"{series.name} has no level change of {MIN_LEVEL_RATIO:g}x or more in the window "
                            f"(median {levels[0]:.3g})", levels[0])
    worst = int(np.argmax(levels) if higher_is_worse else np.argmin(levels))
    if worst == 0:
        raise NoIncidentFound(f"{series.name} is worst at the start of the window: no baseline before the incident")
    base_level = levels[worst - 1]  # at least MIN_LEVEL_RATIO away: closer neighbours were merged above
    recovery = spans[worst + 1] if worst + 1 < len(spans) else None
    return IncidentWindow(
        baseline=spans[worst - 1], incident=spans[worst], recovery=recovery,
        baseline_level=base_level, incident_level=levels[worst],
        recovery_level=levels[worst + 1] if recovery else None, signal=str(series.name),
    )
