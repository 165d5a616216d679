"""Live diagnosis against the private PostgreSQL: a seeded workload with a known N+1 and known missing
indexes (runbook_lib.lab.workload), read through pg_stat_statements deltas and evaluated with HypoPG."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from runbook_lib.actions import CreateIndex, execute
from runbook_lib.cli import commands as cli
from runbook_lib.diagnose import statements as db_dx
from runbook_lib.lab import workload
from runbook_lib.plan import index_advisor as advisor
from runbook_lib.report import db_diagnosis as report
from runbook_lib.settings import Postgres
from runbook_lib.sources import pg_statistics as stats
from runbook_lib.steps import evidence
from tests.support.actions_support import make_settings, scratch_database

pytestmark = pytest.mark.slow

REQUESTS = 6
SCALE = 1.0


@pytest.fixture(scope="module")
def seeded(private_postgres):
    """A fresh database with the workload's tables and HypoPG; dropped at the end of the module."""
    with scratch_database(private_postgres, "pgdx") as dsn:
        sizes = workload.seed(dsn, SCALE)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION hypopg")
        yield dsn, sizes


def _window(dsn, sizes, requests=REQUESTS):
    with stats.connect(dsn) as conn:
        start = stats.collect(conn)
        workload.run_requests(dsn, requests, sizes["users"], sizes["products"])
        end = stats.collect(conn)
    return start, end


@pytest.fixture(scope="module")
def window(seeded):
    dsn, sizes = seeded
    return _window(dsn, sizes)


def test_snapshots_have_the_fixture_shapes(window):
    _, end = window
    assert list(end.statements.columns) == stats.STATEMENT_COLUMNS
    assert list(end.tables.columns) == stats.TABLE_COLUMNS
    assert {"tablename", "indexname", "indexdef", "valid"} <= set(end.indexes.columns)
    assert {"state", "wait_event_type", "duration_s", "query"} <= set(end.activity.columns)
    assert end.settings["max_connections"] > 0 and end.settings["pg_stat_statements_version"]
    # the diagnosis' own reads are not in the statements it analyses
    assert not end.statements["query"].str.contains("runbook:diagnose").any()


def test_n_plus_one_found_with_its_calls_per_request(window):
    start, end = window
    snap = db_dx.to_snapshots(start, end, REQUESTS)
    n1 = db_dx.n_plus_one(db_dx.fingerprint_groups(snap.statements))
    assert len(n1) == 1
    top = n1.iloc[0]
    assert "FROM orders WHERE user_id = $1" in top.query
    assert top.calls_per_request == workload.PAGE_SIZE  # exactly 25 calls per request
    assert top.rows_per_call <= 10 and top.time_share > 0.5
    # the other statements are about once per request or a few times: not N+1
    others = snap.statements.drop(index=n1.index)
    assert (others["calls_per_request"] <= workload.PRODUCTS_PER_REQUEST).all()
    heavy = set(db_dx.seq_scan_heavy(snap.tables).index)
    assert heavy == {"orders", "products"}


def test_advisor_proposes_exactly_the_missing_indexes(seeded, window):
    dsn, _ = seeded
    start, end = window
    snap = db_dx.to_snapshots(start, end, REQUESTS)
    with stats.connect(dsn) as conn:
        result = advisor.advise(conn, snap.statements, snap.tables, snap.indexes)
    got = {(p.table, tuple(p.columns)) for p in result.proposals}
    assert got == workload.EXPECTED_INDEXES  # and nothing for users (primary key, email index)
    for p in result.proposals:
        assert p.size_bytes > 0 and p.weighted_reduction >= advisor.MIN_COST_REDUCTION
        assert all(s["cost_after"] <= s["cost_before"] / 2 for s in p.statements)
    orders = next(p for p in result.proposals if p.table == "orders")
    assert orders.statements[0]["calls"] == REQUESTS * workload.PAGE_SIZE
    # no hypothetical index is left in the session, and none became real
    with psycopg.connect(dsn) as c:
        names = {r[0] for r in c.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert names == {"users_pkey", "users_email_idx", "products_pkey", "orders_pkey"}


def test_cli_json_since_reset(seeded, capsys):
    dsn, sizes = seeded
    with psycopg.connect(dsn, autocommit=True) as c:  # reset this database's statements only
        c.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                  "WHERE datname = current_database()), 0)")
    workload.run_requests(dsn, REQUESTS, sizes["users"], sizes["products"], seed_value=11)
    assert cli.main(["diagnose", "db", "--dsn", dsn, "--json", "--requests", str(REQUESTS)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["window"]["mode"] == "since_reset"
    [n1] = out["n_plus_one"]
    assert n1["calls_per_request"] == workload.PAGE_SIZE
    assert {(p["table"], tuple(p["columns"])) for p in out["index_proposals"]} == workload.EXPECTED_INDEXES
    assert all(p["ddl"].startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS") for p in out["index_proposals"])
    [rw] = out["rewrites"]
    assert rw["parent_table"] == "users" and "LEFT JOIN LATERAL" in rw["join"]
    assert out["pool"]["littles_law"]["recommended_total"] >= 2


def test_cli_text_window_and_refusals(seeded, capsys, private_postgres):
    dsn, _ = seeded
    assert cli.main(["diagnose", "db", "--dsn", dsn, "--window", "0.2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("PostgreSQL diagnosis: postgres://127.0.0.1:")
    assert "two snapshots" in text and "Little's law" in text
    # a password in the DSN is refused and never printed
    url = dsn.replace("postgres@", "postgres:hunter2-secret@")
    assert cli.main(["diagnose", "db", "--dsn", url]) == 2
    err = capsys.readouterr().err
    assert "hunter2-secret" not in err and "error:" in err and "hint:" in err
    # a database without pg_stat_statements: one line and the fix, no traceback
    bare = f"pgbare_{uuid.uuid4().hex[:8]}"
    admin = private_postgres.dsn("postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(bare)))
    try:
        assert cli.main(["diagnose", "db", "--dsn", private_postgres.dsn(bare)]) == 2
        err = capsys.readouterr().err
        assert "pg_stat_statements is loaded but not created" in err
        assert "hint: CREATE EXTENSION pg_stat_statements" in err and "Traceback" not in err
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(bare)))


def test_missing_hypopg_is_reported_with_the_fix_and_the_rest_still_runs(seeded, window):
    dsn, _ = seeded
    start, end = window
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP EXTENSION hypopg")
    try:
        with stats.connect(dsn) as conn:
            d = report.diagnose(conn, start, end, REQUESTS)
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION hypopg")
    assert d.index_proposals == [] and "hypopg is not installed" in d.advisor["error"]
    assert d.advisor["hint"] == "CREATE EXTENSION hypopg;"
    assert len(d.n_plus_one) == 1
    assert "not evaluated: hypopg is not installed" in d.to_text()


def test_role_without_pg_read_all_stats_gets_a_warning(seeded, private_postgres):
    dsn, sizes = seeded
    role = f"rb_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        workload.run_requests(dsn, 1, sizes["users"], sizes["products"])  # statements of another role
        with stats.connect(dsn.replace("postgres@", f"{role}@")) as conn:
            snap = stats.collect(conn)
        assert any("GRANT pg_read_all_stats" in w for w in snap.warnings)
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_one_statement_split_over_queryids_by_parameter_type_is_grouped(seeded):
    """psycopg binds 5 as int2 and 40000 as int4: pg_stat_statements records two queryids."""
    dsn, _ = seeded
    q = "SELECT count(*) AS split_test FROM users WHERE id > %s"
    with stats.connect(dsn) as conn:
        start = stats.collect(conn)
        with psycopg.connect(dsn, autocommit=True) as c:
            for v in (5, 40_000, 6, 50_000):
                c.execute(q, (v,))
        end = stats.collect(conn)
    d = db_dx.per_request(db_dx.statement_deltas(start.statements, end.statements), 4)
    split = d[d["query"].str.contains("split_test")]
    assert len(split) == 2 and split["calls"].tolist() == [2.0, 2.0]
    grouped = db_dx.fingerprint_groups(d)
    [row] = grouped[grouped["query"].str.contains("split_test")].itertuples()
    assert row.calls == 4 and row.calls_per_request == 1.0 and len(row.queryids) == 2


def test_live_entry_points_for_the_evidence_layer(seeded):
    dsn, sizes = seeded
    pg = Postgres(dsn=dsn)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                  "WHERE datname = current_database()), 0)")
    workload.run_requests(dsn, REQUESTS, sizes["users"], sizes["products"], seed_value=3)
    snap, meta = evidence.pg_snapshots(pg, requests=REQUESTS)
    assert meta["requests"] == REQUESTS and meta["missing"] == []
    assert len(db_dx.n_plus_one(snap.statements)) == 1
    proposals = evidence.pg_index_proposals(pg, snap)
    assert {(p["table"], tuple(p["columns"])) for p in proposals} == workload.EXPECTED_INDEXES
    assert all({"table", "columns", "reason", "share"} <= set(p) for p in proposals)


def test_a_candidate_hypopg_cannot_build_is_skipped_not_fatal(seeded):
    dsn, _ = seeded
    with psycopg.connect(dsn, autocommit=True) as c:  # box has '=' but no btree operator class
        c.execute("CREATE TABLE shapes AS SELECT g AS id, box(point(g, g), point(g + 1, g + 1)) AS b "
                  "FROM generate_series(1, 20000) g")
        c.execute("ANALYZE shapes")
    statements = pd.DataFrame({"query": ["SELECT id FROM shapes WHERE b = $1"], "calls": [10.0],
                               "time_share": [1.0]}, index=pd.Index([1], name="queryid"))
    try:
        with stats.connect(dsn) as conn:
            evaluations, skipped = advisor.evaluate(conn, statements,
                                                    {advisor.Candidate("shapes", ("b",)): {1}})
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("DROP TABLE shapes")
    assert evaluations == []
    assert skipped[0]["candidate"] == "shapes (b)" and "operator class" in skipped[0]["why"]


def test_proposals_applied_through_the_framework_fix_the_scans(seeded, window, tmp_path):
    """Last in the module: it creates the indexes. After them the advisor proposes nothing."""
    dsn, sizes = seeded
    start, end = window
    snap = db_dx.to_snapshots(start, end, REQUESTS)
    with stats.connect(dsn) as conn:
        proposals = advisor.advise(conn, snap.statements, snap.tables, snap.indexes).proposals
    actions = [CreateIndex(**p.action_inputs()) for p in proposals]
    outcomes = execute(actions, make_settings(pg_dsn=dsn, apply=True), tmp_path, actor="tester")
    assert [(o.status, o.verified) for o in outcomes] == [("applied", True)] * len(proposals)
    assert all("EXPLAIN of 1 statement(s) uses it" in o.message or o.verified for o in outcomes)
    before_ms = snap.statements.set_index("query").loc[workload.USER_ORDERS.replace("%s", "$1", 1)
                                                        .replace("%s", "$2"), "mean_ms"]
    start2, end2 = _window(dsn, sizes)
    snap2 = db_dx.to_snapshots(start2, end2, REQUESTS)
    with stats.connect(dsn) as conn:
        again = advisor.advise(conn, snap2.statements, snap2.tables, snap2.indexes)
    assert again.proposals == []
    after = db_dx.n_plus_one(db_dx.fingerprint_groups(snap2.statements))
    # indexes do not remove the N+1 loop, they make each call cheap
    assert len(after) <= 1 and snap2.statements["mean_ms"].max() < before_ms
