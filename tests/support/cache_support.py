"""Shared helpers for the cache tests (imported by tests/test_cache_*.py): a keyspace with known figures.

``build_keyspace`` writes, on a fresh private Redis (db 0):

* 200 single-use keys of the lab's volatile scheme: 20 pages x 10 versions, each carrying a timestamp in
  deciseconds 20 s apart (known re-request interval), TTL 30..49 s (short), 1000-byte values;
* 100 search keys: 50 logical keys each stored under two parameter orders, TTL 600..699 s;
* 300 session keys with a UUID, all expiring in the same second (an expiry cluster);
* 100 config keys without a TTL.

TTLs other than the sessions' carry jitter so that only the sessions form a cluster.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

from runbook_lib.lab.servers import free_port

PAGES, VERSIONS, INTERVAL_DS = 20, 10, 200  # 200 deciseconds = 20 s between versions
SEARCH_LOGICAL = 50
SESSIONS = 300
CONFIG_KEYS = 100
TOTAL = PAGES * VERSIONS + 2 * SEARCH_LOGICAL + SESSIONS + CONFIG_KEYS


@dataclass
class Keyspace:
    cluster_at: int  # epoch second every session key expires in
    volatile_keys: list[str]
    search_keys: list[str]
    session_keys: list[str]
    config_keys: list[str]


def build_keyspace(url: str) -> Keyspace:
    now_ds = int(time.time() * 10)
    cluster_at = int(time.time()) + 1000
    r = redis.Redis.from_url(url, socket_timeout=10)
    p = r.pipeline(transaction=False)
    vol, search, sess, cfg = [], [], [], []
    for page in range(1, PAGES + 1):
        for v in range(VERSIONS):
            k = f"api:users::limit=25&page={page}:{now_ds - v * INTERVAL_DS}"
            vol.append(k)
            p.set(k, "x" * 1000, ex=30 + (page * VERSIONS + v) % 20)
    for i in range(SEARCH_LOGICAL):
        for k in (f"api:search?q=x{i}&limit=20", f"api:search?limit=20&q=x{i}"):
            search.append(k)
            p.set(k, "y" * 500, ex=600 + (len(search) * 7) % 100)
    for _ in range(SESSIONS):
        k = f"session:{uuid.uuid4()}"
        sess.append(k)
        p.set(k, "s" * 200, exat=cluster_at)
    for i in range(CONFIG_KEYS):
        k = f"config:feature:{i}"
        cfg.append(k)
        p.set(k, "on")
    p.execute()
    r.close()
    return Keyspace(cluster_at, vol, search, sess, cfg)


def info(url: str, section: str | None = None) -> dict:
    with redis.Redis.from_url(url, socket_timeout=10) as r:
        return r.info(section) if section else r.info()


class ServedInThread:
    """A ThreadingHTTPServer on a free loopback port, served from a thread while the ``with`` block runs.
    Subclasses build ``self.server`` with ``serve(handler)``; the block's end shuts it down (bounded join)."""

    join_timeout_s = 10

    def serve(self, handler) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=self.join_timeout_s)


class FakeApp(ServedInThread):
    """A tiny threaded HTTP app: /api/... answers a JSON body naming the path, after an optional hook;
    /metrics serves cache counters that grow by fixed amounts per scrape. Records concurrency."""

    def __init__(self, on_request=None, metrics_steps=None, answer=None):
        self.on_request = on_request
        self.answer = answer  # optional: path -> JSON-able body (e.g. a fake Prometheus API)
        self.metrics_steps = list(metrics_steps or [])
        self.requests: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.scrapes = 0
        self._lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                if self.path == "/metrics":
                    body = app._metrics().encode()
                    ctype = "text/plain; version=0.0.4"
                else:
                    with app._lock:
                        app.in_flight += 1
                        app.max_in_flight = max(app.max_in_flight, app.in_flight)
                        app.requests.append(self.path)
                        n = len(app.requests)
                    try:
                        if app.on_request:
                            app.on_request(n, self.path)
                        reply = app.answer(self.path) if app.answer else {"path": self.path}
                        body = json.dumps(reply).encode()
                        ctype = "application/json"
                    finally:
                        with app._lock:
                            app.in_flight -= 1
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.serve(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _metrics(self) -> str:
        """The exposition prometheus_client writes for counters cache_hits/cache_misses by route."""
        from prometheus_client import CollectorRegistry, Counter, generate_latest

        step = self.metrics_steps[min(self.scrapes, len(self.metrics_steps) - 1)] if self.metrics_steps else {}
        self.scrapes += 1
        reg = CollectorRegistry()
        hits = Counter("cache_hits", "hits", ["route"], registry=reg)
        misses = Counter("cache_misses", "misses", ["route"], registry=reg)
        for route, (h, m) in step.items():
            hits.labels(route).inc(h)
            misses.labels(route).inc(m)
        return generate_latest(reg).decode()
