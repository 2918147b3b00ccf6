"""Repairs for the rule a model learned, each measured against retraining from scratch.

Every remedy has one interface: ``remedy(run_dir, out_dir, budget=..., **options) -> RemedyResult``. It reads
the run ``run_dir`` (never writing to it), writes a new run directory ``out_dir`` with a ``remedy.json`` that
says what was done and what it cost, and returns that run's scorecard and cost. ``budget`` is the number of
optimizer steps the remedy may take (the rule wrapper takes none).

* ``prime``: continue training from the run's weights with ``k`` OOD pairs mixed into its ID training data;
  ``k = 0`` is the control that shows what the extra steps alone do.
* ``finetune``: continue training on OOD pairs that fail the scorecard's weakest stage, half of each
  minibatch, the other half replaying the ID split; the latest checkpoint whose ID accuracy stays at or
  above ``min_id_accuracy`` is kept.
* ``wrap``: no training; add back what the model's relation drops (``Relation.correction``), which is
  exact on every input where the model follows the relation, and wrong everywhere else.
* ``retrain``: the baseline; a fresh model of the same size trained with the run's recipe on its ID split
  plus OOD pairs, until ID and OOD accuracy reach their targets or the budget ends.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np
import pandas as pd

from equiv_tools.analysis.rule_wrapper import WRAP, run_answer_tokens
from equiv_tools.analysis.scorecard import STAGES, carries_out, scorecard, stage_passes
from equiv_tools.core.config import MODEL_FIELDS, RunConfig, TrainConfig
from equiv_tools.core.errors import InputError
from equiv_tools.core.files import read_json, write_json
from equiv_tools.core.rundir import RunDir
from equiv_tools.runs.models import load_run, provenance, save_weights, write_run
from equiv_tools.runs.training import RNG_SCHEME, train

PAIR_SEED_OFFSET = 100  # training pairs are drawn with seed + 100, away from the small seeds evaluations use (0 by default)


@dataclass
class RemedyResult:
    """What a remedy made: the new run directory, its scorecard (``scorecard.scorecard``) and its cost.

    ``cost`` has remedy, steps (optimizer steps taken), examples_seen (training sequences, steps x batch),
    extra_examples (OOD pairs drawn for training, with replacement, so a few may repeat) and seconds (wall time
    of the remedy's own work: training, finetune's search for failing pairs, wrap's copy; not the scorecards).
    """

    run_dir: RunDir
    scorecard: dict
    cost: dict


def _source(run_dir):
    """The run to repair, refused with one line when it has no OOD split."""
    run_dir = RunDir.resolve(run_dir)
    config = run_dir.read_config()
    if not config.task.has_ood:
        raise InputError(f"{run_dir} is {config.task.describe()}, which has no OOD split: there is no OOD failure to repair")
    return run_dir, config


def _remedy_config(config: RunConfig, steps: int, eval_every: int = 50) -> TrainConfig:
    """The run's own optimizer settings (the adder recipe for imported runs) for ``steps`` more steps, on the lean forward."""
    base = config.training or TrainConfig.from_recipe("adder")
    return replace(base, steps=steps, eval_every=min(eval_every, steps), checkpoint_every=steps, train_forward="lean",
                   series_dtype="float32", extra_share=None)


def _check_count(value, name: str, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise InputError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def _check_budget(budget) -> int:
    return _check_count(budget, "budget (optimizer steps)")


def _check_share(value, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise InputError(f"{name} must be a share between 0 and 1, got {value!r}")
    return float(value)


def read_remedy(run_dir) -> Optional[dict]:
    """A remedy run's ``remedy.json`` (remedy, source, options, cost), or None for any other run."""
    run_dir = RunDir.resolve(run_dir)
    return read_json(run_dir.remedy_file) if run_dir.remedy_file.is_file() else None


def _train_from(source_name, config: RunConfig, out: RunDir, cfg: TrainConfig, extra, progress: bool, fresh: bool = False,
                stop_when=None) -> dict:
    """Train into ``out`` from the weights of the run ``source_name`` (or, ``fresh``, a new model of its size); return the cost."""
    start = time.perf_counter()
    if fresh:
        overrides = {k: config.model[k] for k in MODEL_FIELDS if k in config.model and k != "seed"}  # the seed is the recipe's
        metrics = train(config.task, out, preset=config.provenance.get("preset") or "nano", train_cfg=cfg, model_overrides=overrides,
                        command=["equiv_tools.analysis.remedies"], progress=progress, extra_pairs=extra, stop_when=stop_when)
    else:
        metrics = train(config.task, out, train_cfg=cfg, command=["equiv_tools.analysis.remedies"], progress=progress,
                        init_from=source_name, extra_pairs=extra, stop_when=stop_when)
    steps = int(metrics.step.max())
    examples = steps * cfg.batch_size if cfg.batch_size else None  # full batch: not counted
    return {"steps": steps, "examples_seen": examples, "extra_examples": 0 if extra is None else int(extra[0].size),
            "seconds": round(time.perf_counter() - start, 2)}


def _prepare(source: RunDir, out_dir, n: int, seed: int):
    """The new run directory (refused if it holds anything), the source run loaded, and its scorecard."""
    out = RunDir(out_dir)
    out.require_new("pick a new output directory for the remedy")
    run = load_run(source)
    return out, run, scorecard(run, n=n, seed=seed)


def _finish(name: str, source, out: RunDir, options: dict, cost: dict, n: int, seed: int, before: dict) -> RemedyResult:
    """Score the new run, record remedy.json (``source`` as the caller named it) and return the result."""
    card = scorecard(load_run(out), n=n, seed=seed)
    cost = {"remedy": name, **cost}
    write_json(out.remedy_file, {"remedy": name, "source": str(source), "options": options, "cost": cost,
                                 "scorecard": card, "source_scorecard": before})
    return RemedyResult(out, card, cost)


def _ood_pairs(task, k: int, seed: int):
    """``k`` OOD training pairs at train_digits + 1 digits, one or both operands long (``sample_ood(mode="either")``)."""
    return task.sample_ood(k, seed=seed + PAIR_SEED_OFFSET, mode="either")


def prime(run_dir, out_dir, budget: int = 500, k: int = 50, n: int = 2000, seed: int = 0, progress: bool = True) -> RemedyResult:
    """Continue training the run for ``budget`` steps with its own optimizer settings, with ``k`` OOD pairs
    (one or both operands train_digits + 1 digits long) mixed into its ID training split and drawn as often
    as any ID pair. ``k = 0`` trains the same steps on the ID split alone: the control."""
    source, config = _source(run_dir)
    budget, k = _check_budget(budget), _check_count(k, "k (OOD pairs)", minimum=0)
    out, _, before = _prepare(source, out_dir, n, seed)
    extra = _ood_pairs(config.task, int(k), seed) if k else None
    cost = _train_from(run_dir, config, out, _remedy_config(config, budget), extra, progress)
    return _finish("prime", run_dir, out, {"budget": budget, "k": int(k), "seed": seed}, cost, n, seed, before)


def failing_pairs(run, stage: str, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``k`` OOD pairs (one or both operands train_digits + 1 digits long) on which the run fails ``stage``
    (``scorecard.STAGES``; ``carry_into_new_digit`` picks inputs with a carry): (a, b), each [<= k]."""
    if stage not in STAGES:
        raise InputError(f"unknown stage {stage!r}; choose one of: {', '.join(STAGES)}")
    task = run.task
    a, b = _ood_pairs(task, 20 * k, seed)
    truth = task.encode_answer(task.truth(a, b))
    residue_tokens = run_answer_tokens(run, *task.residue_relation().representative(a, b))
    carry = carries_out(task, a, b)
    passes = stage_passes(task, run_answer_tokens(run, a, b), truth, residue_tokens, carry)[stage]
    failing = ~passes & (carry if stage == "carry_into_new_digit" else True)
    return a[failing][:k], b[failing][:k]


def finetune(run_dir, out_dir, budget: int = 200, k: int = 1000, stage: Optional[str] = None, min_id_accuracy: float = 0.99,
             n: int = 2000, seed: int = 0, progress: bool = True) -> RemedyResult:
    """Continue training the run for ``budget`` steps on ``k`` OOD pairs it fails at ``stage`` (default: the
    scorecard's ``weakest_stage``), half of every minibatch, the other half replaying its ID split; with the
    run's own optimizer settings, checkpointing every 25 steps.

    The guard: if the ID test accuracy in the run's metrics (its first ``n_eval`` held-out pairs, which the
    scorecard also uses by default) ends below ``min_id_accuracy``, the run is rolled back to the latest
    checkpoint that kept it: its weights and ``state.json`` (it can no longer resume; ``remedy.json`` records the
    step kept). Addition only.
    """
    source, config = _source(run_dir)
    if config.task.kind != "addition":
        raise InputError(f"finetune targets the stages of addition; {config.task.describe()} has none")
    budget, k = _check_budget(budget), _check_count(k, "k (OOD pairs)")
    min_id_accuracy = _check_share(min_id_accuracy, "min_id_accuracy")
    if stage is not None and stage not in STAGES:
        raise InputError(f"unknown stage {stage!r}; choose one of: {', '.join(STAGES)}")
    out, run, before = _prepare(source, out_dir, n, seed)
    stage = stage or before["weakest_stage"]
    start = time.perf_counter()
    extra = failing_pairs(run, stage, k, seed)
    if not extra[0].size:
        raise InputError(f"{source} fails stage {stage!r} on none of {20 * k} OOD pairs; pick another stage")
    search_seconds = time.perf_counter() - start
    cfg = replace(_remedy_config(config, budget, eval_every=25), checkpoint_every=min(25, budget), extra_share=0.5)
    cost = _train_from(run_dir, config, out, cfg, extra, progress)
    cost["seconds"] = round(cost["seconds"] + search_seconds, 2)
    metrics = out.read_metrics()
    id_test = metrics[(metrics.split == "id_test") & metrics.step.isin(out.checkpoint_steps())].set_index("step").accuracy
    kept = int(id_test.index[-1])
    if id_test.iloc[-1] < min_id_accuracy:  # roll back: the weights, and the step state.json names, are the kept checkpoint's
        held = id_test[id_test >= min_id_accuracy]
        kept = int(held.index[-1]) if len(held) else 0
        save_weights(load_run(out, step=kept).model, out.weights_file)
        out.write_state(kept, seed=cfg.seed, rng=RNG_SCHEME, rolled_back_from=int(id_test.index[-1]))
    options = {"budget": budget, "k": int(extra[0].size), "seed": seed, "stage": stage, "min_id_accuracy": min_id_accuracy,
               "kept_step": kept, "id_accuracy_at_kept_step": float(id_test.loc[kept]) if kept in id_test.index else None}
    return _finish("finetune", run_dir, out, options, cost, n, seed, before)


def wrap(run_dir, out_dir, budget: int = 0, relation: Optional[str] = None, n: int = 2000, seed: int = 0, progress: bool = True) -> RemedyResult:
    """Copy the run into ``out_dir`` with a rule wrapper (``rule_wrapper``) around its answers: add back what
    ``relation`` (default: the scorecard's best relation) drops. No training, so no budget is used; the wrapped
    run's accuracy equals the share of inputs on which the model follows the relation."""
    source, config = _source(run_dir)
    _check_count(budget, "budget (optimizer steps)", minimum=0)
    name = config.task.relation(relation).name if relation is not None else None
    out, run, before = _prepare(source, out_dir, n, seed)
    name = name or before["best_relation"]
    start = time.perf_counter()
    write_run(out, RunConfig(config.task, config.model, config.training, provenance(["equiv_tools.analysis.remedies"], wrapped=str(run_dir))), run.model)
    write_json(out.remedy_file, {"remedy": WRAP, "source": str(run_dir), "options": {"relation": name, "seed": seed}})
    cost = {"steps": 0, "examples_seen": 0, "extra_examples": 0, "seconds": round(time.perf_counter() - start, 2)}
    return _finish(WRAP, run_dir, out, {"relation": name, "seed": seed}, cost, n, seed, before)


def retrain(run_dir, out_dir, budget: int = 10_000, k: int = 10_000, target_id: float = 0.99, target_ood: float = 0.9,
            n: int = 2000, seed: int = 0, progress: bool = True) -> RemedyResult:
    """The baseline: a fresh model of the run's size and seed, trained with the run's recipe on its ID split
    plus ``k`` OOD pairs (one or both operands train_digits + 1 digits long, drawn as often as any ID pair),
    until the ID test and OOD accuracies of an evaluation reach ``target_id`` and ``target_ood`` or ``budget``
    steps are spent."""
    source, config = _source(run_dir)
    budget, k = _check_budget(budget), _check_count(k, "k (OOD pairs)")
    target_id, target_ood = _check_share(target_id, "target_id"), _check_share(target_ood, "target_ood")
    out, _, before = _prepare(source, out_dir, n, seed)

    def reached(rows):
        accuracy = {r["split"]: r["accuracy"] for r in rows}
        return accuracy["id_test"] >= target_id and accuracy["ood"] >= target_ood

    cost = _train_from(run_dir, config, out, _remedy_config(config, budget), _ood_pairs(config.task, k, seed), progress, fresh=True, stop_when=reached)
    metrics = out.read_metrics()
    final = metrics[metrics.step == metrics.step.max()].set_index("split").accuracy
    options = {"budget": budget, "k": int(k), "seed": seed, "target_id": target_id, "target_ood": target_ood,
               "reached": bool(final["id_test"] >= target_id and final["ood"] >= target_ood)}
    return _finish("retrain", run_dir, out, options, cost, n, seed, before)


REMEDIES = {"prime": prime, "finetune": finetune, "wrap": wrap, "retrain": retrain}


def remedy_table(run_dirs) -> pd.DataFrame:
    """The remedies' costs and gains side by side, one row per remedy run (read from each ``remedy.json``).

    Columns: run, remedy, k (OOD pairs used), seed (of the pairs drawn and scored), steps, examples_seen, seconds, id_accuracy, ood_accuracy,
    relation_consistency, ood_gain and id_change (against the source run's scorecard).
    """
    rows = []
    for run_dir in run_dirs:
        record = read_remedy(run_dir)
        if record is None or "scorecard" not in record:
            raise InputError(f"{run_dir} was not made by a remedy (it has no complete remedy.json)")
        card, before, cost = record["scorecard"], record["source_scorecard"], record["cost"]
        rows.append({"run": RunDir.resolve(run_dir).name, "remedy": record["remedy"], "k": cost["extra_examples"],
                     "seed": record["options"]["seed"], "steps": cost["steps"],
                     "examples_seen": cost["examples_seen"], "seconds": cost["seconds"], "id_accuracy": card["id_accuracy"],
                     "ood_accuracy": card["ood_accuracy"], "relation_consistency": card["relation_consistency"],
                     "ood_gain": card["ood_accuracy"] - before["ood_accuracy"], "id_change": card["id_accuracy"] - before["id_accuracy"]})
    return pd.DataFrame(rows)
