"""AppConfig (kind ``app.config``): the application's knobs changed where the app reads them.

Inputs are the knobs to patch, e.g. ``{"cache_ttl_s": 300}`` or ``{"cache_key_scheme": "normalized"}``
(the flat form the impact plan emits), validated against the app knobs (``model.AppKnobs``), and where they
live (the parameters' ``app`` section, ``settings.App.knobs_target``):

* ``via: file``: the JSON object in ``config_file`` is rewritten atomically (temp file + rename); the app
  re-reads it (the lab within half a second, without a restart). The plan shows the same change as a ``jq``
  command. (``via: lab`` in older audit records means the same.)
* ``via: http``: the app's admin endpoint ``admin_url``: GET returns the knobs as a JSON object, PATCH with a
  JSON merge body changes them (bearer token from ``app.admin_token``, never in the inputs or the audit). The
  plan shows the same change as a ``curl`` command.
* ``via: configmap`` (Kubernetes): the change is rendered as a ConfigMap JSON merge patch and a ``kubectl
  patch`` command. It is PLANNED ONLY: this runbook has no cluster access, so capture refuses with
  ``PlannedOnly`` (nothing is changed, nothing is verified); apply it yourself from the plan.

Every way captures the prior values first and restores them exactly on rollback. With ``events_file`` (the
parameters' ``source.events_file``) each change is also written to that event log as a ``remediation`` marker,
so the charts show it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator, model_validator

from runbook_lib.actions.action_errors import ActionInputError, PlannedOnly
from runbook_lib.actions.framework import (
    Action,
    ApplyResult,
    Inputs,
    Plan,
    RollbackResult,
    VerifyResult,
)
from runbook_lib.errors import AppConfigError
from runbook_lib.model import (
    BREAKER_KNOBS,
    RATE_LIMIT_KNOBS,
    AppKnobs,
    app_config_action_id,
    knob_types,
    knob_value,
)
from runbook_lib.run_folder import write_atomic
from runbook_lib.settings import resolve_path
from runbook_lib.sources.app_config_file import knobs_from_dict, read_app_config
from runbook_lib.sources.events import append_event

# The ConfigMap the live app reads its knobs from, unless the inputs name another (namespace/name).
DEFAULT_CONFIGMAP = "default/api-config"
# Knobs whose effect the verify loop reads on the cache hit ratio; the pool knobs act on errors.
CACHE_KNOBS = ("cache_ttl_s", "cache_key_scheme")


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _plain(v: Any) -> Any:
    """300.0 -> 300 (how a person writes it); other values unchanged."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def configmap_patch(changes: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch for the app's ConfigMap: knob ``cache_ttl_s`` is data key ``CACHE_TTL_S``."""
    return {"data": {k.upper(): _fmt(v) for k, v in changes.items()}}


def kubectl_patch(configmap: str, patch: dict[str, Any]) -> str:
    ns, name = configmap.split("/", 1)
    return (f"kubectl --namespace {shlex.quote(ns)} patch configmap {shlex.quote(name)} --type merge "
            f"--patch {shlex.quote(json.dumps(patch, separators=(',', ':')))}")


def write_app_config(path: str | Path, knobs: AppKnobs) -> None:
    """Write the whole knobs object atomically (temp file + rename): a reader never sees half a file."""
    write_atomic(path, json.dumps(knobs.as_dict(), indent=2) + "\n")


def patch_app_config(path: str | Path, changes: dict[str, Any]) -> AppKnobs:
    """Change some knobs, keep the others (``kubectl patch`` for a file). Validated before anything is written."""
    new = knobs_from_dict(changes, base=read_app_config(path))
    write_app_config(path, new)
    return new


def change_label(changes: dict[str, Any]) -> str:
    """The event-log label of a knob change: ``config patch: k1=v1 k2=v2`` (keys sorted)."""
    return "config patch: " + " ".join(f"{k}={v}" for k, v in sorted(changes.items()))


# An admin endpoint answers within this (connect + read); a knob change is a small JSON document.
ADMIN_TIMEOUT_S = 10.0


def _admin_token(targets) -> str | None:
    ref = getattr(getattr(getattr(targets, "settings", None), "app", None), "admin_token", None)
    return ref.reveal().get_secret_value() if ref is not None else None


def admin_request(url: str, method: str, body: dict[str, Any] | None = None, token: str | None = None) -> dict:
    """GET the knobs (a JSON object) or PATCH them with a JSON merge body at the app's admin endpoint.
    urllib (stdlib): one small JSON request does not justify another HTTP client dependency."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=ADMIN_TIMEOUT_S) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        raise AppConfigError(f"app admin endpoint {url}: {method} answered HTTP {e.code} {e.reason}",
                             hint="check app.admin_url and app.admin_token in the parameters") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise AppConfigError(f"app admin endpoint {url} cannot be reached: {reason}",
                             hint="check app.admin_url in the parameters and that the app is up") from None
    if not raw.strip():
        return {}
    try:
        out = json.loads(raw)
    except ValueError:
        raise AppConfigError(f"app admin endpoint {url}: {method} did not answer a JSON object") from None
    if not isinstance(out, dict):
        raise AppConfigError(f"app admin endpoint {url}: {method} answered {type(out).__name__}, not an object")
    return out


class AppConfigInputs(Inputs):
    changes: dict[str, Any]
    via: Literal["file", "http", "configmap"] = "file"
    config_file: str | None = None  # the app's config file (the parameters' app.config_file)
    admin_url: str | None = None  # the app's admin endpoint (the parameters' app.admin_url)
    events_file: str | None = None  # where the change is marked for the charts (source.events_file)
    configmap: str = DEFAULT_CONFIGMAP  # live: namespace/name

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        """Also accept the flat form the impact plan uses: ``{cache_ttl_s: 300}``; ``via: lab`` (older audit
        records) is ``via: file``."""
        if isinstance(data, dict) and "changes" not in data:
            own = {k: data[k] for k in ("via", "config_file", "admin_url", "events_file", "configmap") if k in data}
            data = {"changes": {k: v for k, v in data.items() if k not in own}, **own}
        if isinstance(data, dict) and data.get("via") == "lab":
            data = {**data, "via": "file"}
        return data

    @field_validator("changes", mode="before")
    @classmethod
    def _known(cls, v: Any) -> Any:
        if not isinstance(v, dict) or not v:
            raise ValueError("changes must map at least one app knob to a value")
        types = knob_types()
        unknown = sorted(set(v) - set(types))
        if unknown:
            raise ValueError(f"unknown app knob(s) {', '.join(unknown)}; known: {', '.join(types)}")
        try:
            out = {k: knob_value(k, v[k]) for k in sorted(v)}
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad value: {e}") from None
        try:
            knobs_from_dict(out, base=AppKnobs())
        except AppConfigError as e:
            raise ValueError(str(e)) from None
        return out

    @field_validator("configmap")
    @classmethod
    def _ns_name(cls, v: str) -> str:
        if v.count("/") != 1 or not all(v.split("/")):
            raise ValueError("configmap must be namespace/name")
        return v


class AppConfig(Action):
    kind = "app.config"
    family = "app"
    Inputs = AppConfigInputs
    effect_signal = "cache_hit_ratio"
    risk = "low"  # a knob change the app applies live; undone by setting the prior values back

    inputs: AppConfigInputs

    def __init__(self, inputs=None, **kwargs):
        super().__init__(inputs, **kwargs)
        if "replicas" in self.names:  # scaling: p95 at the same traffic, with the throughput beside it
            self.effect_signal, self.also_measure = "latency_p95_ms", ("request_rate",)
        elif "orders_query" in self.names:  # the batched query: fewer statements per request
            self.effect_signal = "db_query_rate"
        elif set(self.names) & set(BREAKER_KNOBS):  # the breaker serves stale or fails fast: fewer pool 5xx
            self.effect_signal = "error_ratio"
        elif set(self.names) & set(RATE_LIMIT_KNOBS):  # shedding the surge (429) keeps the admitted fast
            self.effect_signal = "latency_p95_ms"
        elif not set(self.names) & set(CACHE_KNOBS):
            self.effect_signal = "error_ratio"  # pool knobs: their effect shows on 5xx

    @property
    def names(self) -> list[str]:
        return list(self.inputs.changes)

    @property
    def live(self) -> bool:
        return self.inputs.via == "configmap"

    @property
    def path(self) -> Path | None:
        return resolve_path(self.inputs.config_file) if self.inputs.config_file else None

    @property
    def id(self) -> str:
        return app_config_action_id(self.names)

    @property
    def title(self) -> str:
        t = "Set app " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.inputs.changes.items())
        return t + (" (ConfigMap patch, planned only)" if self.live else "")

    @property
    def target(self) -> str:
        if self.live:
            return f"ConfigMap {self.inputs.configmap} (planned only: not applied, not verified)"
        if self.inputs.via == "http":
            return f"app admin endpoint {self.inputs.admin_url or '(app.admin_url not set)'}"
        return f"app config file {self.path or '(app.config_file not set)'}"

    def _command(self, values: dict[str, Any]) -> str:
        """The shell command that makes the same change by hand (what the plan and the audit show)."""
        if self.live:
            return kubectl_patch(self.inputs.configmap, configmap_patch(values))
        if self.inputs.via == "http":
            url = shlex.quote(self.inputs.admin_url or "<app.admin_url>")
            return (f"curl -fsS -X PATCH -H 'Content-Type: application/json' -H \"Authorization: Bearer $TOKEN\" "
                    f"--data {shlex.quote(json.dumps(values, separators=(',', ':')))} {url}")
        path = shlex.quote(str(self.path)) if self.path else "<app.config_file>"
        expr = " | ".join(f".{k} = {json.dumps(_plain(v))}" for k, v in values.items())
        return f"jq {shlex.quote(expr)} {path} > {path}.new && mv {path}.new {path}"

    def plan(self) -> Plan:
        placeholder = {k: f"<prior {k}>" for k in self.names}
        if self.live:
            ns, name = self.inputs.configmap.split("/", 1)
            keys = ",".join(k.upper() for k in self.names)
            captures = [f"kubectl --namespace {ns} get configmap {name} -o json  # data keys {keys}"]
        elif self.inputs.via == "http":
            captures = [f"curl -fsS {shlex.quote(self.inputs.admin_url or '<app.admin_url>')}  # "
                        + ", ".join(self.names)]
        else:
            captures = [f"read {self.path or '<app.config_file>'}: {', '.join(self.names)}"]
        return Plan(self.id, self.kind, self.title, self.target, commands=[self._command(self.inputs.changes)],
                    captures=captures, rollback_commands=[self._command(placeholder)], reversible=True,
                    risk=self.risk)

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        return [self._command({k: prior.get(k) for k in self.names})]

    # --- the config source ----------------------------------------------------------------------

    def _refuse(self, targets) -> None:
        if self.live:
            raise PlannedOnly(f"{self.id}: the ConfigMap patch for {self.inputs.configmap} is planned only and "
                              "was not applied (no cluster access; unverified)")
        if self.inputs.via == "http":
            if not self.inputs.admin_url:
                raise ActionInputError(f"{self.id}: no admin endpoint to patch",
                                       hint="set app.admin_url in the parameters (GET/PATCH of the app's knobs)")
            return
        if self.path is None:
            raise ActionInputError(f"{self.id}: no app config file to patch",
                                   hint="set app.config_file in the parameters (the app's JSON knobs file)")

    def capture(self, targets) -> dict[str, Any]:
        self._refuse(targets)
        if self.inputs.via == "http":
            current = admin_request(self.inputs.admin_url, "GET", token=_admin_token(targets))
            return {k: current.get(k) for k in self.names}
        cfg = read_app_config(self.path)
        return {k: getattr(cfg, k) for k in self.names}

    def _matches(self, state: dict[str, Any], wanted: dict[str, Any]) -> bool:
        return all(knob_value(k, state.get(k)) == knob_value(k, wanted.get(k)) for k in self.names)

    def _patch(self, values: dict[str, Any], targets) -> None:
        if self.inputs.via == "http":
            admin_request(self.inputs.admin_url, "PATCH", values, token=_admin_token(targets))
        else:
            patch_app_config(self.path, values)
        if self.inputs.events_file:
            append_event(resolve_path(self.inputs.events_file), change_label(values), "remediation")

    def is_applied(self, state: dict[str, Any]) -> bool:
        return self._matches(state, self.inputs.changes)

    def apply(self, targets) -> ApplyResult:
        if self.is_applied(self.capture(targets)):
            return ApplyResult(False, "already applied")
        self._patch(self.inputs.changes, targets)
        return ApplyResult(True, "patched " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.inputs.changes.items()),
                           [self._command(self.inputs.changes)])

    def verify(self, targets) -> VerifyResult:
        state = self.capture(targets)
        where = self.inputs.admin_url if self.inputs.via == "http" else self.path.name
        if self.is_applied(state):
            return VerifyResult(True, f"{where} holds the new values", state)
        return VerifyResult(False, f"{where} holds {state}, not {self.inputs.changes}", state)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        if self._matches(self.capture(targets), prior):
            return RollbackResult(False, "nothing to undo: the prior values are in place")
        values = {k: prior[k] for k in self.names}
        self._patch(values, targets)
        return RollbackResult(True, "restored " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()),
                              [self._command(values)])
