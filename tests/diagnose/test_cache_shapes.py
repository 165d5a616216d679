"""Cache incidents that are not the lab's, on a real Redis with real cache-aside traffic, plus a healthy control.

Each shape runs an app-like client (GET; on a miss, SET with the family's TTL) in a thread while the diagnosis
collects, exactly as ``runbook diagnose cache`` and notebook 02 do (``report.cache_diagnosis.analyse``). The
assertions are on what the findings are judged by: the share of the misses, not the share of sampled keys.
"""

from __future__ import annotations

import random
import threading
import time

import redis

from runbook_lib.diagnose.cache_findings import MISS_SHARE_MATTERS
from runbook_lib.report.cache_diagnosis import analyse, build_report
from runbook_lib.sources import redis_snapshot as collect

WINDOW_S = 3.0
WATCH_EVERY_S = 0.3
PRODUCTS = 20_000  # a long-lived family that is most of the keyspace (300 of them hot)


def _populate(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(PRODUCTS):
        pipe.set(f"product:{i}", "x" * 200, ex=3600)
    pipe.execute()


def _traffic(url: str, pick, stop: threading.Event) -> None:
    """Cache-aside reads until ``stop``: ``pick(rng)`` -> (key, ttl in ms)."""
    rng = random.Random(7)
    with redis.Redis.from_url(url) as r:
        while not stop.is_set():
            key, ttl_ms = pick(rng)
            if r.get(key) is None:
                r.set(key, "y" * 100, px=ttl_ms)


def _diagnose(url: str, pick):
    with redis.Redis.from_url(url) as r:
        _populate(r)
    stop = threading.Event()
    t = threading.Thread(target=_traffic, args=(url, pick, stop), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10  # the traffic is flowing before the window opens
        with redis.Redis.from_url(url) as r:
            start = int(r.info("stats")["keyspace_hits"])
            while int(r.info("stats")["keyspace_hits"]) - start < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            snap = collect.collect(r, "redis://test", window_s=WINDOW_S, watch_every_s=WATCH_EVERY_S)
    finally:
        stop.set()
        t.join(timeout=10)
    return snap


def _finding(found: list[dict], prefix: str) -> dict:
    return next(f for f in found if f["check"].startswith(prefix))


def test_a_minority_single_use_family_that_causes_the_misses_is_the_finding(private_redis):
    # 70 % of reads hit 300 hot products; 30 % read a feed keyed by the request time (2 s TTL): always a miss
    def pick(rng):
        if rng.random() < 0.7:
            return f"product:{rng.randrange(300)}", 3_600_000
        return f"feed:{rng.randrange(50)}:{time.time_ns() // 1000}", 2_000

    snap = _diagnose(private_redis.url, pick)
    a = analyse(snap, target=0.85)
    design = a["design"].set_index("pattern")
    feed = design.loc[[p for p in design.index if p.startswith("feed:")][0]]
    assert feed["key_share"] < 0.5  # a minority of the sampled keys ...
    single = _finding(a["findings"], "single-use")
    assert single["problem"] and single["share"] >= 0.8  # ... carrying the misses
    assert single["families"][0]["pattern"].startswith("feed:")
    assert not _finding(a["findings"], "key families with TTLs")["problem"]
    recs = a["recommendations"]["per_family"]
    assert recs[0]["pattern"].startswith("feed:") and "normalize" in recs[0]["do"]


def test_a_short_ttl_family_is_found_from_its_writes_not_the_sampled_median(private_redis):
    # 60 % of reads hit products (TTL 1 h); 40 % read prices whose TTL is 400 ms, re-read every few seconds
    def pick(rng):
        if rng.random() < 0.6:
            return f"product:{rng.randrange(300)}", 3_600_000
        return f"price:{rng.randrange(2000)}", 400

    snap = _diagnose(private_redis.url, pick)
    r = build_report(snap, target=0.85)
    ttl = r["ttl"]
    assert ttl["median_ttl_s"] > 60  # the sample's median says "long TTLs": the old check missed this
    short = _finding(r["findings"], "key families with TTLs")
    assert short["problem"] and short["share"] >= 0.8, short
    assert short["families"][0]["pattern"].startswith("price:")
    assert not _finding(r["findings"], "single-use")["problem"]
    assert "key families with TTLs under 60 s" in r["problems"]
    per_family = r["recommendations"]["per_family"]
    assert [f["pattern"] for f in per_family][:1] == [short["families"][0]["pattern"]]


def test_healthy_control_same_shapes_no_problem_no_recommendation(private_redis):
    # the same families, but the cache does its job: 97 % of reads are hits
    def pick(rng):
        x = rng.random()
        if x < 0.97:
            return f"product:{rng.randrange(300)}", 3_600_000
        if x < 0.985:
            return f"feed:{rng.randrange(50)}:{time.time_ns() // 1000}", 2_000
        return f"price:{rng.randrange(2000)}", 400

    snap = _diagnose(private_redis.url, pick)
    r = build_report(snap, target=0.85)
    assert r["redis"]["hit_ratio"] >= 0.9
    assert r["problems"] == [], [f for f in r["findings"] if f["problem"]]
    assert r["recommendations"]["per_family"] == []
    # the families are still measured and shown with their shares: only not flagged
    assert _finding(r["findings"], "single-use")["share"] is not None
    assert MISS_SHARE_MATTERS > 0
