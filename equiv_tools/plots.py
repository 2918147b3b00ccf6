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

from .maps import CATEGORIES, category_shares

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


def _mark_boundary(ax, boundary: Optional[int]) -> None:
    """Dashed lines where operands leave the training distribution (a or b = ``boundary``)."""
    if boundary is not None:
        ax.axhline(boundary, color="white", lw=1.2, ls="--")
        ax.axvline(boundary, color="white", lw=1.2, ls="--")


def _category_image(ax, frame: pd.DataFrame) -> None:
    """Categories of a ``maps.classify`` frame over (b, a), a increasing upward, with a legend of shares."""
    grid = _pivot(frame.assign(code=frame["category"].cat.codes), "code")
    extent = (grid.columns.min(), grid.columns.max(), grid.index.min(), grid.index.max())
    ax.imshow(grid.to_numpy(), cmap=ListedColormap(CATEGORY_COLOURS), vmin=0, vmax=2, extent=extent, origin="lower",
              aspect="auto", interpolation="nearest")
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


def plot_patching(frame: pd.DataFrame, position_names: Sequence[str], answer_position: Optional[int] = None, title: Optional[str] = None) -> Figure:
    """Heatmaps of a patching or activation-difference frame (``equiv_tools.patching``): one panel per kind (and head).

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
