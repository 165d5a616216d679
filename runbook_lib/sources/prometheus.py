"""Backend: a Prometheus server, one PromQL query per signal (``source.kind: prometheus``).

Each signal's query must return exactly one series; its ``query_range`` result over the window
becomes that signal's column. Long ranges are split into several requests so none exceeds
Prometheus's per-series resolution limit. Talks to Prometheus through ``prometheus_api_client``.

The bearer token (``source.bearer_token``) is read from its SecretRef when the first request is
made, sent as an ``Authorization: Bearer`` header, registered with ``runbook_lib.redaction`` and never
written into a message, repr or log line.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import requests
import urllib3
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from runbook_lib.errors import SourceError
from runbook_lib.redaction import redact_text
from runbook_lib.settings import PrometheusSource as PrometheusSettings
from runbook_lib.sources.events import read_events_file
from runbook_lib.sources.timeseries import Event, SignalSource, to_utc

log = logging.getLogger(__name__)

# Prometheus refuses a query_range whose (end - start) / step exceeds 11,000 points per series
# ("exceeded maximum resolution of 11,000 points per timeseries", web/api/v1/api.go). A chunk of
# MAX_POINTS_PER_REQUEST grid points spans (MAX_POINTS_PER_REQUEST - 1) steps, safely inside it.
PROMETHEUS_MAX_POINTS = 11_000
MAX_POINTS_PER_REQUEST = PROMETHEUS_MAX_POINTS

# Retries: one more try on a refused connection or a gateway error, short backoff. The library's
# default (3 retries, backoff factor 1) makes an unreachable server take several seconds to report.
RETRY_TOTAL = 1
RETRY_BACKOFF_S = 0.2
RETRY_ON_STATUS = (502, 503, 504)

# Prometheus answers 400 (bad_data: parse error) or 422 (execution error) for a query it cannot run.
QUERY_ERROR_STATUS = ("400", "422")

# Prometheus's own series of alerts: one per alert (and label set) while it is pending or firing.
ALERTS_FIRING = 'ALERTS{alertstate="firing"}'

# How much of Prometheus's own error text to quote in a one-line message.
MAX_ERROR_TEXT = 300
# `runbook check` / the run's preflight: a reachable Prometheus answers its build info at once.
CHECK_TIMEOUT_S = 10.0


class PrometheusSource(SignalSource):
    """Signals from Prometheus ``query_range``; built from the ``source`` section of the parameters.

    ``warnings`` collects notes about the last fetches (e.g. a query that returned no series),
    for the notebook to show; they are also logged.
    """

    def __init__(self, settings: PrometheusSettings, events_file: Path | None = None,
                 default_start: datetime | None = None):
        self.settings = settings
        self.events_file = events_file
        self.default_start = default_start
        self.url = settings.url.rstrip("/")
        self.queries: dict[str, str] = dict(settings.queries)
        self.description = f"prometheus {redact_text(self.url)}"
        self.warnings: list[str] = []
        self._connection: PrometheusConnect | None = None

    def __repr__(self) -> str:
        token = f", bearer_token={self.settings.bearer_token.describe()}" if self.settings.bearer_token else ""
        return f"PrometheusSource(url={redact_text(self.url)!r}{token})"

    def available(self) -> list[str]:
        return list(self.queries)

    def events(self) -> list[Event]:
        return read_events_file(self.events_file) if self.events_file else []

    def default_range(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """From ``default_start`` (lab mode: the last incident scenario's start) to now."""
        if self.default_start is None:
            return None
        return to_utc(self.default_start).floor("s"), pd.Timestamp.now(tz="UTC").floor("s")

    # --- connection ------------------------------------------------------------------------------

    def _client(self) -> PrometheusConnect:
        if self._connection is None:
            headers = None
            if self.settings.bearer_token is not None:
                token = self.settings.bearer_token.reveal()  # registers the value for redaction
                headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
            retry = Retry(total=RETRY_TOTAL, backoff_factor=RETRY_BACKOFF_S, status_forcelist=RETRY_ON_STATUS,
                          allowed_methods=None, raise_on_status=False)
            self._connection = PrometheusConnect(url=self.url, headers=headers, disable_ssl=not self.settings.verify_tls,
                                                 retry=retry, timeout=self.settings.timeout_s)
        return self._connection

    def check(self) -> None:
        """Reach the server before a run folder exists: one cheap API call (its build info)."""
        client = self._client()
        try:
            r = requests.get(f"{self.url}/api/v1/status/buildinfo", headers=getattr(client, "headers", None) or {},
                             verify=self.settings.verify_tls, timeout=min(self.settings.timeout_s, CHECK_TIMEOUT_S))
        except requests.exceptions.RequestException as e:
            raise self._request_error("(connection check)", e) from None
        if r.status_code != 200:
            raise self._http_error("(connection check)", str(r.status_code), r.text[:200])

    # --- fetching --------------------------------------------------------------------------------

    def _fetch(self, names: list[str], start: pd.Timestamp, end: pd.Timestamp, step_seconds: int) -> pd.DataFrame:
        columns = {name: self._fetch_signal(name, start, end, step_seconds) for name in names}
        return pd.DataFrame(columns)

    def _fetch_signal(self, name: str, start: pd.Timestamp, end: pd.Timestamp, step_seconds: int) -> pd.Series:
        parts = []
        for chunk_start, chunk_end in chunk_range(start, end, step_seconds):
            result = self._query_range(name, chunk_start, chunk_end, step_seconds)
            if len(result) > 1:
                raise SourceError(
                    f"query for signal {name!r} returned {len(result)} series "
                    f"(e.g. {_labels(result[0]['metric'])}, {_labels(result[1]['metric'])}); it must return one",
                    hint=f"aggregate the query in source.queries.{name}, e.g. sum by () (...) or max(...)")
            if result:
                parts.append(_series(result[0]["values"]))
        if not parts:
            self._warn(f"query for signal {name!r} returned no series between {start} and {end}: column is empty")
            return pd.Series(index=pd.DatetimeIndex([], tz="UTC"), dtype="float64", name=name)
        out = pd.concat(parts)
        return out[~out.index.duplicated(keep="last")].rename(name)

    def _query_range(self, name: str, start: datetime, end: datetime, step_seconds: int) -> list[dict]:
        query = self.queries[name]
        try:
            return self._client().custom_query_range(query, start_time=start, end_time=end, step=str(step_seconds))
        except PrometheusApiClientException as e:
            raise self._http_error(name, *_api_error(str(e))) from None
        except requests.exceptions.RequestException as e:
            raise self._request_error(name, e) from None

    def sub_window_values(self, name: str, start: datetime, end: datetime, parts: int) -> list[float | None]:
        """The signal over each of ``parts`` equal, consecutive sub-windows of [start, end], each value resting on
        samples inside its own sub-window only (the verify loop's "after" must hold no pre-change data).

        The query's range selectors (``rate(x[30s])``) are rewritten to the sub-window's length and the query
        is evaluated at each sub-window's end (instant queries: ``query_range`` through the client rounds times
        to whole seconds). A sub-window without data (shorter than two scrapes, say) is None. Raises
        SourceError for a query whose value cannot be confined to a window (a subquery or an ``offset``)."""
        t0 = pd.Timestamp(start).timestamp()
        length = (pd.Timestamp(end).timestamp() - t0) / parts
        query = confined_to(self.queries[name], length)
        values: list[float | None] = []
        for i in range(1, parts + 1):
            try:
                result = self._client().custom_query(query, params={"time": f"{t0 + i * length:.3f}"})
            except PrometheusApiClientException as e:
                raise self._http_error(name, *_api_error(str(e))) from None
            except requests.exceptions.RequestException as e:
                raise self._request_error(name, e) from None
            value = float(result[0]["value"][1]) if len(result) == 1 else None
            values.append(value if value is not None and math.isfinite(value) else None)
        return values

    def alert_events(self, start: pd.Timestamp, end: pd.Timestamp, step_seconds: int) -> list[Event]:
        """Alerts that fired in [start, end] as chart events: "<alert> firing" when a firing series appears,
        "<alert> resolved" one step after it was last seen (from Prometheus's own ``ALERTS`` series). [] when the
        server evaluates no alert rules or cannot be asked: alerts are markers, not evidence."""
        try:
            chunks = chunk_range(start, end, step_seconds)
            result = [r for a, b in chunks for r in self._client().custom_query_range(
                ALERTS_FIRING, start_time=a, end_time=b, step=str(step_seconds))]
        except (PrometheusApiClientException, requests.exceptions.RequestException):
            return []
        runs: dict[str, list[float]] = {}
        for r in result:
            runs.setdefault(r["metric"].get("alertname", "alert"), []).extend(float(t) for t, _ in r["values"])
        out = []
        for name, times in runs.items():
            times = sorted(set(times))
            for i, t in enumerate(times):
                if i == 0 or t - times[i - 1] > step_seconds * 1.5:
                    out.append(Event(pd.Timestamp(t, unit="s", tz="UTC"), f"{name} firing", "alert"))
                if i == len(times) - 1 or times[i + 1] - t > step_seconds * 1.5:
                    if t + step_seconds <= pd.Timestamp(end).timestamp():
                        out.append(Event(pd.Timestamp(t + step_seconds, unit="s", tz="UTC"), f"{name} resolved",
                                         "alert"))
        return sorted(out, key=lambda e: e.time)

    def _request_error(self, name: str, e: requests.exceptions.RequestException) -> SourceError:
        if _is_timeout(e):
            return SourceError(
                f"{self.description} did not answer within {self.settings.timeout_s:g} s (signal {name!r})",
                hint="check the server's load, narrow the window or raise source.timeout_s")
        if isinstance(e, requests.exceptions.SSLError):
            return SourceError(
                redact_text(f"TLS error talking to {self.description}: {_reason(e)}"),
                hint="fix the server certificate or, for a lab server, set source.verify_tls: false")
        return SourceError(
            redact_text(f"cannot reach {self.description}: {_reason(e)}"),
            hint="check source.url, that Prometheus is running and that this machine can reach it")

    def _http_error(self, name: str, status: str, text: str) -> SourceError:
        if status in QUERY_ERROR_STATUS:
            return SourceError(
                redact_text(f"{self.description} rejected the query for signal {name!r} (HTTP {status}): {text}"),
                hint=f"fix the PromQL in source.queries.{name} (try it in the Prometheus web UI)")
        hint = ("check source.bearer_token and that the token may read this Prometheus" if status in ("401", "403")
                else "check that source.url points at the Prometheus server itself (no path, proxy or gateway)")
        return SourceError(redact_text(f"{self.description} answered HTTP {status} to the query for signal "
                                       f"{name!r}: {text or '(empty body)'}"), hint=hint)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)


def chunk_range(start: pd.Timestamp, end: pd.Timestamp, step_seconds: int,
                max_points: int = MAX_POINTS_PER_REQUEST) -> list[tuple[datetime, datetime]]:
    """Split the grid ``start, start+step, ..., <= end`` into (first, last) pairs of at most ``max_points``
    grid points each. Consecutive chunks are one step apart: no sample twice, none missing.

    Times are whole seconds (the client rounds to seconds anyway); ``start`` is rounded to the second.
    """
    first = round(pd.Timestamp(start).timestamp())
    last = pd.Timestamp(end).timestamp()
    n_points = int((last - first) // step_seconds) + 1
    if n_points < 1:
        return []
    chunks = []
    for i in range(0, n_points, max_points):
        a = first + i * step_seconds
        b = first + (min(i + max_points, n_points) - 1) * step_seconds
        chunks.append((_utc(a), _utc(b)))
    return chunks


# A PromQL range selector: ``[30s]``, ``[1m30s]`` (a subquery ``[5m:1m]`` has a colon and is not one).
_RANGE = re.compile(r"\[\s*((?:\d+(?:ms|s|m|h|d|w|y))+)\s*\]")
_SUBQUERY = re.compile(r"\[[^\]]*:[^\]]*\]")
_OFFSET = re.compile(r"\boffset\b|@\s*[\d.]+|@\s*(?:start|end)\(\)")


def confined_to(query: str, seconds: float) -> str:
    """``query`` with every range selector set to ``seconds``, so a value at time t rests only on samples in
    (t - seconds, t]. SourceError for a query that reads outside its window by construction."""
    if _SUBQUERY.search(query) or _OFFSET.search(query):
        raise SourceError(f"the query {query!r} has a subquery, offset or @ modifier: its value cannot be confined "
                          "to a window after a change", hint="measure this signal with a plain rate()/gauge query")
    return _RANGE.sub(f"[{max(1, round(seconds * 1000))}ms]", query)


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _series(values: list) -> pd.Series:
    """Prometheus ``[[unix_time, "value"], ...]`` -> float series indexed by UTC time."""
    if not values:
        return pd.Series(index=pd.DatetimeIndex([], tz="UTC"), dtype="float64")
    times, vals = zip(*values)
    index = pd.to_datetime([float(t) for t in times], unit="s", utc=True)
    return pd.Series([float(v) for v in vals], index=index, dtype="float64")


def _labels(metric: dict) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


def _api_error(message: str) -> tuple[str, str]:
    """The HTTP status and Prometheus's ``error`` text out of the client's exception message,
    which is ``HTTP Status Code <n> (<repr of the response body bytes>)``."""
    m = re.match(r"HTTP Status Code (\d+) \((.*)\)\s*$", message, re.DOTALL)
    if not m:
        return "?", _first_line(message)
    status, body = m.groups()
    try:
        raw = ast.literal_eval(body)
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    except (ValueError, SyntaxError):
        text = body
    try:
        text = json.loads(text).get("error") or text
    except (ValueError, AttributeError):
        pass  # not Prometheus's JSON (a proxy's page, say): quote it as it is
    return status, _first_line(text)


def _is_timeout(e: requests.exceptions.RequestException) -> bool:
    """A timeout, also when the retry adapter wrapped it (ConnectionError(MaxRetryError(ReadTimeoutError)))."""
    if isinstance(e, requests.exceptions.Timeout):
        return True
    inner = e.args[0] if e.args else None
    if not isinstance(inner, MaxRetryError) or isinstance(inner.reason, NewConnectionError):
        return False  # urllib3 makes NewConnectionError (refused, no route) a ConnectTimeoutError subclass
    return isinstance(inner.reason, TimeoutError | urllib3.exceptions.TimeoutError)


def _reason(e: BaseException) -> str:
    """The innermost useful cause of a requests error, e.g. 'Connection refused'."""
    text = str(e)
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if m:
        return m.group(1).strip()
    return _first_line(text)


def _first_line(text: object) -> str:
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= MAX_ERROR_TEXT else line[:MAX_ERROR_TEXT] + "..."
