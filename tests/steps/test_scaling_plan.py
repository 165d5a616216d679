"""The capacity step end to end on the bundled incident, in dry run: 03 sizes replicas and pool from the measured
levels and writes the HPA and KEDA manifests into the run folder; with a ``kubernetes`` section the plan gets a
server-side apply of the HPA, which 04 plans (exact commands audited) and does not run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from runbook_lib.plan.autoscaler_manifests import validate_manifest
from runbook_lib.settings import project_root

ROOT = project_root()
RUNBOOK = str(Path(sys.executable).with_name("runbook"))


def test_dry_run_writes_validated_manifests_and_plans_the_hpa_apply(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "parameters" / "fixtures.yaml").read_text()
                      + "\nkubernetes:\n  namespace: shop\n  deployment: api\n")
    run = tmp_path / "run"
    r = subprocess.run([RUNBOOK, "run", "-p", str(params), "--out", str(run), "--only", "01", "02", "03", "04",
                        "--no-export"], cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    manifests = {p.name: yaml.safe_load(p.read_text()) for p in (run / "scaling").glob("*.yaml")}
    assert set(manifests) == {"hpa.yaml", "scaledobject.yaml"}
    for obj in manifests.values():
        validate_manifest(obj)
    plan = json.loads((run / "plan.json").read_text())
    sizing = plan["scaling"]
    hpa = manifests["hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (sizing["min_replicas"], sizing["max_replicas"])
    [k8s] = [a for a in plan["actions"] if a["kind"] == "kubernetes.apply"]
    assert k8s["id"] == "k8s-apply-horizontalpodautoscaler-shop-api"
    audit = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
    [planned] = [a for a in audit if a["action_id"] == k8s["id"]]
    assert planned["step"] == "planned" and any("--server-side" in c for c in planned["commands"])
    assert not any(a["step"] in ("applying", "applied") for a in audit)  # dry run: nothing ran
