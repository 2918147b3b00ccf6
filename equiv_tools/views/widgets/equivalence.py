"""``EquivalenceExplorer``: type or slide a and b, see the model's answer, the truth, the best relation's answer and the ID input the model treats the pair as."""
from __future__ import annotations

import contextlib
import html
from typing import Optional

import ipywidgets as W

from equiv_tools.analysis.discovery import explain_input
from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import Task, parse_operand
from equiv_tools.forward.decoding import answer_probabilities
from equiv_tools.views.widgets.base import SLIDER_MAX, ModelChooser, error_html


class EquivalenceExplorer(W.VBox):
    """Explore one input at a time: the model's answer, its probability per token, and the ID input it treats the pair as.

    The text boxes hold the operands; the sliders follow them and, when moved, set them. Changing the model
    keeps the operands; one the new task cannot hold shows a message. ``result`` is ``explain_input``'s dict
    plus ``tokens`` and ``probabilities`` (``answer_probabilities``, units first), or None after an error.
    """

    def __init__(self, a: int = 1349, b: int = 2705, model: Optional[str] = None, catalog: Optional[dict] = None):
        self.result: Optional[dict] = None
        self._moving = False  # True while the sliders follow the text boxes
        self.models = ModelChooser(self.update, catalog, model)
        self.a_text = W.Text(value=str(a), description="a", continuous_update=False, layout=W.Layout(width="200px"))
        self.b_text = W.Text(value=str(b), description="b", continuous_update=False, layout=W.Layout(width="200px"))
        self.a_slider = W.IntSlider(min=0, max=SLIDER_MAX, description="slide a", continuous_update=False)
        self.b_slider = W.IntSlider(min=0, max=SLIDER_MAX, description="slide b", continuous_update=False)
        self.answer = W.HTML()
        self.message = W.HTML()
        super().__init__([self.models, W.HBox([self.a_text, self.a_slider]), W.HBox([self.b_text, self.b_slider]), self.message, self.answer])
        for text, slider in ((self.a_text, self.a_slider), (self.b_text, self.b_slider)):
            text.observe(lambda _: self.update(), names="value")
            slider.observe(lambda change, text=text: self._slid(text, change["new"]), names="value")
        self.update()

    def _slid(self, text: W.Text, value: int) -> None:
        """A slider the user moved sets its text box, whose observer updates the answer."""
        if not self._moving:
            text.value = str(value)

    def _follow_text(self, max_operand: int) -> None:
        """Fit the sliders to the task and move them to the typed operands; the text boxes stay as typed."""
        self._moving = True
        try:
            for text, slider in ((self.a_text, self.a_slider), (self.b_text, self.b_slider)):
                slider.max = min(max_operand, SLIDER_MAX)
                with contextlib.suppress(InputError):  # an unreadable operand: update() says why
                    slider.value = min(parse_operand(text.value), slider.max)
        finally:
            self._moving = False

    def update(self) -> None:
        """Recompute for the current a, b and model; errors go to ``message``."""
        try:
            run, relation = self.models.current()
            self._follow_text(run.task.max_operand)
            a, b = parse_operand(self.a_text.value, "a"), parse_operand(self.b_text.value, "b")
            tokens, probs = answer_probabilities(run.model, run.task, a, b)
            self.result = {**explain_input(run.model, run.task, a, b, relation), "tokens": tokens[0].tolist(), "probabilities": probs[0].tolist()}
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.result = None
            self.message.value = error_html(exc)
            self.answer.value = ""
            return
        self.message.value = ""
        self.answer.value = self._render(run.task, self.result)

    @staticmethod
    def _render(task: Task, r: dict) -> str:
        op = task.symbol
        # answer tokens come units first (in the grokking layout one token holds the whole answer): show them reversed
        chips = "".join(
            "<span class='et-chip' style='display:inline-block;vertical-align:middle;text-align:center;margin:1px'>"
            f"<span style='display:block;padding:2px 5px;border-radius:3px;background:{'#cdebd6' if ok else '#f6d0c8'}'>{token}</span>"
            f"<small class='et-prob' style='display:block;color:#555;line-height:1.2'>{p:.2f}</small></span>"
            for token, ok, p in zip(reversed(r["tokens"]), reversed(r["per_digit"]), reversed(r["probabilities"]))
        )
        where = "in distribution" if r["in_distribution"] else "out of distribution"
        rows = [
            f"<b>{r['a']} {op} {r['b']}</b> ({where})",
            f"model answers <b class='et-answer'>{r['answer']}</b> &nbsp; {chips} &nbsp; "
            f"({'correct' if r['correct'] else 'wrong'}; green where the answer matches the truth; "
            "under each, the model's probability of it)",
            f"truth: {r['truth']}",
            f"best relation <code>{html.escape(r['relation'])}</code> gives {r['relation_answer']}"
            f" ({'matches' if r['matches_relation'] else 'does not match'} the model)",
        ]
        if r["rep_a"] is not None:
            same = "the same answer" if r["rep_answer"] == r["answer"] else f"a different answer ({r['rep_answer']})"
            rows.append(f"<span class='et-representative'>answers as {r['rep_a']} {op} {r['rep_b']}</span>: on that ID input it gives {same}")
        return "<div style='line-height:1.8'>" + "<br>".join(rows) + "</div>"
