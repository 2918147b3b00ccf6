"""Shared fixtures: the paper's checkpoints (from ../shared/), and small models trained here."""
import os
from pathlib import Path

import pytest

from equiv_tools.analysis.reproduce import find_paper_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def paper_dir() -> Path:
    """The folder holding exploregpt-adder/: skipped with the reason when absent, a failure when CI=true."""
    folder, reason = find_paper_dir()
    if folder is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return folder


@pytest.fixture(scope="session")
def model_s2(paper_dir):
    from equiv_tools.analysis.reproduce import load_paper_model

    return load_paper_model("model_s2.pt", paper_dir)


@pytest.fixture(scope="session")
def add3_nano():
    from equiv_tools.runs.models import load_run

    return load_run(REPO / "data" / "add3_nano")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 1-digit addition model (width 2), trained here for 300 steps: small, fast, and mostly right."""
    from equiv_tools import AdditionTask, TrainConfig, load_run, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(steps=300, batch_size=64, lr=3e-3, eval_every=100, checkpoint_every=100, n_train=60, n_test=40, n_eval=40, warmup_steps=10)
    train(AdditionTask(train_digits=1, width=2), out, train_cfg=cfg, model_overrides=dict(n_layers=2, d_model=32, d_head=16, n_heads=2, d_mlp=64), progress=False)
    return load_run(out)


@pytest.fixture(scope="session")
def nanda_dir() -> Path:
    """The folder nanda-grokking/ (Nanda et al.'s grokked model), found like the paper's checkpoints: skipped with the
    reason when absent, a failure when CI=true."""
    folder, reason = find_paper_dir(holding="nanda-grokking")
    if folder is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return folder / "nanda-grokking"
