"""Training recipes, the lean training step, float16 checkpoint series and the on_eval callback."""
import json

import pytest
import torch

from equiv_tools import InputError, ModularTask, TrainConfig, load_run, resume, train
from equiv_tools.cli import main
from equiv_tools.core.config import RECIPES
from equiv_tools.core.rundir import RunDir
from equiv_tools.runs.storage import load_tensors
from equiv_tools.runs.training import lr_at
from tests.tolerance import assert_close

SMALL = ModularTask(p=23)
TINY = dict(d_model=32, d_head=8, d_mlp=64)


def test_reference_recipe_is_the_published_setup_and_given_fields_win():
    cfg = TrainConfig.from_recipe("reference")
    assert (cfg.lr, cfg.weight_decay, cfg.beta1, cfg.beta2) == (1e-3, 1.0, 0.9, 0.98)
    assert cfg.batch_size is None and cfg.warmup_steps == 10 and cfg.grad_clip is None and cfg.recipe == "reference"
    fast = TrainConfig.from_recipe("fast", lr=3e-3, seed=4)
    assert fast.lr == 3e-3 and fast.seed == 4 and fast.weight_decay == RECIPES["fast"]["weight_decay"] and fast.recipe == "fast"
    with pytest.raises(InputError, match="unknown recipe 'slow'; choose one of: reference, fast, "):
        TrainConfig.from_recipe("slow")
    with pytest.raises(InputError, match="train_forward must be one of bridge, lean; got 'fused'"):
        TrainConfig(train_forward="fused")


def test_the_learning_rate_warms_up_then_stays_or_decays_on_a_cosine():
    constant = TrainConfig(steps=1000, lr=2e-3, warmup_steps=100)
    cosine = TrainConfig.from_recipe("smooth", steps=1000, lr=2e-3, warmup_steps=100)
    assert cosine.schedule == "cosine" and TrainConfig.from_recipe("adder").schedule == "constant"
    assert [lr_at(constant, s) for s in (1, 50, 100, 101, 1000)] == [2e-5, 1e-3, 2e-3, 2e-3, 2e-3]
    assert [lr_at(cosine, s) for s in (1, 50, 100)] == [2e-5, 1e-3, 2e-3]
    assert lr_at(cosine, 550) == pytest.approx(1e-3) and lr_at(cosine, 1000) == pytest.approx(0, abs=1e-12)
    steps = range(101, 1001)
    assert all(lr_at(cosine, s) > lr_at(cosine, s + 1) for s in steps[:-1])  # falls at every step after the warmup
    with pytest.raises(InputError, match="schedule must be one of constant, cosine; got 'linear'"):
        TrainConfig(schedule="linear")


def test_a_config_written_before_schedules_reads_as_constant():
    recorded = json.loads((RunDir.resolve("add3_nano").config_file).read_text())["training"]
    assert "schedule" not in recorded and TrainConfig.from_dict(recorded).schedule == "constant"


def test_cli_recipe_fills_defaults_and_records_every_setting(tmp_path, capsys):
    out = tmp_path / "grok"
    argv = ["train", "--task", "modular", "--p", "23", "--preset", "grokking", "--recipe", "fast", "--steps", "4",
            "--eval-every", "2", "--checkpoint-every", "2", "--lr", "0.005", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    training = json.loads((out / "config.json").read_text())["training"]
    assert training == {**RECIPES["fast"], "steps": 4, "eval_every": 2, "checkpoint_every": 2, "lr": 0.005, "n_train": None,
                        "n_test": None, "ood_digits": None, "seed": 0, "series_dtype": "float32", "schedule": "constant",
                        "extra_share": None, "recipe": "fast"}
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--steps", "6", "--recipe", "reference", "--quiet"]) == 2
    assert capsys.readouterr().err == ("equiv-tools: error: a run keeps the recipe it started from (recorded: 'fast'); "
                                       "pass the settings to change instead (e.g. --lr)\n")


def test_lean_step_trains_the_same_model_as_the_bridge_to_float_rounding(tmp_path):
    """Same seed, same data: the evaluated losses agree between the two training forwards, up to float32 rounding."""
    runs = {}
    for forward in ("bridge", "lean"):
        cfg = TrainConfig(steps=3, batch_size=None, lr=1e-2, weight_decay=1.0, warmup_steps=0, grad_clip=None, eval_every=1,
                          checkpoint_every=3, train_forward=forward)
        runs[forward] = train(SMALL, tmp_path / forward, preset="grokking", train_cfg=cfg, model_overrides=TINY, progress=False)
    bridge, lean = (runs[f].set_index(["split", "step"]).loss for f in ("bridge", "lean"))
    assert_close(lean.loc[("train", 0)], bridge.loc[("train", 0)])  # the same initial model
    assert_close(lean, bridge)  # three steps on: rounding relative to the losses
    assert lean.loc[("train", 3)] < lean.loc[("train", 0)] - 0.05  # and the steps did train


def test_float16_series_keeps_the_latest_checkpoint_exact_and_resume_exact(tmp_path):
    cfg = TrainConfig(steps=8, batch_size=None, lr=1e-2, eval_every=2, checkpoint_every=2, train_forward="lean", series_dtype="float16")
    whole = train(SMALL, tmp_path / "whole", preset="grokking", train_cfg=cfg, model_overrides=TINY, progress=False)
    assert RunDir(tmp_path / "whole").checkpoint_steps() == [0, 2, 4, 6, 8]
    dtypes = {s: {t.dtype for t in load_tensors(tmp_path / "whole" / f"checkpoints/step_{s:06d}.safetensors").values()}
              for s in (0, 6, 8)}
    assert dtypes == {0: {torch.float16}, 6: {torch.float16}, 8: {torch.float32}}
    half = train(SMALL, tmp_path / "half", preset="grokking", train_cfg=TrainConfig(**{**cfg.__dict__, "steps": 4}),
                 model_overrides=TINY, progress=False)
    assert len(half) < len(whole)
    resumed = resume(tmp_path / "half", steps=8, progress=False)
    assert resumed.equals(whole)
    a, b = (load_run(tmp_path / r).model.state_dict() for r in ("whole", "half"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # an older float16 checkpoint loads into the float32 model
    assert next(load_run(tmp_path / "whole", step=4).model.parameters()).dtype == torch.float32


def test_on_eval_sees_each_evaluation_as_it_happens(tmp_path):
    seen = []
    cfg = TrainConfig(steps=6, batch_size=None, eval_every=3, checkpoint_every=6, train_forward="lean")
    metrics = train(SMALL, tmp_path / "r", preset="grokking", train_cfg=cfg, model_overrides=TINY, progress=False,
                    on_eval=lambda rows: seen.append([(r["step"], r["split"]) for r in rows]))
    assert seen == [[(3, "train"), (3, "id_test")], [(6, "train"), (6, "id_test")]]
    assert len(metrics) == 6  # step 0 as well, which is evaluated before training starts


def test_lean_training_is_deterministic_on_two_threads(tmp_path):
    """The lean step's embedding gradient is accumulated deterministically (indexing's backward was not, on
    more than one thread): the same command twice gives the same weights."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = TrainConfig(steps=6, batch_size=None, lr=1e-2, eval_every=6, checkpoint_every=6, train_forward="lean")
        for name in ("one", "two"):
            train(ModularTask(p=113), tmp_path / name, preset="grokking", train_cfg=cfg, progress=False)
    finally:
        torch.set_num_threads(previous)
    one, two = (load_run(tmp_path / name).model.state_dict() for name in ("one", "two"))
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_lean_loss_honours_hooks():
    """answer_loss_and_accuracy(lean=True) is the hooked bridge's loss while a hook is attached."""
    from equiv_tools.core.config import model_config
    from equiv_tools.runs.models import build_model
    from equiv_tools.runs.training import answer_loss_and_accuracy

    torch.manual_seed(0)
    model = build_model(model_config(SMALL, "grokking", **TINY))
    (a, b), _ = SMALL.id_split(0)
    seqs = torch.from_numpy(SMALL.encode(a, b))
    with torch.no_grad():
        clean = float(answer_loss_and_accuracy(model, SMALL, seqs, lean=True)[0])
        model.blocks[0].hook_attn_out.add_hook(lambda act, hook: act * 0)
        hooked_lean = float(answer_loss_and_accuracy(model, SMALL, seqs, lean=True)[0])
        hooked_bridge = float(answer_loss_and_accuracy(model, SMALL, seqs)[0])
        model.reset_hooks()
    assert hooked_lean == hooked_bridge and abs(hooked_lean - clean) > 1e-3


def test_a_cosine_run_keeps_its_length_and_schedule_on_resume(tmp_path):
    out = tmp_path / "smooth"
    cfg = TrainConfig.from_recipe("smooth", steps=6, warmup_steps=2, eval_every=3, checkpoint_every=3, n_train=64, n_test=32,
                                  n_eval=32)
    from equiv_tools import AdditionTask

    train(AdditionTask(train_digits=1, width=2), out, train_cfg=cfg, model_overrides=dict(n_layers=1, d_model=16, d_head=8, d_mlp=32),
          progress=False)
    with pytest.raises(InputError, match="steps defines the run's data or schedule and cannot change on resume"):
        resume(out, steps=9, progress=False)  # training further would restart the cosine's decay
    with pytest.raises(InputError, match="schedule defines the run's data or schedule"):
        resume(out, schedule="constant", progress=False)


def test_the_warmup_rounds_as_before_schedules():
    cfg = TrainConfig(lr=3e-3, warmup_steps=50)
    assert [lr_at(cfg, s) for s in range(1, 51)] == [3e-3 * min(1.0, s / 50) for s in range(1, 51)]
