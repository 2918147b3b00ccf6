"""``PatchingExplorer``: activation patching of a clean input into a corrupted one (349 + 705 into 449 + 705), as a layer x position heatmap per activation kind."""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Optional

import ipywidgets as W

from equiv_tools.analysis.patching import SWEEPS, one_digit_apart, patch_pair
from equiv_tools.core.tasks import Task, parse_operand
from equiv_tools.forward.decoding import predict
from equiv_tools.runs.models import Run
from equiv_tools.views.plots import plot_patching
from equiv_tools.views.widgets.base import ModelChooser, error_html, figure_png, model_state, note_html


class PatchingExplorer(W.VBox):
    """Activation patching of one clean input into one corrupted input (``patching.patch_pair``), drawn by ``plots.plot_patching``.

    Choose the model, the two inputs (default: ``clean`` and ``one_digit_apart`` of it in a's hundreds digit),
    the activation patched (a key of ``patching.SWEEPS``) and the answer position measured ("auto": the first
    where the two answers differ). The measure is the normalised logit difference (0: the corrupted run, 1: the
    clean run); where the two answers agree at that position it is undefined, and the widget says so and shows
    the raw logit difference. ``frame`` is ``patch_pair``'s frame and ``figure`` the drawn Figure (None after an
    error). Results are cached per model state (``model_state``), so returning to a choice only shows it again.
    """

    AUTO = "auto"

    def __init__(self, clean: tuple[int, int] = (349, 705), corrupted: Optional[tuple[int, int]] = None, sweep: str = "resid_pre",
                 answer_position: Optional[int] = None, model: Optional[str] = None, catalog: Optional[dict] = None):
        self.frame = None
        self.figure = None
        self._cache: OrderedDict = OrderedDict()
        self._quiet = False
        self.models = ModelChooser(self._model_changed, catalog, model)
        if corrupted is None:
            try:
                corrupted = one_digit_apart(self.models.run().task, *clean, place=2)[1]
            except Exception:  # no model, or one whose task cannot hold clean: update() below says why
                corrupted = clean
        box = dict(continuous_update=False, layout=W.Layout(width="200px"))
        self.clean_a = W.Text(value=str(clean[0]), description="clean a", **box)
        self.clean_b = W.Text(value=str(clean[1]), description="clean b", **box)
        self.corrupted_a = W.Text(value=str(corrupted[0]), description="corrupted a", **box)
        self.corrupted_b = W.Text(value=str(corrupted[1]), description="corrupted b", **box)
        self.sweep = W.Dropdown(options=list(SWEEPS), value=sweep, description="patch", layout=W.Layout(width="260px"))
        self.answer_position = W.Dropdown(description="answer at", layout=W.Layout(width="260px"))
        self.message = W.HTML().add_class("et-patch-message")
        self.readout = W.HTML().add_class("et-patch-readout")
        self.plot = W.Image(format="png", layout=W.Layout(width="900px"))
        super().__init__([self.models, W.HBox([self.clean_a, self.clean_b, self.sweep]), W.HBox([self.corrupted_a, self.corrupted_b, self.answer_position]),
                          self.message, self.readout, self.plot])
        self._model_changed(update=False)
        if answer_position is not None:
            self.answer_position.value = answer_position
        for control in (self.clean_a, self.clean_b, self.corrupted_a, self.corrupted_b, self.sweep, self.answer_position):
            control.observe(lambda _: self.update(), names="value")
        self.update()

    def _model_changed(self, update: bool = True) -> None:
        """Offer the new task's answer positions, keeping the chosen one where the task has it."""
        try:
            task = self.models.run().task
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.message.value = error_html(exc)
            return
        names = task.position_names()[task.prompt_len:]
        self._quiet = True  # options and value change together; update once, below
        try:
            kept = self.answer_position.value
            self.answer_position.options = [("auto: first that differs", self.AUTO)] + [(name, k) for k, name in enumerate(names)]
            self.answer_position.value = kept if kept in range(len(names)) else self.AUTO
        finally:
            self._quiet = False
        if update:
            self.update()

    def _patch(self, run: Run, clean: tuple, corrupted: tuple, sweep: str, answer_position: Optional[int]) -> tuple:
        """(patch_pair's frame, the warnings it gave, the two answers, the figure, its png), cached per model state."""
        state = model_state(run.model)
        key = (state, clean, corrupted, sweep, answer_position)
        if state is not None and key in self._cache:
            return self._cache[key]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = patch_pair(run.model, run.task, clean, corrupted, sweeps=[sweep], answer_position=answer_position)
        answers = predict(run.model, run.task, [clean[0], corrupted[0]], [clean[1], corrupted[1]])
        op = run.task.symbol
        figure = plot_patching(frame, run.task.position_names(), title=f"{clean[0]} {op} {clean[1]} patched into {corrupted[0]} {op} {corrupted[1]}")
        value = (frame, [str(w.message) for w in caught], answers.tolist(), figure, figure_png(figure))
        if state is not None:
            self._cache[key] = value
            while len(self._cache) > 16:
                self._cache.popitem(last=False)
        return value

    def update(self) -> None:
        """Patch and draw for the current choices; errors go to ``message`` and hide the heatmap."""
        if self._quiet:
            return
        try:
            run = self.models.run()
            clean = (parse_operand(self.clean_a.value, "clean a"), parse_operand(self.clean_b.value, "clean b"))
            corrupted = (parse_operand(self.corrupted_a.value, "corrupted a"), parse_operand(self.corrupted_b.value, "corrupted b"))
            answer_position = None if self.answer_position.value == self.AUTO else self.answer_position.value
            frame, notes, answers, figure, png = self._patch(run, clean, corrupted, self.sweep.value, answer_position)
            readout = self._render(run.task, clean, corrupted, answers, frame)
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.frame = self.figure = None
            self.message.value = error_html(exc)
            self.readout.value = ""
            self.plot.layout.display = "none"
            return
        self.frame, self.figure = frame, figure
        self.message.value = "<br>".join(note_html(note) for note in notes)
        self.readout.value = readout
        self.plot.value = png
        self.plot.layout.display = None

    @staticmethod
    def _render(task: Task, clean: tuple, corrupted: tuple, answers: list, frame) -> str:
        op, names = task.symbol, task.position_names()
        top = frame.loc[frame.value.abs().idxmax()]
        layer, position, head = int(top["layer"]), int(top["position"]), int(top["head"])
        where = f"layer {layer}" + (f", {names[position]}" if position >= 0 else "") + (f", head {head}" if head >= 0 else "")
        return (f"clean <b>{clean[0]} {op} {clean[1]}</b> (model: {answers[0]}) patched into corrupted "
                f"<b>{corrupted[0]} {op} {corrupted[1]}</b> (model: {answers[1]}); "
                f"<code>{top['measure']}</code> at <b class='et-patch-position'>{names[task.prompt_len + int(top['answer_position'])]}</b>; "
                f"largest: <b>{top['value']:.2f}</b> at {where}")
