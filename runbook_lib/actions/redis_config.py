"""RedisConfigSet: ``CONFIG SET`` of cache-sizing parameters, prior values captured with ``CONFIG GET``.

All parameters go in one ``CONFIG SET name value [name value ...]`` (atomic since Redis 7.0).
Rollback sets the captured prior values back, exactly as ``CONFIG GET`` returned them.
Values are compared in Redis's canonical form (``256mb`` is ``268435456``), so a second apply
of the same change is recognised as already applied. Changes are runtime only unless ``rewrite: true``
is asked for: then ``CONFIG REWRITE`` follows the change (and the rollback), so the config file keeps
what runs. A server started without a config file cannot rewrite: that is refused before any change.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any

from pydantic import field_validator, model_validator

from runbook_lib.actions.action_errors import ActionInputError
from runbook_lib.actions.framework import (
    Action,
    ApplyResult,
    Inputs,
    Plan,
    RollbackResult,
    VerifyResult,
)
from runbook_lib.model import redis_config_action_id

# Redis memory units (redis.conf header): k=1000, kb=1024, m=10^6, mb=1024^2, g=10^9, gb=1024^3.
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
_MEMORY_RE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
# maxmemory-policy values accepted by Redis 7 (redis.conf "MAXMEMORY POLICY").
EVICTION_POLICIES = ("noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
                     "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")
# maxmemory-samples range enforced by Redis 7 config.c: 1..64.
SAMPLES_RANGE = (1, 64)


def memory_bytes(value: str) -> int:
    m = _MEMORY_RE.match(str(value))
    if not m or m.group(2).lower() not in _MEMORY_UNITS:
        raise ValueError(f"not a Redis memory size: {value!r} (e.g. 268435456, 256mb, 1gb)")
    return int(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()]


def _policy(value: str) -> str:
    v = str(value).strip().lower()
    if v not in EVICTION_POLICIES:
        raise ValueError(f"maxmemory-policy must be one of {', '.join(EVICTION_POLICIES)}")
    return v


def _samples(value: str) -> int:
    v = int(str(value).strip())
    if not SAMPLES_RANGE[0] <= v <= SAMPLES_RANGE[1]:
        raise ValueError(f"maxmemory-samples must be {SAMPLES_RANGE[0]}..{SAMPLES_RANGE[1]}")
    return v


# The parameters this action may change, each with its canonical form (for comparisons).
PARAMETERS: dict[str, Callable[[str], Any]] = {
    "maxmemory": memory_bytes,
    "maxmemory-policy": _policy,
    "maxmemory-samples": _samples,
}


def canonical(name: str, value: str | None) -> Any:
    return None if value is None else PARAMETERS[name](value)


class RedisConfigInputs(Inputs):
    config: dict[str, str]
    rewrite: bool = False  # CONFIG REWRITE after the change and after its rollback (only when asked)

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        """Also accept the flat form the impact plan uses: ``{maxmemory: 512mb, maxmemory-policy: ...}``."""
        if isinstance(data, dict) and "config" not in data:
            flat = dict(data)
            rewrite = flat.pop("rewrite", False)
            return {"config": flat, "rewrite": rewrite}
        return data

    @field_validator("config", mode="before")
    @classmethod
    def _known(cls, v: Any) -> Any:
        if not isinstance(v, dict) or not v:
            raise ValueError("config must map at least one parameter name to a value")
        out = {}
        for name in sorted(v):
            if name not in PARAMETERS:
                raise ValueError(f"parameter {name!r} is not one this action changes; "
                                 f"allowed: {', '.join(PARAMETERS)}")
            value = str(v[name]).strip()
            PARAMETERS[name](value)  # raises ValueError with the reason
            out[name] = value
        return out


class RedisConfigSet(Action):
    kind = "redis.config_set"
    family = "redis"
    Inputs = RedisConfigInputs
    effect_signal = "cache_hit_ratio"
    risk = "medium"  # lowering maxmemory or changing the policy evicts keys immediately

    inputs: RedisConfigInputs

    @property
    def names(self) -> list[str]:
        return list(self.inputs.config)

    @property
    def id(self) -> str:
        return redis_config_action_id(self.names)

    @property
    def title(self) -> str:
        return ("Set Redis " + ", ".join(f"{k}={v}" for k, v in self.inputs.config.items())
                + (" and rewrite the config file" if self.inputs.rewrite else ""))

    def to_record(self) -> dict[str, Any]:
        rec = super().to_record()
        if not self.inputs.rewrite:  # records of runtime-only changes look exactly as before rewrite existed
            rec["inputs"].pop("rewrite", None)
        return rec

    @property
    def target(self) -> str:
        return "redis server configuration (runtime" + (" and config file)" if self.inputs.rewrite else ")")

    @staticmethod
    def _set_argv(values: dict[str, str]) -> list[str]:
        argv = ["CONFIG", "SET"]
        for k, v in values.items():
            argv += [k, v]
        return argv

    @staticmethod
    def _render(argv: list[str]) -> str:
        return " ".join(shlex.quote(a) for a in argv)

    @property
    def _rewrite(self) -> list[str]:
        return ["CONFIG REWRITE"] if self.inputs.rewrite else []

    def plan(self) -> Plan:
        placeholder = {k: f"<prior {k}>" for k in self.names}
        return Plan(
            action_id=self.id, kind=self.kind, title=self.title, target=self.target,
            commands=[self._render(self._set_argv(self.inputs.config)), *self._rewrite],
            captures=[self._render(["CONFIG", "GET", *self.names])],
            rollback_commands=[" ".join(self._set_argv(placeholder)), *self._rewrite],
            reversible=self.reversible, risk=self.risk,
        )

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        return [self._render(self._set_argv({k: prior[k] for k in self.names})), *self._rewrite]

    def _check_config_file(self, client) -> None:
        """CONFIG REWRITE needs the file the server was started with; refuse before changing anything."""
        if self.inputs.rewrite and not client.info("server").get("config_file"):
            raise ActionInputError(f"{self.kind}: rewrite asked for, but the server was started without a "
                                   "config file, so CONFIG REWRITE cannot persist the change",
                                   hint="drop rewrite: true (runtime change only) or start Redis from a config file")

    # --- server side ------------------------------------------------------------------------

    def capture(self, targets) -> dict[str, Any]:
        client = targets.redis()
        self._check_config_file(client)  # before the applying line: a refused rewrite changes nothing
        return {k: client.config_get(k).get(k) for k in self.names}  # one name per call: works before Redis 7

    def _matches(self, state: dict[str, Any], wanted: dict[str, Any]) -> bool:
        return all(canonical(k, state.get(k)) == canonical(k, wanted[k]) for k in self.names)

    def is_applied(self, state: dict[str, Any]) -> bool:
        return self._matches(state, self.inputs.config)

    def apply(self, targets) -> ApplyResult:
        client = targets.redis()
        if self.is_applied(self.capture(targets)):
            if self.inputs.rewrite:
                client.execute_command("CONFIG", "REWRITE")
                return ApplyResult(False, "already applied at runtime; CONFIG REWRITE persisted it",
                                   ["CONFIG REWRITE"])
            return ApplyResult(False, "already applied")
        argv = self._set_argv(self.inputs.config)
        client.execute_command(*argv)
        if self.inputs.rewrite:
            client.execute_command("CONFIG", "REWRITE")
        return ApplyResult(True, "set " + ", ".join(f"{k}={v}" for k, v in self.inputs.config.items())
                           + (" and rewrote the config file" if self.inputs.rewrite else ""),
                           [self._render(argv), *self._rewrite])

    def verify(self, targets) -> VerifyResult:
        state = self.capture(targets)
        if self.is_applied(state):
            return VerifyResult(True, "CONFIG GET shows the new values", state)
        return VerifyResult(False, f"CONFIG GET shows {state}, not {self.inputs.config}", state)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        if self._matches(self.capture(targets), prior):
            return RollbackResult(False, "nothing to undo: the prior values are in place")
        argv = self._set_argv({k: prior[k] for k in self.names})
        client = targets.redis()
        client.execute_command(*argv)
        if self.inputs.rewrite:
            client.execute_command("CONFIG", "REWRITE")
        return RollbackResult(True, "restored " + ", ".join(f"{k}={prior[k]}" for k in self.names)
                              + (" and rewrote the config file" if self.inputs.rewrite else ""),
                              [self._render(argv), *self._rewrite])
