"""Sweep scaling: the same 8 small jobs (a 1-layer 2-digit adder, seeds 0-7, about 10 s each) on an embedded
LocalCluster of 1 worker and of 2 workers, side by side in one process.

Each cluster is started and its workers have imported the kit before the clock starts, so the times are the
sweep's own: scheduling, training, measuring, gathering the table. Each job trains on one torch thread.

    python benchmarks/sweep_scaling.py [--jobs 8] [--steps 600]
"""
import argparse
import importlib
import logging
import tempfile
import time

import pandas as pd
from dask.distributed import Client, LocalCluster

from equiv_tools.analysis.sweep import sweep


def spec(jobs: int, steps: int) -> dict:
    return {
        "base": {"task": {"kind": "addition", "train_digits": 2, "width": 3},
                 "model": {"n_layers": 1, "d_model": 32, "n_heads": 2, "d_head": 16, "d_mlp": 64},
                 "training": {"recipe": "smooth", "steps": steps, "eval_every": 100, "checkpoint_every": steps, "n_eval": 200}},
        "grid": {"seed": list(range(jobs))},
        "evaluate": {"n": 500},
    }


def timed_sweep(workers: int, jobs: int, steps: int) -> tuple[float, pd.DataFrame]:
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        for module in ("equiv_tools.analysis.sweep", "equiv_tools.runs.training", "equiv_tools.analysis.discovery",
                       "equiv_tools.analysis.evaluation"):  # torch and TransformerLens load here, outside the clock
            client.run(importlib.import_module, module)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            table = sweep(spec(jobs, steps), out, client=client, progress=False)
            seconds = time.perf_counter() - start
    assert (table.status == "ok").all(), table.error.tolist()
    print(f"{workers} worker{'s' if workers > 1 else ''}: {seconds:.1f} s, job times {sorted(table.seconds.tolist())}")
    return seconds, table.drop(columns="seconds")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    one, rows_one = timed_sweep(1, args.jobs, args.steps)
    two, rows_two = timed_sweep(2, args.jobs, args.steps)
    pd.testing.assert_frame_equal(rows_one, rows_two)  # the results do not depend on the number of workers
    print(f"sweep: {args.jobs} jobs, 1 worker {one:.1f} s, 2 workers {two:.1f} s, speedup {one / two:.2f}x")


if __name__ == "__main__":
    main()
