"""The run folder tells the truth: partial, interrupted, abandoned runs say so, resumed runs keep their history,
a folder is written by one run at a time, and --out never overwrites someone else's files."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib.cli import main
from runbook_lib.lab.servers import wait_until
from runbook_lib.run_folder import RUN_FILE, run_status
from runbook_lib.suite.runner import LOCK_FILE

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "parameters" / "fixtures.yaml"
RUNBOOK = str(Path(sys.executable).with_name("runbook"))
WAIT_S = 120


def _status(run_dir: Path) -> dict:
    f = run_dir / RUN_FILE
    return json.loads(f.read_text()) if f.exists() else {}


def test_out_refuses_a_folder_that_is_not_a_run_folder(tmp_path, capsys):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "parameters.yaml").write_text("my own file\n")
    assert main(["run", "-p", str(PARAMS), "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "is not empty and is not a run folder" in err and err.count("\n") == 2  # error: + hint:
    assert (mine / "parameters.yaml").read_text() == "my own file\n" and not (mine / RUN_FILE).exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["run", "-p", str(PARAMS), "--out", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_folder_being_written_is_locked(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds it
        assert main(["run", "-p", str(PARAMS), "--out", str(out), "--only", "01"]) == 2
    assert "is being written by another run" in capsys.readouterr().err
    assert not (out / RUN_FILE).exists()


def test_only_a_subset_is_partial_and_a_resumed_run_keeps_its_history(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "-p", str(PARAMS), "--out", str(out), "--only", "01"]) == 0
    first = _status(out)
    assert first["status"] == "partial" and first["requested"] == ["01_symptom_correlation"]
    assert "INCOMPLETE RECORD: run partial after 1 of 5 notebooks" in (out / "postmortem.md").read_text()
    assert main(["run", "-p", str(PARAMS), "--out", str(out), "--only", "02", "03", "04", "05"]) == 0
    second = _status(out)
    assert second["status"] == "partial" and len(second["notebooks"]) == 4
    assert [a["status"] for a in second["attempts"]] == ["partial"]
    assert second["attempts"][0]["notebooks"][0]["notebook"] == "01_symptom_correlation"
    assert "INCOMPLETE" not in (out / "postmortem.md").read_text()  # the folder now holds all five


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([RUNBOOK, "run", "-p", str(PARAMS), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=30)


@pytest.mark.parametrize("sig, group", [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["kill-INT", "ctrl-C", "kill-TERM"])
def test_a_signal_marks_the_run_interrupted_with_notebook_and_cell(tmp_path, sig, group):
    out = tmp_path / "run"
    proc = _start(out)
    try:
        wait_until(lambda: _status(out).get("current") == "02_root_cause", WAIT_S, "the run to reach 02")
        if group:  # Ctrl-C at a terminal: the whole process group, the kernel too
            os.killpg(proc.pid, sig)
        else:  # `kill -INT PID` / a supervisor's stop: the runbook process only
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        _stop_group(proc)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "error: interrupted", err
    assert "Traceback" not in err and "Kernel died" not in err, err
    st = _status(out)
    assert st["status"] == "interrupted" and st["interruption"]["signal"] == sig.name
    assert st["interruption"]["notebook"] == "02_root_cause" and st["interruption"]["cell"]
    assert [n["notebook"] for n in st["notebooks"]] == ["01_symptom_correlation"]
    assert main(["export", str(out)]) == 0
    assert "INCOMPLETE RECORD: run interrupted in 02_root_cause after 1 of 5" in (out / "postmortem.md").read_text()


def test_a_killed_run_is_reported_abandoned_by_the_next_reader(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    try:
        wait_until(lambda: _status(out).get("current") == "02_root_cause", WAIT_S, "the run to reach 02")
    finally:
        _stop_group(proc)  # SIGKILL: nothing in the run gets to write run.json
    assert _status(out)["status"] == "running"
    assert run_status(out)["status"] == "abandoned"
    st = _status(out)
    assert st["status"] == "abandoned" and "is gone" in st["failure"]["error"]
    assert main(["export", str(out)]) == 0
    assert "INCOMPLETE RECORD: run abandoned in 02_root_cause" in (out / "postmortem.md").read_text()
