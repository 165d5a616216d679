"""The verify loop on a service signal (an app knob judged on the 5xx ratio), through a real Prometheus: the
value of each sub-window rests only on samples inside it, so an "after" window holds no pre-change data; a
change that cuts the errors is "helped", one that raises them is "worse" and undone by the runbook."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from runbook_lib.actions import execute
from runbook_lib.actions.app_config import AppConfig
from runbook_lib.actions.effect_probes import SignalProbe
from runbook_lib.errors import SourceError
from runbook_lib.lab.servers import free_port, wait_until
from runbook_lib.settings import PrometheusSource as PrometheusSettings
from runbook_lib.sources.prometheus import PrometheusSource, confined_to
from tests.support.actions_support import audit_lines, make_settings

WINDOW_S = 8.0  # five 1.6 s sub-windows, three scrapes each at 500 ms
ERROR_RATIO = ('(sum(rate(t_requests_total{status="503"}[30s])) or vector(0)) / sum(rate(t_requests_total[30s]))')


def test_confined_query_rewrites_every_range_and_refuses_what_reads_outside_the_window():
    assert confined_to(ERROR_RATIO, 1.6) == ERROR_RATIO.replace("[30s]", "[1600ms]")
    assert confined_to("histogram_quantile(0.95, sum by (le) (rate(x_bucket[1m30s])))", 2) == \
        "histogram_quantile(0.95, sum by (le) (rate(x_bucket[2000ms])))"
    assert confined_to("sum(db_pool_in_use)", 2) == "sum(db_pool_in_use)"  # a gauge: the value at the time
    for query in ("max_over_time(rate(x[1m])[5m:30s])", "rate(x[1m] offset 5m)", "rate(x[1m] @ 1700000000)"):
        with pytest.raises(SourceError, match="cannot be confined"):
            confined_to(query, 2)


class Service:
    """Requests at a steady rate; a share fails with 503 unless the knob file's pool timeout is long enough."""

    def __init__(self, knobs_path):
        self.knobs_path = knobs_path
        self.registry = CollectorRegistry()
        self.requests = Counter("t_requests", "requests", ["status"], registry=self.registry)
        self.timeout = Gauge("t_pool_timeout_s", "the knob as the service sees it", registry=self.registry)
        self.stop = threading.Event()
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        n, timeout = 0, None
        while not self.stop.wait(0.01):  # ~100 requests/s; with a short pool timeout one in five fails
            try:  # a reader can meet a file mid-write (the test's own write is not atomic): keep the last value
                timeout = json.loads(self.knobs_path.read_text())["db_pool_timeout_s"]
            except (ValueError, KeyError, OSError):
                if timeout is None:
                    continue
            self.timeout.set(timeout)
            n += 1
            self.requests.labels(status="503" if timeout < 1.0 and n % 5 == 0 else "200").inc()

    def set_knob(self, timeout_s):
        """Switch the knob the way a deploy would: a whole new file, never a half-written one."""
        tmp = self.knobs_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"db_pool_timeout_s": timeout_s}))
        tmp.replace(self.knobs_path)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service(tmp_path):
    knobs = tmp_path / "config.json"
    knobs.write_text(json.dumps({"db_pool_timeout_s": 0.2}))
    s = Service(knobs)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def source(service, prometheus_factory):
    prom = prometheus_factory([f"127.0.0.1:{service.port}"], scrape_interval="500ms")
    prom.wait_first_scrape()
    src = PrometheusSource(PrometheusSettings.model_validate({
        "kind": "prometheus", "url": prom.url, "timeout_s": 10,
        "queries": {"error_ratio": ERROR_RATIO, "db_connections_active": "max(t_pool_timeout_s)"}}))
    # the before window needs 5xx history at a steady rate
    wait_until(lambda: (src.sub_window_values("error_ratio", datetime.now(UTC) - timedelta(seconds=4),
                                              datetime.now(UTC), 2)[0] or 0) > 0.1, 30, "503s in Prometheus")
    return src


def test_sub_windows_hold_only_their_own_samples(service, source):
    """A knob switched at t: every sub-window after t reads the new value, none carries the old one."""
    service.set_knob(3.0)
    t = datetime.now(UTC)
    wait_until(lambda: datetime.now(UTC) > t + timedelta(seconds=5), 10, "5 s after the switch")
    after = source.sub_window_values("db_connections_active", t + timedelta(seconds=1), datetime.now(UTC), 4)
    assert after == [3.0] * 4, after
    ratios = source.sub_window_values("error_ratio", t + timedelta(seconds=1), datetime.now(UTC), 2)
    assert ratios == [0.0, 0.0], ratios  # the default [30s] range would still carry the old 503s


def _knob_action(knobs_path, timeout_s):
    return AppConfig(db_pool_timeout_s=timeout_s, config_file=str(knobs_path))


@pytest.mark.parametrize("auto_rollback", [False, True])
def test_a_pool_knob_is_judged_on_the_5xx_ratio_after_the_change(service, source, run_dir, auto_rollback):
    settings = make_settings(apply=True, auto_rollback=auto_rollback).model_copy(update={"source": source.settings})
    [o] = execute([_knob_action(service.knobs_path, 3.0)], settings, run_dir, probe_window_s=WINDOW_S,
                  read_signal=source.sub_window_values, signals=source.available())
    assert o.effect == "helped" and not o.rolled_back, o
    lines = audit_lines(run_dir)
    applied = next(r for r in lines if r["step"] == "applied")
    [judged] = [r for r in lines if r["step"] == "assessed"]
    assert judged["measured"].startswith("5xx ratio"), judged
    assert datetime.fromisoformat(judged["after"]["window_start"]) >= datetime.fromisoformat(applied["ts"])
    assert judged["after"]["detail"]["per_sub_window"] == [0.0] * 5, judged["after"]
    assert 0.1 < judged["before"]["value"] < 0.3, judged["before"]  # one request in five failed


def test_a_harmful_knob_is_measured_worse_and_undone(service, source, run_dir):
    service.set_knob(3.0)
    wait_until(lambda: source.sub_window_values("error_ratio", datetime.now(UTC) - timedelta(seconds=3),
                                                datetime.now(UTC), 1) == [0.0], 30, "the 503s to stop")
    settings = make_settings(apply=True, auto_rollback=True).model_copy(update={"source": source.settings})
    [o] = execute([_knob_action(service.knobs_path, 0.1)], settings, run_dir, probe_window_s=WINDOW_S,
                  read_signal=source.sub_window_values, signals=source.available())
    assert o.effect == "worse" and o.rolled_back, o
    assert json.loads(service.knobs_path.read_text())["db_pool_timeout_s"] == 3.0  # the prior value is back
    steps = [r["step"] for r in audit_lines(run_dir)]
    assert steps[steps.index("applied"):] == ["applied", "verified", "assessed", "rolling_back", "rolled_back",
                                              "reassessed"], steps


def test_without_enough_sub_windows_the_verdict_is_inconclusive():
    probe = SignalProbe(lambda *a: [0.1, None, None, None, None], "error_ratio", True, "5xx ratio", "x")
    m = probe.window(0.0, sleep=lambda s: None)
    assert m.events == 1 and not m.enough
