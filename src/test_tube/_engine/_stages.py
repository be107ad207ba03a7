"""The stages the writer is given: where rows come from, where they go first, and the metadata.

The writer (``_writer``) is built from these, each owning its state:

* :class:`RingSource`: what ``log()`` fills and the writer takes from: the ring,
  the counter that numbers rows, the fast path's layouts, the rows whose
  tensors are read on the writer thread, and the columns seen so far;
* :class:`JournalFile`: the journal being appended to (the one file every row
  reaches before anything is published) and the source sinks rebuild from;
* :class:`Heartbeat`: ``meta.experiment`` and ``meta_tags.csv``, refreshed at
  each flush and written at the end.

The sinks (``_sinks``, ``_tensorboard``) and the media encoder (``_media``) are
the other stages.  Results and errors come back through the writer's barriers.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from .._store import _journal, _layout
from .._store._schema import BASE_SCHEMA, conform
from . import _ring
from ._fastpath import FastPath, Steps
from ._run_folder import RunFolder


@dataclass(frozen=True)
class RingSource:
    """What log() fills and the writer takes from."""

    ring: _ring.Ring
    steps: Steps
    fast: FastPath
    deferred: deque[Any]  # rows holding tensors, in logging order (their slots say DEFERRED)
    columns: dict[str, pa.DataType]  # every column so far, first-seen order, widest type

    def schema(self) -> pa.Schema:
        """Every column so far in first-seen order, with its current (widest) type."""
        return pa.schema([*BASE_SCHEMA, *(pa.field(k, t) for k, t in list(self.columns.items()))])


class JournalFile:
    """The journal of one open version, appended to by the writer only.

    Also the source the sinks rebuild their files from (``_sinks.Source``):
    the schema so far, the frames up to an offset, and how far the sinks were
    handed rows (:attr:`published_end`).
    """

    def __init__(self, path: str, columns: RingSource) -> None:
        self.path = path
        self._source = columns
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.end = os.fstat(self.fd).st_size
        self.published_end = self.end
        self._unsynced = False

    def append(self, pieces: list[bytes | pa.Buffer]) -> int:
        """Append one frame; the offset it starts at.  A failed write is cut off again."""
        start = self.end
        self.end += _layout.append_whole(self.fd, pieces)  # a torn frame is cut off again
        self._unsynced = True
        return start

    def sync(self) -> None:
        if self._unsynced:
            os.fsync(self.fd)
            self._unsynced = False
        if os.fstat(self.fd).st_nlink == 0:
            raise FileNotFoundError(f"the journal {self.path} was deleted while the run was writing it")

    def read_from(self, start: int) -> tuple[list[pa.Table], int]:
        return _journal.read_frames(self.path, start)

    def schema(self) -> pa.Schema:
        return self._source.schema()

    def frames(self, schema: pa.Schema, stop: int | None = None) -> Iterator[pa.Table]:
        for table, _ in _journal.iter_frames(self.path, 0, stop):
            yield conform(table, schema)

    def close(self) -> None:
        os.close(self.fd)

    def after_fork_in_child(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class Heartbeat:
    """``meta.experiment`` and ``meta_tags.csv`` of an open version.

    ``record`` holds every field in order (the changing ones as placeholders,
    filled at each write); ``tags`` is the
    Experiment's own dict (tag() updates it through :meth:`tag`).
    """

    def __init__(self, folder: RunFolder, record: dict[str, Any], tags: dict[str, Any]) -> None:
        self.folder = folder
        self.record = record
        self.tags = tags
        self._lock = threading.Lock()
        self._dirty = False
        self._ended = False
        self.upload: Any = None  # on object storage, the upload stage: told after each flush

    def tag(self, tags: dict[str, Any]) -> None:
        with self._lock:
            self.tags.update(tags)
            self._dirty = True

    def write_tags(self) -> None:
        self.folder.write_tags(dict(self.tags))

    def beat(self) -> None:
        """After each flush: the tags if they changed, and "running" with the time (the heartbeat)."""
        with self._lock:
            dirty, self._dirty = self._dirty, False
            tags = dict(self.tags) if dirty else None
        if tags is not None:
            self.folder.write_tags(tags)
        if not self._ended:
            self.write("running")
        if self.upload is not None:
            self.upload.observe()

    def stop(self) -> None:
        """No more "running" beats (the run is ending)."""
        self._ended = True

    def write(self, status: str, end_reason: str | None = None, *, summary: dict[str, Any] | None = None) -> None:
        """Write meta.experiment; ``summary`` (the files are complete) is what runs() then reads instead of them."""
        now = str(datetime.now(timezone.utc).replace(tzinfo=None))
        meta = {**self.record, "status": status, "updated_at": now,
                "ended_at": None if status == "running" else now, "end_reason": end_reason}
        if summary is not None:
            meta[_layout.SUMMARY] = summary
        self.folder.write_meta(meta)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._ended = True
