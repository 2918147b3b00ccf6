"""Greedy decoding speed: the kit's decoder against the batched naive loop, side by side.

Decodes 10,000 OOD sequences (both operands 4 digits) of the paper's model_s2
(when its file is found; see equiv_tools.analysis.reproduce) and of the kit's add3_nano,
with the same batch size, checks that the answers are identical, and prints
sequences per second and the ratio. Each timing is the best of --repeats runs.
Then, in a fresh subprocess, a map of 10^6 inputs (``maps.grid_answers`` on
add3_nano, a and b in 1000..1999): its rate against the kit's, and how much it
adds to the process's peak memory (VmHWM after, minus VmRSS before). Then what
the lean forward's probe against the bridge (``forward.lean.lean_forward``) costs:
the kit's decode on add3_nano with and without it, alternating, best of 2 x --repeats
runs each. The last line sums up add3_nano.

    python benchmarks/decode_speed.py [--n 10000] [--batch-size 1000] [--repeats 3]
"""
import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from equiv_tools.analysis.maps import grid_answers
from equiv_tools.analysis.reproduce import load_paper_model, paper_checkpoint
from equiv_tools.forward import decoding
from equiv_tools.forward.decoding import greedy_decode, naive_greedy_decode
from equiv_tools.forward.lean import LeanModel, fast_path_blocker
from equiv_tools.runs.models import load_run

MAP_VALUES = range(1000, 2000)  # a 1000 x 1000 OOD grid
lean_forward_with_probe = decoding.lean_forward


def best_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def map_child():
    """Run in the subprocess: time one 10^6-input map and print its size, seconds and added peak memory as JSON."""
    run = load_run("add3_nano")
    grid_answers(run.model, run.task, MAP_VALUES[:20], MAP_VALUES[:20])  # warm-up
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    frame = grid_answers(run.model, run.task, MAP_VALUES, MAP_VALUES)
    seconds = time.perf_counter() - start
    print(json.dumps({"n": len(frame), "seconds": seconds, "added_mib": (_status_kib("VmHWM") - before) / 1024}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--map-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.map_child:
        return map_child()

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

    child = subprocess.run([sys.executable, __file__, "--map-child"], capture_output=True, text=True, check=True)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    map_rate, kit_rate = result["n"] / result["seconds"], args.n / t_kit
    print(f"map: {result['n']:,} inputs (maps.grid_answers, a and b in 1000..1999) at {map_rate:,.0f} seq/s, "
          f"{map_rate / kit_rate:.2f} of the kit's rate, adding {result['added_mib']:,.0f} MiB to peak memory")
    run = models["kit add3_nano"]
    a, b = run.task.sample_ood(args.n, digits=4, seed=0)
    decode = lambda: greedy_decode(run.model, run.task, a, b, batch_size=args.batch_size)
    probed, unprobed = [], []
    for _ in range(2 * args.repeats):  # alternating, so drift of the machine's speed hits both alike
        probed.append(best_time(decode, 1)[0])
        decoding.lean_forward = lambda model: None if fast_path_blocker(model) else LeanModel(model)  # no probe
        try:
            unprobed.append(best_time(decode, 1)[0])
        finally:
            decoding.lean_forward = lean_forward_with_probe
    print(f"probe: the kit's decode takes {min(probed):.3f} s with the probe, {min(unprobed):.3f} s without "
          f"({100 * (min(probed) / min(unprobed) - 1):+.1f}%)")
    print(f"decode: kit {kit_rate:.0f} seq/s, naive {args.n / t_naive:.0f} seq/s, ratio {t_naive / t_kit:.1f}x, identical {identical}")


if __name__ == "__main__":
    main()
