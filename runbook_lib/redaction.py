"""Keep secrets out of everything the runbook writes: notebooks, logs, audit lines, exports.

Two layers:
* every secret value revealed through ``SecretRef.reveal()`` is registered here and replaced
  wherever it appears;
* patterns catch secrets that never went through a SecretRef: ``password=...`` in a DSN,
  ``user:pass@`` in a URL, ``Authorization: Bearer ...`` headers, ``token=`` query parameters.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
_known: set[str] = set()
_lock = threading.Lock()

# Secrets shorter than this are not replaced verbatim (replacing "a" everywhere would destroy text);
# patterns still catch them in their usual places.
MIN_SECRET_LEN = 4

_PATTERNS = [
    # a keyword that is not a path segment (/etc/passwd: ...), then = or :, then a value that is not a
    # reference ({env: NAME} in advice is not a secret)
    (re.compile(r"(?i)(?<![/\w-])(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)([ \t]*[=:][ \t]*)('[^']*'|\"[^\"]*\"|(?!\{)[^\s&;,'\"]+)"),
     lambda m: f"{m.group(1)}{m.group(2)}{MASK}"),
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)(@)"), lambda m: f"{m.group(1)}{MASK}{m.group(3)}"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{6,}"), lambda m: f"{m.group(1)} {MASK}"),
]


def register_secret(value: str | None) -> None:
    if value and len(value) >= MIN_SECRET_LEN:
        with _lock:
            _known.add(value)


def redact_text(text: str) -> str:
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


# a mapping key whose value is a credential whatever it looks like ({"password": "hunter22"})
SECRET_KEY = re.compile(r"(?i)^(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?access[_-]?key"
                        r"|auth(orization)?)$")


def scrub(obj: Any) -> Any:
    """``redact`` plus: the value under a credential-named key is masked whatever it is."""
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_KEY.match(k) and v not in (None, "")
                    and not isinstance(v, dict) else scrub(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(scrub(v) for v in obj)
    return redact(obj)


def redact(obj: Any) -> Any:
    """Redact strings anywhere inside dicts, lists and tuples (keys too)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {redact(k): redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj


# --- endpoints: where a connection goes, never with its credentials ------------------------------------


def postgres_endpoint(dsn: str) -> str:
    # imported here: papermill loads this module (suite.scrubbed_io) in every run, and psycopg costs 0.1 s
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        d = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgres (unparseable dsn)"
    return f"postgres://{d.get('host', 'localhost')}:{d.get('port', 5432)}/{d.get('dbname', d.get('user', ''))}"


def redis_endpoint(url: str) -> str:
    p = urlsplit(url)
    db = (p.path or "/0").lstrip("/") or "0"
    return f"redis://{p.hostname or 'localhost'}:{p.port or 6379}/{db}"
