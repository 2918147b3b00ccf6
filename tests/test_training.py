"""Training: a tiny model learns, resume reaches the same weights, runs are reproducible and save/load is exact."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from equiv_tools import AdditionTask, InputError, ModularTask, TrainConfig, load_run, predict, resume, train
from equiv_tools.runs.storage import load_tensors
from equiv_tools.runs.training import answer_loss_and_accuracy

TINY = dict(n_layers=1, d_model=16, d_head=8, n_heads=2, d_mlp=32)
TASK = AdditionTask(train_digits=1, width=2)


def _cfg(**kw):
    base = dict(steps=40, batch_size=32, eval_every=10, checkpoint_every=10, n_train=60, n_test=40, n_eval=40, warmup_steps=5)
    return TrainConfig(**{**base, **kw})


LEARNER = dict(n_layers=2, d_model=32, d_head=16, n_heads=2, d_mlp=64)
ADD2 = AdditionTask(train_digits=2, width=3)


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    """2-digit addition, 300 steps (a few seconds): long enough to generalise to held-out ID pairs."""
    out = tmp_path_factory.mktemp("runs") / "add2"
    cfg = TrainConfig(steps=300, batch_size=128, lr=3e-3, eval_every=50, checkpoint_every=300, n_train=2000, n_test=500, n_eval=200, warmup_steps=20)
    metrics = train(ADD2, out, train_cfg=cfg, model_overrides=LEARNER, progress=False)
    return out, metrics


def test_training_lowers_the_loss_and_raises_held_out_accuracy(learner):
    out, metrics = learner
    by = metrics.set_index(["split", "step"])
    assert by.loc[("train", 300), "loss"] < 0.25 * by.loc[("train", 0), "loss"]
    assert by.loc[("id_test", 0), "accuracy"] == 0.0 and by.loc[("id_test", 300), "accuracy"] >= 0.6
    # the accuracy the loop recorded is what greedy decoding of the saved model gives on the same held-out pairs
    run = load_run(out)
    _, (a, b) = ADD2.id_split(0, 2000, 500)
    right = int(np.sum(predict(run.model, ADD2, a[:200], b[:200]) == ADD2.truth(a[:200], b[:200])))
    assert right == round(by.loc[("id_test", 300), "accuracy"] * 200)  # metrics.csv holds a float32 mean


def test_saved_model_is_the_trained_model(learner):
    """The loss the in-memory model recorded at its last step, recomputed from the weights loaded from disk: bit for bit."""
    out, metrics = learner
    run = load_run(out)
    (ta, tb), (ia, ib) = ADD2.id_split(0, 2000, 500)
    for split, (a, b) in (("train", (ta[:200], tb[:200])), ("id_test", (ia[:200], ib[:200]))):
        with torch.no_grad():
            loss, correct = answer_loss_and_accuracy(run.model, ADD2, torch.from_numpy(ADD2.encode(a, b)))
        recorded = metrics[(metrics.split == split) & (metrics.step == 300)].iloc[0]
        assert float(loss) == recorded.loss and float(correct.float().mean()) == recorded.accuracy


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
    pd.testing.assert_frame_equal(full, resumed, check_exact=True)
    provenance = json.loads((tmp_path / "part" / "config.json").read_text())["provenance"]
    assert provenance["resumes"] == [{"from_step": 20, "changed": {"steps": 40}}]  # the record says how the run was made
    a = load_tensors(tmp_path / "full" / "model.safetensors")
    b = load_tensors(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    m1 = train(TASK, tmp_path / "a", train_cfg=_cfg(steps=20), model_overrides=TINY, progress=False)
    m2 = train(TASK, tmp_path / "b", train_cfg=_cfg(steps=20), model_overrides=TINY, progress=False)
    m3 = train(TASK, tmp_path / "c", train_cfg=_cfg(steps=20, seed=1), model_overrides=TINY, progress=False)
    pd.testing.assert_frame_equal(m1, m2, check_exact=True)
    assert not m1.loss.equals(m3.loss)


def test_full_batch_grokking_layout_trains(tmp_path):
    task = ModularTask(p=7)
    metrics = train(task, tmp_path / "g", preset="grokking", train_cfg=_cfg(steps=30, batch_size=None, n_train=None, n_test=None, n_eval=49),
                    model_overrides=dict(d_model=16, d_head=4, d_mlp=32), progress=False)
    assert set(metrics.split) == {"train", "id_test"}  # the grokking layout has no OOD split
    train_loss = metrics[metrics.split == "train"].set_index("step").loss
    assert train_loss[30] < 0.8 * train_loss[0]  # full-batch steps on the 15 training pairs lower their loss


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


EXTRA = (np.array([12, 30, 45, 99, 7]), np.array([88, 3, 10, 2, 60]))  # 2-digit pairs: OOD for TASK


def test_extra_pairs_are_saved_drawn_at_their_share_and_resume_exactly(tmp_path):
    cfg = _cfg(extra_share=0.25)
    train(TASK, tmp_path / "whole", train_cfg=cfg, model_overrides=TINY, progress=False, extra_pairs=EXTRA)
    train(TASK, tmp_path / "part", train_cfg=_cfg(extra_share=0.25, steps=20), model_overrides=TINY, progress=False, extra_pairs=EXTRA)
    resume(tmp_path / "part", steps=40, progress=False)
    whole, part = load_tensors(tmp_path / "whole" / "model.safetensors"), load_tensors(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(whole[k], part[k]) for k in whole)
    a, b = load_run(tmp_path / "whole").dir.read_extra_pairs()
    assert a.tolist() == EXTRA[0].tolist() and b.tolist() == EXTRA[1].tolist()
    from equiv_tools.runs.training import _Data

    data = _Data(TASK, cfg, torch.device("cpu"), EXTRA)
    extra_rows = data.batch(cfg, 7)[:, :TASK.prompt_len].tolist()
    assert sum(row in data.train[data.n_id:, :TASK.prompt_len].tolist() for row in extra_rows) == round(0.25 * 32)
    assert data.eval_sets["train"].shape[0] == 40 and not any(  # the train evaluation stays on the ID split
        row in data.train[data.n_id:].tolist() for row in data.eval_sets["train"].tolist())


def test_a_run_started_from_another_begins_at_its_weights_and_keeps_its_model(learner, tmp_path):
    out, _ = learner
    train(ADD2, tmp_path / "more", train_cfg=_cfg(steps=10, n_train=None, n_test=None), progress=False, init_from=out)
    start, source = load_tensors(tmp_path / "more" / "checkpoints" / "step_000000.safetensors"), load_tensors(out / "model.safetensors")
    assert all(torch.equal(start[k], source[k]) for k in source)
    recorded = json.loads((tmp_path / "more" / "config.json").read_text())
    assert recorded["model"] == json.loads((out / "config.json").read_text())["model"] and recorded["provenance"]["init_from"] == str(out)
    with pytest.raises(InputError, match="not AdditionTask\\(train_digits=1"):
        train(TASK, tmp_path / "other", train_cfg=_cfg(), progress=False, init_from=out)
    with pytest.raises(InputError, match="needs extra_pairs"):
        train(TASK, tmp_path / "share", train_cfg=_cfg(extra_share=0.5), progress=False)


def test_stop_when_ends_training_at_that_evaluation_with_a_checkpoint(tmp_path):
    metrics = train(TASK, tmp_path / "run", train_cfg=_cfg(), model_overrides=TINY, progress=False,
                    stop_when=lambda rows: rows[0]["step"] >= 20)
    assert metrics.step.max() == 20
    run_dir = load_run(tmp_path / "run").dir
    assert run_dir.read_state_step() == 20 and run_dir.optimizer_steps() == [20]


def test_a_run_with_extra_pairs_resumes_only_with_them_and_shares_are_checked(tmp_path):
    train(TASK, tmp_path / "run", train_cfg=_cfg(steps=20), model_overrides=TINY, progress=False, extra_pairs=EXTRA)
    (tmp_path / "run" / "extra_pairs.csv").unlink()
    with pytest.raises(InputError, match="trained with 5 extra pairs, but its extra_pairs.csv is missing"):
        resume(tmp_path / "run", steps=40, progress=False)
    with pytest.raises(InputError, match="rounds to 0 pairs"):
        _cfg(extra_share=0.01)
    with pytest.raises(InputError, match="needs minibatches"):
        _cfg(extra_share=0.5, batch_size=None)
