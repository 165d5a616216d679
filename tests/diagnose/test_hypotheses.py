"""Pure diagnosis functions, on the bundled incident and on small constructed cases."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runbook_lib.diagnose import cache_keys as cache
from runbook_lib.diagnose import incident_window as window
from runbook_lib.diagnose import index_candidates
from runbook_lib.diagnose import statements as db
from runbook_lib.diagnose.symptoms import first_movers, symptom_table
from runbook_lib.settings import Slo, load_settings
from runbook_lib.sources.fixture_bundle import FixtureSource
from runbook_lib.steps import evidence, root_cause, symptom_correlation, validation
from runbook_lib.validate import before_after as compare

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "fixtures" / "d2-synthetic"


@pytest.fixture(scope="module")
def bundle():
    src = FixtureSource(BUNDLE)
    start, end = src.default_range()
    return src, src.fetch(src.available(), start, end, 30)


def test_incident_window_matches_the_bundles_ground_truth(bundle):
    src, df = bundle
    win = window.find_incident_window(df["latency_p95_ms"])
    phases = src.bundle.manifest.phases
    deploy, fix = pd.Timestamp(phases["incident"][0]), pd.Timestamp(phases["incident"][1])
    # the step is found within the 150 s latency ramp after the deploy, the recovery within the fix ramp
    assert deploy <= win.incident[0] <= deploy + pd.Timedelta("150s")
    assert fix <= win.incident[1] <= fix + pd.Timedelta("7min")
    assert 35 < win.baseline_level < 45 and 750 < win.incident_level < 850 and 45 < win.recovery_level < 55


def test_window_on_constructed_steps():
    idx = pd.date_range("2026-01-01", periods=120, freq="30s", tz="UTC")
    y = pd.Series(np.r_[np.full(40, 40.0), np.full(50, 400.0), np.full(30, 45.0)], index=idx, name="latency_p95_ms")
    win = window.find_incident_window(y * np.exp(np.random.default_rng(1).normal(0, 0.03, 120)))
    assert win.incident[0] == idx[40] and win.incident[1] == idx[89] and win.recovery[0] == idx[90]
    ongoing = window.find_incident_window(y.iloc[:90])
    assert ongoing.recovery is None and ongoing.incident[0] == idx[40]


def test_no_incident_in_flat_or_small_changes():
    idx = pd.date_range("2026-01-01", periods=100, freq="30s", tz="UTC")
    flat = pd.Series(40 * np.exp(np.random.default_rng(2).normal(0, 0.05, 100)), index=idx, name="p95")
    with pytest.raises(window.NoIncidentFound, match="no level change"):
        window.find_incident_window(flat)
    small = pd.Series(np.r_[np.full(50, 40.0), np.full(50, 60.0)], index=idx, name="p95")
    with pytest.raises(window.NoIncidentFound, match="no level change of 2x or more"):
        window.find_incident_window(small)
    with pytest.raises(window.NoIncidentFound, match="only 5 usable samples"):
        window.find_incident_window(flat.iloc[:5])


def test_cache_moves_first_and_cpu_memory_do_not_move(bundle):
    _, df = bundle
    found = symptom_correlation.symptoms(df, 30)
    table, payload = found.table, found.payload
    order = list(table.index[table["onset"].notna()])
    assert order[0] == "cache_hit_ratio"
    assert table.loc["cache_hit_ratio", "leads_primary_by_s"] == 90
    assert not table.loc["cpu_utilization", "changed"] and not table.loc["memory_utilization", "changed"]
    assert "error_ratio" not in first_movers(table)  # 5xx follow latency (pool exhaustion), not lead it
    assert payload["window"]["signal"] == "latency_p95_ms"


def test_hypotheses_rank_cache_first_and_rule_out_infrastructure(bundle):
    src, df = bundle
    payload = symptom_correlation.symptoms(df, 30).payload
    settings = load_settings(ROOT / "parameters" / "fixtures.yaml")
    snap, _ = evidence.gather(settings, src, df)
    hyps = root_cause.root_cause(df, payload, snap, 0.8)
    candidates = evidence.index_candidates(settings, src, snap)
    assert [h.category for h in hyps] == ["cache", "database", "application", "infrastructure"]
    assert hyps[-1].disproved and not any(h.disproved for h in hyps[:3])
    assert {(c["table"], tuple(c["columns"])) for c in candidates} >= {("orders", ("user_id", "created_at")),
                                                                        ("products", ("category", "status"))}


def test_statement_deltas_calls_per_request_and_n_plus_one():
    start = pd.DataFrame([{"queryid": 1, "query": "select a", "calls": 100, "total_exec_time": 100.0, "rows": 100},
                          {"queryid": 2, "query": "select b", "calls": 10, "total_exec_time": 50.0, "rows": 500}])
    end = pd.DataFrame([{"queryid": 1, "query": "select a", "calls": 20_100, "total_exec_time": 60_100.0,
                         "rows": 40_100},
                        {"queryid": 2, "query": "select b", "calls": 1_010, "total_exec_time": 5_050.0,
                         "rows": 50_500},
                        {"queryid": 3, "query": "select c", "calls": 5, "total_exec_time": 1.0, "rows": 5}])
    d = db.per_request(db.statement_deltas(start, end), requests=1000)
    assert d.loc[1, "calls"] == 20_000 and d.loc[1, "calls_per_request"] == 20.0
    assert d.loc[1, "rows_per_call"] == 2.0 and d.loc[3, "calls"] == 5  # new statement: all of it is the delta
    assert list(db.n_plus_one(d).index) == [1]


def test_reset_counters_count_from_zero():
    start = pd.DataFrame([{"queryid": 1, "query": "q", "calls": 1000, "total_exec_time": 10.0, "rows": 1}])
    end = pd.DataFrame([{"queryid": 1, "query": "q", "calls": 30, "total_exec_time": 3.0, "rows": 30}])
    assert db.statement_deltas(start, end).loc[1, "calls"] == 30


@pytest.mark.parametrize("key, pattern, volatile", [
    ("api:users:page=3:ts=1762164000123", "api:users:page={n}:ts={timestamp}", ["timestamp"]),
    ("api:products:category=toys&status=active&_=8812734123", "api:products:category={v}&status={v}&_={cache-buster}",
     ["cache-buster"]),
    ("session:0f8fad5b-d9cb-469f-a165-70867728950e", "session:{uuid}", ["uuid"]),
    ("user:42:orders", "user:{n}:orders", []),
])
def test_key_patterns(key, pattern, volatile):
    assert cache.key_pattern(key) == (pattern, volatile)


def test_info_deltas():
    a = {"keyspace_hits": 100, "keyspace_misses": 0, "evicted_keys": 0, "expired_keys": 0, "used_memory": 1,
         "maxmemory": 2, "maxmemory_policy": "allkeys-lru", "uptime_in_seconds": 10}
    b = dict(a, keyspace_hits=180, keyspace_misses=320, evicted_keys=50, uptime_in_seconds=60)
    d = cache.info_deltas(a, b)
    assert d["hit_ratio"] == 0.2 and d["evicted_per_s"] == 1.0 and d["seconds"] == 50


def test_index_candidates_skip_covered_prefixes():
    stmts = pd.DataFrame([{"query": "SELECT * FROM orders WHERE user_id = $1 ORDER BY created_at", "time_share": 0.9},
                          {"query": "SELECT * FROM users WHERE id = $1", "time_share": 0.1},
                          {"query": "not sql at all", "time_share": 0.0}])
    none = pd.DataFrame(columns=["tablename", "indexname", "indexdef", "valid"])
    have = pd.DataFrame([{"tablename": "orders", "indexname": "o_u", "valid": True,
                          "indexdef": "CREATE INDEX o_u ON public.orders USING btree (user_id, created_at)"}])
    assert index_candidates.candidates(stmts, ["orders"], none)[0]["columns"] == ["user_id", "created_at"]
    assert index_candidates.candidates(stmts, ["orders"], have) == []
    assert index_candidates.candidates(stmts, [], none) == []


def test_validation_verdict(bundle):
    _, df = bundle
    win = window.find_incident_window(df["latency_p95_ms"])
    table = compare.compare(df, win.baseline, win.incident, win.recovery, Slo())
    v = compare.overall(table)
    assert v["fixed"] and table.loc["latency_p95_ms", "slo"] == "met"
    strict = compare.overall(compare.compare(df, win.baseline, win.incident, win.recovery,
                                             Slo(latency_p95_ms=45)))
    assert not strict["fixed"] and strict["critical_failing"] == ["latency_p95_ms"]
    assert strict["verdict"].startswith("fail: API latency p95 is still")


def test_validation_waits_for_data_after_the_change(bundle):
    _, df = bundle
    payload = symptom_correlation.symptoms(df, 30).payload
    ongoing = df.loc[: "2026-11-03T11:20:00Z"]  # the incident has not recovered in this data
    p = symptom_correlation.symptoms(ongoing, 30).payload
    v = validation.validation(ongoing, p, {"applied": []}, Slo())
    assert v.after is None and not v.verdict["validated"] and v.verdict["verdict"].startswith("NOT VALIDATED YET")
    assert "runbook run --only 05" in validation.validation_conclusion(v.verdict, v.table)
    # a change applied at 11:00 -> "after" starts once it settled, and there are enough samples
    v = validation.validation(ongoing, p, {"applied": ["x"], "finished_at": "2026-11-03T11:00:00Z"}, Slo())
    assert v.after[0] == pd.Timestamp("2026-11-03T11:01:00Z") and v.verdict["validated"] and not v.verdict["fixed"]
    assert payload["window"]["recovery"] is not None


def test_zero_baseline_and_warm_up_excursion():
    """A 5xx ratio from 0 to 5% is a worse change; a warm-up blip at the window start is not the onset."""
    idx = pd.date_range("2026-01-01", periods=200, freq="5s", tz="UTC")
    p95 = np.r_[np.full(12, 12.0), np.full(68, 5.0), np.full(120, 500.0)]  # warm-up, baseline, incident
    err = np.r_[np.zeros(90), np.full(110, 0.05)]
    df = pd.DataFrame({"latency_p95_ms": p95, "error_ratio": err}, index=idx)
    win = window.find_incident_window(df["latency_p95_ms"])
    table = symptom_table(df, win, 5)
    assert table.loc["error_ratio", "changed"] and table.loc["error_ratio", "worse"]
    assert table.loc["latency_p95_ms", "onset"] == idx[80]
    assert table.loc["error_ratio", "onset"] == idx[90]


def _supported_cache() -> list:
    from runbook_lib.model import Evidence, Hypothesis

    return [Hypothesis("cache", "t", "s", "d", [Evidence("hit ratio fell", "80% -> 1%", True, 3)])]


def test_cache_actions_take_the_measured_recommendation():
    from runbook_lib.plan.ranking import DEFAULT_REDIS, DEFAULT_TTL_S, propose

    plan = {"ttl": {"recommended_s": 1800.0, "current_s": 5.0, "reasoning": ["...", "recommended 1800 s"]},
            "memory": {"recommended": "64mb", "recommended_bytes": 64 * 2**20, "current_bytes": 2 * 2**20,
                       "reasoning": ["...", "rounded up to a power of two: 64 MiB"]},
            "policy": {"recommended": "allkeys-lru", "current": "allkeys-lru", "reasoning": ["kept"]}}
    acts = {a.id: a for a in propose(_supported_cache(), None, {"cache_ttl_s": 5}, [], None, plan)}
    assert acts["app-config-cache_ttl_s"].inputs == {"cache_ttl_s": 1800.0} and "1800 s" in acts["app-config-cache_ttl_s"].title
    assert acts["redis-config-maxmemory"].inputs == {"maxmemory": "64mb"}  # the policy is kept: not changed
    assert acts["cache-warm-top-5000"].depends_on == ["app-config-cache_key_scheme", "app-config-cache_ttl_s", "redis-config-maxmemory"]
    # a TTL already right and memory already enough: no action for either
    plan["ttl"]["current_s"], plan["memory"]["current_bytes"] = 1800.0, 64 * 2**20
    acts = {a.id: a for a in propose(_supported_cache(), None, {"cache_ttl_s": 1800}, [], None, plan)}
    assert set(acts) == {"app-config-cache_key_scheme", "cache-warm-top-5000"} and acts["cache-warm-top-5000"].depends_on == ["app-config-cache_key_scheme"]
    # no Redis evidence: the seed incident's values, said so
    acts = {a.id: a for a in propose(_supported_cache(), None, {"cache_ttl_s": 5}, [], None, None)}
    assert acts["app-config-cache_ttl_s"].inputs == {"cache_ttl_s": DEFAULT_TTL_S} and "seed incident" in acts["app-config-cache_ttl_s"].reason
    assert acts["redis-config-maxmemory-maxmemory-policy"].inputs == DEFAULT_REDIS


def test_an_index_walk_that_reads_pages_for_nothing_is_a_candidate_without_seq_scans():
    q = "SELECT id FROM orders WHERE user_id = $1 AND created_at >= $2 ORDER BY created_at DESC LIMIT $3"
    none = pd.DataFrame(columns=["tablename", "indexname", "indexdef", "valid"])

    def stmts(blocks: float, share: float) -> pd.DataFrame:
        return pd.DataFrame([{"query": q, "time_share": share, "rows": 1_000, "shared_blks_hit": blocks,
                              "shared_blks_read": 0.0}])

    (c,) = index_candidates.candidates(stmts(1_040_000, 0.87), [], none)  # 1,040 pages per row
    assert c["columns"] == ["user_id", "created_at"] and "1,040 buffer pages per row" in c["reason"]
    assert index_candidates.candidates(stmts(5_000, 0.87), [], none) == []  # 5 pages per row: a fine lookup
    assert index_candidates.candidates(stmts(1_040_000, 0.01), [], none) == []  # wasteful but negligible


def _table(rows: dict) -> pd.DataFrame:
    t = pd.DataFrame([{"signal": k, "baseline": b, "incident": i, "ratio": i / b, "changed": abs(i / b - 1) > 0.2,
                       "worse": i > b, "onset": pd.NaT} for k, (b, i) in rows.items()]).set_index("signal")
    return t


def test_infrastructure_is_judged_by_saturation_and_surge_not_by_a_rise():
    from runbook_lib.diagnose.hypotheses import infrastructure_hypothesis

    # a traffic surge that saturates CPU: supported
    surge = infrastructure_hypothesis(_table({"cpu_utilization": (0.35, 0.93), "memory_utilization": (0.5, 0.52),
                                              "request_rate": (200, 520)}))
    assert not surge.disproved and [e.supports for e in surge.evidence] == [True, False, True]
    # CPU 2.8x higher but far from saturated, traffic flat: a rise is not a shortage
    busy = infrastructure_hypothesis(_table({"cpu_utilization": (0.10, 0.28), "memory_utilization": (0.5, 0.5),
                                             "request_rate": (200, 210)}))
    assert busy.disproved and not any(e.supports for e in busy.evidence)
