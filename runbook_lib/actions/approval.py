"""The approval gate: pure rules, no I/O. Dry run is the default everywhere.

* ``remediation.apply`` false (the default): dry run, plans are audited, nothing changes.
* fixture mode: a recorded bundle, there is nothing to change; applying is refused.
* live mode: applying also needs ``approved_by`` and ``change_ticket`` (real values: not blank, not a
  placeholder like ``TBD``; checked when the parameters load and again here); both go into every audit line.

There are no interactive prompts: approval is in the parameters, so papermill runs work unchanged.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from runbook_lib.actions.action_errors import ApprovalRequired
from runbook_lib.settings import Settings, approval_problem

# Who is running the runbook when the caller does not say: $RUNBOOK_ACTOR, else the OS user.
ACTOR_ENV = "RUNBOOK_ACTOR"


@dataclass(frozen=True)
class Decision:
    apply: bool
    mode: str
    actor: str
    approved_by: str | None
    change_ticket: str | None
    reason: str

    def audit_fields(self) -> dict:
        """The approval context recorded with every audit line."""
        return {"mode": self.mode, "dry_run": not self.apply, "actor": self.actor,
                "approved_by": self.approved_by, "change_ticket": self.change_ticket}


def default_actor() -> str:
    env = os.environ.get(ACTOR_ENV)
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def decide(settings: Settings, actor: str | None = None) -> Decision:
    """Dry run or apply, or raise ApprovalRequired when applying is asked for but not allowed."""
    rem = settings.remediation
    actor = actor or default_actor()
    base = {"mode": settings.mode, "actor": actor, "approved_by": rem.approved_by, "change_ticket": rem.change_ticket}
    if not rem.apply:
        return Decision(apply=False, reason="dry run: remediation.apply is false", **base)
    if settings.mode == "fixture":
        raise ApprovalRequired("remediation.apply is true but mode is fixture: a recorded bundle has no "
                               "servers to change", hint="use mode: lab (private servers) or mode: live")
    if settings.mode == "live":
        missing = [f"remediation.{k}" for k in ("approved_by", "change_ticket")
                   if getattr(rem, k) is None or approval_problem(getattr(rem, k))]
        if missing:
            raise ApprovalRequired(f"live mode with remediation.apply: true needs a real {' and '.join(missing)} "
                                   "(not blank, not a placeholder)")
        return Decision(apply=True, reason=f"approved by {rem.approved_by} under {rem.change_ticket}", **base)
    return Decision(apply=True, reason=f"{settings.mode} mode with remediation.apply: true", **base)
