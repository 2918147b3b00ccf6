"""ipywidgets explorers, composed from the Python API.

* ``EquivalenceExplorer``: type or slide a and b, see the model's answer as one
  chip per answer token (most significant first) with the model's probability
  of each, the truth, the best relation's answer, and the ID input the model
  treats the pair as (1349 + 2705 -> 1054, "answers as 349 + 705").
* ``MapViewer``: a heatmap over a grid of (a, b): correct / matches the
  relation / other, with the shares; and the model's answer on one typed pair.
* ``RepresentationExplorer``: PCA of hidden states through a run's checkpoint
  series in one shared projection, with the silhouette of the chosen colouring.
* ``TrainingDynamicsExplorer``: a grokking run's checkpoint series: the embedding's
  Fourier spectrum at each step, and the loss curves and progress measures with the
  step marked and the three phases shaded.
* ``PatchingExplorer``: activation patching of a clean input into a corrupted
  one (349 + 705 into 449 + 705), as a layer x position heatmap per activation kind.

All are testable without a browser: set a control's ``.value`` (observers
run at once) and read ``.result`` / ``.pair`` / ``.frame`` / ``.figure``. Bad
input, an unknown model or any other error shows a message in the widget and
never raises into the notebook.
"""
from __future__ import annotations

import contextlib
import html
import io
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

import ipywidgets as W

from .decoding import answer_probabilities, predict
from .discovery import best_relation, explain_input
from .errors import InputError
from .forward import attached_hooks
from .maps import CATEGORIES, category_shares, classify, grid_answers
from .models import Run, load_run
from .fourier import key_frequencies, progress_series, spectrum_series
from .grokking import grokking_phases
from .patching import SWEEPS, one_digit_apart, patch_pair
from .plots import plot_category_map, plot_fourier_spectrum, plot_patching, plot_pca_series, plot_progress_measures
from .projection import COLOURINGS, checkpoint_models, pca_series
from .representations import default_hook, residual_hooks
from .reproduce import model_catalog
from .tasks import Task, parse_operand
from .training import read_metrics

MAX_GRID_POINTS = 40_000
SLIDER_MAX = 9999  # sliders cover 3- and 4-digit inputs; wider operands are typed


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def model_state(model) -> Optional[tuple]:
    """A key that changes when the model's weights change in place or it is replaced; None while hooks are
    attached (their effect cannot be keyed, so nothing computed under them is cached)."""
    if attached_hooks(model):
        return None
    return id(model), sum(p._version for p in model.parameters())


def _error_html(exc: Exception) -> str:
    text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return f"<span style='color:#b00020'>&#9888; {html.escape(text)}</span>"


def _note_html(text: str) -> str:
    return f"<span style='color:#8a5a00'>&#9888; {html.escape(text)}</span>"


class ModelChooser(W.VBox):
    """A dropdown over ``model_catalog()`` plus a box to load any run directory. Loaded runs are cached.

    An unknown ``value`` shows a message and leaves the first model selected.
    """

    def __init__(self, on_change: Callable[[], None], catalog: Optional[dict] = None, value: Optional[str] = None):
        self._catalog = dict(model_catalog() if catalog is None else catalog)
        self._runs: dict[str, tuple] = {}  # label -> (run, best relation, model_state when it was found)
        self._on_change = on_change
        self._quiet = False  # True while load_path sets the options and the value: one change, not two
        self.dropdown = W.Dropdown(options=list(self._catalog), description="model", layout=W.Layout(width="320px"))
        self.path = W.Text(placeholder="or a run directory: runs/add3", layout=W.Layout(width="260px"))
        self.load_button = W.Button(description="load", layout=W.Layout(width="70px"))
        self.message = W.HTML()
        super().__init__([W.HBox([self.dropdown, self.path, self.load_button]), self.message])
        if value in self._catalog:
            self.dropdown.value = value
        elif value is not None:
            names = ", ".join(self._catalog) or "none"
            self.message.value = _error_html(InputError(f"there is no model {value!r}; the choices are: {names}"))
        self.dropdown.observe(lambda _: self._changed(), names="value")
        self.load_button.on_click(lambda _: self.load_path(self.path.value))

    def _changed(self) -> None:
        if not self._quiet:
            self.message.value = ""
            self._on_change()

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
        self._quiet = True  # new options reset the dropdown to the first one before it gets the label
        try:
            self.dropdown.options = list(self._catalog)
            self.dropdown.value = label
        finally:
            self._quiet = False
        self._changed()

    @property
    def label(self) -> Optional[str]:
        return self.dropdown.value

    def run(self) -> Run:
        """The selected run, loaded once (``current`` adds its best relation)."""
        label = self.dropdown.value
        if label is None:
            raise InputError("no model to show: data/ holds no runs; load a run directory")
        if label not in self._runs:
            self._runs[label] = (self._catalog[label](), None, None)
        return self._runs[label][0]

    def current(self) -> tuple[Run, object]:
        """(the selected run, its best relation on OOD inputs). The run loads once; the relation is
        recomputed whenever the model's weights or hooks have changed since (see ``model_state``)."""
        run = self.run()
        label = self.dropdown.value
        _, relation, state = self._runs[label]
        now = model_state(run.model)
        if relation is None or now is None or now != state:
            relation = best_relation(run.model, run.task)
        self._runs[label] = (run, relation, now)
        return run, relation


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
            self.message.value = _error_html(exc)
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
            self.message.value = _error_html(exc)
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
            self.message.value = _error_html(exc)
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
            self.pair_readout.value = _error_html(exc)
            return
        category = CATEGORIES[0] if r["correct"] else CATEGORIES[1] if r["matches_relation"] else CATEGORIES[2]
        self.pair = {**r, "category": category}
        self.pair_readout.value = (
            f"<b>{a} {run.task.symbol} {b}</b>: the model answers <b>{r['answer']}</b>, the truth is {r['truth']}, "
            f"<code>{html.escape(r['relation'])}</code> gives {r['relation_answer']}: <b>{category}</b>"
        )


class RepresentationExplorer(W.VBox):
    """PCA of hidden states through a run's checkpoint series (``projection.pca_series``): hook, position and
    colouring choose the series, fitted once over all checkpoints; the checkpoint slider picks the frame drawn,
    titled with its silhouette.

    Inputs are ``n`` random ID pairs. ``series`` is the current ``PCASeries`` and ``figure`` the drawn Figure
    (None after an error); series are cached per (hook, position, colouring), so the slider only redraws.
    Errors show in ``message`` and never raise into the notebook.
    """

    def __init__(self, run_dir="add3_nano", steps=None, n: int = 400, seed: int = 0):
        self.series = None
        self.figure = None
        self._cache: dict = {}
        self.hook = W.Dropdown(description="hook", layout=W.Layout(width="320px"))
        self.position = W.Dropdown(description="position", layout=W.Layout(width="220px"))
        self.colour = W.Dropdown(options=list(COLOURINGS), description="colour by", layout=W.Layout(width="260px"))
        self.checkpoint = W.SelectionSlider(options=[0], description="step", continuous_update=False, layout=W.Layout(width="520px"))
        self.message = W.HTML()
        self.readout = W.HTML().add_class("et-pca-readout")
        self.plot = W.Image(format="png", layout=W.Layout(width="520px"))
        super().__init__([W.HBox([self.hook, self.position, self.colour]), self.checkpoint, self.message, self.readout, self.plot])
        try:
            self.task = load_run(run_dir).task
            self.models = checkpoint_models(run_dir, steps)
            if not self.models:
                raise InputError(f"{run_dir} has no checkpoint series to step through")
            model = next(iter(self.models.values()))
            layers = range(model.cfg.n_layers)
            self.hook.options = residual_hooks(model) + [f"blocks.{i}.hook_{part}_out" for i in layers for part in ("attn", "mlp")]
            self.hook.value = default_hook(model)
            self.position.options = [(name, i) for i, name in enumerate(self.task.position_names()[: self.task.prompt_len])]
            self.position.value = self.task.prompt_len - 1
            self.checkpoint.options = list(self.models)
            self.checkpoint.value = list(self.models)[-1]
            self.a, self.b = self.task.sample_id(n, seed=seed)
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.message.value = _error_html(exc)
            return
        for control in (self.hook, self.position, self.colour):
            control.observe(lambda _: self.update(), names="value")
        self.checkpoint.observe(lambda _: self.draw(), names="value")
        self.update()

    def update(self) -> None:
        """Compute (or fetch) the series for the current hook, position and colouring, then draw."""
        key = (self.hook.value, self.position.value, self.colour.value)
        try:
            if key not in self._cache:
                self._cache[key] = pca_series(self.models, self.task, self.a, self.b, self.colour.value, hook=key[0], position=key[1])
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.series = self.figure = None
            self.message.value = _error_html(exc)
            return
        self.series = self._cache[key]
        self.draw()

    def draw(self) -> None:
        """Draw the current checkpoint's frame of the current series, with its silhouette."""
        if self.series is None:
            return
        try:
            step = self.checkpoint.value
            self.figure = plot_pca_series(self.series.frame, self.series.separation, checkpoints=[step])
            score = self.series.separation.set_index("checkpoint").silhouette[step]
            self.plot.value = figure_png(self.figure)
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.message.value = _error_html(exc)
            return
        self.message.value = ""
        self.readout.value = (f"step <b>{step}</b>: silhouette <b>{score:.2f}</b> for classes of <code>{html.escape(self.colour.value)}</code> "
                              f"at {html.escape(self.hook.value)}, position {html.escape(self.position.label)}")


class TrainingDynamicsExplorer(W.VBox):
    """A grokking run through its checkpoint series: a step slider over the embedding's Fourier spectrum at that
    step, and the loss curves and progress measures (restricted and excluded loss, weight norm) with the step
    marked and the phases shaded.

    Everything is computed once on construction (``fourier.progress_series`` and ``spectrum_series``, one call
    each, unless the frames are passed in), so the slider only redraws. ``progress``, ``spectrum``, ``phases``
    hold the frames; ``figures`` the two Figures drawn last. Errors show in ``message`` and never raise into
    the notebook.
    """

    def __init__(self, run_dir="grok113_fast", progress=None, spectrum=None, device: str = "cpu"):
        self.figures = None
        self.phases = None
        self.step = W.SelectionSlider(options=[0], description="step", continuous_update=False, layout=W.Layout(width="620px"))
        self.message = W.HTML()
        self.readout = W.HTML().add_class("et-dynamics-readout")
        self.spectrum_plot = W.Image(format="png", layout=W.Layout(width="560px"))
        self.progress_plot = W.Image(format="png", layout=W.Layout(width="900px"))
        super().__init__([self.step, self.message, self.readout, self.spectrum_plot, self.progress_plot])
        try:
            final = load_run(run_dir, device=device)
            self.key_frequencies = key_frequencies(final.model, final.task)
            self.metrics = read_metrics(final.path)
            self.progress = progress_series(final.path, self.key_frequencies, device=device) if progress is None else progress
            self.spectrum = spectrum_series(final.path, device=device) if spectrum is None else spectrum
            with contextlib.suppress(InputError):  # a run that never grokked has no phases to shade
                self.phases = grokking_phases(self.metrics)
            self.step.options = list(self.progress.step)
            self.step.value = self.step.options[-1]
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.message.value = _error_html(exc)
            return
        self.step.observe(lambda _: self.draw(), names="value")
        self.draw()

    def draw(self) -> None:
        """Draw the spectrum at the current step and the curves with the step marked; fill in the readout."""
        step = self.step.value
        try:
            spectrum = plot_fourier_spectrum(self.spectrum[self.spectrum.step == step], highlight=self.key_frequencies,
                                             title=f"the embedding in the Fourier basis at step {step}")
            curves = plot_progress_measures(self.metrics, self.progress, self.phases, step=step)
            self.spectrum_plot.value, self.progress_plot.value = figure_png(spectrum), figure_png(curves)
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.figures = None
            self.message.value = _error_html(exc)
            return
        self.figures = (spectrum, curves)
        self.message.value = ""
        row = self.progress.set_index("step").loc[step]
        losses = self.metrics[self.metrics.step == step].set_index("split").loss
        phase = "" if self.phases is None else next(
            (f" ({r.phase})" for r in self.phases.itertuples() if r.start <= step <= r.end), "")
        self.readout.value = (f"step <b>{step}</b>{html.escape(phase)}: train loss {losses.get('train', float('nan')):.3g}, "
                              f"test loss {losses.get('id_test', float('nan')):.3g}, restricted loss {row.restricted_loss:.3g}, "
                              f"excluded loss {row.excluded_loss:.3g}, weight norm {row.total_weight_norm:.1f}")


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
            self.message.value = _error_html(exc)
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
            self.message.value = _error_html(exc)
            self.readout.value = ""
            self.plot.layout.display = "none"
            return
        self.frame, self.figure = frame, figure
        self.message.value = "<br>".join(_note_html(note) for note in notes)
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
