"""``runbook serve``: the alert receiver and a Celery worker, in one command.

Registered by the product's CLI through the ``runbook.commands`` entry point (``register(subparsers)``);
``python -m runbook_lib.automation serve ...`` is the same command without the entry point.

    runbook serve                                 receiver on 127.0.0.1:9095 + a worker running 1 run at a time
    runbook serve --role worker --concurrency 2   another machine: a worker only, same Redis
    runbook serve --role receiver --listen 0.0.0.0:9095

Every option has a ``RUNBOOK_AUTOMATION_<NAME>`` environment variable (``config``); the worker process gets them
through its environment, so ``celery -A runbook_lib.automation.tasks worker`` started by hand reads the same.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace

from runbook_lib.automation.automation_errors import AutomationError
from runbook_lib.automation.config import QUEUE, AutomationConfig
from runbook_lib.settings import display_path

WORKER_START_TIMEOUT_S = 60.0
DEFAULT_LISTEN = "127.0.0.1:9095"
# Ctrl-C: a worker finishes the run it has (warm shutdown) for this long, then stops it (cold shutdown: the run
# is marked interrupted and its message goes back to the queue for another worker).
DEFAULT_SHUTDOWN_GRACE_S = 60.0

OPTIONS = {  # option -> AutomationConfig field
    "broker": "broker", "broker_password_env": "broker_password_env", "templates": "templates",
    "store": "store", "work_dir": "work_dir", "notify_url_env": "notify_url_env", "link_base": "link_base",
    "s3_endpoint_url": "s3_endpoint_url", "service_label": "service_label", "time_limit": "time_limit_s",
    "max_attempts": "max_attempts", "retry_delay": "retry_delay_s", "lease": "lease_s", "token_env": "token_env",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="automated runs: receive Alertmanager's webhook and run the runbook on Celery workers",
        description="Receive Alertmanager webhooks (POST /alerts), map each alert group through its service's "
                    "template (parameters/automation/<service>.yaml) and run the runbook once per group on Celery "
                    "workers (Redis broker); each run folder lands in the store and a notification goes to the "
                    "webhook URL. Every option can also be set as RUNBOOK_AUTOMATION_<OPTION>.")
    p.add_argument("--role", choices=("all", "receiver", "worker"), default="all",
                   help="all: receiver + a worker on this machine; worker: only run jobs (default: %(default)s)")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help="where the receiver listens (default: %(default)s)")
    p.add_argument("--concurrency", type=_positive_int, default=1, metavar="N",
                   help="runs at once on this machine (Celery pool processes; a fixture run takes about one core)")
    p.add_argument("--broker", help="Redis of the task queue and the job registry (default: redis://127.0.0.1:6379/0)")
    p.add_argument("--broker-password-env", metavar="NAME", help="environment variable holding Redis' password")
    p.add_argument("--templates", metavar="DIR", help="per-service templates (default: parameters/automation)")
    p.add_argument("--store", metavar="DIR|s3://BUCKET/PREFIX",
                   help="where run folders land (default: runs/automated)")
    p.add_argument("--s3-endpoint-url", metavar="URL", help="another S3 than AWS's (e.g. a moto or MinIO server)")
    p.add_argument("--link-base", metavar="URL", help="the web address of the store, for links in notifications")
    p.add_argument("--work-dir", metavar="DIR", help="where runs execute before they are stored "
                                                    "(default: runs/automation-work)")
    p.add_argument("--notify-url-env", metavar="NAME",
                   help="environment variable holding the Slack-compatible webhook URL (default: "
                        "RUNBOOK_SECRET_NOTIFY_URL; unset: no notifications)")
    p.add_argument("--token-env", metavar="NAME",
                   help="environment variable holding the bearer token Alertmanager must send (required when a "
                        "template may apply changes)")
    p.add_argument("--service-label", metavar="LABEL", help="the alert label naming the service (default: service)")
    p.add_argument("--time-limit", type=float, metavar="S", help="seconds one run may take (default: 1200)")
    p.add_argument("--max-attempts", type=_positive_int, metavar="N",
                   help="attempts of a run stopped by failed infrastructure (default: 3; never for a run that "
                        "began a change)")
    p.add_argument("--retry-delay", type=float, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("--lease", type=float, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("--shutdown-grace", type=float, default=DEFAULT_SHUTDOWN_GRACE_S, metavar="S",
                   help="on Ctrl-C, how long the worker may finish its runs (default: %(default)g)")
    p.set_defaults(func=cmd_serve)


def _positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def config_from(args) -> AutomationConfig:
    cfg = AutomationConfig.from_env()
    changes = {f: getattr(args, o) for o, f in OPTIONS.items() if getattr(args, o, None) is not None}
    return replace(cfg, **changes).checked()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_serve(args) -> int:
    from runbook_lib.automation.registry import Registry
    from runbook_lib.automation.store import open_store
    from runbook_lib.settings import project_root

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from(args)
    os.environ.update(cfg.to_env())  # the worker process and the tasks module read these
    registry = Registry(cfg.broker_url(), cfg.prefix)
    registry.ping()
    host, port = _listen(args.listen)
    dispatcher = None
    if args.role in ("all", "receiver"):
        from runbook_lib.automation.receiver import default_dispatcher

        dispatcher = default_dispatcher(cfg)
        _say(f"templates: {', '.join(sorted(dispatcher.templates)) or 'none'} from "
             f"{display_path(cfg.path(cfg.templates))}")
    if args.role in ("all", "worker"):
        store = open_store(cfg.store, project_root(), cfg.s3_endpoint_url, cfg.link_base)
        store.check()
        _say(f"store: {store.describe()}; time limit {cfg.time_limit_s:g} s per run, at most {cfg.max_attempts} "
             f"attempts; notifications: {'on' if cfg.notify_url() else f'off (${cfg.notify_url_env} not set)'}")
    worker = None
    try:
        if args.role in ("all", "worker"):
            worker, node = start_worker(cfg, args.concurrency)
            _wait(lambda: node in registry.workers() or worker.poll() is not None, WORKER_START_TIMEOUT_S,
                  "the Celery worker")
            if worker.poll() is not None:
                raise AutomationError(f"the Celery worker exited at start (status {worker.returncode})",
                                      hint="its log is above; check --broker and the environment")
            _say(f"worker {node}: {args.concurrency} run(s) at a time, queue {QUEUE!r} on {_safe(cfg.broker)}")
        if dispatcher is not None:
            import uvicorn

            from runbook_lib.automation.receiver import create_app

            _say(f"receiver: POST http://{host}:{port}/alerts (Alertmanager webhook_configs url); "
                 f"GET /healthz, /jobs")
            server = _Receiver(uvicorn.Config(create_app(dispatcher, sweep_every_s=cfg.lease_s), host=host,
                                              port=port, log_level="warning", access_log=False))
            server.run()
            if not server.started:
                raise AutomationError(f"the receiver could not listen on {host}:{port}",
                                      hint="choose another --listen address (is a receiver already running?)")
        else:
            assert worker is not None
            _forward_signals(worker)
            return worker.wait()
    finally:
        if worker is not None:
            stop_worker(worker, args.shutdown_grace)
    return 0


def _receiver_class():
    import uvicorn

    class Receiver(uvicorn.Server):
        """uvicorn re-raises SIGINT/SIGTERM once it has stopped, which would end this process before it stops
        its worker: here a signal only stops the server, and the ``finally`` of ``cmd_serve`` does the rest."""

        @contextmanager
        def capture_signals(self):
            def stop(signum, _frame):
                self.force_exit = self.should_exit  # a second Ctrl-C: do not wait for open connections
                self.should_exit = True

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Receiver


def _Receiver(config):  # noqa: N802 - reads as the class it makes
    return _receiver_class()(config)


def start_worker(cfg: AutomationConfig, concurrency: int, node: str | None = None) -> tuple[subprocess.Popen, str]:
    node = node or f"runbook-{os.getpid()}@{socket.gethostname()}"
    argv = [sys.executable, "-m", "celery", "-A", "runbook_lib.automation.tasks", "worker", "-P", "prefork",
            "--concurrency", str(concurrency), "-n", node, "-Q", QUEUE, "--without-gossip", "--without-mingle",
            "--loglevel", "INFO"]
    proc = subprocess.Popen(argv, env={**os.environ, **cfg.to_env()}, stdin=subprocess.DEVNULL)
    return proc, node


def stop_worker(proc: subprocess.Popen, grace: float) -> None:
    """Warm shutdown (finish the runs) for ``grace`` s, then cold (runs interrupted, messages requeued)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGQUIT, 15.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def _forward_signals(proc: subprocess.Popen) -> None:
    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not check():
        if time.monotonic() > deadline:
            raise AutomationError(f"{what} not ready after {timeout:.0f} s",
                                  hint="its log is above; check --broker and that Redis answers")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise AutomationError(f"--listen {text!r} is not HOST:PORT", hint=f"e.g. --listen {DEFAULT_LISTEN}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _safe(url: str) -> str:
    from runbook_lib.redaction import redact_text

    return redact_text(url)


def main(argv: list[str] | None = None) -> int:
    """``python -m runbook_lib.automation serve ...``: the command without the product CLI's entry point."""
    from runbook_lib.cli.commands import one_line
    from runbook_lib.errors import RunbookError

    parser = argparse.ArgumentParser(prog="runbook")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RunbookError as err:
        print(f"error: {one_line(_safe(str(err)))}", file=sys.stderr)
        if err.hint:
            print(f"hint: {one_line(err.hint)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
