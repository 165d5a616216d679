"""The impact ranking: one id per action, from plan.json through the executor to the audit and rollback."""

from runbook_lib.actions import CreateIndex, build_action
from runbook_lib.model import Evidence, Hypothesis
from runbook_lib.plan.ranking import actions_frame, propose

HOSTILE = 'orders"; DROP TABLE users; --'


def _database_cause() -> Hypothesis:
    return Hypothesis("database", "t", "s", "d", [Evidence("seq scans", "many", True, 3)])


def test_an_index_action_has_the_executors_id_even_for_a_hostile_table_name():
    candidates = [{"table": HOSTILE, "columns": ["user_id", "Created At"], "reason": "seq scans", "share": 0.5},
                  {"table": "shop.orders", "columns": ["user_id"], "reason": "seq scans", "share": 0.2}]
    actions = [a for a in propose([_database_cause()], None, None, candidates, None, None)
               if a.kind == "postgres.create_index"]
    assert len(actions) == 2
    for a in actions:
        executor = build_action(a.kind, a.inputs)
        assert a.id == executor.id and '"' not in a.id and " " not in a.id
    assert actions[0].id == CreateIndex(table=HOSTILE, columns=["user_id", "Created At"]).id
    assert actions[1].id == "pg-index-shop-orders-user_id"


def test_every_executable_action_has_its_executors_id():
    causes = [_database_cause(), Hypothesis("cache", "t", "s", "d", [Evidence("misses", "many", True, 3)]),
              Hypothesis("application", "t", "s", "d", [Evidence("pool waits", "many", True, 3)])]
    candidates = [{"table": "orders", "columns": ["user_id"], "reason": "seq scans", "share": 0.5}]
    actions = [a for a in propose(causes, None, {"cache_ttl_s": 5}, candidates, None, None) if a.executable]
    assert {a.kind for a in actions} == {"app.config", "redis.config_set", "cache.warm", "postgres.create_index"}
    ids = set()
    for a in actions:
        assert a.id == build_action(a.kind, a.inputs).id
        ids.add(a.id)
        assert set(a.depends_on) <= ids  # a dependency is planned, under the id it runs with, before its dependant
    assert len(ids) == len(actions)


def test_a_healthy_control_proposes_nothing():
    assert propose([], None, None, [], None, None) == []


def test_nothing_to_do_is_an_empty_table_with_its_columns_and_a_chart():
    from runbook_lib.report import charts
    from runbook_lib.steps.impact_assessment import impact_conclusion

    frame = actions_frame([])
    assert list(frame.columns)[:7] == ["phase", "action", "cause", "expected gain", "effort (h)", "risk", "score"]
    charts.bar(frame.reset_index(), "id", "score", "scores")  # 03's chart cell on an empty plan
    assert "Nothing to do" in impact_conclusion([])


def test_an_n_plus_one_behind_an_app_flag_is_switched_and_still_recommended_for_the_code():
    import pandas as pd

    per_item = pd.DataFrame({"query": ["SELECT * FROM orders WHERE user_id = $1"], "calls_per_request": [25.0],
                             "rows_per_call": [3.0], "time_share": [0.6]}, index=pd.Index([42], name="queryid"))
    with_flag = propose([_database_cause()], per_item, {"orders_query": "n_plus_one"}, [], None, None)
    flag = [a for a in with_flag if a.kind == "app.config"]
    assert [(a.inputs, a.executable) for a in flag] == [({"orders_query": "join"}, True)]
    assert flag[0].id == build_action("app.config", flag[0].inputs).id
    assert any(a.kind == "recommendation" and "Batch" in a.title for a in with_flag)
    # without the flag (another app), only the recommendation; a batched app gets no switch either
    for cfg in (None, {"orders_query": "join"}):
        assert not [a for a in propose([_database_cause()], per_item, cfg, [], None, None) if a.kind == "app.config"]


# --- resilience knobs: breaker and rate limit from the capacity sizing --------------------------------------

def _sizing(**over):
    from runbook_lib.plan.scaling_sizing import Observed, size

    base = dict(replicas=1, pool_per_replica=4, rate_baseline=20.0, rate_incident=20.0, rate_peak=25.0,
                cpu_baseline=0.3, cpu_incident=0.4, db_query_rate_baseline=80.0, db_query_latency_ms_baseline=2.0,
                error_ratio_baseline=0.0, db_usable_connections=97)
    return size(Observed(**{**base, **over}), 100.0, 0.01)


def _hyps(*supported: str) -> list[Hypothesis]:
    return [Hypothesis(c, c, "s", "d", [Evidence("x", "y", c in supported, 2)])
            for c in ("cache", "database", "application", "infrastructure")]


def _app(**over) -> dict:
    from runbook_lib.model import AppKnobs

    return {**AppKnobs(db_pool_max=4, db_pool_timeout_s=0.25).as_dict(), **over}


def test_the_breaker_is_proposed_when_the_pool_is_exhausted_and_judged_on_the_5xx_ratio():
    from runbook_lib.plan.ranking import scaling_actions

    sizing = _sizing()
    actions = scaling_actions(sizing, _app(), _hyps("application", "database"))
    [b] = [a for a in actions if a.kind == "app.config"]
    cb = sizing["circuit_breaker"]
    assert b.inputs == {"breaker_error_ratio": cb["error_ratio"], "breaker_window_s": cb["window_s"],
                        "breaker_min_requests": cb["min_requests"], "breaker_open_s": cb["open_s"]}
    assert b.executable and b.cause == "application" and b.phase == "immediate" and b.expected_gain > 0
    executor = build_action(b.kind, b.inputs)
    assert b.id == executor.id == "app-config-breaker_error_ratio-breaker_min_requests-breaker_open_s-breaker_window_s"
    assert executor.effect_signal == "error_ratio"
    # no surge: the rate limit stays in the autoscaling recommendation, not a change
    [rec] = [a for a in actions if a.kind == "recommendation"]
    assert rec.inputs["rate_limit"] == sizing["rate_limit"]
    assert not any("rate_limit_rps" in a.inputs for a in actions)


def test_no_breaker_for_a_healthy_control_an_app_without_the_knobs_or_one_already_set():
    from runbook_lib.plan.ranking import scaling_actions

    sizing = _sizing()
    assert not [a for a in scaling_actions(sizing, _app(), _hyps()) if a.kind == "app.config"]  # healthy control
    assert not [a for a in scaling_actions(sizing, _app(), _hyps("cache", "database")) if a.kind == "app.config"]
    # the bundled incident's config snapshot predates the knobs: the app may not have a breaker to switch on
    old = {k: v for k, v in _app().items() if not k.startswith(("breaker_", "rate_limit_"))}
    assert not [a for a in scaling_actions(sizing, old, _hyps("application")) if a.kind == "app.config"]
    cb = sizing["circuit_breaker"]
    done = _app(breaker_error_ratio=cb["error_ratio"], breaker_window_s=float(cb["window_s"]),
                breaker_min_requests=cb["min_requests"], breaker_open_s=float(cb["open_s"]))
    assert not [a for a in scaling_actions(sizing, done, _hyps("application")) if a.kind == "app.config"]


def test_a_traffic_surge_gets_a_rate_limit_at_the_capacity_per_replica_judged_on_p95():
    from runbook_lib.plan.ranking import scaling_actions

    sizing = _sizing(rate_incident=60.0, rate_peak=70.0)  # 3x the baseline: a surge
    assert sizing["addresses_incident"]
    actions = {a.id: a for a in scaling_actions(sizing, _app(), _hyps("infrastructure"))}
    rl = actions["app-config-rate_limit_burst-rate_limit_rps"]
    assert rl.inputs == {"rate_limit_rps": sizing["rate_limit"]["per_replica_rps"],
                         "rate_limit_burst": sizing["rate_limit"]["burst"]}
    assert rl.executable and build_action(rl.kind, rl.inputs).effect_signal == "latency_p95_ms"
    assert "app-config-db_pool_max-replicas" in actions  # beside the scale-out
    # the diagnosis ruled capacity out: neither scale-out nor rate limit, only the bounds
    ruled_out = scaling_actions(sizing, _app(), _hyps("database"))
    assert [a.kind for a in ruled_out] == ["recommendation"]
