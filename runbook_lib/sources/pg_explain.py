"""Plain EXPLAIN (never ANALYZE) of a statement as pg_stat_statements records it, through a generic plan.

pg_stat_statements replaces constants by ``$1, $2, ...``. Such a text is planned as a prepared statement
with ``plan_cache_mode = force_generic_plan`` and ``EXPLAIN EXECUTE name(NULL, ...)``: the generic plan
does not depend on the values, and the parameter types are inferred from the context. A fresh PREPARE
per call: a cached plan would not see a hypothetical index created since (HypoPG sends no invalidation).

Only a single SELECT without data-modifying CTEs is explained, inside a READ ONLY transaction; nothing
is executed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import pglast
import psycopg
from pglast import ast
from psycopg import sql

from runbook_lib.errors import NotExplainable

# pg_stat_statements normalizes ``interval '1 day'`` to ``interval $1``, which is not valid SQL:
# rewrite typed literals of these types to casts ``$1::interval``.
_TYPED_PARAM = re.compile(r"\b(interval|date|timestamptz|timestamp|time|numeric|inet|uuid|jsonb|json)\s+\$(\d+)",
                          re.IGNORECASE)
_PARAM = re.compile(r"\$(\d+)")
# Every statement the diagnosis sends starts with this comment, so its own reads are left out of the
# pg_stat_statements deltas it analyses (the comment is kept in the recorded text).
MARKER = "/* runbook:diagnose */ "
# One fixed name for the prepared statement: EXPLAIN EXECUTE is recorded as a utility statement, and a
# new name per call would add an entry to pg_stat_statements every time.
PREPARED_NAME = "runbook_explain"


def marked(query: str | sql.Composable) -> sql.Composed:
    return sql.Composed([sql.SQL(MARKER), query if isinstance(query, sql.Composable) else sql.SQL(query)])


def normalize(query: str) -> str:
    return _TYPED_PARAM.sub(lambda m: f"${m.group(2)}::{m.group(1)}", query)


def check_select(query: str) -> str:
    """The normalized text when it is exactly one read-only SELECT; NotExplainable otherwise."""
    text = normalize(query)
    try:
        stmts = pglast.parse_sql(text)
    except pglast.parser.ParseError as e:
        raise NotExplainable(f"cannot parse: {e}") from None
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt):
        raise NotExplainable("not a single SELECT")
    for node in _walk(stmts[0].stmt):
        if isinstance(node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)):
            raise NotExplainable("SELECT with a data-modifying WITH clause")
        if isinstance(node, ast.SelectStmt) and node.intoClause is not None:
            raise NotExplainable("SELECT INTO creates a table")
    return text


def _walk(node: Any) -> Iterator[Any]:
    if isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from _walk(getattr(node, name))
    elif isinstance(node, (list, tuple)):
        for x in node:
            yield from _walk(x)


def param_count(query: str) -> int:
    return max((int(m) for m in _PARAM.findall(query)), default=0)


def plan(conn: psycopg.Connection, query: str) -> dict[str, Any]:
    """The top plan node (EXPLAIN FORMAT JSON) of the statement's generic plan."""
    text = check_select(query)
    name = PREPARED_NAME
    n = param_count(text)
    execute = sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE {}").format(sql.Identifier(name))
    if n:
        execute = sql.SQL("{}({})").format(execute, sql.SQL(", ").join([sql.NULL] * n))
    try:
        with conn.transaction():
            conn.execute(marked("SET LOCAL transaction_read_only = on"))
            conn.execute(marked("SET LOCAL plan_cache_mode = force_generic_plan"))
            conn.execute(sql.SQL("PREPARE {} AS {}").format(sql.Identifier(name), sql.SQL(text)))
            out = conn.execute(marked(execute)).fetchone()[0]
    except psycopg.Error as e:
        raise NotExplainable(f"EXPLAIN failed: {str(e).strip().splitlines()[0]}") from None
    finally:
        with suppress(psycopg.Error):  # prepared statements outlive a rolled-back transaction
            conn.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(name)))
    return out[0]["Plan"]


def cost(conn: psycopg.Connection, query: str) -> float:
    return float(plan(conn, query)["Total Cost"])


def nodes(plan_node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan_node
    for child in plan_node.get("Plans", ()):
        yield from nodes(child)


def index_names(plan_node: dict[str, Any]) -> set[str]:
    """Names of the indexes a plan reads (Index Scan, Index Only Scan, Bitmap Index Scan)."""
    return {n["Index Name"] for n in nodes(plan_node) if "Index Name" in n}
