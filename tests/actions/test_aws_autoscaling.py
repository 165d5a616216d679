"""AsgCapacity against a real moto server (``moto_server`` on loopback): plan, dry run, apply, verify,
audit, rollback exact, and an API error mid-apply that leaves the prior capacity and says so."""

from __future__ import annotations

import boto3
import pytest

from runbook_lib.actions import ActionFailed, ActionInputError, AsgCapacity, execute, rollback_run
from runbook_lib.settings import Aws
from tests.support.actions_support import make_settings, steps
from tests.support.moto_support import start_moto, stop_moto

GROUP = "api-asg"
REGION = "us-east-1"


@pytest.fixture
def moto_asg(tmp_path, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    proc, url = start_moto(tmp_path)
    try:
        c = boto3.client("autoscaling", region_name=REGION, endpoint_url=url)
        c.create_launch_configuration(LaunchConfigurationName="api-lc", ImageId="ami-12c6146b",
                                      InstanceType="t3.micro")
        c.create_auto_scaling_group(AutoScalingGroupName=GROUP, LaunchConfigurationName="api-lc", MinSize=2,
                                    MaxSize=4, DesiredCapacity=2, AvailabilityZones=[f"{REGION}a"])
        yield url, c
    finally:
        stop_moto(proc)


def _state(c) -> tuple[int, int, int]:
    g = c.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    return g["MinSize"], g["MaxSize"], g["DesiredCapacity"]


def _settings(url: str, apply: bool = True):
    return make_settings(apply=apply).model_copy(update={"aws": Aws(region=REGION, endpoint_url=url)})


def test_capacity_is_planned_applied_verified_and_rolled_back_exactly(moto_asg, tmp_path):
    url, c = moto_asg
    action = AsgCapacity(group=GROUP, desired=6)
    assert action.id == "aws-asg-capacity-api-asg"
    assert "update-auto-scaling-group --auto-scaling-group-name api-asg" in action.plan().commands[0]
    (tmp_path / "dry").mkdir()
    (tmp_path / "run").mkdir()
    [dry] = execute([action], _settings(url, apply=False), tmp_path / "dry")
    assert dry.status == "planned" and _state(c) == (2, 4, 2)
    [o] = execute([action], _settings(url), tmp_path / "run")
    assert o.status == "applied" and o.verified and _state(c) == (2, 6, 6)  # max raised to hold desired
    assert not AsgCapacity(group=GROUP, desired=6).apply(_Targets(url)).changed  # idempotent
    [u] = rollback_run(tmp_path / "run", apply=True, settings=_settings(url))
    assert u.status == "rolled back" and _state(c) == (2, 4, 2)
    assert steps(tmp_path / "run") == ["planned", "approved", "applying", "applied", "verified", "rolling_back",
                                       "rolled_back"]


def _Targets(url):
    from runbook_lib.actions.targets import Targets

    return Targets(_settings(url))


def test_an_api_error_mid_apply_leaves_the_prior_capacity_and_the_audit_says_so(moto_asg, tmp_path, monkeypatch):
    url, c = moto_asg
    from runbook_lib.actions.targets import Targets

    real = Targets.autoscaling

    def failing(self):  # the real client, whose update call AWS refuses (a throttle, a quota) mid-apply
        client = real(self)

        def refuse(**kwargs):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "ScalingActivityInProgress", "Message": "busy"}},
                              "UpdateAutoScalingGroup")

        client.update_auto_scaling_group = refuse
        return client

    monkeypatch.setattr(Targets, "autoscaling", failing)
    with pytest.raises(ActionFailed, match="ScalingActivityInProgress"):
        execute([AsgCapacity(group=GROUP, desired=3)], _settings(url), tmp_path)
    assert _state(c) == (2, 4, 2)
    assert steps(tmp_path)[-2:] == ["applying", "failed"]


@pytest.mark.parametrize("inputs,message", [
    ({"group": GROUP, "desired": 500}, "less than or equal to 200"),
    ({"group": GROUP, "desired": 5, "max_size": 4}, "must lie within"),
    ({"group": "", "desired": 1}, "at least 1 character"),
])
def test_bad_capacity_inputs_are_refused_before_any_call(inputs, message):
    with pytest.raises(ActionInputError, match=message):
        AsgCapacity(inputs)


def test_a_missing_group_is_named(moto_asg, tmp_path):
    url, _ = moto_asg
    with pytest.raises(ActionFailed, match="'nope' does not exist"):
        execute([AsgCapacity(group="nope", desired=1)], _settings(url), tmp_path)
