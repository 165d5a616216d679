"""Run actions through the gate: plan all -> approve -> for each: capture, apply, verify, assess.

Every step is audited before ``execute`` moves on. The order per action is::

    planned      (every action, also in dry run; nothing else happens in dry run)
    approved     (actor, approved_by, change_ticket)
    applying     (intent + captured prior state, written BEFORE the change)
    applied      (changed: false when it was already there)
    verified     (the effect measured on the server)
    assessed     (verify loop, when a ``measure`` callable is given: helped / no effect / worse)
    rolling_back / rolled_back   (auto_rollback of an action that made things worse)

A failing step is audited ``failed`` and stops the run with ActionFailed; nothing after it runs.
Before applying, intents left without an outcome by a crashed earlier run in the same folder
are inspected on the server and audited ``discovered``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from runbook_lib.actions.action_errors import (
    ActionError,
    ActionFailed,
    ActionInputError,
    TargetError,
    VerifyFailed,
)
from runbook_lib.actions.approval import decide
from runbook_lib.actions.audit import AuditLog, Stopwatch, read_audit
from runbook_lib.actions.effect_probes import SignalProbe, SignalReader, probe_for
from runbook_lib.actions.effect_verdict import EFFECT_THRESHOLD, Measurement, verdict
from runbook_lib.actions.framework import Action, Plan
from runbook_lib.actions.rollback import undo, unresolved
from runbook_lib.actions.targets import Targets
from runbook_lib.errors import RunbookError, TargetUnreachable
from runbook_lib.model import Outcome
from runbook_lib.redaction import redact, redact_text
from runbook_lib.run_folder import PARAMETERS_FILE, write_atomic
from runbook_lib.settings import Settings
from runbook_lib.signal_catalog import CATALOG

# Verify loop window: re-measure this many times over this many seconds after a change and take the
# median. 30 s is two to three Prometheus scrapes at the usual 10-15 s interval; callers may shorten it.
VERIFY_WINDOW_S = 30.0
VERIFY_SAMPLES = 3

Measure = Callable[[Action], "float | None"]

# Test hook: called right after a change reached the server and before its ``applied`` line is written.
# Crash tests set it (in a subprocess) to kill the process at exactly that point. None in production.
after_change_hook: Callable[[Action], None] | None = None


# --- pure logic ------------------------------------------------------------------------------------


def classify(before: float | None, after: float | None, higher_is_worse: bool,
             threshold: float = EFFECT_THRESHOLD) -> str:
    """helped / no effect / worse from a before and after value of one signal; unknown without both."""
    if before is None or after is None:
        return "unknown"
    if before == after:
        return "no effect"
    rel = (after - before) / abs(before) if before else (1.0 if after > before else -1.0)
    improvement = -rel if higher_is_worse else rel
    if improvement >= threshold:
        return "helped"
    if improvement <= -threshold:
        return "worse"
    return "no effect"


def plans_frame(items: Iterable[Action | Plan]) -> pd.DataFrame:
    """One row per action: the exact commands (one per line), what is captured, how it is undone."""
    rows = []
    for it in items:
        p = it.plan() if isinstance(it, Action) else it
        row = p.as_row()
        for k in ("commands", "captures", "rollback_commands"):
            row[k] = "\n".join(row[k])
        rows.append(row)
    cols = ["action_id", "title", "target", "commands", "captures", "rollback_commands", "reversible", "risk"]
    return pd.DataFrame(redact(rows), columns=cols)


def outcomes_frame(outcomes: Iterable[Outcome]) -> pd.DataFrame:
    cols = ["action_id", "title", "status", "changed", "verified", "effect", "before", "after",
            "rolled_back", "duration_s", "message"]
    return pd.DataFrame(redact([o.as_row() for o in outcomes]), columns=cols)


def _check_unique(actions: list[Action]) -> None:
    seen: set[str] = set()
    for a in actions:
        if a.id in seen:
            raise ActionInputError(f"action {a.id} is listed twice")
        seen.add(a.id)


# --- execution -------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What every step of one apply run needs."""

    targets: Targets
    log: AuditLog
    fields: dict[str, Any]  # approval context recorded on every line
    settings: Settings
    run_dir: Path
    measure: Measure | None
    window_s: float
    samples: int
    done: list[Outcome] = field(default_factory=list)
    priors: dict[str, dict[str, Any]] = field(default_factory=dict)
    probed: set[str] = field(default_factory=set)  # actions judged by a direct probe (not by ``measure``)


def execute(actions: Iterable[Action], settings: Settings, run_dir: str | Path, actor: str | None = None,
            measure: Measure | None = None, *, verify_window_s: float = VERIFY_WINDOW_S,
            verify_samples: int = VERIFY_SAMPLES, probe_window_s: float | None = None,
            read_signal: SignalReader | None = None, signals: Iterable[str] = ()) -> list[Outcome]:
    """Plan, and when the parameters allow, apply + verify + assess every action, in order.

    Dry run (the default): audits ``planned`` lines, opens no connection, changes nothing.
    Raises ApprovalRequired when applying is asked for but not allowed, ActionFailed when a step fails.

    ``probe_window_s``: judge each action's effect by direct measurement (``effect_probes``): one shared
    before-window for all probes, the changes, then one shared after-window that starts after the last change
    (actions measuring the same thing share a verdict); ``measure`` then judges only the actions without a
    probe. Without it, each action is judged by ``measure`` alone, in turn. ``read_signal`` (with the names
    of the ``signals`` it can read) lets an action without a direct probe be judged on its ``effect_signal``
    over the same windows, from samples inside them only.
    """
    actions = list(actions)
    _check_unique(actions)
    decision = decide(settings, actor)
    run_dir = Path(run_dir)
    log = AuditLog(run_dir)
    fields = decision.audit_fields()
    for a in actions:
        _audit_plan(log, a, fields, _endpoint_or_none(settings, a))
    if not decision.apply:
        return [Outcome.for_action(a, "planned", message=decision.reason, commands=a.plan().commands)
                for a in actions]
    ensure_parameters_file(run_dir, settings)
    with Targets(settings) as targets:
        run = _Run(targets, log, fields, settings, run_dir, measure, verify_window_s, verify_samples)
        discover(run_dir, targets, log, fields)
        groups = _probe_groups(actions, targets, read_signal, set(signals)) if probe_window_s else {}
        run.probed = {a.id for _, acts in groups.values() for a in acts}
        before = _measure_groups(groups, probe_window_s, "before") if groups else {}
        for a in actions:
            log.append("approved", **_common(a, fields, targets), reason=decision.reason)
            run.done.append(_run_one(a, run))
        if groups:
            _assess_groups(groups, before, run, probe_window_s)
    return run.done


def _endpoint_or_none(settings: Settings, action: Action) -> str | None:
    try:
        return Targets(settings).endpoint(action.family)
    except TargetError:
        return None


def _common(action: Action, fields: dict[str, Any], targets: Targets | None = None) -> dict[str, Any]:
    out = {**action.to_record(), "title": action.title, "target": action.target, **fields}
    if targets is not None:
        out["endpoint"] = targets.endpoint(action.family)
    return out


def _audit_plan(log: AuditLog, action: Action, fields: dict[str, Any], endpoint: str | None) -> None:
    p = action.plan()
    log.append("planned", **_common(action, fields), endpoint=endpoint, commands=p.commands,
               captures=p.captures, rollback_commands=p.rollback_commands, reversible=p.reversible, risk=p.risk)


def ensure_parameters_file(run_dir: Path, settings: Settings) -> Path:
    """Rollback needs to know which servers were changed; write the parameters if the run folder has none.

    Settings hold only references to secrets (inline passwords in a DSN or URL are refused), so the
    dump is written as is: the redaction patterns would mangle ``password:\n  env: NAME`` into
    invalid YAML."""
    path = run_dir / PARAMETERS_FILE
    if not path.exists():
        write_atomic(path, yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True), sort_keys=False))
    return path


def discover(run_dir: Path, targets: Targets, log: AuditLog, fields: dict[str, Any]) -> list[dict[str, Any]]:
    """Inspect the server for every step a crash left without its outcome; audit what is there."""
    found = []
    for h in unresolved(read_audit(run_dir).records):
        action = h.action()
        here = targets.endpoint(action.family)
        if h.endpoint and h.endpoint != here:  # recorded against another server: do not guess
            state, applied = None, None
            message = f"{h.state} without an outcome on {h.endpoint}; parameters now point at {here}: not inspected"
        else:
            state = action.capture(targets)
            applied = action.is_applied(state)
            message = (f"{h.state} without an outcome; on the server the change is "
                       f"{'present' if applied else 'absent'}")
        found.append(log.append("discovered", **_common(action, fields, targets), of_step=h.state, state=state,
                                applied_on_server=applied, prior=h.prior, message=message))
    return found


def _run_one(action: Action, run: _Run) -> Outcome:
    sw = Stopwatch()
    fields = {**run.fields, "endpoint": run.targets.endpoint(action.family)}
    common = _common(action, fields)
    log, targets = run.log, run.targets
    phase = "capture"
    try:
        prior = action.capture(targets)
        before = _measure_once(run.measure, action)
        phase = "apply"
        log.append("applying", **common, prior=prior, commands=action.plan().commands)
        result = action.apply(targets)
        if after_change_hook is not None:
            after_change_hook(action)
        log.append("applied", **common, result="changed" if result.changed else "already applied",
                   changed=result.changed, message=result.message,
                   commands=result.commands, prior=prior, duration_s=sw.seconds())
        phase = "verify"
        vr = action.verify(targets)
        log.append("verified", **common, result="ok" if vr.ok else "not in effect", ok=vr.ok,
                   message=vr.message, observed=vr.observed,
                   duration_s=sw.seconds())
        if not vr.ok:
            raise VerifyFailed(f"applied but not in effect: {vr.message}")
    except KeyboardInterrupt:
        log.append("failed", **common, result="interrupted", phase=phase, error="interrupted (Ctrl-C)",
                   duration_s=sw.seconds())
        raise
    except Exception as e:  # noqa: BLE001 - audited first, then reported typed
        raise _failed(action, e, phase, common, sw, run) from None
    out = Outcome.for_action(action, "applied" if result.changed else "already applied", changed=result.changed,
                             message=result.message, verified=vr.ok, before=before,
                             commands=result.commands)
    run.priors[action.id] = prior
    if run.measure is not None and result.changed and action.id not in run.probed:
        _assess(action, out, run, fields, prior)
    out.duration_s = sw.seconds()
    return out


def _failed(action: Action, err: Exception, phase: str, common: dict[str, Any], sw: Stopwatch,
            run: _Run) -> RunbookError:
    """Audit the failure, then build the error to raise: the cause plus what is still applied."""
    msg = redact_text(str(err) if isinstance(err, RunbookError) else f"{type(err).__name__}: {err}")
    run.log.append("failed", **common, result="failed", phase=phase, error=msg, duration_s=sw.seconds())
    changed = [o.action_id for o in run.done if o.changed and not o.rolled_back]
    if phase != "capture":
        changed.append(action.id + " (maybe)" if phase == "apply" else action.id)
    left = (f"; possibly changed by this run: {', '.join(changed)} (undo: runbook rollback {run.run_dir})"
            if changed else "")
    text = f"{action.id} failed at {phase}: {msg}{left}"
    if isinstance(err, ActionError):
        return type(err)(text, hint=err.hint)
    if isinstance(err, TargetUnreachable):
        return TargetUnreachable(err.endpoint, text, hint=err.hint)
    return ActionFailed(text)


def _measure_once(measure: Measure | None, action: Action) -> float | None:
    if measure is None:
        return None
    try:
        v = measure(action)
    except Exception:  # noqa: BLE001 - a missing measurement must not fail the change
        return None
    return None if v is None else float(v)


def by_signal(read: Callable[[str], float | None]) -> Measure:
    """A verify-loop ``measure`` from a function reading one catalog signal's current value by name:
    each action is measured on its own ``effect_signal`` (index -> DB latency, cache -> hit ratio)."""
    return lambda action: read(action.effect_signal)


def measure_window(measure: Measure, action: Action, window_s: float, samples: int) -> float | None:
    """Median of ``samples`` measurements spread over ``window_s`` seconds (None values skipped)."""
    values = []
    for i in range(samples):
        v = _measure_once(measure, action)
        if v is not None:
            values.append(v)
        if i < samples - 1 and window_s > 0:
            time.sleep(window_s / max(samples - 1, 1))
    return statistics.median(values) if values else None


def _assess(action: Action, out: Outcome, run: _Run, fields: dict[str, Any], prior: dict[str, Any]) -> None:
    """Verify loop: re-measure the action's signal, classify, and auto-roll back if it got worse."""
    out.after = measure_window(run.measure, action, run.window_s, run.samples)
    signal = CATALOG.get(action.effect_signal)
    out.effect = classify(out.before, out.after, signal.higher_is_worse if signal else True)
    auto = run.settings.remediation.auto_rollback and out.effect == "worse"
    run.log.append("assessed", **_common(action, fields), result=out.effect, signal=action.effect_signal,
                   before=out.before,
                   after=out.after, effect=out.effect, threshold=EFFECT_THRESHOLD, window_s=run.window_s,
                   samples=run.samples, auto_rollback=auto)
    if auto:
        undo(action, run.targets, run.log, prior, fields,
             reason=f"auto_rollback: {action.effect_signal} got worse ({out.before} -> {out.after})")
        out.rolled_back = True
        out.status = "rolled back"
        out.message = (f"{out.message}; rolled back automatically: {action.effect_signal} "
                       f"{out.before} -> {out.after} is worse")


# --- verify loop by direct measurement (effect_probes) ----------------------------------------------


def _probe_groups(actions: list[Action], targets: Targets, read_signal: SignalReader | None = None,
                  signals: set[str] | None = None) -> dict[str, tuple[Any, list[Action]]]:
    """probe key -> (probe, the actions it judges), in plan order."""
    groups: dict[str, tuple[Any, list[Action]]] = {}
    for a in actions:
        probe = probe_for(a, targets, read_signal, signals or set())
        if probe is not None:
            groups.setdefault(probe.key, (probe, []))[1].append(a)
    return groups


def _measure_groups(groups: dict[str, tuple[Any, list[Action]]], window_s: float, what: str,
                    keys: Iterable[str] | None = None) -> dict[str, Measurement | None]:
    """Every probe over the same wall-clock window, side by side (one thread each)."""
    chosen = list(keys if keys is not None else groups)
    if not chosen:
        return {}
    print(f"verify loop: measuring {len(chosen)} effect(s) {what} the changes over {window_s:.0f} s ...",
          flush=True)

    def one(key: str) -> Measurement | None:
        try:
            return groups[key][0].window(window_s)
        except Exception:  # noqa: BLE001 - a failed measurement is "inconclusive", never a failed change
            return None

    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        return dict(zip(chosen, pool.map(one, chosen), strict=True))


def _assess_groups(groups: dict[str, tuple[Any, list[Action]]], before: dict[str, Measurement | None], run: _Run,
                   window_s: float) -> None:
    outcomes = {o.action_id: o for o in run.done}
    changed = [k for k, (_, acts) in groups.items() if any(outcomes[a.id].changed for a in acts)]
    after = _measure_groups(groups, window_s, "after", changed)
    all_changed = [o.action_id for o in run.done if o.changed]
    for key in changed:
        probe, acts = groups[key]
        v = verdict(before.get(key), after.get(key), probe.higher_is_worse)
        ids = [a.id for a in acts]
        # a service-wide signal moves with every change of the window, not only with the ones it judges
        others = [i for i in all_changed if i not in ids] if isinstance(probe, SignalProbe) else []
        for a in acts:
            out = outcomes[a.id]
            b, af = before.get(key), after.get(key)
            out.effect, out.before, out.after = v, (b.value if b else None), (af.value if af else None)
            fields = {**run.fields, "endpoint": run.targets.endpoint(a.family)}
            run.log.append("assessed", **_common(a, fields), result=v, measured=probe.label,
                           before=b.as_dict() if b else None, after=af.as_dict() if af else None,
                           shared_with=[i for i in ids if i != a.id], shared_window_with=others,
                           threshold=EFFECT_THRESHOLD,
                           auto_rollback=bool(run.settings.remediation.auto_rollback and v == "worse"))
            out.message = f"{out.message}; {probe.label}: {v}" + (
                f" (measured together with {', '.join(i for i in ids if i != a.id)})" if len(ids) > 1 else "") + (
                f"; the same window also holds {', '.join(others)}, which may move it too" if others else "")
        if v == "worse" and run.settings.remediation.auto_rollback:
            _roll_back_group(acts, outcomes, probe, b, af, run, window_s)


def _roll_back_group(acts: list[Action], outcomes: dict[str, Outcome], probe: Any, before: Measurement | None,
                     after: Measurement | None, run: _Run, window_s: float) -> None:
    """Undo every changed action of a group measured worse (newest first), then measure again to confirm the
    prior level is back."""
    why = f"auto_rollback: {probe.label} got worse"
    if before is not None and after is not None and before.value is not None and after.value is not None:
        why += f" ({before.value:.4g} -> {after.value:.4g})"
    for a in reversed(acts):
        out = outcomes[a.id]
        if not out.changed or not a.reversible:
            continue
        fields = {**run.fields, "endpoint": run.targets.endpoint(a.family)}
        undo(a, run.targets, run.log, run.priors[a.id], fields, reason=why)
        out.rolled_back, out.status = True, "rolled back"
        out.message = f"{out.message}; rolled back automatically ({why})"
    again = _measure_groups({probe.key: (probe, acts)}, window_s, "after rolling back").get(probe.key)
    restored = verdict(after, again, probe.higher_is_worse)
    for a in acts:
        fields = {**run.fields, "endpoint": run.targets.endpoint(a.family)}
        run.log.append("reassessed", **_common(a, fields), result="recovered" if restored == "helped" else restored,
                       measured=probe.label, after_rollback=again.as_dict() if again else None,
                       before=before.as_dict() if before else None)
