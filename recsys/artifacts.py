"""Atomic artifact writes, used by everything that saves models, logs, reports or plots.

A temporary file in the target's directory is written, fsync'd and renamed over the target:
readers see the old file or the complete new one, never a partial one, and a crash leaves
the previous version intact. The file mode honours the umask. A model made of several files
is written as a directory the same way (``atomic_write_dir``): readers see the old set of
files or the new one, never a mix.

Every model directory (response model, user GAN, recommenders) follows one convention,
``save_model_dir`` / ``load_model_dir``: ``config.json`` (plain JSON: what to build), a
``state_dict`` file (loaded with ``torch.load(..., weights_only=True)``, so a planted pickle
payload is refused instead of run) and optionally ``metrics.json``. A directory that cannot
be loaded raises ``ModelDirError``, one line naming the file at fault.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

CONFIG_FILE, METRICS_FILE = "config.json", "metrics.json"


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


def json_bytes(obj: Any, indent: int | None = 2, sort_keys: bool = False) -> bytes:
    """``obj`` as strict JSON (RFC 8259), the one JSON writer of the project.

    One policy for what plain ``json.dumps`` gets wrong: NaN and ±inf become ``null`` (a
    missing value; ``json.dumps`` would write ``NaN``, which strict parsers reject); numpy
    scalars and arrays become Python numbers and lists (a float64 prints exactly as before);
    tuples become lists; numpy dict keys become their Python value. Anything else that JSON
    cannot hold (a Path, a dataclass) raises ``TypeError``: convert it where it is made."""
    return (json.dumps(_plain(obj), indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n").encode("utf-8")


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {(k.item() if isinstance(k, np.generic) else k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ------------------------------------------------------------------------------ model directories
class ModelDirError(ValueError):
    """A model directory that cannot be loaded; the message is one line naming the file."""


class ModelFileMissing(ModelDirError, FileNotFoundError):
    """A file of a model directory does not exist (also a ``FileNotFoundError``)."""


def one_line(exc: BaseException) -> str:
    """The first 300 characters of an exception message, on one line."""
    return " ".join(str(exc).split())[:300]


@contextmanager
def blame_file(path: Path, problem: str) -> Iterator[None]:
    """Turn any error raised inside into ``ModelDirError("<path>: <problem> (<error>)")``:
    parsing, building and loading weights fail in many exception types that all mean the same
    thing to a user, a file that does not hold what it should."""
    try:
        yield
    except ModelDirError:
        raise
    except Exception as exc:
        raise ModelDirError(f"{path}: {problem} ({one_line(exc)})") from None


def save_model_dir(directory: str | Path, config: dict[str, Any], state: dict[str, Any], weights_file: str,
                   metrics: dict[str, Any] | None = None) -> Path:
    """Write ``config.json``, ``weights_file`` (``torch.save`` of ``state``, a dict of tensors)
    and, unless ``metrics`` is None, ``metrics.json``, atomically as a set."""
    import torch  # here, not at the top: log, report and plot writers import this module too

    buf = io.BytesIO()
    torch.save(state, buf)
    files = {CONFIG_FILE: json_bytes(config), weights_file: buf.getvalue()}
    if metrics is not None:
        files[METRICS_FILE] = json_bytes(metrics)
    return atomic_write_dir(directory, files)


def load_model_dir(directory: str | Path, weights_file: str, kind: str, hint: str, metrics: bool = False
                   ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """(config, state, metrics) of a directory written by ``save_model_dir``. ``metrics.json``
    is required and returned only when ``metrics``. ``kind`` ("response-model", ...) and
    ``hint`` (what writes the directory) go into the one-line errors: ``ModelFileMissing`` for
    a missing file, ``ModelDirError`` for one that is not valid JSON or not a ``state_dict``."""
    import torch  # see save_model_dir

    directory = Path(directory)
    names = (CONFIG_FILE, weights_file, *((METRICS_FILE,) if metrics else ()))
    for name in names:
        if not (directory / name).is_file():
            raise ModelFileMissing(f"{directory / name}: missing {kind} file; {hint}")
    with blame_file(directory / CONFIG_FILE, "not valid JSON"):
        config = json.loads((directory / CONFIG_FILE).read_text())
    if not isinstance(config, dict):
        raise ModelDirError(f"{directory / CONFIG_FILE}: expected a JSON object, got {type(config).__name__}")
    loaded_metrics = None
    if metrics:
        with blame_file(directory / METRICS_FILE, "not valid JSON"):
            loaded_metrics = json.loads((directory / METRICS_FILE).read_text())
    with blame_file(directory / weights_file, f"cannot load the {kind} weights"):
        state = torch.load(directory / weights_file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ModelDirError(f"{directory / weights_file}: expected a state_dict, got {type(state).__name__}")
    return config, state, loaded_metrics
