"""Figures from the kit's DataFrames. Each function returns a matplotlib Figure and shows nothing."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

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


def _pivot(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame.pivot(index="a", columns="b", values=column)


def plot_category_map(frame: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Heatmap over the (a, b) grid of a ``maps.classify`` frame: correct / matches relation / other."""
    codes = frame.assign(code=frame["category"].cat.codes)
    grid = _pivot(codes, "code")
    fig = Figure(figsize=(5.6, 4.8), layout="constrained")
    ax = fig.subplots()
    extent = (grid.columns.min(), grid.columns.max(), grid.index.max(), grid.index.min())
    ax.imshow(grid.to_numpy(), cmap=ListedColormap(CATEGORY_COLOURS), vmin=0, vmax=2, extent=extent, aspect="auto", interpolation="nearest")
    ax.set_xlabel("b")
    ax.set_ylabel("a")
    shares = category_shares(frame)
    ax.legend(handles=[Patch(color=c, label=f"{k} ({shares[k]:.1%})") for k, c in zip(CATEGORIES, CATEGORY_COLOURS)],
              loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize="small", frameon=False)
    ax.set_title(title or f"model vs truth vs {frame.attrs.get('relation', 'relation')}")
    return fig


def plot_answer_contours(frame: pd.DataFrame, columns: Sequence[str] = ("answer", "truth", "relation_answer"), titles: Optional[Sequence[str]] = None) -> Figure:
    """Filled contours of answers over the (a, b) grid, one panel per column (the paper's Figure 2)."""
    titles = list(titles or columns)
    fig = Figure(figsize=(4.2 * len(columns), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(columns), sharey=True))
    levels = np.linspace(min(frame[c].min() for c in columns), max(frame[c].max() for c in columns), 21)
    for ax, column, title in zip(axes, columns, titles):
        grid = _pivot(frame, column)
        contour = ax.contourf(grid.columns, grid.index, grid.to_numpy(), levels=levels, cmap="viridis")
        ax.set_title(title)
        ax.set_xlabel("b")
    axes[0].set_ylabel("a")
    fig.colorbar(contour, ax=list(axes), shrink=0.9, label="answer")
    return fig


def plot_digit_distribution(dist: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Share of each output digit at each answer position (the paper's Figure 3): a ``maps.digit_distribution`` frame."""
    grid = dist.pivot(index="digit", columns="position", values="share").reindex(range(10)).fillna(0.0)
    fig = Figure(figsize=(1.0 * grid.shape[1] + 2.5, 3.8), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(grid, ax=ax, cmap="mako", vmin=0, vmax=max(0.2, float(grid.to_numpy().max())), annot=False, cbar_kws={"label": "share"})
    ax.set_xlabel("answer position (0 = units)")
    ax.set_ylabel("output digit")
    ax.invert_yaxis()
    if title:
        ax.set_title(title)
    return fig
