"""Whether a change helped, judged from two measurements with their noise (pure: no I/O).

A ``Measurement`` is one window of direct data (the Redis keyspace counters, the target statements'
pg_stat_statements deltas): its value, an interval for the noise, how many events it rests on, and when
the window ran. ``verdict`` compares a before and an after window:

* inconclusive: either window rests on too few events to say anything;
* helped / worse: the after value is better / worse by at least ``EFFECT_THRESHOLD`` of the before value
  *and* the two intervals do not overlap (the difference is larger than the noise);
* no effect: otherwise.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

# scipy.stats is imported by the two functions that need it: it costs ~0.8 s, and notebook 04 imports this
# module (through actions.execution) in every mode but measures only in lab and live mode.

# A relative change smaller than this is "no effect" even when the intervals separate: the incident moved its
# signals by 10x (p95 40 -> 800 ms, hit ratio 0.9 -> <0.1), so a fix worth keeping moves them by far more.
EFFECT_THRESHOLD = 0.10
# Confidence of the intervals: 95 %, the usual choice for a two-sided "is this real" at an incident.
CONFIDENCE = 0.95
VERDICTS = ("helped", "no effect", "worse", "inconclusive")


@dataclass
class Measurement:
    what: str  # e.g. "Redis keyspace hit ratio", "mean ms per call of 1 statement(s)"
    value: float | None
    low: float | None
    high: float | None
    events: int  # lookups, calls: what the value rests on
    window_start: str  # ISO 8601, the first data point's time
    window_end: str
    sub_windows: int
    enough: bool  # events >= the probe's minimum
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        if self.value is None:
            return f"{self.what}: no data ({self.events} events)"
        return (f"{self.what} {self.value:.4g} [{self.low:.4g}, {self.high:.4g}] over {self.events} events, "
                f"{self.sub_windows} sub-windows, {self.window_start[11:19]}-{self.window_end[11:19]} UTC")


def wilson(successes: float, n: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion (hits / lookups); (0, 1) without data."""
    if n <= 0:
        return 0.0, 1.0
    from scipy import stats

    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval over sub-window values; the mean itself when only one."""
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return math.nan, math.nan, math.nan
    m = statistics.fmean(clean)
    if len(clean) < 2:
        return m, m, m
    from scipy import stats

    half = stats.t.ppf(0.5 + confidence / 2, len(clean) - 1) * statistics.stdev(clean) / math.sqrt(len(clean))
    return m, m - half, m + half


def verdict(before: Measurement | None, after: Measurement | None, higher_is_worse: bool,
            threshold: float = EFFECT_THRESHOLD) -> str:
    """helped / no effect / worse / inconclusive (see the module docstring)."""
    if before is None or after is None or not (before.enough and after.enough):
        return "inconclusive"
    if before.value is None or after.value is None:
        return "inconclusive"
    diff = after.value - before.value
    rel = diff / abs(before.value) if before.value else (math.copysign(1.0, diff) if diff else 0.0)
    better = -rel if higher_is_worse else rel
    apart = after.low > before.high or after.high < before.low
    if better >= threshold and apart:
        return "helped"
    if better <= -threshold and apart:
        return "worse"
    return "no effect"
