"""Shared fixtures: private servers on free loopback ports, always stopped by PID afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from runbook_lib.lab.servers import PostgresServer, PrometheusServer, RedisServer


def make_server_dir(prefix: str) -> Path:
    """A folder the postgres user can enter (pytest's tmp_path is 0700 under /tmp/pytest-of-root)."""
    d = Path(tempfile.mkdtemp(prefix=f"runbook-{prefix}-", dir="/tmp"))
    d.chmod(0o755)
    return d


@pytest.fixture
def run_dir(tmp_path):
    """An empty run folder (audit.jsonl and hand-overs go there)."""
    d = tmp_path / "run"
    d.mkdir()
    return d


def lab_pids(state) -> dict[str, int]:
    """Every process a lab in ``state`` runs by name: servers, backend supervisor and replicas, load."""
    from runbook_lib.lab import stack

    st = stack.status(state)
    pids = {k: c["pid"] for k, c in st["components"].items() if "pid" in c}
    pids.update({f"replica{i}": p for i, p in enumerate(st["components"]["backend"].get("replicas", []))})
    if st.get("load"):
        pids["load"] = st["load"]["pid"]
    return pids


@pytest.fixture
def server_dir():
    d = make_server_dir("test")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _serve(server_cls, prefix: str, folder: str, **kwargs):
    """Start a private server in its own folder; always stop it by PID and remove the folder."""
    d = make_server_dir(prefix)
    server = server_cls(d / folder, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def private_postgres():
    """PostgreSQL 15 with pg_stat_statements preloaded; HypoPG installable. One per test session."""
    yield from _serve(PostgresServer, "pg", "pg")


@pytest.fixture
def private_redis():
    """A fresh Redis per test: tests may CONFIG SET and FLUSHALL freely."""
    yield from _serve(RedisServer, "redis", "redis")


@pytest.fixture
def prometheus_factory():
    """Start Prometheus servers scraping given targets; all are stopped at the end of the test."""
    started: list[PrometheusServer] = []
    dirs: list[Path] = []

    def start(targets: list[str], scrape_interval: str = "1s") -> PrometheusServer:
        d = make_server_dir("prom")
        dirs.append(d)
        server = PrometheusServer(d / "prom", targets=targets, scrape_interval=scrape_interval)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for s in started:
            s.stop()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_secret_env_leak(monkeypatch):
    # tests set their own secrets; never inherit a real one from the developer's shell
    for name in list(os.environ):
        if name.startswith("RUNBOOK_SECRET_"):
            monkeypatch.delenv(name)
