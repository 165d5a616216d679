"""Regenerate the golden notebooks: execute ``notebooks/*.ipynb`` in place on the fixture bundle.

nbval compares a fresh execution of each notebook with the outputs stored in it, so any change to
the analysis that alters a number fails the tests until the notebooks are regenerated::

    .venv/bin/python -m runbook_lib.suite.golden

Runs in order (each notebook reads what the one before wrote) in a scratch run folder, without
timing metadata, so regenerating twice gives identical files.
"""

from __future__ import annotations

import os
import sys
import tempfile

import nbformat
from nbclient import NotebookClient

from runbook_lib.settings import project_root
from runbook_lib.suite.runner import KERNEL_ARGUMENTS, NOTEBOOKS, notebooks_dir

CELL_TIMEOUT_S = 600


def regenerate(names=NOTEBOOKS) -> None:
    with tempfile.TemporaryDirectory(prefix="runbook-golden-") as scratch:
        os.environ["RUNBOOK_RUN_DIR"] = scratch
        for name in names:
            path = notebooks_dir() / f"{name}.ipynb"
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", record_timing=False,
                                    extra_arguments=KERNEL_ARGUMENTS,
                                    resources={"metadata": {"path": str(notebooks_dir())}})
            client.execute()
            nbformat.write(nb, path)
            print(f"regenerated {path.relative_to(project_root())}", file=sys.stderr)


if __name__ == "__main__":
    regenerate([n for n in NOTEBOOKS if len(sys.argv) < 2 or any(n.startswith(a) for a in sys.argv[1:])])
