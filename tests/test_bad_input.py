"""Any mutation of the bundled parameters or bundle ends, at the command line, in exit 0 or in one `error:` line
plus a `hint:` (exit 2): never a traceback, never the last-resort "bug" hint, and never a run folder for input
that `runbook check` refuses (property-based, hypothesis)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_lib.cli import main

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "fixtures" / "d2-synthetic"
EXAMPLES = 60


def _ends_cleanly(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err and "this is a bug in runbook" not in err, err
    if code == 2:
        lines = err.strip().splitlines()
        assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: ") or \
            (len(lines) == 1 and lines[0].startswith("error: ")), err


def _check_then_run(capsys, params: Path, out: Path) -> None:
    code = main(["check", "-p", str(params)])
    _ends_cleanly(code, capsys.readouterr().err)
    if code == 2:  # refused by check: run refuses it the same way, before any folder exists
        assert main(["run", "-p", str(params), "--out", str(out)]) == 2
        _ends_cleanly(2, capsys.readouterr().err)
        assert not out.exists()


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle") / "b"
    shutil.copytree(BUNDLE, d)
    return d


def _params_text(bundle: Path) -> str:
    return (f"incident: {{id: prop, title: property test}}\nmode: fixture\n"
            f"source: {{kind: fixture, bundle: '{bundle}'}}\n")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_parameters_end_cleanly(tmp_path, capsys, data):
    text = (ROOT / "parameters" / "fixtures.yaml").read_bytes()
    how = data.draw(st.sampled_from(["bytes", "value", "section"]))
    if how == "bytes":  # flip, drop or insert bytes anywhere (encodings, YAML syntax, nesting)
        i = data.draw(st.integers(0, len(text) - 1))
        text = text[:i] + data.draw(st.binary(max_size=8)) + text[i + data.draw(st.integers(0, 8)):]
    else:
        import yaml

        doc = yaml.safe_load(text)
        leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
        value = data.draw(st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                                    max_size=3),
                                       max_leaves=6))
        if how == "value":
            section = data.draw(st.sampled_from(sorted(doc)))
            if isinstance(doc[section], dict) and doc[section]:
                doc[section][data.draw(st.sampled_from(sorted(doc[section])))] = value
            else:
                doc[section] = value
        else:
            doc[data.draw(st.sampled_from(["window", "slo", "signals", "remediation", "app", "postgres"]))] = value
        text = yaml.safe_dump(doc).encode()
    p = tmp_path / "p.yaml"
    p.write_bytes(text)
    _check_then_run(capsys, p, tmp_path / "out")
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bundles_end_cleanly(tmp_path, capsys, bundle_copy, data):
    files = sorted(p for p in bundle_copy.rglob("*") if p.is_file())
    target = data.draw(st.sampled_from(files))
    original = target.read_bytes()
    try:
        how = data.draw(st.sampled_from(["truncate", "bytes", "cell", "empty", "delete"]))
        if how == "truncate":
            target.write_bytes(original[: data.draw(st.integers(0, len(original)))])
        elif how == "bytes":
            i = data.draw(st.integers(0, max(len(original) - 1, 0)))
            target.write_bytes(original[:i] + data.draw(st.binary(min_size=1, max_size=8)) + original[i + 1:])
        elif how == "cell" and target.suffix == ".csv":
            lines = original.decode().splitlines()
            row = data.draw(st.integers(0, len(lines) - 1))
            cells = lines[row].split(",")
            cells[data.draw(st.integers(0, len(cells) - 1))] = data.draw(st.sampled_from(["x", "", "nan", "1e999",
                                                                                        "2026-13-45", "-", '"']))
            lines[row] = ",".join(cells)
            target.write_text("\n".join(lines) + "\n")
        elif how == "empty":
            target.write_bytes(b"")
        else:
            target.unlink()
        p = tmp_path / "p.yaml"
        p.write_text(_params_text(bundle_copy))
        _check_then_run(capsys, p, tmp_path / "out")
    finally:
        target.write_bytes(original)
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
