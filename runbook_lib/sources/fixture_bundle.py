"""Backend: an incident bundle on disk (``fixtures/<name>/``). Format: fixtures/README.md."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runbook_lib.errors import FixtureError
from runbook_lib.settings import display_path, resolve_path
from runbook_lib.sources.timeseries import Event, SignalSource, to_utc

BUNDLE_FORMAT = 1
# The snapshots that keep the recording's own runbook run (what it planned, applied and measured live).
RECORDED_RUN_PLAN, RECORDED_RUN_REMEDIATION, RECORDED_RUN_AUDIT = (
    "recorded_run_plan", "recorded_run_remediation", "recorded_run_audit")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SnapshotRef(_M):
    file: str
    taken_at: datetime | None = None
    description: str = ""


class EventRef(_M):
    time: datetime
    label: str
    kind: str = "note"


class Manifest(_M):
    format: int = Field(BUNDLE_FORMAT, ge=1, le=BUNDLE_FORMAT)
    id: str
    title: str
    description: str = ""
    provenance: str
    step_seconds: int = Field(ge=1)
    signals_file: str = "signals.csv"
    events: list[EventRef] = []
    snapshots: dict[str, SnapshotRef] = {}
    # ground truth for tests and for readers; the analysis never reads it
    phases: dict[str, list[datetime]] = {}


def _read_csv(path: Path, where: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise FixtureError(f"{where}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise FixtureError(f"{where}: not a readable CSV table ({str(e).splitlines()[0]})") from None


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


class FixtureBundle:
    """Read access to one bundle: its manifest, signals table and snapshots."""

    def __init__(self, folder: str | Path):
        self.folder = resolve_path(folder)
        self.name = display_path(self.folder)
        manifest_file = self.folder / "bundle.yaml"
        if not manifest_file.exists():
            raise FixtureError(f"fixture bundle {self.name}: bundle.yaml is missing")
        try:
            self.manifest = Manifest.model_validate(yaml.safe_load(manifest_file.read_text()) or {})
        except (UnicodeDecodeError, RecursionError) as e:
            raise FixtureError(f"{self.name}/bundle.yaml: not a readable manifest ({type(e).__name__})") from None
        except (yaml.YAMLError, ValidationError) as e:
            first = e.errors()[0] if isinstance(e, ValidationError) else {"loc": (), "msg": str(e).splitlines()[0]}
            loc = ".".join(map(str, first["loc"])) or "(file)"
            raise FixtureError(f"{self.name}/bundle.yaml: {loc}: {first['msg']}") from None
        self._signals: pd.DataFrame | None = None

    def path(self, rel: str) -> Path:
        p = (self.folder / rel).resolve()
        if self.folder not in p.parents:
            raise FixtureError(f"{self.name}: {rel!r} points outside the bundle")
        return p

    @property
    def signals(self) -> pd.DataFrame:
        if self._signals is None:
            f = self.path(self.manifest.signals_file)
            if not f.exists():
                raise FixtureError(f"fixture bundle {self.name}: {self.manifest.signals_file} is missing")
            where = f"{self.name}/{self.manifest.signals_file}"
            df = _read_csv(f, where)
            if "time" not in df.columns:
                raise FixtureError(f"{where}: no 'time' column")
            try:
                df["time"] = pd.to_datetime(df["time"], utc=True)
            except (ValueError, TypeError) as e:
                raise FixtureError(f"{where}: column 'time' holds a value that is not a timestamp ({e})") from None
            df = df.set_index("time").sort_index()
            for col in df.columns:
                try:
                    df[col] = df[col].astype("float64")
                except (ValueError, TypeError):
                    bad = next((v for v in df[col] if not _is_number(v)), "?")
                    raise FixtureError(f"{where}: column {col!r} holds {bad!r}, not a number") from None
            if not len(df):
                raise FixtureError(f"{where}: no rows")
            self._signals = df
        return self._signals

    def snapshot(self, name: str) -> Any:
        """A snapshot by name: a DataFrame for .csv files, parsed JSON for .json files."""
        ref = self.manifest.snapshots.get(name)
        if ref is None:
            raise FixtureError(f"fixture bundle {self.name} has no snapshot {name!r} "
                               f"(it has: {', '.join(self.manifest.snapshots) or 'none'})")
        f = self.path(ref.file)
        if not f.exists():
            raise FixtureError(f"fixture bundle {self.name}: snapshot file {ref.file} is missing")
        where = f"{self.name}/{ref.file}"
        if f.suffix == ".csv":
            return _read_csv(f, where)
        try:
            return json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FixtureError(f"{where}: not valid JSON ({e})") from None

    def has_snapshot(self, name: str) -> bool:
        return name in self.manifest.snapshots

    def recorded_run(self) -> dict[str, Any] | None:
        """The recording's own ``runbook run`` (suite.recorder.keep_recorded_run): ``plan``, ``remediation``
        (either may be None) and ``audit`` (a list of audit lines); None when the bundle does not keep it."""
        if not self.has_snapshot(RECORDED_RUN_AUDIT):
            return None
        audit = self.snapshot(RECORDED_RUN_AUDIT)
        if not isinstance(audit, list):
            raise FixtureError(f"{self.name}: snapshot {RECORDED_RUN_AUDIT!r} is not a list of audit lines")
        return {"audit": audit, **{key: self.snapshot(name) if self.has_snapshot(name) else None
                                   for key, name in (("plan", RECORDED_RUN_PLAN),
                                                     ("remediation", RECORDED_RUN_REMEDIATION))}}

    def check(self) -> None:
        """Fail now, naming the file, if any file the manifest lists is missing or does not parse."""
        _ = self.signals
        for name, ref in self.manifest.snapshots.items():
            if not self.path(ref.file).exists():
                raise FixtureError(f"fixture bundle {self.name}: snapshot {name!r} file {ref.file} is missing")
            self.snapshot(name)


class FixtureSource(SignalSource):
    def __init__(self, bundle: str | Path):
        self.bundle = FixtureBundle(bundle)
        self.description = f"fixture bundle {self.bundle.name}"

    def available(self) -> list[str]:
        return list(self.bundle.signals.columns)

    def default_range(self):
        idx = self.bundle.signals.index
        return idx[0], idx[-1]

    def events(self) -> list[Event]:
        return [Event(to_utc(e.time), e.label, e.kind) for e in self.bundle.manifest.events]

    def _fetch(self, names, start, end, step_seconds):
        df = self.bundle.signals
        return df.loc[(df.index >= start) & (df.index <= end), names]
