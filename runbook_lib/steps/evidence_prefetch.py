"""The live evidence window opened when ``runbook run`` starts, so 02 does not wait for it from scratch.

02 reads two PostgreSQL statistics snapshots and a Redis collection ``LIVE_WINDOW_S`` apart. Taken when 02
starts, the whole window is waiting time on the way to ``findings.json``; opened by the runner when the run
begins, it overlaps 01 (a kernel start, the Prometheus reads, the window fit), and 02 waits only for what is
left. The window is the same length and still lies inside the incident (the run starts while it is live).

The runner's thread writes the raw window into the run folder (``PREFETCH_FILE``, by rename, so a reader never
meets half a file) and 02's kernel, a separate process, takes it from there: pickle, because the window is
pandas frames and dataclasses this package wrote a moment ago into a folder it owns, never input from anyone
else. ``PENDING_FILE`` says a window is being taken (the runner's pid and when it will close); 02 waits for the
result up to the close time plus ``TAKE_GRACE_S``, and collects its own window if the runner is gone or late.
The files are removed once read, and by the runner at the end of the run in any case: they hold statement
texts and key names, which belong in no export.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
from pathlib import Path

from runbook_lib.run_folder import process_alive, write_atomic
from runbook_lib.settings import Settings
from runbook_lib.steps.evidence import LIVE_WINDOW_S, LiveWindow, collect_window

PREFETCH_FILE = ".evidence-window.pickle"
PENDING_FILE = ".evidence-window.pending"
# How long past the window's planned close 02 waits for the runner's result: the key sample after the window
# (up to a few seconds on a large keyspace) and a loaded machine's scheduling.
TAKE_GRACE_S = 30.0
POLL_S = 0.2


class Prefetch:
    """A window being taken in a background thread of this process; ``discard()`` at the end of the run."""

    def __init__(self, settings: Settings, run_dir: Path, window_s: float = LIVE_WINDOW_S):
        self.run_dir, self.window_s = run_dir, window_s
        self._discarded = threading.Event()
        pending = {"pid": os.getpid(), "closes_at": time.time() + window_s, "window_s": window_s}
        write_atomic(run_dir / PENDING_FILE, json.dumps(pending).encode())
        self.thread = threading.Thread(target=self._take, args=(settings,), name="evidence-window", daemon=True)
        self.thread.start()

    def _take(self, settings: Settings) -> None:
        try:
            raw = collect_window(settings, self.window_s)
        except Exception as err:  # noqa: BLE001 - any failure: 02 then takes its own window and reports it
            raw = LiveWindow(self.window_s, missing=[f"evidence window opened by the run: {type(err).__name__}"])
        if not self._discarded.is_set():
            write_atomic(self.run_dir / PREFETCH_FILE, pickle.dumps(raw))
        (self.run_dir / PENDING_FILE).unlink(missing_ok=True)

    def discard(self) -> None:
        """The run is over: a window nobody read is removed (and one still being taken is never written)."""
        self._discarded.set()
        for name in (PREFETCH_FILE, PENDING_FILE):
            (self.run_dir / name).unlink(missing_ok=True)


def _pending(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / PENDING_FILE).read_text())
    except (OSError, ValueError):
        return None


def take(run_dir: Path, clock=time.time, sleep=time.sleep) -> LiveWindow | None:
    """The window the run opened, once it has closed (waiting for it, bounded); None when there is none, its
    runner is gone, or it is late (the caller then takes its own window)."""
    path = run_dir / PREFETCH_FILE
    pending = _pending(run_dir)
    if pending is not None:
        left = pending["closes_at"] - clock()
        if left > 0:
            print(f"PostgreSQL and Redis window opened when the run began: {left:.0f} s left ...", flush=True)
        deadline = pending["closes_at"] + TAKE_GRACE_S
        while not path.exists() and clock() < deadline and process_alive(pending["pid"]) and \
                (run_dir / PENDING_FILE).exists():
            sleep(POLL_S)
    if not path.exists():
        return None
    try:
        raw = pickle.loads(path.read_bytes())
    finally:
        path.unlink(missing_ok=True)
    return raw if isinstance(raw, LiveWindow) else None
