"""The run folder: the immutable record of one incident run.

Layout (each step reads what the one before wrote)::

    runs/<incident>/<UTC timestamp>/
      run.json              status: running | failed | complete, notebooks done, failure (notebook, cell)
      parameters.yaml       the validated parameters (secrets only as references)
      01_symptom_correlation.ipynb ... 05_validation.ipynb   executed notebooks
      symptoms.json  findings.json  plan.json  audit.jsonl  validation.json
      figures/<name>.json   every chart shown, as plotly JSON (the export embeds them)
      postmortem.md  postmortem.html

JSON files are written atomically (temp file + rename) so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
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


def write_json(path: Path, data: Any) -> Path:
    """Atomic, redacted, deterministic JSON."""
    text = json.dumps(redact(_clean_floats(json.loads(json.dumps(data, default=_default)))), indent=2,
                      sort_keys=False, ensure_ascii=False)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


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


def run_status(run_dir: Path) -> dict:
    f = Path(run_dir) / RUN_FILE
    return json.loads(f.read_text()) if f.exists() else {}
