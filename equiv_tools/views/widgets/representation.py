"""``RepresentationExplorer``: PCA of hidden states through a run's checkpoint series in one shared projection, with the silhouette of the chosen colouring."""
from __future__ import annotations

import html

import ipywidgets as W

from equiv_tools.analysis.projection import COLOURINGS, checkpoint_models, pca_series
from equiv_tools.core.errors import InputError
from equiv_tools.forward.representations import default_hook, residual_hooks
from equiv_tools.runs.models import load_run
from equiv_tools.views.plots import plot_pca_series
from equiv_tools.views.widgets.base import error_html, figure_png


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
            self.message.value = error_html(exc)
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
            self.message.value = error_html(exc)
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
            self.message.value = error_html(exc)
            return
        self.message.value = ""
        self.readout.value = (f"step <b>{step}</b>: silhouette <b>{score:.2f}</b> for classes of <code>{html.escape(self.colour.value)}</code> "
                              f"at {html.escape(self.hook.value)}, position {html.escape(self.position.label)}")
