"""CreateIndex under production-like conditions on the private PostgreSQL: concurrent read/write load,
a build cancelled midway, an INVALID leftover, the advisory lock, rollback, hostile identifiers.

Every wait here is bounded (a deadline per poll loop, statement_timeout on the load connections)."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql

from runbook_lib.actions import (
    ActionFailed,
    ActionInputError,
    CreateIndex,
    VerifyFailed,
    execute,
    rollback_run,
)
from runbook_lib.actions import postgres_index as pgi
from tests.support.actions_support import audit_lines, make_settings, pg_indexes, scratch_database

pytestmark = pytest.mark.slow

ROWS = 200_000  # a build that takes a few hundred ms: long enough to run under load
USER_ORDERS = "SELECT id, status FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2"
DEADLINE_S = 30.0


@pytest.fixture
def dsn(private_postgres):
    with scratch_database(private_postgres, "pgix") as d:
        with psycopg.connect(d, autocommit=True) as c:
            c.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int NOT NULL, "
                      "created_at timestamptz NOT NULL DEFAULT now(), status text NOT NULL)")
            c.execute("INSERT INTO orders (user_id, created_at, status) SELECT g %% 5000, now() - g * interval '1 s', "
                      "'paid' FROM generate_series(1, %s) g", (ROWS,))
            c.execute("VACUUM ANALYZE orders")
        yield d


def _invalid(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        return [r[0] for r in c.execute("SELECT c.relname::text FROM pg_index i JOIN pg_class c "
                                        "ON c.oid = i.indexrelid WHERE NOT i.indisvalid")]


class Load:
    """Readers and writers on orders in short transactions until stopped; every latency recorded."""

    def __init__(self, dsn: str, writers: int = 2, readers: int = 1):
        self.dsn, self.stop = dsn, threading.Event()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._loop, args=(i < writers,), daemon=True)
                        for i in range(writers + readers)]

    def _loop(self, write: bool) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                c.execute("SET statement_timeout = '20s'")  # no operation can hang the test
                i = 0
                while not self.stop.is_set():
                    i += 1
                    t = time.perf_counter()
                    if write:
                        with c.transaction():
                            c.execute("INSERT INTO orders (user_id, status) VALUES (%s, 'paid')", (i % 5000,))
                            c.execute("UPDATE orders SET status = 'shipped' WHERE id = %s", (1 + i % ROWS,))
                    else:
                        c.execute("SELECT count(*) FROM orders WHERE user_id = %s", (i % 5000,)).fetchone()
                    self.latencies.append(time.perf_counter() - t)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=DEADLINE_S)


def test_builds_under_read_write_load_without_blocking_it(dsn, run_dir):
    lock_timeout_ms = 3000
    action = CreateIndex(table="orders", columns=["user_id", "created_at"], lock_timeout_ms=lock_timeout_ms,
                         verify_statements=[USER_ORDERS])
    with Load(dsn) as load:
        deadline = time.monotonic() + DEADLINE_S
        while len(load.latencies) < 20 and time.monotonic() < deadline and not load.errors:
            time.sleep(0.01)  # poll until the load runs
        ops_before = len(load.latencies)
        [o] = execute([action], make_settings(pg_dsn=dsn, apply=True), run_dir, actor="tester")
        ops_during = len(load.latencies) - ops_before
    assert load.errors == []
    assert (o.status, o.verified) == ("applied", True)
    assert "EXPLAIN of 1 statement(s) uses it" in audit_lines(run_dir)[-1]["message"]
    # every statement sent, in order: lock_timeout, the guard (statement_timeout + advisory lock), the DDL, resets
    applied = next(r for r in audit_lines(run_dir) if r["step"] == "applied")
    plan, guard = action.plan().commands, action.guard_commands()
    assert applied["commands"] == [plan[0], guard[0], plan[1], plan[2], guard[1]]
    assert ops_during > 0  # the load kept running while the index was built
    assert max(load.latencies) < lock_timeout_ms / 1000
    assert [(n, v) for n, _, v in pg_indexes(dsn) if n.startswith("ix_")] == [("ix_orders_user_id_created_at", True)]


def _cancel_when_waiting(dsn: str, blocker: psycopg.Connection, done: dict) -> None:
    """Cancel the index build once it waits for the open writer (its catalog entry exists, INVALID), then
    let the writer commit."""
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            deadline = time.monotonic() + DEADLINE_S
            while time.monotonic() < deadline:
                row = c.execute("SELECT pid, phase FROM pg_stat_progress_create_index "
                                "WHERE phase LIKE 'waiting for writers%' AND datname = current_database()").fetchone()
                if row:
                    done["invalid_seen"] = _invalid(dsn)
                    done["cancelled"] = c.execute("SELECT pg_cancel_backend(%s)", (row[0],)).fetchone()[0]
                    break
                time.sleep(0.01)
    finally:
        blocker.commit()


def _start_blocked_build(dsn: str):
    blocker = psycopg.connect(dsn)  # an open write transaction: the build must wait for it
    blocker.execute("INSERT INTO orders (user_id, status) VALUES (1, 'paid')")
    done: dict = {}
    watcher = threading.Thread(target=_cancel_when_waiting, args=(dsn, blocker, done), daemon=True)
    watcher.start()
    return blocker, watcher, done


def test_build_cancelled_midway_is_cleaned_up_and_retried(dsn, run_dir):
    before = pg_indexes(dsn)
    action = CreateIndex(table="orders", columns=["user_id"], lock_timeout_ms=20_000)
    blocker, watcher, done = _start_blocked_build(dsn)
    try:
        [o] = execute([action], make_settings(pg_dsn=dsn, apply=True), run_dir, actor="tester")
    finally:
        watcher.join(timeout=DEADLINE_S)
        blocker.close()
    assert done.get("cancelled") is True and done["invalid_seen"] == ["ix_orders_user_id"]
    assert o.status == "applied" and o.verified
    assert "attempt 2" in o.message and "dropped an INVALID leftover" in o.message
    assert any(c.startswith('DROP INDEX CONCURRENTLY IF EXISTS "public"."ix_orders_user_id"') for c in o.commands)
    assert _invalid(dsn) == []
    [undone] = rollback_run(run_dir, apply=True, actor="tester")
    assert undone.status == "rolled back" and pg_indexes(dsn) == before


def test_final_failure_drops_its_own_invalid_leftover(dsn, run_dir):
    before = pg_indexes(dsn)
    action = CreateIndex(table="orders", columns=["user_id"], lock_timeout_ms=20_000, retries=0)
    blocker, watcher, done = _start_blocked_build(dsn)
    try:
        with pytest.raises(ActionFailed, match="canceling statement due to user request"):
            execute([action], make_settings(pg_dsn=dsn, apply=True), run_dir)
    finally:
        watcher.join(timeout=DEADLINE_S)
        blocker.close()
    assert done.get("cancelled") is True
    assert pg_indexes(dsn) == before and _invalid(dsn) == []


def test_invalid_index_from_before_the_run_is_refused_with_the_fix_and_left_alone(dsn, run_dir):
    # a failed unique build leaves an INVALID index behind
    with psycopg.connect(dsn, autocommit=True) as c, pytest.raises(psycopg.errors.UniqueViolation):
        c.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_orders_user_id ON orders (user_id)")
    before = pg_indexes(dsn)
    with pytest.raises(ActionFailed, match="INVALID, left by an interrupted build before this run") as err:
        execute([CreateIndex(table="orders", columns=["user_id"])], make_settings(pg_dsn=dsn, apply=True), run_dir)
    assert "DROP INDEX CONCURRENTLY" in str(err.value)
    assert pg_indexes(dsn) == before
    [o] = rollback_run(run_dir, apply=True)
    assert o.status == "nothing to undo" and pg_indexes(dsn) == before


def test_a_second_run_waits_for_the_advisory_lock_at_most_lock_timeout(dsn, run_dir):
    before = pg_indexes(dsn)
    with psycopg.connect(dsn, autocommit=True) as other_run:
        other_run.execute("SELECT pg_advisory_lock(%s)", (pgi.ADVISORY_LOCK_KEY,))
        t = time.monotonic()
        with pytest.raises(ActionFailed, match="holds the index-build advisory lock"):
            execute([CreateIndex(table="orders", columns=["status"], lock_timeout_ms=200)],
                    make_settings(pg_dsn=dsn, apply=True), run_dir)
        assert time.monotonic() - t < 5
    assert pg_indexes(dsn) == before


def test_rollback_drops_exactly_what_the_run_created(dsn, run_dir):
    with psycopg.connect(dsn, autocommit=True) as c:  # someone else's index, and ours made before the run
        c.execute("CREATE INDEX orders_manual_idx ON orders (created_at)")
        c.execute("CREATE INDEX ix_orders_status ON orders (status)")
    before = pg_indexes(dsn)
    actions = [CreateIndex(table="orders", columns=["user_id"]), CreateIndex(table="orders", columns=["status"]),
               CreateIndex(table="orders", columns=["user_id", "created_at"])]
    outcomes = execute(actions, make_settings(pg_dsn=dsn, apply=True), run_dir)
    assert [o.status for o in outcomes] == ["applied", "already applied", "applied"]
    created = {n for n, _, _ in pg_indexes(dsn)} - {n for n, _, _ in before}
    assert created == {"ix_orders_user_id", "ix_orders_user_id_created_at"}
    undone = rollback_run(run_dir, apply=True)
    assert sorted(o.status for o in undone) == ["rolled back", "rolled back"]
    assert pg_indexes(dsn) == before


def test_verify_fails_when_explain_does_not_use_the_index(dsn, run_dir):
    action = CreateIndex(table="orders", columns=["status"], verify_statements=[USER_ORDERS])
    with pytest.raises(VerifyFailed, match="EXPLAIN does not use it"):
        execute([action], make_settings(pg_dsn=dsn, apply=True), run_dir)
    rollback_run(run_dir, apply=True)
    assert "ix_orders_status" not in [n for n, _, _ in pg_indexes(dsn)]


HOSTILE_TABLE = 'we"ird; DROP TABLE orders; --'
HOSTILE_COLUMNS = ["ünï cøde", "semi;colon) WITH (fillfactor=10"]


def test_hostile_identifiers_are_quoted_or_refused_never_executed(dsn, run_dir):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL("CREATE TABLE {} ({} int, {} int)").format(
            sql.Identifier(HOSTILE_TABLE), *map(sql.Identifier, HOSTILE_COLUMNS)))
        c.execute(sql.SQL("INSERT INTO {} SELECT g, g FROM generate_series(1, 100) g").format(
            sql.Identifier(HOSTILE_TABLE)))
    settings = make_settings(pg_dsn=dsn, apply=True)
    weird = CreateIndex(table=HOSTILE_TABLE, columns=HOSTILE_COLUMNS, name="ix; DROP TABLE orders")
    [o] = execute([weird], settings, run_dir)
    assert o.status == "applied" and o.verified
    [(name, definition, valid)] = pg_indexes(dsn, sql.Identifier(HOSTILE_TABLE).as_string(None))
    assert (name, valid) == ("ix; DROP TABLE orders", True)
    assert "ünï cøde" in definition and "fillfactor" in definition  # a column name, not an option
    for bad, message in [
        (CreateIndex(table="orders; DROP TABLE orders", columns=["user_id"]), "does not exist"),
        (CreateIndex(table="orders", columns=["user_id); DROP TABLE orders; --"]), "has no column"),
        (CreateIndex(table="orders", schema_name="public; DROP SCHEMA public", columns=["user_id"]), "does not exist"),
    ]:
        with pytest.raises(ActionInputError, match=message):
            other = run_dir.parent / uuid.uuid4().hex
            other.mkdir()
            execute([bad], settings, other)
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM orders").fetchone()[0] == ROWS
    rollback_run(run_dir, apply=True)
    assert pg_indexes(dsn, sql.Identifier(HOSTILE_TABLE).as_string(None)) == []
