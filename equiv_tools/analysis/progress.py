"""Progress measures through training: the Fourier measures of ``fourier`` at every checkpoint of a run's series."""
from __future__ import annotations

from typing import Optional, Sequence

import pandas as pd

from equiv_tools.analysis.fourier import embedding_frequency_norms, key_frequencies, modular_task, progress_measures, train_mask
from equiv_tools.core.errors import InputError
from equiv_tools.core.rundir import RunDir
from equiv_tools.runs.models import load_run


def _series(run_dir, steps: Optional[Sequence[int]], device: str):
    """(step, Run) for each checkpoint ``steps`` (default: all) of a run directory, loaded one at a time."""
    run_dir = RunDir.resolve(run_dir)
    steps = run_dir.checkpoint_steps() if steps is None else list(steps)
    if not steps:
        raise InputError(f"{run_dir.path} has no checkpoint series ({run_dir.checkpoint_dir.name}/step_NNNNNN.safetensors); imported runs have none")
    for step in steps:
        yield step, load_run(run_dir, device=device, step=step)


def progress_series(run_dir, frequencies: Optional[Sequence[int]] = None, steps: Optional[Sequence[int]] = None,
                    device: str = "cpu") -> pd.DataFrame:
    """``progress_measures`` at every checkpoint of a run: one row per step, with ``step`` and ``excluded_loss_pairs``.

    The key ``frequencies`` default to the final model's (``model.safetensors``), as Nanda et al. measure the
    whole history against the mechanism the model ends with.
    """
    if frequencies is None:
        final = load_run(run_dir, device=device)
        frequencies = key_frequencies(final.model, final.task)
    rows = []
    for step, run in _series(run_dir, steps, device):
        mask, excluded_on = train_mask(run)
        rows.append(progress_measures(run.model, run.task, frequencies, mask).assign(step=step, excluded_loss_pairs=excluded_on))
    frame = pd.concat(rows, ignore_index=True)
    return frame[["step", *[c for c in frame.columns if c != "step"]]]


def spectrum_series(run_dir, steps: Optional[Sequence[int]] = None, device: str = "cpu") -> pd.DataFrame:
    """``embedding_frequency_norms`` at every checkpoint of a run: one row per (step, frequency)."""
    frames = [embedding_frequency_norms(run.model, modular_task(run.task, "spectrum_series").p).assign(step=step)
              for step, run in _series(run_dir, steps, device)]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["step", "frequency", "norm", "share"]]
