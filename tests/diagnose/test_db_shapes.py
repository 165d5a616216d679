"""A database incident that is not the lab's: the slow statement uses an index, just a poor one (it walks a
third of the table to return 20 rows). No sequential scan, no N+1. On a real PostgreSQL with HypoPG, through
the live evidence path notebook 02 uses (``steps.evidence``), against a healthy control with the right index."""

from __future__ import annotations

import psycopg
import pytest

from runbook_lib.diagnose import statements as db_dx
from runbook_lib.diagnose.hypotheses import database_hypothesis
from runbook_lib.settings import Postgres
from runbook_lib.sources import pg_statistics as stats
from runbook_lib.steps import evidence
from tests.support.actions_support import scratch_database

pytestmark = pytest.mark.slow

ROWS = 150_000
CALLS = 120
QUERY = ("SELECT id, created_at FROM events WHERE tenant_id = %s AND kind = %s "
         "ORDER BY created_at DESC LIMIT 20")


def _seed(dsn: str, good_index: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        c.execute("CREATE TABLE events (id bigserial PRIMARY KEY, tenant_id int NOT NULL, kind text NOT NULL, "
                  "created_at timestamptz NOT NULL, payload text)")
        c.execute("INSERT INTO events (tenant_id, kind, created_at, payload) "
                  "SELECT g %% 500, (ARRAY['click','view','buy'])[1 + g %% 3], now() - g * interval '1 second', "
                  "repeat('x', 200) FROM generate_series(1, %s) g", (ROWS,))
        # the poor index: kind has three values; the good one leads with the selective column
        c.execute("CREATE INDEX events_tenant_kind_idx ON events (tenant_id, kind)" if good_index
                  else "CREATE INDEX events_kind_idx ON events (kind)")
        c.execute("ANALYZE events")


def _window(dsn: str) -> tuple:
    with stats.connect(dsn) as conn:
        start = stats.collect(conn)
        with psycopg.connect(dsn, autocommit=True) as app:
            for i in range(CALLS):
                app.execute(QUERY, (i % 500, "view")).fetchall()
        end = stats.collect(conn)
    snap = db_dx.to_snapshots(start, end, CALLS)
    snap.statements = db_dx.fingerprint_groups(snap.statements)
    return snap


@pytest.mark.parametrize("good_index", [False, True], ids=["poor-index", "healthy-control"])
def test_a_statement_walking_a_poor_index_is_found_and_fixed_by_a_better_one(private_postgres, good_index):
    with scratch_database(private_postgres, "dbshape") as dsn:
        _seed(dsn, good_index)
        snap = _window(dsn)
        over = db_dx.over_reading(snap.statements)
        h = database_hypothesis(__import__("pandas").DataFrame(), snap)
        proposals = evidence.pg_index_proposals(Postgres(dsn=dsn), snap)
    reads = next(e for e in h.evidence if e.check.startswith("statements read far more"))
    if good_index:  # the right index exists: nothing flagged, nothing proposed
        assert over.empty and not reads.supports and proposals == []
        return
    assert not db_dx.seq_scan_heavy(snap.tables).shape[0]  # no sequential scan to point at
    assert len(over) == 1 and "FROM events WHERE tenant_id" in over.iloc[0]["query"]
    assert over.iloc[0]["blocks_per_row"] >= db_dx.OVERREAD_BLOCKS_PER_ROW
    assert reads.supports and "of DB time" in reads.observed
    assert [(p["table"], p["columns"][0]) for p in proposals] == [("events", "tenant_id")]


def test_runbook_diagnose_db_reports_the_same_over_reading_statement(private_postgres, capsys):
    from runbook_lib.cli.commands import main

    with scratch_database(private_postgres, "dbshape") as dsn:
        _seed(dsn, good_index=False)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("SELECT pg_stat_statements_reset()")
        with psycopg.connect(dsn, autocommit=True) as app:
            for i in range(CALLS):
                app.execute(QUERY, (i % 500, "view")).fetchall()
        assert main(["diagnose", "db", "--dsn", dsn, "--requests", str(CALLS), "--json"]) == 0  # since reset
    import json

    report = json.loads(capsys.readouterr().out)
    assert [r["query"][:40] for r in report["over_reading"]] == ["SELECT id, created_at FROM events WHERE "]
    assert [(p["table"], p["columns"][0]) for p in report["index_proposals"]] == [("events", "tenant_id")]
