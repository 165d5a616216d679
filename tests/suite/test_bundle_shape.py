"""The recorder's self-check: a bundle with the D2 incident's whole story passes; each way a recording can fall
short (no 5xx, a saturated CPU, a short recovery, no alerts, a mild slowdown, a warm cache, no fixes, no
healthy baseline) is named, and only that one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from runbook_lib.errors import RecordError
from runbook_lib.settings import Slo
from runbook_lib.sources.fixture_bundle import FixtureBundle
from runbook_lib.suite import bundle_shape, recorder
from tests.support.bundle_support import edited_copy

ROOT = Path(__file__).resolve().parents[2]
SLO = Slo(latency_p95_ms=100, error_ratio=0.01, cache_hit_ratio=0.80)


def _bundle(tmp_path: Path, edit_signals=None, edit_manifest=None) -> FixtureBundle:
    """fixtures/d2-synthetic (the write-up's levels) with its alerts as the recorder writes them, then edited."""
    def manifest(m: dict) -> None:
        m["events"] = [e for e in m["events"] if e["kind"] != "alert"] + [
            {"time": "2026-11-03T10:06:00Z", "label": "HighLatency firing", "kind": "alert"},
            {"time": "2026-11-03T11:40:00Z", "label": "HighLatency resolved", "kind": "alert"}]
        if edit_manifest:
            edit_manifest(m)

    return FixtureBundle(edited_copy(ROOT / "fixtures" / "d2-synthetic", tmp_path / "b", manifest, edit_signals))


def _between(df: pd.DataFrame, a: str, b: str):
    return (df.index >= pd.Timestamp(a)) & (df.index < pd.Timestamp(b))


INCIDENT = ("2026-11-03T10:00:00Z", "2026-11-03T11:30:00Z")


def test_the_whole_story_passes(tmp_path):
    assert bundle_shape.problems(_bundle(tmp_path), SLO) == []


def _set(column, value, span=INCIDENT):
    def edit(df):
        df.loc[_between(df, *span), column] = value
        return df
    return edit


@pytest.mark.parametrize("edit_signals, edit_manifest, expected", [
    (_set("error_ratio", 0.0), None, "5xx in the incident 0.0%, outside 3%-20%"),
    (_set("error_ratio", 0.45), None, "5xx in the incident 45.0%, outside 3%-20%"),
    (_set("cpu_utilization", 0.97), None, "CPU 97% in the incident: saturated"),
    (_set("latency_p95_ms", 120.0), None, "p95 rose 3.0x"),
    (_set("cache_hit_ratio", 0.5), None, "the cache hit ratio in the incident is 50.0%, not under 10%"),
    (_set("memory_utilization", 0.95), None, "memory rose"),
    (None, lambda m: m["events"].__setitem__(slice(None), [e for e in m["events"] if e["kind"] != "alert"]),
     "alerts: 0 firing in the incident, 0 resolved after the fix"),
    (None, lambda m: m["events"].__setitem__(slice(None), [e for e in m["events"] if e["kind"] != "remediation"]),
     "no remediation event"),
    (None, lambda m: m["phases"]["baseline"].__setitem__(0, "2026-11-03T09:59:00Z"),
     "the healthy baseline lasts 60 s"),
    (_set("latency_p95_ms", 400.0, ("2026-11-03T11:30:00Z", "2026-11-03T13:00:00Z")), None,
     "not recovered after the fixes: p95 400 ms"),
])
def test_each_shortfall_is_named_alone(tmp_path, edit_signals, edit_manifest, expected):
    found = bundle_shape.problems(_bundle(tmp_path, edit_signals, edit_manifest), SLO)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_short_recovery_is_named(tmp_path):
    def cut(df):
        return df.loc[df.index <= pd.Timestamp("2026-11-03T11:33:00Z")]
    found = bundle_shape.problems(_bundle(tmp_path, cut), SLO)
    assert any(p.endswith("of recovery after the last change, less than 300 s") for p in found), found


def test_the_bundled_incident_has_the_d2_shape():
    """Re-recorded by `runbook lab record-fixture` (issue 18): every symptom, the fixes, alerts, the recovery."""
    assert bundle_shape.problems(FixtureBundle(ROOT / "fixtures" / "d2-latency"), SLO) == []


def _without_5xx(df):
    df["error_ratio"] = 0.0
    return df


def test_the_recorder_refuses_an_off_shape_recording_and_keeps_it_aside(tmp_path):
    """The bundled incident without its 5xx (as it was before the re-recording) is refused and kept aside."""
    tmp = edited_copy(ROOT / "fixtures" / "d2-latency", tmp_path / ".b.recording", signals=_without_5xx)
    out = tmp_path / "b"
    settings = type("S", (), {"slo": SLO})()
    with pytest.raises(RecordError, match=r"not the D2 incident's shape.*5xx in the incident 0\.0%") as err:
        recorder._refuse_off_shape(tmp, out, settings)
    assert ".b.rejected" in (err.value.hint or "")
    assert not out.exists() and (tmp_path / ".b.rejected" / "bundle.yaml").exists()
