"""Step 02, root cause: the hypotheses with their evidence, the database and cache detail, findings.json.

The evidence itself is gathered by ``steps.evidence`` (bundle snapshots, or live PostgreSQL and Redis).
"""

from __future__ import annotations

import pandas as pd

from runbook_lib.diagnose.hypotheses import (  # noqa: F401 - 02 shows them; 03 rebuilds them
    build_hypotheses,
    evidence_frame,
    hypotheses_frame,
    hypotheses_from_json,
)
from runbook_lib.diagnose.statements import idle_tx_holders
from runbook_lib.model import Hypothesis, Snapshots
from runbook_lib.steps.evidence import gather, index_candidates  # noqa: F401 - 02 calls them
from runbook_lib.steps.formatting import records
from runbook_lib.steps.symptom_correlation import load_window, symptom_frame


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
        out["statements"] = records(snap.statements)
    if snap.redis is not None:
        out["redis"] = snap.redis
    if snap.cache_plan is not None:
        out["cache_plan"] = snap.cache_plan
    if snap.cache_findings is not None:
        out["cache_findings"] = snap.cache_findings
    if snap.activity is not None:
        out["pool_holders"] = idle_tx_holders(snap.activity).to_dict("records")
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
    for fam in plan.get("per_family", []):
        out.append(f"family {fam['pattern']}: {fam['do']}; removes up to {fam['removes_up_to']:.0%} of misses")
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


