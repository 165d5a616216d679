"""Alert rules for the service under repair, proven with promtool (issue 15, part 2).

The generated rules file passes ``promtool check rules``; ``promtool test rules`` cases written here replay
series shaped like the incident (10 % 5xx, slow buckets, hit ratio 8 %, pool at 95 %: every alert fires),
the same incident followed by the fix (0 % 5xx, fast buckets, hit ratio 85 %: pages and causes resolve
within their short windows, tickets once their windows clear) and a healthy control (nothing fires, even
with an unhealthy job next to it). The negative tests break one thing at a time -- the write-up's own
HighLatency expression (no rate(), no sum by (le)), a threshold, a burn factor -- and promtool must fail.
One slow test loads the file into a real Prometheus scraping an exporter and sees an alert go pending.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.utils import floatToGoString

from runbook_lib.lab import backend
from runbook_lib.lab.servers import PrometheusServer, free_port, wait_until
from runbook_lib.settings import Slo, load_settings, project_root
from runbook_lib.validate import alert_rules, promtool
from runbook_lib.validate.alert_rules import LAB_METRICS, AlertRulesError, rules, write_rules
from runbook_lib.validate.promtool import PromtoolError, check_rules, test_rules

SERVICE = "lab-backend"
# parameters/lab.yaml's SLO (built here so that an edit of the lab's parameters does not move these tests)
LAB_SLO = Slo(latency_p95_ms=100, error_ratio=0.01, cache_hit_ratio=0.70)
SELECTOR = {"job": "lab"}

BURN_ALERTS = ("ErrorBudgetBurnPage", "ErrorBudgetBurnTicket", "LatencyBudgetBurnPage", "LatencyBudgetBurnTicket")
PAGE_ALERTS = ("ErrorBudgetBurnPage", "LatencyBudgetBurnPage")
TICKET_ALERTS = ("ErrorBudgetBurnTicket", "LatencyBudgetBurnTicket")
CAUSE_ALERTS = ("HighLatency", "LowCacheHitRatio", "DatabaseConnectionsHigh")
INCIDENT_ALERTS = BURN_ALERTS + CAUSE_ALERTS
ALL_ALERTS = INCIDENT_ALERTS + ("SLOMetricsAbsent",)


# --- series shaped like the incident and like the fix ----------------------------------------------


@dataclass(frozen=True)
class Shape:
    """Per minute: requests by status, where their latencies fall (bucket bound -> share), cache hits and
    misses by route, pool connections in use by instance (of POOL_MAX each)."""

    requests: dict[str, int]
    latency: dict[float, float]
    hits: dict[str, int]
    misses: dict[str, int]
    pool_in_use: dict[str, int]
    extra_labels: dict[str, str] = field(default_factory=dict)


POOL_MAX = 10
# The write-up's incident: 10 % 5xx, p95 ~0.9 s (95 % of the requests over 100 ms), hit ratio 8 %, pool 19/20.
INCIDENT = Shape(requests={"200": 540, "503": 60},
                 latency={0.08: 0.05, 0.25: 0.15, 0.4: 0.2, 0.8: 0.5, 1.0: 0.07, 2.5: 0.03},
                 hits={"users": 30, "products": 18}, misses={"users": 300, "products": 252},
                 pool_in_use={"replica-0": 10, "replica-1": 9})
# After the fix: 0 % 5xx (the 503 series stays, flat), p95 ~25 ms, hit ratio 85 %, pool 5/20.
FIXED = Shape(requests={"200": 600, "503": 0},
              latency={0.01: 0.6, 0.025: 0.39, 0.06: 0.01},
              hits={"users": 300, "products": 210}, misses={"users": 50, "products": 40},
              pool_in_use={"replica-0": 3, "replica-1": 2})
# The healthy control: never a 5xx series at all (the error SLI's "or vector(0)"), hit ratio 85 %.
HEALTHY = Shape(requests={"200": 600}, latency=FIXED.latency, hits=FIXED.hits, misses=FIXED.misses,
                pool_in_use=FIXED.pool_in_use)
# Another job on the same Prometheus, failing everything: the selector must keep it out.
OTHER_JOB = Shape(requests={"500": 100}, latency={2.5: 1.0}, hits={"users": 0}, misses={"users": 100},
                  pool_in_use={"other-0": 10}, extra_labels={"job": "other"})


def _fmt(x: float) -> str:
    """A sample value without loss ({x:g} would write 1234567 as 1.23457e+06)."""
    x = round(float(x), 6)
    return str(int(x)) if x.is_integer() else repr(x)


def _labels(**labels: str) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _per_minute(shape: Shape) -> dict[str, float]:
    """Series name -> increment per minute (counters) or value (gauges, named with a leading '=')."""
    base = {**SELECTOR, **shape.extra_labels}
    out: dict[str, float] = {}
    for status, n in shape.requests.items():
        lab = {**base, "method": "GET", "route": "/api/users", "status": status}
        for le in LAB_METRICS.latency_buckets + (float("inf"),):
            share = sum(s for bound, s in shape.latency.items() if bound <= le)
            out[f"http_request_duration_seconds_bucket{_labels(**lab, le=floatToGoString(le))}"] = round(n * share, 6)
        out[f"http_request_duration_seconds_count{_labels(**lab)}"] = n
    for route, n in shape.hits.items():
        out[f"cache_hits_total{_labels(**base, route=route)}"] = n
    for route, n in shape.misses.items():
        out[f"cache_misses_total{_labels(**base, route=route)}"] = n
    for inst, n in shape.pool_in_use.items():
        out[f"=db_pool_in_use{_labels(**base, instance=inst)}"] = n
        out[f"=db_pool_max{_labels(**base, instance=inst)}"] = POOL_MAX
    return out


def input_series(*phases: tuple[int, Shape]) -> list[dict]:
    """promtool input series for consecutive phases of (minutes, shape), one sample a minute; counters carry on
    from one phase to the next, a series absent from a phase stays flat (a counter) or disappears (a gauge)."""
    names = list(dict.fromkeys(n for _, shape in phases for n in _per_minute(shape)))
    series = []
    for name in names:
        gauge, value, parts = name.startswith("="), 0.0, []
        for minutes, shape in phases:
            step = _per_minute(shape).get(name)
            if gauge:
                parts.append(f"{_fmt(step)}x{minutes - 1}" if step is not None else f"_x{minutes - 1}")
            else:
                step = step or 0.0
                parts.append(f"{_fmt(value)}+{_fmt(step)}x{minutes - 1}")
                value += step * minutes
        series.append({"series": name.lstrip("="), "values": " ".join(parts)})
    return series


def expect(rules_: dict, name: str) -> list[dict]:
    """The alert ``name`` firing once, with the labels and annotations its rule gives it (the expressions
    aggregate every series away, so the rule's labels are all there is)."""
    rule = next(r for g in rules_["groups"] for r in g["rules"] if r.get("alert") == name)
    return [{"exp_labels": dict(rule["labels"]), "exp_annotations": dict(rule["annotations"])}]


def checks(rules_: dict, minute: int, firing: tuple[str, ...], quiet: tuple[str, ...]) -> list[dict]:
    return ([{"eval_time": f"{minute}m", "alertname": a, "exp_alerts": expect(rules_, a)} for a in firing]
            + [{"eval_time": f"{minute}m", "alertname": a, "exp_alerts": []} for a in quiet])


def sli_is(record: str, slo: str, value: float, minute: int) -> dict:
    """The recorded SLI equals ``value`` (to 1e-9) at ``minute``: promtool compares samples exactly."""
    return {"expr": f'abs({record}{{service="{SERVICE}", slo="{slo}"}} - {value}) < bool 1e-9',
            "eval_time": f"{minute}m", "exp_samples": [{"labels": _labels(service=SERVICE, slo=slo), "value": 1}]}


def incident_case(r: dict) -> dict:
    """90 minutes of the incident: at 30 min every alert of the write-up and every burn-rate alert fires; at
    1 min HighLatency is still pending (its for: 2m)."""
    return {"name": "incident: every alert fires", "interval": "1m",
            "input_series": input_series((90, INCIDENT)),
            "alert_rule_test": (checks(r, 30, firing=INCIDENT_ALERTS, quiet=("SLOMetricsAbsent",))
                                + checks(r, 1, firing=(), quiet=("HighLatency",))),
            "promql_expr_test": [sli_is("slo:sli_error:ratio_rate5m", "errors", 0.1, 30),
                                 sli_is("slo:sli_error:ratio_rate1h", "errors", 0.1, 30),
                                 sli_is("slo:sli_latency:ratio_rate5m", "latency", 0.95, 30),
                                 sli_is("slo:sli_latency:ratio_rate6h", "latency", 0.95, 30)]}


def after_fix_case(r: dict, until: int = 420) -> dict:
    """30 minutes of incident, then the fix until ``until`` minutes. At 25 min it pages. 35 min after the fix
    the pages and the cause alerts are quiet (their short windows hold only fixed traffic); the tickets still
    stand (their 2h / 1d windows hold a third of incident: the budget really was spent); at 7 h (6.5 h after the
    fix: the 6h window holds no incident any more) everything is quiet."""
    late = checks(r, 420, firing=(), quiet=ALL_ALERTS) if until >= 420 else []
    return {"name": "after the fix: quiet", "interval": "1m",
            "input_series": input_series((30, INCIDENT), (until - 30, FIXED)),
            "alert_rule_test": (checks(r, 25, firing=PAGE_ALERTS + CAUSE_ALERTS, quiet=())
                                + checks(r, 65, firing=TICKET_ALERTS, quiet=PAGE_ALERTS + CAUSE_ALERTS
                                         + ("SLOMetricsAbsent",))
                                + late),
            "promql_expr_test": [sli_is("slo:sli_error:ratio_rate30m", "errors", 0, 65),
                                 sli_is("slo:sli_latency:ratio_rate30m", "latency", 0, 65)]}


def healthy_case(r: dict) -> dict:
    """3 h healthy (no 5xx series at all) next to another job failing everything: nothing fires."""
    return {"name": "healthy control", "interval": "1m",
            "input_series": input_series((180, HEALTHY)) + input_series((180, OTHER_JOB)),
            "alert_rule_test": [c for m in (10, 60, 180) for c in checks(r, m, firing=(), quiet=ALL_ALERTS)],
            "promql_expr_test": [sli_is("slo:sli_error:ratio_rate1h", "errors", 0, 60)]}


def write_case(folder, rules_: dict, *cases: dict):
    """The rules file and a promtool test file running ``cases`` against it, both in ``folder``."""
    path = write_rules(folder, rules_)
    test_file = folder / "alert-rules.test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [path.name], "evaluation_interval": "1m",
                                         "tests": list(cases)}, sort_keys=False, width=1000))
    return test_file


@pytest.fixture
def lab_rules() -> dict:
    return rules(LAB_METRICS, LAB_SLO, SERVICE)


# --- generation -----------------------------------------------------------------------------------


def test_lab_metrics_are_the_lab_backends():
    assert LAB_METRICS.latency_buckets == backend.LATENCY_BUCKETS
    assert LAB_METRICS.latency_histogram == backend.REQUESTS._name
    assert LAB_METRICS.requests_total == backend.REQUESTS._name + "_count"
    assert LAB_METRICS.status_label in backend.REQUESTS._labelnames
    assert (LAB_METRICS.cache_hits_total, LAB_METRICS.cache_misses_total) == (
        backend.CACHE_HITS._name + "_total", backend.CACHE_MISSES._name + "_total")
    assert (LAB_METRICS.pool_in_use, LAB_METRICS.pool_max) == (backend.POOL_IN_USE._name, backend.POOL_MAX._name)


def test_rules_are_correct_promql_for_the_services_metrics(lab_rules):
    by_name = {r.get("alert") or r["record"]: r for g in lab_rules["groups"] for r in g["rules"]}
    assert set(ALL_ALERTS) <= set(by_name)
    high = by_name["HighLatency"]["expr"]
    assert high.startswith('histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="lab"}[')
    assert high.endswith("> 0.1")
    # the latency SLI counts requests under the SLO's 100 ms: a bucket bound of the lab's histogram
    assert 'http_request_duration_seconds_bucket{job="lab", le="0.1"}[1h]' in by_name["slo:sli_latency:ratio_rate1h"]["expr"]
    page = by_name["ErrorBudgetBurnPage"]["expr"]
    assert "ratio_rate1h" in page and "ratio_rate5m" in page and "(14.4 * 0.01)" in page and "(6 * 0.01)" in page
    assert "(1 * 0.05)" in by_name["LatencyBudgetBurnTicket"]["expr"]
    for name in ALL_ALERTS:
        rule = by_name[name]
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
    assert "for" not in by_name["ErrorBudgetBurnPage"]
    assert by_name["DatabaseConnectionsHigh"]["for"] == alert_rules.POOL_SATURATION_FOR


def test_threshold_off_the_buckets_uses_the_bound_below_and_says_so():
    bound, note = alert_rules.latency_bound(LAB_METRICS, Slo(latency_p95_ms=120))
    assert bound == 0.1 and "120 ms is not a bucket bound" in note
    r = rules(LAB_METRICS, Slo(latency_p95_ms=120), SERVICE)
    burn = next(x for g in r["groups"] for x in g["rules"] if x.get("alert") == "LatencyBudgetBurnPage")
    assert "next bound below" in burn["annotations"]["description"]
    with pytest.raises(AlertRulesError, match="below every bucket bound"):
        rules(LAB_METRICS, Slo(latency_p95_ms=0.5), SERVICE)
    # an integral bound matches both spellings: Python's client writes 1.0, Go's 1
    assert 'le=~"1|1\\\\.0"' in alert_rules.latency_sli(LAB_METRICS, 1.0, "5m")


@pytest.mark.parametrize("bad", [{"selector": 'job="lab"} or vector(1) #'}, {"pool_max": "db pool"},
                                 {"error_status_regex": "5(("}, {"latency_buckets": (0.0, 0.1)}])
def test_bad_metrics_are_refused(bad):
    with pytest.raises(AlertRulesError, match="alert metrics"):
        alert_rules.metrics_from({**LAB_METRICS.model_dump(), **bad})


def test_written_file_passes_promtool_check(tmp_path, lab_rules):
    path = write_rules(tmp_path / "rules", lab_rules)
    assert yaml.safe_load(path.read_text()) == lab_rules
    assert "SUCCESS: 22 rules found" in check_rules(path)
    # the lab's own parameters generate a valid file too
    settings = load_settings(project_root() / "parameters" / "lab.yaml")
    check_rules(write_rules(tmp_path / "lab", rules(LAB_METRICS, settings.slo, settings.incident.service)))


def test_promtool_check_failure_is_a_typed_error(tmp_path, lab_rules):
    lab_rules["groups"][2]["rules"][0]["expr"] = "histogram_quantile(0.95, sum by (le) (rate(x[5m]))"
    with pytest.raises(PromtoolError, match="promtool check rules alert-rules.yml failed") as e:
        check_rules(write_rules(tmp_path, lab_rules))
    assert "unclosed left parenthesis" in e.value.output
    with pytest.raises(PromtoolError, match="promtool not found") as e:
        check_rules(tmp_path / "alert-rules.yml", promtool="/nonexistent/promtool")
    assert "install" in e.value.hint


# --- promtool test rules -----------------------------------------------------------------------------


def test_alerts_fire_during_the_incident_and_stay_quiet_after_the_fix(tmp_path, lab_rules):
    test_file = write_case(tmp_path, lab_rules, incident_case(lab_rules), after_fix_case(lab_rules),
                           healthy_case(lab_rules))
    assert "SUCCESS" in test_rules(test_file)


def _writeup_high_latency(r: dict) -> dict:
    """The write-up's HighLatency: the quantile of cumulative counters, per series, never resets."""
    rule = next(x for g in r["groups"] for x in g["rules"] if x.get("alert") == "HighLatency")
    rule["expr"] = "histogram_quantile(0.95, http_request_duration_seconds_bucket) > 0.1"
    return r


def _without_rate(r: dict) -> dict:
    """HighLatency with sum by (le) but without rate(): right labels, but cumulative since process start, so it
    keeps firing long after the fix."""
    rule = next(x for g in r["groups"] for x in g["rules"] if x.get("alert") == "HighLatency")
    rule["expr"] = 'histogram_quantile(0.95, sum by (le) (http_request_duration_seconds_bucket{job="lab"})) > 0.1'
    return r


def _pool_threshold_099(monkeypatch) -> dict:
    monkeypatch.setattr(alert_rules, "POOL_SATURATION_RATIO", 0.99)
    return rules(LAB_METRICS, LAB_SLO, SERVICE)


def _slower_page_burn(monkeypatch) -> dict:
    """Page only at 12x over 6h/30m: the incident's 10x burn would no longer page."""
    monkeypatch.setattr(alert_rules, "BURN_RATE_WINDOWS", tuple(
        (sev, lg, sh, 12.0 if f == 6.0 else f) for sev, lg, sh, f in alert_rules.BURN_RATE_WINDOWS))
    return rules(LAB_METRICS, LAB_SLO, SERVICE)


@pytest.mark.parametrize("mutate, alert", [
    (lambda mp: _writeup_high_latency(rules(LAB_METRICS, LAB_SLO, SERVICE)), "HighLatency"),
    (lambda mp: _without_rate(rules(LAB_METRICS, LAB_SLO, SERVICE)), "HighLatency"),
    (_pool_threshold_099, "DatabaseConnectionsHigh"),
    (_slower_page_burn, "ErrorBudgetBurnPage"),
], ids=["writeup-histogram-quantile", "sum-by-le-without-rate", "pool-threshold-0.99", "page-burn-12x"])
def test_the_promtool_cases_catch_a_broken_rule(tmp_path, monkeypatch, mutate, alert):
    good = rules(LAB_METRICS, LAB_SLO, SERVICE)   # the expectations: what the correct rules promise
    # the full cases pass on the good rules (test above); the short after-fix case keeps this test fast
    test_file = write_case(tmp_path, mutate(monkeypatch), incident_case(good), after_fix_case(good, until=90))
    with pytest.raises(PromtoolError, match="promtool test rules") as e:
        test_rules(test_file)
    assert f"alertname: {alert}" in str(e.value) and f"alertname: {alert}" in e.value.output


def test_missing_bucket_is_an_alert_not_silence(tmp_path):
    """A threshold that is not a bucket bound of an unknown histogram: the latency SLI has no series and
    SLOMetricsAbsent says so (after its for: 10m), while the error SLO still works."""
    blind = LAB_METRICS.model_copy(update={"latency_buckets": None})
    r = rules(blind, Slo(latency_p95_ms=120, error_ratio=0.01, cache_hit_ratio=0.7), SERVICE)
    case = {"name": "bucket le=0.12 does not exist", "interval": "1m",
            "input_series": input_series((30, INCIDENT)),
            "alert_rule_test": (checks(r, 5, firing=("ErrorBudgetBurnPage",), quiet=("SLOMetricsAbsent",))
                                + checks(r, 20, firing=("ErrorBudgetBurnPage",), quiet=("LatencyBudgetBurnPage",))
                                + [{"eval_time": "20m", "alertname": "SLOMetricsAbsent", "exp_alerts": [
                                    {"exp_labels": {**expect(r, "SLOMetricsAbsent")[0]["exp_labels"],
                                                    "job": "lab", "le": "0.12"},
                                     "exp_annotations": expect(r, "SLOMetricsAbsent")[0]["exp_annotations"]}]}])}
    assert "SUCCESS" in test_rules(write_case(tmp_path, r, case))


# --- a real Prometheus --------------------------------------------------------------------------------


class IncidentExporter:
    """The lab backend's metric names on a free loopback port, with incident-shaped values."""

    def __init__(self):
        self.registry = CollectorRegistry()
        requests = Histogram("http_request_duration_seconds", "HTTP request duration", ["method", "route", "status"],
                             buckets=LAB_METRICS.latency_buckets, registry=self.registry)
        for status, seconds in (("200", 0.9), ("503", 1.2)):
            requests.labels("GET", "/api/users", status).observe(seconds)
        Counter("cache_hits", "hits", ["route"], registry=self.registry).labels("users").inc(8)
        Counter("cache_misses", "misses", ["route"], registry=self.registry).labels("users").inc(92)
        Gauge("db_pool_in_use", "in use", registry=self.registry).set(19)
        Gauge("db_pool_max", "max", registry=self.registry).set(20)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exporter():
    e = IncidentExporter()
    yield e
    e.close()


def alerts(url: str) -> dict[str, str]:
    with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=2) as r:
        return {a["labels"]["alertname"]: a["state"] for a in json.load(r)["data"]["alerts"]}


@pytest.mark.slow
def test_lab_prometheus_loads_the_rules_and_raises_the_pool_alert(tmp_path, exporter):
    path = write_rules(tmp_path / "rules", rules(LAB_METRICS, LAB_SLO, SERVICE, for_override="1s"))
    server = PrometheusServer(tmp_path / "prom", targets=[f"127.0.0.1:{exporter.port}"], scrape_interval="1s",
                              job="lab", rule_files=[str(path)])
    try:
        server.start()
        # the first scrape lands 5-6 s after start; the rules run every second after it
        wait_until(lambda: alerts(server.url).get("DatabaseConnectionsHigh") in ("pending", "firing"), 25,
                   "DatabaseConnectionsHigh pending or firing", server.log_file)
        with urllib.request.urlopen(f"{server.url}/api/v1/rules", timeout=2) as r:
            groups = json.load(r)["data"]["groups"]
        assert {g["name"] for g in groups} == {f"{SERVICE}-slo-errors", f"{SERVICE}-slo-latency", f"{SERVICE}-causes"}
        assert all(rule["health"] == "ok" for g in groups for rule in g["rules"])
        assert "SLOMetricsAbsent" not in alerts(server.url)
    finally:
        server.stop()


def test_promtool_version():
    assert promtool.version().startswith("promtool, version 2.")


def test_the_lab_parameters_name_the_metrics_the_lab_serves(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNBOOK_LAB_DIR", str(tmp_path))
    settings = load_settings(project_root() / "parameters" / "lab.yaml")
    assert alert_rules.metrics_from(settings.alert_metrics) == LAB_METRICS
