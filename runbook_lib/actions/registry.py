"""Every executor kind, registered statically: how an action is rebuilt from a plan or an audit record.

A rollback rebuilds each applied action from its audit line (``kind`` + ``inputs``), so it never depends
on the notebook that made it. Adding an executor kind means adding its class to ``EXECUTORS`` here.
"""

from __future__ import annotations

from typing import Any

from runbook_lib.actions.action_errors import ActionInputError
from runbook_lib.actions.app_config import AppConfig
from runbook_lib.actions.aws_app_autoscaling import AppAutoScalingTarget
from runbook_lib.actions.aws_autoscaling import AsgCapacity
from runbook_lib.actions.cache_warm import CacheWarm
from runbook_lib.actions.framework import Action
from runbook_lib.actions.kubernetes_apply import KubernetesApply
from runbook_lib.actions.postgres_index import CreateIndex
from runbook_lib.actions.postgres_sessions import SetParameter, TerminateIdleSessions
from runbook_lib.actions.redis_config import RedisConfigSet

EXECUTORS: dict[str, type[Action]] = {
    cls.kind: cls
    for cls in (CreateIndex, RedisConfigSet, AppConfig, CacheWarm, TerminateIdleSessions, SetParameter, AsgCapacity,
                AppAutoScalingTarget, KubernetesApply)
}


def action_kinds() -> list[str]:
    return sorted(EXECUTORS)


def build_action(kind: str, inputs: dict[str, Any]) -> Action:
    cls = EXECUTORS.get(kind)
    if cls is None:
        raise ActionInputError(f"unknown action kind {kind!r}; known: {', '.join(sorted(EXECUTORS))}")
    return cls(inputs)


def from_record(record: dict[str, Any]) -> Action:
    return build_action(record["kind"], record["inputs"])
