"""Reading a run back: every flushed row, in logging order, from any process."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import _journal, _layout, _recovery, _ring_recovery
from .._errors import DamagedRunError, warn_from_caller
from ._location import resolve
from ._reader import StoredRun
from ._schema import concat, empty_table


def read(log_dir: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """Return every row of a run as a ``pyarrow.Table``, in logging order.

    ``log_dir`` is a run's folder: a local path, or any URI that
    ``pyarrow.fs.FileSystem.from_uri`` takes, its query options included
    (``s3://bucket/logs/mnist/version_3?endpoint_override=host:port&scheme=http``);
    with ``filesystem=`` (a ``pyarrow.fs.FileSystem``) it is a path in that
    filesystem.  A URI pyarrow cannot open raises ``ValueError`` naming it.

    Reads the journal, which a running writer extends every fraction of a
    second (on object storage: its ``_journal/`` segments, up to the first one
    missing), and, for a local run whose process died without closing it
    (``kill -9``, a segfault, ``os._exit``), every whole row its ring file
    holds beyond the journal: every row ``log()`` returned, in logging order.
    A torn tail is skipped, never misread.  Columns are ``step``,
    ``created_at`` and the logged keys in first-seen order.  A run with no
    rows gives an empty table that still has ``step`` and ``created_at``.
    Folders written by the original test-tube (``metrics.csv`` only) are read
    from their CSV.

    A damaged journal (bytes changed or cut off, see ``_recovery``) is read up
    to the damage, as a torn tail is; when the run's files hold more rows than
    that (whole frames after the damage, ``metrics.parquet`` or
    ``metrics.csv``), a ``DamagedRunWarning`` names the file, the damaged byte
    ranges and how many rows can be recovered, which reopening the version
    does.  Whole frames that contradict each other (made by hand) raise
    ``DamagedRunError`` naming the file.
    """
    location = resolve(log_dir, filesystem)
    run = StoredRun(location)
    if not run.exists():
        raise FileNotFoundError(f"read(): {location.shown} is not a run folder")
    return read_run(run)


def read_run(run: StoredRun) -> pa.Table:
    """:func:`read` of a run folder already found (``runs()``, the command line and ``serve`` use it)."""
    if not run.local:
        return _read_stored(run)
    log_dir = run.path
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
        warn_from_caller(damage.warning(
            "read()", f"read() returns {table.num_rows} of them (the journal up to the damage); reopen the "
                      f"version with Experiment(..., version=N) to recover the rest."))
    return table


def _read_stored(run: StoredRun) -> pa.Table:
    """A run on object storage: its journal segments; ``metrics.parquet`` when that holds more rows.

    A closed run (``finished`` or ``failed``) of more than a few segments
    whose ``metrics.parquet`` was published after its last segment is read
    from that file: a few requests instead of two per segment.  The writer
    publishes the complete file at ``close()`` before ``meta.experiment``
    says the run ended, so such a file holds every row.
    """
    names = run.names()
    if len(run.segments()) > _FEW_SEGMENTS and _layout.PARQUET in names and run.parquet_complete():
        try:
            if run.meta().get("status") in ("finished", "failed"):
                return _plain(run.read_parquet())
        except (OSError, pa.ArrowException, DamagedRunError):
            pass  # the segments are the record
    frames, _ = run.frames()
    if frames:
        if not all(t.schema.names[:2] == _BASE for t in frames):
            raise DamagedRunError(f"{run.shown}: journal frames without step and created_at first; "
                                  f"they were not written by test_tube", path=run.shown)
        if _layout.PARQUET in names and run.parquet_complete():
            rows = sum(t.num_rows for t in frames)
            try:
                if run.parquet_metadata().num_rows > rows:
                    return _plain(run.read_parquet())  # segments are missing: the complete file holds every row
            except (OSError, pa.ArrowException):
                pass
        return concat(frames)
    if _layout.PARQUET in names:
        return _plain(run.read_parquet())
    if _layout.CSV in names and _layout.JOURNAL not in names and _layout.JOURNAL_SEGMENTS not in names:
        data = run.read_bytes(_layout.CSV)
        if data is not None:
            return _legacy_csv(data)
    return empty_table()


# Up to this many segments, reading them costs fewer requests than metrics.parquet and meta.experiment.
_FEW_SEGMENTS = 4


def _plain(table: pa.Table) -> pa.Table:
    """A table read from Parquet without the file's schema metadata, as the journal's rows have none."""
    return table.replace_schema_metadata(None)


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
    with open(path, "rb") as f:
        return _legacy_csv(f.read())


def _legacy_csv(data: bytes) -> pa.Table:
    """The complete lines of a CSV: a last line without its newline is a tear, never a value.

    Readers take a torn tail such as ``3,0.`` for the value ``0.0``; dropping it
    keeps a crash from inventing a value that was never logged.
    """
    if not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    if not data.strip():
        return empty_table()
    return pacsv.read_csv(pa.BufferReader(data))
