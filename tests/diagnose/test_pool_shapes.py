"""A pool held by sessions idle in transaction, on a real PostgreSQL, against a healthy control under the same
number of connections: the holders are named, the plan ends them and bounds them (not a longer acquire timeout),
and the plan really applies and rolls back."""

from __future__ import annotations

import pandas as pd
import psycopg

from runbook_lib.actions import build_action, execute, rollback_run
from runbook_lib.diagnose import statements as db_dx
from runbook_lib.diagnose.hypotheses import application_hypothesis
from runbook_lib.model import Snapshots
from runbook_lib.plan.ranking import propose
from runbook_lib.sources.pg_statistics import read_activity
from tests.support import actions_support
from tests.support.actions_support import make_settings, open_sessions, steps, wait_idle_in_transaction

pg_dsn = actions_support.pg_dsn  # the fixture: a fresh database per test

POOL = 10
LEAKY = "nightly-export"


def _diagnose(dsn: str):
    with psycopg.connect(dsn, autocommit=True) as c:
        activity = read_activity(c)
    snap = Snapshots(activity=activity, app_config={"db_pool_max": POOL})
    h = application_hypothesis(pd.DataFrame(), snap, pd.DataFrame(), None)
    holders = db_dx.idle_tx_holders(activity).to_dict("records")
    return h, holders, propose([h], None, {"db_pool_max": POOL}, [], pool_holders=holders)


def test_a_pool_held_idle_in_transaction_is_named_ended_and_bounded(pg_dsn, tmp_path):
    with open_sessions(pg_dsn, 7, LEAKY) as leaky, open_sessions(pg_dsn, 2, "web", in_transaction=False) as web:
        wait_idle_in_transaction(pg_dsn, leaky, db_dx.IDLE_TX_HOLD_S)
        h, holders, actions = _diagnose(pg_dsn)
        assert not h.disproved
        held = next(e for e in h.evidence if e.check.startswith("connections held idle in transaction"))
        assert held.supports and "7 sessions = 70% of the pool" in held.observed and LEAKY in held.observed
        assert holders[0]["application_name"] == LEAKY and holders[0]["sessions"] == 7
        kinds = [a.kind for a in actions]
        assert kinds[:2] == ["postgres.terminate_idle_sessions", "postgres.set_parameter"]
        assert "recommendation" in kinds
        assert not any("db_pool_timeout_s" in a.inputs for a in actions)  # the palliative is not proposed
        # the plan runs as planned: the holders are ended, the web sessions stay, the timeout is set and undone
        run = [build_action(a.kind, a.inputs) for a in actions if a.executable]
        assert [r.id for r in run] == [a.id for a in actions if a.executable]
        outcomes = execute(run, make_settings(pg_dsn=pg_dsn, apply=True), tmp_path)
        assert [o.status for o in outcomes] == ["applied", "applied"], [o.message for o in outcomes]
        assert all(_dead(c) for c in leaky)
        for c in web:
            assert c.execute("SELECT 1").fetchone() == (1,)
        assert "applied" in steps(tmp_path)
        undone = rollback_run(tmp_path, apply=True)
        assert sorted(o.status for o in undone) == ["not reversible", "rolled back"]


def _dead(c: psycopg.Connection) -> bool:
    try:
        c.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_healthy_control_same_connections_no_holder_no_action(pg_dsn):
    # as many connections, but idle between requests (not in a transaction): nothing holds the pool
    with open_sessions(pg_dsn, 7, LEAKY, in_transaction=False), open_sessions(pg_dsn, 2, "web", in_transaction=False):
        h, holders, actions = _diagnose(pg_dsn)
    assert holders == []
    assert h.disproved and not any(e.supports for e in h.evidence)
    assert actions == []
