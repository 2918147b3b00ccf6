"""The `equiv-tools` command line: JSON shapes, one-line errors, no torch import for usage errors."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from equiv_tools.cli import main

from .conftest import REPO


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
    code, _, _ = run_cli(capsys, "train", "--resume", out_dir, "--steps", "9", "--quiet")
    assert code == 0
    assert json.loads((out_dir / "state.json").read_text())["step"] == 9
    code, out, _ = run_cli(capsys, "evaluate", out_dir, "--json", "--n", "50")
    assert code == 0 and json.loads(out)["n_ood"] == 50


def test_predict_csv(tiny_run, tmp_path, capsys):
    (tmp_path / "in.csv").write_text("a,b\n3,4\n12,34\n")
    code, _, _ = run_cli(capsys, "predict", tiny_run.path, "--input", tmp_path / "in.csv", "--output", tmp_path / "out.csv")
    frame = pd.read_csv(tmp_path / "out.csv")
    assert code == 0 and list(frame.columns) == ["a", "b", "prediction"] and frame.a.tolist() == [3, 12]
    (tmp_path / "bad.csv").write_text("a,b\n3,x4\n")
    code, _, err = run_cli(capsys, "predict", tiny_run.path, "--input", tmp_path / "bad.csv", "--output", tmp_path / "o.csv")
    assert code == 2 and "line 2" in err and err.count("\n") == 1


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
