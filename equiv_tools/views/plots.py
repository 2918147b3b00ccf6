"""Figures from the kit's DataFrames. Each function returns a matplotlib Figure and shows nothing.

Every figure fits a notebook's width (at most ``MAX_WIDTH`` inches, 960 px at matplotlib's default 100 dpi; wide
layouts grow taller instead), writes its labels at 9 pt or more, has a title that says what to see, and gives
every image a colour bar labelled in words: a sequential map for quantities that are never negative, a
diverging map centred at 0 for signed ones, and one colour scale for panels of the same quantity.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from equiv_tools.analysis.maps import CATEGORIES, category_shares
from equiv_tools.analysis.reading import readable_depth

CATEGORY_COLOURS = ("#4c9f70", "#f2a541", "#c8553d")
MAX_WIDTH = 9.6  # inches: a notebook's width at 100 dpi
ANNOTATION_SIZE = 8  # numbers written in heatmap cells
A_LABEL, B_LABEL = "a (first operand)", "b (second operand)"
SPLIT_NAMES = {"train": "train", "id_test": "ID test (held out)", "ood": "OOD", "id": "ID"}
RESTORED = "how much of the clean answer each patched activation restores"
MEASURES = {  # a patching or distance measure -> (colour bar label, whether it can be negative, default title)
    "normalised_logit_diff": ("normalised logit difference (0 = corrupted run, 1 = clean run)", True, RESTORED),
    "logit_diff": ("logit difference, clean digit minus corrupted digit", True, RESTORED),
    "clean_digit_probability": ("probability of the clean run's digit", False, RESTORED),
    "relative_distance": ("relative distance (distance / typical norm; 0 = the same activations)", False,
                          "how far the activations lie from the other input's"),
}
KIND_NAMES = {  # a patching or distance frame's kind -> its panel title
    "resid_pre": "residual stream before each block", "resid_mid": "residual stream between attention and MLP",
    "resid_post": "residual stream after each block", "attn_out": "attention output", "mlp_out": "MLP output",
    "head_out_by_pos": "each head's output", "head_out_all_pos": "each head's output, all positions",
}


def _panels(n: int, width: float, height: float, reserve: float = 0.0, **subplot_kw) -> tuple[Figure, np.ndarray]:
    """A Figure for ``n`` panels of ``width`` x ``height`` inches in as few rows as keep it within ``MAX_WIDTH``
    (``reserve``: inches kept for a colour bar or legend), balanced over the rows: (figure, axes [n]), spare cells removed."""
    fit = max(1, int((MAX_WIDTH - reserve) / width + 1e-9))
    rows = math.ceil(n / fit)
    columns = math.ceil(n / rows)
    fig = Figure(figsize=(min(columns * width + reserve, MAX_WIDTH), rows * height), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, **subplot_kw).ravel()
    for ax in axes[n:]:
        ax.remove()
    for ax in axes[max(0, n - columns) : n]:
        ax.tick_params(labelbottom=True)  # the last panel of each column keeps its x tick labels
    return fig, axes[:n]


def _axis_labels(fig: Figure, xlabel: str, ylabel: str) -> None:
    """One x and one y label for all the panels of ``fig``."""
    fig.supxlabel(xlabel, fontsize="medium")
    fig.supylabel(ylabel, fontsize="medium")


def _colour_scale(values, signed: Optional[bool] = None) -> dict:
    """cmap, vmin, vmax for ``values``: a diverging map centred at 0 where the quantity is ``signed`` (default: where
    a value is negative), else a sequential map from 0."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    limit = float(np.abs(values).max()) if values.size else 0.0
    limit = limit or 1.0
    if (values.size > 0 and values.min() < 0) if signed is None else signed:
        return {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
    return {"cmap": "viridis", "vmin": 0.0, "vmax": limit}


def _split_name(split: str) -> str:
    return SPLIT_NAMES.get(split, split)


def plot_training_curves(metrics: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Accuracy and loss against step, one line per split (train, id_test, ood): a ``metrics.csv`` frame."""
    fig = Figure(figsize=(MAX_WIDTH, 3.6), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    metrics = metrics.assign(split=metrics["split"].map(_split_name))
    sns.lineplot(data=metrics, x="step", y="accuracy", hue="split", ax=ax_acc)
    sns.lineplot(data=metrics, x="step", y="loss", hue="split", ax=ax_loss, legend=False)
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_ylabel("exact-match accuracy")
    ax_acc.get_legend().set_title("inputs")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("answer loss (cross-entropy)")
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("training step")
    fig.suptitle(title or "accuracy and loss through training")
    return fig


def plot_rule_share(metrics: pd.DataFrame, shares: pd.DataFrame, relation: str, title: Optional[str] = None) -> Figure:
    """ID and OOD accuracy (a ``metrics.csv`` frame) beside the share of OOD answers that follow ``relation``
    (a ``discovery.relation_share_by_step`` frame), against step: the rule is learned while OOD accuracy stays 0."""
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.subplots()
    for split, label, colour in (("id_test", "ID accuracy (held-out)", "#4c72b0"), ("ood", "OOD accuracy", "#c8553d")):
        rows = metrics[metrics.split == split]
        ax.plot(rows.step, rows.accuracy, label=label, color=colour)
    ax.plot(shares.step, shares.relation_share, "o-", color="#f2a541", label=f"OOD answers = {relation}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("share of inputs")
    ax.legend(loc="center right", fontsize="small")
    ax.set_title(title or "learning the rule while OOD accuracy stays at 0")
    return fig


def _pivot(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """[a, b] grid of ``column``: rows a ascending, columns b ascending."""
    return frame.pivot(index="a", columns="b", values=column).sort_index().sort_index(axis=1)


def _integer_ticks(ax) -> None:
    """Operands are whole numbers: ticks on integers only."""
    ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(6, integer=True))


def _mark_boundary(ax, boundary: Optional[int]) -> None:
    """Dashed lines where operands leave the training distribution (a or b = ``boundary``), where they fall inside the axes."""
    if boundary is None:
        return
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    if y0 <= boundary <= y1:
        ax.axhline(boundary, color="white", lw=1.2, ls="--")
    if x0 <= boundary <= x1:
        ax.axvline(boundary, color="white", lw=1.2, ls="--")


def _category_image(ax, frame: pd.DataFrame) -> None:
    """Categories of a ``maps.classify`` frame over (b, a), a increasing upward, with a colour bar naming each and its share."""
    grid = _pivot(frame.assign(code=frame["category"].cat.codes), "code")
    extent = (grid.columns.min(), grid.columns.max(), grid.index.min(), grid.index.max())
    image = ax.imshow(grid.to_numpy(), cmap=ListedColormap(CATEGORY_COLOURS), vmin=-0.5, vmax=2.5, extent=extent, origin="lower",
                      aspect="auto", interpolation="nearest")
    _integer_ticks(ax)
    shares = category_shares(frame)
    bar = ax.figure.colorbar(image, ax=ax, ticks=range(len(CATEGORIES)), label="the model's answer (share of the grid)")
    bar.ax.set_yticklabels([f"{k}\n({shares[k]:.1%})" for k in CATEGORIES])
    ax.set_xlabel(B_LABEL)
    ax.set_ylabel(A_LABEL)


def plot_category_map(frame: pd.DataFrame, title: Optional[str] = None, boundary: Optional[int] = None) -> Figure:
    """Heatmap over the (a, b) grid of a ``maps.classify`` frame: correct / matches relation / other.

    b runs along x and a up the y axis, as in every figure of the kit; ``boundary`` marks where ID ends.
    """
    fig = Figure(figsize=(7.2, 5.2), layout="constrained")
    ax = fig.subplots()
    _category_image(ax, frame)
    _mark_boundary(ax, boundary)
    ax.set_title(title or f"model vs truth vs {frame.attrs.get('relation', 'relation')}")
    return fig


ANSWER_TITLES = {"answer": "the model's answer", "truth": "the true answer", "relation_answer": "the relation's answer"}


def plot_answer_contours(
    frame: pd.DataFrame,
    columns: Sequence[str] = ("answer", "truth", "relation_answer"),
    titles: Optional[Sequence[str]] = None,
    boundary: Optional[int] = None,
) -> Figure:
    """Filled contours of answers over the (a, b) grid, one panel per column, on one colour scale (the paper's Figure 2).

    A ``maps.classify`` frame adds a last panel with the categories. ``boundary`` (e.g. 1000) marks where ID ends.
    Two panels a row: four panels make a 2 x 2 grid.
    """
    titles = list(titles or [ANSWER_TITLES.get(c, c.replace("_", " ")) for c in columns])
    with_categories = "category" in frame
    panels = len(columns) + with_categories
    fig, axes = _panels(panels, 4.8, 4.2, sharex=True, sharey=True)
    values = frame[list(columns)].to_numpy()
    levels = MaxNLocator(12).tick_values(values.min(), values.max())
    for ax, column, title in zip(axes, columns, titles):
        grid = _pivot(frame, column)
        contour = ax.contourf(grid.columns, grid.index, grid.to_numpy(), levels=levels, cmap="viridis")
        fig.colorbar(contour, ax=ax, ticks=MaxNLocator(5), label="answer (the number written)")
        _mark_boundary(ax, boundary)
        _integer_ticks(ax)
        ax.set_title(title)
    if with_categories:
        _category_image(axes[-1], frame)
        _mark_boundary(axes[-1], boundary)
        axes[-1].set_title("category of the model's answer")
    for ax in axes:
        ax.set(xlabel="", ylabel="")
    _axis_labels(fig, B_LABEL, A_LABEL)
    fig.suptitle("answers over the (a, b) grid" + (", dashed where ID ends" if boundary is not None else ""))
    return fig


def plot_digit_distribution(dist: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Share of each output digit at each answer position, one panel per source (the paper's Figure 3), shares in the cells.

    ``dist``: a ``maps.digit_distribution`` or ``maps.digit_distributions`` frame (source, position, digit, share).
    """
    sources = list(dict.fromkeys(dist["source"]))
    fig, axes = _panels(len(sources), 0.4 * dist.position.nunique() + 0.4, 3.8, reserve=1.0, sharey=True)
    digits = range(int(dist.digit.max()) + 1)
    for ax, source in zip(axes, sources):
        grid = dist[dist.source == source].pivot(index="digit", columns="position", values="share").reindex(digits).fillna(0.0)
        labels = grid.map(lambda v: f"{v:.2f}" if v >= 0.005 else "")  # shares written in the cells, blank where none
        sns.heatmap(grid, ax=ax, cmap="mako_r", vmin=0, vmax=1, annot=labels, fmt="", annot_kws={"fontsize": ANNOTATION_SIZE}, cbar=False)
        ax.set(title=source, xlabel="", ylabel="")
        ax.invert_yaxis()
    _axis_labels(fig, "answer position (0 = units)", "output digit")
    fig.colorbar(axes[0].collections[0], ax=list(axes), label="share of inputs")
    fig.suptitle(title or "which digit is written at each answer position")
    return fig


def plot_fourier_spectrum(norms: pd.DataFrame, title: Optional[str] = None, highlight: Sequence[int] = ()) -> Figure:
    """The embedding's norm per frequency as bars: a ``fourier.embedding_frequency_norms`` frame (frequency, norm).

    ``highlight`` frequencies (e.g. the key ones) are drawn in a second colour and labelled.
    """
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    ax = fig.subplots()
    highlight = set(int(k) for k in highlight)
    colours = ["#c8553d" if int(k) in highlight else "#4c72b0" for k in norms.frequency]
    ax.bar(norms.frequency, norms.norm, color=colours, width=0.8)
    for row in norms[norms.frequency.isin(highlight)].itertuples():
        ax.annotate(str(row.frequency), (row.frequency, row.norm), ha="center", va="bottom")
    ax.set_xlabel("frequency k (cos and sin of 2πk·x/p)")
    ax.set_ylabel("embedding norm")
    ax.set_xlim(0.3, norms.frequency.max() + 0.7)
    ax.set_title(title or "the embedding in the Fourier basis")
    return fig


def plot_neuron_activations(frame: pd.DataFrame, title: Optional[str] = None, frequency: Optional[int] = None) -> Figure:
    """Heatmaps of neuron activations over (a, b), one panel per neuron on one colour scale: a ``fourier.neuron_activations``
    frame (neuron, a, b, activation). b runs along x and a up the y axis, as in every figure of the kit.

    With ``frequency`` k, the axes are k·a mod p and k·b mod p (p = the grid's size): a wave of frequency k
    then shows as one smooth period instead of k fine stripes.
    """
    if frequency is not None:
        p = int(frame.a.max()) + 1
        frame = frame.assign(a=frame.a * frequency % p, b=frame.b * frequency % p)
    neurons = list(dict.fromkeys(frame.neuron))
    fig, axes = _panels(len(neurons), 2.9, 3.2, reserve=1.0, sharey=True)
    scale = _colour_scale(frame.activation)
    for ax, neuron in zip(axes, neurons):
        grid = _pivot(frame[frame.neuron == neuron], "activation")
        ax.imshow(grid.to_numpy(), origin="lower", aspect="equal", interpolation="nearest", **scale)
        ax.set_title(f"neuron {neuron}")
    if frequency is None:
        _axis_labels(fig, B_LABEL, A_LABEL)
    else:
        _axis_labels(fig, f"{frequency}·b mod p (b = second operand)", f"{frequency}·a mod p (a = first operand)")
    fig.colorbar(axes[0].images[0], ax=list(axes), label="activation after the MLP's nonlinearity")
    fig.suptitle(title or "MLP neuron activations over all (a, b) pairs")
    return fig


def plot_sensitivity(frame: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Heatmap of answer-digit change rates, operand positions (rows) x answer positions (columns), one panel per split.

    ``frame``: a ``sensitivity.input_sensitivity`` frame (split, operand_position, answer_position, change_rate);
    positions keep the frame's order, and cells with no input (padding above the leading digit) stay blank.
    """
    splits = list(dict.fromkeys(frame["split"]))
    rows, columns = list(dict.fromkeys(frame.operand_position)), list(dict.fromkeys(frame.answer_position))
    fig, axes = _panels(len(splits), 0.55 * len(columns) + 0.9, 0.3 * len(rows) + 2.0, reserve=1.0, sharey=True)
    for ax, split in zip(axes, splits):
        grid = frame[frame.split == split].pivot(index="operand_position", columns="answer_position", values="change_rate")
        sns.heatmap(grid.reindex(index=rows, columns=columns), ax=ax, cmap="rocket_r", vmin=0, vmax=1, annot=True, fmt=".2f",
                    annot_kws={"fontsize": ANNOTATION_SIZE}, cbar=False)
        ax.set(title=split, xlabel="", ylabel="")
    _axis_labels(fig, "answer position", "resampled operand digit")
    fig.colorbar(axes[0].collections[0], ax=list(axes), label="share of inputs whose answer digit changes")
    fig.suptitle(title or "which operand digits change which answer digits")
    return fig


def plot_attention(frame: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Attention heatmaps, one panel per layer (rows) and head (columns), queries down and keys across, by position name.

    ``frame``: a ``reading.mean_attention`` frame, or the rows of one item of ``reading.attention_patterns``
    (layer, head, query, key, weight); positions keep the frame's order.
    """
    if "item" in frame and frame["item"].nunique() > 1:
        raise ValueError("pass the rows of one item (frame[frame.item == i]) or a mean_attention frame")
    layers, heads = sorted(frame.layer.unique()), sorted(frame["head"].unique())
    order = list(dict.fromkeys([*frame["key"], *frame["query"]]))
    side = min(3.0, (MAX_WIDTH - 1.0) / len(heads))
    fig = Figure(figsize=(side * len(heads) + 1.0, side * len(layers) + 1.6), layout="constrained")
    axes = np.array(fig.subplots(len(layers), len(heads), squeeze=False, sharex=True, sharey=True))
    for (r, layer), (c, head) in ((rl, hc) for rl in enumerate(layers) for hc in enumerate(heads)):
        cell = frame[(frame.layer == layer) & (frame["head"] == head)]
        grid = cell.pivot(index="query", columns="key", values="weight").reindex(index=order, columns=order)
        sns.heatmap(grid, ax=axes[r, c], cmap="Blues", vmin=0, vmax=1, cbar=False, xticklabels=True, yticklabels=True)  # outer panels show them
        axes[r, c].set(title=f"layer {layer}, head {head}", xlabel="", ylabel="")
    for ax in axes[-1]:
        ax.set_xlabel("key: the position read")  # shared by the panels above
    for ax in axes[:, 0]:
        ax.set_ylabel("query: the position reading")  # shared by the panels to the right
    fig.colorbar(axes[0, 0].collections[0], ax=list(axes.ravel()), location="bottom", shrink=0.6, aspect=40,
                 label="attention weight (share of the query's attention)")
    fig.suptitle(title or "where each position looks: attention by layer and head")
    return fig


def _depth_name(depth: int, depths: int) -> str:
    """A residual depth of the logit lens in words: 0 is the embedding, d the stream after block d - 1."""
    return "embedding" if depth == 0 else f"after block {depth - 1}" + (" (output)" if depth == depths - 1 else "")


def plot_logit_lens(frame: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Mean probability of each digit (up) at each answer position (across), read at each depth (rows), per split (columns).

    ``frame``: a ``reading.split_logit_lens`` frame (split, layer, answer_position, digit, probability); a
    ``reading.logit_lens`` frame without a split column is drawn as one column.
    """
    frame = frame if "split" in frame else frame.assign(split="")
    splits, layers = list(dict.fromkeys(frame["split"])), sorted(frame.layer.unique())
    positions = list(dict.fromkeys(frame.answer_position))
    width = min(0.6 * len(positions) + 1.2, (MAX_WIDTH - 1.2) / len(splits))
    fig = Figure(figsize=(width * len(splits) + 1.2, 2.4 * len(layers) + 0.6), layout="constrained")
    axes = np.array(fig.subplots(len(layers), len(splits), squeeze=False, sharex=True, sharey=True))
    for (r, layer), (c, split) in ((lr, sc) for lr in enumerate(layers) for sc in enumerate(splits)):
        cell = frame[(frame["split"] == split) & (frame.layer == layer)]
        grid = cell.pivot(index="digit", columns="answer_position", values="probability")[positions]
        sns.heatmap(grid, ax=axes[r, c], cmap="mako_r", vmin=0, vmax=1, cbar=False)
        axes[r, c].invert_yaxis()
        axes[r, c].tick_params(axis="x", labelrotation=90)
        axes[r, c].set(title=", ".join(filter(None, (_split_name(split), _depth_name(layer, len(layers))))), xlabel="", ylabel="")
    _axis_labels(fig, "answer position", "digit")
    fig.colorbar(axes[0, 0].collections[0], ax=list(axes.ravel()), label="mean probability of the digit")
    fig.suptitle(title or "digit probabilities read from each depth, averaged over inputs")
    return fig


def plot_correct_digit_lens(summary: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """When the answer becomes readable: the median probability of the correct digit against depth, with the middle
    half of the inputs as a band, one panel per answer position; a dashed line where the most likely digit is first
    the correct one for at least half the inputs.

    ``summary``: a ``reading.correct_digit_summary`` frame (position, depth, p_median, p_q25, p_q75, argmax_share).
    """
    positions = list(dict.fromkeys(summary.position))
    depths = sorted(summary.depth.unique())
    readable = readable_depth(summary)
    fig, axes = _panels(len(positions), 3.2, 2.6, sharex=True, sharey=True)
    for ax, position in zip(axes, positions):
        rows = summary[summary.position == position].sort_values("depth")
        ax.fill_between(rows.depth, rows.p_q25, rows.p_q75, color="#4c72b0", alpha=0.25, linewidth=0, label="middle half of the inputs")
        ax.plot(rows.depth, rows.p_median, "o-", color="#4c72b0", label="median over the inputs")
        if readable[position] is not None:
            ax.axvline(readable[position], color="#c8553d", ls="--", label="top digit correct for half the inputs")
        ax.set_title(position)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(depths, [f"{d}\nembedding" if d == 0 else f"{d}\noutput" if d == depths[-1] else str(d) for d in depths])
    for ax in axes[-axes[0].get_gridspec().ncols :]:  # the last panel of each column
        ax.set_xlabel("depth d (the stream before block d)")
    fig.supylabel("probability of the correct digit", fontsize="medium")
    handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}  # a position may lack the line
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(title or "at which depth each answer digit becomes readable (logit lens)")
    return fig


def plot_pca_series(frame: pd.DataFrame, separation: pd.DataFrame, checkpoints: Optional[Sequence] = None,
                    title: Optional[str] = None) -> Figure:
    """Scatter of the first two shared principal components, one panel per checkpoint, coloured by class, on shared axes.

    ``frame`` and ``separation``: a ``projection.PCASeries``'s (checkpoint, colour, pc1, pc2; checkpoint, silhouette);
    ``checkpoints`` picks and orders the panels (default: all). Each panel's title gives its silhouette.
    """
    checkpoints = list(dict.fromkeys(frame.checkpoint)) if checkpoints is None else list(checkpoints)
    score = separation.set_index("checkpoint").silhouette
    classes = sorted(frame.colour.unique())
    palette = dict(zip(classes, sns.color_palette("tab10" if len(classes) <= 10 else "husl", len(classes))))
    fig, axes = _panels(len(checkpoints), 3.0, 3.2, reserve=1.2, sharex=True, sharey=True)
    for ax, checkpoint in zip(axes, checkpoints):
        rows = frame[frame.checkpoint == checkpoint]
        ax.scatter(rows.pc1, rows.pc2, c=[palette[c] for c in rows.colour], s=6, alpha=0.8, linewidths=0)
        ax.set_title(f"{checkpoint}: silhouette {score[checkpoint]:.2f}")
    _axis_labels(fig, "principal component 1", "principal component 2")
    fig.legend(handles=[Patch(color=palette[c], label=str(c)) for c in classes], loc="outside right center", fontsize="small", title="class")
    fig.suptitle(title or "hidden states, one shared projection")
    return fig


def plot_patching(frame: pd.DataFrame, position_names: Sequence[str], answer_position: Optional[int] = None, title: Optional[str] = None) -> Figure:
    """Heatmaps of a patching or activation-difference frame (``equiv_tools.analysis.patching``): one panel per kind
    (and head), stacked, on one colour scale, each with its colour bar.

    Rows are layers; columns are positions, labelled with ``position_names`` (``task.position_names()``),
    or heads where the frame patches a head at all positions (position -1). ``answer_position`` picks one
    answer position of a per-answer-position metric (default: the first in the frame).
    """
    if answer_position is None:
        answer_position = int(frame.answer_position.iloc[0])
    frame = frame[frame.answer_position == answer_position]
    panels = []
    for kind, rows in frame.groupby("kind", sort=False):
        name = KIND_NAMES.get(kind, kind)
        if (rows.position == -1).all():
            panels.append((name, rows.pivot(index="layer", columns="head", values="value"), "attention head"))
        else:
            for head, by_head in rows.groupby("head"):
                grid = by_head.pivot(index="layer", columns="position", values="value")
                grid.columns = [position_names[p] for p in grid.columns]
                panels.append((name if head < 0 else f"{name}, head {head}", grid, "position in the sequence"))
    layers = frame.layer.nunique()
    fig = Figure(figsize=(MAX_WIDTH, (0.4 * layers + 1.9) * len(panels) + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(panels), 1))
    measure = frame.measure.iloc[0] if "measure" in frame else "value"
    label, signed, default_title = MEASURES.get(measure, (measure.replace("_", " "), None, "patching by layer and position"))
    scale = _colour_scale(frame.value, signed)
    for ax, (name, grid, xlabel) in zip(axes, panels):
        sns.heatmap(grid, ax=ax, cbar_kws={"label": label, "location": "bottom", "shrink": 0.6, "aspect": 40}, **scale)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("layer")
        ax.invert_yaxis()
    fig.suptitle(title or default_title)
    return fig


PHASE_COLOURS = ("#dde5f0", "#f6e3c4", "#d9ecd9")


def plot_progress_measures(metrics: pd.DataFrame, progress: pd.DataFrame, phases: Optional[pd.DataFrame] = None,
                           step: Optional[int] = None, title: Optional[str] = None) -> Figure:
    """A grokking run against step, three panels stacked: train and test loss (a ``metrics.csv`` frame); restricted
    and excluded loss (a ``fourier.progress_series`` frame); total weight norm. Log-scale losses.

    ``phases`` (``grokking.grokking_phases``) shades memorisation, circuit formation and cleanup;
    ``step`` draws a vertical line there (the widget's current checkpoint).
    """
    fig = Figure(figsize=(MAX_WIDTH, 8.4), layout="constrained")
    ax_loss, ax_fourier, ax_norm = fig.subplots(3, 1, sharex=True)
    for split, label, colour in (("train", "train loss", "#4c72b0"), ("id_test", "test loss", "#c8553d")):
        rows = metrics[metrics.split == split]
        ax_loss.plot(rows.step, rows.loss, label=label, color=colour)
        if split == "id_test":
            ax_fourier.plot(rows.step, rows.loss, label=label, color=colour, alpha=0.4)
    ax_fourier.plot(progress.step, progress.restricted_loss, "o-", ms=3, color="#2a9d8f", label="restricted loss")
    ax_fourier.plot(progress.step, progress.excluded_loss, "o-", ms=3, color="#8e5ea2", label="excluded loss")
    ax_norm.plot(progress.step, progress.total_weight_norm, "o-", ms=3, color="#555555")
    ax_norm.set_xlabel("training step")  # shared by the panels above
    for ax, ylabel in ((ax_loss, "loss (cross-entropy)"), (ax_fourier, "loss (cross-entropy)"), (ax_norm, "total weight norm")):
        ax.set_ylabel(ylabel)
        if phases is not None:
            for row, colour in zip(phases.itertuples(), PHASE_COLOURS):
                ax.axvspan(row.start, row.end, color=colour, zorder=0, label=row.phase if ax is ax_norm else None)
        if step is not None:
            ax.axvline(step, color="black", linewidth=1)
    for ax in (ax_loss, ax_fourier):
        ax.set_yscale("log")
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    if phases is not None:
        ax_norm.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax_loss.set_title("memorising, then generalising")
    ax_fourier.set_title("the key frequencies' share of the logits")
    ax_norm.set_title("weight decay cleans up")
    fig.suptitle(title or "how a grokking run learns: losses, Fourier measures and weight norm")
    return fig


def plot_head_ablation(frame: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Heatmap of the accuracy each answer digit loses when one head is ablated: heads (rows) x answer digits (columns).

    ``frame``: an ``ablation.head_ablation`` frame (layer, head, digit, accuracy_drop): signed (an ablation may help),
    so a diverging map centred at 0.
    """
    grid = frame.assign(row=[f"layer {layer}, head {head}" for layer, head in zip(frame.layer, frame["head"])])
    grid = grid.pivot(index="row", columns="digit", values="accuracy_drop")
    grid = grid.reindex(index=list(dict.fromkeys(f"layer {l}, head {h}" for l, h in zip(frame.layer, frame["head"]))),
                        columns=list(dict.fromkeys(frame.digit)))
    fig = Figure(figsize=(min(MAX_WIDTH, 0.8 * len(grid.columns) + 3.4), 0.32 * len(grid) + 1.6), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(grid, ax=ax, annot=True, fmt=".2f", annot_kws={"fontsize": ANNOTATION_SIZE}, **_colour_scale(grid.to_numpy(), signed=True),
                cbar_kws={"label": "accuracy lost (share of inputs)"})
    ax.set(xlabel="answer digit (10^k: units, tens, ...)", ylabel="ablated head")
    fig.suptitle(title or "which answer digits break when one head is ablated")
    return fig


SWEEP_COLUMNS = {  # a results.csv column -> its axis label in words
    "n_layers": "layers (transformer blocks)", "seed": "seed", "recipe": "training recipe", "task": "task",
    "id_accuracy": "ID accuracy (held-out pairs)", "ood_accuracy": "OOD accuracy (train digits + 1)",
    "best_relation_share": "share of OOD answers that follow the best relation",
    "residue_relation_share": "share of OOD answers that follow\n(a mod 10^n) op (b mod 10^n)",
    "id_floor_after_fit": "lowest ID accuracy after first reaching 0.99",
}


def plot_sweep(results: pd.DataFrame, by: str, value: str, title: Optional[str] = None) -> Figure:
    """One point per run of a sweep's ``results.csv`` frame: ``value`` (a share or an accuracy, 0..1) against the
    groups of column ``by`` (e.g. ``n_layers``), in their natural order, each group's median drawn as a bar behind its points."""
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    order = sorted(results[by].dropna().unique())
    labels = [str(g) for g in order]
    medians = results.groupby(by)[value].median().reindex(order)
    ax.bar(labels, medians.to_numpy(), color="#dddddd", edgecolor="#888888", label="median")
    points = results.assign(**{by: results[by].astype(str)})
    sns.stripplot(data=points, x=by, y=value, order=labels, color="#4c72b0", size=7, jitter=0.15, ax=ax, label="one run")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel(SWEEP_COLUMNS.get(by, by.replace("_", " ")))
    ax.set_ylabel(SWEEP_COLUMNS.get(value, value.replace("_", " ")))
    handles, names = ax.get_legend_handles_labels()
    keep = dict(zip(names, handles))  # one entry each: the median bar, and a point
    ax.legend(keep.values(), keep.keys(), fontsize="small", loc="lower right")
    fig.suptitle(title or "a sweep's runs, one point each, with the median as a bar")
    return fig


SCORECARD_AXES = {  # a scorecard_table axis -> its label in words; these axes are shares, 0..1
    "id_accuracy": "ID accuracy", "ood_accuracy": "OOD accuracy", "relation_consistency": "follows its best relation",
    "class_map_agreement": "same answer as its ID class", "stage": "stage",
}


def plot_scorecard(table: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Runs side by side on every share of a ``scorecard.scorecard_table`` frame (run, axis, setting, value):
    horizontal bars, one colour per run; the cost-weighted error, another quantity, in a panel of its own when
    the frame has it."""
    table = table.assign(setting=table.setting.fillna("").astype(str))  # a CSV gives NaN for an empty setting
    shares = table[table.axis.isin(list(SCORECARD_AXES))]
    named = ("relation_consistency", "class_map_agreement")  # their setting is the relation, too long for a label
    shares = shares.assign(measure=[f"{SCORECARD_AXES[a]}: {s}" if s and a not in named else SCORECARD_AXES[a]
                                    for a, s in zip(shares.axis, shares.setting)])
    runs = list(dict.fromkeys(table.run))
    measures = list(dict.fromkeys(shares.measure))
    cost = table[table.axis == "cost_weighted_error"]
    fig = Figure(figsize=(MAX_WIDTH, 0.16 * len(measures) * len(runs) + 0.3 * len(measures) + 2.0), layout="constrained")
    bars, costs = fig.subplots(1, 2, width_ratios=[2.2, 1]) if len(cost) else (fig.subplots(), None)
    sns.barplot(data=shares, y="measure", x="value", hue="run", hue_order=runs, order=measures, orient="h", ax=bars)
    bars.set(xlim=(0, 1.02), xlabel="share of inputs", ylabel="what is measured")
    bars.legend(title="run", fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(len(runs), 4))
    if costs is not None:
        sns.barplot(data=cost, y="run", x="value", hue="run", order=runs, hue_order=runs, legend=False, orient="h", ax=costs)
        costs.set(ylabel="run", xlabel="cost-weighted error")
        costs.set_xlim(0, max(1e-3, float(cost.value.max())) * 1.1)
        costs.xaxis.set_major_locator(MaxNLocator(3))
    fig.suptitle(title or "each run on every axis of the scorecard")
    return fig


def plot_remedy_costs(table: pd.DataFrame, baseline: Optional[float] = None, title: Optional[str] = None) -> Figure:
    """What each remedy run of a ``remedies.remedy_table`` frame cost and gained, one row per run in three panels:
    the optimizer steps it took, the OOD pairs it trained on, and its OOD accuracy after (its ID accuracy written
    beside the bar). ``baseline``: the source run's OOD accuracy, drawn as a dashed line."""
    runs = list(table.run)
    fig = Figure(figsize=(MAX_WIDTH, 0.45 * len(runs) + 1.6), layout="constrained")
    steps, pairs, gain = fig.subplots(1, 3, sharey=True)
    y = np.arange(len(runs))
    steps.barh(y, table.steps, color="#8c8c8c")
    pairs.barh(y, table.k, color="#8c8c8c")
    gain.barh(y, table.ood_accuracy, color="#4c72b0")
    for row, (ood, id_accuracy) in enumerate(zip(table.ood_accuracy, table.id_accuracy)):
        gain.text(min(ood, 0.55) + 0.02, row, f"{ood:.3f} (ID {id_accuracy:.3f})", va="center", fontsize=9)
    if baseline is not None:
        gain.axvline(baseline, ls="--", color="#888888", label="before the remedy")
        gain.legend(fontsize="small", loc="lower right")
    steps.set(yticks=y, yticklabels=runs, xlabel="optimizer steps", ylabel="remedy run")
    steps.invert_yaxis()
    pairs.set(xlabel="OOD pairs trained on")
    gain.set(xlim=(0, 1.02), xlabel="OOD accuracy after the remedy")
    fig.suptitle(title or "what each remedy cost, and what it gained")
    return fig
