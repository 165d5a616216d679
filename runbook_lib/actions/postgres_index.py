"""CreateIndex: ``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` on PostgreSQL, undone by ``DROP INDEX CONCURRENTLY``.

Every identifier is composed with ``psycopg.sql.Identifier``; the statements ``plan()`` shows are the
very objects ``apply()`` executes. The table and columns are checked to exist before anything runs.

Safety under production load, on the runbook's autocommit connection:

* ``lock_timeout`` bounds every lock wait (the table's SHARE UPDATE EXCLUSIVE lock, and the waits for
  older transactions inside a concurrent build); right after it a session guard (``guard_commands()``):
  ``statement_timeout`` bounds the build, and a session advisory lock (ADVISORY_LOCK_KEY) makes two
  runbook runs never build or drop at once in one database (the second waits at most lock_timeout for
  the first, then fails). plan() shows the DDL with its lock_timeout; the audit's applied / rolled_back
  lines record every statement actually sent, guard and leftover drops included;
* a build that was cancelled, timed out or deadlocked midway leaves an INVALID index behind: under the
  advisory lock, such a leftover of this very index is dropped (``DROP INDEX CONCURRENTLY``) and the
  build retried, at most ``retries`` times with exponential backoff; a final failure drops its own
  leftover again so nothing half-built stays;
* verify checks the index is valid, and that plain EXPLAIN of ``verify_statements`` (generic plans of the
  statements it is for) now reads it.

Prior state: whether the index existed, its definition and validity. Rollback drops the index only
when it did not exist before, so apply + rollback leaves the catalog exactly as it was. An INVALID
index found *before* the run is refused (its run's rollback or an operator drops it): only leftovers of
this apply's own attempts are dropped and retried, so a rollback never has to restore debris.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import sql
from pydantic import Field, field_validator

from runbook_lib.actions.action_errors import ActionFailed, ActionInputError
from runbook_lib.actions.framework import (
    Action,
    ApplyResult,
    Inputs,
    Plan,
    RollbackResult,
    VerifyResult,
)
from runbook_lib.errors import PgDiagnosisError
from runbook_lib.model import index_action_id
from runbook_lib.plan.index_ddl import (
    MAX_VERIFY_STATEMENTS,
    check_identifier,
    create_index_statement,
    default_index_name,
)
from runbook_lib.sources import pg_explain as explain

# How long the index build may wait for its SHARE UPDATE EXCLUSIVE lock before giving up: long
# enough for ordinary transactions to finish, short enough not to queue behind a long one
# (and queue everything else behind us) during an incident.
DEFAULT_LOCK_TIMEOUT_MS = 5000
# The build itself may take this long at most: strong_migrations' recommended statement_timeout for
# migrations is 1 hour; a bigger table needs a maintenance window, not an incident runbook.
DEFAULT_STATEMENT_TIMEOUT_MS = 3_600_000
# Retries after a cancelled / lock-timed-out / deadlocked build (each first drops the INVALID leftover),
# with exponential backoff from RETRY_BACKOFF_S, each wait capped at RETRY_BACKOFF_MAX_S.
DEFAULT_RETRIES = 2
RETRY_BACKOFF_S = 0.5
RETRY_BACKOFF_MAX_S = 8.0
# One key for every index build/drop by the runbook: advisory locks are per database, so two runs
# never build at the same time in one database. First 8 bytes of sha1("runbook.postgres.create_index").
ADVISORY_LOCK_KEY = int.from_bytes(hashlib.sha1(b"runbook.postgres.create_index").digest()[:8], "big", signed=True)
# Dropping the leftover of a failed build gets this statement_timeout (the build's own may be what ran out).
LEFTOVER_DROP_TIMEOUT_MS = 60_000

# Test hook / override: how apply waits between retries (bounded by RETRY_BACKOFF_MAX_S per wait).
backoff_wait: Callable[[float], None] = time.sleep

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


class CreateIndexInputs(Inputs):
    table: str
    columns: list[str] = Field(min_length=1, max_length=32)  # INDEX_MAX_KEYS = 32
    schema_name: str = "public"
    name: str | None = None
    lock_timeout_ms: int = Field(DEFAULT_LOCK_TIMEOUT_MS, ge=1, le=600_000)
    statement_timeout_ms: int = Field(DEFAULT_STATEMENT_TIMEOUT_MS, ge=1, le=86_400_000)
    retries: int = Field(DEFAULT_RETRIES, ge=0, le=5)
    # statements (as pg_stat_statements shows them) whose plans must use the index once it exists
    verify_statements: list[str] = Field(default_factory=list, max_length=MAX_VERIFY_STATEMENTS)

    @field_validator("verify_statements")
    @classmethod
    def _selects(cls, v: list[str]) -> list[str]:
        for q in v:
            try:
                explain.check_select(q)
            except PgDiagnosisError as e:
                raise ValueError(f"verify statement {q[:60]!r}: {e}") from None
        return v

    @field_validator("table", "schema_name", "name")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return v if v is None else check_identifier(v)

    @field_validator("columns")
    @classmethod
    def _cols(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a column is listed twice")
        return [check_identifier(c) for c in v]


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
        return index_action_id(f"{self.inputs.schema_name}.{self.inputs.table}", self.inputs.columns)

    @property
    def title(self) -> str:
        return f"Create index {self.index_name} on {self.qualified_table} ({', '.join(self.inputs.columns)})"

    @property
    def target(self) -> str:
        return f"postgres table {self.qualified_table}"

    # --- statements (the same objects are shown and executed) ---------------------------------

    def _lock_timeout(self) -> sql.Composed:
        return sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{self.inputs.lock_timeout_ms}ms"))

    def _guard(self) -> sql.Composed:
        """Sent right after ``SET lock_timeout``: bound the build, and one build per database at a time."""
        return sql.SQL("SET statement_timeout = {}; SELECT pg_advisory_lock({})").format(
            sql.Literal(f"{self.inputs.statement_timeout_ms}ms"), sql.SQL(str(ADVISORY_LOCK_KEY)))

    def _create(self) -> sql.Composed:
        return create_index_statement(self.inputs.schema_name, self.inputs.table, self.inputs.columns,
                                      self.index_name)

    def _drop(self) -> sql.Composed:
        return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            sql.Identifier(self.inputs.schema_name, self.index_name))

    _RESET = sql.SQL("RESET lock_timeout")
    _UNGUARD = sql.SQL("RESET statement_timeout; SELECT pg_advisory_unlock({})").format(
        sql.SQL(str(ADVISORY_LOCK_KEY)))  # a constant integer

    def _apply_statements(self) -> list[sql.Composable]:
        return [self._lock_timeout(), self._create(), self._RESET]

    def _rollback_statements(self) -> list[sql.Composable]:
        return [self._lock_timeout(), self._drop(), self._RESET]

    def guard_commands(self) -> list[str]:
        """The session guard sent around the plan's statements (after its first, and with its last), as the
        audit's ``applied`` / ``rolled_back`` lines record them. plan() keeps to the DDL and its lock_timeout
        (the layout the golden notebooks show)."""
        return self._render([self._guard(), self._UNGUARD])

    @staticmethod
    def _render(stmts: list[sql.Composable]) -> list[str]:
        return [s.as_string(None) for s in stmts]

    def plan(self) -> Plan:
        return Plan(
            action_id=self.id, kind=self.kind, title=self.title, target=self.target,
            commands=self._render(self._apply_statements()),
            captures=[(f"whether index {self.inputs.schema_name}.{self.index_name} exists, its definition "
                      "and validity (pg_index.indisvalid)")]
            + ([f"EXPLAIN of {len(self.inputs.verify_statements)} statement(s) must read the index"]
               if self.inputs.verify_statements else []),
            rollback_commands=self._render(self._rollback_statements()),
            reversible=self.reversible, risk=self.risk,
        )

    @staticmethod
    def _existed(prior: dict[str, Any]) -> bool:
        return bool(prior.get("exists"))

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        return [] if self._existed(prior) else self._render(self._rollback_statements())

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
            return (f"index {state['index']} exists but is INVALID, left by an interrupted build before this run; "
                    "roll back the run that made it (runbook rollback RUN_DIR --apply) or DROP INDEX CONCURRENTLY "
                    "it, then apply again")
        return None

    @staticmethod
    def _run(conn: psycopg.Connection, stmt: sql.Composable, sent: list[str]) -> None:
        sent.append(stmt.as_string(None))
        conn.execute(stmt)

    def _guarded(self, conn: psycopg.Connection, body: Callable[[list[str]], None]) -> list[str]:
        """``SET lock_timeout``, the session guard, ``body``, then both reset (also after a failure).
        Returns every statement sent, in order."""
        sent: list[str] = []
        try:
            self._run(conn, self._lock_timeout(), sent)
            try:
                self._run(conn, self._guard(), sent)
            except psycopg.errors.LockNotAvailable:
                raise ActionFailed(
                    f"another runbook run holds the index-build advisory lock ({ADVISORY_LOCK_KEY}) in this "
                    f"database; waited {self.inputs.lock_timeout_ms} ms",
                    hint="let the other run finish (pg_locks shows it: locktype = 'advisory'), then apply again"
                ) from None
            body(sent)
        finally:
            for stmt in (self._RESET, self._UNGUARD):
                with suppress(psycopg.Error):
                    self._run(conn, stmt, sent)  # also after a failure
        return sent

    @staticmethod
    def _retryable(err: psycopg.Error) -> bool:
        if isinstance(err, psycopg.errors.QueryCanceled):
            return "statement timeout" not in str(err)  # the same build would run out of time again
        return isinstance(err, (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected))

    def _build(self, targets, sent: list[str]) -> int:
        """CREATE, dropping an INVALID leftover of this index first, retried with backoff. Returns attempts."""
        conn = targets.postgres()
        attempts = self.inputs.retries + 1
        for attempt in range(1, attempts + 1):
            state = self.capture(targets)
            if state["exists"] and state["valid"]:
                return attempt
            try:
                if state["exists"]:  # INVALID: what an interrupted concurrent build leaves behind
                    self._run(conn, self._drop(), sent)
                self._run(conn, self._create(), sent)
            except psycopg.Error as e:
                if attempt == attempts or not self._retryable(e):
                    left = self._drop_leftover(targets, sent)
                    raise ActionFailed(f"CREATE INDEX failed after {attempt} attempt(s): "
                                       f"{str(e).strip().splitlines()[0]}{left}") from None
                backoff_wait(min(RETRY_BACKOFF_S * 2 ** (attempt - 1), RETRY_BACKOFF_MAX_S))
                continue
            if self.capture(targets)["valid"]:
                return attempt
        left = self._drop_leftover(targets, sent)
        raise ActionFailed(f"index {self.qualified_index} still INVALID after {attempts} attempt(s){left}")

    def _drop_leftover(self, targets, sent: list[str]) -> str:
        """After a final failure: drop what this build left (INVALID), so a failed apply leaves no debris.
        Returns a note for the error message when something could not be dropped."""
        with suppress(psycopg.Error):
            if self.capture(targets)["exists"]:
                conn = targets.postgres()
                self._run(conn, sql.SQL("SET statement_timeout = {}").format(
                    sql.Literal(f"{LEFTOVER_DROP_TIMEOUT_MS}ms")), sent)
                self._run(conn, self._drop(), sent)
        with suppress(psycopg.Error):
            if self.capture(targets)["exists"]:
                return f"; the INVALID index {self.qualified_index} is still there (runbook rollback drops it)"
        return ""

    @property
    def qualified_index(self) -> str:
        return f"{self.inputs.schema_name}.{self.index_name}"

    def apply(self, targets) -> ApplyResult:
        self.check_inputs(targets)
        state = self.capture(targets)
        problem = self._conflict(state)
        if problem:
            raise ActionFailed(problem)
        if state["exists"] and state["valid"]:
            return ApplyResult(False, "already applied")
        attempts: list[int] = []
        sent = self._guarded(targets.postgres(), lambda s: attempts.append(self._build(targets, s)))
        retried = f" (attempt {attempts[0]})" if attempts and attempts[0] > 1 else ""
        leftover = "; dropped an INVALID leftover first" if any(c.startswith("DROP") for c in sent) else ""
        return ApplyResult(True, f"created index {state['index']}{retried}{leftover}", sent)

    def explain_uses_index(self, targets) -> list[dict[str, Any]]:
        """For each verify statement: whether its generic plan reads this index."""
        out = []
        for q in self.inputs.verify_statements:
            try:
                used = self.index_name in explain.index_names(explain.plan(targets.postgres(), q))
                out.append({"query": q, "uses_index": used})
            except PgDiagnosisError as e:
                out.append({"query": q, "uses_index": False, "error": str(e)})
        return out

    def verify(self, targets) -> VerifyResult:
        state = self.capture(targets)
        if not self.is_applied(state):
            if state["exists"] and not state["valid"]:
                return VerifyResult(False, f"index {state['index']} exists but is INVALID (an interrupted "
                                    "concurrent build); roll back (drops it) and apply again", state)
            return VerifyResult(False, self._conflict(state) or f"index {state['index']} does not exist", state)
        plans = self.explain_uses_index(targets)
        observed = {**state, "explain": plans}
        unused = [p["query"][:80] for p in plans if not p["uses_index"]]
        if unused:
            return VerifyResult(False, f"index {state['index']} is valid but EXPLAIN does not use it for: "
                                + "; ".join(unused), observed)
        uses = f"; EXPLAIN of {len(plans)} statement(s) uses it" if plans else ""
        return VerifyResult(True, f"index {state['index']} exists and is valid{uses}", observed)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        if self._existed(prior):
            return RollbackResult(False, f"index {prior['index']} existed before; left in place")
        if not self.capture(targets)["exists"]:
            return RollbackResult(False, "nothing to undo: the index does not exist")
        conn = targets.postgres()
        sent = self._guarded(conn, lambda s: self._run(conn, self._drop(), s))
        return RollbackResult(True, f"dropped index {self.qualified_index}", sent)
