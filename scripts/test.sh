#!/usr/bin/env bash
# Quick start, part 2: set everything up, check the import layering, and run every test: the library's tests (against real
# PostgreSQL, Redis, Prometheus and moto servers it starts itself) and nbval over the golden notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The layering contract (pyproject.toml [tool.importlinter]): stages import downwards only, nothing in the
# product imports the lab. Cheap (a second), so it runs first and stops a wrong import before the suite.
.venv/bin/lint-imports
exec .venv/bin/pytest "$@"
