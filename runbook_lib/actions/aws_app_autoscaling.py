"""AppAutoScalingTarget (kind ``aws.app_autoscaling``): an Application Auto Scaling target and its policy.

The scaling change of the write-up's remediation for an ECS service (``ecs:service:DesiredCount``, resource
``service/<cluster>/<service>``) or an Aurora cluster's read replicas (``rds:cluster:ReadReplicaCount``,
resource ``cluster:<name>``): the bounds the autoscaler may use (``RegisterScalableTarget``, min and max
capacity) and one target-tracking policy (``PutScalingPolicy``) that scales on a predefined metric.

Prior state captured first: the scalable target's min/max and the named policy's full configuration, each
or its absence. Apply registers the target, then puts the policy; if the policy call fails after the target
changed, the target is put back (re-registered with its prior bounds, or deregistered when it did not exist)
before the typed error is raised, so nothing is left half-done. Rollback puts the prior policy back (or
deletes it when it did not exist) and restores or deregisters the target. Verified by describing both again.

Tested against moto_server only (no AWS account here): the calls and their validation are moto's, not AWS's.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from runbook_lib.actions.action_errors import ActionError, ActionFailed
from runbook_lib.actions.aws_autoscaling import aws_call
from runbook_lib.actions.framework import Action, ApplyResult, Inputs, Plan, RollbackResult, VerifyResult
from runbook_lib.model import app_autoscaling_action_id

# The scalable dimension each supported service namespace scales (AWS Application Auto Scaling API reference,
# RegisterScalableTarget: ScalableDimension). Other namespaces are refused: only these two are tested here.
DIMENSIONS = {"ecs": "ecs:service:DesiredCount", "rds": "rds:cluster:ReadReplicaCount"}

# Resource id shapes (RegisterScalableTarget: ResourceId). ECS cluster and service names: up to 255 letters,
# digits, hyphens and underscores (ECS CreateCluster / CreateService). Aurora DB cluster identifiers: 1-63
# letters, digits and hyphens, starting with a letter, no double or trailing hyphen (RDS CreateDBCluster).
RESOURCE_IDS = {
    "ecs": (re.compile(r"service/[A-Za-z0-9_-]{1,255}/[A-Za-z0-9_-]{1,255}"), "service/<cluster>/<service>"),
    "rds": (re.compile(r"cluster:(?=[A-Za-z0-9-]{1,63}\Z)[A-Za-z](?:-?[A-Za-z0-9])*"),
            "cluster:<db-cluster-identifier>"),
}

# Capacity bounds refused as input errors. ECS: the runbook scales for an incident, it does not build a fleet
# (same limit as aws.asg_capacity). RDS: an Aurora cluster has at most 15 Aurora Replicas (Aurora User Guide).
MAX_CAPACITY = {"ecs": 200, "rds": 15}

# Predefined metrics per namespace (Application Auto Scaling API reference, PredefinedMetricSpecification).
METRICS = {
    "ecs": ("ECSServiceAverageCPUUtilization", "ECSServiceAverageMemoryUtilization",
            "ALBRequestCountPerTarget"),
    "rds": ("RDSReaderAverageCPUUtilization", "RDSReaderAverageDatabaseConnections"),
}
# Metrics in percent: a target value above 100 can never be reached, so it is refused.
PERCENT_METRICS = {"ECSServiceAverageCPUUtilization", "ECSServiceAverageMemoryUtilization",
                   "RDSReaderAverageCPUUtilization"}
# ALBRequestCountPerTarget needs the target group as ResourceLabel (PredefinedMetricSpecification):
# app/<load-balancer-name>/<16 hex>/targetgroup/<target-group-name>/<16 hex>, names up to 32 characters.
ALB_METRIC = "ALBRequestCountPerTarget"
RESOURCE_LABEL = re.compile(r"app/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}"
                            r"/targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}")
# AWS allows any printable 1-256 characters in a policy name; the runbook keeps to shell-safe ones.
POLICY_NAME = re.compile(r"[A-Za-z0-9._-]{1,256}")
# ScaleIn/ScaleOutCooldown: AWS's default for ECS and Aurora is 300 s (API reference,
# TargetTrackingScalingPolicyConfiguration); more than an hour between scaling steps is no incident setting.
DEFAULT_COOLDOWN_S = 300
MAX_COOLDOWN_S = 3600

TARGET_TRACKING = "TargetTrackingScaling"
# PutScalingPolicy's configuration parameter per PolicyType: a prior policy of any type is put back exactly.
CONFIG_KEYS = {"TargetTrackingScaling": "TargetTrackingScalingPolicyConfiguration",
               "StepScaling": "StepScalingPolicyConfiguration",
               "PredictiveScaling": "PredictiveScalingPolicyConfiguration"}
MAX_PAGES = 20  # DescribeScalingPolicies pages read before giving up (100 policies a page)
CLI = "aws application-autoscaling"


class PolicyNotApplied(ActionFailed):
    """PutScalingPolicy failed; the scalable target was left or put back as it was before the action."""

    hint = ("nothing of this action remains applied (the message says what was put back); fix the cause "
            "and run the action again")


class AppAutoScalingInputs(Inputs):
    service_namespace: Literal["ecs", "rds"]
    resource_id: str = Field(min_length=1, max_length=600)
    scalable_dimension: str = Field(min_length=1, max_length=100)
    min_capacity: int = Field(ge=0)
    max_capacity: int = Field(ge=0)
    target_value: float = Field(gt=0, allow_inf_nan=False)
    predefined_metric: str = Field(min_length=1, max_length=100)
    resource_label: str | None = Field(None, max_length=1023)
    policy_name: str = Field(min_length=1, max_length=256)  # default: runbook-<predefined_metric>
    scale_in_cooldown_s: int = Field(DEFAULT_COOLDOWN_S, ge=0, le=MAX_COOLDOWN_S)
    scale_out_cooldown_s: int = Field(DEFAULT_COOLDOWN_S, ge=0, le=MAX_COOLDOWN_S)
    disable_scale_in: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_policy_name(cls, data: Any) -> Any:
        metric = data.get("predefined_metric") if isinstance(data, dict) else None
        if isinstance(metric, str) and data.get("policy_name") is None:
            data = {**data, "policy_name": f"runbook-{metric}"}
        return data

    @field_validator("policy_name")
    @classmethod
    def _policy_name(cls, v: str) -> str:
        if not POLICY_NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a policy name: use letters, digits, '.', '_' and '-' only")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        ns = self.service_namespace
        if self.scalable_dimension != DIMENSIONS[ns]:
            raise ValueError(f"scalable_dimension {self.scalable_dimension!r} does not fit namespace {ns!r}: "
                             f"use {DIMENSIONS[ns]!r}")
        pattern, shape = RESOURCE_IDS[ns]
        if not pattern.fullmatch(self.resource_id):
            raise ValueError(f"resource_id {self.resource_id!r} is not an {ns} resource id: use {shape}")
        if not self.min_capacity <= self.max_capacity <= MAX_CAPACITY[ns]:
            raise ValueError(f"capacity must satisfy min_capacity {self.min_capacity} <= max_capacity "
                             f"{self.max_capacity} <= {MAX_CAPACITY[ns]}")
        self._check_metric()
        return self

    def _check_metric(self) -> None:
        ns, metric = self.service_namespace, self.predefined_metric
        if metric not in METRICS[ns]:
            raise ValueError(f"predefined_metric {metric!r} is not one of {ns}'s: {', '.join(METRICS[ns])}")
        if metric in PERCENT_METRICS and self.target_value > 100:
            raise ValueError(f"target_value {self.target_value} is a percentage for {metric}: at most 100")
        if (metric == ALB_METRIC) != (self.resource_label is not None):
            raise ValueError(f"resource_label is needed with {ALB_METRIC} and only with it")
        if self.resource_label is not None and not RESOURCE_LABEL.fullmatch(self.resource_label):
            raise ValueError("resource_label must look like app/<lb>/<id>/targetgroup/<target-group>/<id>")


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _describe_bounds(target: dict[str, int] | None) -> str:
    if target is None:
        return "not registered"
    return f"min {target['min_capacity']}, max {target['max_capacity']}"


class AppAutoScalingTarget(Action):
    kind = "aws.app_autoscaling"
    family = "aws"
    Inputs = AppAutoScalingInputs
    effect_signal = "latency_p95_ms"
    risk = "medium"  # more tasks or replicas cost money; a tight max or a high target can starve the service

    inputs: AppAutoScalingInputs

    @property
    def id(self) -> str:
        return app_autoscaling_action_id(self.inputs.resource_id, self.inputs.scalable_dimension)

    @property
    def title(self) -> str:
        i = self.inputs
        return (f"Scale {i.resource_id} between {i.min_capacity} and {i.max_capacity}, tracking "
                f"{i.predefined_metric} at {i.target_value:g}")

    @property
    def target(self) -> str:
        i = self.inputs
        return (f"Application Auto Scaling target {i.service_namespace} {i.resource_id} "
                f"({i.scalable_dimension})")

    # --- the wanted state and the commands ----------------------------------------------------------

    def _configuration(self) -> dict[str, Any]:
        i = self.inputs
        spec = {"PredefinedMetricType": i.predefined_metric}
        if i.resource_label is not None:
            spec["ResourceLabel"] = i.resource_label
        return {"TargetValue": float(i.target_value), "PredefinedMetricSpecification": spec,
                "ScaleOutCooldown": i.scale_out_cooldown_s, "ScaleInCooldown": i.scale_in_cooldown_s,
                "DisableScaleIn": i.disable_scale_in}

    def _wanted(self) -> dict[str, Any]:
        i = self.inputs
        return {"target": {"min_capacity": i.min_capacity, "max_capacity": i.max_capacity},
                "policy": {"policy_type": TARGET_TRACKING, "configuration": self._configuration()}}

    def _cli(self, op: str, *extra: str) -> str:
        i = self.inputs
        keys = (f"--service-namespace {i.service_namespace} --resource-id {i.resource_id} "
                f"--scalable-dimension {i.scalable_dimension}")
        return " ".join((f"{CLI} {op}", keys, *extra))

    def _target_command(self, target: dict[str, Any] | None) -> str:
        if target is None:
            return self._cli("deregister-scalable-target")
        return self._cli("register-scalable-target", f"--min-capacity {target['min_capacity']}",
                         f"--max-capacity {target['max_capacity']}")

    def _policy_command(self, policy: dict[str, Any] | None) -> str:
        name = f"--policy-name {self.inputs.policy_name}"
        if policy is None:
            return self._cli("delete-scaling-policy", name)
        flag = _kebab(CONFIG_KEYS[policy["policy_type"]])
        body = shlex.quote(json.dumps(policy["configuration"], separators=(",", ":")))
        return self._cli("put-scaling-policy", name, f"--policy-type {policy['policy_type']}",
                         f"--{flag} {body}")

    def plan(self) -> Plan:
        w = self._wanted()
        name = f"--policy-name {self.inputs.policy_name}"
        captures = [self._cli("describe-scalable-targets").replace("--resource-id", "--resource-ids")
                    + "  # MinCapacity, MaxCapacity (or not registered)",
                    self._cli("describe-scaling-policies", name).replace("--policy-name", "--policy-names")
                    + "  # PolicyType and its full configuration (or absent)"]
        rollback = [self._policy_command(None)
                    + "  # if absent before; else put-scaling-policy <prior configuration>",
                    self._target_command(None)
                    + "  # if not registered before; else register-scalable-target "
                      "--min-capacity <prior> --max-capacity <prior>"]
        return Plan(self.id, self.kind, self.title, self.target,
                    commands=[self._target_command(w["target"]), self._policy_command(w["policy"])],
                    captures=captures, rollback_commands=rollback, reversible=True, risk=self.risk)

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        policy = self._policy_command(prior.get("policy"))
        target = self._target_command(prior.get("target"))
        return [target, policy] if prior.get("target") is not None else [policy, target]

    # --- reading and writing ----------------------------------------------------------------------

    def _client(self, targets):
        return targets.aws_client("application-autoscaling")

    def _keys(self) -> dict[str, str]:
        i = self.inputs
        return {"ServiceNamespace": i.service_namespace, "ResourceId": i.resource_id,
                "ScalableDimension": i.scalable_dimension}

    def _read_target(self, client) -> dict[str, int] | None:
        k = self._keys()
        out = aws_call("DescribeScalableTargets", client.describe_scalable_targets,
                    ServiceNamespace=k["ServiceNamespace"], ResourceIds=[k["ResourceId"]],
                    ScalableDimension=k["ScalableDimension"])
        found = [t for t in out.get("ScalableTargets", [])
                 if t["ResourceId"] == k["ResourceId"] and t["ScalableDimension"] == k["ScalableDimension"]]
        return {"min_capacity": int(found[0]["MinCapacity"]), "max_capacity": int(found[0]["MaxCapacity"])} \
            if found else None

    def _read_policy(self, client) -> dict[str, Any] | None:
        k, name, token = self._keys(), self.inputs.policy_name, None
        for _ in range(MAX_PAGES):
            out = aws_call("DescribeScalingPolicies", client.describe_scaling_policies, **k, PolicyNames=[name],
                        **({"NextToken": token} if token else {}))
            for p in out.get("ScalingPolicies", []):  # filtered here too: moto ignores PolicyNames
                if p["PolicyName"] == name and all(p.get(key) == v for key, v in k.items()):
                    return self._policy_state(p)
            token = out.get("NextToken")
            if not token:
                return None
        raise ActionFailed(f"DescribeScalingPolicies: more than {MAX_PAGES} pages of policies for "
                           f"{self.inputs.resource_id}")

    def _policy_state(self, p: dict[str, Any]) -> dict[str, Any]:
        kind = p.get("PolicyType")
        if kind not in CONFIG_KEYS:
            raise ActionFailed(f"scaling policy {self.inputs.policy_name!r} has type {kind!r}, which the "
                               "runbook cannot restore exactly",
                               hint="pick another policy_name, or change this policy by hand")
        config = dict(p.get(CONFIG_KEYS[kind]) or {})
        if kind == TARGET_TRACKING:
            config.setdefault("DisableScaleIn", False)  # AWS's default when the field is left out
        return {"policy_type": kind, "configuration": config}

    def capture(self, targets) -> dict[str, Any]:
        client = self._client(targets)
        return {"target": self._read_target(client), "policy": self._read_policy(client)}

    def _set_target(self, targets, target: dict[str, int] | None) -> str:
        client = self._client(targets)
        if target is None:
            aws_call("DeregisterScalableTarget", client.deregister_scalable_target, **self._keys())
        else:
            aws_call("RegisterScalableTarget", client.register_scalable_target, **self._keys(),
                  MinCapacity=target["min_capacity"], MaxCapacity=target["max_capacity"])
        return self._target_command(target)

    def _set_policy(self, targets, policy: dict[str, Any] | None) -> str:
        client, name = self._client(targets), self.inputs.policy_name
        if policy is None:
            aws_call("DeleteScalingPolicy", client.delete_scaling_policy, **self._keys(), PolicyName=name)
        else:
            kind = policy["policy_type"]
            aws_call("PutScalingPolicy", client.put_scaling_policy, **self._keys(), PolicyName=name,
                  PolicyType=kind, **{CONFIG_KEYS[kind]: policy["configuration"]})
        return self._policy_command(policy)

    # --- the action ---------------------------------------------------------------------------------

    def is_applied(self, state: dict[str, Any]) -> bool:
        return state == self._wanted()

    def apply(self, targets) -> ApplyResult:
        prior, wanted = self.capture(targets), self._wanted()
        if prior == wanted:
            return ApplyResult(False, "already applied")
        sent = []
        if prior["target"] != wanted["target"]:
            sent.append(self._set_target(targets, wanted["target"]))
        if prior["policy"] != wanted["policy"]:
            try:
                sent.append(self._set_policy(targets, wanted["policy"]))
            except ActionError as e:
                raise self._undo_target(targets, prior, bool(sent), e) from None
        i = self.inputs
        return ApplyResult(True, f"{i.resource_id}: {_describe_bounds(prior['target'])} -> "
                                 f"{_describe_bounds(wanted['target'])}; policy {i.policy_name} "
                                 f"{'updated' if prior['policy'] else 'created'}", sent)

    def _undo_target(self, targets, prior: dict[str, Any], target_changed: bool,
                     err: ActionError) -> ActionError:
        """The policy call failed: put the target back as it was, and return the error that says so."""
        if not target_changed:
            return PolicyNotApplied(f"{err}; the scalable target was not changed")
        was = _describe_bounds(prior["target"])
        try:
            self._set_target(targets, prior["target"])
            now = self.capture(targets)
        except ActionError as again:
            return ActionFailed(f"{err}; putting the scalable target back ({was}) also failed: {again}")
        if now != prior:
            return ActionFailed(f"{err}; the scalable target was put back but the state is now {now}, "
                                f"not {prior}")
        undone = "deregistered (it did not exist before)" if prior["target"] is None else f"put back to {was}"
        return PolicyNotApplied(f"{err}; the scalable target was {undone} before this error")

    def verify(self, targets) -> VerifyResult:
        i, state, wanted = self.inputs, self.capture(targets), self._wanted()
        if state == wanted:
            return VerifyResult(True, f"{i.resource_id}: {_describe_bounds(state['target'])}, policy "
                                      f"{i.policy_name} tracking {i.predefined_metric}", state)
        return VerifyResult(False, f"{i.resource_id} is at {state}, not {wanted}", state)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        now = self.capture(targets)
        if now == prior:
            return RollbackResult(False, "nothing to undo: the prior target and policy are in place")
        steps = [("target", self._set_target), ("policy", self._set_policy)]
        if prior.get("target") is None:  # the policy goes before its target is deregistered
            steps.reverse()
        sent = []
        for part, setter in steps:
            if now[part] != prior.get(part):
                sent.append(setter(targets, prior.get(part)))
        policy = "as before" if prior.get("policy") else "deleted"
        return RollbackResult(True, f"restored the target ({_describe_bounds(prior.get('target'))}) and the "
                                    f"policy ({policy})", sent)
