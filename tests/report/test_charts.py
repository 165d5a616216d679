"""Charts: event markers and shaded windows on every signal row, SLO lines where a target exists."""

import pandas as pd

from runbook_lib.report.charts import events_table, signal_grid
from runbook_lib.sources.timeseries import Event


def test_events_table_with_no_events():
    assert list(events_table([]).columns) == ["time (UTC)", "kind", "event"]


def test_signal_grid_marks_events_windows_and_slo():
    t = pd.date_range("2026-11-03T10:00:00Z", periods=20, freq="30s")
    df = pd.DataFrame({"latency_p95_ms": range(20), "cache_hit_ratio": [0.9] * 20}, index=t)
    events = [Event(t[5], "deploy v2", "deploy"), Event(t[15], "runbook: Set TTL", "remediation")]
    fig = signal_grid(df, ["latency_p95_ms", "cache_hit_ratio"], events, {"incident": (t[5], t[15])},
                      {"latency_p95_ms": 10.0}, title="t")
    shapes = fig.layout.shapes
    assert sum(s.type == "line" and s.line.dash == "dash" for s in shapes) == 2  # one marker per event
    assert sum(s.type == "rect" for s in shapes) >= 1  # the incident window
    assert [a.hovertext for a in fig.layout.annotations if a.hovertext] == ["deploy v2", "runbook: Set TTL"]
    assert any(getattr(s, "y0", None) == 10.0 and s.line.dash == "dot" for s in shapes)  # the SLO line
