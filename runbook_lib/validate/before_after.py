"""Before/after validation per signal, in the spirit of Kayenta's judge (pure).

For each signal: medians before (the incident) and after (the recovery), the after/before ratio,
a two-sided Mann-Whitney U test, and a verdict. A signal passes when it is back within the SLO
(for SLO signals) or, for the others, within TOLERANCE of its pre-incident baseline or better than it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from runbook_lib.model import IncidentWindow
from runbook_lib.signal_catalog import CATALOG

# Kayenta's MannWhitneyClassifier uses a 98% confidence level in the judge; we report p < 0.02.
ALPHA = 0.02
# Non-SLO signals must be back within 25% of their baseline median (Kayenta's default tolerance).
TOLERANCE = 0.25
# Minimum samples per side for the test to mean anything (5 min at 30 s).
MIN_SAMPLES = 10


def _between(s: pd.Series, span) -> pd.Series:
    return s.loc[(s.index >= span[0]) & (s.index <= span[1])].dropna()


def slo_targets(slo) -> dict[str, tuple[str, float]]:
    """Signal -> (comparison, target) from the SLO section."""
    return {"latency_p95_ms": ("<=", slo.latency_p95_ms), "error_ratio": ("<=", slo.error_ratio),
            "cache_hit_ratio": (">=", slo.cache_hit_ratio)}


NO_AFTER = "no data after the change"
# Past the tolerance on the good side (e.g. lower CPU once the database stops scanning): not a failure.
BETTER = "better than baseline"


def compare(df: pd.DataFrame, baseline: tuple, before: tuple, after: tuple | None, slo) -> pd.DataFrame:
    """One row per signal; with ``after`` None every verdict is NO_AFTER (not validated yet)."""
    targets = slo_targets(slo)
    rows = []
    for name in df.columns:
        b, base = _between(df[name], before), _between(df[name], baseline)
        a = _between(df[name], after) if after else pd.Series(dtype="float64")
        row = {"signal": name, "label": CATALOG[name].label, "baseline": base.median(), "before": b.median(),
               "after": a.median(), "n_before": len(b), "n_after": len(a)}
        row["after/before"] = row["after"] / row["before"] if row["before"] else np.nan
        if len(b) >= MIN_SAMPLES and len(a) >= MIN_SAMPLES and (b.nunique() > 1 or a.nunique() > 1):
            from scipy.stats import mannwhitneyu  # imported here: scipy.stats costs ~1.5 s at kernel start

            row["p_value"] = float(mannwhitneyu(b, a, alternative="two-sided").pvalue)
        else:
            row["p_value"] = np.nan
        row["significant"] = bool(row["p_value"] < ALPHA) if np.isfinite(row["p_value"]) else False
        if not len(a):
            row["target"] = "-"
            row["verdict"] = NO_AFTER
        elif name in targets:
            op, target = targets[name]
            ok = row["after"] <= target if op == "<=" else row["after"] >= target
            row["target"] = f"{op} {target:g}"
            row["verdict"] = "meets SLO" if ok else "violates SLO"
        else:
            row["target"] = f"baseline +/- {TOLERANCE:.0%}"
            near = abs(row["after"] - row["baseline"]) <= TOLERANCE * abs(row["baseline"]) if row["baseline"] else True
            lower = row["after"] < row["baseline"]
            better = lower if CATALOG[name].higher_is_worse else not lower
            row["verdict"] = "back to baseline" if near else (BETTER if better else "differs from baseline")
        rows.append(row)
    return pd.DataFrame(rows).set_index("signal")


def overall(table: pd.DataFrame, after_from: str = "") -> dict:
    """Fixed when every SLO signal meets its SLO; the share of signals back to normal as a score."""
    if (table["verdict"] == NO_AFTER).all():
        return {"fixed": False, "validated": False, "score": 0.0, "failing": [],
                "verdict": f"NOT VALIDATED YET: {after_from or NO_AFTER}"}
    slo_rows = table[table["target"].str.startswith(("<=", ">="))]
    ok = table["verdict"].isin(["meets SLO", "back to baseline", BETTER])
    fixed = bool(len(slo_rows) and (slo_rows["verdict"] == "meets SLO").all())
    return {"fixed": fixed, "validated": True, "score": round(100 * float(ok.mean()), 1),
            "failing": list(table.index[~ok]), "after_from": after_from,
            "verdict": "FIXED: every SLO signal is back within its objective" if fixed
            else "NOT FIXED: SLO not met by " + ", ".join(slo_rows.index[slo_rows["verdict"] != "meets SLO"])}


# --- which windows: before = the incident, after = the recovery or the data since the change settled ---

# After a change, give it this long to act before measuring "after" (caches refill, pools drain).
SETTLE_AFTER_CHANGE = pd.Timedelta(seconds=60)


def after_ready_at(remediation: dict | None, step_seconds: int) -> pd.Timestamp | None:
    """When enough data after the last applied change exists to validate it (None: nothing to wait for)."""
    finished = (remediation or {}).get("finished_at")
    if not (finished and (remediation or {}).get("applied")):
        return None
    return pd.Timestamp(finished) + SETTLE_AFTER_CHANGE + pd.Timedelta(seconds=step_seconds * (MIN_SAMPLES + 1))


def validation_windows(symptoms_json: dict, remediation: dict | None, df: pd.DataFrame):
    """(baseline, before, after, how). After = the recovery the data shows; else the data since the last
    applied change settled; else None (not validated yet)."""
    win = IncidentWindow.from_dict(symptoms_json["window"])
    if win.recovery is not None:
        return win.baseline, win.incident, win.recovery, "recovery found in the data"
    finished = (remediation or {}).get("finished_at")
    if finished and (remediation or {}).get("applied"):
        start = pd.Timestamp(finished) + SETTLE_AFTER_CHANGE
        if int((df.index >= start).sum()) >= MIN_SAMPLES:
            return win.baseline, win.incident, (start, df.index[-1]), "data since the remediation settled"
        return win.baseline, win.incident, None, (f"fewer than {MIN_SAMPLES} samples since the "
                                                  f"remediation settled ({start:%H:%M:%S} UTC)")
    return win.baseline, win.incident, None, "no recovery in the data and no applied remediation to measure after"
