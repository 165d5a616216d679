"""Impact assessment: the remediation actions, ordered by expected gain for the effort and risk.

Each supported hypothesis proposes actions. An action's expected gain is the share of the p95
excess (incident p95 minus SLO) it should remove, judged from the evidence weight behind it; the
priority score is gain / (effort_hours * risk factor). The phases follow the seed's plan:
immediate (minutes, reversible config), short term (hours: indexes, pool), long term (code).
"""

from __future__ import annotations

import pandas as pd

from runbook_lib.diagnose.statements import IDLE_TX_HOLD_S, n_plus_one
from runbook_lib.model import (
    BREAKER_KNOBS,
    RATE_LIMIT_KNOBS,
    Hypothesis,
    PlannedAction,
    app_config_action_id,
    cache_warm_action_id,
    index_action_id,
    kubernetes_apply_action_id,
    pg_setting_action_id,
    pg_terminate_action_id,
    redis_config_action_id,
    slug,
)
from runbook_lib.plan.autoscaler_manifests import hpa_manifest

# An app knob (model.AppKnobs) that switches a per-item query to its batched form: (knob, N+1 value, batched value).
N_PLUS_ONE_FLAG = ("orders_query", "n_plus_one", "join")

PHASE_ORDER = {"immediate": 0, "short-term": 1, "long-term": 2}




def _gain(h: Hypothesis, share: float) -> float:
    return round(h.confidence * share, 3)


def _memory_reason(redis: dict | None) -> str:
    if not redis:
        return "a longer TTL keeps more keys: give Redis room for the working set"
    return (f"used {redis['memory_used_share']:.0%} of maxmemory {redis['maxmemory'] / 2**20:.0f} MiB "
            f"({redis['maxmemory_policy']}), {redis['evicted_per_s']:.1f} evictions/s; a longer TTL keeps more keys")


# Without a recommendation computed from Redis evidence (plan.cache_sizing), the seed incident's fix.
DEFAULT_TTL_S = 300
DEFAULT_REDIS = {"maxmemory": "512mb", "maxmemory-policy": "allkeys-lru"}
# Keys warmed after a key-scheme change: the head of the request distribution (the seed incident's figure).
WARM_TOP_N = 5000


def _cache_values(cfg: dict, cache_plan: dict | None, redis: dict | None) -> tuple[dict, dict]:
    """(TTL, Redis) inputs and reasons: from the measured recommendation when there is one."""
    if not cache_plan:
        return ({"inputs": {"cache_ttl_s": DEFAULT_TTL_S}, "title": f"Raise the response cache TTL to {DEFAULT_TTL_S} s",
                 "reason": f"TTL is {cfg.get('cache_ttl_s', '?')} s, shorter than the reuse interval of hot keys "
                           "(no key sample to size it: the seed incident's value)"},
                {"inputs": dict(DEFAULT_REDIS), "reason": _memory_reason(redis)})
    ttl, mem, pol = cache_plan["ttl"], cache_plan["memory"], cache_plan["policy"]
    ttl_s = ttl["recommended_s"]
    redis_inputs = {}
    if mem["recommended_bytes"] != mem["current_bytes"]:
        redis_inputs["maxmemory"] = mem["recommended"]
    if pol["recommended"] != pol["current"]:
        redis_inputs["maxmemory-policy"] = pol["recommended"]
    return ({"inputs": {"cache_ttl_s": ttl_s}, "title": f"Set the response cache TTL to {ttl_s:g} s",
             "reason": ttl["reasoning"][-1] + " (see 02: cache plan)", "unchanged": ttl_s == ttl["current_s"]},
            {"inputs": redis_inputs, "reason": "; ".join([mem["reasoning"][-1], *pol["reasoning"][-1:]])})


def propose(hyps: list[Hypothesis], statements: pd.DataFrame | None, app_config: dict | None,
            index_candidates: list[dict], redis: dict | None = None,
            cache_plan: dict | None = None, cache_findings: list[dict] | None = None,
            pool_holders: list[dict] | None = None) -> list[PlannedAction]:
    """Actions for every supported hypothesis. ``index_candidates``: [{table, columns, reason}];
    ``redis``: the INFO deltas of the window (for the memory action's reason); ``cache_plan``: the
    recommendation of ``plan.cache_sizing.recommend`` (TTL, maxmemory, policy sized from the evidence);
    ``cache_findings``: ``diagnose.cache_findings.judge`` (with them, keys are normalized only when single-use
    families carry enough of the misses to be a problem; without them, as the seed incident did);
    ``pool_holders``: ``diagnose.statements.idle_tx_holders`` records (sessions holding pool connections idle in
    an open transaction: terminated with approval and bounded by a timeout, the acquire timeout is not touched)."""
    by = {h.category: h for h in hyps if not h.disproved}
    cfg = app_config or {}
    out: list[PlannedAction] = []
    if "cache" in by:
        h = by["cache"]
        ttl, mem = _cache_values(cfg, cache_plan, redis)
        keys_id = app_config_action_id(["cache_key_scheme"])
        single = next((f for f in cache_findings or [] if f["check"].startswith("single-use")), None)
        deps = []
        if cache_findings is None or (single and single["problem"]):
            why = (f"single-use keys cause {single['share']:.0%} of the misses" if single
                   else "most sampled keys are single-use")
            out.append(PlannedAction(keys_id, "immediate",
                                     "Normalize cache keys (drop timestamp and cache-buster parts)", "cache",
                                     "app.config", {"cache_key_scheme": "normalized"},
                                     _gain(h, single["share"] if single else 0.45), 0.25, "low",
                                     why + "; normalized keys are reused across requests"))
            deps.append(keys_id)
        if not ttl.get("unchanged"):
            deps.append(app_config_action_id(ttl["inputs"]))
            out.append(PlannedAction(deps[-1], "immediate", ttl["title"], "cache", "app.config", ttl["inputs"],
                                     _gain(h, 0.2), 0.25, "low", ttl["reason"]))
        if mem["inputs"]:
            deps.append(redis_config_action_id(mem["inputs"]))
            out.append(PlannedAction(deps[-1], "immediate", "Give Redis room for the working set",
                                     "cache", "redis.config_set", mem["inputs"], _gain(h, 0.1), 0.25, "low",
                                     mem["reason"]))
        out.append(PlannedAction(cache_warm_action_id(WARM_TOP_N), "immediate", "Warm the most requested keys",
                                 "cache", "cache.warm", {"top_n": WARM_TOP_N}, _gain(h, 0.05), 0.5, "low",
                                 "avoids a cold-cache stampede right after the cache changes", depends_on=deps))
    if "database" in by:
        h = by["database"]
        for c in index_candidates:
            name = index_action_id(c["table"], list(c["columns"]))
            schema, _, table = c["table"].rpartition(".")  # live proposals name schema.table
            inputs = {"table": table, "columns": list(c["columns"]), **({"schema_name": schema} if schema else {})}
            if c.get("statements"):  # HypoPG-checked proposals: verify that EXPLAIN of these uses the index
                inputs["verify_statements"] = [s["query"] for s in c["statements"]]
            out.append(PlannedAction(name, "short-term", f"Index {c['table']}({', '.join(c['columns'])})",
                                     "database", "postgres.create_index", inputs,
                                     _gain(h, c.get("share", 0.3)), 1.0, "medium", c["reason"]))
        per_item = n_plus_one(statements) if statements is not None and len(statements) else pd.DataFrame()
        for qid, row in per_item.iterrows():
            out.append(PlannedAction(f"rewrite-n-plus-one-{abs(int(qid)) % 10**8}", "long-term",
                                     "Batch the per-item query into one JOIN / IN (...) query", "database",
                                     "recommendation", {"queryid": int(qid), "query": row.query},
                                     _gain(h, 0.3), 8.0, "medium",
                                     f"{row.calls_per_request:.0f} calls per request", executable=False))
        if len(per_item) and cfg.get("orders_query") == N_PLUS_ONE_FLAG[1]:
            # the app ships the batched query behind a flag: switching it is minutes, reversible, and measured
            out.append(PlannedAction(app_config_action_id(["orders_query"]), "short-term",
                                     "Switch the app's orders query to its batched form (flag)", "database",
                                     "app.config", {"orders_query": N_PLUS_ONE_FLAG[2]}, _gain(h, 0.3), 0.25,
                                     "medium", f"the app exposes the N+1 fix as {N_PLUS_ONE_FLAG[0]}="
                                     f"{N_PLUS_ONE_FLAG[2]}; the code change stays the lasting fix"))
    if "application" in by and pool_holders:
        out += _release_held_connections(by["application"], pool_holders)
    elif "application" in by:
        h = by["application"]
        out.append(PlannedAction(app_config_action_id(["db_pool_timeout_s"]), "short-term", "Size the DB pool from measured concurrency",
                                 "application", "app.config", {"db_pool_timeout_s": 2.0}, _gain(h, 0.1), 0.5,
                                 "medium", "pool waits turn into 5xx; a longer acquire timeout trades errors for "
                                 "latency until the queries are fast again"))
    return sorted(out, key=lambda a: (PHASE_ORDER[a.phase], -a.score, a.id))


# The session timeout proposed for the role that leaves transactions open: long enough for any legitimate
# interactive pause in a request path (seconds), short enough that a leaked transaction frees its connection
# within a minute. PostgreSQL docs: idle_in_transaction_session_timeout "terminate any session that has been
# idle ... within an open transaction for longer than the specified amount of time".
IDLE_TX_TIMEOUT = "60s"


def _release_held_connections(h: Hypothesis, holders: list[dict]) -> list[PlannedAction]:
    """What an SRE does when sessions idle in transaction hold the pool: end them (with approval), bound them
    with a timeout so they cannot come back, and find the leak in the code."""
    top = holders[0]
    app = top["application_name"] if top["application_name"] not in ("", "?") else None
    role = top["usename"] if top["usename"] not in ("", "?") else None
    held = sum(int(x["sessions"]) for x in holders)
    who = f"{app or 'any application'}" + (f" as {role}" if role else "")
    out = [PlannedAction(pg_terminate_action_id(app, role), "immediate",
                         f"End the {top['sessions']} sessions of {who} idle in transaction", "application",
                         "postgres.terminate_idle_sessions",
                         {k: v for k, v in (("application_name", app), ("usename", role)) if v}
                         | {"min_idle_s": IDLE_TX_HOLD_S},
                         _gain(h, 0.6), 0.1, "high",
                         f"{held} sessions hold pool connections in open transactions (longest idle "
                         f"{top['longest_idle_s']:.0f} s); their transactions are rolled back, clients reconnect")]
    scope = {"scope": "role", "scope_name": role} if role else {"scope": "system"}
    out.append(PlannedAction(pg_setting_action_id("idle_in_transaction_session_timeout", **scope), "immediate",
                             f"Bound idle transactions to {IDLE_TX_TIMEOUT}"
                             + (f" for role {role}" if role else " server-wide"), "application",
                             "postgres.set_parameter",
                             {"name": "idle_in_transaction_session_timeout", "value": IDLE_TX_TIMEOUT, **scope},
                             _gain(h, 0.2), 0.25, "medium",
                             "new sessions that leave a transaction open lose it after the timeout instead of "
                             "holding a connection (applies to new sessions of the role; reversible)"))
    out.append(PlannedAction(f"fix-pool-leak-{slug(app or role or 'app')}", "long-term",
                             f"Find the code path of {who} that leaves transactions open", "application",
                             "recommendation", {"application_name": app, "usename": role}, _gain(h, 0.2), 4.0,
                             "low", "check every connection checkout is returned (commit/rollback in a finally); "
                             "enable the pool's leak detection", executable=False))
    return out


def scaling_actions(sizing: dict | None, app_config: dict | None, hyps: list[Hypothesis],
                    kubernetes: dict | None = None) -> list[PlannedAction]:
    """Replicas and pool from ``scaling_sizing.size``: an executable ``app.config`` scale-out when scaling addresses
    the incident (the sizing measured saturation or a surge *and* the diagnosis did not rule capacity out) and the
    app's knobs are known; otherwise the autoscaler bounds as a safeguard: with the parameters' ``kubernetes``
    section an executable server-side apply of the HPA (``kubernetes.apply``; the KEDA alternative is written beside
    it for review), else a recommendation. Then the resilience knobs the app has (``resilience_actions``)."""
    if not sizing or sizing.get("capacity_per_replica") is None:
        return []
    cfg = app_config or {}
    by = {h.category: h for h in hyps if not h.disproved}
    if sizing["addresses_incident"] and "infrastructure" not in by:
        # saturation the diagnosis does not blame for the latency (e.g. a database on the same host burning the
        # CPU): more replicas would add load to what is already slow
        sizing = {**sizing, "addresses_incident": False, "summary": sizing["summary"].split(" Scaling")[0] + (
            " The CPU or traffic moved, but the diagnosis ruled out capacity as the cause: scaling out would add "
            "load to what is slow; the bounds are a safeguard, not the fix.")}
    return _capacity_actions(sizing, cfg, by, kubernetes) + resilience_actions(sizing, cfg, by)


def resilience_actions(sizing: dict, cfg: dict, by: dict[str, Hypothesis]) -> list[PlannedAction]:
    """The breaker and the rate limit sized by ``scaling_sizing``, as ``app.config`` changes, only for an app whose
    knobs include them (its config read live: the lab's, or a file with those keys) and only where they matter:

    * the circuit breaker when the pool-exhaustion hypothesis (``application``) stands: while the pool is
      exhausted, misses serve the stale cached answer or fail fast instead of queueing for the pool timeout
      (judged on the 5xx ratio);
    * the rate limit when scaling addresses the incident (a surge or saturation the diagnosis blames, so the
      ``infrastructure`` hypothesis stands): the excess is shed with 429 instead of slowing every request (judged
      on p95). Otherwise it stays in the autoscaling recommendation.

    A knob set that already holds the sized values is not proposed again."""
    out = []
    breaker = sizing.get("circuit_breaker")
    if "application" in by and breaker and all(k in cfg for k in BREAKER_KNOBS):
        changes = {"breaker_error_ratio": breaker["error_ratio"], "breaker_window_s": breaker["window_s"],
                   "breaker_min_requests": breaker["min_requests"], "breaker_open_s": breaker["open_s"]}
        if any(cfg[k] != v for k, v in changes.items()):
            out.append(PlannedAction(
                app_config_action_id(changes), "immediate",
                f"Put a circuit breaker in front of the DB pool (open above {breaker['error_ratio']:.0%} errors "
                f"over {breaker['window_s']:g} s, for {breaker['open_s']:g} s)", "application", "app.config",
                changes, _gain(by["application"], 0.15), 0.25, "medium",
                sizing["reasons"].get("circuit_breaker", "")))
    limit = sizing.get("rate_limit")
    if sizing["addresses_incident"] and limit and all(k in cfg for k in RATE_LIMIT_KNOBS):
        changes = {"rate_limit_rps": limit["per_replica_rps"], "rate_limit_burst": limit["burst"]}
        if any(cfg[k] != v for k, v in changes.items()):
            out.append(PlannedAction(
                app_config_action_id(changes), "immediate",
                f"Rate-limit each replica to {limit['per_replica_rps']:g} req/s (burst {limit['burst']})",
                "infrastructure", "app.config", changes, _gain(by["infrastructure"], 0.2), 0.25, "medium",
                sizing["reasons"].get("rate_limit", "")))
    return out


def _capacity_actions(sizing: dict, cfg: dict, by: dict[str, Hypothesis],
                      kubernetes: dict | None) -> list[PlannedAction]:
    if sizing["addresses_incident"] and "replicas" in cfg:
        changes = {"replicas": max(sizing["min_replicas"], int(cfg["replicas"]))}
        if sizing.get("pool_per_replica") and "db_pool_max" in cfg:
            changes["db_pool_max"] = max(sizing["pool_per_replica"], int(cfg["db_pool_max"]))
        return [PlannedAction(app_config_action_id(changes), "immediate", "Scale out: " + ", ".join(
            f"{k}={v}" for k, v in changes.items()), "infrastructure", "app.config", changes,
            _gain(by["infrastructure"], 0.5), 0.25, "low", sizing["expected"]["replicas"])]
    if kubernetes:
        hpa = hpa_manifest(sizing, kubernetes)
        meta = hpa["metadata"]
        return [PlannedAction(kubernetes_apply_action_id(hpa["kind"], meta["namespace"], meta["name"]), "short-term",
                              f"Autoscale {kubernetes['deployment']} with an HPA ({sizing['min_replicas']}-"
                              f"{sizing['max_replicas']} replicas)", "capacity", "kubernetes.apply",
                              {"manifest": hpa}, 0.0, 1.0, "medium", sizing["summary"])]
    bounds = (f"{sizing['min_replicas']}-{sizing['max_replicas']} replicas at {sizing['targets']['cpu_utilization']:.0%} "
              f"CPU / p95 {sizing['targets']['latency_p95_ms']:g} ms")
    return [PlannedAction("autoscaling-bounds", "short-term", f"Autoscale within {bounds}", "capacity",
                          "recommendation", {k: sizing[k] for k in ("min_replicas", "max_replicas", "targets",
                                                                    "pool_per_replica", "circuit_breaker",
                                                                    "rate_limit")},
                          0.0, 1.0, "low", sizing["summary"], executable=False)]


ACTION_COLUMNS = ["phase", "action", "cause", "expected gain", "effort (h)", "risk", "score", "executor", "why"]


def actions_frame(actions: list[PlannedAction]) -> pd.DataFrame:
    """The plan table (03): one row per action, the columns there even when nothing is proposed."""
    return pd.DataFrame(columns=ACTION_COLUMNS, index=pd.Index([], name="id")) if not actions else pd.DataFrame([{"phase": a.phase, "action": a.title, "cause": a.cause, "expected gain": a.expected_gain,
                          "effort (h)": a.effort_hours, "risk": a.risk, "score": a.score,
                          "executor": a.kind, "why": a.reason} for a in actions],
                        index=pd.Index([a.id for a in actions], name="id"))
