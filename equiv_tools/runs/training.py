"""The training loop: AdamW, warmup, clipping, periodic evaluation, crash-safe checkpoints and exact resume.

Every file is written atomically through ``RunDir`` (which holds the run directory's layout), and
``state.json`` is written after the files it names, so a run killed at any moment resumes from its
latest complete checkpoint. All randomness is derived from ``(seed, step)``: minibatch indices
come from ``numpy.random.default_rng([seed, step])``, so the RNG state to
resume is the step itself, and a resumed run reaches the same weights and
metrics as an uninterrupted one on CPU.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from equiv_tools.core.config import RunConfig, TrainConfig, model_config
from equiv_tools.core.errors import InputError
from equiv_tools.core.rundir import METRIC_COLUMNS, RunDir
from equiv_tools.core.tasks import Task
from equiv_tools.forward.devices import resolve_device
from equiv_tools.forward.lean import LeanModel, fast_path_blocker, lean_forward
from equiv_tools.runs.models import build_model, load_weights, provenance, save_weights
from equiv_tools.runs.storage import load_tensors, save_tensors

RNG_SCHEME = "minibatch indices from numpy.random.default_rng([seed, step]); no other randomness after init"


def _sequences(task: Task, ab, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(task.encode(*ab)).to(device)


def answer_loss_and_accuracy(model, task: Task, seqs: torch.Tensor, lean: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on answer positions (mean) and teacher-forced exact match (= greedy exact match) per row.

    ``seqs`` [batch, seq_len] -> (scalar loss, bool [batch]). ``lean``: compute the logits with the lean
    forward over the model's parameters (gradients reach them), at the answer positions only, where
    ``lean_forward(model)`` allows; elsewhere (hooks attached, ...) the bridge computes them (hooks honoured).
    """
    forward = lean_forward(model, differentiable=True) if lean else None
    return _answer_loss_and_accuracy(model if forward is None else forward, task, seqs)


def _answer_loss_and_accuracy(forward, task: Task, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``answer_loss_and_accuracy`` with ``forward`` chosen: the bridge, or a ``LeanModel`` over its weights."""
    if isinstance(forward, LeanModel):
        logits = forward.forward(seqs[:, :-1], logits_from=task.prompt_len - 1)
    else:
        logits = forward(seqs[:, :-1])[:, task.prompt_len - 1 :]
    target = seqs[:, task.prompt_len :]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    return loss, (logits.argmax(-1) == target).all(dim=1)


class _Data:
    """The run's fixed data: train pairs (the ID split, then any extra pairs), and the evaluation sets (train
    subset of the ID split, ID test, OOD)."""

    def __init__(self, task: Task, cfg: TrainConfig, device: torch.device, extra=None):
        (train, test) = task.id_split(cfg.seed, cfg.n_train, cfg.n_test)
        self.train = _sequences(task, train, device)
        self.n_id = len(self.train)
        self.eval_sets = {"train": self.train[: cfg.n_eval], "id_test": _sequences(task, test, device)[: cfg.n_eval]}
        if extra is not None:
            self.train = torch.cat([self.train, _sequences(task, extra, device)])
        if task.has_ood:
            ood = task.sample_ood(cfg.n_eval, cfg.ood_digits, seed=cfg.seed + 1)
            self.eval_sets["ood"] = _sequences(task, ood, device)
        self.eval_sets = {k: v for k, v in self.eval_sets.items() if len(v)}

    def batch(self, cfg: TrainConfig, step: int) -> torch.Tensor:
        if cfg.batch_size is None:
            return self.train
        rng = np.random.default_rng([cfg.seed, step])
        if cfg.extra_share is None or self.n_id == len(self.train):
            idx = rng.integers(0, len(self.train), cfg.batch_size)
        else:  # a fixed share of the batch from the extra pairs, the rest from the ID split
            n_extra = round(cfg.extra_share * cfg.batch_size)
            idx = np.concatenate([rng.integers(0, self.n_id, cfg.batch_size - n_extra), rng.integers(self.n_id, len(self.train), n_extra)])
        return self.train[torch.from_numpy(idx).to(self.train.device)]


def _lean_agrees(model, cfg: TrainConfig) -> bool:
    """Whether this run's steps and evaluations may take the lean forward: ``train_forward`` asks for it and
    ``lean_forward`` (its gate and probe) allows it. Asked once per ``train``/``resume``; each step then checks
    the cheap gate only (a hook attached from ``on_eval`` sends the following steps to the bridge)."""
    return cfg.train_forward == "lean" and lean_forward(model) is not None


def _forward(model, lean_agrees: bool, differentiable: bool = False):
    """The forward for one step or evaluation: a ``LeanModel`` over the current weights, or the bridge."""
    return LeanModel(model, differentiable=differentiable) if lean_agrees and fast_path_blocker(model) is None else model


@torch.no_grad()
def _evaluate(model, task: Task, data: _Data, step: int, lean_agrees: bool) -> list[dict]:
    model.eval()
    forward = _forward(model, lean_agrees)
    rows = []
    for split, seqs in data.eval_sets.items():
        loss, correct = _answer_loss_and_accuracy(forward, task, seqs)
        rows.append({"step": step, "split": split, "loss": float(loss), "accuracy": float(correct.float().mean())})
    model.train()
    return rows


def read_metrics(run_dir) -> pd.DataFrame:
    """A run's metrics as a tidy DataFrame: step, split, loss, accuracy."""
    return RunDir.resolve(run_dir).read_metrics()


def _optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def _optimizer_tensors(model, opt: torch.optim.AdamW) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for p, state in opt.state.items():
        for key, value in state.items():
            out[f"{names[id(p)]}::{key}"] = value
    return out


def _load_optimizer(model, opt: torch.optim.AdamW, tensors: dict[str, torch.Tensor], source: str) -> None:
    for name, p in model.named_parameters():
        try:
            state = {key: tensors[f"{name}::{key}"] for key in ("step", "exp_avg", "exp_avg_sq")}
        except KeyError as exc:
            raise InputError(f"{source} lacks optimizer state {exc}; the checkpoint does not match the model") from None
        if state["exp_avg"].shape != p.shape or state["exp_avg_sq"].shape != p.shape:
            raise InputError(f"{source}: optimizer state for {name} has the wrong shape")
        # AdamW keeps its step count on the CPU and its moments beside the parameter
        opt.state[p] = {"step": state["step"].clone(), "exp_avg": state["exp_avg"].to(p.device), "exp_avg_sq": state["exp_avg_sq"].to(p.device)}


def _save_checkpoint(run_dir: RunDir, model, opt, step: int, rows: list[dict], cfg: TrainConfig) -> None:
    save_weights(model, run_dir.checkpoint_file(step))
    save_tensors(run_dir.optimizer_file(step), _optimizer_tensors(model, opt))
    run_dir.write_metrics(rows)
    run_dir.write_state(step, seed=cfg.seed, rng=RNG_SCHEME)
    save_weights(model, run_dir.weights_file)
    for old in run_dir.optimizer_steps():  # each marks a checkpoint that was the latest
        if old != step:
            if cfg.series_dtype != "float32":  # no longer the latest: it need not resume exactly
                weights_file = run_dir.checkpoint_file(old)
                save_tensors(weights_file, {k: w.to(getattr(torch, cfg.series_dtype)) for k, w in load_tensors(weights_file).items()})
            run_dir.optimizer_file(old).unlink()


def lr_at(cfg: TrainConfig, step: int) -> float:
    """The learning rate of step ``step`` (counted from 1): linear warmup over ``warmup_steps``, then constant or,
    with ``schedule="cosine"``, half a cosine from ``lr`` down to 0 at ``steps``."""
    warm = cfg.lr * min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr  # as before schedules: bit for bit
    if cfg.schedule == "constant" or step <= cfg.warmup_steps:
        return warm
    done = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


def _loop(run_dir: RunDir, task: Task, model, opt, cfg: TrainConfig, data: _Data, start: int, rows: list[dict], progress: bool,
          on_eval: Optional[Callable[[list[dict]], None]], lean_agrees: bool, stop_when: Optional[Callable[[list[dict]], bool]] = None):
    model.train()
    bar = tqdm(range(start + 1, cfg.steps + 1), desc=f"training {run_dir.name}", disable=not progress, initial=start, total=cfg.steps)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        loss, _ = _answer_loss_and_accuracy(_forward(model, lean_agrees, differentiable=True), task, data.batch(cfg, step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.steps
        stop = False
        if step % cfg.eval_every == 0 or step == cfg.steps:
            rows.extend(_evaluate(model, task, data, step, lean_agrees))
            latest = {r["split"]: r["accuracy"] for r in rows[-len(data.eval_sets):]}
            bar.set_postfix({k: f"{v:.3f}" for k, v in latest.items()})
            if on_eval is not None:
                on_eval(rows[-len(data.eval_sets):])
            stop = stop_when is not None and bool(stop_when(rows[-len(data.eval_sets):]))
            if not (checkpoint or stop):  # a checkpoint writes the metrics itself
                run_dir.write_metrics(rows)
        if checkpoint or stop:
            _save_checkpoint(run_dir, model, opt, step, rows, cfg)
        if stop:
            break
    model.eval()
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def train(
    task: Task,
    out_dir,
    preset: str = "nano",
    train_cfg: Optional[TrainConfig] = None,
    model_overrides: Optional[dict] = None,
    command: Optional[list[str]] = None,
    progress: bool = True,
    device: str = "cpu",
    on_eval: Optional[Callable[[list[dict]], None]] = None,
    init_from=None,
    extra_pairs=None,
    stop_when: Optional[Callable[[list[dict]], bool]] = None,
) -> pd.DataFrame:
    """Train a model on ``task`` into the new run directory ``out_dir``; return the metrics DataFrame.

    ``train_cfg``: the settings (default ``TrainConfig()``; ``TrainConfig.from_recipe("fast")`` for grokking).
    ``init_from``: a run directory of the same task whose model and latest weights to start from (``preset`` is
    then not used, and ``model_overrides`` are refused); default: a fresh model. The provenance records it as given.
    ``extra_pairs``: ``(a, b)``, each [k]: pairs trained on beside the ID split (``extra_share`` says how
    often), saved in the run's ``extra_pairs.csv``.
    ``stop_when``: called after each evaluation with its rows; when it returns True, training checkpoints and
    ends there, before ``steps`` (state.json records the step reached).
    ``device``: ``cpu`` (deterministic: the same seed gives the same run), ``cuda``, ``cuda:N`` or ``auto``.
    ``on_eval``: called after each evaluation with its rows (dicts with step, split, loss, accuracy),
    e.g. to time a run or draw live curves.
    """
    cfg = train_cfg or TrainConfig()
    run_dir = RunDir(out_dir)
    run_dir.require_new()
    torch_device = resolve_device(device)
    if task.has_ood and cfg.ood_digits is not None:
        task.sample_ood(1, cfg.ood_digits)  # validates ood_digits before any work
    if extra_pairs is not None:
        extra_pairs = task.check_operands(*extra_pairs)
        if not extra_pairs[0].size:
            raise InputError("extra_pairs is empty; pass None to train on the ID split alone")
    elif cfg.extra_share is not None:
        raise InputError(f"extra_share={cfg.extra_share} needs extra_pairs to draw from")
    made = {"preset": preset}
    if init_from is None:
        model_cfg = model_config(task, preset, seed=cfg.seed, **(model_overrides or {}))
    else:
        source = RunDir.resolve(init_from)
        source_cfg = source.read_config()
        if source_cfg.task != task:
            raise InputError(f"{source} was trained on {source_cfg.task.describe()}, not {task.describe()}; start from a run of the same task")
        if model_overrides:
            raise InputError("a run started from another run keeps its model; model_overrides cannot change it")
        model_cfg = source_cfg.model
        made = {"preset": source_cfg.provenance.get("preset"), "init_from": str(init_from)}
    if extra_pairs is not None:
        made["extra_pairs"] = int(extra_pairs[0].size)
    data = _Data(task, cfg, torch_device, extra_pairs)
    run_dir.create(RunConfig(task, model_cfg, cfg, provenance(command, **made)), series=True)
    if extra_pairs is not None:
        run_dir.write_extra_pairs(*extra_pairs)
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, device=torch_device)
    if init_from is not None:
        load_weights(model, source.weights_file)
    opt = _optimizer(model, cfg)
    lean_agrees = _lean_agrees(model, cfg)
    rows = _evaluate(model, task, data, 0, lean_agrees)
    _save_checkpoint(run_dir, model, opt, 0, rows, cfg)
    return _loop(run_dir, task, model, opt, cfg, data, 0, rows, progress, on_eval, lean_agrees, stop_when)


# Fields that define the run's data or its schedule; changing them midway would make another run. A cosine
# schedule's length (steps) is fixed too: training further would restart the decay.
FIXED_ON_RESUME = ("seed", "n_train", "n_test", "n_eval", "ood_digits", "schedule", "extra_share")


def resume(run_dir, *, progress: bool = True, device: str = "cpu", on_eval: Optional[Callable[[list[dict]], None]] = None,
           **overrides) -> pd.DataFrame:
    """Continue a run from its latest complete checkpoint; return the metrics DataFrame.

    ``overrides`` are TrainConfig fields to change from the recorded ones (e.g.
    ``steps=3000`` to train further, or a new ``lr``); fields that define the
    data (``FIXED_ON_RESUME``) cannot change. config.json then holds the new
    values, and its provenance lists each resume (from which step, what changed),
    so the record still says how the run was made. Everything is validated and
    loaded before anything is written: a refused resume leaves the run untouched.
    """
    run_dir = RunDir(run_dir)
    config = run_dir.read_config()
    if config.training is None:
        raise InputError(f"{run_dir} was imported, not trained by equiv-tools: there is nothing to resume")
    if "recipe" in overrides and overrides["recipe"] != config.training.recipe:
        raise InputError(f"a run keeps the recipe it started from (recorded: {config.training.recipe!r}); "
                         "pass the settings to change instead (e.g. --lr)")
    fixed_fields = FIXED_ON_RESUME + (("steps",) if config.training.schedule == "cosine" else ())
    fixed = sorted(k for k in fixed_fields if k in overrides and overrides[k] != getattr(config.training, k))
    if fixed:
        recorded = ", ".join(f"{k}={getattr(config.training, k)!r}" for k in fixed)
        raise InputError(f"{' and '.join(fixed)} {'defines' if len(fixed) == 1 else 'define'} the run's data or schedule and cannot change "
                         f"on resume (recorded: {recorded}); train a new run instead")
    cfg = TrainConfig.from_dict({**asdict(config.training), **overrides})
    start = run_dir.read_state_step()
    extra = run_dir.read_extra_pairs()
    recorded_extra = config.provenance.get("extra_pairs")
    if recorded_extra is not None and (extra is None or extra[0].size != recorded_extra):
        raise InputError(f"{run_dir} was trained with {recorded_extra} extra pairs, but its {run_dir.extra_pairs_file.name} "
                         f"{'is missing' if extra is None else f'holds {extra[0].size}'}; the run directory is damaged")
    if not run_dir.optimizer_file(start).is_file():
        raise InputError(f"{run_dir} keeps no optimizer state for step {start} (its weights were rolled back or its series "
                         "trimmed), so it cannot resume exactly; start a new run from it instead (train(..., init_from=...))")
    if start >= cfg.steps:
        raise InputError(f"{run_dir} already finished {start} of {cfg.steps} steps; pass --steps N with N > {start} to train further")
    torch_device = resolve_device(device)
    model = build_model(config.model, device=torch_device)
    load_weights(model, run_dir.checkpoint_file(start))
    opt = _optimizer(model, cfg)
    _load_optimizer(model, opt, load_tensors(run_dir.optimizer_file(start)), str(run_dir.optimizer_file(start)))
    rows = [r for r in run_dir.read_metrics().to_dict("records") if r["step"] <= start]
    data = _Data(config.task, cfg, torch_device, extra)
    # validated and loaded: only now touch the run directory
    run_dir.remove_leftovers()
    if cfg != config.training:
        changed = {k: v for k, v in asdict(cfg).items() if v != getattr(config.training, k)}
        prov = {**config.provenance, "resumes": [*config.provenance.get("resumes", []), {"from_step": start, "changed": changed}]}
        run_dir.write_config(RunConfig(config.task, config.model, cfg, prov))
    return _loop(run_dir, config.task, model, opt, cfg, data, start, rows, progress, on_eval, _lean_agrees(model, cfg))
