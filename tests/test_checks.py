"""The build-it-yourself checks (analysis.checks) on the shipped runs: a correct hand-built result passes,
a typical mistake fails with a message that names it."""
import numpy as np
import pytest
import torch

import equiv_tools as et
from equiv_tools.analysis import checks
from equiv_tools.analysis.fourier import embedding_frequency_norms
from equiv_tools.analysis.patching import answered_tokens

CLEAN, CORRUPTED = (349, 705), (449, 705)  # a's hundreds digit apart: 1054 and 1154


@pytest.fixture(scope="module")
def grok():
    return et.load_run("grok113_fast")


def verdict(capsys, result: bool) -> tuple[bool, str]:
    """The check's return value and the message it printed."""
    return result, capsys.readouterr().out


# ---- resid_pre patching ------------------------------------------------------------------------------------


def hand_patch(model, task, clean, corrupted, layer, position, every_position=False, reverse=False):
    """The learner's patch: the clean run's blocks.{layer}.hook_resid_pre at ``position`` copied into the corrupted run."""
    clean_tokens = answered_tokens(model, task, *clean)[:, :-1]
    corrupted_tokens = answered_tokens(model, task, *corrupted)[:, :-1]
    if reverse:
        clean_tokens, corrupted_tokens = corrupted_tokens, clean_tokens
    name = f"blocks.{layer}.hook_resid_pre"
    _, cache = model.run_with_cache(clean_tokens, names_filter=name)

    def hook(resid, hook):  # [batch, pos, d_model]
        resid = resid.clone()
        where = slice(None) if every_position else position
        resid[:, where] = cache[name][:, where]
        return resid

    with torch.no_grad():
        return model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])


def test_resid_pre_patch_by_hand_passes_for_one_pair_and_a_batch(add3_nano, capsys):
    model, task = add3_nano.model, add3_nano.task
    logits = hand_patch(model, task, CLEAN, CORRUPTED, 1, 7)
    ok, message = verdict(capsys, et.check_resid_pre_patch(model, task, *CLEAN, *CORRUPTED, 1, 7, logits))
    assert ok and "agree" in message and "b[10^2]" in message
    assert ok is True and logits[0, 11].argmax().item() == 0  # patched, ans[10^2] is predicted as the clean answer's 0 (1054)
    ok, _ = verdict(capsys, et.check_resid_pre_patch(model, task, *CLEAN, *CORRUPTED, 1, 7, logits[0].numpy()))  # [pos, vocab]
    assert ok
    a, b = task.sample_id(20, seed=3)
    clean, corrupted = et.one_digit_apart(task, a, b, place=2)
    logits = hand_patch(model, task, clean, corrupted, 2, 11)
    ok, _ = verdict(capsys, et.check_resid_pre_patch(model, task, *clean, *corrupted, 2, 11, logits))
    assert ok


@pytest.mark.parametrize("mistake, expected", [
    (dict(every_position=True), "did you patch every position instead of one?"),
    (dict(position=8), "did you patch position 8 instead of 7?"),
    (dict(layer=2), "did you hook blocks.2.hook_resid_pre instead of blocks.1.hook_resid_pre?"),
    (dict(reverse=True), "did you swap the clean and corrupted runs?"),
])
def test_resid_pre_patch_mistakes_are_named(add3_nano, capsys, mistake, expected):
    model, task = add3_nano.model, add3_nano.task
    layer, position = mistake.pop("layer", 1), mistake.pop("position", 7)
    logits = hand_patch(model, task, CLEAN, CORRUPTED, layer, position, **mistake)
    ok, message = verdict(capsys, et.check_resid_pre_patch(model, task, *CLEAN, *CORRUPTED, 1, 7, logits))
    assert ok is False
    assert "differ at position" in message and expected in message, message


def test_resid_pre_patch_without_the_hook_is_the_corrupted_run(add3_nano, capsys):
    model, task = add3_nano.model, add3_nano.task
    with torch.no_grad():
        logits = model(answered_tokens(model, task, *CORRUPTED)[:, :-1])
    ok, message = verdict(capsys, et.check_resid_pre_patch(model, task, *CLEAN, *CORRUPTED, 1, 7, logits))
    assert not ok and "corrupted run's logits, unpatched" in message and "position 7 (b[10^2])" in message


def test_resid_pre_patch_refuses_a_layer_the_model_lacks(add3_nano):
    with pytest.raises(et.InputError, match="layer must lie in"):
        et.check_resid_pre_patch(add3_nano.model, add3_nano.task, *CLEAN, *CORRUPTED, 3, 7, torch.zeros(1, 15, 10))


# ---- logit difference -------------------------------------------------------------------------------------


def hand_logit_difference(model, task, a, b, corrupted_answers, j, read_at=None):
    """The learner's metric: logit[model's digit j] - logit[corrupted digit j], teacher-forced on the model's answers: [n]."""
    answers = et.predict(model, task, a, b)
    tokens = torch.from_numpy(task.encode(a, b, answers))[:, : task.n_ctx]
    with torch.no_grad():
        logits = model(tokens)  # [n, n_ctx, d_vocab_out]
    at = logits[:, task.prompt_len - 1 + j if read_at is None else read_at]  # the logits that predict answer digit j
    mine = torch.from_numpy(task.encode_answer(answers)[:, j])
    theirs = torch.from_numpy(task.encode_answer(corrupted_answers)[:, j])
    return at.gather(1, mine[:, None])[:, 0] - at.gather(1, theirs[:, None])[:, 0]


@pytest.fixture(scope="module")
def ood(add3_nano):
    a, b = add3_nano.task.sample_ood(300, digits=4, seed=0)
    return a, b, add3_nano.task.truth(a, b)


def test_logit_difference_by_hand_passes_as_a_mean_and_per_input(add3_nano, ood, capsys):
    model, task = add3_nano.model, add3_nano.task
    a, b, truth = ood
    diff = hand_logit_difference(model, task, a, b, truth, 3)
    ok, message = verdict(capsys, et.check_logit_difference(model, task, a, b, float(diff.mean()), truth, answer_position=3))
    assert ok and "answer position 3 (ans[10^3])" in message
    assert 10 < float(diff.mean()) < 25  # the model prefers the relation's thousands digit over the truth's by far
    ok, message = verdict(capsys, et.check_logit_difference(model, task, a, b, diff, truth, answer_position=3))
    assert ok and "each of the 300 inputs" in message


def test_logit_difference_against_a_corrupted_input_defaults_to_the_first_differing_digit(add3_nano, capsys):
    model, task = add3_nano.model, add3_nano.task
    corrupted_answer = et.predict(model, task, [449], [705])  # 1154: differs from 1054 at ans[10^2] first
    diff = hand_logit_difference(model, task, [349], [705], corrupted_answer, 2)
    ok, message = verdict(capsys, et.check_logit_difference(model, task, 349, 705, diff.item(), corrupted_answer))
    assert ok and "ans[10^2]" in message


@pytest.mark.parametrize("mistake, expected", [
    ("sign", "did you subtract the clean digit's logit from the corrupted one's?"),
    ("own position", "it reads the logits at ans[10^3]'s own position 13"),
    ("next position", "the next answer position, ans[10^3]"),
    ("sum", "it is the sum over the 300 inputs: take their mean"),
])
def test_logit_difference_mistakes_are_named(add3_nano, ood, capsys, mistake, expected):
    model, task = add3_nano.model, add3_nano.task
    a, b, truth = ood
    position = 2 if mistake == "next position" else 3
    diff = {
        "sign": lambda: -hand_logit_difference(model, task, a, b, truth, 3).mean(),
        "own position": lambda: hand_logit_difference(model, task, a, b, truth, 3, read_at=task.prompt_len + 3).mean(),
        "next position": lambda: hand_logit_difference(model, task, a, b, truth, 3).mean(),
        "sum": lambda: hand_logit_difference(model, task, a, b, truth, 3).sum(),
    }[mistake]()
    ok, message = verdict(capsys, et.check_logit_difference(model, task, a, b, float(diff), truth, answer_position=position))
    assert ok is False and expected in message, message


# ---- head ablation ---------------------------------------------------------------------------------------


def hand_ablation(model, task, a, b, layer, head, mean=False, wrong_axis=False, whole_layer=False):
    """The learner's ablation: z of one head (zeros or its mean over the batch) -> accuracy per answer digit [answer_len]."""
    truth = task.truth(a, b)
    tokens = torch.from_numpy(task.encode(a, b, truth))  # [n, seq_len]
    name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[:, : task.n_ctx], names_filter=name)
    value = cache[name][:, :, head].mean(0) if mean else 0.0  # [pos, d_head] or 0

    def hook(z, hook):  # [batch, pos, n_heads, d_head]
        z = z.clone()
        if wrong_axis:
            z[:, head] = 0.0
        elif whole_layer:
            z[:, :, :] = 0.0
        else:
            z[:, :, head] = value
        return z

    with torch.no_grad():
        logits = model.run_with_hooks(tokens[:, : task.n_ctx], fwd_hooks=[(name, hook)])
    predicted = logits[:, task.prompt_len - 1 :].argmax(-1)  # [n, answer_len]: each answer digit, teacher-forced
    return (predicted == tokens[:, task.prompt_len :]).float().mean(0).numpy()


@pytest.fixture(scope="module")
def id_pairs(add3_nano):
    return add3_nano.task.sample_id(300, seed=0)


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_head_ablation_by_hand_passes(add3_nano, id_pairs, capsys, ablation):
    model, task = add3_nano.model, add3_nano.task
    accuracy = hand_ablation(model, task, *id_pairs, 0, 2, mean=ablation == "mean")
    ok, message = verdict(capsys, et.check_head_ablation(model, task, *id_pairs, 0, 2, accuracy, ablation=ablation))
    assert ok and f"{ablation}-ablated" in message
    assert accuracy[0] < 0.97 and (accuracy[3:] == 1.0).all()  # head 2 of layer 0 matters for the units digit, not the high digits


@pytest.mark.parametrize("mistake, expected", [
    (dict(head=0), "did you ablate head 0?"),
    (dict(whole_layer=True), "every head of layer 0 ablated"),
    (dict(wrong_axis=True), "did you write z[:, 2] instead of z[:, :, 2]?"),
    (dict(mean=True), "it is the accuracy with mean ablation: this check asks for zero ablation"),
])
def test_head_ablation_mistakes_are_named(add3_nano, id_pairs, capsys, mistake, expected):
    model, task = add3_nano.model, add3_nano.task
    accuracy = hand_ablation(model, task, *id_pairs, 0, mistake.pop("head", 2), **mistake)
    ok, message = verdict(capsys, et.check_head_ablation(model, task, *id_pairs, 0, 2, accuracy))
    assert ok is False and "differ at answer position" in message and expected in message, message


def test_head_ablation_digits_in_reversed_order_are_named(add3_nano, id_pairs, capsys):
    model, task = add3_nano.model, add3_nano.task
    accuracy = hand_ablation(model, task, *id_pairs, 0, 2)[::-1]
    ok, message = verdict(capsys, et.check_head_ablation(model, task, *id_pairs, 0, 2, accuracy))
    assert not ok and "reversed order" in message


# ---- Fourier ------------------------------------------------------------------------------------------------


def hand_fourier(model, p, normalise=True, fft=False):
    """The learner's projection of W_E[:p] onto the Fourier basis over Z_p: the norm per frequency k = 1..p//2 [p // 2]."""
    W = model.W_E[:p].detach().double().numpy()  # [p, d_model]
    if fft:
        return np.linalg.norm(np.fft.rfft(W, axis=0, norm="ortho")[1:], axis=1)
    x = np.arange(p)
    cos = np.stack([np.cos(2 * np.pi * k * x / p) for k in range(1, p // 2 + 1)])  # [k, p]
    sin = np.stack([np.sin(2 * np.pi * k * x / p) for k in range(1, p // 2 + 1)])
    if normalise:
        cos, sin = cos / np.sqrt(p / 2), sin / np.sqrt(p / 2)
    return np.sqrt(((cos @ W) ** 2).sum(1) + ((sin @ W) ** 2).sum(1))


def test_embedding_fourier_by_hand_passes(grok, capsys):
    norms = hand_fourier(grok.model, 113)
    ok, message = verdict(capsys, et.check_embedding_fourier(grok.model, 113, norms))
    assert ok and "p = 113" in message
    kit = embedding_frequency_norms(grok.model, 113)
    assert np.allclose(norms, kit.norm, rtol=1e-9) and kit.share.sum() == pytest.approx(1.0)
    ok, _ = verdict(capsys, et.check_embedding_fourier(grok.model, 113, torch.tensor(norms, dtype=torch.float32)))
    assert ok  # a float32 tensor agrees to float32 rounding


def test_embedding_fourier_mistakes_are_named(grok, capsys):
    model = grok.model
    cases = [
        (hand_fourier(model, 113, normalise=False), "the kit's times sqrt(p/2) = 7.52"),
        (hand_fourier(model, 113, fft=True), "norm='ortho'"),
        (hand_fourier(model, 113) ** 2, "take the square root"),
        (hand_fourier(model, 113) * 3, "the kit's times 3"),
    ]
    for norms, expected in cases:
        ok, message = verdict(capsys, et.check_embedding_fourier(model, 113, norms))
        assert ok is False and "differ at frequency" in message and expected in message, message
    ok, message = verdict(capsys, et.check_embedding_fourier(model, 113, hand_fourier(model, 113)[:-1]))
    assert not ok and "shape (55,)" in message and "k = 1..56" in message


def test_checks_are_exported_lazily():
    for name in ("check_resid_pre_patch", "check_logit_difference", "check_head_ablation", "check_embedding_fourier"):
        assert getattr(et, name) is getattr(checks, name) and name in et.__all__
