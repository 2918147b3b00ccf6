"""`make handout`: copies of the numbered notebooks without the cells tagged `solution`, everything else kept."""
import subprocess
import sys
from pathlib import Path

import nbformat

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))


def test_every_notebook_tags_its_solutions():
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        solutions = [c for c in cells if "solution" in c.metadata.get("tags", [])]
        assert solutions, f"{path.name} has no cell tagged solution"
        assert all(c.source.startswith("# Solution") for c in solutions), path.name
        untagged = [c.source[:40] for c in cells if c.source.startswith("# Solution") and c not in solutions]
        assert not untagged, f"{path.name}: solution cells without the tag: {untagged}"


def test_no_teaching_cell_holds_a_test_harness_marker():
    for path in NOTEBOOKS:
        assert "NBVAL_IGNORE_OUTPUT" not in path.read_text(), f"{path.name}: use the cell tag nbval-ignore-output"


def test_make_handout_writes_the_notebooks_without_solutions(tmp_path):
    out = tmp_path / "handout"
    bin_dir = Path(sys.executable).parent  # the environment the tests run in has jupyter
    done = subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "handout", f"OUT={out}",
                           f"BIN={bin_dir}", "STAMP="], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        original = nbformat.read(path, as_version=4).cells
        handout = nbformat.read(out / path.name, as_version=4).cells
        kept = [c for c in original if "solution" not in c.metadata.get("tags", [])]
        assert [c.source for c in handout] == [c.source for c in kept]
        assert len(handout) < len(original)


def test_make_handout_without_a_folder_says_what_it_needs():
    done = subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "handout", "STAMP="], capture_output=True, text=True)
    assert done.returncode != 0
    assert "make handout needs a folder: make handout OUT=handout" in done.stderr
