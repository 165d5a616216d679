"""The run folder: the immutable record of one incident run.

Layout (each step reads what the one before wrote)::

    runs/<incident>/<UTC timestamp>/
      run.json              status: running | complete | partial | failed | interrupted | abandoned, notebooks
                            done, failure or interruption (notebook, cell), pid, earlier attempts
      parameters.yaml       the validated parameters (secrets only as references)
      01_symptom_correlation.ipynb ... 05_validation.ipynb   executed notebooks
      symptoms.json  findings.json  plan.json  audit.jsonl  validation.json  alerts.rules.yml
      scaling/hpa.yaml  scaling/scaledobject.yaml   autoscaler manifests (with a kubernetes section)
      figures/<name>.json   every chart shown, as plotly JSON (the export draws them)
      postmortem.md  postmortem_charts/*.png  postmortem.html  postmortem.pdf

JSON files are written atomically (temp file + rename) so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runbook_lib.errors import StepInputMissing
from runbook_lib.redaction import redact

RUN_FILE = "run.json"
PARAMETERS_FILE = "parameters.yaml"
AUDIT_FILE = "audit.jsonl"
FIGURES_DIR = "figures"

# Which step writes which file; a step reading a missing file is told which notebook makes it.
PRODUCED_BY = {
    "symptoms.json": "01_symptom_correlation",
    "findings.json": "02_root_cause",
    "plan.json": "03_impact_assessment",
    "remediation.json": "04_remediation",
    "validation.json": "05_validation",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_run_dir(root: Path, incident_id: str) -> Path:
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    path = root / incident_id / stamp
    n = 1
    while path.exists():  # two runs in the same second
        n += 1
        path = root / incident_id / f"{stamp}-{n}"
    path.mkdir(parents=True)
    return path


def _default(o: Any):
    if isinstance(o, (pd.Timestamp, datetime)):
        return o.isoformat()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def _clean_floats(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if obj != obj else obj  # NaN -> null, JSON has no NaN
    if isinstance(obj, dict):
        return {k: _clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_floats(v) for v in obj]
    return obj


def write_atomic(path: str | Path, data: str | bytes, fsync: bool = False) -> Path:
    """Write a whole file by temp file + rename: a reader sees the old file or the new one, never half of
    either. The temp name carries the PID (two processes writing the same file do not share a temp file);
    ``fsync``: the bytes are on disk before the rename (a run's records survive a crash)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json(path: Path, data: Any) -> Path:
    """Atomic, redacted, deterministic JSON."""
    text = json.dumps(redact(_clean_floats(json.loads(json.dumps(data, default=_default)))), indent=2,
                      sort_keys=False, ensure_ascii=False)
    return write_atomic(path, text + "\n", fsync=True)


def read_json(run_dir: Path, name: str) -> Any:
    path = Path(run_dir) / name
    if not path.exists():
        maker = PRODUCED_BY.get(name, "an earlier step")
        raise StepInputMissing(f"{name} is not in the run folder; it is written by {maker}")
    return json.loads(path.read_text())


def update_run_status(run_dir: Path, **fields: Any) -> dict:
    f = Path(run_dir) / RUN_FILE
    state = json.loads(f.read_text()) if f.exists() else {}
    state.update(fields)
    state["updated_at"] = utc_now().isoformat()
    write_json(f, state)
    return state


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie still answers kill(0)
        return stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:  # gone between the two looks, or a system without /proc (then kill(0) has answered)
        return not Path("/proc/self").exists()


def run_status(run_dir: Path) -> dict:
    """run.json; a run still marked ``running`` whose process is gone (SIGKILL, a crash, a reboot) is reported
    ``abandoned`` here, and written so, by whichever command reads it next."""
    f = Path(run_dir) / RUN_FILE
    state = json.loads(f.read_text()) if f.exists() else {}
    pid = state.get("pid")
    if state.get("status") == "running" and pid and state.get("host") == socket.gethostname() \
            and not process_alive(int(pid)):
        state = update_run_status(run_dir, status="abandoned", abandoned_at=utc_now().isoformat(),
                                  failure={"notebook": state.get("current"), "cell": None,
                                           "error": f"the run's process (pid {pid}) is gone: killed or crashed"})
    return state


INCOMPLETE = ("running", "failed", "interrupted", "abandoned", "partial")


def incomplete_reason(state: dict, notebooks_total: int = len(PRODUCED_BY)) -> str | None:
    """Why a run folder is not the record of a whole run (for the postmortem's banner); None when it is."""
    status = state.get("status")
    # notebooks this folder holds from this attempt and the earlier ones (a resumed run reruns a subset)
    names = {n["notebook"] for a in [*state.get("attempts", []), state] for n in (a.get("notebooks") or [])}
    done = len(names)
    if status not in INCOMPLETE or (status in ("running", "partial") and done >= notebooks_total):
        return None  # whole, or exporting right now
    what = state.get("failure") or state.get("interruption") or {}
    where = f" in {what['notebook']}" if what.get("notebook") else ""
    return f"run {status}{where} after {done} of {notebooks_total} notebooks"
