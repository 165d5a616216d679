"""A moto server (``moto_server``) on a free loopback port for the AWS tests, stopped by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from runbook_lib.lab.servers import free_port, kill_pid, wait_until

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
START_TIMEOUT_S = 20


def start_moto(tmp: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(tmp / f"moto-{port}.log", "wb")  # noqa: SIM115 - closed by the caller's finalizer
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as r:
            return r.status == 200

    try:
        wait_until(ready, START_TIMEOUT_S, f"moto_server on port {port}", tmp / f"moto-{port}.log")
    except Exception:
        stop_moto(proc)
        raise
    return proc, url


def stop_moto(proc: subprocess.Popen) -> None:
    kill_pid(proc.pid, "moto_server")
    proc.wait(timeout=10)
