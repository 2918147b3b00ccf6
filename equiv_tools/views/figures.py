"""The main figures of a run, computed and drawn: what ``equiv-tools plot`` saves."""
from __future__ import annotations

from typing import Optional

import numpy as np

from equiv_tools.analysis.discovery import best_relation
from equiv_tools.analysis.maps import category_shares, classify, digit_distributions, grid_answers
from equiv_tools.views.plots import plot_category_map, plot_digit_distribution, plot_training_curves


def run_figures(run, ood_digits: Optional[int] = None, seed: int = 0) -> dict:
    """A run's main figures, name -> (Figure or None, note): the note says what a figure shows, or why it is skipped.

    - ``training_curves``: ``metrics.csv`` (skipped for an imported run, which has none).
    - ``category_map``: model vs truth vs the best relation over a grid straddling the ID/OOD boundary
      (a, b from id_limit - 50 to id_limit + 49, the boundary marked), or over all p x p pairs of the grokking layout.
    - ``digit_distribution``: per-position answer digits of the model, the truth and the relation over a
      100 x 100 grid of random OOD operands (skipped for the grokking layout: it has no OOD inputs, and its
      answer is one token, not digits).
    """
    task, name, figures = run.task, run.path.name, {}
    if task.has_ood:
        ood = task.sample_ood(100, ood_digits, seed=seed)  # checks ood_digits before any decoding
        values = np.arange(max(0, task.id_limit - 50), min(task.max_operand, task.id_limit + 49) + 1)
    else:
        if ood_digits is not None:
            task.sample_ood(1, ood_digits)  # says there is no OOD split
        ood, values = None, np.arange(task.id_limit)

    if run.dir.has_metrics():
        figures["training_curves"] = (plot_training_curves(run.dir.read_metrics(), title=f"{name}: accuracy and loss through training"), "")
    else:
        figures["training_curves"] = (None, f"{run.path} has no {run.dir.metrics_file.name} (an imported run has no training history)")

    relation = best_relation(run.model, task, seed=seed)
    frame = classify(grid_answers(run.model, task, values, values), relation)
    shares = category_shares(frame)
    note = f"correct {shares['correct']:.1%}, matches {relation.name} {shares['matches relation']:.1%}, other {shares['other']:.1%}"
    figures["category_map"] = (plot_category_map(frame, boundary=task.id_limit if task.has_ood else None), note)

    if ood is None:
        figures["digit_distribution"] = (None, "the grokking layout has no OOD inputs, and answers with one token, not digits")
    else:
        digits = task.train_digits + 1 if ood_digits is None else ood_digits
        dist = digit_distributions(task, classify(grid_answers(run.model, task, *ood), relation))
        figures["digit_distribution"] = (plot_digit_distribution(dist, title=f"{name}: answer digits on {digits}-digit operands"), "")
    return figures
