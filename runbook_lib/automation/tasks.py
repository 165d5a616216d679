"""The Celery app and its two tasks: run a job, record a late resolution.

Why Celery on Redis (and not Airflow with its papermill provider): a page should not wait for a scheduler. A
Celery worker blocks on the queue (BRPOP) and picks a task up within milliseconds of the receiver publishing
it; Airflow puts a DAG run through its scheduler loop (parse, schedule, queue: seconds to tens of seconds per
hop even with the CeleryExecutor, which is Celery underneath anyway) and needs a metadata database besides.
Celery is already what these teams operate, Redis already runs next to the services, and one ``celery worker``
per machine is all it takes to spread an incident storm over several machines.

Delivery guarantees, since a page must never be dropped silently:

* ``acks_late``: a message is acknowledged when the run is over, not when it starts; ``reject_on_worker_lost``:
  when the pool process running it dies (OOM, SIGKILL, the hard time limit) the message goes back to the queue.
  When the whole worker dies, Redis hands its unacknowledged message to another worker after the visibility
  timeout (``broker_transport_options``); ``prefetch_multiplier=1`` keeps a worker from hoarding messages.
* A delivery is not a run: the job registry's lease (``registry``) makes a second delivery of a job that is
  still running wait (the task re-checks until the job is over or its worker is gone) instead of starting it
  twice. A taken-over job is judged by its folder first (``execution``): a run that began a change is never
  started again.
* Bounded concurrency: ``--concurrency`` pool processes per worker (each runs one ``runbook run`` at a time), a
  time limit per run (the run is stopped with SIGTERM: run.json says where), and Celery's hard limit behind it.

Workers read their settings from the environment (``config.AutomationConfig``): start one anywhere with
``RUNBOOK_AUTOMATION_BROKER=redis://... celery -A runbook_lib.automation.tasks worker --concurrency 1``, or let
``runbook serve`` start it.
"""

from __future__ import annotations

import logging
import os
import threading

from celery import Celery, signals

from runbook_lib.automation.config import QUEUE, AutomationConfig
from runbook_lib.automation.registry import WORKER_TTL_S, Registry

RUN_TASK = "runbook.automation.run"
RESOLVED_TASK = "runbook.automation.record_resolved"
# Celery's hard limit stops a pool process whose task outlived the run's own limit by this much (storing and
# notifying are bounded by their own timeouts well within it).
HARD_LIMIT_MARGIN_S = 300

log = logging.getLogger(__name__)
config = AutomationConfig.from_env()


def celery_settings(cfg: AutomationConfig) -> dict:
    return {
        "broker_url": cfg.broker_url(),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": cfg.visibility_timeout(),
            "unacked_restore_interval": cfg.restore_interval_s,
            "unacked_restore_throttle": 1,
        },
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": cfg.time_limit_s + HARD_LIMIT_MARGIN_S,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "enable_utc": True,
    }


app = Celery("runbook_automation")
app.conf.update(celery_settings(config))


def publisher(cfg: AutomationConfig):
    """``enqueue(task_name, job_id)`` on ``cfg``'s broker: what the receiver publishes with (any process)."""
    sender = Celery("runbook_automation_sender")
    sender.conf.update(celery_settings(cfg))

    def enqueue(task_name: str, job_id: str) -> None:
        sender.send_task(task_name, args=[job_id], queue=QUEUE)

    return enqueue

_runner = None
_registry = None


def registry() -> Registry:
    global _registry
    if _registry is None:  # one per pool process, made after the fork
        _registry = Registry(config.broker_url(), config.prefix)
    return _registry


def job_runner(node: str):
    global _runner
    if _runner is None:
        from runbook_lib.automation.execution import JobRunner

        _runner = JobRunner(config, registry(), node)
    return _runner


@app.task(bind=True, name=RUN_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=None,
          ignore_result=True)
def run_job(self, job_id: str) -> str:
    step = job_runner(self.request.hostname or f"pid-{os.getpid()}").execute(job_id)
    if step.kind in ("busy", "retry"):
        raise self.retry(countdown=step.delay_s, max_retries=None)
    return step.reason


@app.task(bind=True, name=RESOLVED_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=200,
          ignore_result=True)
def record_resolved(self, job_id: str) -> str:
    from runbook_lib.automation.execution import record_resolution

    step = record_resolution(registry(), job_runner(self.request.hostname or "").store, job_id)
    if step.kind == "busy":
        raise self.retry(countdown=step.delay_s)
    return step.reason


@signals.worker_init.connect
def _preload(**_kw) -> None:
    """Import the job's code once in the worker's main process, before the pool forks: the first job of a
    pool process is then picked up in milliseconds, like the others."""
    import runbook_lib.automation.execution  # noqa: F401


# --- worker presence: `runbook serve` and the tests wait for it, /healthz reports it --------------------

_presence_stop = threading.Event()


@signals.worker_ready.connect
def _worker_ready(sender=None, **_kw) -> None:
    node = getattr(sender, "hostname", None) or f"pid-{os.getpid()}"
    info = {"pid": os.getpid(), "concurrency": getattr(getattr(sender, "pool", None), "limit", None)}
    reg = Registry(config.broker_url(), config.prefix)
    reg.worker_up(node, info)

    def refresh() -> None:
        while not _presence_stop.wait(WORKER_TTL_S / 3):
            try:
                reg.worker_up(node, info)
            except Exception as e:  # noqa: BLE001 - presence is best effort; the broker will say more
                log.warning("worker presence not renewed: %s", e)
        reg.worker_down(node)

    threading.Thread(target=refresh, name="runbook-presence", daemon=True).start()


@signals.worker_shutting_down.connect
def _worker_stopping(**_kw) -> None:
    _presence_stop.set()
