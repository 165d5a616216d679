"""The notification of a finished automated run: Slack-compatible JSON posted to a webhook URL.

The message (``{"text": ..., "blocks": [...]}``: Slack's incoming webhooks, and Mattermost and most chat
bridges, read ``text``) says what happened in a few lines: the incident and its alert, the run's status and
whether it changed anything, the top root cause from ``findings.json`` (the best-ranked hypothesis that was
not disproved, with its confidence) and where the postmortem is. Everything goes through the redaction
before it leaves; the webhook URL is itself a credential and never appears in a log line.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from runbook_lib.automation.automation_errors import NotifyError
from runbook_lib.redaction import redact, redact_text

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
ATTEMPTS = 3
MAX_TEXT = 3000  # Slack truncates a section's text at 3000 characters


def top_root_cause(run_dir: Path) -> dict[str, Any] | None:
    """The best-ranked hypothesis 02 did not disprove (findings.json ranks them), or None."""
    try:
        findings = json.loads((run_dir / "findings.json").read_text())
    except (OSError, ValueError):
        return None
    for h in findings.get("hypotheses") or []:
        if isinstance(h, dict) and not h.get("disproved"):
            return h
    return None


def summary(job: dict[str, Any], run_state: dict[str, Any], run_dir: Path, link: str | None,
            outcome: dict[str, Any]) -> dict[str, Any]:
    """The facts a notification states (also written to automation.json)."""
    alert = job.get("alert") or {}
    cause = top_root_cause(run_dir)
    return {
        "incident": job.get("incident_id"),
        "title": (job.get("parameters") or {}).get("incident", {}).get("title"),
        "service": alert.get("service"),
        "alertname": alert.get("alertname"),
        "alert_started_at": alert.get("starts_at"),
        "generator_url": alert.get("generator_url"),
        "resolved_at": job.get("resolved_at"),
        "status": outcome.get("status"),
        "state": outcome.get("state"),
        "reason": outcome.get("reason"),
        "apply": bool(job.get("apply")),
        "changed": bool(outcome.get("changed")),
        "mode": run_state.get("mode") or (job.get("parameters") or {}).get("mode"),
        "attempts": job.get("attempt"),
        "root_cause": None if cause is None else {
            "title": cause.get("title"), "statement": cause.get("statement"),
            "confidence": cause.get("confidence"), "level": cause.get("confidence_label")},
        "postmortem": link,
    }


def message(facts: dict[str, Any]) -> dict[str, Any]:
    """Slack-compatible JSON: ``text`` (every client) and the same in one mrkdwn section."""
    status = facts.get("status") or facts.get("state")
    verdict = "OK" if facts.get("state") == "done" else "FAILED"
    lines = [f"*runbook* {verdict}: `{facts.get('incident')}` ({facts.get('service')}, alert "
             f"{facts.get('alertname')} since {facts.get('alert_started_at')}): run {status}, "
             + ("a change was APPLIED" if facts.get("changed") else
                ("apply allowed, nothing applied" if facts.get("apply") else "dry run, nothing changed"))]
    if facts.get("title"):
        lines.append(f"> {facts['title']}")
    if facts.get("reason") and facts.get("state") != "done":
        lines.append(f"Why: {facts['reason']}")
    cause = facts.get("root_cause")
    if cause:
        conf = cause.get("confidence")
        lines.append(f"Top root cause: *{cause.get('title')}*: {cause.get('statement')} (confidence "
                     f"{cause.get('level')}{f', {conf:.0%}' if isinstance(conf, int | float) else ''})")
    else:
        lines.append("Top root cause: none found (no findings.json, or every hypothesis was disproved)")
    lines.append(f"Postmortem: {facts.get('postmortem') or '(not exported)'}")
    if facts.get("generator_url"):
        lines.append(f"Alert source: {facts['generator_url']}")
    if facts.get("resolved_at"):
        lines.append(f"The alert resolved at {facts['resolved_at']}.")
    text = redact_text("\n".join(lines))[:MAX_TEXT]
    return redact({"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]})


def post(url: str, body: dict[str, Any], attempts: int = ATTEMPTS, timeout: float = TIMEOUT_S) -> None:
    """POST ``body``; retried on a connection error, 429 and 5xx, bounded. The URL is never in the error."""
    data = json.dumps(body).encode()
    problem = ""
    for i in range(attempts):
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "runbook"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the operator's webhook URL
                if 200 <= r.status < 300:
                    return
                problem = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            problem = f"HTTP {e.code}"
            if e.code < 500 and e.code != 429:
                raise NotifyError(f"the notification webhook refused the message ({problem})") from None
        except (urllib.error.URLError, OSError) as e:
            problem = type(getattr(e, "reason", e)).__name__
        if i + 1 < attempts:
            time.sleep(min(0.5 * 2**i, 4.0))
    raise NotifyError(f"the notification webhook did not take the message after {attempts} attempts ({problem})")
