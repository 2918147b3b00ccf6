"""Safe files: atomic writes (temporary file, flush, fsync, rename) and validated JSON reads. Torch-free.

The kit writes only JSON, CSV and safetensors (``runs.storage``); it never unpickles anything.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from equiv_tools.core.errors import InputError

TMP_SUFFIX = ".tmp"


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one, never a mix.

    A write that fails (full disk, interrupt) removes its temporary file; a missing folder is an InputError.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: the folder {path.parent} does not exist; create it first")
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a folder without write permission: one clear line
        tmp.unlink(missing_ok=True)  # a failed write leaves neither a temporary file nor a damaged target
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); the file is damaged") from None
