"""The recorder's pure parts: times, events from the parameters' event log, phases. (Recording from live
servers runs in tests/lab/test_stack.py, against the lab's Prometheus, PostgreSQL and Redis.)"""

import json

import pytest

from runbook_lib.errors import RecordError

EVENTS = "events.jsonl"


def _write_events(path, *events):
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_record_times():
    from datetime import UTC, datetime

    from runbook_lib.suite.recorder import parse_when

    now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert parse_when("now", now) == now
    assert parse_when("-10m", now) == datetime(2026, 11, 29, 9, 50, tzinfo=UTC)
    assert parse_when("+1h", now) == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)
    assert parse_when("2026-11-29T08:00:00Z") == datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    assert parse_when("2026-11-29T08:00:00") == datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    with pytest.raises(RecordError, match="cannot read"):
        parse_when("yesterday")


def test_recorded_events_take_the_runs_changes_and_give_phases(tmp_path):
    import json
    from datetime import UTC, datetime

    from runbook_lib.suite.recorder import _events, phases_from_events

    _write_events(tmp_path / EVENTS,
                  {"time": "2026-11-29T10:00:00+00:00", "label": "scenario start", "kind": "note"},
                  {"time": "2026-11-29T10:02:30+00:00", "label": "degraded profile", "kind": "deploy"},
                  {"time": "2026-11-29T10:09:00+00:00", "label": "config patch: cache_ttl_s=300", "kind": "remediation"})
    run = tmp_path / "run"
    run.mkdir()
    audit = [{"ts": "2026-11-29T10:09:00.2+00:00", "step": "applied", "action_id": "a", "title": "Set TTL",
              "changed": True},
             {"ts": "2026-11-29T10:09:30+00:00", "step": "verified", "action_id": "a", "title": "Set TTL"},
             {"ts": "2026-11-29T10:10:00+00:00", "step": "applied", "action_id": "b", "title": "Warm", "changed": False},
             {"ts": "2026-11-29T10:11:00+00:00", "step": "applied", "action_id": "c", "title": "Create index",
              "changed": True}]
    (run / "audit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in audit))
    start, end = datetime(2026, 11, 29, 10, 1, tzinfo=UTC), datetime(2026, 11, 29, 10, 20, tzinfo=UTC)
    assert [e["label"] for e in _events(tmp_path / EVENTS, start, end)] == ["degraded profile", "config patch: cache_ttl_s=300"]
    events = _events(tmp_path / EVENTS, start, end, run)
    assert [(e["kind"], e["label"]) for e in events] == [
        ("deploy", "degraded profile"), ("remediation", "runbook: Set TTL"), ("remediation", "runbook: Create index")]
    phases = phases_from_events(events, start, end)
    t = lambda hm: datetime(2026, 11, 29, 10, hm[0], hm[1], tzinfo=UTC)
    assert phases == {"baseline": [start, t((2, 30))], "incident": [t((2, 30)), t((9, 0))],
                      "recovery": [t((11, 0)), end]}
    assert phases_from_events(events[:1], start, end) == {"baseline": [start, t((2, 30))],
                                                          "incident": [t((2, 30)), end]}
    assert phases_from_events([], start, end) == {}
    with pytest.raises(RecordError, match="audit.jsonl does not exist"):
        _events(tmp_path / EVENTS, start, end, tmp_path / "nowhere")


def test_the_recording_run_is_kept_in_the_bundle_without_its_folders(tmp_path):
    """The run that fixed the incident while it was recorded: its plan, outcomes and audit go into the bundle
    (recorded_run/), its folders written as placeholders, and the bundle reads them back."""
    import shutil
    from pathlib import Path

    import yaml

    from runbook_lib.sources.fixture_bundle import FixtureBundle
    from runbook_lib.suite.recorder import keep_recorded_run

    lab, run = tmp_path / "lab", tmp_path / "lab" / "runs" / "r1"
    run.mkdir(parents=True)
    audit = [{"ts": "2026-11-29T10:09:00+00:00", "step": "approved", "action_id": "a", "approved_by": "lab",
              "change_ticket": "LAB"},
             {"ts": "2026-11-29T10:09:01+00:00", "step": "applied", "action_id": "a", "changed": True,
              "commands": [f"patch {lab}/config.json: cache_ttl_s=300"], "run": str(run)}]
    (run / "audit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in audit) + '{"torn')
    (run / "plan.json").write_text(json.dumps({"actions": [{"id": "a", "title": "Set TTL"}]}))
    (run / "remediation.json").write_text(json.dumps({"apply": True, "applied": ["a"], "mode": "lab"}))
    bundle = tmp_path / "bundle"
    shutil.copytree(Path(__file__).resolve().parents[2] / "fixtures" / "d2-synthetic", bundle)
    refs = keep_recorded_run(bundle, run, {str(run): "<run folder>", str(lab): "${RUNBOOK_LAB_DIR}"})
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    manifest["snapshots"].update({k: v.model_dump(mode="json", exclude_none=True) for k, v in refs.items()})
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    for f in (bundle / "recorded_run").iterdir():
        assert str(tmp_path) not in f.read_text(), f.name
    kept = FixtureBundle(bundle).recorded_run()
    assert [r["step"] for r in kept["audit"]] == ["approved", "applied"]  # the torn line is not kept
    assert kept["audit"][1]["commands"] == ["patch ${RUNBOOK_LAB_DIR}/config.json: cache_ttl_s=300"]
    assert kept["audit"][1]["run"] == "<run folder>"
    assert kept["plan"]["actions"][0]["title"] == "Set TTL" and kept["remediation"]["applied"] == ["a"]
    assert FixtureBundle(Path(__file__).resolve().parents[2] / "fixtures" / "d2-synthetic").recorded_run() is None
