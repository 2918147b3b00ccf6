"""Packaging: environment.yml and pyproject.toml agree, and the shipped runs are found by name, installed or not."""
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from equiv_tools import InputError, load_run
from equiv_tools.models import resolve_run_dir
from equiv_tools.paths import DATA_ENV, shipped_data_dir
from equiv_tools.reproduce import model_catalog

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


def test_the_wheel_ships_every_file_of_data():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"equiv_tools._data": "data"}
    globbed = {p for pattern in setuptools["package-data"]["equiv_tools._data"] for p in (REPO / "data").glob(pattern)}
    assert globbed == {p for p in (REPO / "data").rglob("*") if p.is_file()}


def test_shipped_runs_load_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert shipped_data_dir() == REPO / "data"  # a checkout or an editable install
    assert load_run("add3_nano").path == REPO / "data" / "add3_nano"
    with pytest.raises(InputError, match=r"'nope' does not exist, .* \(those are: add3_nano, mul2_nano\)"):
        resolve_run_dir("nope")
    (tmp_path / "add3_nano").mkdir()  # a folder of that name here comes first
    assert resolve_run_dir("add3_nano") == Path("add3_nano")


def test_the_data_dir_environment_variable(tmp_path, monkeypatch):
    (tmp_path / "mine").symlink_to(REPO / "data" / "add3_nano")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert shipped_data_dir() == tmp_path
    assert resolve_run_dir("mine") == tmp_path / "mine"
    assert [label for label in model_catalog() if label.startswith("kit/")] == ["kit/mine"]
    with pytest.raises(InputError, match="those are: mine"):
        resolve_run_dir("add3_nano")
