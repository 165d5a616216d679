"""Errors raised by the action framework. Each is a RunbookError with a hint saying what to do next."""

from __future__ import annotations

from runbook_lib.errors import RunbookError


class ActionError(RunbookError):
    hint = "see audit.jsonl in the run folder for every step that ran"


class ActionInputError(ActionError):
    hint = "fix the action's inputs (table, columns, parameter names) and plan again"


class ApprovalRequired(ActionError):
    hint = ("set remediation.apply: true, and in live mode remediation.approved_by and "
            "remediation.change_ticket, in the parameters file")


class TargetError(ActionError):
    hint = "check the postgres / redis section of the parameters and that the server is reachable"


class ActionFailed(ActionError):
    hint = ("nothing after the failed action ran; undo what was applied with: runbook rollback RUN_DIR "
            "(add --apply to execute)")


class VerifyFailed(ActionFailed):
    """The change ran but the intended effect is not there."""


class AuditError(ActionError):
    hint = "the run folder must be writable; the audit log is append-only and never rewritten"


class RollbackError(ActionError):
    hint = "list the run's actions with: runbook rollback RUN_DIR (dry run) and pick an --action ID from it"


class PlannedOnly(ActionError):
    hint = ("apply the plan's kubectl command yourself (with the cluster's change process), then check the "
            "app picked it up; the runbook neither applies nor verifies ConfigMap patches")


class CacheWarmError(ActionFailed):
    """Warming stopped before it finished. ``summary`` says what was warmed, skipped and failed so far."""

    hint = ("what was warmed so far stays in the cache and expires with its TTL; fix the cause and warm "
            "again (keys already present are skipped)")

    def __init__(self, message: str, summary: dict | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.summary = summary or {}
