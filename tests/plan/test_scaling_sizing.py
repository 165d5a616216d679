"""Scaling sized from measurement: capacity from the baseline, replicas for the rate and the peak, the pool from
Little's law, the database's connections as a cap, and a plan that scales only when scaling is the fix."""

from __future__ import annotations

from runbook_lib.diagnose.hypotheses import hypotheses_from_json
from runbook_lib.plan.ranking import scaling_actions
from runbook_lib.plan.scaling_sizing import CPU_TARGET, MIN_REPLICAS, Observed, size

SLO_MS, SLO_ERRORS = 100.0, 0.01


def observed(**over) -> Observed:
    base = dict(replicas=2, pool_per_replica=10, rate_baseline=100.0, rate_incident=100.0, rate_peak=120.0,
                cpu_baseline=0.3, cpu_incident=0.3, db_query_rate_baseline=400.0, db_query_latency_ms_baseline=2.0,
                error_ratio_baseline=0.0, db_usable_connections=97)
    return Observed(**{**base, **over})


def hyps(*supported: str):
    cats = ("database", "cache", "application", "infrastructure")
    return hypotheses_from_json({"hypotheses": [
        {"category": c, "title": c, "statement": "", "disprove_by": "", "first_onset": None,
         "evidence": [{"check": "x", "observed": "y", "supports": c in supported, "weight": 2}]} for c in cats]})


def test_healthy_service_keeps_its_replicas_and_gets_bounds_only():
    s = size(observed(), SLO_MS, SLO_ERRORS)
    # 50 req/s per replica at 30 % CPU -> 100 req/s at the 60 % target
    assert s["capacity_per_replica"] == 50 * CPU_TARGET / 0.3
    assert s["replicas_needed"] == 1 and s["min_replicas"] == MIN_REPLICAS and s["max_replicas"] >= 2 * MIN_REPLICAS
    assert not s["addresses_incident"] and "does not address" in s["summary"]
    [a] = scaling_actions(s, {"replicas": 2, "db_pool_max": 10}, hyps())
    assert a.kind == "recommendation" and not a.executable  # a healthy control: no change proposed


def test_saturated_cpu_scales_out_with_an_executable_change_sized_from_the_rate():
    s = size(observed(rate_incident=300.0, rate_peak=330.0, cpu_incident=0.95), SLO_MS, SLO_ERRORS)
    assert s["addresses_incident"] and s["replicas_needed"] == 3 and s["replicas_for_peak"] == 4
    [a] = scaling_actions(s, {"replicas": 2, "db_pool_max": 10}, hyps("infrastructure"))
    assert a.kind == "app.config" and a.executable and a.inputs["replicas"] == 3
    assert a.inputs["db_pool_max"] == 10  # the pool never shrinks below what the app has
    assert "2 -> 3" in a.reason


def test_a_traffic_surge_without_cpu_saturation_also_calls_for_replicas():
    s = size(observed(rate_incident=200.0, cpu_incident=0.5, cpu_baseline=None), SLO_MS, SLO_ERRORS)
    # no CPU signal: the baseline's 50 req/s per replica is the (conservative) capacity
    assert s["capacity_per_replica"] == 50.0 and "lower bound" in s["reasons"]["capacity_per_replica"]
    assert s["addresses_incident"] and s["replicas_needed"] == 4


def test_pool_from_littles_law_and_the_database_caps_the_max():
    s = size(observed(rate_peak=1000.0), SLO_MS, SLO_ERRORS)
    # 400 q/s x 2 ms = 0.8 busy connections; bursts and hold time -> a few connections per replica
    assert 2 <= s["pool_per_replica"] <= 5
    capped = size(observed(rate_peak=1000.0, db_usable_connections=12), SLO_MS, SLO_ERRORS)
    assert capped["max_replicas"] * capped["pool_per_replica"] <= 12 or capped["max_replicas"] == capped["min_replicas"]
    assert "capped" in capped["reasons"]["max_replicas"]


def test_breaker_and_rate_limit_follow_the_observed_rates():
    s = size(observed(error_ratio_baseline=0.02), SLO_MS, SLO_ERRORS)
    assert s["circuit_breaker"]["error_ratio"] == 0.1  # 5x the baseline's 2 % (above 5x the SLO's 1 %)
    assert s["circuit_breaker"]["min_requests"] == 500  # half of 10 s of the baseline's 100 req/s
    assert s["rate_limit"]["per_replica_rps"] == s["capacity_per_replica"]


def test_without_a_request_rate_nothing_is_sized_or_proposed():
    s = size(observed(rate_baseline=None, rate_incident=None, rate_peak=None), SLO_MS, SLO_ERRORS)
    assert s["capacity_per_replica"] is None and scaling_actions(s, {"replicas": 1}, hyps()) == []


def test_saturation_the_diagnosis_does_not_blame_gets_no_scale_out():
    """A database on the same host burns the CPU: the infrastructure hypothesis is ruled out, so more replicas
    (more DB load) are not proposed; the bounds stay a safeguard."""
    s = size(observed(rate_incident=100.0, cpu_incident=0.95), SLO_MS, SLO_ERRORS)
    assert s["addresses_incident"]
    [a] = scaling_actions(s, {"replicas": 2, "db_pool_max": 10}, hyps("database", "cache"))
    assert not a.executable and "ruled out capacity" in a.reason
