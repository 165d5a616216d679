"""Typed errors of the automation (alert receiver, task queue, run store, notifications).

Each carries a one-line cause and a ``hint`` (what to do next), like every ``RunbookError``.
"""

from __future__ import annotations

from runbook_lib.errors import RunbookError


class AutomationError(RunbookError):
    hint = "see README 'Automated runs' for runbook serve's options and the Alertmanager snippet"


class AlertPayloadError(AutomationError):
    """The body is not an Alertmanager webhook notification (version 4)."""

    hint = "point an Alertmanager webhook_configs url at /alerts; other senders must post the same JSON"


class TemplateError(AutomationError):
    """A per-service template (parameters/automation/<service>.yaml) is invalid or maps to invalid parameters."""

    hint = "fix the template; parameters/automation/api.yaml is a commented example"


class NoTemplateError(TemplateError):
    """An alert names a service no template covers (or names none)."""

    hint = ("add parameters/automation/<service>.yaml, or route only mapped services to the runbook receiver "
            "(Alertmanager route matchers) and group by the service label")


class BrokerError(AutomationError):
    """The Redis that carries the task queue and the job registry did not answer."""

    hint = "start Redis or fix --broker (redis://host:port/db; the password through --broker-password-env)"


class StoreError(AutomationError):
    """A run folder could not be written to its store (a folder or an S3 bucket)."""

    hint = "check --store: a writable folder, or s3://bucket/prefix with credentials from the AWS chain"


class NotifyError(AutomationError):
    """The notification webhook refused the message or did not answer."""

    hint = "check the webhook URL in the environment variable --notify-url-env names"
