"""What a notebook kernel and `runbook run` import at start stays cheap (issue 16: suite speed)."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_plotly_and_nbformat_do_not_pull_in_the_iri_grammars():
    # what the first cell of every notebook does (the figures' renderer needs nbformat), then a notebook
    # validated and a schema checked: the iri grammars (rfc3987_syntax, lark) are never compiled
    out = _run("import runbook_lib.steps.context, plotly.io as pio, nbformat, jsonschema, sys; "
               "pio.renderers.default = 'plotly_mimetype'; "
               "nbformat.validate(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')])); "
               "jsonschema.validate({'a': 1}, {'type': 'object', 'properties': {'a': {'type': 'integer'}}}); "
               "print(sorted(m for m in ('rfc3987_syntax', 'lark') if sys.modules.get(m) is not None))")
    assert out == "[]"


def test_an_earlier_import_of_rfc3987_syntax_is_left_alone():
    out = _run("import rfc3987_syntax, runbook_lib, sys; print(sys.modules['rfc3987_syntax'] is not None)")
    assert out == "True"


def test_notebook_04_does_not_load_scipy_stats_to_start():
    # 04 imports the verify loop (actions.execution) in every mode; scipy.stats (~0.8 s) only when measuring
    out = _run("import runbook_lib.steps.remediation, runbook_lib.actions.execution, sys; "
               "from runbook_lib.actions.effect_verdict import wilson; lo, hi = wilson(90, 100); "
               "print(round(lo, 4), round(hi, 4), 'scipy.stats' in sys.modules)")
    assert out == "0.8256 0.9448 True"  # measuring loads it
    out = _run("import runbook_lib.steps.remediation, runbook_lib.actions.execution, sys; "
               "print('scipy.stats' in sys.modules)")
    assert out == "False"
