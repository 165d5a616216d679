"""Index candidates from the statements' WHERE / ORDER BY columns (pglast parse trees).

This is the first, structural pass: for single-table SELECTs that hit a seq-scan-heavy table, or that
read far more buffer pages than the rows they return (an index that does not fit the filter: the
planner walks it and throws most rows away, which no seq-scan counter shows), the equality-filtered
columns followed by the ORDER BY columns, skipping indexes that already cover that prefix. The HypoPG what-if evaluation of each candidate lives with the PostgreSQL executor.
"""

from __future__ import annotations

import pandas as pd
import pglast
from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType

from runbook_lib.diagnose.statements import OVERREAD_BLOCKS_PER_ROW, OVERREAD_MIN_TIME_SHARE, blocks_per_row

# At most this many columns per candidate: wider indexes rarely pay for their write cost.
MAX_INDEX_COLUMNS = 2
# A filtered statement using the wrong access path: the one definition of "reads far more than it returns"
# (diagnose.statements), which the database hypothesis and `runbook diagnose db` report too.
MAX_BLOCKS_PER_ROW = OVERREAD_BLOCKS_PER_ROW
MIN_WASTE_SHARE = OVERREAD_MIN_TIME_SHARE


def _colname(node) -> str | None:
    if isinstance(node, ast.ColumnRef) and node.fields and isinstance(node.fields[-1], ast.String):
        return node.fields[-1].sval
    return None


def _equality_columns(node, out: list[str]) -> None:
    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        for arg in node.args:
            _equality_columns(arg, out)
    elif isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_OP:
        op = node.name[-1].sval if node.name else ""
        if op in ("=", ">", ">=", "<", "<="):
            for side in (node.lexpr, node.rexpr):
                c = _colname(side)
                if c and c not in out:
                    out.append(c)


def parse_select(query: str) -> ast.SelectStmt | None:
    """The parse tree of a query that is exactly one SELECT statement, else None."""
    try:
        stmts = pglast.parse_sql(query)
    except pglast.parser.ParseError:
        return None
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt):
        return None
    return stmts[0].stmt


def single_table_select(query: str) -> ast.SelectStmt | None:
    """Like parse_select, but only a SELECT reading one plain table (FROM t)."""
    sel = parse_select(query)
    if sel is None or not sel.fromClause or len(sel.fromClause) != 1 or not isinstance(sel.fromClause[0], ast.RangeVar):
        return None
    return sel


def statement_columns(query: str) -> tuple[str, list[str], list[str]] | None:
    """(table, filter columns, order-by columns) of a single-table SELECT, else None."""
    sel = single_table_select(query)
    if sel is None:
        return None
    table = sel.fromClause[0].relname
    filters: list[str] = []
    if sel.whereClause is not None:
        _equality_columns(sel.whereClause, filters)
    order = [c for c in (_colname(s.node) for s in (sel.sortClause or ())) if c]
    return table, filters, order


def _existing_prefixes(indexes: pd.DataFrame) -> dict[str, list[tuple[str, ...]]]:
    out: dict[str, list[tuple[str, ...]]] = {}
    for _, row in indexes.iterrows():
        if not row.get("valid", True):
            continue
        inside = row["indexdef"].split("(", 1)[-1].rsplit(")", 1)[0]
        cols = tuple(c.strip().split(" ")[0].strip('"') for c in inside.split(","))
        out.setdefault(row["tablename"], []).append(cols)
    return out


def candidates(statements: pd.DataFrame, heavy_tables: list[str], indexes: pd.DataFrame) -> list[dict]:
    """[{table, columns, reason, share}] for filtered statements on seq-scan-heavy tables, or reading over
    MAX_BLOCKS_PER_ROW pages per row returned with MIN_WASTE_SHARE of DB time; biggest DB time first."""
    existing = _existing_prefixes(indexes)
    seen: set[tuple] = set()
    out = []
    has_buffers = "shared_blks_hit" in statements and "shared_blks_read" in statements
    per_row = blocks_per_row(statements) if has_buffers and len(statements) else None
    for i, (_, row) in enumerate(statements.iterrows()):
        parsed = statement_columns(row["query"])
        if not parsed:
            continue
        table, filters, order = parsed
        if not filters:
            continue
        bpr = float(per_row.iloc[i]) if per_row is not None else None
        wasteful = bpr is not None and bpr >= MAX_BLOCKS_PER_ROW and row["time_share"] >= MIN_WASTE_SHARE
        if table not in heavy_tables and not wasteful:
            continue
        cols = tuple(list(dict.fromkeys(filters + order))[:MAX_INDEX_COLUMNS])
        covered = any(ix[: len(cols)] == cols for ix in existing.get(table, []))
        if covered or (table, cols) in seen:
            continue
        seen.add((table, cols))
        how = "scans" if table in heavy_tables else f"reads {bpr:,.0f} buffer pages per row returned from"
        out.append({"table": table, "columns": list(cols), "share": round(float(row["time_share"]), 3),
                    "reason": f"{row['time_share']:.0%} of DB time {how} {table} filtering on "
                              f"{', '.join(filters)}" + (f" ordered by {', '.join(order)}" if order else "")})
    return out
