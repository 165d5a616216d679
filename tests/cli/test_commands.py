"""`runbook run` / `runbook export` end to end, and how bad input ends: one line, non-zero, no false 'complete'."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from runbook_lib.cli.commands import main

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "fixtures" / "d2-latency"


def params(tmp_path, bundle=BUNDLE, extra=""):
    f = tmp_path / "params.yaml"
    f.write_text(f"incident: {{id: t-cli, title: cli test}}\nsource: {{kind: fixture, bundle: '{bundle}'}}\n{extra}")
    return f


def run_cli(*args):
    """The installed console script, as a user runs it."""
    return subprocess.run([str(Path(sys.executable).with_name("runbook")), *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("text, culprit", [
    ("incident: {id: t, title: t}\nsource: {kind: fixture, bundle: x}\nslo: [", "params.yaml:"),
    ("incident: {id: t, title: t}\nsource: {kind: fixture, bundle: x}\nslo: {error_ratio: lots}\n",
     "slo.error_ratio"),
    ("incident: {id: t, title: t}\nsource: {kind: fixture, bundle: x}\nsignals: [latency_p95_ms, p42]\n",
     "unknown signal 'p42'"),
])
def test_bad_parameters_fail_before_any_run_folder(tmp_path, capsys, text, culprit):
    f = tmp_path / "params.yaml"
    f.write_text(text)
    out = tmp_path / "run"
    assert main(["run", "-p", str(f), "--out", str(out)]) == 2
    err = error_line(capsys.readouterr().err)
    assert culprit in err and "params.yaml" in err
    assert not out.exists()


def test_missing_fixture_file_is_named(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    (bundle / "snapshots" / "pg_indexes.csv").unlink()
    out = tmp_path / "run"
    assert main(["run", "-p", str(params(tmp_path, bundle)), "--out", str(out)]) == 2
    assert "snapshots/pg_indexes.csv is missing" in error_line(capsys.readouterr().err)
    assert not out.exists()


def test_signal_missing_from_the_bundle_is_named(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    pd.read_csv(bundle / "signals.csv").drop(columns=["memory_utilization"]).to_csv(bundle / "signals.csv",
                                                                                     index=False)
    assert main(["run", "-p", str(params(tmp_path, bundle)), "--out", str(tmp_path / "run")]) == 2
    err = error_line(capsys.readouterr().err)
    assert "'memory_utilization' is not provided by fixture bundle" in err and "field signals" in err


def test_a_failing_notebook_is_named_with_its_cell_and_the_run_is_not_complete(tmp_path):
    bundle = tmp_path / "flat"
    shutil.copytree(BUNDLE, bundle)
    df = pd.read_csv(bundle / "signals.csv")
    df["latency_p95_ms"] = 400.0  # one level, above the 100 ms SLO all along: no baseline to compare with
    df.to_csv(bundle / "signals.csv", index=False)
    out = tmp_path / "run"
    r = run_cli("run", "-p", str(params(tmp_path, bundle)), "--out", str(out))
    assert r.returncode == 2
    err = error_line(r.stderr)
    assert "01_symptom_correlation.ipynb failed in cell 'detect-window'" in err and "NoLevelChange" in err
    assert "hint: widen the window" in r.stderr  # the notebook's own error says what to do
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "failed" and status["failure"]["notebook"] == "01_symptom_correlation"
    assert not (out / "02_root_cause.ipynb").exists()


def test_full_run_on_the_fixture_then_export(tmp_path, monkeypatch):
    # the shipped fixture parameters plus database/cache sections whose passwords are planted secrets
    planted = "planted-Zz9-secret"
    monkeypatch.setenv("RUNBOOK_SECRET_PLANTED", planted)
    p = tmp_path / "fixtures-plus-secrets.yaml"
    p.write_text((ROOT / "parameters" / "fixtures.yaml").read_text().replace("bundle: fixtures/", f"bundle: {ROOT}/fixtures/")
                 + "postgres: {dsn: 'host=127.0.0.1 dbname=app user=app', password: {env: RUNBOOK_SECRET_PLANTED}}\n"
                 + "redis: {url: 'redis://127.0.0.1:6379/0', password: {env: RUNBOOK_SECRET_PLANTED}}\n")
    out = tmp_path / "run"
    r = subprocess.run([str(Path(sys.executable).with_name("runbook")), "run", "-p", str(p), "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "complete" and len(status["notebooks"]) == 5
    for name in ("symptoms.json", "findings.json", "plan.json", "remediation.json", "validation.json",
                 "postmortem.md", "postmortem.html", "audit.jsonl", "parameters.yaml"):
        assert (out / name).exists(), name
    assert [n["notebook"][:2] for n in status["notebooks"]] == ["01", "02", "03", "04", "05"]
    audit = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert audit and {a["step"] for a in audit} == {"planned"}  # dry run: planned only
    md = (out / "postmortem.md").read_text()
    assert "## Root cause" in md and "Validation: pass" in md and "every SLO is met" in md
    html = (out / "postmortem.html").read_text()
    assert html.count("<div id=\"fig-") >= 3
    # export again by hand: same content
    before = md
    r2 = run_cli("export", str(out))
    assert r2.returncode == 0 and (out / "postmortem.md").read_text() == before
    # the planted secret is nowhere: not in any file of the run folder, not in the command's output
    for f in out.rglob("*"):
        if f.is_file():
            assert planted not in f.read_text(errors="replace"), f.name
    assert planted not in r.stdout + r.stderr


def test_export_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "symptoms.json is missing" in error_line(capsys.readouterr().err)


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("run", "export", "check", "signals", "rollback"):
        assert cmd in out


def test_check_and_signals(capsys):
    assert main(["check", "-p", str(ROOT / "parameters" / "fixtures.yaml")]) == 0
    assert "ok: d2-latency (fixture mode)" in capsys.readouterr().out
    assert main(["signals"]) == 0
    assert "latency_p95_ms" in capsys.readouterr().out


def test_plain_papermill_with_the_parameters_file(tmp_path):
    """The README's `papermill ... -f parameters/fixtures.yaml` works from any directory."""
    env = dict(__import__("os").environ, RUNBOOK_RUN_DIR=str(tmp_path / "run"))
    r = subprocess.run([str(Path(sys.executable).with_name("papermill")), str(ROOT / "notebooks/01_symptom_correlation.ipynb"),
                        str(tmp_path / "out.ipynb"), "-f", str(ROOT / "parameters/fixtures.yaml"), "--no-progress-bar"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    symptoms = json.loads((tmp_path / "run" / "symptoms.json").read_text())
    assert symptoms["window"]["ratio"] >= 10 and symptoms["window"]["recovery"] is not None


def test_check_reaches_the_evidence_servers_in_lab_and_live_mode(tmp_path, capsys):
    base = (f"incident: {{id: t, title: t}}\nsource: {{kind: fixture, bundle: '{BUNDLE}'}}\n"
            "postgres: {dsn: 'host=127.0.0.1 port=1 dbname=app user=app'}\n")
    p = tmp_path / "p.yaml"
    p.write_text(base + "mode: lab\n")
    assert main(["check", "-p", str(p)]) == 2
    assert error_line(capsys.readouterr().err).startswith("error: cannot connect to postgres://127.0.0.1:1/app")
    p.write_text(base.replace("postgres: {dsn: 'host=127.0.0.1 port=1 dbname=app user=app'}",
                              "redis: {url: 'redis://127.0.0.1:1/0'}") + "mode: lab\n")
    assert main(["check", "-p", str(p)]) == 2
    assert error_line(capsys.readouterr().err).startswith("error: cannot reach redis://127.0.0.1:1/0")
    p.write_text(base)  # fixture mode reads the bundle's snapshots: the servers are not contacted
    assert main(["check", "-p", str(p)]) == 0


def test_a_healthy_window_is_an_answer_with_its_own_exit_status(tmp_path):
    # the bundle after its recovery: p95 at one level (~2.2 ms), well within the 100 ms SLO
    p = params(tmp_path, extra="window: {start: '2026-12-08T03:08:00Z', end: '2026-12-08T03:22:30Z'}\n"
                               "slo: {latency_p95_ms: 100}\n")
    r = run_cli("run", "-p", str(p), "--out", str(tmp_path / "run"))
    assert r.returncode == 3, r.stderr[-2000:]
    assert "no incident: API latency p95 stayed at one level" in r.stderr and "Traceback" not in r.stderr
    run = tmp_path / "run"
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "healthy" and [n["notebook"] for n in state["notebooks"]] == ["01_symptom_correlation"]
    assert json.loads((run / "symptoms.json").read_text())["healthy"] is True
    assert not (run / "findings.json").exists() and not (run / "plan.json").exists()  # nothing diagnosed or planned
    post = (run / "postmortem.md").read_text()
    assert "No incident in this window" in post and "INCOMPLETE" not in post
    # the same p95 above its SLO all along is no baseline, not health: an error naming the fix
    p = params(tmp_path, extra="window: {start: '2026-12-08T03:08:00Z', end: '2026-12-08T03:22:30Z'}\n"
                               "slo: {latency_p95_ms: 1}\n")
    r = run_cli("run", "-p", str(p), "--out", str(tmp_path / "run2"))
    assert r.returncode == 2 and "no level change" in r.stderr and "hint: widen the window" in r.stderr
