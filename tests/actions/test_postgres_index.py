"""CreateIndex through the framework, against a fresh database on the private PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from runbook_lib.actions import (
    ActionFailed,
    ActionInputError,
    ApprovalRequired,
    CreateIndex,
    execute,
    outcomes_frame,
    plans_frame,
    rollback_run,
)
from runbook_lib.settings import Remediation
from tests.support import actions_support as test_actions_support
from tests.support.actions_support import (
    PG_SECRET_ENV,
    PLANTED,
    assert_no_secret,
    audit_lines,
    make_settings,
    pg_indexes,
    steps,
)

pytestmark = pytest.mark.slow
pg_dsn = test_actions_support.pg_dsn  # the fixture: a fresh database per test

INDEX = CreateIndex(table="orders", columns=["user_id", "created_at"])


def test_dry_run_changes_nothing_on_the_server(pg_dsn, run_dir):
    before = pg_indexes(pg_dsn)
    outcomes = execute([INDEX], make_settings(pg_dsn=pg_dsn), run_dir, actor="tester")
    assert pg_indexes(pg_dsn) == before
    assert [o.status for o in outcomes] == ["planned"]
    lines = audit_lines(run_dir)
    assert [r["step"] for r in lines] == ["planned"]
    assert lines[0]["dry_run"] is True
    assert lines[0]["commands"] == INDEX.plan().commands
    assert 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "ix_orders_user_id_created_at"' in lines[0]["commands"][1]


def test_apply_verify_second_apply_noop_and_rollback_restores_exactly(pg_dsn, run_dir):
    before = pg_indexes(pg_dsn)
    settings = make_settings(pg_dsn=pg_dsn, apply=True)

    [first] = execute([INDEX], settings, run_dir, actor="tester")
    assert first.status == "applied" and first.changed and first.verified
    after = pg_indexes(pg_dsn)
    added = [r for r in after if r not in before]
    assert [(n, valid) for n, _, valid in added] == [("ix_orders_user_id_created_at", True)]
    assert "(user_id, created_at)" in added[0][1]

    [second] = execute([INDEX], settings, run_dir, actor="tester")
    assert second.status == "already applied" and not second.changed and second.message == "already applied"
    assert pg_indexes(pg_dsn) == after

    assert steps(run_dir, INDEX.id) == ["planned", "approved", "applying", "applied", "verified"] * 2
    applying = next(r for r in audit_lines(run_dir) if r["step"] == "applying")
    assert applying["prior"]["exists"] is False
    assert applying["endpoint"].startswith("postgres://127.0.0.1:")

    [undone] = rollback_run(run_dir, apply=True, actor="tester")
    assert undone.status == "rolled back"
    assert pg_indexes(pg_dsn) == before
    rolled = audit_lines(run_dir)[-1]
    assert rolled["step"] == "rolled_back" and rolled["restored"] is True
    assert rollback_run(run_dir, apply=True) == []  # nothing left to undo


def test_rollback_leaves_an_index_that_existed_before(pg_dsn, run_dir):
    settings = make_settings(pg_dsn=pg_dsn, apply=True)
    earlier = run_dir.parent / "earlier"
    earlier.mkdir()
    execute([INDEX], settings, earlier, actor="setup")  # someone made it before this run
    before = pg_indexes(pg_dsn)
    [o] = execute([INDEX], settings, run_dir, actor="tester")
    assert o.status == "already applied"
    assert rollback_run(run_dir, apply=True) == []
    assert pg_indexes(pg_dsn) == before


def test_missing_column_fails_before_any_change_and_is_audited(pg_dsn, run_dir):
    before = pg_indexes(pg_dsn)
    bad = CreateIndex(table="orders", columns=["no_such_column"])
    with pytest.raises(ActionInputError, match="has no column no_such_column"):
        execute([bad], make_settings(pg_dsn=pg_dsn, apply=True), run_dir)
    assert pg_indexes(pg_dsn) == before
    lines = audit_lines(run_dir)
    assert [r["step"] for r in lines] == ["planned", "approved", "applying", "failed"]
    assert lines[-1]["phase"] == "apply"
    # a failed step with nothing changed: the undo is a harmless no-op that restores the prior exactly
    [o] = rollback_run(run_dir, apply=True)
    assert o.status == "nothing to undo" and pg_indexes(pg_dsn) == before


def test_a_failure_stops_the_run_and_later_actions_do_not_run(pg_dsn, run_dir):
    good = CreateIndex(table="orders", columns=["status"])
    with pytest.raises(ActionInputError, match="table public.missing does not exist") as err:
        execute([INDEX, CreateIndex(table="missing", columns=["x"]), good],
                make_settings(pg_dsn=pg_dsn, apply=True), run_dir)
    assert "pg-index-orders-user_id-created_at" in str(err.value)  # says what is still applied
    names = [n for n, _, _ in pg_indexes(pg_dsn)]
    assert "ix_orders_user_id_created_at" in names and "ix_orders_status" not in names
    assert steps(run_dir, good.id) == ["planned"]
    rollback_run(run_dir, apply=True)
    assert "ix_orders_user_id_created_at" not in [n for n, _, _ in pg_indexes(pg_dsn)]


def test_gate_refuses_apply_in_live_mode_without_approval(pg_dsn, run_dir):
    before = pg_indexes(pg_dsn)
    # the parameters model refuses this too; bypass it to prove the gate holds on its own
    unapproved = make_settings(pg_dsn=pg_dsn, mode="live").model_copy(
        update={"remediation": Remediation(apply=True, approved_by="alice")})
    with pytest.raises(ApprovalRequired, match="remediation.change_ticket"):
        execute([INDEX], unapproved, run_dir)
    fixture_mode = make_settings(pg_dsn=pg_dsn, mode="fixture").model_copy(
        update={"remediation": Remediation(apply=True)})
    with pytest.raises(ApprovalRequired, match="fixture"):
        execute([INDEX], fixture_mode, run_dir)
    assert pg_indexes(pg_dsn) == before
    assert audit_lines(run_dir) == []


def test_live_mode_records_approval_on_every_line(pg_dsn, run_dir):
    settings = make_settings(pg_dsn=pg_dsn, mode="live", apply=True, approved_by="alice", change_ticket="CHG-42")
    execute([INDEX], settings, run_dir, actor="bob")
    rollback_run(run_dir, apply=True, actor="carol")
    lines = audit_lines(run_dir)
    assert {r["step"] for r in lines} >= {"planned", "approved", "applying", "applied", "verified",
                                          "rolling_back", "rolled_back"}
    for r in lines:
        assert (r["approved_by"], r["change_ticket"], r["mode"]) == ("alice", "CHG-42", "live")
        assert r["ts"].endswith("+00:00")
    assert {r["actor"] for r in lines} == {"bob", "carol"}


def test_planted_password_is_in_no_audit_line(pg_dsn, run_dir, monkeypatch):
    monkeypatch.setenv(PG_SECRET_ENV, PLANTED)
    settings = make_settings(pg_dsn=pg_dsn, apply=True, pg_secret=True)
    outcomes = execute([INDEX], settings, run_dir, actor="tester")
    rollback_run(run_dir, apply=True)
    table = plans_frame([INDEX]).to_string() + outcomes_frame(outcomes).to_string()
    assert_no_secret(run_dir, table)
    assert (run_dir / "parameters.yaml").read_text().count(PG_SECRET_ENV) == 1  # the reference, not the value


def test_lock_timeout_bounds_the_wait_and_the_failure_is_audited(pg_dsn, run_dir):
    quick = CreateIndex(table="orders", columns=["user_id"], lock_timeout_ms=100)
    before = pg_indexes(pg_dsn)
    with psycopg.connect(pg_dsn) as blocker:  # an open transaction holding the table lock
        blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(ActionFailed, match="lock timeout") as err:
            execute([quick], make_settings(pg_dsn=pg_dsn, apply=True), run_dir)
        blocker.rollback()
    assert "runbook rollback" in str(err.value)
    assert pg_indexes(pg_dsn) == before
    failed = audit_lines(run_dir)[-1]
    assert (failed["step"], failed["phase"], failed["result"]) == ("failed", "apply", "failed")
    [o] = rollback_run(run_dir, apply=True)
    assert o.status == "nothing to undo" and pg_indexes(pg_dsn) == before
