"""The fixture backend and the bundle format; the bundled bundle is reproducible from its generator."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from runbook_lib.errors import FixtureError, UnknownSignalError
from runbook_lib.lab.synthetic import write_bundle
from runbook_lib.signal_catalog import CATALOG
from runbook_lib.sources.fixture_bundle import FixtureSource

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "fixtures" / "d2-synthetic"


@pytest.fixture
def bundle_copy(tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(BUNDLE, dst)
    return dst


def test_bundle_returns_every_catalog_signal_on_a_regular_grid():
    src = FixtureSource(BUNDLE)
    start, end = src.default_range()
    df = src.fetch(list(CATALOG), start, end, 30)
    assert list(df.columns) == list(CATALOG)
    assert df.index.tz is not None and (df.index.to_series().diff().dropna() == pd.Timedelta("30s")).all()
    assert not df.isna().any().any()
    assert [e.kind for e in src.events()][:2] == ["deploy", "alert"]


def test_fetch_resamples_to_a_coarser_step_and_subrange():
    src = FixtureSource(BUNDLE)
    start, _ = src.default_range()
    df = src.fetch(["latency_p95_ms"], start, start + pd.Timedelta("10min"), 60)
    assert len(df) == 11 and df["latency_p95_ms"].notna().all()


def test_unknown_signal_is_named():
    src = FixtureSource(BUNDLE)
    start, end = src.default_range()
    with pytest.raises(UnknownSignalError, match="'latency_p42'"):
        src.fetch(["latency_p42"], start, end, 30)


def test_signal_missing_from_bundle_is_named(bundle_copy):
    df = pd.read_csv(bundle_copy / "signals.csv").drop(columns=["cpu_utilization"])
    df.to_csv(bundle_copy / "signals.csv", index=False)
    src = FixtureSource(bundle_copy)
    start, end = src.default_range()
    with pytest.raises(UnknownSignalError, match="'cpu_utilization' is not provided by fixture bundle"):
        src.fetch(["cpu_utilization"], start, end, 30)


def test_missing_files_are_named(bundle_copy):
    (bundle_copy / "snapshots" / "redis_keys.csv").unlink()
    src = FixtureSource(bundle_copy)
    with pytest.raises(FixtureError, match="snapshot 'redis_keys' file snapshots/redis_keys.csv is missing"):
        src.bundle.check()
    (bundle_copy / "signals.csv").unlink()
    with pytest.raises(FixtureError, match="signals.csv is missing"):
        FixtureSource(bundle_copy).bundle.check()
    (bundle_copy / "bundle.yaml").unlink()
    with pytest.raises(FixtureError, match="bundle.yaml is missing"):
        FixtureSource(bundle_copy)


def test_manifest_errors_name_the_field(bundle_copy):
    text = (bundle_copy / "bundle.yaml").read_text().replace("step_seconds: 30", "step_seconds: soon")
    (bundle_copy / "bundle.yaml").write_text(text)
    with pytest.raises(FixtureError, match="bundle.yaml: step_seconds"):
        FixtureSource(bundle_copy)


def test_snapshot_paths_cannot_escape_the_bundle(bundle_copy):
    text = (bundle_copy / "bundle.yaml").read_text().replace("file: snapshots/pg_indexes.csv",
                                                             "file: ../../../etc/passwd")
    (bundle_copy / "bundle.yaml").write_text(text)
    with pytest.raises(FixtureError, match="outside the bundle"):
        FixtureSource(bundle_copy).bundle.snapshot("pg_indexes")


def test_bundled_fixture_is_exactly_what_its_generator_writes(tmp_path):
    out = write_bundle(tmp_path / "regen", seed=42)
    for f in sorted(p for p in BUNDLE.rglob("*") if p.is_file()):
        rel = f.relative_to(BUNDLE)
        assert (out / rel).read_bytes() == f.read_bytes(), f"{rel} differs from the generator's output"
