"""The lab's background load process: started by the incident scenario, found and stopped by its PID.

``<state>/load/load.json`` holds the PID, when it started and until when it runs; ``load.log`` its output.
A PID is only acted on while its command line still names this lab's state folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runbook_lib.lab.lab_errors import LabError
from runbook_lib.lab.servers import cmdline, kill_pid, pid_alive
from runbook_lib.run_folder import write_atomic

LOAD_DIR = "load"
LOAD_FILE = "load.json"
LOAD_LOG = "load.log"


def _load_file(state: Path) -> Path:
    return state / LOAD_DIR / LOAD_FILE


def load_status(state: Path) -> dict | None:
    """The background load: pid, started_at, until, running; None when none was started."""
    f = _load_file(state)
    if not f.exists():
        return None
    info = json.loads(f.read_text())
    return {**info, "running": pid_alive(int(info["pid"])) and _marker(state) in cmdline(int(info["pid"]))}


def _marker(state: Path) -> str:
    return str(state.resolve())


def stop_load(state: Path) -> list[int]:
    """Stop the background load by its PID (only if that PID is still our load process)."""
    f = _load_file(state)
    if not f.exists():
        return []
    pid = int(json.loads(f.read_text())["pid"])
    stopped = [pid] if kill_pid(pid, _marker(state)) else []
    f.unlink(missing_ok=True)
    return stopped


def refuse_a_second_load(state: Path) -> None:
    current = load_status(state)
    if current and current["running"]:
        raise LabError(f"a load is already running (pid {current['pid']}, until {current['until']})",
                       hint="stop it first: runbook lab load --stop")


def start_background_load(state: Path, args: list[str], duration_s: float) -> dict:
    """``runbook lab load --scenario steady ARGS`` as a process of its own session, logged to load.log."""
    refuse_a_second_load(state)
    folder = state / LOAD_DIR
    folder.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "runbook_lib.cli", "lab", "load", "--state", _marker(state),
            "--scenario", "steady", "--duration", f"{duration_s:g}", *args]
    now = datetime.now(UTC)
    with open(folder / LOAD_LOG, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    info = {"pid": proc.pid, "started_at": now.isoformat(timespec="seconds"),
            "until": (now + timedelta(seconds=duration_s)).isoformat(timespec="seconds"), "argv": argv[3:]}
    write_atomic(_load_file(state), json.dumps(info, indent=2))
    return info
