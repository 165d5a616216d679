"""Did the fix work? A before/after judge per signal, modelled on Kayenta's canary judge (pure).

DataFrames in, tables and dicts out; no I/O. Step 05 (``runbook_lib.steps.validation``) is the glue.

**Windows.** ``before`` is the incident as it was just before the first change; ``after`` starts once the last
change has settled (SETTLE_AFTER_CHANGE after it) or, if later, where the data itself shows the recovery. The
incident's own onset settles too: its first SETTLE_AFTER_CHANGE (the ramp after the deploy) is left out. The
two are matched: the same number of samples, the last ``L`` of the incident and the first ``L`` after, with
``L`` the shorter of the two (at least MIN_SAMPLES). ``baseline`` (before the incident) only decides which
signals the incident hit (before worse than baseline by more than the band; the primary signal always), i.e.
which ones the fix must *improve*; the others must merely not get worse. Settings (``CONFIGURED``: the pool
maximum) are shown, never judged.

**Per signal** (Kayenta's ``MannWhitneyClassifier``, see /work/shared/reference/domain-techniques.md §5):

- the Hodges-Lehmann shift: the median of all pairwise differences after - before;
- its confidence interval at CONFIDENCE from the order statistics of those differences (the Mann-Whitney
  interval Kayenta and R's ``wilcox.test(conf.int=TRUE)`` use), with the variance of U inflated for
  autocorrelation (below); the Mann-Whitney p-value (``scipy.stats.mannwhitneyu``) gets the same correction;
- a no-change band of +/- TOLERANCE[signal] around zero (relative to the before level, with a floor in the
  signal's unit): a CI wholly past the band is "better" or "worse", wholly inside it "no change", across
  an edge "inconclusive";
- the SLO (``settings.slo``) on the after level: its median, with a distribution-free CI for the median
  (order statistics, same correction; when too few effective samples put a rank outside the data, the
  window's extreme stands in: "every sample"): "met" (the whole CI meets the target), "borderline" (the
  median does, the CI does not) or "missed" (the median does not).

**Why an effective-sample-size correction rather than a moving-block bootstrap.** Samples 5-30 s apart are
strongly autocorrelated (lag-1 0.8-0.95 on the bundled lab incident), so an i.i.d. interval is far too
narrow. Under dependence the variance of U (like that of a mean) grows by the integrated autocorrelation time
``tau = 1 + 2 * sum_k rho_k`` (Zwiers & von Storch 1995, J. Climate 8:336, "Taking serial correlation into
account in tests of the mean"); we inflate Var(U) by the larger of the two windows' ``tau``, each estimated with
Geyer's initial positive sequence (the ESS estimator of MCMC practice), so ``n / tau`` samples count. It was
simulated beside three alternatives on noise with no shift (100-200 seeds, "changed" = CI outside a 2 % band):

- the i.i.d. interval: a change in 18-30 % of seeds on AR(1) rho 0.8, 33-49 % on rho 0.9 (n 30-120);
- a moving-block bootstrap of the HL shift (block ``ceil((1.5 n)^(1/3) (2 rho / (1 - rho^2))^(2/3))`` from
  the lag-1 autocorrelation, the AR(1) rule for a mean; 1,000 resamples): 6-15 % at rho 0.8, 12-36 % at 0.9
  (a 60-sample window with rho 0.9 holds ~3 blocks), ~0.1-0.25 s per signal, and it needs a fixed seed;
- the AR(1) factor ``(1 + rho) / (1 - rho)`` from the lag-1 autocorrelation alone: 0-4 %, but the lab's
  correlation is a 30 s rate() sampled every 5 s (it dies out by lag 6-8), which AR(1) reads as rho 0.95 and
  tau 39 where the measured tau is 6-15: p95 92 -> 9 ms came out "inconclusive";
- this one: 0.5-3.5 % at rho 0.8, 1-10 % at 0.9, 0-1 % on moving averages; deterministic (stable golden
  notebooks), ~1 ms per signal. Its limit: at rho >= 0.95 with fewer than ~60 samples a window it still
  under-covers (8-18 % false changes). tests/validate/test_before_after.py checks it against the i.i.d. one.

**Verdict** (Kayenta: critical metrics fail the run; score = weighted share of passing signals, pass >= 95,
marginal >= 75). A signal passes when it improved (if the incident hit it) or did not get worse (if it did
not), and it does not miss its SLO. Then, first rule that applies:

1. fail: a CRITICAL signal (p95, p99 latency, 5xx ratio) fails: it misses its SLO, got worse, or did not
   improve although the incident hit it;
2. fail: the score is below MARGINAL_SCORE;
3. marginal: a non-critical signal misses its SLO (the bundled incident's cache hit ratio: 77.5 % against
   80 %) - what users feel is fixed, a promise is still broken;
4. marginal: an SLO is only borderline, or a critical signal has no data to judge;
5. marginal: the score is below PASS_SCORE;
6. pass.

**The write-up's claims.** When ``is_d2_incident(settings.incident.id)`` (the id holds the token ``d2``:
``d2-latency``, ``lab-d2-latency``, ``d2-synthetic``), ``writeup_claims`` puts the D2 write-up's figures
beside the measured before/after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from runbook_lib.errors import RunbookError
from runbook_lib.model import IncidentWindow
from runbook_lib.signal_catalog import CATALOG, PRIMARY_SIGNAL

Span = tuple[pd.Timestamp, pd.Timestamp]


class JudgeInputError(RunbookError):
    """The data handed to the judge cannot be judged (a signal the catalog does not know, a bad window)."""

    hint = "pass signals named in runbook_lib.signal_catalog and windows inside the data"


# --- constants, with their source ----------------------------------------------------------------------------

# Kayenta's judge runs MannWhitneyClassifier at a 98 % confidence level (NetflixACAJudge overrides the class's 0.95).
CONFIDENCE = 0.98
# Fewer samples per window than this and nothing is judged (5 min at 30 s, 50 s at 5 s).
MIN_SAMPLES = 10
# After a change, give it this long to act before measuring "after" (caches refill, pools drain).
SETTLE_AFTER_CHANGE = pd.Timedelta(seconds=60)
# How much "after" a live run waits for: the short window of the SRE workbook's fastest burn-rate alert (1h/5m,
# domain-techniques.md §5). At a 5 s step that is 60 samples, enough for a bounded CI with an autocorrelation
# time up to ~15 (the lab's); with runbook_lib.steps.context.MAX_WAIT (10 min) it leaves 4 minutes of slack.
AFTER_WINDOW = pd.Timedelta(minutes=5)


@dataclass(frozen=True)
class Band:
    """The no-change band: +/- max(relative * |before level|, floor), floor in the signal's unit."""

    relative: float
    floor: float

    def width(self, level: float) -> float:
        return max(self.relative * abs(level), self.floor) if np.isfinite(level) else self.floor


# Kayenta's MannWhitneyClassifier default tolerance (domain-techniques.md §5): within 25 % of the level is no change.
KAYENTA_TOLERANCE = 0.25
# Floors: a level of 0 (no 5xx, an idle pool) must not make every wiggle a change. 1 ms is below what a user or
# an SRE acts on (the lab's healthy p95 is ~5 ms); 0.1 percentage point of 5xx is a tenth of the default 1 %
# SLO (settings.Slo); half a point of hit ratio is half the 1-point resolution the SLOs are written in (80 %,
# the write-up's 70 % alert). One connection, 0.5/s and 1 point of utilization are judgment calls at the
# resolution of those meters, not measured thresholds.
TOLERANCE: dict[str, Band] = {
    "latency_p50_ms": Band(KAYENTA_TOLERANCE, 1.0),
    "latency_p95_ms": Band(KAYENTA_TOLERANCE, 1.0),
    "latency_p99_ms": Band(KAYENTA_TOLERANCE, 1.0),
    "request_rate": Band(KAYENTA_TOLERANCE, 0.5),
    "error_ratio": Band(KAYENTA_TOLERANCE, 0.001),
    "cache_hit_ratio": Band(KAYENTA_TOLERANCE, 0.005),
    "db_query_rate": Band(KAYENTA_TOLERANCE, 0.5),
    "db_query_latency_ms": Band(KAYENTA_TOLERANCE, 1.0),
    "db_connections_active": Band(KAYENTA_TOLERANCE, 1.0),
    "db_pool_max": Band(KAYENTA_TOLERANCE, 1.0),
    "cpu_utilization": Band(KAYENTA_TOLERANCE, 0.01),
    "memory_utilization": Band(KAYENTA_TOLERANCE, 0.01),
}

# What users feel and the pager fires on: their failure fails the whole verdict. p99 and 5xx are the critical
# metrics of domain-techniques.md item 10; p95 is the SLO and the incident's primary signal.
CRITICAL = ("latency_p95_ms", "latency_p99_ms", "error_ratio")
# Weights in the score (Kayenta weighs groups; we weigh signals): critical 3, other SLO signals 2, the rest 1.
WEIGHT_CRITICAL, WEIGHT_SLO, WEIGHT_OTHER = 3.0, 2.0, 1.0
# Settings, not outcomes: the configured pool maximum is shown before and after (a fix may raise it, or fix the
# pool another way: a timeout, a breaker, fewer queries) but neither "improves" nor fails; weight 0. The lab's
# deploy lowers it 10 -> 4, so the rule "the incident moved it, the fix must improve it" called a fix that
# drained the pool (connections in use 4 -> 0, 5xx 16 % -> 0) "not improved" (the 2026-12-08 recording).
CONFIGURED = ("db_pool_max",)
REPORT = "report"  # a CONFIGURED signal's expectation
# Kayenta's score thresholds (json-formats.md, scoreThresholds): pass >= 95, marginal >= 75.
PASS_SCORE, MARGINAL_SCORE = 95.0, 75.0

PASS, MARGINAL, FAIL, NOT_VALIDATED = "pass", "marginal", "fail", "not validated"
NO_AFTER = "no data after the change"
# A signal's change, after vs before, read with its direction (catalog higher_is_worse).
BETTER, WORSE, NO_CHANGE, INCONCLUSIVE, NO_DATA = "better", "worse", "no change", "inconclusive", "no data"
MET, BORDERLINE, MISSED = "met", "borderline", "missed"


# --- windows: before = the incident before the first change, after = once the last change settled --------------


@dataclass(frozen=True)
class Windows:
    baseline: Span
    before: Span
    after: Span | None  # None: not validated yet (``how`` says why)
    how: str
    samples: int  # per window; 0 without an after window


def change_times(remediation: dict | None, changes=()) -> list[pd.Timestamp]:
    """Every known change: the events of kind remediation, and remediation.json's end when it applied any."""
    times = [pd.Timestamp(t) for t in changes]
    rem = remediation or {}
    if rem.get("applied") and rem.get("finished_at"):
        times.append(pd.Timestamp(rem["finished_at"]))
    return sorted(t.tz_localize("UTC") if t.tzinfo is None else t for t in times)


def after_ready_at(remediation: dict | None, step_seconds: int) -> pd.Timestamp | None:
    """When enough data after the last applied change exists to validate it (None: nothing to wait for): the
    change settled, then AFTER_WINDOW or MIN_SAMPLES steps, whichever is longer (one step more for the edge)."""
    times = change_times(remediation)
    if not times:
        return None
    span = max(AFTER_WINDOW, pd.Timedelta(seconds=step_seconds * MIN_SAMPLES))
    return times[-1] + SETTLE_AFTER_CHANGE + span + pd.Timedelta(seconds=step_seconds)


def _after_start(win: IncidentWindow, changes: list[pd.Timestamp]) -> tuple[pd.Timestamp | None, str]:
    settled = changes[-1] + SETTLE_AFTER_CHANGE if changes else None
    recovered = win.recovery[0] if win.recovery is not None else None
    if settled is not None and (recovered is None or settled >= recovered):
        wait = f"{SETTLE_AFTER_CHANGE.total_seconds():.0f} s"
        return settled, f"once the last change ({changes[-1]:%H:%M:%S} UTC) had {wait} to settle"
    if recovered is not None:
        return recovered, "where the data shows the recovery"
    return None, "no recovery in the data and no applied remediation to measure after"


def validation_windows(symptoms_json: dict, remediation: dict | None, df: pd.DataFrame, changes=()) -> Windows:
    """Matched before/after windows (see the module docstring); ``changes``: times of remediation events."""
    win = IncidentWindow.from_dict(symptoms_json["window"])
    times = [t for t in change_times(remediation, changes) if t > win.incident[0]]
    cut = times[0] if times else None
    # the incident's onset is a change too (a deploy): skip its first SETTLE_AFTER_CHANGE, the ramp
    inc = df.index[(df.index >= win.incident[0] + SETTLE_AFTER_CHANGE) & (df.index <= win.incident[1])]
    before_idx = inc[inc < cut] if cut is not None else inc
    start, when = _after_start(win, times)
    if start is None:
        return Windows(win.baseline, win.incident, None, when, 0)
    after_idx = df.index[df.index >= start]
    n = min(len(before_idx), len(after_idx))
    if len(after_idx) < MIN_SAMPLES:
        return Windows(win.baseline, win.incident, None,
                       f"fewer than {MIN_SAMPLES} samples since {start:%H:%M:%S} UTC ({when})", 0)
    if n < MIN_SAMPLES:
        return Windows(win.baseline, win.incident, None,
                       f"only {len(before_idx)} samples of the incident before the first change", 0)
    before, after = (before_idx[-n], before_idx[-1]), (after_idx[0], after_idx[n - 1])
    how = (f"{n} samples each: before {before[0]:%H:%M:%S}-{before[1]:%H:%M:%S} UTC, the incident's last before "
           + (f"the first change ({cut:%H:%M:%S} UTC)" if cut is not None else "its end")
           + f"; after {after[0]:%H:%M:%S}-{after[1]:%H:%M:%S} UTC, {when}")
    return Windows(win.baseline, before, after, how, n)


# --- statistics ----------------------------------------------------------------------------------------------


def _z() -> float:
    from scipy.stats import norm  # imported here: scipy.stats costs ~1.5 s at kernel start

    return float(norm.isf((1 - CONFIDENCE) / 2))


def autocorrelation_time(x: np.ndarray) -> float:
    """Integrated autocorrelation time 1 + 2 * sum of the autocorrelations, summed by Geyer's initial positive
    sequence (pairs of lags while their sum is positive; Geyer 1992, Statistical Science 7:473); >= 1."""
    d = x - x.mean()
    var = float((d * d).sum())
    if len(x) < 4 or var == 0:
        return 1.0
    r = np.array([(d[k:] * d[: len(d) - k]).sum() / var for k in range(len(x) // 2)])
    pairs = r[: len(r) // 2 * 2].reshape(-1, 2).sum(axis=1)
    positive = pairs[: int(np.argmax(pairs <= 0)) if (pairs <= 0).any() else len(pairs)]
    return max(2 * float(positive.sum()) - 1, 1.0)


def variance_inflation(before: np.ndarray, after: np.ndarray) -> float:
    """Var(U) multiplier: the larger of the two windows' autocorrelation times (conservative)."""
    return max(autocorrelation_time(before), autocorrelation_time(after))


def hodges_lehmann(before: np.ndarray, after: np.ndarray,
                   inflation: float = 1.0) -> tuple[float, float, float, bool]:
    """(shift, low, high, exact): median of the pairwise differences after - before and its Mann-Whitney CI at
    CONFIDENCE, Var(U) = n m (n + m + 1) / 12 times ``inflation`` (1.0: the i.i.d. interval). When too few
    effective samples put the CI's ranks outside the data, (low, high) is the range of *every* pairwise
    difference and ``exact`` is False: a weaker statement, but still a decisive one when the windows do not
    overlap at all (every after sample past every before sample: p95 800 -> 40 ms on windows whose trend makes
    tau large is not "inconclusive"), and an honest "inconclusive" when they do."""
    n, m = len(before), len(after)
    d = np.sort(np.subtract.outer(after, before).ravel())
    k = int(np.floor(n * m / 2 - _z() * np.sqrt(n * m * (n + m + 1) / 12 * inflation)))  # 1-based rank
    if k < 1:
        return float(np.median(d)), float(d[0]), float(d[-1]), False
    return float(np.median(d)), float(d[k - 1]), float(d[n * m - k]), True


def median_ci(x: np.ndarray, inflation: float = 1.0) -> tuple[float, float, bool]:
    """(low, high, exact): distribution-free CI of the median at CONFIDENCE (binomial order statistics, n /
    inflation effective samples). When a rank falls outside the data (too few effective samples) that side is
    the window's extreme and ``exact`` is False: "every sample of the window", a weaker statement."""
    s, n = np.sort(x), len(x)
    half = _z() * np.sqrt(n * inflation) / 2
    lo, hi = int(np.floor(n / 2 - half)), int(np.ceil(n / 2 + half))
    return float(s[max(lo, 1) - 1]), float(s[min(hi, n) - 1]), lo >= 1 and hi <= n


def mann_whitney_p(before: np.ndarray, after: np.ndarray, inflation: float = 1.0) -> float:
    """Two-sided Mann-Whitney p-value (scipy, tie-corrected normal approximation), z divided by sqrt(inflation)."""
    from scipy.stats import mannwhitneyu, norm

    if np.all(np.concatenate([before, after]) == before[0]):
        return 1.0  # every value equal: nothing to test (scipy would return nan)
    p = float(mannwhitneyu(after, before, alternative="two-sided", method="asymptotic", use_continuity=False).pvalue)
    return float(2 * norm.sf(norm.isf(p / 2) / np.sqrt(inflation)))


def classify(low: float, high: float, band: float, higher_is_worse: bool) -> str:
    """Kayenta's rule on the shift's CI against the band, read with the signal's direction."""
    if low > band:
        return WORSE if higher_is_worse else BETTER
    if high < -band:
        return BETTER if higher_is_worse else WORSE
    return NO_CHANGE if -band <= low and high <= band else INCONCLUSIVE


# --- one signal ----------------------------------------------------------------------------------------------


def slo_targets(slo) -> dict[str, tuple[str, float]]:
    """Signal -> (comparison, target) from the SLO section."""
    return {"latency_p95_ms": ("<=", slo.latency_p95_ms), "error_ratio": ("<=", slo.error_ratio),
            "cache_hit_ratio": (">=", slo.cache_hit_ratio)}


def slo_status(median: float, low: float, high: float, op: str, target: float) -> str:
    ok = (lambda v: v <= target) if op == "<=" else (lambda v: v >= target)
    if not ok(median):
        return MISSED
    return MET if ok(high if op == "<=" else low) else BORDERLINE


def _hit(name: str, baseline: pd.Series, before_level: float) -> bool:
    """Did the incident hit this signal: is the before level worse than the baseline beyond the band?"""
    if not len(baseline):
        return name == PRIMARY_SIGNAL
    base = float(baseline.median())
    delta = before_level - base if CATALOG[name].higher_is_worse else base - before_level
    return name == PRIMARY_SIGNAL or delta > TOLERANCE[name].width(base)


def weight(name: str, slo_signals) -> float:
    if name in CONFIGURED:
        return 0.0
    return WEIGHT_CRITICAL if name in CRITICAL else WEIGHT_SLO if name in slo_signals else WEIGHT_OTHER


def judge_signal(name: str, before: pd.Series, after: pd.Series, baseline: pd.Series | None = None,
                 target: tuple[str, float] | None = None) -> dict:
    """One row: levels, the HL shift and its CI, the change, the SLO status and whether the signal passes."""
    if name not in CATALOG:
        raise JudgeInputError(f"{name!r} is not a signal of the catalog")
    b, a = before.dropna().to_numpy(float), after.dropna().to_numpy(float)
    base = baseline.dropna() if baseline is not None else pd.Series(dtype="float64")
    row = {"signal": name, "label": CATALOG[name].label, "unit": CATALOG[name].unit, "critical": name in CRITICAL,
           "baseline": float(base.median()) if len(base) else np.nan,
           "before": float(np.median(b)) if len(b) else np.nan, "after": float(np.median(a)) if len(a) else np.nan,
           "n_before": len(b), "n_after": len(a)}
    row["after/before"] = row["after"] / row["before"] if row["before"] else np.nan
    row["expect"] = (REPORT if name in CONFIGURED else
                     "improve" if len(b) and _hit(name, base, row["before"]) else "hold")
    row["target"] = f"{target[0]} {target[1]:g}" if target else "-"
    row["slo_op"], row["slo_target"] = target if target else ("", np.nan)
    if min(len(b), len(a)) < MIN_SAMPLES:
        return {**row, **_unjudged(len(a))}
    infl = variance_inflation(b, a)
    shift, lo, hi, exact = hodges_lehmann(b, a, infl)
    band = TOLERANCE[name].width(row["before"])
    row.update(tau=infl, n_eff=min(len(b), len(a)) / infl, shift=shift, shift_lo=lo, shift_hi=hi,
               shift_ci_exact=exact, band=band,
               p_value=mann_whitney_p(b, a, infl), change=classify(lo, hi, band, CATALOG[name].higher_is_worse))
    row["after_lo"], row["after_hi"], row["after_ci_exact"] = median_ci(a, autocorrelation_time(a))
    row["slo"] = slo_status(row["after"], row["after_lo"], row["after_hi"], *target) if target else "-"
    ok_change = (row["change"] == BETTER if row["expect"] == "improve" else
                 row["change"] != WORSE or row["expect"] == REPORT)
    row["passed"] = bool(ok_change and row["slo"] != MISSED)
    row["verdict"] = _signal_verdict(row)
    return row


def _unjudged(n_after: int) -> dict:
    return {"tau": np.nan, "n_eff": np.nan, "shift": np.nan, "shift_lo": np.nan, "shift_hi": np.nan,
            "shift_ci_exact": False, "band": np.nan, "p_value": np.nan, "change": NO_DATA, "after_lo": np.nan, "after_hi": np.nan,
            "after_ci_exact": False, "slo": "-", "passed": False,
            "verdict": NO_AFTER if not n_after else f"fewer than {MIN_SAMPLES} samples to judge"}


def _signal_verdict(row: dict) -> str:
    change = row["change"]
    if row["expect"] == REPORT:
        return f"a setting, not judged ({change})"
    if row["expect"] == "improve":
        change = "improved" if change == BETTER else "not improved" if change != WORSE else "worse"
    elif change == BETTER:
        change = "better"
    slo = {MET: ", meets SLO", BORDERLINE: ", SLO borderline", MISSED: ", misses SLO"}.get(row["slo"], "")
    return change + slo


# --- every signal, and the verdict ---------------------------------------------------------------------------


def _between(s: pd.Series, span) -> pd.Series:
    if span is None:
        return s.iloc[:0]
    return s.loc[(s.index >= span[0]) & (s.index <= span[1])]


def compare(df: pd.DataFrame, baseline: tuple, before: tuple, after: tuple | None, slo) -> pd.DataFrame:
    """One row per signal (see ``judge_signal``); with ``after`` None every verdict is NO_AFTER."""
    targets = slo_targets(slo)
    rows = [judge_signal(name, _between(df[name], before), _between(df[name], after),
                         _between(df[name], baseline), targets.get(name)) for name in df.columns]
    table = pd.DataFrame(rows).set_index("signal")
    table.insert(list(table.columns).index("critical") + 1, "weight",
                 [weight(s, targets) for s in table.index])
    return table


def _num(v: float, unit: str) -> str:
    return f"{v:.1%}" if unit == "ratio" else f"{v:,.1f} ms" if unit == "ms" else f"{v:,.1f}"


def _ci(lo: float, hi: float, unit: str, exact: bool = True) -> str:
    if not exact:
        return f"every pair {_num(lo, unit)} to {_num(hi, unit)}, too few effective samples for a {CONFIDENCE:.0%} CI"
    return f"CI {_num(lo, unit)} to {_num(hi, unit)}"


def _level_ci(row: pd.Series) -> str:
    lo, hi, u = row["after_lo"], row["after_hi"], row["unit"]
    if row["after_ci_exact"]:
        return _ci(lo, hi, u)
    return f"window {_num(lo, u)} to {_num(hi, u)}, too few effective samples for a {CONFIDENCE:.0%} CI"


def why(row: pd.Series) -> str:
    """Why one signal fails (or is borderline), as a clause naming it."""
    u, label = row["unit"], row["label"]
    if row["change"] == NO_DATA:
        return f"{label} has {row['verdict']}"
    if row["slo"] in (MISSED, BORDERLINE):
        op, target = row["slo_op"], float(row["slo_target"])
        level = (f"{_num(row['after'], u)}, {row['after'] / target:.1f}x the SLO" if op == "<=" and target > 0
                 else f"{_num(row['after'], u)} against {op} {_num(target, u)}")
        if row["slo"] == BORDERLINE:
            return f"{label} meets its SLO only at the median ({level}; {_level_ci(row)})"
        still = "is still" if op == "<=" else "misses its SLO at"
        return f"{label} {still} {level} after the fix ({_level_ci(row)})"
    shift = f"shift {_num(row['shift'], u)}, {_ci(row['shift_lo'], row['shift_hi'], u, row['shift_ci_exact'])}"
    if row["change"] == WORSE:
        return f"{label} got worse after the fix ({shift}, past the +/-{_num(row['band'], u)} no-change band)"
    return (f"{label} did not improve after the fix ({_num(row['before'], u)} -> {_num(row['after'], u)}; "
            f"{shift}; no-change band +/-{_num(row['band'], u)})")


def score(table: pd.DataFrame) -> float:
    judged = table[table["change"] != NO_DATA]
    total = float(judged["weight"].sum())
    return round(100 * float(judged.loc[judged["passed"], "weight"].sum()) / total, 1) if total else 0.0


def _decide(table: pd.DataFrame, points: float) -> tuple[str, str]:
    """(outcome, reason): the module docstring's rules, in order."""
    judged = table[table["change"] != NO_DATA]
    failing = judged[~judged["passed"]]
    crit = failing[failing["critical"]]
    if len(crit):
        first = crit.sort_values("slo", key=lambda s: s != MISSED, kind="stable").iloc[0]
        return FAIL, why(first)
    off = ", ".join(failing["label"])
    if points < MARGINAL_SCORE:
        return FAIL, f"only {points:.0f}/100 of the weighted signals pass (still off: {off})"
    slo_missed = failing[failing["slo"] == MISSED]
    also = [lbl for lbl in failing["label"] if lbl not in set(slo_missed["label"])]
    if len(slo_missed):
        tail = f"; also off: {', '.join(also)}" if also else ""
        return MARGINAL, f"{why(slo_missed.iloc[0])}; every critical signal passes{tail}"
    shaky = table[(table["slo"] == BORDERLINE) | ((table["change"] == NO_DATA) & table["critical"])]
    if len(shaky):
        return MARGINAL, why(shaky.iloc[0])
    if points < PASS_SCORE:
        return MARGINAL, f"{points:.0f}/100 of the weighted signals pass (still off: {off})"
    return PASS, _pass_reason(table)


def _pass_reason(table: pd.DataFrame) -> str:
    text = "every critical signal improved or held and every SLO is met"
    if PRIMARY_SIGNAL in table.index and table.loc[PRIMARY_SIGNAL, "change"] != NO_DATA:
        r = table.loc[PRIMARY_SIGNAL]
        text += (f" ({r['label']} {_num(r['before'], r['unit'])} -> {_num(r['after'], r['unit'])}, shift "
                 f"{_ci(r['shift_lo'], r['shift_hi'], r['unit'], r['shift_ci_exact'])})")
    return text


def overall(table: pd.DataFrame, after_from: str = "") -> dict:
    """The verdict: outcome pass / marginal / fail (or not validated), the reason, the weighted score."""
    if (table["change"] == NO_DATA).all():
        reason = after_from or NO_AFTER
        return {"outcome": NOT_VALIDATED, "fixed": False, "validated": False, "score": 0.0, "failing": [],
                "critical_failing": [], "after_from": after_from, "reason": reason,
                "verdict": f"NOT VALIDATED YET: {reason}"}
    points = score(table)
    outcome, reason = _decide(table, points)
    judged = table[table["change"] != NO_DATA]
    failing = list(judged.index[~judged["passed"]])
    return {"outcome": outcome, "fixed": outcome == PASS, "validated": True, "score": points, "failing": failing,
            "critical_failing": [s for s in failing if s in CRITICAL], "after_from": after_from,
            "reason": reason, "verdict": f"{outcome}: {reason}"}


# --- the D2 write-up's claims beside the measurement ------------------------------------------------------------

# The D2 incident is the one the write-up describes; every id of it holds the token "d2" (parameters/fixtures.yaml
# d2-latency, parameters/lab.yaml lab-d2-latency, the bundles d2-latency and d2-synthetic).
D2_ID = re.compile(r"(?:^|[-_.])d2(?:[-_.]|$)")


def is_d2_incident(incident_id: str) -> bool:
    return bool(D2_ID.search(incident_id or ""))


@dataclass(frozen=True)
class Claim:
    text: str  # as the write-up words it
    signal: str
    before: float | None  # the write-up's levels, in the signal's unit (None: it gives only the change)
    after: float | None
    ratio: float  # the claimed after / before


# /work/shared/reference/d2-incident-writeup.txt, "Performance Improvements Achieved". Its "API latency" is read
# as p95 (the SLO signal); "< 1 %" 5xx as 1 % (an upper bound); "database load" as DB queries/s ("60 % reduction in
# query volume"); "throughput" as the request rate.
WRITEUP_CLAIMS: tuple[Claim, ...] = (
    Claim("Latency Reduction: 800ms -> 50ms (94% improvement)", "latency_p95_ms", 800.0, 50.0, 50 / 800),
    Claim("Cache Hit Ratio: 8% -> 85% (10x improvement)", "cache_hit_ratio", 0.08, 0.85, 0.85 / 0.08),
    Claim("Error Rate: 10% -> <1% (90% reduction)", "error_ratio", 0.10, 0.01, 0.01 / 0.10),
    Claim("Database Load: 60% reduction in query volume", "db_query_rate", None, None, 0.40),
    Claim("Throughput: 3x increase in requests per second", "request_rate", None, None, 3.0),
)


def claim_holds(claimed: float, measured: float) -> bool | None:
    """Does the measured after/before go at least as far as the claimed one, the same way? None: not measurable."""
    if not np.isfinite(measured):
        return None
    return bool(measured <= claimed) if claimed < 1 else bool(measured >= claimed)


def writeup_claims(table: pd.DataFrame) -> pd.DataFrame:
    """The write-up's figures beside the measured before/after medians (NaN where a signal is not in the data)."""
    rows = []
    for c in WRITEUP_CLAIMS:
        m = table.loc[c.signal] if c.signal in table.index else None
        measured = np.nan if m is None else float(m["after/before"])
        rows.append({"claim": c.text, "signal": c.signal, "claimed before": c.before, "claimed after": c.after,
                     "claimed after/before": c.ratio,
                     "measured before": np.nan if m is None else m["before"],
                     "measured after": np.nan if m is None else m["after"],
                     "measured after/before": measured, "holds here": claim_holds(c.ratio, measured)})
    frame = pd.DataFrame(rows).set_index("claim")
    frame["holds here"] = pd.Series([r["holds here"] for r in rows], index=frame.index, dtype=object)  # True/False/None
    return frame
