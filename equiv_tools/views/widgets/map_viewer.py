"""``MapViewer``: a heatmap over a grid of (a, b): correct / matches the relation / other, with the shares; and the model's answer on one typed pair."""
from __future__ import annotations

import html
from collections import OrderedDict
from typing import Optional

import ipywidgets as W

from equiv_tools.analysis.discovery import explain_input
from equiv_tools.analysis.maps import CATEGORIES, category_shares, classify, grid_answers
from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import Task, parse_operand
from equiv_tools.runs.models import Run
from equiv_tools.views.plots import plot_category_map
from equiv_tools.views.widgets.base import MAX_GRID_POINTS, ModelChooser, error_html, figure_png, model_state


def straddling_window(task: Task) -> tuple[int, int]:
    """Operands (first, last) from 50 below to 49 above the ID limit (10**train_digits), within the task; 0-99 without OOD."""
    if not task.has_ood:
        return 0, min(task.max_operand, 99)
    return max(0, task.id_limit - 50), min(task.max_operand, task.id_limit + 49)


class MapViewer(W.VBox):
    """A category heatmap over a grid of (a, b) (the model is correct, matches the relation, or neither), and one pair's answer.

    ``a_range``, ``b_range`` (first, last), inclusive, default to ``straddling_window`` of the model's task, so
    more than one category shows. Changing the model keeps the ranges and the pair. ``pair`` is
    ``explain_input``'s dict plus ``category`` for the pair typed in the pair boxes, or None.
    """

    def __init__(self, a_range=None, b_range=None, step: int = 1, model: Optional[str] = None, catalog: Optional[dict] = None,
                 pair: Optional[tuple[int, int]] = None):
        self.frame = None
        self.shares: Optional[dict] = None
        self.figure = None
        self.pair: Optional[dict] = None
        self._cache: OrderedDict = OrderedDict()
        self._quiet = False
        self.models = ModelChooser(self._model_changed, catalog, model)
        try:
            window = straddling_window(self.models.run().task)
        except Exception:  # no model to ask; update() below shows why
            window = (0, 99)
        (a0, a1), (b0, b1) = a_range or window, b_range or window
        box = dict(continuous_update=False, layout=W.Layout(width="180px"))
        self.a_from = W.IntText(value=a0, description="a from", **box)
        self.a_to = W.IntText(value=a1, description="a to", **box)
        self.b_from = W.IntText(value=b0, description="b from", **box)
        self.b_to = W.IntText(value=b1, description="b to", **box)
        self.step = W.BoundedIntText(value=step, min=1, max=10_000, description="step", **box)
        self.relation = W.Dropdown(description="relation", layout=W.Layout(width="420px"))
        self.progress = W.FloatProgress(min=0, max=1, description="computing", layout=W.Layout(visibility="hidden"))
        self.readout = W.HTML().add_class("et-map-readout")
        self.message = W.HTML()
        self.plot = W.Image(format="png", layout=W.Layout(width="560px"))
        pair_a, pair_b = ("", "") if pair is None else map(str, pair)
        self.pair_a = W.Text(value=pair_a, description="pair a", placeholder="e.g. 1349", continuous_update=False, layout=W.Layout(width="200px"))
        self.pair_b = W.Text(value=pair_b, description="pair b", placeholder="e.g. 2705", continuous_update=False, layout=W.Layout(width="200px"))
        self.pair_readout = W.HTML().add_class("et-pair-readout")
        super().__init__([self.models, W.HBox([self.a_from, self.a_to, self.step]), W.HBox([self.b_from, self.b_to, self.relation]),
                          self.progress, self.message, self.readout, self.plot, W.HBox([self.pair_a, self.pair_b]), self.pair_readout])
        self._model_changed(update=False)
        for control in (self.a_from, self.a_to, self.b_from, self.b_to, self.step):
            control.observe(lambda _: self.update_map(), names="value")
        for control in (self.pair_a, self.pair_b):
            control.observe(lambda _: self.update_pair(), names="value")
        self.relation.observe(lambda _: self.update(), names="value")
        self.update()

    def _model_changed(self, update: bool = True) -> None:
        try:
            run, relation = self.models.current()
            self._quiet = True  # the relation's options and value change together; update once, below
            try:
                self.relation.options = [r.name for r in run.task.relations()]
                self.relation.value = relation.name
            finally:
                self._quiet = False
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.message.value = error_html(exc)
            return
        if update:
            self.update()

    def _answers(self, run: Run, a_range: tuple, b_range: tuple, step: int):
        """The grid's answers, cached per model state (``model_state``: never while hooks are attached)."""
        state = model_state(run.model)
        key = (state, a_range, b_range, step)
        if state is None or key not in self._cache:
            (a0, a1), (b0, b1) = a_range, b_range
            self.progress.layout.visibility = "visible"
            try:
                frame = grid_answers(run.model, run.task, range(a0, a1 + 1, step), range(b0, b1 + 1, step),
                                     on_progress=lambda f: setattr(self.progress, "value", f))
            finally:
                self.progress.layout.visibility = "hidden"
            if state is None:
                return frame
            self._cache[key] = frame
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return self._cache[key]

    def update(self) -> None:
        """Recompute the map and the pair's readout."""
        self.update_map()
        self.update_pair()

    def update_map(self) -> None:
        """Recompute the map for the current ranges, step and relation; errors go to ``message``, the last good map stays."""
        if self._quiet:
            return
        try:
            run = self.models.run()
            (a0, a1), (b0, b1), step = (self.a_from.value, self.a_to.value), (self.b_from.value, self.b_to.value), self.step.value
            for name, first, last in (("a", a0, a1), ("b", b0, b1)):
                if first > last:
                    raise InputError(f"{name} from ({first}) is above {name} to ({last})")
            points = len(range(a0, a1 + 1, step)) * len(range(b0, b1 + 1, step))
            if points > MAX_GRID_POINTS:
                raise InputError(f"the grid has {points:,} points; the viewer draws at most {MAX_GRID_POINTS:,}: narrow the ranges or raise the step")
            frame = self._answers(run, (a0, a1), (b0, b1), step)
            self.frame = classify(frame, run.task.relation(self.relation.value))
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.message.value = error_html(exc)
            return
        self.message.value = ""
        self.shares = category_shares(self.frame)
        self.readout.value = " &nbsp; ".join(f"{k}: <b>{v:.1%}</b>" for k, v in self.shares.items()) + f" &nbsp; ({len(self.frame):,} pairs)"
        self.figure = plot_category_map(self.frame, boundary=run.task.id_limit if run.task.has_ood else None)
        self.plot.value = figure_png(self.figure)

    def update_pair(self) -> None:
        """The model's answer on the typed pair and its category under the relation; errors go to the pair's readout."""
        if self._quiet:
            return
        self.pair = None
        if not (self.pair_a.value.strip() and self.pair_b.value.strip()):
            self.pair_readout.value = "type a pair to see the model's answer on it"
            return
        try:
            run = self.models.run()
            a, b = parse_operand(self.pair_a.value, "pair a"), parse_operand(self.pair_b.value, "pair b")
            r = explain_input(run.model, run.task, a, b, run.task.relation(self.relation.value))
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.pair_readout.value = error_html(exc)
            return
        category = CATEGORIES[0] if r["correct"] else CATEGORIES[1] if r["matches_relation"] else CATEGORIES[2]
        self.pair = {**r, "category": category}
        self.pair_readout.value = (
            f"<b>{a} {run.task.symbol} {b}</b>: the model answers <b>{r['answer']}</b>, the truth is {r['truth']}, "
            f"<code>{html.escape(r['relation'])}</code> gives {r['relation_answer']}: <b>{category}</b>"
        )
