"""The run folder's one owner: it claims the version, locks it, recovers what a crash left, writes metadata.

The Experiment does no file I/O of its own: every file of the version folder
other than the ones the writer and the image encoders stream (journal, ring,
published metrics, media) is read and written here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from .._store import _journal, _layout, _recovery, _ring_recovery

from . import _remote, _rendezvous
from .._store._location import Location
from .._errors import WriterError
from .._store._read import _read_legacy_csv
from ._rows import STR, widen


@dataclass
class Recovered:
    """What earlier sessions of a version left: rows, their columns and last step, tags and metadata."""

    rows: int = 0
    last_step: int = -1
    columns: dict[str, pa.DataType] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    media_names: set[str] = field(default_factory=set)


class RunFolder:
    """One version folder (``version_<N>``, or its ``rank_<r>`` folder with ``per_rank``)."""

    def __init__(self, log_dir: str, version: int) -> None:
        self.log_dir = log_dir
        self.version = version
        self.journal = os.path.join(log_dir, _layout.JOURNAL)
        self.media = os.path.join(log_dir, _layout.MEDIA)
        self.csv = os.path.join(log_dir, _layout.CSV)
        self.parquet = os.path.join(log_dir, _layout.PARQUET)
        self.ring = _ring_recovery.ring_path(log_dir)
        self._lock_fd: int | None = None
        #: On object storage: the claimed version there; ``log_dir`` is then its local spool.
        self.remote: _remote.RemoteVersion | None = None

    @classmethod
    def where(cls, save_dir: str, name: str, version: int | None) -> RunFolder:
        """The folder an Experiment that writes nothing would have (nothing is created)."""
        exp_dir = _layout.experiment_dir(save_dir, name)
        version = version if version is not None else _layout.next_version(exp_dir)
        return cls(_layout.version_dir(save_dir, name, version), version)

    @classmethod
    def claim(cls, save_dir: str, name: str, version: int | None, *, rank: int, per_rank: bool) -> RunFolder:
        """Create (or find, to resume) the folder and take its writer lock.

        ``version=None`` claims the next free version atomically; with
        ``per_rank`` every rank of one launch agrees on the version (``_rendezvous``).
        Raises ``VersionInUseError`` when another live process holds the lock.
        """
        exp_dir = _layout.experiment_dir(save_dir, name)
        if per_rank:
            version = version if version is not None else _rendezvous.shared_version(exp_dir, rank)
            log_dir = os.path.join(_layout.version_dir(save_dir, name, version), f"rank_{rank}")
            os.makedirs(log_dir, exist_ok=True)
        elif version is None:
            version = _layout.claim_version(exp_dir)
            log_dir = _layout.version_dir(save_dir, name, version)
        else:
            log_dir = _layout.version_dir(save_dir, name, version)
            os.makedirs(log_dir, exist_ok=True)
        folder = cls(log_dir, version)
        folder._lock_fd = _layout.lock(log_dir)
        return folder

    @classmethod
    def where_remote(cls, location: Location, name: str, version: int | None, *, ask: bool = True) -> RunFolder:
        """The folder on object storage an Experiment that writes nothing would have (nothing is created).

        With ``ask=False`` (debug mode) the store is not contacted: a debug run must
        start offline and at once, so the version is the one given, or 0.
        """
        if version is None and not ask:
            version = 0
        if version is None:
            try:
                version = _remote.next_version(location.filesystem, location.join(name))
            except OSError as exc:
                raise WriterError(f"could not list the versions of {name!r} in {location.shown}: "
                                  f"{type(exc).__name__}: {exc}", path=location.path) from exc
        return cls(location.join(name, f"version_{version}"), version)

    @classmethod
    def claim_remote(cls, location: Location, name: str, version: int | None, *, given_filesystem: bool,
                     rank: int, per_rank: bool) -> RunFolder:
        """Claim a version on object storage and lock its local spool (see ``_remote``).

        Raises ``VersionInUseError`` when another writer has it and ``WriterError``
        when the store cannot be reached; with ``per_rank`` the ranks of a launch
        agree on the version through the store (``_rendezvous``, ``_remote.StorePlace``).
        """
        fs = _remote.writer_filesystem(location, given=given_filesystem)
        place = _remote.StorePlace(fs, location.join(name))
        try:
            if per_rank and version is None:
                version = _rendezvous.shared_version(place.exp_path, rank, place=place)
            remote = _remote.open_version(location, fs, name, version, f"rank_{rank}" if per_rank else "")
        except OSError as exc:
            raise WriterError(f"could not claim a version of {name!r} in {location.shown}: "
                              f"{type(exc).__name__}: {exc}", path=location.path) from exc
        finally:
            place.release()  # rank 0's claim of the version folder: its rank_0/ claim holds the number now
        folder = cls(remote.spool, remote.version)
        folder.remote = remote
        try:
            folder._lock_fd = _layout.lock(remote.spool)
        except BaseException:
            remote.release_claim()
            raise
        return folder

    def recover(self) -> Recovered:
        """Bring the journal up to date with what a crash left, and read back what earlier sessions wrote.

        A torn last frame is cut off; the rows a killed process left in its
        ring join the journal; a folder of the original test-tube has its
        ``metrics.csv`` carried into a new journal.
        """
        os.makedirs(self.media, exist_ok=True)
        found = Recovered()
        # First, so that no published file is rebuilt from a journal that holds fewer rows than it.
        _recovery.repair_before_resume(self.log_dir)
        if not os.path.exists(self.journal):
            _import_legacy_csv(self.log_dir, self.journal)
        end = 0
        if os.path.exists(self.journal):
            for _, end in _journal.iter_frames(self.journal):
                pass
            if os.path.getsize(self.journal) > end:
                os.truncate(self.journal, end)  # a torn frame from a crash
        # Rows a killed process left in its ring, beyond the journal, join it first.
        _ring_recovery.recover_into_journal(self.log_dir, self.journal)
        for frame, end in _journal.iter_frames(self.journal):
            found.rows += frame.num_rows
            if frame.num_rows:
                found.last_step = frame.column("step")[-1].as_py()
            for column in frame.schema:
                if column.name not in ("step", "created_at"):
                    old = found.columns.get(column.name)
                    found.columns[column.name] = column.type if old is None else widen(old, column.type, column.name)
        found.tags = _layout.read_tags(self.log_dir)
        found.meta = _layout.read_meta(self.log_dir)
        found.media_names = set(os.listdir(self.media))
        return found

    def write_meta(self, meta: dict[str, Any]) -> None:
        _layout.write_meta(self.log_dir, meta)

    def rows_at(self, *, closed: bool) -> tuple[str, pafs.FileSystem | None]:
        """Where ``read()`` finds every row of this version now: ``(path, filesystem)``.

        On object storage the spool holds every row ``save()`` covered while the
        run is open; after close it is removed once everything is uploaded (the
        store then has it all), and kept, complete, when it was not.
        """
        remote = self.remote
        if remote is None:
            return self.log_dir, None
        if not closed or os.path.isdir(remote.spool):
            return remote.spool, None
        return remote.path, remote.filesystem

    def summary(self) -> dict[str, Any] | None:
        """The summary ``runs()`` would give this run now, to record at close (see ``_runs.closing_summary``)."""
        from .._store._runs import closing_summary  # the read side, needed only at close

        return closing_summary(self.log_dir)

    def write_tags(self, tags: dict[str, Any]) -> None:
        _layout.write_tags(self.log_dir, {k: _layout.tag_text(v) for k, v in tags.items()})

    def release(self) -> None:
        """Let go of the writer lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def after_fork_in_child(self) -> None:
        # The parent keeps the lock; closing our copy of the descriptor does not drop it.
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None


def _import_legacy_csv(log_dir: str, journal_path: str) -> None:
    """Carry the rows of a version written by the original test-tube into a new journal.

    Without this, resuming such a version would publish a metrics.csv holding
    only the new rows.  The original had no ``step`` column: the row index is used.
    """
    csv_path = os.path.join(log_dir, _layout.CSV)
    if not os.path.exists(csv_path):
        return
    table = _read_legacy_csv(csv_path)
    if table.num_rows == 0:
        return
    n = table.num_rows
    step = table.column("step").cast(pa.int64()) if "step" in table.column_names else pa.array(range(n), pa.int64())
    created = table.column("created_at") if "created_at" in table.column_names else pa.nulls(n, pa.string())
    if not pa.types.is_timestamp(created.type):
        created = pc.strptime(created.cast(pa.string()), "%Y-%m-%d %H:%M:%S.%f", "us", error_is_null=True)
    created = pc.assume_timezone(created.cast(pa.timestamp("us")), "UTC")
    arrays, names = [step, created], ["step", "created_at"]
    for name in table.column_names:
        if name not in ("step", "created_at"):
            column = table.column(name)
            if pa.types.is_string(column.type) or pa.types.is_null(column.type):
                column = column.cast(STR if pa.types.is_string(column.type) else pa.null())
            arrays.append(column)
            names.append(name)
    pieces = _journal.encode(pa.Table.from_arrays(arrays, names=names))
    data = b"".join(bytes(memoryview(p)) for p in pieces)
    _layout.publish(journal_path, data)
