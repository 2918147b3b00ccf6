"""environment.yml (conda) and pyproject.toml (pip) name the same packages with the same version ranges."""
import re
import tomllib

import yaml

from .conftest import REPO

CONDA_TO_PIP = {"pytorch": "torch"}


def _split(spec: str) -> tuple[str, str]:
    name = re.split(r"[<>=!~ ]", spec, maxsplit=1)[0]
    return CONDA_TO_PIP.get(name, name), spec[len(name):].replace(" ", "")


def test_environment_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [spec for d in env["dependencies"] if isinstance(d, dict) for spec in d["pip"]]
    env_specs = dict(_split(spec) for spec in conda + pip)
    assert env_specs.pop("python") == project["requires-python"]
    assert env_specs.pop("pip") == ""
    assert env_specs == dict(_split(spec) for spec in project["dependencies"])


def test_console_script_points_at_the_cli():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"equiv-tools": "equiv_tools.cli:entry"}
