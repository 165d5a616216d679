"""Rollback from the audit log: ``runbook rollback RUN_DIR [--action ID] [--apply]``.

The audit log is the source of truth. Replaying it gives each action's history: its inputs (to
rebuild it through the registry), the prior state captured before the first change, and where it
stands now. Actions that changed something are undone newest first. Without ``apply`` only
``rollback_planned`` lines are written and nothing is touched; with it each undo is audited
``rolling_back`` (intent) then ``rolled_back`` (with whether the state equals the prior exactly).

An ``applying`` line without its outcome (the process died between the change and the audit
write) counts as "maybe applied": rolling back restores the prior state either way, because every
rollback is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook_lib.actions.action_errors import ActionFailed, RollbackError
from runbook_lib.actions.approval import default_actor
from runbook_lib.actions.audit import AuditLog, Stopwatch, read_audit
from runbook_lib.actions.framework import Action
from runbook_lib.actions.registry import build_action
from runbook_lib.actions.targets import Targets
from runbook_lib.model import Outcome
from runbook_lib.redaction import redact_text
from runbook_lib.run_folder import PARAMETERS_FILE
from runbook_lib.settings import Settings, load_settings

# States in which an action may have changed the server and so has something to undo.
UNDO_STATES = ("applied", "applying", "uncertain", "rolling_back")
# States whose intent line has no outcome line yet: the process stopped in between.
UNRESOLVED_STATES = ("applying", "rolling_back")


@dataclass
class History:
    """One action's story in a run folder, rebuilt from the audit log."""

    action_id: str
    kind: str
    inputs: dict[str, Any]
    endpoint: str | None = None
    state: str = "planned"
    prior: dict[str, Any] | None = None
    cycle_changed: bool = False  # changed since the last rollback
    order: int = -1  # line number of the applying line that opened this cycle
    title: str = ""
    target: str = ""
    steps: list[str] = field(default_factory=list)

    @property
    def needs_undo(self) -> bool:
        return self.state in UNDO_STATES and self.prior is not None

    def action(self) -> Action:
        return build_action(self.kind, self.inputs)


def _advance(h: History, rec: dict[str, Any], n: int) -> None:
    """Apply one audit record to a history (pure)."""
    step = rec["step"]
    h.steps.append(step)
    if step == "applying":  # where the change went; later lines may come from other parameters
        h.endpoint = rec.get("endpoint") or h.endpoint
    h.title, h.target = rec.get("title") or h.title, rec.get("target") or h.target
    if step == "applying":
        if h.state in ("planned", "noop", "rolled_back") or h.prior is None:
            h.prior, h.order, h.cycle_changed = rec.get("prior"), n, False
        h.state = "applying"
    elif step == "applied":
        h.cycle_changed = h.cycle_changed or bool(rec.get("changed"))
        h.state = "applied" if h.cycle_changed else "noop"
    elif step == "failed" and h.state in UNRESOLVED_STATES:
        # the step raised midway; the server may or may not have changed: undo to the prior to be sure
        h.state, h.cycle_changed = "uncertain", True
    elif step == "discovered":
        h.state = "applied" if rec.get("applied_on_server") else "uncertain"
        h.cycle_changed = True
    elif step == "rolling_back":
        h.state = "rolling_back"
    elif step == "rolled_back":
        h.state, h.cycle_changed = "rolled_back", False


def histories(records: list[dict[str, Any]]) -> dict[str, History]:
    """Every action in the audit log, in first-seen order."""
    out: dict[str, History] = {}
    for n, rec in enumerate(records):
        aid = rec.get("action_id")
        if not aid or "kind" not in rec:
            continue
        h = out.get(aid)
        if h is None:
            h = out[aid] = History(aid, rec["kind"], rec.get("inputs") or {})
        _advance(h, rec, n)
    return out


def unresolved(records: list[dict[str, Any]]) -> list[History]:
    """Actions whose last step is an intent without outcome: a crash happened in between."""
    return [h for h in histories(records).values() if h.state in UNRESOLVED_STATES]


def to_undo(records: list[dict[str, Any]], action_id: str | None = None) -> list[History]:
    """Actions with something to undo, newest first; ``action_id`` picks one (RollbackError if unknown)."""
    hs = histories(records)
    if action_id is not None:
        if action_id not in hs:
            known = ", ".join(hs) or "none"
            raise RollbackError(f"no action {action_id!r} in the audit log; actions there: {known}")
        hs = {action_id: hs[action_id]}
    return sorted((h for h in hs.values() if h.needs_undo), key=lambda h: h.order, reverse=True)


# --- doing it ------------------------------------------------------------------------------------


def undo(action: Action, targets: Targets, log: AuditLog, prior: dict[str, Any], fields: dict[str, Any],
         reason: str) -> Outcome:
    """Roll one action back, audited as intent then outcome; raises ActionFailed if the prior state
    is not exactly restored."""
    sw = Stopwatch()
    common = {**action.to_record(), "title": action.title, "target": action.target, **fields}
    log.append("rolling_back", **common, prior=prior, commands=action.rollback_commands(prior), reason=reason)
    try:
        result = action.rollback(targets, prior)
        # an irreversible action (terminated sessions, warmed keys) has nothing to compare: its prior is the
        # record of what it did, not a state to restore
        after = action.capture(targets) if action.reversible else None
    except KeyboardInterrupt:
        log.append("failed", **common, result="interrupted", phase="rollback", error="interrupted (Ctrl-C)",
                   duration_s=sw.seconds())
        raise
    except Exception as e:  # noqa: BLE001 - any failure is audited, then reported typed
        msg = redact_text(f"{type(e).__name__}: {e}")
        log.append("failed", **common, result="failed", phase="rollback", error=msg, duration_s=sw.seconds())
        raise ActionFailed(f"rollback of {action.id} failed: {msg}") from None
    if not action.reversible:
        log.append("rolled_back", **common, result="not reversible", changed=result.changed,
                   message=result.message, commands=result.commands, restored=False, reason=reason,
                   duration_s=sw.seconds())
        return Outcome.for_action(action, "not reversible", changed=result.changed, message=result.message,
                                  rolled_back=False, duration_s=sw.seconds(), commands=result.commands)
    restored = after == prior
    log.append("rolled_back", **common, result="restored" if restored else "differs from prior",
               changed=result.changed, message=result.message, commands=result.commands,
               restored=restored, state_after=after, prior=prior, reason=reason, duration_s=sw.seconds())
    if not restored:
        raise ActionFailed(f"rollback of {action.id} ran but the state differs from the prior state: "
                           f"now {after}, before {prior}")
    return Outcome.for_action(action, "rolled back" if result.changed else "nothing to undo",
                              changed=result.changed, message=result.message, rolled_back=True,
                              duration_s=sw.seconds(), commands=result.commands)


def load_run_settings(run_dir: Path) -> Settings:
    path = Path(run_dir) / PARAMETERS_FILE
    if not path.exists():
        raise RollbackError(f"{path} is missing: the run folder does not say which servers it changed",
                            hint="copy the parameters file the run used into the run folder as parameters.yaml")
    return load_settings(path)


def _check_endpoint(h: History, targets: Targets, action: Action) -> None:
    now = targets.endpoint(action.family)
    if h.endpoint and h.endpoint != now:
        raise RollbackError(f"{h.action_id} was applied to {h.endpoint} but the run's parameters now point at "
                            f"{now}; refusing to roll back on a different server",
                            hint="restore the run folder's parameters.yaml to the one the run used")


def rollback_run(run_dir: str | Path, action_id: str | None = None, apply: bool = False,
                 actor: str | None = None, settings: Settings | None = None) -> list[Outcome]:
    """Undo the run's applied actions newest first (one with ``action_id``); dry run unless ``apply``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RollbackError(f"{run_dir} is not a run folder", hint="pass a folder made by 'runbook run'")
    read = read_audit(run_dir)
    todo = to_undo(read.records, action_id)
    if not todo:
        return []
    settings = settings or load_run_settings(run_dir)
    rem = settings.remediation
    fields = {"mode": settings.mode, "dry_run": not apply, "actor": actor or default_actor(),
              "approved_by": rem.approved_by, "change_ticket": rem.change_ticket}
    log = AuditLog(run_dir)
    if not apply:
        return [_plan_undo(h, log, fields) for h in todo]
    outcomes = []
    with Targets(settings) as targets:
        for h in todo:
            action = h.action()
            _check_endpoint(h, targets, action)
            fields_h = {**fields, "endpoint": targets.endpoint(action.family)}
            outcomes.append(undo(action, targets, log, h.prior or {}, fields_h, reason="runbook rollback"))
    return outcomes


def _plan_undo(h: History, log: AuditLog, fields: dict[str, Any]) -> Outcome:
    action = h.action()
    commands = action.rollback_commands(h.prior or {})
    log.append("rollback_planned", **action.to_record(), title=action.title, target=action.target,
               endpoint=h.endpoint, **fields, prior=h.prior, commands=commands, state=h.state)
    note = " (its apply was never confirmed; the undo is safe either way)" if h.state != "applied" else ""
    return Outcome.for_action(action, "planned", message=f"would undo{note}", commands=commands)
