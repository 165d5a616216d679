"""Direct measurements of an action's effect, at the grain the action works on (the verify loop's I/O).

Each probe measures one window *now* (so an "after" window holds only data after the change) split into
sub-windows for the noise, and returns an ``effect_verdict.Measurement``:

* ``KeyspaceProbe``: Redis INFO keyspace_hits / keyspace_misses deltas (every cache action: key scheme, TTL,
  memory, policy, warming); the interval is Wilson's on the window's lookups;
* ``StatementProbe``: the target statements' pg_stat_statements deltas (an index: the statements it was
  proposed for, matched by their text); value = mean ms per call, interval = Student's t over the
  sub-windows' means, with buffers per call in the detail;
* ``SignalProbe``: one catalog signal of the service (an app knob's ``effect_signal``: the 5xx ratio for a pool
  timeout, p95 for scaling) read from the metrics source per sub-window, each sub-window's value resting only
  on samples inside it (``sources.prometheus.sub_window_values``); value = mean of the sub-windows, interval =
  Student's t over them. A service-wide signal also moves with the other changes of the same window: the
  probe says so (``shared_window_with``) instead of claiming the effect for one action.

Actions name their probe through ``probe_for(action, targets)``; a probe's ``key`` says what it measures, so
actions that act on the same thing share one window (and one verdict), and the others are measured side by
side in the same wall-clock window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from runbook_lib.actions.effect_verdict import Measurement, mean_interval, wilson
from runbook_lib.signal_catalog import CATALOG

# Lookups / calls a window needs before its value means anything (fewer: "inconclusive", never a guess).
# 100 lookups put a hit ratio's 95 % interval within about +-10 points; 20 calls give a t interval on
# sub-window means that a 2x change clears.
MIN_LOOKUPS = 100
MIN_CALLS = 20
SUB_WINDOWS = 5
# A signal probe needs this many of its sub-windows to hold data (a t interval on fewer is too wide to judge).
MIN_SIGNAL_SUB_WINDOWS = 3

# (signal name, window start, window end, sub-windows) -> one value per sub-window (None: no data there)
SignalReader = Callable[[str, datetime, datetime, int], list]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class KeyspaceProbe:
    """The Redis keyspace hit ratio over a window (higher is better)."""

    higher_is_worse = False

    def __init__(self, client, endpoint: str):
        self.client, self.key = client, f"redis-keyspace {endpoint}"
        self.label = f"Redis keyspace hit ratio ({endpoint})"

    def _counts(self) -> tuple[int, int]:
        s = self.client.info("stats")
        return int(s["keyspace_hits"]), int(s["keyspace_misses"])

    def window(self, seconds: float, sleep: Callable[[float], None] = time.sleep) -> Measurement:
        start, (h0, m0) = _now(), self._counts()
        per = []
        last = (h0, m0)
        for _ in range(SUB_WINDOWS):
            sleep(seconds / SUB_WINDOWS)
            h, m = self._counts()
            per.append((h - last[0], m - last[1]))
            last = (h, m)
        hits, misses = last[0] - h0, last[1] - m0
        n = hits + misses
        low, high = wilson(hits, n)
        return Measurement(self.label, hits / n if n else None, low, high, n, start, _now(), SUB_WINDOWS,
                           n >= MIN_LOOKUPS, {"hits": hits, "misses": misses,
                                              "per_sub_window": [{"hits": a, "misses": b} for a, b in per]})


class StatementProbe:
    """Mean execution time per call of the target statements over a window (higher is worse)."""

    higher_is_worse = True

    def __init__(self, conn, statements: list[str], endpoint: str):
        self.conn, self.statements = conn, list(statements)
        self.key = f"statements {endpoint} " + " | ".join(sorted(self.statements))
        self.label = f"mean ms per call of {len(self.statements)} target statement(s)"

    def _read(self) -> dict[str, tuple[float, float, float]]:
        rows = self.conn.execute(
            "SELECT query, sum(calls)::float8, sum(total_exec_time)::float8, "
            "sum(shared_blks_hit + shared_blks_read)::float8 FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query = ANY(%s) "
            "GROUP BY query", (self.statements,)).fetchall()
        return {q: (c, t, b) for q, c, t, b in rows}

    def window(self, seconds: float, sleep: Callable[[float], None] = time.sleep) -> Measurement:
        start, first = _now(), self._read()
        last, means = first, []
        for _ in range(SUB_WINDOWS):
            sleep(seconds / SUB_WINDOWS)
            now = self._read()
            calls = sum(now.get(q, (0, 0, 0))[0] - last.get(q, (0, 0, 0))[0] for q in now)
            ms = sum(now.get(q, (0, 0, 0))[1] - last.get(q, (0, 0, 0))[1] for q in now)
            if calls > 0:
                means.append(ms / calls)
            last = now
        calls = sum(last.get(q, (0, 0, 0))[0] - first.get(q, (0, 0, 0))[0] for q in last)
        ms = sum(last.get(q, (0, 0, 0))[1] - first.get(q, (0, 0, 0))[1] for q in last)
        blocks = sum(last.get(q, (0, 0, 0))[2] - first.get(q, (0, 0, 0))[2] for q in last)
        _, low, high = mean_interval(means)
        value = ms / calls if calls else None
        return Measurement(self.label, value, low if calls else None, high if calls else None, int(calls), start,
                           _now(), SUB_WINDOWS, calls >= MIN_CALLS and len(means) >= 2,
                           {"buffers_per_call": blocks / calls if calls else None, "sub_window_means_ms": means})


class SignalProbe:
    """One service signal over a window, from samples inside the window only."""

    def __init__(self, read: SignalReader, signal: str, higher_is_worse: bool, label: str, endpoint: str,
                 also: tuple[str, ...] = ()):
        self.read, self.signal, self.higher_is_worse, self.also = read, signal, higher_is_worse, tuple(also)
        self.key = f"signal {endpoint} {' '.join((signal, *self.also))}"
        self.label = f"{label} (service-wide)"

    def window(self, seconds: float, sleep: Callable[[float], None] = time.sleep) -> Measurement:
        start = datetime.now(UTC)
        sleep(seconds)
        end = datetime.now(UTC)
        values = self.read(self.signal, start, end, SUB_WINDOWS)
        seen = [v for v in values if v is not None]
        value, low, high = mean_interval(seen)
        return Measurement(self.label, value if seen else None, low if seen else None, high if seen else None,
                           len(seen), start.isoformat(timespec="milliseconds"),
                           end.isoformat(timespec="milliseconds"), SUB_WINDOWS, len(seen) >= MIN_SIGNAL_SUB_WINDOWS,
                           {"per_sub_window": values, "sub_window_s": seconds / SUB_WINDOWS,
                            **{name: _mean(self.read(name, start, end, SUB_WINDOWS)) for name in self.also}})


def _mean(values: list) -> float | None:
    seen = [v for v in values if v is not None]
    return sum(seen) / len(seen) if seen else None


def probe_for(action: Any, targets: Any, read_signal: SignalReader | None = None,
              signals: Any = ()) -> KeyspaceProbe | StatementProbe | SignalProbe | None:
    """The probe of an action's effect, or None when nothing here can measure it. Cache actions read the Redis
    the parameters name; an index reads its target statements on the PostgreSQL it was built on; any other
    action reads its ``effect_signal`` through ``read_signal`` when the source has it (``signals``)."""
    kind = action.kind
    try:
        if kind in ("redis.config_set", "cache.warm") or (
                kind == "app.config" and getattr(action, "effect_signal", "") == "cache_hit_ratio"):
            if targets.settings.redis is None:
                return None
            return KeyspaceProbe(targets.redis(), targets.endpoint("redis"))
        if kind == "postgres.create_index" and action.inputs.verify_statements:
            if targets.settings.postgres is None:
                return None
            return StatementProbe(targets.postgres(), action.inputs.verify_statements, targets.endpoint("postgres"))
        signal = CATALOG.get(getattr(action, "effect_signal", ""))
        if read_signal is not None and signal is not None and signal.name in signals:
            also = tuple(n for n in getattr(action, "also_measure", ()) if n in signals)
            return SignalProbe(read_signal, signal.name, signal.higher_is_worse, signal.label,
                               getattr(targets.settings.source, "url", "source"), also)
    except Exception:  # noqa: BLE001 - no probe is no measurement, never a failed change
        return None
    return None
