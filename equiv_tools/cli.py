"""`equiv-tools` commands: thin wrappers over the Python API.

Arguments are parsed and validated with the torch-free modules first, so a
usage error answers at once; a bad input exits with status 2 and one line
naming the problem, never a traceback. ``--device`` is resolved (which imports
torch) once the other arguments are known to be valid, before any work.

The ``train`` flags are generated from ``TrainConfig`` and ``MODEL_FIELDS``:
a new training field gets a flag, and ``--help`` shows the dataclass's real
default. Training and model flags default to "not given", so ``--resume``
passes on only the options written on the command line.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from dataclasses import asdict
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Optional

from equiv_tools.core.config import ACT_FNS, MODEL_FIELDS, PRESETS, TRAIN_CHOICES, TrainConfig, config_fields, model_config
from equiv_tools.core.errors import InputError
from equiv_tools.core.rundir import RunDir, shipped_runs
from equiv_tools.core.tasks import TASKS, make_task

# --- argument types ---------------------------------------------------------------------------------


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_number(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _or_word(parse, word: str):
    """``parse``, except that ``word`` (any case) means None."""

    def parse_or_none(text: str):
        if text.strip().lower() == word:
            return None
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc}; or {word!r}") from None

    return parse_or_none


def _normalization(text: str) -> Optional[str]:
    if text.strip().lower() not in ("ln", "none"):
        raise argparse.ArgumentTypeError(f"expected LN or none, got {text!r}")
    return "LN" if text.strip().lower() == "ln" else None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already says it or there is none (None, a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value) -> str:
    return "none" if value is None else str(value)


# --- task options -----------------------------------------------------------------------------------

TASK_FIELDS = ("train_digits", "width", "p", "op", "train_fraction")


def _task_default_text(name: str) -> str:
    """The task classes' own defaults for field ``name``, e.g. 'addition 5, multiplication 4, modular_digits 5'."""
    values = {kind: _shown(f.default) for kind, cls in TASKS.items() for f in dataclass_fields(cls) if f.name == name}
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return ", ".join(f"{kind} {value}" for kind, value in values.items())


def _add_task_args(p: argparse.ArgumentParser, task_required: bool = True) -> None:
    g = p.add_argument_group("task")
    g.add_argument("--task", choices=list(TASKS), required=task_required,
                   help="the task's kind" + ("" if task_required else " (required unless --resume)"))
    for flag, kind, text in (
        ("--train-digits", dict(type=_positive_int), "ID operands have at most this many digits"),
        ("--width", dict(type=_positive_int), "operand width of the digit layouts"),
        ("--p", dict(type=_positive_int), "the modulus of the modular tasks"),
        ("--op", dict(choices=["add", "mul"]), "the modular tasks' operation"),
        ("--train-fraction", dict(type=float), "share of all pairs trained on, grokking layout"),
    ):
        g.add_argument(flag, **kind, help=f"{text} (default: {_task_default_text(flag[2:].replace('-', '_'))})")


def _task_from_args(args):
    fields = {name: getattr(args, name) for name in TASK_FIELDS if getattr(args, name) is not None}
    return make_task(args.task, **fields)


# --- training and model options (generated) ---------------------------------------------------------

TRAIN_FIELDS = tuple(f.name for f in config_fields(TrainConfig))

# One help line per TrainConfig field (tests/test_cli_options.py checks that every field has one).
TRAIN_HELP = {
    "steps": "optimizer steps in all (with --resume: train on to this step)",
    "batch_size": "minibatch size, or 'full' for full-batch training",
    "lr": "AdamW learning rate, reached after warmup",
    "weight_decay": "AdamW weight decay",
    "beta1": "AdamW beta1",
    "beta2": "AdamW beta2",
    "warmup_steps": "steps of linear learning-rate warmup",
    "grad_clip": "clip the gradient norm to this, or 'none'",
    "eval_every": "measure train / ID / OOD accuracy every this many steps",
    "checkpoint_every": "save a checkpoint every this many steps",
    "n_train": "training pairs",
    "n_test": "held-out ID test pairs",
    "n_eval": "pairs per split at each evaluation",
    "ood_digits": "digits of the OOD operands evaluated during training (digit tasks)",
    "seed": "seed of the data split, the initialisation and the minibatches",
    "train_forward": "compute each step's loss with the TransformerBridge, or the lean forward (same loss to ~1e-6, faster)",
    "series_dtype": "dtype of the older checkpoints of the series (float16 halves its size; the latest stays float32)",
    "schedule": "learning rate after the warmup: constant, or cosine (down to 0 at the last step)",
    "extra_share": "share of each minibatch drawn from --extra-pairs",
    "recipe": "start from a recipe's settings: reference (Nanda et al.'s grokking setup), fast, clean (fast without its collapse); for the digit tasks adder (add3_nano's settings) or smooth (the same, with a cosine decay); flags given win",
}
TRAIN_NONE_WORDS = {"batch_size": "full", "grad_clip": "none"}  # the word that stands for None on the command line
TRAIN_NONE_DEFAULTS = {"extra_share": "drawn as often as any ID pair", "n_train": "the task's split", "n_test": "the task's split", "ood_digits": "train digits + 1",
                       "recipe": "none, the defaults shown here"}
TRAIN_INT_MINIMUM = {"warmup_steps": 0, "seed": 0}  # other integer fields must be positive


def _train_field_type(field):
    if field.name in TRAIN_CHOICES:
        return None  # argparse checks the choices
    if field.type is int:
        minimum = TRAIN_INT_MINIMUM.get(field.name, 1)
        parse = _int_at_least(minimum, "positive" if minimum == 1 else "non-negative")
    elif field.type is float:
        parse = _number  # TrainConfig checks the range and says what to use
    else:
        raise TypeError(f"no command-line type for TrainConfig.{field.name} ({field.type})")
    word = TRAIN_NONE_WORDS.get(field.name)
    return _or_word(parse, word) if field.optional and word else parse


def _train_field_default(field) -> str:
    if field.default is None:
        return TRAIN_NONE_WORDS.get(field.name) or TRAIN_NONE_DEFAULTS.get(field.name, "none")
    return str(field.default)


MODEL_OVERRIDES = tuple(name for name in MODEL_FIELDS if name != "seed")  # the model's seed is the training seed
MODEL_ARGS = {  # type or choices, and one help line, per overridable model field
    "n_layers": (dict(type=_positive_int), "transformer blocks"),
    "n_heads": (dict(type=_positive_int), "attention heads per block"),
    "d_model": (dict(type=_positive_int), "width of the residual stream"),
    "d_head": (dict(type=_positive_int), "width of each attention head"),
    "d_mlp": (dict(type=_positive_int), "hidden width of each MLP"),
    "act_fn": (dict(choices=list(ACT_FNS)), "the MLPs' activation function"),
    "normalization_type": (dict(type=_normalization, metavar="{LN,none}"), "LN (LayerNorm) or none"),
    "eps": (dict(type=_positive_number), "LayerNorm epsilon"),
}


def _preset_values() -> dict[str, dict]:
    """Each preset's model fields as model_config fills them in (the task only sets n_ctx and d_vocab)."""
    task = make_task("addition")
    return {preset: model_config(task, preset) for preset in PRESETS}


PRESET_DEFAULT = inspect.signature(model_config).parameters["preset"].default  # model_config's own default


def _preset_default_text(name: str, presets: dict[str, dict]) -> str:
    values = {preset: _shown(cfg[name]) for preset, cfg in presets.items()}
    if len(set(values.values())) == 1:
        return f"from the preset: {next(iter(values.values()))}"
    return "from the preset: " + ", ".join(f"{preset} {value}" for preset, value in values.items())


def _add_train_args(p: argparse.ArgumentParser) -> None:
    _add_task_args(p, task_required=False)

    g = p.add_argument_group("model", "model fields override the preset's; not with --resume")
    g.add_argument("--preset", choices=list(PRESETS), default=argparse.SUPPRESS, help=f"the model's size and shape (default: {PRESET_DEFAULT})")
    presets = _preset_values()
    for name in MODEL_OVERRIDES:
        kind, text = MODEL_ARGS[name]
        g.add_argument(_flag(name), **kind, default=argparse.SUPPRESS, help=f"{text} (default: {_preset_default_text(name, presets)})")

    g = p.add_argument_group("training", "TrainConfig fields; with --resume, the run's recorded value unless given")
    for field in config_fields(TrainConfig):
        text = TRAIN_HELP.get(field.name, f"TrainConfig.{field.name}")
        kind = dict(choices=[c for c in TRAIN_CHOICES[field.name] if c is not None]) if field.name in TRAIN_CHOICES else {}
        g.add_argument(_flag(field.name), type=_train_field_type(field), **kind, default=argparse.SUPPRESS,
                       help=f"{text} (default: {_train_field_default(field)})")

    p.add_argument("--extra-pairs", type=Path, metavar="CSV",
                   help="a CSV with columns a,b: pairs to train on beside the ID split, e.g. OOD ones (default: none)")
    p.add_argument("--out", type=Path, help="the new run directory (required unless --resume)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue this run from its latest checkpoint (default: train a new run into --out)")


def _given(args, names) -> dict:
    """The options among ``names`` written on the command line (their parser default is SUPPRESS)."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


# --- the parser -------------------------------------------------------------------------------------

DEVICE_HELP = "where the model runs: cpu, cuda, cuda:N or auto (CUDA when there is one)"


def _add_device(p: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    p.add_argument("--device", default="cpu", help=help)


def _add_sampling_args(p: argparse.ArgumentParser, run_help: str, n_help: str) -> None:
    """evaluate's and relations' options: a run, and how many pairs of which OOD width to sample."""
    p.add_argument("run_dir", type=Path, help=run_help)
    p.add_argument("--ood-digits", type=_positive_int, help="digits of the OOD operands (default: train digits + 1)")
    p.add_argument("--n", type=_positive_int, default=10_000, help=n_help)
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the sampled pairs")
    _add_device(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equiv-tools", description="Train and analyse small transformers on arithmetic.",
                                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_help = f"a run directory, or a shipped run's name ({', '.join(shipped_runs()) or 'none installed'})"

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)

    p = command("train", "train a model into a new run directory, or --resume one")
    _add_train_args(p)
    _add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    _add_sampling_args(command("evaluate", "ID and OOD exact-match accuracy of a run"), run_help, "pairs per split")

    p = command("import-mingpt", "import a minGPT checkpoint (e.g. the paper's) as a run directory")
    p.add_argument("src", type=Path, help="the minGPT .pt file")
    p.add_argument("out_dir", type=Path, help="the new run directory")
    _add_task_args(p)
    p.add_argument("--n-heads", type=_positive_int, default=3, help="attention heads (gpt-nano: 3)")
    _add_device(p, "checked as elsewhere (cpu, cuda, cuda:N or auto); the import itself runs on the CPU")

    p = command("import-grokking", "import a grokked model in Nanda et al.'s format as a run directory (grokking preset)")
    p.add_argument("src", type=Path, help="the weights (.safetensors, Nanda et al.'s naming)")
    p.add_argument("out_dir", type=Path, help="the new run directory")
    p.add_argument("--config", type=Path, help="the run's config JSON, for p (default: p = the embedding's vocabulary - 1)")
    _add_device(p, "checked as elsewhere (cpu, cuda, cuda:N or auto); the import itself runs on the CPU")

    p = command("predict", "greedy answers for the pairs in a CSV with columns a,b")
    p.add_argument("run_dir", type=Path, help=run_help)
    p.add_argument("--input", type=Path, required=True, help="CSV with columns a,b (non-negative integers)")
    p.add_argument("--output", type=Path, required=True, help="CSV to write: a,b,prediction (its folder must exist)")
    _add_device(p)

    p = command("relations", "rank candidate relations by agreement with the model on OOD inputs")
    _add_sampling_args(p, run_help, "OOD pairs")
    p.add_argument("--search", action="store_true",
                   help="rank the grammar of digit truncations (search_relations) instead of the task's candidates, and say if none fits")

    p = command("reproduce", "the paper's headline numbers on its checkpoints and the kit's models")
    p.add_argument("--paper-dir", type=Path,
                   help="folder holding exploregpt-adder/ (default: $EQUIV_TOOLS_PAPER_DIR, else ../shared/paper)")
    p.add_argument("--data-dir", type=Path, help="a folder of run directories (default: the shipped runs: "
                   "$EQUIV_TOOLS_DATA_DIR, else the package's data)")
    p.add_argument("--n", type=_positive_int, default=5000, help="pairs per split and model")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the sampled pairs")
    _add_device(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    p = command("fourier", "Fourier analysis of a modular-addition run: top and key frequencies, restricted and excluded loss")
    p.add_argument("run_dir", type=Path, help=run_help)
    _add_device(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    p = command("sweep", "train and measure many runs on a Dask cluster; write DIR/results.csv, one row per run")
    p.add_argument("spec", type=Path, help="the sweep's YAML spec (grid and/or runs; see README, 'Sweeps')")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the runs and results.csv (made if missing); on a real cluster, storage every worker shares")
    p.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://HOST:8786 (default: an embedded LocalCluster)")
    p.add_argument("--workers", type=_positive_int, help="worker processes of the embedded cluster (default: one per CPU core)")
    _add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("scorecard", "judge one or more runs on every axis at once: ID and OOD accuracy, relation, errors, cost, stages")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN", help=run_help)
    p.add_argument("--n", type=_positive_int, default=2000, help="pairs per split and OOD setting")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the sampled pairs")
    p.add_argument("--digit-cost", type=_number, nargs="+", default=[1.0], metavar="COST",
                   help="cost of a wrong answer digit: one number, or one per answer digit, units first")
    p.add_argument("--plot", type=Path, metavar="FILE", help="also save the side-by-side figure (.png or .svg) (default: none)")
    _add_device(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (a list of them for several runs) instead of a table")

    p = command("remedy", "repair a run's OOD failure into a new run directory: prime, finetune, wrap, or retrain (the baseline)")
    p.add_argument("remedy", choices=list(REMEDY_OPTIONS), help="prime: train on with k OOD pairs mixed in; finetune: train on "
                   "pairs failing the weakest stage, ID guarded; wrap: add back what the relation drops; retrain: from scratch on mixed data")
    p.add_argument("run_dir", type=Path, help=run_help)
    p.add_argument("--out", type=Path, required=True, help="the new run directory (the source run is never written)")
    p.add_argument("--budget", type=_non_negative_int, help="optimizer steps (default: prime 500, finetune 200, retrain 10000; wrap takes none)")
    p.add_argument("--k", type=_non_negative_int, help="OOD pairs to train on (default: prime 50, finetune 1000, retrain 10000)")
    p.add_argument("--stage", help="finetune: the stage to target (default: the scorecard's weakest)")
    p.add_argument("--relation", help="wrap: the relation to correct by (default: the scorecard's best)")
    p.add_argument("--n", type=_positive_int, default=2000, help="pairs per split and setting of the scorecards")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the scorecards' pairs and of the training pairs drawn")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object (cost and scorecard) instead of a summary")

    p = command("plot", "save a run's main figures: training curves, category map, digit distribution")
    p.add_argument("run_dir", type=Path, help=run_help)
    p.add_argument("--out", type=Path, required=True, help="folder for the figures (made if missing)")
    p.add_argument("--format", choices=["png", "svg"], default="png", help="image format")
    p.add_argument("--ood-digits", type=_positive_int,
                   help="digits of the OOD operands for the digit distribution (default: train digits + 1)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the OOD sample and of the relation search")
    _add_device(p)
    return parser


# --- output -----------------------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(rows: list[dict], columns: dict[str, str]) -> str:
    """``rows`` as an aligned text table; ``columns`` maps row keys to headers. Numbers are right-aligned, None is '-'."""
    numeric = [all(row.get(key) is None or isinstance(row.get(key), (int, float)) for row in rows) for key in columns]
    lines = [list(columns.values())] + [[_cell(row.get(key)) for key in columns] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(text.rjust(w) if num else text.ljust(w) for text, w, num in zip(line, widths, numeric)).rstrip()
        for line in lines
    )


def _evaluation_text(result: dict) -> str:
    rows = [{"split": "ID", "pairs": result["n_id"], "accuracy": result["id_accuracy"], "which": result["id_pairs"]}]
    if result.get("all_pairs_accuracy") is not None:
        rows.append({"split": "all", "pairs": result["n_all_pairs"], "accuracy": result["all_pairs_accuracy"], "which": "every pair of the task's domain"})
    if result["ood_digits"] is not None:
        rows.append({"split": "OOD", "pairs": result["n_ood"], "accuracy": result["ood_accuracy"], "which": f"{result['ood_digits']}-digit operands"})
    head = f"{result['run']}: {result['task']}"
    tail = [] if result["ood_digits"] is not None else ["(no OOD split: every pair is in the task's domain)"]
    table = format_table(rows, {"split": "split", "pairs": "pairs", "accuracy": "accuracy", "which": "which pairs"})
    return "\n".join([head, table, *tail])


def _relations_text(report: dict) -> str:
    n_digits = max((len(r["per_digit"]) for r in report["relations"]), default=0)
    columns = {"relation": "relation", "accuracy": "accuracy", **{f"d{j}": f"digit {j}" for j in range(n_digits)}}
    rows = [{"relation": r["relation"], "accuracy": r["accuracy"], **{f"d{j}": x for j, x in enumerate(r["per_digit"])}}
            for r in report["relations"]]
    head = (f"{report['n']} OOD pairs with {report['ood_digits']}-digit operands "
            "(accuracy: exact matches; digit j: agreement at answer position j, 0 = units)")
    return head + "\n" + format_table(rows, columns)


def _search_text(report: dict) -> str:
    head = (f"{report['n']} OOD pairs with {report['ood_digits']}-digit operands; {report['searched']} relations of the grammar, "
            f"the top {len(report['relations'])} (accuracy: exact matches)")
    return "\n".join([head, format_table(report["relations"], {"relation": "relation", "accuracy": "accuracy"}), report["note"]])


def _reproduce_text(rows: list[dict]) -> str:
    columns = {"model": "model", "task": "task", "id_accuracy": "ID acc", "ood_accuracy": "OOD acc",
               "best_relation": "best relation on OOD", "best_relation_accuracy": "its acc", "status": "status"}
    notes = [f"{row['model']}: {row['reason']}" for row in rows if row.get("reason")]
    return "\n".join([format_table(rows, columns), *notes])


def _final_accuracies(metrics) -> str:
    final = metrics[metrics.step == metrics.step.max()]
    return ", ".join(f"{r.split} accuracy {r.accuracy:.4f}" for r in final.itertuples())


# --- commands ---------------------------------------------------------------------------------------


def _device(args) -> str:
    """``args.device`` resolved ('auto' -> 'cuda:0' or 'cpu'); InputError where it names a GPU this machine lacks."""
    from equiv_tools.forward.devices import resolve_device

    return str(resolve_device(args.device))


def _cmd_train(args, argv) -> int:
    training = _given(args, TRAIN_FIELDS)
    if args.resume is not None:
        return _resume(args, training)
    if args.task is None or args.out is None:
        raise InputError("train needs --task and --out (or --resume RUN_DIR)")
    task = _task_from_args(args)
    recipe = training.pop("recipe", None)
    cfg = TrainConfig(**training) if recipe is None else TrainConfig.from_recipe(recipe, **training)
    preset = getattr(args, "preset", PRESET_DEFAULT)
    overrides = _given(args, MODEL_OVERRIDES)
    model_config(task, preset, seed=cfg.seed, **overrides)  # checks the model fields before torch is imported
    RunDir(args.out).require_new()
    device = _device(args)
    from equiv_tools.analysis.evaluation import read_pairs
    from equiv_tools.runs.training import train

    extra = None if args.extra_pairs is None else read_pairs(args.extra_pairs)
    metrics = train(task, args.out, preset=preset, train_cfg=cfg, model_overrides=overrides, command=["equiv-tools", *argv],
                    progress=not args.quiet, device=device, extra_pairs=extra)
    print(f"trained {args.out}: {_final_accuracies(metrics)}")
    return 0


def _resume(args, training: dict) -> int:
    fixed = [name for name in ("task", *TASK_FIELDS) if getattr(args, name) is not None]
    fixed += [*_given(args, ("preset", *MODEL_OVERRIDES))] + [name for name in ("out", "extra_pairs") if getattr(args, name) is not None]
    if fixed:
        raise InputError(f"--resume keeps the run's task and model; drop {', '.join(map(_flag, fixed))} "
                         "(only training options, --device and --quiet go with --resume)")
    recorded = RunDir(args.resume).read_config()
    if recorded.training is not None:  # the library checks again; this answers before torch is imported
        TrainConfig.from_dict({**asdict(recorded.training), **training})
    device = _device(args)
    from equiv_tools.runs.training import resume

    metrics = resume(args.resume, progress=not args.quiet, device=device, **training)
    print(f"resumed {args.resume}: {_final_accuracies(metrics)}")
    return 0


def _cmd_evaluate(args, argv) -> int:
    device = _device(args)
    from equiv_tools.analysis.evaluation import evaluate_run
    from equiv_tools.runs.models import load_run

    result = evaluate_run(load_run(args.run_dir, device=device), n=args.n, ood_digits=args.ood_digits, seed=args.seed)
    print(json.dumps(result) if args.json else _evaluation_text(result))
    return 0


def _cmd_import(args, argv) -> int:
    task = _task_from_args(args)
    if not args.src.is_file():
        raise InputError(f"{args.src} does not exist")
    _device(args)  # checked like everywhere; import_mingpt only converts weights to a file, so it stays on the CPU
    from equiv_tools.runs.imports import import_mingpt

    run = import_mingpt(args.src, args.out_dir, task, n_heads=args.n_heads, command=["equiv-tools", *argv])
    print(f"imported {args.src} into {run.path}")
    return 0


def _cmd_import_grokking(args, argv) -> int:
    for path in (args.src, args.config):
        if path is not None and not path.is_file():
            raise InputError(f"{path} does not exist")
    RunDir(args.out_dir).require_new("pick a new output directory")
    _device(args)  # checked like everywhere; the import only converts weights to a file, so it stays on the CPU
    from equiv_tools.runs.imports import import_grokking

    run = import_grokking(args.src, args.out_dir, config=args.config, command=["equiv-tools", *argv])
    print(f"imported {args.src} into {run.path}: {run.task.describe()}, preset grokking")
    return 0


def _cmd_predict(args, argv) -> int:
    if args.output.is_dir():
        raise InputError(f"--output {args.output} is a folder; name a CSV file to write")
    if not args.output.parent.is_dir():
        raise InputError(f"cannot write {args.output}: the folder {args.output.parent} does not exist; create it first")
    if not args.input.is_file():
        raise InputError(f"{args.input} does not exist")
    device = _device(args)
    from equiv_tools.analysis.evaluation import predict_csv
    from equiv_tools.runs.models import load_run

    run = load_run(args.run_dir, device=device)
    frame = predict_csv(run, args.input, args.output)
    n_id = int(run.task.is_in_distribution(frame["a"], frame["b"]).sum()) if len(frame) else 0
    pairs = "pair" if len(frame) == 1 else "pairs"
    print(f"predicted {len(frame)} {pairs} with {args.run_dir} -> {args.output} (ID {n_id}, OOD {len(frame) - n_id})")
    return 0


def _cmd_relations(args, argv) -> int:
    device = _device(args)
    from equiv_tools.analysis.discovery import relations_report
    from equiv_tools.analysis.relation_search import search_report
    from equiv_tools.runs.models import load_run

    run = load_run(args.run_dir, device=device)
    if args.search:
        report = search_report(run, n=args.n, ood_digits=args.ood_digits, seed=args.seed)
        print(json.dumps(report) if args.json else _search_text(report))
        return 0
    report = relations_report(run, n=args.n, ood_digits=args.ood_digits, seed=args.seed)
    print(json.dumps(report) if args.json else _relations_text(report))
    return 0


def _cmd_reproduce(args, argv) -> int:
    device = _device(args)
    from equiv_tools.analysis.reproduce import reproduce

    rows = reproduce(paper_dir=args.paper_dir, data_dir=args.data_dir, n=args.n, seed=args.seed, device=device)
    print(json.dumps({"rows": rows}) if args.json else _reproduce_text(rows))
    return 0


def _fourier_text(summary: dict) -> str:
    names = ("loss", "restricted_loss", "excluded_loss", "total_weight_norm", "fourier_sparsity")
    return "\n".join([
        f"{summary['run']}: p = {summary['p']}",
        "embedding's top frequencies: " + ", ".join(map(str, summary["embedding_top_frequencies"])),
        "key frequencies (neurons):   " + (", ".join(map(str, summary["key_frequencies"])) or "none"),
        *(f"{name + ':':<19} {summary[name]:.4g}" for name in names),
        f"(losses over all p^2 pairs; excluded loss over {summary['excluded_loss_pairs']})",
    ])


def _cmd_fourier(args, argv) -> int:
    device = _device(args)
    from equiv_tools.analysis.fourier import fourier_summary
    from equiv_tools.runs.models import load_run

    summary = fourier_summary(load_run(args.run_dir, device=device))
    print(json.dumps(summary) if args.json else _fourier_text(summary))
    return 0


def _cmd_plot(args, argv) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} is a file; name a folder for the figures")
    device = _device(args)
    from equiv_tools.runs.models import load_run
    from equiv_tools.views.figures import run_figures

    run = load_run(args.run_dir, device=device)
    figures = run_figures(run, ood_digits=args.ood_digits, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (fig, note) in figures.items():
        if fig is None:
            print(f"skipped {name}: {note}")
            continue
        path = args.out / f"{name}.{args.format}"
        fig.savefig(path, format=args.format)
        print(f"wrote {path}" + (f": {note}" if note else ""))
    return 0


SCORECARD_ROWS = {"id_accuracy": "ID accuracy", "ood_accuracy": "OOD accuracy", "relation_consistency": "follows the best relation",
                  "class_map_agreement": "same answer as its ID class", "stage": "stage", "cost_weighted_error": "cost-weighted error"}


def _scorecard_text(cards: list[dict]) -> str:
    from equiv_tools.analysis.scorecard import scorecard_table

    table = scorecard_table(cards)
    table = table[table.axis.isin(list(SCORECARD_ROWS))]
    rows = []
    for (axis, setting), group in table.groupby(["axis", "setting"], sort=False):
        values = dict(zip(group.run, group.value))
        rows.append({"measure": f"{SCORECARD_ROWS[axis]} ({setting})" if setting else SCORECARD_ROWS[axis], **values})
    runs = list(dict.fromkeys(table.run))
    lines = [format_table(rows, {"measure": "measure", **{run: run for run in runs}})]
    lines += [f"{card['run']}: best relation {card['best_relation']}" for card in cards if card["best_relation"]]
    return "\n".join(lines)


def _cmd_scorecard(args, argv) -> int:
    if args.plot is not None and args.plot.suffix not in (".png", ".svg"):
        raise InputError(f"--plot {args.plot} must end in .png or .svg")
    device = _device(args)
    from equiv_tools.analysis.scorecard import scorecard, scorecard_table
    from equiv_tools.runs.models import load_run

    cost = args.digit_cost[0] if len(args.digit_cost) == 1 else args.digit_cost
    cards = [scorecard(load_run(run_dir, device=device), n=args.n, cost=cost, seed=args.seed) for run_dir in args.run_dirs]
    if args.plot is not None:
        from equiv_tools.views.plots import plot_scorecard

        plot_scorecard(scorecard_table(cards)).savefig(args.plot)
    print(json.dumps(cards[0] if len(cards) == 1 else cards) if args.json else _scorecard_text(cards))
    return 0


# the command-line options each remedy takes (tests/test_remedies.py checks them against the functions' parameters)
REMEDY_OPTIONS = {"prime": {"budget", "k"}, "finetune": {"budget", "k", "stage"}, "wrap": {"budget", "relation"}, "retrain": {"budget", "k"}}


def _cmd_remedy(args, argv) -> int:
    options = {name: getattr(args, name) for name in ("budget", "k", "stage", "relation") if getattr(args, name) is not None}
    allowed = REMEDY_OPTIONS[args.remedy]
    if set(options) - allowed:
        raise InputError(f"{args.remedy} takes {', '.join(map(_flag, sorted(allowed)))}; drop {', '.join(map(_flag, sorted(set(options) - allowed)))}")
    RunDir(args.out).require_new("pick a new output directory for the remedy")
    from equiv_tools.analysis.remedies import REMEDIES

    result = REMEDIES[args.remedy](args.run_dir, args.out, n=args.n, seed=args.seed, progress=not args.quiet, **options)
    if args.json:
        print(json.dumps({"run_dir": str(result.run_dir), "cost": result.cost, "scorecard": result.scorecard}))
    else:
        card = result.scorecard
        print(f"{args.remedy}: wrote {result.run_dir} in {result.cost['steps']} steps ({result.cost['seconds']:.1f} s): "
              f"ID accuracy {card['id_accuracy']:.4f}, OOD accuracy {card['ood_accuracy']:.4f}")
    return 0


def _cmd_sweep(args, argv) -> int:
    from equiv_tools.core.sweep_spec import jobs_from_spec, read_spec

    if args.scheduler is not None and args.workers is not None:
        raise InputError("--workers sizes the embedded cluster; with --scheduler the cluster's own workers run the jobs")
    spec = read_spec(args.spec)
    jobs_from_spec(spec)  # a bad spec is refused before torch or Dask start
    device = _device(args) if args.scheduler is None else args.device  # a cluster's workers resolve it on their own machines
    from equiv_tools.analysis.sweep import RESULTS_FILE, sweep

    table = sweep(spec, args.out, scheduler=args.scheduler, workers=args.workers, device=device, progress=not args.quiet)
    failed = table[table.status != "ok"]
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    print(format_table(rows, {"run": "run", "id_accuracy": "ID acc", "ood_accuracy": "OOD acc",
                                                   "best_relation": "best relation", "best_relation_share": "share",
                                                   "status": "status"}))
    print(f"wrote {args.out / RESULTS_FILE}: {len(table)} runs, {len(failed)} failed")
    for row in failed.itertuples():
        print(f"{row.run}: {row.error}", file=sys.stderr)
    return 1 if len(failed) else 0


COMMANDS = {
    "train": _cmd_train, "evaluate": _cmd_evaluate, "import-mingpt": _cmd_import, "import-grokking": _cmd_import_grokking,
    "predict": _cmd_predict, "relations": _cmd_relations, "reproduce": _cmd_reproduce, "plot": _cmd_plot, "fourier": _cmd_fourier,
    "sweep": _cmd_sweep, "scorecard": _cmd_scorecard, "remedy": _cmd_remedy,
}


def main(argv: Optional[list[str]] = None) -> int:
    """Run one command; returns the exit status (2 for bad input). argparse usage errors raise SystemExit(2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, argv)
    except InputError as exc:
        print(f"equiv-tools: error: {exc}", file=sys.stderr)
        return 2


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # python -m equiv_tools.cli, as tests/test_reliability.py runs it
    entry()
