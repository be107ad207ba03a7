"""Reading a run back: every flushed row, in logging order, from any process."""

from __future__ import annotations

import os
import warnings

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import _journal, _layout, _recovery, _ring_recovery
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

    A damaged journal (bytes changed or cut off, see ``_recovery``) is read up
    to the damage, as a torn tail is; when the run's files hold more rows than
    that (whole frames after the damage, ``metrics.parquet`` or
    ``metrics.csv``), a ``DamagedRunWarning`` names the file, the damaged byte
    ranges and how many rows can be recovered, which reopening the version
    does.  Whole frames that contradict each other (made by hand) raise
    ``DamagedRunError`` naming the file.
    """
    log_dir = os.fspath(log_dir)
    if not os.path.isdir(log_dir):
        raise FileNotFoundError(f"read(): {log_dir} is not a run folder")
    journal = os.path.join(log_dir, _layout.JOURNAL)
    frames, end = _journal.read_frames(journal)
    damage = None
    if _suspect(journal, end, frames):
        damage = _recovery.salvage(log_dir)
        if not damage.needed:
            damage = None
            frames, _ = _journal.read_frames(journal)  # the writer moved on meanwhile: no damage after all
    left = _ring_recovery.ring_table(log_dir)  # a dead process's rows beyond its journal
    if left is not None:
        frames.append(left)
    table = _table(log_dir, journal, frames)
    if damage is not None and table.num_rows < damage.rows:
        warnings.warn(damage.warning(
            "read()", f"read() returns {table.num_rows} of them (the journal up to the damage); reopen the "
                      f"version with Experiment(..., version=N) to recover the rest."), stacklevel=2)
    return table


def _table(log_dir: str, journal: str, frames: list[pa.Table]) -> pa.Table:
    if frames:
        if not all(t.schema.names[:2] == _BASE for t in frames):
            _recovery.check_frames(_journal.scan(journal).frames, journal)  # raises DamagedRunError naming it
        try:
            return concat(frames)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            _recovery.check_frames(_journal.scan(journal).frames, journal)  # raises DamagedRunError naming it
            raise
    parquet = os.path.join(log_dir, _layout.PARQUET)
    if os.path.exists(parquet):
        return pq.read_table(parquet)
    legacy = os.path.join(log_dir, _layout.CSV)
    if os.path.exists(legacy) and not os.path.exists(journal):
        return _read_legacy_csv(legacy)
    return empty_table()


_BASE = ["step", "created_at"]


def _suspect(journal: str, end: int, frames: list[pa.Table]) -> bool:
    """Whether the journal may be damaged: bytes after its last whole frame, or a published file ahead of it.

    Costs a ``stat`` and a Parquet footer read; a healthy run pays nothing more.
    """
    try:
        size = os.path.getsize(journal)
    except FileNotFoundError:
        return False
    if size != end:
        # A frame being written (or torn by a kill) is no damage while the run may still be writing.
        return not (_journal.torn_at(journal, end) and _recovery.running(os.path.dirname(journal)))
    rows = sum(t.num_rows for t in frames)
    try:
        with pa.OSFile(os.path.join(os.path.dirname(journal), _layout.PARQUET)) as f:
            return bool(pq.read_metadata(f).num_rows > rows)
    except (OSError, pa.ArrowException):
        return False


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
