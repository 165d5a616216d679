"""Read the application's knobs from its config file: one JSON object (``model.AppKnobs``).

The file is the app's own source of truth for the knobs the runbook may change (a mounted ConfigMap,
the lab's config.json); the parameters name it (``app.config_file``). Writing it is the ``app.config``
action's job (``runbook_lib.actions.app_config``).
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from runbook_lib.errors import AppConfigError
from runbook_lib.model import AppKnobs, knob_value


def knobs_from_dict(data: dict[str, Any], base: AppKnobs | None = None) -> AppKnobs:
    """Validated knobs: ``data`` over ``base`` (default: all of them from ``data``). AppConfigError names the key."""
    known = {f.name for f in fields(AppKnobs)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AppConfigError(f"unknown app config key(s): {', '.join(unknown)}")
    values = {}
    for k, v in data.items():
        try:
            values[k] = knob_value(k, v)
        except (TypeError, ValueError):
            kind = {f.name: f.type for f in fields(AppKnobs)}[k]
            raise AppConfigError(f"{k}={v!r} is not a valid {kind}") from None
    knobs = replace(base, **values) if base is not None else AppKnobs(**values)
    problems = knobs.problems()
    if problems:
        raise AppConfigError("invalid app config: " + "; ".join(problems))
    return knobs


def read_app_config(path: str | Path) -> AppKnobs:
    """The knobs in ``path``; AppConfigError when it is missing, not JSON, or holds bad values."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AppConfigError(f"app config {path} does not exist",
                             hint="set app.config_file in the parameters (the lab: start it with runbook lab up)") from None
    except json.JSONDecodeError as e:
        raise AppConfigError(f"app config {path} is not valid JSON: {e.msg} (line {e.lineno})") from None
    if not isinstance(data, dict):
        raise AppConfigError(f"app config {path} must hold a JSON object")
    return knobs_from_dict(data)
