"""Plotly figures for the runbook: signals over time with event markers, windows and SLO lines.

Figures are deterministic (no random ids, fixed template) so nbval can compare them, and every
figure is also saved into the run folder for the postmortem export.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from runbook_lib.signal_catalog import CATALOG
from runbook_lib.sources.timeseries import Event

TEMPLATE = "plotly_white"
EVENT_COLORS = {"deploy": "#d62728", "alert": "#ff7f0e", "remediation": "#2ca02c", "note": "#7f7f7f"}
SPAN_COLORS = {"baseline": "rgba(44,160,44,0.08)", "incident": "rgba(214,39,40,0.10)",
               "recovery": "rgba(31,119,180,0.08)", "before": "rgba(214,39,40,0.10)",
               "after": "rgba(31,119,180,0.10)"}
ROW_HEIGHT_PX = 150


def _iso(t) -> str:
    return pd.Timestamp(t).isoformat()


def _label(name: str) -> str:
    s = CATALOG[name]
    return f"{s.label} ({s.unit})" if s.unit not in ("ratio", "count") else s.label


def _y(df: pd.DataFrame, name: str) -> list:
    return [None if pd.isna(v) else round(float(v), 6) for v in df[name]]


def add_events(fig: go.Figure, events: Iterable[Event]) -> None:
    """A dashed vertical line per event across all rows, labelled at the top of the figure."""
    for i, ev in enumerate(events):
        color = EVENT_COLORS.get(ev.kind, EVENT_COLORS["note"])
        fig.add_shape(type="line", xref="x", yref="paper", x0=_iso(ev.time), x1=_iso(ev.time), y0=0, y1=1,
                      line=dict(color=color, width=1, dash="dash"))
        fig.add_annotation(x=_iso(ev.time), xref="x", y=1.0, yref="paper", yanchor="bottom",
                           text=f"{i + 1}", hovertext=ev.label, showarrow=False,
                           font=dict(color=color, size=11))


def add_spans(fig: go.Figure, spans: dict[str, tuple | None]) -> None:
    for name, span in spans.items():
        if span is None:
            continue
        fig.add_shape(type="rect", xref="x", yref="paper", x0=_iso(span[0]), x1=_iso(span[1]), y0=0, y1=1,
                      fillcolor=SPAN_COLORS.get(name, "rgba(0,0,0,0.05)"), line=dict(width=0), layer="below")


def signal_grid(df: pd.DataFrame, names: list[str], events: list[Event] = (), spans: dict | None = None,
                slo: dict[str, float] | None = None, title: str = "") -> go.Figure:
    """One row per signal, shared time axis, event markers and shaded windows on every row."""
    names = [n for n in names if n in df.columns]
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.02,
                        subplot_titles=[_label(n) for n in names])
    x = [_iso(t) for t in df.index]
    for i, name in enumerate(names, start=1):
        fig.add_trace(go.Scatter(x=x, y=_y(df, name), mode="lines", name=CATALOG[name].label,
                                 line=dict(width=1.4), showlegend=False), row=i, col=1)
        if slo and name in slo:
            fig.add_hline(y=slo[name], line=dict(color="#9467bd", width=1, dash="dot"), row=i, col=1)
        if CATALOG[name].unit == "ratio":
            fig.update_yaxes(tickformat=".0%", row=i, col=1)
    add_spans(fig, spans or {})
    add_events(fig, events)
    fig.update_layout(template=TEMPLATE, height=ROW_HEIGHT_PX * len(names) + 80, title=title or None,
                      margin=dict(l=60, r=20, t=70, b=30), hovermode="x unified")
    fig.update_annotations(font_size=11)
    return fig


def before_after(df: pd.DataFrame, name: str, before: tuple, after: tuple, events: list[Event] = (),
                 slo: float | None = None) -> go.Figure:
    """One signal over time with the before and after windows shaded and the SLO line."""
    fig = go.Figure(go.Scatter(x=[_iso(t) for t in df.index], y=_y(df, name), mode="lines",
                               name=CATALOG[name].label, line=dict(width=1.4)))
    add_spans(fig, {"before": before, "after": after})
    add_events(fig, events)
    if slo is not None:
        fig.add_hline(y=slo, line=dict(color="#9467bd", width=1, dash="dot"))
    fig.update_layout(template=TEMPLATE, height=260, title=_label(name), margin=dict(l=60, r=20, t=60, b=30),
                      showlegend=False)
    if CATALOG[name].unit == "ratio":
        fig.update_yaxes(tickformat=".0%")
    return fig


def bar(frame: pd.DataFrame, x: str, y: str, title: str, color: str | None = None) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(frame[x]), y=[round(float(v), 6) for v in frame[y]],
                           marker_color=list(frame[color]) if color else None))
    fig.update_layout(template=TEMPLATE, height=320, title=title, margin=dict(l=60, r=20, t=60, b=80))
    return fig


def histogram(values: pd.Series, title: str, xaxis: str, bins: int = 20) -> go.Figure:
    fig = go.Figure(go.Histogram(x=[float(v) for v in values], nbinsx=bins))
    fig.update_layout(template=TEMPLATE, height=300, title=title, xaxis_title=xaxis, yaxis_title="keys",
                      margin=dict(l=60, r=20, t=60, b=40))
    return fig


def events_table(events: list[Event]) -> pd.DataFrame:
    rows = [{"#": i + 1, "time (UTC)": e.time.strftime("%Y-%m-%d %H:%M:%S"), "kind": e.kind, "event": e.label}
            for i, e in enumerate(events)]
    return pd.DataFrame(rows, columns=["#", "time (UTC)", "kind", "event"]).set_index("#")
