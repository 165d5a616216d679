"""CreateIndex: ``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` on PostgreSQL, undone by ``DROP INDEX CONCURRENTLY``.

Every identifier is composed with ``psycopg.sql.Identifier``; the statements ``plan()`` shows are the
very objects ``apply()`` executes. ``lock_timeout`` bounds how long the build may wait for the table
lock. The table and columns are checked to exist before anything runs.

Prior state: whether the index existed, its definition and validity. Rollback drops the index only
when it did not exist before, so apply + rollback leaves the catalog exactly as it was.
"""

from __future__ import annotations

import hashlib
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import sql
from pydantic import Field, field_validator

from .base import Action, ApplyResult, Inputs, Plan, RollbackResult, VerifyResult, register_action, slug
from .errors import ActionFailed, ActionInputError

# PostgreSQL truncates identifiers longer than NAMEDATALEN - 1 = 63 bytes.
MAX_IDENTIFIER_BYTES = 63
# How long the index build may wait for its SHARE UPDATE EXCLUSIVE lock before giving up: long
# enough for ordinary transactions to finish, short enough not to queue behind a long one
# (and queue everything else behind us) during an incident.
DEFAULT_LOCK_TIMEOUT_MS = 5000

_STATE_SQL = """
SELECT i.indisvalid, pg_get_indexdef(i.indexrelid),
       array(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_index i ON i.indexrelid = c.oid
WHERE n.nspname = %s AND c.relname = %s
"""
_TABLE_COLUMNS_SQL = """
SELECT a.attname::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'm')
"""


def _check_identifier(v: str) -> str:
    if not v or len(v.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"identifier {v!r} must be 1..{MAX_IDENTIFIER_BYTES} bytes")
    if "\x00" in v:
        raise ValueError("identifier contains a NUL byte")
    return v


class CreateIndexInputs(Inputs):
    table: str
    columns: list[str] = Field(min_length=1, max_length=32)  # INDEX_MAX_KEYS = 32
    schema_name: str = "public"
    name: str | None = None
    lock_timeout_ms: int = Field(DEFAULT_LOCK_TIMEOUT_MS, ge=1, le=600_000)

    @field_validator("table", "schema_name", "name")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return v if v is None else _check_identifier(v)

    @field_validator("columns")
    @classmethod
    def _cols(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a column is listed twice")
        return [_check_identifier(c) for c in v]


def default_index_name(table: str, columns: list[str]) -> str:
    """``ix_<table>_<col>_<col>``; a name too long for PostgreSQL is cut and given a short hash."""
    name = "ix_" + "_".join([table, *columns])
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return name.encode()[: MAX_IDENTIFIER_BYTES - 9].decode(errors="ignore") + "_" + digest


@register_action
class CreateIndex(Action):
    kind = "postgres.create_index"
    family = "postgres"
    Inputs = CreateIndexInputs
    effect_signal = "db_query_latency_ms"
    risk = "medium"  # CONCURRENTLY does not block writes, but the build reads the whole table

    inputs: CreateIndexInputs

    # --- identity ---------------------------------------------------------------------------

    @property
    def index_name(self) -> str:
        return self.inputs.name or default_index_name(self.inputs.table, self.inputs.columns)

    @property
    def qualified_table(self) -> str:
        return f"{self.inputs.schema_name}.{self.inputs.table}"

    @property
    def id(self) -> str:
        schema = [] if self.inputs.schema_name == "public" else [self.inputs.schema_name]
        return "pg-index-" + slug(*schema, self.inputs.table, *self.inputs.columns)

    @property
    def title(self) -> str:
        return f"Create index {self.index_name} on {self.qualified_table} ({', '.join(self.inputs.columns)})"

    @property
    def target(self) -> str:
        return f"postgres table {self.qualified_table}"

    # --- statements (the same objects are shown and executed) ---------------------------------

    def _lock_timeout(self) -> sql.Composed:
        return sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{self.inputs.lock_timeout_ms}ms"))

    def _create(self) -> sql.Composed:
        return sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(self.index_name),
            sql.Identifier(self.inputs.schema_name, self.inputs.table),
            sql.SQL(", ").join(sql.Identifier(c) for c in self.inputs.columns),
        )

    def _drop(self) -> sql.Composed:
        return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            sql.Identifier(self.inputs.schema_name, self.index_name))

    _RESET = sql.SQL("RESET lock_timeout")

    def _apply_statements(self) -> list[sql.Composable]:
        return [self._lock_timeout(), self._create(), self._RESET]

    def _rollback_statements(self) -> list[sql.Composable]:
        return [self._lock_timeout(), self._drop(), self._RESET]

    @staticmethod
    def _render(stmts: list[sql.Composable]) -> list[str]:
        return [s.as_string(None) for s in stmts]

    def plan(self) -> Plan:
        return Plan(
            action_id=self.id, kind=self.kind, title=self.title, target=self.target,
            commands=self._render(self._apply_statements()),
            captures=[(f"whether index {self.inputs.schema_name}.{self.index_name} exists, its definition "
                      "and validity (pg_index.indisvalid)")],
            rollback_commands=self._render(self._rollback_statements()),
            reversible=self.reversible, risk=self.risk,
        )

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        return [] if prior.get("exists") else self._render(self._rollback_statements())

    # --- server side ------------------------------------------------------------------------

    def capture(self, targets) -> dict[str, Any]:
        with targets.postgres().cursor() as cur:
            cur.execute(_STATE_SQL, (self.inputs.schema_name, self.index_name))
            row = cur.fetchone()
        index = f"{self.inputs.schema_name}.{self.index_name}"
        if row is None:
            return {"index": index, "exists": False, "valid": None, "definition": None, "columns": None}
        valid, definition, columns = row
        return {"index": index, "exists": True, "valid": bool(valid), "definition": definition,
                "columns": list(columns)}

    def is_applied(self, state: dict[str, Any]) -> bool:
        return bool(state.get("exists") and state.get("valid") and state.get("columns") == self.inputs.columns)

    def check_inputs(self, targets) -> None:
        """The table exists and has every column; raises ActionInputError naming what is missing."""
        with targets.postgres().cursor() as cur:
            cur.execute(_TABLE_COLUMNS_SQL, (self.inputs.schema_name, self.inputs.table))
            have = {r[0] for r in cur.fetchall()}
        if not have:
            raise ActionInputError(f"table {self.qualified_table} does not exist")
        missing = [c for c in self.inputs.columns if c not in have]
        if missing:
            raise ActionInputError(f"table {self.qualified_table} has no column {', '.join(missing)}")

    def _conflict(self, state: dict[str, Any]) -> str | None:
        if not state["exists"]:
            return None
        if state["columns"] != self.inputs.columns:
            return f"index {state['index']} exists with other columns: {state['definition']}"
        if not state["valid"]:
            return (f"index {state['index']} exists but is INVALID (an interrupted concurrent build); "
                    "roll back (drops it) and apply again")
        return None

    @staticmethod
    def _execute(conn: psycopg.Connection, stmts: list[sql.Composable]) -> None:
        try:
            for s in stmts[:-1]:
                conn.execute(s)
        finally:
            with suppress(psycopg.Error):
                conn.execute(stmts[-1])  # RESET lock_timeout, also after a failure

    def apply(self, targets) -> ApplyResult:
        self.check_inputs(targets)
        state = self.capture(targets)
        problem = self._conflict(state)
        if problem:
            raise ActionFailed(problem)
        if state["exists"]:
            return ApplyResult(False, "already applied")
        self._execute(targets.postgres(), self._apply_statements())
        return ApplyResult(True, f"created index {state['index']}", self._render(self._apply_statements()))

    def verify(self, targets) -> VerifyResult:
        state = self.capture(targets)
        if self.is_applied(state):
            return VerifyResult(True, f"index {state['index']} exists and is valid", state)
        return VerifyResult(False, self._conflict(state) or f"index {state['index']} does not exist", state)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        if prior.get("exists"):
            return RollbackResult(False, f"index {prior['index']} existed before; left in place")
        if not self.capture(targets)["exists"]:
            return RollbackResult(False, "nothing to undo: the index does not exist")
        self._execute(targets.postgres(), self._rollback_statements())
        return RollbackResult(True, f"dropped index {self.inputs.schema_name}.{self.index_name}",
                              self._render(self._rollback_statements()))
