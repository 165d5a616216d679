"""Cache executors: CONFIG SET with CONFIG REWRITE only when asked, and the app's config through the
lab's own API. Change then rollback restores the exact prior values."""

from __future__ import annotations

import json
import subprocess

import pytest
import redis

from runbook_lib.actions import ActionInputError, AuditLog, RedisConfigSet, execute, rollback_run
from runbook_lib.actions.action_errors import PlannedOnly
from runbook_lib.actions.app_config import AppConfig, configmap_patch
from runbook_lib.actions.rollback import undo
from runbook_lib.actions.targets import Targets, app_endpoint
from runbook_lib.errors import AppConfigError
from runbook_lib.lab.config import DEGRADED, EVENTS_FILE, read_config, write_config
from runbook_lib.lab.servers import free_port, kill_pid, wait_until
from runbook_lib.settings import App
from tests.support.actions_support import (
    AdminApp,
    assert_no_secret,
    audit_lines,
    make_settings,
    redis_config,
    steps,
)

CHANGE = {"maxmemory": "64mb", "maxmemory-policy": "allkeys-lru"}


@pytest.fixture
def redis_with_config_file(server_dir):
    """A private redis-server started from a config file (CONFIG REWRITE needs one); stopped by PID."""
    port = free_port()
    conf = server_dir / "redis.conf"
    pidfile = server_dir / "redis.pid"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndaemonize yes\n"
                    f"pidfile {pidfile}\nlogfile {server_dir / 'redis.log'}\ndir {server_dir}\n"
                    "maxmemory 3mb\nmaxmemory-policy noeviction\n")
    subprocess.run(["redis-server", str(conf)], check=True, timeout=30, capture_output=True)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: redis.Redis.from_url(url, socket_timeout=1).ping(), 30, f"redis on {port}")
    pid = int(pidfile.read_text().strip())
    try:
        yield url, conf
    finally:
        kill_pid(pid, f"127.0.0.1:{port}")  # redis-server retitles itself "redis-server HOST:PORT"


def _conf_lines(conf):
    return [line for line in conf.read_text().splitlines() if line.startswith("maxmemory")]


@pytest.mark.slow
def test_config_rewrite_only_when_asked_and_rollback_restores_runtime_and_file(redis_with_config_file, run_dir):
    url, conf = redis_with_config_file
    before, file_before = redis_config(url), _conf_lines(conf)
    settings = make_settings(redis_url=url, apply=True)

    [plain] = execute([RedisConfigSet(config={"maxmemory-samples": "7"})], settings, run_dir)
    assert plain.changed and _conf_lines(conf) == file_before  # runtime only: the file is untouched

    action = RedisConfigSet(config=CHANGE, rewrite=True)
    assert action.plan().commands == ["CONFIG SET maxmemory 64mb maxmemory-policy allkeys-lru", "CONFIG REWRITE"]
    [o] = execute([action], settings, run_dir)
    assert o.status == "applied" and o.commands[-1] == "CONFIG REWRITE"
    assert set(_conf_lines(conf)) >= {"maxmemory 64mb", "maxmemory-policy allkeys-lru"}
    applying = [r for r in audit_lines(run_dir) if r["step"] == "applying"]
    assert applying[-1]["prior"] == {"maxmemory": str(3 * 2**20), "maxmemory-policy": "noeviction"}
    assert applying[-1]["inputs"] == {"config": CHANGE, "rewrite": True}
    assert "rewrite" not in applying[0]["inputs"]  # runtime-only records look as they always did

    undone = rollback_run(run_dir, apply=True)
    assert [u.status for u in undone] == ["rolled back", "rolled back"]
    assert redis_config(url) == before  # every parameter exactly as before
    lines = _conf_lines(conf)
    assert "maxmemory 3mb" in lines and "maxmemory-policy noeviction" in lines


@pytest.mark.slow
def test_rewrite_on_a_server_without_config_file_is_refused_before_any_change(private_redis, run_dir):
    before = redis_config(private_redis.url)
    with pytest.raises(ActionInputError, match="without a config file"):
        execute([RedisConfigSet(config=CHANGE, rewrite=True)], make_settings(redis_url=private_redis.url, apply=True),
                run_dir)
    assert redis_config(private_redis.url) == before
    assert steps(run_dir) == ["planned", "approved", "failed"]
    assert audit_lines(run_dir)[-1]["phase"] == "capture"


def test_flat_inputs_with_rewrite():
    a = RedisConfigSet({"maxmemory": "512mb", "rewrite": True})
    assert a.inputs.config == {"maxmemory": "512mb"} and a.inputs.rewrite
    assert RedisConfigSet({"maxmemory": "512mb"}).to_record()["inputs"] == {"config": {"maxmemory": "512mb"}}


# --- app.config --------------------------------------------------------------------------------------


@pytest.fixture
def lab_config(tmp_path):
    path = tmp_path / "lab" / "config.json"
    path.parent.mkdir()
    write_config(path, DEGRADED)
    return path


def test_app_config_change_and_rollback_restore_the_exact_prior_file(lab_config, run_dir):
    before = lab_config.read_text()
    events_file = str(lab_config.parent / EVENTS_FILE)  # the parameters' source.events_file, as 04 passes it
    ttl = AppConfig({"cache_ttl_s": 300, "config_file": str(lab_config), "events_file": events_file})  # flat form
    scheme = AppConfig(cache_key_scheme="normalized", config_file=str(lab_config))
    assert ttl.inputs.changes == {"cache_ttl_s": 300.0} and ttl.id == "app-config-cache_ttl_s"
    f = str(lab_config)
    assert ttl.plan().commands == [f"jq '.cache_ttl_s = 300' {f} > {f}.new && mv {f}.new {f}"]
    log = AuditLog(run_dir)
    with Targets(make_settings()) as targets:
        priors = []
        for a in (ttl, scheme):
            prior = a.capture(targets)
            priors.append(prior)
            assert not a.is_applied(prior)
            res = a.apply(targets)
            assert res.changed and a.verify(targets).ok
            assert not a.apply(targets).changed  # idempotent: already applied
        assert priors == [{"cache_ttl_s": 5.0}, {"cache_key_scheme": "volatile"}]
        cfg = read_config(lab_config)
        assert (cfg.cache_ttl_s, cfg.cache_key_scheme, cfg.db_pool_max) == (300.0, "normalized", DEGRADED.db_pool_max)
        events = (lab_config.parent / EVENTS_FILE).read_text()
        assert "config patch: cache_ttl_s=300.0" in events  # marked in the event log the charts read
        # rollback newest first, through the framework's undo (prior -> JSON -> prior, as from the audit log)
        for a, prior in reversed(list(zip((ttl, scheme), priors, strict=True))):
            o = undo(a, targets, log, json.loads(json.dumps(prior)), {}, reason="test")
            assert o.status == "rolled back"
        assert read_config(lab_config) == DEGRADED and json.loads(lab_config.read_text()) == json.loads(before)
        assert [r["step"] for r in audit_lines(run_dir)] == ["rolling_back", "rolled_back"] * 2
        assert all(r["restored"] for r in audit_lines(run_dir) if r["step"] == "rolled_back")


def test_app_config_through_execute_and_rollback_run_once_targets_know_the_app_family(lab_config, run_dir,
                                                                                      monkeypatch):
    """What the framework does once Targets.endpoint("app") exists (the change proposed in the report)."""
    original = Targets.endpoint
    monkeypatch.setattr(Targets, "endpoint",
                        lambda self, family: app_endpoint(self.settings) if family == "app" else original(self, family))
    settings = make_settings(apply=True)
    [o] = execute([AppConfig(cache_ttl_s=300, config_file=str(lab_config))], settings, run_dir)
    assert o.status == "applied" and o.verified and read_config(lab_config).cache_ttl_s == 300
    [u] = rollback_run(run_dir, apply=True, settings=settings)
    assert u.status == "rolled back" and read_config(lab_config) == DEGRADED


def test_breaker_and_rate_limit_knobs_on_a_config_file_that_predates_them(tmp_path, run_dir):
    """A config file written before the resilience knobs existed reads as both off; the breaker is set, judged on
    the 5xx ratio, and rolled back to off; the rate limit is judged on p95."""
    old = {k: v for k, v in DEGRADED.as_dict().items() if not k.startswith(("breaker_", "rate_limit_"))}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    changes = {"breaker_error_ratio": 0.05, "breaker_window_s": 10, "breaker_min_requests": 25, "breaker_open_s": 30}
    breaker = AppConfig({**changes, "config_file": str(path)})
    assert breaker.effect_signal == "error_ratio"
    assert breaker.id == "app-config-breaker_error_ratio-breaker_min_requests-breaker_open_s-breaker_window_s"
    assert AppConfig(rate_limit_rps=12.5, rate_limit_burst=25).effect_signal == "latency_p95_ms"
    with pytest.raises(ActionInputError, match="breaker_error_ratio"):
        AppConfig(breaker_error_ratio=1.5)
    [o] = execute([breaker], make_settings(apply=True), run_dir)
    assert o.status == "applied" and read_config(path).breaker_error_ratio == 0.05
    [u] = rollback_run(run_dir, apply=True)
    assert u.status == "rolled back"
    assert read_config(path) == DEGRADED  # off again (the keys now written out with their off values)


def test_configmap_patch_is_planned_only_and_refused_at_capture(lab_config):
    a = AppConfig({"cache_ttl_s": 300, "cache_key_scheme": "normalized", "via": "configmap",
                   "configmap": "shop/api-config"})
    p = a.plan()
    assert configmap_patch(a.inputs.changes) == {"data": {"CACHE_KEY_SCHEME": "normalized", "CACHE_TTL_S": "300"}}
    assert p.commands == [("kubectl --namespace shop patch configmap api-config --type merge --patch "
                           "'{\"data\":{\"CACHE_KEY_SCHEME\":\"normalized\",\"CACHE_TTL_S\":\"300\"}}'")]
    assert "planned only" in a.title and "not applied, not verified" in a.target
    with Targets(make_settings()) as targets, pytest.raises(PlannedOnly, match="not applied"):
        a.capture(targets)
    # a file the parameters name is patched in live mode too (a mounted volume, a file on this host)
    with Targets(make_settings(mode="live")) as targets:
        assert AppConfig(cache_ttl_s=300, config_file=str(lab_config)).capture(targets) == {"cache_ttl_s": 5.0}


def test_an_admin_endpoint_is_patched_verified_and_restored_with_the_token_kept_out(run_dir, monkeypatch):
    token = "admin-token-7f3c9e2b41"
    monkeypatch.setenv("RUNBOOK_TEST_ADMIN_TOKEN", token)
    with AdminApp({"cache_ttl_s": 5, "cache_key_scheme": "volatile", "db_pool_max": 20}, token) as app:
        settings = make_settings(apply=True, mode="live", approved_by="Dana Ortiz (SRE on call)",
                                 change_ticket="CHG-20461").model_copy(update={"app": App(
            admin_url=app.url, admin_token={"env": "RUNBOOK_TEST_ADMIN_TOKEN"})})
        target = settings.app.knobs_target()
        assert target == {"via": "http", "admin_url": app.url}
        a = AppConfig({"cache_ttl_s": 300, **target})
        assert a.plan().commands[0].startswith("curl -fsS -X PATCH") and app.url in a.plan().commands[0]
        [o] = execute([a], settings, run_dir)
        assert o.status == "applied" and o.verified and app.knobs["cache_ttl_s"] == 300
        assert app.knobs["db_pool_max"] == 20  # the other knobs untouched
        [u] = rollback_run(run_dir, apply=True, settings=settings)
        assert u.status == "rolled back" and app.knobs["cache_ttl_s"] == 5
        assert {m for m, _ in app.requests} == {"GET", "PATCH"}
    assert_no_secret(run_dir, token)
    # a wrong token: a clear refusal naming the endpoint, nothing changed
    monkeypatch.setenv("RUNBOOK_TEST_ADMIN_TOKEN", "wrong-token-123")
    with AdminApp({"cache_ttl_s": 5}, token) as app:
        settings = settings.model_copy(update={"app": App(admin_url=app.url,
                                                          admin_token={"env": "RUNBOOK_TEST_ADMIN_TOKEN"})})
        with Targets(settings) as targets, pytest.raises(AppConfigError, match="answered HTTP 401"):
                AppConfig({"cache_ttl_s": 300, "via": "http", "admin_url": app.url}).capture(targets)
        assert app.knobs == {"cache_ttl_s": 5}


@pytest.mark.parametrize("inputs,message", [
    ({"cache_ttl_s": -1}, "cache_ttl_s must be > 0"),
    ({"cache_key_scheme": "random"}, "cache_key_scheme must be one of"),
    ({"requirepass": "x"}, "unknown app knob"),
    ({"cache_ttl_s": "soon"}, "bad value"),
    ({"cache_ttl_s": 300, "via": "configmap", "configmap": "nonamespace"}, "namespace/name"),
])
def test_app_config_refuses_bad_inputs(inputs, message):
    with pytest.raises(ActionInputError, match=message):
        AppConfig(inputs)
