"""The one interface every signal backend implements.

``fetch(names, start, end, step_seconds)`` returns a DataFrame indexed by UTC time (named ``time``),
one float column per requested signal name from the catalog (``runbook_lib.signal_catalog``), resampled
onto the regular grid ``start, start+step, ...``; gaps are NaN. Analysis code only ever sees this.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from runbook_lib.errors import UnknownSignalError
from runbook_lib.signal_catalog import CATALOG


@dataclass(frozen=True)
class Event:
    """Something that happened at a point in time, drawn as a marker on every chart."""

    time: pd.Timestamp
    label: str
    kind: str = "note"  # deploy | alert | remediation | note

    def as_dict(self) -> dict:
        return {"time": self.time.isoformat(), "label": self.label, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> Event:
        return cls(pd.Timestamp(d["time"]).tz_convert("UTC") if pd.Timestamp(d["time"]).tzinfo
                   else pd.Timestamp(d["time"], tz="UTC"), d["label"], d.get("kind", "note"))


class SignalSource(ABC):
    """A backend that can return named signals for a time range."""

    #: short human description, e.g. "fixture bundle fixtures/d2-latency" (never contains secrets)
    description: str = ""

    @abstractmethod
    def available(self) -> list[str]:
        """Signal names this backend can return."""

    @abstractmethod
    def _fetch(self, names: list[str], start: pd.Timestamp, end: pd.Timestamp, step_seconds: int) -> pd.DataFrame:
        """Backend part of fetch(): columns may come back in any order, times off-grid."""

    def default_range(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """The range to analyse when the parameters give none (a bundle's whole recording)."""
        return None

    def events(self) -> list[Event]:
        return []

    def fetch(self, names: list[str], start: datetime, end: datetime, step_seconds: int) -> pd.DataFrame:
        names = list(names)
        unknown = [n for n in names if n not in CATALOG]
        if unknown:
            raise UnknownSignalError(f"unknown signal {unknown[0]!r} requested from {self.description}")
        missing = [n for n in names if n not in self.available()]
        if missing:
            raise UnknownSignalError(
                f"signal {missing[0]!r} is not provided by {self.description} (it has: {', '.join(self.available())})")
        start, end = to_utc(start), to_utc(end)
        raw = self._fetch(names, start, end, step_seconds)
        return regularize(raw, names, start, end, step_seconds)


def to_utc(t) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def regularize(raw: pd.DataFrame, names: list[str], start: pd.Timestamp, end: pd.Timestamp,
               step_seconds: int) -> pd.DataFrame:
    """Put samples on the regular grid [start, end] at ``step_seconds``: nearest sample within half a step."""
    grid = pd.date_range(start, end, freq=f"{step_seconds}s", tz="UTC", name="time")
    if raw.empty:
        out = pd.DataFrame(index=grid, columns=names, dtype="float64")
    else:
        raw = raw.sort_index()
        raw.index = pd.DatetimeIndex(raw.index).tz_convert("UTC") if raw.index.tz is not None \
            else pd.DatetimeIndex(raw.index).tz_localize("UTC")
        raw = raw[~raw.index.duplicated(keep="last")]
        out = raw.reindex(columns=names).astype("float64").reindex(
            grid, method="nearest", tolerance=pd.Timedelta(seconds=step_seconds / 2))
    out.index.name = "time"
    out.columns.name = "signal"
    return out
