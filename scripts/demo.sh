#!/usr/bin/env bash
# Quick start, part 1: set everything up, run the whole runbook on the bundled fixture incident,
# export the postmortem. Prints the run folder at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/runbook run -p parameters/fixtures.yaml "$@"
