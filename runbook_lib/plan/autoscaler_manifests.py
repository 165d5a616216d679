"""Autoscaler manifests from a scaling plan: an ``autoscaling/v2`` HorizontalPodAutoscaler and a KEDA
``ScaledObject`` (``keda.sh/v1alpha1``), validated against schemas before anything is applied.

Inputs:

* ``sizing`` (``plan.scaling_sizing.size``): ``min_replicas``, ``max_replicas`` (required), ``targets``
  (``cpu_utilization`` / ``memory_utilization`` as ratios, ``latency_p95_ms``, ``request_rate_per_replica``,
  ``db_connections``: each may be absent or None, and is then not scaled on), ``behavior`` (``scale_up`` /
  ``scale_down``: ``stabilization_s``, ``percent``, ``period_s``; absent: Kubernetes' defaults apply).
* ``target`` (the parameters' ``kubernetes`` section as a dict): ``namespace``, ``deployment``; for KEDA
  ``prometheus_url``, ``p95_query``, ``request_rate_query``, ``postgres_trigger_auth``, ``postgres_query``; for the
  HPA ``p95_metric_name``. Optional ``name``: the objects' name (default: the Deployment's).

The two objects are alternatives, written side by side for review: KEDA creates and owns its own HPA for a
ScaledObject, and two HPAs on one Deployment fight over its replica count. Apply one of them (the
``kubernetes.apply`` action applies one manifest at a time); to move from a plain HPA to KEDA, KEDA's
``scaledobject.keda.sh/transfer-hpa-ownership: "true"`` annotation adopts the existing HPA.

Validation: the HPA against the Kubernetes API's own JSON schema for a pinned release (the strict variant, so an
unknown field is refused), bundled offline by ``kubernetes-validate``; the ScaledObject against
``SCALED_OBJECT_SCHEMA`` below (no schema of KEDA's CRD ships offline). A broken manifest raises
``ManifestError`` naming the field (``spec.metrics[0].resource.target.averageUtilization: 'sixty' is not of type
'integer'``).

Pure: dicts in, dicts (or YAML text) out; the only I/O is reading the bundled schema files.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import re
from collections.abc import Iterable
from typing import Any

import yaml

from runbook_lib.errors import RunbookError

# The Kubernetes release whose API schema the HPA is validated against. autoscaling/v2 has only gained optional
# fields since (1.33: HPAScalingRules.tolerance, alpha), so a manifest valid for 1.32 is accepted by 1.32 and
# every later server; 1.32 is the oldest minor still maintained upstream when this was written.
KUBERNETES_SCHEMA_VERSION = "1.32.0"
# kubernetes-validate's folder of that release's schemas; "-strict": additionalProperties false everywhere.
_SCHEMA_DIR = f"v{KUBERNETES_SCHEMA_VERSION}-local-strict"
_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"  # the ``$id`` of the bundled definitions file

HPA_API_VERSION, HPA_KIND = "autoscaling/v2", "HorizontalPodAutoscaler"
KEDA_API_VERSION, KEDA_KIND = "keda.sh/v1alpha1", "ScaledObject"
MANAGED_BY = {"app.kubernetes.io/managed-by": "runbook"}

# At most this many problems are named in one ManifestError (the first ones, by field path).
MAX_REPORTED_ERRORS = 5

# The KEDA postgresql trigger's default query: the app's sessions doing work right now. With metricType
# AverageValue KEDA divides it by the replica count, so the trigger scales out when each replica keeps more
# sessions busy than its share of the connection budget (``targets.db_connections`` over ``max_replicas``).
DEFAULT_POSTGRES_QUERY = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND state = 'active' AND pid <> pg_backend_pid()")


class ManifestError(RunbookError):
    hint = ("fix the field named (or the sizing / the parameters' kubernetes section the manifest came from) and "
            "generate the manifest again; nothing was applied")


# --- generation ----------------------------------------------------------------------------------------------


def hpa_manifest(sizing: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """An autoscaling/v2 HorizontalPodAutoscaler for the target's Deployment, validated."""
    lo, hi = _bounds(sizing)
    t = sizing.get("targets") or {}
    metrics = []
    for resource, key in (("cpu", "cpu_utilization"), ("memory", "memory_utilization")):
        if t.get(key) is not None:
            metrics.append({"type": "Resource", "resource": {"name": resource, "target": {
                "type": "Utilization", "averageUtilization": _percent(t[key], f"targets.{key}")}}})
    if t.get("latency_p95_ms") is not None:
        # A per-pod custom metric: the HPA reads it from custom.metrics.k8s.io, which prometheus-adapter (or another
        # custom-metrics adapter) must serve under this name. Without an adapter the HPA reports it unavailable and
        # scales on the other metrics only.
        metrics.append({"type": "Pods", "pods": {
            "metric": {"name": _required(target, "p95_metric_name")},
            "target": {"type": "AverageValue", "averageValue": quantity(t["latency_p95_ms"])}}})
    if not metrics:
        raise ManifestError("the sizing gives no CPU, memory or p95 latency target: the HPA has nothing to scale on")
    spec: dict[str, Any] = {"scaleTargetRef": _target_ref(target), "minReplicas": lo, "maxReplicas": hi,
                            "metrics": metrics}
    behavior = _behavior(sizing)
    if behavior:
        spec["behavior"] = behavior
    obj = {"apiVersion": HPA_API_VERSION, "kind": HPA_KIND, "metadata": _metadata(target), "spec": spec}
    validate_manifest(obj)
    return obj


def scaled_object_manifest(sizing: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """A KEDA ScaledObject for the target's Deployment, validated. Its HPA behaviour mirrors ``hpa_manifest``'s."""
    lo, hi = _bounds(sizing)
    triggers = _keda_triggers(sizing.get("targets") or {}, target, hi)
    if not triggers:
        raise ManifestError("the sizing and the kubernetes section give KEDA no trigger to scale on")
    ref = _target_ref(target)
    spec: dict[str, Any] = {"scaleTargetRef": {"name": ref["name"]}, "minReplicaCount": lo, "maxReplicaCount": hi,
                            "triggers": triggers}
    behavior = _behavior(sizing)
    if behavior:
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    obj = {"apiVersion": KEDA_API_VERSION, "kind": KEDA_KIND, "metadata": _metadata(target), "spec": spec}
    validate_manifest(obj)
    return obj


def generate_autoscaler_manifests(sizing: dict[str, Any], target: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Both alternatives, validated: ``{"hpa": ..., "scaledobject": ...}`` (apply one, see the module)."""
    return {"hpa": hpa_manifest(sizing, target), "scaledobject": scaled_object_manifest(sizing, target)}


def to_yaml(obj: dict[str, Any]) -> str:
    """The manifest as YAML, keys in the order Kubernetes shows them (apiVersion, kind, metadata, spec)."""
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


def quantity(value: float) -> str:
    """A Kubernetes quantity in the API server's canonical form, so what is applied reads back unchanged: integer
    milli-units when fractional (12.5 -> "12500m"), else the largest decimal SI suffix that keeps an integer
    (80 -> "80", 2000 -> "2k"), as ``resource.Quantity.String()`` writes it."""
    milli = round(float(value) * 1000)
    if milli % 1000:
        return f"{milli}m"
    n, suffix = milli // 1000, ""
    for s in ("k", "M", "G", "T", "P", "E"):
        if n == 0 or n % 1000:
            break
        n, suffix = n // 1000, s
    return f"{n}{suffix}"


def _number(value: float) -> str:
    """A KEDA metadata number (KEDA parses these strings as floats): 80.0 -> "80", 12.5 -> "12.5"."""
    v = float(value)
    return str(int(v)) if v.is_integer() else repr(v)


def _required(target: dict[str, Any], key: str) -> str:
    value = target.get(key)
    if not value:
        raise ManifestError(f"the kubernetes section has no {key}", hint=f"set kubernetes.{key} in the parameters")
    return str(value)


def _bounds(sizing: dict[str, Any]) -> tuple[int, int]:
    hi = sizing.get("max_replicas")
    if hi is None:
        raise ManifestError("the sizing has no max_replicas (no request-rate signal to size from?)",
                            hint="size the replicas first (plan.scaling_sizing.size needs a request-rate signal)")
    lo = sizing.get("min_replicas") or 1
    return int(lo), int(hi)


def _percent(ratio: float, where: str) -> int:
    """An HPA averageUtilization: integer percent of the pods' requests, from a ratio (0.6 -> 60)."""
    pct = round(float(ratio) * 100)
    if pct < 1:
        raise ManifestError(f"sizing {where}: {ratio!r} is not a utilisation ratio above 0 (0.6 means 60 %)")
    return pct


def _metadata(target: dict[str, Any]) -> dict[str, Any]:
    name = target.get("name") or _required(target, "deployment")
    return {"name": name, "namespace": _required(target, "namespace"), "labels": dict(MANAGED_BY)}


def _target_ref(target: dict[str, Any]) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": _required(target, "deployment")}


def _behavior(sizing: dict[str, Any]) -> dict[str, Any]:
    """HPA scaling behaviour: one Percent policy per direction. ``selectPolicy: Max`` is the API's default,
    written out so the object read back equals the one applied."""
    out = {}
    for key, field in (("scale_up", "scaleUp"), ("scale_down", "scaleDown")):
        rule = (sizing.get("behavior") or {}).get(key)
        if not rule:
            continue
        out[field] = {"stabilizationWindowSeconds": int(rule["stabilization_s"]), "selectPolicy": "Max",
                      "policies": [{"type": "Percent", "value": int(rule["percent"]),
                                    "periodSeconds": int(rule["period_s"])}]}
    return out


def _keda_triggers(t: dict[str, Any], target: dict[str, Any], max_replicas: int) -> list[dict[str, Any]]:
    """KEDA triggers: cpu / memory (Utilization; KEDA needs the containers' resource requests), Prometheus p95
    (metricType Value: a latency does not divide over replicas, so desired = current x p95 / threshold) and request
    rate (AverageValue: desired = total rate / per-replica threshold), PostgreSQL sessions through a
    TriggerAuthentication (never a password here; without one the trigger is left out)."""
    out = []
    for kind, key in (("cpu", "cpu_utilization"), ("memory", "memory_utilization")):
        if t.get(key) is not None:
            out.append({"type": kind, "name": kind, "metricType": "Utilization",
                        "metadata": {"value": str(_percent(t[key], f"targets.{key}"))}})
    server = target.get("prometheus_url")
    if server:
        for name, key, query, metric_type in (("latency-p95", "latency_p95_ms", "p95_query", "Value"),
                                              ("request-rate", "request_rate_per_replica", "request_rate_query",
                                               "AverageValue")):
            if t.get(key) is not None:
                out.append({"type": "prometheus", "name": name, "metricType": metric_type,
                            "metadata": {"serverAddress": str(server), "query": _required(target, query),
                                         "threshold": _number(t[key])}})
    auth = target.get("postgres_trigger_auth")
    if auth and t.get("db_connections"):
        per_replica = max(1, math.floor(float(t["db_connections"]) / max(max_replicas, 1)))
        out.append({"type": "postgresql", "name": "db-sessions", "metricType": "AverageValue",
                    "authenticationRef": {"name": str(auth)},
                    "metadata": {"query": target.get("postgres_query") or DEFAULT_POSTGRES_QUERY,
                                 "targetQueryValue": str(per_replica)}})
    return out


# --- validation ----------------------------------------------------------------------------------------------

# Object names (kubernetes.io/docs/concepts/overview/working-with-objects/names): a namespace is a DNS-1123 label,
# an HPA's or ScaledObject's name a DNS-1123 subdomain.
_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_REF = _DEFINITIONS_ID + "#/$defs/"

# KEDA ScaledObject, from KEDA's documentation "ScaledObject specification" (keda.sh/docs/2.15/reference/
# scaledobject-spec/, fields as of KEDA 2.15-2.17) and its CRD (config/crd/bases/keda.sh_scaledobjects.yaml in
# kedacore/keda). The CRD is structural: fields it does not declare are pruned, or refused with
# fieldValidation=Strict (kubectl's server-side default), hence additionalProperties false. The HPA behaviour is
# Kubernetes' own type (KEDA embeds autoscaling/v2's HorizontalPodAutoscalerBehavior) and metadata the standard
# ObjectMeta, both taken from the bundled Kubernetes definitions.
_TRIGGER = {
    "type": "object", "additionalProperties": False, "required": ["type", "metadata"],
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "name": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "authenticationRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                              "properties": {"name": {"type": "string", "minLength": 1},
                                             "kind": {"enum": ["TriggerAuthentication",
                                                               "ClusterTriggerAuthentication"]}}},
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": {"type": "boolean"},
    },
}
_COUNT = {"type": "integer", "minimum": 0}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://runbook.invalid/schemas/keda.sh/v1alpha1/scaledobject.json",
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": KEDA_API_VERSION},
        "kind": {"const": KEDA_KIND},
        "metadata": {"$ref": _REF + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object", "additionalProperties": False, "required": ["name"],
                    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                   "name": {"type": "string", "minLength": 1},
                                   "envSourceContainerName": {"type": "string"}}},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": _COUNT,
                "initialCooldownPeriod": _COUNT,
                "idleReplicaCount": _COUNT,
                "minReplicaCount": _COUNT,
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object", "additionalProperties": False, "required": ["failureThreshold", "replicas"],
                    "properties": {"failureThreshold": {"type": "integer", "minimum": 1}, "replicas": _COUNT,
                                   "behavior": {"enum": ["static", "currentReplicas", "currentReplicasIfHigher",
                                                         "currentReplicasIfLower"]}}},
                "advanced": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"name": {"type": "string"},
                                           "behavior": {"$ref": _REF + "io.k8s.api.autoscaling.v2."
                                                                       "HorizontalPodAutoscalerBehavior"}}},
                        "scalingModifiers": {
                            "type": "object", "additionalProperties": False, "required": ["target", "formula"],
                            "properties": {"target": {"type": "string"}, "activationTarget": {"type": "string"},
                                           "metricType": {"enum": ["AverageValue", "Value"]},
                                           "formula": {"type": "string"}}},
                    }},
                "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
            },
        },
    },
}


def validate_manifest(obj: dict[str, Any]) -> None:
    """Raise ManifestError naming every broken field (at most MAX_REPORTED_ERRORS) of an HPA or a ScaledObject."""
    if not isinstance(obj, dict):
        raise ManifestError(f"a manifest is a mapping, not {type(obj).__name__}")
    which = (obj.get("apiVersion"), obj.get("kind"))
    if which not in ((HPA_API_VERSION, HPA_KIND), (KEDA_API_VERSION, KEDA_KIND)):
        raise ManifestError(f"apiVersion {which[0]!r} kind {which[1]!r}: only {HPA_API_VERSION} {HPA_KIND} and "
                            f"{KEDA_API_VERSION} {KEDA_KIND} manifests are validated and applied here")
    problems = [_describe(e) for e in _validator(which[1]).iter_errors(obj)]
    problems = sorted(set(problems)) + _semantic_problems(obj)
    if problems:
        shown = "; ".join(problems[:MAX_REPORTED_ERRORS])
        more = f" (and {len(problems) - MAX_REPORTED_ERRORS} more)" if len(problems) > MAX_REPORTED_ERRORS else ""
        raise ManifestError(f"{which[1]} {_name(obj)}: {shown}{more}")


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def _semantic_problems(obj: dict[str, Any]) -> list[str]:
    """What the schemas do not say but the API server (or KEDA's webhook) refuses."""
    out = []
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    for key, pattern, limit in (("name", _SUBDOMAIN, 253), ("namespace", _LABEL, 63)):
        value = meta.get(key)
        if not isinstance(value, str) or not value:
            out.append(f"metadata.{key}: is required (the object is applied by name, in its namespace)")
        elif len(value) > limit or not re.match(pattern, value):
            out.append(f"metadata.{key}: {value!r} is not a valid Kubernetes name (lower case, digits, '-')")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    lo_key, hi_key = ("minReplicas", "maxReplicas") if obj.get("kind") == HPA_KIND else ("minReplicaCount",
                                                                                          "maxReplicaCount")
    lo, hi = spec.get(lo_key), spec.get(hi_key)
    if isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool) and lo > hi:
        out.append(f"spec.{lo_key}: {lo} is more than spec.{hi_key} {hi}")
    if obj.get("kind") == HPA_KIND and isinstance(lo, int) and lo < 1:
        out.append(f"spec.minReplicas: {lo} must be at least 1 (scaling to zero is an alpha feature gate)")
    return out


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _join(path: str, key: str) -> str:
    return key if path == "(top level)" else f"{path}.{key}"


def _describe(err) -> str:
    """One jsonschema error as ``field.path: what is wrong``, the field named even for unknown/missing keys."""
    path = _path(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = set((err.schema.get("properties") or {}))
        extra = sorted(k for k in err.instance if k not in known)
        return "; ".join(f"{_join(path, k)}: unknown field" for k in extra)
    if err.validator == "required":
        missing = re.match(r"'([^']+)' is a required property", err.message)
        return f"{_join(path, missing.group(1) if missing else '?')}: is required"
    if err.validator == "type":
        types = [err.validator_value] if isinstance(err.validator_value, str) else list(err.validator_value)
        wanted = ", ".join(repr(t) for t in types if t != "null")
        return f"{path}: {err.instance!r} is not of type {wanted}"
    return f"{path}: {err.message}"


@functools.cache
def _definitions() -> dict[str, Any]:
    return _schema_file("_definitions.json")


def _schema_file(name: str) -> dict[str, Any]:
    try:
        folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / _SCHEMA_DIR
        return json.loads((folder / name).read_text())
    except (ModuleNotFoundError, FileNotFoundError, json.JSONDecodeError) as e:
        raise ManifestError(f"the Kubernetes {KUBERNETES_SCHEMA_VERSION} schema {name} cannot be read: {e}",
                            hint="install kubernetes-validate (pyproject dependencies)") from None


@functools.cache
def _validator(kind: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schema = _schema_file("horizontalpodautoscaler-autoscaling-v2.json") if kind == HPA_KIND else SCALED_OBJECT_SCHEMA
    registry = Registry().with_resources([(_DEFINITIONS_ID, Resource.from_contents(_definitions())),
                                          (schema["$id"], Resource.from_contents(schema))])
    return Draft202012Validator(schema, registry=registry)
