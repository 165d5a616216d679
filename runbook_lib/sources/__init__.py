"""Signal backends behind one interface; ``open_source(settings)`` picks the one the parameters name."""

from __future__ import annotations

from runbook_lib.settings import Settings, resolve_path
from runbook_lib.sources.events import read_events_file
from runbook_lib.sources.timeseries import Event, SignalSource, regularize, to_utc

__all__ = ["Event", "SignalSource", "open_source", "regularize", "to_utc"]


def open_source(settings: Settings) -> SignalSource:
    # Each backend is imported when chosen: boto3 (CloudWatch) alone takes about a second to import.
    src = settings.source
    if src.kind == "fixture":
        from runbook_lib.sources.fixture_bundle import FixtureSource

        return FixtureSource(src.bundle)
    if src.kind == "prometheus":
        from runbook_lib.sources.prometheus import PrometheusSource

        return PrometheusSource(src, **_prometheus_extras(settings))
    if src.kind == "cloudwatch":
        from runbook_lib.sources.cloudwatch import CloudWatchSource

        return CloudWatchSource(src)
    raise AssertionError(f"unhandled source kind {src.kind}")  # settings validation makes this unreachable


def _prometheus_extras(settings: Settings) -> dict:
    """Where a Prometheus source's events come from, and where its default window starts.

    ``source.events_file`` (a deploy log; the lab's events.jsonl) gives the chart markers; with
    ``window.start_at_event`` the default window starts at the last event with that label (the lab: its last
    incident scenario) and ends now, so a lab run needs no window in its parameters."""
    src = settings.source
    events_file = resolve_path(src.events_file) if src.events_file else None
    default_start = None
    label = settings.window.start_at_event
    if label is not None and events_file is not None:
        starts = [e.time for e in read_events_file(events_file) if e.label == label]
        default_start = starts[-1].to_pydatetime() if starts else None
    return {"events_file": events_file, "default_start": default_start}
