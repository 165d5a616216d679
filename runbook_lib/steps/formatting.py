"""Display and JSON helpers the step modules share: numbers as an SRE reads them, rows as JSON keeps them."""

from __future__ import annotations

import pandas as pd

# Rounding for display: enough digits to read, few enough to stay stable.
DISPLAY_DECIMALS = 3


def fmt(v: float, unit: str) -> str:
    if pd.isna(v):
        return "-"
    if unit == "ratio":
        return f"{v:.1%}"
    if unit == "ms":
        return f"{v:,.1f} ms"
    return f"{v:,.1f}"


def records(table: pd.DataFrame) -> list[dict]:
    """Rows for JSON: numbers rounded to 6 digits, timestamps as ISO strings."""
    t = table.reset_index()
    for col in t.columns:
        if pd.api.types.is_datetime64_any_dtype(t[col]):
            t[col] = t[col].map(lambda v: v.isoformat() if pd.notna(v) else None)
        elif pd.api.types.is_float_dtype(t[col]):
            t[col] = t[col].round(6)
    return t.to_dict(orient="records")
