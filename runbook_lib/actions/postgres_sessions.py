"""PostgreSQL session actions: end sessions stuck ``idle in transaction``, and set a session timeout.

A connection pool held by sessions that sit ``idle in transaction`` (a leaked connection that never
commits, a batch job that keeps its transaction open between steps) starves the app of connections and
holds locks and old snapshots (vacuum cannot clean behind them). By hand an SRE first ends those sessions,
then sets a timeout so PostgreSQL ends the next ones itself. These two executors do exactly that:

* ``TerminateIdleSessions`` (kind ``postgres.terminate_idle_sessions``): ``pg_terminate_backend(pid)``
  for the sessions of the connected database that are ``idle in transaction`` (or ``... (aborted)``) for
  longer than ``min_idle_s``, optionally of one ``application_name`` and/or one role, never the runbook's
  own backend, at most ``max_sessions`` of them (oldest first). ``capture()`` records who they are (the
  audit's ``applying`` line keeps it: that is the record of what was terminated); ``apply()`` terminates
  exactly those captured sessions that still match the filter, checked again in the very statement that
  terminates them (same pid *and* backend_start, so a reused pid is never hit). It cannot be undone: the
  clients reconnect and PostgreSQL rolls their open transactions back. ``rollback()`` says so and changes
  nothing, like ``cache.warm``. (Until ``rollback.undo`` treats irreversible actions as restored, its
  "state equals the prior" check fails for this action, whose captured sessions are gone for good.)
* ``SetParameter`` (kind ``postgres.set_parameter``): one of the session-timeout parameters
  (``PARAMETERS``) at a scope: ``ALTER SYSTEM SET`` + ``pg_reload_conf()``, ``ALTER ROLE "r" SET`` or
  ``ALTER DATABASE "d" SET``. The prior value *at that scope* is captured exactly (the
  ``postgresql.auto.conf`` entry, or the ``pg_db_role_setting`` entry, or "not set") and a rollback puts
  it back (``SET name = prior``) or removes ours (``RESET name``). Values are compared in milliseconds,
  so ``60s`` and ``1min`` are the same change.

Every identifier is composed with ``psycopg.sql.Identifier`` and every value with ``sql.Literal``; the
statements ``plan()`` shows are the objects ``apply()`` executes (the terminate statement names the
captured sessions, shown as a placeholder in the plan and in full in the audit's ``applied`` line).
The connection is the runbook's autocommit one (``Targets.postgres()``; ALTER SYSTEM cannot run in a
transaction block), its password from the parameters' SecretRef, never from a DSN.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

import psycopg
from psycopg import sql
from pydantic import Field, field_validator, model_validator

from runbook_lib.actions.action_errors import ActionFailed, ActionInputError, TargetError
from runbook_lib.actions.framework import (
    Action,
    ApplyResult,
    Inputs,
    Plan,
    RollbackResult,
    VerifyResult,
)
from runbook_lib.actions.targets import Targets
from runbook_lib.model import pg_setting_action_id, pg_terminate_action_id
from runbook_lib.redaction import redact_text

# --- limits ----------------------------------------------------------------------------------------

# The ``state`` values of pg_stat_activity for a session inside a transaction waiting for its client
# (postgresql.org/docs/15/monitoring-stats.html#MONITORING-PG-STAT-ACTIVITY-VIEW).
IDLE_IN_TRANSACTION_STATES = ("idle in transaction", "idle in transaction (aborted)")
# A session idle in a transaction for this long is not between two statements of a live request
# (those take milliseconds); a minute is the idle_in_transaction_session_timeout commonly recommended
# for OLTP apps, so it is the default age threshold.
DEFAULT_MIN_IDLE_S = 60.0
# Below a second a healthy request may still be between its statements: never go lower.
MIN_IDLE_FLOOR_S = 1.0
# Upper bound of the threshold (a week): anything longer is a typo in seconds-vs-minutes.
MAX_MIN_IDLE_S = 7 * 86_400.0
# Safety cap on how many sessions one apply terminates (oldest idle first): a mistaken filter must not
# disconnect the whole fleet. 50 covers the pools of a few app replicas; 500 is far above any sane pool
# total (max_connections defaults to 100), so anything above it is refused.
DEFAULT_MAX_SESSIONS = 50
MAX_SESSIONS_LIMIT = 500
# How much of each captured session's query the audit keeps (redacted): enough to recognise it.
QUERY_CHARS = 200
# verify(): a terminated backend leaves pg_stat_activity, and a reloaded configuration reaches new
# sessions, within milliseconds; wait at most this long, polling from VERIFY_POLL_S doubling up to VERIFY_POLL_MAX_S.
VERIFY_WAIT_S = 5.0
VERIFY_POLL_S = 0.02
VERIFY_POLL_MAX_S = 0.25
# NAMEDATALEN - 1: the longest role / database / application name PostgreSQL keeps.
MAX_NAME_BYTES = 63

# The parameters SetParameter may change: the session timeouts that end (or bound) stuck sessions and
# waits. All are integers in milliseconds (pg_settings.unit = 'ms'), 0 = disabled, at most INT_MAX.
PARAMETERS = ("idle_in_transaction_session_timeout", "idle_session_timeout", "statement_timeout", "lock_timeout")
MAX_DURATION_MS = 2_147_483_647
SCOPES = ("system", "role", "database")
# A prior value that was not set at the scope (nothing in postgresql.auto.conf / pg_db_role_setting):
# rolled back with RESET. Never a valid duration, so it cannot be confused with a value.
NOT_SET = "not set"

# PostgreSQL time units (guc.c's time unit table) in milliseconds; no unit means ms for these parameters.
_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(ms|s|min|h|d)?\s*$")
_ANY_DURATION_RE = re.compile(r"^\s*'?\s*(-?\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*'?\s*$")


def _check_name(v: str | None, what: str) -> str | None:
    if v is None:
        return None
    if not v.strip() or "\x00" in v:
        raise ValueError(f"{what} must be a non-empty name")
    if len(v.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"{what} is longer than PostgreSQL keeps ({MAX_NAME_BYTES} bytes)")
    return v


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return redact_text(text.splitlines()[0] if text else type(err).__name__)


# --- terminate idle-in-transaction sessions -----------------------------------------------------------


class TerminateIdleInputs(Inputs):
    application_name: str | None = None
    usename: str | None = None  # the role (pg_stat_activity.usename)
    min_idle_s: float = Field(DEFAULT_MIN_IDLE_S, ge=MIN_IDLE_FLOOR_S, le=MAX_MIN_IDLE_S)
    max_sessions: int = Field(DEFAULT_MAX_SESSIONS, ge=1, le=MAX_SESSIONS_LIMIT)

    @field_validator("application_name")
    @classmethod
    def _app(cls, v: str | None) -> str | None:
        return _check_name(v, "application_name")

    @field_validator("usename")
    @classmethod
    def _role(cls, v: str | None) -> str | None:
        return _check_name(v, "usename")


NOT_REVERSIBLE = "not reversible: the clients reconnect; their open transactions are rolled back by PostgreSQL"
CAPTURE_NOTE = ("the matching sessions (pid, usename, application_name, client_addr, backend_start, xact_start, "
                f"state_change, wait_event_type, wait_event, first {QUERY_CHARS} characters of the query, "
                "redacted): the record of what is terminated")
_SESSION_COLUMNS = ("pid", "usename", "application_name", "client_addr", "backend_start", "xact_start",
                    "state_change", "state", "wait_event_type", "wait_event", "query")


class TerminateIdleSessions(Action):
    kind = "postgres.terminate_idle_sessions"
    family = "postgres"
    Inputs = TerminateIdleInputs
    effect_signal = "db_connections_active"  # the pool the idle-in-transaction sessions hold
    risk = "high"  # ends client connections; their open transactions are rolled back
    reversible = False  # a terminated session cannot come back

    inputs: TerminateIdleInputs

    def __init__(self, inputs=None, **kwargs):
        super().__init__(inputs, **kwargs)
        self._captured: dict[str, Any] | None = None  # the last capture, consumed by the next apply
        self.terminated: list[dict[str, Any]] = []  # what the last apply terminated (pid, backend_start, ...)

    # --- identity -------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return pg_terminate_action_id(self.inputs.application_name, self.inputs.usename)

    def _who(self) -> str:
        parts = []
        if self.inputs.application_name is not None:
            parts.append(f"application {self.inputs.application_name!r}")
        if self.inputs.usename is not None:
            parts.append(f"role {self.inputs.usename!r}")
        return " and ".join(parts) or "any application and role"

    @property
    def title(self) -> str:
        return (f"Terminate sessions idle in transaction for over {self.inputs.min_idle_s:g} s "
                f"({self._who()}, at most {self.inputs.max_sessions})")

    @property
    def target(self) -> str:
        return "postgres sessions of the connected database (idle in transaction)"

    # --- statements -----------------------------------------------------------------------------

    def _filter(self) -> sql.Composed:
        """The sessions this action is about (``a`` is pg_stat_activity); the capture and the terminate
        statement both use it, so the terminate re-checks every condition at the moment it runs."""
        conds = [
            sql.SQL("a.datname = current_database()"),
            sql.SQL("a.pid <> pg_backend_pid()"),
            sql.SQL("a.backend_type = 'client backend'"),
            sql.SQL("a.state IN ({})").format(sql.SQL(", ").join(map(sql.Literal, IDLE_IN_TRANSACTION_STATES))),
            sql.SQL("a.state_change < now() - make_interval(secs => {})").format(
                sql.Literal(float(self.inputs.min_idle_s))),
        ]
        if self.inputs.application_name is not None:
            conds.append(sql.SQL("a.application_name = {}").format(sql.Literal(self.inputs.application_name)))
        if self.inputs.usename is not None:
            conds.append(sql.SQL("a.usename = {}").format(sql.Literal(self.inputs.usename)))
        return sql.SQL("\n  AND ").join(conds)

    def _capture_statement(self) -> sql.Composed:
        return sql.SQL(
            "SELECT a.pid, a.usename::text, a.application_name, a.client_addr::text, a.backend_start, "
            "a.xact_start, a.state_change, a.state, a.wait_event_type, a.wait_event, left(a.query, {chars}), "
            "count(*) OVER ()\n"
            "FROM pg_stat_activity a\n"
            "WHERE {filter}\n"
            "ORDER BY a.state_change, a.pid\n"
            "LIMIT {cap}"
        ).format(chars=sql.Literal(QUERY_CHARS), filter=self._filter(), cap=sql.Literal(self.inputs.max_sessions))

    def _hidden_statement(self) -> sql.Composed:
        """Sessions this role may not inspect (state hidden without pg_read_all_stats), that could match."""
        conds = [sql.SQL("a.datname = current_database()"), sql.SQL("a.pid <> pg_backend_pid()"),
                 sql.SQL("a.query = '<insufficient privilege>'")]
        if self.inputs.application_name is not None:
            conds.append(sql.SQL("a.application_name = {}").format(sql.Literal(self.inputs.application_name)))
        if self.inputs.usename is not None:
            conds.append(sql.SQL("a.usename = {}").format(sql.Literal(self.inputs.usename)))
        return sql.SQL("SELECT count(*) FROM pg_stat_activity a WHERE {}").format(sql.SQL(" AND ").join(conds))

    def _terminate_statement(self, sessions: list[dict[str, Any]] | None) -> sql.Composed:
        """Terminate the given sessions if they still match the filter (re-checked in this statement).
        ``None``: the plan's rendering, with a placeholder for the captured sessions."""
        if sessions is None:
            which = sql.SQL("(<pid>, '<backend_start>'::timestamptz), ... one per captured session")
        else:
            which = sql.SQL(", ").join(
                sql.SQL("({}, {}::timestamptz)").format(sql.Literal(s["pid"]), sql.Literal(s["backend_start"]))
                for s in sessions)
        return sql.SQL(
            "SELECT a.pid, pg_terminate_backend(a.pid)\n"
            "FROM pg_stat_activity a\n"
            "WHERE (a.pid, a.backend_start) IN (VALUES {which})\n"
            "  AND {filter}"
        ).format(which=which, filter=self._filter())

    @staticmethod
    def _render(stmt: sql.Composable) -> str:
        return stmt.as_string(None)

    def plan(self) -> Plan:
        return Plan(
            action_id=self.id, kind=self.kind, title=self.title, target=self.target,
            commands=[self._render(self._terminate_statement(None))],
            captures=[CAPTURE_NOTE, self._render(self._capture_statement())],
            rollback_commands=[NOT_REVERSIBLE],
            reversible=self.reversible, risk=self.risk,
        )

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        return []  # nothing to send: a terminated session cannot be brought back

    # --- server side ----------------------------------------------------------------------------

    def capture(self, targets) -> dict[str, Any]:
        conn = targets.postgres()
        try:
            rows = conn.execute(self._capture_statement()).fetchall()
            hidden = conn.execute(self._hidden_statement()).fetchone()[0]
        except psycopg.errors.InsufficientPrivilege as e:
            raise ActionFailed(f"{self.kind}: cannot read pg_stat_activity: {_first_line(e)}",
                               hint="the runbook's role needs pg_read_all_stats (GRANT pg_read_all_stats TO "
                                    "<role>) to see other roles' sessions") from None
        sessions = []
        for row in rows:
            s = dict(zip(_SESSION_COLUMNS, row[:-1], strict=True))
            for k in ("backend_start", "xact_start", "state_change"):
                s[k] = s[k].isoformat() if s[k] is not None else None
            s["query"] = redact_text(s["query"] or "")
            sessions.append(s)
        state = {"sessions": sessions, "matching": rows[0][-1] if rows else 0, "hidden": int(hidden),
                 "min_idle_s": self.inputs.min_idle_s, "max_sessions": self.inputs.max_sessions}
        self._captured = state
        return state

    def is_applied(self, state: dict[str, Any]) -> bool:
        return not state.get("sessions") and not state.get("matching")

    def apply(self, targets) -> ApplyResult:
        state, self._captured = self._captured, None
        if state is None:  # not called right after the framework's capture: capture now
            state = self.capture(targets)
            self._captured = None
        self.terminated = []
        sessions = state["sessions"]
        if not sessions:
            if state.get("hidden"):
                raise ActionFailed(
                    f"{self.kind}: {state['hidden']} session(s) of {self._who()} are not visible to the "
                    "runbook's role (pg_stat_activity hides their state), so none could be checked",
                    hint="grant the runbook's role pg_read_all_stats (to see them) and pg_signal_backend "
                         "(to terminate them): GRANT pg_read_all_stats, pg_signal_backend TO <role>")
            return ApplyResult(False, f"already applied: no session of {self._who()} idle in transaction for "
                                      f"over {self.inputs.min_idle_s:g} s")
        stmt = self._terminate_statement(sessions)
        try:
            rows = targets.postgres().execute(stmt).fetchall()
        except psycopg.errors.InsufficientPrivilege as e:
            raise ActionFailed(f"{self.kind}: {_first_line(e)}",
                               hint="the runbook's role needs pg_signal_backend to terminate other roles' "
                                    "sessions (GRANT pg_signal_backend TO <role>); superuser sessions only a "
                                    "superuser may terminate") from None
        done = {pid for pid, ok in rows if ok}
        self.terminated = [s for s in sessions if s["pid"] in done]
        gone = len(sessions) - len(self.terminated)
        notes = []
        if gone:
            notes.append(f"{gone} captured session(s) had already ended or left the idle-in-transaction state")
        left = state["matching"] - len(sessions)
        if left > 0:
            notes.append(f"{left} more matched beyond the max_sessions cap ({self.inputs.max_sessions}) and "
                         "were left; apply again to continue")
        note = ("; " + "; ".join(notes)) if notes else ""
        if not self.terminated:
            return ApplyResult(False, f"already applied: none of the {len(sessions)} captured session(s) of "
                                      f"{self._who()} still matched{note}", [self._render(stmt)])
        pids = ", ".join(str(s["pid"]) for s in self.terminated)
        return ApplyResult(True, f"terminated {len(self.terminated)} session(s) of {self._who()} idle in "
                                 f"transaction for over {self.inputs.min_idle_s:g} s (pids {pids}){note}",
                           [self._render(stmt)])

    def _still_present(self, conn: psycopg.Connection) -> list[int]:
        if not self.terminated:
            return []
        pairs = sql.SQL(", ").join(
            sql.SQL("({}, {}::timestamptz)").format(sql.Literal(s["pid"]), sql.Literal(s["backend_start"]))
            for s in self.terminated)
        stmt = sql.SQL("SELECT pid FROM pg_stat_activity WHERE (pid, backend_start) IN (VALUES {})").format(pairs)
        return sorted(r[0] for r in conn.execute(stmt).fetchall())

    def verify(self, targets) -> VerifyResult:
        conn = targets.postgres()
        if not self.terminated:
            state = self.capture(targets)
            self._captured = None
            ok = self.is_applied(state)
            observed = {"terminated": [], "matching": state["matching"]}
            if ok:
                return VerifyResult(True, f"no session of {self._who()} is idle in transaction for over "
                                          f"{self.inputs.min_idle_s:g} s", observed)
            return VerifyResult(False, f"{state['matching']} session(s) of {self._who()} are idle in transaction "
                                       f"for over {self.inputs.min_idle_s:g} s", observed)
        deadline = time.monotonic() + VERIFY_WAIT_S
        delay = VERIFY_POLL_S
        while True:
            present = self._still_present(conn)
            if not present or time.monotonic() >= deadline:
                break
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, VERIFY_POLL_MAX_S)
        observed = {"terminated": [s["pid"] for s in self.terminated], "still_present": present}
        if present:
            return VerifyResult(False, f"{len(present)} terminated session(s) still in pg_stat_activity after "
                                       f"{VERIFY_WAIT_S:g} s: pids {', '.join(map(str, present))}", observed)
        return VerifyResult(True, f"all {len(self.terminated)} terminated session(s) are gone from "
                                  "pg_stat_activity", observed)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        n = len((prior or {}).get("sessions") or [])
        return RollbackResult(False, "nothing to undo: terminating sessions is not reversible; the clients "
                                     "reconnect and PostgreSQL rolled their open transactions back"
                                     + (f" (the {n} captured session(s) are in the audit log)" if n else ""))


# --- set a session-timeout parameter ---------------------------------------------------------------


def duration_ms(value: str) -> int:
    """Milliseconds of a PostgreSQL duration as this action accepts it: an integer with an optional unit
    (ms, s, min, h, d; none = ms), e.g. ``60s``, ``5min``, ``30000``. ValueError otherwise."""
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError(f"not a PostgreSQL duration: {value!r} (an integer with an optional unit ms, s, min, "
                         "h or d; no unit = ms; e.g. 60s, 5min, 30000)")
    ms = int(m.group(1)) * _UNITS_MS[m.group(2) or "ms"]
    if ms > MAX_DURATION_MS:
        raise ValueError(f"duration {value!r} is over PostgreSQL's maximum ({MAX_DURATION_MS} ms)")
    return int(ms)


def stored_ms(value: str | None) -> float | None:
    """Milliseconds of a value as PostgreSQL stores it (any unit, decimals); None if not set / unreadable."""
    if value is None or value == NOT_SET:
        return None
    m = _ANY_DURATION_RE.match(str(value))
    if not m:
        return None
    return float(m.group(1)) * _UNITS_MS[m.group(2) or "ms"]


def normalize_duration(value: str) -> str:
    """The canonical spelling, as SHOW prints it: the largest unit that divides evenly (60000 -> 1min)."""
    ms = duration_ms(value)
    if ms == 0:
        return "0"
    for unit in ("d", "h", "min", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


class SetParameterInputs(Inputs):
    name: str
    value: str
    scope: Literal["system", "role", "database"] = "system"
    scope_name: str | None = None

    @field_validator("name")
    @classmethod
    def _allowed(cls, v: str) -> str:
        if v not in PARAMETERS:
            raise ValueError(f"parameter {v!r} is not one this action changes; allowed: {', '.join(PARAMETERS)}")
        return v

    @field_validator("value", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise ValueError(f"not a PostgreSQL duration: {v!r}")  # noqa: TRY004 - pydantic reports ValueError
        return normalize_duration(str(v))

    @field_validator("scope_name")
    @classmethod
    def _scope_name(cls, v: str | None) -> str | None:
        return _check_name(v, "scope_name")

    @model_validator(mode="after")
    def _scope(self) -> SetParameterInputs:
        if self.scope == "system" and self.scope_name is not None:
            raise ValueError("scope_name is not allowed for scope system (ALTER SYSTEM applies to the server)")
        if self.scope != "system" and self.scope_name is None:
            raise ValueError(f"scope {self.scope} needs scope_name (the {self.scope}'s name)")
        return self


_AUTO_CONF_SQL = sql.SQL(
    "SELECT setting FROM pg_file_settings\n"
    "WHERE right(sourcefile, 20) = 'postgresql.auto.conf' AND name = {}\n"
    "ORDER BY seqno DESC LIMIT 1")
_ROLE_SETTING_SQL = sql.SQL(
    "SELECT cfg FROM pg_db_role_setting s, unnest(s.setconfig) cfg\n"
    "WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = {scope_name}) AND s.setdatabase = 0\n"
    "  AND split_part(cfg, '=', 1) = {name}")
_DATABASE_SETTING_SQL = sql.SQL(
    "SELECT cfg FROM pg_db_role_setting s, unnest(s.setconfig) cfg\n"
    "WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = {scope_name}) AND s.setrole = 0\n"
    "  AND split_part(cfg, '=', 1) = {name}")
_EXISTS_SQL = {
    "role": sql.SQL("SELECT 1 FROM pg_roles WHERE rolname = {}"),
    "database": sql.SQL("SELECT 1 FROM pg_database WHERE datname = {}"),
}
_RELOAD = sql.SQL("SELECT pg_reload_conf()")

# The privilege each scope's statements need, for the hint of an "insufficient privilege" error.
_PRIVILEGE_HINT = {
    "system": ("ALTER SYSTEM needs a superuser, or on PostgreSQL 15+: GRANT ALTER SYSTEM ON PARAMETER {name} TO "
               "<role> (and reading postgresql.auto.conf through pg_file_settings needs pg_read_all_settings)"),
    "role": "ALTER ROLE ... SET needs the CREATEROLE attribute (a superuser to change a superuser role)",
    "database": "ALTER DATABASE ... SET needs the database's owner or a superuser",
}


class SetParameter(Action):
    kind = "postgres.set_parameter"
    family = "postgres"
    Inputs = SetParameterInputs
    effect_signal = "db_connections_active"  # the pool the idle-in-transaction sessions hold
    risk = "medium"  # new sessions (or, for system scope, every session after the reload) get the timeout

    inputs: SetParameterInputs

    @property
    def id(self) -> str:
        return pg_setting_action_id(self.inputs.name, self.inputs.scope, self.inputs.scope_name)

    @property
    def _where(self) -> str:
        i = self.inputs
        return "the server (ALTER SYSTEM)" if i.scope == "system" else f"{i.scope} {i.scope_name!r}"

    @property
    def title(self) -> str:
        return f"Set PostgreSQL {self.inputs.name} = {self.inputs.value} for {self._where}"

    @property
    def target(self) -> str:
        i = self.inputs
        if i.scope == "system":
            return "postgres server configuration (postgresql.auto.conf)"
        return f"postgres {i.scope} {i.scope_name} settings (pg_db_role_setting)"

    # --- statements -----------------------------------------------------------------------------

    def _alter(self) -> sql.Composed:
        i = self.inputs
        if i.scope == "system":
            return sql.SQL("ALTER SYSTEM")
        return sql.SQL("ALTER {} {}").format(sql.SQL(i.scope.upper()), sql.Identifier(i.scope_name))

    def _set_statements(self, value: str) -> list[sql.Composable]:
        stmt = sql.SQL("{} SET {} = {}").format(self._alter(), sql.Identifier(self.inputs.name), sql.Literal(value))
        return [stmt, _RELOAD] if self.inputs.scope == "system" else [stmt]

    def _reset_statements(self) -> list[sql.Composable]:
        stmt = sql.SQL("{} RESET {}").format(self._alter(), sql.Identifier(self.inputs.name))
        return [stmt, _RELOAD] if self.inputs.scope == "system" else [stmt]

    def _restore_statements(self, prior_value: str) -> list[sql.Composable]:
        return self._reset_statements() if prior_value == NOT_SET else self._set_statements(prior_value)

    def _capture_statement(self) -> sql.Composed:
        i = self.inputs
        if i.scope == "system":
            return _AUTO_CONF_SQL.format(sql.Literal(i.name))
        tmpl = _ROLE_SETTING_SQL if i.scope == "role" else _DATABASE_SETTING_SQL
        return tmpl.format(scope_name=sql.Literal(i.scope_name), name=sql.Literal(i.name))

    @staticmethod
    def _render(stmts: list[sql.Composable]) -> list[str]:
        return [s.as_string(None) for s in stmts]

    def plan(self) -> Plan:
        return Plan(
            action_id=self.id, kind=self.kind, title=self.title, target=self.target,
            commands=self._render(self._set_statements(self.inputs.value)),
            captures=[f"the prior {self.inputs.name} at this scope, exactly (else {NOT_SET!r})",
                      *self._render([self._capture_statement()])],
            rollback_commands=[*self._render(self._set_statements("<prior value>")),
                               f"or, when it was {NOT_SET}:", *self._render(self._reset_statements())],
            reversible=self.reversible, risk=self.risk,
        )

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        return self._render(self._restore_statements(self._prior_value(prior)))

    @staticmethod
    def _prior_value(prior: dict[str, Any]) -> str:
        return (prior or {}).get("value", NOT_SET)

    # --- server side ----------------------------------------------------------------------------

    def _execute(self, conn: psycopg.Connection, stmts: list[sql.Composable]) -> list[str]:
        """Each statement on its own (ALTER SYSTEM must not share a transaction block with anything)."""
        if not conn.autocommit:
            raise TargetError(f"{self.kind}: the PostgreSQL connection is not in autocommit mode; "
                              "ALTER SYSTEM cannot run inside a transaction block")
        sent = []
        for stmt in stmts:
            sent.append(stmt.as_string(None))
            self._guard(lambda s=stmt: conn.execute(s))
        return sent

    def _guard(self, fn):
        try:
            return fn()
        except psycopg.errors.InsufficientPrivilege as e:
            raise ActionFailed(f"{self.kind}: insufficient privilege for {self._where}: {_first_line(e)}",
                               hint=_PRIVILEGE_HINT[self.inputs.scope].format(name=self.inputs.name)) from None

    def capture(self, targets) -> dict[str, Any]:
        i = self.inputs
        conn = targets.postgres()
        exists = _EXISTS_SQL[i.scope].format(sql.Literal(i.scope_name)) if i.scope != "system" else None
        if exists is not None and conn.execute(exists).fetchone() is None:
            raise ActionInputError(f"{self.kind}: {i.scope} {i.scope_name!r} does not exist")
        row = self._guard(lambda: conn.execute(self._capture_statement()).fetchone())
        if row is None:
            value = NOT_SET
        elif i.scope == "system":
            value = row[0]
        else:
            value = row[0].split("=", 1)[1]
        return {"name": i.name, "scope": i.scope, "scope_name": i.scope_name, "value": value}

    def is_applied(self, state: dict[str, Any]) -> bool:
        return stored_ms(state.get("value")) == duration_ms(self.inputs.value)

    def _new_connection_setting(self, targets) -> tuple[int, str]:
        """``pg_settings.setting`` (ms) and its source, as a brand-new session sees it."""
        with Targets(targets.settings) as fresh:
            row = fresh.postgres().execute(
                "SELECT setting, source FROM pg_settings WHERE name = %s", (self.inputs.name,)).fetchone()
        return int(row[0]), row[1]

    def apply(self, targets) -> ApplyResult:
        conn = targets.postgres()
        state = self.capture(targets)
        if self.is_applied(state):
            if self.inputs.scope == "system":
                ms, _ = self._new_connection_setting(targets)
                if ms != duration_ms(self.inputs.value):  # in the file but never reloaded (interrupted apply)
                    sent = self._execute(conn, [_RELOAD])
                    return ApplyResult(False, f"already applied in postgresql.auto.conf ({state['value']}); "
                                              "reloaded the configuration", sent)
            return ApplyResult(False, "already applied")
        sent = self._execute(conn, self._set_statements(self.inputs.value))
        prior = state["value"]
        return ApplyResult(True, f"set {self.inputs.name} = {self.inputs.value} for {self._where} "
                                 f"(was {prior})", sent)

    def verify(self, targets) -> VerifyResult:
        target_ms = duration_ms(self.inputs.value)
        state = self.capture(targets)
        if self.inputs.scope == "system":
            # pg_reload_conf() only signals the postmaster: poll (bounded) until new sessions get the value
            deadline = time.monotonic() + VERIFY_WAIT_S
            delay = VERIFY_POLL_S
            while True:
                ms, source = self._new_connection_setting(targets)
                if ms == target_ms or time.monotonic() >= deadline:
                    break
                time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
                delay = min(delay * 2, VERIFY_POLL_MAX_S)
            observed = {**state, "new_session_ms": ms, "new_session_source": source, "target_ms": target_ms}
            if ms == target_ms:
                return VerifyResult(True, f"a new session sees {self.inputs.name} = {ms} ms", observed)
            why = ("" if source in ("configuration file", "default") else
                   f" (set by {source}: a role/database setting or the connection overrides the system value)")
            return VerifyResult(False, f"a new session sees {self.inputs.name} = {ms} ms, not {target_ms} ms{why}",
                                observed)
        observed = {**state, "target_ms": target_ms}
        if self.is_applied(state):
            return VerifyResult(True, f"pg_db_role_setting holds {self.inputs.name}={state['value']} for "
                                      f"{self._where}", observed)
        return VerifyResult(False, f"pg_db_role_setting holds {self.inputs.name} = {state['value']} for "
                                   f"{self._where}, not {self.inputs.value}", observed)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        prior_value = self._prior_value(prior)
        now = self.capture(targets)["value"]
        if now == prior_value:
            return RollbackResult(False, f"nothing to undo: {self.inputs.name} at {self._where} is {prior_value}")
        sent = self._execute(targets.postgres(), self._restore_statements(prior_value))
        what = "removed (it was not set)" if prior_value == NOT_SET else f"restored to {prior_value}"
        return RollbackResult(True, f"{self.inputs.name} for {self._where} {what}", sent)
