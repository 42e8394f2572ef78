"""Reading and writing logs parquet files: validated on the way in and out, written atomically."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recsys.artifacts import atomic_write
from recsys.data.schema import LogSchemaError, validate_logs


def read_logs(path: str | Path, n_actions: int | None = None) -> pa.Table:
    """Read a logs parquet file, validate it (``validate_logs``) and return the table."""
    table = read_parquet(path)
    validate_logs(table, n_actions)
    return table


def read_parquet(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise LogSchemaError(f"path: no such file {str(path)!r}; pass the path of a logs parquet file")
    if path.is_dir():
        raise LogSchemaError(f"path: {str(path)!r} is a directory; pass the path of a logs parquet file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise LogSchemaError(
            f"path: {str(path)!r} is not a readable parquet file ({e}); write logs with "
            "recsys.data.io.write_logs or pyarrow.parquet.write_table"
        ) from None
    return table


def write_logs(table: pa.Table, path: str | Path, validate: bool = True) -> Path:
    """Write ``table`` as parquet atomically: a temp file in the same directory, fsync'd, then
    ``os.replace``d over ``path``, so readers see the old file or the complete new one, never
    a partial one. Validates first unless ``validate=False``. Returns the path."""
    if validate:
        validate_logs(table)
    return atomic_write(path, lambda f: pq.write_table(table, f))
