"""Step 04 glue: plan.json -> executor actions -> plan table -> gated execution -> remediation.json.

Kinds with an executor (``runbook_lib.actions``: PostgreSQL indexes, Redis CONFIG SET) go through
the action framework: planned, approved, applied, verified, audited, reversible. Kinds without an
executor yet are shown with what they would do and marked so, never silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from runbook_lib import actions as fw
from runbook_lib.settings import Settings, resolve_path

# What each kind without an executor would do, in words, and why it is not executed yet.
NO_EXECUTOR = {
    "recommendation": "recommendation for the application owners: the runbook does not edit code",
}


@dataclass
class Entry:
    """One planned action as 04 shows it: the plan row plus its executor when one exists."""

    id: str  # the plan's id, which is also its executor's (model.*_action_id) and the audit's
    phase: str
    title: str
    kind: str
    inputs: dict
    reason: str
    executor: fw.Action | None = None
    note: str = ""
    commands: list[str] = field(default_factory=list)


def target_inputs(kind: str, settings: Settings) -> dict:
    """What the parameters say about where an action's change goes (the app's config file and URL, the event
    log), as inputs of that kind; the plan's own inputs win."""
    if kind == "app.config":
        found = {**settings.app.knobs_target(), "events_file": getattr(settings.source, "events_file", None)}
    elif kind == "cache.warm":
        found = {"source_url": settings.app.base_url, "config_file": settings.app.config_file,
                 "routes": settings.app.warm_routes}
    else:
        found = {}
    # paths as the run resolved them (${NAME:-default} expanded): the audit, and a rollback from it, name the
    # very file that was changed
    return {k: (str(resolve_path(v)) if k in PATH_INPUTS else v) for k, v in found.items() if v is not None}


PATH_INPUTS = ("config_file", "events_file")


def build(plan: dict, settings: Settings) -> list[Entry]:
    entries = []
    kinds = set(fw.action_kinds())
    for a in plan["actions"]:
        e = Entry(a["id"], a["phase"], a["title"], a["kind"], a["inputs"], a["reason"])
        if a["kind"] in kinds:
            e.executor = fw.build_action(a["kind"], {**target_inputs(a["kind"], settings), **a["inputs"]})
            if e.executor.id != e.id:  # a plan.json written by another version: its ids would not match the audit
                raise fw.ActionInputError(f"plan.json action {e.id!r} builds as {e.executor.id!r}",
                                          hint="re-run 03_impact_assessment to write the plan again")
        else:
            e.note = NO_EXECUTOR.get(a["kind"], "no executor for this kind")
            e.commands = [f"-- {a['reason']}"]
        entries.append(e)
    return entries


def plan_frame(entries: list[Entry]) -> pd.DataFrame:
    rows = []
    for e in entries:
        if e.executor is not None:
            p = e.executor.plan()
            rows.append({"phase": e.phase, "action": p.title, "commands": "\n".join(p.commands),
                         "captures first": "\n".join(p.captures), "rollback": "\n".join(p.rollback_commands),
                         "risk": p.risk, "executor": e.kind})
        else:
            rows.append({"phase": e.phase, "action": e.title, "commands": "\n".join(e.commands),
                         "captures first": "-", "rollback": "-", "risk": "-", "executor": e.note})
    return pd.DataFrame(rows, index=pd.Index([e.id for e in entries], name="id"))


# Verify loop by direct measurement (actions.effect_probes) in lab/live mode: one shared window before the
# changes and one after, each this long; a signal from Prometheus is read per 6 s sub-window (five of them),
# which needs a scrape interval of 3 s or less to hold two samples (the lab scrapes every second). 30 s holds ~500 lookups and ~100 calls of a hot statement at the
# lab's 18 req/s (enough for the probes' minimums), and costs 1 minute for the whole plan instead of one
# wait per action.
PROBE_WINDOW_S = 30.0


def execute(entries: list[Entry], step) -> list[dict]:
    """Run the executable entries through the framework (dry run unless the parameters allow). In lab/live
    mode, every change is judged over shared windows: cache and index actions by direct measurement, the
    others on their signal from the metrics source, from samples inside the windows only. Recorded data
    (fixture mode) cannot react to a change: nothing is judged there."""
    runnable = [e.executor for e in entries if e.executor is not None]
    live = step.settings.source.kind != "fixture"
    reader = getattr(step.source, "sub_window_values", None) if live else None
    done = {o.action_id: o for o in fw.execute(runnable, step.settings, step.run_dir,
                                               probe_window_s=PROBE_WINDOW_S if live else None, read_signal=reader,
                                               signals=step.source.available() if reader else ())}
    out = []
    for e in entries:
        if e.executor is None:
            out.append({"id": e.id, "status": "not executed", "changed": False,
                        "verified": None, "effect": None, "message": e.note})
            continue
        o = done[e.executor.id]
        out.append({"id": o.action_id, "status": o.status, "changed": o.changed,
                    "verified": o.verified, "effect": o.effect, "message": o.message})
    return out


def _window(m: dict | None) -> str:
    if not m:
        return "no measurement"
    if m.get("value") is None:
        return f"no data ({m['events']} events)"
    return (f"{m['value']:.4g} [{m['low']:.4g}, {m['high']:.4g}], {m['events']} events, "
            f"{m['window_start'][11:19]}-{m['window_end'][11:19]}")


def effects_frame(step, outcomes: list[dict]) -> pd.DataFrame:
    """One row per change this run applied and judged: what was measured, the before and after windows (value,
    95 % interval, events, UTC times), the verdict, and what else shares the verdict or the window. Read from
    the audit (the last judgement of each action: a run folder may hold earlier runs too). In fixture mode,
    the bundle's own recording run's judgements (what was measured when the incident was live), if it keeps
    them: this run can change nothing."""
    recorded = _recorded_run(step)
    if recorded is not None:
        changed = set((recorded["remediation"] or {}).get("applied") or [])
        return effects_from_audit(recorded["audit"], changed)
    return effects_from_audit(fw.read_audit(step.run_dir).records, {o["id"] for o in outcomes if o["changed"]})


def _recorded_run(step) -> dict | None:
    if step.settings.source.kind != "fixture":
        return None
    from runbook_lib.sources.fixture_bundle import FixtureBundle

    return FixtureBundle(step.settings.source.bundle).recorded_run()


def effects_from_audit(records: list[dict], changed: set[str]) -> pd.DataFrame:
    """The effects table from audit lines: the judgements after each changed action's last ``applied``."""
    last: dict[str, int] = {}
    for n, r in enumerate(records):
        if r["step"] == "applied" and r.get("action_id") in changed:
            last[r["action_id"]] = n
    rows = []
    for n, r in enumerate(records):
        if r.get("action_id") not in last or n < last[r["action_id"]]:
            continue
        if r["step"] == "assessed" and "measured" in r:
            shared = r.get("shared_with") or []
            window = r.get("shared_window_with") or []
            rows.append({"id": r["action_id"], "measured": r["measured"], "before": _window(r.get("before")),
                         "after": _window(r.get("after")), "verdict": r["result"],
                         "attribution": ("shares the verdict with " + ", ".join(shared) if shared else
                                         "measured on what only this change touches" if not window else
                                         "service-wide; the window also holds " + ", ".join(window)),
                         "rolled back": bool(r.get("auto_rollback"))})
        elif r["step"] == "reassessed" and rows:
            for row in rows:
                if row["id"] == r["action_id"]:
                    row["after rollback"] = _window(r.get("after_rollback"))
    cols = ["measured", "before", "after", "verdict", "attribution", "rolled back", "after rollback"]
    return pd.DataFrame(rows, columns=["id", *cols]).set_index("id")


def _verdict_counts(frame: pd.DataFrame) -> str:
    return ", ".join(f"{n} {v}" for v, n in frame["verdict"].value_counts().items())


def effects_note(step, frame: pd.DataFrame) -> str:
    if step.settings.source.kind == "fixture":
        if not frame.empty:  # a fixture run applies nothing: its effects can only be the recording run's
            return (f"**Concluded.** Measured live, when the incident was recorded: {_verdict_counts(frame)}. "
                    "These are the judgements of the bundle's own `runbook run` (apply: true) on the live lab; "
                    "this run replays the recording, which no change can reach, so it measures nothing itself.")
        return ("**Concluded.** Nothing measured: recorded data cannot react to a change. In lab or live mode "
                "each applied change is judged here over a window before and one after the changes.")
    if frame.empty:
        return "**Concluded.** No change was applied, so there is no effect to measure."
    return ("**Concluded.** " + _verdict_counts(frame) +
            ". Every *after* window starts after the last change (times in UTC); an interval is the 95 % "
            "range of the value over the window's sub-windows.")


def outcomes_frame(outcomes: list[dict]) -> pd.DataFrame:
    """What happened to each action, in words: a dry run has nothing verified or measured ("-"), not None."""
    frame = pd.DataFrame(outcomes).set_index("id").astype(object)
    for col in ("changed", "verified"):
        if col in frame:
            frame[col] = frame[col].map(lambda v: "yes" if v is True else "no" if v is False else v)
    return frame.where(frame.notna(), "-")


def payload(outcomes: list[dict], settings: Settings) -> dict:
    applied = [o["id"] for o in outcomes if o["changed"]]
    out = {"apply": settings.remediation.apply, "mode": settings.mode, "outcomes": outcomes, "applied": applied}
    if applied:  # 05 measures "after" from here on when the data has no recovery of its own
        out["finished_at"] = pd.Timestamp.now(tz="UTC").isoformat()
    return out


def conclusion(outcomes: list[dict], settings: Settings) -> str:
    executable = [o for o in outcomes if o["status"] != "not executed"]
    changed = [o for o in outcomes if o["changed"]]
    if not settings.remediation.apply:
        return (f"**Concluded.** Dry run: {len(executable)} executable action(s) planned and audited as "
                f"`planned`, {len(outcomes) - len(executable)} without an executor; nothing was changed. "
                "Set `remediation.apply: true` in the parameters to apply them.")
    return (f"**Concluded.** {len(changed)} of {len(executable)} executable action(s) changed a system; every "
            "step is in `audit.jsonl`. Undo with `runbook rollback RUN_DIR --apply`.")
