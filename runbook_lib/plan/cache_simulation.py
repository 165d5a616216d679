"""A TTL cache under Poisson requests with Zipf popularity, simulated request by request (pure, seeded).

It checks what ``recommend`` computes in closed form (the steady hit ratio λT/(1+λT) per key) and shows
what the closed form leaves out: the climb from an empty or warmed cache, and how the expiry times of
warmed keys carry on (``warm.TTL_JITTER``). Cache-aside as in the lab app: a request hits when its key was
written less than ``ttl_s`` before; a miss writes it (instantly: the fill time is not modelled).

``families``: one ``(rate per second, Zipf exponent, number of keys)`` per key family, as
``recommend.PopularityModel`` fits them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

# Keys of family i are numbered i * FAMILY_STRIDE + rank.
FAMILY_STRIDE = 10**12

Families = Sequence[tuple[float, float, int]]


@lru_cache(maxsize=16)
def _cumulative(exponent: float, n_keys: int) -> np.ndarray:
    cum = np.cumsum(np.arange(1, n_keys + 1, dtype=float) ** -exponent)
    cum.flags.writeable = False
    return cum


def requests(families: Families, duration_s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrivals over ``duration_s`` at the families' total rate: (times, keys), in time order."""
    rates = np.asarray([r for r, _, _ in families], dtype=float)
    total = float(rates.sum())
    n = int(rng.poisson(total * duration_s))
    times = np.sort(rng.uniform(0.0, duration_s, n))
    fam = rng.choice(len(families), size=n, p=rates / total)
    keys = np.empty(n, dtype=np.int64)
    for i, (_, exponent, n_keys) in enumerate(families):
        m = fam == i
        cum = _cumulative(float(exponent), int(n_keys))
        keys[m] = np.searchsorted(cum, rng.random(int(m.sum())) * cum[-1], side="right") + 1 + i * FAMILY_STRIDE
    return times, keys


def simulate(families: Families, ttl_s: float, duration_s: float, *, window_s: float = 60.0,
             warm_seen_s: float = 0.0, jitter: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hits and lookups per ``window_s`` window over ``duration_s`` after the fix.

    ``warm_seen_s`` > 0: before the fix, every key requested during that many seconds (an observation
    window, drawn from the same law) is warmed, expiring after ``ttl_s x (1 - U(0, jitter))``, as
    ``warm.warm`` does; 0: the cache starts empty."""
    rng = np.random.default_rng(seed)
    expires: dict[int, float] = {}
    if warm_seen_s > 0:
        _, seen = requests(families, warm_seen_s, rng)
        for k in np.unique(seen):
            expires[int(k)] = ttl_s * (1.0 - rng.uniform(0.0, jitter))
    times, keys = requests(families, duration_s, rng)
    hit = np.zeros(len(times), dtype=bool)
    for j, (t, k) in enumerate(zip(times.tolist(), keys.tolist(), strict=True)):
        if expires.get(k, -1.0) > t:
            hit[j] = True
        else:
            expires[k] = t + ttl_s
    n = int(duration_s // window_s)
    w = (times // window_s).astype(np.int64)
    inside = w < n
    hits = np.bincount(w[inside], weights=hit[inside].astype(float), minlength=n)
    lookups = np.bincount(w[inside], minlength=n).astype(float)
    return hits, lookups


def expected_windows(families: Families, ttl_s: float, duration_s: float, *, window_s: float = 60.0,
                     warm_seen_s: float = 0.0, jitter: float = 0.0, runs: int = 5, seed: int = 0) -> np.ndarray:
    """The hit ratio of each window averaged over ``runs`` seeded simulations (hits / lookups summed)."""
    hits = lookups = 0.0
    for r in range(runs):
        h, n = simulate(families, ttl_s, duration_s, window_s=window_s, warm_seen_s=warm_seen_s, jitter=jitter,
                        seed=seed + r)
        hits, lookups = hits + h, lookups + n
    return hits / np.maximum(lookups, 1.0)
