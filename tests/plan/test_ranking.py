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
