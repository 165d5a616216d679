"""AppAutoScalingTarget against a real moto server (``moto_server`` on loopback): plan, dry run, apply,
verify, audit, idempotence, rollback exact (to absent and to a prior target and policy), for an ECS service
and an Aurora cluster's read replicas, and an API error mid-apply that puts the scalable target back and
says so.

One moto server for the module, reset (``POST /moto-api/reset``) before each test; state is always read
through the test's own boto3 client, never through the code under test."""

from __future__ import annotations

import contextlib
import re
import urllib.request

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from runbook_lib.actions import EXECUTORS, ActionFailed, ActionInputError, execute, rollback_run
from runbook_lib.actions.aws_app_autoscaling import AppAutoScalingTarget, PolicyNotApplied
from runbook_lib.actions.targets import Targets
from runbook_lib.settings import Aws
from tests.support.actions_support import audit_lines, make_settings, steps
from tests.support.moto_support import start_moto, stop_moto

REGION = "us-east-1"
ECS = {"service_namespace": "ecs", "resource_id": "service/prod/api",
       "scalable_dimension": "ecs:service:DesiredCount"}
RDS = {"service_namespace": "rds", "resource_id": "cluster:orders-db",
       "scalable_dimension": "rds:cluster:ReadReplicaCount"}
ECS_INPUTS = {**ECS, "min_capacity": 2, "max_capacity": 10, "target_value": 50,
              "predefined_metric": "ECSServiceAverageCPUUtilization", "scale_out_cooldown_s": 60}
RDS_INPUTS = {**RDS, "min_capacity": 1, "max_capacity": 4, "target_value": 60,
              "predefined_metric": "RDSReaderAverageCPUUtilization"}
# What a pre-existing setup looks like (another team's bounds and policy of the same name).
PRIOR_CONFIG = {"TargetValue": 70.0, "PredefinedMetricSpecification":
                {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                "ScaleOutCooldown": 120, "ScaleInCooldown": 600, "DisableScaleIn": True}
WANTED_CONFIG = {"TargetValue": 50.0, "PredefinedMetricSpecification":
                 {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                 "ScaleOutCooldown": 60, "ScaleInCooldown": 300, "DisableScaleIn": False}
RESET_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": REGION}.items():
            mp.setenv(k, v)
        proc, url = start_moto(tmp_path_factory.mktemp("moto"))
        try:
            yield url
        finally:
            stop_moto(proc)


@pytest.fixture
def aas(moto_url):
    """A reset moto with an ECS cluster ``prod`` running service ``api``; the test's own client."""
    req = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(req, timeout=RESET_TIMEOUT_S) as r:
        assert r.status == 200
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=moto_url)
    ecs.create_cluster(clusterName="prod")
    ecs.register_task_definition(family="api",
                                 containerDefinitions=[{"name": "api", "image": "nginx", "memory": 128}])
    ecs.create_service(cluster="prod", serviceName="api", taskDefinition="api", desiredCount=2)
    return moto_url, boto3.client("application-autoscaling", region_name=REGION, endpoint_url=moto_url)


def test_the_kind_is_registered():  # rollback rebuilds actions from the audit through the registry
    assert EXECUTORS[AppAutoScalingTarget.kind] is AppAutoScalingTarget


def _settings(url: str, apply: bool = True):
    return make_settings(apply=apply).model_copy(update={"aws": Aws(region=REGION, endpoint_url=url)})


def _state(c, keys: dict, policy_name: str) -> tuple:
    """(min, max) of the scalable target or None, and the named policy's configuration or None."""
    ns, rid, dim = keys["service_namespace"], keys["resource_id"], keys["scalable_dimension"]
    ts = c.describe_scalable_targets(ServiceNamespace=ns, ResourceIds=[rid],
                                     ScalableDimension=dim)["ScalableTargets"]
    ps = [p for p in c.describe_scaling_policies(ServiceNamespace=ns, ResourceId=rid)["ScalingPolicies"]
          if p["PolicyName"] == policy_name and p["ResourceId"] == rid]
    target = (ts[0]["MinCapacity"], ts[0]["MaxCapacity"]) if ts else None
    return target, (ps[0]["TargetTrackingScalingPolicyConfiguration"] if ps else None)


def _precreate(c, keys: dict, policy_name: str, bounds=(1, 3)) -> None:
    ns, rid, dim = keys["service_namespace"], keys["resource_id"], keys["scalable_dimension"]
    c.register_scalable_target(ServiceNamespace=ns, ResourceId=rid, ScalableDimension=dim,
                               MinCapacity=bounds[0], MaxCapacity=bounds[1])
    c.put_scaling_policy(PolicyName=policy_name, ServiceNamespace=ns, ResourceId=rid, ScalableDimension=dim,
                         PolicyType="TargetTrackingScaling",
                         TargetTrackingScalingPolicyConfiguration=PRIOR_CONFIG)


def _step(run_dir, step: str) -> dict:
    return [r for r in audit_lines(run_dir) if r["step"] == step][-1]


def test_plan_names_the_exact_commands_and_the_id():
    a = AppAutoScalingTarget(ECS_INPUTS)
    assert a.id == "aws-app-autoscaling-service_prod_api-ecs_service_desiredcount"
    assert a.inputs.policy_name == "runbook-ECSServiceAverageCPUUtilization"
    keys = ("--service-namespace ecs --resource-id service/prod/api "
            "--scalable-dimension ecs:service:DesiredCount")
    p = a.plan()
    assert p.commands == [
        f"aws application-autoscaling register-scalable-target {keys} --min-capacity 2 --max-capacity 10",
        f"aws application-autoscaling put-scaling-policy {keys} "
        "--policy-name runbook-ECSServiceAverageCPUUtilization --policy-type TargetTrackingScaling "
        "--target-tracking-scaling-policy-configuration "
        "'{\"TargetValue\":50.0,\"PredefinedMetricSpecification\":{\"PredefinedMetricType\":"
        "\"ECSServiceAverageCPUUtilization\"},\"ScaleOutCooldown\":60,\"ScaleInCooldown\":300,"
        "\"DisableScaleIn\":false}'"]
    assert p.rollback_commands[0].startswith(f"aws application-autoscaling delete-scaling-policy {keys}")
    assert p.rollback_commands[1].startswith(f"aws application-autoscaling deregister-scalable-target {keys}")
    assert a.rollback_commands({"target": {"min_capacity": 1, "max_capacity": 3}, "policy": None}) == [
        f"aws application-autoscaling register-scalable-target {keys} --min-capacity 1 --max-capacity 3",
        f"aws application-autoscaling delete-scaling-policy {keys} "
        "--policy-name runbook-ECSServiceAverageCPUUtilization"]


def test_a_dry_run_calls_nothing(aas, tmp_path):
    url, c = aas
    [o] = execute([AppAutoScalingTarget(ECS_INPUTS)], _settings(url, apply=False), tmp_path)
    assert o.status == "planned"
    assert c.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"] == []
    assert c.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"] == []
    assert steps(tmp_path) == ["planned"]


def test_ecs_target_and_policy_are_applied_verified_idempotent_and_rolled_back_to_absent(aas, tmp_path):
    url, c = aas
    action = AppAutoScalingTarget(ECS_INPUTS)
    name = action.inputs.policy_name
    [o] = execute([action], _settings(url), tmp_path)
    assert o.status == "applied" and o.changed and o.verified
    assert _state(c, ECS, name) == ((2, 10), WANTED_CONFIG)
    assert _step(tmp_path, "applying")["prior"] == {"target": None, "policy": None}
    assert _step(tmp_path, "applied")["commands"] == action.plan().commands
    assert _step(tmp_path, "verified")["ok"] is True

    again = AppAutoScalingTarget(ECS_INPUTS).apply(Targets(_settings(url)))
    assert not again.changed and again.message == "already applied"

    [u] = rollback_run(tmp_path, apply=True, settings=_settings(url))
    assert u.status == "rolled back" and _state(c, ECS, name) == (None, None)
    assert [cmd.split()[2] for cmd in u.commands] == ["delete-scaling-policy", "deregister-scalable-target"]
    assert steps(tmp_path) == ["planned", "approved", "applying", "applied", "verified", "rolling_back",
                               "rolled_back"]
    assert _step(tmp_path, "rolled_back")["restored"] is True


def test_rollback_restores_a_prior_different_target_and_policy_exactly(aas, tmp_path):
    url, c = aas
    action = AppAutoScalingTarget(ECS_INPUTS)
    _precreate(c, ECS, action.inputs.policy_name)
    [o] = execute([action], _settings(url), tmp_path)
    assert o.status == "applied" and _state(c, ECS, action.inputs.policy_name) == ((2, 10), WANTED_CONFIG)
    prior = _step(tmp_path, "applying")["prior"]
    assert prior == {"target": {"min_capacity": 1, "max_capacity": 3},
                     "policy": {"policy_type": "TargetTrackingScaling", "configuration": PRIOR_CONFIG}}
    [u] = rollback_run(tmp_path, apply=True, settings=_settings(url))
    assert u.status == "rolled back" and _state(c, ECS, action.inputs.policy_name) == ((1, 3), PRIOR_CONFIG)
    assert [cmd.split()[2] for cmd in u.commands] == ["register-scalable-target", "put-scaling-policy"]


def test_aurora_read_replicas_are_scaled_and_rolled_back(aas, tmp_path):
    url, c = aas  # moto does not check that the Aurora cluster exists (it does for an ECS service)
    action = AppAutoScalingTarget(RDS_INPUTS)
    assert action.id == "aws-app-autoscaling-cluster_orders-db-rds_cluster_readreplicacount"
    [o] = execute([action], _settings(url), tmp_path)
    target, config = _state(c, RDS, action.inputs.policy_name)
    assert o.verified and target == (1, 4)
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == "RDSReaderAverageCPUUtilization"
    [u] = rollback_run(tmp_path, apply=True, settings=_settings(url))
    assert u.status == "rolled back" and _state(c, RDS, action.inputs.policy_name) == (None, None)


@contextlib.contextmanager
def _refusing(*operations: str):
    """The real client, whose ``operations`` AWS refuses (PutScalingPolicy: mid-apply, after
    RegisterScalableTarget went through): a botocore before-call hook answers each with an API error, which
    goes through botocore's own error path; every other call reaches moto."""
    real = Targets.aws_client

    def refuse(**_):
        error = {"Error": {"Code": "ConcurrentUpdateException", "Message": "concurrent update in progress"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse("http://127.0.0.1/refused", 400, {}, None), error

    def failing(self, service):
        client = real(self, service)
        for op in operations:
            event = f"before-call.{client.meta.service_model.service_id.hyphenize()}.{op}"
            client.meta.events.register(event, refuse, unique_id=f"test-refuse-{op}")
        return client

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Targets, "aws_client", failing)
        yield


@pytest.mark.parametrize("existed", [False, True], ids=["target-absent-before", "target-registered-before"])
def test_an_api_error_mid_apply_puts_the_target_back_and_the_audit_says_so(aas, tmp_path, existed):
    url, c = aas
    action = AppAutoScalingTarget(ECS_INPUTS)
    if existed:
        _precreate(c, ECS, action.inputs.policy_name)
    before = _state(c, ECS, action.inputs.policy_name)
    undone = "put back to min 1, max 3" if existed else "deregistered (it did not exist before)"
    expected = f"ConcurrentUpdateException.*{re.escape(undone)}"
    with _refusing("PutScalingPolicy"), pytest.raises(PolicyNotApplied, match=expected):
        execute([action], _settings(url), tmp_path)
    assert _state(c, ECS, action.inputs.policy_name) == before
    assert steps(tmp_path)[-2:] == ["applying", "failed"]
    failed = _step(tmp_path, "failed")
    assert failed["phase"] == "apply" and re.search(expected, failed["error"])

    # the failed apply counts as "maybe applied": its rollback finds the prior state in place
    [u] = rollback_run(tmp_path, apply=True, settings=_settings(url))
    assert u.status == "nothing to undo" and _state(c, ECS, action.inputs.policy_name) == before


def test_when_putting_the_target_back_fails_too_the_error_says_where_it_was_left(aas, tmp_path):
    url, c = aas
    action = AppAutoScalingTarget(ECS_INPUTS)
    with _refusing("PutScalingPolicy", "DeregisterScalableTarget"), pytest.raises(ActionFailed) as err:
        execute([action], _settings(url), tmp_path)
    assert not isinstance(err.value, PolicyNotApplied)
    assert "putting the scalable target back (not registered) also failed" in str(err.value)
    assert "runbook rollback" in str(err.value)
    assert _state(c, ECS, action.inputs.policy_name) == ((2, 10), None)  # left half-done, and said so
    assert "also failed" in _step(tmp_path, "failed")["error"]
    [u] = rollback_run(tmp_path, apply=True, settings=_settings(url))
    assert u.status == "rolled back" and _state(c, ECS, action.inputs.policy_name) == (None, None)


def test_a_missing_ecs_service_is_refused_by_the_api_and_nothing_is_registered(aas, tmp_path):
    url, c = aas
    inputs = {**ECS_INPUTS, "resource_id": "service/prod/nope"}
    with pytest.raises(ActionFailed, match="ECS service doesn't exist"):
        execute([AppAutoScalingTarget(inputs)], _settings(url), tmp_path)
    assert c.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"] == []


@pytest.mark.parametrize("change,message", [
    ({"min_capacity": 5, "max_capacity": 4}, "min_capacity 5 <= max_capacity 4"),
    ({"max_capacity": 500}, "<= 200"),
    ({"min_capacity": -1}, "greater than or equal to 0"),
    ({"scalable_dimension": "rds:cluster:ReadReplicaCount"}, "does not fit namespace 'ecs'"),
    ({"service_namespace": "dynamodb"}, "service_namespace: Input should be 'ecs' or 'rds'"),
    ({"resource_id": "service/prod/api; rm -rf /"}, "is not an ecs resource id"),
    ({"resource_id": "service/prod/api\n--min-capacity 0"}, "is not an ecs resource id"),
    ({"resource_id": "cluster:orders-db"}, "use service/<cluster>/<service>"),
    ({"policy_name": "p'$(id)"}, "is not a policy name"),
    ({"predefined_metric": "RDSReaderAverageCPUUtilization"}, "is not one of ecs's"),
    ({"target_value": 150}, "at most 100"),
    ({"target_value": 0}, "greater than 0"),
    ({"target_value": float("nan")}, "finite number"),
    ({"predefined_metric": "ALBRequestCountPerTarget"}, "resource_label is needed"),
    ({"predefined_metric": "ALBRequestCountPerTarget", "resource_label": "app/lb/$(id)"}, "must look like"),
    ({"scale_in_cooldown_s": 86400}, "less than or equal to 3600"),
    ({"surprise": 1}, "Extra inputs are not permitted"),
])
def test_bad_ecs_inputs_are_refused_before_any_call(change, message):
    with pytest.raises(ActionInputError, match=re.escape(message)):
        AppAutoScalingTarget({**ECS_INPUTS, **change})


@pytest.mark.parametrize("change,message", [
    ({"max_capacity": 16}, "<= 15"),
    ({"resource_id": "cluster:orders--db"}, "is not an rds resource id"),
    ({"resource_id": "cluster:1orders"}, "is not an rds resource id"),
    ({"resource_id": "cluster:" + "a" * 64}, "is not an rds resource id"),
    ({"scalable_dimension": "rds:cluster:Capacity"}, "does not fit namespace 'rds'"),
])
def test_bad_rds_inputs_are_refused_before_any_call(change, message):
    with pytest.raises(ActionInputError, match=message):
        AppAutoScalingTarget({**RDS_INPUTS, **change})


def test_an_alb_request_count_policy_carries_its_resource_label():
    label = "app/api-lb/0123456789abcdef/targetgroup/api-tg/fedcba9876543210"
    a = AppAutoScalingTarget({**ECS_INPUTS, "predefined_metric": "ALBRequestCountPerTarget",
                              "target_value": 1000, "resource_label": label})
    assert f'"ResourceLabel":"{label}"' in a.plan().commands[1]
