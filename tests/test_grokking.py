"""When a run groks (grokking.grokked_step), and the grokking benchmark's criterion."""
import pandas as pd
import pytest

from equiv_tools import InputError, shipped_data_dir
from equiv_tools.runs.grokking import grokked_step
from equiv_tools.runs.training import read_metrics


def _metrics(accuracies, every=10):
    return pd.DataFrame({"step": [every * (i + 1) for i in range(len(accuracies))], "split": "id_test", "loss": 0.0,
                         "accuracy": accuracies})


def test_grokked_step_needs_the_level_held_and_the_run_to_go_on():
    # touches 0.99 at step 30 but drops to 0.97 at 40; from 50 on it holds, and the run goes to 100 >= 1.2 * 50
    assert grokked_step(_metrics([0.1, 0.5, 0.99, 0.97, 0.99, 0.995, 1, 1, 1, 1])) == 50
    # reaching it at step 90 of 100 is not enough: the run would have to go on to step 108
    assert grokked_step(_metrics([0.1] * 8 + [0.99, 1.0])) is None
    assert grokked_step(_metrics([0.1] * 8 + [0.99, 1.0]), margin=0.1) == 90
    assert grokked_step(_metrics([0.2, 0.4])) is None


def test_grokked_step_names_a_missing_split():
    with pytest.raises(InputError, match=r"the metrics have no 'ood' rows; splits present: \['id_test'\]"):
        grokked_step(_metrics([1.0]), split="ood")


def test_shipped_series_groks_in_three_phases():
    from equiv_tools.runs.grokking import grokking_phases
    from equiv_tools.core.rundir import RunDir
    from equiv_tools.runs.training import read_metrics

    metrics = read_metrics(shipped_data_dir() / "grok113_fast")
    assert grokked_step(metrics) == 320
    phases = grokking_phases(metrics)
    assert phases.to_dict("list") == {"phase": ["memorisation", "circuit formation", "cleanup"], "start": [0, 70, 190],
                                      "end": [70, 190, 600]}
    assert RunDir(shipped_data_dir() / "grok113_fast").checkpoint_steps() == list(range(0, 601, 30))


def test_a_collapse_after_memorisation_is_not_clean():
    from equiv_tools.runs.grokking import is_clean, memorised_step, train_accuracy_floor
    from equiv_tools.runs.training import read_metrics

    train = lambda accuracies: pd.DataFrame({"step": [10 * i for i in range(len(accuracies))], "split": "train", "loss": 0.0,
                                             "accuracy": accuracies})
    steady = train([0.1, 0.6, 0.99, 0.97, 1.0, 1.0])  # reaches 0.99 at step 20 and never falls below 0.95 again
    assert memorised_step(steady) == 20 and train_accuracy_floor(steady) == 0.97 and is_clean(steady)
    assert not is_clean(train([0.1, 0.99, 0.5, 1.0]))  # a collapse to 0.5, then recovery
    assert memorised_step(train([0.1, 0.5])) is None and not is_clean(train([0.1, 0.5]))  # never memorised
    # the shipped fast series: memorised at step 70, then train accuracy fell to 0.225 near step 180 (the slingshot)
    fast = read_metrics(shipped_data_dir() / "grok113_fast")
    assert memorised_step(fast) == 70 and round(train_accuracy_floor(fast), 3) == 0.225 and not is_clean(fast)


def test_the_plateau_runs_from_memorisation_until_test_accuracy_rises():
    from equiv_tools.runs.grokking import plateau

    steps = [0, 10, 20, 30, 40, 50]
    frame = lambda train, test: pd.concat([
        pd.DataFrame({"step": steps, "split": "train", "loss": 0.0, "accuracy": train}),
        pd.DataFrame({"step": steps, "split": "id_test", "loss": 0.0, "accuracy": test})])
    memorising = [0.1, 0.99, 1.0, 1.0, 1.0, 1.0]
    assert plateau(frame(memorising, [0.01, 0.02, 0.05, 0.08, 0.5, 0.99])) == (10, 30)
    assert plateau(frame(memorising, [0.01, 0.02, 0.05, 0.08, 0.09, 0.1])) == (10, 50)  # never rises above 0.10
    assert plateau(frame(memorising, [0.01, 0.2, 0.5, 0.9, 1.0, 1.0])) is None  # already above 0.10 at memorisation
    assert plateau(frame([0.1] * 6, [0.01] * 6)) is None  # never memorised
    fast = read_metrics(shipped_data_dir() / "grok113_fast")
    assert plateau(fast) is None  # the fast run has no plateau: test accuracy 0.185 when it memorised


def _tiny_grokking_run(tmp_path):
    from equiv_tools import ModularTask, TrainConfig, train

    cfg = TrainConfig.from_recipe("fast", steps=40, eval_every=10, checkpoint_every=20)
    train(ModularTask(p=23), tmp_path / "grok", preset="grokking", train_cfg=cfg, model_overrides=dict(d_model=32, d_head=8, d_mlp=64),
          progress=False)
    return tmp_path / "grok"


def test_training_dynamics_explorer_steps_through_the_series(tmp_path):
    from equiv_tools.analysis.progress import progress_series
    from equiv_tools.views.widgets import TrainingDynamicsExplorer

    run_dir = _tiny_grokking_run(tmp_path)
    w = TrainingDynamicsExplorer(run_dir)
    assert w.message.value == "" and list(w.step.options) == [0, 20, 40]
    pd.testing.assert_frame_equal(w.progress, progress_series(run_dir, w.key_frequencies))
    at = w.progress.set_index("step")
    w.step.value = 20
    assert "step <b>20</b>" in w.readout.value and f"restricted loss {at.restricted_loss[20]:.3g}" in w.readout.value
    assert w.figures is not None and len(w.figures[1].axes) == 3


def test_training_dynamics_explorer_says_what_is_wrong():
    from equiv_tools.views.widgets import TrainingDynamicsExplorer

    w = TrainingDynamicsExplorer("add3_nano")
    assert "needs a modular task" in w.message.value or "modular" in w.message.value
    assert w.figures is None
