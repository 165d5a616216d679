#!/usr/bin/env bash
# Idempotent setup: Debian packages the lab and tests need, then a venv in .venv with the project.
# Safe to run again: it only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(postgresql-15 postgresql-contrib postgresql-15-hypopg redis-server prometheus chromium poppler-utils prometheus-alertmanager)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
fi
# prometheus-alertmanager's package may enable a system service on :9093/:9094; the tests start their own
if command -v systemctl >/dev/null && systemctl is-enabled prometheus-alertmanager >/dev/null 2>&1; then
  systemctl disable --now prometheus-alertmanager >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
# Reinstall only when the dependency list changed.
stamp=.venv/.runbook-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: installing Python dependencies into .venv (about a minute the first time)" >&2
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" >&2 || true
  .venv/bin/python -c "import runbook_lib, papermill, nbval" >/dev/null
  echo "$want" > "$stamp"
fi
