"""Step 05, validation: before/after per signal against the baseline and the SLO, and the verdict."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from runbook_lib.signal_catalog import CATALOG
from runbook_lib.steps.formatting import fmt, records
from runbook_lib.steps.symptom_correlation import load_window  # noqa: F401 - 05 reads the window
from runbook_lib.validate import before_after as compare_dx
from runbook_lib.validate.before_after import after_ready_at, validation_windows  # noqa: F401 - the notebook's


@dataclass
class Validation:
    """What 05 found: the windows compared, the full table, the table to show, the verdict, validation.json."""

    baseline: tuple
    before: tuple
    after: tuple | None
    table: pd.DataFrame
    display: pd.DataFrame
    verdict: dict
    payload: dict


def validation(df: pd.DataFrame, symptoms_json: dict, remediation: dict | None, slo) -> Validation:
    baseline, before, after, how = validation_windows(symptoms_json, remediation, df)
    table = compare_dx.compare(df, baseline, before, after, slo)
    verdict = compare_dx.overall(table, how)
    display = pd.DataFrame({
        "signal": table["label"],
        "baseline": [fmt(v, CATALOG[s].unit) for s, v in table["baseline"].items()],
        "before (incident)": [fmt(v, CATALOG[s].unit) for s, v in table["before"].items()],
        "after": [fmt(v, CATALOG[s].unit) for s, v in table["after"].items()],
        "after/before": table["after/before"].round(3),
        "p (Mann-Whitney)": table["p_value"].map(lambda p: "-" if pd.isna(p) else f"{p:.1e}"),
        "target": table["target"], "verdict": table["verdict"]})
    payload = {"windows": {"baseline": [baseline[0].isoformat(), baseline[1].isoformat()],
                           "before": [before[0].isoformat(), before[1].isoformat()],
                           "after": [after[0].isoformat(), after[1].isoformat()] if after else None,
                           "after_from": how},
               "verdict": verdict, "signals": records(table)}
    return Validation(baseline, before, after, table, display, verdict, payload)


def validation_conclusion(verdict: dict, table: pd.DataFrame) -> str:
    p95 = table.loc["latency_p95_ms"] if "latency_p95_ms" in table.index else None
    lines = [f"**Concluded. {verdict['verdict']}.** Score {verdict['score']:.0f}/100 "
             f"(share of signals back within SLO or baseline)."]
    if not verdict["validated"]:
        lines.append("Re-run this step once there is data after the change: "
                     "`runbook run --only 05 --out RUN_DIR` (it reads the other steps' files from RUN_DIR).")
    elif p95 is not None:
        lines.append(f"p95 {p95.before:.0f} ms -> {p95.after:.0f} ms ({p95['after/before']:.3f}x), "
                     f"baseline {p95.baseline:.0f} ms.")
    if verdict["failing"]:
        lines.append("Still off: " + ", ".join(CATALOG[s].label for s in verdict["failing"]) + ".")
    return "\n\n".join(lines)
