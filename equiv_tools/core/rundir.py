"""A run directory: the one place that knows which file holds what, and reads and writes each atomically.

Layout::

    config.json                          task, model and training config, schema version, provenance
    model.safetensors                    the latest weights
    metrics.csv                          step, split, loss, accuracy (tidy)
    state.json                           the step of the latest complete checkpoint, and the RNG scheme
    checkpoints/step_NNNNNN.safetensors  the weight series
    checkpoints/step_NNNNNN.optimizer.safetensors   AdamW state of the latest checkpoint
    sweep_result.json                    a sweep's job and its result row (runs a sweep trained or evaluated)
    extra_pairs.csv                      a,b: pairs mixed into the ID training data (runs trained with extra pairs)
    remedy.json                          the remedy that made the run: its name, source run, options and cost

Torch-free: ``RunDir`` names the weight files, and ``runs.storage`` reads and writes the tensors in them.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from equiv_tools.core.config import RunConfig
from equiv_tools.core.errors import InputError
from equiv_tools.core.files import TMP_SUFFIX, atomic_write_bytes, read_json, write_json
from equiv_tools.core.paths import shipped_data_dir

METRIC_COLUMNS = ["step", "split", "loss", "accuracy"]
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.csv"
STATE_FILE = "state.json"
CHECKPOINT_DIR = "checkpoints"
SWEEP_RESULT_FILE = "sweep_result.json"
EXTRA_PAIRS_FILE = "extra_pairs.csv"
REMEDY_FILE = "remedy.json"


def shipped_runs(data_dir=None) -> list[str]:
    """Names of the run directories (folders with a config.json) in ``data_dir`` (default: ``shipped_data_dir()``)."""
    data_dir = shipped_data_dir() if data_dir is None else Path(data_dir)
    return sorted(p.parent.name for p in data_dir.glob(f"*/{CONFIG_FILE}"))


class RunDir(os.PathLike):
    """A run directory at ``path`` (which need not exist yet). ``os.fspath(run_dir)`` and ``str(run_dir)`` are its path."""

    def __init__(self, path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:  # messages name the folder
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def resolve(cls, run_dir) -> "RunDir":
        """``run_dir`` itself if it exists; else a plain name (``"add3_nano"``) names a shipped run (see ``shipped_data_dir``)."""
        if isinstance(run_dir, RunDir):
            return run_dir
        path = Path(run_dir)
        if path.exists() or path.name != str(run_dir):
            return cls(path)
        data_dir = shipped_data_dir()
        if (data_dir / path.name).is_dir():
            return cls(data_dir / path.name)
        names = ", ".join(shipped_runs(data_dir)) or "none"
        raise InputError(f"run directory {str(run_dir)!r} does not exist, and it is not a shipped run in {data_dir} (those are: {names})")

    def require_new(self, what_to_do: str = "pick a new --out, or continue it with --resume") -> None:
        """Refuse to write a run into a directory that already holds something, so nothing saved is overwritten."""
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise InputError(f"{self.path} already exists and is not empty; {what_to_do}")

    def create(self, config: RunConfig, series: bool = False) -> None:
        """Make the new directory (with ``checkpoints/`` for a trained run's ``series``) and write its config.json."""
        self.require_new("pick a new --out, or continue it with --resume" if series else "pick a new output directory")
        (self.checkpoint_dir if series else self.path).mkdir(parents=True, exist_ok=True)
        self.write_config(config)

    # ---- the files, by what they hold
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def weights_file(self) -> Path:
        """The latest weights."""
        return self.path / WEIGHTS_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def sweep_result_file(self) -> Path:
        """The job a sweep ran here and its result row, so a re-run of the sweep reuses both."""
        return self.path / SWEEP_RESULT_FILE

    @property
    def remedy_file(self) -> Path:
        """What remedy (``analysis.remedies``) made this run from which run, and at what cost."""
        return self.path / REMEDY_FILE

    @property
    def extra_pairs_file(self) -> Path:
        """The pairs (columns a, b) that training mixed into the run's ID training split, if any."""
        return self.path / EXTRA_PAIRS_FILE

    def read_extra_pairs(self):
        """The extra training pairs as two int64 arrays (a, b), each [k]; None when the run has none."""
        if not self.extra_pairs_file.is_file():
            return None
        try:
            rows = np.loadtxt(self.extra_pairs_file, dtype=np.int64, delimiter=",", skiprows=1, ndmin=2)
        except ValueError as exc:
            raise InputError(f"{self.extra_pairs_file} is not a CSV of whole numbers a,b ({exc}); the run directory is damaged") from None
        if rows.shape[1] != 2:
            raise InputError(f"{self.extra_pairs_file} must have two columns, a and b; the run directory is damaged")
        return rows[:, 0], rows[:, 1]

    def write_extra_pairs(self, a, b) -> None:
        lines = ["a,b", *(f"{int(x)},{int(y)}" for x, y in zip(a, b))]
        atomic_write_bytes(self.extra_pairs_file, ("\n".join(lines) + "\n").encode())

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def checkpoint_file(self, step: int) -> Path:
        """The weights of checkpoint ``step``: ``checkpoints/step_NNNNNN.safetensors``."""
        return self.checkpoint_dir / f"step_{step:06d}.safetensors"

    def optimizer_file(self, step: int) -> Path:
        """The AdamW state saved with checkpoint ``step`` (only the latest checkpoint keeps it)."""
        return self.checkpoint_dir / f"step_{step:06d}.optimizer.safetensors"

    def checkpoint_steps(self) -> list[int]:
        """The steps of the saved weight series, ascending (``[]`` for imported runs)."""
        return self._steps(".safetensors")

    def optimizer_steps(self) -> list[int]:
        """The steps whose checkpoint still has its optimizer file, ascending."""
        return self._steps(".optimizer.safetensors")

    def _steps(self, suffix: str) -> list[int]:
        """N of every ``checkpoints/step_N{suffix}`` (``step_N.optimizer.safetensors`` is not a ``.safetensors`` step: its N is not digits)."""
        numbers = (p.name.removeprefix("step_").removesuffix(suffix) for p in self.checkpoint_dir.glob(f"step_*{suffix}"))
        return sorted(int(n) for n in numbers if n.isdigit())

    def remove_leftovers(self) -> None:
        """Delete temporary files left by a write that was interrupted."""
        for leftover in self.path.rglob("*" + TMP_SUFFIX):
            leftover.unlink()

    # ---- config.json
    def read_config(self) -> RunConfig:
        if not self.path.is_dir():
            raise InputError(f"run directory {str(self.path)!r} does not exist")
        if not self.config_file.is_file():
            raise InputError(f"{str(self.path)!r} is not a run directory: it has no {CONFIG_FILE}")
        try:
            text = self.config_file.read_text()
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.config_file} is not valid JSON ({exc}); the run directory is damaged") from None
        return RunConfig.from_json(text, self.config_file)

    def write_config(self, config: RunConfig) -> None:
        atomic_write_bytes(self.config_file, config.to_json().encode())

    # ---- metrics.csv
    def has_metrics(self) -> bool:
        return self.metrics_file.is_file()

    def read_metrics(self):
        """The metrics as a tidy DataFrame: step, split, loss, accuracy."""
        import pandas as pd  # here, so the CLI validates without loading pandas

        if not self.has_metrics():
            raise InputError(f"{self.path} has no {METRICS_FILE}: it was not trained by equiv-tools, or training never started")
        return pd.read_csv(self.metrics_file)

    def write_metrics(self, rows: list[dict]) -> None:
        import pandas as pd

        buf = io.StringIO()
        pd.DataFrame(rows, columns=METRIC_COLUMNS).to_csv(buf, index=False)
        atomic_write_bytes(self.metrics_file, buf.getvalue().encode())

    # ---- state.json
    def read_state_step(self) -> int:
        """The step of the latest complete checkpoint, as state.json records it."""
        step = read_json(self.state_file).get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InputError(f"{self.state_file} names no valid step; the run directory is damaged")
        return step

    def write_state(self, step: int, **fields) -> None:
        """Record ``step`` as the latest complete checkpoint; write this after the files it names."""
        write_json(self.state_file, {"step": step, "checkpoint": self.checkpoint_file(step).name.removesuffix(".safetensors"), **fields})
