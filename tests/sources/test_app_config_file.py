"""The app's knobs file: read and validated by the product (the lab's config.json is one such file)."""

import json

import pytest

from runbook_lib.errors import AppConfigError
from runbook_lib.model import AppKnobs
from runbook_lib.sources.app_config_file import knobs_from_dict, read_app_config


def test_reads_a_knobs_file(tmp_path):
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({**AppKnobs().as_dict(), "cache_ttl_s": "60"}))
    knobs = read_app_config(f)
    assert knobs.cache_ttl_s == 60.0 and knobs.replicas == 1


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"colour": "blue"}', "unknown app config key(s): colour"),
    ('{"replicas": 0}', "replicas must be in 1..8"),
    ('{"db_pool_max": "many"}', "db_pool_max='many' is not a valid int"),
])
def test_bad_files_are_named_with_what_is_wrong(tmp_path, content, words):
    f = tmp_path / "cfg.json"
    if content is not None:
        f.write_text(content)
    with pytest.raises(AppConfigError) as err:
        read_app_config(f)
    assert words in str(err.value) and err.value.hint


def test_a_patch_keeps_the_other_knobs():
    base = AppKnobs(cache_ttl_s=5.0, replicas=2)
    assert knobs_from_dict({"cache_ttl_s": 300}, base=base) == AppKnobs(cache_ttl_s=300.0, replicas=2)
