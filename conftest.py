"""Root conftest: nbval kernels inherit RUNBOOK_RUN_DIR, so the golden notebooks run in a fresh folder."""

import os
import shutil
import tempfile


def pytest_configure(config):
    if not os.environ.get("RUNBOOK_RUN_DIR"):
        d = tempfile.mkdtemp(prefix="runbook-nbval-")
        os.environ["RUNBOOK_RUN_DIR"] = d
        config._runbook_nbval_dir = d


def pytest_unconfigure(config):
    d = getattr(config, "_runbook_nbval_dir", None)
    if d:
        shutil.rmtree(d, ignore_errors=True)
