"""The incident on a timeline: ``runbook lab load`` by default (``--scenario incident``).

What an SRE needs to rehearse the runbook is an incident that is *happening*: a healthy baseline, a
deploy that degrades the service, and traffic that keeps flowing while they diagnose, fix and validate.

1. the lab is switched to the healthy profile and an event marks the scenario start (``SCENARIO_EVENT``):
   the runbook's lab mode takes its analysis window from there (``scenario_start``);
2. a load process starts detached from the terminal (``runbook lab load --scenario steady --at
   B:degraded``), its PID in ``<state>/load/load.json``, its log and final summary in ``load.log``; at B
   seconds it deploys the degraded profile (an event of kind ``deploy``);
3. the command shows progress until the incident has run for I seconds, then returns; the load goes on
   until its duration is spent, ``runbook lab load --stop`` or ``runbook lab down`` (both by PID).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from runbook_lib.lab.background_load import (
    LOAD_DIR,
    LOAD_LOG,
    refuse_a_second_load,
    start_background_load,
)
from runbook_lib.lab.config import EVENTS_FILE
from runbook_lib.lab.lab_errors import LabError
from runbook_lib.lab.servers import log_tail, pid_alive, wait_until
from runbook_lib.lab.stack import apply_profile, prom_value, read_lab
from runbook_lib.sources.events import read_events_file

SCENARIO_EVENT = "load scenario start: healthy profile (baseline)"
# Baseline and incident lengths: diagnose.incident_window needs >= 10 samples per segment (50 s at lab.yaml's 5 s
# step) and lab.yaml's rate() windows take 30 s to settle after a switch; a few minutes of each give the
# charts and correlations room (the lab_suite benchmark used 100 s + 150 s).
DEFAULT_BASELINE_S = 150.0
DEFAULT_INCIDENT_S = 180.0
# How long the load keeps going in the background: `runbook run` on the full-size lab takes about 10
# minutes with remediation and validation (benchmarks/lab_suite.py); 30 minutes leaves room for a human.
DEFAULT_BACKGROUND_S = 1800.0
PROGRESS_EVERY_S = 30.0
START_TIMEOUT_S = 30.0   # the load process must have sent its first requests by then
# What the progress lines show, from the lab's Prometheus (same metric names as parameters/lab.yaml).
PROGRESS_QUERIES = {
    "p95": 'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="lab"}[30s]))) * 1000',
    "hit": 'sum(rate(cache_hits_total{job="lab"}[30s])) / (sum(rate(cache_hits_total{job="lab"}[30s]))'
           ' + sum(rate(cache_misses_total{job="lab"}[30s])))',
    "5xx": '(sum(rate(http_request_duration_seconds_count{job="lab", status=~"5.."}[30s])) or vector(0))'
           ' / sum(rate(http_request_duration_seconds_count{job="lab"}[30s]))',
}














def scenario_start(state: Path) -> datetime | None:
    """When the last incident scenario started (its SCENARIO_EVENT in events.jsonl), or None."""
    starts = [e.time for e in read_events_file(state / EVENTS_FILE) if e.label == SCENARIO_EVENT]
    return starts[-1].to_pydatetime() if starts else None


def _progress(prom_url: str) -> str:
    parts = []
    for name, q in PROGRESS_QUERIES.items():
        try:
            v = prom_value(prom_url, q)
        except (OSError, LabError):
            v = None
        if v is None or math.isnan(v):  # no series yet, or no traffic in the rate window
            parts.append(f"{name} -")
        else:
            parts.append(f"{name} {v:.0f} ms" if name == "p95" else f"{name} {v:.0%}")
    return ", ".join(parts)


def run_scenario(state: Path, load_args: list[str], baseline_s: float, incident_s: float, duration_s: float,
                 out: Callable[[str], None] = print) -> dict:
    """Baseline, deploy, incident; returns once the incident has run ``incident_s`` with the load going on."""
    if duration_s < baseline_s + incident_s:
        raise LabError(f"--duration {duration_s:g} s is shorter than the baseline ({baseline_s:g} s) plus the "
                       f"incident ({incident_s:g} s)", hint="give a longer --duration, or shorter phases")
    lab = read_lab(state)
    refuse_a_second_load(state)  # before the profile switch: a refused scenario changes nothing
    apply_profile("healthy", state, event=(SCENARIO_EVENT, "note"))
    out(f"t+0s: healthy profile (baseline) for {baseline_s:g} s, then the degraded profile (deploy)")
    info = start_background_load(state, [*load_args, "--at", f"{baseline_s:g}:degraded"], duration_s)
    t0 = time.monotonic()
    log = state / LOAD_DIR / LOAD_LOG

    def gone() -> bool:
        return not pid_alive(info["pid"])

    wait_until(lambda: gone() or log.stat().st_size > 0, START_TIMEOUT_S, "the load process to start", log)
    end = t0 + baseline_s + incident_s
    while (left := end - time.monotonic()) > 0:
        wait_until_or_timeout(gone, min(PROGRESS_EVERY_S, left))
        if gone():
            raise LabError(f"the load process (pid {info['pid']}) stopped early: {log_tail(log)}",
                           hint=f"see {log}")
        elapsed = time.monotonic() - t0
        phase = "baseline" if elapsed < baseline_s else "incident"
        out(f"t+{elapsed:.0f}s {phase}: {_progress(lab['prometheus_url'])}")
    return info


def wait_until_or_timeout(check: Callable[[], bool], seconds: float) -> None:
    """Sleep up to ``seconds``, waking early when ``check()`` turns true (polled every 0.5 s)."""
    deadline = time.monotonic() + seconds
    while not check() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.5, left))

