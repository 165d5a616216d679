"""CloudWatchSource against a real moto server (``moto_server``) on a free loopback port.

RDS metrics are written with ``put_metric_data`` at known minute timestamps and read back through
the source. moto's GetMetricData buckets datapoints into [start + k*period, start + (k+1)*period)
and computes Average/Sum/Minimum/Maximum/SampleCount (no percentiles, no pagination), which is
what these tests rely on.
"""

from __future__ import annotations

import urllib.request

import boto3
import pandas as pd
import pytest

from runbook_lib.errors import SourceError
from runbook_lib.lab.servers import free_port
from runbook_lib.settings import CloudWatchSource as CloudWatchSettings
from runbook_lib.sources import cloudwatch as cw_module
from runbook_lib.sources.cloudwatch import CloudWatchSource, cloudwatch_period
from tests.support.moto_support import start_moto, stop_moto  # noqa: F401 - test_moto_* use them

pytestmark = pytest.mark.slow

REGION = "us-east-1"
DB = "orders-db-1"
MINUTES = 30

METRICS = {
    "cpu_utilization": {"metric": "CPUUtilization", "stat": "Average", "scale": 0.01},
    "db_connections_active": {"metric": "DatabaseConnections", "stat": "Maximum"},
    "db_query_latency_ms": {"metric": "ReadLatency", "stat": "Average", "scale": 1000.0},
}


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    proc, url = start_moto(tmp_path_factory.mktemp("moto"))
    yield url
    stop_moto(proc)


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch, tmp_path):
    """Fake credentials; nothing read from the developer's ~/.aws or an instance role."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def rds_data(moto):
    """Reset moto, then write MINUTES minutes of three RDS metrics for DB (and a decoy instance)."""
    urllib.request.urlopen(urllib.request.Request(f"{moto}/moto-api/reset", method="POST"), timeout=5).close()
    t0 = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=MINUTES + 5)).floor("min")
    times = [t0 + pd.Timedelta(minutes=i) for i in range(MINUTES)]
    expected = pd.DataFrame({
        "cpu_utilization": [0.20 + 0.02 * i for i in range(MINUTES)],
        "db_connections_active": [float(10 + i) for i in range(MINUTES)],
        "db_query_latency_ms": [1.5 + 0.25 * i for i in range(MINUTES)],
    }, index=pd.DatetimeIndex(times, name="time"))
    raw = {"CPUUtilization": expected["cpu_utilization"] * 100, "DatabaseConnections": expected["db_connections_active"],
           "ReadLatency": expected["db_query_latency_ms"] / 1000}
    client = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto)
    for db, offset in ((DB, 0.0), ("decoy-db", 1000.0)):
        for metric, series in raw.items():
            data = [{"MetricName": metric, "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": db}],
                     "Timestamp": t.to_pydatetime(), "Value": float(v) + offset} for t, v in series.items()]
            for i in range(0, len(data), 20):
                client.put_metric_data(Namespace="AWS/RDS", MetricData=data[i:i + 20])
    return expected


def source(endpoint: str, **metrics: dict) -> CloudWatchSource:
    metrics = metrics or METRICS
    section = {"kind": "cloudwatch", "region": REGION, "endpoint_url": endpoint,
               "metrics": {name: {"namespace": "AWS/RDS", "dimensions": {"DBInstanceIdentifier": DB}, **m}
                           for name, m in metrics.items()}}
    return CloudWatchSource(CloudWatchSettings.model_validate(section))


def count_calls(src: CloudWatchSource) -> list[int]:
    """Count GetMetricData requests through botocore's own event hooks (no HTTP mocking)."""
    calls: list[int] = []
    src._client().meta.events.register("before-call.cloudwatch.GetMetricData", lambda **kw: calls.append(1))
    return calls


def test_values_match_what_was_written(moto, rds_data):
    src = source(moto)
    assert src.description == f"cloudwatch {REGION} at {moto}"
    calls = count_calls(src)
    start, end = rds_data.index[0], rds_data.index[-1]
    df = src.fetch(list(METRICS), start, end, 60)
    assert len(calls) == 1
    assert df.index.equals(pd.date_range(start, end, freq="60s", tz="UTC", name="time"))
    pd.testing.assert_frame_equal(df, rds_data, check_names=False, check_freq=False, rtol=1e-9)
    assert src.warnings == []


def test_range_and_queries_are_split_to_respect_api_limits(moto, rds_data, monkeypatch):
    reference = source(moto).fetch(list(METRICS), rds_data.index[0], rds_data.index[-1], 60)
    # pretend the limits are tiny so 3 queries x 30 minutes must be split both ways
    monkeypatch.setattr(cw_module, "MAX_QUERIES_PER_CALL", 2)
    monkeypatch.setattr(cw_module, "MAX_DATAPOINTS_PER_CALL", 14)
    src = source(moto)
    calls = count_calls(src)
    df = src.fetch(list(METRICS), rds_data.index[0], rds_data.index[-1], 60)
    # 30 periods; batch of 2 queries: 7 periods per call -> 5 calls; batch of 1: 14 -> 3 calls
    assert len(calls) == 5 + 3
    pd.testing.assert_frame_equal(df, reference)


def test_metric_without_data_gives_an_empty_column_and_a_warning(moto, rds_data):
    src = source(moto, cpu_utilization=METRICS["cpu_utilization"], memory_utilization={"metric": "FreeableMemory"})
    df = src.fetch(["cpu_utilization", "memory_utilization"], rds_data.index[0], rds_data.index[-1], 60)
    assert df["memory_utilization"].isna().all() and df["cpu_utilization"].notna().all()
    assert len(src.warnings) == 1 and "memory_utilization" in src.warnings[0]


def test_unreachable_endpoint_is_a_one_line_source_error():
    url = f"http://127.0.0.1:{free_port()}"
    src = source(url)
    end = pd.Timestamp.now(tz="UTC").floor("min")
    with pytest.raises(SourceError) as e:
        src.fetch(["cpu_utilization"], end - pd.Timedelta("10min"), end, 60)
    msg = str(e.value)
    assert msg.startswith(f"cannot reach cloudwatch {REGION} at {url}") and "\n" not in msg
    assert "endpoint_url" in e.value.hint and e.value.__cause__ is None


def test_missing_credentials_is_a_source_error(moto, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    end = pd.Timestamp.now(tz="UTC").floor("min")
    with pytest.raises(SourceError) as e:
        source(moto).fetch(["cpu_utilization"], end - pd.Timedelta("10min"), end, 60)
    assert "credentials" in str(e.value) and "AWS_PROFILE" in e.value.hint


def test_access_denied_and_invalid_keys_are_source_errors(tmp_path, monkeypatch):
    # moto enforces IAM after the first N requests: create a user and keys, then query with them
    proc, url = start_moto(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "2"})
    try:
        iam = boto3.client("iam", region_name=REGION, endpoint_url=url)
        iam.create_user(UserName="readonly-nothing")
        key = iam.create_access_key(UserName="readonly-nothing")["AccessKey"]
        end = pd.Timestamp.now(tz="UTC").floor("min")

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        with pytest.raises(SourceError) as denied:
            source(url).fetch(["cpu_utilization"], end - pd.Timedelta("10min"), end, 60)

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAINVALIDINVALID00")
        with pytest.raises(SourceError) as invalid:
            source(url).fetch(["cpu_utilization"], end - pd.Timedelta("10min"), end, 60)
    finally:
        stop_moto(proc)
    assert "AccessDenied" in str(denied.value) and "cloudwatch:GetMetricData" in denied.value.hint
    assert "InvalidClientTokenId" in str(invalid.value) and "invalid or expired" in invalid.value.hint
    for e in (denied.value, invalid.value):
        assert "\n" not in str(e) and key["SecretAccessKey"] not in str(e)


@pytest.mark.parametrize(("step", "age_h", "period"), [
    (1, 0, 1), (7, 0, 5), (45, 0, 30), (60, 0, 60), (90, 0, 60), (300, 0, 300),
    (30, 4, 60), (60, 24 * 20, 300), (600, 24 * 20, 600), (60, 24 * 70, 3600),
])
def test_period_is_a_valid_cloudwatch_period(step, age_h, period):
    assert cloudwatch_period(step, pd.Timedelta(hours=age_h)) == period



def test_check_reaches_cloudwatch_before_a_run(moto, rds_data):
    source(moto).check()  # the credentials, the region and the endpoint answer
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceError) as e:
        source(url).check()
    assert str(e.value).startswith(f"cannot reach cloudwatch {REGION} at {url}") and "\n" not in str(e.value)
