"""Missing-index advisor: structural candidates from parse trees, kept only when HypoPG says they pay.

1. Statements: the slow ones of the window (share of DB time >= MIN_STATEMENT_SHARE, at most
   MAX_STATEMENTS), single SELECTs only.
2. Columns (pglast parse trees): per table the statement reads, the columns of its WHERE conditions
   (``=``, ``IN``, ``= ANY``, ranges, BETWEEN), of its JOIN conditions and of its ORDER BY; aliases
   and unqualified names are resolved against the catalog's column lists.
3. Candidates: on large tables (>= SEQ_SCAN_MIN_ROWS live rows, the seq-scan-heavy ones among them),
   every single column and every ordered pair of those columns; a candidate already covered by the
   leading columns of a valid, non-partial btree index is dropped before any evaluation.
4. What-if (HypoPG): plain EXPLAIN cost of each statement before, and with each hypothetical index;
   a candidate *helps* a statement when it cuts the cost by at least MIN_COST_REDUCTION.
5. Choice: per statement the cheapest helping candidate, preferring fewer columns when a wider one is
   not at least WIDER_MIN_EXTRA_GAIN cheaper; then a chosen index whose columns lead a wider chosen
   one that helps the same statements is dropped. Each proposal reports its estimated size
   (``hypopg_relation_size``) and the statements it helps, weighted by their calls.

Steps 1-3 and 5 are pure functions; only ``evaluate`` talks to the server.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import psycopg
from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType
from psycopg import sql

from runbook_lib.diagnose import statements as db_dx
from runbook_lib.diagnose.index_candidates import parse_select
from runbook_lib.errors import ExtensionMissing, PgDiagnosisError
from runbook_lib.plan.index_ddl import MAX_VERIFY_STATEMENTS as MAX_VERIFY
from runbook_lib.plan.index_ddl import create_index_statement, render
from runbook_lib.sources import pg_explain as explain

# A candidate is kept only when it at least halves a statement's plan cost: dexter's default
# (--min-cost-savings-pct 50), which also evaluates its candidates with HypoPG.
MIN_COST_REDUCTION = 0.5
# A wider index (two columns) is chosen over a narrower one only when its plan is this much cheaper:
# below that the extra column costs writes and space for little (our choice: plan costs within ~10% are
# planner-noise territory).
WIDER_MIN_EXTRA_GAIN = 0.10
# Statements worth indexing for: at least 1% of DB time in the window, the 25 biggest at most (pghero's
# "slow queries" view lists the top statements by total time the same way).
MIN_STATEMENT_SHARE = 0.01
MAX_STATEMENTS = 25
# Columns per table per statement considered (pairs grow quadratically).
MAX_COLUMNS_PER_TABLE = 6
# Only btree indexes give ordered prefixes that serve equality, ranges and ORDER BY.
PREFIX_METHODS = ("btree",)

_EQ_OPS = ("=",)
_RESET = explain.marked("SELECT hypopg_reset()")
_RANGE_OPS = ("<", ">", "<=", ">=")


@dataclass
class TableColumns:
    """Columns of one table one statement uses, by role, in order of first appearance."""

    equality: list[str] = field(default_factory=list)
    range: list[str] = field(default_factory=list)
    join: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def ordered(self) -> list[str]:
        return list(dict.fromkeys(self.equality + self.join + self.range + self.order))


@dataclass(frozen=True)
class Candidate:
    table: str
    columns: tuple[str, ...]

    @property
    def schema_table(self) -> tuple[str, str]:
        schema, _, name = self.table.rpartition(".")
        return schema or "public", name


@dataclass
class StatementCost:
    queryid: int
    query: str
    calls: float
    time_share: float
    cost_before: float
    cost_after: float

    @property
    def reduction(self) -> float:
        return 1 - self.cost_after / self.cost_before if self.cost_before > 0 else 0.0


@dataclass
class Evaluation:
    candidate: Candidate
    size_bytes: int
    costs: list[StatementCost]

    def helps(self) -> list[StatementCost]:
        return [c for c in self.costs if c.reduction >= MIN_COST_REDUCTION]


@dataclass
class Proposal:
    """One index to create, with the evidence for it (compatible with impact.propose's candidates)."""

    table: str
    columns: list[str]
    reason: str
    share: float  # share of DB time of the statements it helps
    size_bytes: int
    weighted_reduction: float  # calls-weighted plan-cost cut over the statements it helps
    statements: list[dict[str, Any]]
    ddl: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def action_inputs(self, **inputs: Any) -> dict[str, Any]:
        """The ``postgres.create_index`` inputs for this proposal; its verify checks that EXPLAIN of the
        statements it helps uses the index."""
        schema, _, name = self.table.rpartition(".")
        return {"table": name, "schema_name": schema or "public", "columns": list(self.columns),
                "verify_statements": [s["query"] for s in self.statements][:MAX_VERIFY], **inputs}


@dataclass
class AdvisorResult:
    proposals: list[Proposal]
    evaluated: int  # candidates evaluated with HypoPG
    skipped: list[dict[str, Any]]  # statements left out, with why
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"proposals": [p.as_dict() for p in self.proposals], "evaluated": self.evaluated,
                "skipped": self.skipped, "notes": self.notes}


# --- pure: columns from parse trees -----------------------------------------------------------------


def _ranges(node: Any, out: dict[str, str]) -> None:
    """alias -> table key for every plain table in a FROM item (joins recursed)."""
    if isinstance(node, ast.RangeVar):
        key = f"{node.schemaname}.{node.relname}" if node.schemaname and node.schemaname != "public" \
            else node.relname
        out[node.alias.aliasname if node.alias else node.relname] = key
    elif isinstance(node, ast.JoinExpr):
        _ranges(node.larg, out)
        _ranges(node.rarg, out)


def _join_quals(node: Any, out: list[Any]) -> None:
    if isinstance(node, ast.JoinExpr):
        _join_quals(node.larg, out)
        _join_quals(node.rarg, out)
        if node.quals is not None:
            out.append(node.quals)


def _conjuncts(node: Any) -> Iterable[Any]:
    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        for arg in node.args:
            yield from _conjuncts(arg)
    elif node is not None:
        yield node


class _Resolver:
    def __init__(self, aliases: dict[str, str], table_columns: Mapping[str, Iterable[str]]):
        self.aliases = aliases
        self.columns = {t: set(table_columns.get(t, ())) for t in set(aliases.values())}

    def __call__(self, node: Any) -> tuple[str, str] | None:
        if isinstance(node, ast.TypeCast):
            node = node.arg
        if not isinstance(node, ast.ColumnRef) or not node.fields or not isinstance(node.fields[-1], ast.String):
            return None
        col = node.fields[-1].sval
        if len(node.fields) >= 2 and isinstance(node.fields[-2], ast.String):
            table = self.aliases.get(node.fields[-2].sval)
            return (table, col) if table else None
        tables = set(self.aliases.values())
        if len(tables) == 1:
            return next(iter(tables)), col
        owners = [t for t in tables if col in self.columns[t]]
        return (owners[0], col) if len(owners) == 1 else None


def _add(lst: list[str], col: str) -> None:
    if col not in lst:
        lst.append(col)


def referenced_columns(query: str, table_columns: Mapping[str, Iterable[str]] | None = None
                       ) -> dict[str, TableColumns] | None:
    """Per table: the columns a single SELECT filters, joins and orders on; None if not a plain SELECT.

    ``table_columns`` (table -> its column names) resolves unqualified columns in multi-table SELECTs.
    """
    sel = parse_select(explain.normalize(query))
    if sel is None:
        return None
    if sel.op is not None and sel.op != 0:  # UNION / INTERSECT / EXCEPT
        return None
    aliases: dict[str, str] = {}
    for item in sel.fromClause or ():
        _ranges(item, aliases)
    if not aliases:
        return None
    resolve = _Resolver(aliases, table_columns or {})
    out: dict[str, TableColumns] = {t: TableColumns() for t in aliases.values()}
    quals: list[Any] = list(_conjuncts(sel.whereClause))
    joins: list[Any] = []
    for item in sel.fromClause or ():
        _join_quals(item, joins)
    for q in joins:
        quals.extend(_conjuncts(q))
    for q in quals:
        _qual(q, resolve, out)
    for s in sel.sortClause or ():
        r = resolve(s.node)
        if r:
            _add(out[r[0]].order, r[1])
    return {t: c for t, c in out.items() if c.ordered()}


def _qual(q: Any, resolve: _Resolver, out: dict[str, TableColumns]) -> None:
    if isinstance(q, ast.NullTest):
        r = resolve(q.arg)
        if r:
            _add(out[r[0]].equality, r[1])
        return
    if not isinstance(q, ast.A_Expr):
        return
    op = q.name[-1].sval if q.name else ""
    left, right = resolve(q.lexpr), resolve(q.rexpr) if not isinstance(q.rexpr, (list, tuple)) else None
    if q.kind == A_Expr_Kind.AEXPR_OP and left and right and left[0] != right[0] and op in _EQ_OPS:
        _add(out[left[0]].join, left[1])
        _add(out[right[0]].join, right[1])
        return
    if q.kind in (A_Expr_Kind.AEXPR_IN, A_Expr_Kind.AEXPR_OP_ANY) and left and op == "=":
        _add(out[left[0]].equality, left[1])
    elif q.kind == A_Expr_Kind.AEXPR_OP and op in _EQ_OPS + _RANGE_OPS:
        for side in (left, right):
            if side and not (left and right):
                _add((out[side[0]].equality if op in _EQ_OPS else out[side[0]].range), side[1])
    elif q.kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN) and left:
        _add(out[left[0]].range, left[1])


# --- pure: candidates -----------------------------------------------------------------------------


def existing_prefixes(indexes: pd.DataFrame) -> dict[str, list[tuple[str, ...]]]:
    """table -> column tuples of its valid, non-partial btree indexes (expression columns end a prefix)."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for _, row in indexes.iterrows():
        if not row["valid"] or row.get("partial", False) or row.get("method", "btree") not in PREFIX_METHODS:
            continue
        cols = list(row["columns"]) if "columns" in row and isinstance(row["columns"], (list, tuple)) else []
        prefix = tuple(itertools.takewhile(lambda c: c is not None, cols))
        out.setdefault(row["tablename"], []).append(prefix)
    return out


def covered(cand: Candidate, prefixes: Mapping[str, list[tuple[str, ...]]]) -> bool:
    return any(p[: len(cand.columns)] == cand.columns for p in prefixes.get(cand.table, ()))


def candidate_tables(tables: pd.DataFrame) -> set[str]:
    """Tables large enough for an index to matter (the seq-scan-heavy ones are among them)."""
    return set(tables.index[tables["n_live_tup"] >= db_dx.SEQ_SCAN_MIN_ROWS])


def slow_statements(statements: pd.DataFrame) -> pd.DataFrame:
    """The statements worth an index: a share of DB time, and (when the buffer counters are there) reading far
    more buffers than the rows they return, whatever scan they use; a statement already served well by its
    index is left alone, however much time it takes (more calls is not a plan problem)."""
    s = statements[statements["time_share"] >= MIN_STATEMENT_SHARE]
    if "shared_blks_hit" in s and len(s):
        s = s[db_dx.blocks_per_row(s) >= db_dx.OVERREAD_BLOCKS_PER_ROW]
    return s.sort_values("total_exec_time", ascending=False).head(MAX_STATEMENTS)


def generate(statements: pd.DataFrame, tables: pd.DataFrame, indexes: pd.DataFrame,
             table_columns: Mapping[str, Iterable[str]] | None = None
             ) -> tuple[dict[Candidate, set[int]], list[dict[str, Any]]]:
    """Candidates -> queryids of the statements they could serve; and the statements left out, with why."""
    large = candidate_tables(tables)
    prefixes = existing_prefixes(indexes)
    out: dict[Candidate, set[int]] = {}
    skipped = []
    for qid, row in slow_statements(statements).iterrows():
        cols = referenced_columns(row["query"], table_columns)
        if cols is None:
            skipped.append({"queryid": int(qid), "query": row["query"], "why": "not a plain SELECT"})
            continue
        for table, tc in cols.items():
            if table not in large:
                continue
            names = tc.ordered()[:MAX_COLUMNS_PER_TABLE]
            for combo in [(c,) for c in names] + list(itertools.permutations(names, 2)):
                cand = Candidate(table, combo)
                if not covered(cand, prefixes):
                    out.setdefault(cand, set()).add(int(qid))
    return out, skipped


# --- pure: choice -----------------------------------------------------------------------------------


def choose(evaluations: list[Evaluation]) -> list[Evaluation]:
    """The indexes to propose: per statement its best helping candidate, then wider-covers-narrower."""
    best: dict[int, Evaluation] = {}
    by_stmt: dict[int, list[tuple[float, Evaluation]]] = {}
    for ev in evaluations:
        for c in ev.helps():
            by_stmt.setdefault(c.queryid, []).append((c.cost_after, ev))
    for qid, options in by_stmt.items():
        cheapest = min(cost for cost, _ in options)
        # fewest columns among those within WIDER_MIN_EXTRA_GAIN of the cheapest, then the cheapest
        near = [(len(ev.candidate.columns), cost, ev.candidate.columns, ev) for cost, ev in options
                if cost * (1 - WIDER_MIN_EXTRA_GAIN) <= cheapest]
        best[qid] = min(near, key=lambda x: x[:3])[3]
    chosen = list({id(ev): ev for ev in best.values()}.values())
    keep = []
    for ev in chosen:
        served = {q for q, b in best.items() if b is ev}
        wider = [o for o in chosen if o is not ev and o.candidate.table == ev.candidate.table
                 and o.candidate.columns[: len(ev.candidate.columns)] == ev.candidate.columns
                 and served <= {c.queryid for c in o.helps()}]
        if not wider:
            keep.append(ev)
    return keep


def to_proposal(ev: Evaluation) -> Proposal:
    helped = sorted(ev.helps(), key=lambda c: -c.calls)
    calls_cost_before = sum(c.calls * c.cost_before for c in helped)
    weighted = (1 - sum(c.calls * c.cost_after for c in helped) / calls_cost_before) if calls_cost_before else 0.0
    share = sum(c.time_share for c in helped)
    schema, name = ev.candidate.schema_table
    ddl = render(create_index_statement(schema, name, list(ev.candidate.columns)))
    top = helped[0]
    reason = (f"plan cost of {len(helped)} statement(s) ({share:.0%} of DB time) cut by {weighted:.0%} "
              f"(calls-weighted); e.g. {top.query[:80]} {top.cost_before:,.0f} -> {top.cost_after:,.0f}")
    return Proposal(ev.candidate.table, list(ev.candidate.columns), reason, round(share, 3), ev.size_bytes,
                    round(weighted, 4),
                    [{"queryid": c.queryid, "query": c.query, "calls": c.calls, "cost_before": c.cost_before,
                      "cost_after": c.cost_after, "reduction": round(c.reduction, 4)} for c in helped], ddl)


# --- server side ------------------------------------------------------------------------------------


def require_hypopg(conn: psycopg.Connection) -> None:
    row = conn.execute(explain.marked("SELECT extversion FROM pg_extension WHERE extname = 'hypopg'")).fetchone()
    if row is None:
        available = conn.execute(explain.marked("SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg'")
                                 ).fetchone()
        raise ExtensionMissing(
            "hypopg is not installed in this database: index candidates cannot be evaluated",
            hint="CREATE EXTENSION hypopg;" if available else
                 "install the hypopg package (Debian: postgresql-NN-hypopg), then CREATE EXTENSION hypopg;")


def table_columns(conn: psycopg.Connection, tables: Iterable[str]) -> dict[str, list[str]]:
    out = {}
    for t in tables:
        schema, _, name = t.rpartition(".")
        rows = conn.execute(explain.marked(
            "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"), (schema or "public", name)).fetchall()
        out[t] = [r[0] for r in rows]
    return out


def _hypo_ddl(cand: Candidate) -> sql.Composed:
    schema, name = cand.schema_table
    return sql.SQL("CREATE INDEX ON {} ({})").format(
        sql.Identifier(schema, name), sql.SQL(", ").join(sql.Identifier(c) for c in cand.columns))


def evaluate(conn: psycopg.Connection, statements: pd.DataFrame, cands: Mapping[Candidate, set[int]]
             ) -> tuple[list[Evaluation], list[dict[str, Any]]]:
    """Plan cost of each statement without and with each hypothetical index (HypoPG, this session only)."""
    require_hypopg(conn)
    conn.execute(_RESET)
    base: dict[int, float] = {}
    skipped = []
    for qid in sorted(set().union(*cands.values()) if cands else set()):
        try:
            base[qid] = explain.cost(conn, statements.loc[qid, "query"])
        except PgDiagnosisError as e:
            skipped.append({"queryid": qid, "query": statements.loc[qid, "query"], "why": str(e)})
    out = []
    try:
        for cand, qids in cands.items():
            qids = [q for q in qids if q in base]
            if not qids:
                continue
            ddl = _hypo_ddl(cand).as_string(conn)
            try:
                indexrelid = conn.execute(explain.marked("SELECT indexrelid FROM hypopg_create_index(%s)"),
                                          (ddl,)).fetchone()[0]
                size = int(conn.execute(explain.marked("SELECT hypopg_relation_size(%s)"), (indexrelid,)).fetchone()[0])
                costs = []
                for q in qids:
                    row = statements.loc[q]
                    costs.append(StatementCost(q, row["query"], float(row["calls"]), float(row["time_share"]),
                                               base[q], explain.cost(conn, row["query"])))
            except (psycopg.Error, PgDiagnosisError) as e:  # e.g. a column type without a btree operator class
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                skipped.append({"candidate": f"{cand.table} ({', '.join(cand.columns)})", "why": first})
                continue
            finally:
                conn.execute(_RESET)
            out.append(Evaluation(cand, size, costs))
    finally:
        conn.execute(_RESET)
    return out, skipped


def advise(conn: psycopg.Connection, statements: pd.DataFrame, tables: pd.DataFrame,
           indexes: pd.DataFrame) -> AdvisorResult:
    """Index proposals for a window's statement and table deltas (``to_snapshots`` output)."""
    large = candidate_tables(tables)
    cols = table_columns(conn, large)
    cands, skipped = generate(statements, tables, indexes, cols)
    evaluations, not_explained = evaluate(conn, statements, cands)
    proposals = [to_proposal(ev) for ev in choose(evaluations)]
    proposals.sort(key=lambda p: -p.share)
    notes = []
    if not large:
        notes.append(f"no table has >= {db_dx.SEQ_SCAN_MIN_ROWS:,} live rows: nothing worth indexing")
    return AdvisorResult(proposals, len(evaluations), skipped + not_explained, notes)
