"""``runbook rollback RUN_DIR [--action ID] [--apply]``: undo a run's applied actions from its audit log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from runbook_lib.redaction import redact_text

if TYPE_CHECKING:
    from runbook_lib.model import Outcome


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rollback",
        help="undo a run's applied actions, newest first, from its audit log (dry run unless --apply)",
        description="Reads audit.jsonl in RUN_DIR, rebuilds every action that changed something and restores "
                    "the prior state it captured. Without --apply only prints (and audits) what would run.",
    )
    p.add_argument("run_dir", help="a run folder with audit.jsonl and parameters.yaml")
    p.add_argument("--action", metavar="ID", help="undo only this action (ids are listed by the dry run)")
    p.add_argument("--apply", action="store_true", help="execute the rollback (default: dry run)")
    p.set_defaults(func=_cmd_rollback)


def _cmd_rollback(args: argparse.Namespace) -> int:
    # imported here: the action framework brings psycopg, redis and pandas, and `runbook --help` builds this parser
    from runbook_lib.actions.rollback import rollback_run

    run_dir = Path(args.run_dir)
    outcomes = rollback_run(run_dir, action_id=args.action, apply=args.apply)
    for line in format_outcomes(outcomes, run_dir, args.apply):
        print(redact_text(line))
    return 0


def format_outcomes(outcomes: list[Outcome], run_dir: Path, applied: bool) -> list[str]:
    if not outcomes:
        return [f"nothing to undo in {run_dir}"]
    head = "rolled back" if applied else "dry run: would undo"
    lines = [f"{head} {len(outcomes)} action(s), newest first:"]
    for o in outcomes:
        lines.append(f"  {o.action_id}: {o.status} - {o.title} ({o.message})")
        lines += [f"      {c}" for c in o.commands]
    if not applied:
        lines.append("nothing was changed; add --apply to execute")
    return lines
