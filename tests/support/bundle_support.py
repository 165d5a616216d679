"""An edited copy of a committed bundle: the manifest and the signals changed by a test, the rest as recorded."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml


def edited_copy(src: Path, dest: Path, manifest: Callable[[dict], None] | None = None,
                signals: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> Path:
    """Copy bundle ``src`` to ``dest``; ``manifest`` edits bundle.yaml's dict in place, ``signals`` returns the
    edited signals table (indexed by time). Returns ``dest``."""
    shutil.copytree(src, dest)
    if manifest:
        m = yaml.safe_load((dest / "bundle.yaml").read_text())
        manifest(m)
        (dest / "bundle.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    if signals:
        df = pd.read_csv(dest / "signals.csv", parse_dates=["time"], index_col="time")
        signals(df).to_csv(dest / "signals.csv", date_format="%Y-%m-%dT%H:%M:%SZ", index_label="time")
    return dest
