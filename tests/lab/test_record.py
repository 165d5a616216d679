"""The bundled incident, recorded from the lab (fixtures/d2-latency): it loads, is complete, and is an incident.

Quick and offline: reads the committed files only, no servers.
"""

import re
from pathlib import Path

import pandas as pd
import pytest

from runbook_lib.diagnose.incident_window import find_incident_window
from runbook_lib.settings import load_settings
from runbook_lib.signal_catalog import PRIMARY_SIGNAL
from runbook_lib.sources.fixture_bundle import FixtureSource

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "fixtures" / "d2-latency"
PARAMETERS = ROOT / "parameters" / "fixtures.yaml"
# what the root-cause step reads (fixtures/README.md)
SNAPSHOTS = ("pg_stat_statements.start", "pg_stat_statements.end", "pg_stat_user_tables.start",
             "pg_stat_user_tables.end", "pg_indexes", "pg_stat_activity", "pg_settings", "redis_info.start",
             "redis_info.end", "redis_keys", "app_config")


@pytest.fixture(scope="module")
def src():
    return FixtureSource(BUNDLE)


def _phase(src, name):
    start, end = src.bundle.manifest.phases[name]
    return pd.Timestamp(start), pd.Timestamp(end)


def test_bundle_loads_and_checks(src):
    src.bundle.check()
    m = src.bundle.manifest
    assert m.id == "d2-latency"
    assert "recorded" in m.provenance and "runbook lab load" in m.provenance and "runbook record" in m.provenance
    for name in SNAPSHOTS:
        assert src.bundle.has_snapshot(name), name
    total = sum(f.stat().st_size for f in BUNDLE.rglob("*") if f.is_file())
    assert total < 2_000_000


def test_parameters_point_at_the_bundle_and_every_signal_is_there(src):
    settings = load_settings(PARAMETERS)
    assert settings.mode == "fixture" and not settings.remediation.apply
    assert settings.incident.id == "d2-latency"
    assert (ROOT / settings.source.bundle).resolve() == BUNDLE.resolve()
    assert set(settings.signals) <= set(src.available())
    start, end = src.default_range()
    df = src.fetch(settings.signals, start, end, settings.window.step_seconds)
    for name in settings.signals:
        assert df[name].notna().mean() > 0.9, name  # recorded, not a column of gaps


def test_phases_and_events_are_in_order(src):
    m = src.bundle.manifest
    assert list(m.phases) == ["baseline", "incident", "recovery"]
    bounds = [t for name in ("baseline", "incident", "recovery") for t in _phase(src, name)]
    assert bounds == sorted(bounds)
    assert _phase(src, "baseline")[1] - _phase(src, "baseline")[0] >= pd.Timedelta("3min")
    assert _phase(src, "incident")[1] - _phase(src, "incident")[0] >= pd.Timedelta("5min")
    assert _phase(src, "recovery")[1] - _phase(src, "recovery")[0] >= pd.Timedelta("5min")
    events = src.events()
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert {e.kind for e in events} - {"note"} == {"deploy", "remediation", "alert"}
    deploy, *fixes = [e for e in events if e.kind in ("deploy", "remediation")]
    assert deploy.kind == "deploy" and fixes and {e.kind for e in fixes} == {"remediation"}
    alerts = [e.label for e in events if e.kind == "alert"]
    assert any(a.endswith(" firing") for a in alerts) and any(a.endswith(" resolved") for a in alerts), alerts
    assert all(e.label.startswith("runbook: ") for e in fixes), "the fixes are the runbook run's own changes"
    fix = fixes[0]
    assert deploy.time == _phase(src, "incident")[0] and fix.time == _phase(src, "incident")[1]
    assert fixes[-1].time == _phase(src, "recovery")[0]
    first, last = src.default_range()
    assert first <= deploy.time < fix.time <= last


def test_snapshots_were_taken_during_the_incident(src):
    lo, hi = _phase(src, "incident")
    refs = src.bundle.manifest.snapshots
    for name in SNAPSHOTS:
        assert lo <= pd.Timestamp(refs[name].taken_at) <= hi, name
    assert pd.Timestamp(refs["pg_stat_statements.start"].taken_at) < pd.Timestamp(refs["pg_stat_statements.end"].taken_at)


def test_incident_window_on_p95_overlaps_the_degraded_phase(src):
    start, end = src.default_range()
    series = src.fetch([PRIMARY_SIGNAL], start, end, src.bundle.manifest.step_seconds)[PRIMARY_SIGNAL]
    w = find_incident_window(series)
    lo, hi = _phase(src, "incident")
    assert w.incident[0] < hi and w.incident[1] > lo
    assert w.incident_level > w.baseline_level


def test_the_recording_run_is_kept_with_its_approvals_and_no_machine_path(src):
    """What the runbook applied when the incident was live, for fixture mode to show: approved (by the lab's
    parameters), applied, judged; no folder of the recording machine anywhere in the bundle."""
    kept = src.bundle.recorded_run()
    assert kept is not None and kept["plan"] and kept["remediation"]["apply"] is True
    applied = set(kept["remediation"]["applied"])
    steps = {(r["step"], r.get("action_id")) for r in kept["audit"]}
    for action in applied:
        assert {("approved", action), ("applied", action)} <= steps, action
    approvals = [r for r in kept["audit"] if r["step"] == "approved"]
    assert approvals and all(r["approved_by"] == "lab" and r["change_ticket"] == "LAB" for r in approvals)
    assert any(r["step"] == "assessed" for r in kept["audit"]), "each change's measured effect"
    for f in BUNDLE.rglob("*"):
        if f.is_file():
            text = f.read_text()
            assert "runbook-record-fixture-" not in text and str(ROOT) not in text, f  # the recording's folders
            assert not re.search(r"127\.0\.0\.1:\d|port=\d", text), f  # the private lab's free ports
            assert "None" not in text, f
