"""The cache TTL model's fast paths give what the plain computation gives.

``Family.hit_ratio``/``cached_keys`` take the extremes of a fit's band from each family size's lowest and
highest exponent only (``ZipfFit.band_ends``), ``band_values`` reuses the band's weights across TTLs, and
``fit_zipf`` scores the family sizes on threads. Each is compared here with the computation it replaces,
written out in full: every pair of the band through ``steady_hit_ratio``/``cached_keys`` one by one, and
the fit run on one thread.
"""

from __future__ import annotations

import numpy as np
import pytest

from runbook_lib.plan import cache_sizing as cs


def _counts(seed: int, n_keys: int, exponent: float, requests: int) -> np.ndarray:
    """Request counts of the keys seen: ``requests`` Zipf(``exponent``) draws over ``n_keys`` keys."""
    rng = np.random.default_rng(seed)
    w = np.arange(1, n_keys + 1, dtype=float) ** -exponent
    drawn = rng.choice(n_keys, size=requests, p=w / w.sum())
    return np.unique(drawn, return_counts=True)[1]


# (seed, keys, exponent, requests): a short window over a big family (the range reaches MAX_FAMILY_KEYS),
# a flat family, a steep one, and one well observed
CASES = [(1, 5000, 0.8, 40), (2, 30, 0.0, 300), (3, 2000, 1.6, 200), (4, 300, 1.0, 3000)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"seed{c[0]}-N{c[1]}-s{c[2]}-n{c[3]}")
def fit(request) -> cs.ZipfFit:
    return cs.fit_zipf(_counts(*request.param))


def _scalar(rate: float, band, ttl_s: float, what: str) -> np.ndarray:
    """The reference: each (exponent, size) of the band on its own, through the single-pair functions."""
    one = cs.steady_hit_ratio if what == "hit" else cs.cached_keys
    return np.asarray([one(rate, e, n, ttl_s) for e, n in band])


def test_band_ends_hold_one_lowest_and_one_highest_exponent_per_size(fit):
    ends = fit.band_ends
    assert set(ends) <= set(fit.band)
    sizes = {n for _, n in fit.band}
    assert {n for _, n in ends} == sizes and len(ends) <= 2 * len(sizes)
    for n in sizes:
        exps = [e for e, m in fit.band if m == n]
        assert (min(exps), n) in ends and (max(exps), n) in ends


@pytest.mark.parametrize("ttl_s", [5.0, 60.0, 300.0, 3600.0, 86400.0])
def test_the_band_extremes_are_at_the_ends_of_each_size(fit, ttl_s):
    """Within a family size a steeper law majorizes a flatter one, so the hit ratio (a sum of a convex
    function of the key rates) rises with the exponent and the cached keys (a concave one) fall: the band's
    extremes lie at each size's lowest or highest exponent. Checked against every pair of the band."""
    if len(fit.band) > 4000:  # the biggest bands: every 7th pair, and every end (a test, not a benchmark)
        band = tuple(sorted(set(fit.band[::7]) | set(fit.band_ends)))
    else:
        band = fit.band
    for rate in (0.05, 1.0, 25.0):
        every = _scalar(rate, band, ttl_s, "hit")
        ends = cs.band_values(rate, fit.band_ends, ttl_s, "hit")
        assert ends.min() == pytest.approx(every.min(), rel=1e-12, abs=1e-15)
        assert ends.max() == pytest.approx(every.max(), rel=1e-12, abs=1e-15)
        cached = _scalar(rate, band, ttl_s, "cached")
        ends = cs.band_values(rate, fit.band_ends, ttl_s, "cached")
        assert ends.max() == pytest.approx(cached.max(), rel=1e-12)


def test_band_values_equal_the_single_pair_functions(fit):
    band = fit.band_ends
    for ttl_s in (10.0, 900.0):  # the second call reuses the band's weights
        for what in ("hit", "cached"):
            assert cs.band_values(3.0, band, ttl_s, what) == pytest.approx(_scalar(3.0, band, ttl_s, what),
                                                                            rel=1e-12)


def test_family_ranges_come_from_the_whole_band():
    fam = cs.popularity_model([f"api:users::page={k}:{17_900_000_000 + 10 * i}"
                               for i, k in enumerate(np.repeat(np.arange(1, 40), np.arange(40, 1, -1)))])
    f = fam.families[0]
    assert len(f.fit.band) > len(f.fit.band_ends)
    for ttl_s in (30.0, 600.0):
        lo, hi = f.rate_range
        r = f.hit_ratio(ttl_s)
        assert r["low"] == pytest.approx(_scalar(lo, f.fit.band, ttl_s, "hit").min(), rel=1e-12)
        assert r["high"] == pytest.approx(_scalar(hi, f.fit.band, ttl_s, "hit").max(), rel=1e-12)
        assert f.cached_keys(ttl_s)["high"] == pytest.approx(_scalar(hi, f.fit.band, ttl_s, "cached").max(),
                                                            rel=1e-12)


@pytest.mark.parametrize("case", CASES[:2] + CASES[3:], ids=lambda c: f"seed{c[0]}")
def test_the_fit_on_threads_is_the_fit_on_one(monkeypatch, case):
    counts = _counts(*case)
    threaded = cs.fit_zipf(counts)
    monkeypatch.setattr(cs, "FIT_THREADS", 1)
    assert cs.fit_zipf(counts) == threaded  # exponent, size, log-likelihood and band, exactly
