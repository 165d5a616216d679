"""Alerts as chart markers: a real Prometheus evaluating a rule on a gauge the test flips; the source turns its
``ALERTS`` series into "firing" and "resolved" events at the right times, and nothing for a quiet rule."""

from __future__ import annotations

import shutil
import time

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from runbook_lib.lab.servers import PrometheusServer, free_port, wait_until
from runbook_lib.settings import PrometheusSource as PrometheusSettings
from runbook_lib.sources.prometheus import PrometheusSource
from tests.conftest import make_server_dir

RULES = """groups:
  - name: t
    rules:
      - alert: Broken
        expr: t_broken > 0
      - alert: NeverFires
        expr: t_broken > 100
"""


@pytest.fixture
def flipping():
    registry = CollectorRegistry()
    broken = Gauge("t_broken", "1 while broken", registry=registry)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    folder = make_server_dir("prom-alerts")
    (folder / "rules.yml").write_text(RULES)
    prom = PrometheusServer(folder / "prom", targets=[f"127.0.0.1:{port}"], scrape_interval="500ms",
                            rule_files=[str(folder / "rules.yml")])
    try:
        prom.start()
        prom.wait_first_scrape()
        yield broken, prom
    finally:
        prom.stop()
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)


def test_firing_and_resolved_become_alert_events(flipping):
    broken, prom = flipping
    src = PrometheusSource(PrometheusSettings.model_validate(
        {"kind": "prometheus", "url": prom.url, "queries": {"latency_p95_ms": "t_broken"}}))
    start = pd.Timestamp.now(tz="UTC").floor("s")
    broken.set(1)
    wait_until(lambda: src.alert_events(start, pd.Timestamp.now(tz="UTC"), 1), 30, "the alert to fire")
    broken.set(0)
    fired_at = time.time()
    wait_until(lambda: any(e.label == "Broken resolved" for e in src.alert_events(
        start, pd.Timestamp.now(tz="UTC") - pd.Timedelta("2s"), 1)), 30, "the alert to resolve")
    events = src.alert_events(start, pd.Timestamp.now(tz="UTC") - pd.Timedelta("2s"), 1)
    assert [e.label for e in events] == ["Broken firing", "Broken resolved"], events
    assert all(e.kind == "alert" for e in events)
    assert events[0].time < events[1].time <= pd.Timestamp(fired_at + 5, unit="s", tz="UTC")


def test_no_rules_or_no_server_gives_no_events():
    src = PrometheusSource(PrometheusSettings.model_validate(
        {"kind": "prometheus", "url": f"http://127.0.0.1:{free_port()}", "queries": {"latency_p95_ms": "x"},
         "timeout_s": 2}))
    now = pd.Timestamp.now(tz="UTC")
    assert src.alert_events(now - pd.Timedelta("1min"), now, 5) == []
