"""PrometheusSource against a real Prometheus scraping a prometheus_client exporter in this process.

One Prometheus serves the whole module (its first scrape takes ~5-6 s, so one per test would
cost most of the time budget). Nothing in the HTTP layer is mocked; ``custom_query_range`` is
only wrapped to count the requests the source makes.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
from prometheus_api_client import PrometheusConnect
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from runbook_lib.errors import SecretError, SourceError, UnknownSignalError
from runbook_lib.lab.servers import PrometheusServer, free_port, wait_until
from runbook_lib.settings import PrometheusSource as PrometheusSettings
from runbook_lib.sources.prometheus import MAX_POINTS_PER_REQUEST, PROMETHEUS_MAX_POINTS, PrometheusSource

pytestmark = pytest.mark.slow

LATENCY_MS = 123.5
REQUESTS = 7
TOKEN_ENV = "RUNBOOK_SECRET_PROM_TOKEN"
TOKEN = "tok-3f9a1c77e2b54d0a"


class Exporter:
    """A /metrics endpoint on a free loopback port with values the test controls."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.latency = Gauge("runbook_test_latency_ms", "p95 latency served to the test", registry=self.registry)
        self.pool = Gauge("runbook_test_pool_in_use", "two series on purpose", ["pool"], registry=self.registry)
        self.requests = Counter("runbook_test_requests", "a counter", registry=self.registry)
        self.latency.set(LATENCY_MS)
        self.pool.labels(pool="a").set(3)
        self.pool.labels(pool="b").set(5)
        self.requests.inc(REQUESTS)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def exporter():
    e = Exporter()
    yield e
    e.close()


@pytest.fixture(scope="module")
def prom(exporter):
    d = Path(tempfile.mkdtemp(prefix="runbook-prom-", dir="/tmp"))
    server = PrometheusServer(d / "prom", targets=[f"127.0.0.1:{exporter.port}"], scrape_interval="1s")
    try:
        server.start()
        server.wait_first_scrape()
        # tests query ranges ending at a whole second: let that second include scraped samples
        t0 = first_sample_time(server, "runbook_test_latency_ms")
        wait_until(lambda: now_s() >= t0 + pd.Timedelta("1s"), 10, "a whole second of scraped samples")
        yield server
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


def source(url: str, token: bool = False, timeout_s: float = 10, **queries: str) -> PrometheusSource:
    section = {"kind": "prometheus", "url": url, "queries": queries, "timeout_s": timeout_s}
    if token:
        section["bearer_token"] = {"env": TOKEN_ENV}
    return PrometheusSource(PrometheusSettings.model_validate(section))


def first_sample_time(prom: PrometheusServer, metric: str) -> pd.Timestamp:
    """Time of the oldest stored sample of ``metric`` (a range-vector query over the last minute)."""
    res = PrometheusConnect(prom.url).custom_query(f"{metric}[1m]")
    return pd.Timestamp(float(res[0]["values"][0][0]), unit="s", tz="UTC").ceil("s")


def now_s() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("s")


def test_values_match_what_the_exporter_served(prom):
    src = source(prom.url, latency_p95_ms="runbook_test_latency_ms", request_rate="runbook_test_requests_total",
                 db_connections_active='sum by () (runbook_test_pool_in_use)')
    assert src.description == f"prometheus {prom.url}"
    end = now_s()
    df = src.fetch(["latency_p95_ms", "request_rate", "db_connections_active"], end - pd.Timedelta("1min"), end, 1)
    assert list(df.columns) == ["latency_p95_ms", "request_rate", "db_connections_active"]
    assert len(df) == 61 and df.index.is_unique and str(df.index.tz) == "UTC"
    served = df.dropna()
    assert len(served) >= 1
    assert (served["latency_p95_ms"] == LATENCY_MS).all()
    assert (served["request_rate"] == REQUESTS).all()
    assert (served["db_connections_active"] == 8).all()
    assert src.warnings == []


def test_long_range_is_chunked_without_gaps_or_duplicates(prom, monkeypatch):
    calls: list[tuple[pd.Timestamp, pd.Timestamp, str]] = []
    original = PrometheusConnect.custom_query_range

    def spy(self, query, start_time, end_time, step, *args, **kwargs):
        calls.append((pd.Timestamp(start_time), pd.Timestamp(end_time), step))
        return original(self, query, start_time, end_time, step, *args, **kwargs)

    monkeypatch.setattr(PrometheusConnect, "custom_query_range", spy)
    # wait until the data spans a few seconds, then put a chunk boundary inside it
    t0 = first_sample_time(prom, "runbook_test_latency_ms")
    wait_until(lambda: now_s() - t0 >= pd.Timedelta("4s"), 15, "4 s of scraped samples")
    end = now_s()
    boundary = t0 + pd.Timedelta("2s")  # first point of the third request
    start = boundary - pd.Timedelta(seconds=2 * MAX_POINTS_PER_REQUEST)
    src = source(prom.url, latency_p95_ms="runbook_test_latency_ms")
    df = src.fetch(["latency_p95_ms"], start, end, 1)

    assert len(calls) == 3
    for a, b, step in calls:
        assert (b - a).total_seconds() / float(step) <= PROMETHEUS_MAX_POINTS
    assert [c[0] for c in calls[1:]] == [c[1] + pd.Timedelta("1s") for c in calls[:-1]]  # contiguous
    assert calls[0][0] == start and calls[-1][1] == end

    grid = pd.date_range(start, end, freq="1s", tz="UTC")
    assert df.index.equals(grid) and df.index.is_unique
    values = df["latency_p95_ms"]
    first = values.first_valid_index()
    assert first is not None and first < boundary - pd.Timedelta("1s")
    # every grid point after the first scrape has the value: nothing dropped at the chunk boundaries
    assert (values[first:] == LATENCY_MS).all()
    assert values[:first].iloc[:-1].isna().all()


def test_query_returning_several_series_is_an_error(prom):
    src = source(prom.url, db_connections_active="runbook_test_pool_in_use")
    end = now_s()
    with pytest.raises(SourceError) as e:
        src.fetch(["db_connections_active"], end - pd.Timedelta("30s"), end, 5)
    msg = str(e.value)
    assert "db_connections_active" in msg and "2 series" in msg and "\n" not in msg
    assert "sum by ()" in e.value.hint


def test_query_returning_no_series_gives_an_empty_column_and_a_warning(prom, caplog):
    src = source(prom.url, cpu_utilization="runbook_test_metric_nobody_exports",
                 latency_p95_ms="runbook_test_latency_ms")
    end = now_s()
    df = src.fetch(["cpu_utilization", "latency_p95_ms"], end - pd.Timedelta("30s"), end, 5)
    assert df["cpu_utilization"].isna().all() and len(df) == 7
    assert df["latency_p95_ms"].notna().any()
    assert len(src.warnings) == 1 and "cpu_utilization" in src.warnings[0]
    assert any("cpu_utilization" in r.getMessage() for r in caplog.records)


def test_invalid_promql_names_the_signal_and_prometheus_error(prom):
    src = source(prom.url, error_ratio="sum(rate(runbook_test_requests_total[1m]")
    end = now_s()
    with pytest.raises(SourceError) as e:
        src.fetch(["error_ratio"], end - pd.Timedelta("30s"), end, 5)
    msg = str(e.value)
    assert "error_ratio" in msg and "HTTP 400" in msg and "parse error" in msg and "\n" not in msg
    assert "source.queries.error_ratio" in e.value.hint


def test_unreachable_prometheus_is_a_one_line_source_error():
    url = f"http://127.0.0.1:{free_port()}"
    src = source(url, latency_p95_ms="up")
    end = now_s()
    with pytest.raises(SourceError) as e:
        src.fetch(["latency_p95_ms"], end - pd.Timedelta("1min"), end, 15)
    msg = str(e.value)
    assert msg == f"cannot reach prometheus {url}: Connection refused"
    assert "source.url" in e.value.hint
    assert e.value.__cause__ is None  # no chained traceback for an expected failure


def test_silent_server_times_out_with_a_one_line_source_error():
    # a listening socket nobody accepts from: the connection opens, the answer never comes
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        src = source(url, timeout_s=0.3, latency_p95_ms="up")
        end = now_s()
        with pytest.raises(SourceError) as e:
            src.fetch(["latency_p95_ms"], end - pd.Timedelta("1min"), end, 15)
    msg = str(e.value)
    assert url in msg and "0.3 s" in msg and "\n" not in msg
    assert "timeout_s" in e.value.hint


def test_signal_without_a_query_is_refused(prom):
    src = source(prom.url, latency_p95_ms="runbook_test_latency_ms")
    with pytest.raises(UnknownSignalError, match="cpu_utilization"):
        src.fetch(["cpu_utilization"], now_s() - pd.Timedelta("1min"), now_s(), 15)


class _RecordingHandler(BaseHTTPRequestHandler):
    """A stand-in HTTP endpoint that records the Authorization header and answers like Prometheus."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self):
        type(self).seen.append(self.headers.get("Authorization"))
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_bearer_token_is_sent_as_header():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(TOKEN_ENV, TOKEN)
            src = source(f"http://127.0.0.1:{server.server_address[1]}", token=True, latency_p95_ms="up")
            src.fetch(["latency_p95_ms"], now_s() - pd.Timedelta("1min"), now_s(), 15)
    finally:
        server.shutdown()
        server.server_close()
    assert _RecordingHandler.seen == [f"Bearer {TOKEN}"]


def test_bearer_token_never_appears_in_errors_repr_or_logs(prom, monkeypatch, caplog):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    caplog.set_level("DEBUG")
    end = now_s()
    texts: list[str] = []
    cases = [
        (source(f"http://127.0.0.1:{free_port()}", token=True, latency_p95_ms="up"), "latency_p95_ms"),
        (source(prom.url, token=True, error_ratio="sum(rate(x[1m]"), "error_ratio"),
        (source(prom.url, token=True, db_connections_active="runbook_test_pool_in_use"), "db_connections_active"),
        (source(prom.url, token=True, cpu_utilization="runbook_test_metric_nobody_exports"), "cpu_utilization"),
    ]
    for src, name in cases:
        try:
            src.fetch([name], end - pd.Timedelta("1min"), end, 15)
        except SourceError as e:
            texts += [str(e), e.hint, repr(e)]
        texts += [repr(src), src.description, *src.warnings]
    texts += [r.getMessage() for r in caplog.records]
    assert len([t for t in texts if "error_ratio" in t]) >= 1  # the errors really happened
    assert all(TOKEN not in t for t in texts)


def test_missing_token_variable_is_a_typed_error(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    src = source(f"http://127.0.0.1:{free_port()}", token=True, latency_p95_ms="up")
    assert TOKEN_ENV in repr(src)
    with pytest.raises(SecretError, match=TOKEN_ENV):
        src.fetch(["latency_p95_ms"], now_s() - pd.Timedelta("1min"), now_s(), 15)
