"""Charts (plotly, event markers), the postmortem export, and the terminal reports of ``runbook diagnose``."""
