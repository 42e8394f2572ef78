"""Atomic artifact writes, used by everything that saves models, logs, reports or plots.

A temporary file in the target's directory is written, fsync'd and renamed over the target:
readers see the old file or the complete new one, never a partial one, and a crash leaves
the previous version intact. The file mode honours the umask. A model made of several files
is written as a directory the same way (``atomic_write_dir``): readers see the old set of
files or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a binary file object, then atomically put the result at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, json_bytes(obj))


def atomic_write_dir(directory: str | Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> content) into a temporary sibling directory, fsync them, then
    swap it in for ``directory`` (an existing one is moved aside first, then deleted)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if directory.exists():
            old = directory.parent / f".{directory.name}.{uuid.uuid4().hex}.old"
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def json_bytes(obj: Any, indent: int = 2) -> bytes:
    return (json.dumps(obj, indent=indent) + "\n").encode("utf-8")
