"""Packaging: environment.yml and pyproject.toml agree, shipped runs load by name, the exported names, how a Run shows."""
import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import equiv_tools
from equiv_tools import InputError, Run, load_run
from equiv_tools.core.rundir import RunDir
from equiv_tools.core.paths import DATA_ENV, shipped_data_dir
from equiv_tools.analysis.reproduce import model_catalog

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
    with pytest.raises(InputError, match=r"'nope' does not exist, .* \(those are: add3_nano, grok113, grok113_fast, mod100_digits, mod101_digits, mul2_nano\)"):
        RunDir.resolve("nope")
    (tmp_path / "add3_nano").mkdir()  # a folder of that name here comes first
    assert RunDir.resolve("add3_nano").path == Path("add3_nano")


def test_the_data_dir_environment_variable(tmp_path, monkeypatch):
    (tmp_path / "mine").symlink_to(REPO / "data" / "add3_nano")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert shipped_data_dir() == tmp_path
    assert RunDir.resolve("mine").path == tmp_path / "mine"
    assert [label for label in model_catalog() if label.startswith("kit/")] == ["kit/mine"]
    with pytest.raises(InputError, match="those are: mine"):
        RunDir.resolve("add3_nano")


def test_every_exported_name_resolves_and_is_listed():
    listed = dir(equiv_tools)
    for name in equiv_tools.__all__:
        assert getattr(equiv_tools, name) is not None and name in listed


def test_a_run_shows_as_one_line(add3_nano):
    assert repr(add3_nano) == (
        f"Run(add3_nano: AdditionTask(train_digits=3, width=5), preset nano, 86,592 parameters, {REPO / 'data' / 'add3_nano'})"
    )
    imported = Run(Path("model_s2.pt"), replace(add3_nano.config, provenance={"format": "minGPT"}), add3_nano.model)
    assert repr(imported).startswith("Run(model_s2.pt: AdditionTask(train_digits=3, width=5), preset imported, 86,592 parameters")
