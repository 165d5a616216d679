"""What a runbook notebook needs in a few calls: settings, run folder, signals, figures, hand-over files.

A notebook's parameters cell names a parameters file and a run folder; ``open_step`` validates the
parameters (overridden by any section papermill injected), finds the run folder and sets the
plotly renderer. Outputs never contain absolute paths or wall-clock times, so the committed
golden notebooks compare equal under nbval on any machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio

from .rundir import FIGURES_DIR, read_json, write_json
from .settings import SECTIONS, Settings, display_path, load_settings, project_root, resolve_path
from .sources import Event, SignalSource, open_source, to_utc

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
            from .errors import SettingsError

            raise SettingsError(f"{display_path(self.parameters_file)}: window: give start/end or last for a "
                                f"{self.settings.source.kind} source")
        return rng

    def signals(self) -> pd.DataFrame:
        if self._signals is None:
            start, end = self.time_range()
            self._signals = self.source.fetch(self.settings.signals, start, end, self.settings.window.step_seconds)
        return self._signals

    def events(self) -> list[Event]:
        return self.source.events()

    # --- hand-over files -------------------------------------------------------------------------
    def read(self, name: str) -> Any:
        return read_json(self.run_dir, name)

    def write(self, name: str, data: Any) -> str:
        write_json(self.run_dir / name, data)
        return f"wrote {name}"

    def figure(self, fig, name: str):
        """Save the figure for the export and return it for display."""
        folder = self.run_dir / FIGURES_DIR
        folder.mkdir(exist_ok=True)
        (folder / f"{self.name[:2]}-{name}.json").write_text(pio.to_json(fig, pretty=False))
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
