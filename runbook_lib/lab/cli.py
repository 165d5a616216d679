"""``runbook lab up | load | status | down | config | profile | record-fixture``: the lab's CLI.

Registered by ``runbook_lib.cli`` through ``register(subparsers)``. Handlers raise RunbookError
subclasses for expected failures; the main CLI prints them with their hint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from runbook_lib.lab.config import CONFIG_FILE, PROFILES, parse_assignments, patch_config, read_config
from runbook_lib.lab.lab_errors import LabError, LabNotRunning
from runbook_lib.lab.load import INCIDENT_RATE
from runbook_lib.lab.scenario import DEFAULT_BACKGROUND_S, DEFAULT_BASELINE_S, DEFAULT_INCIDENT_S

STEADY_DURATION_S = 60.0  # `--scenario steady` without --duration


def _state(args) -> Path:
    from runbook_lib.lab.stack import state_dir

    return Path(args.state).resolve() if args.state else state_dir()


def _cmd_up(args) -> int:
    from runbook_lib.lab.stack import up

    info = up(_state(args), scale=args.scale, seed_value=args.seed, profile=args.profile, ports=args.ports)
    if info["already_running"]:
        print(f"lab already running in {info['state']} ({info['profile']}); 'runbook lab status' shows where")
        return 0
    t = info["timings"]
    print(f"lab up in {info['state']} ({info['profile']} profile, scale {info['scale']}, seed {info['seed']})")
    print(f"  backend     {info['backend_url']}")
    print(f"  prometheus  {info['prometheus_url']}")
    print(f"  postgres    {info['dsn']}")
    print(f"  redis       {info['redis_url']}")
    print(f"  ready in {t['ready_s']:.1f} s (seeding {t['seed_s']:.1f} s"
          f"{', data kept from an earlier run' if not info.get('seed_timings') else ''})")
    return 0


def _cmd_status(args) -> int:
    from runbook_lib.lab.stack import status

    st = status(_state(args))
    if args.json:
        print(json.dumps(st, indent=2))
        return 0 if st["running"] else 1
    word = "running" if st["running"] else ("partly running (run 'runbook lab down')" if st["partial"] else "down")
    print(f"lab in {st['state']}: {word}" + (f", profile {st.get('profile')}" if st.get("profile") else ""))
    for name, c in st["components"].items():
        where = f"pid {c['pid']:<7} {c['url']}" if "pid" in c else ""
        print(f"  {name:<11} {'up  ' if c['running'] else 'down'}  {where}")
    load = st.get("load")
    if load:
        print(f"  {'load':<11} {'up  ' if load['running'] else 'done'}  pid {load['pid']:<7} "
              f"{load['started_at']} .. {load['until']}")
    return 0 if st["running"] else 1


def _cmd_down(args) -> int:
    from runbook_lib.lab.stack import down

    stopped = down(_state(args))
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def _cmd_load(args) -> int:
    from runbook_lib.lab.background_load import stop_load
    from runbook_lib.lab.load import LoadSpec, run_load_sync
    from runbook_lib.lab.scenario import run_scenario
    from runbook_lib.lab.seed import SeedSize
    from runbook_lib.lab.stack import read_lab, status

    state = _state(args)
    if args.stop:
        stopped = stop_load(state)
        print(f"stopped the load (pid {stopped[0]})" if stopped else "no load was running")
        return 0
    if not status(state)["running"]:
        raise LabNotRunning(f"the lab in {state} is not running")
    lab = read_lab(state)
    if args.scenario == "incident":
        if args.at:
            raise LabError("--at is for --scenario steady", hint="the incident scenario schedules its own switch: "
                                                                  "--baseline and --incident set when")
        duration = args.duration or DEFAULT_BACKGROUND_S
        load_args = ["--rate", f"{args.rate:g}", "--concurrency", str(args.concurrency),
                     "--max-requests", str(args.max_requests), "--seed", str(args.seed)]
        print(f"incident scenario on {lab['backend_url']}: {args.rate:g} req/s, {args.baseline:g} s healthy "
              f"baseline, then the degraded profile; back here after {args.incident:g} s of incident", flush=True)
        info = run_scenario(state, load_args, args.baseline, args.incident, duration,
                            out=lambda line: print(line, flush=True))
        print(f"the incident is live. The load goes on in the background (pid {info['pid']}) until "
              f"{info['until']}: run the runbook now, e.g. 'runbook run -p parameters/lab.yaml'. "
              "'runbook lab load --stop' or 'runbook lab down' stop it.")
        return 0
    spec = LoadSpec(duration_s=args.duration or STEADY_DURATION_S, max_requests=args.max_requests,
                    rate=args.rate, concurrency=args.concurrency, users=SeedSize.at_scale(lab["scale"]).users,
                    seed=args.seed)
    print(f"load: {spec.rate:g} req/s for {spec.duration_s:g} s (at most {spec.max_requests} requests, "
          f"{spec.concurrency} in flight) -> {lab['backend_url']}", flush=True)
    schedule = [_parse_switch(item, spec.duration_s) for item in args.at or []]
    if schedule:
        report = asyncio.run(_load_with_switches(lab["backend_url"], spec, state, schedule)).summary()
    else:
        report = run_load_sync(lab["backend_url"], spec).summary()
    print(json.dumps(report, indent=2))
    return 0


def _parse_switch(item: str, duration: float) -> tuple[float, str]:
    """``120:degraded`` -> (120.0, "degraded"), within the load's duration."""
    when, sep, profile = item.partition(":")
    try:
        at = float(when)
    except ValueError:
        at = -1.0
    if not sep or profile not in PROFILES or not 0 <= at < duration:
        raise LabError(f"--at {item!r}: expected SECONDS:PROFILE with SECONDS inside the load's duration "
                       f"and PROFILE one of {', '.join(sorted(PROFILES))}")
    return at, profile


async def _load_with_switches(url: str, spec, state: Path, schedule: list[tuple[float, str]]):
    """The load, with profile switches at given seconds into it (a 'deploy' and a 'fix' on the timeline)."""
    from runbook_lib.lab.load import run_load
    from runbook_lib.lab.stack import apply_profile

    async def switches():
        t0 = asyncio.get_running_loop().time()
        for at, profile in sorted(schedule):
            await asyncio.sleep(max(0.0, t0 + at - asyncio.get_running_loop().time()))
            await asyncio.to_thread(apply_profile, profile, state)
            print(f"t+{at:g}s: switched to the {profile} profile", flush=True)

    task = asyncio.create_task(switches())
    try:
        return await run_load(url, spec)
    finally:
        task.cancel()


def _cmd_config(args) -> int:
    path = _state(args) / CONFIG_FILE
    cfg = patch_config(path, **parse_assignments(args.set)) if args.set else read_config(path)
    print(json.dumps(cfg.as_dict(), indent=2))
    return 0


def _cmd_profile(args) -> int:
    from runbook_lib.lab.stack import apply_profile

    for action in apply_profile(args.profile, _state(args)):
        print(action)
    return 0


def _cmd_record_fixture(args) -> int:
    from runbook_lib.lab.fixture_recording import record_fixture

    record_fixture(Path(args.out), scale=args.scale, baseline_s=args.baseline, incident_s=args.incident,
                   recovery_s=args.recovery, say=lambda line: print(line, flush=True))
    return 0


def register(subparsers) -> None:
    lab = subparsers.add_parser("lab", help="the incident lab: real PostgreSQL, Redis, Prometheus and backend")
    sub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state", help="lab state folder (default: $RUNBOOK_LAB_DIR or /tmp/runbook-lab)")

    p = sub.add_parser("up", parents=[common], help="start the lab (degraded by default); idempotent")
    p.add_argument("--scale", type=float, default=1.0, help="data size; 1.0 = 100k users, 1M orders, 50k products")
    p.add_argument("--seed", type=int, default=42, help="data seed (default: %(default)s)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="degraded",
                   help="start as the incident (degraded) or its healthy baseline (default: %(default)s)")
    p.add_argument("--ports", choices=("preferred", "free"), default="preferred",
                   help="preferred: well-known ports 15432/16379/18080/19090 when free; free: any free ports")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("status", parents=[common], help="what runs where (exit 1 when not fully running)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("down", parents=[common], help="stop everything up started, by PID (works after a crash)")
    p.set_defaults(func=_cmd_down)

    p = sub.add_parser("load", parents=[common], help="drive the incident: bounded loopback load with Zipf popularity",
                       description="incident (default): switch the lab healthy, start load in the background, "
                                   "deploy the degraded profile after --baseline s, return after --incident s of "
                                   "incident while the load goes on (until --duration, --stop or 'lab down'). "
                                   "steady: load in the foreground for --duration s, with optional --at switches.")
    p.add_argument("--scenario", choices=("incident", "steady"), default="incident",
                   help="default: %(default)s")
    p.add_argument("--baseline", type=float, default=DEFAULT_BASELINE_S,
                   help="incident scenario: seconds of healthy baseline (default: %(default)g)")
    p.add_argument("--incident", type=float, default=DEFAULT_INCIDENT_S,
                   help="incident scenario: seconds of incident before this command returns (default: %(default)g)")
    p.add_argument("--duration", type=float,
                   help=f"seconds of load in all (default: {DEFAULT_BACKGROUND_S:g} for the incident scenario, "
                        f"{STEADY_DURATION_S:g} for steady)")
    p.add_argument("--rate", type=float, default=INCIDENT_RATE, help="requests per second (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=64, help="max requests in flight (default: %(default)s)")
    p.add_argument("--max-requests", type=int, default=100_000, help="request budget (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--at", action="append", metavar="SECONDS:PROFILE",
                   help="steady scenario: switch profile during the load, e.g. --at 120:degraded (repeatable)")
    p.add_argument("--stop", action="store_true", help="stop the background load of an incident scenario")
    p.set_defaults(func=_cmd_load)

    p = sub.add_parser("config", parents=[common], help="show or patch the backend knobs (live, no restart)")
    p.add_argument("set", nargs="*", metavar="KEY=VALUE", help="e.g. cache_ttl_s=300 orders_query=join")
    p.set_defaults(func=_cmd_config)


    p = sub.add_parser("profile", parents=[common], help="switch a running lab to the degraded or healthy preset")
    p.add_argument("profile", choices=sorted(PROFILES))
    p.set_defaults(func=_cmd_profile)

    from runbook_lib.lab import fixture_recording as fr

    p = sub.add_parser("record-fixture", help="re-record the bundled incident from a private lab (~30 min)",
                       description="A private lab on free ports, the incident scenario, `runbook run` applying its "
                                   "fixes (at nice 10, as if run from another machine), the recovery, all recorded by "
                                   "`runbook record --shape d2`, which also keeps that run's plan, outcomes and audit "
                                   "in the bundle; the bundle is replaced only when the recording has the D2 "
                                   "incident's shape (else it is kept as .<out>.rejected). Run it on a quiet machine: "
                                   "afterwards, regenerate the golden notebooks (python -m runbook_lib.suite.golden).")
    p.add_argument("--out", default="fixtures/d2-latency", help="bundle folder to (re)write (default: %(default)s)")
    p.add_argument("--scale", type=float, default=1.0, help="lab data size (default: %(default)s)")
    p.add_argument("--baseline", type=float, default=fr.BASELINE_S, help="seconds (default: %(default)g)")
    p.add_argument("--incident", type=float, default=fr.INCIDENT_S, help="seconds (default: %(default)g)")
    p.add_argument("--recovery", type=float, default=fr.RECOVERY_S,
                   help="seconds after the incident phase, the runbook's run included (default: %(default)g)")
    p.set_defaults(func=_cmd_record_fixture)
