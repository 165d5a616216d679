#!/usr/bin/env bash
# Quick start, part 2: set everything up and run every test: the library's tests (against real
# PostgreSQL, Redis, Prometheus and moto servers it starts itself) and nbval over the golden notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest "$@"
