"""What a run is configured with: model presets, training recipes and config, and the contents of a run's config.json.

Torch-free, so the CLI can validate its arguments before importing torch.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple, Optional, get_args, get_type_hints

from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import Task, task_from_dict

SCHEMA_VERSION = 1

PRESETS: dict[str, dict] = {
    # the paper's size (minGPT gpt-nano)
    "nano": dict(n_layers=3, n_heads=3, d_model=48, d_head=16, d_mlp=192, act_fn="gelu_new", normalization_type="LN"),
    # Nanda et al.'s modular-addition model
    "grokking": dict(n_layers=1, n_heads=4, d_model=128, d_head=32, d_mlp=512, act_fn="relu", normalization_type=None),
}

MODEL_FIELDS = ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "act_fn", "normalization_type", "eps", "seed")
TASK_SIZED_FIELDS = ("n_ctx", "d_vocab", "d_vocab_out")  # set from the task, never overridden
ACT_FNS = ("gelu_new", "gelu", "relu", "silu")


def model_config(task: Task, preset: str = "nano", seed: int = 0, **overrides) -> dict:
    """The model's TransformerBridgeConfig fields for ``task``: a preset, the task's sizes, and overrides."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    unknown = set(overrides) - set(MODEL_FIELDS)
    if unknown:
        raise InputError(f"unknown model field(s) {sorted(unknown)}; overridable fields are {list(MODEL_FIELDS)}")
    cfg = {**PRESETS[preset], "eps": 1e-5, "seed": seed, **overrides}
    for name in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp"):
        if not isinstance(cfg[name], int) or isinstance(cfg[name], bool) or cfg[name] < 1:
            raise InputError(f"{name} must be a positive integer, got {cfg[name]!r}")
    if cfg["act_fn"] not in ACT_FNS:
        raise InputError(f"act_fn must be one of {ACT_FNS}, got {cfg['act_fn']!r}")
    if cfg["normalization_type"] not in ("LN", None):
        raise InputError(f"normalization_type must be 'LN' or None, got {cfg['normalization_type']!r}")
    cfg.update(n_ctx=task.n_ctx, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab)
    return cfg


# Training recipes (``--recipe``), each filling in TrainConfig defaults: reference, fast and clean for the grokking
# layout, adder and smooth for the digit layout.
RECIPES: dict[str, dict] = {
    # Nanda et al. (2023) and TransformerLens's grokking demo: full batch, AdamW lr 1e-3,
    # weight decay 1.0, betas (0.9, 0.98), 10 steps of linear warmup, no gradient clipping;
    # evaluated on every pair. Both recipes take the lean training step (the same loss to float rounding).
    "reference": dict(steps=25000, batch_size=None, lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98, warmup_steps=10,
                      grad_clip=None, eval_every=100, checkpoint_every=1000, n_eval=20000, train_forward="lean"),
}
# the reference at a 10x learning rate, evaluated more often; chosen from the comparison in docs/BENCHMARKS.md
RECIPES["fast"] = {**RECIPES["reference"], "steps": 1000, "lr": 1e-2, "eval_every": 10, "checkpoint_every": 50}
# fast's large learning rate makes training collapse after memorisation (the slingshot); a third of it with five times
# the weight decay and the gradient clipped groks about as soon without the collapse (docs/BENCHMARKS.md)
RECIPES["clean"] = {**RECIPES["fast"], "lr": 3e-3, "weight_decay": 5.0, "grad_clip": 1.0}
# The digit layout: add3_nano's settings (constant learning rate after the warmup) with the lean step, and the
# same with the learning rate decaying to zero on a cosine, which was measured against it (docs/BENCHMARKS.md,
# "A recipe without loss spikes").
RECIPES["adder"] = dict(steps=2000, batch_size=256, lr=3e-3, weight_decay=0.1, beta1=0.9, beta2=0.98, warmup_steps=50,
                        grad_clip=1.0, eval_every=50, checkpoint_every=500, train_forward="lean")
RECIPES["smooth"] = {**RECIPES["adder"], "schedule": "cosine"}
TRAIN_CHOICES = {"train_forward": ("bridge", "lean"), "series_dtype": ("float32", "float16"), "schedule": ("constant", "cosine"),
                 "recipe": (None, *RECIPES)}


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters. ``batch_size=None`` trains full batch.

    ``n_train``/``n_test`` default to the task's split (10,000 each for digit
    tasks, the train fraction for the grokking layout). ``ood_digits``
    defaults to train digits + 1; digit tasks only.

    ``train_forward``: ``bridge`` computes each training step's loss and each
    evaluation with the TransformerBridge; ``lean`` with the kit's lean forward over
    the same parameters, at the answer positions only (the same losses and gradients
    to float rounding, about 1e-6, with less overhead).
    ``series_dtype``: the dtype older checkpoints of the series are stored in
    (``float16`` halves the series' size); the latest checkpoint stays float32, so resuming is exact.
    ``schedule``: the learning rate after the linear warmup: ``constant``, or ``cosine`` (decaying to 0 at ``steps``).
    ``extra_share``: the share of each minibatch drawn from the run's extra pairs (``train(extra_pairs=...)``);
    None draws uniformly from the ID training split and the extra pairs together.
    ``recipe``: the name of the recipe (``RECIPES``) whose defaults ``from_recipe`` filled in, or None.
    """

    steps: int = 1000
    batch_size: Optional[int] = 256
    lr: float = 3e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 50
    grad_clip: Optional[float] = 1.0
    eval_every: int = 100
    checkpoint_every: int = 100
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    n_eval: int = 2000
    ood_digits: Optional[int] = None
    seed: int = 0
    train_forward: str = "bridge"
    series_dtype: str = "float32"
    schedule: str = "constant"
    extra_share: Optional[float] = None
    recipe: Optional[str] = None

    def __post_init__(self):
        def positive_int(name, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")

        for name in ("steps", "eval_every", "checkpoint_every", "n_eval"):
            positive_int(name)
        for name in ("batch_size", "n_train", "n_test", "ood_digits"):
            positive_int(name, allow_none=True)
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise InputError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("lr", "weight_decay", "beta1", "beta2", "grad_clip"):
            v = getattr(self, name)
            if v is None and name == "grad_clip":
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise InputError(f"{name} must be a finite number, got {v!r}")
        if self.lr <= 0:
            raise InputError(f"lr must be positive, got {self.lr}; try 1e-3")
        if self.weight_decay < 0:
            raise InputError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise InputError(f"beta1 and beta2 must lie in [0, 1), got {self.beta1} and {self.beta2}")
        if self.extra_share is not None:
            if not (isinstance(self.extra_share, (int, float)) and 0 < self.extra_share < 1):
                raise InputError(f"extra_share must lie strictly between 0 and 1, or be None, got {self.extra_share!r}")
            if self.batch_size is None:
                raise InputError("extra_share needs minibatches; full-batch training (batch_size=None) uses every pair at every step")
            if round(self.extra_share * self.batch_size) in (0, self.batch_size):
                raise InputError(f"extra_share={self.extra_share} of a batch of {self.batch_size} rounds to "
                                 f"{round(self.extra_share * self.batch_size)} pairs; draw at least one pair from each side")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise InputError(f"grad_clip must be positive or None, got {self.grad_clip}")
        for name, allowed in TRAIN_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {', '.join(map(str, allowed))}; got {getattr(self, name)!r}")

    @classmethod
    def from_recipe(cls, recipe: str, **fields) -> "TrainConfig":
        """The recipe's settings (``RECIPES[recipe]``), with ``fields`` given explicitly taking precedence."""
        if recipe not in RECIPES:
            raise InputError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
        return cls.from_dict({**RECIPES[recipe], **fields, "recipe": recipe})

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown training field(s) {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class RunConfig:
    """The contents of a run directory's config.json."""

    task: Task
    model: dict
    training: Optional[TrainConfig]
    provenance: dict

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "task": self.task.to_dict(),
                "model": self.model,
                "training": None if self.training is None else asdict(self.training),
                "provenance": self.provenance,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, path) -> "RunConfig":
        """Parse and validate the text of a config.json; ``path`` names the file in error messages."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} is not valid JSON ({exc}); the run directory is damaged") from None
        if not isinstance(d, dict):
            raise InputError(f"{path} does not hold a JSON object; the run directory is damaged")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(
                f"{path} has schema_version {version!r}, but this equiv-tools reads schema_version {SCHEMA_VERSION}; "
                "use the equiv-tools version that wrote it"
            )
        missing = {"task", "model", "training", "provenance"} - set(d)
        if missing:
            raise InputError(f"{path} lacks the field(s) {sorted(missing)}; the run directory is damaged")
        if not isinstance(d["model"], dict):
            raise InputError(f"{path}: 'model' must be an object")
        unknown = sorted(set(d["model"]) - set(MODEL_FIELDS) - set(TASK_SIZED_FIELDS))
        if unknown:
            raise InputError(
                f"{path}: the model config has unknown field(s) {unknown}; the kit builds models from "
                f"{list(MODEL_FIELDS + TASK_SIZED_FIELDS)}"
            )
        training = None if d["training"] is None else TrainConfig.from_dict(d["training"])
        return cls(task_from_dict(d["task"]), d["model"], training, d["provenance"])


class FieldInfo(NamedTuple):
    """One field of a config dataclass: its name, type (``Optional[X]`` gives X, with optional=True) and default."""

    name: str
    type: type
    optional: bool
    default: object


def config_fields(cls) -> list[FieldInfo]:
    """The fields of the dataclass ``cls`` with their resolved types and defaults, in declaration order.

    The CLI builds its ``train`` flags from ``config_fields(TrainConfig)``, so a new field gets a flag and the
    help shows the real default.
    """
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        args = get_args(hints[f.name])
        optional = type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hints[f.name]
        out.append(FieldInfo(f.name, base, optional, f.default))
    return out
