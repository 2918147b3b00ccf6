"""Nanda et al.'s grokked model imports onto the grokking preset and computes what the format says it computes.

The reference forward below is written here from the format's facts (../shared/paper/nanda-grokking/README.md)
and shares no code with the kit's mapping.
"""
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from equiv_tools import InputError, ModularTask
from equiv_tools.cli import main
from equiv_tools.core.config import PRESETS, model_config
from equiv_tools.core.rundir import RunDir
from equiv_tools.runs.imports import load_grokking
from equiv_tools.runs.models import load_run
from tests.tolerance import assert_close

WEIGHTS, CONFIG = "mod113_seed1.safetensors", "mod113_seed1_config.json"
P = 113


def reference_logits(w, tokens):
    """Nanda et al.'s forward from the facts: tokens [n, 3] -> logits [n, 3, 114], float64."""
    w = {k: v.double() for k, v in w.items()}
    x = w["embed.W_E"][:, tokens].permute(1, 2, 0) + w["pos_embed.W_pos"]  # [n, pos, d_model]
    q, k, v = (torch.einsum("hdm,npm->nhpd", w[f"blocks.0.attn.W_{name}"], x) for name in "QKV")  # [n, heads, pos, d_head]
    scores = q @ k.transpose(-1, -2) / math.sqrt(32)
    causal = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    z = (scores.masked_fill(~causal, -math.inf).softmax(-1) @ v).transpose(1, 2).reshape(len(tokens), 3, 128)
    x = x + z @ w["blocks.0.attn.W_O"].T
    x = x + torch.relu(x @ w["blocks.0.mlp.W_in"].T + w["blocks.0.mlp.b_in"]) @ w["blocks.0.mlp.W_out"].T + w["blocks.0.mlp.b_out"]
    return x @ w["unembed.W_U"]


def all_tokens():
    a, b = torch.arange(P).repeat_interleave(P), torch.arange(P).repeat(P)
    return a, b, torch.stack([a, b, torch.full_like(a, P)], dim=1)


def test_bridge_matches_the_reference_forward(nanda_dir):
    run = load_grokking(nanda_dir / WEIGHTS, nanda_dir / CONFIG)
    assert run.task == ModularTask(p=113) and run.config.model == model_config(ModularTask(p=113), "grokking")
    a, b, tokens = all_tokens()
    reference = reference_logits(load_file(nanda_dir / WEIGHTS), tokens)
    with torch.no_grad():
        ours = run.model(tokens).double()
    assert_close(ours, reference)  # float32 against float64: rounding relative to the logits (they reach about 30)
    assert torch.equal(ours[:, -1].argmax(-1), reference[:, -1].argmax(-1))
    assert (reference[:, -1].argmax(-1) == (a + b) % P).all()


def test_cli_import_then_evaluate(nanda_dir, tmp_path, capsys):
    out = tmp_path / "grok"
    assert main(["import-grokking", str(nanda_dir / WEIGHTS), str(out), "--config", str(nanda_dir / CONFIG)]) == 0
    config = RunDir(out).read_config()  # the kit's own validation: only MODEL_FIELDS, preset grokking's values
    assert config.training is None and config.provenance["format"] == "nanda-grokking"
    assert config.provenance["sha256"] == "76d136be3381473cd2c703736ac8c1a58c4038d066bfcdd839fb1cf8e711ad1e"
    assert {k: config.model[k] for k in PRESETS["grokking"]} == PRESETS["grokking"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--n", "500"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["all_pairs_accuracy"] == 1.0 and result["n_all_pairs"] == P * P
    assert result["id_accuracy"] == 1.0 and result["n_id"] == 500 and result["ood_accuracy"] is None
    assert load_run(out).task == ModularTask(p=113)


def test_p_from_the_embedding_without_config(nanda_dir, tmp_path):
    assert load_grokking(nanda_dir / WEIGHTS).task == ModularTask(p=113)
    (tmp_path / "p97.json").write_text('{"p": 97, "fn_name": "add"}')
    with pytest.raises(InputError, match=r"the embedding has 114 tokens, but p = 97 .* needs p \+ 1 = 98"):
        load_grokking(nanda_dir / WEIGHTS, tmp_path / "p97.json")
    for bad, message in (('{"p": "113"}', "modulus p must be an integer"), ('{"p": 113, "frac_train": "x"}', "frac_train must be a number"),
                         ('[1, 2]', "has no field 'p'"), ('{"p": 113, "frac_train": 1.5}', "train_fraction must lie")):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(InputError, match=message):
            load_grokking(nanda_dir / WEIGHTS, tmp_path / "bad.json")


def test_missing_and_unused_weights_are_refused(nanda_dir, tmp_path):
    weights = load_file(nanda_dir / WEIGHTS)
    save_file({k: v for k, v in weights.items() if k != "blocks.0.mlp.b_in"}, tmp_path / "missing.safetensors")
    with pytest.raises(InputError, match=r"lacks \['blocks.0.mlp.b_in'\]"):
        load_grokking(tmp_path / "missing.safetensors")
    save_file({**weights, "unembed.b_U": torch.zeros(114)}, tmp_path / "extra.safetensors")
    with pytest.raises(InputError, match=r"does not use: \['unembed.b_U'\]"):
        load_grokking(tmp_path / "extra.safetensors")


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    assert main(["import-grokking", str(tmp_path / "junk.safetensors"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("equiv-tools: error:") and "not a readable safetensors file" in err and err.count("\n") == 1
    assert main(["import-grokking", str(tmp_path / "none.safetensors"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    (tmp_path / "cfg.json").write_text('{"p": 113, "fn_name": "x2xyy2"}')
    assert main(["import-grokking", str(tmp_path / "other.safetensors"), str(tmp_path / "out"), "--config", str(tmp_path / "cfg.json")]) == 2
    assert "fn_name 'x2xyy2' has no kit task" in capsys.readouterr().err
    assert main(["import-grokking", str(tmp_path / "other.safetensors"), str(tmp_path / "out")]) == 2
    assert "not a grokking checkpoint" in capsys.readouterr().err
    save_file({"embed.W_E": torch.zeros(16, 8)}, tmp_path / "small.safetensors")
    (tmp_path / "p97.json").write_text('{"p": 97}')
    assert main(["import-grokking", str(tmp_path / "small.safetensors"), str(tmp_path / "out"), "--config", str(tmp_path / "p97.json")]) == 2
    assert "lacks" in capsys.readouterr().err  # the missing weights are named before anything else
    assert not (tmp_path / "out").exists()


def test_all_pairs_accuracy_counts_every_pair(tmp_path):
    """On an untrained small model (no shared files needed): the share of the 7^2 pairs whose last-position argmax is right."""
    from equiv_tools.core.config import RunConfig
    from equiv_tools.analysis.evaluation import evaluate_run
    from equiv_tools.runs.models import build_model, write_run

    task = ModularTask(p=7)
    cfg = model_config(task, "grokking", seed=3, d_model=16, d_head=4, d_mlp=32)
    run = write_run(tmp_path / "r", RunConfig(task, cfg, None, {}), build_model(cfg))
    a, b = torch.arange(7).repeat_interleave(7), torch.arange(7).repeat(7)
    with torch.no_grad():
        right = run.model(torch.stack([a, b, torch.full_like(a, 7)], dim=1))[:, -1].argmax(-1) == (a + b) % 7
    result = evaluate_run(run, n=10)
    assert result["n_all_pairs"] == 49 and result["all_pairs_accuracy"] == right.double().mean().item()
    assert result["n_id"] == 10 and result["ood_accuracy"] is None
