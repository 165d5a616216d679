"""The lab backend's knobs and the file they live in (the lab's ConfigMap).

``<state>/config.json`` holds one JSON object with the fields of ``LabConfig``. The backend polls its
mtime (``POLL_INTERVAL_S``) and applies a change without a restart: TTL, key scheme, query strategy and
pool timeout take effect on the next request, the pool is resized in place, replicas are started or
stopped by the supervisor. ``patch_config`` is what the runbook (or a human) uses, like
``kubectl patch configmap``. It writes atomically (temp file + rename), so a reader never sees half a file.

The two presets are the seed incident (fixtures/d2-latency, deploy api v2.14.0) and its healthy baseline.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runbook_lib.actions.app_config import change_label, patch_app_config, write_app_config
from runbook_lib.errors import AppConfigError
from runbook_lib.lab.lab_errors import LabConfigError
from runbook_lib.model import AppKnobs
from runbook_lib.sources.app_config_file import knobs_from_dict, read_app_config
from runbook_lib.sources.events import append_event as append_event_line

CONFIG_FILE = "config.json"
EVENTS_FILE = "events.jsonl"  # next to config.json: profile switches and patches, for the recorder
# How often replicas look at the config file's mtime: a patch is live within half a second.
POLL_INTERVAL_S = 0.5

# The backend's knobs are the product's app knobs (``runbook_lib.model.AppKnobs``): the lab is one app the
# runbook repairs, and its config file follows the product's app-config-file interface.
LabConfig = AppKnobs


HEALTHY = LabConfig()
# The seed incident's root causes (fixtures/d2-latency): a 5 s TTL and keys with the request timestamp,
# N+1 order loading, and a pool that is small with a short acquire timeout on this 2-core machine.
DEGRADED = LabConfig(cache_ttl_s=5.0, cache_key_scheme="volatile", db_pool_max=4, db_pool_timeout_s=0.25,
                     orders_query="n_plus_one", replicas=1)

# Redis maxmemory per profile (not a backend knob: the runbook fixes it with CONFIG SET).
# Degraded: 2 MB, far below the working set (tens of MB of JSON pages); the seed's fix: 512 MB.
REDIS_MAXMEMORY = {"degraded": "2mb", "healthy": "512mb"}
REDIS_POLICY = "allkeys-lru"
PROFILES = {"degraded": DEGRADED, "healthy": HEALTHY}


@contextmanager
def _as_lab_error():
    """The product's app-config errors, reported as the lab's (LabConfigError, "lab config ...")."""
    try:
        yield
    except AppConfigError as e:
        raise LabConfigError(str(e).replace("app config", "lab config"), hint=e.hint) from None


def from_dict(data: dict[str, Any]) -> LabConfig:
    with _as_lab_error():
        return knobs_from_dict(data)


def read_config(path: str | Path) -> LabConfig:
    if not Path(path).exists():
        raise LabConfigError(f"lab config {path} does not exist", hint="start the lab: runbook lab up")
    with _as_lab_error():
        return read_app_config(path)


def write_config(path: str | Path, cfg: LabConfig) -> None:
    problems = cfg.problems()
    if problems:
        raise LabConfigError("invalid lab config: " + "; ".join(problems))
    write_app_config(path, cfg)


def patch_config(path: str | Path, **changes: Any) -> LabConfig:
    """Change some knobs, keep the others (``kubectl patch`` for the lab). Returns the new config."""
    with _as_lab_error():
        new = patch_app_config(path, changes)
    append_event(Path(path).parent, change_label(changes), "remediation")
    return new


def append_event(folder: str | Path, label: str, kind: str = "note") -> None:
    """Add an event (deploy | alert | remediation | note) to the lab's log; the recorder reads it."""
    append_event_line(Path(folder) / EVENTS_FILE, label, kind)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["cache_ttl_s=300", "replicas=2"]`` -> dict, for the CLI."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LabConfigError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


class ConfigWatcher:
    """Re-reads the config file when its mtime changes; keeps the last good config on a bad edit."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._mtime: int | None = None
        self.config = read_config(self.path)
        self._mtime = self._stat()
        self.last_error: str | None = None

    def _stat(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def poll(self) -> bool:
        """True when a new, valid config was loaded."""
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            new = read_config(self.path)
        except LabConfigError as e:
            self.last_error = str(e)
            return False
        self.last_error = None
        changed = new != self.config
        self.config = new
        return changed
