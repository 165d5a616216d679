"""Query rewrites for N+1 statements: the set-based form the application should send instead.

An N+1 statement filters one table on a foreign key equal to a parameter (``orders WHERE user_id = $1``)
and is sent once per parent row. Two rewrites, built on the pglast parse tree and deparsed:

* ``join``: one statement for the page: the parent statement (found in the same window: it reads the
  table the key points at, about once per request) joined LATERAL to the child, so a per-parent
  ORDER BY / LIMIT or aggregate keeps its meaning (LEFT JOIN keeps parents without children);
* ``batched``: one statement for all parent ids (``user_id = ANY($1)``), ordered by the key; an
  aggregate child becomes ``GROUP BY`` the key. A per-parent LIMIT cannot be kept in this form.

These are recommendations shown to the app owner; the runbook never edits application code.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType
from pglast.stream import RawStream

from runbook_lib.diagnose.index_candidates import single_table_select
from runbook_lib.sources import pg_explain as explain

# A parent statement runs about once per request: at most this many calls per request.
PARENT_MAX_CALLS_PER_REQUEST = 2.0
_AGGREGATES = {"count", "sum", "avg", "min", "max", "array_agg", "string_agg", "bool_and", "bool_or"}


@dataclass
class Rewrite:
    queryid: int
    query: str
    calls_per_request: float
    ms_per_request: float
    time_share: float
    foreign_key: str | None
    parent_table: str | None
    parent_query: str | None
    join: str | None
    batched: str | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_select(query: str) -> ast.SelectStmt | None:
    return single_table_select(explain.normalize(query))


def _conjuncts(node: Any) -> list[Any]:
    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        return [x for a in node.args for x in _conjuncts(a)]
    return [] if node is None else [node]


def _key_condition(sel: ast.SelectStmt) -> tuple[Any, str] | None:
    """The ``column = $n`` conjunct and its column."""
    for q in _conjuncts(sel.whereClause):
        if (isinstance(q, ast.A_Expr) and q.kind == A_Expr_Kind.AEXPR_OP and q.name and q.name[-1].sval == "="
                and isinstance(q.lexpr, ast.ColumnRef) and isinstance(q.rexpr, ast.ParamRef)):
            return q, q.lexpr.fields[-1].sval
    return None


def _is_aggregate(sel: ast.SelectStmt) -> bool:
    for t in sel.targetList or ():
        v = t.val
        if isinstance(v, ast.FuncCall) and v.funcname[-1].sval in _AGGREGATES and not sel.groupClause:
            return True
    return False


def parent_table_names(key: str) -> list[str]:
    """``user_id`` -> candidates ``users``, ``user``, ``useres``... (Rails / Django naming conventions)."""
    if not key.endswith("_id"):
        return []
    base = key[:-3]
    return [base + "s", base, base + "es", base[:-1] + "ies" if base.endswith("y") else base + "s"]


def _deparse(node: Any) -> str:
    return RawStream()(node)


def _params(node: Any):
    return [n for n in explain._walk(node) if isinstance(n, ast.ParamRef)]


def find_parent(deltas: pd.DataFrame, key: str, child_calls: float) -> tuple[str, str] | None:
    """(table, query) of the statement that feeds the loop: it reads the key's parent table about once
    per request, and the rows it returns (calls x rows per call) best match the child's calls (one child
    call per parent row)."""
    names = parent_table_names(key)
    best = None
    for _, row in deltas.iterrows():
        cpr = row.get("calls_per_request", float("nan"))
        if not (cpr <= PARENT_MAX_CALLS_PER_REQUEST):
            continue
        sel = _parse_select(row["query"])
        if sel is None or sel.fromClause[0].relname not in names:
            continue
        parent_rows = row["calls"] * row["rows_per_call"]
        miss = abs(math.log(parent_rows / child_calls)) if parent_rows > 0 and child_calls > 0 else math.inf
        if best is None or miss < best[2]:
            best = (sel.fromClause[0].relname, row["query"], miss)
    return (best[0], best[1]) if best else None


def join_form(child_query: str, parent_query: str, parent_key: str = "id") -> str | None:
    child, parent = _parse_select(child_query), _parse_select(parent_query)
    if child is None or parent is None:
        return None
    found = _key_condition(child)
    if found is None:
        return None
    cond, _ = found
    offset = max((p.number for p in _params(parent)), default=0)
    cond.rexpr = ast.ColumnRef(fields=(ast.String(sval="p"), ast.String(sval=parent_key)))
    remaining = sorted({p.number for p in _params(child)})
    renumber = {n: offset + i + 1 for i, n in enumerate(remaining)}
    for p in _params(child):
        p.number = renumber[p.number]
    return (f"SELECT p.*, c.* FROM ({_deparse(parent)}) AS p "
            f"LEFT JOIN LATERAL ({_deparse(child)}) AS c ON true")


def batched_form(child_query: str) -> tuple[str, str] | None:
    """(statement, note) with the key compared to an array parameter."""
    child = _parse_select(child_query)
    if child is None:
        return None
    found = _key_condition(child)
    if found is None:
        return None
    cond, key = found
    cond.kind = A_Expr_Kind.AEXPR_OP_ANY
    key_ref = copy.deepcopy(cond.lexpr)
    note = ""
    if _is_aggregate(child):
        child.targetList = (ast.ResTarget(val=copy.deepcopy(key_ref)), *child.targetList)
        child.groupClause = (copy.deepcopy(key_ref),)
    else:
        names = {t.val.fields[-1].sval if isinstance(t.val, ast.ColumnRef) and isinstance(t.val.fields[-1], ast.String)
                 else None for t in child.targetList or ()}
        if key not in names and "*" not in {None if n is None else n for n in names}:
            child.targetList = (ast.ResTarget(val=copy.deepcopy(key_ref)), *child.targetList)
        child.sortClause = (ast.SortBy(node=copy.deepcopy(key_ref), sortby_dir=0, sortby_nulls=0),
                            *(child.sortClause or ()))
        if child.limitCount is not None:
            child.limitCount = None
            note = "the per-parent LIMIT cannot be kept in one batched statement: cut the list per parent in the app"
    return _deparse(child), note


def recommend(n_plus_one: pd.DataFrame, deltas: pd.DataFrame) -> list[Rewrite]:
    """One rewrite per N+1 statement (rows of ``db.n_plus_one``), using the window's other statements."""
    out = []
    for qid, row in n_plus_one.iterrows():
        sel = _parse_select(row["query"])
        found = _key_condition(sel) if sel is not None else None
        if found is None:
            out.append(Rewrite(int(qid), row["query"], float(row["calls_per_request"]), float(row["ms_per_request"]),
                               float(row["time_share"]), None, None, None, None, None,
                               "no `column = $n` filter found: batch the loop's queries into one statement"))
            continue
        key = found[1]
        parent = find_parent(deltas.drop(index=qid, errors="ignore"), key, float(row["calls"]))
        join = join_form(row["query"], parent[1]) if parent else None
        batched = batched_form(row["query"])
        notes = [(f"{row['calls_per_request']:.1f} calls per request, {row['ms_per_request']:.1f} ms of DB time "
                  f"per request ({row['time_share']:.0%} of DB time): load all children in one statement")]
        if parent is None:
            notes.append(f"no parent statement on {' / '.join(parent_table_names(key)[:2]) or 'the key table'} "
                         "found in the window: use the batched form with the parent ids")
        if batched and batched[1]:
            notes.append(batched[1])
        out.append(Rewrite(int(qid), row["query"], float(row["calls_per_request"]), float(row["ms_per_request"]),
                           float(row["time_share"]), key, parent[0] if parent else None,
                           parent[1] if parent else None, join, batched[0] if batched else None, "; ".join(notes)))
    return out
