"""Symptom correlation: how every signal moved, when it started moving, and how it tracks latency.

Pure functions over the signals DataFrame (time index, one column per catalog signal) and the
incident window. No I/O.

Cost per signal of n samples: O(n) for the levels (medians), the onset scan and the lead/lag search
(MAX_LAG_STEPS lags either way, each one to six sums of products over array slices), O(n log n) for the
Spearman correlation (ranks). A week at 15 s (40,320 samples) x 100 series runs in seconds
(benchmarks/analysis_scale.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from runbook_lib.model import IncidentWindow
from runbook_lib.signal_catalog import CATALOG, PRIMARY_SIGNAL

# A signal "changed" when its incident median differs from its baseline median by more than this
# share (25%): above the 5-10% noise of rate()-derived series, below any causal move in this incident.
CHANGE_THRESHOLD = 0.25
# With a zero baseline a ratio means nothing: the incident level must exceed this floor per unit
# (half a percentage point of a ratio such as 5xx, one connection, one ms, one per second).
ZERO_BASELINE_FLOOR = {"ratio": 0.005, "count": 1.0, "ms": 1.0, "1/s": 1.0}
# Onset: first sample outside baseline median +/- max(ONSET_MADS robust sigmas, ONSET_MIN_REL of the
# median), held for ONSET_HOLD consecutive samples (so one noisy sample does not count).
ONSET_MADS = 6.0
ONSET_MIN_REL = 0.15
ONSET_HOLD = 3
# How far before the incident start we look for early movers (leading signals).
ONSET_LOOKBACK = pd.Timedelta(minutes=15)
# Cross-correlation lags tried, in samples either way (20 x 30 s = 10 min).
MAX_LAG_STEPS = 20
# Variance per pair below which a standardised series (unit variance overall) counts as constant over the
# pairs of one lag: float64 rounding of the sums leaves ~1e-16 per pair, a real signal at least ~1e-6.
CONSTANT_VARIANCE = 1e-12


def _between(df: pd.DataFrame | pd.Series, span) -> pd.DataFrame | pd.Series:
    return df.loc[(df.index >= span[0]) & (df.index <= span[1])]


def level_table(df: pd.DataFrame, win: IncidentWindow) -> pd.DataFrame:
    """Median of each signal in baseline / incident / recovery, and the incident/baseline ratio."""
    rows = []
    for name in df.columns:
        sig = CATALOG[name]
        base = float(_between(df[name], win.baseline).median())
        inc = float(_between(df[name], win.incident).median())
        rec = float(_between(df[name], win.recovery).median()) if win.recovery else np.nan
        ratio = inc / base if base else np.nan
        if np.isfinite(ratio):
            changed = bool(abs(ratio - 1) > CHANGE_THRESHOLD)
        else:  # a zero baseline (no 5xx, an idle pool): changed when the incident level is clearly above zero
            changed = bool(np.isfinite(inc) and abs(inc) > ZERO_BASELINE_FLOOR[sig.unit])
        worse = changed and ((inc > base) == sig.higher_is_worse)
        rows.append({"signal": name, "label": sig.label, "unit": sig.unit, "group": sig.group,
                     "baseline": base, "incident": inc, "recovery": rec, "ratio": ratio,
                     "changed": changed, "worse": worse})
    return pd.DataFrame(rows).set_index("signal")


def onset_time(s: pd.Series, win: IncidentWindow) -> pd.Timestamp | None:
    """When ``s`` first left its baseline band for good (ONSET_HOLD samples), near the incident."""
    base = _between(s, win.baseline).dropna()
    if base.empty:
        return None
    med = float(base.median())
    mad = float((base - med).abs().median()) * 1.4826
    band = max(ONSET_MADS * mad, ONSET_MIN_REL * abs(med), 1e-9)
    lo = max(win.incident[0] - ONSET_LOOKBACK, win.baseline[0])
    seg = s.loc[(s.index >= lo) & (s.index <= win.incident[1])]
    out = ((seg - med).abs() > band).to_numpy()
    # runs of consecutive out-of-band samples; the onset is the start of the first run that is long
    # enough (ONSET_HOLD) and still going at the incident start or later: an excursion that came back
    # before the incident (a warm-up right after a restart) is not the incident's onset
    starts = np.flatnonzero(out & ~np.r_[False, out[:-1]])
    ends = np.flatnonzero(out & ~np.r_[out[1:], False])  # inclusive
    for a, b in zip(starts, ends):
        if b - a + 1 >= ONSET_HOLD and seg.index[b] >= win.incident[0]:
            return seg.index[a]
    return None


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of a * b, in numpy's own loop. ``a @ b`` goes to BLAS, which splits a long product across threads:
    with the cores busy (measured: 2 cores, 2 other busy processes) the lag search then took 3x longer at the
    median and 35x at the 90th percentile, up to 3 s for one signal."""
    return float(np.einsum("i,i->", a, b))


def best_lag(x: pd.Series, y: pd.Series, max_lag: int = MAX_LAG_STEPS) -> tuple[int, float]:
    """Lag (in samples) at which ``x`` shifted forward best correlates with ``y``; positive = x leads.

    The correlation at each lag is ``x.shift(lag).corr(y)``: Pearson over the pairs (x[t - lag], y[t]) where
    both are present, from the pairs' count, sums, sums of squares and sum of products over array slices
    (cumulative sums when neither series has a gap, so one product per lag). 2 * max_lag + 1 lags: O(n *
    max_lag), no copy per lag; pandas' shift-align-drop-centre per lag was the analysis's largest cost at a
    week of data."""
    # standardised (as before): the sums below stay well-conditioned
    x = ((x - x.mean()) / (x.std() or 1.0)).to_numpy(dtype=float)
    y = ((y - y.mean()) / (y.std() or 1.0)).to_numpy(dtype=float)
    n = len(x)
    fx, fy = ~np.isnan(x), ~np.isnan(y)
    gaps = not (fx.all() and fy.all())
    fx, fy = fx.astype(float), fy.astype(float)
    x0, y0 = np.where(fx > 0, x, 0.0), np.where(fy > 0, y, 0.0)
    xx, yy = x0 * x0, y0 * y0
    cx, cxx, cy, cyy = (np.concatenate([[0.0], np.cumsum(v)]) for v in (x0, xx, y0, yy))
    best = (0, 0.0)
    for lag in range(-max_lag, max_lag + 1):
        if abs(lag) >= n - 1:
            continue
        (a0, a1), (b0, b1) = ((0, n - lag), (lag, n)) if lag >= 0 else ((-lag, n), (0, n + lag))
        a, b = slice(a0, a1), slice(b0, b1)
        if gaps:  # only pairs with both present count
            k = _dot(fx[a], fy[b])
            if k < 2:
                continue
            sx, sy, sxx, syy = _dot(x0[a], fy[b]), _dot(fx[a], y0[b]), _dot(xx[a], fy[b]), _dot(fx[a], yy[b])
        else:
            k = a1 - a0
            sx, sy, sxx, syy = cx[a1] - cx[a0], cy[b1] - cy[b0], cxx[a1] - cxx[a0], cyy[b1] - cyy[b0]
        vx, vy = sxx - sx * sx / k, syy - sy * sy / k
        # a side constant over its pairs has no correlation (pandas: NaN); its variance is then rounding only
        if vx <= CONSTANT_VARIANCE * k or vy <= CONSTANT_VARIANCE * k:
            continue
        c = float(np.clip((_dot(x0[a], y0[b]) - sx * sy / k) / np.sqrt(vx * vy), -1.0, 1.0))
        if abs(c) > abs(best[1]) + 1e-12:
            best = (lag, c)
    return best


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rank correlation as pandas' ``x.corr(y, method="spearman")`` computes it (scipy's
    ``spearmanr``: average ranks of the pairs where both are present, then numpy's ``corrcoef``), bit for bit,
    without importing scipy.stats (~0.8 s at the start of notebook 01). Both series share one index."""
    valid = (x.notna() & y.notna()).to_numpy()
    a, b = x.to_numpy(dtype=float)[valid], y.to_numpy(dtype=float)[valid]
    if len(a) <= 1 or (a[0] == a).all() or (b[0] == b).all():
        return float("nan")
    ranks = np.column_stack((pd.Series(a).rank(method="average").to_numpy(),
                             pd.Series(b).rank(method="average").to_numpy()))
    return float(np.corrcoef(ranks, rowvar=False)[1, 0])


def correlate(df: pd.DataFrame, win: IncidentWindow, step_seconds: int,
              primary: str = PRIMARY_SIGNAL) -> pd.DataFrame:
    """Per signal: Spearman correlation with the primary, onset time, lead vs the primary, best lag."""
    span = (win.baseline[0], win.incident[1])
    seg = _between(df, span)
    p_onset = onset_time(df[primary], win)
    rows = []
    for name in df.columns:
        onset = onset_time(df[name], win)
        if seg[name].nunique() <= 1:
            rho, lag, lag_corr = np.nan, 0, np.nan
        else:
            rho = spearman(seg[name], seg[primary])
            lag, lag_corr = best_lag(seg[name], seg[primary])
        lead = (p_onset - onset).total_seconds() if (onset is not None and p_onset is not None) else np.nan
        rows.append({"signal": name, "spearman_vs_primary": rho, "onset": onset, "leads_primary_by_s": lead,
                     "best_lag_s": lag * step_seconds, "corr_at_best_lag": lag_corr})
    return pd.DataFrame(rows).set_index("signal")


def symptom_table(df: pd.DataFrame, win: IncidentWindow, step_seconds: int) -> pd.DataFrame:
    """Levels and correlation side by side, ordered by onset (first mover first)."""
    table = level_table(df, win).join(correlate(df, win, step_seconds))
    # an onset of a signal that did not change is noise (e.g. traffic ramping up at the window start)
    table.loc[~table["changed"], "onset"] = pd.NaT
    table.loc[~table["changed"], "leads_primary_by_s"] = np.nan
    return table.sort_values(["onset", "signal"], na_position="last")


def first_movers(table: pd.DataFrame, primary: str = PRIMARY_SIGNAL) -> list[str]:
    """Changed signals whose onset is at or before the primary's: candidates for the cause side."""
    p = table.loc[primary, "onset"]
    if pd.isna(p):
        return []
    movers = table[(table["changed"]) & table["onset"].notna() & (table["onset"] <= p)]
    return [s for s in movers.index if s != primary]
