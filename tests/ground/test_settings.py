"""The parameters model: every bundled file validates; bad input fails in one line naming file and field."""

from pathlib import Path

import pytest

from runbook_lib.errors import SecretError, SettingsError
from runbook_lib.redaction import redact_text
from runbook_lib.settings import SecretRef, load_settings

ROOT = Path(__file__).resolve().parents[2]
GOOD = """incident: {id: t1, title: test}
source: {kind: fixture, bundle: fixtures/d2-latency}
"""


def write(tmp_path, text, name="p.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return f


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "parameters").glob("*.yaml")))
def test_every_bundled_parameters_file_validates(name):
    s = load_settings(ROOT / "parameters" / name)
    # nothing shipped applies by default, except the lab, whose servers exist to be fixed
    assert s.remediation.apply is (s.mode == "lab")


def test_defaults(tmp_path):
    s = load_settings(write(tmp_path, GOOD))
    assert s.mode == "fixture" and s.window.step_seconds == 30 and "latency_p95_ms" in s.signals


@pytest.mark.parametrize("text, culprit", [
    (GOOD + "slo: {latency_p95_ms: fast}\n", "slo.latency_p95_ms"),
    (GOOD + "colour: blue\n", "colour: unknown key"),
    ("incident: {id: t1}\nsource: {kind: fixture, bundle: x}\n", "incident.title: required field is missing"),
    (GOOD + "signals: [latency_p95_ms, latency_p42]\n", "unknown signal 'latency_p42'"),
    (GOOD.replace("fixture, bundle", "nosuch, bundle"), "source"),
    (GOOD + "window: {start: 2026-01-02T00:00:00Z, end: 2026-01-01T00:00:00Z}\n", "window.end must be after"),
    (GOOD + "mode: live\nremediation: {apply: true}\n", "approved_by"),
])
def test_bad_values_name_file_and_field(tmp_path, text, culprit):
    f = write(tmp_path, text)
    with pytest.raises(SettingsError) as e:
        load_settings(f)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(str(f)) and culprit in msg


def test_malformed_yaml_names_line_and_column(tmp_path):
    f = write(tmp_path, GOOD + "slo: {latency_p95_ms: [\n")
    with pytest.raises(SettingsError, match=r"p\.yaml:\d+:\d+: not valid YAML"):
        load_settings(f)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(SettingsError, match="top level must be a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"))


def test_missing_file():
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings("/nonexistent/params.yaml")


@pytest.mark.parametrize("extra, field", [
    ("postgres: {dsn: 'host=db user=app password=hunter22'}\n", "postgres.dsn"),
    ("postgres: {dsn: 'password=hunter22 host=db user=app'}\n", "postgres.dsn"),
    ("postgres: {dsn: 'host=db sslpassword=hunter22'}\n", "postgres.dsn"),
    ("postgres: {dsn: 'postgresql://app:hunter22@db/app'}\n", "postgres.dsn"),
    ("postgres: {dsn: 'postgresql://app@db/app?password=hunter22'}\n", "postgres.dsn"),
    ("redis: {url: 'redis://:hunter22@cache:6379/0'}\n", "redis.url"),
    ("redis: {url: 'redis://cache:6379/0?password=hunter22'}\n", "redis.url"),
    ("source: {kind: prometheus, url: 'http://prom:9090/?token=hunter22', queries: {latency_p95_ms: q}}\n"
     "signals: [latency_p95_ms]\n", "source.url"),  # (refused for the URL before the signals)
])
def test_inline_passwords_are_refused_and_not_echoed(tmp_path, extra, field):
    text = GOOD.replace("source: {kind: fixture, bundle: fixtures/d2-latency}\n", "") if "source:" in extra else GOOD
    with pytest.raises(SettingsError) as e:
        load_settings(write(tmp_path, text + extra))
    msg = redact_text(str(e.value))  # what the CLI prints: the advice survives the redaction
    assert field in msg and "hunter22" not in msg and "with {env: NAME} or {file: PATH} instead" in msg


def test_a_sslmode_or_other_query_parameter_is_no_credential(tmp_path):
    s = load_settings(write(tmp_path, GOOD + "postgres: {dsn: 'postgresql://app@db/app?sslmode=require'}\n"
                            "redis: {url: 'redis://cache:6379/0?socket_timeout=2'}\n"))
    assert s.postgres.dsn.endswith("sslmode=require")


@pytest.mark.parametrize("value", ["", " ", "\t", "TBD", "tbd ", "N/A", "-", "changeme", "none"])
def test_blank_or_placeholder_approvals_are_refused(tmp_path, value):
    with pytest.raises(SettingsError, match="remediation.approved_by: (is blank|is a placeholder)"):
        load_settings(write(tmp_path, GOOD + f"mode: live\nremediation: {{apply: true, approved_by: '{value}', "
                                              "change_ticket: CHG-1}\n"))
    with pytest.raises(SettingsError, match="remediation.change_ticket"):
        load_settings(write(tmp_path, GOOD + f"remediation: {{change_ticket: '{value}'}}\n"))


def test_the_gate_refuses_a_blank_approval_that_bypassed_validation(tmp_path):
    from runbook_lib.actions import ApprovalRequired, decide

    s = load_settings(write(tmp_path, GOOD + "mode: live\nremediation: {apply: true, approved_by: alice, "
                                             "change_ticket: CHG-1}\n"))
    assert decide(s).apply
    blank = s.model_copy(update={"remediation": s.remediation.model_copy(update={"change_ticket": "  "})})
    with pytest.raises(ApprovalRequired, match="real remediation.change_ticket"):
        decide(blank)


def test_redaction_masks_query_credentials_but_not_paths_or_advice():
    assert redact_text("redis://cache/0?password=hunter22&db=1") == "redis://cache/0?password=***&db=1"
    assert redact_text("fixture bundle /etc/passwd: is missing") == "fixture bundle /etc/passwd: is missing"
    assert redact_text("give it as redis.password: {env: NAME}") == "give it as redis.password: {env: NAME}"
    assert redact_text("spring.datasource.password=hunter22") == "spring.datasource.password=***"


def test_secret_refs_resolve_from_env_and_file_and_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_SECRET_T", "s3cr3t-from-env")
    (tmp_path / "pw").write_text("s3cr3t-from-file\n")
    s = load_settings(write(tmp_path, GOOD + f"postgres: {{dsn: 'host=db', password: {{env: RUNBOOK_SECRET_T}}}}\n"
                                            f"redis: {{url: 'redis://cache', password: {{file: {tmp_path}/pw}}}}\n"))
    assert s.postgres.password.reveal().get_secret_value() == "s3cr3t-from-env"
    assert s.redis.password.reveal().get_secret_value() == "s3cr3t-from-file"
    assert "s3cr3t" not in repr(s)
    assert redact_text("connect with s3cr3t-from-env and s3cr3t-from-file") == "connect with *** and ***"


def test_secret_ref_needs_exactly_one_source_and_an_existing_value():
    with pytest.raises(ValueError):
        SecretRef(env="A", file="b")
    with pytest.raises(SecretError, match="RUNBOOK_SECRET_UNSET is not set"):
        SecretRef(env="RUNBOOK_SECRET_UNSET").reveal()


def test_notebook_overrides_win_and_are_named_in_errors(tmp_path):
    f = write(tmp_path, GOOD)
    s = load_settings(f, {"slo": {"latency_p95_ms": 250}, "unrelated_global": 1, "window": None})
    assert s.slo.latency_p95_ms == 250
    with pytest.raises(SettingsError, match=r"\+ notebook parameters slo\): slo.error_ratio"):
        load_settings(f, {"slo": {"error_ratio": 3}})


def test_slo_targets_by_signal_and_the_cache_sizing_margin(tmp_path):
    slo = load_settings(write(tmp_path, GOOD + "slo: {latency_p95_ms: 80, cache_hit_ratio: 0.9}\n")).slo
    assert slo.targets() == {"latency_p95_ms": 80, "error_ratio": 0.01, "cache_hit_ratio": 0.9}
    assert slo.cache_sizing_target() == pytest.approx(0.95)
    assert load_settings(write(tmp_path, GOOD + "slo: {cache_hit_ratio: 0.97}\n")).slo.cache_sizing_target() == 0.99


def test_paths_take_environment_variables_with_defaults(tmp_path, monkeypatch):
    from runbook_lib.settings import resolve_path

    monkeypatch.delenv("RUNBOOK_TEST_DIR", raising=False)
    assert resolve_path("${RUNBOOK_TEST_DIR:-/tmp/x}/events.jsonl") == Path("/tmp/x/events.jsonl")
    with pytest.raises(SettingsError, match=r"\$\{RUNBOOK_TEST_DIR\}, which is not set") as err:
        resolve_path("${RUNBOOK_TEST_DIR}/events.jsonl")
    assert "RUNBOOK_TEST_DIR" in err.value.hint
    monkeypatch.setenv("RUNBOOK_TEST_DIR", str(tmp_path))
    assert resolve_path("${RUNBOOK_TEST_DIR:-/tmp/x}/events.jsonl") == tmp_path / "events.jsonl"


PROM = """incident: {id: t1, title: test}
source: {kind: prometheus, url: "http://127.0.0.1:1", queries: {latency_p95_ms: q, request_rate: q}}
signals: [latency_p95_ms, request_rate]
"""


def test_window_can_start_at_an_event_only_with_an_event_log(tmp_path):
    with pytest.raises(SettingsError, match="start_at_event needs source.events_file"):
        load_settings(write(tmp_path, PROM + "window: {start_at_event: deploy}\n"))
    with pytest.raises(SettingsError, match="start_at_event or window.start/last"):
        load_settings(write(tmp_path, PROM.replace("queries", "events_file: e.jsonl, queries")
                            + "window: {start_at_event: deploy, last: 1h}\n"))
    s = load_settings(write(tmp_path, PROM.replace("queries", "events_file: e.jsonl, queries")
                            + "window: {start_at_event: deploy}\n"))
    assert s.window.start_at_event == "deploy" and s.app.config_file is None


def test_the_app_section_names_where_knobs_live_and_refuses_credentials(tmp_path):
    s = load_settings(write(tmp_path, GOOD + "app: {config_file: cfg.json, base_url: 'http://127.0.0.1:8080'}\n"))
    assert (s.app.config_file, s.app.base_url) == ("cfg.json", "http://127.0.0.1:8080")
    with pytest.raises(SettingsError, match="app.base_url: the connection string carries a credential") as err:
        load_settings(write(tmp_path, GOOD + "app: {base_url: 'http://u:hunter22@127.0.0.1:8080'}\n"))
    assert "hunter22" not in str(err.value)
