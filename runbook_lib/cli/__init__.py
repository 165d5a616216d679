"""The one front door: the ``runbook`` command (``app.main``)."""

from runbook_lib.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
