"""A thin runner for ``promtool`` (Prometheus' rule checker and unit tester).

``check_rules(path)`` runs ``promtool check rules`` (syntax, PromQL, templates, duplicate names);
``test_rules(test_file)`` runs ``promtool test rules`` (the unit tests of
prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/: input series, then the alerts expected
at given times). Each returns promtool's output on success and raises ``PromtoolError`` -- one line of cause,
promtool's whole message in ``.output`` -- when it fails, is missing or hangs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from runbook_lib.errors import RunbookError

# promtool checks a rules file in ~0.1 s and runs a day of 1-minute samples in a few seconds; a minute is a
# hang (or a test file asking for weeks of series), not a slow machine.
DEFAULT_TIMEOUT_S = 60.0
INSTALL_HINT = "install Prometheus' promtool (Debian: apt-get install prometheus) or pass its path"
# The longest cause line kept in str(error); the whole output stays in .output.
MAX_CAUSE_CHARS = 300


class PromtoolError(RunbookError):
    """promtool is missing, timed out or rejected the rules / a unit test. ``output``: what it printed."""

    hint = "read the error's output (promtool's message): it names the rule, the alert and the time"

    def __init__(self, message: str, hint: str | None = None, output: str = "", returncode: int | None = None):
        super().__init__(message, hint)
        self.output = output
        self.returncode = returncode


def find_promtool(promtool: str | None = None) -> str:
    """The promtool executable: ``promtool`` as given (a path or a name on PATH), else ``promtool`` on PATH."""
    found = shutil.which(promtool or "promtool")
    if not found:
        raise PromtoolError(f"promtool not found ({promtool or 'promtool'} is not an executable on PATH)",
                            hint=INSTALL_HINT)
    return found


def version(promtool: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """promtool's version line, e.g. ``promtool, version 2.42.0+ds (...)``."""
    return _run(["--version"], promtool, timeout, "promtool --version").splitlines()[0].strip()


def check_rules(path: str | Path, promtool: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """``promtool check rules path``: promtool's report (``SUCCESS: N rules found``) or PromtoolError."""
    path = _existing(path, "rules file")
    return _run(["check", "rules", str(path)], promtool, timeout, f"promtool check rules {path.name}")


def test_rules(test_file: str | Path, promtool: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """``promtool test rules test_file`` (run in the test file's folder, which its ``rule_files`` are relative
    to): promtool's report (``SUCCESS``) or PromtoolError naming the first failing case."""
    test_file = _existing(test_file, "rule test file")
    return _run(["test", "rules", test_file.name], promtool, timeout, f"promtool test rules {test_file.name}",
                cwd=test_file.parent)


# pytest would collect a module-level function named test_*: tell it this one is not a test.
test_rules.__test__ = False  # type: ignore[attr-defined]


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path).resolve()
    if not p.is_file():
        raise PromtoolError(f"{what} {path} does not exist", hint="write it first (alert_rules.write_rules)")
    return p


def _run(args: list[str], promtool: str | None, timeout: float, what: str, cwd: Path | None = None) -> str:
    exe = find_promtool(promtool)
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as e:
        out = _text(e.stdout) + _text(e.stderr)
        raise PromtoolError(f"{what} did not finish in {timeout:g} s", output=out,
                            hint="a test file with very long input series is slow: shorten them, or raise "
                                 "the timeout") from None
    except OSError as e:
        raise PromtoolError(f"{what}: cannot run {exe}: {e.strerror}", hint=INSTALL_HINT) from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise PromtoolError(f"{what} failed (exit {proc.returncode}): {cause(output)}", output=output,
                            returncode=proc.returncode)
    return output


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")


def cause(output: str) -> str:
    """What failed, on one line: the line after ``FAILED:`` (check rules: file, rule and parse error), joined
    with the next one when it is a unit test's case name (test rules: case, alert name, evaluation time)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    at = next((i + 1 for i, ln in enumerate(lines[:-1]) if ln.endswith("FAILED:")), None)
    if at is not None:
        line = lines[at]
        if line.startswith("name:") and at + 1 < len(lines):
            line = f"{line} {lines[at + 1]}"
    else:
        line = next((ln for ln in lines if "error" in ln.lower() or "fail" in ln.lower()),
                    lines[-1] if lines else "no output")
    line = line.rstrip(", ")
    return line if len(line) <= MAX_CAUSE_CHARS else line[: MAX_CAUSE_CHARS - 3] + "..."
