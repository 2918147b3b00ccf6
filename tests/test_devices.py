"""Devices: cpu, cuda, cuda:N, auto. The CUDA tests run where torch finds a GPU and skip with the reason elsewhere."""
import numpy as np
import pytest
import torch

from equiv_tools import InputError, load_run, predict, resume, train
from equiv_tools.forward.decoding import naive_greedy_decode
from equiv_tools.forward.devices import resolve_device
from equiv_tools.runs.storage import load_tensors

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch finds no CUDA GPU on this machine")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_clear_error(tmp_path):
    from equiv_tools import AdditionTask

    for call in (lambda: load_run("add3_nano", device="cuda"), lambda: train(AdditionTask(1, 2), tmp_path / "r", device="cuda:0")):
        with pytest.raises(InputError, match="no CUDA GPU"):
            call()
    assert not (tmp_path / "r").exists()


@needs_cuda
def test_a_run_on_cuda_gives_the_cpu_answers(add3_nano):
    on_gpu = load_run("add3_nano", device="cuda")
    assert next(on_gpu.model.parameters()).is_cuda
    a, b = add3_nano.task.sample_ood(2000, seed=0)
    assert np.array_equal(predict(on_gpu.model, on_gpu.task, a, b), predict(add3_nano.model, add3_nano.task, a, b))
    assert np.array_equal(predict(on_gpu.model, on_gpu.task, a, b), on_gpu.task.decode_answer(naive_greedy_decode(on_gpu.model, on_gpu.task, a, b)))


@needs_cuda
def test_train_and_resume_on_cuda(tmp_path):
    from equiv_tools import AdditionTask, TrainConfig

    cfg = TrainConfig(steps=20, batch_size=32, eval_every=10, checkpoint_every=10, n_train=60, n_test=40, n_eval=40, warmup_steps=5)
    small = dict(n_layers=1, d_model=16, d_head=8, n_heads=2, d_mlp=32)
    metrics = train(AdditionTask(1, 2), tmp_path / "r", train_cfg=cfg, model_overrides=small, progress=False, device="cuda")
    assert metrics.loss.notna().all()
    resumed = resume(tmp_path / "r", steps=30, progress=False, device="cuda")
    assert resumed.step.max() == 30
    assert all(t.device.type == "cpu" for t in load_tensors(tmp_path / "r" / "model.safetensors").values())  # saved for any machine
