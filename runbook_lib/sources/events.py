"""Events from a JSON Lines file: one ``{"time", "label", "kind"}`` object per line.

The format of the lab's ``events.jsonl`` and of a minimal deploy log; a Prometheus source reads it for
the markers on its charts (``source.events_file``). ``append_event`` writes one line in that format (the
lab's profile switches, a remediation's marker): one writer, one reader, one format.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from runbook_lib.errors import SourceError
from runbook_lib.settings import display_path
from runbook_lib.sources.timeseries import Event

KINDS = ("deploy", "alert", "remediation", "note")


def append_event(path: Path, label: str, kind: str = "note") -> None:
    """Append one event, stamped now (UTC, seconds), to a JSON Lines event log."""
    line = json.dumps({"time": datetime.now(UTC).isoformat(timespec="seconds"), "label": label, "kind": kind})
    with open(path, "a") as f:
        f.write(line + "\n")


def read_events_file(path: Path) -> list[Event]:
    """Every event in the file, in time order; a missing file has none; a bad line is a SourceError."""
    if not path.exists():
        return []
    events = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            event = Event.from_dict(data)
            if event.kind not in KINDS:
                raise ValueError(f"kind {event.kind!r} is not one of {', '.join(KINDS)}")
        except (ValueError, KeyError, TypeError) as e:
            raise SourceError(f"{display_path(path)} line {n}: not an event ({e.__class__.__name__}: {e})",
                              hint='each line must be a JSON object like {"time": "2026-01-01T00:00:00Z", '
                                   '"label": "deploy v2", "kind": "deploy"}') from None
        events.append(event)
    return sorted(events, key=lambda e: e.time)
