"""Signal backends behind one interface; ``open_source(settings)`` picks the one the parameters name."""

from __future__ import annotations

from ..settings import Settings, resolve_path
from .base import Event, SignalSource, regularize, to_utc

__all__ = ["Event", "SignalSource", "open_source", "regularize", "to_utc"]


def open_source(settings: Settings) -> SignalSource:
    src = settings.source
    if src.kind == "fixture":
        from .fixture import FixtureSource

        return FixtureSource(src.bundle)
    if src.kind == "prometheus":
        from .prometheus import PrometheusSource

        return PrometheusSource(src, **_prometheus_extras(settings))
    if src.kind == "cloudwatch":
        from .cloudwatch import CloudWatchSource

        return CloudWatchSource(src)
    raise AssertionError(f"unhandled source kind {src.kind}")  # settings validation makes this unreachable


def _prometheus_extras(settings: Settings) -> dict:
    """Where a Prometheus source's events come from, and (lab mode) where its default window starts.

    Lab mode reads the lab's own events.jsonl (profile switches, config patches) and starts the window
    at the last ``runbook lab load`` incident scenario, so a lab run needs no window in its parameters."""
    src = settings.source
    events_file = resolve_path(src.events_file) if src.events_file else None
    default_start = None
    if settings.mode == "lab":
        from ..lab.config import EVENTS_FILE
        from ..lab.scenario import scenario_start
        from ..lab.stack import state_dir

        state = state_dir()
        events_file = events_file or state / EVENTS_FILE
        default_start = scenario_start(state)
    return {"events_file": events_file, "default_start": default_start}
