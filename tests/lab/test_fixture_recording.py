"""record-fixture's pure parts: what the bundle's copy of the recording run writes instead of this machine's
folders and the private lab's ports. (The recording itself takes 30 minutes: README, "Adding an incident bundle".)"""

import json
from pathlib import Path

from runbook_lib.lab.fixture_recording import placeholders
from runbook_lib.suite.recorder import keep_recorded_run

LAB = {"dsn": "postgresql://postgres@127.0.0.1:60597/lab", "redis_url": "redis://127.0.0.1:58059/0",
       "backend_url": "http://127.0.0.1:45691", "prometheus_url": "http://127.0.0.1:37851"}


def test_the_private_labs_folders_and_ports_become_placeholders(tmp_path):
    state, run = tmp_path / "work" / "lab", tmp_path / "work" / "run"
    run.mkdir(parents=True)
    line = {"ts": "2026-12-08T03:05:00+00:00", "step": "assessed", "action_id": "a",
            "measured": "Redis keyspace hit ratio (redis://127.0.0.1:58059/0)",
            "commands": [f"patch {state}/config.json", "psql 'host=127.0.0.1 port=60597 dbname=lab'",
                         "GET http://127.0.0.1:45691/api/users", f"notebook {run}/04_remediation.ipynb"]}
    (run / "audit.jsonl").write_text(json.dumps(line) + "\n")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    keep_recorded_run(bundle, run, placeholders(state, run, LAB))
    kept = json.loads((bundle / "recorded_run" / "audit.json").read_text())[0]
    assert kept["measured"] == "Redis keyspace hit ratio (redis://<lab redis>/0)"
    assert kept["commands"] == ["patch ${RUNBOOK_LAB_DIR}/config.json",
                                "psql 'host=127.0.0.1 port=<lab postgres port> dbname=lab'",
                                "GET http://<lab backend>/api/users", "notebook <run folder>/04_remediation.ipynb"]
    assert str(tmp_path) not in (bundle / "recorded_run" / "audit.json").read_text()
    assert placeholders(Path("/s"), Path("/r"), {}) == {"/r": "<run folder>", "/s": "${RUNBOOK_LAB_DIR}"}
