"""Find the incident window in the data: where the primary signal changed level, and back.

Exact least-squares segmentation of log(primary signal) into 1, 2 or 3 constant-mean segments,
chosen by BIC. Log scale because latency moves by ratios (40 ms -> 800 ms is a 20x step).
Written here rather than pulling in ``ruptures``: the exact 2-change-point search is ~30 lines of
cumulative sums and runs in milliseconds on a few thousand points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from runbook_lib.errors import NoIncidentFound, NoLevelChange
from runbook_lib.model import IncidentWindow

# A level change smaller than this (as a ratio of segment means) is noise, not an incident.
# 2x is well above the ~5-10% sampling noise of a 30 s rate() and well below the 10-20x of a real page.
MIN_LEVEL_RATIO = 2.0
# Segments shorter than this many samples are not trusted as baseline or incident (5 min at 30 s).
MIN_SEGMENT_POINTS = 10






def _sse_table(y: np.ndarray):
    c1 = np.concatenate([[0.0], np.cumsum(y)])
    c2 = np.concatenate([[0.0], np.cumsum(y * y)])

    def sse(i, j):  # segment y[i:j], vectorised over arrays i, j
        n = j - i
        s = c1[j] - c1[i]
        return (c2[j] - c2[i]) - s * s / np.maximum(n, 1)

    return sse


def segment(y: np.ndarray, min_size: int = MIN_SEGMENT_POINTS) -> list[int]:
    """Change points (indices where a new segment starts) of the best 0-, 1- or 2-change fit by BIC."""
    n = len(y)
    sse = _sse_table(y)
    best = {0: (float(sse(0, n)), [])}
    idx = np.arange(min_size, n - min_size + 1)
    if len(idx):
        costs = sse(0, idx) + sse(idx, n)
        k = int(np.argmin(costs))
        best[1] = (float(costs[k]), [int(idx[k])])
    if n >= 3 * min_size:
        i, j = np.meshgrid(np.arange(min_size, n - 2 * min_size + 1), np.arange(2 * min_size, n - min_size + 1),
                           indexing="ij")
        ok = j - i >= min_size
        costs = np.where(ok, sse(0, i) + sse(i, j) + sse(j, n), np.inf)
        flat = int(np.argmin(costs))
        best[2] = (float(costs.flat[flat]), [int(i.flat[flat]), int(j.flat[flat])])

    def bic(k):
        cost = max(best[k][0], 1e-12)
        return n * np.log(cost / n) + 2 * (k + 1) * np.log(n)  # k change points + k+1 means

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
