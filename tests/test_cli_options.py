"""The CLI's options: `train` flags generated from TrainConfig and the model fields, help with defaults, and
what reaches the library (only the options written on the command line)."""
import argparse
import json
import shutil
from dataclasses import fields

import pandas as pd
import pytest

from equiv_tools import cli
from equiv_tools.cli import build_parser, format_table, main
from equiv_tools.core.config import MODEL_FIELDS, PRESETS, TrainConfig

from .conftest import REPO

ADD3 = REPO / "data" / "add3_nano"


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def groups(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    return {g.title: {a.dest for a in g._group_actions} for g in parser._action_groups}


def expanded_help(parser: argparse.ArgumentParser, action) -> str:
    return " ".join(parser._get_formatter()._expand_help(action).split())


def help_text(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_train_flags_are_the_config_fields():
    train = groups(commands()["train"])
    assert train["training"] == {f.name for f in fields(TrainConfig)}
    assert train["model"] == {"preset"} | (set(MODEL_FIELDS) - {"seed"})
    assert train["task"] == {"task", "train_digits", "width", "p", "op", "train_fraction"}
    assert train["options"] == {"help", "out", "resume", "device", "quiet", "extra_pairs"}
    assert set(cli.TRAIN_HELP) == {f.name for f in fields(TrainConfig)}  # every field has its own help line


def test_train_help_shows_each_field_with_its_default(capsys):
    text = help_text(capsys, "train", "--help")
    train = commands()["train"]
    by_dest = {a.dest: a for a in train._actions}
    for f in fields(TrainConfig):
        action = by_dest[f.name]
        line = expanded_help(train, action)
        assert "--" + f.name.replace("_", "-") in action.option_strings and line in text
        if f.default is not None:
            assert line.endswith(f"(default: {f.default})"), line
        else:
            assert "(default: " in line and "(default: None)" not in line, line
    assert "(default: full)" not in text and "(default: 256)" in text  # batch_size's real default, not the word
    for name in set(MODEL_FIELDS) - {"seed"}:
        line = expanded_help(train, by_dest[name])
        assert "(default: from the preset: " in line and line in text
    assert f"(default: from the preset: nano {PRESETS['nano']['d_model']}, grokking {PRESETS['grokking']['d_model']})" in text
    assert "LN (LayerNorm) or none (default: from the preset: nano LN, grokking none)" in text


def test_every_option_of_every_command_has_help_and_a_default(capsys):
    for name, parser in commands().items():
        text = help_text(capsys, name, "--help")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            line = expanded_help(parser, action)
            assert line and line in text, (name, action.dest)
            if action.option_strings and not action.required and not isinstance(action, argparse._StoreTrueAction):
                assert "(default: " in line or "(required unless --resume)" in line, (name, action.dest, line)


@pytest.mark.parametrize(
    "flag, text, value",
    [
        ("--batch-size", "full", None), ("--batch-size", "FULL", None), ("--batch-size", "64", 64),
        ("--grad-clip", "none", None), ("--grad-clip", "0.5", 0.5), ("--lr", "1e-3", 1e-3), ("--warmup-steps", "0", 0),
        ("--seed", "0", 0), ("--normalization-type", "none", None), ("--normalization-type", "LN", "LN"),
        ("--act-fn", "relu", "relu"), ("--eps", "1e-6", 1e-6), ("--n-layers", "2", 2),
    ],
)
def test_train_values(flag, text, value):
    args = build_parser().parse_args(["train", flag, text])
    assert getattr(args, flag[2:].replace("-", "_")) == value


@pytest.mark.parametrize(
    "flag, text, message",
    [
        ("--batch-size", "0", "expected a positive integer, got '0'; or 'full'"),
        ("--batch-size", "abc", "expected a positive integer, got 'abc'; or 'full'"),
        ("--grad-clip", "x", "expected a finite number, got 'x'; or 'none'"),
        ("--lr", "nan", "expected a finite number, got 'nan'"),
        ("--steps", "2.5", "expected a positive integer, got '2.5'"),
        ("--warmup-steps", "-1", "expected a non-negative integer, got '-1'"),
        ("--n-train", "full", "expected a positive integer, got 'full'"),  # only batch_size and grad_clip take a word
        ("--eps", "0", "expected a positive number, got '0'"),
        ("--normalization-type", "RMS", "expected LN or none, got 'RMS'"),
        ("--d-model", "-48", "expected a positive integer, got '-48'"),
    ],
)
def test_bad_train_values_are_usage_errors(flag, text, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "addition", "--out", "x", flag, text])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "usage:" in err and f"argument {flag}: {message}" in err


@pytest.fixture()
def fake_train(monkeypatch):
    from equiv_tools.runs import training

    calls = []

    def train(task, out_dir, **kwargs):
        calls.append(dict(task=task, out_dir=out_dir, **kwargs))
        return pd.DataFrame({"step": [1], "split": ["id_test"], "loss": [0.5], "accuracy": [0.25]})

    monkeypatch.setattr(training, "train", train)
    return calls


def test_train_passes_the_options_given_and_the_config_defaults(fake_train, tmp_path, capsys):
    argv = ["train", "--task", "addition", "--train-digits", "1", "--width", "2", "--out", tmp_path / "run", "--steps", "5",
            "--batch-size", "full", "--grad-clip", "none", "--n-layers", "2", "--normalization-type", "none", "--quiet"]
    assert main(list(map(str, argv))) == 0
    [call] = fake_train
    assert call["train_cfg"] == TrainConfig(steps=5, batch_size=None, grad_clip=None)
    assert call["model_overrides"] == {"n_layers": 2, "normalization_type": None}
    assert call["preset"] == "nano" and call["device"] == "cpu" and call["progress"] is False
    assert call["task"].describe() == "AdditionTask(train_digits=1, width=2)"
    assert capsys.readouterr().out == f"trained {tmp_path / 'run'}: id_test accuracy 0.2500\n"


def test_train_passes_the_preset_and_model_overrides(fake_train, tmp_path, capsys):
    code = main(["train", "--task", "addition", "--out", str(tmp_path / "run"), "--preset", "grokking", "--act-fn", "relu"])
    assert code == 0 and fake_train[0]["preset"] == "grokking" and fake_train[0]["model_overrides"] == {"act_fn": "relu"}


@pytest.fixture()
def recorded_run(tmp_path):
    """A folder holding only add3_nano's config.json: enough for the CLI's checks, and nothing a real resume could harm."""
    run = tmp_path / "recorded"
    run.mkdir()
    shutil.copy(ADD3 / "config.json", run / "config.json")
    return run


@pytest.fixture()
def fake_resume(monkeypatch):
    from equiv_tools.runs import training

    calls = []

    def resume(run_dir, **kwargs):
        calls.append(dict(run_dir=run_dir, **kwargs))
        return pd.DataFrame({"step": [9, 9], "split": ["train", "ood"], "loss": [0.1, 2.0], "accuracy": [1.0, 0.0]})

    monkeypatch.setattr(training, "resume", resume)
    return calls


def test_resume_passes_only_the_options_given(fake_resume, recorded_run, capsys):
    assert main(["train", "--resume", str(recorded_run), "--steps", "3000", "--lr", "1e-3", "--grad-clip", "none"]) == 0
    [call] = fake_resume
    assert call == dict(run_dir=recorded_run, progress=True, device="cpu", steps=3000, lr=1e-3, grad_clip=None)
    assert capsys.readouterr().out == f"resumed {recorded_run}: train accuracy 1.0000, ood accuracy 0.0000\n"
    fake_resume.clear()
    assert main(["train", "--resume", str(recorded_run), "--quiet"]) == 0
    assert fake_resume == [dict(run_dir=recorded_run, progress=False, device="cpu")]


@pytest.mark.parametrize(
    "extra",
    [["--task", "addition"], ["--width", "5"], ["--preset", "nano"], ["--n-layers", "2"], ["--normalization-type", "none"],
     ["--eps", "1e-6"], ["--out", "elsewhere"]],
)
def test_resume_refuses_task_and_model_options(extra, fake_resume, recorded_run, capsys):
    before = (recorded_run / "config.json").read_bytes()
    code = main(["train", "--resume", str(recorded_run), "--steps", "3000", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("equiv-tools: error: --resume keeps the run's task and model")
    assert extra[0] in err and not fake_resume and (recorded_run / "config.json").read_bytes() == before


def test_resume_checks_overrides_against_the_recorded_config(fake_resume, recorded_run, capsys):
    code = main(["train", "--resume", str(recorded_run), "--weight-decay", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and "weight_decay must be non-negative" in err and not fake_resume


def test_format_table_aligns_columns():
    rows = [{"name": "a", "n": 5, "acc": 1.0}, {"name": "longer name", "n": 12345, "acc": None}]
    lines = format_table(rows, {"name": "model", "n": "pairs", "acc": "accuracy"}).splitlines()
    assert lines == [
        "model        pairs  accuracy",
        "a                5    1.0000",
        "longer name  12345         -",
    ]


def test_json_outputs_unchanged_by_tables(tiny_run, capsys):
    """--json prints exactly the library's object; the table shows the same numbers."""
    from equiv_tools.analysis.evaluation import evaluate_run

    assert main(["evaluate", str(tiny_run.path), "--n", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == evaluate_run(tiny_run, n=100)
