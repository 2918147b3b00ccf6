"""No silent wrong answers, round two: each reproduction of issue 19 as a test that failed before it was mended.

The lean forward proves itself against the bridge (a probe), caches key on the weights' values, and inputs
are checked at the door (grokking import, Fourier frequencies, a relation search that finds nothing).
"""
import functools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn.utils import vector_to_parameters
from transformer_lens import patching as tl_patching

import equiv_tools as et
from equiv_tools import InputError
from equiv_tools.analysis import patching as P
from equiv_tools.analysis.fourier import fourier_losses
from equiv_tools.analysis.maps import category_shares, classify, grid_answers
from equiv_tools.analysis.relation_search import search_relations
from equiv_tools.cli import main
from equiv_tools.core.config import RunConfig, model_config
from equiv_tools.forward.decoding import naive_greedy_decode
from equiv_tools.forward.lean import fast_path_blocker, lean_forward
from equiv_tools.forward.state import model_state
from equiv_tools.runs.imports import load_grokking
from equiv_tools.runs.models import build_model, write_run
from equiv_tools.views.widgets import MapViewer
from tests.tolerance import assert_close, magnitude

WEIGHTS, CONFIG = "mod113_seed1.safetensors", "mod113_seed1_config.json"


@pytest.fixture()
def fresh_add3():
    """A copy of the shipped 3-digit adder that a test may change, and 300 ID pairs."""
    run = et.load_run("add3_nano")
    a, b = run.task.sample_id(300, seed=5)
    return run, a, b


def bridge_answers(run, a, b) -> np.ndarray:
    return run.task.decode_answer(naive_greedy_decode(run.model, run.task, a, b))


# ---- the lean forward proves itself ---------------------------------------------------------------------

def test_the_lean_forward_stands_in_for_an_unchanged_model(fresh_add3):
    run, a, b = fresh_add3
    assert lean_forward(run.model) is not None  # else the kit would be slow everywhere, though right
    assert np.array_equal(et.predict(run.model, run.task, a, b), bridge_answers(run, a, b))


def test_a_forward_replaced_by_hand_runs_on_the_bridge(fresh_add3):
    run, a, b = fresh_add3
    run.model.blocks[1].mlp.forward = lambda x, *args, **kwargs: torch.zeros_like(x)  # a quick ablation
    assert fast_path_blocker(run.model) is None  # the cheap gate cannot see it ...
    assert lean_forward(run.model) is None  # ... the probe does
    expected = bridge_answers(run, a, b)
    accuracy = float(np.mean(expected == a + b))
    assert accuracy < 0.5  # the ablation breaks the adder (0.157 measured); the kit used to answer with 1.0
    assert np.array_equal(et.predict(run.model, run.task, a, b), expected)


@pytest.mark.parametrize("field, value", [("act_fn", "relu"), ("eps", 1.0), ("normalization_type", None)])
def test_a_cfg_edited_after_the_build_runs_on_the_bridge(fresh_add3, field, value):
    run, a, b = fresh_add3
    setattr(run.model.cfg, field, value)  # the bridge keeps what it was built with; the lean forward read cfg
    assert lean_forward(run.model) is None
    assert np.array_equal(et.predict(run.model, run.task, a, b), bridge_answers(run, a, b))
    targets = a + b
    tokens = run.task.encode_answer(targets)
    prompts = torch.from_numpy(np.concatenate([run.task.encode_prompt(a, b), tokens], axis=1))[:, :-1]
    with torch.no_grad():
        logits = run.model(prompts)[:, run.task.prompt_len - 1 :]
    assert np.array_equal(et.score_digits(run.model, run.task, a, b, targets), (logits.argmax(-1) == torch.from_numpy(tokens)).numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_on_the_bridge(fresh_add3, dtype):
    run, a, b = fresh_add3
    run.model.to(dtype)  # .half() and .bfloat16() leave cfg.dtype at float32
    assert "the parameters are torch." in fast_path_blocker(run.model)
    assert np.array_equal(et.predict(run.model, run.task, a[:50], b[:50]), bridge_answers(run, a[:50], b[:50]))


# ---- caches keyed on the weights themselves ---------------------------------------------------------------

@pytest.mark.parametrize("write", ["data", "vector_to_parameters"])
def test_the_map_viewer_follows_weights_written_behind_autograds_back(write):
    run = et.load_run("add3_nano")
    viewer = MapViewer(a_range=(0, 29), b_range=(0, 29), catalog={"kit/add3_nano": lambda: run})
    assert viewer.shares["correct"] == 1.0
    state = model_state(run.model)
    if write == "data":
        run.model.blocks[1].attn.o.weight.data.zero_()
    else:
        flat = torch.cat([p.detach().reshape(-1) for p in run.model.parameters()])
        vector_to_parameters(flat.flip(0), run.model.parameters())
    assert model_state(run.model) != state
    viewer.update_map()
    fresh = category_shares(classify(grid_answers(run.model, run.task, np.arange(30), np.arange(30)),
                                     run.task.relation(viewer.relation.value)))
    assert viewer.shares == fresh and fresh["correct"] < 0.5  # the old code showed 1.0 from its cache


def test_the_state_key_sees_a_replaced_forward_and_not_a_reload(fresh_add3):
    run, _, _ = fresh_add3
    state = model_state(run.model)
    assert model_state(run.model) == state  # nothing changed, the key is stable
    run.model.blocks[0].mlp.forward = lambda x, *args, **kwargs: x
    assert model_state(run.model) != state


# ---- inputs checked at the door ---------------------------------------------------------------------------

def test_grokking_weights_of_another_head_layout_are_refused(nanda_dir, tmp_path):
    weights = load_file(nanda_dir / WEIGHTS)
    for name in ("W_Q", "W_K", "W_V"):  # [4, 32, 128] as 8 heads of 16: the same numbers, another model
        weights[f"blocks.0.attn.{name}"] = weights[f"blocks.0.attn.{name}"].reshape(8, 16, 128)
    save_file(weights, tmp_path / "eight_heads.safetensors")
    with pytest.raises(InputError, match=r"blocks.0.attn.W_Q has shape \(8, 16, 128\), but the grokking preset .* needs \(4, 32, 128\)"):
        load_grokking(tmp_path / "eight_heads.safetensors")


@pytest.mark.parametrize("field, value", [("d_model", 256), ("num_heads", 8), ("d_mlp", 1024), ("act_type", "GeLU"),
                                          ("use_ln", True), ("num_layers", 2), ("n_ctx", 4), ("d_vocab", 120)])
def test_grokking_config_fields_that_describe_another_model_are_refused(nanda_dir, tmp_path, capsys, field, value):
    config = json.loads((nanda_dir / CONFIG).read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=rf"{field} is {value!r}, but .* has {field} = "):
        load_grokking(nanda_dir / WEIGHTS, tmp_path / "config.json")
    assert main(["import-grokking", str(nanda_dir / WEIGHTS), str(tmp_path / "out"), "--config", str(tmp_path / "config.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{field} is {value!r}" in err and not (tmp_path / "out").exists()


def test_grokking_config_fields_that_agree_are_accepted(nanda_dir, tmp_path):
    config = json.loads((nanda_dir / CONFIG).read_text())
    config.update(num_layers=1, num_heads=4, d_model=128, d_head=32, d_mlp=512, act_type="ReLU", use_ln=False, n_ctx=3, d_vocab=114)
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_grokking(nanda_dir / WEIGHTS, tmp_path / "config.json").task.p == 113


@pytest.mark.parametrize("frequencies, message", [([5, 53, 21, 5], "frequency 5 is given twice"),
                                                 ([5, 53, 21, 108], "108 is the same frequency as 5"),
                                                 ([5, 53, 21, 0], "got 0"), ([5, 53, 21.0], "whole numbers")])
def test_fourier_frequencies_that_name_a_direction_twice_are_refused(frequencies, message):
    run = et.load_run("grok113_fast")
    keys = fourier_losses(run.model, run.task, [5, 53, 21])
    assert keys["excluded_loss"] > 5  # 12.2 on this series: removing the key directions destroys the answer
    with pytest.raises(InputError, match=message):  # the old code gave 41.3 (5 twice, or 108) and 7.2 (with 0)
        fourier_losses(run.model, run.task, frequencies)


def test_a_search_that_finds_no_rule_says_so(add3_nano):
    task = add3_nano.task
    a, b = task.sample_ood(500, seed=2)
    search = search_relations(add3_nano.model, task, a, b, answers=a + b + 1)  # a model answering a + b + 1
    assert not search.found and search.frame.accuracy.iloc[0] == 0.0
    assert search.note == f"no rule in the grammar fits (best: {search.frame.relation.iloc[0]} at 0.000, below 0.5)"
    assert search.summary()["found"] is False
    with pytest.raises(InputError, match="no rule in the grammar fits"):
        search.best  # the old code named "a + b" here, ready to hand to class_map
    found = search_relations(add3_nano.model, task, a, b)
    assert found.found and found.best.name == "(a mod 10^3) + (b mod 10^3)"


def test_the_cli_says_when_no_rule_fits(tmp_path, capsys):
    task = et.AdditionTask(train_digits=1, width=2)
    cfg = model_config(task, "nano", seed=3, n_layers=1, d_model=16, d_head=8, n_heads=2, d_mlp=32)
    write_run(tmp_path / "untrained", RunConfig(task, cfg, None, {"preset": "nano"}), build_model(cfg))
    assert main(["relations", str(tmp_path / "untrained"), "--search", "--n", "300"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("no rule in the grammar fits (best: ") and lines[-1].endswith(", below 0.5)")
    assert main(["relations", "add3_nano", "--search", "--n", "300", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["found"] is True and report["relations"][0]["relation"] == "(a mod 10^3) + (b mod 10^3)"
    assert report["note"] == f"(a mod 10^3) + (b mod 10^3) fits {report['relations'][0]['accuracy']:.3f} of the inputs"


def test_a_wrapped_kit_metric_reads_every_position(add3_nano):
    model, task = add3_nano.model.eval(), add3_nano.task
    a, b = task.sample_id(8, seed=11)
    clean = P.answered_tokens(model, task, a, b)
    corrupted = P.answered_tokens(model, task, a + np.where((a // 100) % 10 == 9, -900, 100), b)
    kit_metric = P.logit_difference(task, clean, corrupted, answer_position=2)

    @functools.wraps(kit_metric)  # copies the metric's attributes onto the wrapper, positions included
    def wrapped(logits):
        return kit_metric(logits) + logits[:, 2].mean()  # ... but it also reads position 2

    clean_in, corrupted_in = clean[:, :-1], corrupted[:, :-1]
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_in)
    logits_scale = magnitude(clean_logits)  # the metric sums logits: its rounding is relative to theirs
    expected = tl_patching.get_act_patch_resid_pre(model, corrupted_in, clean_cache, wrapped)
    got = P.patch_resid_pre_by_pos(model, corrupted_in, clean_in, wrapped)
    assert_close(got, expected, scale=logits_scale, what="wrapped metric")  # the old code differed by up to 0.86
