"""The upload stage: copies a run's local spool folder to object storage, on its own thread.

It follows the writer instead of being part of it: after every flush the
writer's publish hook calls :meth:`Uploader.observe`, which only notes, with a
few ``stat`` calls, what is consistent at that moment (the journal's end, a
frame boundary; the files due under the doubling rule, held open so a later
rewrite cannot change what is sent), and wakes the stage.  ``log()`` never
waits for it and never makes a network call.

How each object is published (object storage has no append and no rename,
but every PUT is atomic, so a reader never sees a torn object):

* ``_journal/<offset>.arrows``: the journal bytes from ``offset`` to the end of
  the last whole frame at a flush, one PUT per flush that added frames (at
  most :data:`SEGMENT_BYTES` each); concatenated in name order they are the
  local journal's prefix;
* ``media/<file>``: one PUT per image, once the encoder published it;
* ``meta_tags.csv``: a PUT whenever its bytes change;
* ``meta.experiment``: a PUT whenever it changes other than its
  ``updated_at``, and at least every :data:`HEARTBEAT` seconds (the heartbeat
  ``runs()`` reads); last of all at the end, so a reader that sees
  ``finished`` sees every other object complete;
* ``metrics.csv``, ``metrics.parquet``, ``tf/...``: a whole-object PUT when the
  file reached twice the size last sent (total work linear in the run), and
  complete at the end.

A failed request is retried with exponential backoff; nothing is dropped:
the spool keeps every byte until the end of the run is on the store, and
only then is it removed.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

from .._errors import WriterError
from .._store import _journal, _layout
from . import _ring
from ._priority import lower_this_thread
from ._remote import RemoteVersion, join

#: Seconds between PUTs of meta.experiment when nothing but its updated_at changed.
HEARTBEAT = 10.0

#: Seconds without any successful request after which a waiting save() gives up with WriterError.
STORE_TIMEOUT = 10.0

#: Backoff between failed attempts (seconds): doubles from the first to the last.
BACKOFF = (0.2, 5.0)

#: Journal bytes per segment at most (a backlog after an outage goes up in several).
SEGMENT_BYTES = 64 * 2**20

#: Bytes read from the spool at a time while a file goes up.
CHUNK_BYTES = 8 * 2**20

#: Spool entries that are never uploaded: local to the writing host, or sent another way.
_LOCAL_ONLY = frozenset({_layout.LOCK, _ring.FILE, _layout.JOURNAL, _layout.META, _layout.TAGS, _layout.MEDIA})


class Uploader:
    """Publishes one spool folder (``remote.spool``) at ``remote.path`` of ``remote.filesystem``."""

    def __init__(self, remote: RemoteVersion, *, label: str) -> None:
        self.remote = remote
        self.fs: pafs.FileSystem = remote.filesystem
        self.spool = remote.spool
        self.label = label
        self._journal_path = os.path.join(self.spool, _layout.JOURNAL)
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._urgent = threading.Event()  # the end was asked for: cut a backoff short
        self._journal_limit = 0  # a frame boundary the writer had reached at its last flush
        self.journal_sent = remote.uploaded_journal
        self._media_sent: set[str] = set(remote.uploaded_media)
        self._sent: dict[str, tuple[int, int, int]] = {}  # file -> (inode, size, mtime_ns) last sent
        self._snapshots: dict[str, tuple[int, int]] = {}  # file -> (open fd, size) to send
        self._tags_sent: bytes | None = None
        self._meta_sent: tuple[Any, float] | None = None  # (meta without updated_at, when sent)
        self.error: BaseException | None = None
        self.last_success = time.monotonic()
        self.requests = 0
        self.bytes_sent = 0
        self._final = False
        self._stopped = False
        self.complete = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"test_tube-upload[{label}]", daemon=True)

    def start(self) -> None:
        self.thread.start()

    # -- the writer's side: cheap, no network ------------------------------------

    def observe(self) -> None:
        """Note what the spool holds after a flush (called by the writer thread, between its writes)."""
        try:
            limit = os.path.getsize(self._journal_path)
        except FileNotFoundError:
            limit = 0
        due: dict[str, tuple[int, int]] = {}
        for rel, st in self._published_files():
            sent = self._sent.get(rel)
            if st.st_size and (sent is None or st.st_size >= 2 * sent[1]):
                try:
                    fd = os.open(os.path.join(self.spool, rel), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                # The writer appends or replaces these files only between flushes: this size is whole.
                due[rel] = (fd, os.fstat(fd).st_size)
        with self._cond:
            self._journal_limit = max(self._journal_limit, limit)
            for rel, snap in due.items():
                old = self._snapshots.pop(rel, None)
                if old is not None:
                    os.close(old[0])
                self._snapshots[rel] = snap
        self._wake.set()

    def _published_files(self) -> Iterator[tuple[str, os.stat_result]]:
        """The spool's files sent whole on the doubling rule: metrics.*, tf/..., anything else a sink adds."""
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                entries = list(os.scandir(os.path.join(self.spool, rel_dir)))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or (not rel_dir and entry.name in _LOCAL_ONLY):
                    continue
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    yield rel, entry.stat()

    # -- the caller's side -----------------------------------------------------------

    def sync(self, timeout: float | None) -> None:
        """Block until the journal, images and tags the spool holds now are on the store (``save()``).

        Raises ``WriterError`` (cause chained) when the store answered nothing
        for :data:`STORE_TIMEOUT` seconds while we waited, or gave an error and
        ``timeout`` ran out; ``TimeoutError`` when ``timeout`` ran out while
        uploads were going on.
        """
        with self._cond:
            target = self._journal_limit
        media = self._media_names()
        tags = self._read(_layout.TAGS)
        self._wake.set()
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        with self._cond:
            while not (self.journal_sent >= target and media <= self._media_sent and self._meta_sent is not None
                       and (tags is None or self._tags_sent == tags)):
                now = time.monotonic()
                stalled = now - max(start, self.last_success)
                if stalled >= STORE_TIMEOUT or (deadline is not None and now >= deadline and self.error):
                    cause = self.error or TimeoutError(f"no answer from the store for {stalled:.0f} s")
                    raise _upload_error(cause, self.label, self.spool) from cause
                if deadline is not None and now >= deadline:
                    raise TimeoutError(f"save(): the upload to {self.remote.path} did not finish in {timeout} s; "
                                       f"every row is in the local spool {self.spool}")
                self._cond.wait(0.05 if deadline is None else max(0.0, min(0.05, deadline - now)))

    def finish(self, timeout: float) -> str:
        """Send everything (the run is closed) within ``timeout`` seconds; return what was not sent ('' = all).

        When everything is on the store, the claim and the spool are removed.
        """
        self._final = True
        self._urgent.set()
        self._wake.set()
        if not self.thread.is_alive() and not self._stopped:
            return self._missing()
        if self.complete.wait(max(0.0, timeout)):
            if os.path.exists(os.path.join(self.spool, _ring.FILE)):
                # Rows the writer could not journal: the next open of this version recovers them.
                return "rows that stayed in the ring file (the writer failed)"
            self.remote.release_claim()
            shutil.rmtree(self.spool, ignore_errors=True)
            for folder in (os.path.dirname(self.spool), os.path.dirname(os.path.dirname(self.spool))):
                try:
                    os.rmdir(folder)  # the name's and the store's folders, once empty
                except OSError:
                    break
            return ""
        self._stopped = True
        self._wake.set()
        return self._missing()

    def _missing(self) -> str:
        parts = []
        try:
            size = os.path.getsize(self._journal_path)
        except FileNotFoundError:
            size = 0
        if size > self.journal_sent:
            parts.append(f"journal bytes {self.journal_sent}..{size}")
        media = self._media_names() - self._media_sent
        if media:
            parts.append(f"{len(media)} images")
        parts.append("the final metrics files and meta.experiment")
        why = f" ({type(self.error).__name__}: {self.error})" if self.error is not None else ""
        return ", ".join(parts) + why

    def after_fork_in_child(self) -> None:
        self._cond = threading.Condition()
        self._snapshots = {}
        self._stopped = True

    # -- the stage's thread ----------------------------------------------------------

    def _run(self) -> None:
        lower_this_thread()
        backoff = 0.0
        while not self._stopped:
            if backoff:
                self._urgent.wait(backoff)
            else:
                self._wake.wait(HEARTBEAT / 2)
            self._wake.clear()
            if self._stopped:
                return
            final = self._final
            try:
                self._pass(final)
            except Exception as exc:  # a refused or lost request: kept, reported by save(), retried
                with self._cond:
                    self.error = exc
                    self._cond.notify_all()
                backoff = min(max(backoff * 2, BACKOFF[0]), BACKOFF[1])
                continue
            backoff = 0.0
            with self._cond:
                self.error = None
                self._cond.notify_all()
            if final:
                self.complete.set()
                return

    def _done_one(self, nbytes: int) -> None:
        with self._cond:
            self.requests += 1
            self.bytes_sent += nbytes
            self.last_success = time.monotonic()
            self._cond.notify_all()

    def _put(self, name: str, data: bytes | memoryview) -> None:
        with self.fs.open_output_stream(join(self.remote.path, name)) as out:
            out.write(data)
        self._done_one(len(data))

    def _put_range(self, name: str, fd: int, start: int, end: int) -> None:
        """PUT bytes ``[start, end)`` of an open file as one object, read in chunks (memory stays bounded)."""
        with self.fs.open_output_stream(join(self.remote.path, name)) as out:
            pos = start
            while pos < end:
                chunk = os.pread(fd, min(CHUNK_BYTES, end - pos), pos)
                if not chunk:
                    raise OSError(f"{self.spool}: {name} is shorter than the {end - start} bytes noted")
                out.write(chunk)
                pos += len(chunk)
        self._done_one(end - start)

    def _pass(self, final: bool) -> None:
        """Send what is due; raises on the first failed request (what was sent stays sent)."""
        for name in sorted(self._media_names() - self._media_sent):
            data = self._read(f"{_layout.MEDIA}/{name}")
            if data is not None:
                self._put(f"{_layout.MEDIA}/{name}", data)
            with self._cond:
                self._media_sent.add(name)
        # Images first: a row in a segment may name an image.
        with self._cond:
            limit = self._journal_limit
        if final:
            limit = max(limit, os.path.getsize(self._journal_path) if os.path.exists(self._journal_path) else 0)
        self._send_journal(limit)
        tags = self._read(_layout.TAGS)
        if tags is not None and tags != self._tags_sent:
            self._put(_layout.TAGS, tags)
            with self._cond:
                self._tags_sent = tags
        if not final:
            self._send_snapshots()
        else:
            self._drop_snapshots()  # superseded: the complete files go up now
            for rel, st in list(self._published_files()):
                if self._sent.get(rel) != (st.st_ino, st.st_size, st.st_mtime_ns):
                    self._send_file(rel)
        self._send_meta(final)

    def _drop_snapshots(self) -> None:
        with self._cond:
            snaps, self._snapshots = self._snapshots, {}
        for fd, _ in snaps.values():
            os.close(fd)

    def _send_journal(self, limit: int) -> None:
        while self.journal_sent < limit:
            start = self.journal_sent
            end = start
            # Whole frames only (checksummed), up to the boundary the writer had reached.
            for _, frame_end in _journal.iter_frames(self._journal_path, start, limit):
                if frame_end > limit or (end > start and frame_end - start > SEGMENT_BYTES):
                    break
                end = frame_end
            if end == start:
                return
            with open(self._journal_path, "rb") as f:
                self._put_range(f"{_layout.JOURNAL_SEGMENTS}/{_layout.segment_name(start)}", f.fileno(), start, end)
            with self._cond:
                self.journal_sent = end

    def _send_snapshots(self) -> None:
        with self._cond:
            snaps, self._snapshots = self._snapshots, {}
        try:
            while snaps:
                rel, (fd, size) = next(iter(snaps.items()))
                st = os.fstat(fd)
                self._put_range(rel, fd, 0, size)
                self._sent[rel] = (st.st_ino, size, st.st_mtime_ns)
                del snaps[rel]
                os.close(fd)
        finally:
            if snaps:
                # Not sent: keep them for the next attempt unless a newer one was taken meanwhile.
                with self._cond:
                    for rel, snap in snaps.items():
                        if rel in self._snapshots:
                            os.close(snap[0])
                        else:
                            self._snapshots[rel] = snap

    def _send_file(self, rel: str) -> None:
        with open(os.path.join(self.spool, rel), "rb") as f:
            st = os.fstat(f.fileno())
            self._put_range(rel, f.fileno(), 0, st.st_size)
        self._sent[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)

    def _send_meta(self, final: bool) -> None:
        data = self._read(_layout.META)
        if data is None:
            return
        try:
            meta = json.loads(data)
        except ValueError:
            return  # never published half-written (it is replaced whole); a damaged one is not ours to send
        if not isinstance(meta, dict):
            return
        meta.pop("updated_at", None)
        now = time.monotonic()
        sent = self._meta_sent
        if final or sent is None or sent[0] != meta or now - sent[1] >= HEARTBEAT:
            self._put(_layout.META, data)
            self._meta_sent = (meta, now)

    def _media_names(self) -> set[str]:
        try:
            return {n for n in os.listdir(os.path.join(self.spool, _layout.MEDIA)) if not n.startswith(".")}
        except FileNotFoundError:
            return set()

    def _read(self, rel: str) -> bytes | None:
        try:
            with open(os.path.join(self.spool, rel), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None


def _upload_error(exc: BaseException, label: str, spool: str) -> WriterError:
    return WriterError(
        f"the upload of {label} to the store failed: {type(exc).__name__}: {exc}. Every row is kept in the "
        f"local spool {spool}; uploads go on in the background and close() sends the rest.",
        path=spool,
    )
