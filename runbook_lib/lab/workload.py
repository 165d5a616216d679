"""A small seeded workload with known database faults, for the tests and ``benchmarks/index_effect.py``.

Schema (sizes at ``scale`` 1.0): ``users`` 20k rows with a primary key and an index on ``email``;
``orders`` 100k rows (about 5 per user) with only a primary key; ``products`` 30k rows with only a
primary key. One HTTP "request" of the simulated app sends:

* one users page: ``users WHERE id > $1 ORDER BY id LIMIT 25`` (served by the primary key);
* the N+1: for each of the 25 users, ``orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 10``
  (no index on orders.user_id: a sequential scan per call);
* PRODUCTS_PER_REQUEST product lookups ``products WHERE sku = $1`` (no index on sku);
* one profile lookup ``users WHERE email = $1`` (already indexed).

So the right answer is known: the N+1 statement runs PAGE_SIZE times per request, and the missing
indexes are EXPECTED_INDEXES; the users statements need nothing.
"""

from __future__ import annotations

import random

import psycopg

PAGE_SIZE = 25
PRODUCTS_PER_REQUEST = 3
BASE_USERS = 20_000
BASE_ORDERS = 100_000
BASE_PRODUCTS = 30_000
EXPECTED_INDEXES = {("orders", ("user_id", "created_at")), ("products", ("sku",))}

USERS_PAGE = "SELECT id, name, email FROM users WHERE id > %s ORDER BY id LIMIT %s"
USER_ORDERS = "SELECT id, amount, status, created_at FROM orders WHERE user_id = %s ORDER BY created_at DESC LIMIT %s"
PRODUCT_BY_SKU = "SELECT id, name, price FROM products WHERE sku = %s"
USER_BY_EMAIL = "SELECT id, name FROM users WHERE email = %s"

_SCHEMA = """
DROP TABLE IF EXISTS orders, products, users;
CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL, created_at timestamptz NOT NULL);
CREATE INDEX users_email_idx ON users (email);
CREATE TABLE products (id int PRIMARY KEY, sku text NOT NULL, name text NOT NULL, category int NOT NULL,
                       price numeric(10, 2) NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id int NOT NULL, status text NOT NULL,
                     amount numeric(10, 2) NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO users SELECT g, 'user ' || g, 'user' || g || '@example.test', now() - g * interval '1 hour'
  FROM generate_series(1, %(users)s) g;
INSERT INTO products SELECT g, 'SKU-' || lpad(g::text, 7, '0'), 'product ' || g, g %% 50, 1 + (g %% 500)
  FROM generate_series(1, %(products)s) g;
INSERT INTO orders SELECT g, 1 + (hashint4(g) & 2147483647) %% %(users)s, CASE WHEN g %% 10 = 0 THEN 'refunded' ELSE 'paid' END,
  (g %% 1000) / 10.0, now() - g * interval '1 minute'
  FROM generate_series(1, %(orders)s) g;
VACUUM ANALYZE users, products, orders;
"""


def seed(dsn: str, scale: float = 1.0) -> dict[str, int]:
    """(Re)create the three tables; returns their row counts."""
    sizes = {"users": max(1000, int(BASE_USERS * scale)), "orders": max(5000, int(BASE_ORDERS * scale)),
             "products": max(1000, int(BASE_PRODUCTS * scale))}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for stmt in _SCHEMA.split(";\n"):
            if stmt.strip():
                conn.execute(stmt % sizes if "%(" in stmt else stmt)
    return sizes


def run_requests(dsn: str, requests: int, users: int, products: int, seed_value: int = 7) -> None:
    """Serve ``requests`` simulated requests on one connection, closed at the end (which flushes its
    table statistics: a backend reports them at most once a second while it lives)."""
    rng = random.Random(seed_value)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(requests):
            after = rng.randrange(0, max(users - PAGE_SIZE, 1))
            page = conn.execute(USERS_PAGE, (after, PAGE_SIZE)).fetchall()
            for uid, _name, _email in page:
                conn.execute(USER_ORDERS, (uid, 10)).fetchall()
            for _ in range(PRODUCTS_PER_REQUEST):
                conn.execute(PRODUCT_BY_SKU, (f"SKU-{rng.randrange(1, products + 1):07d}",)).fetchall()
            conn.execute(USER_BY_EMAIL, (f"user{rng.randrange(1, users + 1)}@example.test",)).fetchall()
