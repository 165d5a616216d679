"""Cache diagnosis: pure functions on known inputs, then a real Redis with a keyspace of known figures."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import redis
from test_cache_support import (
    CONFIG_KEYS,
    PAGES,
    SEARCH_LOGICAL,
    SESSIONS,
    TOTAL,
    VERSIONS,
    build_keyspace,
    info,
)

from runbook_lib.cache import collect as col
from runbook_lib.cache import recommend as rec
from runbook_lib.cache.report import build_report, hypothesis_snapshots, render_text
from runbook_lib.diagnose import cache as dx
from runbook_lib.diagnose.hypotheses import Snapshots
from runbook_lib.services import wait_until
from runbook_lib.settings import project_root

FIXTURE_KEYS = project_root() / "fixtures/d2-latency/snapshots/redis_keys.csv"


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
    d = dx.app_cache_deltas({"hits": {"a": 100, "b": 50}, "misses": {"a": 10, "b": 5}},
                            {"hits": {"a": 130, "b": 20}, "misses": {"a": 20, "b": 25}})
    assert d["by_route"]["a"] == {"hits": 30, "misses": 10, "hit_ratio": 0.75}
    assert d["by_route"]["b"]["hits"] == 20 and d["by_route"]["b"]["misses"] == 20  # b restarted
    assert d["hit_ratio"] == pytest.approx(50 / 80)


def test_ttl_formula_and_staleness_cap():
    keys = pd.DataFrame({"key": [f"api:users::page=1:{17900000000 + i * 30}" for i in range(5)],
                         "ttl_s": [5] * 5})  # one logical key re-requested every 3.0 s
    r = rec.recommend_ttl(keys, current_ttl_s=5, target=0.8)
    assert r["reuse_interval_s"] == pytest.approx(3.0) and r["needed_s"] == pytest.approx(15.0)
    assert r["recommended_s"] == 15 and any("1 - 0.80" in w for w in r["reasoning"])
    slow = keys.assign(key=[f"api:users::page=1:{17900000000 + i * 1200}" for i in range(5)])  # every 120 s
    assert rec.recommend_ttl(slow, 5, 0.8, max_staleness_s=300)["recommended_s"] == 300
    # most requests are for keys seen once (their interval is longer than the keys live): staleness bound
    tail = pd.concat([keys, pd.DataFrame({"key": [f"api:users::page={p}:17900000000" for p in range(2, 12)],
                                          "ttl_s": [5] * 10})])
    r = rec.recommend_ttl(tail, 5, 0.8, max_staleness_s=300)
    assert r["recommended_s"] == 300 and r["reuse_interval_s"] is None and "not measurable" in r["reasoning"][1]


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

READ_ONLY_COMMANDS = {"info", "time", "dbsize", "scan", "type", "pttl", "memory|usage", "object|idletime", "ping",
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
    assert ttl_rec["reuse_interval_s"] == pytest.approx(20.0) and ttl_rec["recommended_s"] == 120
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
