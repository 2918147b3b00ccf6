"""Fourier analysis and progress measures: the vectorised code against plain loops, and the grokked model's numbers."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from equiv_tools import InputError, ModularTask
from equiv_tools.analysis.fourier import (
    cos_logit_fit,
    embedding_frequency_norms,
    fourier_basis,
    fourier_components,
    fourier_losses,
    gini,
    grid_logits,
    grid_neurons,
    key_component,
    neuron_frequencies,
    neuron_key_frequencies,
    progress_measures,
    top_frequencies,
    total_weight_norm,
    train_mask,
)
from equiv_tools.analysis.progress import progress_series, spectrum_series
from equiv_tools.cli import main
from equiv_tools.core.config import RunConfig, TrainConfig, model_config
from equiv_tools.runs.models import build_model, write_run


def loop_wave(p, k, kind, x):
    """The unnormalised basis function at point x, written out."""
    return 1.0 if kind == "const" else (math.cos if kind == "cos" else math.sin)(2 * math.pi * k * x / p)


def loop_dft(values, p):
    """Coefficients of values [p, d] in the orthonormal basis, one sum at a time: [p, d]."""
    out = np.zeros((p, values.shape[1]))
    for row in fourier_components(p).itertuples():
        norm = math.sqrt(sum(loop_wave(p, row.frequency, row.kind, x) ** 2 for x in range(p)))
        for d in range(values.shape[1]):
            out[row.component, d] = sum(loop_wave(p, row.frequency, row.kind, x) * values[x, d] for x in range(p)) / norm
    return out


def small_model(p=7, seed=1, d_mlp=16):
    task = ModularTask(p=p)
    return task, build_model(model_config(task, "grokking", seed=seed, d_model=16, d_head=4, d_mlp=d_mlp))


@pytest.mark.parametrize("p", [7, 8])
def test_basis_against_a_plain_loop_dft(p):
    components = fourier_components(p)
    assert len(components) == p and components.kind.tolist()[:3] == ["const", "cos", "sin"]
    assert components.frequency.max() == p // 2 and (components.kind == "sin").sum() == (p - 1) // 2
    basis = fourier_basis(p)
    assert np.allclose(basis @ basis.T, np.eye(p), atol=1e-12)
    values = np.random.default_rng(p).normal(size=(p, 5))
    assert np.allclose(basis @ values, loop_dft(values, p), atol=1e-12)


def test_embedding_norms_against_a_loop():
    task, model = small_model()
    norms = embedding_frequency_norms(model, task.p)
    coefficients = loop_dft(model.embed.weight.detach().double().numpy()[: task.p], task.p)  # `=` (row 7) left out
    expected = [math.sqrt(sum(coefficients[c, d] ** 2 for c in (2 * k - 1, 2 * k) for d in range(16))) for k in (1, 2, 3)]
    assert norms.frequency.tolist() == [1, 2, 3] and np.allclose(norms.norm, expected, atol=1e-12)
    assert norms.share.sum() == pytest.approx(1.0)
    assert top_frequencies(norms, 2) == [int(k) for k in np.argsort(expected)[::-1][:2] + 1]


def test_neuron_frequencies_against_a_loop():
    task, model = small_model(d_mlp=6)
    p, acts = task.p, grid_neurons(model, task)  # [p, p, d_mlp]
    frame = neuron_frequencies(model, task)
    components = fourier_components(p)
    for n in range(6):
        c = loop_dft(loop_dft(acts[:, :, n], p).T, p).T  # 2D coefficients [a-component, b-component]
        variance = (c**2).sum() - c[0, 0] ** 2
        shares = []
        for k in range(1, p // 2 + 1):
            idx = [0, *components.index[components.frequency == k]]
            shares.append(sum(c[i, j] ** 2 for i in idx for j in idx) - c[0, 0] ** 2)
        if variance < 1e-12:  # a dead ReLU: no frequency
            assert frame.frequency[n] == 0 and frame.explained[n] == 0.0
            continue
        assert shares[frame.frequency[n] - 1] == pytest.approx(max(shares), rel=1e-9)  # a best frequency (ties happen)
        assert frame.explained[n] == pytest.approx(max(shares) / variance, abs=1e-10)
    assert (frame.frequency > 0).sum() >= 3  # the loop above checked live neurons, not only dead ones
    neurons = pd.DataFrame({"neuron": range(6), "frequency": [1, 1, 2, 3, 3, 0], "explained": [0.9, 0.95, 0.99, 0.5, 0.9, 0.0]})
    assert sorted(neuron_key_frequencies(neurons)) == [1, 2, 3]  # 1% of 6 neurons: clusters of one count
    assert neuron_key_frequencies(neurons, min_neurons=2) == [1]


def test_key_component_against_a_loop():
    p, vocab = 7, 8
    logits = torch.from_numpy(np.random.default_rng(0).normal(size=(p, p, vocab)))
    expected = np.zeros((p, p, vocab))
    for k in (2, 3):
        for wave in (math.cos, math.sin):
            f = [[wave(2 * math.pi * k * (a + b) / p) for b in range(p)] for a in range(p)]
            norm2 = sum(f[a][b] ** 2 for a in range(p) for b in range(p))
            for c in range(vocab):
                coef = sum(float(logits[a, b, c]) * f[a][b] for a in range(p) for b in range(p)) / norm2
                for a in range(p):
                    for b in range(p):
                        expected[a, b, c] += coef * f[a][b]
    assert np.allclose(key_component(logits, p, [2, 3]).numpy(), expected, atol=1e-12)
    # logits that are exactly one frequency's cos(w(a+b-c)) are all key component, and orthogonal to the others
    a, b, c = np.meshgrid(range(p), range(p), range(vocab), indexing="ij")
    wave = torch.from_numpy(5 * np.cos(2 * np.pi * 3 * (a + b - c) / p))
    assert torch.allclose(key_component(wave, p, [3]), wave, atol=1e-12)
    assert key_component(wave, p, [1, 2]).abs().max() < 1e-12


def test_the_cos_fit_of_the_logits_against_a_loop_and_on_the_grokked_series():
    task, model = small_model()
    logits = grid_logits(model, task)[:, :, :7].numpy()
    centred = logits - logits.mean(axis=2, keepdims=True)
    waves = {k: np.array([[[math.cos(2 * math.pi * k * (a + b - c) / 7) for c in range(7)] for b in range(7)] for a in range(7)])
             for k in (1, 3)}
    alpha = {k: (centred * w).sum() / (w * w).sum() for k, w in waves.items()}
    residual = centred - sum(alpha[k] * waves[k] for k in waves)
    coefficients, explained = cos_logit_fit(model, task, [1, 3])
    assert coefficients.coefficient.tolist() == pytest.approx([alpha[1], alpha[3]], rel=1e-9, abs=1e-12)
    assert explained == pytest.approx(1 - (residual ** 2).sum() / (centred ** 2).sum(), rel=1e-9, abs=1e-12)
    from equiv_tools import load_run

    grokked, start = load_run("grok113_fast"), load_run("grok113_fast", step=0)
    _, explained = cos_logit_fit(grokked.model, grokked.task, [5, 53, 21])
    assert explained == pytest.approx(0.825, abs=0.01)  # three cosines carry most of the grokked model's logits
    assert cos_logit_fit(start.model, start.task, [5, 53, 21])[1] < 1e-6  # and none of the untrained model's


def test_gini_and_weight_norm():
    assert gini([1, 1, 1, 1]) == 0.0 and gini([0, 0, 0, 2]) == pytest.approx(0.75) and gini([]) == 0.0
    assert gini([3, 1, 2]) == pytest.approx(2 / 9)  # mean absolute difference 8/9 over twice the mean 4
    _, model = small_model()
    loop = math.sqrt(sum(float(x) ** 2 for w in model.parameters() for x in w.detach().reshape(-1)))
    assert total_weight_norm(model) == pytest.approx(loop, rel=1e-9)


def test_losses_follow_hooks_and_refuse_other_tasks():
    task, model = small_model()
    plain = fourier_losses(model, task, [1])
    with model.hooks(fwd_hooks=[("blocks.0.hook_mlp_out", lambda x, hook: torch.zeros_like(x))]):
        hooked = fourier_losses(model, task, [1])
        assert torch.equal(grid_logits(model, task).reshape(49, -1), model(torch.tensor([[a, b, 7] for a in range(7) for b in range(7)]))[:, -1].double())
    assert hooked["loss"] != plain["loss"]
    with pytest.raises(InputError, match="is not addition"):
        fourier_losses(model, ModularTask(p=7, op="mul"), [1])
    from equiv_tools import AdditionTask
    with pytest.raises(InputError, match="needs a modular task"):
        neuron_frequencies(model, AdditionTask())


@pytest.fixture(scope="module")
def modular_series(tmp_path_factory):
    """A small p = 11 grokking-layout run with checkpoints at steps 0, 10 and 20 (seconds, not grokked)."""
    from equiv_tools import train

    out = tmp_path_factory.mktemp("series") / "mod11"
    cfg = TrainConfig(steps=20, batch_size=None, lr=1e-2, eval_every=10, checkpoint_every=10, n_eval=50, warmup_steps=0, seed=2)
    train(ModularTask(p=11), out, preset="grokking", train_cfg=cfg, model_overrides=dict(d_model=32, d_head=8, d_mlp=64), progress=False)
    return out


def test_series_equal_the_per_model_measures(modular_series):
    from equiv_tools.core.rundir import RunDir
    from equiv_tools.runs.models import load_run

    assert RunDir(modular_series).checkpoint_steps() == [0, 10, 20]  # step 0: the initialisation
    frame = progress_series(modular_series, frequencies=[1, 4])
    assert frame.columns.tolist() == ["step", "loss", "restricted_loss", "excluded_loss", "total_weight_norm", "fourier_sparsity", "excluded_loss_pairs"]
    assert frame.step.tolist() == [0, 10, 20] and set(frame.excluded_loss_pairs) == {"train split"}
    run = load_run(modular_series, step=10)
    mask, _ = train_mask(run)
    assert mask.sum() == round(0.3 * 121)
    one = progress_measures(run.model, run.task, [1, 4], mask).iloc[0]
    assert frame[frame.step == 10].iloc[0][one.index].tolist() == one.tolist()
    spectrum = spectrum_series(modular_series)
    assert spectrum.columns.tolist() == ["step", "frequency", "norm", "share"] and len(spectrum) == 3 * 5
    final = spectrum[spectrum.step == 20].reset_index(drop=True)
    pd.testing.assert_frame_equal(final[["frequency", "norm", "share"]], embedding_frequency_norms(load_run(modular_series, step=20).model, 11))
    assert len(progress_series(modular_series, steps=[20])) == 1  # key frequencies from the final model


def test_fourier_cli_on_a_run_without_series_or_modular_task(tmp_path, capsys):
    task, model = small_model()
    write_run(tmp_path / "r", RunConfig(task, model_config(task, "grokking", seed=1, d_model=16, d_head=4, d_mlp=16), None, {}), model)
    assert main(["fourier", str(tmp_path / "r"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["p"] == 7 and len(summary["embedding_top_frequencies"]) == 3 and summary["excluded_loss_pairs"] == "all pairs"
    with pytest.raises(InputError, match="no checkpoint series"):
        progress_series(tmp_path / "r", frequencies=[1])
    assert main(["fourier", "data/add3_nano"]) == 2
    assert "needs a modular task" in capsys.readouterr().err


def test_the_grokked_model(nanda_dir, tmp_path, capsys):
    """Nanda et al.'s model (imported): five key frequencies; restricted loss tiny, excluded loss large."""
    assert main(["import-grokking", str(nanda_dir / "mod113_seed1.safetensors"), str(tmp_path / "g"),
                 "--config", str(nanda_dir / "mod113_seed1_config.json")]) == 0
    capsys.readouterr()
    assert main(["fourier", str(tmp_path / "g"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["p"] == 113 and set(summary["embedding_top_frequencies"]) == {6, 23, 37, 39, 41}
    assert summary["embedding_top_frequencies"][0] == 23  # the largest: norm 6.84, then 6 (5.75)
    assert set(summary["key_frequencies"]) == {6, 23, 37, 39, 41} and set(summary["embedding_key_frequencies"]) == {6, 23, 37, 39, 41}
    assert summary["loss"] < 1e-6 and summary["restricted_loss"] < 1e-6  # measured: 3.5e-7 and 2.2e-9
    assert summary["excluded_loss"] > 8  # measured: 9.04; uniform guessing is ln 114 = 4.74
    assert summary["total_weight_norm"] == pytest.approx(34.365, abs=1e-3) and summary["fourier_sparsity"] == pytest.approx(0.5265, abs=1e-4)


def test_neuron_activations_and_the_static_plots():
    from matplotlib.figure import Figure

    from equiv_tools.analysis.fourier import neuron_activations
    from equiv_tools.views.plots import plot_fourier_spectrum, plot_neuron_activations

    task, model = small_model()
    acts = grid_neurons(model, task)  # [7, 7, 16]
    frame = neuron_activations(model, task, [3, 5])
    assert frame.columns.tolist() == ["neuron", "a", "b", "activation"] and len(frame) == 2 * 49
    row = frame[(frame.neuron == 5) & (frame.a == 2) & (frame.b == 6)].iloc[0]
    assert row.activation == acts[2, 6, 5]

    norms = embedding_frequency_norms(model, 7)
    fig = plot_fourier_spectrum(norms, highlight=[2])
    assert isinstance(fig, Figure)
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == norms.norm.tolist()
    assert [b.get_facecolor() for b in bars].count(bars[1].get_facecolor()) == 1  # frequency 2 alone in its colour

    fig = plot_neuron_activations(frame, frequency=3)
    image = fig.axes[0].images[0].get_array()  # neuron 3, rows 3a mod 7, columns 3b mod 7
    assert image.shape == (7, 7) and image[3 * 2 % 7, 3 * 6 % 7] == acts[2, 6, 3]
    assert plot_neuron_activations(frame).axes[1].images[0].get_array()[2, 6] == acts[2, 6, 5]
