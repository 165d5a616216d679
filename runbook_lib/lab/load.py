"""A bounded load generator for the lab: open-loop asyncio client, loopback only.

Requests arrive as a Poisson process of mean ``rate`` (open loop: a slow backend does not slow the
arrivals, as with real users; random gaps make the short bursts that exhaust a small pool), at most ``concurrency`` in flight (beyond that a request is skipped and counted), for at most
``duration_s`` seconds and ``max_requests`` requests, both capped by ``MAX_DURATION_S``/``MAX_REQUESTS``.
The request mix is fixed (``DEFAULT_MIX``); which user, page or category is asked for follows a Zipf law,
so a few are popular (a cache can help) and most are in the long tail. A seed makes the sequence
reproducible. The generator measures its own CPU time, to show it does not saturate the machine.
"""

from __future__ import annotations

import asyncio
import bisect
import ipaddress
import math
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate
from urllib.parse import urlsplit

import httpx

from runbook_lib.lab.lab_errors import LabError, LoadTargetError

# Hard bounds: one hour, one million requests, 2000 requests/s, 256 in flight.
MAX_DURATION_S = 3600.0
MAX_REQUESTS = 1_000_000
MAX_RATE = 2000.0
MAX_CONCURRENCY = 256
# The seed incident's traffic: mostly the user list (the N+1 endpoint), then user orders, products, dashboard.
DEFAULT_MIX = (("users", 0.55), ("user_orders", 0.25), ("products", 0.15), ("dashboard", 0.05))
# The calibrated incident load (benchmarks/lab_shape.py, 2 cores, full-size data): the degraded lab serves
# it with 5xx in the 3-20% band; at 12-16 req/s it has almost no 5xx, above 25 req/s over a third fail.
INCIDENT_RATE = 18.0
ZIPF_S = 1.1          # popularity skew: rank k is asked for with weight 1/k^1.1
N_CATEGORIES = 50     # seed.N_CATEGORIES
PAGE_SIZE = 25        # app.DEFAULT_PAGE_SIZE


@dataclass(frozen=True)
class LoadSpec:
    duration_s: float = 30.0
    max_requests: int = 100_000
    rate: float = INCIDENT_RATE
    concurrency: int = 64
    users: int = 100_000          # user ids 1..users (the seed's size)
    seed: int = 42
    timeout_s: float = 10.0
    mix: tuple = DEFAULT_MIX

    def validate(self) -> LoadSpec:
        checks = [(0 < self.duration_s <= MAX_DURATION_S, f"duration_s must be in (0, {MAX_DURATION_S:.0f}]"),
                  (0 < self.max_requests <= MAX_REQUESTS, f"max_requests must be in 1..{MAX_REQUESTS}"),
                  (0 < self.rate <= MAX_RATE, f"rate must be in (0, {MAX_RATE:.0f}]"),
                  (0 < self.concurrency <= MAX_CONCURRENCY, f"concurrency must be in 1..{MAX_CONCURRENCY}"),
                  (self.users >= 1, "users must be >= 1"),
                  (0 < self.timeout_s <= 60, "timeout_s must be in (0, 60]")]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise LabError("invalid load: " + "; ".join(bad), hint="see 'runbook lab load --help'")
        return self


@dataclass
class LoadReport:
    sent: int = 0
    skipped: int = 0
    by_status: Counter = field(default_factory=Counter)
    transport_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        xs = sorted(self.latencies_ms)
        return round(xs[min(len(xs) - 1, math.ceil(q * len(xs)) - 1)], 2)

    def summary(self) -> dict:
        done = sum(self.by_status.values())
        fivexx = sum(n for s, n in self.by_status.items() if s >= 500)
        return {
            "sent": self.sent, "completed": done, "skipped_over_concurrency": self.skipped,
            "transport_errors": self.transport_errors,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "rps": round(done / self.wall_s, 1) if self.wall_s else 0.0,
            "p50_ms": self.percentile(0.50), "p95_ms": self.percentile(0.95), "p99_ms": self.percentile(0.99),
            "error_ratio_5xx": round(fivexx / done, 4) if done else None,
            "wall_s": round(self.wall_s, 2), "loadgen_cpu_s": round(self.cpu_s, 2),
            "loadgen_cpu_share_of_one_core": round(self.cpu_s / self.wall_s, 3) if self.wall_s else None,
            "machine_cores": os.cpu_count(),
        }


def check_loopback(url: str) -> str:
    """The URL, if it points at this machine; LoadTargetError otherwise."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return url
    try:
        if ipaddress.ip_address(host).is_loopback:
            return url
    except ValueError:
        pass
    raise LoadTargetError(f"refusing to send load to {host or url!r}: not a loopback address")


class Zipf:
    """Ranks 1..n with P(k) proportional to 1/k^s (inverse CDF over precomputed cumulative weights)."""

    def __init__(self, n: int, s: float, rng: random.Random):
        self.cum = list(accumulate(1.0 / k ** s for k in range(1, n + 1)))
        self.rng = rng

    def __call__(self) -> int:
        return 1 + bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])


class RequestMix:
    """The next request path, drawn from the fixed mix with Zipf popularity."""

    def __init__(self, spec: LoadSpec):
        self.rng = random.Random(spec.seed)
        self.kinds = [k for k, _ in spec.mix]
        self.cum = list(accumulate(w for _, w in spec.mix))
        self.user = Zipf(spec.users, ZIPF_S, self.rng)
        self.page = Zipf(max(1, spec.users // PAGE_SIZE), ZIPF_S, self.rng)
        self.category = Zipf(N_CATEGORIES, ZIPF_S, self.rng)

    def __call__(self) -> str:
        kind = self.kinds[bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])]
        if kind == "users":
            return f"/api/users?page={self.page()}"
        if kind == "user_orders":
            return f"/api/users/{self.user()}/orders"
        if kind == "products":
            return f"/api/products?category=cat-{self.category():02d}"
        return "/api/dashboard/stats"


async def _one(client: httpx.AsyncClient, path: str, report: LoadReport) -> None:
    t0 = time.perf_counter()
    try:
        r = await client.get(path)
        await r.aread()
    except httpx.HTTPError:
        report.transport_errors += 1
        return
    report.latencies_ms.append((time.perf_counter() - t0) * 1000)
    report.by_status[r.status_code] += 1


async def run_load(base_url: str, spec: LoadSpec) -> LoadReport:
    """Send the load; returns when the time or request budget is spent and in-flight requests ended."""
    check_loopback(base_url)
    spec.validate()
    report, next_path = LoadReport(), RequestMix(spec)
    arrivals = random.Random(spec.seed + 1)
    limits = httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency)
    loop = asyncio.get_running_loop()
    cpu0, t0 = time.process_time(), loop.time()
    deadline, tasks = t0 + spec.duration_s, set()
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=spec.timeout_s) as client:
        at = t0
        for _ in range(spec.max_requests):
            at += arrivals.expovariate(spec.rate)
            if at >= deadline:
                break
            if at > loop.time():
                await asyncio.sleep(at - loop.time())
            if len(tasks) >= spec.concurrency:
                report.skipped += 1
                continue
            task = asyncio.create_task(_one(client, next_path(), report))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            report.sent += 1
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=spec.timeout_s + 1)
            for t in pending:
                t.cancel()
    report.wall_s = loop.time() - t0
    report.cpu_s = time.process_time() - cpu0
    return report


def run_load_sync(base_url: str, spec: LoadSpec) -> LoadReport:
    return asyncio.run(run_load(base_url, spec))
