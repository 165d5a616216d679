"""A credential injected with ``papermill -y/-p`` reaches no file: not the injected cell, not the metadata."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib.suite.scrubbed_io import scrub_notebook

ROOT = Path(__file__).resolve().parents[2]
SECRET = "S3cretInjected42"


def papermill_cli(*args, cwd):
    return subprocess.run([str(Path(sys.executable).with_name("papermill")), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.mark.parametrize("how", ["url-user-info", "url-query", "password-key"])
def test_an_injected_secret_is_in_no_file_of_a_refused_run(tmp_path, how):
    injected = {
        "url-user-info": {"redis": {"url": f"redis://:{SECRET}@127.0.0.1:1/0"}},
        "url-query": {"postgres": {"dsn": f"postgresql://u@127.0.0.1:1/db?password={SECRET}"}},
        "password-key": {"postgres": {"dsn": "postgresql://u@127.0.0.1:1/db", "password": SECRET}},
    }[how]
    out = tmp_path / "out.ipynb"  # relative to cwd, as a user types it
    r = papermill_cli(str(ROOT / "notebooks" / "01_symptom_correlation.ipynb"), "out.ipynb",
                      "-p", "parameters_file", str(ROOT / "parameters" / "fixtures.yaml"),
                      "-p", "run_dir", str(tmp_path / "run"), "-y", json.dumps(injected), cwd=tmp_path)
    if how != "password-key":  # a plain password key is a legitimate way to give one (the notebook may refuse it
        assert r.returncode != 0, r.stderr[-2000:]  # for another reason); a credential in a URL is always refused
    assert out.exists()
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(errors="replace"), f
    nb = json.loads(out.read_text())
    assert "***" in json.dumps(nb["metadata"]["papermill"]["parameters"])
    injected_cell = next(c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert "***" in "".join(injected_cell["source"])


def test_a_notebook_without_credentials_is_left_alone():
    nb = {"metadata": {"papermill": {"parameters": {"run_dir": "/tmp/x", "token_budget": 3}}}, "cells": []}
    assert scrub_notebook(nb) is False
    assert nb["metadata"]["papermill"]["parameters"] == {"run_dir": "/tmp/x", "token_budget": 3}
