"""``symptoms.spearman`` is pandas' (scipy's) Spearman correlation, bit for bit, without scipy.stats at start."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from runbook_lib.diagnose.symptoms import spearman


def _cases():
    rng = np.random.default_rng(5)
    for n in (2, 3, 10, 97, 500):
        x = pd.Series(rng.normal(size=n))
        yield x, x * 2 + rng.normal(size=n)
        yield x.round(1), (x * -1).round(0)  # ties on both sides
        with_nan = x.copy()
        with_nan.iloc[:: max(2, n // 3)] = np.nan
        yield with_nan, pd.Series(rng.integers(0, 4, size=n).astype(float))
    yield pd.Series([1.0, 1.0, 1.0]), pd.Series([1.0, 2.0, 3.0])  # constant: NaN
    yield pd.Series([1.0, np.nan]), pd.Series([np.nan, 2.0])  # no pair: NaN


@pytest.mark.parametrize("x,y", list(_cases()))
def test_equals_pandas_spearman_bit_for_bit(x, y):
    y.index = x.index
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant input
        want = x.corr(y, method="spearman")
    got = spearman(x, y)
    assert (np.isnan(want) and np.isnan(got)) or got == want, (got, want)


def test_by_hand():
    assert spearman(pd.Series([1.0, 2.0, 3.0, 4.0]), pd.Series([10.0, 20.0, 30.0, 40.0])) == pytest.approx(1.0)
    assert spearman(pd.Series([1.0, 2.0, 3.0, 4.0]), pd.Series([4.0, 3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # ranks 1, 2, 3 against 1, 2.5, 2.5: r = 0.866
    assert spearman(pd.Series([1.0, 2.0, 3.0]), pd.Series([0.0, 5.0, 5.0])) == pytest.approx(np.sqrt(3) / 2)
