"""What an index proposal is, as DDL: its name and the CREATE INDEX statement, without a connection.

The advisor (``plan.index_advisor``) shows this DDL in the plan; the executor
(``actions.postgres_index.CreateIndex``) sends the very same statement, so what was approved is what runs.
Identifiers are quoted by psycopg's ``sql.Identifier``: a hostile table name stays a name.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

# PostgreSQL truncates identifiers longer than NAMEDATALEN - 1 = 63 bytes.
MAX_IDENTIFIER_BYTES = 63
# An index proposal carries at most this many statements whose plans must use it (verify: EXPLAIN each).
MAX_VERIFY_STATEMENTS = 20


def check_identifier(v: str) -> str:
    """``v`` when PostgreSQL can hold it as one identifier; ValueError otherwise."""
    if not v or len(v.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"identifier {v!r} must be 1..{MAX_IDENTIFIER_BYTES} bytes")
    if "\x00" in v:
        raise ValueError("identifier contains a NUL byte")
    return v


def default_index_name(table: str, columns: list[str]) -> str:
    """``ix_<table>_<col>_<col>``; a name too long for PostgreSQL is cut and given a short hash."""
    name = "ix_" + "_".join([table, *columns])
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return name.encode()[: MAX_IDENTIFIER_BYTES - 9].decode(errors="ignore") + "_" + digest


def create_index_statement(schema: str, table: str, columns: list[str], name: str | None = None) -> sql.Composed:
    """``CREATE INDEX CONCURRENTLY IF NOT EXISTS <name> ON <schema>.<table> (<columns>)``, quoted."""
    return sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
        sql.Identifier(name or default_index_name(table, columns)),
        sql.Identifier(schema, table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
    )


def render(stmt: sql.Composable) -> str:
    """The statement as text, exactly as it will be sent."""
    return stmt.as_string(None)
