"""Shared helpers and fixtures for the action framework tests (imported by tests/test_actions_*.py).

Every check of server state goes through its own connection, never through the code under test.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import psycopg
import pytest
import redis
import yaml
from psycopg import sql

from runbook_lib.run_folder import AUDIT_FILE
from runbook_lib.settings import Settings
from tests.support.cache_support import ServedInThread

PLANTED = "planted-s3cret-XYZ"
PG_SECRET_ENV = "RUNBOOK_SECRET_PG"
REDIS_SECRET_ENV = "RUNBOOK_SECRET_REDIS"
ROWS = 2000  # enough rows for a real index build, small enough to build in milliseconds


@contextlib.contextmanager
def scratch_database(server, prefix: str):
    """A fresh database on a private PostgreSQL server, dropped (connections and all) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = server.dsn("postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.dsn(name)
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_dsn(private_postgres):
    """A fresh database with an ``orders`` table on the private server; dropped afterwards."""
    with scratch_database(private_postgres, "act") as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int NOT NULL, "
                      "created_at timestamptz NOT NULL DEFAULT now(), status text)")
            c.execute("INSERT INTO orders (user_id, created_at, status) "
                      "SELECT g %% 97, now() - g * interval '1 minute', 'paid' FROM generate_series(1, %s) g",
                      (ROWS,))
        yield dsn


def pg_indexes(dsn: str, table: str = "orders") -> list[tuple]:
    """The table's indexes as the server reports them: (name, definition, valid)."""
    with psycopg.connect(dsn) as c:
        return c.execute(
            "SELECT c.relname::text, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass ORDER BY 1", (table,)
        ).fetchall()


def redis_config(url: str, password: str | None = None) -> dict[str, str]:
    """Every runtime parameter the server reports (CONFIG GET *)."""
    with redis.Redis.from_url(url, password=password, decode_responses=True, socket_timeout=10) as r:
        return r.config_get("*")


def make_settings(*, pg_dsn: str | None = None, redis_url: str | None = None, mode: str = "lab",
                  apply: bool = False, approved_by: str | None = None, change_ticket: str | None = None,
                  auto_rollback: bool = False, pg_secret: bool = False, redis_secret: bool = False) -> Settings:
    data: dict = {
        "incident": {"id": "t-actions", "title": "action framework test"},
        "mode": mode,
        "source": {"kind": "fixture", "bundle": "fixtures/d2-latency"},
        "remediation": {"apply": apply, "approved_by": approved_by, "change_ticket": change_ticket,
                        "auto_rollback": auto_rollback},
    }
    if pg_dsn:
        data["postgres"] = {"dsn": pg_dsn, **({"password": {"env": PG_SECRET_ENV}} if pg_secret else {})}
    if redis_url:
        data["redis"] = {"url": redis_url, **({"password": {"env": REDIS_SECRET_ENV}} if redis_secret else {})}
    return Settings.model_validate(data)


def write_parameters(run_dir: Path, settings: Settings) -> Path:
    path = run_dir / "parameters.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True), sort_keys=False))
    return path


def audit_lines(run_dir: Path) -> list[dict]:
    """Strict reader: every line must parse (the code's tolerant reader is not trusted here)."""
    path = run_dir / AUDIT_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def steps(run_dir: Path, action_id: str | None = None) -> list[str]:
    return [r["step"] for r in audit_lines(run_dir) if action_id is None or r.get("action_id") == action_id]


def assert_no_secret(run_dir: Path, *texts: str) -> None:
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert PLANTED not in f.read_text(errors="replace"), f"secret leaked into {f.name}"
    for t in texts:
        assert PLANTED not in t


# --- real sessions that hold connections (pool tests) ---

SESSION_DEADLINE_S = 15.0


def poll(check, what: str, timeout: float = SESSION_DEADLINE_S):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def open_sessions(dsn: str, n: int, application_name: str, *, in_transaction: bool = True,
                  query: str = "SELECT 1"):
    """``n`` real sessions: BEGIN + a SELECT, then idle in transaction (or just idle); closed afterwards."""
    conns: list[psycopg.Connection] = []
    try:
        for _ in range(n):
            c = psycopg.connect(dsn, autocommit=True, application_name=application_name, connect_timeout=10)
            conns.append(c)
            if in_transaction:
                c.execute("BEGIN")
            c.execute(query)
        yield conns
    finally:
        for c in conns:
            with contextlib.suppress(psycopg.Error):
                c.close()


def wait_idle_in_transaction(dsn: str, conns: list[psycopg.Connection], older_than_s: float) -> None:
    """Until every session has sat idle in transaction for longer than ``older_than_s`` (bounded)."""
    pids = [c.info.backend_pid for c in conns]

    def old_enough():
        with psycopg.connect(dsn, autocommit=True) as admin:
            return admin.execute(
                "SELECT count(*) = %s FROM pg_stat_activity WHERE pid = ANY(%s) "
                "AND state = 'idle in transaction' AND state_change < now() - make_interval(secs => %s)",
                (len(pids), pids, older_than_s + 0.1)).fetchone()[0]

    poll(old_enough, f"{len(pids)} sessions idle in transaction for {older_than_s} s")


class AdminApp(ServedInThread):
    """A real HTTP admin endpoint on loopback holding an app's knobs (GET the object, PATCH a merge body),
    with a bearer token, as the app.config action expects (``app.admin_url``)."""

    join_timeout_s = 5

    def __init__(self, knobs: dict, token: str):
        self.knobs, self.token, self.requests = dict(knobs), token, []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code: int, body: dict | None = None):
                raw = json.dumps(body if body is not None else {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _authorized(self) -> bool:
                app.requests.append((self.command, dict(self.headers)))
                return self.headers.get("Authorization") == f"Bearer {app.token}"

            def do_GET(self):
                self._reply(200, app.knobs) if self._authorized() else self._reply(401)

            def do_PATCH(self):
                if not self._authorized():
                    return self._reply(401)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                app.knobs.update(body)
                self._reply(200, app.knobs)

        self.serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/admin/config"
