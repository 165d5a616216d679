"""environment.yml describes the same environment as pyproject.toml (no conda here: parse and compare)."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names that differ from the PyPI name
CONDA_TO_PYPI = {"redis-py": "redis", "python-kubernetes": "kubernetes", "python-kaleido": "kaleido"}
CONDA_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?P<spec>(?:[<>=!~]=?[0-9][0-9A-Za-z.*]*,?)*)$")


def pyproject_requirements() -> dict[str, SpecifierSet]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = data["project"]["dependencies"] + data["project"]["optional-dependencies"]["dev"]
    return {canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in reqs}


def environment_requirements() -> dict[str, SpecifierSet]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    out: dict[str, SpecifierSet] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                req = Requirement(pip_dep)  # raises on a malformed spec
                out[canonicalize_name(req.name)] = req.specifier
            continue
        m = CONDA_SPEC.match(dep.replace(" ", ""))
        assert m, f"malformed conda spec {dep!r}"
        name = m.group("name")
        if name in ("python", "pip"):
            continue
        out[canonicalize_name(CONDA_TO_PYPI.get(name, name))] = SpecifierSet(m.group("spec"))
    return out


def test_environment_yml_names_the_same_packages_with_the_same_ranges():
    py, env = pyproject_requirements(), environment_requirements()
    assert sorted(env) == sorted(py)
    for name, spec in py.items():
        assert env[name] == spec, f"{name}: pyproject {spec} vs environment.yml {env[name]}"


def test_environment_yml_pins_python_311():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_a_malformed_spec_is_caught():
    assert CONDA_SPEC.match("pandas>=3.1,<3.2")
    assert not CONDA_SPEC.match("pandas >= = 3")
