"""A cache TTL, a maxmemory and an eviction policy computed from measured figures, with the reasoning.

Pure: takes the window deltas (``diagnose.cache_keys.window_deltas``), the key sample, the key names seen over
the window and the app's current settings; every recommendation carries ``reasoning`` lines a reader can
check by hand.

TTL: a popularity model extrapolated beyond the window.

* Requests. Under a single-use key scheme every request that missed wrote a new version of its logical key
  (``diagnose.cache_keys.logical_key``), stamped with its time (``key_timestamp_s``): the names seen over the
  window are the requests, by logical key. Logical keys fall into families (their pattern,
  ``diagnose.cache_keys.key_pattern``: ``api:users::page={n}``, ``api:user_orders:{n}:``, ...).
* Rates. Over the window's span ``W`` a family received ``n_f`` requests (rate ``n_f / W``). Within a
  family, popularity is fitted with a Zipf law (rank ``k`` of ``N`` keys asked for with weight ``k^-s``;
  Breslau et al., "Web caching and Zipf-like distributions", INFOCOM 1999) by maximum likelihood on how
  many keys were seen once, twice, ... (the counts of counts: under Poisson requests key ``k`` is seen
  ``Poisson(n_f p_k)`` times). The fit gives a rate to every key of the family, the unseen ones too. A short
  window cannot tell a small family with a steep law from a huge one with a flatter law: every (s, N) whose
  likelihood is within ``LIKELIHOOD_DROP`` of the best is kept (a 95% range), as is the Poisson range of
  each family's rate.
* Hit ratio. In a TTL cache whose entries expire ``T`` seconds after they were written (a hit does not
  extend them, as with ``SET ... EX``), a key requested as a Poisson stream of rate ``λ`` is missed once,
  then hit for ``T`` seconds, then missed at its next request: ``λT/(1+λT)`` of its requests hit. The
  predicted hit ratio of a TTL is that, weighted by each key's rate, over all fitted keys; its low and high
  ends are the extremes over the range (found at each family size's steepest and flattest law in the range,
  ``ZipfFit.band_ends``). From an empty cache the ratio climbs first: at ``t <= T`` a key is
  cached when it was requested since, ``1 - e^(-λt)``.
* Choice. The shortest round TTL whose predicted hit ratio reaches the target even at the low end of the
  range, capped by how stale a response may be (``max_staleness_s``, a product decision). When none does,
  the bound, with the TTL the target would need.

Memory. Under the new TTL a key is cached ``λT/(1+λT)`` of the time, so the cache holds the sum of that
over the fitted keys (its high end, to be safe), times the mean MEMORY USAGE of the family's sampled keys.
maxmemory adds headroom for fragmentation and Redis's own overhead, rounded up to a power of two. Without a
model (no timestamped names) the fallback is the miss rate x distinct share x TTL.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import gammaln

from runbook_lib.diagnose.cache_keys import key_pattern, key_timestamp_s, logical_key, volatile_parts
from runbook_lib.diagnosis_defaults import MAX_STALENESS_S, TARGET_HIT_RATIO

# TARGET_HIT_RATIO, MAX_STALENESS_S: see runbook_lib/diagnosis_defaults.py (the CLI shows them without importing this)
# The re-request interval reported: the median over requests (the first request of each key has none).
INTERVAL_QUANTILE = 0.5
# TTLs are rounded up to one of these (seconds): operators read and set round numbers.
NICE_TTLS_S = (5, 10, 15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
# Wilks: a profile-likelihood 95% range for one quantity holds the parameters whose log-likelihood is within
# chi2(1 degree of freedom, 0.95) / 2 = 3.84 / 2 of the maximum.
LIKELIHOOD_DROP = 1.92
# Zipf exponents tried: 0 (every key equally popular) to 2.5 (one key takes almost every request) by 0.02.
# Web traces measure 0.6-0.9 (Breslau et al. 1999); the lab's load uses 1.1 (runbook_lib/lab/load.py).
ZIPF_STEP = 0.02
ZIPF_EXPONENTS = np.round(np.arange(0.0, 2.5001, ZIPF_STEP), 2)
# Family sizes tried: from the keys seen to MAX_FAMILY_KEYS, 8 per decade (steps of 33%). When the range
# reaches the largest, the window does not bound the family's size (the report says so).
MAX_FAMILY_KEYS = 10**7
SIZES_PER_DECADE = 8
# The second pass, around the first pass's range, is this many times finer in both (0.005, 9% steps).
REFINE = 4
# Ranks 1..EXACT_RANKS are computed key by key; beyond, in geometric bins 3% wide (a key's rate changes by
# under 3% within a bin): a family of 10 million keys costs ~800 terms.
EXACT_RANKS = 500
RANK_BIN_RATIO = 1.03
# The fit's family sizes are scored on this many threads (numpy's loops release the GIL; a size's scores do
# not depend on the others, so the result is the same on any number).
FIT_THREADS = min(4, os.cpu_count() or 1)
# A prediction range wider than this (high - low at the recommended TTL) is called out: watch longer.
WIDE_RANGE = 0.05
# The cold-cache climb is reported at these times after the fix (up to the TTL).
FILL_TIMES_S = (60, 300, 600, 900, 1800, 3600)
# Above this hit ratio over the window, key versions count only the misses: said in the reasoning.
VERSIONS_ARE_MISSES_ABOVE = 0.10
# maxmemory headroom over the working set: allocator fragmentation (INFO mem_fragmentation_ratio is
# typically 1.1-1.5) plus growth. Redis docs ("Key eviction"): leave room beyond the data itself.
MEMORY_HEADROOM = 1.5
# Never recommend less than this (a cache this small is not worth running).
MIN_MAXMEMORY_BYTES = 16 * 2**20
# Policies: for a power-law (Zipf) popularity, Redis docs recommend allkeys-lru ("when you expect a
# subset of elements to be accessed far more often than the rest"); allkeys-lfu is the alternative.
RECOMMENDED_POLICY = "allkeys-lru"
# Key scheme: normalize when at least this share of sampled keys is single-use.
SINGLE_USE_SHARE = 0.5


def _nice_ttl(seconds: float) -> float:
    seconds = round(seconds, 6)  # 3.0 / 0.2 is 15.000000000000002: still 15
    return float(next((t for t in NICE_TTLS_S if t >= seconds), math.ceil(seconds)))


def _pow2_mb(nbytes: float) -> int:
    mb = max(1, math.ceil(nbytes / 2**20))
    return 2 ** math.ceil(math.log2(mb))


def _pct(x: float) -> str:
    return f"{x:.1%}" if 0.995 > x > 0.005 else f"{x:.0%}"


# --- the popularity model -----------------------------------------------------------------------------


@lru_cache(maxsize=8192)  # the fit's grid visits a few thousand family sizes; each entry is a few kB
def _rank_grid(n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Representative ranks of a family of ``n_keys`` keys and how many keys each stands for: ranks
    1..EXACT_RANKS one by one, then geometric bins RANK_BIN_RATIO wide (their geometric middle)."""
    n_keys = int(n_keys)
    if n_keys <= EXACT_RANKS:
        ranks = np.arange(1, n_keys + 1, dtype=float)
        mult = np.ones_like(ranks)
    else:
        edges = [EXACT_RANKS + 1]
        while edges[-1] < n_keys + 1:
            edges.append(min(n_keys + 1, max(edges[-1] + 1, int(edges[-1] * RANK_BIN_RATIO))))
        e = np.asarray(edges, dtype=float)
        ranks = np.concatenate([np.arange(1, EXACT_RANKS + 1, dtype=float), np.sqrt(e[:-1] * (e[1:] - 1))])
        mult = np.concatenate([np.ones(EXACT_RANKS), np.diff(e)])
    ranks.flags.writeable = False
    mult.flags.writeable = False
    return ranks, mult


def key_rates(rate: float, exponent: float, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Each key's request rate in a Zipf family (total ``rate`` per second over ``n_keys`` keys, weight
    ``k^-exponent``), and how many keys each value stands for (1 up to rank EXACT_RANKS, then bins)."""
    ranks, mult = _rank_grid(n_keys)
    w = ranks ** -float(exponent)
    return rate * w / (w @ mult), mult


def steady_hit_ratio(rate: float, exponent: float, n_keys: int, ttl_s: float) -> float:
    """The share of a family's requests that hit under a TTL of ``ttl_s``: sum of λ x λT/(1+λT) over rate."""
    lam, mult = key_rates(rate, exponent, n_keys)
    x = lam * ttl_s
    return float((mult * lam * x / (1 + x)).sum() / rate) if rate > 0 else float("nan")


def cached_keys(rate: float, exponent: float, n_keys: int, ttl_s: float) -> float:
    """Keys of the family in the cache at a time: each is there λT/(1+λT) of the time."""
    lam, mult = key_rates(rate, exponent, n_keys)
    x = lam * ttl_s
    return float((mult * x / (1 + x)).sum())


def fill_hit_ratio(rate: float, exponent: float, n_keys: int, t_s: float) -> float:
    """From an empty cache, the chance that a request at ``t_s`` (<= the TTL) hits: its key was requested
    since, 1 - e^(-λt), weighted by rate."""
    lam, mult = key_rates(rate, exponent, n_keys)
    return float((mult * lam * -np.expm1(-lam * t_s)).sum() / rate) if rate > 0 else float("nan")


@lru_cache(maxsize=16)
def _band_groups(band: tuple[tuple[float, int], ...]) -> tuple[tuple[int, np.ndarray, np.ndarray, np.ndarray], ...]:
    """The band's (exponent, size) pairs grouped by size: (size, positions in the band, the Zipf weights
    ``ranks ** -exponent`` of each pair (a row each), their sums over the family's keys). The weights do not
    depend on the rate or the TTL: computed once per band, not once per candidate TTL."""
    by: dict[int, list[int]] = {}
    for i, (_, n) in enumerate(band):
        by.setdefault(int(n), []).append(i)
    out = []
    for n, idx in by.items():
        ranks, mult = _rank_grid(n)
        exps = np.asarray([band[i][0] for i in idx], dtype=float)
        w = np.exp(-exps[:, None] * np.log(ranks)[None, :])  # ranks ** -exponent, without a log per element
        for a in (w, wsum := (w @ mult)[:, None]):
            a.flags.writeable = False
        out.append((n, np.asarray(idx), w, wsum))
    return tuple(out)


def band_values(rate: float, band: tuple[tuple[float, int], ...], ttl_s: float, what: str) -> np.ndarray:
    """``steady_hit_ratio`` (what="hit") or ``cached_keys`` (what="cached") for every (exponent, size) of a
    fit's band at once: one matrix per family size instead of a Python call per pair (the band holds
    thousands of pairs, and the TTL search evaluates it for every candidate TTL)."""
    out = np.empty(len(band))
    for n, idx, w, wsum in _band_groups(band):
        mult = _rank_grid(n)[1]
        lam = rate * w / wsum
        x = lam * ttl_s
        if what == "hit":
            out[idx] = (mult * lam * x / (1 + x)).sum(axis=1) / rate if rate > 0 else np.nan
        else:
            out[idx] = (mult * x / (1 + x)).sum(axis=1)
    return out


@dataclass(frozen=True)
class ZipfFit:
    exponent: float
    keys: int  # N, the family's size
    loglik: float | None
    band: tuple[tuple[float, int], ...]  # every (exponent, keys) within LIKELIHOOD_DROP of the best

    @property
    def size_unbounded(self) -> bool:
        return any(n >= MAX_FAMILY_KEYS for _, n in self.band)

    @cached_property
    def band_ends(self) -> tuple[tuple[float, int], ...]:
        """The band's lowest and highest exponent for each family size: where the band's extremes lie.

        Within one size a steeper law majorizes a flatter one (the ratio of their key rates falls with the
        rank), so a sum of a convex function of the key rates (the hit ratio, λ·λT/(1+λT)) rises with the
        exponent and a sum of a concave one (the cached keys, λT/(1+λT)) falls: the extremes over the band
        are the extremes over these ends, a few hundred pairs instead of tens of thousands
        (tests/plan/test_cache_model_fast.py checks them against every pair)."""
        lo: dict[int, float] = {}
        hi: dict[int, float] = {}
        for e, n in self.band:
            lo[n], hi[n] = min(e, lo.get(n, e)), max(e, hi.get(n, e))
        return tuple(sorted({(lo[n], n) for n in lo} | {(hi[n], n) for n in hi}))


def _family_sizes(seen: int) -> np.ndarray:
    if seen >= MAX_FAMILY_KEYS:
        return np.asarray([seen])
    num = math.ceil(math.log10(MAX_FAMILY_KEYS / seen) * SIZES_PER_DECADE) + 1
    return np.unique(np.round(np.geomspace(seen, MAX_FAMILY_KEYS, num)).astype(np.int64))


def _loglik(js: np.ndarray, fj: np.ndarray, n: float, exponents: np.ndarray, size: int) -> np.ndarray:
    """The counts-of-counts log-likelihood (see ``fit_zipf``) of each exponent for a family of ``size`` keys."""
    ranks, mult = _rank_grid(int(size))
    logw = -np.outer(exponents, np.log(ranks))  # exponents x ranks
    logmu = math.log(n) + logw - np.log(np.exp(logw) @ mult)[:, None]
    mu = np.exp(logmu)
    lgj = gammaln(js + 1)
    expected = np.stack([np.exp(j * logmu - mu - lg) @ mult for j, lg in zip(js, lgj, strict=True)], axis=1)
    return (fj * np.log(np.maximum(expected, 1e-300))).sum(axis=1) - (-np.expm1(-mu)) @ mult


def fit_zipf(counts: Iterable[int]) -> ZipfFit:
    """Maximum-likelihood Zipf law for the request counts of the keys seen (one count per key).

    Under Poisson requests key ``k`` is seen ``Poisson(μ_k)`` times (``μ_k = n p_k``), so the number of keys
    seen exactly ``j`` times is about Poisson with mean ``F_j = Σ_k e^-μ_k μ_k^j / j!``; the log-likelihood
    of the observed counts of counts ``f_j`` is ``Σ_j f_j log F_j - Σ_j F_j``. Tried on the grid
    ZIPF_EXPONENTS x family sizes (from the keys seen up to MAX_FAMILY_KEYS, SIZES_PER_DECADE), then again
    around the 95% range on a grid REFINE times finer (a sharp likelihood can fall between coarse points).
    One key seen: that key alone.
    """
    c = np.asarray([int(x) for x in counts if int(x) > 0], dtype=np.int64)
    if len(c) <= 1:
        return ZipfFit(0.0, 1, None, ((0.0, 1),))
    n = float(c.sum())
    js, fj = np.unique(c, return_counts=True)
    js, fj = js.astype(float), fj.astype(float)
    scores: dict[tuple[float, int], float] = {}

    def evaluate(exponents: np.ndarray, sizes: Iterable[int]) -> None:
        sizes = [int(size) for size in sizes]
        with ThreadPoolExecutor(FIT_THREADS) as pool:  # each size alone, in order: the same scores as one by one
            rows = list(pool.map(lambda size: _loglik(js, fj, n, exponents, size), sizes))
        for size, row in zip(sizes, rows, strict=True):
            for e, v in zip(exponents, row, strict=True):
                scores[(round(float(e), 4), size)] = float(v)

    def band() -> list[tuple[float, int]]:
        top = max(scores.values())
        return [k for k, v in scores.items() if v >= top - LIKELIHOOD_DROP]

    evaluate(ZIPF_EXPONENTS, _family_sizes(len(c)))
    coarse = band()
    step = 10 ** (1 / SIZES_PER_DECADE)
    e_lo, e_hi = min(e for e, _ in coarse) - ZIPF_STEP, max(e for e, _ in coarse) + ZIPF_STEP
    n_lo, n_hi = max(len(c), min(k for _, k in coarse) / step), min(MAX_FAMILY_KEYS, max(k for _, k in coarse) * step)
    fine_e = np.round(np.arange(max(0.0, e_lo), e_hi + 1e-9, ZIPF_STEP / REFINE), 4)
    num = max(2, math.ceil(math.log10(n_hi / n_lo) * SIZES_PER_DECADE * REFINE) + 1)
    evaluate(fine_e, np.unique(np.round(np.geomspace(n_lo, n_hi, num)).astype(np.int64)))
    (exponent, size), top = max(scores.items(), key=lambda kv: kv[1])
    return ZipfFit(exponent, size, top, tuple(sorted(band())))


def poisson_rate_range(count: int) -> tuple[float, float]:
    """The 95% likelihood range of a Poisson mean observed as ``count``: where ``count log μ - μ`` is within
    LIKELIHOOD_DROP of its maximum (at μ = count)."""
    if count <= 0:
        return 0.0, float("nan")

    def drop(mu: float) -> float:
        return count * math.log(mu) - mu - (count * math.log(count) - count - LIKELIHOOD_DROP)

    return brentq(drop, 1e-12, count), brentq(drop, count, 10.0 * count + 50.0)


@dataclass(frozen=True)
class Family:
    pattern: str
    requests: int
    keys_seen: int
    seen_once: int
    top_key: str
    top_requests: int
    rate_per_s: float
    rate_range: tuple[float, float]  # 95% Poisson range of the family's rate
    fit: ZipfFit

    def hit_ratio(self, ttl_s: float) -> dict[str, float]:
        fit = steady_hit_ratio(self.rate_per_s, self.fit.exponent, self.fit.keys, ttl_s)
        lo, hi = self.rate_range
        return {"fit": fit, "low": float(band_values(lo, self.fit.band_ends, ttl_s, "hit").min()),
                "high": float(band_values(hi, self.fit.band_ends, ttl_s, "hit").max())}

    def cached_keys(self, ttl_s: float) -> dict[str, float]:
        return {"fit": cached_keys(self.rate_per_s, self.fit.exponent, self.fit.keys, ttl_s),
                "high": float(band_values(self.rate_range[1], self.fit.band_ends, ttl_s, "cached").max())}

    def summary(self) -> dict[str, Any]:
        exps = [s for s, _ in self.fit.band]
        sizes = [n for _, n in self.fit.band]
        return {"pattern": self.pattern, "requests": self.requests, "keys_seen": self.keys_seen,
                "seen_once": self.seen_once, "top_key": self.top_key, "top_requests": self.top_requests,
                "rate_per_s": self.rate_per_s, "rate_range_per_s": list(self.rate_range),
                "zipf_exponent": self.fit.exponent, "keys": self.fit.keys,
                "exponent_range": [min(exps), max(exps)], "keys_range": [min(sizes), max(sizes)],
                "size_unbounded": self.fit.size_unbounded}


@dataclass(frozen=True)
class PopularityModel:
    """Request rates of every key, fitted from the requests seen over ``span_s`` (see the module doc)."""

    span_s: float
    requests: int
    families: tuple[Family, ...]

    @property
    def rate_per_s(self) -> float:
        return sum(f.rate_per_s for f in self.families)

    def hit_ratio(self, ttl_s: float) -> dict[str, Any]:
        """Predicted steady hit ratio at ``ttl_s``: fit, low and high ends, and by family."""
        total = self.rate_per_s
        by = {f.pattern: f.hit_ratio(ttl_s) for f in self.families}
        out = {end: sum(f.rate_per_s * by[f.pattern][end] for f in self.families) / total
               for end in ("fit", "low", "high")}
        return {**out, "by_family": by}

    def cached_keys(self, ttl_s: float) -> dict[str, Any]:
        by = {f.pattern: f.cached_keys(ttl_s) for f in self.families}
        return {"fit": sum(v["fit"] for v in by.values()), "high": sum(v["high"] for v in by.values()),
                "by_family": by}

    def fill_hit_ratio(self, t_s: float) -> float:
        """From an empty cache (no warming), the fitted chance that a request ``t_s`` after the fix hits
        (valid up to the TTL: no key has expired yet)."""
        return sum(f.rate_per_s * fill_hit_ratio(f.rate_per_s, f.fit.exponent, f.fit.keys, t_s)
                   for f in self.families) / self.rate_per_s

    def summary(self) -> dict[str, Any]:
        return {"span_s": self.span_s, "requests": self.requests, "rate_per_s": self.rate_per_s,
                "families": [f.summary() for f in self.families]}


def timestamped_requests(names: Iterable[str]) -> pd.DataFrame:
    """One row per key name carrying a timestamp: logical key, family (its pattern), t (epoch seconds)."""
    rows = [(lk, t) for lk, t in ((logical_key(k), key_timestamp_s(k)) for k in names) if t is not None]
    df = pd.DataFrame(rows, columns=["logical", "t"])
    df["family"] = [key_pattern(lk)[0] for lk in df["logical"]]
    return df


def popularity_model(names: Iterable[str]) -> PopularityModel | None:
    """The model from the key names seen (each timestamped name one request); None when no logical key
    was seen twice (nothing to measure re-requests with) or the names span no time."""
    req = timestamped_requests(names)
    n = len(req)
    if n < 2 or not req["logical"].duplicated().any():
        return None
    span = float(req["t"].max() - req["t"].min())
    if span <= 0:
        return None
    # n requests over the span between the first and last: n - 1 gaps, so the rate is (n - 1) / span
    window = span * n / (n - 1)
    families = []
    for pattern, g in req.groupby("family", sort=False):
        counts = g["logical"].value_counts()
        lo, hi = poisson_rate_range(len(g))
        families.append(Family(str(pattern), len(g), len(counts), int((counts == 1).sum()), str(counts.index[0]),
                               int(counts.iloc[0]), len(g) / window, (lo / window, hi / window),
                               fit_zipf(counts.to_numpy())))
    families.sort(key=lambda f: -f.requests)
    return PopularityModel(window, n, tuple(families))


# --- recommendations ------------------------------------------------------------------------------------


def reuse_intervals(keys: pd.DataFrame) -> pd.DataFrame:
    """Re-request intervals between consecutive versions of the same logical key (keys with a timestamp).

    Columns: logical_key, versions, median_interval_s (one row per logical key with >= 2 versions)."""
    rows = []
    if keys is not None and len(keys):
        ts = pd.DataFrame({"logical": [logical_key(k) for k in keys["key"]],
                           "t": [key_timestamp_s(k) for k in keys["key"]]}).dropna()
        for lk, g in ts.groupby("logical"):
            t = g["t"].sort_values().diff().dropna()
            t = t[t > 0]
            if len(t):
                rows.append({"logical_key": lk, "versions": len(g), "median_interval_s": float(t.median())})
    return pd.DataFrame(rows, columns=["logical_key", "versions", "median_interval_s"])


def key_lifetime_s(deltas: dict, dbsize: int | None) -> float | None:
    """Mean time a key stays in Redis (Little's law): keys alive / keys leaving per second."""
    leaving = (deltas.get("expired_per_s") or 0.0) + (deltas.get("evicted_per_s") or 0.0)
    if not dbsize or leaving <= 0:
        return None
    return dbsize / leaving


def _median_interval(req: pd.DataFrame) -> tuple[float | None, int]:
    """The median re-request interval over all requests (None when over half have no measured interval,
    i.e. are the first request of their key), and how many requests have one."""
    observed = sorted(float(x) for _, g in req.groupby("logical") for x in g["t"].sort_values().diff().dropna()
                      if x > 0)
    pos = int(INTERVAL_QUANTILE * len(req))
    return (observed[pos] if pos < len(observed) else None), len(observed)


def _seen_names(keys: pd.DataFrame | None, names: list[str] | None) -> list[str]:
    if names is not None and len(names):
        return list(names)
    return list(keys["key"]) if keys is not None and len(keys) else []


def _family_lines(model: PopularityModel) -> list[str]:
    out = []
    for f in model.families:
        if f.fit.keys == 1 and f.keys_seen == 1:
            out.append(f"'{f.pattern}' {f.requests:,} requests ({f.rate_per_s:.3g}/s, 95% range "
                       f"{f.rate_range[0]:.3g}-{f.rate_range[1]:.3g}/s) for one key")
            continue
        s = f.summary()
        size = (f"{s['keys_range'][0]:,}-{s['keys_range'][1]:,} keys"
                + (" (the window does not bound the family's size)" if f.fit.size_unbounded else ""))
        out.append(f"'{f.pattern}' {f.requests:,} requests ({f.rate_per_s:.3g}/s) for {f.keys_seen:,} keys seen "
                   f"({f.seen_once:,} once; the top one {f.top_requests:,} times); Zipf fit: exponent "
                   f"{f.fit.exponent:.2f} over {f.fit.keys:,} keys (95% range: exponent {s['exponent_range'][0]:.2f}-"
                   f"{s['exponent_range'][1]:.2f}, {size})")
    return out


def _hand_check(model: PopularityModel, ttl_s: float) -> str:
    """One key's figure a reader can redo: the busiest family's top key."""
    f = model.families[0]
    lam = key_rates(f.rate_per_s, f.fit.exponent, f.fit.keys)[0][0]
    x = lam * ttl_s
    return (f"e.g. {f.top_key} (fitted {lam:.3g} requests/s): {lam:.3g} x {ttl_s:g} / (1 + {lam:.3g} x {ttl_s:g}) "
            f"= {x / (1 + x):.2%} of its requests hit at {ttl_s:g} s; a key asked for once an hour: "
            f"{ttl_s:g} / 3600 / (1 + {ttl_s:g} / 3600) = {ttl_s / (3600 + ttl_s):.1%}")


def recommend_ttl(keys: pd.DataFrame, current_ttl_s: float | None, target: float = TARGET_HIT_RATIO,
                  max_staleness_s: float = MAX_STALENESS_S, names: list[str] | None = None,
                  model: PopularityModel | None = None) -> dict[str, Any]:
    """The shortest round TTL predicted to reach ``target`` (at the low end of the range), capped by the
    staleness bound; see the module doc. ``names``: every key name seen over the window (else the sample's
    keys); ``model``: the popularity model when already built from them."""
    why: list[str] = []
    current = float(current_ttl_s) if current_ttl_s is not None else None
    seen = _seen_names(keys, names)
    model = model if model is not None else popularity_model(seen)
    interval: float | None = None
    needed: float | None = None
    predicted: dict[str, dict[str, float]] = {}
    by_family: dict[str, dict[str, float]] = {}
    fill: dict[str, float] = {}
    ttl = float(max_staleness_s)
    if model is not None:
        req = timestamped_requests(seen)
        why.append(f"{model.requests:,} requests (timestamped key versions) over {model.span_s:.1f} s = "
                   f"{model.rate_per_s:.3g}/s, for {req['logical'].nunique():,} logical keys in "
                   f"{len(model.families)} famil{'y' if len(model.families) == 1 else 'ies'} (key patterns); each "
                   "family's keys fitted with a Zipf law:")
        why += ["  " + line for line in _family_lines(model)]
        interval, measured = _median_interval(req)
        if interval is not None:
            why.append(f"median re-request interval {interval:.2f} s ({measured:,} requests have one; the first "
                       "request of each key does not)")
        else:
            why.append(f"over half of the requests have no measured re-request interval ({measured:,} of "
                       f"{model.requests:,} do): the median is not measurable (longer than the window), the "
                       "fitted rates extrapolate beyond it")
        grid = sorted({float(t) for t in NICE_TTLS_S} | {float(max_staleness_s)})
        full = {t: model.hit_ratio(t) for t in grid}
        needed = next((t for t in grid if full[t]["low"] >= target), None)
        shown_up_to = max(max_staleness_s, needed if needed is not None else max(NICE_TTLS_S))
        predicted = {f"{t:g}": {k: round(v, 4) for k, v in full[t].items() if k != "by_family"}
                     for t in grid if t <= shown_up_to}
        why.append("a key requested λ times/s hits λT/(1+λT) of its requests under a TTL of T s (expiry from "
                   "the write; a hit does not extend it); " + _hand_check(model, min(max_staleness_s, 300.0)))
        why.append("predicted steady hit ratio by TTL, fitted (95% range): " + ", ".join(
            f"{t} s {_pct(v['fit'])} ({_pct(v['low'])}-{_pct(v['high'])})" for t, v in predicted.items()))
        if needed is not None and needed <= max_staleness_s:
            ttl = needed
            why.append(f"{needed:g} s is the shortest round TTL reaching {target:.0%} even at the low end of the "
                       f"range")
        else:
            at_bound = full[float(max_staleness_s)]
            why.append(f"no TTL up to the staleness bound ({max_staleness_s:g} s) reaches {target:.0%} at the low "
                       f"end of the range (there: {_pct(at_bound['low'])}, fitted {_pct(at_bound['fit'])}); "
                       + (f"{target:.0%} needs {needed:g} s" if needed is not None else
                          f"not even {max(NICE_TTLS_S):g} s reaches it") + ": the bound")
        rec = full[ttl] if ttl in full else model.hit_ratio(ttl)
        by_family = {p: {k: round(v, 4) for k, v in x.items()} for p, x in rec["by_family"].items()}
        why.append(f"at {ttl:g} s by family: " + ", ".join(
            f"'{p}' {_pct(v['fit'])} ({_pct(v['low'])}-{_pct(v['high'])})" for p, v in by_family.items()))
        if rec["high"] - rec["low"] > WIDE_RANGE:
            why.append(f"the range at {ttl:g} s is {(rec['high'] - rec['low']) * 100:.0f} points wide: "
                       f"{model.requests:,} requests over {model.span_s:.0f} s leave the tail open; a longer window "
                       "narrows it")
        fill = {f"{t:g}": round(model.fill_hit_ratio(t), 4) for t in FILL_TIMES_S if t <= ttl}
        if fill:
            why.append("from an empty cache, before any key expires, a request hits when its key was asked for "
                       "since the fix (1 - e^(-λt), fitted, no warming): " + ", ".join(f"{_pct(v)} after {float(t) / 60:g} min"
                                                              for t, v in fill.items()))
    elif len(timestamped_requests(seen)):
        why.append("no logical key appears twice with a timestamp: re-requests are not measurable from keys, so "
                   "the TTL is the staleness bound")
    else:
        why.append("no key name carries a timestamp (versions of a logical key cannot be told apart): "
                   "re-requests are not measurable from keys, so the TTL is the staleness bound")
    if current is not None and ttl < current:
        why.append(f"the current TTL ({current:g} s) is already longer: kept")
        ttl = current
    else:
        why.append(f"recommended {ttl:g} s (staleness bound {max_staleness_s:g} s"
                   + (f", current {current:g} s)" if current is not None else ")"))
    out = {"recommended_s": ttl, "current_s": current, "reuse_interval_s": interval, "needed_s": needed,
           "target_hit_ratio": target, "max_staleness_s": float(max_staleness_s),
           "predicted_hit_ratio": predicted, "predicted_by_family": by_family, "fill_hit_ratio": fill,
           "model": model.summary() if model is not None else None, "reasoning": why}
    if model is not None:
        p = model.hit_ratio(ttl)
        out["predicted"] = {"ttl_s": ttl, "fit": round(p["fit"], 4), "low": round(p["low"], 4),
                            "high": round(p["high"], 4)}
    return out


def _family_sizes_bytes(keys: pd.DataFrame | None) -> tuple[dict[str, float], float]:
    """Mean MEMORY USAGE of the sampled keys by family (the pattern of their logical key), and overall."""
    if keys is None or not len(keys):
        return {}, 0.0
    mem = keys[["key", "memory_bytes"]].dropna()
    if not len(mem):
        return {}, 0.0
    fam = [key_pattern(logical_key(k))[0] for k in mem["key"]]
    by = mem.assign(family=fam).groupby("family")["memory_bytes"].mean()
    return {str(k): float(v) for k, v in by.items()}, float(mem["memory_bytes"].mean())


def recommend_memory(info: dict, deltas: dict, keys: pd.DataFrame, ttl_s: float,
                     model: PopularityModel | None = None) -> dict[str, Any]:
    why: list[str] = []
    maxmem, used = int(info.get("maxmemory") or 0), int(info.get("used_memory") or 0)
    overhead = int(info.get("used_memory_overhead") or 0)
    sizes, mean_bytes = _family_sizes_bytes(keys)
    if model is not None:
        live = model.cached_keys(ttl_s)
        entries, entries_fit = live["high"], live["fit"]
        parts, ws = [], 0.0
        for f in model.families:
            size = sizes.get(f.pattern, mean_bytes)
            n = live["by_family"][f.pattern]["high"]
            ws += n * size
            parts.append(f"{f.pattern} {n:,.0f} x {size:,.0f} B"
                         + ("" if f.pattern in sizes else " (mean of all sampled keys: none of this family sized)"))
        why.append(f"at a {ttl_s:g} s TTL a key is cached λT/(1+λT) of the time: the fitted rates keep "
                   f"{live['fit']:,.0f} keys cached, {entries:,.0f} at the high end of the range")
        why.append("x mean MEMORY USAGE of the family's sampled keys: " + "; ".join(parts)
                   + f" = {ws / 2**20:.1f} MiB")
    else:
        logical = keys["key"].map(logical_key).nunique() if keys is not None and len(keys) else 0
        distinct = logical / len(keys) if keys is not None and len(keys) else 1.0
        misses_per_s = deltas["misses"] / deltas["seconds"] if deltas.get("seconds") else 0.0
        entries = misses_per_s * distinct * ttl_s
        entries_fit = None
        ws = entries * mean_bytes
        why.append(f"the window saw {misses_per_s:.1f} misses/s; {distinct:.0%} of sampled keys are distinct "
                   f"logical keys ({logical} of {len(keys) if keys is not None else 0})")
        why.append(f"at a {ttl_s:.0f} s TTL about {misses_per_s:.1f} x {distinct:.2f} x {ttl_s:.0f} = "
                   f"{entries:,.0f} entries stay cached; at {mean_bytes:,.0f} bytes each (mean MEMORY USAGE) "
                   f"that is {ws / 2**20:.1f} MiB")
    lifetime = key_lifetime_s(deltas, info.get("dbsize"))
    if lifetime is not None:
        why.append(f"measured mean key lifetime (Little's law: {info.get('dbsize')} keys / "
                   f"{deltas.get('expired_per_s', 0) + deltas.get('evicted_per_s', 0):.1f} leaving per s) = "
                   f"{lifetime:.1f} s")
    need = ws * MEMORY_HEADROOM + overhead
    if deltas.get("evicted_per_s", 0) > 0 and used:
        why.append(f"Redis is evicting ({deltas['evicted_per_s']:.1f}/s), so the keyspace under-counts demand; "
                   f"not recommending less than twice the used memory ({2 * used / 2**20:.1f} MiB)")
        need = max(need, 2 * used)
    need = max(need, MIN_MAXMEMORY_BYTES)
    mb = _pow2_mb(need)
    why.append(f"x {MEMORY_HEADROOM} headroom + {overhead / 2**20:.1f} MiB Redis overhead, rounded up to a power "
               f"of two: {mb} MiB")
    if maxmem and mb * 2**20 <= maxmem:
        why.append(f"the current maxmemory ({maxmem / 2**20:.0f} MiB) is already enough: kept")
        mb = max(1, maxmem // 2**20)
        rec = str(maxmem)
    else:
        rec = f"{mb}mb"
    return {"recommended": rec, "recommended_bytes": mb * 2**20 if rec.endswith("mb") else maxmem,
            "current_bytes": maxmem, "working_set_bytes": ws, "entries": entries, "entries_fit": entries_fit,
            "mean_entry_bytes": mean_bytes,
            "entry_bytes_by_family": sizes, "key_lifetime_s": lifetime, "reasoning": why}


def recommend_policy(info: dict, keys: pd.DataFrame | None) -> dict[str, Any]:
    policy = str(info.get("maxmemory_policy", ""))
    no_ttl = float((keys["ttl_s"] < 0).mean()) if keys is not None and len(keys) else 0.0
    if policy == "noeviction":
        why = "noeviction refuses writes when full; a cache should evict"
    elif policy.startswith("volatile-") and no_ttl > 0:
        why = f"{no_ttl:.0%} of sampled keys have no TTL and can never be evicted under {policy}"
    else:
        return {"recommended": policy, "current": policy, "reasoning": [f"{policy} suits a cache: kept"]}
    return {"recommended": RECOMMENDED_POLICY, "current": policy,
            "reasoning": [why, f"{RECOMMENDED_POLICY}: popularity is skewed (a few keys take most reads)"]}


def recommend_key_scheme(keys: pd.DataFrame | None, current: str | None) -> dict[str, Any]:
    if keys is None or not len(keys):
        return {"recommended": current, "current": current, "reasoning": ["no keys sampled"]}
    single = float(keys["key"].map(lambda k: bool(volatile_parts(k))).mean())
    if single >= SINGLE_USE_SHARE:
        return {"recommended": "normalized", "current": current, "single_use_share": single,
                "reasoning": [(f"{single:.0%} of sampled keys carry a volatile part and are never read twice; "
                               "normalized keys (no timestamp, sorted parameters) are shared between requests")]}
    return {"recommended": current, "current": current, "single_use_share": single,
            "reasoning": [f"only {single:.0%} of sampled keys are single-use: the scheme is kept"]}


def recommend(info: dict, deltas: dict, keys: pd.DataFrame, app_config: dict | None = None,
              target: float = TARGET_HIT_RATIO, max_staleness_s: float = MAX_STALENESS_S,
              names: list[str] | None = None) -> dict[str, Any]:
    """TTL, memory, policy and key scheme, plus the action inputs that would apply them."""
    cfg = app_config or {}
    model = popularity_model(_seen_names(keys, names))
    ttl = recommend_ttl(keys, cfg.get("cache_ttl_s"), target, max_staleness_s, names, model=model)
    hr = deltas.get("hit_ratio")
    if model is not None and hr is not None and not math.isnan(hr) and hr > VERSIONS_ARE_MISSES_ABOVE:
        ttl["reasoning"].insert(1 + len(model.families), f"the window's hit ratio was {hr:.0%}: only misses wrote key versions, so the "
                                   "rates count misses, not requests (popular keys are under-counted most: the "
                                   "prediction leans low)")
    if model is not None and deltas.get("lookups") and deltas.get("seconds"):
        ttl["reasoning"].insert(1 + len(model.families), f"Redis counted {deltas['lookups'] / deltas['seconds']:.3g} lookups/s over the "
                                   f"window, the key versions {model.rate_per_s:.3g}/s (requests that failed before "
                                   "writing a key, or lookups by other clients, make the difference)")
    memory = recommend_memory(info, deltas, keys, ttl["recommended_s"], model=model)
    policy = recommend_policy(info, keys)
    scheme = recommend_key_scheme(keys, cfg.get("cache_key_scheme"))
    actions: list[dict[str, Any]] = []
    if scheme["recommended"] and scheme["recommended"] != scheme["current"]:
        actions.append({"kind": "app.config", "inputs": {"cache_key_scheme": scheme["recommended"]}})
    if ttl["current_s"] is not None and ttl["recommended_s"] != ttl["current_s"]:  # the app's TTL known
        actions.append({"kind": "app.config", "inputs": {"cache_ttl_s": ttl["recommended_s"]}})
    redis_change = {}
    if memory["recommended_bytes"] != memory["current_bytes"]:
        redis_change["maxmemory"] = memory["recommended"]
    if policy["recommended"] != policy["current"]:
        redis_change["maxmemory-policy"] = policy["recommended"]
    if redis_change:
        actions.append({"kind": "redis.config_set", "inputs": redis_change})
    return {"ttl": ttl, "memory": memory, "policy": policy, "key_scheme": scheme, "actions": actions}
