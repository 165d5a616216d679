"""Alert -> parameters: the notification's parsing, the dedupe key, the templates and the dry-run policy."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from runbook_lib.automation.alert_mapping import (
    dedupe_key,
    incident_id,
    load_template,
    load_templates,
    map_alert,
    parse_notification,
    service_of,
    template_for,
)
from runbook_lib.automation.automation_errors import AlertPayloadError, NoTemplateError, TemplateError
from runbook_lib.settings import Settings, project_root
from tests.support.automation_support import notification

RECEIVED = datetime(2026, 12, 1, 10, 2, 30, tzinfo=UTC)
SHIPPED = project_root() / "parameters" / "automation"


def write_template(folder: Path, name: str, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"service": name, "base": "parameters/fixtures.yaml", **fields}))
    return path


def test_the_shipped_templates_load_and_map_to_valid_parameters():
    templates = load_templates(SHIPPED)
    assert set(templates) == {"api"}  # *.example.yaml is documentation, not loaded
    mapped = map_alert(parse_notification(notification("api")), templates["api"], RECEIVED)
    settings = Settings.model_validate(mapped.parameters)
    assert settings.incident.id == "api-highlatency-20261201t100000z"
    assert settings.incident.service == "api" and settings.incident.severity == "sev2"
    assert settings.mode == "fixture" and settings.remediation.apply is False
    assert settings.window.start is None  # a recorded bundle keeps its own window
    example = load_template(SHIPPED / "checkout.example.yaml")
    live = map_alert(parse_notification(notification("checkout", severity="critical")), example, RECEIVED)
    assert live.parameters["postgres"]["password"] == {"env": "RUNBOOK_SECRET_CHECKOUT_PG_PASSWORD"}
    assert live.parameters["incident"]["severity"] == "sev1"
    assert "db_pool_max" in live.parameters["signals"]


def test_a_live_window_starts_before_the_alert_and_ends_when_it_arrived():
    example = load_template(SHIPPED / "checkout.example.yaml")  # before: 45m
    mapped = map_alert(parse_notification(notification("checkout", starts_at="2026-12-01T10:00:00.5Z")),
                       example, RECEIVED)
    w = Settings.model_validate(mapped.parameters).window
    assert w.start == datetime(2026, 12, 1, 9, 15, 0, 500000, tzinfo=UTC)
    assert w.end == RECEIVED and w.last is None
    assert mapped.alert["starts_at"].startswith("2026-12-01T10:00:00.5")
    assert mapped.alert["generator_url"].startswith("http://prometheus.example:9090/graph")


def test_the_dedupe_key_is_the_group_not_the_notification():
    first = parse_notification(notification("api"))
    repeat = parse_notification(notification("api", starts_at="2026-12-01T10:05:00Z"))
    resolved = parse_notification(notification("api", status="resolved"))
    other = parse_notification(notification("web"))
    assert dedupe_key(first) == dedupe_key(repeat) == dedupe_key(resolved)
    assert dedupe_key(first) != dedupe_key(other)


@pytest.mark.parametrize("payload, words", [
    ([], "JSON list"),
    ({"version": "3", "groupKey": "g", "status": "firing", "alerts": []}, "version '3'"),
    ({"version": "4", "status": "firing", "alerts": [{}]}, "groupKey"),
    ({"version": "4", "groupKey": "g", "status": "firing", "alerts": []}, "alerts"),
    ({"version": "4", "groupKey": "g", "status": "pending", "alerts": [{"status": "firing",
                                                                           "startsAt": "2026-12-01T10:00:00Z"}]},
     "status"),
])
def test_what_is_not_a_notification_is_refused_with_the_field(payload, words):
    with pytest.raises(AlertPayloadError, match=words):
        parse_notification(payload)


def test_an_alert_without_a_mapped_service_is_refused():
    n = parse_notification(notification("api"))
    with pytest.raises(NoTemplateError, match="no automation template for service 'api'"):
        template_for({}, service_of(n, "service"))
    bare = notification("api")
    for part in (bare["groupLabels"], bare["commonLabels"], bare["alerts"][0]["labels"]):
        part.pop("service", None)
    with pytest.raises(NoTemplateError, match="names no single 'service' label"):
        service_of(parse_notification(bare), "service")


def test_automated_runs_are_dry_runs_whatever_the_base_says(tmp_path):
    base = yaml.safe_load((project_root() / "parameters" / "lab.yaml").read_text())
    base["remediation"] = {"apply": True, "approved_by": "jane.doe", "change_ticket": "CHG-1"}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    t = load_template(write_template(tmp_path / "t", "api", base=str(tmp_path / "base.yaml")))
    mapped = map_alert(parse_notification(notification("api")), t, RECEIVED)
    assert mapped.apply is False and mapped.parameters["remediation"]["apply"] is False
    assert "approved_by" not in mapped.parameters["remediation"]


def test_apply_needs_a_real_standing_approval_in_the_template(tmp_path):
    with pytest.raises(TemplateError, match="needs remediation.approved_by and remediation.change_ticket"):
        load_template(write_template(tmp_path, "api", remediation={"apply": True, "approved_by": "jane"}))
    with pytest.raises(TemplateError, match="placeholder"):
        load_template(write_template(tmp_path, "api", remediation={"apply": True, "approved_by": "jane",
                                                                   "change_ticket": "TBD"}))
    base = tmp_path / "lab.yaml"
    base.write_text((project_root() / "parameters" / "lab.yaml").read_text())
    t = load_template(write_template(tmp_path, "api", base=str(base), remediation={
        "apply": True, "approved_by": "sre-oncall", "change_ticket": "CHG-20417"}))
    mapped = map_alert(parse_notification(notification("api")), t, RECEIVED)
    assert mapped.apply is True
    assert mapped.parameters["remediation"]["change_ticket"] == "CHG-20417"


def test_a_template_that_cannot_apply_in_fixture_mode_fails_at_mapping(tmp_path):
    t = load_template(write_template(tmp_path, "api", remediation={
        "apply": True, "approved_by": "sre-oncall", "change_ticket": "CHG-20417"}))
    with pytest.raises(TemplateError, match="mode fixture with remediation.apply"):
        map_alert(parse_notification(notification("api")), t, RECEIVED)


@pytest.mark.parametrize("fields, words", [
    ({"overrides": {"remediation": {"apply": True}}}, "remediation comes from the alert"),
    ({"overrides": {"incident": {"id": "x"}}}, "incident comes from the alert"),
    ({"overrides": {"signal": ["latency_p95_ms"]}}, "unknown parameters section 'signal'"),
    ({"base": "parameters/nope.yaml"}, "is not a file"),
    ({"window": {"before": "half an hour"}}, "not a duration"),
    ({"extra": 1}, "extra"),
])
def test_bad_templates_are_refused_with_the_field(tmp_path, fields, words):
    with pytest.raises(TemplateError, match=words):
        load_template(write_template(tmp_path, "api", **fields))


def test_overrides_that_break_the_parameters_name_the_field(tmp_path):
    t = load_template(write_template(tmp_path, "api", overrides={"signals": ["latency_p95_ms"]}))
    with pytest.raises(TemplateError, match="signals: the analysis needs request_rate"):
        map_alert(parse_notification(notification("api")), t, RECEIVED)


def test_two_templates_for_one_service_are_refused(tmp_path):
    write_template(tmp_path, "api")
    (tmp_path / "api-copy.yaml").write_text((tmp_path / "api.yaml").read_text())
    with pytest.raises(TemplateError, match="another template"):
        load_templates(tmp_path)


def test_incident_ids_fit_the_parameters_pattern():
    long = incident_id("Checkout Service (EU)", "P95LatencyAboveSLOForTheLastFifteenMinutesOrMore" * 2,
                       datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    assert len(long) <= 63 and long.endswith("-20261201t100000z") and long.startswith("checkout-service-eu-")
    Settings.model_validate({**yaml.safe_load((project_root() / "parameters/fixtures.yaml").read_text()),
                             "incident": {"id": long, "title": "t"}})
