"""Step 05, validation: the before/after judge per signal, the SLO check, the verdict and validation.json.

The statistics and the verdict rule are in ``runbook_lib.validate.before_after`` (its docstring explains them);
this module picks the windows from what 01 and 04 handed over, formats the tables the notebook shows and
writes the sentences that close each of its sections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from runbook_lib.signal_catalog import CATALOG, PRIMARY_SIGNAL
from runbook_lib.steps.formatting import fmt, records
from runbook_lib.steps.symptom_correlation import load_window  # noqa: F401 - 05 reads the window
from runbook_lib.validate import before_after as judge
from runbook_lib.validate.before_after import after_ready_at  # noqa: F401 - the notebook's wait-for-data cell

# What the verdict means for the incident, in the conclusion's first words.
HEADLINE = {judge.PASS: "fixed", judge.MARGINAL: "fixed in part", judge.FAIL: "not fixed",
            judge.NOT_VALIDATED: "not validated yet"}


@dataclass
class Validation:
    """What 05 found: the windows, the full table and the one to show, the verdict, the write-up's claims
    (None unless the incident is the D2 one) and validation.json."""

    windows: judge.Windows
    table: pd.DataFrame
    display: pd.DataFrame
    verdict: dict
    claims: pd.DataFrame | None
    payload: dict

    @property
    def baseline(self) -> tuple:
        return self.windows.baseline

    @property
    def before(self) -> tuple:
        return self.windows.before

    @property
    def after(self) -> tuple | None:
        return self.windows.after


def change_events(events) -> list[pd.Timestamp]:
    """The times of the changes among the source's events (kind "remediation")."""
    return [e.time for e in events if e.kind == "remediation"]


def validation(df: pd.DataFrame, symptoms_json: dict, remediation: dict | None, slo, changes=(),
               incident_id: str = "") -> Validation:
    """Judge every signal of ``df`` over matched windows; ``changes``: times of remediation events."""
    windows = judge.validation_windows(symptoms_json, remediation, df, changes)
    table = judge.compare(df, windows.baseline, windows.before, windows.after, slo)
    verdict = judge.overall(table, windows.how)
    claims = judge.writeup_claims(table) if judge.is_d2_incident(incident_id) and windows.after else None
    return Validation(windows, table, display_table(table), verdict, claims, _payload(windows, table, verdict, claims))


def _span(span) -> list[str] | None:
    return [span[0].isoformat(), span[1].isoformat()] if span else None


def _payload(windows: judge.Windows, table: pd.DataFrame, verdict: dict, claims: pd.DataFrame | None) -> dict:
    finite = table.replace([np.inf, -np.inf], np.nan)  # nothing infinite reaches JSON
    return {"windows": {"baseline": _span(windows.baseline), "before": _span(windows.before),
                        "after": _span(windows.after), "after_from": windows.how, "samples": windows.samples},
            "verdict": verdict, "signals": records(finite),
            "claims": records(claims) if claims is not None else None,
            "method": {"confidence": judge.CONFIDENCE, "critical": list(judge.CRITICAL),
                       "pass_score": judge.PASS_SCORE, "marginal_score": judge.MARGINAL_SCORE,
                       "tolerance": {s: [b.relative, b.floor] for s, b in judge.TOLERANCE.items()},
                       "interval": "Hodges-Lehmann shift, Mann-Whitney CI with Var(U) inflated by the "
                                   "integrated autocorrelation time (Geyer initial positive sequence)"}}


# --- what the notebook shows ---------------------------------------------------------------------------------


def _range(lo: float, hi: float, unit: str, exact: bool = True) -> str:
    if pd.isna(lo):
        return "-"
    # too few effective samples for the CI: the range of every pairwise difference stands in (judge.hodges_lehmann)
    return f"{fmt(lo, unit)} to {fmt(hi, unit)}" + ("" if exact else " (every pair)")


def _slo_cell(r: pd.Series) -> str:
    if not r["slo_op"]:
        return "-"
    return f"{r['slo_op']} {fmt(r['slo_target'], r['unit'])}: {r['slo']}"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The judge's table as an SRE reads it: one row per signal, values in their units."""
    rows = []
    for _, r in table.iterrows():
        u = r["unit"]
        rows.append({"signal": r["label"] + (" (critical)" if r["critical"] else ""), "expect": r["expect"],
                     "before": fmt(r["before"], u), "after": fmt(r["after"], u), "shift (HL)": fmt(r["shift"], u),
                     f"{judge.CONFIDENCE:.0%} CI of the shift": _range(r["shift_lo"], r["shift_hi"], u, r["shift_ci_exact"]),
                     "no change within": "-" if pd.isna(r["band"]) else "+/- " + fmt(r["band"], u),
                     "n (effective)": f"{r['n_after']} ({r['n_eff']:.0f})" if pd.notna(r["n_eff"]) else str(r["n_after"]),
                     "p (Mann-Whitney)": "-" if pd.isna(r["p_value"]) else f"{r['p_value']:.2g}",
                     "SLO": _slo_cell(r), "verdict": r["verdict"],
                     "passes": "-" if r["change"] == judge.NO_DATA or r["expect"] == judge.REPORT else
                     ("yes" if r["passed"] else "NO")})
    return pd.DataFrame(rows)


def claims_display(claims: pd.DataFrame) -> pd.DataFrame:
    """The write-up's claims beside the measurement, values in the signals' units."""
    out = []
    for text, c in claims.iterrows():
        u = CATALOG[c["signal"]].unit
        out.append({"write-up claims": text, "signal": CATALOG[c["signal"]].label,
                    "claimed": (f"{fmt(c['claimed before'], u)} -> {fmt(c['claimed after'], u)}"
                                if pd.notna(c["claimed before"]) else "-"),
                    "claimed after/before": f"{c['claimed after/before']:.2f}x",
                    "measured here": f"{fmt(c['measured before'], u)} -> {fmt(c['measured after'], u)}",
                    "measured after/before": "-" if pd.isna(c["measured after/before"])
                    else f"{c['measured after/before']:.2f}x",
                    "holds here": {True: "yes", False: "no", None: "not measurable"}[c["holds here"]]})
    return pd.DataFrame(out)


# --- the sentences that close each section -------------------------------------------------------------------


def judge_sentence(verdict: dict, table: pd.DataFrame) -> str:
    judged = table[(table["change"] != judge.NO_DATA) & (table["expect"] != judge.REPORT)]
    settings = int((table["expect"] == judge.REPORT).sum())
    if not verdict["validated"]:
        return f"**Nothing judged yet:** {verdict['reason']}."
    return (f"**{int(judged['passed'].sum())} of {len(judged)} signals pass** (score {verdict['score']:.0f}/100"
            + (f"; {settings} setting{'s' if settings > 1 else ''} shown, not judged" if settings else "") + "). "
            f"Verdict **{verdict['outcome']}**: {verdict['reason']}.")


def windows_sentence(v: Validation) -> str:
    if v.after is None:
        return f"No after window yet: {v.windows.how}."
    return f"Compared {v.windows.how}."


def slo_sentence(table: pd.DataFrame) -> str:
    rows = table[(table["slo_op"] != "") & (table["change"] != judge.NO_DATA)]
    if not len(rows):
        return "No SLO signal could be judged: no data after the change."
    parts = [f"{r['label']} {fmt(r['after'], r['unit'])} ({r['slo_op']} {fmt(r['slo_target'], r['unit'])}: "
             f"{r['slo']})" for _, r in rows.iterrows()]
    missed = rows[rows["slo"] != judge.MET]
    tail = ("every SLO is met." if not len(missed) else
            "not met with confidence: " + ", ".join(missed["label"]) + ".")
    return "After the fix: " + "; ".join(parts) + " - " + tail


def claims_sentence(claims: pd.DataFrame | None, incident_id: str) -> str:
    if claims is None:
        return (f"Not compared: incident `{incident_id}` is not the D2 incident of the write-up (its id has no "
                "`d2` token), or there is no after window yet.")
    holds = claims["holds here"]

    def names(value) -> str:
        return ", ".join(CATALOG[s].label for s, h in zip(claims["signal"], holds) if h is value) or "none"

    return (f"Of the write-up's {len(claims)} claims, as far or further here: {names(True)}; short of the claim: "
            f"{names(False)}; not measurable here: {names(None)}. The write-up's levels are another system's; "
            "what compares is the change.")


def validation_conclusion(verdict: dict, table: pd.DataFrame) -> str:
    lines = [f"**Concluded: {verdict['outcome'].upper()}, {HEADLINE[verdict['outcome']]}.** {verdict['reason']}."]
    if not verdict["validated"]:
        lines.append("Re-run this step once there is data after the change: "
                     "`runbook run --only 05 --out RUN_DIR` (it reads the other steps' files from RUN_DIR).")
        return "\n\n".join(lines)
    lines.append(f"Score {verdict['score']:.0f}/100: the weighted share of signals that pass (critical x"
                 f"{judge.WEIGHT_CRITICAL:g}, other SLO signals x{judge.WEIGHT_SLO:g}); pass from "
                 f"{judge.PASS_SCORE:g}, marginal from {judge.MARGINAL_SCORE:g}.")
    if PRIMARY_SIGNAL in table.index and table.loc[PRIMARY_SIGNAL, "change"] != judge.NO_DATA:
        p = table.loc[PRIMARY_SIGNAL]
        lines.append(f"{p['label']} {fmt(p['before'], p['unit'])} -> {fmt(p['after'], p['unit'])} "
                     f"({p['after/before']:.3f}x; shift CI {_range(p['shift_lo'], p['shift_hi'], p['unit'], p['shift_ci_exact'])}), "
                     f"baseline {fmt(p['baseline'], p['unit'])}.")
    if verdict["failing"]:
        lines.append("Still off: " + ", ".join(CATALOG[s].label for s in verdict["failing"]) + ".")
    return "\n\n".join(lines)


ALERT_RULES_FILE = "alerts.rules.yml"


def alert_rules(step) -> tuple[str | None, pd.DataFrame, str]:
    """The alert rules that catch the next regression (``validate.alert_rules``: the write-up's three alerts
    rewritten correctly plus multiwindow burn-rate alerts on the latency and error SLOs), written into the run
    folder and checked with ``promtool check rules`` when promtool is installed. Returns (file name or None, one
    row per alert, the closing sentence)."""
    from runbook_lib.validate import alert_rules as ar
    from runbook_lib.validate import promtool

    cols = ["severity", "for", "expr"]
    if step.settings.alert_metrics is None:
        return None, pd.DataFrame(columns=cols), ("**Concluded.** No alert rules: the parameters have no "
                                                  "`alert_metrics` section naming the service's raw metrics.")
    rules = ar.rules(ar.metrics_from(step.settings.alert_metrics), step.settings.slo, step.settings.incident.service)
    path = ar.write_rules(step.run_dir, rules, name=ALERT_RULES_FILE)
    try:
        promtool.check_rules(path)
        checked = "`promtool check rules` passes"
    except promtool.PromtoolError as e:
        checked = f"not checked by promtool ({e})"
    rows = {r["alert"]: {"severity": r["labels"].get("severity", ""), "for": r.get("for", "0s"),
                         "expr": " ".join(r["expr"].split())}
            for g in rules["groups"] for r in g["rules"] if "alert" in r}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=cols).rename_axis("alert")
    return ALERT_RULES_FILE, frame, (f"**Concluded.** {len(frame)} alerts in `{ALERT_RULES_FILE}` ({checked}); load "
                                     "it into the service's Prometheus (`rule_files`) so the next regression pages "
                                     "before users report it.")
