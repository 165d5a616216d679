"""From an Alertmanager notification to the parameters of one run: pure functions, no I/O but reading templates.

Alertmanager (``webhook_configs``) posts one JSON notification per alert group: ``groupKey`` names the group,
``status`` is ``firing`` while any of its alerts fires and ``resolved`` once all have, ``alerts`` carry
``labels``, ``annotations``, ``startsAt`` and ``generatorURL``. It repeats a firing group's notification every
``group_interval`` when the group changes and every ``repeat_interval`` when it does not.

A per-service template (``parameters/automation/<service>.yaml``) says how an alert of that service becomes a
parameters file: the ``base`` parameters (source, signals, SLO), ``overrides`` of whole sections (which signals,
which PostgreSQL DSN / Redis URL and their secret references), how far before the alert the analysis window
starts, and the remediation policy. An automated run is a dry run unless the template itself says
``apply: true`` *and* carries a real approval (``approved_by`` and ``change_ticket``, a standing change for
this alert): the base parameters' own remediation section never reaches an automated run.

One run per alert group and firing episode: ``dedupe_key`` is the group key; a firing notification for a group
that already has a run is a duplicate, a resolved one closes the episode (``registry``).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runbook_lib.automation.automation_errors import AlertPayloadError, NoTemplateError, TemplateError
from runbook_lib.errors import SettingsError
from runbook_lib.settings import (
    MAX_TITLE_CHARS,
    SECTIONS,
    approval_problem,
    display_path,
    read_yaml,
    resolve_path,
)
from runbook_lib.settings import Settings as RunSettings

# Alert label values (``severity``) -> the incident's severity.
DEFAULT_SEVERITIES = {"critical": "sev1", "page": "sev2", "high": "sev2", "error": "sev2", "major": "sev2",
                      "warning": "sev3", "warn": "sev3", "minor": "sev3", "info": "sev4", "low": "sev4"}
# Template files: <service>.yaml; *.example.yaml are documentation, not loaded.
EXAMPLE_SUFFIX = ".example.yaml"
# A notification is a page of JSON; Alertmanager caps a group at max_alerts when configured.
MAX_ALERTS = 1000
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the notification -------------------------------------------------------------------------------


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    startsAt: datetime  # noqa: N815 - Alertmanager's field names
    endsAt: datetime | None = None  # noqa: N815
    generatorURL: str = ""  # noqa: N815
    fingerprint: str = ""


class Notification(BaseModel):
    """Alertmanager's webhook body (version 4)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str = "4"
    groupKey: str = Field(min_length=1)  # noqa: N815
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = {}  # noqa: N815
    commonLabels: dict[str, str] = {}  # noqa: N815
    commonAnnotations: dict[str, str] = {}  # noqa: N815
    externalURL: str = ""  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    alerts: list[Alert] = Field(min_length=1, max_length=MAX_ALERTS)

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.status == "firing"]

    def label(self, name: str) -> str | None:
        """A label of the whole group: a grouping label, a common one, or shared by every alert."""
        value = self.groupLabels.get(name) or self.commonLabels.get(name)
        if value:
            return value
        values = {a.labels.get(name) for a in self.alerts}
        return values.pop() if len(values) == 1 else None


def parse_notification(payload: Any) -> Notification:
    if not isinstance(payload, dict):
        raise AlertPayloadError(f"the body is a JSON {type(payload).__name__}, not an Alertmanager notification")
    if str(payload.get("version", "4")) != "4":
        raise AlertPayloadError(f"webhook version {payload.get('version')!r}; this receiver reads version 4")
    try:
        return Notification.model_validate(payload)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise AlertPayloadError(f"not an Alertmanager notification: {where}: {first['msg']}") from None


def dedupe_key(notification: Notification) -> str:
    """The run's identity: the alert group (Alertmanager's groupKey, stable across its repeats)."""
    return hashlib.sha256(notification.groupKey.encode()).hexdigest()[:32]


# --- the template ---------------------------------------------------------------------------------


class WindowPolicy(_Model):
    before: str = Field("30m", description="the analysis starts this long before the alert's startsAt")
    from_alert: bool = Field(True, description="false: keep the base parameters' window (a recorded bundle's)")

    @field_validator("before")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not _DURATION.match(v):
            raise ValueError(f"{v!r} is not a duration like 30m, 2h, 90s")
        return v


class RemediationPolicy(_Model):
    apply: bool = False
    approved_by: str | None = None
    change_ticket: str | None = None
    auto_rollback: bool = False

    @model_validator(mode="after")
    def _apply_needs_approval(self):
        for name in ("approved_by", "change_ticket"):
            problem = approval_problem(getattr(self, name))
            if problem:
                raise ValueError(f"remediation.{name} {problem}")
        if self.apply and not (self.approved_by and self.change_ticket):
            raise ValueError("apply: true in an automated run needs remediation.approved_by and "
                             "remediation.change_ticket (a standing approval); without them runs are dry runs")
        return self


class Template(_Model):
    service: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    base: str = Field(description="the parameters file a run starts from, relative to the project root")
    overrides: dict[str, Any] = Field(default_factory=dict, description="whole parameters sections replaced")
    window: WindowPolicy = WindowPolicy()
    severity_default: Literal["sev1", "sev2", "sev3", "sev4"] = "sev2"
    severities: dict[str, Literal["sev1", "sev2", "sev3", "sev4"]] = Field(default_factory=dict)
    remediation: RemediationPolicy = RemediationPolicy()

    @field_validator("overrides")
    @classmethod
    def _sections(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = [k for k in v if k not in SECTIONS]
        if unknown:
            raise ValueError(f"unknown parameters section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
        for reserved in ("incident", "remediation"):
            if reserved in v:
                raise ValueError(f"{reserved} comes from the alert and the template's own remediation policy, "
                                 "not from overrides")
        return v


def load_template(path: Path) -> Template:
    try:
        data = read_yaml(path)
    except SettingsError as e:
        raise TemplateError(str(e)) from None
    try:
        template = Template.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise TemplateError(f"{display_path(path)}: {where}: {first['msg'].removeprefix('Value error, ')}") from None
    if not resolve_path(template.base).is_file():
        raise TemplateError(f"{display_path(path)}: base {template.base!r} is not a file")
    return template


def load_templates(folder: Path) -> dict[str, Template]:
    """Every ``<service>.yaml`` in ``folder`` by service; two templates for one service are refused."""
    if not folder.is_dir():
        raise TemplateError(f"template folder {display_path(folder)} does not exist",
                            hint="create it with one <service>.yaml per service (see parameters/automation/)")
    templates: dict[str, Template] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name.endswith(EXAMPLE_SUFFIX):
            continue
        t = load_template(path)
        if t.service in templates:
            raise TemplateError(f"{display_path(path)}: service {t.service!r} has another template in the folder")
        templates[t.service] = t
    return templates


# --- the mapping ----------------------------------------------------------------------------------


class MappedRun(_Model):
    """What the receiver enqueues: the run's parameters and the alert they came from."""

    service: str
    incident_id: str
    parameters: dict[str, Any]
    alert: dict[str, Any]
    apply: bool


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._") or "alert"


def incident_id(service: str, alertname: str, starts: datetime) -> str:
    stamp = starts.astimezone(UTC).strftime("%Y%m%dt%H%M%Sz")
    head = f"{_slug(service)}-{_slug(alertname)}"[: 63 - len(stamp) - 1].rstrip("-._")
    return f"{head}-{stamp}"


def service_of(notification: Notification, label: str) -> str:
    service = notification.label(label)
    if not service:
        raise NoTemplateError(f"alert group {notification.groupKey!r} names no single {label!r} label",
                              hint=f"group the runbook route by {label!r} (route group_by: [alertname, {label}]) "
                                   f"and label every alert rule with it")
    return service


def template_for(templates: dict[str, Template], service: str) -> Template:
    if service not in templates:
        known = ", ".join(sorted(templates)) or "none"
        raise NoTemplateError(f"no automation template for service {service!r} (templates: {known})")
    return templates[service]


def _duration(text: str) -> timedelta:
    m = _DURATION.match(text)
    assert m is not None  # checked by WindowPolicy
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def map_alert(notification: Notification, template: Template, received_at: datetime,
              service_label: str = "service") -> MappedRun:
    """The parameters of the run this (firing) notification starts, validated like any parameters file."""
    firing = notification.firing() or list(notification.alerts)
    first = min(firing, key=lambda a: a.startsAt)
    starts = first.startsAt.astimezone(UTC)
    service = template.service
    alertname = notification.label("alertname") or first.labels.get("alertname") or "alert"
    title = (notification.commonAnnotations.get("summary") or first.annotations.get("summary")
             or f"{alertname} firing for {service}")
    sev_label = (notification.label("severity") or "").lower()
    severity = template.severities.get(sev_label) or DEFAULT_SEVERITIES.get(sev_label) or template.severity_default
    base_path = resolve_path(template.base)
    params: dict[str, Any] = dict(read_yaml(base_path))
    params.update(template.overrides)
    iid = incident_id(service, alertname, starts)
    params["incident"] = {"id": iid, "title": title.strip()[:MAX_TITLE_CHARS] or alertname, "service": service,
                          "severity": severity}
    params["remediation"] = template.remediation.model_dump(exclude_none=True)
    source_kind = (params.get("source") or {}).get("kind")
    if template.window.from_alert and source_kind != "fixture":
        start = starts - _duration(template.window.before)
        end = max(received_at.astimezone(UTC), starts + timedelta(minutes=1))
        window = {k: v for k, v in (params.get("window") or {}).items()
                  if k not in ("start", "end", "last", "start_at_event")}
        params["window"] = {**window, "start": start.isoformat(), "end": end.isoformat()}
    try:
        settings = RunSettings.model_validate(params)
    except ValidationError as e:
        first_err = e.errors()[0]
        where = ".".join(str(x) for x in first_err["loc"])
        raise TemplateError(f"template for {service!r} (base {template.base}) maps the alert to invalid "
                            f"parameters: {where}: {first_err['msg'].removeprefix('Value error, ')}") from None
    alert = {
        "group_key": notification.groupKey,
        "alertname": alertname,
        "service": service,
        "service_label": service_label,
        "status": notification.status,
        "starts_at": starts.isoformat(),
        "generator_url": first.generatorURL,
        "external_url": notification.externalURL,
        "labels": dict(first.labels),
        "fingerprints": sorted({a.fingerprint for a in notification.alerts if a.fingerprint}),
        "alerts": len(notification.alerts),
        "received_at": received_at.astimezone(UTC).isoformat(),
    }
    return MappedRun(service=service, incident_id=iid, parameters=settings.model_dump(mode="json", exclude_none=True),
                     alert=alert, apply=settings.remediation.apply)
