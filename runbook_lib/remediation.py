"""Step 04 glue: plan.json -> executor actions -> plan table -> (gated) execution -> remediation.json.

Every executable action goes through the action framework (``runbook_lib.actions``); kinds without
an executor yet are shown as recommendations with the reason, never silently skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from .settings import Settings


@dataclass
class Entry:
    """One planned action as 04 shows it."""

    id: str
    phase: str
    title: str
    kind: str
    inputs: dict
    commands: list[str] = field(default_factory=list)
    rollback: list[str] = field(default_factory=list)
    captures: list[str] = field(default_factory=list)
    executor: object | None = None  # an actions.Action when the kind has an executor
    note: str = ""


def _describe_app_patch(inputs: dict) -> list[str]:
    return [f"merge-patch app config: {json.dumps(inputs, sort_keys=True)}"]


def build(plan: dict, settings: Settings) -> list[Entry]:
    entries = []
    for a in plan["actions"]:
        e = Entry(a["id"], a["phase"], a["title"], a["kind"], a["inputs"])
        if a["kind"] == "recommendation":
            e.note = "recommendation for the application owners; the runbook does not edit code"
            e.commands = [f"-- {a['reason']}"]
        elif a["kind"] == "app.config":
            e.commands = _describe_app_patch(a["inputs"])
            e.captures = [f"current value of {k}" for k in a["inputs"]]
            e.note = "app config executor: not yet available (lab config source / ConfigMap patch)"
        elif a["kind"] == "cache.warm":
            e.commands = [f"warm the top {a['inputs'].get('top_n')} keys by request count"]
            e.note = "cache warming executor: not yet available"
        else:
            e.note = "executor not yet available"
        entries.append(e)
    return entries


def plan_frame(entries: list[Entry]) -> pd.DataFrame:
    return pd.DataFrame([{"phase": e.phase, "action": e.title, "executor": e.kind,
                          "commands": "\n".join(e.commands), "captures": "; ".join(e.captures) or "-",
                          "rollback": "\n".join(e.rollback) or "-", "note": e.note} for e in entries],
                        index=pd.Index([e.id for e in entries], name="id"))


def execute(entries: list[Entry], step) -> list[dict]:
    apply = step.settings.remediation.apply
    out = []
    for e in entries:
        status = "planned" if not apply else "not applied: no executor"
        out.append({"id": e.id, "status": status, "changed": False, "note": e.note})
    return out


def outcomes_frame(outcomes: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(outcomes).set_index("id")


def payload(outcomes: list[dict], settings: Settings) -> dict:
    return {"apply": settings.remediation.apply, "mode": settings.mode, "outcomes": outcomes,
            "applied": [o["id"] for o in outcomes if o["changed"]]}


def conclusion(outcomes: list[dict], settings: Settings) -> str:
    changed = [o for o in outcomes if o["changed"]]
    if not settings.remediation.apply:
        return (f"**Concluded.** Dry run: {len(outcomes)} actions planned, nothing was changed. "
                "Set `remediation.apply: true` in the parameters to apply them.")
    return f"**Concluded.** {len(changed)} of {len(outcomes)} actions changed something; see the audit log."
