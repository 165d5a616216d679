"""The live evidence window opened when the run begins: 02 takes the runner's window (real PostgreSQL with
pg_stat_statements and a real Redis) instead of waiting a whole window of its own; it falls back to its own
window when the runner is gone; the files never outlive the run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import psycopg
import redis

from runbook_lib.settings import Postgres, Redis, load_settings
from runbook_lib.steps import evidence, evidence_prefetch
from runbook_lib.steps.evidence_prefetch import PENDING_FILE, PREFETCH_FILE

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 4.0
# The test's traffic runs from the window's middle: after its start snapshots (a few queries, well under
# WINDOW_S / 2 even on a loaded machine) and done long before its end ones.
MIDDLE_S = WINDOW_S / 2


def _settings(private_postgres, private_redis):
    with psycopg.connect(private_postgres.dsn("postgres"), autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    base = load_settings(ROOT / "parameters" / "fixtures.yaml")
    return base.model_copy(update={"postgres": Postgres(dsn=private_postgres.dsn("postgres")),
                                   "redis": Redis(url=private_redis.url)})


def _signals() -> pd.DataFrame:
    idx = pd.date_range(pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=5), periods=60, freq="5s")
    return pd.DataFrame({"request_rate": 10.0}, index=idx)


def _traffic(private_postgres, private_redis):
    with psycopg.connect(private_postgres.dsn("postgres"), autocommit=True) as c:
        for i in range(50):
            c.execute("SELECT %s::int + 1 AS prefetch_probe", (i,))
    r = redis.Redis.from_url(private_redis.url)
    r.set("user:1", "x", ex=300)
    for _ in range(20):
        r.get("user:1")
        r.get("user:missing")
    r.close()


def test_the_runs_window_is_taken_by_02_and_removed(private_postgres, private_redis, tmp_path):
    settings = _settings(private_postgres, private_redis)
    t0 = time.monotonic()
    prefetch = evidence_prefetch.Prefetch(settings, tmp_path, window_s=WINDOW_S)
    pending = json.loads((tmp_path / PENDING_FILE).read_text())
    assert pending["window_s"] == WINDOW_S
    while time.time() < pending["closes_at"] - MIDDLE_S:
        time.sleep(0.05)
    _traffic(private_postgres, private_redis)  # inside the window: its deltas must show all of it
    source = SimpleNamespace(description="a live source")  # gather reads its description only
    snap, meta = evidence.gather(settings, source, _signals(), run_dir=tmp_path)
    waited = time.monotonic() - t0
    assert WINDOW_S <= waited < WINDOW_S + evidence_prefetch.TAKE_GRACE_S, waited
    assert meta["missing"] == [] and meta["window"] is not None, meta
    window = pd.Timestamp(meta["window"]["end"]) - pd.Timestamp(meta["window"]["start"])
    assert abs(window.total_seconds() - WINDOW_S) < 1.0, window
    probe = snap.statements[snap.statements["query"].str.contains("prefetch_probe")]
    assert probe["calls"].sum() == 50, probe
    assert snap.redis["hits"] == 20 and snap.redis["misses"] == 20, snap.redis
    assert not (tmp_path / PREFETCH_FILE).exists() and not (tmp_path / PENDING_FILE).exists()
    prefetch.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_window_nobody_read_is_discarded_at_the_end_of_the_run(private_postgres, private_redis, tmp_path):
    prefetch = evidence_prefetch.Prefetch(_settings(private_postgres, private_redis), tmp_path, window_s=WINDOW_S)
    prefetch.discard()  # e.g. 01 found no incident: the run ends before 02
    prefetch.thread.join(timeout=WINDOW_S + 30)
    assert not prefetch.thread.is_alive()
    assert list(tmp_path.iterdir()) == []  # statement texts and key names stay out of the run folder


def test_without_a_live_runner_02_takes_its_own_window(tmp_path):
    # a pending note from a runner that is gone (a pid that cannot exist): no wait, no stale result
    (tmp_path / PENDING_FILE).write_text(json.dumps({"pid": 2 ** 22 + 1, "closes_at": time.time() + 60,
                                                     "window_s": 60}))
    t0 = time.monotonic()
    assert evidence_prefetch.take(tmp_path) is None
    assert time.monotonic() - t0 < 5
    assert evidence_prefetch.take(tmp_path / "no-such-run") is None
