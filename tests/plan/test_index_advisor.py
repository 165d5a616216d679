"""Pure parts of the live PostgreSQL diagnosis: no server needed."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pglast
import pytest

from runbook_lib.actions import ActionInputError, CreateIndex
from runbook_lib.diagnose import statements as db_dx
from runbook_lib.errors import ExtensionMissing
from runbook_lib.plan import index_advisor as advisor
from runbook_lib.plan import pool_sizing as pool
from runbook_lib.plan import query_rewrites as rewrite
from runbook_lib.sources import pg_explain as explain
from runbook_lib.sources import pg_statistics as stats
from runbook_lib.sources.fixture_bundle import FixtureBundle as load_bundle

BUNDLE = Path(__file__).resolve().parents[2] / "fixtures" / "d2-synthetic"


def test_pg_stat_statements_columns_follow_the_extension_version():
    old = stats.pgss_columns("1.7")  # PostgreSQL 12
    assert (old["total_exec_time"], old["mean_exec_time"]) == ("total_time", "mean_time")
    assert "total_plan_time" not in old
    pg13 = stats.pgss_columns("1.8")
    assert (pg13["total_exec_time"], pg13["mean_exec_time"], pg13["blk_read_time"]) == (
        "total_exec_time", "mean_exec_time", "blk_read_time")
    assert stats.pgss_columns("1.10")["blk_read_time"] == "blk_read_time"  # PostgreSQL 15
    pg17 = stats.pgss_columns("1.11")
    assert (pg17["blk_read_time"], pg17["blk_write_time"]) == ("shared_blk_read_time", "shared_blk_write_time")
    assert not stats.pgss_has_toplevel("1.8") and stats.pgss_has_toplevel("1.9")
    assert stats.pgss_has_info("1.11") and not stats.pgss_has_info("1.8")


def test_missing_extension_says_how_to_fix_it():
    with pytest.raises(ExtensionMissing, match="not loaded") as err:
        stats.require_pg_stat_statements({"shared_preload_libraries": "", "pg_stat_statements_version": None})
    assert "shared_preload_libraries = 'pg_stat_statements'" in err.value.hint
    with pytest.raises(ExtensionMissing, match="not created in database 'app'") as err:
        stats.require_pg_stat_statements({"shared_preload_libraries": "pg_stat_statements",
                                          "pg_stat_statements_version": None, "database": "app"})
    assert "CREATE EXTENSION pg_stat_statements" in err.value.hint
    assert stats.require_pg_stat_statements({"shared_preload_libraries": "auto_explain,pg_stat_statements",
                                             "pg_stat_statements_version": "1.10"}) == "1.10"


def _fixture_statements():
    b = load_bundle(BUNDLE)
    d = db_dx.statement_deltas(b.snapshot("pg_stat_statements.start"), b.snapshot("pg_stat_statements.end"))
    return db_dx.per_request(d, 700_000)


def test_fingerprint_groups_merge_one_statement_split_over_queryids():
    d = _fixture_statements()
    # the same statement recorded under a second queryid (another role), spelled differently
    extra = d.iloc[[0]].copy()
    extra.index = pd.Index([42], name=d.index.name)
    extra["query"] = extra["query"].str.lower()
    both = pd.concat([d, extra])
    groups = db_dx.fingerprint_groups(both)
    assert len(groups) == len(d)
    top = groups.iloc[0]
    assert top.calls == 2 * d.iloc[0].calls
    assert math.isclose(top.calls_per_request, 2 * d.iloc[0].calls_per_request)
    assert sorted(top.queryids) == sorted([int(d.index[0]), 42])
    assert groups.index[0] == d.index[0]  # the queryid with the most time names the group
    assert math.isclose(groups["time_share"].sum(), 1.0)
    # same answer as before on the fixture (no duplicates there)
    assert list(db_dx.n_plus_one(db_dx.fingerprint_groups(d)).index) == list(db_dx.n_plus_one(d).index)


def test_referenced_columns_resolve_aliases_joins_and_order():
    cols = advisor.referenced_columns(
        "SELECT o.id FROM orders o JOIN products p ON p.id = o.product_id "
        "WHERE o.user_id = ANY($1) AND created_at >= now() - interval $2 AND category IN ($3, $4) "
        "AND o.status IS NULL ORDER BY o.created_at DESC LIMIT $5",
        {"orders": ["id", "user_id", "created_at", "product_id", "status"], "products": ["id", "category"]})
    assert cols["orders"].equality == ["user_id", "status"]
    assert cols["orders"].range == ["created_at"] and cols["orders"].order == ["created_at"]
    assert cols["orders"].join == ["product_id"]
    assert cols["products"].equality == ["category"] and cols["products"].join == ["id"]
    assert advisor.referenced_columns("UPDATE orders SET status = $1 WHERE id = $2") is None
    assert advisor.referenced_columns("SELECT a FROM t WHERE x = 1 UNION SELECT a FROM u") is None


def _frames():
    statements = pd.DataFrame({
        "query": ["SELECT * FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2",
                  "SELECT * FROM users WHERE id = $1", "SELECT * FROM small WHERE x = $1"],
        "calls": [100.0, 50.0, 10.0], "total_exec_time": [900.0, 80.0, 20.0], "time_share": [0.9, 0.08, 0.02],
    }, index=pd.Index([1, 2, 3], name="queryid"))
    tables = pd.DataFrame({"n_live_tup": [1_000_000, 50_000, 100]}, index=pd.Index(["orders", "users", "small"]))
    indexes = pd.DataFrame([
        {"tablename": "users", "indexname": "users_pkey", "valid": True, "columns": ["id"], "method": "btree",
         "partial": False},
        {"tablename": "orders", "indexname": "orders_bad", "valid": False, "columns": ["user_id"],
         "method": "btree", "partial": False},
    ])
    return statements, tables, indexes


def test_candidates_singles_and_pairs_skip_covered_and_small_tables():
    statements, tables, indexes = _frames()
    cands, skipped = advisor.generate(statements, tables, indexes)
    got = {(c.table, c.columns) for c in cands}
    # orders: both singles and both ordered pairs; the INVALID index covers nothing
    assert got == {("orders", ("user_id",)), ("orders", ("created_at",)), ("orders", ("user_id", "created_at")),
                   ("orders", ("created_at", "user_id"))}
    assert skipped == []


def _ev(table, cols, costs, size=8192):
    return advisor.Evaluation(advisor.Candidate(table, tuple(cols)), size,
                              [advisor.StatementCost(q, f"SELECT * FROM {table} WHERE q = {q}", calls, 0.5, before, after)
                               for q, calls, before, after in costs])


def test_choice_keeps_only_halving_candidates_prefers_narrow_and_drops_covered_prefix():
    evs = [
        _ev("orders", ["user_id"], [(1, 100, 1000, 300)]),  # helps (70%)
        _ev("orders", ["user_id", "created_at"], [(1, 100, 1000, 10)]),  # much cheaper: wins for q1
        _ev("orders", ["status"], [(1, 100, 1000, 600)]),  # 40%: never kept
        _ev("products", ["sku"], [(2, 5, 500, 8)]),
        _ev("products", ["sku", "name"], [(2, 5, 500, 7.9)]),  # not 10% cheaper than (sku): narrow wins
    ]
    chosen = advisor.choose(evs)
    assert {(e.candidate.table, e.candidate.columns) for e in chosen} == {
        ("orders", ("user_id", "created_at")), ("products", ("sku",))}
    p = advisor.to_proposal(next(e for e in chosen if e.candidate.table == "orders"))
    assert p.columns == ["user_id", "created_at"] and p.statements[0]["calls"] == 100
    assert p.weighted_reduction == pytest.approx(0.99)
    assert p.ddl == ('CREATE INDEX CONCURRENTLY IF NOT EXISTS "ix_orders_user_id_created_at" ON "public"."orders" '
                     '("user_id", "created_at")')
    action = CreateIndex(**p.action_inputs())
    assert action.id == "pg-index-orders-user_id-created_at" and action.inputs.verify_statements == ["SELECT * FROM orders WHERE q = 1"]


def test_rewrite_n_plus_one_as_lateral_join_and_batched_query():
    child = "SELECT id, total FROM orders WHERE user_id = $1 AND status = $2 ORDER BY created_at DESC LIMIT $3"
    parent = "SELECT id, name FROM users WHERE id > $1 ORDER BY id LIMIT $2"
    join = rewrite.join_form(child, parent)
    assert join == ("SELECT p.*, c.* FROM (SELECT id, name FROM users WHERE id > $1 ORDER BY id LIMIT $2) AS p "
                    "LEFT JOIN LATERAL (SELECT id, total FROM orders WHERE user_id = p.id AND status = $3 "
                    "ORDER BY created_at DESC LIMIT $4) AS c ON true")
    batched, note = rewrite.batched_form(child)
    assert batched == ("SELECT user_id, id, total FROM orders WHERE user_id = ANY($1) AND status = $2 "
                       "ORDER BY user_id, created_at DESC")
    assert "LIMIT" in note
    agg, _ = rewrite.batched_form("SELECT count(*) FROM orders WHERE user_id = $1")
    assert agg == "SELECT user_id, count(*) FROM orders WHERE user_id = ANY($1) GROUP BY user_id"


def test_rewrite_recommendations_find_the_parent_statement_in_the_window():
    d = _fixture_statements()
    [r] = rewrite.recommend(db_dx.n_plus_one(d), d)
    assert r.foreign_key == "user_id" and r.parent_table == "users"
    assert r.join.startswith("SELECT p.*, c.* FROM (SELECT id, name, email, created_at FROM users")
    assert "user_id = ANY($1)" in r.batched
    assert f"{r.calls_per_request:.1f} calls per request" in r.note


def test_littles_law_pool_size():
    # 90 s of DB time in 60 s: 1.5 statements running on average
    s = pool.littles_law_pool(90_000, 60, replicas=2)
    assert s["concurrency"] == 1.5
    assert s["recommended_total"] == math.ceil((1.5 + 3 * math.sqrt(1.5)) * 1.5)
    assert s["recommended_per_replica"] == math.ceil(s["recommended_total"] / 2)
    assert math.isnan(pool.littles_law_pool(1, 0)["concurrency"])


def test_pool_diagnosis_from_the_fixture_activity():
    b = load_bundle(BUNDLE)
    act = b.snapshot("pg_stat_activity")
    cfg = b.snapshot("app_config")
    d = pool.diagnose(act, b.snapshot("pg_settings"), _fixture_statements(), 600,
                      {"db_pool_max": cfg["db_pool_max"], "replicas": cfg["replicas"], "in_use": 40, "waiting": 12})
    assert d["by_state"]["active"] == int((act["state"] == "active").sum())
    assert d["app_pool"]["saturated"] is True
    assert any("app pool saturated: 40 of 40" in f for f in d["findings"])
    assert d["littles_law"]["recommended_total"] > 40  # the slow queries need more than the pool has


def test_only_single_read_only_selects_are_explained():
    assert explain.check_select("SELECT 1 FROM t WHERE d > now() - interval $1") == \
        "SELECT 1 FROM t WHERE d > now() - $1::interval"
    for bad in ["SELECT 1; DROP TABLE orders", "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
                "SELECT * INTO copy FROM t", "DELETE FROM t", "VACUUM"]:
        with pytest.raises(explain.NotExplainable):
            explain.check_select(bad)
    with pytest.raises(ActionInputError, match="verify statement"):
        CreateIndex(table="orders", columns=["user_id"], verify_statements=["SELECT 1; DROP TABLE orders"])


@pytest.mark.parametrize("bad", [{"table": "x\x00y"}, {"table": "t" * 64}, {"columns": ["a", "a"]},
                                 {"columns": []}, {"schema_name": ""}])
def test_create_index_refuses_impossible_identifiers(bad):
    with pytest.raises(ActionInputError):
        CreateIndex(**{"table": "orders", "columns": ["user_id"], **bad})


def test_hostile_identifiers_are_quoted_in_every_statement():
    a = CreateIndex(table='we"ird; DROP TABLE orders; --', columns=["ünï cøde", "semi;colon"])
    create = a.plan().commands[1]
    assert '"we""ird; DROP TABLE orders; --"' in create
    assert '("ünï cøde", "semi;colon")' in create
    [stmt] = pglast.parse_sql(create)  # every ';' is inside a quoted identifier: one statement
    assert stmt.stmt.relation.relname == 'we"ird; DROP TABLE orders; --'
    assert [p.name for p in stmt.stmt.indexParams] == ["ünï cøde", "semi;colon"]


def test_rewrite_parent_is_the_statement_whose_rows_feed_the_loop():
    d = pd.DataFrame({
        "query": ["SELECT * FROM orders WHERE user_id = $1", "SELECT id FROM users WHERE email = $1",
                  "SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2"],
        "calls": [250.0, 10.0, 10.0], "rows_per_call": [5.0, 1.0, 25.0], "calls_per_request": [25.0, 1.0, 1.0],
        "ms_per_request": [50.0, 5.0, 0.1], "time_share": [0.9, 0.09, 0.01],
        "total_exec_time": [500.0, 50.0, 1.0],  # the email lookup costs more, but returns one row
    }, index=pd.Index([1, 2, 3], name="queryid"))
    [r] = rewrite.recommend(d.iloc[[0]], d)
    assert r.parent_query == "SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2"


def test_cli_refuses_bad_arguments_before_connecting(capsys, monkeypatch):
    from runbook_lib.cli import commands as cli

    nowhere = "postgresql://postgres@127.0.0.1:1/none"
    assert cli.main(["diagnose", "db", "--dsn", nowhere, "--window", "7200"]) == 2
    assert "longer than 3600 s" in capsys.readouterr().err
    monkeypatch.delenv("RUNBOOK_TEST_NO_SUCH_PW", raising=False)
    assert cli.main(["diagnose", "db", "--dsn", nowhere, "--password-env", "RUNBOOK_TEST_NO_SUCH_PW"]) == 2
    assert "RUNBOOK_TEST_NO_SUCH_PW is not set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["diagnose", "db", "--dsn", nowhere, "--window", "0"])
    assert "must be > 0" in capsys.readouterr().err
    # an unreachable server: one line, no traceback, no password
    monkeypatch.setenv("RUNBOOK_TEST_PW", "planted-pw-123")
    assert cli.main(["diagnose", "db", "--dsn", nowhere + "?connect_timeout=2", "--password-env",
                     "RUNBOOK_TEST_PW"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot connect to postgres://127.0.0.1:1/") and "planted-pw-123" not in err
