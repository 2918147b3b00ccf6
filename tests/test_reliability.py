"""Reliability: SIGKILLed training loses nothing, damaged files get clear errors, and fuzzed input never crashes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from equiv_tools import InputError, load_run
from equiv_tools.cli import main
from equiv_tools.runs.storage import load_tensors
from equiv_tools.runs.training import read_metrics

# A model big enough that a checkpoint write (weights + AdamW state, about 20 MB) takes a while,
# so the test can catch the process in the middle of one.
KILL_ARGS = [
    "--task", "addition", "--train-digits", "2", "--width", "3", "--steps", "24", "--batch-size", "32",
    "--n-train", "200", "--n-test", "100", "--n-eval", "50", "--eval-every", "1", "--checkpoint-every", "1",
    "--seed", "3", "--quiet", "--n-layers", "2", "--d-model", "256", "--d-head", "64", "--n-heads", "4", "--d-mlp", "1024",
]


def _train_command(*argv):
    return [sys.executable, "-m", "equiv_tools.cli", *map(str, argv)]


def _state_step(run_dir):
    try:
        return json.loads((run_dir / "state.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def _kill_when(proc, run_dir, moment, deadline=60.0):
    """SIGKILL ``proc`` at ``moment``: ("tmp", None) mid-write, or ("step", k) once state.json reaches step k."""
    kind, value = moment
    start = time.monotonic()
    while time.monotonic() - start < deadline and proc.poll() is None:
        if kind == "tmp" and (_state_step(run_dir) or 0) >= 1 and any(run_dir.rglob("*.tmp")):
            break
        if kind == "step" and (_state_step(run_dir) or -1) >= value:
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return any(run_dir.rglob("*.tmp"))


def _assert_loadable(run_dir):
    step = _state_step(run_dir)
    assert step is not None
    load_run(run_dir, step=step)
    load_tensors(run_dir / "checkpoints" / f"step_{step:06d}.optimizer.safetensors")
    load_run(run_dir)  # the latest model.safetensors too
    assert read_metrics(run_dir).step.max() >= step


@pytest.mark.timeout(900)
def test_sigkill_at_five_moments_loses_nothing(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_train_command("train", "--out", reference, *KILL_ARGS), check=True)

    run_dir = tmp_path / "killed"
    moments = [("tmp", None), ("step", 4), ("tmp", None), ("step", 12), ("step", 17)]
    seen = []
    proc = subprocess.Popen(_train_command("train", "--out", run_dir, *KILL_ARGS))
    for moment in moments:
        mid_write = _kill_when(proc, run_dir, moment)
        seen.append((_state_step(run_dir), mid_write))
        _assert_loadable(run_dir)
        proc = subprocess.Popen(_train_command("train", "--resume", run_dir, "--quiet"))
    assert proc.wait() == 0

    print("kills (state step, killed mid-write):", seen)
    assert len(set(seen)) >= 5, seen
    assert any(mid for _, mid in seen), "no kill landed during a checkpoint write"
    final, expected = load_tensors(run_dir / "model.safetensors"), load_tensors(reference / "model.safetensors")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    pd.testing.assert_frame_equal(read_metrics(run_dir), read_metrics(reference))


# --- damaged files ---------------------------------------------------------------------------------

@pytest.fixture()
def run_copy(tiny_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_run.path, dst)
    return dst


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000))
def test_random_bytes_as_weights(run_copy, data):
    (run_copy / "model.safetensors").write_bytes(data)
    with pytest.raises(InputError):
        load_run(run_copy)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0.0, 0.999))
def test_truncated_weights(tiny_run, run_copy, fraction):
    full = (tiny_run.path / "model.safetensors").read_bytes()
    (run_copy / "model.safetensors").write_bytes(full[: int(len(full) * fraction)])
    with pytest.raises(InputError, match="truncated or corrupted|does not match"):
        load_run(run_copy)


def test_wrong_dtype_and_shape(run_copy):
    from safetensors.torch import save_file

    weights = load_tensors(run_copy / "model.safetensors")
    save_file({**weights, "embed.weight": weights["embed.weight"].long()}, run_copy / "model.safetensors")
    with pytest.raises(InputError, match="floating-point"):
        load_run(run_copy)
    save_file({**weights, "embed.weight": torch.zeros(3, 3)}, run_copy / "model.safetensors")
    with pytest.raises(InputError, match="shape"):
        load_run(run_copy)
    save_file({k: v for k, v in weights.items() if k != "unembed.weight"}, run_copy / "model.safetensors")
    with pytest.raises(InputError, match="missing"):
        load_run(run_copy)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: {**c, "schema_version": 99}, "schema_version 99"),
        (lambda c: {**c, "task": {**c["task"], "kind": "division"}}, "unknown task"),
        (lambda c: {**c, "task": {**c["task"], "width": 3}}, "made for another task"),
        (lambda c: {k: v for k, v in c.items() if k != "model"}, "lacks the field"),
        (lambda c: {**c, "model": {**c["model"], "d_model": 64}}, "shape"),
        (lambda c: {**c, "training": {**c["training"], "lr": -1}}, "lr must be positive"),
    ],
)
def test_config_mismatches(run_copy, edit, message):
    config = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps(edit(config)))
    with pytest.raises(InputError, match=message):
        load_run(run_copy)


def test_missing_and_partial_run_directories(run_copy, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        load_run(tmp_path / "empty")
    (run_copy / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_run(run_copy)


def test_resume_of_a_partial_run(run_copy):
    from equiv_tools import resume

    (run_copy / "state.json").unlink()
    with pytest.raises(InputError, match="state.json is missing"):
        resume(run_copy, steps=400, progress=False)


def test_pickled_code_is_never_run(tmp_path):
    """A minGPT file with a pickled callable is refused by weights_only loading, and the callable never runs."""
    from equiv_tools.runs.imports import load_mingpt
    from equiv_tools.core.tasks import AdditionTask

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"transformer.wte.weight": torch.zeros(10, 48), "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="not a minGPT checkpoint"):
        load_mingpt(tmp_path / "evil.pt", AdditionTask())
    assert not marker.exists()


# --- the CLI, fuzzed in-process -------------------------------------------------------------------

@pytest.fixture()
def fuzz_paths(tiny_run, tmp_path):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "junk.txt").write_text("junk")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04junk")
    (tmp_path / "pairs.csv").write_text("a,b\n1,2\nx,3\n")
    shutil.copytree(tiny_run.path, tmp_path / "run")  # fuzzed --resume may rewrite its config
    return [str(tmp_path / name) for name in ("nowhere", "notarun", "junk.pt", "pairs.csv", "run")]


TOKENS = [
    "train", "evaluate", "import-mingpt", "import-grokking", "fourier", "predict", "relations", "plot", "bogus", "--config",
    "--device", "cuda", "cpu", "auto", "--grad-clip", "none", "--n-layers", "--d-model",
    "--task", "--train-digits", "--width", "--p", "--op", "--preset", "--out", "--resume", "--steps", "--batch-size",
    "--lr", "--weight-decay", "--seed", "--json", "--n", "--ood-digits", "--input", "--output", "--n-heads", "--bogus",
    "0", "-1", "2", "3", "99", "1e-3", "nan", "abc", "", "full", "addition", "modular", "multiplication", "mul", "nano", "grokking",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cli_fuzz_never_crashes(fuzz_paths, tmp_path, monkeypatch, capsys, data):
    from equiv_tools.runs import training

    monkeypatch.chdir(tmp_path)  # a fuzzed relative --out or --output lands here, not in the checkout
    # a fuzzed `train` that validates may start a real run; stop it after its step-0 checkpoint
    monkeypatch.setattr(training, "_loop", lambda *a, **k: pd.DataFrame(columns=training.METRIC_COLUMNS))
    argv = data.draw(st.lists(st.sampled_from(TOKENS + fuzz_paths), max_size=8))
    capsys.readouterr()  # drop what earlier examples printed
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors and --help
        assert exc.code in (0, 2)
    else:
        assert code in (0, 2)
        if code == 2:
            err = capsys.readouterr().err
            assert err.startswith("equiv-tools: error:") and err.count("\n") == 1
    finally:
        for path in fuzz_paths:
            if Path(path).name == "nowhere" and Path(path).exists():
                shutil.rmtree(path)


# --- writes that never damage a run -----------------------------------------------------------------

def _hashes(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(steps=100), "already finished 300 of 100 steps"),
        (dict(steps=300), "already finished 300 of 300 steps"),
        (dict(steps=0), "steps must be a positive integer"),
        (dict(steps=400, lr=-1.0), "lr must be positive"),
        (dict(steps=400, seed=5), "seed defines"),
        (dict(steps=400, n_train=10), "n_train defines"),
        (dict(steps=400, colour=1), "unknown training field"),
    ],
)
def test_a_refused_resume_leaves_every_file_byte_identical(run_copy, overrides, message):
    from equiv_tools import resume

    before = _hashes(run_copy)
    with pytest.raises(InputError, match=message):
        resume(run_copy, progress=False, **overrides)
    assert _hashes(run_copy) == before


def test_a_resume_with_a_damaged_checkpoint_leaves_the_rest_untouched(run_copy):
    from equiv_tools import resume

    (run_copy / "checkpoints" / "step_000300.optimizer.safetensors").write_bytes(b"junk")
    before = _hashes(run_copy)
    with pytest.raises(InputError, match="truncated or corrupted"):
        resume(run_copy, steps=400, progress=False)
    assert _hashes(run_copy) == before


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from equiv_tools.core import files

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(InputError, match="cannot write .*out.bin: No space left on device"):
        files.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with pytest.raises(InputError, match="does not exist"):
        files.atomic_write_bytes(tmp_path / "missing" / "out.bin", b"new")
    assert not (tmp_path / "missing").exists()


# --- imports and splits say what they did -----------------------------------------------------------

def test_mingpt_import_refuses_unused_and_missing_weights(paper_dir, tmp_path):
    from equiv_tools.runs.imports import load_mingpt
    from equiv_tools.core.tasks import AdditionTask

    state = torch.load(paper_dir / "exploregpt-adder" / "model_s2.pt", map_location="cpu", weights_only=True)
    assert any(k.endswith(".attn.bias") for k in state)  # minGPT's causal masks: expected, skipped
    torch.save({**state, "transformer.h.0.attn.extra.weight": torch.zeros(3)}, tmp_path / "extra.pt")
    with pytest.raises(InputError, match=r"does not use: \['transformer.h.0.attn.extra.weight'\]"):
        load_mingpt(tmp_path / "extra.pt", AdditionTask())
    torch.save({k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_fc.bias"}, tmp_path / "missing.pt")
    with pytest.raises(InputError, match="lacks 'transformer.h.1.mlp.c_fc.bias'"):
        load_mingpt(tmp_path / "missing.pt", AdditionTask())


def test_imported_runs_are_evaluated_on_distinct_id_pairs(model_s2):
    from equiv_tools.analysis.evaluation import ID_SAMPLE, evaluate_run, id_test_pairs

    (a, b), what = id_test_pairs(model_s2, 5000, seed=0)
    assert what == ID_SAMPLE and len(set(zip(a.tolist(), b.tolist()))) == 5000
    result = evaluate_run(model_s2, n=500)
    assert result["id_pairs"] == ID_SAMPLE and result["id_accuracy"] == 1.0


def test_unknown_model_fields_in_config_are_named(run_copy):
    config = json.loads((run_copy / "config.json").read_text())
    config["model"]["rotary_dim"] = 8
    (run_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"unknown field\(s\) \['rotary_dim'\]"):
        load_run(run_copy)


def test_default_training_config_fits_one_and_two_digit_tasks(tmp_path):
    from equiv_tools import AdditionTask, TrainConfig, train

    for digits in (1, 2):
        cfg = TrainConfig(steps=2, eval_every=1, checkpoint_every=2)  # the default split: 70% / 30% of a small pool
        metrics = train(AdditionTask(train_digits=digits, width=digits + 1), tmp_path / str(digits), train_cfg=cfg,
                        model_overrides=dict(n_layers=1, d_model=16, d_head=8, n_heads=2, d_mlp=32), progress=False)
        assert metrics.step.max() == 2
