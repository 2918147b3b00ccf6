"""PCA of hidden states through training: one shared projection for a series of checkpoints, and how well it separates classes.

The paper shows the residual stream turning from a ring into ten clusters
ordered by the units digit as training goes on. Here the hidden states of every
checkpoint at one hook and prompt position are projected onto principal axes
fitted once (on all checkpoints together, or on one of them), so the frames are
comparable, and each frame gets a number: the silhouette score of the classes of
a colouring function of the operands (e.g. ``(a + b) mod 10``) in the projection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import numpy as np
import pandas as pd

from equiv_tools.core.errors import InputError
from equiv_tools.core.rundir import RunDir
from equiv_tools.core.tasks import Task
from equiv_tools.forward.representations import default_hook, hidden_states_at
from equiv_tools.runs.models import load_run

Colouring = Callable[[np.ndarray, np.ndarray], np.ndarray]

COLOURINGS: dict[str, Colouring] = {
    "(a + b) mod 10": lambda a, b: (a + b) % 10,
    "(a * b) mod 10": lambda a, b: (a * b) % 10,
    "a mod 10": lambda a, b: a % 10,
    "b mod 10": lambda a, b: b % 10,
}


def principal_axes(states: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of states [n, d]: (mean [d], axes [n_components, d] (unit rows, largest variance first), explained variance ratio [n_components]).

    Each axis's sign is fixed so that its largest-magnitude coordinate is positive, so refits give the same picture.
    """
    mean = states.mean(axis=0)
    _, singular, vt = np.linalg.svd(states - mean, full_matrices=False)
    axes = vt[:n_components]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    variance = singular**2
    return mean, axes * signs[:, None], variance[:n_components] / variance.sum()


def silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of points [n, k] under integer labels [n] (Euclidean; a point alone in its class scores 0).

    For each point, a = mean distance to the rest of its class, b = the smallest mean distance to another class,
    s = (b - a) / max(a, b). Needs two classes at least. O(n^2) memory: meant for a few thousand points.
    """
    classes, index = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise InputError("a silhouette needs at least two classes")
    distance = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))  # [n, n]
    one_hot = np.eye(len(classes))[index]  # [n, classes]
    sizes = one_hot.sum(axis=0)  # [classes]
    sums = distance @ one_hot  # [n, classes]: summed distance to each class
    own_size = sizes[index]
    a = sums[np.arange(len(points)), index] / np.maximum(own_size - 1, 1)
    mean_to = sums / sizes  # [n, classes]
    mean_to[np.arange(len(points)), index] = np.inf
    b = mean_to.min(axis=1)
    s = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-30), 0.0)
    return float(s.mean())


@dataclass(frozen=True)
class PCASeries:
    """Hidden states of a checkpoint series in one shared PCA projection.

    ``frame``: one row per checkpoint and input: checkpoint, item, a, b, colour (class label), pc1, pc2, ...
    ``separation``: one row per checkpoint: checkpoint, silhouette (of the colour classes in the projection).
    ``explained``: the variance ratio of each shared axis among the states it was fitted on [n_components].
    """

    hook: str
    position: int
    colouring: str
    frame: pd.DataFrame
    separation: pd.DataFrame
    explained: np.ndarray

    def summary(self) -> dict:
        return {"hook": self.hook, "position": self.position, "colouring": self.colouring,
                "silhouette": dict(zip(self.separation.checkpoint, self.separation.silhouette))}


def pca_series(models: Mapping[object, object], task: Task, a, b, colour: Colouring | str = "(a + b) mod 10",
               hook: Optional[str] = None, position: Optional[int] = None, n_components: int = 2,
               fit_on: Optional[object] = None, batch_size: int = 4096) -> PCASeries:
    """Project hidden states of (a, b) for each model of ``models`` (label -> model, in order) onto shared principal axes.

    ``colour``: a function of the operands giving integer classes [n], or a name in ``COLOURINGS``.
    ``hook`` defaults to the last layer's residual stream, ``position`` to the last prompt position;
    the axes are fitted on every checkpoint's states together, or on those of the label ``fit_on``.
    Hidden states come from ``run_with_cache`` (``representations.hidden_states_at``), so hooks apply.
    """
    if not models:
        raise InputError("pca_series needs at least one model")
    colour_name = colour if isinstance(colour, str) else getattr(colour, "name", getattr(colour, "__name__", "colour"))
    if isinstance(colour, str):
        if colour not in COLOURINGS:
            raise InputError(f"unknown colouring {colour!r}; pass a function of (a, b) or one of: {', '.join(COLOURINGS)}")
        colour = COLOURINGS[colour]
    if fit_on is not None and fit_on not in models:
        raise InputError(f"fit_on={fit_on!r} is not one of the checkpoints: {list(models)}")
    a, b = task.check_operands(a, b)
    labels = np.asarray(colour(a, b), dtype=np.int64).reshape(-1)  # [n]
    hook = hook or default_hook(next(iter(models.values())))
    position = task.prompt_len - 1 if position is None else position
    states = {name: hidden_states_at(model, task, a, b, [hook], position, batch_size)[hook].numpy().astype(np.float64)
              for name, model in models.items()}  # label -> [n, d]
    fitted = np.concatenate(list(states.values())) if fit_on is None else states[fit_on]
    mean, axes, explained = principal_axes(fitted, n_components)
    frames, separation = [], []
    for name, h in states.items():
        projected = (h - mean) @ axes.T  # [n, n_components]
        frames.append(pd.DataFrame({"checkpoint": name, "item": np.arange(a.size), "a": a, "b": b, "colour": labels,
                                    **{f"pc{i + 1}": projected[:, i] for i in range(n_components)}}))
        separation.append({"checkpoint": name, "silhouette": silhouette(projected, labels)})
    return PCASeries(hook, position, colour_name, pd.concat(frames, ignore_index=True), pd.DataFrame(separation), explained)


def checkpoint_models(run_dir, steps=None) -> dict[int, object]:
    """A run's checkpoint series as step -> model (eval mode), every saved step by default, ascending."""
    run_dir = RunDir.resolve(run_dir)
    available = run_dir.checkpoint_steps()
    steps = available if steps is None else list(steps)
    missing = sorted(set(steps) - set(available))
    if missing:
        raise InputError(f"{run_dir.path} has no checkpoint for step(s) {missing}; it has {available}")
    return {step: load_run(run_dir, step=step).model for step in steps}
