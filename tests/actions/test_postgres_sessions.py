"""TerminateIdleSessions and SetParameter through the framework, on the private PostgreSQL.

Real sessions only: psycopg connections that BEGIN, run a SELECT and then sit idle in transaction.
Every server check goes through the test's own connections; every wait is bounded (actions_support.SESSION_DEADLINE_S);
sessions, roles and ALTER SYSTEM entries are cleaned up in ``finally`` / fixtures.
"""

from __future__ import annotations

import contextlib
import json
import uuid

import psycopg
import pytest
from psycopg import sql

from runbook_lib.actions import (
    EXECUTORS,
    ActionFailed,
    ActionInputError,
    SetParameter,
    Targets,
    TerminateIdleSessions,
    build_action,
    execute,
    outcomes_frame,
    plans_frame,
    rollback_run,
)
from runbook_lib.actions import postgres_sessions as ps
from runbook_lib.model import pg_setting_action_id, pg_terminate_action_id
from tests.support import actions_support as test_actions_support
from tests.support.actions_support import (
    PG_SECRET_ENV,
    PLANTED,
    assert_no_secret,
    audit_lines,
    make_settings,
    open_sessions,
    poll,
    steps,
    wait_idle_in_transaction,
)

pytestmark = pytest.mark.slow
pg_dsn = test_actions_support.pg_dsn  # the fixture: a fresh database per test

MIN_IDLE_S = 1.0  # the action's floor: the sessions only have to sit a little over a second
LEAKY = "leaky-batch"
# the leaked transaction's last query carries a credential-looking token: the capture must redact it
LEAKY_QUERY = f"SELECT count(*), 'token={PLANTED}' AS note FROM orders"
HOSTILE_ROLE = 'app"; DROP TABLE users; --'
HOSTILE_SETTING = "statement_timeout=45s"


# --- helpers -------------------------------------------------------------------------------------------


def live_pids(dsn: str) -> set[int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return {r[0] for r in c.execute("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")}


def usable(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def other_user_dsn(dsn: str, user: str) -> str:
    return dsn.replace("postgresql://postgres@", f"postgresql://{user}@", 1)


@contextlib.contextmanager
def scratch_role(dsn: str, name: str | None = None, login: bool = True):
    name = name or f"rb_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL("CREATE ROLE {} " + ("LOGIN" if login else "NOLOGIN")).format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def auto_conf(dsn: str, name: str) -> list[str]:
    """The entries for ``name`` in postgresql.auto.conf, as pg_file_settings reads the file now."""
    with psycopg.connect(dsn, autocommit=True) as c:
        return [r[0] for r in c.execute(
            "SELECT setting FROM pg_file_settings WHERE sourcefile LIKE '%%postgresql.auto.conf' AND name = %s",
            (name,))]


def new_session_setting(dsn: str, name: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        return int(c.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()[0])


def wait_new_session_setting(dsn: str, name: str, ms: int) -> None:
    poll(lambda: new_session_setting(dsn, name) == ms, f"new sessions to see {name} = {ms} ms")


def role_settings(dsn: str, role: str) -> list[str] | None:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                        "WHERE r.rolname = %s AND s.setdatabase = 0", (role,)).fetchone()
    return row[0] if row else None


def database_settings(dsn: str, db: str) -> list[str] | None:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                        "WHERE d.datname = %s AND s.setrole = 0", (db,)).fetchone()
    return row[0] if row else None


@pytest.fixture
def system_params(pg_dsn):
    """ALTER SYSTEM touches the shared server: start with none of the timeouts in postgresql.auto.conf and
    remove whatever a test left there afterwards."""
    assert all(auto_conf(pg_dsn, n) == [] for n in ps.PARAMETERS), "a timeout is already in postgresql.auto.conf"
    try:
        yield pg_dsn
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            for n in ps.PARAMETERS:
                c.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(n)))
            c.execute("SELECT pg_reload_conf()")


# --- TerminateIdleSessions -------------------------------------------------------------------------------


def test_terminate_ids_inputs_and_plan():
    a = TerminateIdleSessions(application_name=LEAKY, min_idle_s=5)
    assert a.id == pg_terminate_action_id(LEAKY, None) == "pg-terminate-idle-tx-leaky-batch"
    assert TerminateIdleSessions(application_name="x", usename="Bob").id == pg_terminate_action_id("x", "Bob")
    assert TerminateIdleSessions().id == pg_terminate_action_id()
    assert (a.reversible, a.risk, a.inputs.max_sessions) == (False, "high", 50)
    assert type(build_action(a.kind, json.loads(json.dumps(a.to_record()["inputs"])))) is TerminateIdleSessions
    assert EXECUTORS[a.kind] is TerminateIdleSessions

    p = a.plan()
    assert p.commands == [(
        "SELECT a.pid, pg_terminate_backend(a.pid)\n"
        "FROM pg_stat_activity a\n"
        "WHERE (a.pid, a.backend_start) IN (VALUES (<pid>, '<backend_start>'::timestamptz), ... one per captured "
        "session)\n"
        "  AND a.datname = current_database()\n"
        "  AND a.pid <> pg_backend_pid()\n"
        "  AND a.backend_type = 'client backend'\n"
        "  AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')\n"
        "  AND a.state_change < now() - make_interval(secs => 5.0)\n"
        "  AND a.application_name = 'leaky-batch'")]
    assert p.captures[1] == (
        "SELECT a.pid, a.usename::text, a.application_name, a.client_addr::text, a.backend_start, a.xact_start, "
        "a.state_change, a.state, a.wait_event_type, a.wait_event, left(a.query, 200), count(*) OVER ()\n"
        "FROM pg_stat_activity a\n"
        "WHERE a.datname = current_database()\n"
        "  AND a.pid <> pg_backend_pid()\n"
        "  AND a.backend_type = 'client backend'\n"
        "  AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')\n"
        "  AND a.state_change < now() - make_interval(secs => 5.0)\n"
        "  AND a.application_name = 'leaky-batch'\n"
        "ORDER BY a.state_change, a.pid\n"
        "LIMIT 50")
    assert p.rollback_commands == [ps.NOT_REVERSIBLE] == [
        "not reversible: the clients reconnect; their open transactions are rolled back by PostgreSQL"]
    assert p.reversible is False and a.rollback_commands({"sessions": [{"pid": 1}]}) == []
    # a quote in a filter value stays inside its literal
    evil = TerminateIdleSessions(usename="x' OR true --").plan().commands[0]
    assert "a.usename = 'x'' OR true --'" in evil


@pytest.mark.parametrize("inputs", [{"max_sessions": 0}, {"max_sessions": 501}, {"min_idle_s": 0},
                                    {"application_name": ""}, {"usename": "r" * 64}, {"pids": [1]}])
def test_terminate_bad_inputs_are_refused(inputs):
    with pytest.raises(ActionInputError, match="postgres.terminate_idle_sessions"):
        TerminateIdleSessions(**inputs)


def test_terminate_only_the_leaky_sessions_audited_and_idempotent(pg_dsn, run_dir, monkeypatch):
    monkeypatch.setenv(PG_SECRET_ENV, PLANTED)  # the password from the parameters' SecretRef (trust auth ignores it)
    settings = make_settings(pg_dsn=pg_dsn, apply=True, pg_secret=True)
    action = TerminateIdleSessions(application_name=LEAKY, min_idle_s=MIN_IDLE_S)
    with (open_sessions(pg_dsn, 3, LEAKY, query=LEAKY_QUERY) as leaky,
          open_sessions(pg_dsn, 1, "reporting") as other_app,
          open_sessions(pg_dsn, 1, LEAKY, in_transaction=False) as plain_idle):
        wait_idle_in_transaction(pg_dsn, leaky + other_app, MIN_IDLE_S)
        leaky_pids = {c.info.backend_pid for c in leaky}
        survivors = other_app + plain_idle

        [o] = execute([action], settings, run_dir, actor="tester")
        assert o.status == "applied" and o.changed and o.verified
        assert f"terminated 3 session(s) of application {LEAKY!r}" in o.message
        assert live_pids(pg_dsn).isdisjoint(leaky_pids)
        assert not any(usable(c) for c in leaky)  # their clients see the termination on next use
        assert all(usable(c) for c in survivors)
        assert other_app[0].info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # still open

        lines = audit_lines(run_dir)
        applying = next(r for r in lines if r["step"] == "applying")
        captured = applying["prior"]["sessions"]
        assert {s["pid"] for s in captured} == leaky_pids and applying["prior"]["matching"] == 3
        for s in captured:
            assert (s["application_name"], s["usename"], s["state"]) == (LEAKY, "postgres", "idle in transaction")
            assert s["backend_start"] and s["xact_start"] and s["state_change"]
            assert s["query"] == "SELECT count(*), 'token=***' AS note FROM orders"  # redacted
        applied = next(r for r in lines if r["step"] == "applied")
        assert all(str(pid) in applied["commands"][0] for pid in leaky_pids)  # exactly the captured ones
        verified = next(r for r in lines if r["step"] == "verified")
        assert sorted(verified["observed"]["terminated"]) == sorted(leaky_pids)

        [again] = execute([TerminateIdleSessions(application_name=LEAKY, min_idle_s=MIN_IDLE_S)], settings,
                          run_dir, actor="tester")
        assert again.status == "already applied" and not again.changed and again.verified
        assert again.message.startswith("already applied")
        assert all(usable(c) for c in survivors)

        # irreversible: the rollback says so and touches nothing
        with Targets(settings) as targets:
            rb = action.rollback(targets, applying["prior"])
        assert not rb.changed and "not reversible" in rb.message and rb.commands == []
        [planned] = rollback_run(run_dir, actor="tester")  # dry run: no command to send
        assert planned.status == "planned" and planned.commands == []
        assert all(usable(c) for c in survivors)
    assert_no_secret(run_dir, outcomes_frame([o, again]).to_string(), plans_frame([action]).to_string())


def test_dry_run_terminates_nothing(pg_dsn, run_dir):
    action = TerminateIdleSessions(application_name=LEAKY, min_idle_s=MIN_IDLE_S)
    with open_sessions(pg_dsn, 2, LEAKY) as leaky:
        wait_idle_in_transaction(pg_dsn, leaky, MIN_IDLE_S)
        [o] = execute([action], make_settings(pg_dsn=pg_dsn), run_dir, actor="tester")
        assert o.status == "planned" and not o.changed
        assert o.commands == action.plan().commands
        assert all(usable(c) for c in leaky)
    assert steps(run_dir) == ["planned"]
    assert audit_lines(run_dir)[0]["reversible"] is False


def test_healthy_database_terminates_nothing(pg_dsn, run_dir):
    settings = make_settings(pg_dsn=pg_dsn, apply=True)
    with open_sessions(pg_dsn, 2, LEAKY, in_transaction=False) as idle, \
            open_sessions(pg_dsn, 1, "fresh") as young:  # in a transaction, but not for long enough
        before = live_pids(pg_dsn)
        [o] = execute([TerminateIdleSessions(min_idle_s=60)], settings, run_dir, actor="tester")
        assert o.status == "already applied" and not o.changed and o.verified
        assert "no session of any application and role" in o.message
        assert before <= live_pids(pg_dsn)
        assert all(usable(c) for c in idle + young)
    applying = next(r for r in audit_lines(run_dir) if r["step"] == "applying")
    assert applying["prior"]["sessions"] == []


def test_cap_role_filter_and_other_databases(pg_dsn, private_postgres, run_dir):
    """max_sessions bounds one apply (oldest first); only the connected database; the usename filter."""
    settings = make_settings(pg_dsn=pg_dsn, apply=True)
    other_db = private_postgres.dsn("postgres")
    with open_sessions(pg_dsn, 3, LEAKY) as leaky, open_sessions(other_db, 1, LEAKY) as elsewhere:
        wait_idle_in_transaction(pg_dsn, leaky, MIN_IDLE_S)
        wait_idle_in_transaction(other_db, elsewhere, MIN_IDLE_S)
        none = TerminateIdleSessions(application_name=LEAKY, usename="nobody", min_idle_s=MIN_IDLE_S)
        [o0] = execute([none], settings, run_dir)
        leaky_pids = {c.info.backend_pid for c in leaky}
        assert not o0.changed and leaky_pids <= live_pids(pg_dsn)  # (a query on them would reset state_change)

        capped = TerminateIdleSessions(application_name=LEAKY, usename="postgres", min_idle_s=MIN_IDLE_S,
                                       max_sessions=2)
        [o] = execute([capped], settings, run_dir)
        assert o.changed and "1 more matched beyond the max_sessions cap (2)" in o.message
        assert len(leaky_pids - live_pids(pg_dsn)) == 2
        assert [usable(c) for c in leaky] == [False, False, True]  # the two oldest
        assert usable(elsewhere[0])  # another database is never touched


def test_terminate_without_privilege_is_a_clear_error(pg_dsn, run_dir):
    with scratch_role(pg_dsn) as limited, open_sessions(pg_dsn, 1, LEAKY) as leaky:
        wait_idle_in_transaction(pg_dsn, leaky, MIN_IDLE_S)
        settings = make_settings(pg_dsn=other_user_dsn(pg_dsn, limited), apply=True)
        with pytest.raises(ActionFailed, match="not visible") as err:
            execute([TerminateIdleSessions(application_name=LEAKY, min_idle_s=MIN_IDLE_S)], settings, run_dir)
        assert "pg_read_all_stats" in err.value.hint and "pg_signal_backend" in err.value.hint
        assert leaky[0].info.backend_pid in live_pids(pg_dsn)

        # it may now see them, but a superuser's sessions only a superuser may terminate
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute(sql.SQL("GRANT pg_read_all_stats, pg_signal_backend TO {}").format(sql.Identifier(limited)))
        with pytest.raises(ActionFailed, match="superuser") as err:
            execute([TerminateIdleSessions(application_name=LEAKY, min_idle_s=MIN_IDLE_S)], settings,
                    run_dir.parent)
        assert "pg_signal_backend" in err.value.hint
        assert usable(leaky[0])


# --- SetParameter ------------------------------------------------------------------------------------------


def test_set_parameter_ids_inputs_and_plan():
    a = SetParameter(name="idle_in_transaction_session_timeout", value="60s")
    assert a.id == pg_setting_action_id("idle_in_transaction_session_timeout", "system", None)
    assert (a.inputs.value, a.inputs.scope, a.risk, a.reversible) == ("1min", "system", "medium", True)
    assert a.plan().commands == ["ALTER SYSTEM SET \"idle_in_transaction_session_timeout\" = '1min'",
                                 "SELECT pg_reload_conf()"]
    assert a.rollback_commands({"value": "not set"}) == ['ALTER SYSTEM RESET "idle_in_transaction_session_timeout"',
                                                         "SELECT pg_reload_conf()"]
    assert a.rollback_commands({"value": "30s"}) == ["ALTER SYSTEM SET \"idle_in_transaction_session_timeout\" = '30s'",
                                                     "SELECT pg_reload_conf()"]
    r = SetParameter(name="statement_timeout", value=30000, scope="role", scope_name=HOSTILE_ROLE)
    assert r.id == pg_setting_action_id("statement_timeout", "role", HOSTILE_ROLE)
    assert r.plan().commands == ['ALTER ROLE "app""; DROP TABLE users; --" SET "statement_timeout" = \'30s\'']
    d = SetParameter(name="lock_timeout", value="5min", scope="database", scope_name="shop")
    assert d.plan().commands == ['ALTER DATABASE "shop" SET "lock_timeout" = \'5min\'']
    assert d.rollback_commands({"value": "not set"}) == ['ALTER DATABASE "shop" RESET "lock_timeout"']
    for v, norm in [("1500ms", "1500ms"), ("0", "0"), ("90s", "90s"), ("120min", "2h"), ("2d", "2d"), (250, "250ms")]:
        assert SetParameter(name="lock_timeout", value=v).inputs.value == norm
    rec = json.loads(json.dumps(r.to_record()))
    assert build_action(rec["kind"], rec["inputs"]).plan() == r.plan()


@pytest.mark.parametrize(("inputs", "match"), [
    ({"name": "shared_buffers", "value": "1s"},
     "allowed: idle_in_transaction_session_timeout, idle_session_timeout, statement_timeout, lock_timeout"),
    ({"name": "statement_timeout", "value": "5 minutes"}, "not a PostgreSQL duration"),
    ({"name": "statement_timeout", "value": "1.5s"}, "not a PostgreSQL duration"),
    ({"name": "statement_timeout", "value": "-1"}, "not a PostgreSQL duration"),
    ({"name": "statement_timeout", "value": "30d"}, "maximum"),
    ({"name": "statement_timeout", "value": "1s", "scope": "system", "scope_name": "x"}, "not allowed"),
    ({"name": "statement_timeout", "value": "1s", "scope": "role"}, "needs scope_name"),
    ({"name": "statement_timeout", "value": "1s", "scope": "cluster"}, "scope"),
])
def test_set_parameter_bad_inputs_are_refused_before_any_connection(inputs, match):
    with pytest.raises(ActionInputError, match=match):
        SetParameter(**inputs)
    with pytest.raises(ActionInputError, match=match):
        build_action("postgres.set_parameter", inputs)


def test_system_scope_apply_new_session_sees_it_and_rollback_removes_it(system_params, run_dir):
    dsn = system_params
    name = "idle_in_transaction_session_timeout"
    default_ms = new_session_setting(dsn, name)
    settings = make_settings(pg_dsn=dsn, apply=True)
    action = SetParameter(name=name, value="60s")

    [o] = execute([action], settings, run_dir, actor="tester")
    assert o.status == "applied" and o.changed and o.verified and "(was not set)" in o.message
    assert o.commands == ["ALTER SYSTEM SET \"idle_in_transaction_session_timeout\" = '1min'",
                          "SELECT pg_reload_conf()"]
    assert auto_conf(dsn, name) == ["1min"]
    wait_new_session_setting(dsn, name, 60_000)

    [again] = execute([SetParameter(name=name, value=60000)], settings, run_dir)  # same value, other spelling
    assert again.status == "already applied" and not again.changed and again.message == "already applied"
    applying = next(r for r in audit_lines(run_dir) if r["step"] == "applying")
    assert applying["prior"]["value"] == "not set"

    [undone] = rollback_run(run_dir, apply=True, actor="tester")
    assert undone.status == "rolled back"
    assert auto_conf(dsn, name) == []  # exactly "not set" again
    assert audit_lines(run_dir)[-1]["restored"] is True
    wait_new_session_setting(dsn, name, default_ms)
    assert rollback_run(run_dir, apply=True) == []


def test_system_scope_rollback_restores_a_prior_value_exactly(system_params, run_dir):
    dsn = system_params
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ALTER SYSTEM SET lock_timeout = '7s'")
        c.execute("SELECT pg_reload_conf()")
    wait_new_session_setting(dsn, "lock_timeout", 7000)
    [o] = execute([SetParameter(name="lock_timeout", value="30000")], make_settings(pg_dsn=dsn, apply=True), run_dir)
    assert o.verified and "(was 7s)" in o.message
    assert auto_conf(dsn, "lock_timeout") == ["30s"]
    wait_new_session_setting(dsn, "lock_timeout", 30_000)

    [undone] = rollback_run(run_dir, apply=True)
    assert undone.status == "rolled back" and undone.commands[0] == "ALTER SYSTEM SET \"lock_timeout\" = '7s'"
    assert auto_conf(dsn, "lock_timeout") == ["7s"]
    wait_new_session_setting(dsn, "lock_timeout", 7000)


def test_role_scope_with_a_hostile_role_name(pg_dsn, run_dir, monkeypatch):
    monkeypatch.setenv(PG_SECRET_ENV, PLANTED)
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE users (id int)")
    settings = make_settings(pg_dsn=pg_dsn, apply=True, pg_secret=True)
    with scratch_role(pg_dsn, HOSTILE_ROLE, login=False) as role:
        action = SetParameter(name="statement_timeout", value="45s", scope="role", scope_name=role)
        [o] = execute([action], settings, run_dir, actor="tester")
        assert o.status == "applied" and o.verified
        assert o.commands == ['ALTER ROLE "app""; DROP TABLE users; --" SET "statement_timeout" = \'45s\'']
        assert role_settings(pg_dsn, role) == [HOSTILE_SETTING]
        with psycopg.connect(pg_dsn) as c:  # the quoted name did not run as SQL
            assert c.execute("SELECT to_regclass('public.users') IS NOT NULL").fetchone()[0]

        [again] = execute([action], settings, run_dir)
        assert again.status == "already applied" and not again.changed

        [undone] = rollback_run(run_dir, apply=True)
        assert undone.status == "rolled back" and undone.commands == [
            'ALTER ROLE "app""; DROP TABLE users; --" RESET "statement_timeout"']
        assert role_settings(pg_dsn, role) is None
    assert_no_secret(run_dir, outcomes_frame([o, again, undone]).to_string(), plans_frame([action]).to_string())


def test_database_scope_restores_a_prior_value_exactly(pg_dsn, run_dir):
    db = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(sql.SQL("ALTER DATABASE {} SET lock_timeout = '7s'").format(sql.Identifier(db)))
        c.execute(sql.SQL("ALTER DATABASE {} SET work_mem = '8MB'").format(sql.Identifier(db)))
    before = database_settings(pg_dsn, db)
    action = SetParameter(name="lock_timeout", value="2s", scope="database", scope_name=db)
    [o] = execute([action], make_settings(pg_dsn=pg_dsn, apply=True), run_dir)
    assert o.verified and sorted(database_settings(pg_dsn, db)) == ["lock_timeout=2s", "work_mem=8MB"]
    assert next(r for r in audit_lines(run_dir) if r["step"] == "applying")["prior"]["value"] == "7s"
    rollback_run(run_dir, apply=True)
    assert sorted(database_settings(pg_dsn, db)) == sorted(before)


def test_unknown_role_and_missing_privilege_are_clear_errors(pg_dsn, run_dir, system_params):
    with pytest.raises(ActionInputError, match="role 'no_such_role' does not exist"):
        execute([SetParameter(name="lock_timeout", value="1s", scope="role", scope_name="no_such_role")],
                make_settings(pg_dsn=pg_dsn, apply=True), run_dir)
    with scratch_role(pg_dsn) as limited:
        settings = make_settings(pg_dsn=other_user_dsn(pg_dsn, limited), apply=True)
        with pytest.raises(ActionFailed, match="insufficient privilege") as err:
            execute([SetParameter(name="lock_timeout", value="1s")], settings, run_dir.parent)
        assert "superuser" in err.value.hint and "ALTER SYSTEM ON PARAMETER lock_timeout" in err.value.hint
    assert auto_conf(pg_dsn, "lock_timeout") == []



def test_rollback_run_passes_over_the_irreversible_terminate(system_params, run_dir):
    dsn = system_params
    settings = make_settings(pg_dsn=dsn, apply=True)
    with open_sessions(dsn, 1, LEAKY) as leaky:
        wait_idle_in_transaction(dsn, leaky, MIN_IDLE_S)
        execute([SetParameter(name="idle_in_transaction_session_timeout", value="10min"),
                 TerminateIdleSessions(application_name=LEAKY, min_idle_s=MIN_IDLE_S)], settings, run_dir)
    outcomes = rollback_run(run_dir, apply=True)  # newest first: the terminate, then the parameter
    # the terminate is said to be irreversible (nothing restored, nothing claimed); the parameter is restored
    assert [o.status for o in outcomes] == ["not reversible", "rolled back"]
    assert auto_conf(dsn, "idle_in_transaction_session_timeout") == []
