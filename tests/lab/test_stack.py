"""The lab end to end: up (small data), bounded load, degradation seen through Prometheus, live knob
changes, a crashed supervisor, down. Every process the lab started is gone afterwards, pass or fail."""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.request
from pathlib import Path

import psycopg
import pytest
import yaml

from runbook_lib.lab import stack
from runbook_lib.lab.config import CONFIG_FILE, DEGRADED, EVENTS_FILE, patch_config
from runbook_lib.lab.load import LoadSpec, run_load_sync
from runbook_lib.lab.seed import SeedSize
from runbook_lib.lab.servers import kill_pid, pid_alive, wait_until
from runbook_lib.lab.supervisor import BACKEND_DIR, BACKEND_FILE
from runbook_lib.settings import Settings, project_root, read_yaml
from tests.conftest import lab_pids, make_server_dir

pytestmark = pytest.mark.slow

SCALE = 0.05            # 5k users, 50k orders, 2.5k products: seeded in < 1 s
LOAD = {"duration_s": 12.0, "rate": 25.0, "concurrency": 32, "max_requests": 2000, "seed": 3}
WAIT_S = 20.0           # bound on every wait below (config reload is polled every 0.5 s)


@pytest.fixture(scope="module")
def lab():
    state = make_server_dir("lab")
    seen: dict[str, int] = {}
    try:
        info = stack.up(state, scale=SCALE, profile="degraded", ports="free")
        seen.update(lab_pids(state))
        yield state, info, seen
    finally:
        seen.update(lab_pids(state))
        stack.down(state)
        survivors = {name: pid for name, pid in seen.items() if pid_alive(pid)}
        for pid in survivors.values():  # never leave anything behind, even when the test is failing
            kill_pid(pid, str(state))
        shutil.rmtree(state, ignore_errors=True)
        assert not survivors, f"processes survived lab down: {survivors}"


def _lab_queries() -> dict[str, str]:
    return read_yaml(project_root() / "parameters" / "lab.yaml")["source"]["queries"]


def _metric_lines(port: int, name: str) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return [line for line in r.read().decode().splitlines() if line.startswith(name)]


def _some_traffic(info: dict) -> None:
    """A little traffic of every kind, scraped, so every series exists even when a test runs alone."""
    report = run_load_sync(info["backend_url"], LoadSpec(users=SeedSize.at_scale(SCALE).users, duration_s=3,
                                                         rate=20, seed=11))
    done = sum(report.by_status.values())
    total = 'sum(http_request_duration_seconds_count{job="lab"})'
    wait_until(lambda: (stack.prom_value(info["prometheus_url"], total) or 0) >= done, WAIT_S,
               "Prometheus scrape of the requests")


def _backend(state: Path) -> dict:
    return json.loads((state / BACKEND_DIR / BACKEND_FILE).read_text())


def test_up_is_idempotent_and_status_shows_everything(lab):
    state, info, _ = lab
    again = stack.up(state, scale=SCALE, ports="free")
    assert again["already_running"] and again["backend_url"] == info["backend_url"]
    st = stack.status(state)
    assert st["running"] and set(st["components"]) == {"postgres", "redis", "prometheus", "backend"}
    assert info["timings"]["ready_s"] > 0


def test_degradation_is_visible_through_prometheus(lab):
    _, info, _ = lab
    report = run_load_sync(info["backend_url"], LoadSpec(users=SeedSize.at_scale(SCALE).users, **LOAD))
    s = report.summary()
    assert s["completed"] > 150 and s["transport_errors"] == 0
    assert s["loadgen_cpu_share_of_one_core"] < 0.5  # the generator is not what loads the machine
    q = _lab_queries()
    prom = info["prometheus_url"]

    def scraped_after_load() -> bool:  # the last scrape has the load's final counters
        v = stack.prom_value(prom, 'sum(http_request_duration_seconds_count{job="lab"})')
        return v is not None and v >= s["completed"]

    wait_until(scraped_after_load, WAIT_S, "Prometheus scrape of the load's requests")
    hit = stack.prom_value(prom, q["cache_hit_ratio"])
    per_request = stack.prom_value(prom, f"({q['db_query_rate']}) / ({q['request_rate']})")
    p95 = stack.prom_value(prom, q["latency_p95_ms"])
    pool = stack.prom_value(prom, q["db_pool_max"])
    errors = stack.prom_value(prom, q["error_ratio"])
    assert hit is not None and hit < 0.3, f"cache hit ratio {hit}"
    assert per_request is not None and per_request >= 8, f"queries per request {per_request}"  # N+1
    assert p95 is not None and p95 > 0
    assert pool == DEGRADED.db_pool_max
    assert errors is not None and 0 <= errors <= 1


def test_every_lab_query_returns_one_series(lab):
    _, info, _ = lab
    _some_traffic(info)
    for name, promql in _lab_queries().items():
        res = stack.prom_query(info["prometheus_url"], promql)
        assert len(res) == 1, f"{name}: {len(res)} series"
    raw = read_yaml(project_root() / "parameters" / "lab.yaml")
    Settings.model_validate(raw)  # the file itself is valid parameters


def test_knobs_change_live_without_restart(lab):
    state, _, seen = lab
    first = _backend(state)["replicas"][0]
    patch_config(state / CONFIG_FILE, cache_key_scheme="normalized", orders_query="join", db_pool_max=6,
                 replicas=2)

    def reloaded() -> bool:
        info = lab_pids(state)
        return ('lab_config_info{cache_key_scheme="normalized",orders_query="join"} 1.0'
                in _metric_lines(first["metrics_port"], "lab_config_info")
                and "replica1" in info and pid_alive(info["replica1"]))

    wait_until(reloaded, WAIT_S, "config reload and a second replica")
    seen.update(lab_pids(state))
    assert _backend(state)["replicas"][0]["pid"] == first["pid"]  # same process: no restart
    assert "db_pool_max 6.0" in _metric_lines(first["metrics_port"], "db_pool_max")

    def pool_connections() -> int:  # what PostgreSQL sees: 2 replicas x 6, the old pool of 4 closed
        with psycopg.connect(stack.read_lab(state)["dsn"], autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'lab' "
                                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchone()[0]

    wait_until(lambda: pool_connections() == 12, WAIT_S, "PostgreSQL to see 2 pools of 6 connections")


def test_record_captures_a_bundle_the_fixture_source_reads(lab, tmp_path):
    from runbook_lib.sources.fixture_bundle import FixtureSource
    from runbook_lib.suite.recorder import parse_when, record

    state, info, _ = lab
    patch_config(state / CONFIG_FILE, orders_query="join")  # an event inside the recorded window
    _some_traffic(info)
    raw = read_yaml(project_root() / "parameters" / "lab.yaml")
    raw["source"]["url"] = info["prometheus_url"]
    raw["postgres"]["dsn"] = info["dsn"]
    raw["redis"]["url"] = info["redis_url"]
    raw["source"]["events_file"] = str(state / EVENTS_FILE)  # the lab's own files, as the parameters name them
    raw["app"]["config_file"] = str(state / CONFIG_FILE)
    params = tmp_path / "lab-test.yaml"
    params.write_text(yaml.safe_dump(raw))
    out = record(params, parse_when("-40s"), parse_when("now"), tmp_path / "bundle", key_sample=50)
    src = FixtureSource(out)
    src.bundle.check()
    assert set(src.available()) == set(raw["source"]["queries"])
    assert src.bundle.signals["request_rate"].notna().any()
    for name in ("pg_stat_statements.start", "pg_stat_statements.end", "pg_indexes", "redis_info.end",
                 "app_config", "redis_keys"):
        assert src.bundle.has_snapshot(name)
    assert "user_recent_orders" not in str(src.bundle.snapshot("pg_indexes"))  # sanity: it is a table
    assert src.bundle.snapshot("app_config")["orders_query"] == "join"
    assert any("config patch" in e.label for e in src.events())
    assert "orders" in set(src.bundle.snapshot("pg_stat_user_tables.end")["relname"])
    # the diagnosis' own collectors: activity says who holds each connection, Redis INFO carries its clock
    assert {"usename", "application_name", "client_addr", "xact_duration_s"} <= set(
        src.bundle.snapshot("pg_stat_activity").columns)
    assert "server_time" in src.bundle.snapshot("redis_info.end") and len(src.bundle.snapshot("redis_keys")) <= 50


def test_load_switches_profile_midway(lab, capsys):
    from runbook_lib.cli.commands import main
    from runbook_lib.lab.config import EVENTS_FILE, HEALTHY, read_config

    state, _, _ = lab
    assert main(["lab", "load", "--state", str(state), "--scenario", "steady", "--duration", "4", "--rate", "10",
                 "--at", "1:healthy"]) == 0
    assert "t+1s: switched to the healthy profile" in capsys.readouterr().out
    assert read_config(state / CONFIG_FILE) == HEALTHY
    assert "healthy profile" in (state / EVENTS_FILE).read_text().splitlines()[-1]


def test_incident_scenario_leaves_load_running_until_stopped(lab, capsys):
    from runbook_lib.cli.commands import main
    from runbook_lib.lab.config import EVENTS_FILE
    from runbook_lib.lab.scenario import SCENARIO_EVENT, scenario_start

    state, _, seen = lab
    args = ["lab", "load", "--state", str(state), "--rate", "10", "--seed", "5"]
    assert main([*args, "--baseline", "2", "--incident", "3", "--duration", "60"]) == 0
    out = capsys.readouterr().out
    assert "the incident is live" in out and "--stop" in out
    load = stack.status(state)["load"]
    seen["load"] = load["pid"]
    assert load["running"] and pid_alive(load["pid"])
    kinds = [json.loads(x)["kind"] for x in (state / EVENTS_FILE).read_text().splitlines()]
    assert kinds[-2:] == ["note", "deploy"] and scenario_start(state) is not None
    assert SCENARIO_EVENT in (state / EVENTS_FILE).read_text()
    # one load at a time: a second scenario is refused with what to do, before it switches anything
    events_before = (state / EVENTS_FILE).read_text()
    assert main([*args, "--baseline", "2", "--incident", "3"]) == 2
    assert "a load is already running" in capsys.readouterr().err
    assert (state / EVENTS_FILE).read_text() == events_before
    assert main(["lab", "load", "--state", str(state), "--stop"]) == 0
    assert f"stopped the load (pid {load['pid']})" in capsys.readouterr().out
    assert not pid_alive(load["pid"]) and stack.status(state)["load"] is None
    assert main(["lab", "load", "--state", str(state), "--stop"]) == 0
    assert "no load was running" in capsys.readouterr().out


def test_down_works_after_the_supervisor_crashed(lab):
    state, _, seen = lab
    seen.update(lab_pids(state))
    os.kill(_backend(state)["pid"], signal.SIGKILL)
    stopped = stack.down(state)
    assert any(s.startswith("postgres") for s in stopped)
    wait_until(lambda: not any(pid_alive(p) for p in seen.values()), WAIT_S, "every lab process to exit")
    assert not stack.status(state)["running"]


def test_postgres_stops_fast_with_an_idle_client():
    """lab down while a notebook still holds a connection: fast shutdown, not 15 s and a SIGKILL."""
    import time

    from runbook_lib.lab.servers import PostgresServer, stop_from_state

    d = make_server_dir("pgstop")
    try:
        for stop in (lambda pg: pg.stop(), lambda pg: stop_from_state(pg.folder)):
            pg = PostgresServer(d / "pg").start()
            conn = psycopg.connect(pg.dsn())
            t0 = time.monotonic()
            assert stop(pg)
            assert time.monotonic() - t0 < 5
            assert not pid_alive(pg.pid)
            conn.close()
    finally:
        stop_from_state(d / "pg")
        shutil.rmtree(d, ignore_errors=True)
