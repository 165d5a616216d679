"""Which keys to warm: rank the keys real traffic asks for, and map a key to the page that fills it.

Ranking (``rank_keys``): the key sample's logical keys (``diagnose.cache_keys.logical_key``) by how many
versions of each the sample holds. Under a single-use key scheme every request wrote a new version, so
versions count requests; ties are broken by the route's request count from Prometheus when given
(``sources.redis_snapshot.route_requests_from_prometheus``), then by name.

Filling them (locks, ``SET NX EX``, the concurrency limit) is the ``cache.warm`` action's job
(``runbook_lib.actions.cache_warm``); ``TTL_JITTER`` is decided here because the cache model
(``plan.cache_simulation``) needs it too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import pandas as pd

from runbook_lib.diagnose.cache_keys import logical_key

# TTL jitter: each warmed key lives between (1 - TTL_JITTER) x TTL and TTL. Keys warmed together would
# otherwise expire together and send their misses to the database at once (the expiry clustering the
# diagnosis flags). It lasts: a popular key is asked for again right after it expires, the app rewrites it
# at once, so its expiry keeps that phase TTL after TTL and the cluster comes back a TTL later. Spreading
# the first expiry over half the TTL spreads those phases for good: simulated on the lab's load (18 req/s,
# every key seen over 5 min warmed, 30 min TTL; ``plan.cache_simulation``, tests/plan/test_cache_simulation.py), 10% left
# a dip of ~5 points in the hit ratio for ~3 minutes at 27-30 min and a smaller one at 57-60 min, 50% none.
# It costs each warmed key at most one extra miss. Never longer than the TTL, which is the staleness bound.
TTL_JITTER = 0.5


@dataclass(frozen=True)
class WarmItem:
    key: str
    score: float  # sampled versions (requests seen)
    route_requests: float = 0.0


def rank_keys(keys: pd.DataFrame, top_n: int, route_requests: dict[str, float] | None = None,
              route_of: Callable[[str], str | None] | None = None) -> list[WarmItem]:
    """The ``top_n`` logical keys by sampled versions, ties by the route's requests, then by name."""
    if keys is None or not len(keys):
        return []
    counts = keys["key"].map(logical_key).value_counts()
    rr = route_requests or {}
    route_of = route_of or (lambda k: None)
    items = [WarmItem(k, float(n), float(rr.get(route_of(k) or "", 0.0))) for k, n in counts.items()]
    items.sort(key=lambda i: (-i.score, -i.route_requests, i.key))
    return items[:top_n]








# --- which URL fills which key ------------------------------------------------------

# Keys of the form ``api:<route>:<user id>:<sorted query>`` (the lab app's normalized scheme, runbook_lib/lab/backend.py)
# map to the page that caches them; other key schemes are not warmed (issue 12: a mapping from the parameters).
LAB_ROUTES = {"users": "/api/users", "user_orders": "/api/users/{id}/orders", "products": "/api/products",
              "dashboard": "/api/dashboard/stats"}
# Prometheus labels requests by path template: key route -> request route label.
LAB_REQUEST_ROUTES = {"users": "/api/users", "user_orders": "/api/users/{id}/orders",
                      "products": "/api/products", "dashboard": "/api/dashboard/stats"}


def lab_route(key: str) -> str | None:
    parts = key.split(":")
    return parts[1] if len(parts) >= 3 and parts[0] == "api" and parts[1] in LAB_ROUTES else None


def lab_request_route(key: str) -> str | None:
    r = lab_route(key)
    return LAB_REQUEST_ROUTES.get(r) if r else None


def lab_path(key: str) -> str | None:
    """The request path that makes the lab backend cache ``key`` (None for keys that are not its)."""
    parts = key.split(":", 3)
    route = lab_route(key)
    if route is None or len(parts) < 4:
        return None
    user, query = parts[2], parts[3]
    if route == "user_orders" and not user.isdigit():
        return None
    path = LAB_ROUTES[route].replace("{id}", user)
    return path + (f"?{query}" if query else "")


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def routed_path(routes: dict[str, str]) -> Callable[[str], str | None]:
    """Which page fills a key, from the parameters' ``app.warm_routes``: key family -> path, with ``{name}``
    placeholders shared by both (``{"api:users:{id}": "/users/{id}"}``). A placeholder matches one key segment
    (no ``:``); the key must match a family entirely. Values are URL-quoted into the path. Families are tried in
    the order given; a key no family matches is not warmed (None)."""
    compiled = []
    for family, path in routes.items():
        parts = _PLACEHOLDER.split(family)
        rx = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^:]+)" for i, p in enumerate(parts))
        compiled.append((re.compile(rx + "$"), path))

    def path_of(key: str) -> str | None:
        for rx, path in compiled:
            m = rx.match(key)
            if m:
                return _PLACEHOLDER.sub(lambda g: quote(m.group(g.group(1)), safe=""), path)
        return None

    return path_of
