"""Postmortem export: ``postmortem.md`` and ``postmortem.html`` from a run folder.

The postmortem is built from what the steps wrote (symptoms, findings, plan, remediation,
validation, audit log, figures), never by re-running analysis, so it says exactly what the run
concluded. One list of blocks is rendered twice (Markdown and HTML); everything written passes
through the secret redactor.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import plotly.io as pio

from runbook_lib.actions.audit import read_audit
from runbook_lib.errors import ExportError
from runbook_lib.redaction import redact_text
from runbook_lib.run_folder import FIGURES_DIR, incomplete_reason, run_status

# Charts embedded in the HTML, in this order, when the run has them.
EXPORT_FIGURES = ("01-signals", "02-cache-hit", "05-before-after", "05-slo-latency_p95_ms", "05-slo-error_ratio",
                  "05-slo-cache_hit_ratio")


def _load(run_dir: Path, name: str):
    f = run_dir / name
    return json.loads(f.read_text()) if f.exists() else None


def build_blocks(run_dir: Path) -> list[tuple]:
    symptoms = _load(run_dir, "symptoms.json")
    if symptoms is None:
        raise ExportError(f"{run_dir.name}: symptoms.json is missing")
    findings, plan = _load(run_dir, "findings.json"), _load(run_dir, "plan.json")
    remediation, validation = _load(run_dir, "remediation.json"), _load(run_dir, "validation.json")
    status = run_status(run_dir)
    if symptoms.get("healthy"):
        return _healthy_blocks(run_dir, symptoms, status)
    w = symptoms["window"]
    b: list[tuple] = [("h", 1, f"Postmortem: {status.get('incident', 'incident')}")]
    b.append(("p", f"Run {run_dir.name} · {status.get('mode', '?')} mode · {len(status.get('notebooks', []))} notebooks executed · "
                   f"parameters {status.get('parameters', '?')}"))
    reason = incomplete_reason(status)
    if reason:
        b.append(("p", f"INCOMPLETE RECORD: {reason}. The sections below show only what this run wrote; "
                       "re-run the missing steps before relying on this postmortem."))

    b.append(("h", 2, "Summary"))
    summary = (f"{w['signal']} rose from {w['baseline_level']:.0f} to {w['incident_level']:.0f} "
               f"({w['ratio']:.1f}x) from {w['incident']['start']} to {w['incident']['end']}.")
    if validation:
        summary += f" Validation: {validation['verdict']['verdict']} (score {validation['verdict']['score']:.0f}/100)."
    b.append(("p", summary))

    b.append(("h", 2, "Impact"))
    sig = pd.DataFrame(symptoms["signals"]).set_index("signal")
    changed = sig[sig["changed"]][["label", "baseline", "incident", "ratio"]].round(3)
    b.append(("table", changed))

    b.append(("h", 2, "Root cause"))
    if findings:
        rows = [{"category": h["category"], "hypothesis": h["title"], "confidence": h["confidence"],
                 "verdict": "disproved" if h["disproved"] else "supported"} for h in findings["hypotheses"]]
        b.append(("table", pd.DataFrame(rows)))
        for h in findings["hypotheses"]:
            if h["disproved"]:
                continue
            b.append(("h", 3, f"{h['category']}: {h['title']}"))
            b.append(("p", f"{h['statement']} How it could be disproved: {h['disprove_by']}"))
            b.append(("ul", [f"{e['check']}: {e['observed']} ({'supports' if e['supports'] else 'against'})"
                             for e in h["evidence"]]))
    else:
        b.append(("p", "Root-cause step did not complete in this run."))

    b.append(("h", 2, "Remediation"))
    if plan:
        acts = pd.DataFrame(plan["actions"])[["id", "phase", "title", "kind", "score", "reason"]]
        b.append(("table", acts))
    if remediation:
        applied = remediation.get("applied", [])
        b.append(("p", f"apply={remediation['apply']}: {len(applied)} action(s) changed a system"
                       + (f": {', '.join(applied)}." if applied else ". Dry run: nothing was changed.")))
    audit = read_audit(run_dir).records
    if audit:
        cols = [c for c in ("ts", "step", "action_id", "target", "result", "approved_by", "change_ticket")
                if any(c in r for r in audit)]
        b.append(("h", 3, "Audit log"))
        b.append(("table", pd.DataFrame(audit).reindex(columns=cols)))

    b.append(("h", 2, "Validation"))
    if validation:
        v = pd.DataFrame(validation["signals"]).set_index("signal")
        b.append(("table", v[["label", "baseline", "before", "after", "after/before", "p_value", "target", "verdict"]]
                  .round(4)))
    else:
        b.append(("p", "Validation step did not complete in this run."))

    b.append(("h", 2, "Charts"))
    b.append(("p", "Interactive charts are in postmortem.html."))
    for name in EXPORT_FIGURES:
        f = run_dir / FIGURES_DIR / f"{name}.json"
        if f.exists():
            b.append(("fig", name, f))

    b.append(("h", 2, "Follow-up"))
    recs = [a for a in (plan or {}).get("actions", []) if not a.get("executable", True)]
    b.append(("ul", [f"{a['title']} ({a['reason']})" for a in recs] or ["none proposed"]))
    return b


def _healthy_blocks(run_dir: Path, symptoms: dict, status: dict) -> list[tuple]:
    """A window without an incident: the finding and the levels that show it, nothing else to report."""
    levels = pd.DataFrame(symptoms.get("levels", [])).set_index("signal").round(3) if symptoms.get("levels") \
        else pd.DataFrame()
    return [("h", 1, f"Postmortem: {status.get('incident', 'incident')}"),
            ("p", f"Run {run_dir.name} · {status.get('mode', '?')} mode · parameters {status.get('parameters', '?')}"),
            ("h", 2, "Summary"),
            ("p", f"No incident in this window: {symptoms['finding']}. Nothing was diagnosed, planned or changed."),
            ("h", 2, "Signal levels over the window"), ("table", levels)]


def _md_cell(v) -> str:
    if isinstance(v, float):
        v = f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append("#" * blk[1] + " " + blk[2])
        elif kind == "p":
            out.append(blk[1])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in blk[1]))
        elif kind == "table":
            df = blk[1].reset_index() if blk[1].index.name else blk[1]
            head = "| " + " | ".join(map(str, df.columns)) + " |"
            sep = "|" + "---|" * len(df.columns)
            rows = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
            out.append("\n".join([head, sep, *rows]))
        elif kind == "fig":
            out.append(f"*Chart `{blk[1]}`: see postmortem.html.*")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[tuple], title: str) -> str:
    parts = []
    first_fig = True
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            parts.append(f"<h{blk[1]}>{html.escape(blk[2])}</h{blk[1]}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(blk[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in blk[1]) + "</ul>")
        elif kind == "table":
            parts.append(blk[1].to_html(border=0, classes="tbl", na_rep="-", float_format=lambda x: f"{x:.4g}"))
        elif kind == "fig":
            fig = pio.from_json(blk[2].read_text())
            parts.append(pio.to_html(fig, include_plotlyjs="inline" if first_fig else False, full_html=False,
                                     div_id=f"fig-{blk[1]}"))
            first_fig = False
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table.tbl{border-collapse:collapse;font-size:13px;margin:1em 0}"
             "table.tbl td,table.tbl th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def export_run(run_dir: Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir} is not a folder")
    blocks = build_blocks(run_dir)
    md = run_dir / "postmortem.md"
    ht = run_dir / "postmortem.html"
    md.write_text(redact_text(to_markdown(blocks)))
    ht.write_text(redact_text(to_html(blocks, blocks[0][2])))
    return [md, ht]
