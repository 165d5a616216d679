"""The work behind each notebook, one function per step, so each notebook cell is one call.

Each function takes what the step reads (signals, the previous step's JSON) and returns plain
objects: tables for display and the payload the step writes for the next one. The conclusion
texts are generated from the numbers, so they stay true for any incident bundle.
"""

from __future__ import annotations

import pandas as pd

from runbook_lib.validate import before_after as compare_dx
from runbook_lib.plan import ranking as impact_dx
from runbook_lib.model import Evidence, Hypothesis, Snapshots
from runbook_lib.diagnose.hypotheses import build_hypotheses
from runbook_lib.diagnose.symptoms import first_movers, symptom_table
from runbook_lib.model import IncidentWindow
from runbook_lib.diagnose.incident_window import find_incident_window
from runbook_lib.signal_catalog import CATALOG, PRIMARY_SIGNAL

# Rounding for display: enough digits to read, few enough to stay stable.
DISPLAY_DECIMALS = 3


def _fmt(v: float, unit: str) -> str:
    if pd.isna(v):
        return "-"
    if unit == "ratio":
        return f"{v:.1%}"
    if unit == "ms":
        return f"{v:,.1f} ms"
    return f"{v:,.1f}"


def _records(table: pd.DataFrame) -> list[dict]:
    """Rows for JSON: numbers rounded to 6 digits, timestamps as ISO strings."""
    t = table.reset_index()
    for col in t.columns:
        if pd.api.types.is_datetime64_any_dtype(t[col]):
            t[col] = t[col].map(lambda v: v.isoformat() if pd.notna(v) else None)
        elif pd.api.types.is_float_dtype(t[col]):
            t[col] = t[col].round(6)
    return t.to_dict(orient="records")


# --- 01 symptom correlation ----------------------------------------------------------------------

def window_frame(win: IncidentWindow) -> pd.DataFrame:
    rows = []
    for name, span, level in (("baseline", win.baseline, win.baseline_level),
                              ("incident", win.incident, win.incident_level),
                              ("recovery", win.recovery, win.recovery_level)):
        if span is None:
            rows.append({"window": name, "start (UTC)": "-", "end (UTC)": "-", "minutes": 0, f"median {win.signal}": None})
            continue
        rows.append({"window": name, "start (UTC)": f"{span[0]:%Y-%m-%d %H:%M:%S}", "end (UTC)": f"{span[1]:%H:%M:%S}",
                     "minutes": round((span[1] - span[0]).total_seconds() / 60, 1),
                     f"median {win.signal}": round(level, 1)})
    return pd.DataFrame(rows).set_index("window")


def symptoms(df: pd.DataFrame, step_seconds: int):
    """(window, full table, display table, payload) for 01."""
    win = find_incident_window(df[PRIMARY_SIGNAL], CATALOG[PRIMARY_SIGNAL].higher_is_worse)
    table = symptom_table(df, win, step_seconds)
    display = pd.DataFrame({
        "signal": [CATALOG[s].label for s in table.index],
        "baseline": [_fmt(r.baseline, r.unit) for r in table.itertuples()],
        "incident": [_fmt(r.incident, r.unit) for r in table.itertuples()],
        "change": [f"{r.ratio:.2f}x" if pd.notna(r.ratio) else "-" for r in table.itertuples()],
        "worse": ["yes" if r.worse else "" for r in table.itertuples()],
        "moved at (UTC)": [f"{r.onset:%H:%M:%S}" if pd.notna(r.onset) else "-" for r in table.itertuples()],
        "before p95 by": [f"{r.leads_primary_by_s:+.0f} s" if pd.notna(r.leads_primary_by_s) else "-"
                          for r in table.itertuples()],
        "rho vs p95": [round(r.spearman_vs_primary, 2) if pd.notna(r.spearman_vs_primary) else None
                       for r in table.itertuples()],
    }, index=table.index)
    payload = {"window": win.as_dict(), "step_seconds": step_seconds, "first_movers": first_movers(table),
               "signals": _records(table)}
    return win, table, display, payload


def symptoms_conclusion(win: IncidentWindow, table: pd.DataFrame) -> str:
    movers = first_movers(table)
    unchanged = [CATALOG[s].label for s in table.index if not table.loc[s, "changed"]]
    first = table.dropna(subset=["onset"]).iloc[0] if table["onset"].notna().any() else None
    lines = [f"**Concluded.** {CATALOG[win.signal].label} went from {win.baseline_level:.0f} ms to "
             f"{win.incident_level:.0f} ms ({win.ratio:.1f}x) at {win.incident[0]:%H:%M:%S} UTC"
             + (f" and recovered to {win.recovery_level:.0f} ms at {win.recovery[0]:%H:%M:%S}." if win.recovery
                else "; it has not recovered in this window.")]
    if first is not None:
        lines.append(f"The first signal to move was **{CATALOG[first.name].label}** at {first.onset:%H:%M:%S}, "
                     f"{first.leads_primary_by_s:.0f} s before p95.")
    if movers:
        lines.append("Moved before or with p95 (cause side): " + ", ".join(CATALOG[m].label for m in movers) + ".")
    if unchanged:
        lines.append("Did not change: " + ", ".join(unchanged) + ".")
    return "\n\n".join(lines)


# --- 02 root cause -------------------------------------------------------------------------------

def load_window(symptoms_json: dict) -> IncidentWindow:
    return IncidentWindow.from_dict(symptoms_json["window"])


def symptom_frame(symptoms_json: dict) -> pd.DataFrame:
    t = pd.DataFrame(symptoms_json["signals"]).set_index("signal")
    t["onset"] = pd.to_datetime(t["onset"], utc=True)
    return t


def root_cause(df: pd.DataFrame, symptoms_json: dict, snap: Snapshots, slo_hit: float) -> list[Hypothesis]:
    win = load_window(symptoms_json)
    return build_hypotheses(symptom_frame(symptoms_json), snap, df, win.incident, slo_hit)


def evidence_sources(meta: dict) -> pd.DataFrame:
    """Where the snapshot evidence came from, and what could not be read (and why)."""
    rows = [{"evidence": "snapshots", "detail": meta["from"]}]
    if meta.get("window"):
        rows.append({"evidence": "window", "detail": f"{meta['window']['start']} -> {meta['window']['end']}"})
    if meta.get("requests"):
        rows.append({"evidence": "HTTP requests in the window", "detail": f"{meta['requests']:,.0f}"})
    rows += [{"evidence": "MISSING", "detail": m} for m in meta.get("missing", [])]
    return pd.DataFrame(rows).set_index("evidence")


def statements_frame(snap: Snapshots, top: int = 8) -> pd.DataFrame:
    s = snap.statements.head(top)
    return pd.DataFrame({"query": s["query"].str.slice(0, 90), "calls/request": s["calls_per_request"].round(2),
                         "rows/call": s["rows_per_call"].round(1), "mean ms": s["mean_ms"].round(2),
                         "share of DB time": (s["time_share"] * 100).round(1).astype(str) + "%"},
                        index=s.index.rename("queryid"))


def findings_payload(hyps: list[Hypothesis], candidates: list[dict], snap: Snapshots, meta: dict) -> dict:
    out = {"hypotheses": [h.as_dict() for h in hyps], "index_candidates": candidates,
           "app_config": snap.app_config, "snapshots": meta}
    if snap.statements is not None:
        out["statements"] = _records(snap.statements)
    if snap.redis is not None:
        out["redis"] = snap.redis
    if snap.cache_plan is not None:
        out["cache_plan"] = snap.cache_plan
    return out


def cache_plan_lines(findings: dict) -> list[str]:
    """The cache recommendation's reasoning, for a reader to check by hand (02, 04)."""
    plan = findings.get("cache_plan")
    if not plan:
        return ["No cache recommendation: no Redis evidence (04 falls back to the seed incident's TTL and memory)."]
    out = []
    for part, what in (("ttl", "TTL"), ("memory", "maxmemory"), ("policy", "eviction policy"), ("key_scheme", "keys")):
        rec = plan[part]
        value = f"{rec['recommended_s']:g} s" if part == "ttl" else str(rec["recommended"])
        out.append(f"{what}: {value}")
        out += [f"    {line}" for line in rec["reasoning"]]
    return out


def root_cause_conclusion(hyps: list[Hypothesis]) -> str:
    supported = [h for h in hyps if not h.disproved]
    disproved = [h for h in hyps if h.disproved]
    lines = []
    if supported:
        top = supported[0]
        lines.append(f"**Concluded.** Most likely cause: **{top.category}**: {top.title.lower()} "
                     f"(confidence {top.confidence:.0%}).")
        if len(supported) > 1:
            lines.append("Contributing: " + "; ".join(f"{h.category} ({h.confidence:.0%})" for h in supported[1:]) + ".")
    else:
        lines.append("**Concluded.** No hypothesis is supported by the evidence: widen the window or add signals.")
    if disproved:
        lines.append("Ruled out: " + "; ".join(f"{h.category} ({h.confidence:.0%}: {h.disprove_by.lower()})"
                                               for h in disproved))
    return "\n\n".join(lines)


def hypotheses_from_json(findings: dict) -> list[Hypothesis]:
    hyps = []
    for d in findings["hypotheses"]:
        h = Hypothesis(d["category"], d["title"], d["statement"], d["disprove_by"],
                       [Evidence(**e) for e in d["evidence"]], d.get("first_onset"))
        hyps.append(h)
    return hyps


# --- 03 impact -----------------------------------------------------------------------------------

def impact(findings: dict) -> list[impact_dx.PlannedAction]:
    hyps = hypotheses_from_json(findings)
    statements = None
    if findings.get("statements"):
        statements = pd.DataFrame(findings["statements"]).set_index("queryid")
    return impact_dx.propose(hyps, statements, findings.get("app_config"), findings.get("index_candidates", []),
                             findings.get("redis"), findings.get("cache_plan"))


def impact_conclusion(actions: list[impact_dx.PlannedAction]) -> str:
    if not actions:
        return "**Concluded.** Nothing to do: no supported cause proposes an action."
    first = [a for a in actions if a.phase == "immediate"]
    execs = [a for a in actions if a.executable]
    lines = [f"**Concluded.** {len(actions)} actions, {len(execs)} of them executable by the runbook."]
    if first:
        lines.append("Do first (minutes, low risk, reversible): " + "; ".join(a.title for a in first) + ".")
    later = [a for a in actions if a.phase != "immediate"]
    if later:
        lines.append("Then: " + "; ".join(f"{a.title} ({a.phase})" for a in later) + ".")
    return "\n\n".join(lines)


# --- 05 validation -------------------------------------------------------------------------------

# After a change, give it this long to act before measuring "after" (caches refill, pools drain).
SETTLE_AFTER_CHANGE = pd.Timedelta(seconds=60)


def after_ready_at(remediation: dict | None, step_seconds: int) -> pd.Timestamp | None:
    """When enough data after the last applied change exists to validate it (None: nothing to wait for)."""
    finished = (remediation or {}).get("finished_at")
    if not (finished and (remediation or {}).get("applied")):
        return None
    return pd.Timestamp(finished) + SETTLE_AFTER_CHANGE + pd.Timedelta(seconds=step_seconds * (compare_dx.MIN_SAMPLES + 1))


def validation_windows(symptoms_json: dict, remediation: dict | None, df: pd.DataFrame):
    """(baseline, before, after, how). After = the recovery the data shows; else the data since the last
    applied change settled; else None (not validated yet)."""
    win = load_window(symptoms_json)
    if win.recovery is not None:
        return win.baseline, win.incident, win.recovery, "recovery found in the data"
    finished = (remediation or {}).get("finished_at")
    if finished and (remediation or {}).get("applied"):
        start = pd.Timestamp(finished) + SETTLE_AFTER_CHANGE
        if int((df.index >= start).sum()) >= compare_dx.MIN_SAMPLES:
            return win.baseline, win.incident, (start, df.index[-1]), "data since the remediation settled"
        return win.baseline, win.incident, None, (f"fewer than {compare_dx.MIN_SAMPLES} samples since the "
                                                  f"remediation settled ({start:%H:%M:%S} UTC)")
    return win.baseline, win.incident, None, "no recovery in the data and no applied remediation to measure after"


def validation(df: pd.DataFrame, symptoms_json: dict, remediation: dict | None, slo):
    baseline, before, after, how = validation_windows(symptoms_json, remediation, df)
    table = compare_dx.compare(df, baseline, before, after, slo)
    verdict = compare_dx.overall(table, how)
    display = pd.DataFrame({
        "signal": table["label"],
        "baseline": [_fmt(v, CATALOG[s].unit) for s, v in table["baseline"].items()],
        "before (incident)": [_fmt(v, CATALOG[s].unit) for s, v in table["before"].items()],
        "after": [_fmt(v, CATALOG[s].unit) for s, v in table["after"].items()],
        "after/before": table["after/before"].round(3),
        "p (Mann-Whitney)": table["p_value"].map(lambda p: "-" if pd.isna(p) else f"{p:.1e}"),
        "target": table["target"], "verdict": table["verdict"]})
    payload = {"windows": {"baseline": [baseline[0].isoformat(), baseline[1].isoformat()],
                           "before": [before[0].isoformat(), before[1].isoformat()],
                           "after": [after[0].isoformat(), after[1].isoformat()] if after else None,
                           "after_from": how},
               "verdict": verdict, "signals": _records(table)}
    return (baseline, before, after), table, display, verdict, payload


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
