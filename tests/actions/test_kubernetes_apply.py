"""KubernetesApply against a fake API server on loopback (tests/support/fake_kube_api.py; no cluster can run here)
through the official client and a real kubeconfig: dry-run then real server-side apply, idempotence, verify,
rollback exact (restore the prior object, or delete one that did not exist), an API error mid-apply that leaves
the prior object and is audited ``failed``, broken manifests refused before any request, no token in the audit."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid

import pytest
from pydantic import ValidationError

from runbook_lib.actions import ActionFailed, ActionInputError, execute, rollback_run
from runbook_lib.actions.kubernetes_apply import (
    APPLY_PATCH,
    KubernetesApiError,
    KubernetesApply,
    strip_server_fields,
)
from runbook_lib.actions.registry import EXECUTORS
from runbook_lib.actions.targets import Targets, kubeconfig_path
from runbook_lib.errors import TargetUnreachable
from runbook_lib.lab.servers import free_port
from runbook_lib.plan.autoscaler_manifests import hpa_manifest, scaled_object_manifest
from runbook_lib.settings import Kubernetes
from tests.support.actions_support import audit_lines, make_settings, steps
from tests.support.fake_kube_api import serve_fake_kube, write_kubeconfig

NS, NAME = "shop", "api"
HPA_PATH = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{NAME}"
SO_PATH = f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/{NAME}"
SIZING = {"min_replicas": 2, "max_replicas": 8,
          "targets": {"cpu_utilization": 0.6, "memory_utilization": 0.8, "latency_p95_ms": 80.0,
                      "request_rate_per_replica": 12.5, "db_connections": 40},
          "behavior": {"scale_up": {"stabilization_s": 0, "percent": 100, "period_s": 15},
                       "scale_down": {"stabilization_s": 300, "percent": 10, "period_s": 60}}}
# What was there before the runbook: an HPA a person applied with kubectl (CPU only, 2..4 replicas).
PRIOR_HPA = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
             "metadata": {"name": NAME, "namespace": NS, "labels": {"team": "payments"}},
             "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
                      "minReplicas": 2, "maxReplicas": 4,
                      "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                          "type": "Utilization", "averageUtilization": 75}}}]}}
PRIOR_SO = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": NAME, "namespace": NS, "annotations": {"owner": "sre"}},
            "spec": {"scaleTargetRef": {"name": NAME}, "minReplicaCount": 1, "maxReplicaCount": 4,
                     "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "75"}}]}}


def test_the_kind_is_registered():  # rollback rebuilds actions from the audit through the registry
    assert EXECUTORS[KubernetesApply.kind] is KubernetesApply


@pytest.fixture
def kube(tmp_path):
    """The fake API server (shut down when the test ends, however it ends) and a kubeconfig outside the run folder
    holding its bearer token."""
    token = f"kube-t0ken-{uuid.uuid4().hex}"
    (tmp_path / "kube").mkdir()
    with serve_fake_kube(token) as api:
        yield api, write_kubeconfig(tmp_path / "kube" / "config", api.url, token), token


def _settings(kubeconfig, apply: bool = True):
    k = Kubernetes(kubeconfig=str(kubeconfig), namespace=NS, deployment=NAME,
                   prometheus_url="http://prometheus.monitoring.svc:9090", postgres_trigger_auth="pg-auth")
    return make_settings(apply=apply).model_copy(update={"kubernetes": k})


def _target(kubeconfig) -> dict:
    return _settings(kubeconfig).kubernetes.model_dump()


def _patches(api, path: str):
    return [r for r in api.calls("PATCH") if r.path == path]


def _assert_no_token(run_dir, token: str) -> None:
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert token not in f.read_text(errors="replace"), f"the kubeconfig token leaked into {f.name}"


def test_an_hpa_is_dry_run_then_applied_verified_idempotent_and_deleted_on_rollback(kube, run_dir):
    api, kubeconfig, token = kube
    manifest = hpa_manifest(SIZING, _target(kubeconfig))
    action = KubernetesApply(manifest=manifest)
    assert action.id == "k8s-apply-horizontalpodautoscaler-shop-api"
    dry_cmd, real_cmd = action.plan().commands
    assert dry_cmd.startswith("kubectl apply --server-side --field-manager=runbook --force-conflicts --dry-run=server")
    assert "--dry-run" not in real_cmd and "maxReplicas: 8" in real_cmd

    [o] = execute([action], _settings(kubeconfig), run_dir)
    assert o.status == "applied" and o.verified
    dry, real = _patches(api, HPA_PATH)
    for r in (dry, real):
        assert r.authorized and r.content_type == APPLY_PATCH
        assert r.query["fieldManager"] == "runbook" and r.query["force"] == "true"
        assert r.body == manifest  # exactly the validated manifest, as JSON (valid YAML)
    assert dry.query["dryRun"] == "All" and "dryRun" not in real.query
    assert strip_server_fields(api.stored("horizontalpodautoscalers", NS, NAME)) == manifest
    applied = next(r for r in audit_lines(run_dir) if r["step"] == "applied")
    assert "+++ after apply (dry run)" in applied["message"] and "+  maxReplicas: 8" in applied["message"]

    with Targets(_settings(kubeconfig)) as targets:  # a second apply: dry run only, nothing to change
        again = KubernetesApply(manifest=manifest).apply(targets)
    assert not again.changed and "already applied" in again.message
    assert [r.query.get("dryRun") for r in _patches(api, HPA_PATH)] == ["All", None, "All"]

    [u] = rollback_run(run_dir, apply=True, settings=_settings(kubeconfig))
    assert u.status == "rolled back" and api.stored("horizontalpodautoscalers", NS, NAME) is None
    assert [r.path for r in api.calls("DELETE")] == [HPA_PATH]
    assert steps(run_dir) == ["planned", "approved", "applying", "applied", "verified", "rolling_back", "rolled_back"]
    assert audit_lines(run_dir)[-1]["restored"] is True
    _assert_no_token(run_dir, token)


def test_a_scaled_object_replaces_a_prior_one_and_rollback_restores_it_exactly(kube, run_dir):
    api, kubeconfig, token = kube
    api.seed(PRIOR_SO, manager="kubectl")
    prior = strip_server_fields(api.stored("scaledobjects", NS, NAME))
    manifest = scaled_object_manifest(SIZING, _target(kubeconfig))
    [o] = execute([KubernetesApply(manifest=manifest)], _settings(kubeconfig), run_dir)
    assert o.status == "applied" and o.verified
    live = strip_server_fields(api.stored("scaledobjects", NS, NAME))
    assert live["spec"] == manifest["spec"]  # forced: the runbook took maxReplicaCount and triggers over from kubectl
    assert live["metadata"]["annotations"] == {"owner": "sre"}  # kubectl's field, untouched
    applied = next(r for r in audit_lines(run_dir) if r["step"] == "applied")
    assert "-  maxReplicaCount: 4" in applied["message"] and "+  maxReplicaCount: 8" in applied["message"]
    applying = next(r for r in audit_lines(run_dir) if r["step"] == "applying")
    assert applying["prior"] == {"exists": True, "object": prior}
    assert "managedFields" not in json.dumps(applying["prior"]) and "resourceVersion" not in json.dumps(prior)

    [u] = rollback_run(run_dir, apply=True, settings=_settings(kubeconfig))
    assert u.status == "rolled back"
    assert strip_server_fields(api.stored("scaledobjects", NS, NAME)) == prior  # exactly: the runbook's label gone
    last = _patches(api, SO_PATH)[-1]
    assert last.body == prior and last.query["force"] == "true" and "dryRun" not in last.query
    assert not api.calls("DELETE")
    _assert_no_token(run_dir, token)


@pytest.mark.parametrize("status_code,message,causes", [
    (422, 'HorizontalPodAutoscaler.autoscaling "api" is invalid: spec.maxReplicas: Invalid value: 8: quota',
     [{"field": "spec.maxReplicas", "message": "exceeds the namespace's quota"}]),
    (500, "etcdserver: request timed out", []),
])
def test_an_api_error_on_the_real_apply_leaves_the_prior_object_and_is_audited_failed(kube, run_dir, status_code,
                                                                                        message, causes):
    api, kubeconfig, token = kube
    api.seed(PRIOR_HPA)
    before = api.stored("horizontalpodautoscalers", NS, NAME)
    api.fail("PATCH", status_code, message, dry_run=False, causes=causes)
    action = KubernetesApply(manifest=hpa_manifest(SIZING, _target(kubeconfig)))
    with pytest.raises(KubernetesApiError, match=f"HTTP {status_code}") as e:
        execute([action], _settings(kubeconfig), run_dir)
    assert isinstance(e.value, ActionFailed) and "HorizontalPodAutoscaler shop/api" in str(e.value)
    assert ("spec.maxReplicas" in str(e.value)) == bool(causes)
    assert api.stored("horizontalpodautoscalers", NS, NAME) == before  # the dry run passed, the apply stored nothing
    assert [r.query.get("dryRun") for r in _patches(api, HPA_PATH)] == ["All", None]
    assert steps(run_dir)[-2:] == ["applying", "failed"]
    failed = audit_lines(run_dir)[-1]
    assert failed["result"] == "failed" and failed["phase"] == "apply" and f"HTTP {status_code}" in failed["error"]
    [u] = rollback_run(run_dir, apply=True, settings=_settings(kubeconfig))  # "maybe applied": undo is safe
    assert u.status == "nothing to undo" and api.stored("horizontalpodautoscalers", NS, NAME) == before
    _assert_no_token(run_dir, token)


@pytest.mark.parametrize("change,field", [
    (lambda m: m["spec"]["metrics"][0]["resource"]["target"].update(averageUtilization="sixty"),
     "spec.metrics[0].resource.target.averageUtilization: 'sixty' is not of type 'integer'"),
    (lambda m: m["spec"].update(replicas=3), "spec.replicas: unknown field"),
    (lambda m: m["spec"]["scaleTargetRef"].pop("name"), "spec.scaleTargetRef.name: is required"),
])
def test_a_broken_manifest_is_refused_before_any_request(kube, run_dir, change, field):
    api, kubeconfig, _ = kube
    manifest = hpa_manifest(SIZING, _target(kubeconfig))
    change(manifest)
    with pytest.raises(ActionInputError) as e:
        KubernetesApply(manifest=manifest)
    assert field in str(e.value) and str(e.value).startswith("kubernetes.apply: manifest:")
    assert "nothing was applied" in e.value.hint
    assert api.requests == []


def test_a_cluster_without_kedas_crd_is_named(tmp_path, run_dir):
    token = f"kube-t0ken-{uuid.uuid4().hex}"
    with serve_fake_kube(token, serve_keda=False) as api:
        kubeconfig = write_kubeconfig(tmp_path / "config", api.url, token)
        manifest = scaled_object_manifest(SIZING, _target(kubeconfig))
        with pytest.raises(KubernetesApiError, match="HTTP 404") as e:
            execute([KubernetesApply(manifest=manifest)], _settings(kubeconfig), run_dir)
    assert "is KEDA installed" in e.value.hint
    assert steps(run_dir)[-1] == "failed"


def test_the_endpoint_names_server_and_context_without_the_token(kube):
    api, kubeconfig, token = kube
    endpoint = Targets(_settings(kubeconfig)).endpoint("kubernetes")
    assert endpoint == f"kubernetes {api.url} context fake" and token not in endpoint


def test_the_fake_server_refuses_what_is_not_a_server_side_apply(kube):
    api, _, token = kube

    def patch(query: str, ctype: str) -> int:
        req = urllib.request.Request(f"{api.url}{HPA_PATH}?{query}", data=json.dumps(PRIOR_HPA).encode(),
                                     method="PATCH", headers={"Content-Type": ctype,
                                                              "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert patch("fieldManager=runbook", "application/merge-patch+json") == 415
    assert patch("", APPLY_PATCH) == 400  # no fieldManager
    assert patch("fieldManager=runbook&dryRun=All", APPLY_PATCH) == 201 and api.stored(
        "horizontalpodautoscalers", NS, NAME) is None


def test_an_api_server_that_does_not_answer_is_named(tmp_path, run_dir):
    kubeconfig = write_kubeconfig(tmp_path / "config", f"http://127.0.0.1:{free_port()}", "kube-t0ken-unused")
    manifest = hpa_manifest(SIZING, _target(kubeconfig))
    with pytest.raises(TargetUnreachable, match="did not answer") as e:
        execute([KubernetesApply(manifest=manifest)], _settings(kubeconfig), run_dir)
    assert e.value.endpoint.startswith("kubernetes http://127.0.0.1:") and "kubeconfig" in e.value.hint
    assert steps(run_dir)[-1] == "failed"


def test_the_kubernetes_section_refuses_bad_names_and_inline_credentials(tmp_path, monkeypatch):
    with pytest.raises(ValidationError, match="namespace"):
        Kubernetes(namespace="Shop_1", deployment=NAME)
    with pytest.raises(ValidationError, match="carries a credential"):
        Kubernetes(namespace=NS, deployment=NAME, prometheus_url="http://prom:9090/?token=abc")
    monkeypatch.setenv("RUNBOOK_TEST_KUBE_DIR", str(tmp_path))
    settings = make_settings().model_copy(update={"kubernetes": Kubernetes(
        kubeconfig="${RUNBOOK_TEST_KUBE_DIR}/config", namespace=NS, deployment=NAME)})
    assert kubeconfig_path(settings) == tmp_path / "config"
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/a{os.pathsep}{tmp_path}/b")
    unset = settings.model_copy(update={"kubernetes": Kubernetes(namespace=NS, deployment=NAME)})
    assert kubeconfig_path(unset) == tmp_path / "a"
