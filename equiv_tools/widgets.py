"""ipywidgets explorers, composed from the Python API.

* ``EquivalenceExplorer``: type or slide a and b, see the model's answer, the
  truth, the best relation's answer, per-digit correctness, and the ID input
  the model treats the pair as (1349 + 2705 -> 1054, "answers as 349 + 705").
* ``MapViewer``: a heatmap over a grid of (a, b): correct / matches the
  relation / other, with the shares.

Both are testable without a browser: set a control's ``.value`` (observers
run at once) and read ``.result`` / ``.frame`` / ``.figure``. Bad input shows a
message in the widget and never raises into the notebook.
"""
from __future__ import annotations

import html
import io
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

import ipywidgets as W

from .discovery import best_relation, explain_input
from .errors import InputError
from .maps import category_shares, classify, grid_answers
from .models import Run, load_run
from .plots import plot_category_map
from .reproduce import model_catalog
from .tasks import parse_operand

MAX_GRID_POINTS = 40_000
SLIDER_MAX = 9999  # sliders cover 3- and 4-digit inputs; wider operands are typed


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _error_html(exc: Exception) -> str:
    text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return f"<span style='color:#b00020'>&#9888; {html.escape(text)}</span>"


class ModelChooser(W.VBox):
    """A dropdown over ``model_catalog()`` plus a box to load any run directory. Loaded runs are cached."""

    def __init__(self, on_change: Callable[[], None], catalog: Optional[dict] = None, value: Optional[str] = None):
        self._catalog = dict(model_catalog() if catalog is None else catalog)
        self._runs: dict[str, tuple[Run, object]] = {}
        self._on_change = on_change
        self.dropdown = W.Dropdown(options=list(self._catalog), description="model", layout=W.Layout(width="320px"))
        self.path = W.Text(placeholder="or a run directory: runs/add3", layout=W.Layout(width="260px"))
        self.load_button = W.Button(description="load", layout=W.Layout(width="70px"))
        self.message = W.HTML()
        super().__init__([W.HBox([self.dropdown, self.path, self.load_button]), self.message])
        if value is not None:
            self.dropdown.value = value
        self.dropdown.observe(lambda _: self._on_change(), names="value")
        self.load_button.on_click(lambda _: self.load_path(self.path.value))

    def load_path(self, path: str) -> None:
        """Add a run directory to the choices and select it; a bad path shows a message."""
        try:
            run = load_run(Path(path.strip()))
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.message.value = _error_html(exc)
            return
        label = f"dir/{path.strip()}"
        self._catalog[label] = lambda run=run: run
        self._runs.pop(label, None)
        self.message.value = ""
        self.dropdown.options = list(self._catalog)
        self.dropdown.value = label

    @property
    def label(self) -> Optional[str]:
        return self.dropdown.value

    def current(self) -> tuple[Run, object]:
        """(the selected run, its best relation on OOD inputs), loaded once."""
        label = self.dropdown.value
        if label is None:
            raise InputError("no model to show: data/ holds no runs; load a run directory")
        if label not in self._runs:
            run = self._catalog[label]()
            self._runs[label] = (run, best_relation(run.model, run.task))
        return self._runs[label]


class EquivalenceExplorer(W.VBox):
    """Explore one input at a time: the model's answer and the ID input it treats the pair as."""

    def __init__(self, a: int = 1349, b: int = 2705, model: Optional[str] = None, catalog: Optional[dict] = None):
        self.result: Optional[dict] = None
        self.models = ModelChooser(self.update, catalog, model)
        self.a_text = W.Text(value=str(a), description="a", continuous_update=False, layout=W.Layout(width="200px"))
        self.b_text = W.Text(value=str(b), description="b", continuous_update=False, layout=W.Layout(width="200px"))
        self.a_slider = W.IntSlider(min=0, max=SLIDER_MAX, value=min(a, SLIDER_MAX), description="slide a", continuous_update=False)
        self.b_slider = W.IntSlider(min=0, max=SLIDER_MAX, value=min(b, SLIDER_MAX), description="slide b", continuous_update=False)
        self.answer = W.HTML()
        self.message = W.HTML()
        super().__init__([self.models, W.HBox([self.a_text, self.a_slider]), W.HBox([self.b_text, self.b_slider]), self.message, self.answer])
        self.a_slider.observe(lambda c: setattr(self.a_text, "value", str(c["new"])), names="value")
        self.b_slider.observe(lambda c: setattr(self.b_text, "value", str(c["new"])), names="value")
        self.a_text.observe(lambda _: self.update(), names="value")
        self.b_text.observe(lambda _: self.update(), names="value")
        self.update()

    def update(self) -> None:
        """Recompute for the current a, b and model; errors go to ``message``."""
        try:
            run, relation = self.models.current()
            self.a_slider.max = self.b_slider.max = min(run.task.max_operand, SLIDER_MAX)
            a, b = parse_operand(self.a_text.value, "a"), parse_operand(self.b_text.value, "b")
            self.result = explain_input(run.model, run.task, a, b, relation)
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.result = None
            self.message.value = _error_html(exc)
            return
        self.message.value = ""
        self.answer.value = self._render(run, self.result)

    @staticmethod
    def _render(run: Run, r: dict) -> str:
        op = run.task.symbol
        written = str(r["answer"]).zfill(len(r["per_digit"]))  # most significant digit first
        digits = "".join(
            f"<span style='padding:2px 5px;margin:1px;border-radius:3px;background:{'#cdebd6' if ok else '#f6d0c8'}'>{d}</span>"
            for d, ok in zip(written, reversed(r["per_digit"]))
        )
        where = "in distribution" if r["in_distribution"] else "out of distribution"
        rows = [
            f"<b>{r['a']} {op} {r['b']}</b> ({where})",
            f"model answers <b class='et-answer'>{r['answer']}</b> &nbsp; {digits} &nbsp; "
            f"({'correct' if r['correct'] else 'wrong'}; digits green where they match the truth)",
            f"truth: {r['truth']}",
            f"best relation <code>{html.escape(r['relation'])}</code> gives {r['relation_answer']}"
            f" ({'matches' if r['matches_relation'] else 'does not match'} the model)",
        ]
        if r["rep_a"] is not None:
            same = "the same answer" if r["rep_answer"] == r["answer"] else f"a different answer ({r['rep_answer']})"
            rows.append(f"<span class='et-representative'>answers as {r['rep_a']} {op} {r['rep_b']}</span>: on that ID input it gives {same}")
        return "<div style='line-height:1.8'>" + "<br>".join(rows) + "</div>"


class MapViewer(W.VBox):
    """A category heatmap over a grid of (a, b): the model is correct, matches the relation, or neither."""

    def __init__(self, a_range=(1000, 1099), b_range=(2000, 2099), step: int = 1, model: Optional[str] = None, catalog: Optional[dict] = None):
        self.frame = None
        self.shares: Optional[dict] = None
        self.figure = None
        self._cache: OrderedDict = OrderedDict()
        self._quiet = False
        self.models = ModelChooser(self._model_changed, catalog, model)
        slider = dict(min=0, max=9999, continuous_update=False, layout=W.Layout(width="480px"))
        self.a_range = W.IntRangeSlider(value=a_range, description="a range", **slider)
        self.b_range = W.IntRangeSlider(value=b_range, description="b range", **slider)
        self.step = W.BoundedIntText(value=step, min=1, max=10_000, description="step", layout=W.Layout(width="160px"))
        self.relation = W.Dropdown(description="relation", layout=W.Layout(width="420px"))
        self.progress = W.FloatProgress(min=0, max=1, description="computing", layout=W.Layout(visibility="hidden"))
        self.readout = W.HTML()
        self.message = W.HTML()
        self.plot = W.Image(format="png", layout=W.Layout(width="560px"))
        super().__init__([self.models, self.a_range, self.b_range, W.HBox([self.step, self.relation]), self.progress, self.message, self.readout, self.plot])
        self._model_changed(update=False)
        for control in (self.a_range, self.b_range, self.step, self.relation):
            control.observe(lambda _: self.update(), names="value")
        self.update()

    def _model_changed(self, update: bool = True) -> None:
        try:
            run, relation = self.models.current()
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.message.value = _error_html(exc)
            return
        for control in (self.a_range, self.b_range):
            control.max = run.task.max_operand
        self._quiet = True  # the relation's options and value change together; update once, below
        try:
            self.relation.options = [r.name for r in run.task.relations()]
            self.relation.value = relation.name
        finally:
            self._quiet = False
        if update:
            self.update()

    def _answers(self, run: Run, key: tuple):
        if key not in self._cache:
            (a0, a1), (b0, b1), step = key[1:]
            self.progress.layout.visibility = "visible"
            try:
                self._cache[key] = grid_answers(run.model, run.task, range(a0, a1 + 1, step), range(b0, b1 + 1, step),
                                                on_progress=lambda f: setattr(self.progress, "value", f))
            finally:
                self.progress.layout.visibility = "hidden"
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return self._cache[key]

    def update(self) -> None:
        """Recompute the map for the current controls; errors go to ``message``."""
        if self._quiet:
            return
        try:
            run, _ = self.models.current()
            (a0, a1), (b0, b1), step = self.a_range.value, self.b_range.value, self.step.value
            points = len(range(a0, a1 + 1, step)) * len(range(b0, b1 + 1, step))
            if points > MAX_GRID_POINTS:
                raise InputError(f"the grid has {points:,} points; the viewer draws at most {MAX_GRID_POINTS:,}: narrow the ranges or raise the step")
            frame = self._answers(run, (self.models.label, (a0, a1), (b0, b1), step))
            self.frame = classify(frame, run.task.relation(self.relation.value))
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.message.value = _error_html(exc)
            return
        self.message.value = ""
        self.shares = category_shares(self.frame)
        self.readout.value = " &nbsp; ".join(f"{k}: <b>{v:.1%}</b>" for k, v in self.shares.items()) + f" &nbsp; ({len(self.frame):,} pairs)"
        self.figure = plot_category_map(self.frame)
        self.plot.value = figure_png(self.figure)
