"""What the explorers share: the model chooser, the cache key of a model's state, figures as PNG, messages."""
from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Callable, Optional

import ipywidgets as W

from equiv_tools.analysis.discovery import best_relation
from equiv_tools.analysis.reproduce import model_catalog
from equiv_tools.core.errors import InputError
from equiv_tools.forward.state import model_state
from equiv_tools.runs.models import Run, load_run

MAX_GRID_POINTS = 40_000
SLIDER_MAX = 9999  # sliders cover 3- and 4-digit inputs; wider operands are typed


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def error_html(exc: Exception) -> str:
    text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return f"<span style='color:#b00020'>&#9888; {html.escape(text)}</span>"


def note_html(text: str) -> str:
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
            self.message.value = error_html(InputError(f"there is no model {value!r}; the choices are: {names}"))
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
            self.message.value = error_html(exc)
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
