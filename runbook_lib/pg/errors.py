"""Typed errors of the live PostgreSQL diagnosis; each hint says how to fix the server or the call."""

from __future__ import annotations

from ..errors import RunbookError


class PgDiagnosisError(RunbookError):
    hint = "check the DSN, that the server is reachable, and that the role may read pg_stat_* views"


class ExtensionMissing(PgDiagnosisError):
    """pg_stat_statements or hypopg is not installed / not preloaded."""


class InsufficientPrivilege(PgDiagnosisError):
    hint = "GRANT pg_read_all_stats TO <role>; (or run the diagnosis as the owner of the statements)"
