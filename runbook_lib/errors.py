"""Typed errors. Every error the library raises on purpose is a RunbookError.

Each carries a one-line cause (``str(err)``) and a ``hint``: what the user should do next.
The CLI prints ``error: <cause>`` and ``hint: <hint>`` and exits non-zero; notebooks show the same.
"""

from __future__ import annotations


class RunbookError(Exception):
    """Base class. ``hint`` says what to do next."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class SettingsError(RunbookError):
    hint = "fix the parameters file; see README 'Parameters' for every field"


class SecretError(RunbookError):
    hint = "export the environment variable or create the file the parameters name"


class SourceError(RunbookError):
    hint = "check the source section of the parameters and that the backend is reachable"


class FixtureError(SourceError):
    hint = "see fixtures/README.md for the bundle format"


class UnknownSignalError(SourceError):
    hint = "use one of the signal names listed in README 'Signals' (runbook signals prints them)"


class StepInputMissing(RunbookError):
    hint = "run the earlier notebooks first (runbook run does them in order)"


class ServiceError(RunbookError):
    hint = "see the server's log file named in the message"


class NotebookFailed(RunbookError):
    hint = "open the executed notebook in the run folder to see the traceback"
