"""Step 03, impact assessment: the remediation actions ranked by expected gain for the effort and risk."""

from __future__ import annotations

import pandas as pd

from runbook_lib.actions import build_action
from runbook_lib.diagnose.hypotheses import hypotheses_from_json
from runbook_lib.errors import RunbookError, SettingsError
from runbook_lib.model import PlannedAction
from runbook_lib.plan import ranking
from runbook_lib.settings import Settings


def impact(findings: dict, settings: Settings | None = None, sizing: dict | None = None) -> list[PlannedAction]:
    """The ranked plan from 02's findings and the capacity sizing, then the operator's own actions
    (``remediation.extra_actions``)."""
    hyps = hypotheses_from_json(findings)
    statements = None
    if findings.get("statements"):
        statements = pd.DataFrame(findings["statements"]).set_index("queryid")
    planned = _propose(hyps, statements, findings)
    k8s = settings.kubernetes.model_dump() if settings is not None and settings.kubernetes is not None else None
    planned += ranking.scaling_actions(sizing, findings.get("app_config"), hyps, k8s)
    return planned + (extra_actions(settings, {a.id for a in planned}) if settings is not None else [])


def extra_actions(settings: Settings, taken: set[str]) -> list[PlannedAction]:
    """The parameters' extra actions as plan rows, with their executor's id and title (an unknown kind or bad
    inputs stop here, naming the action)."""
    out = []
    for i, x in enumerate(settings.remediation.extra_actions):
        try:
            executor = build_action(x.kind, x.inputs)
        except RunbookError as e:
            raise SettingsError(f"remediation.extra_actions[{i}]: {e}") from None
        if executor.id in taken:
            raise SettingsError(f"remediation.extra_actions[{i}]: {executor.id} is already in the plan",
                                hint="change the plan's action instead of adding a second one with the same id")
        taken.add(executor.id)
        out.append(PlannedAction(executor.id, "immediate", executor.title, "operator", x.kind, x.inputs, 0.0, 0.25,
                                 executor.risk, x.why))
    return out


# PostgreSQL's default superuser_reserved_connections: the connections an application role may not use.
SUPERUSER_RESERVED = 3


def scaling(step, findings: dict) -> dict:
    """Replicas, pool, autoscaler bounds, breaker and rate limit sized from 01's levels (``scaling_sizing``)."""
    from runbook_lib.plan import scaling_sizing

    levels = {s["signal"]: s for s in step.read("symptoms.json").get("signals", [])}

    def level(name: str, phase: str) -> float | None:
        v = levels.get(name, {}).get(phase)
        return None if v is None or v != v else float(v)  # NaN: not measured

    cfg = findings.get("app_config") or {}
    max_conn = ((findings.get("snapshots") or {}).get("settings") or {}).get("max_connections")
    observed = scaling_sizing.Observed(
        replicas=int(cfg.get("replicas") or 1), pool_per_replica=cfg.get("db_pool_max"),
        rate_baseline=level("request_rate", "baseline"), rate_incident=level("request_rate", "incident"),
        rate_peak=_peak(step, "request_rate"), cpu_baseline=level("cpu_utilization", "baseline"),
        cpu_incident=level("cpu_utilization", "incident"),
        db_query_rate_baseline=level("db_query_rate", "baseline"),
        db_query_latency_ms_baseline=level("db_query_latency_ms", "baseline"),
        error_ratio_baseline=level("error_ratio", "baseline"),
        db_usable_connections=int(max_conn) - SUPERUSER_RESERVED if max_conn else None)
    slo = step.settings.slo
    return scaling_sizing.size(observed, slo.latency_p95_ms, slo.error_ratio)


MANIFESTS_DIR = "scaling"


def write_manifests(step, sizing: dict) -> list[str]:
    """The HPA and KEDA ScaledObject generated from the sizing, as YAML in the run folder (every mode, dry run
    included: a reviewer can apply them by hand); [] without a ``kubernetes`` section or a sizing."""
    from runbook_lib.plan.autoscaler_manifests import generate_autoscaler_manifests, to_yaml

    k8s = step.settings.kubernetes
    if k8s is None or sizing.get("capacity_per_replica") is None:
        return []
    folder = step.run_dir / MANIFESTS_DIR
    folder.mkdir(exist_ok=True)
    written = []
    for name, obj in generate_autoscaler_manifests(sizing, k8s.model_dump()).items():
        path = folder / f"{name}.yaml"
        path.write_text(to_yaml(obj))
        written.append(f"{MANIFESTS_DIR}/{path.name}")
    return written


def capacity_conclusion(sizing: dict, manifests: list[str]) -> str:
    out = f"**Concluded.** {sizing['summary']}"
    if manifests:
        out += (f" Autoscaler manifests for review: {', '.join(manifests)} (validated against the Kubernetes and "
                "KEDA schemas; apply one of the two, not both. Not verified against a real cluster: none runs here.)")
    elif sizing.get("capacity_per_replica") is not None:
        out += " Add a `kubernetes` section to the parameters to get the HPA and KEDA manifests."
    return out


def _peak(step, signal: str) -> float | None:
    """The window's 99th percentile of a signal (a peak that one outlier sample does not set), or None."""
    try:
        values = step.signals()[signal].dropna()
    except (KeyError, RunbookError):
        return None
    return float(values.quantile(0.99)) if len(values) else None


def sizing_frame(sizing: dict) -> pd.DataFrame:
    """What was sized, the figure, and the measurement it rests on."""
    if sizing.get("capacity_per_replica") is None:
        return pd.DataFrame({"value": ["-"], "from": [sizing["reasons"].get("capacity_per_replica", "")]},
                            index=pd.Index(["capacity per replica"], name="quantity"))
    t, cb, rl, r = sizing["targets"], sizing["circuit_breaker"], sizing["rate_limit"], sizing["reasons"]
    rows = [
        ("capacity per replica at the SLO", f"{sizing['capacity_per_replica']:.3g} req/s", r["capacity_per_replica"]),
        ("replicas now / needed / for the peak",
         f"{sizing['replicas_now']} / {sizing['replicas_needed']} / {sizing['replicas_for_peak']}",
         f"utilisation now {sizing['utilisation_now']:.0%} of capacity"),
        ("autoscaler min replicas", str(sizing["min_replicas"]), r["min_replicas"]),
        ("autoscaler max replicas", str(sizing["max_replicas"]), r["max_replicas"]),
        ("pool per replica", str(sizing["pool_per_replica"] or "-"), r["pool_per_replica"]),
        ("autoscaler targets", f"CPU {t['cpu_utilization']:.0%}, memory {t['memory_utilization']:.0%}, p95 "
         f"{t['latency_p95_ms']:g} ms, {t['request_rate_per_replica']:.3g} req/s per replica"
         + (f", DB connections {t['db_connections']}" if t.get("db_connections") else ""),
         "scale before the SLO is breached"),
        ("circuit breaker", f"open at {cb['error_ratio']:.0%} errors / {cb['window_s']} s, >= {cb['min_requests']} "
         f"requests, for {cb['open_s']} s", r["circuit_breaker"]),
        ("rate limit per replica", f"{rl['per_replica_rps']:.3g} req/s, burst {rl['burst']}", r["rate_limit"]),
        ("expected", sizing["expected"]["replicas"], "if the replicas are changed to the needed count"),
    ]
    return pd.DataFrame([{"value": v, "from": f} for _, v, f in rows],
                        index=pd.Index([q for q, _, _ in rows], name="quantity"))


def _propose(hyps, statements, findings: dict) -> list[PlannedAction]:
    return ranking.propose(hyps, statements, findings.get("app_config"), findings.get("index_candidates", []),
                           findings.get("redis"), findings.get("cache_plan"), findings.get("cache_findings"),
                           findings.get("pool_holders"))


def impact_conclusion(actions: list[PlannedAction]) -> str:
    if not actions:
        return "**Concluded.** Nothing to do: no supported cause proposes an action."
    first = [a for a in actions if a.phase == "immediate"]
    execs = [a for a in actions if a.executable]
    lines = [f"**Concluded.** {len(actions)} actions, {len(execs)} of them executable by the runbook."]
    if first:
        lines.append("Do first (minutes, low risk, reversible): " + "; ".join(a.title for a in first) + ".")
    later = [a for a in actions if a.phase != "immediate"]
    if later:
        lines.append("Then: " + "; ".join(f"{a.title} ({a.phase})" for a in later) + ".")
    return "\n\n".join(lines)


def actions_frame(actions: list[PlannedAction]) -> pd.DataFrame:
    """The plan table 03 shows."""
    return ranking.actions_frame(actions)
