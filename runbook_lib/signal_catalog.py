"""The catalog of named signals the analysis understands.

Every backend (fixture bundle, Prometheus, CloudWatch) returns these names; the analysis never
sees backend-specific metric names. A parameters file may only name signals listed here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Signal:
    name: str
    label: str
    unit: str  # "ms", "ratio" (0..1), "1/s", "count"
    group: str  # "symptom" (what users feel), "cache", "database", "application", "infrastructure"
    higher_is_worse: bool
    description: str


CATALOG: dict[str, Signal] = {
    s.name: s
    for s in [
        Signal("latency_p50_ms", "API latency p50", "ms", "symptom", True, "median request duration"),
        Signal("latency_p95_ms", "API latency p95", "ms", "symptom", True, "95th percentile request duration"),
        Signal("latency_p99_ms", "API latency p99", "ms", "symptom", True, "99th percentile request duration"),
        Signal("request_rate", "Request rate", "1/s", "symptom", False, "HTTP requests per second"),
        Signal("error_ratio", "5xx ratio", "ratio", "symptom", True, "share of responses with status 5xx"),
        Signal("cache_hit_ratio", "Cache hit ratio", "ratio", "cache", False, "cache hits / (hits + misses)"),
        Signal("db_query_rate", "DB queries/s", "1/s", "database", True, "SQL statements executed per second"),
        Signal("db_query_latency_ms", "DB query latency (mean)", "ms", "database", True, "mean statement duration"),
        Signal("db_connections_active", "DB connections in use", "count", "application", True,
               "pool connections checked out (or active backends)"),
        Signal("db_pool_max", "DB pool size", "count", "application", False, "configured pool maximum"),
        Signal("cpu_utilization", "CPU utilization", "ratio", "infrastructure", True, "busy share of the CPU"),
        Signal("memory_utilization", "Memory utilization", "ratio", "infrastructure", True, "used share of memory"),
    ]
}

DEFAULT_SIGNALS: tuple[str, ...] = tuple(CATALOG)

# The signal that defines the incident: the user-facing latency the pager fired on.
PRIMARY_SIGNAL = "latency_p95_ms"


def describe() -> list[dict]:
    """The catalog as rows, for ``runbook signals`` and the README."""
    return [s.__dict__.copy() for s in CATALOG.values()]
