"""RedisConfigSet through the framework, against a private Redis per test (CONFIG SET is safe there)."""

from __future__ import annotations

import pytest
import redis

from runbook_lib.actions import (
    EXECUTORS,
    ActionInputError,
    RedisConfigSet,
    VerifyFailed,
    VerifyResult,
    by_signal,
    execute,
    outcomes_frame,
    rollback_run,
)
from tests.support.actions_support import (
    PLANTED,
    REDIS_SECRET_ENV,
    assert_no_secret,
    audit_lines,
    make_settings,
    redis_config,
    steps,
)

pytestmark = pytest.mark.slow

CHANGE = {"maxmemory": "64mb", "maxmemory-policy": "allkeys-lru"}


def test_dry_run_changes_nothing_on_the_server(private_redis, run_dir):
    before = redis_config(private_redis.url)
    [o] = execute([RedisConfigSet(config=CHANGE)], make_settings(redis_url=private_redis.url), run_dir)
    assert o.status == "planned"
    assert o.commands == ["CONFIG SET maxmemory 64mb maxmemory-policy allkeys-lru"]
    assert redis_config(private_redis.url) == before
    assert steps(run_dir) == ["planned"]


def test_apply_second_apply_noop_rollback_restores_every_parameter(private_redis, run_dir):
    before = redis_config(private_redis.url)
    action = RedisConfigSet(config=CHANGE)
    settings = make_settings(redis_url=private_redis.url, apply=True)

    [o] = execute([action], settings, run_dir)
    assert o.status == "applied" and o.verified
    now = redis_config(private_redis.url)
    assert (now["maxmemory"], now["maxmemory-policy"]) == (str(64 * 1024**2), "allkeys-lru")
    assert {k for k in now if now[k] != before[k]} == {"maxmemory", "maxmemory-policy"}

    # the same change spelled in bytes is recognised as already there
    [again] = execute([RedisConfigSet(config={"maxmemory": str(64 * 1024**2), "maxmemory-policy": "allkeys-lru"})],
                      settings, run_dir)
    assert again.status == "already applied" and not again.changed
    prior = next(r for r in audit_lines(run_dir) if r["step"] == "applying")["prior"]
    assert prior == {"maxmemory": before["maxmemory"], "maxmemory-policy": before["maxmemory-policy"]}

    [undone] = rollback_run(run_dir, apply=True)
    assert undone.status == "rolled back"
    assert redis_config(private_redis.url) == before


def test_unknown_parameter_and_bad_value_are_refused_before_planning():
    with pytest.raises(ActionInputError, match="not one this action changes"):
        RedisConfigSet(config={"requirepass": "x"})
    with pytest.raises(ActionInputError, match="maxmemory-policy must be one of"):
        RedisConfigSet(config={"maxmemory-policy": "sometimes"})
    with pytest.raises(ActionInputError, match="not a Redis memory size"):
        RedisConfigSet(config={"maxmemory": "lots"})


def _fake_measure(values):
    """A measure callable returning the given values in order (the verify loop's signal)."""
    it = iter(values)
    return lambda action: next(it)


@pytest.mark.parametrize("auto_rollback", [True, False])
def test_worse_signal_is_rolled_back_only_with_auto_rollback(private_redis, run_dir, auto_rollback):
    before = redis_config(private_redis.url)
    settings = make_settings(redis_url=private_redis.url, apply=True, auto_rollback=auto_rollback)
    # cache_hit_ratio (higher is better): 0.60 before, then 0.30 / 0.32 / 0.31 after -> worse
    [o] = execute([RedisConfigSet(config=CHANGE)], settings, run_dir,
                  measure=_fake_measure([0.60, 0.30, 0.32, 0.31]), verify_window_s=0)
    assert (o.effect, o.before, o.after) == ("worse", 0.60, 0.31)
    assessed = next(r for r in audit_lines(run_dir) if r["step"] == "assessed")
    assert assessed["effect"] == "worse" and assessed["signal"] == "cache_hit_ratio"
    if auto_rollback:
        assert o.rolled_back and o.status == "rolled back" and "rolled back automatically" in o.message
        assert redis_config(private_redis.url) == before
        assert steps(run_dir)[-2:] == ["rolling_back", "rolled_back"]
        assert rollback_run(run_dir, apply=True) == []  # already undone
    else:
        assert not o.rolled_back and redis_config(private_redis.url)["maxmemory-policy"] == "allkeys-lru"
    assert outcomes_frame([o]).loc[0, "effect"] == "worse"


def test_helped_signal_is_kept(private_redis, run_dir):
    settings = make_settings(redis_url=private_redis.url, apply=True, auto_rollback=True)
    [o] = execute([RedisConfigSet(config=CHANGE)], settings, run_dir,
                  measure=_fake_measure([0.08, 0.85, 0.9, 0.88]), verify_window_s=0)
    assert o.effect == "helped" and not o.rolled_back
    assert redis_config(private_redis.url)["maxmemory-policy"] == "allkeys-lru"


def test_planted_redis_password_is_in_no_audit_line(private_redis, run_dir, monkeypatch):
    with redis.Redis.from_url(private_redis.url) as r:
        r.config_set("requirepass", PLANTED)
    monkeypatch.setenv(REDIS_SECRET_ENV, PLANTED)
    settings = make_settings(redis_url=private_redis.url, apply=True, redis_secret=True)
    [o] = execute([RedisConfigSet(config=CHANGE)], settings, run_dir)
    assert o.verified
    rollback_run(run_dir, apply=True)
    assert_no_secret(run_dir, outcomes_frame([o]).to_string())
    # requirepass is not something the action may read or change: never captured
    assert all("requirepass" not in str(r) for r in audit_lines(run_dir))


class _NeverInEffect(RedisConfigSet):
    """A config change whose effect never shows: exercises the verify failure path."""

    kind = "test.redis_config_never_in_effect"

    def verify(self, targets):
        return VerifyResult(False, "simulated: the new value is not visible")


def test_verify_failure_stops_the_run_keeps_the_log_consistent_and_can_be_undone(private_redis, run_dir, monkeypatch):
    monkeypatch.setitem(EXECUTORS, _NeverInEffect.kind, _NeverInEffect)  # rollback rebuilds it by kind
    before = redis_config(private_redis.url)
    action = _NeverInEffect(config=CHANGE)
    later = RedisConfigSet(config={"maxmemory-samples": "9"})
    with pytest.raises(VerifyFailed, match="not in effect") as err:
        execute([action, later], make_settings(redis_url=private_redis.url, apply=True), run_dir)
    assert "runbook rollback" in str(err.value) and action.id in str(err.value)
    assert steps(run_dir, action.id)[-3:] == ["applied", "verified", "failed"]
    assert steps(run_dir, later.id) == ["planned"]  # nothing after the failure ran
    assert redis_config(private_redis.url)["maxmemory-samples"] == before["maxmemory-samples"]
    rollback_run(run_dir, apply=True)  # rebuilt from the audit log through the registry
    assert redis_config(private_redis.url) == before


def test_verify_loop_with_by_signal(private_redis, run_dir):
    readings = {"cache_hit_ratio": iter([0.1, 0.9])}
    settings = make_settings(redis_url=private_redis.url, apply=True)
    [o] = execute([RedisConfigSet(config=CHANGE)], settings, run_dir,
                  measure=by_signal(lambda name: next(readings[name])), verify_samples=1, verify_window_s=0)
    assert (o.before, o.after, o.effect) == (0.1, 0.9, "helped")
