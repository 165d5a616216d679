"""Step 01, symptom correlation: find the incident window, compare every signal across it, see what moved first.

Each function is one notebook cell's work; the conclusion text is generated from the numbers, so it stays
true for any incident bundle.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from runbook_lib.diagnose.incident_window import find_incident_window
from runbook_lib.diagnose.symptoms import first_movers, symptom_table
from runbook_lib.errors import NoLevelChange
from runbook_lib.model import IncidentWindow
from runbook_lib.signal_catalog import CATALOG, PRIMARY_SIGNAL
from runbook_lib.steps.formatting import fmt, records


@dataclass
class Symptoms:
    """What 01 found: the window, the full symptom table, the table to show, and symptoms.json. A healthy
    window (p95 at one level, within its SLO) has no incident window: ``window`` is None, ``healthy`` says why."""

    window: IncidentWindow | None
    table: pd.DataFrame
    display: pd.DataFrame
    payload: dict
    healthy: str | None = None

    def spans(self) -> dict:
        """The windows to shade on the charts."""
        if self.window is None:
            return {}
        return {"baseline": self.window.baseline, "incident": self.window.incident, "recovery": self.window.recovery}

    def lead(self) -> pd.DataFrame:
        """Seconds each signal moved before p95 (the lead-lag chart's data; empty on a healthy window)."""
        if self.window is None:
            return pd.DataFrame(columns=["signal", "leads_primary_by_s"])
        return self.table.dropna(subset=["leads_primary_by_s"]).reset_index()

    def conclusion(self) -> str:
        if self.window is None:
            return (f"**Concluded.** No incident in this window: {self.healthy}. There is nothing to diagnose or "
                    "change; the suite stops after this notebook (`runbook run` exits with status 3). If you "
                    "expected an incident here, widen the window so it includes it and a baseline.")
        return symptoms_conclusion(self.window, self.table)


def window_frame(win: IncidentWindow | None) -> pd.DataFrame:
    if win is None:
        return pd.DataFrame([{"window": "incident", "start (UTC)": "-", "end (UTC)": "-", "minutes": 0}]).set_index(
            "window")
    rows = []
    for name, span, level in (("baseline", win.baseline, win.baseline_level),
                              ("incident", win.incident, win.incident_level),
                              ("recovery", win.recovery, win.recovery_level)):
        if span is None:
            rows.append({"window": name, "start (UTC)": "-", "end (UTC)": "-", "minutes": 0, f"median {win.signal}": None})
            continue
        rows.append({"window": name, "start (UTC)": f"{span[0]:%Y-%m-%d %H:%M:%S}", "end (UTC)": f"{span[1]:%H:%M:%S}",
                     "minutes": round((span[1] - span[0]).total_seconds() / 60, 1),
                     f"median {win.signal}": round(level, 1)})
    return pd.DataFrame(rows).set_index("window")


def symptoms(df: pd.DataFrame, step_seconds: int, slo_p95_ms: float | None = None) -> Symptoms:
    """The incident window and the symptom table for 01. With the p95 SLO, a window whose p95 stays at one
    level within the SLO is a healthy window (an answer, not an error); above the SLO all along there is no
    baseline to compare with, which stays an error (NoIncidentFound)."""
    try:
        win = find_incident_window(df[PRIMARY_SIGNAL], CATALOG[PRIMARY_SIGNAL].higher_is_worse)
    except NoLevelChange as e:
        if slo_p95_ms is None or e.level > slo_p95_ms:
            raise
        return _healthy(df, e.level, slo_p95_ms, step_seconds)
    table = symptom_table(df, win, step_seconds)
    display = pd.DataFrame({
        "signal": [CATALOG[s].label for s in table.index],
        "baseline": [fmt(r.baseline, r.unit) for r in table.itertuples()],
        "incident": [fmt(r.incident, r.unit) for r in table.itertuples()],
        "change": [f"{r.ratio:.2f}x" if pd.notna(r.ratio) else "-" for r in table.itertuples()],
        "worse": ["yes" if r.worse else "" for r in table.itertuples()],
        "moved at (UTC)": [f"{r.onset:%H:%M:%S}" if pd.notna(r.onset) else "-" for r in table.itertuples()],
        "before p95 by": [f"{r.leads_primary_by_s:+.0f} s" if pd.notna(r.leads_primary_by_s) else "-"
                          for r in table.itertuples()],
        "rho vs p95": [round(r.spearman_vs_primary, 2) if pd.notna(r.spearman_vs_primary) else None
                       for r in table.itertuples()],
    }, index=table.index)
    payload = {"window": win.as_dict(), "step_seconds": step_seconds, "first_movers": first_movers(table),
               "signals": records(table)}
    return Symptoms(win, table, display, payload)


def _healthy(df: pd.DataFrame, level: float, slo_p95_ms: float, step_seconds: int) -> Symptoms:
    why = (f"{CATALOG[PRIMARY_SIGNAL].label} stayed at one level, median {level:.0f} ms, within its SLO of "
           f"{slo_p95_ms:.0f} ms")
    rows = [{"signal": name, "label": CATALOG[name].label if name in CATALOG else name,
             "median": float(df[name].median()), "max": float(df[name].max())}
            for name in df.columns if df[name].notna().any()]
    display = pd.DataFrame({"signal": [r["label"] for r in rows],
                            "median": [fmt(r["median"], CATALOG[r["signal"]].unit) if r["signal"] in CATALOG
                                       else f"{r['median']:.3g}" for r in rows],
                            "max": [fmt(r["max"], CATALOG[r["signal"]].unit) if r["signal"] in CATALOG
                                    else f"{r['max']:.3g}" for r in rows]},
                           index=pd.Index([r["signal"] for r in rows], name="signal"))
    payload = {"healthy": True, "finding": why, "step_seconds": step_seconds, "window": None,
               "levels": [{k: r[k] for k in ("signal", "median", "max")} for r in rows]}
    return Symptoms(None, pd.DataFrame(), display, payload, healthy=why)


def symptoms_conclusion(win: IncidentWindow, table: pd.DataFrame) -> str:
    movers = first_movers(table)
    unchanged = [CATALOG[s].label for s in table.index if not table.loc[s, "changed"]]
    first = table.dropna(subset=["onset"]).iloc[0] if table["onset"].notna().any() else None
    lines = [f"**Concluded.** {CATALOG[win.signal].label} went from {win.baseline_level:.0f} ms to "
             f"{win.incident_level:.0f} ms ({win.ratio:.1f}x) at {win.incident[0]:%H:%M:%S} UTC"
             + (f" and recovered to {win.recovery_level:.0f} ms at {win.recovery[0]:%H:%M:%S}." if win.recovery
                else "; it has not recovered in this window.")]
    if first is not None:
        lines.append(f"The first signal to move was **{CATALOG[first.name].label}** at {first.onset:%H:%M:%S}, "
                     f"{first.leads_primary_by_s:.0f} s before p95.")
    if movers:
        lines.append("Moved before or with p95 (cause side): " + ", ".join(CATALOG[m].label for m in movers) + ".")
    if unchanged:
        lines.append("Did not change: " + ", ".join(unchanged) + ".")
    return "\n\n".join(lines)


def load_window(symptoms_json: dict) -> IncidentWindow:
    return IncidentWindow.from_dict(symptoms_json["window"])


def symptom_frame(symptoms_json: dict) -> pd.DataFrame:
    t = pd.DataFrame(symptoms_json["signals"]).set_index("signal")
    t["onset"] = pd.to_datetime(t["onset"], utc=True)
    return t
