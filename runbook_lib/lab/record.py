"""``runbook record``: capture an incident bundle (fixtures/README.md format) from a live source.

    runbook record -p parameters/lab.yaml --from -10m --to +5m --out fixtures/lab-d2

Signals come from the parameters' Prometheus source (``query_range`` over [from, to] at
``window.step_seconds``), so the window may lie in the past as far as Prometheus keeps data.
Snapshots (pg_stat_statements, tables, indexes, activity, settings, Redis INFO and a key sample, the
backend's knobs) can only be taken *now*: the ``.start`` ones when ``--from`` is reached (at once if
it is past: their ``taken_at`` says when they really were taken), the ``.end`` ones when ``--to`` is
reached. Waits are bounded by ``MAX_WAIT_S``. Events are the lab's event log (profile switches and
knob patches, ``<state>/events.jsonl``) inside the window. The bundle is validated before it is kept.

The snapshots can instead be taken at chosen moments inside the window (``--snapshots-at START END``),
e.g. both during the incident when the window also holds a healthy baseline and the recovery: the
root-cause step reads them as incident evidence. Signals are fetched once ``--to`` is reached.

``--run RUN_DIR``: the runbook run that fixed the incident during the recording; the changes its audit
log says were applied become the bundle's remediation events (instead of the lab's own log of config
patches, which would mark the same changes twice). Phases are derived from the events: baseline up
to the first deploy, incident up to the first remediation, recovery after the last one.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import redis
import yaml

from runbook_lib.actions.audit import audit_path, read_audit
from runbook_lib.lab.config import CONFIG_FILE, EVENTS_FILE
from runbook_lib.lab.lab_errors import LabError
from runbook_lib.settings import Settings, display_path, load_settings
from runbook_lib.sources.events import read_events_file
from runbook_lib.sources.fixture_bundle import FixtureBundle, Manifest
from runbook_lib.sources.prometheus import PrometheusSource
from runbook_lib.sources.timeseries import Event

MAX_WAIT_S = 2 * 3600        # record at most two hours ahead
REDIS_KEY_SAMPLE = 200       # keys in the redis_keys snapshot (a SCAN sample)
_RELATIVE = re.compile(r"^([+-])(\d+)([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}

PG_SNAPSHOTS = {
    "pg_stat_statements": (
        "SELECT queryid, query, calls, total_exec_time, rows, shared_blks_hit, shared_blks_read "
        "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "ORDER BY total_exec_time DESC"),
    "pg_stat_user_tables": (
        "SELECT relname, n_live_tup, seq_scan, seq_tup_read, idx_scan, n_tup_ins, n_tup_upd, n_tup_del "
        "FROM pg_stat_user_tables ORDER BY relname"),
}
PG_END_ONLY = {
    "pg_indexes": (
        "SELECT i.tablename, i.indexname, i.indexdef, x.indisvalid AS valid FROM pg_indexes i "
        "JOIN pg_class c ON c.relname = i.indexname AND c.relkind = 'i' "
        "JOIN pg_index x ON x.indexrelid = c.oid WHERE i.schemaname = 'public' ORDER BY 1, 2"),
    "pg_stat_activity": (
        "SELECT state, wait_event_type, extract(epoch FROM now() - query_start)::float8 AS duration_s, query "
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"),
}
REDIS_FIELDS = ("keyspace_hits", "keyspace_misses", "evicted_keys", "expired_keys", "used_memory", "maxmemory",
                "maxmemory_policy", "uptime_in_seconds")


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (UTC unless it says otherwise), ``now``, or relative to now: ``-10m``, ``+30s``, ``+1h``."""
    now = now or datetime.now(UTC)
    if text == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        delta = timedelta(seconds=int(m.group(2)) * _UNIT_S[m.group(3)])
        return now + delta if m.group(1) == "+" else now - delta
    try:
        t = datetime.fromisoformat(text)  # Python 3.11 reads a trailing Z
    except ValueError:
        raise LabError(f"cannot read the time {text!r}",
                       hint="use ISO 8601 (2026-11-29T10:00:00Z), 'now', or relative: -10m, +5m, +1h") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _events(state: Path, start: datetime, end: datetime, run: Path | None = None) -> list[dict]:
    """The lab's events in [start, end]; with ``run``, its applied changes replace the lab's remediation events."""
    events = read_events_file(state / EVENTS_FILE)
    if run is not None:
        events = [e for e in events if e.kind != "remediation"] + _run_events(run)
    inside = sorted((e for e in events if start <= e.time <= end), key=lambda e: e.time)
    return [{"time": e.time.isoformat(), "label": e.label, "kind": e.kind} for e in inside]


def _run_events(run: Path) -> list[Event]:
    """One remediation event per change the run's audit log says was applied (and changed something)."""
    if not audit_path(run).exists():
        raise LabError(f"{display_path(audit_path(run))} does not exist",
                       hint="--run names a run folder of 'runbook run'")
    return [Event(pd.Timestamp(rec["ts"]).tz_convert("UTC").floor("s"),
                  f"runbook: {rec.get('title') or rec['action_id']}", "remediation")
            for rec in read_audit(run).records if rec["step"] == "applied" and rec.get("changed", True)]


def phases_from_events(events: list[dict], start: datetime, end: datetime) -> dict[str, list[datetime]]:
    """baseline [start, first deploy], incident [first deploy, first remediation after it], recovery [last
    remediation, end]; only the phases the events allow."""
    def when(e: dict) -> datetime:
        return datetime.fromisoformat(e["time"])

    deploys = [when(e) for e in events if e["kind"] == "deploy"]
    if not deploys:
        return {}
    deploy = deploys[0]
    fixes = [when(e) for e in events if e["kind"] == "remediation" and when(e) > deploy]
    phases = {"baseline": [start, deploy], "incident": [deploy, fixes[0] if fixes else end]}
    if fixes and fixes[-1] < end:
        phases["recovery"] = [fixes[-1], end]
    return phases


def _wait_until_time(t: datetime, what: str) -> None:
    delay = (t - datetime.now(UTC)).total_seconds()
    if delay > MAX_WAIT_S:
        raise LabError(f"{what} is {delay / 60:.0f} min ahead (limit {MAX_WAIT_S // 60} min)")
    while delay > 0:
        time.sleep(min(delay, 1.0))
        delay = (t - datetime.now(UTC)).total_seconds()


def _pg_connect(settings: Settings):
    if settings.postgres is None:
        raise LabError("the parameters have no postgres section", hint="add postgres.dsn (see parameters/lab.yaml)")
    pw = settings.postgres.password.reveal().get_secret_value() if settings.postgres.password else None
    return psycopg.connect(settings.postgres.dsn, autocommit=True, connect_timeout=10,
                           **({"password": pw} if pw else {}))


def _redis(settings: Settings) -> redis.Redis:
    if settings.redis is None:
        raise LabError("the parameters have no redis section", hint="add redis.url (see parameters/lab.yaml)")
    pw = settings.redis.password.reveal().get_secret_value() if settings.redis.password else None
    return redis.Redis.from_url(settings.redis.url, password=pw, socket_timeout=10)


def _query_frame(conn, sql: str) -> pd.DataFrame:
    cur = conn.execute(sql)
    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


class Snapshotter:
    """Writes snapshot files into ``folder/snapshots`` and remembers them for the manifest."""

    def __init__(self, folder: Path, settings: Settings, state: Path):
        self.dir = folder / "snapshots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings, self.state = settings, state
        self.refs: dict[str, dict] = {}

    def _keep(self, name: str, data, suffix: str, description: str = "") -> None:
        path = self.dir / f"{name}.{suffix}"
        if suffix == "csv":
            data.to_csv(path, index=False)
        else:
            path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        self.refs[name] = {"file": f"snapshots/{path.name}", "taken_at": datetime.now(UTC).isoformat(),
                           "description": description}

    def take(self, phase: str) -> None:
        with _pg_connect(self.settings) as conn:
            for name, sql in PG_SNAPSHOTS.items():
                self._keep(f"{name}.{phase}", _query_frame(conn, sql), "csv")
            if phase == "end":
                for name, sql in PG_END_ONLY.items():
                    self._keep(name, _query_frame(conn, sql), "csv")
                self._keep("pg_settings", self._pg_settings(conn), "json")
        r = _redis(self.settings)
        try:
            info = r.info()
            self._keep(f"redis_info.{phase}", {k: info.get(k) for k in REDIS_FIELDS}, "json")
            if phase == "end":
                self._keep("redis_keys", self._redis_keys(r), "csv", f"SCAN sample of {REDIS_KEY_SAMPLE} keys")
        finally:
            r.close()
        if phase == "end" and (self.state / CONFIG_FILE).exists():
            self._keep("app_config", json.loads((self.state / CONFIG_FILE).read_text()), "json",
                       "the lab backend's knobs (config.json)")

    @staticmethod
    def _pg_settings(conn) -> dict:
        ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
        return {"max_connections": int(conn.execute("SHOW max_connections").fetchone()[0]),
                "server_version": conn.execute("SHOW server_version").fetchone()[0],
                "pg_stat_statements_version": ext[0] if ext else None}

    @staticmethod
    def _redis_keys(r: redis.Redis) -> pd.DataFrame:
        rows = []
        for key in r.scan_iter(count=REDIS_KEY_SAMPLE):
            if len(rows) >= REDIS_KEY_SAMPLE:
                break
            rows.append({"key": key.decode(errors="replace"), "type": r.type(key).decode(), "ttl_s": r.ttl(key),
                         "memory_bytes": r.memory_usage(key)})
        return pd.DataFrame(rows, columns=["key", "type", "ttl_s", "memory_bytes"])


def _signals(settings: Settings, start: datetime, end: datetime) -> pd.DataFrame:
    if settings.source.kind != "prometheus":
        raise LabError(f"record reads a Prometheus source, not {settings.source.kind!r}",
                       hint="use parameters/lab.yaml or another file with source.kind: prometheus")
    df = PrometheusSource(settings.source).fetch(settings.signals, start, end, settings.window.step_seconds)
    out = df.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.index.name = "time"
    return out


def record(parameters: str | Path, start: datetime, end: datetime, out: str | Path, state: Path,
           snapshots_at: tuple[datetime, datetime] | None = None, run: Path | None = None) -> Path:
    """Record a bundle into ``out`` (refused if it exists and is not empty). Returns the bundle folder.

    ``snapshots_at=(t0, t1)``: take the ``.start`` snapshots at t0 and the ``.end`` ones at t1 instead of
    at ``start`` and ``end`` (``start <= t0 < t1 <= end``). ``run``: see the module's docstring.
    """
    settings = load_settings(parameters)
    if end <= start:
        raise LabError("--to must be after --from")
    snap_start, snap_end = snapshots_at or (start, end)
    if not start <= snap_start < snap_end <= end:
        raise LabError("the snapshot times must lie inside the window, the first before the second",
                       hint="--from <= snapshot start < snapshot end <= --to")
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise LabError(f"{display_path(out)} exists and is not empty", hint="choose a new --out folder")
    tmp = out.with_name(f".{out.name}.recording")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        snaps = Snapshotter(tmp, settings, state)
        _wait_until_time(snap_start, "the start snapshot" if snapshots_at else "--from")
        snaps.take("start")
        _wait_until_time(snap_end, "the end snapshot" if snapshots_at else "--to")
        snaps.take("end")
        _wait_until_time(end, "--to")
        _signals(settings, start, end).to_csv(tmp / "signals.csv")
        events = _events(state, start, end, Path(run) if run else None)
        manifest = Manifest(
            id=out.name, title=settings.incident.title,
            description=f"Recorded from {settings.source.url} ({settings.mode} mode), "
                        f"{start.isoformat(timespec='seconds')} .. {end.isoformat(timespec='seconds')}.",
            provenance=f"recorded: runbook record -p {display_path(parameters)} --from {start.isoformat()} "
                       f"--to {end.isoformat()}"
                       + (f", snapshots at {snap_start.isoformat()} and {snap_end.isoformat()}" if snapshots_at else "")
                       + (f", events of run {display_path(run)}" if run else ""),
            step_seconds=settings.window.step_seconds, events=events, snapshots=snaps.refs,
            phases=phases_from_events(events, start, end))
        (tmp / "bundle.yaml").write_text(yaml.safe_dump(manifest.model_dump(mode="json", exclude_defaults=False),
                                                        sort_keys=False))
        FixtureBundle(tmp).check()
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
