"""The automation's settings, one set for the receiver and the workers, carried in the environment.

``runbook serve`` turns its options into ``RUNBOOK_AUTOMATION_*`` variables and starts the Celery worker with
them, so a worker started by hand on another machine (``celery -A runbook_lib.automation.tasks worker``) reads
the same settings the same way. Secrets are never values here: the broker password and the notification
webhook URL (a Slack webhook URL is a credential) are named by the environment variable that holds them.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from runbook_lib.automation.automation_errors import AutomationError
from runbook_lib.redaction import register_secret
from runbook_lib.settings import credential_in, project_root

PREFIX = "RUNBOOK_AUTOMATION_"
QUEUE = "runbook"

# Defaults. A fixture run is ~1 min on 2 cores, a live one a few minutes; an applied change with its verify
# loop may take ten. The time limit stops a run that hangs (a source that never answers).
DEFAULT_TIME_LIMIT_S = 1200
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_DELAY_S = 30.0
# A worker renews its lease on a job every lease/4 s; a job whose lease ran out has lost its worker.
DEFAULT_LEASE_S = 60.0
DEFAULT_RESTORE_INTERVAL_S = 10.0


@dataclass(frozen=True)
class AutomationConfig:
    broker: str = "redis://127.0.0.1:6379/0"
    broker_password_env: str | None = None
    templates: str = "parameters/automation"
    store: str = "runs/automated"
    work_dir: str = "runs/automation-work"
    notify_url_env: str = "RUNBOOK_SECRET_NOTIFY_URL"
    # the environment variable holding the bearer token Alertmanager sends (http_config.authorization);
    # unset: the receiver takes any caller, and refuses to start with a template that may apply changes
    token_env: str | None = None
    link_base: str | None = None
    s3_endpoint_url: str | None = None
    service_label: str = "service"
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S
    lease_s: float = DEFAULT_LEASE_S
    # unacked messages older than this are handed to another worker (a worker that died mid-run); a run still
    # going on past it is protected by its lease (tasks.py). 0: the time limit plus five minutes.
    visibility_timeout_s: float = 0
    restore_interval_s: float = DEFAULT_RESTORE_INTERVAL_S
    # what a worker runs for one job: the product's own CLI (the unchanged `runbook run`)
    command: str = ""
    prefix: str = "runbook:automation"

    # --- environment ---------------------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AutomationConfig:
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _cast(f.type, raw)
            except ValueError:
                raise AutomationError(f"{PREFIX}{f.name.upper()}={raw!r} is not a {f.type}",
                                      hint="fix the variable or the runbook serve option that sets it") from None
        return cls(**values).checked()

    def to_env(self) -> dict[str, str]:
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) not in (None, "")}

    def checked(self) -> AutomationConfig:
        where = credential_in(self.broker)
        if where:
            raise AutomationError(f"the broker URL carries a credential ({where})",
                                  hint="give the password through --broker-password-env NAME (an environment "
                                       "variable), never in the URL")
        if urlsplit(self.broker).scheme not in ("redis", "rediss"):
            raise AutomationError(f"broker {self.broker!r} is not a redis:// URL",
                                  hint="the automation runs on Celery with Redis: redis://host:port/db")
        if self.time_limit_s <= 0 or self.max_attempts < 1 or self.lease_s <= 0:
            raise AutomationError("time limit, lease and attempts must be positive",
                                  hint="e.g. --time-limit 1200 --max-attempts 3")
        return self

    # --- derived -------------------------------------------------------------------------------------

    def broker_url(self) -> str:
        """The broker URL with its password from the environment (registered for redaction)."""
        if not self.broker_password_env:
            return self.broker
        password = os.environ.get(self.broker_password_env)
        if password is None:
            raise AutomationError(f"environment variable {self.broker_password_env} (the broker password) is not "
                                  "set", hint=f"export {self.broker_password_env}=... before runbook serve")
        register_secret(password)
        parts = urlsplit(self.broker)
        netloc = f"{quote(parts.username or '', safe='')}:{quote(password, safe='')}@{parts.hostname}"
        netloc += f":{parts.port}" if parts.port else ""
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def notify_url(self) -> str | None:
        """The notification webhook URL (a secret: registered for redaction), or None: no notifications."""
        url = os.environ.get(self.notify_url_env) if self.notify_url_env else None
        if url:
            register_secret(url)
            parts = urlsplit(url)
            register_secret(parts.path if len(parts.path) > 8 else None)  # the token part of a Slack URL
        return url or None

    def token(self) -> str | None:
        """The receiver's bearer token (a secret: registered for redaction), or None."""
        if not self.token_env:
            return None
        value = os.environ.get(self.token_env)
        if not value:
            raise AutomationError(f"environment variable {self.token_env} (the receiver's token) is not set",
                                  hint=f"export {self.token_env}=... (the token Alertmanager's http_config sends)")
        register_secret(value)
        return value

    def visibility_timeout(self) -> float:
        return self.visibility_timeout_s or self.time_limit_s + 300

    def command_argv(self) -> list[str]:
        """The command a worker runs as ``<argv> run -p PARAMS --out RUN_DIR``."""
        return shlex.split(self.command) if self.command else [sys.executable, "-m", "runbook_lib.cli"]

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else project_root() / p


def _cast(kind, raw: str):
    kind = kind if isinstance(kind, str) else kind.__name__
    if kind.startswith("float"):
        return float(raw)
    if kind.startswith("int"):
        return int(raw)
    return raw
