"""What a sweep is: a YAML spec of runs (a grid, a list, or both), checked whole and expanded into jobs.

A spec::

    base:                      # fields every run starts from
      task: {kind: addition, train_digits: 3}
      preset: nano
      training: {recipe: cosine}
    grid:                      # every combination of these values, merged over base
      model: [{n_layers: 1}, {n_layers: 2}]
      seed: [0, 1]
    runs:                      # and/or single runs, merged over base
      - {name: mul2, task: {kind: multiplication, train_digits: 2, width: 4}}
    evaluate: {n: 2000, seed: 0}   # pairs per split for ID/OOD accuracy and the relation search

A run's fields: ``task`` (``make_task`` fields), ``preset``, ``model`` (overrides of the preset),
``training`` (``TrainConfig`` fields, ``recipe`` included), ``seed`` and, in ``runs``, ``name``.
Dict fields merge key by key over ``base``. A grid run's name joins its grid values
(``n_layers1-seed0``). Torch-free: the CLI refuses a bad spec before any worker starts.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

from equiv_tools.core.config import PRESETS, TrainConfig, model_config
from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import Task, make_task

SPEC_FIELDS = ("base", "grid", "runs", "evaluate")
RUN_FIELDS = ("task", "preset", "model", "training", "seed")
DICT_FIELDS = ("task", "model", "training")
EVALUATE_DEFAULTS = {"n": 2000, "seed": 0}
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True)
class Job:
    """One run of a sweep, checked: everything a worker needs to train, evaluate and name it."""

    run: str
    task: dict
    preset: str
    model: dict
    training: dict
    seed: int
    evaluate_n: int
    evaluate_seed: int

    def build_task(self) -> Task:
        return make_task(**self.task)

    def train_config(self) -> TrainConfig:
        """The run's TrainConfig: its recipe's settings (if any), its training fields, and its seed."""
        fields = {k: v for k, v in self.training.items() if k != "recipe"}
        recipe = self.training.get("recipe")
        fields["seed"] = self.seed
        return TrainConfig.from_dict(fields) if recipe is None else TrainConfig.from_recipe(recipe, **fields)

    def model_config(self) -> dict:
        return model_config(self.build_task(), self.preset, seed=self.seed, **self.model)

    def to_dict(self) -> dict:
        return asdict(self)


def _yaml_loader():
    """PyYAML's safe loader, reading numbers as YAML 1.2 does: ``3e-3`` is a float (YAML 1.1 wants ``3.0e-3``)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
                                 list("-+0123456789."))  # after PyYAML's own: integers stay integers
    return Loader


def read_spec(path) -> dict:
    """Parse a YAML spec file; InputError if it is missing or not YAML."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"sweep spec {path} does not exist")
    try:
        spec = yaml.load(path.read_text(), Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        raise InputError(f"sweep spec {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    return spec


def _require_dict(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"sweep spec: {where} must be a mapping of fields, got {value!r}")
    return value


def _check_run_fields(fields: dict, where: str, allow_name: bool) -> None:
    allowed = RUN_FIELDS + (("name",) if allow_name else ())
    for key, value in fields.items():
        if key not in allowed:
            raise InputError(f"sweep spec: {where}.{key} is not a field; a run has {', '.join(allowed)}")
        if key in DICT_FIELDS:
            _require_dict(value, f"{where}.{key}")
        elif key in ("preset", "name") and not isinstance(value, str):
            raise InputError(f"sweep spec: {where}.{key} must be a string, got {value!r}")
        elif key == "seed" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise InputError(f"sweep spec: {where}.seed must be a non-negative integer, got {value!r}")
    for part in ("training", "model"):
        if "seed" in fields.get(part, {}):
            raise InputError(f"sweep spec: {where}.{part}.seed: give the seed as the run's own field `seed`")
    for part, key in (("task", "kind"), ("training", "recipe")):
        value = fields.get(part, {}).get(key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"sweep spec: {where}.{part}.{key} must be a name, got {value!r}")


def _merge(base: dict, fields: dict) -> dict:
    merged = dict(base)
    for key, value in fields.items():
        merged[key] = {**base.get(key, {}), **value} if key in DICT_FIELDS else value
    return merged


def _label(key: str, value) -> str:
    """A grid value as part of a run name: ``seed0``, ``nano``, ``n_layers1``, ``modular_digits_p100``."""
    if isinstance(value, dict):
        return "_".join(str(v) if k == "kind" else f"{k}{v}" for k, v in value.items())
    return f"{key}{value}" if key == "seed" else str(value)


def _check_job(fields: dict, name: str, where: str, evaluate: dict) -> Job:
    if "task" not in fields:
        raise InputError(f"sweep spec: {where} has no task; give one in base or in the run")
    if not name or not set(name) <= NAME_CHARACTERS or name.startswith("."):
        raise InputError(f"sweep spec: {where}: the run name {name!r} must be letters, digits, '_', '-' or '.', not starting with '.'")
    job = Job(run=name, task=fields["task"], preset=fields.get("preset", "nano"), model=fields.get("model", {}),
              training=fields.get("training", {}), seed=fields.get("seed", 0), evaluate_n=evaluate["n"],
              evaluate_seed=evaluate["seed"])
    try:
        if job.preset not in PRESETS:
            raise InputError(f"unknown preset {job.preset!r}; choose one of: {', '.join(PRESETS)}")
        job.model_config()
        cfg = job.train_config()
        task = job.build_task()
        task.id_split(cfg.seed, cfg.n_train, cfg.n_test)  # sizes that fit the task, as train checks them
        if task.has_ood and cfg.ood_digits is not None:
            task.sample_ood(1, cfg.ood_digits)
    except InputError as exc:
        raise InputError(f"sweep spec: {where} ({name}): {exc}") from None
    except TypeError as exc:  # a field of the wrong type that a dataclass constructor refuses
        raise InputError(f"sweep spec: {where} ({name}): {exc}") from None
    return job


def jobs_from_spec(spec: dict) -> list[Job]:
    """Every run of ``spec``, each checked (task, model and training fields) before any job starts.

    Raises InputError with one line naming the field for: an unknown field, a value of the wrong type,
    a grid axis that is not a non-empty list, a spec with no runs, or two runs of the same name."""
    spec = _require_dict(spec, "the spec")
    unknown = [k for k in spec if k not in SPEC_FIELDS]
    if unknown:
        raise InputError(f"sweep spec: {unknown[0]} is not a field; a spec has {', '.join(SPEC_FIELDS)}")
    base = _require_dict(spec.get("base", {}), "base")
    _check_run_fields(base, "base", allow_name=False)
    evaluate = {**EVALUATE_DEFAULTS, **_require_dict(spec.get("evaluate", {}), "evaluate")}
    for key, value in evaluate.items():
        if key not in EVALUATE_DEFAULTS:
            raise InputError(f"sweep spec: evaluate.{key} is not a field; evaluate has {', '.join(EVALUATE_DEFAULTS)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "n" else 0):
            raise InputError(f"sweep spec: evaluate.{key} must be a {'positive' if key == 'n' else 'non-negative'} integer, got {value!r}")

    named: list[tuple[dict, str, str]] = []  # (fields, name, where)
    grid = _require_dict(spec.get("grid", {}), "grid")
    for key, values in grid.items():
        if key not in RUN_FIELDS:
            raise InputError(f"sweep spec: grid.{key} is not a field; a grid varies {', '.join(RUN_FIELDS)}")
        if not isinstance(values, list) or not values:
            raise InputError(f"sweep spec: grid.{key} must be a non-empty list of values, got {values!r}")
        for value in values:
            _check_run_fields({key: value}, "grid", allow_name=False)
    if grid:
        for combination in itertools.product(*grid.values()):
            fields = dict(zip(grid, combination))
            name = "-".join(_label(k, v) for k, v in fields.items())
            named.append((_merge(base, fields), name, "grid"))
    runs = spec.get("runs", [])
    if not isinstance(runs, list):
        raise InputError(f"sweep spec: runs must be a list of runs, got {runs!r}")
    for i, entry in enumerate(runs):
        _check_run_fields(_require_dict(entry, f"runs[{i}]"), f"runs[{i}]", allow_name=True)
        fields = {k: v for k, v in entry.items() if k != "name"}
        name = entry.get("name") or "-".join(_label(k, v) for k, v in fields.items())
        named.append((_merge(base, fields), name, f"runs[{i}]"))
    if not named:
        raise InputError("sweep spec: it lists no runs; give a non-empty grid or runs")
    jobs, seen = [], set()
    for fields, name, where in named:
        if name in seen:
            raise InputError(f"sweep spec: {where}: two runs are named {name!r}; give the runs distinct names")
        seen.add(name)
        jobs.append(_check_job(fields, name, where, evaluate))
    return jobs
