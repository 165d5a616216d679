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

from runbook_lib.actions.action_errors import (
    ActionError,
    ActionFailed,
    ActionInputError,
    ApprovalRequired,
    AuditError,
    RollbackError,
    TargetError,
    VerifyFailed,
)
from runbook_lib.actions.app_config import AppConfig
from runbook_lib.actions.approval import Decision, decide
from runbook_lib.actions.audit import STEPS, AuditLog, read_audit
from runbook_lib.actions.aws_autoscaling import AsgCapacity
from runbook_lib.actions.cache_warm import CacheWarm
from runbook_lib.actions.execution import (
    EFFECT_THRESHOLD,
    by_signal,
    classify,
    execute,
    outcomes_frame,
    plans_frame,
)
from runbook_lib.actions.framework import Action, ApplyResult, Plan, RollbackResult, VerifyResult
from runbook_lib.actions.postgres_index import CreateIndex
from runbook_lib.actions.postgres_sessions import SetParameter, TerminateIdleSessions
from runbook_lib.actions.redis_config import RedisConfigSet
from runbook_lib.actions.registry import EXECUTORS, action_kinds, build_action, from_record
from runbook_lib.actions.rollback import histories, rollback_run, unresolved
from runbook_lib.actions.targets import Targets
from runbook_lib.model import Outcome

__all__ = [
    "EFFECT_THRESHOLD",
    "EXECUTORS",
    "STEPS",
    "Action",
    "ActionError",
    "ActionFailed",
    "ActionInputError",
    "ApplyResult",
    "AppConfig",
    "AsgCapacity",
    "ApprovalRequired",
    "AuditError",
    "AuditLog",
    "CacheWarm",
    "CreateIndex",
    "Decision",
    "Outcome",
    "Plan",
    "RedisConfigSet",
    "RollbackError",
    "RollbackResult",
    "SetParameter",
    "TargetError",
    "Targets",
    "TerminateIdleSessions",
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
    "rollback_run",
    "unresolved",
]
