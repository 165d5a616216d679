"""The action framework every remediation goes through: plan -> approve -> apply -> verify -> audit -> rollback.

Notebook-facing API::

    from runbook_lib.actions import CreateIndex, RedisConfigSet, execute, plans_frame, outcomes_frame
    actions = [CreateIndex(table="orders", columns=["user_id", "created_at"]),
               RedisConfigSet(config={"maxmemory": "256mb", "maxmemory-policy": "allkeys-lru"})]
    display(plans_frame(actions))                     # the exact commands, before anything runs
    outcomes = execute(actions, settings, run_dir)    # dry run unless remediation.apply: true
    display(outcomes_frame(outcomes))

Undo: ``rollback_run(run_dir, action_id=None, apply=False)`` or ``runbook rollback RUN_DIR [--apply]``.

Names are imported when first used (PEP 562): importing one executor module, or ``runbook --help``, does not
pay for every executor's client library (psycopg, redis, boto3, pandas).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Action": "runbook_lib.actions.framework",
    "ActionError": "runbook_lib.actions.action_errors",
    "ActionFailed": "runbook_lib.actions.action_errors",
    "ActionInputError": "runbook_lib.actions.action_errors",
    "AppConfig": "runbook_lib.actions.app_config",
    "ApplyResult": "runbook_lib.actions.framework",
    "ApprovalRequired": "runbook_lib.actions.action_errors",
    "AppAutoScalingTarget": "runbook_lib.actions.aws_app_autoscaling",
    "AsgCapacity": "runbook_lib.actions.aws_autoscaling",
    "KubernetesApiError": "runbook_lib.actions.kubernetes_apply",
    "KubernetesApply": "runbook_lib.actions.kubernetes_apply",
    "AuditError": "runbook_lib.actions.action_errors",
    "AuditLog": "runbook_lib.actions.audit",
    "CacheWarm": "runbook_lib.actions.cache_warm",
    "CreateIndex": "runbook_lib.actions.postgres_index",
    "Decision": "runbook_lib.actions.approval",
    "EFFECT_THRESHOLD": "runbook_lib.actions.execution",
    "EXECUTORS": "runbook_lib.actions.registry",
    "Outcome": "runbook_lib.model",
    "Plan": "runbook_lib.actions.framework",
    "RedisConfigSet": "runbook_lib.actions.redis_config",
    "RollbackError": "runbook_lib.actions.action_errors",
    "RollbackResult": "runbook_lib.actions.framework",
    "STEPS": "runbook_lib.actions.audit",
    "SetParameter": "runbook_lib.actions.postgres_sessions",
    "TargetError": "runbook_lib.actions.action_errors",
    "Targets": "runbook_lib.actions.targets",
    "TerminateIdleSessions": "runbook_lib.actions.postgres_sessions",
    "VerifyFailed": "runbook_lib.actions.action_errors",
    "VerifyResult": "runbook_lib.actions.framework",
    "action_kinds": "runbook_lib.actions.registry",
    "build_action": "runbook_lib.actions.registry",
    "by_signal": "runbook_lib.actions.execution",
    "classify": "runbook_lib.actions.execution",
    "decide": "runbook_lib.actions.approval",
    "execute": "runbook_lib.actions.execution",
    "from_record": "runbook_lib.actions.registry",
    "histories": "runbook_lib.actions.rollback",
    "outcomes_frame": "runbook_lib.actions.execution",
    "plans_frame": "runbook_lib.actions.execution",
    "read_audit": "runbook_lib.actions.audit",
    "rollback_run": "runbook_lib.actions.rollback",
    "unresolved": "runbook_lib.actions.rollback",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


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
    "AppAutoScalingTarget",
    "AsgCapacity",
    "KubernetesApiError",
    "KubernetesApply",
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
