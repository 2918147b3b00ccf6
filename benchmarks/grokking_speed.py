"""Grokking speed: a recipe on seeds 0-4, wall time and steps until test accuracy reaches 99% and holds, and whether
each run grokked cleanly.

Trains ``TrainConfig.from_recipe(recipe, seed=s)`` (default recipe: clean) on modular addition, p = 113, 30% of the
12,769 pairs for training (the kit's own seeded split), into a temporary folder, and times each
evaluation from the start of ``train``. Reached: ``grokking.grokked_step`` (99% test accuracy,
every later evaluation at or above 98%, and the run going on for at least a fifth more steps).
A seed that never gets there counts as infinitely slow in the medians. Clean: ``grokking.is_clean`` (train accuracy
never below 0.95 after it first reached 0.99: no collapse); the test accuracy when memorisation completes is printed too.

    python benchmarks/grokking_speed.py [--seeds 0 1 2 3 4] [--recipe clean]
"""
import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from equiv_tools import ModularTask, TrainConfig, train
from equiv_tools.runs.grokking import grokked_step, is_clean, memorised_step, train_accuracy_floor


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--recipe", default="clean")
    args = parser.parse_args()

    task = ModularTask(p=113, op="add", train_fraction=0.3)
    seconds, steps, clean = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfg = TrainConfig.from_recipe(args.recipe, seed=seed)
            clock = {}
            start = time.perf_counter()
            metrics = train(task, Path(tmp) / f"seed{seed}", preset="grokking", train_cfg=cfg, progress=False,
                            on_eval=lambda rows: clock.setdefault(rows[0]["step"], time.perf_counter() - start))
            total = time.perf_counter() - start
            step = grokked_step(metrics)
            clean.append(is_clean(metrics))
            memorised = memorised_step(metrics)
            test = metrics[metrics.split == "id_test"].set_index("step").accuracy
            print(f"seed {seed}: memorised at step {memorised} with test accuracy "
                  f"{'-' if memorised is None else f'{test[memorised]:.3f}'}, lowest train accuracy after it "
                  f"{train_accuracy_floor(metrics)}: {'clean' if clean[-1] else 'collapsed'}")
            if step is None:
                seconds.append(math.inf)
                steps.append(math.inf)
                print(f"seed {seed}: did not reach 99% test accuracy and hold it in {cfg.steps} steps ({total:.1f} s)")
            else:
                seconds.append(clock[step])
                steps.append(step)
                print(f"seed {seed}: 99% test accuracy at step {step}, {clock[step]:.1f} s ({cfg.steps} steps in {total:.1f} s)")
    reached = sum(math.isfinite(s) for s in seconds)
    print(f"grokking: {args.recipe} recipe reached 99% test on {reached}/{len(args.seeds)} seeds, clean on {sum(clean)}/{len(args.seeds)}, "
          f"median {statistics.median(seconds):.1f} s, median {statistics.median(steps):.0f} steps")


if __name__ == "__main__":
    main()
