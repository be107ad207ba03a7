"""Reading a run back: every flushed row, in logging order, from any process."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import _journal, _layout, _recovery
from ._schema import concat, empty_table


def read(log_dir: str | os.PathLike[str]) -> pa.Table:
    """Return every row of a run as a ``pyarrow.Table``, in logging order.

    Reads the journal, which a running writer extends every fraction of a
    second, and, for a run whose process died without closing it (``kill -9``,
    a segfault, ``os._exit``), every whole row its ring file holds beyond the
    journal: every row ``log()`` returned, in logging order.  A torn tail is
    skipped, never misread.  Columns are ``step``, ``created_at`` and the
    logged keys in first-seen order.  A run with no rows gives an empty table
    that still has ``step`` and ``created_at``.  Folders written by the
    original test-tube (``metrics.csv`` only) are read from their CSV.
    """
    log_dir = os.fspath(log_dir)
    if not os.path.isdir(log_dir):
        raise FileNotFoundError(f"read(): {log_dir} is not a run folder")
    frames, _ = _journal.read_frames(os.path.join(log_dir, _layout.JOURNAL))
    left = _recovery.ring_table(log_dir)
    if left is not None:
        frames.append(left)
    if frames:
        return concat(frames)
    parquet = os.path.join(log_dir, _layout.PARQUET)
    if os.path.exists(parquet):
        return pq.read_table(parquet)
    legacy = os.path.join(log_dir, _layout.CSV)
    if os.path.exists(legacy) and not os.path.exists(os.path.join(log_dir, _layout.JOURNAL)):
        return _read_legacy_csv(legacy)
    return empty_table()


def _read_legacy_csv(path: str) -> pa.Table:
    """The complete lines of a CSV: a last line without its newline is a tear, never a value.

    Readers take a torn tail such as ``3,0.`` for the value ``0.0``; dropping it
    keeps a crash from inventing a value that was never logged.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    if not data.strip():
        return empty_table()
    return pacsv.read_csv(pa.BufferReader(data))
