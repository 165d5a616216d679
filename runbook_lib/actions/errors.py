"""Errors raised by the action framework. Each is a RunbookError with a hint saying what to do next."""

from __future__ import annotations

from ..errors import RunbookError


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
