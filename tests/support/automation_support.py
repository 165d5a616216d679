"""Helpers of the automation tests: Alertmanager and an alerting Prometheus on loopback, Celery workers started
as subprocesses, a capture server for notifications, Alertmanager-shaped notifications, and a stand-in for
``runbook run``.

Every process is started on a free loopback port, waited on with a bounded readiness check, and stopped by
its PID. Run as a script (``python automation_support.py run -p PARAMS --out DIR``) this file is the stand-in:
it writes run.json like ``runbook run`` (running with its pid, earlier attempts kept, ``interrupted`` with the
notebook and cell on SIGTERM), sleeps ``$RUNBOOK_FAKE_RUN_S`` seconds of pretend work, writes findings.json
and a postmortem, and appends start / interrupted / complete events to ``$RUNBOOK_FAKE_LEDGER`` so a test
can prove that no run ran twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SUPPORT_FILE = Path(__file__).resolve()
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
CELERY_START_TIMEOUT_S = 60.0


# --- notifications as Alertmanager sends them ----------------------------------------------------------


def notification(service: str, alertname: str = "HighLatency", status: str = "firing",
                 starts_at: str = "2026-12-01T10:00:00Z", severity: str = "page", group_suffix: str = "",
                 generator_url: str = "http://prometheus.example:9090/graph?g0.expr=up") -> dict:
    labels = {"alertname": alertname, "service": service, "severity": severity}
    return {
        "version": "4", "receiver": "runbook", "status": status, "truncatedAlerts": 0,
        "groupKey": f'{{}}/{{}}:{{alertname="{alertname}", service="{service}"}}{group_suffix}',
        "groupLabels": {"alertname": alertname, "service": service}, "commonLabels": labels,
        "commonAnnotations": {"summary": f"{service} p95 above its SLO"},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [{"status": status, "labels": labels, "annotations": {"summary": f"{service} p95 above its SLO"},
                    "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": generator_url,
                    "fingerprint": f"{abs(hash(service)) % 10**16:016x}"}],
    }


# --- a capture server for the notification webhook ----------------------------------------------------


class Capture:
    """A local HTTP server that keeps every POSTed JSON body (the notification webhook)."""

    def __init__(self, status: int = 200):
        from runbook_lib.lab.servers import free_port

        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.status = status
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                owner.paths.append(self.path)
                try:
                    owner.bodies.append(json.loads(body))
                except ValueError:
                    owner.bodies.append({"raw": body.decode(errors="replace")})
                self.send_response(owner.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hooks/T0RUNBOOK/B0TEST/xoxb-capture-token-8d2f") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Alertmanager and a Prometheus that sends it alerts ---------------------------------------------------


class AlertmanagerServer:
    """Debian's prometheus-alertmanager on loopback, clustering off (it would bind 0.0.0.0:9094)."""

    def __init__(self, folder: Path, webhook_url: str, group_wait: str = "1s", group_interval: str = "2s",
                 repeat_interval: str = "3s"):
        from runbook_lib.lab.servers import free_port

        self.folder = folder
        self.port = free_port()
        self.webhook_url = webhook_url
        self.route = {"group_wait": group_wait, "group_interval": group_interval, "repeat_interval": repeat_interval}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.folder / "alertmanager.log"

    def config_text(self) -> str:
        r = self.route
        return (
            "route:\n  receiver: runbook\n  group_by: [alertname, service]\n"
            f"  group_wait: {r['group_wait']}\n  group_interval: {r['group_interval']}\n"
            f"  repeat_interval: {r['repeat_interval']}\n"
            "receivers:\n  - name: runbook\n    webhook_configs:\n"
            f"      - url: '{self.webhook_url}'\n        send_resolved: true\n"
        )

    def start(self) -> AlertmanagerServer:
        from runbook_lib.lab.servers import _http_ok, wait_until

        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "alertmanager.yml"
        cfg.write_text(self.config_text())
        argv = [ALERTMANAGER, f"--config.file={cfg}", f"--storage.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"]
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            wait_until(lambda: _http_ok(f"{self.url}/-/ready"), 30, f"alertmanager on port {self.port}",
                       self.log_file)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        from runbook_lib.lab.servers import kill_pid

        if self.proc is not None:
            kill_pid(self.proc.pid, str(self.folder / "alertmanager.yml"))
            self.proc.wait(timeout=10)


def alerting_prometheus(folder: Path, targets: list[str], rule_file: Path, alertmanager_port: int):
    """The lab's PrometheusServer with an ``alerting:`` section (its own config has none) and 1 s evaluation."""
    from runbook_lib.lab.servers import PrometheusServer

    class AlertingPrometheus(PrometheusServer):
        def config_text(self) -> str:
            return super().config_text() + (
                "alerting:\n  alertmanagers:\n    - static_configs:\n"
                f"        - targets: ['127.0.0.1:{alertmanager_port}']\n")

    return AlertingPrometheus(folder, targets=targets, scrape_interval="1s", rule_files=[str(rule_file)])


# --- Celery workers -----------------------------------------------------------------------------------


class Worker:
    """``celery -A runbook_lib.automation.tasks worker --concurrency 1 -P prefork`` in its own session (so a
    test can SIGKILL the worker and its pool at once, as a machine that dies)."""

    def __init__(self, env: dict[str, str], node: str, log_dir: Path, concurrency: int = 1):
        self.node = f"{node}@{socket.gethostname()}"
        self.log_file = log_dir / f"worker-{node}.log"
        argv = [sys.executable, "-m", "celery", "-A", "runbook_lib.automation.tasks", "worker", "-P", "prefork",
                "--concurrency", str(concurrency), "-n", self.node, "-Q", "runbook", "--without-gossip",
                "--without-mingle", "--loglevel", "INFO"]
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=str(SUPPORT_FILE.parents[2]))

    def wait_ready(self, registry) -> None:
        from runbook_lib.lab.servers import wait_until

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.node} exited: {self.log_file.read_text()[-2000:]}")
            return self.node in registry.workers()

        wait_until(up, CELERY_START_TIMEOUT_S, f"celery worker {self.node}", self.log_file)

    def kill_hard(self) -> None:
        """SIGKILL the worker and its pool processes (its process group), as when the machine dies."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass


# --- the stand-in for `runbook run` ----------------------------------------------------------------------


def standin_command() -> str:
    return f"{sys.executable} {SUPPORT_FILE}"


def read_ledger(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ledger(event: str, **fields) -> None:
    path = os.environ.get("RUNBOOK_FAKE_LEDGER")
    if not path:
        return
    line = json.dumps({"event": event, "t": time.time(), "pid": os.getpid(), **fields}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def fake_runbook_run(argv: list[str]) -> int:
    import yaml

    assert argv[0] == "run", argv
    params = Path(argv[argv.index("-p") + 1])
    out = Path(argv[argv.index("--out") + 1])
    incident = yaml.safe_load(params.read_text())["incident"]["id"]
    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / ".run.lock", "w")  # noqa: SIM115 - held for the whole run, like the runner's
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"error: {out} is being written by another run right now", file=sys.stderr)
        return 2
    run_file = out / "run.json"
    before = json.loads(run_file.read_text()) if run_file.exists() else {}
    attempts = before.get("attempts", []) + ([{k: before.get(k) for k in ("status", "started_at", "interruption")}]
                                             if before else [])
    state = {"status": "running", "incident": incident, "mode": "fixture", "pid": os.getpid(),
             "host": socket.gethostname(), "started_at": datetime.now(UTC).isoformat(), "current": "02_root_cause",
             "notebooks": [{"notebook": "01_symptom_correlation", "seconds": 0.1}], "failure": None,
             "interruption": None, "attempts": attempts}
    _write_json(run_file, state)
    _ledger("start", incident=incident, out=str(out))

    def on_term(signum, _frame):
        state.update(status="interrupted", finished_at=datetime.now(UTC).isoformat(),
                     interruption={"signal": "SIGTERM", "notebook": "02_root_cause", "cell": "cell 'fake-work' (#3)"})
        _write_json(run_file, state)
        _ledger("interrupted", incident=incident, out=str(out))
        os._exit(130)

    signal.signal(signal.SIGTERM, on_term)
    deadline = time.monotonic() + float(os.environ.get("RUNBOOK_FAKE_RUN_S", "3"))
    while time.monotonic() < deadline:  # pretend work, bounded
        time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
    _write_json(out / "findings.json", {"hypotheses": [
        {"title": "Disproved first", "statement": "never reported", "disproved": True, "confidence": 0.9},
        {"title": "The cache stopped absorbing reads", "statement": "Hits collapsed.", "disproved": False,
         "confidence": 0.8, "confidence_label": "high"}]})
    (out / "postmortem.md").write_text(f"# {incident}\n")
    (out / "postmortem.html").write_text(f"<h1>{incident}</h1>\n")
    state.update(status="complete", current=None, finished_at=datetime.now(UTC).isoformat(),
                 notebooks=[{"notebook": f"0{i}", "seconds": 0.1} for i in range(1, 6)])
    _write_json(run_file, state)
    _ledger("complete", incident=incident, out=str(out))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(fake_runbook_run(sys.argv[1:]))
