"""The before/after judge: constructed fixes that worked, that did not, autocorrelated noise, and the bundled incident."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from runbook_lib.model import IncidentWindow
from runbook_lib.settings import Slo, load_settings
from runbook_lib.signal_catalog import CATALOG
from runbook_lib.sources.fixture_bundle import FixtureSource
from runbook_lib.steps import symptom_correlation, validation
from runbook_lib.validate import before_after as ba
from tests.support.bundle_support import edited_copy

ROOT = Path(__file__).resolve().parents[2]
STEP_S = 5
N_BASE, N_INC, N_AFTER = 60, 80, 80  # samples per phase of the constructed incidents

# (baseline, incident, after) levels of a fix that worked, shaped like the write-up's D2 incident.
FIXED = {
    "latency_p50_ms": (20.0, 300.0, 21.0),
    "latency_p95_ms": (40.0, 800.0, 50.0),
    "latency_p99_ms": (70.0, 1900.0, 95.0),
    "request_rate": (200.0, 195.0, 205.0),
    "error_ratio": (0.002, 0.10, 0.003),
    "cache_hit_ratio": (0.90, 0.07, 0.86),
    "db_query_rate": (460.0, 4900.0, 600.0),
    "db_query_latency_ms": (2.4, 58.0, 2.9),
    "db_connections_active": (6.0, 20.0, 7.0),
    "db_pool_max": (20.0, 20.0, 20.0),
    "cpu_utilization": (0.34, 0.37, 0.35),
    "memory_utilization": (0.55, 0.56, 0.55),
}


def ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise with standard deviation ``sd``."""
    e = rng.normal(0.0, sd * np.sqrt(1 - phi**2), n + 200)
    x = np.zeros(n + 200)
    for i in range(1, n + 200):
        x[i] = phi * x[i - 1] + e[i]
    return x[200:]


def incident(levels: dict, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Signals with 5 % multiplicative AR(1) noise (phi 0.5) and the spans of the three phases."""
    rng = np.random.default_rng(seed)
    n = N_BASE + N_INC + N_AFTER
    idx = pd.date_range("2026-01-01", periods=n, freq=f"{STEP_S}s", tz="UTC")
    cols = {}
    for name, (base, inc, after) in levels.items():
        level = np.r_[np.full(N_BASE, base), np.full(N_INC, inc), np.full(N_AFTER, after)]
        y = level * (1 + ar1(rng, n, 0.5, 0.05))
        cols[name] = np.clip(y, 0, 1) if name.endswith(("_ratio", "_utilization")) else y
    spans = {"baseline": (idx[0], idx[N_BASE - 1]), "before": (idx[N_BASE], idx[N_BASE + N_INC - 1]),
             "after": (idx[N_BASE + N_INC], idx[-1])}
    return pd.DataFrame(cols, index=idx), spans


def judged(levels: dict, slo: Slo | None = None) -> tuple[pd.DataFrame, dict]:
    df, s = incident(levels)
    table = ba.compare(df, s["baseline"], s["before"], s["after"], slo or Slo())
    return table, ba.overall(table, "test")


def with_after(**after) -> dict:
    return {k: (b, i, after.get(k, a)) for k, (b, i, a) in FIXED.items()}


def test_a_clear_fix_passes():
    table, v = judged(FIXED)
    assert v["outcome"] == "pass" and v["fixed"] and v["score"] == 100.0, v
    p95 = table.loc["latency_p95_ms"]
    assert p95["expect"] == "improve" and p95["change"] == "better" and p95["slo"] == "met"
    assert p95["shift_lo"] <= p95["shift"] <= p95["shift_hi"] < -p95["band"]  # the whole CI is past the band
    assert table.loc["request_rate", "expect"] == "hold" and table.loc["request_rate", "passed"]
    assert v["verdict"].startswith("pass: every critical signal improved or held")


def test_a_fix_that_did_not_help_fails_naming_the_signal():
    not_helped = {k: (b, i, i) for k, (b, i, a) in FIXED.items()}  # after == before + noise
    table, v = judged(not_helped)
    assert v["outcome"] == "fail" and not v["fixed"]
    assert v["verdict"].startswith("fail: API latency p95 is still"), v["verdict"]  # 8x its SLO: the SLO first
    # with SLOs it cannot miss, the reason is that it did not improve
    table, v = judged(not_helped, Slo(latency_p95_ms=10_000, error_ratio=1.0, cache_hit_ratio=0.0))
    assert v["outcome"] == "fail" and v["verdict"].startswith("fail: API latency p95 did not improve"), v["verdict"]
    assert table.loc["latency_p95_ms", "change"] in ("no change", "inconclusive")


def test_a_setting_the_deploy_lowered_is_shown_not_judged():
    """The deploy lowered the pool maximum 20 -> 4 and the fix drained the pool another way: the pool size is
    reported ("a setting"), weighs nothing, and the fix passes."""
    df, spans = incident({**FIXED, "db_pool_max": (20.0, 4.0, 4.0)})
    table = ba.compare(df, spans["baseline"], spans["before"], spans["after"], Slo())
    row = table.loc["db_pool_max"]
    assert row["expect"] == "report" and row["passed"] and row["weight"] == 0
    assert row["verdict"].startswith("a setting, not judged")
    assert ba.overall(table)["outcome"] == "pass"
    assert validation.display_table(table).set_index("signal").loc["DB pool size", "passes"] == "-"


def test_a_failing_critical_signal_overrides_good_others():
    _, v = judged(with_after(latency_p99_ms=3000.0))  # p99 worse than during the incident; all else fixed
    assert v["critical_failing"] == ["latency_p99_ms"] and v["failing"] == ["latency_p99_ms"]
    assert v["score"] >= ba.MARGINAL_SCORE  # the score alone would say marginal
    assert v["outcome"] == "fail" and v["verdict"].startswith("fail: API latency p99 got worse"), v["verdict"]


def test_a_missed_non_critical_slo_is_marginal():
    table, v = judged(with_after(cache_hit_ratio=0.70))  # improved from 7 %, short of the 80 % SLO
    assert table.loc["cache_hit_ratio", "change"] == "better" and table.loc["cache_hit_ratio", "slo"] == "missed"
    assert v["outcome"] == "marginal" and v["critical_failing"] == []
    assert v["reason"].startswith("Cache hit ratio misses its SLO at 69.6% against >= 80.0%"), v["reason"]


def test_autocorrelated_noise_is_not_a_change_unlike_the_iid_interval(monkeypatch):
    """AR(1) noise (phi 0.9) and no shift, 60 samples a window, a 2 % band: the corrected interval calls a
    change in at most 10 % of 50 seeds, the i.i.d. interval (inflation 1) in far more."""
    monkeypatch.setitem(ba.TOLERANCE, "request_rate", ba.Band(0.02, 0.0))
    idx = pd.date_range("2026-01-01", periods=60, freq="5s", tz="UTC")

    def changes() -> int:
        calls = 0
        for seed in range(50):
            rng = np.random.default_rng(seed)
            before = pd.Series(100 + ar1(rng, 60, 0.9, 10.0), index=idx)
            after = pd.Series(100 + ar1(rng, 60, 0.9, 10.0), index=idx)
            calls += ba.judge_signal("request_rate", before, after)["change"] in (ba.BETTER, ba.WORSE)
        return calls

    corrected = changes()
    monkeypatch.setattr(ba, "variance_inflation", lambda before, after: 1.0)
    naive = changes()
    print(f"changes called on 50 seeds: corrected {corrected}, i.i.d. {naive}")
    assert corrected <= 5, corrected
    assert naive >= 15, naive  # ~40 % on 200 seeds in the module docstring's comparison


def test_windows_that_do_not_overlap_are_a_change_even_with_few_effective_samples():
    """A trend inside each window (a draining queue, a cache filling) makes tau large and the CI's ranks fall
    outside the data. Then the range of every pairwise difference stands in: a 30x drop whose windows do not
    overlap is "better" (it was "not improved" with an unbounded CI); trending windows that overlap stay
    inconclusive."""
    idx = pd.date_range("2026-01-01", periods=12, freq="5s", tz="UTC")
    before = pd.Series(np.linspace(120.0, 220.0, 12), index=idx)   # DB queries/s climbing in the incident
    after = pd.Series(np.linspace(9.0, 4.0, 12), index=idx)        # and settling after the fix
    row = ba.judge_signal("db_query_rate", before, after)
    assert ba.hodges_lehmann(before.to_numpy(), after.to_numpy(), row["tau"])[3] is False  # too few for a CI
    assert row["change"] == ba.BETTER and not row["shift_ci_exact"]
    assert row["shift_lo"] == pytest.approx(4.0 - 220.0) and row["shift_hi"] == pytest.approx(9.0 - 120.0)
    overlapping = ba.judge_signal("db_query_rate", before, pd.Series(np.linspace(230.0, 110.0, 12), index=idx))
    assert overlapping["change"] == ba.INCONCLUSIVE and not overlapping["shift_ci_exact"]
    assert "every pair" in ba.why(pd.Series({**overlapping, "expect": "improve"}))


def test_autocorrelation_time_of_white_and_ar1_noise():
    rng = np.random.default_rng(7)
    assert ba.autocorrelation_time(rng.normal(size=2000)) < 1.5
    assert 12 < ba.autocorrelation_time(ar1(rng, 2000, 0.9, 1.0)) < 28  # (1 + 0.9) / (1 - 0.9) = 19
    assert ba.autocorrelation_time(np.full(50, 3.0)) == 1.0


def test_every_signal_of_the_catalog_has_a_band():
    assert set(ba.TOLERANCE) == set(CATALOG) and set(ba.CRITICAL) <= set(CATALOG)


def test_constant_windows_and_too_few_samples():
    idx = pd.date_range("2026-01-01", periods=30, freq="5s", tz="UTC")
    row = ba.judge_signal("error_ratio", pd.Series(0.0, index=idx), pd.Series(0.0, index=idx),
                          target=("<=", 0.01))
    assert row["change"] == "no change" and row["p_value"] == 1.0 and row["slo"] == "met" and row["passed"]
    short = ba.judge_signal("error_ratio", pd.Series(0.0, index=idx), pd.Series(0.0, index=idx[:5]))
    assert short["change"] == ba.NO_DATA and "fewer than" in short["verdict"]
    with pytest.raises(ba.JudgeInputError, match="not a signal"):
        ba.judge_signal("latency_p42", pd.Series(0.0, index=idx), pd.Series(0.0, index=idx))


# --- windows ---------------------------------------------------------------------------------------------


def symptoms_for(df: pd.DataFrame, recovery: bool) -> dict:
    idx = df.index
    win = IncidentWindow(baseline=(idx[0], idx[N_BASE - 1]), incident=(idx[N_BASE], idx[N_BASE + N_INC - 1]),
                         recovery=(idx[N_BASE + N_INC], idx[-1]) if recovery else None,
                         baseline_level=40.0, incident_level=800.0, recovery_level=50.0 if recovery else None,
                         signal="latency_p95_ms")
    return {"window": win.as_dict()}


def test_windows_are_matched_and_start_after_the_last_change_settled():
    df, _ = incident(FIXED)
    idx = df.index
    first, last = idx[N_BASE + 70], idx[N_BASE + N_INC + 2]  # a change late in the incident, one after it
    w = ba.validation_windows(symptoms_for(df, recovery=True), None, df, changes=[first, last])
    assert w.before[1] < first and w.after[0] >= last + ba.SETTLE_AFTER_CHANGE
    assert w.before[0] >= idx[N_BASE] + ba.SETTLE_AFTER_CHANGE  # the onset ramp is left out
    n_before = int(((idx >= w.before[0]) & (idx <= w.before[1])).sum())
    n_after = int(((idx >= w.after[0]) & (idx <= w.after[1])).sum())
    assert n_before == n_after == w.samples >= ba.MIN_SAMPLES
    # no change known: the after window is the recovery the data shows
    w = ba.validation_windows(symptoms_for(df, recovery=True), None, df)
    assert w.after[0] == idx[N_BASE + N_INC] and w.before[1] == idx[N_BASE + N_INC - 1]


def test_live_run_waits_then_measures_from_the_settled_change():
    df, _ = incident(FIXED)
    finished = df.index[N_BASE + N_INC + 4]
    remediation = {"applied": ["x"], "finished_at": finished.isoformat()}
    assert ba.after_ready_at(remediation, STEP_S) == (finished + ba.SETTLE_AFTER_CHANGE + ba.AFTER_WINDOW
                                                      + pd.Timedelta(seconds=STEP_S))
    assert ba.after_ready_at({"applied": []}, STEP_S) is None
    w = ba.validation_windows(symptoms_for(df, recovery=False), remediation, df)
    assert w.after[0] == finished + ba.SETTLE_AFTER_CHANGE
    nothing = ba.validation_windows(symptoms_for(df, recovery=False), None, df)
    assert nothing.after is None and "no recovery" in nothing.how
    table = ba.compare(df, nothing.baseline, nothing.before, nothing.after, Slo())
    v = ba.overall(table, nothing.how)
    assert v["outcome"] == "not validated" and v["verdict"].startswith("NOT VALIDATED YET")


# --- the bundled incident and the write-up's claims -------------------------------------------------------


@pytest.fixture(scope="module")
def bundled():
    src = FixtureSource(ROOT / "fixtures" / "d2-latency")
    df = src.fetch(list(src.available()), *src.default_range(), STEP_S)
    settings = load_settings(ROOT / "parameters" / "fixtures.yaml")
    symptoms = symptom_correlation.symptoms(df, STEP_S).payload
    return df, symptoms, settings, validation.change_events(src.events())


def test_the_bundled_incident_is_fixed(bundled):
    """The re-recorded incident (issue 18): the runbook's own fixes, judged on the recording, pass."""
    df, symptoms, settings, changes = bundled
    v = validation.validation(df, symptoms, None, settings.slo, changes=changes, incident_id=settings.incident.id)
    assert v.after[0] >= max(changes) + ba.SETTLE_AFTER_CHANGE and v.before[1] < min(changes)
    assert v.verdict["outcome"] == "pass" and v.verdict["failing"] == [], v.verdict
    p95 = v.table.loc["latency_p95_ms"]
    assert p95["change"] == "better" and p95["slo"] == "met" and p95["after"] < 0.2 * p95["before"]
    errors = v.table.loc["error_ratio"]
    assert errors["expect"] == "improve" and errors["before"] > 0.03 and errors["slo"] == "met"
    assert v.table.loc["cache_hit_ratio", "slo"] == "met" and v.table.loc["db_pool_max", "expect"] == "report"
    assert set(v.payload) == {"windows", "verdict", "signals", "claims", "method"}
    # the keys the postmortem reads (report/postmortem.py) are still there
    assert {"label", "baseline", "before", "after", "after/before", "p_value", "target", "verdict"} <= set(
        v.payload["signals"][0])
    assert {"verdict", "score"} <= set(v.payload["verdict"])
    assert "PASS" in validation.validation_conclusion(v.verdict, v.table)


def test_the_writeup_claims_show_only_for_the_d2_incident(bundled):
    df, symptoms, settings, changes = bundled
    v = validation.validation(df, symptoms, None, settings.slo, changes=changes, incident_id=settings.incident.id)
    assert list(v.claims["signal"]) == [c.signal for c in ba.WRITEUP_CLAIMS]
    claims = v.claims.set_index("signal")
    assert claims.loc["latency_p95_ms", "claimed before"] == 800 and claims.loc["request_rate", "claimed after/before"] == 3
    assert claims.loc["request_rate", "holds here"] is False  # constant lab load: no 3x throughput here
    assert claims.loc["error_ratio", "holds here"] is True  # 10 % -> < 1 %: 15 % -> 0 here
    assert len(validation.claims_display(v.claims)) == len(ba.WRITEUP_CLAIMS)
    other = validation.validation(df, symptoms, None, settings.slo, changes=changes, incident_id="inc-2026-0142")
    assert other.claims is None and other.payload["claims"] is None
    assert "not the D2 incident" in validation.claims_sentence(None, "inc-2026-0142")


@pytest.mark.parametrize("incident_id, d2", [("d2-latency", True), ("lab-d2-latency", True), ("d2-synthetic", True),
                                             ("inc-2026-0142", False), ("d20-outage", False), ("xd2", False)])
def test_which_incident_is_the_d2_one(incident_id, d2):
    assert ba.is_d2_incident(incident_id) is d2


@pytest.fixture(scope="module")
def unhelped_bundle(tmp_path_factory) -> Path:
    """The bundled incident re-cut so the changes did not help: from the first change on, every signal replays
    the incident's own samples (cycled), with the bundle's events, phases and snapshots untouched."""
    src = ROOT / "fixtures" / "d2-latency"
    manifest = yaml.safe_load((src / "bundle.yaml").read_text())
    first_change = min(pd.Timestamp(e["time"]) for e in manifest["events"] if e["kind"] == "remediation")
    start, end = (pd.Timestamp(t) for t in manifest["phases"]["incident"])

    def replay_the_incident(signals: pd.DataFrame) -> pd.DataFrame:
        incident = signals[(signals.index >= start) & (signals.index < end)]
        after = signals.index >= first_change
        signals.loc[after] = np.resize(incident.to_numpy(), (int(after.sum()), signals.shape[1]))
        return signals

    return edited_copy(src, tmp_path_factory.mktemp("unhelped") / "d2-unhelped", signals=replay_the_incident)


def test_a_bundle_whose_fix_did_not_help_fails_with_the_reason(unhelped_bundle):
    src = FixtureSource(unhelped_bundle)
    df = src.fetch(list(src.available()), *src.default_range(), STEP_S)
    settings = load_settings(ROOT / "parameters" / "fixtures.yaml")
    changes = validation.change_events(src.events())
    v = validation.validation(df, symptom_correlation.symptoms(df, STEP_S).payload, None, settings.slo,
                              changes=changes, incident_id=settings.incident.id)
    assert v.after[0] >= max(changes) + ba.SETTLE_AFTER_CHANGE
    assert v.verdict["outcome"] == "fail", v.verdict
    assert "latency_p95_ms" in v.verdict["critical_failing"], v.verdict
    assert "p95" in v.verdict["reason"], v.verdict["reason"]
    assert v.table.loc["latency_p95_ms", "change"] != "better"
    assert validation.validation_conclusion(v.verdict, v.table).startswith(
        "**Concluded: FAIL, not fixed.** API latency p95 is still")
    claims = v.claims.set_index("signal")
    assert claims.loc["latency_p95_ms", "holds here"] is False  # the write-up's 800 -> 50 ms is not seen here
