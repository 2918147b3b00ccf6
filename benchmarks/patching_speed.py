"""Activation patching speed: the kit's sweeps against transformer_lens.patching, side by side.

On data/add3_nano (eval mode), 200 clean prompts of 15 tokens (ID inputs, teacher-forced on the model's
greedy answers) and 200 corrupted ones (a's hundreds digit moved by one), with the logit difference at
the hundreds answer position as metric, times two sweeps each way: resid_pre by layer x position
(``get_act_patch_resid_pre``) and head outputs by layer x position x head
(``get_act_patch_attn_head_out_by_pos``). TransformerLens is warmed up first; each timing is the best
of --repeats. The last line sums both sweeps and gives the largest difference between the results.

    python benchmarks/patching_speed.py [--n 200] [--repeats 3]
"""
import argparse

import numpy as np
import torch
from decode_speed import best_time  # benchmarks/ is on sys.path when a script in it runs
from transformer_lens import patching as tl_patching

from equiv_tools.analysis import patching
from equiv_tools.runs.models import load_run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    run = load_run("add3_nano")
    model, task = run.model.eval(), run.task
    a, b = task.sample_id(args.n, seed=0)
    moved = a + np.where((a // 100) % 10 == 9, -900, 100)
    clean_full, corrupted_full = patching.answered_tokens(model, task, a, b), patching.answered_tokens(model, task, moved, b)
    metric = patching.logit_difference(task, clean_full, corrupted_full, answer_position=2)
    clean, corrupted = clean_full[:, :-1], corrupted_full[:, :-1]  # [n, 15]
    torch.set_grad_enabled(False)
    _, clean_cache = model.run_with_cache(clean)
    sweeps = [
        ("resid_pre by layer x position", patching.patch_resid_pre_by_pos, tl_patching.get_act_patch_resid_pre),
        ("head outputs by layer x position x head", patching.patch_head_out_by_pos, tl_patching.get_act_patch_attn_head_out_by_pos),
    ]
    print(f"add3_nano, {clean.shape[0]} prompts of {clean.shape[1]} tokens, best of {args.repeats}")
    total_kit = total_tl = max_diff = 0.0
    for name, kit, tl in sweeps:
        tl(model, corrupted, clean_cache, metric)  # warm-up: the first call is slower
        kit(model, corrupted, clean, metric)
        kit_s, kit_out = best_time(lambda: kit(model, corrupted, clean, metric), args.repeats)
        tl_s, tl_out = best_time(lambda: tl(model, corrupted, clean_cache, metric), args.repeats)
        diff = float((kit_out - tl_out.cpu()).abs().max())
        print(f"{name:42s} {tuple(kit_out.shape)}: kit {kit_s:.3f} s, TransformerLens {tl_s:.3f} s, ratio {tl_s / kit_s:.1f}x, max abs diff {diff:.1e}")
        total_kit, total_tl, max_diff = total_kit + kit_s, total_tl + tl_s, max(max_diff, diff)
    print(f"patching: kit {total_kit:.2f} s, TransformerLens {total_tl:.2f} s, ratio {total_tl / total_kit:.1f}x, max abs diff {max_diff:.1e}")


if __name__ == "__main__":
    main()
