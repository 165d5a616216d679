"""AsgCapacity (kind ``aws.asg_capacity``): an EC2 Auto Scaling group's desired capacity (and bounds) set.

The scaling change of the write-up's remediation on AWS: more instances behind the service while the fix
lands, or the bounds an autoscaler may use. One ``UpdateAutoScalingGroup`` call changes min, max and desired
together (atomic on AWS's side: a refused call changes nothing), after the prior values were captured;
rollback sets the prior three back exactly. Verified by reading the group again. Tested against moto_server
only (no AWS account here): the calls and their validation are moto's, not AWS's.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from runbook_lib.actions.action_errors import ActionFailed, TargetError
from runbook_lib.actions.framework import Action, ApplyResult, Inputs, Plan, RollbackResult, VerifyResult
from runbook_lib.model import asg_capacity_action_id

# A capacity change beyond this is refused as an input error: the runbook scales for an incident, it does
# not build a fleet (raise it in a reviewed change, not at 3 a.m.).
MAX_CAPACITY = 200


class AsgCapacityInputs(Inputs):
    group: str = Field(min_length=1, max_length=255)
    desired: int = Field(ge=0, le=MAX_CAPACITY)
    min_size: int | None = Field(None, ge=0, le=MAX_CAPACITY)
    max_size: int | None = Field(None, ge=0, le=MAX_CAPACITY)

    @model_validator(mode="after")
    def _bounds(self):
        lo = self.min_size if self.min_size is not None else 0
        hi = self.max_size if self.max_size is not None else MAX_CAPACITY
        if not lo <= self.desired <= hi:
            raise ValueError(f"desired {self.desired} must lie within min_size {lo} and max_size {hi}")
        return self


def aws_call(what: str, fn, **kwargs) -> Any:
    """One boto3 call; an API error becomes ActionFailed with its code and message, a transport one TargetError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as e:
        err = e.response.get("Error", {})
        raise ActionFailed(f"{what}: {err.get('Code', 'error')}: {err.get('Message', '')}".strip()) from None
    except BotoCoreError as e:
        raise TargetError(f"{what}: {e}", hint="check aws.region / aws.endpoint_url and the AWS credentials") from None


class AsgCapacity(Action):
    kind = "aws.asg_capacity"
    family = "aws"
    Inputs = AsgCapacityInputs
    effect_signal = "latency_p95_ms"
    risk = "medium"  # more instances cost money and take minutes to serve; fewer may overload the rest

    inputs: AsgCapacityInputs

    @property
    def id(self) -> str:
        return asg_capacity_action_id(self.inputs.group)

    @property
    def title(self) -> str:
        i = self.inputs
        bounds = "".join(f", {k} {v}" for k, v in (("min", i.min_size), ("max", i.max_size)) if v is not None)
        return f"Set Auto Scaling group {i.group} to {i.desired} instances{bounds}"

    @property
    def target(self) -> str:
        return f"EC2 Auto Scaling group {self.inputs.group}"

    def _wanted(self, prior: dict[str, Any]) -> dict[str, int]:
        i = self.inputs
        lo = i.min_size if i.min_size is not None else min(prior["min_size"], i.desired)
        hi = i.max_size if i.max_size is not None else max(prior["max_size"], i.desired)
        return {"min_size": lo, "max_size": hi, "desired": i.desired}

    @staticmethod
    def _command(group: str, v: dict[str, Any]) -> str:
        return (f"aws autoscaling update-auto-scaling-group --auto-scaling-group-name {group} "
                f"--min-size {v['min_size']} --max-size {v['max_size']} --desired-capacity {v['desired']}")

    def plan(self) -> Plan:
        i = self.inputs
        shown = {"min_size": i.min_size if i.min_size is not None else "<min(prior min, desired)>",
                 "max_size": i.max_size if i.max_size is not None else "<max(prior max, desired)>",
                 "desired": i.desired}
        return Plan(self.id, self.kind, self.title, self.target, commands=[self._command(i.group, shown)],
                    captures=[f"aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names {i.group}"
                              "  # MinSize, MaxSize, DesiredCapacity"],
                    rollback_commands=[self._command(i.group, {"min_size": "<prior>", "max_size": "<prior>",
                                                               "desired": "<prior>"})],
                    reversible=True, risk=self.risk)

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        return [self._command(self.inputs.group, prior)]

    def capture(self, targets) -> dict[str, Any]:
        client = targets.autoscaling()
        out = aws_call("DescribeAutoScalingGroups", client.describe_auto_scaling_groups,
                    AutoScalingGroupNames=[self.inputs.group])
        groups = out.get("AutoScalingGroups", [])
        if not groups:
            raise ActionFailed(f"Auto Scaling group {self.inputs.group!r} does not exist in "
                               f"{targets.endpoint('aws')}")
        g = groups[0]
        return {"min_size": int(g["MinSize"]), "max_size": int(g["MaxSize"]), "desired": int(g["DesiredCapacity"])}

    def _set(self, targets, v: dict[str, int]) -> None:
        aws_call("UpdateAutoScalingGroup", targets.autoscaling().update_auto_scaling_group,
              AutoScalingGroupName=self.inputs.group, MinSize=v["min_size"], MaxSize=v["max_size"],
              DesiredCapacity=v["desired"])

    def is_applied(self, state: dict[str, Any]) -> bool:
        return state == self._wanted(state)

    def apply(self, targets) -> ApplyResult:
        prior = self.capture(targets)
        wanted = self._wanted(prior)
        if prior == wanted:
            return ApplyResult(False, "already applied")
        self._set(targets, wanted)
        return ApplyResult(True, f"{self.inputs.group}: desired {prior['desired']} -> {wanted['desired']} "
                                 f"(min {wanted['min_size']}, max {wanted['max_size']})",
                           [self._command(self.inputs.group, wanted)])

    def verify(self, targets) -> VerifyResult:
        state = self.capture(targets)
        if state["desired"] == self.inputs.desired and self.is_applied(state):
            return VerifyResult(True, f"{self.inputs.group} asks for {state['desired']} instances", state)
        return VerifyResult(False, f"{self.inputs.group} is at {state}, not desired {self.inputs.desired}", state)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        if self.capture(targets) == prior:
            return RollbackResult(False, "nothing to undo: the prior capacity is in place")
        self._set(targets, prior)
        return RollbackResult(True, f"restored {prior}", [self._command(self.inputs.group, prior)])
