"""Run the five notebooks in order through papermill into a new run folder.

Before anything is created the parameters are validated and the source is checked (bundle files
present, every requested signal available), so bad input never leaves a run folder behind. During
the run ``run.json`` says ``running`` (with this process's pid; a later reader finding that process gone
reports the run ``abandoned``); it says ``complete`` only after all five notebooks (and the export)
succeeded, ``partial`` after an ``--only`` subset, ``failed`` with the notebook and cell, or ``interrupted``
with the signal, notebook and cell (SIGINT, SIGTERM). A rerun into the same folder keeps every earlier
attempt under ``attempts``. The folder is locked while a run writes it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import yaml
from papermill.exceptions import PapermillExecutionError

from runbook_lib import errors
from runbook_lib.actions import action_errors
from runbook_lib.errors import NotebookFailed, RunbookError, SettingsError, UnknownSignalError
from runbook_lib.report.postmortem import export_run
from runbook_lib.run_folder import (
    PARAMETERS_FILE,
    RUN_FILE,
    new_run_dir,
    run_status,
    update_run_status,
    utc_now,
)
from runbook_lib.settings import Settings, display_path, load_settings, project_root
from runbook_lib.sources import SignalSource, open_source, pg_statistics, redis_snapshot
from runbook_lib.sources.fixture_bundle import FixtureSource
from runbook_lib.suite.engine import ENGINE_NAME

NOTEBOOKS = ("01_symptom_correlation", "02_root_cause", "03_impact_assessment", "04_remediation", "05_validation")
# The kernel's own log: ipykernel 7 warns on every start that its loopback TCP sockets are unencrypted (the
# kernel is a child of this process, on 127.0.0.1), and logs a ZMQ traceback at ERROR when a run is interrupted
# and its sockets close mid-reply. Neither helps the reader: a cell's error is in the executed notebook and
# run.json, so only CRITICAL kernel messages reach the terminal.
KERNEL_ARGUMENTS = ["--log-level=CRITICAL"]
# Kernel start is ~2-4 s on these machines; a minute means the kernel is not coming.
KERNEL_START_TIMEOUT_S = 60
LOCK_FILE = ".run.lock"
# What an earlier attempt in the same folder leaves in run.json's history.
ATTEMPT_FIELDS = ("status", "started_at", "finished_at", "requested", "notebooks", "failure", "interruption")


# The final status of a run whose window holds no incident (01 found p95 at one level within its SLO).
HEALTHY = "healthy"


def _healthy_window(run_dir: Path) -> str | None:
    """01's finding when its window was healthy (symptoms.json ``healthy``), else None."""
    try:
        symptoms = json.loads((run_dir / "symptoms.json").read_text())
    except (OSError, ValueError):
        return None
    return symptoms.get("finding") if symptoms.get("healthy") else None


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def preflight(parameters: Path) -> tuple[Settings, SignalSource]:
    """Validate parameters and reach the source; raises a RunbookError naming the culprit."""
    settings = load_settings(parameters)
    source = open_source(settings)
    check = getattr(getattr(source, "bundle", None), "check", None) or getattr(source, "check", None)
    if check:
        check()
    _check_window(settings, source, parameters)
    _check_evidence_servers(settings)
    available = set(source.available())
    missing = [s for s in settings.signals if s not in available]
    if missing:
        raise UnknownSignalError(f"signal {missing[0]!r} is not provided by {source.description} "
                                 f"(parameters {display_path(parameters)}, field signals)")
    return settings, source


def _check_window(settings: Settings, source: SignalSource, parameters: Path) -> None:
    """A fixed window must overlap the data a recorded bundle holds (a live source is asked at run time)."""
    w, rng = settings.window, (source.default_range() if settings.source.kind == "fixture" else None)
    if rng is None or not (w.start or w.end):
        return
    first, last = rng
    start, end = (pd.Timestamp(w.start) if w.start else first), (pd.Timestamp(w.end) if w.end else last)
    if end <= first or start >= last:
        raise SettingsError(f"{display_path(parameters)}: window {start:%Y-%m-%d %H:%M} - {end:%Y-%m-%d %H:%M} UTC "
                            f"is outside the data of {source.description} ({first:%Y-%m-%d %H:%M} - "
                            f"{last:%Y-%m-%d %H:%M})", hint="fix window.start/end or leave them out for the whole bundle")


def _check_evidence_servers(settings: Settings) -> None:
    """Lab and live mode read (and may change) the PostgreSQL and Redis the parameters name: reach them now,
    so a wrong DSN or a stopped server is one line before the run, not a missing-evidence note in 02."""
    if settings.mode == "fixture":
        return
    if settings.postgres is not None:
        password = settings.postgres.password.reveal().get_secret_value() if settings.postgres.password else None
        pg_statistics.connect(settings.postgres.dsn, password).close()
    if settings.redis is not None:
        redis_snapshot.connect_settings(settings.redis).close()


def select(only: list[str] | None) -> list[str]:
    if not only:
        return list(NOTEBOOKS)
    chosen = [nb for nb in NOTEBOOKS if any(nb == o or nb.startswith(o) for o in only)]
    unknown = [o for o in only if not any(nb == o or nb.startswith(o) for nb in NOTEBOOKS)]
    if unknown:
        raise RunbookError(f"unknown notebook {unknown[0]!r}", hint=f"choose from {', '.join(NOTEBOOKS)}")
    return chosen


def _hint_of(ename: str) -> str | None:
    """The hint of the runbook's own error raised in a notebook (by its class name), so the command line says
    what to do, not only where to look."""
    cls = getattr(errors, ename, None) or getattr(action_errors, ename, None)
    if isinstance(cls, type) and issubclass(cls, RunbookError) and cls.hint:
        return f"{cls.hint} (the executed notebook shows the cell and the traceback)"
    return None


def _failed_cell(output: Path, err: PapermillExecutionError) -> str:
    """'cell <id> (#n)' of the failing cell: the one holding the error output in the executed notebook
    (papermill also inserts a banner cell at the top, so err.cell_index is not an index into it)."""
    try:
        nb = nbformat.read(output, as_version=4)
        for cell in nb.cells:
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                return f"cell '{cell.get('id', '?')}' (#{err.exec_count})"
    except Exception:  # noqa: BLE001, S110 - best effort: the error itself is what matters
        pass
    return f"cell #{err.exec_count}"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_out(out: Path) -> Path:
    """``--out``: a new folder, an empty one, or an earlier run folder (a rerun); never someone's other files."""
    run_dir = out.resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise RunbookError(f"--out {display_path(run_dir)} is a file, not a folder", hint="name a new folder")
    others = run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir())
    if others and not (run_dir / RUN_FILE).exists():
        raise RunbookError(f"--out {display_path(run_dir)} is not empty and is not a run folder (no {RUN_FILE})",
                           hint="name a new or empty folder; a run writes parameters.yaml and notebooks there")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunbookError(f"--out {display_path(run_dir)}: cannot create it ({e.strerror})",
                           hint="name a folder you can write") from None
    return run_dir


@contextmanager
def _locked(run_dir: Path):
    """One run writes a run folder at a time (an advisory lock the kernel drops when the process dies)."""
    f = open(run_dir / LOCK_FILE, "w")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunbookError(f"{display_path(run_dir)} is being written by another run right now",
                               hint="wait for it, or run into another folder (--out)") from None
        yield
    finally:
        f.close()


class _Terminated(BaseException):
    """SIGTERM during a run, turned into an exception so the run folder is updated before exiting."""


def _on_signal(signum, frame):
    """Stop the run with one clear line: the kernel client's shutdown complaints (a dead kernel, an unretrieved
    task) would otherwise follow it on the terminal. Logging stays off: the process is on its way out."""
    logging.disable(logging.CRITICAL)
    raise KeyboardInterrupt if signum == signal.SIGINT else _Terminated()


def _running_cell(output: Path) -> str | None:
    """The cell papermill was executing when the run stopped (its status in the output notebook)."""
    try:
        nb = nbformat.read(output, as_version=4)
    except Exception:  # noqa: BLE001 - the notebook may not be written yet
        return "before its first cell (the kernel was starting)"
    started = [(i, c) for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    # the cell papermill marked running; when it closed the notebook on the way out, the last one that started
    running = [(i, c) for i, c in started if c["metadata"]["papermill"].get("status") == "running"]
    for i, cell in running or started[-1:]:
        return f"cell '{cell.get('id', '?')}' (#{i})"
    return "before its first cell (the kernel was starting)"


def run_suite(parameters: Path, out: Path | None = None, export: bool = True,
              only: list[str] | None = None) -> Path:
    parameters = parameters.resolve()
    settings, source = preflight(parameters)
    chosen = select(only)
    run_dir = new_run_dir(project_root() / "runs", settings.incident.id) if out is None else _check_out(out)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    try:
        with _locked(run_dir):
            prefetch = _open_evidence_window(settings, source, run_dir, chosen)
            try:
                return _run(run_dir, parameters, settings, source, chosen, export)
            finally:
                if prefetch is not None:
                    prefetch.discard()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _open_evidence_window(settings: Settings, source: SignalSource, run_dir: Path,
                          chosen: list[str]):
    """Live runs that reach 02: its PostgreSQL/Redis window opens now and overlaps 01 (``evidence_prefetch``;
    imported here: it brings the diagnosis modules, which a fixture run's process never needs)."""
    if isinstance(source, FixtureSource) or NOTEBOOKS[1] not in chosen or not (settings.postgres or settings.redis):
        return None
    from runbook_lib.steps import evidence_prefetch

    return evidence_prefetch.Prefetch(settings, run_dir)


def _run(run_dir: Path, parameters: Path, settings: Settings, source: SignalSource, chosen: list[str],
         export: bool) -> Path:
    # the validated parameters travel with the run (secrets are references, never values)
    (run_dir / PARAMETERS_FILE).write_text(
        yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True), sort_keys=False))
    before = run_status(run_dir)
    attempts = before.get("attempts", []) + ([{k: before.get(k) for k in ATTEMPT_FIELDS}] if before else [])
    update_run_status(run_dir, status="running", incident=settings.incident.id, mode=settings.mode,
                      parameters=display_path(parameters), started_at=utc_now().isoformat(), finished_at=None,
                      pid=os.getpid(), host=socket.gethostname(), requested=chosen, current=None,
                      notebooks=[], failure=None, interruption=None, attempts=attempts)
    _say(f"run folder: {display_path(run_dir)} ({settings.incident.id}, {settings.mode} mode, "
         f"{'APPLY' if settings.remediation.apply else 'dry run'}, source: {source.description})")
    done = []
    for i, name in enumerate(chosen, start=1):
        output = run_dir / f"{name}.ipynb"
        _say(f"[{i}/{len(chosen)}] {name} ...")
        update_run_status(run_dir, current=name)
        t0 = time.monotonic()
        try:
            papermill.execute_notebook(
                str(notebooks_dir() / f"{name}.ipynb"), str(output),
                parameters={"parameters_file": str(run_dir / PARAMETERS_FILE), "run_dir": str(run_dir)},
                kernel_name="python3", engine_name=ENGINE_NAME, cwd=str(project_root()), progress_bar=False,
                start_timeout=KERNEL_START_TIMEOUT_S, report_mode=False,
                extra_arguments=KERNEL_ARGUMENTS,
            )
        except PapermillExecutionError as err:
            if err.ename == "KeyboardInterrupt":  # Ctrl-C reached the kernel first
                update_run_status(run_dir, status="interrupted", notebooks=done, finished_at=utc_now().isoformat(),
                                  interruption={"signal": "SIGINT", "notebook": name,
                                                "cell": _failed_cell(output, err)})
                raise KeyboardInterrupt from None
            where = _failed_cell(output, err)
            cause = err.evalue.strip().splitlines()[0] if err.evalue else ""
            update_run_status(run_dir, status="failed", notebooks=done,
                              failure={"notebook": name, "cell": where, "error": f"{err.ename}: {cause}"})
            raise NotebookFailed(f"{name}.ipynb failed in {where}: {err.ename}: {cause} "
                                 f"(executed notebook: {display_path(output)})", hint=_hint_of(err.ename)) from None
        except (KeyboardInterrupt, _Terminated) as err:
            sig = "SIGINT" if isinstance(err, KeyboardInterrupt) else "SIGTERM"
            update_run_status(run_dir, status="interrupted", notebooks=done, finished_at=utc_now().isoformat(),
                              interruption={"signal": sig, "notebook": name, "cell": _running_cell(output)})
            raise KeyboardInterrupt from None
        except Exception as err:
            update_run_status(run_dir, status="failed", notebooks=done,
                              failure={"notebook": name, "cell": None, "error": f"{type(err).__name__}: {err}"})
            raise
        secs = time.monotonic() - t0
        done.append({"notebook": name, "seconds": round(secs, 1)})
        update_run_status(run_dir, notebooks=done)
        _say(f"[{i}/{len(chosen)}] {name} ok ({secs:.1f} s)")
        healthy = _healthy_window(run_dir) if name == NOTEBOOKS[0] else None
        if healthy:  # an answer, not a failure: nothing to diagnose, change or validate
            _say(f"no incident in the window: {healthy}; the remaining notebooks have nothing to work on")
            update_run_status(run_dir, status=HEALTHY, current=None, finished_at=utc_now().isoformat(),
                              finding=healthy)
            if export:
                for path in export_run(run_dir):
                    _say(f"exported {display_path(path)}")
            return run_dir
    whole = len(done) == len(NOTEBOOKS)
    if not whole:  # final already: the postmortem of a subset says it is one
        update_run_status(run_dir, status="partial", current=None, finished_at=utc_now().isoformat())
    if export:
        for path in export_run(run_dir):
            _say(f"exported {display_path(path)}")
    if whole:  # complete only once the export is written too
        update_run_status(run_dir, status="complete", current=None, finished_at=utc_now().isoformat())
    return run_dir
