"""Step 03, impact assessment: the remediation actions ranked by expected gain for the effort and risk."""

from __future__ import annotations

import pandas as pd

from runbook_lib.actions import build_action
from runbook_lib.diagnose.hypotheses import hypotheses_from_json
from runbook_lib.errors import RunbookError, SettingsError
from runbook_lib.model import PlannedAction
from runbook_lib.plan import ranking
from runbook_lib.settings import Settings


def impact(findings: dict, settings: Settings | None = None) -> list[PlannedAction]:
    """The ranked plan from 02's findings, then the operator's own actions (``remediation.extra_actions``)."""
    hyps = hypotheses_from_json(findings)
    statements = None
    if findings.get("statements"):
        statements = pd.DataFrame(findings["statements"]).set_index("queryid")
    planned = _propose(hyps, statements, findings)
    return planned + (extra_actions(settings, {a.id for a in planned}) if settings is not None else [])


def extra_actions(settings: Settings, taken: set[str]) -> list[PlannedAction]:
    """The parameters' extra actions as plan rows, with their executor's id and title (an unknown kind or bad
    inputs stop here, naming the action)."""
    out = []
    for i, x in enumerate(settings.remediation.extra_actions):
        try:
            executor = build_action(x.kind, x.inputs)
        except RunbookError as e:
            raise SettingsError(f"remediation.extra_actions[{i}]: {e}") from None
        if executor.id in taken:
            raise SettingsError(f"remediation.extra_actions[{i}]: {executor.id} is already in the plan",
                                hint="change the plan's action instead of adding a second one with the same id")
        taken.add(executor.id)
        out.append(PlannedAction(executor.id, "immediate", executor.title, "operator", x.kind, x.inputs, 0.0, 0.25,
                                 executor.risk, x.why))
    return out


def _propose(hyps, statements, findings: dict) -> list[PlannedAction]:
    return ranking.propose(hyps, statements, findings.get("app_config"), findings.get("index_candidates", []),
                           findings.get("redis"), findings.get("cache_plan"), findings.get("cache_findings"),
                           findings.get("pool_holders"))


def impact_conclusion(actions: list[PlannedAction]) -> str:
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


def actions_frame(actions: list[PlannedAction]) -> pd.DataFrame:
    """The plan table 03 shows."""
    return ranking.actions_frame(actions)
