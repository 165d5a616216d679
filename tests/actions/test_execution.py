"""Crash safety: a process SIGKILLed between the server change and its audit line.

The audit log must stay parseable, the half-finished step must be discoverable on the next run,
and rollback must still return the server to the exact prior state.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from runbook_lib.actions import CreateIndex, execute, read_audit, rollback_run, unresolved
from runbook_lib.actions.audit import AuditLog
from tests.support import actions_support as test_actions_support
from tests.support.actions_support import audit_lines, make_settings, pg_indexes, steps, write_parameters

pytestmark = pytest.mark.slow
pg_dsn = test_actions_support.pg_dsn  # the fixture: a fresh database per test

INDEX = CreateIndex(table="orders", columns=["user_id", "created_at"])
# The child imports pandas, psycopg and pydantic (~2 s on these machines); a hang is caught well before this.
CHILD_TIMEOUT_S = 60

# Runs the apply in a child process that kills itself with SIGKILL right after the index exists on
# the server and before the "applied" line is written (execution.after_change_hook is the test hook).
CHILD = textwrap.dedent("""
    import os, signal, sys
    from runbook_lib.actions import CreateIndex
    from runbook_lib.actions import execution as runner
    from runbook_lib.settings import load_settings

    run_dir = sys.argv[1]
    settings = load_settings(os.path.join(run_dir, "parameters.yaml"))
    runner.after_change_hook = lambda action: os.kill(os.getpid(), signal.SIGKILL)
    runner.execute([CreateIndex(table="orders", columns=["user_id", "created_at"])], settings, run_dir,
                   actor="doomed")
    print("survived", flush=True)
""")


@pytest.fixture
def crashed_run(pg_dsn, tmp_path):
    """A run folder whose apply was killed between CREATE INDEX and its audit line."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    settings = make_settings(pg_dsn=pg_dsn, apply=True)
    write_parameters(run_dir, settings)
    before = pg_indexes(pg_dsn)
    child = subprocess.run([sys.executable, "-c", CHILD, str(run_dir)], capture_output=True, text=True, check=False,
                           timeout=CHILD_TIMEOUT_S)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert "survived" not in child.stdout
    return run_dir, settings, before


def test_killed_apply_leaves_a_parseable_log_and_a_discoverable_state(crashed_run, pg_dsn):
    run_dir, settings, before = crashed_run
    assert steps(run_dir) == ["planned", "approved", "applying"]  # strict parse: every line is whole
    assert "ix_orders_user_id_created_at" in [n for n, _, _ in pg_indexes(pg_dsn)]  # the change happened
    [pending] = unresolved(read_audit(run_dir).records)
    assert pending.action_id == INDEX.id and pending.prior["exists"] is False

    # the next run inspects the server, says what it found, and does not apply twice
    [o] = execute([INDEX], settings, run_dir, actor="next-shift")
    assert o.status == "already applied"
    discovered = next(r for r in audit_lines(run_dir) if r["step"] == "discovered")
    assert discovered["applied_on_server"] is True and discovered["of_step"] == "applying"
    assert unresolved(read_audit(run_dir).records) == []

    # rollback restores the state from before the crashed run (the first prior), exactly
    [undone] = rollback_run(run_dir, apply=True)
    assert undone.status == "rolled back"
    assert pg_indexes(pg_dsn) == before


def test_rollback_straight_after_the_crash(crashed_run, pg_dsn):
    run_dir, _, before = crashed_run
    [planned] = rollback_run(run_dir)  # dry run: says the apply was never confirmed, changes nothing
    assert "never confirmed" in planned.message
    assert "ix_orders_user_id_created_at" in [n for n, _, _ in pg_indexes(pg_dsn)]
    rollback_run(run_dir, apply=True)
    assert pg_indexes(pg_dsn) == before


def test_torn_last_line_is_skipped_and_never_glued_to_the_next(tmp_path):
    log = AuditLog(tmp_path)
    log.append("planned", action_id="a", kind="redis.config_set", inputs={"config": {"maxmemory": "1mb"}})
    with open(log.path, "ab") as f:  # a write cut short by a crash
        f.write(b'{"ts": "2026-01-01T00:00:00+00:00", "step": "appl')
    read = read_audit(tmp_path)
    assert [r["step"] for r in read.records] == ["planned"] and read.torn_lines == [2]
    log.append("applying", action_id="a", kind="redis.config_set", inputs={"config": {"maxmemory": "1mb"}},
               prior={"maxmemory": "0"})
    read = read_audit(tmp_path)
    assert [r["step"] for r in read.records] == ["planned", "applying"] and read.torn_lines == [2]
    assert unresolved(read.records)[0].prior == {"maxmemory": "0"}
