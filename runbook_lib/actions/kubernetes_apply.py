"""KubernetesApply (kind ``kubernetes.apply``): one autoscaler manifest applied by server-side apply.

The scaling change of the write-up's remediation on Kubernetes: an ``autoscaling/v2`` HorizontalPodAutoscaler or a
KEDA ``ScaledObject`` (``plan.autoscaler_manifests``; apply one of the two, never both on one Deployment). The
manifest is validated against its schema when the action is built, so a broken one is refused before anything
runs. Then, with the official ``kubernetes`` client and the kubeconfig of the parameters:

* ``capture``: GET the live object; the prior kept for rollback is that object without the fields the server
  owns (``managedFields``, ``resourceVersion``, ``uid``, ``creationTimestamp``, ``generation``, ``status``), or
  "absent";
* ``apply``: a server-side apply with ``dryRun=All`` first (the API server validates and merges, stores nothing),
  a unified diff of the live object against that result, then the real apply (``fieldManager``, ``force``:
  the runbook takes over fields another manager set, as ``kubectl apply --server-side --force-conflicts``). No
  difference: nothing is sent and the result says ``already applied``;
* ``verify``: GET again; every field the manifest sets must read back with its value;
* ``rollback``: no prior object: DELETE (waiting, bounded, until it is gone: KEDA's finalizer runs first); a prior
  object: a forced server-side apply of it by the same field manager. Chosen over a PUT replace: the apply
  restores every field the prior had and drops the fields only the runbook's apply added (server-side apply
  removes the fields a manager stops applying), while fields other controllers or people changed since are left
  alone; a PUT would overwrite those too. ``rollback.undo`` then compares the object read back with the prior
  exactly, so any difference is reported, not hidden.

Errors from the API server (a 422 naming a field, a 403 from RBAC, a 404 when KEDA's CRD is not installed) become
``KubernetesApiError`` naming the object, the status and the server's message. Tested against a local fake API
server (tests/support/fake_kube_api.py) only: no cluster runs here, so defaulting, admission webhooks (KEDA's) and
the real field-ownership rules are the server's, not verified by these tests.
"""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from runbook_lib.actions.action_errors import ActionFailed, ActionInputError
from runbook_lib.actions.framework import Action, ApplyResult, Inputs, Plan, RollbackResult, VerifyResult
from runbook_lib.actions.targets import CONNECT_TIMEOUT_S, KUBE_HINT
from runbook_lib.errors import TargetUnreachable
from runbook_lib.model import kubernetes_apply_action_id
from runbook_lib.plan.autoscaler_manifests import (
    HPA_KIND,
    KEDA_KIND,
    ManifestError,
    to_yaml,
    validate_manifest,
)
from runbook_lib.redaction import redact_text

APPLY_PATCH = "application/apply-patch+yaml"  # the content type that makes a PATCH a server-side apply
DRY_RUN_ALL = "All"  # the only dryRun value the API accepts: every stage runs, nothing is stored
# An apply or a GET answers in milliseconds; 30 s means the API server (or an admission webhook) is stuck.
READ_TIMEOUT_S = 30
# KEDA's finalizer removes the HPA it made before the ScaledObject goes; it takes seconds. Past this, the rollback
# reports the object as still there.
DELETE_WAIT_S = 30.0
DELETE_POLL_S = 0.2
# The diff shown in the result (and the audit line): longer ones are cut, the full object is in the plan.
MAX_DIFF_LINES = 200
# Fields the API server owns: never part of a prior to restore, nor of a diff a person reads.
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")
# fieldManager: at most 128 printable characters (API conventions, the PATCH's fieldManager parameter).
FIELD_MANAGER_MAX = 128


@dataclass(frozen=True)
class Resource:
    """How one kind is reached: its API group/version, plural, and its name for kubectl."""

    group: str
    version: str
    plural: str

    @property
    def kubectl(self) -> str:
        return f"{self.plural}.{self.group}"


RESOURCES = {HPA_KIND: Resource("autoscaling", "v2", "horizontalpodautoscalers"),
             KEDA_KIND: Resource("keda.sh", "v1alpha1", "scaledobjects")}


class KubernetesApiError(ActionFailed):
    """The API server refused a request; the message names the object, the HTTP status and the server's reason."""


class KubernetesApplyInputs(Inputs):
    manifest: dict[str, Any]
    field_manager: str = Field("runbook", min_length=1, max_length=FIELD_MANAGER_MAX, pattern=r"^[^\x00-\x1f\x7f]+$")

    @field_validator("manifest")
    @classmethod
    def _valid(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            validate_manifest(v)
        except ManifestError as e:
            raise ValueError(str(e)) from None
        return v


# --- pure helpers ------------------------------------------------------------------------------------------------


def strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what the server owns (SERVER_METADATA, ``status``): what a prior restores."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_METADATA}
    if meta:
        out["metadata"] = meta
    return out


def mismatches(want: Any, have: Any, path: str = "") -> list[str]:
    """Where ``have`` differs from ``want`` on the fields ``want`` sets (a list item by item, same length)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [f"{path or '(object)'}: {have!r} is not a mapping"]
        return [m for k, v in want.items() for m in mismatches(v, have.get(k), f"{path}.{k}" if path else k)]
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return [f"{path}: {_short(have)}, wanted {_short(want)}"]
        return [m for i, (w, h) in enumerate(zip(want, have, strict=True)) for m in mismatches(w, h, f"{path}[{i}]")]
    return [] if want == have else [f"{path}: {have!r}, wanted {want!r}"]


def _short(v: Any, limit: int = 120) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def manifest_diff(live: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """A unified diff of YAML: the live object (server-owned fields stripped) against the dry run's result."""
    before = to_yaml(strip_server_fields(live)).splitlines(keepends=True) if live else []
    lines = list(difflib.unified_diff(before, to_yaml(strip_server_fields(after)).splitlines(keepends=True),
                                      fromfile="live" if live else "live (absent)", tofile="after apply (dry run)"))
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... ({len(lines) - MAX_DIFF_LINES} more diff lines)\n"]
    return "".join(lines)


def _status_message(body: str | None) -> tuple[str, str, list[str]]:
    """(reason, message, causes) from a ``Status`` body; the raw text when it is not one."""
    try:
        status = json.loads(body or "")
    except ValueError:
        return "", (body or "").strip()[:300], []
    if not isinstance(status, dict):
        return "", str(status)[:300], []
    causes = [f"{c.get('field', '')}: {c.get('message', '')}".strip(": ")
              for c in (status.get("details") or {}).get("causes") or []]
    return status.get("reason") or "", status.get("message") or "", causes


def _hint(status: int, resource: Resource, what: str) -> str:
    if status == 401:
        return "the API server refused the kubeconfig's credentials: refresh them (" + KUBE_HINT + ")"
    if status == 403:
        return (f"the kubeconfig's identity may not change {resource.kubectl} here: it needs get, patch and delete "
                f"on {resource.plural} in the namespace (RBAC)")
    if status == 404:
        return (f"the API server does not serve {resource.group}/{resource.version} {resource.plural}"
                + (": is KEDA installed (kubectl get crd scaledobjects.keda.sh)?" if resource.group == "keda.sh"
                   else ": autoscaling/v2 needs Kubernetes 1.23 or later"))
    if status in (400, 422):
        return f"the API server refused {what}: fix the field it names (regenerate the manifest) and plan again"
    if status == 409:
        return "another writer changed the object at the same time: plan and apply again"
    return ("the API server failed or is throttling: retry later; nothing after this step ran (undo what was applied "
            "with: runbook rollback RUN_DIR)")


# --- the API calls ------------------------------------------------------------------------------------------------


class _Api:
    """GET / server-side apply / DELETE of one object through the typed client, answers as plain dicts."""

    def __init__(self, targets, manifest: dict[str, Any], field_manager: str):
        from kubernetes import client

        self.endpoint = targets.endpoint("kubernetes")
        api_client = targets.kubernetes()
        self.kind, self.field_manager = manifest["kind"], field_manager
        self.name, self.namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        self.resource = RESOURCES[self.kind]
        self.what = f"{self.kind} {self.namespace}/{self.name}"
        self.hpa = client.AutoscalingV2Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def _custom(self) -> dict[str, str]:
        r = self.resource
        return {"group": r.group, "version": r.version, "plural": r.plural, "namespace": self.namespace,
                "name": self.name}

    def get(self) -> dict[str, Any] | None:
        """The live object, or None when it does not exist (a 404 Status NotFound, not a missing API)."""
        try:
            if self.kind == HPA_KIND:
                return self._call("get", self.hpa.read_namespaced_horizontal_pod_autoscaler, name=self.name,
                                  namespace=self.namespace)
            return self._call("get", self.custom.get_namespaced_custom_object, **self._custom())
        except _NotFound:
            return None

    def apply(self, body: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        kw = {"body": body, "field_manager": self.field_manager, "force": True,
              "dry_run": DRY_RUN_ALL if dry_run else None, "_content_type": APPLY_PATCH}
        verb = "server-side apply (dry run) of" if dry_run else "server-side apply of"
        if self.kind == HPA_KIND:
            return self._call(verb, self.hpa.patch_namespaced_horizontal_pod_autoscaler, name=self.name,
                              namespace=self.namespace, **kw)
        return self._call(verb, self.custom.patch_namespaced_custom_object, **self._custom(), **kw)

    def delete(self) -> None:
        try:
            if self.kind == HPA_KIND:
                self._call("delete", self.hpa.delete_namespaced_horizontal_pod_autoscaler, name=self.name,
                           namespace=self.namespace)
            else:
                self._call("delete", self.custom.delete_namespaced_custom_object, **self._custom())
        except _NotFound:
            pass  # gone already: what a delete wants

    def _call(self, verb: str, fn, **kwargs) -> dict[str, Any]:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            resp = fn(**kwargs, _preload_content=False, _request_timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
            try:
                data = resp.data
            finally:
                resp.release_conn()
            return json.loads(data) if data else {}
        except ApiException as e:
            reason, message, causes = _status_message(e.body)
            if e.status == 404 and reason == "NotFound":
                raise _NotFound from None
            extra = [c for c in causes if c not in message]
            text = f"{verb} {self.what}: HTTP {e.status} {reason or e.reason}: {message}" + (
                f" ({'; '.join(extra)})" if extra else "")
            raise KubernetesApiError(redact_text(text), hint=_hint(e.status or 0, self.resource, self.what)) from None
        except urllib3.exceptions.HTTPError as e:
            raise TargetUnreachable(self.endpoint, f"{verb} {self.what}: {self.endpoint} did not answer: "
                                                   f"{redact_text(str(e))}", hint=KUBE_HINT) from None


class _NotFound(Exception):
    """The object does not exist (internal: get() answers None, delete() is done)."""


# --- the action ---------------------------------------------------------------------------------------------------


class KubernetesApply(Action):
    kind = "kubernetes.apply"
    family = "kubernetes"
    Inputs = KubernetesApplyInputs
    effect_signal = "latency_p95_ms"
    risk = "medium"  # an autoscaler moves the replica count: more costs money, fewer may overload the rest

    inputs: KubernetesApplyInputs

    def __init__(self, inputs: KubernetesApplyInputs | dict[str, Any] | None = None, **kwargs: Any):
        try:
            super().__init__(inputs, **kwargs)
        except ActionInputError as e:  # a broken manifest: say how to fix a manifest, not a table's columns
            hint = ManifestError.hint if str(e).startswith(f"{self.kind}: manifest") else None
            raise ActionInputError(str(e), hint=hint) from None

    # --- identity ---

    @property
    def _kind(self) -> str:
        return self.inputs.manifest["kind"]

    @property
    def _ns_name(self) -> tuple[str, str]:
        meta = self.inputs.manifest["metadata"]
        return meta["namespace"], meta["name"]

    @property
    def id(self) -> str:
        return kubernetes_apply_action_id(self._kind, *self._ns_name)

    @property
    def title(self) -> str:
        ns, name = self._ns_name
        return f"Server-side apply {self._kind} {ns}/{name}"

    @property
    def target(self) -> str:
        ns, name = self._ns_name
        return f"Kubernetes {self._kind} {ns}/{name} ({self.inputs.manifest['apiVersion']})"

    # --- commands ---

    def _kubectl_apply(self, obj: dict[str, Any], dry_run: bool = False) -> str:
        dry = " --dry-run=server" if dry_run else ""
        return (f"kubectl apply --server-side --field-manager={self.inputs.field_manager} --force-conflicts{dry} "
                f"-f - <<'EOF'\n{to_yaml(obj)}EOF")

    def _kubectl_delete(self) -> str:
        ns, name = self._ns_name
        return f"kubectl delete {RESOURCES[self._kind].kubectl} {name} -n {ns} --wait=true"

    def plan(self) -> Plan:
        ns, name = self._ns_name
        manifest = self.inputs.manifest
        return Plan(self.id, self.kind, self.title, self.target,
                    commands=[self._kubectl_apply(manifest, dry_run=True), self._kubectl_apply(manifest)],
                    captures=[f"kubectl get {RESOURCES[self._kind].kubectl} {name} -n {ns} -o yaml  # prior object "
                              f"without {', '.join(SERVER_METADATA)}, status; or recorded absent"],
                    rollback_commands=[f"{self._kubectl_delete()}  # when it did not exist before",
                                       f"kubectl apply --server-side --field-manager={self.inputs.field_manager} "
                                       "--force-conflicts -f <captured prior object>  # when it did"],
                    reversible=True, risk=self.risk)

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        if not prior.get("exists"):
            return [self._kubectl_delete()]
        return [self._kubectl_apply(prior["object"])]

    # --- behaviour ---

    def _api(self, targets) -> _Api:
        return _Api(targets, self.inputs.manifest, self.inputs.field_manager)

    def capture(self, targets) -> dict[str, Any]:
        live = self._api(targets).get()
        return {"exists": live is not None, "object": strip_server_fields(live) if live is not None else None}

    def is_applied(self, state: dict[str, Any]) -> bool:
        return bool(state.get("exists")) and not mismatches(self.inputs.manifest, state.get("object"))

    def apply(self, targets) -> ApplyResult:
        api = self._api(targets)
        live = api.get()
        preview = api.apply(self.inputs.manifest, dry_run=True)
        diff = manifest_diff(live, preview)
        dry_cmd = self._kubectl_apply(self.inputs.manifest, dry_run=True)
        if not diff:
            return ApplyResult(False, "already applied: the server-side dry run changes nothing", [dry_cmd])
        api.apply(self.inputs.manifest, dry_run=False)
        verb = "created" if live is None else "updated"
        message = f"{api.what} {verb} (server-side apply, field manager {self.inputs.field_manager}):\n{diff}"
        return ApplyResult(True, message, [dry_cmd, self._kubectl_apply(self.inputs.manifest)])

    def verify(self, targets) -> VerifyResult:
        api = self._api(targets)
        live = api.get()
        if live is None:
            return VerifyResult(False, f"{api.what} does not exist after the apply", {"exists": False})
        wrong = mismatches(self.inputs.manifest, strip_server_fields(live))
        observed = {"exists": True, "resourceVersion": (live.get("metadata") or {}).get("resourceVersion"),
                    "mismatches": wrong}
        if wrong:
            return VerifyResult(False, f"{api.what} differs from the manifest: {'; '.join(wrong[:5])}", observed)
        return VerifyResult(True, f"{api.what} holds every field of the manifest", observed)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        api = self._api(targets)
        if self.capture(targets) == prior:
            return RollbackResult(False, "nothing to undo: the prior object is in place")
        if not prior.get("exists"):
            api.delete()
            self._wait_gone(api)
            return RollbackResult(True, f"deleted {api.what} (it did not exist before)", [self._kubectl_delete()])
        api.apply(prior["object"], dry_run=False)
        return RollbackResult(True, f"restored the prior {api.what} by a forced server-side apply",
                              [self._kubectl_apply(prior["object"])])

    @staticmethod
    def _wait_gone(api: _Api) -> None:
        deadline = time.monotonic() + DELETE_WAIT_S
        while api.get() is not None:
            if time.monotonic() > deadline:
                raise ActionFailed(f"{api.what} is still there {DELETE_WAIT_S:.0f} s after its DELETE (a finalizer "
                                   "that does not finish?)", hint="kubectl get it -o yaml and read "
                                                                  "metadata.finalizers; then roll back again")
            time.sleep(DELETE_POLL_S)
