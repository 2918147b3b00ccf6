"""The paper's minGPT checkpoints load into the kit's TransformerLens model and decode exactly as minGPT would.

The reference below is written here from the state dict alone (pre-LN GPT,
tanh GELU, learned positions, no lm_head bias); it shares no code with the kit.
"""
import math

import numpy as np
import pytest
import torch

from equiv_tools import AdditionTask, InputError
from equiv_tools.forward.decoding import greedy_decode
from equiv_tools.runs.imports import import_mingpt, load_mingpt
from equiv_tools.runs.models import load_run

TASK = AdditionTask(train_digits=3, width=5)
N_HEADS = 3


def _layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w + b


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def reference_logits(sd, idx):
    """minGPT forward: idx [B, T] -> logits [B, T, vocab], in float64."""
    sd = {k: v.double() for k, v in sd.items()}
    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    n_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.h.")})
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(n_layers):
        p = f"transformer.h.{i}."
        h = _layer_norm(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        qkv = h @ sd[p + "attn.c_attn.weight"].T + sd[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(qkv.shape[-1] // 3, dim=-1)
        hs = q.shape[-1] // N_HEADS
        q, k, v = (t.view(B, T, N_HEADS, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + y @ sd[p + "attn.c_proj.weight"].T + sd[p + "attn.c_proj.bias"]
        h = _layer_norm(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = _gelu_tanh(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    x = _layer_norm(x, sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"])
    return x @ sd["lm_head.weight"].T


@torch.no_grad()
def reference_agrees(sd, a, b, answers, batch_size=2000):
    """Does the reference's greedy answer equal ``answers`` [n, 6]? Per input [n], and the smallest top-2 margin [n].

    Greedy decoding yields ``answers`` iff, teacher-forced on them, the argmax
    at every answer position is the answer's digit (induction over positions),
    so one reference forward per input decides it.
    """
    seqs = torch.cat([torch.from_numpy(TASK.encode_prompt(a, b)), torch.from_numpy(answers)], dim=1)
    agrees, margins = [], []
    for start in range(0, len(seqs), batch_size):
        seq = seqs[start : start + batch_size]
        logits = reference_logits(sd, seq[:, :-1])[:, TASK.prompt_len - 1 :]
        agrees.append((logits.argmax(-1) == seq[:, TASK.prompt_len :]).all(dim=1))
        top2 = logits.topk(2, dim=-1).values
        margins.append((top2[..., 0] - top2[..., 1]).min(dim=1).values)
    return torch.cat(agrees).numpy(), torch.cat(margins).numpy()


def _state_dict(paper_dir, name):
    return torch.load(paper_dir / "exploregpt-adder" / name, map_location="cpu", weights_only=True)


def _compare(run, sd, a, b, record_property, label):
    ours = greedy_decode(run.model, TASK, a, b)
    agrees, margin = reference_agrees(sd, a, b, ours)
    near_ties = int((margin < 1e-4).sum())
    mismatches = int((~agrees).sum())
    record_property(f"{label}_near_ties", near_ties)
    print(f"{label}: {len(a)} inputs, {mismatches} greedy mismatches, {near_ties} near-ties (top-2 margin < 1e-4)")
    assert mismatches == 0


@pytest.mark.parametrize("name", ["model_s2.pt", "model_51.pt"])
def test_identical_greedy_answers_on_mixed_sample(paper_dir, name, record_property):
    run = load_mingpt(paper_dir / "exploregpt-adder" / name, TASK)
    rng = np.random.default_rng(7)
    ida, idb = TASK.sample_id(10_000, seed=7)
    ooda, oodb = TASK.sample_ood(10_000, digits=4, seed=8)
    a, b = np.concatenate([ida, ooda]), np.concatenate([idb, oodb])
    order = rng.permutation(len(a))
    _compare(run, _state_dict(paper_dir, name), a[order], b[order], record_property, name)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about 20 minutes on 2 cores
def test_identical_greedy_answers_on_all_id_pairs(paper_dir, record_property):
    run = load_mingpt(paper_dir / "exploregpt-adder" / "model_s2.pt", TASK)
    a, b = TASK.grid(range(1000), range(1000))
    _compare(run, _state_dict(paper_dir, "model_s2.pt"), a, b, record_property, "model_s2_all_id")


def test_import_writes_a_run_directory(paper_dir, tmp_path):
    run = import_mingpt(paper_dir / "exploregpt-adder" / "model_s2.pt", tmp_path / "s2", TASK)
    again = load_run(tmp_path / "s2")
    assert again.config.training is None and again.config.provenance["format"] == "minGPT"
    assert again.config.provenance["sha256"] == "5cf788d370e90b2a58b202b9cbb17e174aae0dc83f5ef28fe581484b3a4717b9"
    tokens = torch.from_numpy(TASK.encode([349, 1349], [705, 2705]))[:, :-1]
    with torch.no_grad():
        assert torch.equal(run.model(tokens), again.model(tokens))
    assert TASK.decode_answer(greedy_decode(again.model, TASK, [349, 1349], [705, 2705])).tolist() == [1054, 1054]


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError, match="not a minGPT checkpoint"):
        load_mingpt(junk, TASK)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a minGPT checkpoint"):
        load_mingpt(tmp_path / "other.pt", TASK)
    with pytest.raises(InputError, match="does not exist"):
        load_mingpt(tmp_path / "missing.pt", TASK)
