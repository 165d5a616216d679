"""``runbook lab up | status | down``: the lab's servers under one state folder, stopped by PID.

State folder (``state_dir()``: ``$RUNBOOK_LAB_DIR`` or ``/tmp/runbook-lab``, under /tmp because PostgreSQL
runs as ``postgres`` and must be able to enter it; one fixed default so ``parameters/lab.yaml`` can name its
config.json and events.jsonl as ``${RUNBOOK_LAB_DIR:-/tmp/runbook-lab}/...``)::

    lab.json        what up started: ports, URLs, DSN, scale, seed, profile, timings
    config.json     the backend's knobs (the ConfigMap; see config.py)
    postgres/  redis/  prometheus/   one folder per server (servers.py: server.json, log, data)
    backend/        backend.json (supervisor and replica PIDs), targets.json (Prometheus file_sd), log

Ports: each component first tries a fixed well-known port (``PREFERRED_PORTS``) so that
``parameters/lab.yaml`` can name the lab's Prometheus and PostgreSQL without edits, and falls back to a
free port when that one is taken (``runbook lab status`` then shows where things are). Tests use
``ports="free"`` so they never collide with a lab a developer runs.

``up`` is idempotent (a running lab is left alone) and cleans up after itself when a step fails;
``down`` works from the state files alone, e.g. after the process that ran ``up`` crashed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import redis

from runbook_lib.lab import seed as seeding
from runbook_lib.lab.background_load import load_status, stop_load
from runbook_lib.lab.config import (
    CONFIG_FILE,
    PROFILES,
    REDIS_MAXMEMORY,
    REDIS_POLICY,
    append_event,
    write_config,
)
from runbook_lib.lab.lab_errors import LabError, LabNotRunning
from runbook_lib.lab.servers import (
    PostgresServer,
    PrometheusServer,
    RedisServer,
    ServiceError,
    free_port,
    kill_pid,
    log_tail,
    pid_alive,
    read_state,
    stop_from_state,
    wait_until,
)
from runbook_lib.lab.supervisor import BACKEND_DIR, BACKEND_FILE, TARGETS_FILE, stop_backend
from runbook_lib.run_folder import write_atomic

LAB_FILE = "lab.json"
# Where the lab lives without $RUNBOOK_LAB_DIR: parameters/lab.yaml names the same folder.
DEFAULT_STATE_DIR = "/tmp/runbook-lab"
# How a profile switch shows on the incident timeline (the seed incident started with a deploy).
PROFILE_EVENTS = {"degraded": ("degraded profile: cache keys + TTL, N+1, small pool, no indexes", "deploy"),
                  "healthy": ("healthy profile: indexes, join, normalized keys, TTL 300 s, pool 10", "remediation")}
SERVERS = ("postgres", "redis", "prometheus")
# Well-known lab ports (the usual ones + 10000), tried first; parameters/lab.yaml names them.
PREFERRED_PORTS = {"postgres": 15432, "redis": 16379, "backend": 18080, "prometheus": 19090}
SCRAPE_INTERVAL = "1s"       # cheap on loopback; rate() windows in lab.yaml are 30 s
READY_TIMEOUT_S = 60.0
STALE_WAIT_S = 5.0           # a few scrape intervals       # backend replicas open their pools; Prometheus's first scrape takes ~5 s
# PostgreSQL sized for 1M orders on this machine (24 GB RAM): the tables fit in shared_buffers.
PG_SETTINGS = {"shared_buffers": "'256MB'", "max_connections": "200", "track_io_timing": "on",
               "pg_stat_statements.max": "5000"}


def state_dir() -> Path:
    env = os.environ.get("RUNBOOK_LAB_DIR")
    if env:
        return Path(env).resolve()
    return Path(DEFAULT_STATE_DIR)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(component: str, ports: str) -> int | None:
    """The preferred port when ``ports == "preferred"`` and it is free; None means "any free port"."""
    preferred = PREFERRED_PORTS[component]
    return preferred if ports == "preferred" and _port_free(preferred) else None


class LabPrometheus(PrometheusServer):
    """Prometheus that also scrapes the targets the backend supervisor lists (file_sd)."""

    def __init__(self, folder, targets_file: Path, port=None, scrape_interval: str = SCRAPE_INTERVAL,
                 rule_files: list[str] | None = None):
        super().__init__(folder, port, scrape_interval=scrape_interval, job="prometheus", rule_files=rule_files)
        self.targets_file = targets_file

    def config_text(self) -> str:
        return super().config_text() + (
            "  - job_name: 'lab'\n"
            "    file_sd_configs:\n"
            f"      - files: ['{self.targets_file}']\n"
        )


def read_lab(state: Path | None = None) -> dict:
    state = state or state_dir()
    f = state / LAB_FILE
    if not f.exists():
        raise LabNotRunning(f"no lab in {state} (no {LAB_FILE})")
    return json.loads(f.read_text())


def _write_lab(state: Path, info: dict) -> None:
    write_atomic(state / LAB_FILE, json.dumps(info, indent=2))


def status(state: Path | None = None) -> dict:
    """What runs where: one entry per component with running, pid, port, url."""
    state = state or state_dir()
    out: dict = {"state": str(state), "components": {}}
    for kind in SERVERS:
        info = read_state(state / kind)
        out["components"][kind] = ({"running": pid_alive(info.pid), "pid": info.pid, "port": info.port,
                                    "url": info.url} if info else {"running": False})
    bfile = state / BACKEND_DIR / BACKEND_FILE
    if bfile.exists():
        b = json.loads(bfile.read_text())
        alive = pid_alive(int(b["pid"])) and not b.get("stopping")
        out["components"]["backend"] = {"running": alive, "pid": b["pid"], "port": b["port"],
                                        "url": f"http://127.0.0.1:{b['port']}",
                                        "replicas": [r["pid"] for r in b.get("replicas", [])]}
    else:
        out["components"]["backend"] = {"running": False}
    out["running"] = all(c["running"] for c in out["components"].values())
    out["partial"] = not out["running"] and any(c["running"] for c in out["components"].values())
    out["load"] = load_status(state)  # the background load of `runbook lab load`, not part of "running"
    if (state / LAB_FILE).exists():
        lab = read_lab(state)
        out.update({k: lab.get(k) for k in ("profile", "scale", "seed", "started_at", "dsn", "redis_url")})
    return out


def down(state: Path | None = None) -> list[str]:
    """Stop exactly what up started, by the PIDs in the state files. Returns what was stopped."""
    state = state or state_dir()
    stopped = [f"load pid {p}" for p in stop_load(state)]
    if (state / BACKEND_DIR / BACKEND_FILE).exists():
        stopped += [f"backend pid {p}" for p in stop_backend(state)]
        _let_prometheus_see_the_backend_go(state)
    for kind in ("prometheus", "redis", "postgres"):
        info = read_state(state / kind)
        if info and stop_from_state(state / kind):
            stopped.append(f"{kind} pid {info.pid}")
    (state / LAB_FILE).unlink(missing_ok=True)
    return stopped


def _let_prometheus_see_the_backend_go(state: Path) -> None:
    """One failed scrape of each backend target makes Prometheus mark its series stale; without it the
    next lab's queries would count the old replicas too for 5 minutes (the lookback window)."""
    info = read_state(state / "prometheus")
    if not info or not pid_alive(info.pid):
        return
    with contextlib.suppress(ServiceError):
        wait_until(lambda: not prom_query(info.url, 'up{job="lab"} == 1', timeout=1), STALE_WAIT_S,
                   "Prometheus to see the backend stop")


def up(state: Path | None = None, scale: float = 1.0, seed_value: int = seeding.DEFAULT_SEED,
       profile: str = "degraded", ports: str = "preferred", scrape_interval: str = SCRAPE_INTERVAL) -> dict:
    """Start the lab (idempotent). Returns the lab info with ``already_running`` and timings."""
    if profile not in PROFILES:
        raise LabError(f"unknown profile {profile!r}", hint=f"one of {', '.join(PROFILES)}")
    state = state or state_dir()
    current = status(state)
    if current["running"]:
        return {**read_lab(state), "already_running": True}
    if current["partial"] or (state / LAB_FILE).exists():
        down(state)  # leftovers of a crashed lab
    _make_state_dir(state)
    try:
        return _start(state, scale, seed_value, profile, ports, scrape_interval)
    except BaseException:
        down(state)
        raise


def _make_state_dir(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)


ALERT_RULES_FILE = "alerts.rules.yml"
# The lab's incident lasts minutes, not hours: alerts fire after this long instead of the rules' own `for:`
# (2-5 minutes, meant for production), so `runbook lab load`'s 3-minute incident shows them firing.
LAB_ALERT_FOR = "30s"


def _write_alert_rules(state: Path) -> Path:
    """The alert rules the runbook generates for the lab (parameters/lab.yaml's alert_metrics and SLO), loaded
    into the lab's Prometheus so an incident shows them firing and a fix shows them resolving."""
    from runbook_lib.settings import load_settings, project_root
    from runbook_lib.validate.alert_rules import metrics_from, rules, write_rules

    settings = load_settings(project_root() / "parameters" / "lab.yaml")
    return write_rules(state, rules(metrics_from(settings.alert_metrics), settings.slo, settings.incident.service,
                                    for_override=LAB_ALERT_FOR), name=ALERT_RULES_FILE)


def _start(state: Path, scale: float, seed_value: int, profile: str, ports: str, scrape_interval: str) -> dict:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    info: dict = {"state": str(state), "scale": scale, "seed": seed_value, "profile": profile,
                  "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    pg = PostgresServer(state / "postgres", port=pick_port("postgres", ports), settings=PG_SETTINGS).start()
    info["dsn"] = pg.dsn(seeding.LAB_DB)
    timings["postgres_s"] = _lap(t0)
    seed_timings = seeding.ensure_seeded(info["dsn"], scale, seed_value)
    timings["seed_s"] = seed_timings["total"] if seed_timings else 0.0
    info["seed_timings"] = seed_timings
    rd = RedisServer(state / "redis", port=pick_port("redis", ports), maxmemory=REDIS_MAXMEMORY[profile],
                     policy=REDIS_POLICY).start()
    info["redis_url"] = rd.url
    _apply_profile(state, info, profile)
    t = time.perf_counter()
    backend_port = pick_port("backend", ports) or _free()
    _start_backend(state, backend_port, info["dsn"], info["redis_url"])
    info["backend_url"] = f"http://127.0.0.1:{backend_port}"
    prom_started = time.time()
    prom = LabPrometheus(state / "prometheus", state / BACKEND_DIR / TARGETS_FILE,
                         port=pick_port("prometheus", ports), scrape_interval=scrape_interval,
                         rule_files=[str(_write_alert_rules(state))]).start()
    info["prometheus_url"] = prom.url
    _wait_backend(state, info["backend_url"])
    timings["backend_s"] = _lap(t)
    t = time.perf_counter()
    _wait_scraped(prom.url, PROFILES[profile].replicas, since=prom_started)
    timings["first_scrape_s"] = _lap(t)
    timings["ready_s"] = _lap(t0)
    info["timings"] = timings
    _write_lab(state, info)
    return {**info, "already_running": False}


def _lap(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


def _free() -> int:
    return free_port()


def _start_backend(state: Path, port: int, dsn: str, redis_url: str) -> int:
    folder = state / BACKEND_DIR
    folder.mkdir(exist_ok=True)
    (folder / BACKEND_FILE).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "runbook_lib.lab.supervisor", "--state", str(state), "--port", str(port),
            "--dsn", dsn, "--redis-url", redis_url]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_source_root()),
                                                                     os.environ.get("PYTHONPATH")]))}
    with open(folder / "backend.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    try:
        wait_until(lambda: (folder / BACKEND_FILE).exists() or proc.poll() is not None, READY_TIMEOUT_S,
                   "lab backend supervisor", folder / "backend.log")
    except ServiceError:
        kill_pid(proc.pid, str(state))
        raise
    if proc.poll() is not None:
        raise ServiceError(f"lab backend exited with {proc.returncode}: {log_tail(folder / 'backend.log')}")
    return proc.pid


def _source_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
        return r.status == 200


def _wait_backend(state: Path, url: str) -> None:
    log = state / BACKEND_DIR / "backend.log"
    pid = int(json.loads((state / BACKEND_DIR / BACKEND_FILE).read_text())["pid"])
    # a dead supervisor ends the wait at once instead of at the timeout
    wait_until(lambda: not pid_alive(pid) or _healthy(url), READY_TIMEOUT_S, f"lab backend at {url}", log)
    if not pid_alive(pid):
        raise LabError(f"lab backend supervisor died: {log_tail(log)}")


def prom_query(prom_url: str, promql: str, at: float | None = None, timeout: float = 5.0) -> list[dict]:
    """Instant query; returns the result vector."""
    from urllib.parse import urlencode

    params = {"query": promql} | ({"time": f"{at:.3f}"} if at else {})
    with urllib.request.urlopen(f"{prom_url}/api/v1/query?{urlencode(params)}", timeout=timeout) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise LabError(f"Prometheus query failed: {body.get('error', body)}")
    return body["data"]["result"]


def prom_value(prom_url: str, promql: str, at: float | None = None) -> float | None:
    res = prom_query(prom_url, promql, at)
    return float(res[0]["value"][1]) if res else None


def _wait_scraped(prom_url: str, replicas: int, since: float) -> None:
    """Every lab target scraped once after ``since`` (the TSDB keeps samples of earlier runs)."""
    want = replicas + 1  # replicas + the node metrics of the supervisor
    # timestamp() of a plain selector is the sample's time (of an expression it would be the query's)
    promql = f'(timestamp(up{{job="lab"}}) > {since:.3f}) and on (instance) (up{{job="lab"}} == 1)'

    def scraped() -> bool:
        return len(prom_query(prom_url, promql)) >= want

    wait_until(scraped, READY_TIMEOUT_S, f"first scrape of the lab's {want} targets by Prometheus")


def _apply_profile(state: Path, info: dict, profile: str) -> list[str]:
    actions = seeding.set_fix_indexes(info["dsn"], present=profile == "healthy")
    r = redis.Redis.from_url(info["redis_url"], socket_timeout=5)
    try:
        r.config_set("maxmemory", REDIS_MAXMEMORY[profile])
        r.config_set("maxmemory-policy", REDIS_POLICY)
    finally:
        r.close()
    actions.append(f"redis CONFIG SET maxmemory {REDIS_MAXMEMORY[profile]}")
    write_config(state / CONFIG_FILE, PROFILES[profile])
    actions.append(f"config.json <- {profile} preset")
    return actions


def apply_profile(profile: str, state: Path | None = None, event: tuple[str, str] | None = None) -> list[str]:
    """Switch a running lab to the degraded or healthy preset (indexes, Redis maxmemory, knobs).

    ``event``: (label, kind) for the timeline instead of the profile's own (PROFILE_EVENTS)."""
    if profile not in PROFILES:
        raise LabError(f"unknown profile {profile!r}", hint=f"one of {', '.join(PROFILES)}")
    state = state or state_dir()
    info = read_lab(state)
    actions = _apply_profile(state, info, profile)
    info["profile"] = profile
    _write_lab(state, info)
    append_event(state, *(event or PROFILE_EVENTS[profile]))
    return actions


def parameters_for(template: str, state: Path | None = None) -> str:
    """A parameters text (parameters/lab.yaml's) pointed at this lab's ports instead of the well-known ones:
    for a lab on free ports (tests, benchmarks)."""
    c = status(state)["components"]
    if not all(c[k].get("running") for k in SERVERS):
        raise LabNotRunning(f"the lab in {state or state_dir()} is not running")
    return (template.replace(f"http://127.0.0.1:{PREFERRED_PORTS['prometheus']}", c["prometheus"]["url"])
            .replace(f"port={PREFERRED_PORTS['postgres']}", f"port={c['postgres']['port']}")
            .replace(f"redis://127.0.0.1:{PREFERRED_PORTS['redis']}/0", c["redis"]["url"])
            .replace(f"http://127.0.0.1:{PREFERRED_PORTS['backend']}", c.get("backend", {}).get("url", "")
                     or f"http://127.0.0.1:{PREFERRED_PORTS['backend']}"))
