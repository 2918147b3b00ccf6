"""Head ablation on add3_nano: the same numbers as a hook written by hand, and the head that brings the carry."""
import numpy as np
import pytest
import torch

from equiv_tools import InputError, load_run
from equiv_tools.analysis.ablation import head_ablation
from equiv_tools.forward.decoding import score_digits


@pytest.fixture(scope="module")
def adder():
    run = load_run("add3_nano")
    a, b = run.task.sample_id(500, seed=0)
    return run, a, b


def test_head_ablation_equals_a_hook_written_by_hand(adder):
    run, a, b = adder

    def zero_head_2(z, hook):  # z: [batch, pos, head, d_head]
        z = z.clone()
        z[:, :, 2] = 0
        return z

    with run.model.hooks(fwd_hooks=[("blocks.1.attn.hook_z", zero_head_2)]):
        by_hand = score_digits(run.model, run.task, a, b, run.task.truth(a, b)).mean(0)
    frame = head_ablation(run.model, run.task, a, b, heads=[(1, 2)])
    assert frame.accuracy.tolist() == by_hand.tolist()
    assert frame.digit.tolist() == ["10^0", "10^1", "10^2", "10^3", "10^4", "10^5"]
    assert frame.read_at.tolist() == ["b[10^0]", "ans[10^0]", "ans[10^1]", "ans[10^2]", "ans[10^3]", "ans[10^4]"]
    assert (frame.intact == 1.0).all() and np.allclose(frame.accuracy_drop, frame.intact - frame.accuracy)


def test_layer_1_head_2_brings_the_carry_into_the_hundreds_digit(adder):
    run, a, b = adder
    drops = head_ablation(run.model, run.task, a, b, heads=[(1, 2)]).set_index("digit").accuracy_drop
    assert drops["10^2"] == pytest.approx(0.134, abs=0.01)  # the hundreds digit breaks on 67 of 500 inputs
    assert drops.drop(index="10^2").max() <= 0.02  # and no other digit on more than 10
    carry = (a % 100 + b % 100) >= 100  # inputs whose tens column carries into the hundreds
    with_carry = head_ablation(run.model, run.task, a[carry], b[carry], heads=[(1, 2)]).set_index("digit").accuracy
    without = head_ablation(run.model, run.task, a[~carry], b[~carry], heads=[(1, 2)]).set_index("digit").accuracy
    assert with_carry["10^2"] < 0.8 and without["10^2"] == 1.0


def test_mean_ablation_and_the_hooks_a_user_attached(adder):
    run, a, b = adder
    zero = head_ablation(run.model, run.task, a, b, heads=[(1, 2)])
    mean = head_ablation(run.model, run.task, a, b, heads=[(1, 2)], ablation="mean")
    assert mean.set_index("digit").accuracy_drop["10^2"] < zero.set_index("digit").accuracy_drop["10^2"]  # the mean keeps what every input shares
    with run.model.hooks(fwd_hooks=[("blocks.0.hook_attn_out", lambda x, hook: torch.zeros_like(x))]):
        hooked = head_ablation(run.model, run.task, a, b, heads=[(1, 2)])
    assert hooked.intact.min() < 0.2  # the user's hook stays attached, with and without the ablation


def test_a_head_the_model_lacks_is_refused(adder):
    run, a, b = adder
    with pytest.raises(InputError, match="no head 3 in layer 1: the model has 3 layers of 3 heads"):
        head_ablation(run.model, run.task, a, b, heads=[(1, 3)])
    with pytest.raises(InputError, match="ablation must be one of"):
        head_ablation(run.model, run.task, a, b, ablation="resample")
