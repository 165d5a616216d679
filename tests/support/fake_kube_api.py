"""A fake Kubernetes API server on loopback for the ``kubernetes.apply`` tests (no cluster can run here).

Just enough of the API for two kinds, at their real paths:

* ``/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}``
* ``/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/{name}`` (``serve_keda=False``: KEDA's CRD missing, a
  plain-text 404 as the API server answers for an unknown resource)

GET (404 ``Status`` NotFound when absent), PATCH as server-side apply only (content type
``application/apply-patch+yaml``, else 415; ``fieldManager`` required; ``dryRun=All`` answers the merged object and
stores nothing; ``force``), DELETE. Every request needs the kubeconfig's bearer token (401 without it).

Server-side apply is modelled per field manager, after kubernetes.io/docs/reference/using-api/server-side-apply:
each manager's last applied configuration is kept and the live object is their merge (maps key by key, lists as
atomic values, the latest applier last). A conflicting field (another manager set another value) answers 409
unless ``force``; a forced apply takes the field over (the other manager stops owning it); a field a manager stops
applying disappears unless another manager still sets it. Simplified: no list merge keys, no type-specific
defaulting beyond one (an HPA behaviour rule without ``selectPolicy`` gets ``Max``, as the API server sets it).

Every request is recorded (method, path, query, content type, parsed body, whether the token was right) so tests
can assert the sequence; ``fail(...)`` makes the next matching request answer an error without effect.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from runbook_lib.lab.servers import wait_until
from tests.support.cache_support import ServedInThread

APPLY_PATCH = "application/apply-patch+yaml"
READY_TIMEOUT_S = 10
SHUTDOWN_POLL_S = 0.02
# group, version, plural -> apiVersion, kind
KINDS = {("autoscaling", "v2", "horizontalpodautoscalers"): ("autoscaling/v2", "HorizontalPodAutoscaler"),
         ("keda.sh", "v1alpha1", "scaledobjects"): ("keda.sh/v1alpha1", "ScaledObject")}
_PATH = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)/"
                   r"(?P<name>[^/]+)$")
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any
    authorized: bool


@dataclass
class Failure:
    method: str
    dry_run: bool | None  # None: either
    status: int
    message: str
    causes: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Stored:
    api_version: str
    managers: dict[str, dict[str, Any]]  # manager -> its last applied configuration, latest applier last
    uid: str
    created: str
    resource_version: int
    generation: int
    live: dict[str, Any]


def status(code: int, reason: str, message: str, causes: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A ``Status`` object as the API server answers errors with."""
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
           "reason": reason, "code": code}
    if causes:
        out["details"] = {"causes": causes}
    return out


# --- server-side apply, modelled ---------------------------------------------------------------------------------


def leaves(obj: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    """Every field path of a configuration down to a scalar or a list (lists are atomic)."""
    if isinstance(obj, dict) and obj:
        return {p: v for k, val in obj.items() for p, v in leaves(val, (*prefix, k)).items()}
    return {prefix: obj}


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def remove_path(obj: dict[str, Any], path: tuple) -> None:
    """Drop one field (and the maps it leaves empty)."""
    if len(path) == 1:
        obj.pop(path[0], None)
        return
    child = obj.get(path[0])
    if isinstance(child, dict):
        remove_path(child, path[1:])
        if not child:
            obj.pop(path[0])


def configuration(body: dict[str, Any]) -> dict[str, Any]:
    """What a manager applies: the body without status and server-owned metadata."""
    out = {k: copy.deepcopy(v) for k, v in body.items() if k != "status"}
    out["metadata"] = {k: v for k, v in (body.get("metadata") or {}).items() if k not in SERVER_METADATA}
    return out


def default(obj: dict[str, Any]) -> dict[str, Any]:
    """The API server's defaulting, the one bit modelled: an HPA behaviour rule's selectPolicy."""
    for rule in ((obj.get("spec") or {}).get("behavior") or {}).values():
        if isinstance(rule, dict):
            rule.setdefault("selectPolicy", "Max")
    return obj


class FakeKubeApi(ServedInThread):
    """The fake API server (see the module). ``with FakeKubeApi(token) as api:`` serves it on a free port."""

    join_timeout_s = 5

    def __init__(self, token: str, serve_keda: bool = True):
        self.token, self.serve_keda = token, serve_keda
        self.requests: list[Request] = []
        self.objects: dict[tuple[str, str, str], Stored] = {}
        self.failures: list[Failure] = []
        self._lock = threading.Lock()
        self._versions = itertools.count(1000)
        self.serve(self._handler())
        # serve_forever polls for shutdown every 0.5 s by default: every test's teardown would wait that long
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S},
                                       daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    # --- test-facing API ---

    def fail(self, method: str, status_code: int, message: str, dry_run: bool | None = None,
             causes: list[dict[str, str]] | None = None) -> None:
        """The next ``method`` request (dry run or not, or either) answers ``status_code`` and changes nothing."""
        self.failures.append(Failure(method, dry_run, status_code, message, causes or []))

    def seed(self, obj: dict[str, Any], manager: str = "kubectl") -> dict[str, Any]:
        """Store ``obj`` as if ``manager`` had applied it (the object that was there before the runbook)."""
        plural = next(p for (_, _, p), (av, kind) in KINDS.items() if kind == obj["kind"])
        meta = obj["metadata"]
        with self._lock:
            return self._apply((plural, meta["namespace"], meta["name"]), obj, manager, True, False)[1]

    def stored(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object as the server holds it (a deep copy), or None."""
        with self._lock:
            s = self.objects.get((plural, namespace, name))
            return copy.deepcopy(s.live) if s else None

    def calls(self, method: str | None = None) -> list[Request]:
        return [r for r in self.requests if method is None or r.method == method]

    # --- the model ---

    def _apply(self, key: tuple[str, str, str], body: dict[str, Any], manager: str, force: bool,
               dry_run: bool) -> tuple[int, dict[str, Any]]:
        stored = self.objects.get(key)
        managers = copy.deepcopy(stored.managers) if stored else {}
        config = configuration(body)
        mine = leaves(config)
        conflicts = [(other, path) for other, cfg in managers.items() if other != manager
                     for path, value in leaves(cfg).items() if path in mine and mine[path] != value]
        if conflicts and not force:
            causes = [{"reason": "FieldManagerConflict", "field": "." + ".".join(p),
                       "message": f'conflict with "{o}"'} for o, p in conflicts]
            return 409, status(409, "Conflict", f"Apply failed with {len(conflicts)} conflicts", causes)
        for other, path in conflicts:
            remove_path(managers[other], path)
        managers.pop(manager, None)
        managers[manager] = config
        live = default(self._merged(managers))
        created = stored is None
        changed = created or live != stored.live
        gen = 1 if created else stored.generation + (live.get("spec") != stored.live.get("spec"))
        rv = next(self._versions) if changed else stored.resource_version
        new = Stored(body["apiVersion"], managers, stored.uid if stored else str(uuid.uuid4()),
                     stored.created if stored else _now(), rv, gen, live)
        answer = self._served(new)
        if not dry_run:
            self.objects[key] = new
        return (201 if created else 200), answer

    @staticmethod
    def _merged(managers: dict[str, dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cfg in managers.values():
            out = merge(out, cfg)
        return out

    @staticmethod
    def _served(s: Stored) -> dict[str, Any]:
        """The object as the API answers it: server metadata, managedFields and status added."""
        obj = copy.deepcopy(s.live)
        obj["metadata"].update({
            "uid": s.uid, "resourceVersion": str(s.resource_version), "generation": s.generation,
            "creationTimestamp": s.created,
            "managedFields": [{"manager": m, "operation": "Apply", "apiVersion": s.api_version, "time": _now(),
                               "fieldsType": "FieldsV1", "fieldsV1": {}} for m in s.managers]})
        obj["status"] = {"observedGeneration": s.generation}
        return obj

    # --- HTTP ---

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _reply(self, code: int, body: Any, ctype: str = "application/json") -> None:
                raw = (json.dumps(body) if not isinstance(body, str) else body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query, keep_blank_values=True))
                ctype = self.headers.get("Content-Type")
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = yaml.safe_load(raw) if raw else None
                except yaml.YAMLError:
                    body = raw.decode(errors="replace")
                ok = self.headers.get("Authorization") == f"Bearer {api.token}"
                with api._lock:
                    if parts.path != "/version":  # the readiness probe is not part of any sequence
                        api.requests.append(Request(self.command, parts.path, query, ctype, body, ok))
                    code, answer = api._route(self.command, parts.path, query, ctype, body, ok)
                self._reply(code, answer, "text/plain" if isinstance(answer, str) else "application/json")

            do_GET = do_PATCH = do_DELETE = do_PUT = do_POST = _handle

        return Handler

    def _route(self, method: str, path: str, query: dict[str, str], ctype: str | None, body: Any,
               authorized: bool) -> tuple[int, Any]:
        if path == "/version":
            return 200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake"}
        if not authorized:
            return 401, status(401, "Unauthorized", "Unauthorized")
        m = _PATH.match(path)
        kind = KINDS.get((m["group"], m["version"], m["plural"])) if m else None
        if kind is None or (m["group"] == "keda.sh" and not self.serve_keda):
            return 404, "404 page not found\n"
        key = (m["plural"], m["ns"], m["name"])
        if method == "GET":
            stored = self.objects.get(key)
            if stored is None:
                return 404, status(404, "NotFound", f'{m["plural"]}.{m["group"]} "{m["name"]}" not found')
            return 200, self._served(stored)
        if method == "PATCH":
            return self._patch(m, kind, key, query, ctype, body)
        if method == "DELETE":
            if key not in self.objects:
                return 404, status(404, "NotFound", f'{m["plural"]}.{m["group"]} "{m["name"]}" not found')
            failed = self._injected("DELETE", False)
            if failed:
                return failed
            del self.objects[key]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 405, status(405, "MethodNotAllowed", f"{method} is not served by this fake")

    def _patch(self, m: re.Match, kind: tuple[str, str], key: tuple[str, str, str], query: dict[str, str],
               ctype: str | None, body: Any) -> tuple[int, Any]:
        if (ctype or "").split(";")[0].strip() != APPLY_PATCH:
            return 415, status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                             f"accepted media types include: {APPLY_PATCH}")
        if not query.get("fieldManager"):
            return 400, status(400, "BadRequest", "PATCH, fieldManager is required for apply requests")
        if query.get("dryRun") not in (None, "All"):
            return 400, status(400, "BadRequest", f"unsupported dry run value {query['dryRun']!r}")
        if query.get("force") not in (None, "true", "false"):
            return 400, status(400, "BadRequest", f"invalid force value {query['force']!r}")
        if not isinstance(body, dict):
            return 400, status(400, "BadRequest", "the body is not a YAML or JSON object")
        meta = body.get("metadata") or {}
        if (body.get("apiVersion"), body.get("kind")) != kind or meta.get("name") != m["name"] or \
                meta.get("namespace", m["ns"]) != m["ns"]:
            return 400, status(400, "BadRequest", "the body's apiVersion/kind/name/namespace do not match the URL")
        dry_run = query.get("dryRun") == "All"
        failed = self._injected("PATCH", dry_run)
        if failed:
            return failed
        return self._apply(key, body, query["fieldManager"], query.get("force") == "true", dry_run)

    def _injected(self, method: str, dry_run: bool) -> tuple[int, Any] | None:
        for i, f in enumerate(self.failures):
            if f.method == method and f.dry_run in (None, dry_run):
                del self.failures[i]
                reason = {422: "Invalid", 500: "InternalError", 403: "Forbidden", 409: "Conflict"}.get(f.status, "")
                return f.status, status(f.status, reason, f.message, f.causes)
        return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_kubeconfig(path: Path, server: str, token: str, context: str = "fake") -> Path:
    """A kubeconfig with one cluster, one user (a bearer token) and one context, the current one."""
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": context,
           "clusters": [{"name": "fake-cluster", "cluster": {"server": server}}],
           "users": [{"name": "fake-user", "user": {"token": token}}],
           "contexts": [{"name": context, "context": {"cluster": "fake-cluster", "user": "fake-user"}}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextmanager
def serve_fake_kube(token: str, serve_keda: bool = True) -> Iterator[FakeKubeApi]:
    """The fake API server, answering (bounded wait on GET /version) while the block runs; shut down after."""
    api = FakeKubeApi(token, serve_keda)
    with api:
        def ready() -> bool:
            with urllib.request.urlopen(f"{api.url}/version", timeout=1) as r:
                return r.status == 200

        wait_until(ready, READY_TIMEOUT_S, f"fake Kubernetes API on {api.url}")
        yield api
