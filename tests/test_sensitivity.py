"""Input-digit sensitivity: the resampling, the change rates against a plain loop, and the paper's model."""
import numpy as np

from equiv_tools import AdditionTask
from equiv_tools.forward.decoding import naive_greedy_decode
from equiv_tools.views.plots import plot_sensitivity
from equiv_tools.analysis.reproduce import PAPER_TASK
from equiv_tools.analysis.sensitivity import digit_count, digit_sensitivity, input_sensitivity, resample_digit


def test_resampling_changes_one_digit_and_keeps_the_digit_count():
    task = AdditionTask(train_digits=3, width=5)
    a = np.array([0, 7, 10, 305, 999, 1000, 42_017, 99_999, 5, 100])
    b = a[::-1].copy()
    assert digit_count(a).tolist() == [len(str(x)) for x in a.tolist()]
    for position in range(task.prompt_len):
        new_a, new_b, valid = resample_digit(task, a, b, position, seed=3)
        for i in range(a.size):
            old, new = (a[i], new_a[i]) if position < task.width else (b[i], new_b[i])
            kept = b[i] == new_b[i] if position < task.width else a[i] == new_a[i]
            assert kept
            old_text, new_text = str(old).zfill(task.width), str(new).zfill(task.width)
            digit = position % task.width
            inside = task.width - digit <= len(str(old))
            assert bool(valid[i]) == inside
            if not inside:
                assert new == old
                continue
            assert len(str(new)) == len(str(old))
            assert [j for j in range(task.width) if old_text[j] != new_text[j]] == [digit]


def test_change_rates_match_a_plain_loop(add3_nano):
    model, task = add3_nano.model, add3_nano.task
    a, b = np.array([3, 45, 120, 999, 1234, 5008]), np.array([88, 0, 7, 506, 9999, 431])
    frame = digit_sensitivity(model, task, a, b, seed=1)
    names = task.position_names()
    assert len(frame) == task.prompt_len * task.answer_len
    # the reference is independent of the kit's fast paths: the bridge itself, re-running the prefix per digit, one input
    # at a time (digit_sensitivity decodes with greedy_decode, so a plain loop over greedy_decode would share its faults)
    before = {i: naive_greedy_decode(model, task, a[i : i + 1], b[i : i + 1])[0] for i in range(a.size)}
    for position in range(task.prompt_len):
        new_a, new_b, valid = resample_digit(task, a, b, position, seed=1)
        changed, n = np.zeros(task.answer_len, dtype=np.int64), 0
        for i in range(a.size):
            if valid[i]:
                n += 1
                changed += before[i] != naive_greedy_decode(model, task, new_a[i : i + 1], new_b[i : i + 1])[0]
        rows = frame[frame.operand_position == names[position]]
        assert rows.answer_position.tolist() == names[task.prompt_len :]
        assert (rows.n == n).all()
        if n:
            # fails if greedy_decode's fast paths (KV cache, verified guesses) answer otherwise than the bridge;
            # a rate is a count over n, k / n correctly rounded in float64 either way: equal exactly
            assert rows.change_rate.tolist() == (changed / n).tolist()
        else:
            assert rows.change_rate.isna().all()


def test_model_s2_thousands_digits_change_nothing_on_4_digit_inputs(model_s2):
    frame = input_sensitivity(model_s2.model, PAPER_TASK, n=300, ood_digits=4, seed=0)
    ood = frame[frame.split == "ood"].set_index(["operand_position", "answer_position"])
    for operand in ("a", "b"):
        thousands = ood.loc[f"{operand}[10^3]"]
        assert (thousands.n == 300).all() and (thousands.change_rate == 0).all()
        assert ood.loc[(f"{operand}[10^0]", "ans[10^0]"), "change_rate"] == 1.0  # while the units digit always moves the units
        assert (ood.loc[f"{operand}[10^4]"].n == 0).all()  # 4-digit operands have no ten-thousands digit to resample
    fig = plot_sensitivity(frame)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["id", "ood"]
