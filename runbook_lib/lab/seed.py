"""The lab's data: users, products and orders generated inside PostgreSQL with generate_series.

Full size (scale 1.0): 100k users, 50k products, 1M orders over the last 365 days, in time order (as an
append-only table is). Every "random" column comes from ``hashint8extended(row, seed)``, so a seed gives
the same rows every time; only the time anchor (now() at seeding) differs.

Indexes: the seed incident ships without the two indexes its queries need (``FIX_INDEXES``); only the
primary keys and ``orders(created_at)`` exist. So a user's recent orders are found by walking the whole
30-day slice of ``orders_created_at_idx`` and filtering by user, and products by category are a
sequential scan. ``set_fix_indexes(dsn, True)`` creates them (CONCURRENTLY, as a runbook would).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from runbook_lib.lab.lab_errors import LabError

LAB_DB = "lab"
# Issue 3: at least 100k users, 1M orders, 50k products at full size.
BASE_USERS = 100_000
BASE_ORDERS = 1_000_000
BASE_PRODUCTS = 50_000
N_CATEGORIES = 50          # categories stay 50 at every scale (they are the /api/products keys)
ORDER_SPAN_DAYS = 365
DEFAULT_SEED = 42

FIX_INDEXES = {
    "orders_user_created_idx": "orders (user_id, created_at DESC)",
    "products_category_status_idx": "products (category, status)",
}

_SCHEMA = """
DROP TABLE IF EXISTS orders, products, users, lab_meta;
CREATE OR REPLACE FUNCTION lab_u(i bigint, salt bigint) RETURNS float8
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT (hashint8extended(i, salt) & 4503599627370495)::float8 / 4503599627370496.0 $$;
CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL,
                    created_at timestamptz NOT NULL);
CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, category text NOT NULL, status text NOT NULL,
                       price numeric(10,2) NOT NULL, popularity int NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id int NOT NULL, product_id int NOT NULL,
                     quantity int NOT NULL, amount numeric(10,2) NOT NULL, status text NOT NULL,
                     created_at timestamptz NOT NULL);
CREATE TABLE lab_meta (key text PRIMARY KEY, value text NOT NULL);
"""

_USERS = """
INSERT INTO users
SELECT g, 'user ' || g, 'user' || g || '@example.test',
       now() - make_interval(days => 400 + (lab_u(g, %(s)s) * 1000)::int)
FROM generate_series(1, %(n)s) g
"""
_PRODUCTS = """
INSERT INTO products
SELECT g, 'product ' || g,
       'cat-' || lpad((1 + floor(%(cats)s * power(lab_u(g, %(s)s + 1), 1.5)))::int::text, 2, '0'),
       CASE WHEN lab_u(g, %(s)s + 2) < 0.8 THEN 'active'
            WHEN lab_u(g, %(s)s + 2) < 0.95 THEN 'discontinued' ELSE 'draft' END,
       round((1 + lab_u(g, %(s)s + 3) * 499)::numeric, 2),
       (power(lab_u(g, %(s)s + 4), 3) * 100000)::int
FROM generate_series(1, %(n)s) g
"""
# orders in time order: row g is placed (n - g)/n of the span before now, with a little jitter
_ORDERS = """
INSERT INTO orders
SELECT g, 1 + floor(%(users)s * lab_u(g, %(s)s + 5))::int,
       1 + floor(%(products)s * power(lab_u(g, %(s)s + 6), 2))::int,
       1 + floor(4 * lab_u(g, %(s)s + 7))::int,
       round((5 + lab_u(g, %(s)s + 8) * 495)::numeric, 2),
       CASE WHEN lab_u(g, %(s)s + 9) < 0.9 THEN 'paid' WHEN lab_u(g, %(s)s + 9) < 0.97 THEN 'shipped'
            ELSE 'refunded' END,
       now() - make_interval(secs => ((%(n)s - g) + lab_u(g, %(s)s + 10)) * %(span)s / %(n)s)
FROM generate_series(1, %(n)s) g
"""


@dataclass(frozen=True)
class SeedSize:
    users: int
    orders: int
    products: int

    @classmethod
    def at_scale(cls, scale: float) -> SeedSize:
        if not 0 < scale <= 10:
            raise LabError(f"seed scale {scale} out of range", hint="use a scale in (0, 10]; 1.0 is full size")
        return cls(max(100, int(BASE_USERS * scale)), max(1000, int(BASE_ORDERS * scale)),
                   max(N_CATEGORIES * 4, int(BASE_PRODUCTS * scale)))


def admin_dsn(dsn: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/postgres"


def ensure_database(dsn: str) -> None:
    """Create the lab database and its extensions (pg_stat_statements, hypopg) when missing."""
    with psycopg.connect(admin_dsn(dsn), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (LAB_DB,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {LAB_DB}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")


def seeded_with(dsn: str) -> dict[str, str]:
    """The lab_meta of an already seeded database ({} when not seeded)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('lab_meta')").fetchone()[0] is None:
            return {}
        return dict(conn.execute("SELECT key, value FROM lab_meta").fetchall())


def seed(dsn: str, scale: float = 1.0, seed_value: int = DEFAULT_SEED) -> dict[str, float]:
    """(Re)create and fill the tables; returns seconds per phase and in total."""
    size = SeedSize.at_scale(scale)
    salt = seed_value * 100
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        steps = [
            ("schema", _SCHEMA, {}),
            ("users", _USERS, {"s": salt, "n": size.users}),
            ("products", _PRODUCTS, {"s": salt, "n": size.products, "cats": N_CATEGORIES}),
            ("orders", _ORDERS, {"s": salt, "n": size.orders, "users": size.users, "products": size.products,
                                 "span": ORDER_SPAN_DAYS * 86400}),
            ("index", "CREATE INDEX orders_created_at_idx ON orders (created_at)", {}),
            ("analyze", "VACUUM ANALYZE users, products, orders", {}),
        ]
        for name, sql, params in steps:
            t = time.perf_counter()
            conn.execute(sql, params or None)
            timings[name] = round(time.perf_counter() - t, 3)
        meta = {"seed": str(seed_value), "scale": str(scale), "users": str(size.users),
                "orders": str(size.orders), "products": str(size.products)}
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO lab_meta VALUES (%s, %s)", list(meta.items()))
    timings["total"] = round(time.perf_counter() - t_all, 3)
    return timings


def ensure_seeded(dsn: str, scale: float, seed_value: int) -> dict[str, float] | None:
    """Seed unless the database already holds this scale and seed. Returns timings, or None if kept."""
    ensure_database(dsn)
    meta = seeded_with(dsn)
    if meta.get("seed") == str(seed_value) and meta.get("scale") == str(scale):
        return None
    return seed(dsn, scale, seed_value)


def existing_fix_indexes(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)",
                            (list(FIX_INDEXES),)).fetchall()
    return sorted(r[0] for r in rows)


def set_fix_indexes(dsn: str, present: bool, names: list[str] | None = None) -> list[str]:
    """Create (``present``) or drop the fix indexes; returns the statements run."""
    done = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names or list(FIX_INDEXES):
            if name not in FIX_INDEXES:
                raise LabError(f"unknown lab index {name!r}", hint=f"one of {', '.join(FIX_INDEXES)}")
            sql = (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {FIX_INDEXES[name]}" if present
                   else f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            conn.execute(sql)
            done.append(sql)
        if present:
            conn.execute("ANALYZE orders, products")
    return done


def table_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("users", "orders", "products")}
