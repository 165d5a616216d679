"""``runbook record``: capture an incident bundle (fixtures/README.md format) from a live system.

    runbook record -p parameters/live.yaml --from -10m --to +5m --out fixtures/checkout-2026-11-30

Works with any parameters file whose source is Prometheus. Signals come from that source (``query_range``
over [from, to] at ``window.step_seconds``), so the window may lie in the past as far as Prometheus keeps
data. Snapshots are taken with the same version-aware collectors the diagnosis uses
(``sources.pg_statistics.collect``: pg_stat_statements for 13-17 with the top-level filter, tables, indexes,
activity with who holds each connection, settings; ``sources.redis_snapshot``: INFO with the server clock and
a key sample with TTLs and memory), plus the app's knobs (``app.config_file``) when the parameters name them.
Snapshots can only be taken *now*: the ``.start`` ones when ``--from`` is reached (at once if it is past:
their ``taken_at`` says when they really were taken), the ``.end`` ones when ``--to`` is reached. Waits are
bounded by ``--max-wait``. Events are the parameters' event log (``source.events_file``) inside the window.
The bundle is validated before it is kept, and written under a temporary name until then.

The snapshots can instead be taken at chosen moments inside the window (``--snapshots-at START END``),
e.g. both during the incident when the window also holds a healthy baseline and the recovery: the
root-cause step reads them as incident evidence. Signals are fetched once ``--to`` is reached.

``--run RUN_DIR``: the runbook run that fixed the incident during the recording; the changes its audit
log says were applied become the bundle's remediation events (instead of the event log's own remediation
lines, which would mark the same changes twice). Phases are derived from the events: baseline up to the
first deploy, incident up to the first remediation, recovery after the last one. The run's own record of
what it did (``plan.json``, ``remediation.json``, its audit log) is kept in the bundle as the snapshots
``recorded_run_plan``, ``recorded_run_remediation`` and ``recorded_run_audit`` (``recorded_run/``), its
folders written as ``${RUNBOOK_LAB_DIR}`` / ``<run folder>``: a fixture run, which can change nothing, shows
what was applied when the incident was live, approved by whom and with what measured effect.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import yaml

from runbook_lib.actions.audit import audit_path, read_audit
from runbook_lib.errors import RecordError, RunbookError
from runbook_lib.settings import Settings, display_path, load_settings, resolve_path
from runbook_lib.sources import pg_statistics as pg_stats
from runbook_lib.sources import redis_snapshot as redis_stats
from runbook_lib.sources.app_config_file import read_app_config
from runbook_lib.sources.events import read_events_file
from runbook_lib.sources.fixture_bundle import (
    RECORDED_RUN_AUDIT,
    RECORDED_RUN_PLAN,
    RECORDED_RUN_REMEDIATION,
    FixtureBundle,
    Manifest,
    SnapshotRef,
)
from runbook_lib.sources.prometheus import PrometheusSource
from runbook_lib.sources.timeseries import Event
from runbook_lib.suite import bundle_shape

MAX_WAIT_S = 2 * 3600        # by default, record at most two hours ahead (a forgotten --to is not a day-long wait)
REDIS_KEY_SAMPLE = 200       # keys in the redis_keys snapshot (a throttled SCAN sample)
_RELATIVE = re.compile(r"^([+-])(\d+)([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
# pg_indexes as the bundle keeps it (a CSV: the list-valued columns of the live reader stay out)
INDEX_FILE_COLUMNS = ["tablename", "indexname", "indexdef", "valid", "method", "partial", "unique", "size_bytes",
                      "idx_scan"]
SETTINGS_KEPT = ("max_connections", "server_version", "pg_stat_statements_version", "database")


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
        raise RecordError(f"cannot read the time {text!r}",
                       hint="use ISO 8601 (2026-11-29T10:00:00Z), 'now', or relative: -10m, +5m, +1h") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _events(events_file: Path | None, start: datetime, end: datetime, run: Path | None = None) -> list[dict]:
    """The event log's events in [start, end]; with ``run``, its applied changes replace the log's remediation
    events. No event log: no events (the bundle says so by having none)."""
    events = read_events_file(events_file) if events_file is not None and events_file.exists() else []
    if run is not None:
        events = [e for e in events if e.kind != "remediation"] + _run_events(run)
    inside = sorted((e for e in events if start <= e.time <= end), key=lambda e: e.time)
    return [_event_entry(e) for e in inside]


def _event_entry(e: Event) -> dict:
    """An event as the manifest lists it."""
    return {"time": e.time.isoformat(), "label": e.label, "kind": e.kind}


RECORDED_RUN_DIR = "recorded_run"
# snapshot name -> (the run folder's file, the bundle's file)
RECORDED_RUN_FILES = {RECORDED_RUN_PLAN: ("plan.json", "plan.json"),
                      RECORDED_RUN_REMEDIATION: ("remediation.json", "remediation.json"),
                      RECORDED_RUN_AUDIT: ("audit.jsonl", "audit.json")}


def keep_recorded_run(bundle: Path, run: Path, placeholders: dict[str, str]) -> dict[str, SnapshotRef]:
    """Copy the run's plan, outcomes and audit (as one JSON list) into ``bundle/recorded_run/``; every text
    of ``placeholders`` (a folder, a host:port -> placeholder) is written as its placeholder. Returns the snapshot refs to list in
    the manifest. The audit is redacted already (actions.audit); it is read with read_audit (a torn line
    skipped)."""
    if not audit_path(run).exists():
        raise RecordError(f"{display_path(audit_path(run))} does not exist",
                          hint="--run names a run folder of 'runbook run'")
    docs = {RECORDED_RUN_AUDIT: read_audit(run).records}
    for name, (src, _) in RECORDED_RUN_FILES.items():
        if name not in docs and (run / src).exists():
            docs[name] = json.loads((run / src).read_text())
    # the longest text first: the run folder may lie inside the lab's
    order = sorted(((k, v) for k, v in placeholders.items() if k), key=lambda kv: -len(kv[0]))
    (bundle / RECORDED_RUN_DIR).mkdir(parents=True, exist_ok=True)
    refs = {}
    for name, doc in docs.items():
        text = json.dumps(doc, indent=1, default=str)
        for original, placeholder in order:
            text = text.replace(original, placeholder)
        rel = f"{RECORDED_RUN_DIR}/{RECORDED_RUN_FILES[name][1]}"
        (bundle / rel).write_text(text + "\n")
        refs[name] = SnapshotRef(file=rel, description=f"the recording's runbook run: {RECORDED_RUN_FILES[name][0]}")
    return refs


def _run_events(run: Path) -> list[Event]:
    """One remediation event per change the run's audit log says was applied (and changed something)."""
    if not audit_path(run).exists():
        raise RecordError(f"{display_path(audit_path(run))} does not exist",
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


def _wait_until_time(t: datetime, what: str, max_wait_s: float = MAX_WAIT_S) -> None:
    delay = (t - datetime.now(UTC)).total_seconds()
    if delay > max_wait_s:
        raise RecordError(f"{what} is {delay / 60:.0f} min ahead (limit {max_wait_s / 60:.0f} min)",
                          hint="record a nearer window, or raise --max-wait")
    while delay > 0:
        time.sleep(min(delay, 1.0))
        delay = (t - datetime.now(UTC)).total_seconds()


def _pg_connect(settings: Settings):
    if settings.postgres is None:
        raise RecordError("the parameters have no postgres section", hint="add postgres.dsn (see parameters/)")
    return pg_stats.connect_settings(settings.postgres)


class Snapshotter:
    """Writes snapshot files into ``folder/snapshots`` and remembers them for the manifest."""

    def __init__(self, folder: Path, settings: Settings, key_sample: int = REDIS_KEY_SAMPLE):
        self.dir = folder / "snapshots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings, self.key_sample = settings, key_sample
        self.refs: dict[str, dict] = {}

    def _keep(self, name: str, data, suffix: str, description: str = "", taken_at: str | None = None) -> None:
        path = self.dir / f"{name}.{suffix}"
        if suffix == "csv":
            data.to_csv(path, index=False)
        else:
            path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        self.refs[name] = {"file": f"snapshots/{path.name}", "taken_at": taken_at or datetime.now(UTC).isoformat(),
                           "description": description}

    def take(self, phase: str) -> None:
        with _pg_connect(self.settings) as conn:
            snap = pg_stats.collect(conn)
        at = snap.taken_at.isoformat()
        self._keep(f"pg_stat_statements.{phase}", snap.statements, "csv", "pg_stat_statements (top level)", at)
        self._keep(f"pg_stat_user_tables.{phase}", snap.tables, "csv", taken_at=at)
        self._keep(f"pg_statio_user_tables.{phase}", snap.statio, "csv", taken_at=at)
        if phase == "end":
            self._keep("pg_indexes", snap.indexes[[c for c in INDEX_FILE_COLUMNS if c in snap.indexes]], "csv",
                       taken_at=at)
            self._keep("pg_stat_activity", snap.activity, "csv", "client backends, with who holds each", at)
            self._keep("pg_settings", {k: snap.settings.get(k) for k in SETTINGS_KEPT}, "json", taken_at=at)
        client = redis_stats.connect_settings(self.settings.redis) if self.settings.redis else None
        if client is None:
            raise RecordError("the parameters have no redis section", hint="add redis.url (see parameters/)")
        try:
            info = redis_stats.info_snapshot(client)
            self._keep(f"redis_info.{phase}", info, "json", taken_at=info["taken_at"])
            if phase == "end":
                self._keep("redis_keys", redis_stats.key_sample(client, self.key_sample), "csv",
                           f"SCAN sample of {self.key_sample} keys")
        finally:
            client.close()
        if phase == "end" and self.settings.app.config_file:
            try:
                knobs = read_app_config(resolve_path(self.settings.app.config_file)).as_dict()
            except RunbookError:
                knobs = None
            if knobs is not None:
                self._keep("app_config", knobs, "json", f"the app's knobs ({self.settings.app.config_file})")


def _alert_events(settings: Settings, start: datetime, end: datetime) -> list[dict]:
    """The alerts Prometheus evaluated in the window (its ALERTS series) as "<alert> firing" / "<alert> resolved"
    events; none when it evaluates no rules."""
    found = PrometheusSource(settings.source).alert_events(pd.Timestamp(start), pd.Timestamp(end),
                                                           settings.window.step_seconds)
    return [_event_entry(e) for e in found]


def _refuse_off_shape(tmp: Path, out: Path, settings: Settings) -> None:
    found = bundle_shape.problems(FixtureBundle(tmp), settings.slo)
    if not found:
        return
    rejected = out.with_name(f".{out.name}.rejected")
    shutil.rmtree(rejected, ignore_errors=True)
    tmp.rename(rejected)
    raise RecordError("the recording is not the D2 incident's shape, so it was not written: " + "; ".join(found),
                      hint=f"kept for a look in {display_path(rejected)}; record again on a quieter machine, "
                           "with a longer incident or recovery, or with the lab recalibrated")


def _signals(settings: Settings, start: datetime, end: datetime) -> pd.DataFrame:
    if settings.source.kind != "prometheus":
        raise RecordError(f"record reads a Prometheus source, not {settings.source.kind!r}",
                          hint="use a parameters file with source.kind: prometheus (parameters/lab.yaml, "
                               "parameters/live.example.yaml)")
    df = PrometheusSource(settings.source).fetch(settings.signals, start, end, settings.window.step_seconds)
    out = df.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.index.name = "time"
    return out


def record(parameters: str | Path, start: datetime, end: datetime, out: str | Path,
           snapshots_at: tuple[datetime, datetime] | None = None, run: Path | None = None,
           key_sample: int = REDIS_KEY_SAMPLE, max_wait_s: float = MAX_WAIT_S, shape: str | None = None,
           placeholders: dict[str, str] | None = None) -> Path:
    """Record a bundle into ``out`` (refused if it exists and is not empty). Returns the bundle folder.

    ``snapshots_at=(t0, t1)``: take the ``.start`` snapshots at t0 and the ``.end`` ones at t1 instead of
    at ``start`` and ``end`` (``start <= t0 < t1 <= end``). ``run``: see the module's docstring. ``shape``
    ("d2"): refuse a recording that is not that incident's shape (``bundle_shape``); it is kept beside ``out``
    as ``.<name>.rejected`` for a look, never as the bundle. ``placeholders`` (text -> placeholder): what the
    bundle's copy of the run writes instead of the run folder (always) and of these texts (a private lab's
    folder and ports: ``lab.fixture_recording.placeholders``).
    """
    if shape is not None and shape not in bundle_shape.SHAPES:
        raise RecordError(f"unknown shape {shape!r}", hint=f"one of: {', '.join(bundle_shape.SHAPES)}")
    settings = load_settings(parameters)
    if end <= start:
        raise RecordError("--to must be after --from")
    snap_start, snap_end = snapshots_at or (start, end)
    if not start <= snap_start < snap_end <= end:
        raise RecordError("the snapshot times must lie inside the window, the first before the second",
                       hint="--from <= snapshot start < snapshot end <= --to")
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise RecordError(f"{display_path(out)} exists and is not empty", hint="choose a new --out folder")
    tmp = out.with_name(f".{out.name}.recording")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        snaps = Snapshotter(tmp, settings, key_sample)
        _wait_until_time(snap_start, "the start snapshot" if snapshots_at else "--from", max_wait_s)
        snaps.take("start")
        _wait_until_time(snap_end, "the end snapshot" if snapshots_at else "--to", max_wait_s)
        snaps.take("end")
        _wait_until_time(end, "--to", max_wait_s)
        _signals(settings, start, end).to_csv(tmp / "signals.csv")
        events_file = getattr(settings.source, "events_file", None)
        events = _events(resolve_path(events_file) if events_file else None, start, end, Path(run) if run else None)
        events = sorted(events + _alert_events(settings, start, end), key=lambda e: e["time"])
        refs = dict(snaps.refs)
        if run:
            refs.update(keep_recorded_run(tmp, Path(run), {str(run): "<run folder>", **(placeholders or {})}))
        manifest = Manifest(
            id=out.name, title=settings.incident.title,
            description=f"Recorded from {settings.source.url} ({settings.mode} mode), "
                        f"{start.isoformat(timespec='seconds')} .. {end.isoformat(timespec='seconds')}.",
            provenance=f"recorded: runbook record -p {display_path(parameters)} --from {start.isoformat()} "
                       f"--to {end.isoformat()}"
                       + (f", snapshots at {snap_start.isoformat()} and {snap_end.isoformat()}" if snapshots_at else "")
                       + (f", events of run {display_path(run)}" if run else ""),
            step_seconds=settings.window.step_seconds, events=events, snapshots=refs,
            phases=phases_from_events(events, start, end))
        (tmp / "bundle.yaml").write_text(yaml.safe_dump(manifest.model_dump(mode="json", exclude_defaults=False),
                                                        sort_keys=False))
        FixtureBundle(tmp).check()
        if shape is not None:
            _refuse_off_shape(tmp, out, settings)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
