"""One job on a worker: claim it, run the unchanged ``runbook run`` as a subprocess, judge, store, notify.

The run happens in ``<work dir>/<job id>/run`` (``runbook run -p <work dir>/<job id>/parameters.yaml --out
...``). While it runs, a heartbeat renews the job's lease in the registry and mirrors two facts there: the
run's audit log has begun a change (``applying``: written *before* a server is touched), and when
``findings.json`` appeared. The subprocess gets SIGTERM if the worker process dies (``PR_SET_PDEATHSIG``), so a
killed worker leaves ``run.json`` ``interrupted`` with the notebook and cell, never a run going on unowned.

The outcome decides what happens next:

* the run finished (``complete``, ``healthy``, ``partial``): stored, notified, ``done``;
* it stopped on a failure of infrastructure (the source or a server did not answer, the kernel died, the
  worker was lost) and changed nothing: run again into the same folder (``run.json`` keeps every attempt
  under ``attempts``), up to ``max_attempts``, after a growing delay;
* anything else (bad parameters, a notebook's own error, the time limit, **any run that began a change**):
  ``failed``, stored and notified with the notebook and cell, never run again by the automation.

A job taken over from a dead worker is judged by what its folder shows first: a run that finished is only
stored and notified; a run that began a change is not started again.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runbook_lib.actions.audit import read_audit
from runbook_lib.automation import notify
from runbook_lib.automation.automation_errors import BrokerError, NotifyError, StoreError
from runbook_lib.automation.config import AutomationConfig
from runbook_lib.automation.registry import Owner, Registry, iso, now_s
from runbook_lib.automation.store import open_store
from runbook_lib.errors import RunbookError, SourceError, TargetUnreachable
from runbook_lib.redaction import redact_text
from runbook_lib.run_folder import RUN_FILE, run_status
from runbook_lib.settings import project_root

log = logging.getLogger(__name__)

# Audit steps that touch a server: a run that wrote one is never started again by the automation.
CHANGE_STEPS = frozenset({"applying", "applied", "rolling_back", "rolled_back"})
FINISHED_RUN = ("complete", "healthy", "partial")
# Exception names (run.json failure.error "Name: ...") that are the infrastructure's failure, not the run's.
INFRA_ERRORS = frozenset({
    "TargetUnreachable", "SourceError", "ConnectionError", "ConnectionRefusedError", "ConnectionResetError",
    "BrokenPipeError", "TimeoutError", "OperationalError", "DeadKernelError", "ConnectTimeout", "ReadTimeout",
    "ConnectError", "MaxRetryError", "NewConnectionError",
})
# runbook run's exit codes: 0 ran, 3 no incident in the window (healthy), 2 an error, 130 interrupted
EXIT_OK = (0, 3)
TERM_GRACE_S = 30.0
RETRY_DELAY_CAP_S = 600.0
LOG_TAIL_CHARS = 2000

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int):
    def setup() -> None:  # runs in the child between fork and exec: a syscall, nothing else
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


@dataclass
class Step:
    """What the Celery task does next: ``finished``, or ``retry`` / ``busy`` after ``delay_s``."""

    kind: str
    delay_s: float = 0.0
    reason: str = ""


@dataclass
class Outcome:
    state: str                 # done | failed | retry
    status: str | None         # run.json's status, or None (the run never started)
    reason: str
    changed: bool = False
    where: dict[str, Any] = field(default_factory=dict)


def change_started(run_dir: Path) -> bool:
    return any(r.get("step") in CHANGE_STEPS for r in read_audit(run_dir).records)


def _read_run(run_dir: Path) -> dict[str, Any]:
    return run_status(run_dir) if (run_dir / RUN_FILE).is_file() else {}


def _where(state: dict[str, Any]) -> dict[str, Any]:
    what = state.get("failure") or state.get("interruption") or {}
    return {k: what.get(k) for k in ("notebook", "cell", "error", "signal") if what.get(k)}


def _where_text(where: dict[str, Any]) -> str:
    if not where:
        return ""
    at = " ".join(str(where[k]) for k in ("notebook", "cell") if where.get(k))
    return f" in {at}" + (f" ({where['error']})" if where.get("error") else "")


def _log_error(log_path: Path) -> str:
    """The ``error:`` line ``runbook run`` printed (already redacted by the CLI)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    return redact_text(errors[-1]) if errors else ""


def _preflight_is_infra(parameters: Path) -> tuple[bool, str]:
    """The run stopped before its folder existed: ask the product's own preflight what is wrong, by its
    typed error (a source or server that does not answer is infrastructure; bad parameters are not)."""
    from runbook_lib.suite.runner import preflight  # papermill, pandas: only on this path

    try:
        preflight(parameters)
    except (TargetUnreachable, ConnectionError, TimeoutError) as e:
        return True, redact_text(str(e))
    except SourceError as e:  # the base class is "did not answer"; its subclasses are the parameters' fault
        return type(e) is SourceError, redact_text(str(e))
    except RunbookError as e:
        return False, redact_text(str(e))
    return True, "the preflight passes now: the failure was transient"


def judge(rc: int, run_dir: Path, parameters: Path, log_path: Path, time_limit_s: float,
          timed_out: bool) -> Outcome:
    state = _read_run(run_dir)
    status = state.get("status")
    changed = change_started(run_dir)
    where = _where(state)
    if timed_out:
        return Outcome("failed", status, f"time limit of {time_limit_s:g} s exceeded{_where_text(where)}",
                       changed, where)
    if rc in EXIT_OK and status in FINISHED_RUN:
        return Outcome("done", status, f"run {status}", changed, where)
    if changed:
        return Outcome("failed", status, f"run {status or 'failed'}{_where_text(where)} after it began a change "
                                         "(audit.jsonl): not run again, check the audit log", changed, where)
    if not state:
        infra, why = _preflight_is_infra(parameters)
        why = _log_error(log_path) or why
        return Outcome("retry" if infra else "failed", None, f"the run did not start (exit {rc}): {why}", False)
    if status == "failed":
        ename = str(where.get("error", "")).split(":", 1)[0].strip()
        kind = "retry" if ename in INFRA_ERRORS else "failed"
        return Outcome(kind, status, f"run failed{_where_text(where)}", changed, where)
    if status in ("interrupted", "abandoned", "running"):  # stopped from outside: the worker, OOM, a reboot
        return Outcome("retry", status, f"run {status}{_where_text(where)} (exit {rc})", changed, where)
    return Outcome("failed", status, f"runbook run exited {rc} with run.json {status!r}", changed, where)


class JobRunner:
    def __init__(self, config: AutomationConfig, registry: Registry, node: str):
        self.config = config
        self.registry = registry
        self.node = node
        self.store = open_store(config.store, project_root(), config.s3_endpoint_url, config.link_base)

    # --- the task ------------------------------------------------------------------------------------

    def execute(self, job_id: str) -> Step:
        owner = Owner.here(self.node)
        claim = self.registry.claim(job_id, owner, self.config.lease_s)
        if claim.outcome in ("missing", "finished"):
            log.info("job %s: %s, nothing to do", job_id, claim.outcome)
            return Step("finished", reason=claim.outcome)
        if claim.outcome == "busy":
            # another worker holds the lease: look again once it could have run out
            delay = self._countdown(min(claim.wait_s, self.config.lease_s) + 1.0)
            log.info("job %s: held by %s, checking again in %.0f s", job_id,
                     (claim.record.get("owner") or {}).get("node"), delay)
            return Step("busy", delay)
        rec = claim.record
        work = self.config.path(self.config.work_dir) / job_id
        run_dir, params, log_path = work / "run", work / "parameters.yaml", work / "runbook.log"
        prior = _read_run(run_dir)
        if claim.takeover or prior:
            if rec.get("change_started") or change_started(run_dir):
                ok = prior.get("status") in FINISHED_RUN
                outcome = Outcome("done" if ok else "failed", prior.get("status"),
                                  f"run {prior.get('status')}" if ok else
                                  f"the worker was lost after the run began a change{_where_text(_where(prior))}: "
                                  "not run again, check the audit log", True, _where(prior))
                return self._finish(job_id, rec, owner, work, run_dir, log_path, outcome)
            if prior.get("status") in FINISHED_RUN:
                return self._finish(job_id, rec, owner, work, run_dir, log_path,
                                    Outcome("done", prior["status"], f"run {prior['status']}", False, _where(prior)))
        work.mkdir(parents=True, exist_ok=True)
        params.write_text(yaml.safe_dump(rec["parameters"], sort_keys=False))
        rc, timed_out, lost = self._run(job_id, owner, params, run_dir, log_path)
        if lost:
            log.warning("job %s: lease lost to another worker; this attempt stops here", job_id)
            return Step("finished", reason="lease lost")
        outcome = judge(rc, run_dir, params, log_path, self.config.time_limit_s, timed_out)
        if outcome.state == "retry":
            if rec["attempt"] < self.config.max_attempts:
                delay = self._countdown(min(self.config.retry_delay_s * 2 ** (rec["attempt"] - 1), RETRY_DELAY_CAP_S))
                self.registry.release(job_id, owner, "retrying",
                                      {"outcome": "retry", "reason": outcome.reason, "exit": rc})
                log.warning("job %s: %s; retrying in %.0f s", job_id, outcome.reason, delay)
                return Step("retry", delay, outcome.reason)
            outcome.state = "failed"
            outcome.reason += f" ({self.config.max_attempts} attempts)"
        return self._finish(job_id, rec, owner, work, run_dir, log_path, outcome, rc)

    def _countdown(self, seconds: float) -> float:
        """A delay before the task looks again, shorter than the visibility timeout: a worker holds a delayed
        message unacknowledged, and one held longer would be handed to another worker too."""
        return max(min(seconds, self.config.visibility_timeout() / 2), 0.5)

    # --- the subprocess ------------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in (self.config.notify_url_env, self.config.broker_password_env):
            if name:
                env.pop(name, None)  # the run needs neither the webhook nor the broker's password
        return env

    def _run(self, job_id: str, owner: Owner, params: Path, run_dir: Path,
             log_path: Path) -> tuple[int, bool, bool]:
        argv = [*self.config.command_argv(), "run", "-p", str(params), "--out", str(run_dir)]
        lost = threading.Event()
        stop = threading.Event()
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=project_root(), env=self._child_env(), start_new_session=True,
                                    preexec_fn=_die_with_parent(os.getpid()))  # noqa: PLW1509 - one syscall
        self.registry.renew(job_id, owner, self.config.lease_s, run_dir=str(run_dir), run_pid=proc.pid,
                            run_started_at=iso(now_s()))
        beat = threading.Thread(target=self._heartbeat, args=(job_id, owner, run_dir, proc, stop, lost),
                                name=f"lease-{job_id}", daemon=True)
        beat.start()
        timed_out = False
        try:
            proc.wait(timeout=self.config.time_limit_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _terminate(proc)
        finally:
            stop.set()
            beat.join(timeout=self.config.lease_s)
            if proc.poll() is None:  # this thread is leaving (an exception): the run must not go on unowned
                _terminate(proc)
        self._renew_facts(job_id, owner, run_dir)
        return proc.returncode, timed_out, lost.is_set()

    def _heartbeat(self, job_id: str, owner: Owner, run_dir: Path, proc: subprocess.Popen,
                   stop: threading.Event, lost: threading.Event) -> None:
        while not stop.wait(self.config.lease_s / 4):
            try:
                if not self._renew_facts(job_id, owner, run_dir):
                    lost.set()
                    _terminate(proc)
                    return
            except BrokerError as e:  # nobody can take the job over while Redis is away either
                log.warning("job %s: cannot renew the lease: %s", job_id, e)

    def _renew_facts(self, job_id: str, owner: Owner, run_dir: Path) -> bool:
        facts: dict[str, Any] = {}
        if change_started(run_dir):
            facts["change_started"] = True
        findings = run_dir / "findings.json"
        if findings.is_file():
            facts["findings_at"] = iso(findings.stat().st_mtime)
        return self.registry.renew(job_id, owner, self.config.lease_s, **facts)

    # --- the end of a job ----------------------------------------------------------------------------

    def _finish(self, job_id: str, rec: dict[str, Any], owner: Owner, work: Path, run_dir: Path,
                log_path: Path, outcome: Outcome, rc: int | None = None) -> Step:
        folder = run_dir if run_dir.is_dir() else work / "no-run"
        folder.mkdir(parents=True, exist_ok=True)
        if log_path.is_file():
            (folder / "runbook.log").write_text(redact_text(log_path.read_text(errors="replace")))
        key = f"{rec['incident_id']}/{job_id}"
        latest = self.registry.get(job_id) or rec
        run_state = _read_run(run_dir)
        findings = run_dir / "findings.json"
        finished_at = iso(now_s())
        result = {"state": outcome.state, "status": outcome.status, "reason": outcome.reason,
                  "changed": outcome.changed, "where": outcome.where, "exit": rc, "finished_at": finished_at,
                  "findings_at": iso(findings.stat().st_mtime) if findings.is_file() else None}
        try:
            link = self.store.link(key, _first(folder, "postmortem.html", "postmortem.md"))
            facts = notify.summary(latest, run_state, run_dir, link, result)
            _write_json(folder / "automation.json", _automation_record(latest, result, facts))
            stored = self.store.put_run(folder, key)
        except StoreError as e:
            self.registry.release(job_id, owner, "retrying", {"outcome": "retry", "reason": str(e)})
            log.error("job %s: %s; storing again later", job_id, e)
            return Step("retry", self._countdown(self.config.retry_delay_s), str(e))
        notified: dict[str, Any] = {}
        url = self.config.notify_url()
        if url and not latest.get("notified_at"):
            try:
                notify.post(url, notify.message(facts))
                notified = {"notified_at": iso(now_s())}
            except NotifyError as e:
                notified = {"notify_error": str(e)}
                log.error("job %s: %s", job_id, e)
        self.registry.release(job_id, owner, outcome.state,
                              {"outcome": outcome.state, "reason": outcome.reason, "exit": rc},
                              result={**result, "stored": stored.uri, "link": stored.link}, **notified)
        shutil.rmtree(work, ignore_errors=True)
        log.info("job %s: %s (%s); stored in %s", job_id, outcome.state, outcome.reason, stored.uri)
        return Step("finished", reason=outcome.reason)


def record_resolution(registry: Registry, store, job_id: str) -> Step:
    """A resolved notification after the job was stored: write it into the stored ``automation.json``."""
    rec = registry.get(job_id)
    if rec is None:
        return Step("finished", reason="missing")
    if rec.get("state") not in ("done", "failed"):
        return Step("busy", 5.0)  # the job's own end writes the resolution it finds
    key = f"{rec['incident_id']}/{job_id}"
    raw = store.get_file(key, "automation.json")
    record = json.loads(raw) if raw else {}
    if record.get("resolved_at") == rec.get("resolved_at"):
        return Step("finished", reason="already recorded")
    record.update(resolved_at=rec.get("resolved_at"), resolved_notifications=rec.get("resolved_notifications"))
    store.put_file(key, "automation.json", (json.dumps(record, indent=2) + "\n").encode())
    return Step("finished", reason="recorded")


def _automation_record(rec: dict[str, Any], result: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "dedupe_key", "incident_id", "service", "apply", "created_at", "picked_at", "run_started_at",
            "notifications", "last_notification_at", "resolved_at", "resolved_notifications", "attempt", "attempts")
    return {**{k: rec.get(k) for k in keep}, "alert": rec.get("alert"), "result": result, "summary": facts}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(redact_text(json.dumps(data, indent=2, default=str)) + "\n")
    os.replace(tmp, path)


def _first(folder: Path, *names: str) -> str:
    return next((n for n in names if (folder / n).is_file()), "")


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM the run's process group (``runbook run`` marks run.json interrupted), SIGKILL after a grace."""
    for sig, grace in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is not None:
            return
