"""Where the kit's shipped run directories live (torch-free)."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DATA_ENV = "EQUIV_TOOLS_DATA_DIR"


def shipped_data_dir() -> Path:
    """The folder of shipped runs: ``$EQUIV_TOOLS_DATA_DIR`` if set, else the installed package data.

    A wheel installs data/ as ``equiv_tools/_data``; an editable install or a source checkout uses data/ itself.
    """
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    package = Path(str(resources.files("equiv_tools")))
    installed = package / "_data"
    return installed if installed.is_dir() else package.parent / "data"

