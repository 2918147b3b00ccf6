"""PCA through training: the shared axes, the silhouette and the projection, against plain computations."""
from pathlib import Path

import numpy as np
import pytest

from equiv_tools import InputError
from equiv_tools.runs.models import load_run
from equiv_tools.analysis.projection import checkpoint_models, pca_series, principal_axes, silhouette
from equiv_tools.forward.representations import hidden_states

ADD3 = Path(__file__).resolve().parents[1] / "data" / "add3_nano"


def plain_silhouette(points, labels):
    scores = []
    for i in range(len(points)):
        own = [j for j in range(len(points)) if labels[j] == labels[i] and j != i]
        if not own:
            scores.append(0.0)
            continue
        a = sum(np.linalg.norm(points[i] - points[j]) for j in own) / len(own)
        b = min(
            np.mean([np.linalg.norm(points[i] - points[j]) for j in range(len(points)) if labels[j] == other])
            for other in set(labels.tolist()) - {labels[i]}
        )
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


def test_silhouette_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 12 + [1] * 9 + [2] * 8 + [5])  # class 5 is a single point, which scores 0
    points = rng.normal(size=(len(labels), 3)) + labels[:, None]
    assert silhouette(points, labels) == pytest.approx(plain_silhouette(points, labels), abs=1e-12)
    with pytest.raises(InputError, match="two classes"):
        silhouette(points, np.zeros(len(points), dtype=int))


def test_principal_axes_match_the_covariance_eigenvectors():
    rng = np.random.default_rng(1)
    states = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    mean, axes, explained = principal_axes(states, 3)
    values, vectors = np.linalg.eigh(np.cov(states, rowvar=False))  # ascending
    order = np.argsort(values)[::-1][:3]
    assert np.allclose(mean, states.mean(axis=0))
    for axis, vector in zip(axes, vectors[:, order].T):
        assert np.isclose(abs(axis @ vector), 1, atol=1e-8)  # the same direction, up to sign
        assert axis[np.abs(axis).argmax()] > 0  # the sign convention
    assert np.allclose(explained, values[order] / values.sum())


def test_shared_projection_matches_a_direct_computation():
    models = checkpoint_models(ADD3, steps=[0, 2000])
    task = load_run(ADD3).task
    a, b = task.sample_id(120, seed=4)
    series = pca_series(models, task, a, b, "(a + b) mod 10")
    states = {step: hidden_states(model, task, a, b).numpy().astype(np.float64) for step, model in models.items()}
    mean, axes, _ = principal_axes(np.concatenate([states[0], states[2000]]))
    for step in (0, 2000):
        rows = series.frame[series.frame.checkpoint == step]
        projected = (states[step] - mean) @ axes.T
        assert np.allclose(rows[["pc1", "pc2"]].to_numpy(), projected, atol=1e-6)
        assert (rows.colour.to_numpy() == (a + b) % 10).all()
        assert series.separation.set_index("checkpoint").silhouette[step] == pytest.approx(plain_silhouette(projected, (a + b) % 10), abs=1e-9)
    # fitted on one checkpoint only, the axes are that checkpoint's
    last = pca_series(models, task, a, b, "(a + b) mod 10", fit_on=2000).frame
    mean, axes, _ = principal_axes(states[2000])
    assert np.allclose(last[last.checkpoint == 0][["pc1", "pc2"]].to_numpy(), (states[0] - mean) @ axes.T, atol=1e-6)
    with pytest.raises(InputError, match="unknown colouring"):
        pca_series(models, task, a, b, "a mod 7")
    with pytest.raises(InputError, match="no checkpoint for step"):
        checkpoint_models(ADD3, steps=[150])


def test_add3_nano_separates_the_units_of_the_sum_as_it_trains():
    models = checkpoint_models(ADD3, steps=[0, 1500, 2000])
    task = load_run(ADD3).task
    a, b = task.sample_id(400, seed=0)
    by_sum = pca_series(models, task, a, b, "(a + b) mod 10").separation.set_index("checkpoint").silhouette
    assert by_sum[0] < 0 < 0.6 < by_sum[1500]
    assert by_sum[2000] > 0.3
    by_operand = pca_series(models, task, a, b, "a mod 10").separation.set_index("checkpoint").silhouette
    assert (by_operand < 0).all()  # the classes are the answer's units digit, not an operand's


def test_pca_plot_has_a_panel_per_checkpoint_with_its_silhouette():
    from equiv_tools.views.plots import plot_pca_series

    models = checkpoint_models(ADD3, steps=[0, 2000])
    task = load_run(ADD3).task
    series = pca_series(models, task, *task.sample_id(60, seed=1))
    fig = plot_pca_series(series.frame, series.separation)
    score = series.separation.set_index("checkpoint").silhouette
    assert [ax.get_title() for ax in fig.axes] == [f"{step}: silhouette {score[step]:.2f}" for step in (0, 2000)]
