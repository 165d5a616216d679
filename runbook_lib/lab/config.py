"""The lab backend's knobs and the file they live in (the lab's ConfigMap).

``<state>/config.json`` holds one JSON object with the fields of ``LabConfig``. The backend polls its
mtime (``POLL_INTERVAL_S``) and applies a change without a restart: TTL, key scheme, query strategy and
pool timeout take effect on the next request, the pool is resized in place, replicas are started or
stopped by the supervisor. ``patch_config`` is what the runbook (or a human) uses, like
``kubectl patch configmap``. It writes atomically (temp file + rename), so a reader never sees half a file.

The two presets are the seed incident (fixtures/d2-latency, deploy api v2.14.0) and its healthy baseline.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import LabConfigError

CONFIG_FILE = "config.json"
EVENTS_FILE = "events.jsonl"  # next to config.json: profile switches and patches, for the recorder
# How often replicas look at the config file's mtime: a patch is live within half a second.
POLL_INTERVAL_S = 0.5

KEY_SCHEMES = ("volatile", "normalized")
ORDERS_QUERIES = ("n_plus_one", "join")
# Bounds that keep a typo from taking the machine down (2 cores): more replicas or connections than
# this only adds contention.
MAX_REPLICAS = 8
MAX_POOL = 100


@dataclass(frozen=True)
class LabConfig:
    """Backend knobs. Defaults are the healthy baseline."""

    cache_ttl_s: float = 300.0           # the fix in the seed incident: TTL 300 s
    cache_key_scheme: str = "normalized"  # "volatile": the key carries the request timestamp
    db_pool_max: int = 10
    db_pool_timeout_s: float = 5.0       # how long a request waits for a pool connection, then 503
    orders_query: str = "join"           # "n_plus_one": one orders query per listed user
    replicas: int = 1                    # uvicorn processes sharing the API socket

    def validate(self) -> LabConfig:
        problems = []
        if self.cache_ttl_s <= 0:
            problems.append("cache_ttl_s must be > 0")
        if self.cache_key_scheme not in KEY_SCHEMES:
            problems.append(f"cache_key_scheme must be one of {KEY_SCHEMES}")
        if not 1 <= self.db_pool_max <= MAX_POOL:
            problems.append(f"db_pool_max must be in 1..{MAX_POOL}")
        if self.db_pool_timeout_s <= 0:
            problems.append("db_pool_timeout_s must be > 0")
        if self.orders_query not in ORDERS_QUERIES:
            problems.append(f"orders_query must be one of {ORDERS_QUERIES}")
        if not 1 <= self.replicas <= MAX_REPLICAS:
            problems.append(f"replicas must be in 1..{MAX_REPLICAS}")
        if problems:
            raise LabConfigError("invalid lab config: " + "; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(LabConfig)}[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise LabConfigError(f"{name}={value!r} is not a valid {kind}") from None


def from_dict(data: dict[str, Any]) -> LabConfig:
    known = {f.name for f in fields(LabConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LabConfigError(f"unknown lab config key(s): {', '.join(unknown)}")
    return LabConfig(**{k: _coerce(k, v) for k, v in data.items()}).validate()


def read_config(path: str | Path) -> LabConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabConfigError(f"lab config {path} does not exist", hint="start the lab: runbook lab up") from None
    except json.JSONDecodeError as e:
        raise LabConfigError(f"lab config {path} is not valid JSON: {e.msg} (line {e.lineno})") from None
    if not isinstance(data, dict):
        raise LabConfigError(f"lab config {path} must hold a JSON object")
    return from_dict(data)


def write_config(path: str | Path, cfg: LabConfig) -> None:
    path = Path(path)
    cfg.validate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cfg.as_dict(), indent=2) + "\n")
    tmp.replace(path)


def patch_config(path: str | Path, **changes: Any) -> LabConfig:
    """Change some knobs, keep the others (``kubectl patch`` for the lab). Returns the new config."""
    current = read_config(path)
    known = {f.name for f in fields(LabConfig)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise LabConfigError(f"unknown lab config key(s): {', '.join(unknown)}")
    new = replace(current, **{k: _coerce(k, v) for k, v in changes.items()}).validate()
    write_config(path, new)
    append_event(Path(path).parent, "config patch: " + " ".join(f"{k}={v}" for k, v in sorted(changes.items())),
                 "remediation")
    return new


def append_event(folder: str | Path, label: str, kind: str = "note") -> None:
    """Add an event (deploy | alert | remediation | note) to the lab's log; the recorder reads it."""
    line = json.dumps({"time": datetime.now(UTC).isoformat(timespec="seconds"), "label": label, "kind": kind})
    with open(Path(folder) / EVENTS_FILE, "a") as f:
        f.write(line + "\n")


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
