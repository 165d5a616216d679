"""Autoscaler manifests: the HPA and the KEDA ScaledObject generated from a sizing pass their schemas (the HPA also
through kubernetes-validate's own API), carry the sizing's figures, and broken ones are refused naming the field."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from runbook_lib.plan.autoscaler_manifests import (
    KUBERNETES_SCHEMA_VERSION,
    ManifestError,
    generate_autoscaler_manifests,
    hpa_manifest,
    quantity,
    scaled_object_manifest,
    to_yaml,
    validate_manifest,
)
from runbook_lib.settings import Kubernetes

SIZING = {"min_replicas": 2, "max_replicas": 8,
          "targets": {"cpu_utilization": 0.6, "memory_utilization": 0.8, "latency_p95_ms": 80.0,
                      "request_rate_per_replica": 12.5, "db_connections": 40},
          "behavior": {"scale_up": {"stabilization_s": 0, "percent": 100, "period_s": 15},
                       "scale_down": {"stabilization_s": 300, "percent": 10, "period_s": 60}},
          "reasons": {"min_replicas": "2 for availability"}}
PROMETHEUS = "http://prometheus.monitoring.svc:9090"


def _target(**kw) -> dict:
    return Kubernetes(namespace="shop", deployment="api", prometheus_url=PROMETHEUS, postgres_trigger_auth="pg-auth",
                      **kw).model_dump()


def test_the_hpa_carries_the_sizing_and_passes_the_api_schema():
    hpa = hpa_manifest(SIZING, _target())
    spec = hpa["spec"]
    assert (hpa["metadata"]["namespace"], hpa["metadata"]["name"]) == ("shop", "api")
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 8)
    by_name = {m.get("resource", {}).get("name") or m["pods"]["metric"]["name"]: m["resource" if m["type"] ==
               "Resource" else "pods"]["target"] for m in spec["metrics"]}
    assert by_name["cpu"] == {"type": "Utilization", "averageUtilization": 60}
    assert by_name["memory"] == {"type": "Utilization", "averageUtilization": 80}
    assert by_name["http_request_duration_p95_ms"] == {"type": "AverageValue", "averageValue": "80"}
    assert spec["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                                             "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}
    # the library's own validator agrees (strict: unknown fields refused)
    kubernetes_validate.validate(hpa, KUBERNETES_SCHEMA_VERSION, strict=True)


def test_the_scaled_object_mirrors_the_hpa_and_never_holds_a_password():
    both = generate_autoscaler_manifests(SIZING, _target())
    so = both["scaledobject"]
    spec = so["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 8)
    assert spec["scaleTargetRef"] == {"name": "api"}
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == both["hpa"]["spec"]["behavior"]
    triggers = {t["name"]: t for t in spec["triggers"]}
    assert triggers["cpu"]["metadata"] == {"value": "60"} and triggers["cpu"]["metricType"] == "Utilization"
    assert triggers["latency-p95"]["metricType"] == "Value"
    assert triggers["latency-p95"]["metadata"]["threshold"] == "80"
    assert triggers["latency-p95"]["metadata"]["serverAddress"] == PROMETHEUS
    assert triggers["request-rate"]["metadata"]["threshold"] == "12.5"
    pg = triggers["db-sessions"]
    assert pg["type"] == "postgresql" and pg["authenticationRef"] == {"name": "pg-auth"}
    assert pg["metadata"]["targetQueryValue"] == "5"  # 40 connections over at most 8 replicas
    assert not any("password" in k.lower() for t in spec["triggers"] for k in t["metadata"])
    assert all(isinstance(v, str) for t in spec["triggers"] for v in t["metadata"].values())
    assert yaml.safe_load(to_yaml(so)) == so


def test_missing_optional_figures_leave_their_metrics_and_triggers_out():
    sizing = {"min_replicas": 3, "max_replicas": 6, "targets": {"cpu_utilization": 0.7, "latency_p95_ms": None}}
    target = Kubernetes(namespace="shop", deployment="api").model_dump()  # no Prometheus, no TriggerAuthentication
    hpa, so = hpa_manifest(sizing, target), scaled_object_manifest(sizing, target)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "behavior" not in hpa["spec"] and "advanced" not in so["spec"]
    assert [t["type"] for t in so["spec"]["triggers"]] == ["cpu"]


@pytest.mark.parametrize("sizing,message", [
    ({"targets": {"cpu_utilization": 0.6}}, "no max_replicas"),
    ({"max_replicas": 4, "targets": {}}, "nothing to scale on"),
    ({"max_replicas": 4, "targets": {"cpu_utilization": 0.0}}, "targets.cpu_utilization: 0.0 is not a utilisation"),
])
def test_a_sizing_without_what_an_autoscaler_needs_is_refused(sizing, message):
    with pytest.raises(ManifestError, match=message) as e:
        hpa_manifest(sizing, _target())
    assert e.value.hint


def _broken(obj: dict, change) -> dict:
    obj = copy.deepcopy(obj)
    change(obj)
    return obj


HPA = hpa_manifest(SIZING, _target())
SO = scaled_object_manifest(SIZING, _target())


def _set(path: str, value):
    def change(obj):
        *parents, last = path.split(".")
        for p in parents:
            obj = obj[int(p)] if p.isdigit() else obj[p]
        if value is _DELETE:
            del obj[last]
        else:
            obj[int(last) if last.isdigit() else last] = value
    return change


_DELETE = object()


@pytest.mark.parametrize("manifest,message", [
    (_broken(HPA, _set("spec.metrics.0.resource.target.averageUtilization", "sixty")),
     "spec.metrics[0].resource.target.averageUtilization: 'sixty' is not of type 'integer'"),
    (_broken(HPA, _set("spec.scaleTargetRef.name", _DELETE)), "spec.scaleTargetRef.name: is required"),
    (_broken(HPA, _set("spec.maxReplicas", "8")), "spec.maxReplicas: '8' is not of type 'integer'"),
    (_broken(HPA, _set("spec.behavior.scaleUp.window", 10)), "spec.behavior.scaleUp.window: unknown field"),
    (_broken(HPA, _set("spec.minReplicas", 9)), "spec.minReplicas: 9 is more than spec.maxReplicas 8"),
    (_broken(HPA, _set("metadata.namespace", _DELETE)), "metadata.namespace: is required"),
    (_broken(SO, _set("spec.scaleTargetRef.name", _DELETE)), "spec.scaleTargetRef.name: is required"),
    (_broken(SO, _set("spec.triggers.0.metadata.value", 60)), "spec.triggers[0].metadata.value: 60 is not of type "
                                                             "'string'"),
    (_broken(SO, _set("spec.triggers.2.metricType", "Average")), "spec.triggers[2].metricType: 'Average' is not one of"),
    (_broken(SO, _set("spec.triggers.4.authenticationRef.password", "x")),
     "spec.triggers[4].authenticationRef.password: unknown field"),
    (_broken(SO, _set("spec.pollingIntervall", 30)), "spec.pollingIntervall: unknown field"),
    (_broken(SO, _set("spec.triggers", [])), "spec.triggers: [] should be non-empty"),
    (_broken(SO, _set("spec.triggers.0.type", _DELETE)), "spec.triggers[0].type: is required"),
])
def test_a_broken_manifest_is_refused_naming_the_field(manifest, message):
    with pytest.raises(ManifestError) as e:
        validate_manifest(manifest)
    assert message in str(e.value)
    assert "nothing was applied" in e.value.hint


def test_every_problem_is_named_and_an_unknown_kind_is_refused():
    two = _broken(HPA, lambda o: (_set("spec.foo", 1)(o), _set("spec.maxReplicas", None)(o)))
    with pytest.raises(ManifestError) as e:
        validate_manifest(two)
    assert "spec.foo: unknown field" in str(e.value)
    assert "spec.maxReplicas: None is not of type 'integer'" in str(e.value)
    with pytest.raises(ManifestError, match="only autoscaling/v2 HorizontalPodAutoscaler"):
        validate_manifest({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}})


@pytest.mark.parametrize("value,expected", [(80, "80"), (80.0, "80"), (12.5, "12500m"), (0.25, "250m"),
                                            (1500, "1500"), (2000, "2k"), (3_000_000, "3M")])
def test_quantities_are_written_in_the_servers_canonical_form(value, expected):
    assert quantity(value) == expected
