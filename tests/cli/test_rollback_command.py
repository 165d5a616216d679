"""``runbook rollback RUN_DIR [--action ID] [--apply]`` through runbook_lib.cli.main."""

from __future__ import annotations

import pytest

from runbook_lib.actions import CreateIndex, RedisConfigSet, execute
from runbook_lib.cli.commands import main
from tests.support import actions_support as test_actions_support
from tests.support.actions_support import (
    PG_SECRET_ENV,
    PLANTED,
    assert_no_secret,
    make_settings,
    pg_indexes,
    redis_config,
    steps,
)

pytestmark = pytest.mark.slow
pg_dsn = test_actions_support.pg_dsn  # the fixture: a fresh database per test

INDEX = CreateIndex(table="orders", columns=["user_id", "created_at"])
CACHE = RedisConfigSet(config={"maxmemory": "32mb", "maxmemory-policy": "allkeys-lfu"})


@pytest.fixture
def applied_run(pg_dsn, private_redis, tmp_path, monkeypatch):
    """A run folder in which an index and a Redis change were applied, with a planted PG password."""
    monkeypatch.setenv(PG_SECRET_ENV, PLANTED)
    monkeypatch.setenv("RUNBOOK_ACTOR", "cli-tester")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    before = (pg_indexes(pg_dsn), redis_config(private_redis.url))
    settings = make_settings(pg_dsn=pg_dsn, redis_url=private_redis.url, apply=True, pg_secret=True)
    execute([INDEX, CACHE], settings, run_dir)
    return run_dir, before


def test_dry_run_prints_commands_newest_first_and_changes_nothing(applied_run, pg_dsn, private_redis, capsys):
    run_dir, _ = applied_run
    applied = (pg_indexes(pg_dsn), redis_config(private_redis.url))
    assert main(["rollback", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.index(CACHE.id) < out.index(INDEX.id)  # reverse order of application
    assert "CONFIG SET maxmemory 0 maxmemory-policy noeviction" in out
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "public"."ix_orders_user_id_created_at"' in out
    assert "add --apply" in out
    assert (pg_indexes(pg_dsn), redis_config(private_redis.url)) == applied
    assert steps(run_dir)[-2:] == ["rollback_planned", "rollback_planned"]


def test_apply_one_action_then_the_rest(applied_run, pg_dsn, private_redis, capsys):
    run_dir, (pg_before, redis_before) = applied_run
    assert main(["rollback", str(run_dir), "--action", CACHE.id, "--apply"]) == 0
    assert redis_config(private_redis.url) == redis_before
    assert pg_indexes(pg_dsn) != pg_before  # the index was not asked for
    assert main(["rollback", str(run_dir), "--apply"]) == 0
    assert pg_indexes(pg_dsn) == pg_before
    assert main(["rollback", str(run_dir), "--apply"]) == 0
    captured = capsys.readouterr()
    assert "rolled back 1 action(s)" in captured.out and "nothing to undo" in captured.out
    assert steps(run_dir, INDEX.id)[-2:] == ["rolling_back", "rolled_back"]
    assert_no_secret(run_dir, captured.out, captured.err)


def test_unknown_action_and_missing_folder_are_one_line_errors(applied_run, tmp_path, capsys):
    run_dir, _ = applied_run
    assert main(["rollback", str(run_dir), "--action", "no-such-action"]) == 2
    err = capsys.readouterr().err
    assert "error: no action 'no-such-action'" in err and INDEX.id in err and "hint:" in err
    assert main(["rollback", str(tmp_path / "nowhere")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_rollback_refuses_a_different_server_than_the_run_used(applied_run, pg_dsn, private_postgres, capsys):
    run_dir, _ = applied_run
    params = run_dir / "parameters.yaml"
    params.write_text(params.read_text().replace(pg_dsn, private_postgres.dsn("postgres")))
    applied = pg_indexes(pg_dsn)
    assert main(["rollback", str(run_dir), "--action", INDEX.id, "--apply"]) == 2
    assert "refusing to roll back on a different server" in capsys.readouterr().err
    assert pg_indexes(pg_dsn) == applied
