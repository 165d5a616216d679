"""Scaling sized from measurement: replicas, pool per replica, autoscaler bounds and targets, circuit breaker and
rate limit, each figure with the measurement it rests on and what it expects to change.

Inputs are the levels 01 measured (baseline / incident medians per signal, the window's peak request rate),
the app's knobs (replicas, pool per replica), the SLO and, when known, the database's usable connections.

* **Capacity per replica at the SLO.** With a CPU signal: the baseline's requests per replica scaled to
  ``CPU_TARGET`` (``rate_per_replica * CPU_TARGET / cpu``: throughput linear in CPU, the usual first-order model
  for a CPU-bound web tier). Without one: the baseline's requests per replica, a lower bound (the service was
  seen serving that at the SLO), so the sizing errs on more replicas.
* **Replicas.** ``ceil(rate / capacity)`` for the incident's rate and for the peak; min = the incident's (at
  least ``MIN_REPLICAS``), max = the peak's times ``SURGE_HEADROOM`` (at least ``MAX_OVER_MIN`` x min), capped by the database: replicas x pool may
  not exceed ``CONNECTIONS_WARN_SHARE`` of its usable connections.
* **Pool per replica.** Little's law over the database time (``pool_sizing.littles_law_pool``: L = lambda W plus
  Poisson bursts, times the hold factor), split over min replicas. The healthy baseline's query latency is used:
  sizing the pool for the incident's slow queries would size it for the bug.
* **Circuit breaker and rate limit.** The breaker opens when, over ``BREAKER_WINDOW_S``, at least half the
  baseline's request volume saw an error ratio above ``BREAKER_ERROR_FACTOR`` times the SLO's budget (at least
  ``BREAKER_MIN_ERROR_RATIO``); the rate limit per replica is the capacity at the SLO, so a surge is shed with
  429 instead of queueing on the pool.

Scaling fixes capacity, not slow work: when the CPU is not saturated and the traffic did not surge, the sizing
says so (``addresses_incident`` False) and the plan offers the bounds as a safeguard, not as the fix.

Pure: numbers in, a dict out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from runbook_lib.diagnose.hypotheses import CPU_SATURATED, TRAFFIC_SURGE_RATIO
from runbook_lib.plan.pool_sizing import CONNECTIONS_WARN_SHARE, MIN_POOL_PER_REPLICA, littles_law_pool

# Utilisation a replica is sized for: the common HPA CPU target (Kubernetes docs' examples use 50 %, most
# production targets sit at 60-70 %); 60 % leaves room for a surge while the autoscaler reacts.
CPU_TARGET = 0.6
# Memory target for the HPA: scale out before the working set presses on the limit.
MEMORY_TARGET = 0.8
# Never fewer than two replicas: one replica is one restart away from an outage.
MIN_REPLICAS = 2
# The autoscaler's max covers the peak seen plus this much (traffic grows after an incident's fix: retries).
SURGE_HEADROOM = 1.5
# An autoscaler whose max equals its min does nothing: the max is at least this multiple of the min.
MAX_OVER_MIN = 2
# Scale on p95 before the SLO is breached: target this share of the SLO's latency.
LATENCY_TARGET_SHARE = 0.8
# A CPU reading below this is noise: the capacity model then falls back to the baseline's rate per replica.
MIN_CPU_FOR_MODEL = 0.05
# Kubernetes' own HPA behaviour defaults (scale up: no stabilisation, up to 100 % per 15 s; scale down: 300 s
# stabilisation) and a gentle scale-down of 10 % per minute so a dip does not drop warm replicas at once.
BEHAVIOR = {"scale_up": {"stabilization_s": 0, "percent": 100, "period_s": 15},
            "scale_down": {"stabilization_s": 300, "percent": 10, "period_s": 60}}
# Circuit breaker: judged over 10 s (a few pool timeouts long); opens above 5x the SLO's error budget ratio
# (at least 5 %), and only on at least half the baseline's request volume in that window.
BREAKER_WINDOW_S = 10
BREAKER_ERROR_FACTOR = 5.0
BREAKER_MIN_ERROR_RATIO = 0.05
BREAKER_OPEN_S = 30
# Rate limiter burst: this many seconds of the per-replica limit.
RATE_LIMIT_BURST_S = 2.0


@dataclass(frozen=True)
class Observed:
    """What the sizing rests on (None: not measured)."""

    replicas: int
    pool_per_replica: int | None
    rate_baseline: float | None
    rate_incident: float | None
    rate_peak: float | None
    cpu_baseline: float | None
    cpu_incident: float | None
    db_query_rate_baseline: float | None
    db_query_latency_ms_baseline: float | None
    error_ratio_baseline: float | None
    db_usable_connections: int | None = None


def _ceil(x: float) -> int:
    return max(1, math.ceil(x - 1e-9))


def capacity_per_replica(o: Observed) -> tuple[float | None, str]:
    """Requests/s one replica serves at the SLO, and how that was found."""
    if not o.rate_baseline or o.rate_baseline <= 0:
        return None, "no baseline request rate: capacity unknown"
    per = o.rate_baseline / max(o.replicas, 1)
    if o.cpu_baseline is not None and o.cpu_baseline >= MIN_CPU_FOR_MODEL:
        cap = per * CPU_TARGET / o.cpu_baseline
        return cap, (f"baseline {per:.3g} req/s per replica at {o.cpu_baseline:.0%} CPU, scaled to the "
                     f"{CPU_TARGET:.0%} target (throughput linear in CPU)")
    return per, f"baseline {per:.3g} req/s per replica, served at the SLO (no CPU signal: a lower bound)"


def size(o: Observed, slo_latency_ms: float, slo_error_ratio: float) -> dict:
    """The scaling plan: replicas, pool, autoscaler bounds and targets, breaker, rate limit (see the module)."""
    cap, cap_basis = capacity_per_replica(o)
    rate_now = o.rate_incident or o.rate_baseline
    peak = max(x for x in (o.rate_peak, o.rate_incident, o.rate_baseline, 0.0) if x is not None)
    reasons: dict[str, str] = {"capacity_per_replica": cap_basis}
    if cap is None or rate_now is None:
        return {"capacity_per_replica": None, "addresses_incident": False, "reasons": reasons,
                "summary": "No request-rate signal: replicas cannot be sized from measurement."}
    for_rate = _ceil(rate_now / cap)
    for_peak = _ceil(peak / cap)
    min_r = max(MIN_REPLICAS, for_rate)
    max_r = max(MAX_OVER_MIN * min_r, _ceil(for_peak * SURGE_HEADROOM))
    reasons["min_replicas"] = (f"{rate_now:.3g} req/s now / {cap:.3g} per replica = {rate_now / cap:.2f} -> "
                               f"{for_rate} (at least {MIN_REPLICAS} for availability)")
    reasons["max_replicas"] = (f"peak {peak:.3g} req/s / {cap:.3g} = {peak / cap:.2f} -> {for_peak}, x{SURGE_HEADROOM} "
                               f"headroom; at least {MAX_OVER_MIN}x min")
    pool = _pool(o, min_r, reasons)
    if o.db_usable_connections and pool:
        allowed = int(o.db_usable_connections * CONNECTIONS_WARN_SHARE) // pool
        if allowed < max_r:
            reasons["max_replicas"] += (f"; capped at {max(allowed, min_r)}: {max(allowed, min_r)} x {pool} pool "
                                        f"connections within {CONNECTIONS_WARN_SHARE:.0%} of the database's "
                                        f"{o.db_usable_connections} usable")
            max_r = max(allowed, min_r)
    saturated = o.cpu_incident is not None and o.cpu_incident >= CPU_SATURATED
    surge = bool(o.rate_baseline and rate_now >= TRAFFIC_SURGE_RATIO * o.rate_baseline)
    utilisation_now = rate_now / (o.replicas * cap)
    out = {
        "capacity_per_replica": round(cap, 3), "replicas_now": o.replicas, "replicas_needed": for_rate,
        "replicas_for_peak": for_peak, "min_replicas": min_r, "max_replicas": max_r, "pool_per_replica": pool,
        "utilisation_now": round(utilisation_now, 3), "addresses_incident": saturated or surge,
        "targets": {"cpu_utilization": CPU_TARGET, "memory_utilization": MEMORY_TARGET,
                    "latency_p95_ms": round(slo_latency_ms * LATENCY_TARGET_SHARE, 1),
                    "request_rate_per_replica": round(cap, 3),
                    "db_connections": int(o.db_usable_connections * CONNECTIONS_WARN_SHARE)
                    if o.db_usable_connections else None},
        "behavior": BEHAVIOR, "circuit_breaker": _breaker(o, slo_error_ratio, reasons),
        "rate_limit": {"per_replica_rps": round(cap, 2), "burst": _ceil(cap * RATE_LIMIT_BURST_S)},
        "reasons": reasons,
    }
    reasons["rate_limit"] = (f"the capacity at the SLO ({cap:.3g} req/s per replica): beyond it requests queue on the "
                             "pool and every request gets slower; shed them with 429 instead")
    out["expected"] = _expected(out, rate_now)
    out["summary"] = _summary(out, saturated, surge)
    return out


def _pool(o: Observed, replicas: int, reasons: dict[str, str]) -> int | None:
    if o.db_query_rate_baseline is None or o.db_query_latency_ms_baseline is None:
        reasons["pool_per_replica"] = "no DB query rate or latency signal: pool not sized"
        return None
    # the baseline's DB time per second, scaled to the traffic now (more requests, same per-request work)
    scale = (o.rate_incident or o.rate_baseline or 1.0) / (o.rate_baseline or 1.0)
    db_ms_per_s = o.db_query_rate_baseline * o.db_query_latency_ms_baseline * scale
    law = littles_law_pool(db_ms_per_s, 1.0, replicas)
    reasons["pool_per_replica"] = (f"Little's law: {o.db_query_rate_baseline * scale:.3g} queries/s x "
                                   f"{o.db_query_latency_ms_baseline:.3g} ms (healthy) = {law['concurrency']:.3g} busy "
                                   f"connections; with bursts and hold time {law['recommended_total']} over "
                                   f"{replicas} replicas (at least {MIN_POOL_PER_REPLICA} each)")
    return int(law["recommended_per_replica"])


def _breaker(o: Observed, slo_error_ratio: float, reasons: dict[str, str]) -> dict:
    threshold = max(BREAKER_MIN_ERROR_RATIO, BREAKER_ERROR_FACTOR * slo_error_ratio,
                    BREAKER_ERROR_FACTOR * (o.error_ratio_baseline or 0.0))
    volume = _ceil((o.rate_baseline or 1.0) * BREAKER_WINDOW_S * 0.5)
    reasons["circuit_breaker"] = (f"open above {threshold:.0%} errors over {BREAKER_WINDOW_S} s once {volume} requests "
                                  f"were seen (half the baseline's volume), for {BREAKER_OPEN_S} s; serve the stale "
                                  "cached page or fail fast instead of queueing on the pool")
    return {"error_ratio": round(threshold, 3), "window_s": BREAKER_WINDOW_S, "min_requests": volume,
            "open_s": BREAKER_OPEN_S}


def _expected(out: dict, rate_now: float) -> dict:
    """What each change should do, in numbers the verify step can check."""
    now, need = out["replicas_now"], max(out["min_replicas"], out["replicas_now"])
    return {"replicas": f"{now} -> {need}: utilisation per replica {out['utilisation_now']:.0%} -> "
                        f"{rate_now / (need * out['capacity_per_replica']):.0%} of the capacity at the SLO; "
                        f"throughput ceiling {now * out['capacity_per_replica']:.3g} -> "
                        f"{need * out['capacity_per_replica']:.3g} req/s"}


def _summary(out: dict, saturated: bool, surge: bool) -> str:
    head = (f"{out['replicas_now']} replica(s) at {out['utilisation_now']:.0%} of their capacity at the SLO "
            f"({out['capacity_per_replica']:.3g} req/s each); bounds {out['min_replicas']}-{out['max_replicas']}.")
    if saturated or surge:
        why = "the CPU is saturated" if saturated else "the traffic surged"
        return f"{head} Scaling addresses this incident: {why}."
    return (f"{head} Scaling does not address this incident (CPU not saturated, no traffic surge): the bounds are "
            "a safeguard for the next surge, not the fix.")
