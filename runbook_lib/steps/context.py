"""What a runbook notebook needs in a few calls: settings, run folder, signals, figures, hand-over files.

A notebook's parameters cell names a parameters file and a run folder; ``open_step`` validates the
parameters (overridden by any section papermill injected), finds the run folder and sets the
plotly renderer. Outputs never contain absolute paths or wall-clock times, so the committed
golden notebooks compare equal under nbval on any machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio

from runbook_lib.errors import RunbookError, SettingsError
from runbook_lib.redaction import redact_text
from runbook_lib.run_folder import FIGURES_DIR, read_json, write_json
from runbook_lib.settings import SECTIONS, Settings, display_path, load_settings, project_root, resolve_path
from runbook_lib.sources import Event, SignalSource, open_source, to_utc

# Longest a step waits for live data (e.g. 05 for data after the change): a runbook step should not
# block an SRE for longer; beyond it the step says to re-run later.
MAX_WAIT = pd.Timedelta(minutes=10)
# plotly_mimetype: deterministic JSON output that JupyterLab renders natively and nbval compares.
RENDERER = "plotly_mimetype"
# Display options for readable tables at 3 a.m.
pd.set_option("display.max_columns", 30)
pd.set_option("display.width", 200)
pd.set_option("display.max_colwidth", 90)
pd.set_option("display.precision", 3)


def default_run_dir(settings: Settings) -> Path:
    env = os.environ.get("RUNBOOK_RUN_DIR")
    if env:
        return Path(env)
    return project_root() / "runs" / settings.incident.id / "interactive"


@dataclass
class Step:
    name: str
    settings: Settings
    run_dir: Path
    parameters_file: Path
    _source: SignalSource | None = field(default=None, repr=False)
    _signals: pd.DataFrame | None = field(default=None, repr=False)

    # --- data ------------------------------------------------------------------------------------
    @property
    def source(self) -> SignalSource:
        if self._source is None:
            self._source = open_source(self.settings)
        return self._source

    def time_range(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        w = self.settings.window
        if w.start and w.end:
            return to_utc(w.start), to_utc(w.end)
        if w.last:
            end = pd.Timestamp.now(tz="UTC").floor(f"{w.step_seconds}s")
            return end - pd.Timedelta(w.last), end
        rng = self.source.default_range()
        if rng is None:
            label = self.settings.window.start_at_event
            if label is not None:
                raise SettingsError(f"{display_path(self.parameters_file)}: window.start_at_event: no event "
                                    f"{label!r} in {self.settings.source.events_file}",
                                    hint="the lab: start a scenario with 'runbook lab load'; or give window.last")
            raise SettingsError(f"{display_path(self.parameters_file)}: window: give start/end or last for a "
                                f"{self.settings.source.kind} source")
        return rng

    def signals(self, since: pd.Timestamp | None = None) -> pd.DataFrame:
        """The window's signals; ``since`` widens a trailing window back to that time (e.g. the baseline
        01 found, which a later step's ``window.last`` may no longer reach)."""
        if self._signals is None:
            start, end = self.time_range()
            if since is not None:
                start = min(start, to_utc(since))
            self._signals = self.source.fetch(self.settings.signals, start, end, self.settings.window.step_seconds)
        return self._signals

    def wait_until(self, when: pd.Timestamp | None, what: str) -> str:
        """Wait (with a progress bar, bounded by MAX_WAIT) until ``when`` on a live source; a recorded
        bundle never waits. Returns what happened, for the notebook to show."""
        if when is None or self.settings.source.kind == "fixture":
            return "nothing to wait for"
        left = (to_utc(when) - pd.Timestamp.now(tz="UTC")).total_seconds()
        if left <= 0:
            return f"{what}: already available"
        if left > MAX_WAIT.total_seconds():
            raise RunbookError(f"{what} is {left:.0f} s away, more than the {MAX_WAIT.total_seconds():.0f} s this "
                               "step waits", hint="re-run this step later: runbook run --only 05 --out RUN_DIR")
        from tqdm import tqdm

        with tqdm(total=round(left), desc=f"waiting for {what}", unit="s") as bar:
            while (remaining := (to_utc(when) - pd.Timestamp.now(tz="UTC")).total_seconds()) > 0:
                time.sleep(min(1.0, remaining))
                bar.n = round(left - max(remaining, 0))
                bar.refresh()
        self._signals = None  # fetch again: the data now reaches past the wait
        return f"{what}: waited {left:.0f} s"

    def events(self) -> list[Event]:
        """The source's events inside the data's range (a lab's log also holds earlier scenarios)."""
        if self._signals is not None and len(self._signals):
            start, end = self._signals.index[0], self._signals.index[-1]
        else:
            start, end = self.time_range()
        alerts = getattr(self.source, "alert_events", None)
        fired = alerts(start, end, self.settings.window.step_seconds) if alerts else []
        # an event label is free text from a deploy log: whatever looks like a credential is masked before any
        # chart, table or file shows it
        return sorted([Event(e.time, redact_text(e.label), e.kind) for e in [*self.source.events(), *fired]
                       if start <= e.time <= end], key=lambda e: e.time)

    # --- hand-over files -------------------------------------------------------------------------
    def read(self, name: str) -> Any:
        return read_json(self.run_dir, name)

    def write(self, name: str, data: Any) -> str:
        write_json(self.run_dir / name, data)
        return f"wrote {name}"

    def figure(self, fig, name: str):
        """Save the figure for the export and return it for display, with anything shaped like a credential (in an
        event label from a deploy log, say) masked in both."""
        folder = self.run_dir / FIGURES_DIR
        folder.mkdir(exist_ok=True)
        raw = pio.to_json(fig, pretty=False)
        text = redact_text(raw)
        if text != raw:
            try:
                fig = pio.from_json(text)
            except ValueError:  # a mask that broke the JSON: keep the figure, drop nothing silently
                text = raw
        (folder / f"{self.name[:2]}-{name}.json").write_text(text)
        return fig

    def header(self) -> pd.DataFrame:
        s = self.settings
        apply = "APPLY (changes will be made)" if s.remediation.apply else "dry run (nothing is changed)"
        rows = {"incident": f"{s.incident.id}: {s.incident.title}", "mode": s.mode,
                "source": self.source.description, "parameters": display_path(self.parameters_file),
                "remediation": apply, "SLO": f"p95 <= {s.slo.latency_p95_ms:g} ms, 5xx <= {s.slo.error_ratio:.1%}, "
                                             f"cache hit >= {s.slo.cache_hit_ratio:.0%}"}
        return pd.DataFrame({"value": rows}).rename_axis("step " + self.name)


def open_step(name: str, parameters_file: str, run_dir: str | None, notebook_globals: dict | None = None) -> Step:
    """Validate parameters (file + sections injected by papermill) and prepare the run folder."""
    overrides = {k: v for k, v in (notebook_globals or {}).items() if k in SECTIONS and v is not None}
    path = resolve_path(parameters_file)
    settings = load_settings(path, overrides)
    folder = Path(run_dir) if run_dir else default_run_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    pio.renderers.default = RENDERER
    return Step(name=name, settings=settings, run_dir=folder, parameters_file=path)
