"""Signal backends behind one interface; ``open_source(settings)`` picks the one the parameters name."""

from __future__ import annotations

from ..settings import Settings
from .base import Event, SignalSource, regularize, to_utc

__all__ = ["Event", "SignalSource", "open_source", "regularize", "to_utc"]


def open_source(settings: Settings) -> SignalSource:
    src = settings.source
    if src.kind == "fixture":
        from .fixture import FixtureSource

        return FixtureSource(src.bundle)
    if src.kind == "prometheus":
        from .prometheus import PrometheusSource

        return PrometheusSource(src)
    if src.kind == "cloudwatch":
        from .cloudwatch import CloudWatchSource

        return CloudWatchSource(src)
    raise AssertionError(f"unhandled source kind {src.kind}")  # settings validation makes this unreachable
