"""Postmortem export: ``postmortem.md`` (+ chart PNGs), ``postmortem.html`` and ``postmortem.pdf`` from a run folder.

The postmortem is built from what the steps wrote (symptoms, findings, plan, remediation, validation, the audit
log, run.json, the figures), never by re-running analysis, so it says exactly what the run concluded.

``build_context`` turns the run folder into words and rows: what users felt, the impact (duration, requests,
error budget), a timeline, the root cause with its evidence, each action with its measured effect, what was not
done and why, the validation verdict, the alert rules, the action items. Signals are named by their catalog
label (never the raw name), and no value prints as ``None``: a missing one says why. The Jinja2 templates
beside this module (``templates/postmortem.md.j2``, ``postmortem.html.j2``) lay the context out; the team edits
them, or keeps its own in a folder (``runbook export --templates DIR``).

Charts: the figures the notebooks saved (``EXPORT_FIGURES``), rendered to PNG into ``postmortem_charts/``
beside the Markdown (``static_export``: plotly's kaleido driving Chromium), embedded in the HTML (one
self-contained file without scripts), and printed into the PDF from that HTML by headless Chromium.
``interactive=True`` also writes ``postmortem-interactive.html``, the charts as plotly charts with plotly.js
included once (about 5 MB: the library alone is over the static page's budget).

Everything written passes through the secret redactor: the context before rendering, the text after.
"""

from __future__ import annotations

import base64
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from runbook_lib.actions.audit import read_audit
from runbook_lib.errors import ExportError, RunbookError
from runbook_lib.redaction import redact, redact_text
from runbook_lib.report import static_export
from runbook_lib.run_folder import FIGURES_DIR, PARAMETERS_FILE, incomplete_reason, run_status, write_atomic
from runbook_lib.signal_catalog import CATALOG, PRIMARY_SIGNAL

MD_FILE, HTML_FILE, PDF_FILE = "postmortem.md", "postmortem.html", "postmortem.pdf"
INTERACTIVE_FILE = "postmortem-interactive.html"
CHARTS_DIR = "postmortem_charts"
TEMPLATES_DIR = Path(__file__).with_name("templates")
MD_TEMPLATE, HTML_TEMPLATE = "postmortem.md.j2", "postmortem.html.j2"

# The charts of the postmortem, in reading order: figure name (figures/<name>.json) -> the section it illustrates.
# The before/after grid of 05 repeats 01's signals; the three SLO charts tell the before/after story.
EXPORT_FIGURES = (
    ("01-signals", "impact"),
    ("02-cache-hit", "root_cause"),
    ("05-slo-latency_p95_ms", "validation"),
    ("05-slo-error_ratio", "validation"),
    ("05-slo-cache_hit_ratio", "validation"),
)
CAPTIONS = {
    "01-signals": "Every signal over the window: baseline (green), incident (red), recovery (blue). Numbered "
                  "markers are the events of the timeline; dotted lines are SLOs.",
    "02-cache-hit": "Cache hit ratio, API latency p95 and DB queries/s together: when the cache stopped "
                    "absorbing reads, latency and database load rose.",
}
CHART_WIDTH_PX = 900
CHART_SCALE = 1.5

PHASES = ("immediate", "short-term", "long-term")
DRY_RUN = "dry run: nothing applied"
BUDGET_DAYS = 30
# What a latency percentile means to a user, in words.
PERCENTILE_WORDS = {"latency_p50_ms": "Half of the requests", "latency_p95_ms": "One request in 20",
                    "latency_p99_ms": "One request in 100"}
NOTEBOOK_TITLES = {"01_symptom_correlation": "01 Symptom correlation", "02_root_cause": "02 Root cause",
                   "03_impact_assessment": "03 Impact assessment", "04_remediation": "04 Remediation",
                   "05_validation": "05 Validation"}
_SIGNAL_NAME = re.compile(r"\b(" + "|".join(sorted(map(re.escape, CATALOG), key=len, reverse=True)) + r")\b")


# --- reading the run folder ----------------------------------------------------------------------------


def _load(run_dir: Path, name: str) -> Any:
    f = run_dir / name
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{run_dir.name}/{name} is not valid JSON ({e.__class__.__name__})",
                          hint="re-run the step that writes it (runbook run --only NN into the same folder)") from None


def _parameters(run_dir: Path) -> dict:
    f = run_dir / PARAMETERS_FILE
    try:
        data = yaml.safe_load(f.read_text()) if f.exists() else {}
    except yaml.YAMLError:
        data = {}
    return data if isinstance(data, dict) else {}


def _figure(run_dir: Path, name: str) -> dict | None:
    """A saved figure as a (redacted) dict: event labels are free text."""
    f = run_dir / FIGURES_DIR / f"{name}.json"
    if not f.exists():
        return None
    try:
        return redact(json.loads(f.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


# --- words ---------------------------------------------------------------------------------------------


def humanize(text: str) -> str:
    """Raw signal names in a sentence (a verdict, a reason) replaced by their catalog labels."""
    return _SIGNAL_NAME.sub(lambda m: CATALOG[m.group(1)].label, text)


def label(name: str) -> str:
    return CATALOG[name].label if name in CATALOG else humanize(str(name))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def num(v: float) -> str:
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.1f}".removesuffix(".0")
    return "0" if a == 0 else f"{v:.2g}"


def pct(v: float) -> str:
    p = v * 100
    if p == 0:
        return "0%"
    return f"{p:.0f}%" if abs(p) >= 10 else f"{p:.1f}%".replace(".0%", "%") if abs(p) >= 1 else f"{p:.2g}%"


def fmt(v: Any, name: str | None = None) -> str:
    """A signal's value with its unit; ``no data`` when there is none."""
    if _missing(v):
        return "no data"
    if not isinstance(v, (int, float)):
        return humanize(str(v))
    unit = CATALOG[name].unit if name in CATALOG else ""
    if unit == "ratio":
        return pct(v)
    if unit == "ms":
        return f"{num(v)} ms"
    if unit == "1/s":
        return f"{num(v)}/s"
    return num(v)


def times(r: Any) -> str:
    if _missing(r):
        return "n/a"
    return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x" if r >= 1 else f"{r:.2g}x"


def duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, s = divmod(s, 60)
        return f"{m} min" + (f" {s} s" if s else "")
    h, rem = divmod(s, 3600)
    return f"{h} h" + (f" {rem // 60} min" if rem // 60 else "")


def _ts(v: Any) -> pd.Timestamp | None:
    if not v:
        return None
    try:
        t = pd.Timestamp(v)
    except (ValueError, TypeError):
        return None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def when(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _signal_rows(symptoms: dict) -> dict[str, dict]:
    return {r["signal"]: r for r in symptoms.get("signals", []) if "signal" in r}


# --- series from the saved chart (the source is not queried again) ------------------------------------------


def _series(run_dir: Path) -> dict[str, pd.Series]:
    """Each signal of 01's chart as a time series (trace name = catalog label)."""
    fig = _figure(run_dir, "01-signals")
    by_label = {s.label: n for n, s in CATALOG.items()}
    out = {}
    for tr in (fig or {}).get("data", []):
        name = by_label.get(tr.get("name"))
        if name and tr.get("x") and tr.get("y"):
            idx = pd.to_datetime(tr["x"], utc=True)
            out[name] = pd.Series([math.nan if v is None else float(v) for v in tr["y"]], index=idx)
    return out


def _in(s: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    return s[(s.index >= start) & (s.index <= end)].dropna()


# --- sections --------------------------------------------------------------------------------------------


def _impact(symptoms: dict, series: dict, slo: dict, step: float) -> dict:
    """Duration, what users felt, requests affected and the error budget burned."""
    w = symptoms["window"]
    start, end = _ts(w["incident"]["start"]), _ts(w["incident"]["end"])
    secs = (end - start).total_seconds() + step
    rows = _signal_rows(symptoms)
    out: dict[str, Any] = {"duration": duration(secs), "start": when(start), "end": when(end), "numbers": [],
                           "felt": []}

    for name, words in PERCENTILE_WORDS.items():
        r = rows.get(name)
        if r and r.get("changed") and r.get("worse"):
            out["felt"].append(f"{words} took longer than {fmt(r['incident'], name)} (normally "
                               f"{fmt(r['baseline'], name)}).")
    p95_slo = slo.get(PRIMARY_SIGNAL)
    if PRIMARY_SIGNAL in series and p95_slo:
        above = (_in(series[PRIMARY_SIGNAL], start, end) > p95_slo).sum() * step
        out["felt"].append(f"{label(PRIMARY_SIGNAL)} was above its {fmt(p95_slo, PRIMARY_SIGNAL)} SLO for "
                           f"{duration(above)} of the {duration(secs)}." if above else
                           f"{label(PRIMARY_SIGNAL)} stayed under its {fmt(p95_slo, PRIMARY_SIGNAL)} SLO.")

    # requests: the request rate integrated over the window; else its median level times the duration
    rate = _in(series["request_rate"], start, end) if "request_rate" in series else pd.Series(dtype=float)
    rate_row = rows.get("request_rate", {})
    if len(rate):
        requests = float(rate.sum() * step)
    elif not _missing(rate_row.get("incident")):
        requests = float(rate_row["incident"]) * secs
    else:
        requests = None
    err = _in(series["error_ratio"], start, end) if "error_ratio" in series else pd.Series(dtype=float)
    if requests is not None and len(rate) and len(err):
        both = pd.concat([rate, err], axis=1, join="inner")
        failed = float((both.iloc[:, 0] * both.iloc[:, 1]).sum() * step)
    elif requests is not None and not _missing(rows.get("error_ratio", {}).get("incident")):
        failed = requests * float(rows["error_ratio"]["incident"])
    else:
        failed = None

    er = rows.get("error_ratio")
    if er and er.get("changed") and er.get("worse"):
        out["felt"].append(f"{fmt(er['incident'], 'error_ratio')} of the requests failed with a server error "
                           f"(normally {fmt(er['baseline'], 'error_ratio')}).")
    elif failed is not None:
        out["felt"].append("No more requests failed than usual: the 5xx ratio stayed at "
                           f"{fmt((er or {}).get('incident', 0.0), 'error_ratio')}.")
    if rate_row and not _missing(rate_row.get("incident")):
        out["felt"].append(f"Traffic {'changed' if rate_row.get('changed') else 'stayed at its usual level'}: "
                           f"about {num(rate_row['incident'])} requests per second"
                           + (f" (normally {num(rate_row['baseline'])})." if rate_row.get("changed") else "."))

    out["numbers"].append(("Duration", f"{duration(secs)} ({when(start)} to {end:%H:%M:%S} UTC)"))
    if requests is None:
        out["numbers"].append(("Requests affected", "unknown: the run has no request rate"))
    else:
        slowed = any(rows.get(n, {}).get("changed") and rows.get(n, {}).get("worse") for n in PERCENTILE_WORDS)
        out["numbers"].append(("Requests affected", f"about {requests:,.0f} served during the incident"
                               + (", all of them slower than usual" if slowed else "")))
    out["numbers"].append(("Failed requests (5xx)", "unknown: the run has no 5xx ratio" if failed is None
                           else "none" if round(failed) == 0
                           else f"about {failed:,.0f}" + (f" ({pct(failed / requests)})" if requests else "")))
    out["numbers"].append(("Error budget", _budget(failed, requests, slo.get("error_ratio"), rate_row)))
    out["summary_users"] = (f"About {requests:,.0f} requests were served during the incident"
                            + ("" if failed is None else "; none failed" if round(failed) == 0
                               else f"; about {failed:,.0f} failed") + ".") if requests is not None else None
    return out


def _budget(failed: float | None, requests: float | None, slo_err: float | None, rate_row: dict) -> str:
    if not slo_err:
        return "not computed: the parameters set no 5xx-ratio SLO"
    if failed is None or not requests:
        return f"not computed: no 5xx ratio or request rate in this run (SLO: at most {pct(slo_err)} failed)"
    burn = failed / requests / slo_err
    text = (f"{failed:,.0f} failed requests against an SLO of at most {pct(slo_err)} "
            f"({slo_err * requests:,.0f} allowed for these requests): burn rate {burn:.2g}x")
    base = rate_row.get("baseline")
    if not _missing(base) and base:
        month = slo_err * float(base) * BUDGET_DAYS * 86400
        text += f"; {pct(failed / month)} of a {BUDGET_DAYS}-day budget (about {month:,.0f} failed requests " \
                "at the baseline traffic)"
    return text


def _events(run_dir: Path, params_file: Path, start: pd.Timestamp | None, end: pd.Timestamp | None) -> list[dict]:
    """The source's events (a bundle's manifest, a Prometheus source's event log) inside the window; the
    markers of 01's chart when the source cannot be read. Each with its chart marker number when it has one."""
    markers = {}
    for a in (_figure(run_dir, "01-signals") or {}).get("layout", {}).get("annotations", []):
        if a.get("hovertext") and str(a.get("text", "")).isdigit() and _ts(a.get("x")) is not None:
            markers[(_ts(a["x"]), a["hovertext"])] = (int(a["text"]), a.get("font", {}).get("color"))
    events = None
    try:
        from runbook_lib.settings import load_settings, resolve_path

        settings = load_settings(params_file)
        src = settings.source
        if src.kind == "fixture":
            from runbook_lib.sources.fixture_bundle import FixtureSource

            events = FixtureSource(src.bundle).events()
        elif getattr(src, "events_file", None):
            from runbook_lib.sources.events import read_events_file

            events = read_events_file(resolve_path(src.events_file))
    except (RunbookError, OSError, ValueError):
        events = None
    if events is not None:
        rows = [{"time": _ts(e.time), "label": e.label, "kind": e.kind} for e in events]
    else:  # the chart's markers: the events the run saw (kind from the marker's colour)
        from runbook_lib.report.charts import EVENT_COLORS

        kinds = {c: k for k, c in EVENT_COLORS.items()}
        rows = [{"time": t, "label": lbl, "kind": kinds.get(color, "note")} for (t, lbl), (_, color) in markers.items()]
    out = []
    for r in sorted(rows, key=lambda r: r["time"]):
        if (start is not None and r["time"] < start) or (end is not None and r["time"] > end):
            continue
        n = markers.get((r["time"], r["label"]), (None,))[0]
        out.append({**r, "marker": n})
    return out


def _notebook_times(run_dir: Path, status: dict) -> list[dict]:
    """Each executed notebook's start and end (run.json when it has them, else the notebook's papermill record)."""
    entries: dict[str, dict] = {}
    for a in [*status.get("attempts", []), status]:
        for n in a.get("notebooks") or []:
            if n.get("notebook"):
                entries[n["notebook"]] = n
    out = []
    for name, n in entries.items():
        start, end = _ts(n.get("started_at") or n.get("start")), _ts(n.get("finished_at") or n.get("end"))
        if start is None:
            try:
                meta = json.loads((run_dir / f"{name}.ipynb").read_text())["metadata"].get("papermill", {})
                start, end = _ts(meta.get("start_time")), _ts(meta.get("end_time"))
            except (OSError, ValueError, KeyError):
                start = None
        if start is not None:
            out.append({"name": name, "start": start, "end": end, "seconds": n.get("seconds")})
    return out


def _audit_sentence(r: dict, dry_run: bool) -> str:
    title = humanize(str(r.get("title") or r.get("action_id") or "an action"))
    step = r.get("step", "")
    res = humanize(str(r["result"])) if r.get("result") not in (None, "") else ""
    if step == "planned":
        return f"Planned: {title}" + (f" ({DRY_RUN})" if r.get("dry_run", dry_run) else "")
    if step == "approved":
        who = r.get("approved_by")
        return f"Approved: {title}" + (f" by {who}" if who else " (no approver required in this mode)") + (
            f", change ticket {r['change_ticket']}" if r.get("change_ticket") else "")
    if step == "assessed":
        return f"Effect of {title}: {res or 'not judged'}" + (f" ({_effect_detail(r)})" if _effect_detail(r) else "")
    if step == "failed":
        return f"Failed: {title}" + (f" ({humanize(str(r['error']))})" if r.get("error") else "")
    words = {"applying": "Applying", "applied": "Applied", "verified": "Verified", "reassessed": "Re-assessed",
             "rollback_planned": "Rollback planned", "rolling_back": "Rolling back", "rolled_back": "Rolled back",
             "discovered": "Found unfinished"}
    return f"{words.get(step, step.capitalize() or 'Step')}: {title}" + (f" ({res})" if res else "")


def _measure_text(m: Any, signal: str | None = None) -> str:
    if isinstance(m, dict):
        if _missing(m.get("value")):
            return "no data"
        v = num(m["value"])
        if not _missing(m.get("low")) and not _missing(m.get("high")):
            v += f" [{num(m['low'])}, {num(m['high'])}]"
        return v
    return fmt(m, signal) if not _missing(m) else "no data"


def _effect_detail(r: dict) -> str:
    """An ``assessed`` line's measurement: what was measured, before -> after."""
    what = r.get("measured") or (label(r["signal"]) if r.get("signal") else None)
    if what is None and r.get("before") is None and r.get("after") is None:
        return ""
    sig = r.get("signal")
    return (f"{humanize(str(what)) + ': ' if what else ''}{_measure_text(r.get('before'), sig)} before, "
            f"{_measure_text(r.get('after'), sig)} after")


def _actions(plan: dict | None, remediation: dict | None, audit: list[dict], mode: str) -> dict:
    """Each planned action with its outcome and measured effect; what was not done and why."""
    outcomes = {o["id"]: o for o in (remediation or {}).get("outcomes", []) if "id" in o}
    apply = bool((remediation or {}).get("apply"))
    by_action: dict[str, list[dict]] = {}
    for r in audit:
        if r.get("action_id"):
            by_action.setdefault(r["action_id"], []).append(r)
    done, not_done = [], []
    for a in (plan or {}).get("actions", []):
        o = outcomes.get(a["id"])
        recs = by_action.get(a["id"], [])
        status = o.get("status") if o else None
        changed = bool(o and o.get("changed"))
        approved = next((r for r in reversed(recs) if r.get("step") == "approved"), None)
        recommendation = a.get("executable") is False
        if recommendation:
            approval = "not applicable: a recommendation"
        elif not apply or not changed:
            approval = DRY_RUN if not apply else "not applied"
        elif approved and approved.get("approved_by"):
            approval = f"{approved['approved_by']}" + (f", ticket {approved['change_ticket']}"
                                                       if approved.get("change_ticket") else "")
        else:
            approval = f"no approver required in {mode} mode"
        assessed = [r for r in recs if r.get("step") == "assessed"]
        if assessed:
            last = assessed[-1]
            effect = f"{humanize(str(last.get('result') or 'not judged'))}: {_effect_detail(last)}"
            if last.get("auto_rollback"):
                effect += "; rolled back automatically"
        elif o and o.get("effect"):
            effect = humanize(str(o["effect"]))
        elif recommendation:
            effect = "not measured: not executed"
        elif mode == "fixture":
            effect = "not measured: recorded data cannot react to a change"
        elif changed:
            effect = "not measured in this run"
        else:
            effect = "not measured: nothing applied"
        outcome = humanize(str(status)) if status else "not attempted (the remediation step did not run)"
        if not apply and status == "planned":
            outcome = f"planned ({DRY_RUN})"
        row = {"title": humanize(a.get("title", a["id"])), "phase": a.get("phase") or "unphased",
               "kind": a.get("kind") or "", "outcome": outcome, "approval": approval, "effect": effect,
               "reason": humanize(a.get("reason") or "")}
        done.append(row)
        if not changed:
            why = humanize(str(o["message"])) if o and o.get("message") else (
                "the remediation step did not run" if not o else "no reason recorded")
            if o and status == "planned" and not apply:
                why = f"{DRY_RUN} (remediation.apply is false)" if "apply" in why else why
            not_done.append({"title": row["title"], "why": why})
    return {"rows": done, "not_done": not_done, "apply": apply,
            "applied": list((remediation or {}).get("applied", []))}


def _recorded_actions(params: dict) -> dict | None:
    """Fixture mode: what the bundle's own recording run applied when the incident was live, approved by whom
    and with what measured effect (its plan, outcomes and audit kept in the bundle); None when it keeps none."""
    bundle = (params.get("source") or {}).get("bundle")
    if not bundle:
        return None
    try:
        from runbook_lib.settings import resolve_path
        from runbook_lib.sources.fixture_bundle import FixtureBundle

        rec = FixtureBundle(resolve_path(bundle)).recorded_run()
    except (RunbookError, OSError, ValueError):
        return None
    if rec is None:
        return None
    remediation = rec["remediation"] or {}
    status = {o.get("id"): o.get("status") for o in remediation.get("outcomes", [])}
    tried = [a for a in (rec["plan"] or {}).get("actions", []) if status.get(a["id"]) not in ("planned", "not executed")]
    return _actions({"actions": tried}, remediation, rec["audit"], str(remediation.get("mode", "lab")))


def _root_cause(findings: dict | None) -> dict:
    if not findings:
        return {"available": False, "supported": [], "ruled_out": []}
    hyps = findings.get("hypotheses", [])
    supported = sorted((h for h in hyps if not h.get("disproved")), key=lambda h: -(h.get("confidence") or 0))
    out = {"available": True, "supported": [], "ruled_out": []}
    for h in supported:
        conf = h.get("confidence")
        out["supported"].append({
            "title": humanize(h["title"]), "category": h.get("category", "").capitalize(),
            "confidence_label": h.get("confidence_label") or "unrated",
            "confidence": f"{h.get('confidence_label', '')} ({pct(conf)})".strip() if not _missing(conf)
            else h.get("confidence_label") or "not rated",
            "statement": humanize(h.get("statement", "")), "disprove_by": humanize(h.get("disprove_by", "")),
            "evidence": [f"{humanize(e['check'])}: {humanize(str(e['observed']))}"
                         + ("" if e.get("supports") else " (against)") for e in h.get("evidence", [])]})
    for h in hyps:
        if h.get("disproved"):
            why = [f"{humanize(e['check'])}: {humanize(str(e['observed']))}" for e in h.get("evidence", [])][:2]
            out["ruled_out"].append({"title": humanize(h["title"]), "category": h.get("category", "").capitalize(),
                                     "why": "; ".join(why) or humanize(h.get("disprove_by", ""))})
    return out


def target_words(target: Any, name: str | None) -> str:
    """``<= 100`` -> ``at most 100 ms``; ``>= 0.8`` -> ``at least 80%``; other targets as written."""
    if _missing(target) or target == "":
        return "no target"
    m = re.fullmatch(r"\s*(<=|>=|<|>)\s*(-?[\d.]+(?:e-?\d+)?)\s*", str(target))
    if not m:
        return humanize(str(target))
    words = {"<=": "at most", ">=": "at least", "<": "under", ">": "over"}[m.group(1)]
    return f"{words} {fmt(float(m.group(2)), name)}"


def _signed(v: Any, name: str | None) -> str:
    """A change with its sign; a ratio's change in percentage points."""
    if _missing(v):
        return fmt(v, name)
    text = (pct(abs(v)).removesuffix("%") + " pp") if name in CATALOG and CATALOG[name].unit == "ratio" \
        else fmt(abs(v), name)
    return ("+" if v > 0 else "-" if v < 0 else "") + text


def _range(lo: Any, hi: Any, name: str | None, signed: bool = False) -> str:
    """`` (low to high)`` when both ends are known, else nothing."""
    if _missing(lo) or _missing(hi):
        return ""
    f = _signed if signed else fmt
    return f" ({f(lo, name)} to {f(hi, name)})"


def _missed_slo(s: dict) -> bool:
    words = str(s.get("verdict", "")) + " " + str(s.get("slo", ""))
    return s.get("passed") is not True and any(w in words for w in ("misses SLO", "violates SLO", "missed"))


def _validation(validation: dict | None) -> dict:
    """The verdict (its outcome and reason sentence when 05 gives them) and each signal before/after.

    Read defensively: the verdict is a dict (``verdict``, ``outcome``, ``reason``, ``score``, ``fixed``) or a
    plain sentence; a signal's after interval (``after_lo``/``after_hi``) and shift (``shift``, ``shift_lo``,
    ``shift_hi``) are shown when present."""
    if not validation:
        return {"available": False}
    v = validation.get("verdict")
    d = v if isinstance(v, dict) else {}
    text = humanize(str(d.get("verdict") if d else v or "no verdict recorded"))
    reason = d.get("reason") or validation.get("reason")
    reason = humanize(str(reason)) if reason else None
    if reason:  # a sentence of its own after the verdict: "pass (score 100/100). Every critical signal ..."
        reason = reason[0].upper() + reason[1:]
    headline = humanize(str(d["outcome"])) if d.get("outcome") and reason else text
    if reason and headline != text and not text.startswith(headline):
        headline = text  # an outcome word that the sentence does not start with: keep the sentence
    if reason and reason in headline:
        reason = None  # the old verdict sentence already carries it
    score = d.get("score", validation.get("score"))
    rows = []
    for s in validation.get("signals", []):
        name = s.get("signal")
        shift = "" if _missing(s.get("shift")) else _signed(s["shift"], name) + _range(
            s.get("shift_lo"), s.get("shift_hi"), name, signed=True)
        rows.append({"signal": (s.get("label") or label(name)) + (" (critical)" if s.get("critical") else ""),
                     "baseline": fmt(s.get("baseline"), name), "before": fmt(s.get("before"), name),
                     "after": fmt(s.get("after"), name) + _range(s.get("after_lo"), s.get("after_hi"), name),
                     "after_value": fmt(s.get("after"), name), "shift": shift or "not measured",
                     "target": "none" if str(s.get("target", "")).strip() in ("", "-") else
                     target_words(s.get("target"), name),
                     "verdict": humanize(str(s.get("verdict") or "not judged")), "missed_slo": _missed_slo(s)})
    windows = validation.get("windows") or {}
    after_from = windows.get("after_from") or d.get("after_from")
    return {"available": True, "verdict": headline, "reason": reason,
            "fixed": bool(d["fixed"]) if "fixed" in d else None,
            "score": None if _missing(score) else f"{score:.0f}/100", "rows": rows,
            "shifts": any(r["shift"] != "not measured" for r in rows),
            "after_from": humanize(str(after_from)) if after_from else None}


def _follow_ups(plan: dict | None, actions: dict, validation: dict) -> list[dict]:
    """Action items: every planned action this run did not apply, owned by its cause's team, due by its phase."""
    applied = set(actions.get("applied") or [])
    items = []
    for a in (plan or {}).get("actions", []):
        if a["id"] in applied:
            continue
        cause = a.get("cause")
        items.append({"item": humanize(a.get("title", a["id"])), "why": humanize(a.get("reason") or ""),
                      "owner": f"{cause} team (unassigned)" if cause else "unassigned",
                      "due": a.get("phase") if a.get("phase") in PHASES else "short-term"})
    if validation.get("available") and validation.get("fixed") is False:
        why = validation.get("reason") or f"validation: {validation['verdict']}"
        failing = [r for r in validation.get("rows", []) if r["missed_slo"]]
        for r in reversed(failing):
            items.insert(0, {"item": f"Bring {r['signal']} within its SLO ({r['target']}; {r['after_value']} after "
                                     "the remediation)", "why": why, "owner": "unassigned", "due": "immediate"})
        if not failing:
            items.insert(0, {"item": "Find out why the incident is not fixed", "why": why, "owner": "unassigned",
                             "due": "immediate"})
    order = {p: i for i, p in enumerate(PHASES)}
    return sorted(items, key=lambda x: order.get(x["due"], len(PHASES)))


def _alert_rules(run_dir: Path) -> list[dict]:
    """Prometheus rule files in the run folder (05 writes alerts.rules.yml): each alert in a line, and the file."""
    out = []
    for f in sorted({*run_dir.glob("*.rules.yml"), *run_dir.glob("*.rules.yaml")}):
        text = redact_text(f.read_text(errors="replace")).rstrip()
        try:
            groups = (yaml.safe_load(text) or {}).get("groups") or []
            rules = [r for g in groups for r in (g.get("rules") or []) if isinstance(r, dict)]
        except (yaml.YAMLError, AttributeError):
            rules = []
        alerts = [{"name": r["alert"], "severity": (r.get("labels") or {}).get("severity") or "unset",
                   "for": r.get("for") or "at once",
                   "summary": (r.get("annotations") or {}).get("summary") or "no summary"}
                  for r in rules if r.get("alert")]
        out.append({"name": f.name, "text": text, "alerts": alerts,
                    "recording": sum(1 for r in rules if r.get("record"))})
    return out


# --- the context -----------------------------------------------------------------------------------------


def build_context(run_dir: Path) -> dict:
    """Everything the templates show, as words and rows (without the charts)."""
    run_dir = Path(run_dir)
    symptoms = _load(run_dir, "symptoms.json")
    if symptoms is None:
        raise ExportError(f"{run_dir.name}: symptoms.json is missing")
    findings, plan = _load(run_dir, "findings.json"), _load(run_dir, "plan.json")
    remediation, validation = _load(run_dir, "remediation.json"), _load(run_dir, "validation.json")
    status = run_status(run_dir)
    params = _parameters(run_dir)
    incident = params.get("incident") or {}
    mode = status.get("mode") or params.get("mode") or "unknown"
    apply = bool((remediation or {}).get("apply", (params.get("remediation") or {}).get("apply", False)))
    notebooks = _notebook_times(run_dir, status)
    ctx: dict[str, Any] = {
        "title": f"Postmortem: {status.get('incident') or incident.get('id') or 'incident'}",
        "headline": humanize(incident.get("title") or ""),
        "meta": [("Incident", status.get("incident") or incident.get("id") or "unknown"),
                 ("Service", incident.get("service") or "unknown"), ("Severity", incident.get("severity") or "unknown"),
                 ("Mode", f"{mode}, " + ("changes applied when approved" if apply else DRY_RUN)),
                 ("Run", f"{run_dir.name}: {len(notebooks)} notebook(s) executed, parameters "
                         f"{status.get('parameters') or PARAMETERS_FILE}")],
        "incomplete": incomplete_reason(status),
        "healthy": None,
    }
    if symptoms.get("healthy"):
        ctx["healthy"] = humanize(str(symptoms.get("finding") or "the primary signal stayed at one level"))
        ctx["levels"] = [{"signal": label(r["signal"]), "median": fmt(r.get("median"), r["signal"]),
                          "max": fmt(r.get("max"), r["signal"])} for r in symptoms.get("levels", [])]
        return ctx

    w = symptoms["window"]
    step = float(symptoms.get("step_seconds") or params.get("window", {}).get("step_seconds") or 0)
    primary = w.get("signal", PRIMARY_SIGNAL)
    slo = params.get("slo") or {}
    series = _series(run_dir)
    impact = _impact(symptoms, series, slo, step)
    rows = _signal_rows(symptoms)
    root = _root_cause(findings)
    audit = read_audit(run_dir).records
    actions = _actions(plan, remediation, audit, mode)
    recorded = _recorded_actions(params) if mode == "fixture" else None
    valid = _validation(validation)

    # summary, in words
    start, end = _ts(w["incident"]["start"]), _ts(w["incident"]["end"])
    went = "rose" if (w.get("ratio") or 1) >= 1 else "fell"
    summary = [f"{label(primary)} {went} from {fmt(w['baseline_level'], primary)} to "
               f"{fmt(w['incident_level'], primary)} ({times(w.get('ratio'))}) for {impact['duration']}, "
               f"from {start:%H:%M:%S} to {end:%H:%M:%S} UTC on {start:%Y-%m-%d}."]
    if impact.get("summary_users"):
        summary.append(impact["summary_users"])
    if root["supported"]:
        causes = "; ".join(f"{h['title'][0].lower()}{h['title'][1:]} ({h['confidence_label']} confidence)"
                           for h in root["supported"])
        summary.append(f"Root cause: {causes}.")
    elif not root["available"]:
        summary.append("The root-cause step did not complete in this run.")
    if plan is not None:
        n = len(plan.get("actions", []))
        if not remediation:
            summary.append(f"{n} action(s) planned; the remediation step did not run.")
        elif actions["applied"]:
            summary.append(f"{len(actions['applied'])} of {n} planned action(s) applied.")
        else:
            summary.append(f"{n} action(s) planned, {DRY_RUN}." if not apply else
                           f"{n} action(s) planned; none changed a system.")
    if recorded and recorded["applied"]:
        summary.append(f"When the incident was live, the runbook's own run applied {len(recorded['applied'])} "
                       "change(s) (see \"Applied when the incident was live\"); this run replays the recording.")
    if valid.get("available"):
        reason = valid.get("reason") or ""
        summary.append(f"Validation: {valid['verdict']}" + (f" (score {valid['score']})" if valid["score"] else "")
                       + "." + (f" {reason}" + ("" if reason.endswith((".", "!", ")")) else ".") if reason else ""))

    # timeline
    span_start = _ts((w.get("baseline") or w["incident"])["start"])
    span_end = _ts((w.get("recovery") or w["incident"])["end"])
    timeline = []
    for e in _events(run_dir, run_dir / PARAMETERS_FILE, span_start, span_end):
        mark = f" (chart marker {e['marker']})" if e["marker"] else ""
        timeline.append((e["time"], e["kind"], humanize(e["label"]) + mark))
    for name in symptoms.get("first_movers", [])[:4]:
        r = rows.get(name, {})
        t = _ts(r.get("onset"))
        if t is not None:
            timeline.append((t, "signal", f"{label(name)} moved: {fmt(r.get('baseline'), name)} to "
                                          f"{fmt(r.get('incident'), name)} (one of the first signals to move)"))
    timeline.append((start, "incident", f"Incident starts: {label(primary)} leaves its baseline "
                                        f"({fmt(w['baseline_level'], primary)} to {fmt(w['incident_level'], primary)})"))
    if w.get("recovery"):
        timeline.append((_ts(w["recovery"]["start"]), "recovery",
                         f"Recovery: {label(primary)} back to {fmt(w.get('recovery_level'), primary)}"))
    run_start = _ts(status.get("started_at"))
    if run_start is not None:
        timeline.append((run_start, "runbook", f"runbook run starts ({mode} mode, "
                                               + ("apply" if apply else DRY_RUN) + ")"))
    for nb in notebooks:
        end_text = f" to {nb['end']:%H:%M:%S}" if nb["end"] is not None else ""
        secs = f", {nb['seconds']:.0f} s" if isinstance(nb.get("seconds"), (int, float)) else ""
        timeline.append((nb["start"], "runbook", f"Notebook {NOTEBOOK_TITLES.get(nb['name'], nb['name'])}: "
                                                 f"{nb['start']:%H:%M:%S}{end_text}{secs}"))
    for r in audit:
        t = _ts(r.get("ts"))
        if t is not None:
            timeline.append((t, "action", _audit_sentence(r, not apply)))
    timeline.sort(key=lambda x: x[0])

    changed = [{"signal": label(n), "baseline": fmt(r.get("baseline"), n), "incident": fmt(r.get("incident"), n),
                "change": times(r.get("ratio"))} for n, r in rows.items() if r.get("changed")]
    ctx.update({
        "summary": summary, "impact": impact, "changed_signals": changed,
        "timeline": [{"time": when(t), "kind": k, "what": what} for t, k, what in timeline],
        "root_cause": root, "actions": actions, "recorded_actions": recorded, "validation": valid,
        "follow_ups": _follow_ups(plan, actions, valid), "alert_rules": _alert_rules(run_dir),
        "mode": mode, "fixture": mode == "fixture", "planned": plan is not None,
    })
    return ctx


# --- charts ----------------------------------------------------------------------------------------------


def _chart_list(run_dir: Path) -> list[dict]:
    charts = []
    for name, section in EXPORT_FIGURES:
        fig = _figure(run_dir, name)
        if fig is None:
            continue
        title = (fig.get("layout", {}).get("title") or {})
        title = title.get("text") if isinstance(title, dict) else title
        title = humanize(str(title or name))
        caption = CAPTIONS.get(name)
        if caption is None and name.startswith("05-slo-"):
            caption = (f"{label(name.removeprefix('05-slo-'))} before (red) and after (blue) the remediation; "
                       "the dotted line is its SLO.")
        charts.append({"name": name, "section": section, "title": title, "caption": caption or title,
                       "fig": fig, "height": int(fig.get("layout", {}).get("height") or 450),
                       "png": f"{CHARTS_DIR}/{name}.png", "number": len(charts) + 1})
    return charts


def _render_pngs(run_dir: Path, charts: list[dict]) -> None:
    folder = run_dir / CHARTS_DIR
    folder.mkdir(exist_ok=True)
    wanted = {f"{c['name']}.png" for c in charts}
    for old in folder.glob("*.png"):
        if old.name not in wanted:
            old.unlink()
    with tempfile.TemporaryDirectory(prefix="runbook-figs-") as tmp:
        jobs = []
        for c in charts:
            spec = Path(tmp) / f"{c['name']}.json"
            spec.write_text(json.dumps(c["fig"]))
            jobs.append(static_export.PngJob(str(spec), str(run_dir / c["png"]), CHART_WIDTH_PX, c["height"],
                                             CHART_SCALE))
        static_export.write_pngs(jobs)


def _interactive_div(c: dict) -> str:
    """A plotly chart without the library (the page includes plotly.js once)."""
    import plotly.io as pio

    fig = pio.from_json(json.dumps(c["fig"]))
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=f"plot-{c['name']}",
                       config={"displaylogo": False, "responsive": True})


# --- rendering -------------------------------------------------------------------------------------------


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _environment(templates: Path | None, html: bool):
    import jinja2

    dirs = [str(templates)] if templates else []
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([*dirs, str(TEMPLATES_DIR)]),
                             autoescape=html, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["cell"] = _md_cell
    return env


def render(template: str, context: dict, templates: Path | None = None) -> str:
    """One template with the context; a template error is an ExportError naming the template and line."""
    import jinja2

    try:
        text = _environment(templates, template.endswith(".html.j2")).get_template(template).render(**context)
    except jinja2.TemplateError as e:
        where = f"{getattr(e, 'filename', None) or template}" + (f" line {e.lineno}" if getattr(e, "lineno", None)
                                                                  else "")
        raise ExportError(f"postmortem template {where}: {e.__class__.__name__}: {e}",
                          hint=f"fix the template (the packaged ones are in {TEMPLATES_DIR})") from None
    return redact_text(text)


def _slot(name: str) -> str:
    """Where a payload (a chart's data URI or div, plotly.js) goes in the text: filled in after the redaction,
    which must not touch base64 or a library's code."""
    return f"@@runbook-slot:{name}@@"


def _charts_by_section(charts: list[dict], kind: str) -> dict[str, list[dict]]:
    """The charts for a template: ``src`` is the PNG's relative path (md), or a slot for its data URI / div."""
    out: dict[str, list[dict]] = {}
    for c in charts:
        src = c["png"] if kind == "png" else _slot(f"{kind}:{c['name']}")
        out.setdefault(c["section"], []).append({k: c[k] for k in ("name", "title", "caption", "number", "png")}
                                                | {"src": src, "error": c.get("error")})
    return out


def _fill(text: str, payloads: dict[str, str]) -> str:
    for name, value in payloads.items():
        text = text.replace(_slot(name), value)
    return text


def export_run(run_dir: Path, interactive: bool = False, templates: Path | None = None) -> list[Path]:
    """Write postmortem.md (+ postmortem_charts/*.png), postmortem.html and postmortem.pdf; with ``interactive``
    also postmortem-interactive.html. Returns the files written. When the browser is missing or fails, the
    Markdown and HTML are still written (saying the charts could not be drawn), then the error is raised."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir} is not a folder")
    if templates is not None and not Path(templates).is_dir():
        raise ExportError(f"templates folder {templates} does not exist",
                          hint=f"give a folder holding {MD_TEMPLATE} and/or {HTML_TEMPLATE}")
    ctx = redact(build_context(run_dir))
    charts = _chart_list(run_dir)
    failure: RunbookError | None = None
    try:
        _render_pngs(run_dir, charts)
    except ExportError as e:
        failure = e
        for c in charts:
            c["error"] = f"chart not drawn: {e}"
    written = [write_atomic(run_dir / MD_FILE, render(MD_TEMPLATE, {**ctx, "charts": _charts_by_section(charts, "png"),
                                                              "plotlyjs": None}, templates))]
    if failure is None and charts:
        written.append(run_dir / CHARTS_DIR)
    uris = {} if failure is not None else {
        f"img:{c['name']}": "data:image/png;base64," + base64.b64encode((run_dir / c["png"]).read_bytes()).decode()
        for c in charts}
    html = write_atomic(run_dir / HTML_FILE, _fill(render(HTML_TEMPLATE, {**ctx, "charts": _charts_by_section(charts, "img"),
                                                                    "plotlyjs": None}, templates), uris))
    written.append(html)
    if failure is not None:
        (run_dir / PDF_FILE).unlink(missing_ok=True)  # an old PDF would no longer match the record
        raise failure
    written.append(static_export.print_pdf(html, run_dir / PDF_FILE))
    if interactive:
        from plotly.offline import get_plotlyjs

        payloads = {f"div:{c['name']}": redact_text(_interactive_div(c)) for c in charts}
        payloads["plotlyjs"] = get_plotlyjs()
        page = render(HTML_TEMPLATE, {**ctx, "charts": _charts_by_section(charts, "div"),
                                      "plotlyjs": _slot("plotlyjs")}, templates)
        written.append(write_atomic(run_dir / INTERACTIVE_FILE, _fill(page, payloads)))
    return written

