"""Step 04's glue: where an action's change goes comes from the parameters, never from the lab's internals."""

from pathlib import Path

import pytest

from runbook_lib.actions import ActionInputError
from runbook_lib.settings import load_settings
from runbook_lib.steps import remediation

ROOT = Path(__file__).resolve().parents[2]
PLAN = {"actions": [
    {"id": "app-config-cache_ttl_s", "phase": "immediate", "title": "TTL", "kind": "app.config",
     "inputs": {"cache_ttl_s": 1800}, "reason": "r"},
    {"id": "cache-warm-top-10", "phase": "immediate", "title": "warm", "kind": "cache.warm", "inputs": {"top_n": 10},
     "reason": "r"},
    {"id": "rewrite", "phase": "long-term", "title": "JOIN", "kind": "recommendation", "inputs": {}, "reason": "N+1"},
]}


def test_lab_parameters_point_app_actions_at_the_labs_files(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNBOOK_LAB_DIR", str(tmp_path))
    entries = remediation.build(PLAN, load_settings(ROOT / "parameters" / "lab.yaml"))
    ttl, warm, rewrite = (e.executor for e in entries)
    assert ttl.inputs.config_file == f"{tmp_path}/config.json"
    assert ttl.inputs.events_file == f"{tmp_path}/events.jsonl"
    f = f"{tmp_path}/config.json"
    assert ttl.plan().commands == [f"jq '.cache_ttl_s = 1800' {f} > {f}.new && mv {f}.new {f}"]
    assert warm.inputs.source_url == "http://127.0.0.1:18080" and warm.inputs.config_file == f"{tmp_path}/config.json"
    assert rewrite is None and entries[2].note.startswith("recommendation")


def test_without_an_app_section_the_plan_says_what_is_missing():
    entries = remediation.build(PLAN, load_settings(ROOT / "parameters" / "fixtures.yaml"))
    ttl = entries[0].executor
    assert ttl.inputs.config_file is None
    assert ttl.plan().commands == ["jq '.cache_ttl_s = 1800' <app.config_file> > <app.config_file>.new && "
                                   "mv <app.config_file>.new <app.config_file>"]
    frame = remediation.plan_frame(entries)
    assert list(frame.index) == ["app-config-cache_ttl_s", "cache-warm-top-10", "rewrite"]
    assert list(frame["executor"])[:2] == ["app.config", "cache.warm"]


def test_a_plan_whose_id_is_not_its_executors_is_refused():
    plan = {"actions": [{**PLAN["actions"][0], "id": "app-cache-ttl"}]}
    with pytest.raises(ActionInputError, match="'app-cache-ttl' builds as 'app-config-cache_ttl_s'"):
        remediation.build(plan, load_settings(ROOT / "parameters" / "fixtures.yaml"))


def test_the_plans_own_inputs_win_over_the_parameters(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNBOOK_LAB_DIR", str(tmp_path))
    plan = {"actions": [{**PLAN["actions"][0], "inputs": {"cache_ttl_s": 60, "config_file": "/elsewhere.json"}}]}
    [entry] = remediation.build(plan, load_settings(ROOT / "parameters" / "lab.yaml"))
    assert entry.executor.inputs.config_file == "/elsewhere.json"


def test_operator_actions_from_the_parameters_join_the_plan_under_their_executor_ids(tmp_path):
    from runbook_lib.errors import SettingsError
    from runbook_lib.steps.impact_assessment import extra_actions

    text = (ROOT / "parameters" / "fixtures.yaml").read_text().replace("bundle: fixtures/", f"bundle: {ROOT}/fixtures/")
    p = tmp_path / "p.yaml"
    p.write_text(text + "  extra_actions:\n    - {kind: redis.config_set, inputs: {maxmemory: 1mb}, why: drill}\n")
    [a] = extra_actions(load_settings(p), set())
    assert (a.id, a.kind, a.reason, a.cause) == ("redis-config-maxmemory", "redis.config_set", "drill", "operator")
    with pytest.raises(SettingsError, match="already in the plan"):
        extra_actions(load_settings(p), {"redis-config-maxmemory"})
    p.write_text(text + "  extra_actions:\n    - {kind: redis.flushall, inputs: {}}\n")
    with pytest.raises(SettingsError, match=r"extra_actions\[0\]: unknown action kind 'redis.flushall'"):
        extra_actions(load_settings(p), set())
