"""The webhook receiver: Alertmanager posts here, one job per alert group is enqueued.

``POST /alerts`` takes Alertmanager's webhook (version 4). A firing notification of a new group maps the alert
through its service's template (``alert_mapping``), opens a job in the registry and enqueues it; a firing
notification of a group that already has a job is a duplicate (counted on the job, nothing enqueued); a
resolved one closes the group's episode and is recorded on its job. Answers, which Alertmanager logs::

    200 {"actions": [{"job": ..., "action": "enqueued" | "duplicate" | "resolved" | "unknown-group"}]}
    400 the body is not a notification; 422 no template maps it (Alertmanager does not retry a 4xx)
    503 Redis did not take the job (Alertmanager retries a 5xx; nothing half-done stays behind)

With ``--token-env NAME`` set, ``/alerts`` and ``/jobs`` need ``Authorization: Bearer <token>`` (Alertmanager's
``http_config.authorization``); without it the receiver refuses to start when a template may apply changes
(anyone reaching it could start an approved change with a forged alert).

``GET /healthz`` says whether Redis answers and which workers are up; ``GET /jobs`` and ``GET /jobs/<id>``
show the registry's records (redacted). A sweep re-enqueues a job that has not moved for longer than the
visibility timeout plus two leases (its message lost with a broker that restarted without persistence):
the registry's lease turns an extra delivery into a no-op, so the sweep can only add safety.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from runbook_lib.automation.alert_mapping import (
    Template,
    dedupe_key,
    load_templates,
    map_alert,
    parse_notification,
    service_of,
    template_for,
)
from runbook_lib.automation.automation_errors import AlertPayloadError, BrokerError, TemplateError
from runbook_lib.automation.config import AutomationConfig
from runbook_lib.automation.registry import Registry, now_s
from runbook_lib.redaction import redact, redact_text

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
ACTIVE = ("queued", "running", "retrying")


class Dispatcher:
    """Notification -> registry + queue. ``enqueue(task_name, job_id)`` publishes a task."""

    def __init__(self, config: AutomationConfig, registry: Registry, enqueue: Callable[[str, str], None],
                 templates: dict[str, Template] | None = None):
        self.config = config
        self.registry = registry
        self.enqueue = enqueue
        self.templates = templates if templates is not None else load_templates(config.path(config.templates))
        self.token = config.token()
        applying = sorted(s for s, t in self.templates.items() if t.remediation.apply)
        if applying and not self.token:
            raise TemplateError(f"the templates of {', '.join(applying)} may apply changes and the receiver has no "
                                "token: a forged alert could start an approved change",
                                hint="set --token-env NAME (and the same token in Alertmanager's http_config "
                                     "authorization), or make those templates dry runs")

    def handle(self, payload: Any) -> list[dict[str, Any]]:
        from runbook_lib.automation.tasks import RESOLVED_TASK, RUN_TASK

        n = parse_notification(payload)
        key = dedupe_key(n)
        if n.status == "resolved":
            job_id = self.registry.resolve(key)
            if job_id is None:
                log.info("resolved notification of group %s, which has no job here", key)
                return [{"job": None, "action": "unknown-group", "dedupe_key": key}]
            self.enqueue(RESOLVED_TASK, job_id)
            log.info("job %s: its alert group resolved", job_id)
            return [{"job": job_id, "action": "resolved", "dedupe_key": key}]
        received = datetime.now(UTC)
        service = service_of(n, self.config.service_label)
        mapped = map_alert(n, template_for(self.templates, service), received, self.config.service_label)
        record = {"incident_id": mapped.incident_id, "service": mapped.service, "alert": mapped.alert,
                  "parameters": mapped.parameters, "apply": mapped.apply}
        job_id, created = self.registry.open_job(key, record)
        if not created:
            log.info("job %s: duplicate notification of its group (not enqueued again)", job_id)
            return [{"job": job_id, "action": "duplicate", "dedupe_key": key}]
        try:
            self.enqueue(RUN_TASK, job_id)
        except Exception as e:
            self.registry.forget(key, job_id)
            raise BrokerError(f"the job for {mapped.incident_id} could not be enqueued: {type(e).__name__}: "
                              f"{redact_text(str(e))}") from None
        log.info("job %s: enqueued %s (%s, %s)", job_id, mapped.incident_id, service,
                 "APPLY allowed" if mapped.apply else "dry run")
        return [{"job": job_id, "action": "enqueued", "dedupe_key": key, "incident": mapped.incident_id}]

    def sweep(self) -> list[str]:
        """Re-enqueue jobs that have not moved for too long (see the module docstring)."""
        from runbook_lib.automation.tasks import RUN_TASK

        stale_after = self.config.visibility_timeout() + 2 * self.config.lease_s
        again = []
        for rec in self.registry.jobs():
            if rec.get("state") not in ACTIVE or float(rec.get("lease_until") or 0) > now_s():
                continue
            updated = _epoch(rec.get("updated_at") or rec.get("created_at"))
            if updated is not None and now_s() - updated > stale_after:
                self.enqueue(RUN_TASK, rec["id"])
                self.registry.update(rec["id"], lambda r: (True, None))  # touch: one re-enqueue per period
                again.append(rec["id"])
                log.warning("job %s: no progress for %.0f s; enqueued again", rec["id"], stale_after)
        return again


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def create_app(dispatcher: Dispatcher, sweep_every_s: float | None = None) -> Starlette:
    def allowed(request: Request) -> bool:
        if not dispatcher.token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {dispatcher.token}".encode())

    async def alerts(request: Request) -> JSONResponse:
        if not allowed(request):
            return _error(401, "missing or wrong bearer token", "send the token --token-env names "
                                                                "(Alertmanager: http_config.authorization)")
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_BODY_BYTES:
            return _error(413, f"body of {size} bytes; a notification is at most {MAX_BODY_BYTES}")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"body of {len(body)} bytes; a notification is at most {MAX_BODY_BYTES}")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the body is not JSON", AlertPayloadError.hint)
        try:
            actions = await run_in_threadpool(dispatcher.handle, payload)
        except AlertPayloadError as e:
            return _error(400, str(e), e.hint)
        except TemplateError as e:
            log.error("alert not mapped: %s", redact_text(str(e)))
            return _error(422, str(e), e.hint)
        except BrokerError as e:
            log.error("%s", redact_text(str(e)))
            return _error(503, str(e), e.hint)
        return JSONResponse({"actions": actions})

    async def healthz(request: Request) -> JSONResponse:
        try:
            await run_in_threadpool(dispatcher.registry.ping)
            workers = await run_in_threadpool(dispatcher.registry.workers)
        except BrokerError as e:
            return _error(503, str(e), e.hint)
        return JSONResponse({"ok": True, "workers": workers, "templates": sorted(dispatcher.templates)})

    async def jobs(request: Request) -> JSONResponse:
        if not allowed(request):
            return _error(401, "missing or wrong bearer token")
        job_id = request.path_params.get("job_id")
        if job_id:
            rec = await run_in_threadpool(dispatcher.registry.get, job_id)
            return JSONResponse(redact(_public(rec))) if rec else _error(404, f"no job {job_id}")
        recs = await run_in_threadpool(dispatcher.registry.jobs)
        return JSONResponse({"jobs": [redact(_public(r)) for r in recs]})

    stop = threading.Event()

    def sweeper() -> None:
        while not stop.wait(sweep_every_s or 60):
            try:
                dispatcher.sweep()
            except Exception as e:  # noqa: BLE001 - the next sweep tries again
                log.warning("sweep failed: %s", redact_text(str(e)))

    @asynccontextmanager
    async def lifespan(_app):
        if sweep_every_s:
            threading.Thread(target=sweeper, name="runbook-sweep", daemon=True).start()
        try:
            yield
        finally:
            stop.set()

    return Starlette(routes=[Route("/alerts", alerts, methods=["POST"]), Route("/healthz", healthz),
                             Route("/jobs", jobs), Route("/jobs/{job_id}", jobs)], lifespan=lifespan)


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "parameters"}


def _error(code: int, message: str, hint: str = "") -> JSONResponse:
    return JSONResponse({"error": redact_text(message), "hint": hint}, status_code=code)


def default_dispatcher(config: AutomationConfig) -> Dispatcher:
    from runbook_lib.automation.tasks import publisher

    return Dispatcher(config, Registry(config.broker_url(), config.prefix), publisher(config))
