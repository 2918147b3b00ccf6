"""The `equiv-tools` command line: JSON shapes, one-line errors, no torch import for usage errors."""
import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict

import pandas as pd
import pytest
import torch

from equiv_tools.analysis.reproduce import find_paper_dir
from equiv_tools.cli import main
from equiv_tools.core.config import TrainConfig

from .conftest import REPO

ADD3 = REPO / "data" / "add3_nano"
EXAMPLE_PAIRS = REPO / "docs" / "examples" / "pairs.csv"


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_shipped_addition_model_meets_the_bar(capsys):
    code, out, _ = run_cli(capsys, "evaluate", REPO / "data" / "add3_nano", "--json")
    result = json.loads(out)
    assert code == 0
    assert {"id_accuracy", "ood_accuracy", "n_id", "n_ood", "ood_digits", "seed"} <= set(result)
    assert result["n_id"] >= 10_000 and result["n_ood"] >= 10_000 and result["ood_digits"] == 4
    assert result["id_accuracy"] >= 0.995
    assert result["ood_accuracy"] <= 0.05


def test_train_resume_evaluate(tmp_path, capsys):
    out_dir = tmp_path / "run"
    common = ["--steps", "6", "--batch-size", "16", "--n-train", "50", "--n-test", "30", "--n-eval", "20", "--eval-every", "3", "--checkpoint-every", "3"]
    code, out, _ = run_cli(capsys, "train", "--task", "addition", "--train-digits", "1", "--width", "2", "--out", out_dir, *common, "--quiet")
    assert code == 0 and "trained" in out
    code, out, _ = run_cli(capsys, "train", "--resume", out_dir, "--steps", "9", "--lr", "1e-3", "--quiet")
    assert code == 0 and out.startswith(f"resumed {out_dir}: train accuracy ")
    assert json.loads((out_dir / "state.json").read_text())["step"] == 9
    training = json.loads((out_dir / "config.json").read_text())["training"]
    # given options override; the others keep the run's recorded values, not the CLI's defaults
    assert training == asdict(TrainConfig(steps=9, batch_size=16, lr=1e-3, n_train=50, n_test=30, n_eval=20, eval_every=3,
                                          checkpoint_every=3))
    code, out, _ = run_cli(capsys, "evaluate", out_dir, "--json", "--n", "50")
    assert code == 0 and json.loads(out)["n_ood"] == 50


def test_predict_csv(tiny_run, tmp_path, capsys):
    (tmp_path / "in.csv").write_text("a,b\n3,4\n12,34\n")
    code, out, _ = run_cli(capsys, "predict", tiny_run.path, "--input", tmp_path / "in.csv", "--output", tmp_path / "out.csv")
    frame = pd.read_csv(tmp_path / "out.csv")
    assert code == 0 and list(frame.columns) == ["a", "b", "prediction"] and frame.a.tolist() == [3, 12]
    assert out == f"predicted 2 pairs with {tiny_run.path} -> {tmp_path / 'out.csv'} (ID 1, OOD 1)\n"
    (tmp_path / "bad.csv").write_text("a,b\n3,x4\n")
    code, _, err = run_cli(capsys, "predict", tiny_run.path, "--input", tmp_path / "bad.csv", "--output", tmp_path / "o.csv")
    assert code == 2 and "line 2" in err and err.count("\n") == 1


def test_predict_the_shipped_example(tmp_path, capsys):
    """docs/examples/pairs.csv (the README's example): the truth in distribution, (a mod 1000) + (b mod 1000) outside."""
    out_csv = tmp_path / "preds.csv"
    code, out, _ = run_cli(capsys, "predict", "add3_nano", "--input", EXAMPLE_PAIRS, "--output", out_csv)  # a shipped run, by name
    assert code == 0 and out == f"predicted 5 pairs with add3_nano -> {out_csv} (ID 4, OOD 1)\n"
    frame = pd.read_csv(out_csv)
    in_id = (frame.a < 1000) & (frame.b < 1000)
    assert (frame.prediction[in_id] == frame.a[in_id] + frame.b[in_id]).all() and in_id.sum() == 4
    assert frame[~in_id].values.tolist() == [[1349, 2705, 1054]]  # 349 + 705, not 4054


def test_predict_into_a_missing_folder_writes_nothing(tmp_path, capsys, monkeypatch):
    from equiv_tools.runs import models

    monkeypatch.setattr(models, "load_run", lambda *a, **k: pytest.fail("loaded the model before checking --output"))
    target = tmp_path / "missing" / "preds.csv"
    code, out, err = run_cli(capsys, "predict", ADD3, "--input", EXAMPLE_PAIRS, "--output", target)
    assert code == 2 and out == ""
    assert err == f"equiv-tools: error: cannot write {target}: the folder {target.parent} does not exist; create it first\n"
    assert list(tmp_path.iterdir()) == []


def test_plain_output_is_a_table(tiny_run, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "evaluate", tiny_run.path, "--n", "100")
    result = json.loads(run_cli(capsys, "evaluate", tiny_run.path, "--n", "100", "--json")[1])
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"{tiny_run.path}: {tiny_run.task.describe()}"
    assert lines[1].split() == ["split", "pairs", "accuracy", "which", "pairs"]
    assert lines[2].split() == ["ID", str(result["n_id"]), f"{result['id_accuracy']:.4f}", *result["id_pairs"].split()]
    assert lines[3].split() == ["OOD", "100", f"{result['ood_accuracy']:.4f}", "2-digit", "operands"]
    # columns line up: numbers end under their header's end, text starts under its header's start
    end, start = lines[1].index("accuracy") + len("accuracy"), lines[1].index("which pairs")
    assert lines[2][:end].endswith(f" {result['id_accuracy']:.4f}") and lines[3][:end].endswith(f" {result['ood_accuracy']:.4f}")
    assert lines[2][start:] == result["id_pairs"] and lines[3][start:] == "2-digit operands"

    code, out, _ = run_cli(capsys, "relations", tiny_run.path, "--ood-digits", "2", "--n", "200")
    report = json.loads(run_cli(capsys, "relations", tiny_run.path, "--ood-digits", "2", "--n", "200", "--json")[1])
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("200 OOD pairs with 2-digit operands")
    assert lines[1].split()[:2] == ["relation", "accuracy"] and lines[1].count("digit") == tiny_run.task.answer_len
    top = report["relations"][0]
    assert lines[2].startswith(top["relation"] + " ") and lines[2].split()[-len(top["per_digit"]) - 1:] == [
        f"{x:.4f}" for x in [top["accuracy"], *top["per_digit"]]]
    assert len(lines) == 2 + len(report["relations"])

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run.path, data_dir / "tiny")
    code, out, _ = run_cli(capsys, "reproduce", "--paper-dir", tmp_path / "nowhere", "--data-dir", data_dir, "--n", "100")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["model", "task", "ID", "acc"]
    assert lines[1].startswith("paper/model_s2.pt ") and lines[1].split()[-1] == "unavailable"
    assert lines[3].startswith("kit/tiny ") and lines[3].split()[-1] == "ok"
    assert lines[4].startswith("paper/model_s2.pt: the paper's checkpoints were not found")


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU, so --device cuda is valid here")


@NO_CUDA
@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--task", "addition", "--out", "{tmp}/run"],
        ["train", "--resume", "{tmp}/recorded", "--steps", "3000"],
        ["evaluate", ADD3],
        ["predict", ADD3, "--input", EXAMPLE_PAIRS, "--output", "{tmp}/preds.csv"],
        ["relations", ADD3],
        ["reproduce", "--paper-dir", "{tmp}/nowhere"],
        ["import-mingpt", "{tmp}/recorded/config.json", "{tmp}/imported", "--task", "addition"],
        ["import-grokking", "{tmp}/recorded/config.json", "{tmp}/imported"],
        ["fourier", ADD3],
        ["plot", ADD3, "--out", "{tmp}/figures"],
    ],
)
def test_device_cuda_without_a_gpu_is_one_line_before_any_work(argv, tmp_path, capsys):
    (tmp_path / "recorded").mkdir()
    shutil.copy(ADD3 / "config.json", tmp_path / "recorded" / "config.json")
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, *[str(a).format(tmp=tmp_path) for a in argv], "--device", "cuda")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("equiv-tools: error: device 'cuda' asked for, but torch finds no CUDA GPU here")
    assert sorted(tmp_path.rglob("*")) == before


def test_device_names(tiny_run, capsys):
    code, _, err = run_cli(capsys, "evaluate", tiny_run.path, "--device", "tpu")
    assert code == 2 and err == "equiv-tools: error: unknown device 'tpu'; choose cpu, cuda, cuda:N or auto\n"
    code, out, _ = run_cli(capsys, "evaluate", tiny_run.path, "--n", "50", "--json", "--device", "auto")
    assert code == 0 and json.loads(out)["n_ood"] == 50


def test_plot_the_shipped_model(tmp_path, capsys):
    out_dir = tmp_path / "figures"
    code, out, _ = run_cli(capsys, "plot", ADD3, "--out", out_dir)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0] == f"wrote {out_dir / 'training_curves.png'}" and lines[2] == f"wrote {out_dir / 'digit_distribution.png'}"
    # the grid 950..1049 squared: the quarter with both operands below 1000 is ID, where the model is right
    shares = re.fullmatch(rf"wrote {re.escape(str(out_dir / 'category_map.png'))}: correct ([\d.]+)%, "
                          r"matches \(a mod 10\^3\) \+ \(b mod 10\^3\) ([\d.]+)%, other ([\d.]+)%", lines[1])
    assert shares, lines[1]
    correct, matches, other = map(float, shares.groups())
    assert correct == 25.0 and matches >= 60.0 and abs(correct + matches + other - 100) < 0.2
    assert sorted(p.name for p in out_dir.iterdir()) == ["category_map.png", "digit_distribution.png", "training_curves.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in out_dir.iterdir())


def test_plot_an_imported_run_and_the_grokking_layout(tiny_run, tmp_path, capsys):
    from equiv_tools import ModularTask, TrainConfig, train

    imported = tmp_path / "imported"
    shutil.copytree(tiny_run.path, imported)
    (imported / "metrics.csv").unlink()
    code, out, _ = run_cli(capsys, "plot", imported, "--out", tmp_path / "a", "--format", "svg", "--ood-digits", "2", "--seed", "1")
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"skipped training_curves: {imported} has no metrics.csv (an imported run has no training history)"
    assert [line.split(":")[0] for line in lines[1:]] == [f"wrote {tmp_path / 'a' / 'category_map.svg'}", f"wrote {tmp_path / 'a' / 'digit_distribution.svg'}"]
    assert all(p.read_text().lstrip().startswith("<?xml") and "<svg" in p.read_text() for p in (tmp_path / "a").iterdir())

    grok = tmp_path / "grok"
    train(ModularTask(p=7), grok, preset="grokking", train_cfg=TrainConfig(steps=2, eval_every=1, checkpoint_every=1),
          model_overrides=dict(d_model=16, d_head=8, n_heads=2, d_mlp=32), progress=False)
    code, out, _ = run_cli(capsys, "plot", grok, "--out", tmp_path / "b")
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"wrote {tmp_path / 'b' / 'training_curves.png'}"
    assert re.fullmatch(rf"wrote {re.escape(str(tmp_path / 'b' / 'category_map.png'))}: correct [\d.]+%, matches \(a \+ b\) mod 7 0.0%, other [\d.]+%", lines[1]), lines[1]
    assert lines[2] == "skipped digit_distribution: the grokking layout has no OOD inputs, and answers with one token, not digits"
    code, _, err = run_cli(capsys, "plot", grok, "--out", tmp_path / "c", "--ood-digits", "2")
    assert code == 2 and "has no OOD split" in err and not (tmp_path / "c").exists()


def test_relations_json(tiny_run, capsys):
    code, out, _ = run_cli(capsys, "relations", tiny_run.path, "--ood-digits", "2", "--n", "200", "--json")
    report = json.loads(out)
    assert code == 0 and report["ood_digits"] == 2 and report["n"] == 200
    accuracies = [r["accuracy"] for r in report["relations"]]
    assert accuracies == sorted(accuracies, reverse=True)
    assert all(len(r["per_digit"]) == tiny_run.task.answer_len for r in report["relations"])


def test_import_and_relations_on_the_paper_model(paper_dir, tmp_path, capsys):
    src = paper_dir / "exploregpt-adder" / "model_s2.pt"
    code, _, _ = run_cli(capsys, "import-mingpt", src, tmp_path / "s2", "--task", "addition", "--train-digits", "3")
    assert code == 0
    code, out, _ = run_cli(capsys, "relations", tmp_path / "s2", "--ood-digits", "4", "--n", "2000", "--json")
    top = json.loads(out)["relations"][0]
    assert top["relation"] == "(a mod 10^3) + (b mod 10^3)" and top["accuracy"] >= 0.999


def test_the_paper_is_found_next_to_the_checkout_from_any_working_directory(paper_dir, tmp_path, monkeypatch):
    if paper_dir != REPO.parent / "shared" / "paper":
        pytest.skip(f"the paper's files are at {paper_dir}, not next to the checkout")
    monkeypatch.delenv("EQUIV_TOOLS_PAPER_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    folder, reason = find_paper_dir()
    assert folder == REPO.parent / "shared" / "paper" and "the checkout's ../shared/paper" in reason


def test_reproduce_without_the_paper(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EQUIV_TOOLS_PAPER_DIR", raising=False)
    code, out, _ = run_cli(capsys, "reproduce", "--paper-dir", tmp_path / "nowhere", "--n", "500", "--json")
    rows = {r["model"]: r for r in json.loads(out)["rows"]}
    assert code == 0
    assert rows["paper/model_s2.pt"]["status"] == "unavailable" and "not found" in rows["paper/model_s2.pt"]["reason"]
    kit = rows["kit/add3_nano"]
    assert kit["id_accuracy"] >= 0.99 and kit["ood_accuracy"] <= 0.05 and kit["best_relation"]
    assert "kit/mul2_nano" in rows


def test_reproduce_with_the_paper(paper_dir, capsys):
    code, out, _ = run_cli(capsys, "reproduce", "--paper-dir", paper_dir, "--n", "1000", "--json")
    rows = {r["model"]: r for r in json.loads(out)["rows"]}
    s2 = rows["paper/model_s2.pt"]
    assert s2["id_accuracy"] == 1.0 and s2["ood_accuracy"] == 0.0
    assert s2["best_relation"] == "(a mod 10^3) + (b mod 10^3)" and s2["best_relation_accuracy"] >= 0.999
    assert {"model", "task", "id_accuracy", "ood_accuracy", "best_relation", "best_relation_accuracy"} <= set(s2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "/nonexistent/run"], "does not exist"),
        (["train", "--task", "addition", "--out", "x", "--lr", "-1"], "lr must be positive"),
        (["train", "--task", "addition", "--train-digits", "7", "--out", "x"], "does not fit"),
        (["import-mingpt", "/nonexistent.pt", "out", "--task", "addition"], "does not exist"),
        (["import-grokking", "/nonexistent.safetensors", "out"], "does not exist"),
        (["train", "--task", "addition"], "needs --task and --out"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a relative --out never lands in the checkout
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_answer_before_importing_torch(tmp_path):
    script = (
        f"import os, sys\nfrom equiv_tools.cli import main\nos.chdir({str(tmp_path)!r})\n"
        "code = main(['train', '--task', 'addition', '--out', 'x', '--batch-size', '0', '--lr', '-1'])\n"
        "print(code, 'torch' in sys.modules)"
    )
    bad_arg = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert bad_arg.returncode == 2 and "usage:" in bad_arg.stderr  # argparse rejects --batch-size 0
    script = script.replace("'--batch-size', '0', ", "")
    bad_value = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert bad_value.stdout.split() == ["2", "False"]
    resume = script.replace("'--task', 'addition', '--out', 'x'", f"'--resume', {str(ADD3)!r}")
    bad_override = subprocess.run([sys.executable, "-c", resume], capture_output=True, text=True)
    assert bad_override.stdout.split() == ["2", "False"] and "lr must be positive" in bad_override.stderr
