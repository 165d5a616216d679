"""The action framework every remediation goes through: plan -> approve -> apply -> verify -> audit -> rollback.

Notebook-facing API::

    from runbook_lib.actions import CreateIndex, RedisConfigSet, execute, plans_frame, outcomes_frame
    actions = [CreateIndex(table="orders", columns=["user_id", "created_at"]),
               RedisConfigSet(config={"maxmemory": "256mb", "maxmemory-policy": "allkeys-lru"})]
    display(plans_frame(actions))                     # the exact commands, before anything runs
    outcomes = execute(actions, settings, run_dir)    # dry run unless remediation.apply: true
    display(outcomes_frame(outcomes))

Undo: ``rollback_run(run_dir, action_id=None, apply=False)`` or ``runbook rollback RUN_DIR [--apply]``.
"""

from .audit import STEPS, AuditLog, read_audit
from .base import (
    Action,
    ApplyResult,
    Outcome,
    Plan,
    RollbackResult,
    VerifyResult,
    action_kinds,
    build_action,
    from_record,
    register_action,
)
from .errors import (
    ActionError,
    ActionFailed,
    ActionInputError,
    ApprovalRequired,
    AuditError,
    RollbackError,
    TargetError,
    VerifyFailed,
)
from .gate import Decision, decide
from .postgres_index import CreateIndex
from .redis_config import RedisConfigSet
from .rollback import histories, rollback_run, unresolved
from .runner import EFFECT_THRESHOLD, by_signal, classify, execute, outcomes_frame, plans_frame
from .targets import Targets

__all__ = [
    "EFFECT_THRESHOLD",
    "STEPS",
    "Action",
    "ActionError",
    "ActionFailed",
    "ActionInputError",
    "ApplyResult",
    "ApprovalRequired",
    "AuditError",
    "AuditLog",
    "CreateIndex",
    "Decision",
    "Outcome",
    "Plan",
    "RedisConfigSet",
    "RollbackError",
    "RollbackResult",
    "TargetError",
    "Targets",
    "VerifyFailed",
    "VerifyResult",
    "action_kinds",
    "build_action",
    "by_signal",
    "classify",
    "decide",
    "execute",
    "from_record",
    "histories",
    "outcomes_frame",
    "plans_frame",
    "read_audit",
    "register_action",
    "rollback_run",
    "unresolved",
]
