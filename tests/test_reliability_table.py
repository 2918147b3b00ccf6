"""Every row of docs/RELIABILITY.md's table, run as written: the command, its exit status and the line it prints.

The table is the one source: each row's command (TMP is a scratch folder made below) runs through
``equiv_tools.cli.main``, and its last line on stderr must be the row's text, word for word.
"""
import json
import re
import shlex
import shutil

import pytest
import torch

from equiv_tools.cli import main

from .conftest import REPO

TABLE = REPO / "docs" / "RELIABILITY.md"


def table_rows() -> list[tuple[str, str, int, str]]:
    """(bad input, command, exit status, message) for each row of the table."""
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`equiv-tools "):
            rows.append((cells[0], cells[1].strip("`"), int(cells[2]), cells[3]))
    return rows


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """TMP: a copy of data/add3_nano and the damaged files and folders the table's commands name."""
    tmp = tmp_path_factory.mktemp("reliability")
    run = tmp / "run"
    shutil.copytree(REPO / "data" / "add3_nano", run)
    for name, text in {"pairs_bad.csv": "a,b\n1,3x\n", "pairs_neg.csv": "a,b\n-5,1\n", "pairs_wide.csv": "a,b\n123456,1\n",
                       "notcsv.csv": "", "pairs.csv": "a,b\n349,705\n1349,2705\n"}.items():
        (tmp / name).write_text(text)
    (tmp / "junk.pt").write_bytes(b"\x80\x04junk")
    torch.save({"w": torch.zeros(2)}, tmp / "other.pt")

    def damaged(name, edit_config=None, edit_weights=None):
        folder = tmp / name
        shutil.copytree(run, folder)
        if edit_config is not None:
            config = json.loads((folder / "config.json").read_text())
            edit_config(config)
            (folder / "config.json").write_text(json.dumps(config))
        if edit_weights is not None:
            edit_weights(folder / "model.safetensors")

    (tmp / "badjson").mkdir()
    (tmp / "badjson" / "config.json").write_text("{not json")
    damaged("schema", lambda c: c.update(schema_version=7))
    damaged("othermodel", lambda c: c["model"].update(d_model=64))
    damaged("othertask", lambda c: c["task"].update(width=3))
    damaged("unknownfield", lambda c: c["model"].update(rotary_dim=8))
    damaged("trunc", edit_weights=lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))
    damaged("random", edit_weights=lambda p: p.write_bytes(b"\xff" * 64))
    damaged("noweights", edit_weights=lambda p: p.unlink())
    return tmp


@pytest.mark.parametrize("what, command, status, message", table_rows(), ids=[r[0] for r in table_rows()])
def test_row(scratch, capsys, monkeypatch, what, command, status, message):
    if "--device cuda" in command and torch.cuda.is_available():
        pytest.skip("this row is about a machine without a GPU")
    monkeypatch.chdir(scratch)  # anything a row writes lands in the scratch folder
    argv = [word.replace("TMP", str(scratch)) for word in shlex.split(command)[1:]]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == status
    assert err and err[-1].replace(str(scratch), "TMP") == message


def test_the_table_covers_the_kit_s_doors():
    commands = {shlex.split(r[1])[1] for r in table_rows()}
    assert {"train", "evaluate", "predict", "import-mingpt"} <= commands and len(table_rows()) >= 24
    assert all(re.match(r"equiv-tools( \w+)?(: | train: | predict: | evaluate: )error: ", r[3]) for r in table_rows())
