"""The hand-over types: what one pipeline stage gives the next (and the run folder keeps).

Plain dataclasses with no I/O, imported by every stage above the ground floor:

* ``IncidentWindow``: baseline / incident / recovery spans of the primary signal (01 -> symptoms.json);
* ``Evidence`` and ``Hypothesis``: a root-cause hypothesis with its checks (02 -> findings.json);
* ``Snapshots``: the database and cache evidence reduced to deltas (sources -> diagnose -> plan);
* ``PlannedAction``: one ranked remediation of the plan (03 -> plan.json);
* ``Outcome``: what happened to one action in a run or a rollback (04 -> remediation.json, audit).

The SLO targets are ``settings.Slo``; ``Slo.targets()`` gives them by signal name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pandas as pd

# Confidence labels.
CONFIDENCE_LABELS = ((0.75, "high"), (0.45, "medium"), (0.0, "low"))


@dataclass
class Evidence:
    check: str
    observed: str
    supports: bool
    weight: float = 1.0


@dataclass
class Hypothesis:
    category: str  # cache | database | application | infrastructure
    title: str
    statement: str
    disprove_by: str
    evidence: list[Evidence] = field(default_factory=list)
    first_onset: str | None = None

    @property
    def confidence(self) -> float:
        total = sum(e.weight for e in self.evidence)
        return round(sum(e.weight for e in self.evidence if e.supports) / total, 3) if total else 0.0

    @property
    def confidence_label(self) -> str:
        return next(label for bar, label in CONFIDENCE_LABELS if self.confidence >= bar)

    @property
    def disproved(self) -> bool:
        return self.confidence < CONFIDENCE_LABELS[1][0]

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(confidence=self.confidence, confidence_label=self.confidence_label, disproved=self.disproved)
        return d


@dataclass
class Snapshots:
    """What the snapshots say, already reduced to deltas (any part may be missing)."""

    statements: pd.DataFrame | None = None  # statement_deltas + per_request
    tables: pd.DataFrame | None = None  # table_deltas
    indexes: pd.DataFrame | None = None
    activity: pd.DataFrame | None = None
    redis: dict | None = None  # info_deltas
    ttl: dict | None = None  # ttl_summary
    key_patterns: pd.DataFrame | None = None
    keys: pd.DataFrame | None = None  # the key sample itself (key, type, ttl_s, memory_bytes)
    app_config: dict | None = None
    cache_plan: dict | None = None  # plan.cache_sizing.recommend: TTL, maxmemory, policy with the reasoning
    cache_findings: list[dict] | None = None  # diagnose.cache_findings.judge: each check with its share of misses


@dataclass
class CacheSnapshot:
    """Everything one diagnosis reads: two INFO snapshots bounding the window, a key sample, and the
    app's counters over the same window (when given)."""

    endpoint: str
    info_start: dict[str, Any]
    info_end: dict[str, Any]
    keys: pd.DataFrame
    app: dict | None = None  # app_cache_deltas
    app_config: dict | None = None
    sample_seconds: float = 0.0
    seen_keys: list[str] = field(default_factory=list)  # every name seen during the window and in the sample
    gone_keys: list[str] = field(default_factory=list)  # names seen during the window, gone at its end
    new_keys: list[str] = field(default_factory=list)  # names first seen after the window's first SCAN pass
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class IncidentWindow:
    baseline: tuple[pd.Timestamp, pd.Timestamp]
    incident: tuple[pd.Timestamp, pd.Timestamp]
    recovery: tuple[pd.Timestamp, pd.Timestamp] | None
    baseline_level: float
    incident_level: float
    recovery_level: float | None
    signal: str

    @property
    def ratio(self) -> float:
        return self.incident_level / self.baseline_level

    def as_dict(self) -> dict:
        def span(s):
            return None if s is None else {"start": s[0].isoformat(), "end": s[1].isoformat()}

        return {"signal": self.signal, "baseline": span(self.baseline), "incident": span(self.incident),
                "recovery": span(self.recovery), "baseline_level": self.baseline_level,
                "incident_level": self.incident_level, "recovery_level": self.recovery_level,
                "ratio": self.ratio}

    @classmethod
    def from_dict(cls, d: dict) -> IncidentWindow:
        def span(s):
            return None if s is None else (pd.Timestamp(s["start"]), pd.Timestamp(s["end"]))

        return cls(span(d["baseline"]), span(d["incident"]), span(d["recovery"]), d["baseline_level"],
                   d["incident_level"], d["recovery_level"], d["signal"])


RISK_FACTOR = {"low": 1.0, "medium": 2.0, "high": 4.0}


@dataclass
class PlannedAction:
    id: str
    phase: str  # immediate | short-term | long-term
    title: str
    cause: str  # hypothesis category
    kind: str  # executor kind, or "recommendation" when the runbook does not change it itself
    inputs: dict
    expected_gain: float  # share of the p95 excess expected to go away (0..1)
    effort_hours: float
    risk: str
    reason: str
    executable: bool = True
    depends_on: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return round(self.expected_gain / (self.effort_hours * RISK_FACTOR[self.risk]), 3)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["score"] = self.score
        return d


@dataclass
class Outcome:
    """What happened to one action in a run or a rollback: one row of the results table."""

    action_id: str
    kind: str
    title: str
    target: str
    status: str  # planned | applied | already applied | failed | rolled back | nothing to undo
    changed: bool = False
    message: str = ""
    verified: bool | None = None
    effect: str | None = None  # verify loop: helped | no effect | worse | unknown
    before: float | None = None
    after: float | None = None
    rolled_back: bool = False
    duration_s: float = 0.0
    commands: list[str] = field(default_factory=list)

    @classmethod
    def for_action(cls, action: Any, status: str, **kw: Any) -> Outcome:
        return cls(action_id=action.id, kind=action.kind, title=action.title, target=action.target,
                   status=status, **kw)

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


# --- the application's knobs ------------------------------------------------------------------------

KEY_SCHEMES = ("volatile", "normalized")
ORDERS_QUERIES = ("n_plus_one", "join")
# Bounds that keep a typo from taking the machine down (2 cores): more replicas or connections than
# this only adds contention.
MAX_REPLICAS = 8
MAX_POOL = 100


@dataclass(frozen=True)
class AppKnobs:
    """The application knobs the runbook reads and changes (``app.config`` action), as one JSON object in the
    app's config file (``settings.App.config_file``; the lab's config.json is one). Defaults: a healthy app."""

    cache_ttl_s: float = 300.0           # the fix in the seed incident: TTL 300 s
    cache_key_scheme: str = "normalized"  # "volatile": the key carries the request timestamp
    db_pool_max: int = 10
    db_pool_timeout_s: float = 5.0       # how long a request waits for a pool connection, then 503
    orders_query: str = "join"           # "n_plus_one": one orders query per listed user
    replicas: int = 1                    # app processes sharing the API socket
    # Rate limit per replica (token bucket): at most rate_limit_rps requests/s with bursts of rate_limit_burst,
    # beyond that 429 with Retry-After. 0 = off (the default: no limit).
    rate_limit_rps: float = 0.0
    rate_limit_burst: int = 10
    # Circuit breaker in front of the pool: when at least breaker_min_requests pool-using requests were seen over
    # the last breaker_window_s seconds and breaker_error_ratio of them failed (pool timeout, database error), it
    # opens for breaker_open_s: requests serve the stale cached answer or fail fast with 503 instead of queueing
    # on the pool; then one trial request goes through (half-open). 0 = off (the default).
    breaker_error_ratio: float = 0.0
    breaker_window_s: float = 10.0
    breaker_min_requests: int = 20
    breaker_open_s: float = 30.0

    def problems(self) -> list[str]:
        out = []
        if self.cache_ttl_s <= 0:
            out.append("cache_ttl_s must be > 0")
        if self.cache_key_scheme not in KEY_SCHEMES:
            out.append(f"cache_key_scheme must be one of {KEY_SCHEMES}")
        if not 1 <= self.db_pool_max <= MAX_POOL:
            out.append(f"db_pool_max must be in 1..{MAX_POOL}")
        if self.db_pool_timeout_s <= 0:
            out.append("db_pool_timeout_s must be > 0")
        if self.orders_query not in ORDERS_QUERIES:
            out.append(f"orders_query must be one of {ORDERS_QUERIES}")
        if not 1 <= self.replicas <= MAX_REPLICAS:
            out.append(f"replicas must be in 1..{MAX_REPLICAS}")
        if self.rate_limit_rps < 0:
            out.append("rate_limit_rps must be >= 0 (0 = off)")
        if self.rate_limit_burst < 1:
            out.append("rate_limit_burst must be >= 1")
        if not 0 <= self.breaker_error_ratio <= 1:
            out.append("breaker_error_ratio must be in 0..1 (0 = off)")
        if self.breaker_window_s <= 0:
            out.append("breaker_window_s must be > 0")
        if self.breaker_min_requests < 1:
            out.append("breaker_min_requests must be >= 1")
        if self.breaker_open_s <= 0:
            out.append("breaker_open_s must be > 0")
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The knobs of each resilience mechanism (their names carry the prefix), as the plan proposes them together.
BREAKER_KNOBS = ("breaker_error_ratio", "breaker_window_s", "breaker_min_requests", "breaker_open_s")
RATE_LIMIT_KNOBS = ("rate_limit_rps", "rate_limit_burst")


def knob_types() -> dict[str, str]:
    """Knob name -> its type name ("float", "int", "str")."""
    return {f.name: str(f.type) for f in fields(AppKnobs)}


def knob_value(name: str, value: Any) -> Any:
    """A knob's value in its type (300, "300" and 300.0 are the same TTL); ValueError/TypeError if it is not."""
    if value is None:
        return None
    return {"float": float, "int": int}.get(knob_types()[name], str)(value)


# --- ids ---------------------------------------------------------------------------------------------

_SLUG_BAD = re.compile(r"[^a-z0-9_.-]+")


def slug(*parts: str) -> str:
    """Join parts into an id fragment: lower case, only [a-z0-9_.-]. The plan and the executors build an
    action's id with it, so one action has one id from plan.json to the audit log and the rollback."""
    return "-".join(_SLUG_BAD.sub("_", p.lower()).strip("_-") for p in parts)


def index_action_id(table: str, columns: list[str]) -> str:
    """The id of the index on ``[schema.]table (columns)``: the same in the plan and in the executor."""
    schema, _, name = table.rpartition(".")
    return "pg-index-" + slug(*([schema] if schema and schema != "public" else []), name, *columns)


def app_config_action_id(knobs: Iterable[str]) -> str:
    """The id of a change to these app knobs (order does not matter)."""
    return "app-config-" + slug(*sorted(knobs))


def redis_config_action_id(names: Iterable[str]) -> str:
    """The id of a CONFIG SET of these Redis parameters (order does not matter)."""
    return "redis-config-" + slug(*sorted(names))


def cache_warm_action_id(top_n: int) -> str:
    return f"cache-warm-top-{int(top_n)}"


def asg_capacity_action_id(group: str) -> str:
    """The id of setting an EC2 Auto Scaling group's capacity."""
    return "aws-asg-capacity-" + slug(group)


def kubernetes_apply_action_id(kind: str, namespace: str, name: str) -> str:
    """The id of server-side applying the object ``kind`` ``namespace``/``name``."""
    return "k8s-apply-" + slug(kind.lower(), namespace, name)


def app_autoscaling_action_id(resource_id: str, dimension: str) -> str:
    """The id of setting the Application Auto Scaling target (and its policy) of a resource's dimension."""
    return "aws-app-autoscaling-" + slug(resource_id, dimension)


def pg_terminate_action_id(application_name: str | None = None, usename: str | None = None) -> str:
    """The id of terminating the idle-in-transaction sessions of this application / role (either may be absent)."""
    return "pg-terminate-idle-tx" + "".join("-" + slug(p) for p in (application_name, usename) if p)


def pg_setting_action_id(name: str, scope: str, scope_name: str | None = None) -> str:
    """The id of setting a PostgreSQL parameter at a scope: system (ALTER SYSTEM), role or database."""
    return "pg-setting-" + slug(name, scope, *([scope_name] if scope_name else []))
