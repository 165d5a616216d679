"""Pure parts of the action framework: no server needed."""

from __future__ import annotations

import json

import pytest

from runbook_lib.actions import (
    EFFECT_THRESHOLD,
    ActionInputError,
    ApprovalRequired,
    AuditLog,
    CreateIndex,
    RedisConfigSet,
    TargetError,
    Targets,
    action_kinds,
    build_action,
    classify,
    decide,
    execute,
    histories,
    plans_frame,
)
from runbook_lib.actions.redis_config import memory_bytes
from runbook_lib.actions.rollback import to_undo
from runbook_lib.errors import SettingsError, TargetUnreachable
from runbook_lib.plan.index_ddl import MAX_IDENTIFIER_BYTES, default_index_name
from runbook_lib.redaction import register_secret
from runbook_lib.settings import Remediation, load_settings
from tests.support.actions_support import PLANTED, make_settings


@pytest.mark.parametrize(("before", "after", "higher_is_worse", "expected"), [
    (800.0, 40.0, True, "helped"),        # latency down
    (800.0, 1600.0, True, "worse"),
    (800.0, 800.0 * (1 + EFFECT_THRESHOLD / 2), True, "no effect"),
    (0.08, 0.85, False, "helped"),        # hit ratio up
    (0.60, 0.30, False, "worse"),
    (0.0, 0.0, False, "no effect"),
    (0.0, 0.5, False, "helped"),
    (None, 0.5, False, "unknown"),
])
def test_classify(before, after, higher_is_worse, expected):
    assert classify(before, after, higher_is_worse) == expected


def test_gate_rules():
    assert decide(make_settings()).apply is False
    d = decide(make_settings(apply=True), actor="ann")
    assert d.apply and d.audit_fields() == {"mode": "lab", "dry_run": False, "actor": "ann",
                                            "approved_by": None, "change_ticket": None}
    live_ok = make_settings(mode="live", apply=True, approved_by="alice", change_ticket="CHG-1")
    assert decide(live_ok).apply
    for rem in (Remediation(apply=True), Remediation(apply=True, change_ticket="CHG-1")):
        with pytest.raises(ApprovalRequired, match="approved_by"):
            decide(make_settings(mode="live").model_copy(update={"remediation": rem}))
    with pytest.raises(ApprovalRequired, match="fixture"):
        # the parameters model refuses this too; bypass it to prove the gate holds on its own
        decide(make_settings(mode="fixture").model_copy(update={"remediation": Remediation(apply=True)}))


def test_live_parameters_without_approval_do_not_load(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("incident: {id: x, title: t}\nmode: live\nsource: {kind: fixture, bundle: b}\n"
                 "remediation: {apply: true}\n")
    with pytest.raises(SettingsError, match="approved_by"):
        load_settings(p)


def test_ids_are_deterministic_and_actions_rebuild_from_records():
    a = CreateIndex(table="orders", columns=["user_id", "created_at"])
    assert a.id == "pg-index-orders-user_id-created_at"
    assert CreateIndex(schema_name="shop", table="Orders", columns=["x"]).id == "pg-index-shop-orders-x"
    r1 = RedisConfigSet(config={"maxmemory-policy": "allkeys-lru", "maxmemory": "1gb"})
    r2 = RedisConfigSet(config={"maxmemory": "1gb", "maxmemory-policy": "allkeys-lru"})
    assert r1.id == r2.id == "redis-config-maxmemory-maxmemory-policy" and r1.plan() == r2.plan()
    for act in (a, r1):
        rec = json.loads(json.dumps(act.to_record()))
        assert build_action(rec["kind"], rec["inputs"]).plan() == act.plan()
    assert set(action_kinds()) >= {"postgres.create_index", "redis.config_set"}
    with pytest.raises(ActionInputError, match="unknown action kind"):
        build_action("k8s.scale", {})


def test_identifiers_are_quoted_not_interpolated():
    evil = CreateIndex(table='orders"; DROP TABLE orders; --', columns=["a"], name="ix_evil")
    create = evil.plan().commands[1]
    assert create == ('CREATE INDEX CONCURRENTLY IF NOT EXISTS "ix_evil" ON '
                      '"public"."orders""; DROP TABLE orders; --" ("a")')
    with pytest.raises(ActionInputError, match="listed twice"):
        CreateIndex(table="t", columns=["a", "a"])
    with pytest.raises(ActionInputError, match="63 bytes"):
        CreateIndex(table="t" * 64, columns=["a"])


def test_long_default_index_names_fit_postgres():
    name = default_index_name("a" * 40, ["b" * 30, "c" * 30])
    assert len(name.encode()) <= MAX_IDENTIFIER_BYTES
    assert name != default_index_name("a" * 40, ["b" * 30, "c" * 31])


def test_memory_sizes_use_redis_units():
    assert memory_bytes("256mb") == 256 * 1024**2
    assert memory_bytes("1g") == 10**9
    assert memory_bytes("100") == 100
    with pytest.raises(ValueError):
        memory_bytes("12tb")


def test_plans_frame_has_one_row_per_action_with_exact_commands():
    df = plans_frame([CreateIndex(table="orders", columns=["user_id"]),
                      RedisConfigSet(config={"maxmemory": "64mb"})])
    assert list(df["action_id"]) == ["pg-index-orders-user_id", "redis-config-maxmemory"]
    assert "CREATE INDEX CONCURRENTLY" in df.loc[0, "commands"]
    assert df.loc[1, "rollback_commands"] == "CONFIG SET maxmemory <prior maxmemory>"


def test_dry_run_needs_no_server_and_no_target_section(tmp_path):
    outcomes = execute([CreateIndex(table="orders", columns=["user_id"])], make_settings(), tmp_path)
    assert [o.status for o in outcomes] == ["planned"]
    with pytest.raises(ActionInputError, match="listed twice"):
        execute([RedisConfigSet(config={"maxmemory": "1mb"})] * 2, make_settings(), tmp_path)


def test_applying_without_a_target_section_is_a_typed_error(tmp_path):
    with pytest.raises(TargetError, match="no postgres section"):
        execute([CreateIndex(table="orders", columns=["user_id"])], make_settings(apply=True), tmp_path)


def test_audit_lines_are_redacted(tmp_path):
    register_secret(PLANTED)
    log = AuditLog(tmp_path)
    log.append("failed", error=f"connection to postgresql://app:{PLANTED}@db:5432/shop failed",
               detail={"dsn": f"host=db password={PLANTED}", PLANTED: "as a key"})
    text = log.path.read_text()
    assert PLANTED not in text and text.count("***") == 3
    assert json.loads(text)["step"] == "failed"


def test_unreachable_server_error_has_no_secret(monkeypatch):
    monkeypatch.setenv("RUNBOOK_SECRET_PG", PLANTED)
    settings = make_settings(pg_dsn="postgresql://app@127.0.0.1:1/shop", pg_secret=True)
    with pytest.raises(TargetUnreachable) as err, Targets(settings) as t:
        t.postgres()
    assert PLANTED not in str(err.value) and "postgres://127.0.0.1:1/shop" in str(err.value)
    assert err.value.endpoint == "postgres://127.0.0.1:1/shop" and err.value.hint


def test_history_replay():
    rec = {"action_id": "a", "kind": "redis.config_set", "inputs": {"config": {"maxmemory": "1mb"}}}
    log = [{**rec, "step": "planned"}, {**rec, "step": "applying", "prior": {"maxmemory": "0"}},
           {**rec, "step": "applied", "changed": True},
           {**rec, "step": "applying", "prior": {"maxmemory": "1048576"}},  # second apply: keeps first prior
           {**rec, "step": "applied", "changed": False}]
    h = histories(log)["a"]
    assert (h.state, h.prior) == ("applied", {"maxmemory": "0"})
    assert [x.action_id for x in to_undo(log)] == ["a"]
    done = [*log, {**rec, "step": "rolling_back"}, {**rec, "step": "rolled_back", "changed": True}]
    assert to_undo(done) == []
    noop = [{**rec, "step": "applying", "prior": {"maxmemory": "1048576"}}, {**rec, "step": "applied"}]
    assert histories(noop)["a"].state == "noop" and to_undo(noop) == []


def test_a_password_planted_in_a_dsn_is_refused_without_echoing_it(tmp_path):
    for dsn in (f"host=db user=app password={PLANTED}", f"postgresql://app:{PLANTED}@db/shop"):
        p = tmp_path / "p.yaml"
        p.write_text(f"incident: {{id: x, title: t}}\nsource: {{kind: fixture, bundle: b}}\npostgres: {{dsn: '{dsn}'}}\n")
        with pytest.raises(SettingsError) as err:
            load_settings(p)
        assert "carries a credential" in str(err.value) and PLANTED not in str(err.value)


def test_impact_plan_inputs_build_actions_directly():
    """plan.json (03) carries flat executor inputs; the registry takes them as they are."""
    r = build_action("redis.config_set", {"maxmemory": "512mb", "maxmemory-policy": "allkeys-lru"})
    assert r.plan().commands == ["CONFIG SET maxmemory 512mb maxmemory-policy allkeys-lru"]
    assert build_action(r.kind, r.to_record()["inputs"]).id == r.id
    i = build_action("postgres.create_index", {"table": "orders", "columns": ["user_id", "created_at"]})
    assert i.id == "pg-index-orders-user_id-created_at"
