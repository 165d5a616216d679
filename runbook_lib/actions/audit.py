"""The audit log: ``audit.jsonl`` in the run folder, append-only, one JSON line per step.

Every line is redacted, written with a single ``write()`` on an ``O_APPEND`` descriptor, then
flushed and fsynced before ``append`` returns: a crash never loses a step that happened.

The reader tolerates a torn line (a crash in the middle of a write): it is skipped and counted.
Before appending after such a crash the writer terminates the fragment with a newline, so the
fragment never glues itself to the next good line.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook_lib.actions.action_errors import AuditError
from runbook_lib.redaction import redact
from runbook_lib.run_folder import AUDIT_FILE, utc_now

# The steps a line can record, in the order they normally happen.
STEPS = (
    "planned",          # dry run or before approval: the exact commands
    "approved",         # the gate let it through: actor, approved_by, change_ticket
    "applying",         # intent, with the captured prior state, written BEFORE the change
    "applied",          # the change ran (changed: false = it was already there)
    "verified",         # the effect was measured on the server
    "assessed",         # verify loop: helped / no effect / worse / inconclusive, with the measured windows
    "reassessed",       # after an automatic rollback: the effect measured again (is the prior level back?)
    "rollback_planned",  # dry-run rollback: the exact commands
    "rolling_back",     # intent, written BEFORE the undo
    "rolled_back",      # the undo ran; restored: whether the state equals the prior state
    "discovered",       # a step without its outcome was found; the server state was inspected
    "failed",           # the step raised; error says why
)


def audit_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / AUDIT_FILE


class AuditLog:
    """Append-only writer for one run folder's audit log. Safe to share between threads."""

    def __init__(self, run_dir: str | Path):
        self.path = audit_path(run_dir)
        self._lock = threading.Lock()

    def append(self, step: str, **fields: Any) -> dict[str, Any]:
        if step not in STEPS:
            raise ValueError(f"unknown audit step {step!r}")
        record = {"ts": utc_now().isoformat(timespec="microseconds"), "step": step, **fields}
        line = json.dumps(redact(_jsonable(record)), ensure_ascii=False, sort_keys=False, default=str) + "\n"
        with self._lock:
            self._write(line.encode())
        return record

    def _write(self, data: bytes) -> None:
        created = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise AuditError(f"cannot open {self.path}: {e.strerror}") from None
        try:
            if _ends_torn(self.path):
                data = b"\n" + data
            view = memoryview(data)
            while view:  # a regular file takes it in one write; loop in case it does not
                view = view[os.write(fd, view):]
            os.fsync(fd)
            if created:
                _fsync_dir(self.path.parent)  # the new file's directory entry must survive a crash too
        except OSError as e:
            raise AuditError(f"cannot write {self.path}: {e.strerror}") from None
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_torn(path: Path) -> bool:
    """True when the file is non-empty and does not end in a newline (a write was cut short)."""
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) != b"\n"


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


@dataclass
class AuditRead:
    records: list[dict[str, Any]] = field(default_factory=list)
    torn_lines: list[int] = field(default_factory=list)  # 1-based line numbers that did not parse


def read_audit(run_dir: str | Path) -> AuditRead:
    """Every parseable line of the run's audit log, in order; unparseable ones are counted, not fatal."""
    path = audit_path(run_dir)
    out = AuditRead()
    if not path.exists():
        return out
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            out.torn_lines.append(n)
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.records.append(rec)
        else:
            out.torn_lines.append(n)
    return out


class Stopwatch:
    """Duration of a step in seconds, for the audit line."""

    def __init__(self):
        self.t0 = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self.t0, 4)
