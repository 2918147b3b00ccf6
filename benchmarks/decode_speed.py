"""Greedy decoding speed: the kit's decoder against the batched naive loop, side by side.

Decodes 10,000 OOD sequences (both operands 4 digits) of the paper's model_s2
(when its file is found; see equiv_tools.reproduce) and of the kit's add3_nano,
with the same batch size, checks that the answers are identical, and prints
sequences per second and the ratio. Each timing is the best of --repeats runs.

    python benchmarks/decode_speed.py [--n 10000] [--batch-size 1000] [--repeats 3]
"""
import argparse
import time

import numpy as np
import torch

from equiv_tools.decoding import greedy_decode, naive_greedy_decode
from equiv_tools.models import load_run
from equiv_tools.reproduce import load_paper_model, paper_checkpoint


def best_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    models = {"kit add3_nano": load_run("add3_nano")}
    path, reason = paper_checkpoint("model_s2.pt")
    if path is None:
        print(f"paper model_s2 skipped: {reason}")
    else:
        models = {"paper model_s2": load_paper_model("model_s2.pt"), **models}

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n={args.n}, batch size {args.batch_size}, best of {args.repeats}")
    print("| model | naive loop (seq/s) | kit (seq/s) | ratio | identical |")
    print("| --- | --- | --- | --- | --- |")
    for name, run in models.items():
        a, b = run.task.sample_ood(args.n, digits=4, seed=0)
        t_naive, naive = best_time(lambda: naive_greedy_decode(run.model, run.task, a, b, batch_size=args.batch_size), args.repeats)
        t_kit, kit = best_time(lambda: greedy_decode(run.model, run.task, a, b, batch_size=args.batch_size), args.repeats)
        identical = bool(np.array_equal(naive, kit))
        print(f"| {name} | {args.n / t_naive:,.0f} | {args.n / t_kit:,.0f} | {t_naive / t_kit:.1f}x | {identical} |")
        if not identical:
            raise SystemExit(f"{name}: the kit's answers differ from the naive loop's")


if __name__ == "__main__":
    main()
