"""Notebooks 03 to 06 and 08 as a student who cloned the kit meets them: without the paper's checkpoints, under nbval."""
import os
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.timeout(600)
@pytest.mark.parametrize("notebook", ["03_equivalence_maps.ipynb", "04_patching.ipynb", "05_reading_the_model.ipynb", "06_grokking.ipynb",
                                      "08_remedies.ipynb"])
def test_passes_nbval_without_the_paper_files(tmp_path, notebook):
    empty = tmp_path / "no-paper"
    empty.mkdir()
    env = {**os.environ, "EQUIV_TOOLS_PAPER_DIR": str(empty)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
         "--nbval-sanitize-with", str(REPO / "notebooks" / "sanitize.cfg"), str(REPO / "notebooks" / notebook)],
        cwd=REPO / "notebooks", env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
