"""Every figure a learner reads follows the same rules, checked on the Figure itself, drawn from the shipped runs.

- it fits a notebook: at most MAX_PX wide (figure inches x dpi);
- its tick labels, axis labels, colour-bar labels and titles are at least MIN_PT points once the notebook
  shrinks a figure wider than NOTEBOOK_PX to that width;
- every image (imshow, a heatmap's QuadMesh, filled contours) has a colour bar labelled in words;
- a quantity that is never negative has a sequential colour map (lightness monotonic), a signed one a
  diverging map (lightest in the middle) centred at 0; a categorical map names its categories instead;
- panels of the same quantity (the same colour-bar label) share one colour scale;
- every axis has a label in words, not a snake_case column name (its own, the figure's, or a shared axis's);
- the figure has a title of a few words: the suptitle, or a single panel's title.

Every public function of ``views.plots`` must have a case in CASES (a new one without a case fails), and
``figures.run_figures`` is checked too.
"""
import inspect
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import ListedColormap, to_rgba_array

import equiv_tools as et
from equiv_tools.analysis.ablation import head_ablation
from equiv_tools.analysis.discovery import relation_share_by_step
from equiv_tools.analysis.fourier import embedding_frequency_norms, key_frequencies, neuron_activations
from equiv_tools.analysis.maps import answers_frame, digit_distributions
from equiv_tools.analysis.patching import activation_difference
from equiv_tools.analysis.progress import progress_series
from equiv_tools.analysis.projection import checkpoint_models, pca_series
from equiv_tools.analysis.reading import correct_digit_lens, correct_digit_summary, logit_lens, mean_attention, split_logit_lens
from equiv_tools.analysis.scorecard import scorecard, scorecard_table
from equiv_tools.analysis.sensitivity import input_sensitivity
from equiv_tools.analysis.sweep import read_results
from equiv_tools.views import plots
from equiv_tools.views.figures import run_figures

MAX_PX, NOTEBOOK_PX, MIN_PT = 1000, 900, 9.0
PUBLIC = sorted(name for name, f in inspect.getmembers(plots, inspect.isfunction) if not name.startswith("_") and f.__module__ == plots.__name__)
RULE = "(a mod 10^3) + (b mod 10^3)"


@pytest.fixture(scope="module")
def runs():
    return {name: et.load_run(name) for name in ("add3_nano", "grok113_fast", "mul2_nano")}


# --- each plot function on the kit's real frames: name -> (runs -> [(Figure, whether its quantity is signed)]) ---


def _training_curves(runs):
    return [(plots.plot_training_curves(et.read_metrics(runs[name].path)), False) for name in ("add3_nano", "grok113_fast")]


def _rule_share(runs):
    add3 = runs["add3_nano"]
    shares = relation_share_by_step(add3.path, add3.task.relation(RULE), n=100, progress=False)
    return [(plots.plot_rule_share(et.read_metrics(add3.path), shares, RULE), False)]


def _category_map(runs):
    add3 = runs["add3_nano"]
    frame = et.classify(et.grid_answers(add3.model, add3.task, range(950, 1050, 5), range(950, 1050, 5)), add3.task.relation(RULE))
    return [(plots.plot_category_map(frame, boundary=1000), False)]


def _answer_contours(runs):
    add3 = runs["add3_nano"]
    grid = et.grid_answers(add3.model, add3.task, range(0, 3000, 150), range(0, 3000, 150))
    return [(plots.plot_answer_contours(et.classify(grid, add3.task.relation(RULE)), boundary=1000), False),
            (plots.plot_answer_contours(grid, columns=("answer", "truth")), False)]


def _digit_distribution(runs):
    figures = []
    for run, relation in ((runs["add3_nano"], RULE), (runs["mul2_nano"], "(a mod 10^2) * (b mod 10^2)")):
        frame = et.classify(answers_frame(run.model, run.task, *run.task.sample_ood(200, seed=0)), run.task.relation(relation))
        figures.append((plots.plot_digit_distribution(digit_distributions(run.task, frame)), False))
    return figures


def _fourier_spectrum(runs):
    grok = runs["grok113_fast"]
    norms = embedding_frequency_norms(grok.model, grok.task.p)
    return [(plots.plot_fourier_spectrum(norms, highlight=key_frequencies(grok.model, grok.task)), False)]


def _neuron_activations(runs):
    grok = runs["grok113_fast"]
    frame = neuron_activations(grok.model, grok.task, [0, 1, 2, 3])
    return [(plots.plot_neuron_activations(frame), False), (plots.plot_neuron_activations(frame, frequency=5), False)]


def _sensitivity(runs):
    add3 = runs["add3_nano"]
    return [(plots.plot_sensitivity(input_sensitivity(add3.model, add3.task, n=100, ood_digits=4, seed=0)), False)]


def _attention(runs):
    return [(plots.plot_attention(mean_attention(run.model, run.task, *run.task.sample_id(100, seed=0))), False)
            for run in (runs["add3_nano"], runs["grok113_fast"])]


def _logit_lens(runs):
    add3 = runs["add3_nano"]
    return [(plots.plot_logit_lens(split_logit_lens(add3.model, add3.task, n=100, ood_digits=4)), False),
            (plots.plot_logit_lens(logit_lens(add3.model, add3.task, *add3.task.sample_id(100, seed=0))), False)]


def _correct_digit_lens(runs):
    return [(plots.plot_correct_digit_lens(correct_digit_summary(correct_digit_lens(run.model, run.task, *run.task.sample_id(200, seed=0)))), False)
            for run in (runs["add3_nano"], runs["mul2_nano"])]


def _pca_series(runs):
    add3 = runs["add3_nano"]
    series = pca_series(checkpoint_models("add3_nano", steps=[0, 500, 1500, 2000]), add3.task, *add3.task.sample_id(100, seed=0))
    return [(plots.plot_pca_series(series.frame, series.separation), False),
            (plots.plot_pca_series(series.frame, series.separation, checkpoints=[500]), False)]


def _patching(runs):
    model, task = runs["add3_nano"].model, runs["add3_nano"].task
    names = task.position_names()
    patched = et.patch_pair(model, task, (349, 705), (449, 705), sweeps=("resid_pre", "attn_out", "head_out_by_pos"))
    heads = et.patch_pair(model, task, (349, 705), (449, 705), sweeps=("head_out_all_pos",))
    probability = et.patch_pair(model, task, (349, 705), (449, 705), sweeps=("resid_pre",), metric="probability")
    a, b = task.sample_ood(50, digits=4, seed=0)
    distance = activation_difference(model, task, a, b, a % 1000, b % 1000, n_typical=64)
    return [(plots.plot_patching(patched, names), True), (plots.plot_patching(heads, names), True),
            (plots.plot_patching(probability, names, answer_position=2), False), (plots.plot_patching(distance, names), False)]


def _head_ablation(runs):
    add3 = runs["add3_nano"]
    return [(plots.plot_head_ablation(head_ablation(add3.model, add3.task, *add3.task.sample_id(100, seed=0))), True)]


def _sweep(runs):
    results = read_results(et.shipped_data_dir() / "sweeps" / "across_runs")
    adders = results[results.task.str.startswith("AdditionTask")]
    return [(plots.plot_sweep(adders, by="n_layers", value="residue_relation_share"), False),
            (plots.plot_sweep(adders, by="recipe", value="id_floor_after_fit"), False)]


def _progress_measures(runs):
    grok = runs["grok113_fast"]
    metrics = et.read_metrics(grok.path)
    progress = progress_series(grok.path, key_frequencies(grok.model, grok.task), steps=[0, 150, 300, 450, 600])
    return [(plots.plot_progress_measures(metrics, progress, et.grokking_phases(metrics), step=300), False),
            (plots.plot_progress_measures(metrics, progress), False)]


def _scorecard(runs):
    cards = pd.read_csv(et.shipped_data_dir() / "remedies" / "scorecards.csv")
    return [(plots.plot_scorecard(cards[cards.run.isin(["add3_nano", "prime_k200", "wrap", "retrain"])]), False),
            (plots.plot_scorecard(scorecard_table([scorecard(runs["grok113_fast"], n=200)])), False)]


def _remedy_costs(runs):
    costs = pd.read_csv(et.shipped_data_dir() / "remedies" / "costs.csv")
    return [(plots.plot_remedy_costs(costs, baseline=0.0), False), (plots.plot_remedy_costs(costs[costs.remedy == "prime"]), False)]


CASES = {
    "plot_training_curves": _training_curves, "plot_rule_share": _rule_share, "plot_category_map": _category_map,
    "plot_answer_contours": _answer_contours, "plot_digit_distribution": _digit_distribution,
    "plot_fourier_spectrum": _fourier_spectrum, "plot_neuron_activations": _neuron_activations,
    "plot_sensitivity": _sensitivity, "plot_attention": _attention, "plot_logit_lens": _logit_lens,
    "plot_correct_digit_lens": _correct_digit_lens, "plot_pca_series": _pca_series, "plot_patching": _patching,
    "plot_progress_measures": _progress_measures, "plot_head_ablation": _head_ablation, "plot_sweep": _sweep,
    "plot_scorecard": _scorecard, "plot_remedy_costs": _remedy_costs,
}


# --- the rules ------------------------------------------------------------------------------------


def _lightness(cmap) -> np.ndarray:
    """CIELAB lightness L* (0 black .. 100 white) of 64 colours along ``cmap``."""
    rgb = to_rgba_array(cmap(np.linspace(0, 1, 64)))[:, :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.2126, 0.7152, 0.0722])
    return np.where(y > 0.008856, 116 * np.cbrt(y) - 16, 903.3 * y)


def _is_sequential(cmap) -> bool:
    """Lightness runs one way from end to end (steps back of at most 1 L*) over at least 30 L*."""
    lightness = _lightness(cmap)
    steps = np.diff(lightness)
    return ((steps >= -1).all() or (steps <= 1).all()) and abs(lightness[-1] - lightness[0]) >= 30


def _is_diverging(cmap) -> bool:
    """Lightest near the middle, at least 30 L* darker at both ends."""
    lightness = _lightness(cmap)
    middle = int(np.argmax(lightness))
    return 0.4 <= middle / (len(lightness) - 1) <= 0.6 and lightness[middle] - max(lightness[0], lightness[-1]) >= 30


def _in_words(label: str, words: int = 1) -> bool:
    """Words, not a column name: no underscore, at least ``words`` words, one of them two letters or more."""
    return "_" not in label and re.search(r"[A-Za-z]{2,}", label) is not None and len(label.split()) >= words


def _is_colour_bar(ax) -> bool:
    return ax.get_label() == "<colorbar>"


def _axis_label(fig, ax, axis: str) -> str:
    """An axes' label for ``axis`` ('x' or 'y'): its own, the figure's sup-label, or that of an axes sharing the axis."""
    own = getattr(ax, f"get_{axis}label")()
    shared = getattr(ax, f"get_shared_{axis}_axes")().get_siblings(ax)
    return own or getattr(fig, f"get_sup{axis}label")() or next((s for s in (getattr(o, f"get_{axis}label")() for o in shared) if s), "")


def _tick_labels(axis) -> list:
    """The tick labels an axis draws: with text, visible, at ticks inside its view limits."""
    low, high = sorted(axis.get_view_interval())
    inside = [tick for tick in axis.get_major_ticks() if low <= tick.get_loc() <= high or np.isclose(tick.get_loc(), [low, high], rtol=1e-9, atol=0).any()]
    return [label for tick in inside for label in (tick.label1, tick.label2) if label.get_text() and label.get_visible()]


def _colour_mapped(ax) -> list:
    """Images, heatmap meshes and filled contours of ``ax``: every artist coloured through a colour map."""
    return [*ax.images, *(c for c in ax.collections if c.get_array() is not None)]


def check_figure(fig, signed: bool) -> None:
    """Assert every rule of the module docstring on ``fig``; ``signed``: whether its quantity can be negative."""
    width_px = fig.get_figwidth() * fig.dpi
    assert width_px <= MAX_PX, f"{width_px:.0f} px wide"
    fig.draw_without_rendering()
    shrink = min(1.0, NOTEBOOK_PX / width_px)
    headings, texts = [t for t in fig.texts if t.get_text()], []  # titles and labels; then every text, tick labels too
    for ax in fig.axes:
        headings += [t for t in (ax.title, ax.xaxis.label, ax.yaxis.label) if t.get_text() and t.get_visible()]
        texts += [*_tick_labels(ax.xaxis), *_tick_labels(ax.yaxis)]
    texts += headings
    small = sorted({(t.get_text(), t.get_fontsize() * shrink) for t in texts if t.get_fontsize() * shrink < MIN_PT - 1e-9})
    assert not small, f"text below {MIN_PT} pt at notebook width: {small[:5]}"
    edge = fig.bbox.padded(1)
    outside = [t.get_text() for t in texts if not all(edge.contains(*corner) for corner in t.get_window_extent().corners())]
    assert not outside, f"text cut off at the figure's edge: {outside[:5]}"
    clashes = [(a.get_text(), b.get_text()) for i, a in enumerate(headings) for b in headings[i + 1 :]
               if a.get_window_extent().overlaps(b.get_window_extent())]
    assert not clashes, f"titles or labels drawn over each other: {clashes[:3]}"
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [t.get_window_extent() for t in _tick_labels(axis)]
            crowded = [(a.get_text(), b.get_text()) for a, b, box, next_box in zip(_tick_labels(axis), _tick_labels(axis)[1:], boxes, boxes[1:]) if box.overlaps(next_box)]
            assert not crowded, f"{ax.get_title()!r}: tick labels overlap: {crowded[:3]}"

    panels = [ax for ax in fig.axes if not _is_colour_bar(ax)]
    title = fig.get_suptitle() or (panels[0].get_title() if len(panels) == 1 else "")
    assert len(re.findall(r"[A-Za-z]{2,}", title)) >= 3, f"no title saying what to see: {title!r}"  # a run's name may hold an underscore
    for ax in panels:
        for axis in "xy":
            label = _axis_label(fig, ax, axis)
            assert _in_words(label), f"{ax.get_title()!r}: {axis} label {label!r}"

    mapped = [m for ax in panels for m in _colour_mapped(ax)]
    bars = {id(m.colorbar): m.colorbar for m in mapped if m.colorbar is not None}.values()
    scales: dict = {}
    for m in mapped:
        bar = m.colorbar or next((b for b in bars if b.mappable.get_cmap().name == m.get_cmap().name and b.mappable.get_clim() == m.get_clim()), None)
        assert bar is not None, f"an image of {m.axes.get_title()!r} has no colour bar on its scale"
        label = bar.ax.get_ylabel() or bar.ax.get_xlabel()
        assert _in_words(label, words=2), f"colour bar label {label!r}"
        scales.setdefault(label, set()).add((m.get_cmap().name, *m.get_clim()))
        cmap, (vmin, vmax) = m.get_cmap(), m.get_clim()
        if isinstance(cmap, ListedColormap) and cmap.N <= 12:  # categories: the colour bar names them
            ticks = [t.get_text() for t in (*bar.ax.get_yticklabels(), *bar.ax.get_xticklabels()) if t.get_text()]
            assert len(ticks) == cmap.N and all(_in_words(t) for t in ticks), ticks
            continue
        data = np.ma.masked_invalid(np.ma.asarray(m.get_array(), dtype=float))
        if signed or data.min() < 0:
            assert _is_diverging(cmap) and vmax > 0 and np.isclose(vmin, -vmax), f"{label!r}: {cmap.name} on [{vmin}, {vmax}]"
        else:
            assert _is_sequential(cmap), f"{label!r}: non-negative data on {cmap.name}"
    shared = {label: s for label, s in scales.items() if len(s) > 1}
    assert not shared, f"panels of one quantity on several colour scales: {shared}"


def test_rules_tell_colour_maps_apart():
    """The lightness tests behind the colour-map rule, on maps whose kind is known."""
    for name in ("viridis", "magma", "Blues", "rocket_r", "mako_r"):
        assert _is_sequential(plt.get_cmap(name)) and not _is_diverging(plt.get_cmap(name)), name
    for name in ("RdBu_r", "coolwarm", "vlag"):
        assert _is_diverging(plt.get_cmap(name)) and not _is_sequential(plt.get_cmap(name)), name
    assert not _in_words("relative_distance") and not _in_words("") and _in_words("probability of the correct digit", 2)


def test_every_public_plot_function_has_a_case():
    assert PUBLIC == sorted(CASES), "give each public function of views.plots a case in CASES"


@pytest.mark.parametrize("name", PUBLIC)
def test_plot_follows_the_figure_rules(runs, name):
    assert name in CASES, f"no case for plots.{name}"
    for fig, signed in CASES[name](runs):
        try:
            check_figure(fig, signed)
        finally:
            plt.close(fig)


def test_run_figures_follow_the_figure_rules(runs):
    for name in ("add3_nano", "grok113_fast"):
        for figure, note in run_figures(runs[name]).values():
            if figure is not None:
                try:
                    check_figure(figure, signed=False)
                finally:
                    plt.close(figure)
