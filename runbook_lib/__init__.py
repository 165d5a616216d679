"""runbook_lib: the analysis and remediation library behind the runbook notebooks."""

__version__ = "0.1.0"
