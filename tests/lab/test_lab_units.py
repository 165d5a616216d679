"""Unit tests of the lab's pieces that need no server: knobs, config file, load bounds, CLI wiring."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from runbook_lib.lab import config as labcfg
from runbook_lib.lab.lab_errors import LabConfigError, LabError, LoadTargetError
from runbook_lib.lab.load import LoadSpec, RequestMix, Zipf, check_loopback
from runbook_lib.lab.seed import SeedSize


def test_presets_are_valid_and_differ_in_every_root_cause():
    healthy, degraded = labcfg.HEALTHY, labcfg.DEGRADED
    assert healthy.problems() == [] and degraded.problems() == []
    assert degraded.cache_ttl_s < healthy.cache_ttl_s
    assert (degraded.cache_key_scheme, healthy.cache_key_scheme) == ("volatile", "normalized")
    assert (degraded.orders_query, healthy.orders_query) == ("n_plus_one", "join")
    assert degraded.db_pool_max < healthy.db_pool_max
    assert degraded.db_pool_timeout_s < healthy.db_pool_timeout_s


def test_config_roundtrip_and_patch(tmp_path):
    path = tmp_path / "config.json"
    labcfg.write_config(path, labcfg.DEGRADED)
    assert labcfg.read_config(path) == labcfg.DEGRADED
    new = labcfg.patch_config(path, cache_ttl_s="300", orders_query="join")
    assert new.cache_ttl_s == 300.0 and new.orders_query == "join"
    assert new.db_pool_max == labcfg.DEGRADED.db_pool_max  # untouched knobs stay
    assert labcfg.read_config(path) == new


@pytest.mark.parametrize("changes, words", [
    ({"cache_key_scheme": "random"}, "cache_key_scheme"),
    ({"replicas": "0"}, "replicas"),
    ({"db_pool_max": "many"}, "db_pool_max"),
    ({"colour": "blue"}, "unknown"),
])
def test_bad_patch_is_refused_with_the_key(tmp_path, changes, words):
    path = tmp_path / "config.json"
    labcfg.write_config(path, labcfg.HEALTHY)
    with pytest.raises(LabConfigError, match=words) as exc:
        labcfg.patch_config(path, **changes)
    assert exc.value.hint
    assert labcfg.read_config(path) == labcfg.HEALTHY  # nothing written


def test_watcher_sees_a_change_and_keeps_the_last_good_config(tmp_path):
    path = tmp_path / "config.json"
    labcfg.write_config(path, labcfg.DEGRADED)
    w = labcfg.ConfigWatcher(path)
    assert not w.poll()
    labcfg.patch_config(path, cache_ttl_s=60)
    os.utime(path, ns=(1, 1))  # a distinct mtime even on coarse-grained file systems
    assert w.poll() and w.config.cache_ttl_s == 60
    path.write_text("{not json")
    os.utime(path, ns=(2, 2))
    assert not w.poll()
    assert w.config.cache_ttl_s == 60 and "not valid JSON" in w.last_error


def test_parse_assignments():
    assert labcfg.parse_assignments(["a=1", "b = x"]) == {"a": "1", "b": "x"}
    with pytest.raises(LabConfigError):
        labcfg.parse_assignments(["novalue"])


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9", "http://127.3.4.5"])
def test_load_accepts_loopback(url):
    assert check_loopback(url) == url


@pytest.mark.parametrize("url", ["http://10.0.0.1:8080", "http://example.com", "http://0.0.0.0:80", "nonsense"])
def test_load_refuses_anything_else(url):
    with pytest.raises(LoadTargetError):
        check_loopback(url)


@pytest.mark.parametrize("field, value", [("duration_s", 0), ("duration_s", 10_000), ("max_requests", 0),
                                          ("max_requests", 10**7), ("rate", 0), ("concurrency", 1000)])
def test_load_is_bounded(field, value):
    with pytest.raises(LabError, match=field):
        LoadSpec(**{field: value}).validate()


def test_request_mix_is_reproducible_and_skewed():
    spec = LoadSpec(users=1000, seed=7)
    mix_a, mix_b = RequestMix(spec), RequestMix(spec)
    a = [mix_a() for _ in range(2000)]
    assert a == [mix_b() for _ in range(2000)]
    kinds = Counter("orders" if p.endswith("/orders") else p.split("?")[0].split("/")[2] for p in a)
    assert kinds["users"] > kinds["orders"] > kinds["products"] > kinds["dashboard"] > 0
    import random

    z = Zipf(1000, 1.1, random.Random(1))
    ranks = Counter(z() for _ in range(20_000))
    assert ranks[1] > ranks[2] > ranks[10] and max(ranks) <= 1000
    assert ranks[1] / 20_000 > 0.1  # the head is popular: a cache can help


def test_seed_size_scales_and_is_bounded():
    assert SeedSize.at_scale(1.0) == SeedSize(100_000, 1_000_000, 50_000)
    assert SeedSize.at_scale(0.01).users == 1000
    with pytest.raises(LabError):
        SeedSize.at_scale(0)


def test_state_dir_default_and_override(monkeypatch, tmp_path):
    from runbook_lib.lab.stack import state_dir

    monkeypatch.delenv("RUNBOOK_LAB_DIR", raising=False)
    assert state_dir().as_posix() == "/tmp/runbook-lab"  # what parameters/lab.yaml names
    monkeypatch.setenv("RUNBOOK_LAB_DIR", str(tmp_path))
    assert state_dir() == tmp_path.resolve()


def test_cli_registers_lab_commands(capsys):
    from runbook_lib.cli.commands import build_parser

    parser = build_parser()
    args = parser.parse_args(["lab", "load", "--duration", "5", "--rate", "3"])
    assert args.duration == 5 and args.rate == 3 and callable(args.func)
    for cmd in ("up", "status", "down", "config", "profile healthy"):
        assert callable(parser.parse_args(["lab", *cmd.split()]).func)


def test_status_and_down_of_an_empty_state_folder(tmp_path, capsys):
    from runbook_lib.cli.commands import main

    assert main(["lab", "status", "--state", str(tmp_path)]) == 1
    assert "down" in capsys.readouterr().out
    assert main(["lab", "down", "--state", str(tmp_path)]) == 0
    assert "nothing was running" in capsys.readouterr().out
    assert main(["lab", "load", "--state", str(tmp_path), "--duration", "1"]) == 2
    assert "runbook lab up" in capsys.readouterr().err


def test_patch_logs_an_event_for_the_recorder(tmp_path):
    import json

    path = tmp_path / "config.json"
    labcfg.write_config(path, labcfg.DEGRADED)
    labcfg.patch_config(path, orders_query="join")
    (ev,) = [json.loads(line) for line in (tmp_path / labcfg.EVENTS_FILE).read_text().splitlines()]
    assert ev["kind"] == "remediation" and "orders_query=join" in ev["label"]


@pytest.mark.parametrize("item", ["400:degraded", "x:healthy", "10:broken", "10", "-1:healthy"])
def test_profile_switch_must_be_inside_the_load(item):
    from runbook_lib.lab.cli import _parse_switch

    assert _parse_switch("120:degraded", 300) == (120.0, "degraded")
    with pytest.raises(LabError, match="SECONDS:PROFILE"):
        _parse_switch(item, 300)


def _write_events(folder, *events):
    import json

    (folder / labcfg.EVENTS_FILE).write_text("".join(json.dumps(e) + "\n" for e in events))


def test_lab_mode_window_starts_at_the_last_incident_scenario(tmp_path, monkeypatch):
    import pandas as pd

    from runbook_lib.lab.scenario import SCENARIO_EVENT, scenario_start
    from runbook_lib.settings import load_settings, project_root
    from runbook_lib.sources import open_source

    assert scenario_start(tmp_path) is None
    _write_events(tmp_path,
                  {"time": "2026-11-29T09:00:00+00:00", "label": SCENARIO_EVENT, "kind": "note"},
                  {"time": "2026-11-29T09:02:30+00:00", "label": "degraded profile", "kind": "deploy"},
                  {"time": "2026-11-29T10:00:00+00:00", "label": SCENARIO_EVENT, "kind": "note"},
                  {"time": "2026-11-29T10:02:30+00:00", "label": "degraded profile", "kind": "deploy"})
    assert scenario_start(tmp_path).isoformat() == "2026-11-29T10:00:00+00:00"
    monkeypatch.setenv("RUNBOOK_LAB_DIR", str(tmp_path))
    src = open_source(load_settings(project_root() / "parameters" / "lab.yaml"))
    start, end = src.default_range()
    assert start == pd.Timestamp("2026-11-29T10:00:00Z") and end > start
    assert [e.kind for e in src.events()] == ["note", "deploy", "note", "deploy"]


def test_a_bad_events_line_is_named(tmp_path):
    from runbook_lib.errors import SourceError
    from runbook_lib.sources.events import read_events_file

    f = tmp_path / "events.jsonl"
    assert read_events_file(f) == []
    f.write_text('{"time": "2026-11-29T10:00:00Z", "label": "deploy v2", "kind": "deploy"}\n\nnot json\n')
    with pytest.raises(SourceError, match="line 3: not an event"):
        read_events_file(f)
    f.write_text('{"time": "2026-11-29T10:00:00Z", "label": "x", "kind": "party"}\n')
    with pytest.raises(SourceError, match="line 1: .*'party'"):
        read_events_file(f)
