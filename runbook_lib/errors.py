"""Typed errors: the one tree of the product. Every error the library raises on purpose is a RunbookError.

Each carries a one-line cause (``str(err)``) and a ``hint``: what the user should do next.
The CLI prints ``error: <cause>`` and ``hint: <hint>`` and exits non-zero; notebooks show the same.

The ground and read-side errors live here, by stage; the action framework's errors (the writers) are
in ``runbook_lib.actions.action_errors``, the lab's in ``runbook_lib.lab.lab_errors``. All derive from RunbookError.
"""

from __future__ import annotations


class RunbookError(Exception):
    """Base class. ``hint`` says what to do next."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


# --- ground: parameters, secrets, the run folder, the notebooks ---------------------------------------


class SettingsError(RunbookError):
    hint = "fix the parameters file; see README 'Parameters' for every field"


class SecretError(RunbookError):
    hint = "export the environment variable or create the file the parameters name"


class StepInputMissing(RunbookError):
    hint = "run the earlier notebooks first (runbook run does them in order)"


class NotebookFailed(RunbookError):
    hint = "open the executed notebook in the run folder to see the traceback"


class TargetUnreachable(RunbookError):
    """A server the runbook reads or changes (PostgreSQL, Redis) did not answer or refused the login.

    ``endpoint`` names it without credentials (``postgres://host:port/db``, ``redis://host:port/db``)."""

    hint = ("check the address and credentials in the parameters (postgres.dsn / postgres.password, "
            "redis.url / redis.password; --password-env NAME at the CLI) and that the server is running")

    def __init__(self, endpoint: str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.endpoint = endpoint


# --- sources: time series and evidence readers ----------------------------------------------------


class SourceError(RunbookError):
    hint = "check the source section of the parameters and that the backend is reachable"


class FixtureError(SourceError):
    hint = "see fixtures/README.md for the bundle format"


class UnknownSignalError(SourceError):
    hint = "use one of the signal names listed in README 'Signals' (runbook signals prints them)"


class AppConfigError(RunbookError):
    hint = ("knobs: cache_ttl_s, cache_key_scheme, db_pool_max, db_pool_timeout_s, orders_query, replicas, "
            "rate_limit_rps, rate_limit_burst, breaker_error_ratio, breaker_window_s, breaker_min_requests, "
            "breaker_open_s")


class PgDiagnosisError(RunbookError):
    hint = "check the DSN, that the server is reachable, and that the role may read pg_stat_* views"


class ExtensionMissing(PgDiagnosisError):
    """pg_stat_statements or hypopg is not installed / not preloaded."""


class InsufficientPrivilege(PgDiagnosisError):
    hint = "GRANT pg_read_all_stats TO <role>; (or run the diagnosis as the owner of the statements)"


class NotExplainable(PgDiagnosisError):
    hint = "only single SELECT statements are explained; others are left out of the index analysis"


class CacheError(RunbookError):
    hint = "check the Redis URL (redis://host:port/db) and that the server answers PING"


class AppMetricsError(CacheError):
    hint = "check the app metrics URL (its /metrics endpoint) or the Prometheus URL, or leave it out"


# --- diagnose -------------------------------------------------------------------------------------


class NoIncidentFound(RunbookError):
    hint = "widen the window (parameters: window.start/end or window.last) so it includes the incident and a baseline"


class NoLevelChange(NoIncidentFound):
    """The primary signal kept one level over the whole window (``level``: its median). Within the SLO this is
    an answer (a healthy window), not a failure: 01 says so and the suite stops there."""

    def __init__(self, message: str, level: float):
        super().__init__(message)
        self.level = level


# --- report ---------------------------------------------------------------------------------------


class RecordError(RunbookError):
    hint = "check the parameters' Prometheus, PostgreSQL and Redis sections and the --from/--to times"


class ExportError(RunbookError):
    hint = "export a folder made by 'runbook run' (it needs at least symptoms.json)"
