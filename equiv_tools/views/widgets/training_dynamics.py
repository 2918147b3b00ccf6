"""``TrainingDynamicsExplorer``: a grokking run's checkpoint series: the embedding's Fourier spectrum at each step, and the loss curves and progress measures with the step marked and the phases shaded."""
from __future__ import annotations

import contextlib
import html

import ipywidgets as W

from equiv_tools.analysis.fourier import key_frequencies
from equiv_tools.analysis.progress import progress_series, spectrum_series
from equiv_tools.core.errors import InputError
from equiv_tools.runs.grokking import grokking_phases
from equiv_tools.runs.models import load_run
from equiv_tools.views.plots import plot_fourier_spectrum, plot_progress_measures
from equiv_tools.views.widgets.base import error_html, figure_png


class TrainingDynamicsExplorer(W.VBox):
    """A grokking run through its checkpoint series: a step slider over the embedding's Fourier spectrum at that
    step, and the loss curves and progress measures (restricted and excluded loss, weight norm) with the step
    marked and the phases shaded.

    Everything is computed once on construction (``fourier.progress_series`` and ``spectrum_series``, one call
    each, unless the frames are passed in), so the slider only redraws. ``progress``, ``spectrum``, ``phases``
    hold the frames; ``figures`` the two Figures drawn last. Errors show in ``message`` and never raise into
    the notebook.
    """

    def __init__(self, run_dir="grok113", progress=None, spectrum=None, device: str = "cpu"):
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
            self.metrics = final.dir.read_metrics()
            self.progress = progress_series(final.path, self.key_frequencies, device=device) if progress is None else progress
            self.spectrum = spectrum_series(final.path, device=device) if spectrum is None else spectrum
            with contextlib.suppress(InputError):  # a run that never grokked has no phases to shade
                self.phases = grokking_phases(self.metrics)
            self.step.options = list(self.progress.step)
            self.step.value = self.step.options[-1]
        except Exception as exc:  # shown in the widget, never raised into the notebook
            self.message.value = error_html(exc)
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
            self.message.value = error_html(exc)
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
