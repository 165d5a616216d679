"""Step 03, impact assessment: the remediation actions ranked by expected gain for the effort and risk."""

from __future__ import annotations

import pandas as pd

from runbook_lib.diagnose.hypotheses import hypotheses_from_json
from runbook_lib.model import PlannedAction
from runbook_lib.plan import ranking


def impact(findings: dict) -> list[PlannedAction]:
    hyps = hypotheses_from_json(findings)
    statements = None
    if findings.get("statements"):
        statements = pd.DataFrame(findings["statements"]).set_index("queryid")
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
