"""Cache diagnosis: pure functions on known inputs, then a real Redis with a keyspace of known figures."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import redis

from runbook_lib.diagnose import cache_keys as dx
from runbook_lib.lab.servers import wait_until
from runbook_lib.model import Snapshots
from runbook_lib.plan import cache_sizing as rec
from runbook_lib.report.cache_diagnosis import build_report, hypothesis_snapshots, render_text
from runbook_lib.settings import project_root
from runbook_lib.sources import redis_snapshot as col
from tests.support.cache_support import (
    CONFIG_KEYS,
    PAGES,
    SEARCH_LOGICAL,
    SESSIONS,
    TOTAL,
    VERSIONS,
    build_keyspace,
    info,
)

FIXTURE_KEYS = project_root() / "fixtures/d2-synthetic/snapshots/redis_keys.csv"


# --- pure ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key,parts,logical", [
    ("api:users::limit=25&page=1:17932123456", ["timestamp"], "api:users::limit=25&page=1"),  # lab: deciseconds
    ("api:dashboard:::17932123456", ["timestamp"], "api:dashboard::"),
    ("api:users:page=8:ts=1793705096351", ["timestamp"], "api:users:page=8"),
    ("api:products:category=books&status=active&_=1151433453", ["cache-buster"],
     "api:products:category=books&status=active"),
    ("api:search?q=x&a=1&sort=asc", ["unordered-query"], "api:search?a=1&q=x&sort=asc"),
    ("session:808c0017-50da-43bb-a2e7-30020f95ffcb", ["uuid"], "session"),
    ("cart:sess_3fa85f6457174562b3fc2c963f66afa6", ["session-id", "token"], "cart:sess"),
    ("api:user_orders:123:", [], "api:user_orders:123:"),
    ("user:42:profile", [], "user:42:profile"),
])
def test_volatile_parts_and_logical_key(key, parts, logical):
    assert dx.volatile_parts(key) == parts
    assert dx.logical_key(key) == logical


def test_existing_functions_keep_their_results_on_the_fixture():
    keys = pd.read_csv(FIXTURE_KEYS)
    pats = dx.key_patterns(keys)
    assert pats.loc[0, "pattern"] == "api:users:page={n}:ts={timestamp}" and pats.loc[0, "volatile"] == "timestamp"
    design = dx.key_design(keys)
    assert list(design["pattern"]) == list(pats["pattern"])  # same grouping, more columns
    assert design["key_share"].sum() == pytest.approx(1.0) and design["miss_share"].sum() == pytest.approx(1.0)


def test_unordered_params_and_expiry_clusters_pure():
    u = dx.unordered_params(["a?x=1&y=2", "a?y=2&x=1", "b?x=1&y=2", "c?k=1"])
    assert u.to_dict("records") == [{"logical_key": "a?x=1&y=2", "orders": 2, "keys": 2}]
    even = pd.DataFrame({"key": [f"k{i}" for i in range(300)], "ttl_s": [i % 30 for i in range(300)]})
    assert not dx.expiry_clusters(even)["clustered"]  # steady writes, one TTL: no cluster
    bulk = pd.concat([even, pd.DataFrame({"key": [f"b{i}" for i in range(100)], "ttl_s": [500] * 100})])
    ec = dx.expiry_clusters(bulk)
    assert ec["clustered"] and ec["clusters"][0]["second"] == 500 and ec["clusters"][0]["keys"] == 100


def test_app_cache_deltas_counts_a_restart_from_zero():
    d = col.app_cache_deltas({"hits": {"a": 100, "b": 50}, "misses": {"a": 10, "b": 5}},
                            {"hits": {"a": 130, "b": 20}, "misses": {"a": 20, "b": 25}})
    assert d["by_route"]["a"] == {"hits": 30, "misses": 10, "hit_ratio": 0.75}
    assert d["by_route"]["b"]["hits"] == 20 and d["by_route"]["b"]["misses"] == 20  # b restarted
    assert d["hit_ratio"] == pytest.approx(50 / 80)


def test_hit_ratio_formulas_by_hand():
    # one key at 0.5 requests/s, TTL 10 s: 5 / (1 + 5)
    assert rec.steady_hit_ratio(0.5, 0.0, 1, 10) == pytest.approx(5 / 6)
    # two equally popular keys sharing 2 requests/s (1/s each), TTL 4 s: 4 / 5 each, each cached 4/5 of the time
    assert rec.steady_hit_ratio(2.0, 0.0, 2, 4) == pytest.approx(0.8)
    assert rec.cached_keys(2.0, 0.0, 2, 4) == pytest.approx(1.6)
    # Zipf exponent 1 over 2 keys sharing 3/s: weights 1 and 1/2, so 2/s and 1/s; TTL 1 s: 2/3 and 1/2 hit
    assert rec.steady_hit_ratio(3.0, 1.0, 2, 1) == pytest.approx((2 * 2 / 3 + 1 * 1 / 2) / 3)
    assert rec.cached_keys(3.0, 1.0, 2, 1) == pytest.approx(2 / 3 + 1 / 2)
    # from an empty cache, 1 s after the fix: a key was asked for since with 1 - e^(-λt)
    assert rec.fill_hit_ratio(3.0, 1.0, 2, 1) == pytest.approx((2 * (1 - math.exp(-2)) + 1 * (1 - math.exp(-1))) / 3)


def test_binned_ranks_agree_with_the_sum_over_every_key():
    rate, s, n = 4.5, 1.1, 1_000_000
    w = np.arange(1, n + 1, dtype=float) ** -s
    lam = rate * w / w.sum()  # every key, one by one
    for ttl in (300, 1800):
        x = lam * ttl
        exact = float((lam * x / (1 + x)).sum() / rate)
        assert rec.steady_hit_ratio(rate, s, n, ttl) == pytest.approx(exact, abs=2e-4)
        assert rec.cached_keys(rate, s, n, ttl) == pytest.approx(float((x / (1 + x)).sum()), rel=2e-3)
    assert len(rec.key_rates(rate, s, n)[0]) < 1000  # binned beyond rank EXACT_RANKS


def test_poisson_rate_range_is_where_the_likelihood_drops_by_1_92():
    lo, hi = rec.poisson_rate_range(5)
    assert lo == pytest.approx(1.793, abs=1e-3) and hi == pytest.approx(10.745, abs=1e-3)
    top = 5 * math.log(5) - 5
    for mu in (lo, hi):
        assert 5 * math.log(mu) - mu == pytest.approx(top - rec.LIKELIHOOD_DROP)


def _names(times_s: list[float], logical: str) -> list[str]:
    """Lab-style single-use key names: the logical key plus the request time in deciseconds."""
    return [f"{logical}:{round(t * 10)}" for t in times_s]


def test_one_key_at_a_known_rate_gets_the_ttl_worked_out_by_hand():
    # one key requested every second for 100 s: 101 requests, 100 gaps over 100 s -> 1 request/s
    names = _names([1_790_000_000 + i for i in range(101)], "api:users::page=1")
    r = rec.recommend_ttl(None, current_ttl_s=5, target=0.9, names=names)
    lo = rec.poisson_rate_range(101)[0] / 101  # the low end of the rate: 0.8175/s
    assert lo == pytest.approx(0.8175, abs=1e-4)
    # fitted: 10 s -> 10 / 11 = 90.9% reaches 90%, but at the low end 8.17 / 9.17 = 89.1% does not; 15 s does
    assert r["predicted_hit_ratio"]["10"] == pytest.approx({"fit": 0.9091, "low": 0.8910, "high": r["predicted_hit_ratio"]["10"]["high"]}, abs=1e-4)
    assert r["predicted_hit_ratio"]["15"]["low"] == pytest.approx(15 * lo / (1 + 15 * lo), abs=1e-4)
    assert r["needed_s"] == 15 and r["recommended_s"] == 15 and r["reuse_interval_s"] == pytest.approx(1.0)
    assert any("15 s is the shortest round TTL reaching 90%" in w for w in r["reasoning"])
    assert r["model"]["families"][0]["keys"] == 1 and r["model"]["rate_per_s"] == pytest.approx(1.0)
    # the staleness bound caps it, and says what the target would need
    capped = rec.recommend_ttl(None, 5, 0.9, max_staleness_s=10, names=names)
    assert capped["recommended_s"] == 10 and capped["needed_s"] == 15
    assert any("no TTL up to the staleness bound (10 s) reaches 90%" in w and "90% needs 15 s" in w
               for w in capped["reasoning"])
    # a longer current TTL is kept
    assert rec.recommend_ttl(None, 60, 0.9, names=names)["recommended_s"] == 60


def test_zipf_family_with_known_rates_is_fitted_and_extrapolated_past_the_window():
    """2,000 keys, Zipf exponent 1.0, 10 requests/s, plus one key at 1 request/s, watched for 600 s: the
    fitted law covers the truth, and so does the predicted hit ratio at TTLs up to 3x the window."""
    rng = np.random.default_rng(7)
    n_keys, s, rate, window = 2000, 1.0, 10.0, 600.0
    w = np.arange(1, n_keys + 1, dtype=float) ** -s
    p = w / w.sum()
    t0 = 1_790_000_000
    n = rng.poisson(rate * window)
    times = np.sort(rng.uniform(0, window, n))
    ranks = rng.choice(n_keys, size=n, p=p) + 1
    names = [f"api:users::page={k}:{round((t0 + t) * 10)}" for k, t in zip(ranks, times, strict=True)]
    names += _names([t0 + i for i in range(int(window) + 1)], "api:dashboard::")
    r = rec.recommend_ttl(None, 5, target=0.85, names=names)
    fam = {f["pattern"]: f for f in r["model"]["families"]}
    pages = fam["api:users::page={n}"]
    assert pages["zipf_exponent"] == pytest.approx(s, abs=0.1)
    assert pages["exponent_range"][0] <= s <= pages["exponent_range"][1]
    step = 10 ** (1 / rec.SIZES_PER_DECADE)  # family sizes are tried 33% apart
    assert pages["keys_range"][0] / step <= n_keys <= pages["keys_range"][1] * step
    assert fam["api:dashboard::"]["keys"] == 1 and fam["api:dashboard::"]["rate_per_s"] == pytest.approx(1.0, abs=0.01)

    def truth(ttl):  # the true rates, every key
        lam = rate * p
        x = lam * ttl
        pages_hit = float((lam * x / (1 + x)).sum())
        return (pages_hit + 1.0 * ttl / (1 + ttl)) / (rate + 1.0)

    for ttl in ("300", "900", "1800"):
        pred = r["predicted_hit_ratio"][ttl]
        assert pred["low"] <= truth(float(ttl)) <= pred["high"], (ttl, pred, truth(float(ttl)))
        assert pred["fit"] == pytest.approx(truth(float(ttl)), abs=0.02)
    # the choice: the shortest round TTL whose low end reaches the target
    low = {float(t): v["low"] for t, v in r["predicted_hit_ratio"].items()}
    want = min(t for t, v in low.items() if v >= 0.85)
    assert r["recommended_s"] == want and all(v < 0.85 for t, v in low.items() if t < want)
    table = next(x for x in r["reasoning"] if x.startswith("predicted steady hit ratio by TTL"))
    assert f"{want:g} s {r['predicted_hit_ratio'][f'{want:g}']['fit']:.1%}" in table
    assert r["predicted"]["ttl_s"] == want and set(r["predicted_by_family"]) == set(fam)


def test_requests_without_a_second_version_or_a_timestamp_leave_the_bound():
    once = [f"api:users::page={p}:17900000000" for p in range(1, 12)]  # every key seen once
    r = rec.recommend_ttl(None, 5, 0.85, max_staleness_s=300, names=once)
    assert r["recommended_s"] == 300 and r["model"] is None and r["predicted_hit_ratio"] == {}
    assert "no logical key appears twice" in r["reasoning"][0]
    plain = pd.DataFrame({"key": ["user:1", "user:2"], "ttl_s": [60, 60]})
    r = rec.recommend_ttl(plain, None, 0.85, max_staleness_s=300)
    assert r["recommended_s"] == 300 and "no key name carries a timestamp" in r["reasoning"][0]


def test_a_flat_family_is_fitted_flat():
    # 20 keys with 10 versions each, 20 s apart (the live keyspace below): every key equally popular
    keys = pd.DataFrame({"key": [f"api:users::limit=25&page={p}:{17_900_000_000 - v * 200}"
                                 for p in range(1, 21) for v in range(10)]})
    r = rec.recommend_ttl(keys, 5, 0.85)
    f = r["model"]["families"][0]
    assert f["zipf_exponent"] == 0.0 and f["keys"] == 20 and f["keys_range"][0] == 20 and f["keys_range"][1] <= 21
    # 200 requests over 180 s x 200/199: 1.106/s, 0.0553/s per key; 120 s: 6.63 / 7.63 = 86.9%
    lam = 200 / (180 * 200 / 199) / 20
    assert r["predicted_hit_ratio"]["120"]["fit"] == pytest.approx(120 * lam / (1 + 120 * lam), abs=1e-4)
    # at the low end of the range (173.6 of the 200 requests' rate, a 21st key never seen) 120 s gives 84.6%:
    # under 85%, so 180 s
    lo = rec.poisson_rate_range(200)[0] / (180 * 200 / 199)
    assert r["predicted_hit_ratio"]["120"]["low"] == pytest.approx(rec.steady_hit_ratio(lo, 0.0, 21, 120), abs=1e-4)
    assert r["predicted_hit_ratio"]["120"]["low"] < 0.85 <= r["predicted_hit_ratio"]["180"]["low"]
    assert r["recommended_s"] == 180


def test_memory_follows_the_ttl_through_the_fitted_rates():
    flat = pd.DataFrame({"key": [f"api:users::limit=25&page={p}:{17_900_000_000 - v * 200}"
                                 for p in range(1, 21) for v in range(10)]})
    flat["memory_bytes"] = 2_000_000  # 2 MB per page
    flat["ttl_s"] = 5
    model = rec.popularity_model(flat["key"])
    deltas = {"misses": 200, "seconds": 180.0, "evicted_per_s": 0.0, "expired_per_s": 1.0}
    info = {"maxmemory": 2 * 2**20, "used_memory": 2**20, "used_memory_overhead": 2**20}
    short, long_ = (rec.recommend_memory(info, deltas, flat, ttl, model=model) for ttl in (10, 1800))
    for m, ttl in ((short, 10), (long_, 1800)):
        live = model.cached_keys(ttl)
        assert m["entries"] == pytest.approx(live["high"]) and live["high"] >= live["fit"]
        assert m["working_set_bytes"] == pytest.approx(live["high"] * 2_000_000)
        need = m["working_set_bytes"] * rec.MEMORY_HEADROOM + 2**20
        assert m["recommended_bytes"] == 2 ** math.ceil(math.log2(math.ceil(need / 2**20))) * 2**20
    assert long_["entries"] > short["entries"] and long_["recommended_bytes"] > short["recommended_bytes"]
    assert any("λT/(1+λT)" in w for w in long_["reasoning"])


def test_memory_findings_flag_each_misconfiguration():
    keys = pd.DataFrame({"key": ["a", "b"], "ttl_s": [-1, 10]})

    def problems(**info):
        base = {"maxmemory": 2**20, "used_memory": 2**19, "maxmemory_policy": "allkeys-lru"}
        return {f["check"] for f in dx.memory_findings({**base, **info}, keys, 2**20 * 3, 0.0) if f["problem"]}

    assert problems(maxmemory_policy="noeviction") == {"noeviction with a memory limit", "limit far below the working set"}
    assert "volatile-* policy with keys lacking a TTL" in problems(maxmemory_policy="volatile-lru")
    assert "limit below used memory" in problems(used_memory=2**21)
    assert problems(maxmemory=2**30) == set()


# --- live ---------------------------------------------------------------------------------------

READ_ONLY_COMMANDS = {"info", "time", "dbsize", "scan", "exists", "type", "pttl", "memory|usage", "object|idletime", "ping",
                      "client|setinfo", "hello", "select"}


@pytest.mark.slow
def test_live_keyspace_is_diagnosed_with_the_right_figures_and_nothing_is_written(private_redis):
    url = private_redis.url
    ks = build_keyspace(url)
    r = redis.Redis.from_url(url, socket_timeout=10)
    r1 = redis.Redis.from_url(url.replace("/0", "/1"), socket_timeout=10)
    for i in range(20):  # db 1: 20 keys that expire inside the window
        r1.set(f"gone:{i}", "x", px=300)
    client = col.connect(url)
    commands_before = info(url, "commandstats")
    dirty_before = info(url, "persistence")["rdb_changes_since_last_save"]

    start = col.info_snapshot(client)
    for k in ks.config_keys[:30]:
        assert r.get(k) is not None  # 30 hits
    for i in range(70):
        assert r.get(f"missing:{i}") is None  # 70 misses
    wait_until(lambda: info(url, "stats")["expired_keys"] - start["expired_keys"] >= 20, 10, "the 20 keys to expire")
    end = col.info_snapshot(client)
    keys = col.key_sample(client, 5000)
    snap = col.CacheSnapshot("redis://test", start, end, keys, app_config={"cache_ttl_s": 5,
                                                                         "cache_key_scheme": "volatile"})
    report = build_report(snap)

    # read-only: only read commands ran, and the dataset never changed
    after = info(url, "commandstats")
    grown = {k.removeprefix("cmdstat_") for k, v in after.items() if v["calls"] > commands_before.get(k, {"calls": 0})["calls"]}
    assert grown - {"get", "set"} <= READ_ONLY_COMMANDS, grown  # get: the test's lookups; set: db 1 above
    assert after.get("cmdstat_set", {}).get("calls") == commands_before.get("cmdstat_set", {}).get("calls")
    assert info(url, "persistence")["rdb_changes_since_last_save"] == dirty_before

    d = report["redis"]
    assert (d["hits"], d["misses"], d["hit_ratio"]) == (30, 70, 0.3)
    assert d["expired_per_s"] * d["seconds"] == pytest.approx(20) and d["evicted_per_s"] == 0
    assert d["dbsize"] == TOTAL and report["sample"]["keys"] == TOTAL

    ttl = report["ttl"]
    assert (ttl["sampled"], ttl["no_ttl"], ttl["with_ttl"]) == (TOTAL, CONFIG_KEYS, TOTAL - CONFIG_KEYS)
    assert ttl["short_ttl_share"] == pytest.approx(PAGES * VERSIONS / (TOTAL - CONFIG_KEYS))

    design = {p["pattern"]: p for p in report["key_design"]}
    vol = design["api:users::limit={n}&page={n}:{n}"]
    assert (vol["keys"], vol["logical_keys"], vol["volatile"], vol["single_use"]) == (PAGES * VERSIONS, PAGES,
                                                                                    "timestamp", True)
    assert design["session:{uuid}"]["keys"] == SESSIONS and design["session:{uuid}"]["volatile"] == "uuid"
    assert design["api:search?q={v}&limit={n}"]["volatile"] == "unordered-query"
    assert design["api:search?limit={n}&q={v}"]["volatile"] == ""
    usage = sum(r.memory_usage(k) for k in ks.volatile_keys)
    assert vol["memory_bytes"] == usage  # MEMORY USAGE per pattern
    assert len(report["unordered_params"]) == SEARCH_LOGICAL
    assert all(u["orders"] == 2 for u in report["unordered_params"])

    ex = report["expiry"]
    assert [(c["second"], c["keys"]) for c in ex["clusters"]] == [(ks.cluster_at, SESSIONS)]

    ttl_rec = report["recommendations"]["ttl"]
    # the 20 pages are asked for every 20 s each: 120 s fits 86.9%, 180 s reaches 85% at the low end too
    assert ttl_rec["reuse_interval_s"] == pytest.approx(20.0) and ttl_rec["recommended_s"] == 180
    assert ttl_rec["predicted_hit_ratio"]["120"]["fit"] == pytest.approx(0.869, abs=0.002)
    assert report["recommendations"]["key_scheme"]["recommended"] == "normalized"
    problems = set(report["problems"])
    assert {"Redis hit ratio over the window (INFO deltas)", "same parameters in different orders",
            "expiry clustering"} <= problems
    assert "hit ratio 30.0% (30 hits / 70 misses)" in render_text(report)

    # the same shapes the root-cause step reads from a bundle
    hs = hypothesis_snapshots(snap)
    Snapshots(**hs)
    assert hs["redis"]["hit_ratio"] == 0.3 and hs["ttl"]["no_ttl"] == CONFIG_KEYS
    assert set(hs["key_patterns"].columns) >= set(dx.key_patterns(keys).columns)
    vol_share = hs["key_patterns"].loc[hs["key_patterns"]["volatile"] != "", "keys"].sum() / TOTAL
    assert vol_share == pytest.approx((PAGES * VERSIONS + SESSIONS + SEARCH_LOGICAL) / TOTAL)
    client.close()
    r.close()
    r1.close()


@pytest.mark.slow
def test_too_small_maxmemory_evictions_and_policies(private_redis):
    url = private_redis.url
    r = redis.Redis.from_url(url, socket_timeout=10)
    r.config_set("maxmemory", "2mb")
    r.config_set("maxmemory-policy", "allkeys-lru")
    client = col.connect(url)
    start = col.info_snapshot(client)
    n = 400
    for i in range(n):  # cache-aside: a miss, then the fill of a 10 kB page
        assert r.get(f"page:{i}") is None
        r.set(f"page:{i}", "p" * 10_000, ex=300)
    end = col.info_snapshot(client)
    report = build_report(col.CacheSnapshot("t", start, end, col.key_sample(client, 5000)))
    d = report["redis"]
    evicted = n - end["dbsize"]  # keys written minus keys left: no key expired (TTL 300 s)
    # Redis evicts before running any command while over maxmemory, the snapshot's own TIME and DBSIZE
    # included (after INFO read the counter): the two figures may differ by a key or two
    assert evicted > 0 and abs(d["evicted_per_s"] * d["seconds"] - evicted) <= 2
    assert d["misses"] == n and d["maxmemory"] == 2 * 2**20
    problems = set(report["problems"])
    assert {"evictions", "memory full", "limit far below the working set"} <= problems
    mem = report["recommendations"]["memory"]
    assert mem["recommended_bytes"] >= 4 * d["used_memory"] and mem["recommended"].endswith("mb")
    assert {"kind": "redis.config_set", "inputs": {"maxmemory": mem["recommended"]}} in \
        report["recommendations"]["actions"]

    r.config_set("maxmemory-policy", "volatile-lru")
    r.set("no-ttl", "1")
    report = build_report(col.CacheSnapshot("t", start, col.info_snapshot(client), col.key_sample(client, 5000)))
    assert "volatile-* policy with keys lacking a TTL" in report["problems"]
    assert report["recommendations"]["policy"]["recommended"] == "allkeys-lru"
    r.config_set("maxmemory-policy", "noeviction")
    report = build_report(col.CacheSnapshot("t", start, col.info_snapshot(client), col.key_sample(client, 10)))
    assert "noeviction with a memory limit" in report["problems"]
    client.close()
    r.close()


@pytest.mark.slow
def test_sample_is_bounded_and_throttled(private_redis):
    build_keyspace(private_redis.url)
    client = col.connect(private_redis.url)
    df = col.key_sample(client, 50, scan_count=10, pause_s=0)
    assert len(df) == 50 and list(df.columns) == col.KEY_COLUMNS
    assert df["memory_bytes"].notna().all() and (df["type"] == "string").all()
    client.close()


@pytest.mark.slow
def test_watch_passes_count_versions_that_are_gone_by_the_end_without_touching_the_hit_ratio(private_redis):
    r = redis.Redis.from_url(private_redis.url, socket_timeout=10)
    versions = []

    def wait(seconds):  # the app writes a new version and the previous one expires (deleted here)
        k = f"api:users::page=1:{17_900_000_000 + len(versions) * 10}"  # one second apart
        r.set(k, "v")
        if versions:
            r.delete(versions[-1])
        versions.append(k)
        time.sleep(seconds)  # the window's own pacing (collect's wait), not a wait for a condition

    client = col.connect(private_redis.url)
    snap = col.collect(client, "t", window_s=0.5, watch_every_s=0.05, wait=wait)
    assert len(versions) >= 3 and len(snap.keys) == 1  # only the newest is left at the end
    assert set(versions) == set(snap.seen_keys)  # a pass between every two versions, the sample at the end
    report = build_report(snap)
    assert report["redis"]["lookups"] == 0  # SCAN passes are no keyspace hits or misses
    assert report["names_seen"] >= 3
    assert report["warm_candidates"][0] == {"key": "api:users::page=1", "versions_seen": len(versions)}
    assert report["recommendations"]["ttl"]["reuse_interval_s"] == pytest.approx(1.0)
    client.close()
    r.close()
