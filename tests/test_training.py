"""Training: a tiny model learns, resume reaches the same weights, runs are reproducible and save/load is exact."""
import json

import pandas as pd
import pytest
import torch

from equiv_tools import AdditionTask, InputError, ModularTask, TrainConfig, load_run, resume, train
from equiv_tools.storage import load_tensors
from equiv_tools.training import read_metrics

TINY = dict(n_layers=1, d_model=16, d_head=8, n_heads=2, d_mlp=32)
TASK = AdditionTask(train_digits=1, width=2)


def _cfg(**kw):
    base = dict(steps=40, batch_size=32, eval_every=10, checkpoint_every=10, n_train=60, n_test=40, n_eval=40, warmup_steps=5)
    return TrainConfig(**{**base, **kw})


def test_tiny_run_learns(tiny_run):
    metrics = read_metrics(tiny_run.path)
    assert set(metrics.columns) == {"step", "split", "loss", "accuracy"}
    assert set(metrics.split) == {"train", "id_test", "ood"}
    first, last = metrics[metrics.step == 0], metrics[metrics.step == metrics.step.max()]
    assert last[last.split == "train"].loss.item() < 0.5 * first[first.split == "train"].loss.item()
    assert last[last.split == "train"].accuracy.item() >= 0.9


def test_run_directory_contents(tmp_path):
    train(TASK, tmp_path / "r", train_cfg=_cfg(), model_overrides=TINY, progress=False, command=["equiv-tools", "train", "x"])
    run_dir = tmp_path / "r"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["schema_version"] == 1 and config["task"]["kind"] == "addition"
    assert config["provenance"]["command"] == "equiv-tools train x"
    assert config["provenance"]["versions"]["torch"] and config["provenance"]["versions"]["transformer-lens"]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("step_??????.safetensors"))
    assert checkpoints == [f"step_{s:06d}.safetensors" for s in (0, 10, 20, 30, 40)]
    assert [p.name for p in (run_dir / "checkpoints").glob("*.optimizer.safetensors")] == ["step_000040.optimizer.safetensors"]
    assert json.loads((run_dir / "state.json").read_text())["step"] == 40
    assert not list(run_dir.rglob("*.tmp"))
    assert not list(run_dir.rglob("*.pt")) and not list(run_dir.rglob("*.pkl"))


def test_resume_matches_uninterrupted_run(tmp_path):
    full = train(TASK, tmp_path / "full", train_cfg=_cfg(), model_overrides=TINY, progress=False)
    train(TASK, tmp_path / "part", train_cfg=_cfg(steps=20), model_overrides=TINY, progress=False)
    resumed = resume(tmp_path / "part", steps=40, progress=False)
    pd.testing.assert_frame_equal(full, resumed)
    a = load_tensors(tmp_path / "full" / "model.safetensors")
    b = load_tensors(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    m1 = train(TASK, tmp_path / "a", train_cfg=_cfg(steps=20), model_overrides=TINY, progress=False)
    m2 = train(TASK, tmp_path / "b", train_cfg=_cfg(steps=20), model_overrides=TINY, progress=False)
    m3 = train(TASK, tmp_path / "c", train_cfg=_cfg(steps=20, seed=1), model_overrides=TINY, progress=False)
    pd.testing.assert_frame_equal(m1, m2)
    assert not m1.loss.equals(m3.loss)


def test_save_load_gives_identical_outputs(tiny_run):
    again = load_run(tiny_run.path)
    tokens = torch.from_numpy(TASK.encode(*TASK.grid(range(100), range(0, 100, 7))))[:, :-1]
    with torch.no_grad():
        assert torch.equal(tiny_run.model(tokens), again.model(tokens))


def test_full_batch_grokking_layout_trains(tmp_path):
    task = ModularTask(p=7)
    metrics = train(task, tmp_path / "g", preset="grokking", train_cfg=_cfg(steps=10, batch_size=None, n_train=None, n_test=None, n_eval=49),
                    model_overrides=dict(d_model=16, d_head=4, d_mlp=32), progress=False)
    assert set(metrics.split) == {"train", "id_test"}  # the grokking layout has no OOD split
    assert metrics.step.max() == 10


def test_refuses_to_overwrite_and_to_resume_finished(tmp_path):
    train(TASK, tmp_path / "r", train_cfg=_cfg(steps=10), model_overrides=TINY, progress=False)
    with pytest.raises(InputError, match="already exists"):
        train(TASK, tmp_path / "r", train_cfg=_cfg(steps=10), model_overrides=TINY, progress=False)
    with pytest.raises(InputError, match="already finished"):
        resume(tmp_path / "r", progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(lr=-1.0), "lr must be positive"), (dict(batch_size=0), "batch_size"), (dict(steps=0), "steps"),
     (dict(weight_decay=-0.1), "weight_decay"), (dict(lr=float("nan")), "finite"), (dict(grad_clip=0.0), "grad_clip")],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**kwargs)
