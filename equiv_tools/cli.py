"""`equiv-tools` commands: thin wrappers over the Python API.

Arguments are parsed and validated with the torch-free modules first, so a
usage error answers at once; a bad input exits with status 2 and one line
naming the problem, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from .config import PRESETS, TrainConfig, require_new_run_dir
from .errors import InputError
from .tasks import TASKS, make_task


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


def _batch_size(text: str) -> Optional[int]:
    return None if text == "full" else _positive_int(text)


def _add_task_args(p: argparse.ArgumentParser, task_required: bool = True) -> None:
    p.add_argument("--task", choices=list(TASKS), required=task_required, help="the task's kind")
    p.add_argument("--train-digits", type=_positive_int, help="ID operands have at most this many digits")
    p.add_argument("--width", type=_positive_int, help="operand width in the digit layout (default 5 for addition)")
    p.add_argument("--p", type=_positive_int, help="the modulus, for the modular tasks (default 113)")
    p.add_argument("--op", choices=["add", "mul"], help="the modular tasks' operation (default add)")
    p.add_argument("--train-fraction", type=float, help="share of pairs trained on, grokking layout (default 0.3)")


TASK_FIELDS = ("train_digits", "width", "p", "op", "train_fraction")


def _task_from_args(args):
    fields = {name: getattr(args, name) for name in TASK_FIELDS if getattr(args, name) is not None}
    return make_task(args.task, **fields)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equiv-tools", description="Train and analyse small transformers on arithmetic.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model into a new run directory, or --resume one")
    _add_task_args(p, task_required=False)
    p.add_argument("--preset", choices=list(PRESETS), default="nano")
    p.add_argument("--out", type=Path, help="the new run directory")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run from its latest checkpoint")
    defaults = TrainConfig()
    p.add_argument("--steps", type=_positive_int)
    p.add_argument("--batch-size", type=_batch_size, default=defaults.batch_size, help="an integer, or 'full'")
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--warmup-steps", type=_non_negative_int, default=defaults.warmup_steps)
    p.add_argument("--grad-clip", type=float, default=defaults.grad_clip)
    p.add_argument("--eval-every", type=_positive_int, default=defaults.eval_every)
    p.add_argument("--checkpoint-every", type=_positive_int, default=defaults.checkpoint_every)
    p.add_argument("--n-train", type=_positive_int)
    p.add_argument("--n-test", type=_positive_int)
    p.add_argument("--n-eval", type=_positive_int, default=defaults.n_eval)
    p.add_argument("--ood-digits", type=_positive_int)
    p.add_argument("--seed", type=_non_negative_int, default=defaults.seed)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("evaluate", help="ID and OOD exact-match accuracy of a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--ood-digits", type=_positive_int)
    p.add_argument("--n", type=_positive_int, default=10_000)
    p.add_argument("--seed", type=_non_negative_int, default=0)

    p = sub.add_parser("import-mingpt", help="import a minGPT checkpoint (e.g. the paper's) as a run directory")
    p.add_argument("src", type=Path)
    p.add_argument("out_dir", type=Path)
    _add_task_args(p)
    p.add_argument("--n-heads", type=_positive_int, default=3, help="attention heads (gpt-nano: 3)")

    p = sub.add_parser("predict", help="greedy answers for the pairs in a CSV with columns a,b")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)

    p = sub.add_parser("relations", help="rank candidate relations by agreement with the model on OOD inputs")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--ood-digits", type=_positive_int)
    p.add_argument("--n", type=_positive_int, default=10_000)
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("reproduce", help="the paper's headline numbers on its checkpoints and the kit's models")
    p.add_argument("--paper-dir", type=Path, help="folder holding exploregpt-adder/ (else $EQUIV_TOOLS_PAPER_DIR, else ../shared/paper)")
    p.add_argument("--data-dir", type=Path, default=None, help="the kit's shipped runs (default: data/ of this checkout)")
    p.add_argument("--n", type=_positive_int, default=5000)
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--json", action="store_true")
    return parser


def _print(obj, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj))
    else:
        for key, value in obj.items():
            print(f"{key}: {value}")


def _cmd_train(args, argv) -> int:
    if args.resume is not None:
        if args.out is not None or args.task is not None:
            raise InputError("--resume continues an existing run: do not pass --out or --task with it")
        from .training import resume

        resume(args.resume, steps=args.steps, progress=not args.quiet)
        print(f"resumed {args.resume}")
        return 0
    if args.task is None or args.out is None:
        raise InputError("train needs --task and --out (or --resume RUN_DIR)")
    task = _task_from_args(args)
    cfg = TrainConfig(
        steps=args.steps or TrainConfig().steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, grad_clip=args.grad_clip, eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every, n_train=args.n_train, n_test=args.n_test, n_eval=args.n_eval,
        ood_digits=args.ood_digits, seed=args.seed,
    )
    require_new_run_dir(args.out)  # before importing torch
    from .training import train

    metrics = train(task, args.out, preset=args.preset, train_cfg=cfg, command=["equiv-tools", *argv], progress=not args.quiet)
    final = metrics[metrics.step == metrics.step.max()]
    print(f"trained {args.out}: " + ", ".join(f"{r.split} accuracy {r.accuracy:.4f}" for r in final.itertuples()))
    return 0


def _cmd_evaluate(args, argv) -> int:
    from .evaluation import evaluate_run
    from .models import load_run

    _print(evaluate_run(load_run(args.run_dir), n=args.n, ood_digits=args.ood_digits, seed=args.seed), args.json)
    return 0


def _cmd_import(args, argv) -> int:
    task = _task_from_args(args)
    if not args.src.is_file():
        raise InputError(f"{args.src} does not exist")
    from .models import import_mingpt

    run = import_mingpt(args.src, args.out_dir, task, n_heads=args.n_heads, command=["equiv-tools", *argv])
    print(f"imported {args.src} into {run.path}")
    return 0


def _cmd_predict(args, argv) -> int:
    from .evaluation import predict_csv
    from .models import load_run

    predict_csv(load_run(args.run_dir), args.input, args.output)
    return 0


def _cmd_relations(args, argv) -> int:
    from .discovery import relations_report
    from .models import load_run

    _print(relations_report(load_run(args.run_dir), n=args.n, ood_digits=args.ood_digits, seed=args.seed), args.json)
    return 0


def _cmd_reproduce(args, argv) -> int:
    from .reproduce import reproduce

    rows = reproduce(paper_dir=args.paper_dir, data_dir=args.data_dir, n=args.n, seed=args.seed)
    if args.json:
        print(json.dumps({"rows": rows}))
    else:
        for row in rows:
            print(json.dumps(row))
    return 0


COMMANDS = {
    "train": _cmd_train, "evaluate": _cmd_evaluate, "import-mingpt": _cmd_import,
    "predict": _cmd_predict, "relations": _cmd_relations, "reproduce": _cmd_reproduce,
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
