"""Backend: Amazon CloudWatch metrics via ``GetMetricData`` (``source.kind: cloudwatch``).

Each signal is one CloudWatch metric (namespace, name, dimensions, statistic) from the parameters,
multiplied by its ``scale`` (e.g. CPUUtilization percent -> ratio with 0.01). The step becomes the
CloudWatch period, rounded to a period CloudWatch accepts for data that old. Requests stay inside
the API limits (queries and datapoints per call) by batching queries and splitting the range;
every page (``NextToken``) is read. ``endpoint_url`` points at a moto server in tests and the lab.

Credentials come from the usual AWS chain (environment, profile, instance role); the parameters
never hold them.
"""

from __future__ import annotations

import html
import logging
import re
from collections import defaultdict
from collections.abc import Iterator

import boto3
import pandas as pd
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from runbook_lib.errors import SourceError
from runbook_lib.redaction import redact_text
from runbook_lib.settings import CloudWatchMetric
from runbook_lib.settings import CloudWatchSource as CloudWatchSettings
from runbook_lib.sources.timeseries import SignalSource

log = logging.getLogger(__name__)

# GetMetricData limits (CloudWatch API reference, "GetMetricData"): at most 500 MetricDataQuery
# structures per call, and at most 100,800 datapoints returned per call across all its queries.
MAX_QUERIES_PER_CALL = 500
MAX_DATAPOINTS_PER_CALL = 100_800

# Valid periods (API reference, "MetricStat.Period"): 1, 5, 10, 30 s (high-resolution metrics only)
# or any multiple of 60. Data older than 3 h is only served at multiples of 60 s, older than 15 days
# at multiples of 300 s, older than 63 days at multiples of 3600 s (else no datapoints come back).
SUB_MINUTE_PERIODS = (1, 5, 10, 30)
PERIOD_BY_AGE = ((pd.Timedelta(days=63), 3600), (pd.Timedelta(days=15), 300), (pd.Timedelta(hours=3), 60))

# Client behaviour: fail fast on an unreachable endpoint (botocore's default retries 4 times with
# backoff), but allow a slow answer for a large range.
MAX_ATTEMPTS = 2
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60

# Error codes that mean "these credentials may not do this" / "these credentials are not valid".
ACCESS_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
BAD_CREDENTIAL_CODES = {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
                        "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId"}


class CloudWatchSource(SignalSource):
    """Signals from CloudWatch ``GetMetricData``; built from the ``source`` section of the parameters.

    ``warnings`` collects notes about the last fetches (a metric without datapoints, a period
    changed to what CloudWatch serves); they are also logged.
    """

    def __init__(self, settings: CloudWatchSettings):
        self.settings = settings
        self.metrics: dict[str, CloudWatchMetric] = dict(settings.metrics)
        where = f" at {redact_text(settings.endpoint_url)}" if settings.endpoint_url else ""
        self.description = f"cloudwatch {settings.region}{where}"
        self.warnings: list[str] = []
        self._cw = None

    def __repr__(self) -> str:
        return f"CloudWatchSource({self.description!r}, signals={list(self.metrics)})"

    def available(self) -> list[str]:
        return list(self.metrics)

    def _client(self):
        if self._cw is None:
            config = Config(retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                            connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S)
            session = boto3.session.Session(region_name=self.settings.region)
            self._cw = session.client("cloudwatch", endpoint_url=self.settings.endpoint_url or None, config=config)
        return self._cw

    def check(self) -> None:
        """Reach CloudWatch before a run folder exists: one cheap call (ListMetrics for the first signal's
        metric) that also proves the credentials and the region."""
        m = next(iter(self.metrics.values()))
        try:
            self._client().list_metrics(Namespace=m.namespace, MetricName=m.metric)
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, "ListMetrics") from None

    # --- fetching --------------------------------------------------------------------------------

    def _fetch(self, names: list[str], start: pd.Timestamp, end: pd.Timestamp, step_seconds: int) -> pd.DataFrame:
        period = self._period(step_seconds, start)
        queries = [self._query(f"m{i}", name, period) for i, name in enumerate(names)]
        samples: dict[str, dict[pd.Timestamp, float]] = defaultdict(dict)
        for batch in _batches(queries, MAX_QUERIES_PER_CALL):
            for chunk_start, chunk_end in _time_chunks(start, end, period, len(batch)):
                for result in self._results(batch, chunk_start, chunk_end):
                    samples[result["Id"]].update(zip(result["Timestamps"], result["Values"]))
        return pd.DataFrame({q["Label"]: self._column(q, samples.get(q["Id"], {})) for q in queries})

    def _period(self, step_seconds: int, start: pd.Timestamp) -> int:
        period = cloudwatch_period(step_seconds, age=pd.Timestamp.now(tz="UTC") - start)
        if period != step_seconds:
            self._warn(f"CloudWatch period is {period} s for the {step_seconds} s step "
                       "(CloudWatch only serves certain periods, coarser ones for older data)")
        if period < 60:
            self._warn(f"period {period} s is below a minute: only high-resolution custom metrics have "
                       "datapoints that fine (AWS/* metrics such as AWS/RDS have one per minute)")
        return period

    def _query(self, query_id: str, name: str, period: int) -> dict:
        m = self.metrics[name]
        metric = {"Namespace": m.namespace, "MetricName": m.metric,
                  "Dimensions": [{"Name": k, "Value": v} for k, v in m.dimensions.items()]}
        return {"Id": query_id, "Label": name, "ReturnData": True,
                "MetricStat": {"Metric": metric, "Period": period, "Stat": m.stat}}

    def _results(self, batch: list[dict], start: pd.Timestamp, end: pd.Timestamp) -> Iterator[dict]:
        """Every MetricDataResult of one call, across all its pages."""
        try:
            pages = self._client().get_paginator("get_metric_data").paginate(
                MetricDataQueries=batch, StartTime=start.to_pydatetime(), EndTime=end.to_pydatetime(),
                ScanBy="TimestampAscending")
            for page in pages:
                for message in page.get("Messages", []):
                    self._warn(f"CloudWatch: {message.get('Code', '')} {message.get('Value', '')}".strip())
                yield from page["MetricDataResults"]
        except (BotoCoreError, ClientError) as e:
            raise self._error(e) from None

    def _column(self, query: dict, samples: dict) -> pd.Series:
        name = query["Label"]
        if not samples:
            m = self.metrics[name]
            self._warn(f"no datapoints for signal {name!r} ({m.namespace} {m.metric} {m.stat} "
                       f"{m.dimensions or ''}) in the window: column is empty")
            return pd.Series(index=pd.DatetimeIndex([], tz="UTC"), dtype="float64", name=name)
        index = pd.DatetimeIndex(list(samples)).tz_convert("UTC")
        values = pd.Series(list(samples.values()), index=index, dtype="float64", name=name)
        return values.sort_index() * self.metrics[name].scale

    # --- errors ----------------------------------------------------------------------------------

    def _error(self, e: Exception, operation: str = "GetMetricData") -> SourceError:
        if isinstance(e, NoCredentialsError | PartialCredentialsError):
            return SourceError(f"no usable AWS credentials for {self.description}: {e}",
                               hint="export AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), "
                                    "or run 'aws sso login'")
        if isinstance(e, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
            return SourceError(redact_text(f"cannot reach {self.description}: {_one_line(e)}"),
                               hint="check source.endpoint_url / source.region and that this machine can reach it")
        if isinstance(e, ClientError):
            code, text = _client_error_parts(e)
            msg = redact_text(f"{self.description} refused {operation}: {code}: {text}")
            if code in ACCESS_DENIED_CODES:
                return SourceError(msg, hint="grant the identity cloudwatch:GetMetricData and cloudwatch:ListMetrics "
                                                "(read-only is enough)")
            if code in BAD_CREDENTIAL_CODES:
                return SourceError(msg, hint="the AWS credentials are invalid or expired: refresh them "
                                             "(aws sso login, or new access keys) for this account")
            return SourceError(msg, hint="check source.metrics (namespace, metric, dimensions, stat) "
                                         "against the CloudWatch console")
        return SourceError(redact_text(f"CloudWatch request failed for {self.description}: {_one_line(e)}"))

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("%s", message)


def cloudwatch_period(step_seconds: int, age: pd.Timedelta | None = None) -> int:
    """The CloudWatch period closest to ``step_seconds`` from below (never finer than the data
    ``age`` allows): 1, 5, 10, 30, or a multiple of 60 (of 300 / 3600 for older data)."""
    if step_seconds < 60:
        period = max(p for p in SUB_MINUTE_PERIODS if p <= max(step_seconds, 1))
    else:
        period = step_seconds // 60 * 60
    for min_age, multiple in PERIOD_BY_AGE:
        if age is not None and age > min_age:
            return max(multiple, -(-period // multiple) * multiple)  # round up to the multiple
    return period


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _time_chunks(start: pd.Timestamp, end: pd.Timestamp, period: int, n_queries: int
                 ) -> Iterator[tuple[pd.Timestamp, pd.Timestamp]]:
    """Half-open ranges [a, b) covering [start, end] (the period that starts at ``end`` included),
    each returning at most MAX_DATAPOINTS_PER_CALL datapoints for ``n_queries`` queries."""
    periods_per_call = max(1, MAX_DATAPOINTS_PER_CALL // max(n_queries, 1))
    span = pd.Timedelta(seconds=periods_per_call * period)
    stop = end + pd.Timedelta(seconds=period)
    a = start.floor("s")
    while a < stop:
        b = min(a + span, stop)
        yield a, b
        a = b


def _client_error_parts(e: ClientError) -> tuple[str, str]:
    """(code, message) of an AWS error. botocore talks CloudWatch's CBOR/JSON protocol; an endpoint
    answering in the older XML form (moto's IAM check, some proxies) leaves that XML in Message."""
    err = e.response.get("Error", {})
    code, text = str(err.get("Code", "?")), str(err.get("Message", ""))
    if text.lstrip().startswith("<"):
        xml_code = re.search(r"<Code>([^<]*)</Code>", text)
        xml_message = re.search(r"<Message>([^<]*)</Message>", text)
        code = xml_code.group(1) if xml_code else code
        text = html.unescape(xml_message.group(1)) if xml_message else ""
    return code, _one_line(text)


def _one_line(e: object) -> str:
    return (str(e).strip().splitlines() or [""])[0]
