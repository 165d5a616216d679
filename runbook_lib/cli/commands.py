"""The ``runbook`` command. Thin: parses arguments, calls the library, turns errors into one line + hint.

The product's commands are registered statically here (``run``, ``export``, ``check``, ``signals``, and
``rollback``, ``diagnose`` from their modules in this package). Commands of tools built *on* the product
(the incident lab's ``lab`` and ``record``) come in through the ``runbook.commands`` entry-point group
(``pyproject.toml``): the product never imports them, and each entry point is a ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path

from runbook_lib import __version__
from runbook_lib.cli import diagnose_command as diagnose
from runbook_lib.cli import rollback_command as rollback
from runbook_lib.errors import RunbookError
from runbook_lib.redaction import redact_text
from runbook_lib.signal_catalog import describe

# Tools built on the product add their commands through this entry-point group (pyproject.toml).
PLUGIN_GROUP = "runbook.commands"


# The command handlers import their stage when called: papermill, plotly and pandas take seconds to import,
# and ``runbook --help`` or ``runbook lab status`` should not wait for them.


# `runbook run` on a window without an incident: not an error (2), not a success with findings (0).
EXIT_NO_INCIDENT = 3


def _cmd_run(args) -> int:
    from runbook_lib.run_folder import run_status
    from runbook_lib.suite.runner import HEALTHY, run_suite

    run_dir = run_suite(Path(args.parameters), out=Path(args.out) if args.out else None,
                        export=not args.no_export, only=args.only)
    print(run_dir)
    state = run_status(run_dir)
    if state.get("status") == HEALTHY:
        print(f"no incident: {state.get('finding')}", file=sys.stderr)
        return EXIT_NO_INCIDENT
    return 0


def _cmd_record(args) -> int:
    from datetime import UTC, datetime

    from runbook_lib.suite.recorder import parse_when, record

    now = datetime.now(UTC)
    start, end = parse_when(args.start, now), parse_when(args.end, now)
    snaps = tuple(parse_when(t, now) for t in args.snapshots_at) if args.snapshots_at else None
    print(f"recording {start.isoformat(timespec='seconds')} .. {end.isoformat(timespec='seconds')}"
          + (f", snapshots at {snaps[0].isoformat(timespec='seconds')} and {snaps[1].isoformat(timespec='seconds')}"
             if snaps else "") + f" into {args.out}", flush=True)
    print(record(args.parameters, start, end, args.out, snaps, Path(args.run) if args.run else None,
                 key_sample=args.key_sample, max_wait_s=args.max_wait_min * 60, shape=args.shape))
    return 0


def _positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _cmd_export(args) -> int:
    from runbook_lib.report.postmortem import export_run

    for path in export_run(Path(args.run_dir), interactive=args.interactive,
                           templates=Path(args.templates) if args.templates else None):
        print(path)
    return 0


def _cmd_signals(args) -> int:
    rows = describe()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['unit']:<6} {r['group']:<15} {r['description']}")
    return 0


def _cmd_check(args) -> int:
    from runbook_lib.suite.runner import preflight

    settings, source = preflight(Path(args.parameters))
    print(f"ok: {settings.incident.id} ({settings.mode} mode) from {source.description}; "
          f"{len(settings.signals)} signals; apply={settings.remediation.apply}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runbook",
        description="Incident runbooks for the D2 latency incident: symptoms -> root cause -> impact -> "
                    "remediation -> validation, executed as notebooks into a run folder.",
    )
    p.add_argument("--version", action="version", version=f"runbook {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", help="run the five notebooks in order into a new run folder, then export",
                       epilog="exit status: 0 the suite ran; 2 an error (one line, with a hint); 3 no incident in "
                              "the window (p95 at one level within its SLO: 01 says so and the suite stops); "
                              "130 interrupted")
    r.add_argument("-p", "--parameters", default="parameters/fixtures.yaml",
                   help="parameters file (default: %(default)s, the bundled fixture incident)")
    r.add_argument("--out", help="run folder to create (default: runs/<incident>/<UTC timestamp>)")
    r.add_argument("--no-export", action="store_true", help="do not write the postmortem at the end")
    r.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                   help="run only these notebooks (names or prefixes like 01 02); inputs must already be there")
    r.set_defaults(func=_cmd_run)

    rec = sub.add_parser("record", help="capture an incident bundle (fixtures format) from a Prometheus source "
                                        "and the PostgreSQL/Redis the parameters name")
    rec.add_argument("-p", "--parameters", default="parameters/lab.yaml",
                     help="parameters file with source.kind: prometheus (default: %(default)s)")
    rec.add_argument("--from", dest="start", required=True, help="ISO 8601 UTC, 'now', or relative: -10m")
    rec.add_argument("--to", dest="end", required=True, help="ISO 8601 UTC, 'now', or relative: +5m")
    rec.add_argument("--out", required=True, help="bundle folder to create, e.g. fixtures/checkout-2026-11-30")
    rec.add_argument("--snapshots-at", nargs=2, metavar=("START", "END"),
                     help="take the .start and .end snapshots at these times (inside the window), not at its "
                          "ends, e.g. both during the incident")
    rec.add_argument("--run", metavar="RUN_DIR",
                     help="the runbook run that fixed the incident: its applied changes become the remediation "
                          "events")
    rec.add_argument("--key-sample", type=_positive_int, default=200, metavar="N",
                     help="Redis keys in the redis_keys snapshot (default: %(default)s)")
    rec.add_argument("--max-wait-min", type=_positive_int, default=120, metavar="MIN",
                     help="refuse a --to (or snapshot time) further ahead than this (default: %(default)s)")
    rec.add_argument("--shape", choices=["d2"],
                     help="refuse a recording that is not this incident's shape (d2: a healthy baseline, p95 up "
                          "10x or more, cache hits under 10%%, 3-20%% 5xx, heavy DB load, CPU and memory normal, "
                          "the fixes applied, alerts firing and resolving, 5 min of recovery); it is kept as "
                          ".<out>.rejected")
    rec.set_defaults(func=_cmd_record)

    e = sub.add_parser("export", help="write the postmortem of a run folder: postmortem.md (charts as PNGs in "
                                      "postmortem_charts/), postmortem.html (self-contained) and postmortem.pdf",
                       description="Write the postmortem of a run folder from what its steps recorded: "
                                   "postmortem.md with its charts as PNGs in postmortem_charts/, postmortem.html "
                                   "(one self-contained file, works offline) and postmortem.pdf. The charts and the "
                                   "PDF are drawn by a headless Chromium (apt-get install chromium, or "
                                   "RUNBOOK_CHROMIUM=/path/to/chrome). 'runbook run' exports at its end.")
    e.add_argument("run_dir", help="a folder made by 'runbook run'")
    e.add_argument("--interactive", action="store_true",
                   help="also write postmortem-interactive.html: zoomable plotly charts, plotly.js included once "
                        "(about 5 MB)")
    e.add_argument("--templates", metavar="DIR",
                   help="a folder with your own postmortem.md.j2 and/or postmortem.html.j2 (Jinja2; the packaged "
                        "ones in runbook_lib/report/templates are the starting point and fill in the one you leave "
                        "out)")
    e.set_defaults(func=_cmd_export)

    c = sub.add_parser("check", help="validate a parameters file and reach its source, without running")
    c.add_argument("-p", "--parameters", default="parameters/fixtures.yaml", help="parameters file")
    c.set_defaults(func=_cmd_check)

    s = sub.add_parser("signals", help="list the signal names the analysis understands")
    s.set_defaults(func=_cmd_signals)

    rollback.register(sub)
    diagnose.register(sub)
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RunbookError as err:
        print(f"error: {one_line(redact_text(str(err)))}", file=sys.stderr)
        if err.hint:
            print(f"hint: {one_line(err.hint)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last resort: one line, and the traceback in a file
        log = _crash_log(err)
        print(f"error: {one_line(redact_text(f'{type(err).__name__}: {err}'.splitlines()[0]))}", file=sys.stderr)
        print(f"hint: this is a bug in runbook, not in your input; the traceback is in {log}", file=sys.stderr)
        return 2


def one_line(text: str) -> str:
    """The text on one terminal line: control characters (a key named "\\x1e" in a YAML file) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _crash_log(err: BaseException) -> str:
    """Write the (redacted) traceback to a file the hint names; the terminal gets one line."""
    folder = Path(tempfile.gettempdir()) / "runbook-crashes"
    folder.mkdir(exist_ok=True)
    path = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}.log"
    path.write_text(redact_text("".join(traceback.format_exception(err))))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
