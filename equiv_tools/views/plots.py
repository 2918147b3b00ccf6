"""Figures from the kit's DataFrames. Each function returns a matplotlib Figure and shows nothing."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from equiv_tools.analysis.maps import CATEGORIES, category_shares

CATEGORY_COLOURS = ("#4c9f70", "#f2a541", "#c8553d")


def plot_training_curves(metrics: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Accuracy and loss against step, one line per split (train, id_test, ood): a ``metrics.csv`` frame."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    sns.lineplot(data=metrics, x="step", y="accuracy", hue="split", ax=ax_acc)
    sns.lineplot(data=metrics, x="step", y="loss", hue="split", ax=ax_loss, legend=False)
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_ylabel("exact-match accuracy")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("answer loss")
    if title:
        fig.suptitle(title)
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
    ax.set_xlabel("step")
    ax.set_ylabel("share")
    ax.legend(loc="center right", fontsize="small")
    ax.set_title(title or "learning the rule while OOD accuracy stays at 0")
    return fig


def _pivot(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """[a, b] grid of ``column``: rows a ascending, columns b ascending."""
    return frame.pivot(index="a", columns="b", values=column).sort_index().sort_index(axis=1)


def _integer_ticks(ax) -> None:
    """Operands are whole numbers: ticks on integers only."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


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
    """Categories of a ``maps.classify`` frame over (b, a), a increasing upward, with a legend of shares."""
    grid = _pivot(frame.assign(code=frame["category"].cat.codes), "code")
    extent = (grid.columns.min(), grid.columns.max(), grid.index.min(), grid.index.max())
    ax.imshow(grid.to_numpy(), cmap=ListedColormap(CATEGORY_COLOURS), vmin=0, vmax=2, extent=extent, origin="lower",
              aspect="auto", interpolation="nearest")
    _integer_ticks(ax)
    shares = category_shares(frame)
    ax.legend(handles=[Patch(color=c, label=f"{k} ({shares[k]:.1%})") for k, c in zip(CATEGORIES, CATEGORY_COLOURS)],
              loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, fontsize="small", frameon=False)


def plot_category_map(frame: pd.DataFrame, title: Optional[str] = None, boundary: Optional[int] = None) -> Figure:
    """Heatmap over the (a, b) grid of a ``maps.classify`` frame: correct / matches relation / other.

    b runs along x and a up the y axis, as in every figure of the kit; ``boundary`` marks where ID ends.
    """
    fig = Figure(figsize=(5.6, 5.2), layout="constrained")
    ax = fig.subplots()
    _category_image(ax, frame)
    _mark_boundary(ax, boundary)
    ax.set_xlabel("b")
    ax.set_ylabel("a")
    ax.set_title(title or f"model vs truth vs {frame.attrs.get('relation', 'relation')}")
    return fig


def plot_answer_contours(
    frame: pd.DataFrame,
    columns: Sequence[str] = ("answer", "truth", "relation_answer"),
    titles: Optional[Sequence[str]] = None,
    boundary: Optional[int] = None,
) -> Figure:
    """Filled contours of answers over the (a, b) grid, one panel per column, each on its own colour scale (the paper's Figure 2).

    A ``maps.classify`` frame adds a last panel with the categories. ``boundary`` (e.g. 1000) marks where ID ends.
    """
    titles = list(titles or columns)
    with_categories = "category" in frame
    panels = len(columns) + with_categories
    fig = Figure(figsize=(4.3 * panels, 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, panels, sharey=True))
    for ax, column, title in zip(axes, columns, titles):
        grid = _pivot(frame, column)
        contour = ax.contourf(grid.columns, grid.index, grid.to_numpy(), levels=MaxNLocator(12).tick_values(grid.min().min(), grid.max().max()), cmap="viridis")
        fig.colorbar(contour, ax=ax, orientation="horizontal", shrink=0.9, ticks=MaxNLocator(5), label=f"{title}")
        _mark_boundary(ax, boundary)
        _integer_ticks(ax)
        ax.set_title(title)
        ax.set_xlabel("b")
    if with_categories:
        _category_image(axes[-1], frame)
        _mark_boundary(axes[-1], boundary)
        axes[-1].set_title("category")
        axes[-1].set_xlabel("b")
    axes[0].set_ylabel("a")
    return fig


def plot_digit_distribution(dist: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Share of each output digit at each answer position, one panel per source (the paper's Figure 3), shares in the cells.

    ``dist``: a ``maps.digit_distribution`` or ``maps.digit_distributions`` frame (source, position, digit, share).
    """
    sources = list(dict.fromkeys(dist["source"]))
    fig = Figure(figsize=(0.75 * dist.position.nunique() * len(sources) + 2.5, 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sources), sharey=True))
    digits = range(int(dist.digit.max()) + 1)
    for ax, source in zip(axes, sources):
        grid = dist[dist.source == source].pivot(index="digit", columns="position", values="share").reindex(digits).fillna(0.0)
        labels = grid.map(lambda v: f"{v:.2f}" if v >= 0.005 else "")  # shares written in the cells, blank where none
        sns.heatmap(grid, ax=ax, cmap="mako_r", vmin=0, vmax=1, annot=labels, fmt="", annot_kws={"fontsize": 7}, cbar=False)
        ax.set_title(source, fontsize="medium")
        ax.set_xlabel("answer position (0 = units)")
        ax.set_ylabel("")
        ax.invert_yaxis()
    axes[0].set_ylabel("output digit")
    if title:
        fig.suptitle(title)
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
        ax.annotate(str(row.frequency), (row.frequency, row.norm), ha="center", va="bottom", fontsize="small")
    ax.set_xlabel("frequency k (cos and sin of 2πk·x/p)")
    ax.set_ylabel("embedding norm")
    ax.set_xlim(0.3, norms.frequency.max() + 0.7)
    ax.set_title(title or "the embedding in the Fourier basis")
    return fig


def plot_neuron_activations(frame: pd.DataFrame, title: Optional[str] = None, frequency: Optional[int] = None) -> Figure:
    """Heatmaps of neuron activations over (a, b), one panel per neuron: a ``fourier.neuron_activations`` frame
    (neuron, a, b, activation). b runs along x and a up the y axis, as in every figure of the kit.

    With ``frequency`` k, the axes are k·a mod p and k·b mod p (p = the grid's size): a wave of frequency k
    then shows as one smooth period instead of k fine stripes.
    """
    if frequency is not None:
        p = int(frame.a.max()) + 1
        frame = frame.assign(a=frame.a * frequency % p, b=frame.b * frequency % p)
    neurons = list(dict.fromkeys(frame.neuron))
    fig = Figure(figsize=(3.3 * len(neurons) + 0.6, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(neurons), sharey=True))
    for ax, neuron in zip(axes, neurons):
        grid = _pivot(frame[frame.neuron == neuron], "activation")
        image = ax.imshow(grid.to_numpy(), origin="lower", cmap="viridis", aspect="equal", interpolation="nearest")
        fig.colorbar(image, ax=ax, orientation="horizontal", shrink=0.85)
        ax.set_title(f"neuron {neuron}", fontsize="medium")
        ax.set_xlabel("b" if frequency is None else f"{frequency}·b mod p")
    axes[0].set_ylabel("a" if frequency is None else f"{frequency}·a mod p")
    if title:
        fig.suptitle(title)
    return fig

def plot_sensitivity(frame: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Heatmap of answer-digit change rates, operand positions (rows) x answer positions (columns), one panel per split.

    ``frame``: a ``sensitivity.input_sensitivity`` frame (split, operand_position, answer_position, change_rate);
    positions keep the frame's order, and cells with no input (padding above the leading digit) stay blank.
    """
    splits = list(dict.fromkeys(frame["split"]))
    rows, columns = list(dict.fromkeys(frame.operand_position)), list(dict.fromkeys(frame.answer_position))
    fig = Figure(figsize=(0.8 * len(columns) * len(splits) + 2.5, 0.4 * len(rows) + 1.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(splits), sharey=True))
    for ax, split in zip(axes, splits):
        grid = frame[frame.split == split].pivot(index="operand_position", columns="answer_position", values="change_rate")
        sns.heatmap(grid.reindex(index=rows, columns=columns), ax=ax, cmap="rocket_r", vmin=0, vmax=1, annot=True, fmt=".2f",
                    annot_kws={"fontsize": 7}, cbar=ax is axes[-1], cbar_kws={"label": "answer digit changed"})
        ax.set_title(split)
        ax.set_xlabel("answer position")
        ax.set_ylabel("")
    axes[0].set_ylabel("resampled operand digit")
    if title:
        fig.suptitle(title)
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
    fig = Figure(figsize=(4.2 * len(heads), 3.8 * len(layers)), layout="constrained")
    axes = np.array(fig.subplots(len(layers), len(heads), squeeze=False))
    for (r, layer), (c, head) in ((rl, hc) for rl in enumerate(layers) for hc in enumerate(heads)):
        cell = frame[(frame.layer == layer) & (frame["head"] == head)]
        grid = cell.pivot(index="query", columns="key", values="weight").reindex(index=order, columns=order)
        sns.heatmap(grid, ax=axes[r, c], cmap="Blues", vmin=0, vmax=1, cbar=False, square=True, xticklabels=True, yticklabels=True)
        axes[r, c].set_title(f"layer {layer}, head {head}", fontsize="medium")
        axes[r, c].tick_params(labelsize=6)
        axes[r, c].set_xlabel("key")
        axes[r, c].set_ylabel("query")
    if title:
        fig.suptitle(title)
    return fig


def plot_logit_lens(frame: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Mean probability of each digit (up) at each answer position (across), read at each depth (columns), per split (rows).

    ``frame``: a ``reading.split_logit_lens`` frame (split, layer, answer_position, digit, probability); a
    ``reading.logit_lens`` frame without a split column is drawn as one row.
    """
    frame = frame if "split" in frame else frame.assign(split="")
    splits, layers = list(dict.fromkeys(frame["split"])), sorted(frame.layer.unique())
    positions = list(dict.fromkeys(frame.answer_position))
    fig = Figure(figsize=(0.5 * len(positions) * len(layers) + 2, 3.4 * len(splits)), layout="constrained")
    axes = np.array(fig.subplots(len(splits), len(layers), squeeze=False, sharey=True))
    for (r, split), (c, layer) in ((sr, lc) for sr in enumerate(splits) for lc in enumerate(layers)):
        cell = frame[(frame["split"] == split) & (frame.layer == layer)]
        grid = cell.pivot(index="digit", columns="answer_position", values="probability")[positions]
        sns.heatmap(grid, ax=axes[r, c], cmap="mako_r", vmin=0, vmax=1, cbar=False)
        axes[r, c].invert_yaxis()
        axes[r, c].set_title(f"{split} layer {layer}".strip(), fontsize="medium")
        axes[r, c].set_xlabel("")
        axes[r, c].set_ylabel("digit" if c == 0 else "")
        axes[r, c].tick_params(labelsize=6)
    if title:
        fig.suptitle(title)
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
    fig = Figure(figsize=(3.2 * len(checkpoints) + 1.2, 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(checkpoints), sharex=True, sharey=True))
    for ax, checkpoint in zip(axes, checkpoints):
        rows = frame[frame.checkpoint == checkpoint]
        ax.scatter(rows.pc1, rows.pc2, c=[palette[c] for c in rows.colour], s=6, alpha=0.8, linewidths=0)
        ax.set_title(f"{checkpoint}: silhouette {score[checkpoint]:.2f}", fontsize="medium")
        ax.set_xlabel("PC 1")
    axes[0].set_ylabel("PC 2")
    fig.legend(handles=[Patch(color=palette[c], label=str(c)) for c in classes], loc="outside right center", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_patching(frame: pd.DataFrame, position_names: Sequence[str], answer_position: Optional[int] = None, title: Optional[str] = None) -> Figure:
    """Heatmaps of a patching or activation-difference frame (``equiv_tools.analysis.patching``): one panel per kind (and head).

    Rows are layers; columns are positions, labelled with ``position_names`` (``task.position_names()``),
    or heads where the frame patches a head at all positions (position -1). ``answer_position`` picks one
    answer position of a per-answer-position metric (default: the first in the frame).
    """
    if answer_position is None:
        answer_position = int(frame.answer_position.iloc[0])
    frame = frame[frame.answer_position == answer_position]
    panels = []
    for kind, rows in frame.groupby("kind", sort=False):
        if (rows.position == -1).all():
            panels.append((kind, rows.pivot(index="layer", columns="head", values="value"), "head"))
        else:
            for head, by_head in rows.groupby("head"):
                grid = by_head.pivot(index="layer", columns="position", values="value")
                grid.columns = [position_names[p] for p in grid.columns]
                panels.append((kind if head < 0 else f"{kind}, head {head}", grid, "position"))
    fig = Figure(figsize=(min(4 + 4.5 * len(panels), 22), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    measure = frame.measure.iloc[0] if "measure" in frame else "value"
    limit = float(np.nanmax(np.abs(frame.value.to_numpy()))) or 1.0
    for ax, (label, grid, xlabel) in zip(axes, panels):
        sns.heatmap(grid, ax=ax, cmap="RdBu_r", vmin=-limit, vmax=limit, cbar_kws={"label": measure})
        ax.set_title(label)
        ax.set_xlabel(xlabel)
        ax.invert_yaxis()
    if title:
        fig.suptitle(title)
    return fig


PHASE_COLOURS = ("#dde5f0", "#f6e3c4", "#d9ecd9")


def plot_progress_measures(metrics: pd.DataFrame, progress: pd.DataFrame, phases: Optional[pd.DataFrame] = None,
                           step: Optional[int] = None, title: Optional[str] = None) -> Figure:
    """A grokking run against step: train and test loss (a ``metrics.csv`` frame); restricted and excluded loss
    (a ``fourier.progress_series`` frame); total weight norm. Log-scale losses.

    ``phases`` (``grokking.grokking_phases``) shades memorisation, circuit formation and cleanup;
    ``step`` draws a vertical line there (the widget's current checkpoint).
    """
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_loss, ax_fourier, ax_norm = fig.subplots(1, 3, sharex=True)
    for split, label, colour in (("train", "train loss", "#4c72b0"), ("id_test", "test loss", "#c8553d")):
        rows = metrics[metrics.split == split]
        ax_loss.plot(rows.step, rows.loss, label=label, color=colour)
        if split == "id_test":
            ax_fourier.plot(rows.step, rows.loss, label=label, color=colour, alpha=0.4)
    ax_fourier.plot(progress.step, progress.restricted_loss, "o-", ms=3, color="#2a9d8f", label="restricted loss")
    ax_fourier.plot(progress.step, progress.excluded_loss, "o-", ms=3, color="#8e5ea2", label="excluded loss")
    ax_norm.plot(progress.step, progress.total_weight_norm, "o-", ms=3, color="#555555")
    for ax, ylabel in ((ax_loss, "loss"), (ax_fourier, "loss"), (ax_norm, "total weight norm")):
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if phases is not None:
            for row, colour in zip(phases.itertuples(), PHASE_COLOURS):
                ax.axvspan(row.start, row.end, color=colour, zorder=0, label=row.phase if ax is ax_norm else None)
        if step is not None:
            ax.axvline(step, color="black", linewidth=1)
    for ax in (ax_loss, ax_fourier):
        ax.set_yscale("log")
        ax.legend(fontsize="small")
    if phases is not None:
        ax_norm.legend(fontsize="small")
    ax_loss.set_title("memorising, then generalising")
    ax_fourier.set_title("the key frequencies' share of the logits")
    ax_norm.set_title("weight decay cleans up")
    if title:
        fig.suptitle(title)
    return fig
