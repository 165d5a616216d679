"""Step 01's glue returns one object the notebook reads by name (not a tuple to unpack in the right order)."""

from pathlib import Path

from runbook_lib.settings import Slo
from runbook_lib.sources.fixture_bundle import FixtureSource
from runbook_lib.steps import symptom_correlation, validation

ROOT = Path(__file__).resolve().parents[2]


def test_symptoms_and_validation_hand_over_named_fields():
    src = FixtureSource(ROOT / "fixtures" / "d2-synthetic")
    df = src.fetch(list(src.available()), *src.default_range(), 30)
    found = symptom_correlation.symptoms(df, 30)
    assert found.window.signal == "latency_p95_ms" and found.payload["window"] == found.window.as_dict()
    assert set(found.spans()) == {"baseline", "incident", "recovery"} and found.spans()["incident"] == found.window.incident
    assert list(found.display.index) == list(found.table.index)
    assert symptom_correlation.load_window(found.payload) == found.window
    v = validation.validation(df, found.payload, None, Slo())
    assert v.after == found.window.recovery and v.payload["verdict"] == v.verdict
    assert "FIXED" in validation.validation_conclusion(v.verdict, v.table).upper()
