"""The kit's answers are the bridge's: hooks are honoured, and the lean forward runs only for settings it implements."""
import numpy as np
import pytest
import torch

from equiv_tools import AdditionTask, discover_relations, evaluate_run, explain_input, predict, score_digits
from equiv_tools.forward.decoding import greedy_decode, naive_greedy_decode
from equiv_tools.analysis.class_maps import class_map
from equiv_tools.forward.lean import LeanModel, fast_path_blocker
from equiv_tools.analysis.maps import grid_answers
from equiv_tools.runs.models import build_model
from equiv_tools.core.relations import sum_of_residues
from tests.tolerance import ULPS, is_close

TASK = AdditionTask(train_digits=1, width=2)
BASE = dict(n_layers=2, n_heads=2, d_model=16, d_head=8, d_mlp=32, act_fn="gelu_new", normalization_type="LN", eps=1e-5,
            n_ctx=TASK.n_ctx, d_vocab=TASK.d_vocab, d_vocab_out=TASK.d_vocab)

# (config change, whether the lean forward implements it)
SETTINGS = [
    ({}, True),
    (dict(normalization_type=None), True),
    (dict(act_fn="gelu"), True),
    (dict(act_fn="relu"), True),
    (dict(act_fn="silu"), True),
    (dict(normalization_type="RMS"), False),
    (dict(attention_dir="bidirectional"), False),
    (dict(attn_scale=2.0), False),
    (dict(output_logits_soft_cap=2.0), False),
    (dict(positional_embedding_type="rotary", rotary_dim=8), False),
]


def _random_bridge(change, seed):
    torch.manual_seed(seed)
    model = build_model({**BASE, **change, "seed": seed})
    with torch.no_grad():  # larger weights than the initialiser's, so answers vary across inputs
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval()


@pytest.mark.parametrize("change, implemented", SETTINGS, ids=[str(c) or "base" for c, _ in SETTINGS])
def test_answers_and_scores_equal_the_bridge(change, implemented):
    model = _random_bridge(change, seed=len(str(change)))
    assert (fast_path_blocker(model) is None) == implemented
    if not implemented:  # the allowlist matters: the lean forward would compute another model here
        tokens = torch.from_numpy(TASK.encode(*TASK.grid(range(20), range(20))))[:, :-1]
        try:
            with torch.no_grad():
                lean_differs = not is_close(LeanModel(model)(tokens), model(tokens), ulps=10 * ULPS)  # by over ten tolerances
        except (KeyError, RuntimeError):  # e.g. rotary models have no learned position table
            lean_differs = True
        assert lean_differs
    a, b = TASK.grid(range(100), range(0, 100, 3))
    expected = naive_greedy_decode(model, TASK, a, b)
    assert len(np.unique(TASK.decode_answer(expected))) > 5  # a model whose answers depend on its input
    for guess in (None, "auto", sum_of_residues(1)):
        assert np.array_equal(greedy_decode(model, TASK, a, b, guess=guess), expected)
    # teacher-forced scores against the bridge's own teacher-forced argmax, computed here independently
    targets = (a + b + np.arange(a.size) % 3) % TASK.answer_limit
    tokens = torch.from_numpy(TASK.encode(a, b, targets))
    with torch.no_grad():
        argmax = model(tokens[:, :-1])[:, TASK.prompt_len - 1 :].argmax(-1).numpy()
    assert np.array_equal(score_digits(model, TASK, a, b, targets), argmax == tokens[:, TASK.prompt_len :].numpy())


HOOK = "blocks.1.hook_attn_out"


def _zero(activation, hook):
    return activation * 0


@pytest.fixture()
def hooked_add3(add3_nano):
    """data/add3_nano with a hook zeroing the second layer's attention output (removed afterwards)."""
    add3_nano.model.add_hook(HOOK, _zero)
    yield add3_nano
    add3_nano.model.reset_hooks()


def _id_accuracy(run, n=500):
    a, b = run.task.sample_id(n, seed=5)
    return float(np.mean(predict(run.model, run.task, a, b) == run.task.truth(a, b)))


def test_predict_sees_hooks_through_add_hook_and_context(add3_nano):
    assert _id_accuracy(add3_nano) == 1.0
    add3_nano.model.add_hook(HOOK, _zero)
    try:
        assert fast_path_blocker(add3_nano.model) is not None
        assert _id_accuracy(add3_nano) < 0.5
    finally:
        add3_nano.model.reset_hooks()
    assert _id_accuracy(add3_nano) == 1.0
    with add3_nano.model.hooks(fwd_hooks=[(HOOK, _zero)]):
        assert _id_accuracy(add3_nano) < 0.5
    assert _id_accuracy(add3_nano) == 1.0
    handle = add3_nano.model.blocks[1].attn.register_forward_hook(lambda module, args, out: None)  # a raw torch hook
    try:
        assert "blocks.1" in fast_path_blocker(add3_nano.model)
    finally:
        handle.remove()


def test_every_analysis_sees_the_hooked_model(hooked_add3):
    run, task = hooked_add3, hooked_add3.task
    model = run.model
    assert evaluate_run(run, n=300)["id_accuracy"] < 0.5
    a, b = task.sample_ood(300, seed=2)
    summary, _ = discover_relations(model, task, a, b)
    assert summary.accuracy.max() < 0.5  # the damaged model follows no candidate relation
    hooked_answers = naive_greedy_decode(model, task, a, b)
    ia, ib = task.sample_id(300, seed=3)
    assert score_digits(model, task, ia, ib, task.truth(ia, ib)).all(axis=1).mean() < 0.5
    explained = explain_input(model, task, 349, 705)
    assert explained["answer"] == int(task.decode_answer(naive_greedy_decode(model, task, [349], [705]))[0])
    cmap = class_map(model, task, a, b, relation=sum_of_residues(3))
    assert np.array_equal(cmap.frame.answer.to_numpy(), task.decode_answer(hooked_answers))
    assert cmap.verified_share < 1.0
    grid = grid_answers(model, task, range(340, 350), range(700, 710))
    assert (grid.answer == grid.truth).mean() < 0.5
    model.reset_hooks()  # and without the hook, every analysis sees the trained model again
    assert evaluate_run(run, n=300)["id_accuracy"] == 1.0
    assert discover_relations(model, task, a, b)[0].accuracy.max() > 0.9
    assert score_digits(model, task, ia, ib, task.truth(ia, ib)).all()
    assert explain_input(model, task, 349, 705)["answer"] == 1054
    assert class_map(model, task, a, b, relation=sum_of_residues(3)).verified_share > 0.9
    grid = grid_answers(model, task, range(340, 350), range(700, 710))
    assert (grid.answer == grid.truth).all()


def test_widgets_given_a_hooked_run_show_the_hooked_answers(hooked_add3):
    from equiv_tools.views.widgets import EquivalenceExplorer, MapViewer

    explorer = EquivalenceExplorer(a=349, b=705, catalog={"hooked": lambda: hooked_add3})
    expected = int(hooked_add3.task.decode_answer(naive_greedy_decode(hooked_add3.model, hooked_add3.task, [349], [705]))[0])
    assert explorer.result["answer"] == expected != 1054
    viewer = MapViewer(a_range=(340, 349), b_range=(700, 709), catalog={"hooked": lambda: hooked_add3})
    assert viewer.shares["correct"] < 0.5 and not viewer._cache  # nothing computed under hooks is cached
    hooked_add3.model.reset_hooks()  # the same viewer, the hook gone: the trained model's map
    viewer.step.value = 2
    viewer.step.value = 1
    assert viewer.shares["correct"] == 1.0
