"""The Experiment façade: validates, snapshots and submits; the writer does the I/O."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from ._engine import _exit, _options, _rank, _ring

from . import _git

from ._store import _journal, _layout
from ._errors import ExperimentClosedError, LogTypeError, LogValueError, UploadWarning, warn_from_caller
from ._engine._fastpath import FastPath, Steps, resolve_step, shape_of
from ._engine._media import MediaEncoder
from ._engine._options import Options
from ._engine._run_folder import Recovered, RunFolder
from ._engine._rows import (
    SEQ,
    SHAPE,
    STEP,
    STR,
    TIME,
    check_text,
    shape_code,
    flatten,
    image_extension,
    media_stem,
    normalise,
    normalise_image,
    widen,
)
from ._engine._sinks import CsvSink, ParquetSink, Sink
from ._summary_writer import SummaryWriterMethods
from ._engine._tensorboard import TF_DIR, TensorBoardSink
from ._store._schema import BASE_SCHEMA, concat
from ._engine._upload import Uploader
from ._engine._stages import Heartbeat, JournalFile, RingSource
from ._engine._writer import BATCH_BYTES, Writer, writer_error


_time_ns = time.time_ns
DEFAULT_SAVE_DIR = _options.DEFAULT_SAVE_DIR


class Experiment(SummaryWriterMethods):
    """One run of a training script: its tags, its logged rows and its images.

    ``log()`` never does I/O: it snapshots the row into the run's ring, a
    memory-mapped file (``_ring``), and returns, so a row ``log()`` returned
    survives the death of the process; it blocks only when the ring is full
    (``max_queue_rows`` rows, or its room for text, or ``max_queue_bytes`` of
    images).  A background writer thread takes the rows into a crash-tolerant
    journal and publishes ``metrics.csv``/``metrics.parquet``.  ``save()``
    blocks until every row logged before it is in those files.  All methods
    are thread-safe.

    Positional arguments follow test-tube 0.7.5's order, ``(save_dir, name,
    debug, version, autosave, description, create_git_tag, rank)``, so code
    written for it keeps working; pass them by keyword to be clear.

    Args:
        save_dir: root folder; ``None`` means ``./test_tube_logs`` in the
            current working directory.  Or any URI ``pyarrow.fs.FileSystem.from_uri``
            takes, query options included (``s3://bucket/logs?endpoint_override=host:port``):
            the writer then works in a local spool (``_remote``) and a background
            upload stage (``_upload``) publishes whole objects; ``log_dir`` is then
            the run's path in the store.
        name: experiment name; files go to ``<save_dir>/<name>/version_<N>/``.
        debug: if true, nothing is created, no thread starts, every method does nothing
            (on object storage the store is not contacted either: ``version`` is the one given, or 0).
        version: ``None`` claims the next free version; an existing version is
            resumed (rows appended, steps continued, tags merged).
        autosave: if true (default), the writer publishes every
            ``flush_interval`` seconds; if false, ``metrics.*`` are written only
            by ``save()``, ``close()`` and at exit (rows are still journaled).
        description: free text stored in ``meta.experiment``.
        create_git_tag: tag a snapshot of the working tree as ``tt_<name>_v<version>``.
        rank: the process's rank in multi-process training; ``None`` (default)
            detects it: ``torch.distributed``'s rank if its process group is
            initialised, else ``RANK``, ``SLURM_PROCID``, ``LOCAL_RANK`` from the
            environment, else 0 (see ``_rank``).  As in 0.7.5, an Experiment of a
            rank above 0 writes nothing and every method does nothing, unless ``per_rank``.
        per_rank: every rank writes, each to ``version_<N>/rank_<r>/`` (a complete
            version folder of its own); all ranks of one launch share N (see
            ``_rendezvous``: pass ``version=``, or open the Experiment after
            ``init_process_group()`` or under torchrun/SLURM, which name the launch).
        flush_interval: seconds between periodic flushes (journal synced, files published, heartbeat).
        formats: published files, a subset of ``{"csv", "parquet", "tensorboard"}``; all three
            by default.  ``"tensorboard"`` writes ``tf/events.out.tfevents.*`` (see ``_tensorboard``),
            so ``tensorboard --logdir <save_dir>`` shows the run, as test-tube 0.7.5's did.
        max_queue_rows: rows that may wait in the ring for the writer before ``log()`` blocks.
        max_queue_bytes: bytes of images that may wait before ``log()`` blocks; the ring's room
            for strings is this much too, at most 16 MiB (a single row may take all of it).
        exit_timeout: seconds the final flush at interpreter exit may take.
        image_workers: threads encoding images in parallel.
        jpeg_quality: JPEG quality (1-95) for ``jpg``/``jpeg`` keys.
        record_git: record the HEAD commit and dirty flag in ``meta.experiment``.
        filesystem: a ready ``pyarrow.fs.FileSystem`` (your endpoint, credentials and
            timeouts); ``save_dir`` is then a path in it, as in pyarrow's own ``(path, filesystem=)``.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str] | None = None,
        name: str = "default",
        debug: bool = False,
        version: int | None = None,
        autosave: bool = True,
        description: str | None = None,
        create_git_tag: bool = False,
        rank: int | None = None,
        *,
        per_rank: bool = False,
        flush_interval: float = 2.0,
        formats: tuple[str, ...] | list[str] = ("csv", "parquet", "tensorboard"),
        max_queue_rows: int = 65_536,
        max_queue_bytes: int = 256 * 2**20,
        exit_timeout: float = 10.0,
        image_workers: int = 2,
        jpeg_quality: int = 90,
        record_git: bool = True,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        # Validated once, here; everything below reads the frozen result.
        options = self._options = Options.of(
            save_dir=save_dir, name=name, debug=debug, version=version, autosave=autosave,
            description=description, create_git_tag=create_git_tag, rank=rank, per_rank=per_rank,
            flush_interval=flush_interval, formats=formats, max_queue_rows=max_queue_rows,
            max_queue_bytes=max_queue_bytes, exit_timeout=exit_timeout, image_workers=image_workers,
            jpeg_quality=jpeg_quality, record_git=record_git, filesystem=filesystem)
        save_dir, version, rank = options.save_dir, options.version, options.rank
        formats = options.formats
        self.name = name
        self.save_dir = save_dir
        self.debug = bool(debug)
        # debug mode writes nothing whatever the rank, so a bad RANK variable cannot stop it
        self.rank = int(rank) if rank is not None else 0 if debug else _rank.detect_rank()
        self.per_rank = bool(per_rank)
        # Nothing to write: debug mode, or a rank other than 0 in multi-process training.
        self._inert = self.debug or (self.rank > 0 and not self.per_rank)
        self.autosave = bool(autosave)
        self.description = description
        self.create_git_tag = bool(create_git_tag)
        self.tags: dict[str, Any] = {}
        self.created_at = _utc_text()
        self._exit_timeout = exit_timeout
        self._max_rows = max_queue_rows
        self._max_bytes = max_queue_bytes
        self._deferred: deque[Any] = deque()  # rows with device tensors, read by the writer
        self._steps = Steps()  # one counter orders every row, fast or slow, and gives its step
        self._columns: dict[str, pa.DataType] = {}
        self._lock = threading.Lock()
        self._image_bytes = 0
        self._media_names: set[str] = set()
        self._closed = False
        self._released = False
        self._pid = os.getpid()
        self._failed = False
        self._upload: Uploader | None = None
        if self._inert:
            self._folder = (RunFolder.where_remote(options.location, name, version, ask=not self.debug)
                            if options.remote
                            else RunFolder.where(self.save_dir, name, version))
            self.version, self.log_dir = self._folder.version, self._folder.log_dir
            # A plain function in the instance: a rank above 0 pays one call per log().
            self.__dict__["log"] = _inert_log
            return

        _warm_up()
        if options.remote:
            self._folder = RunFolder.claim_remote(options.location, name, version,
                                                  given_filesystem=options.filesystem_given, rank=self.rank,
                                                  per_rank=self.per_rank)
        else:
            self._folder = RunFolder.claim(self.save_dir, name, version, rank=self.rank, per_rank=self.per_rank)
        remote = self._folder.remote
        self.version = self._folder.version
        # On object storage, log_dir is the version's path in the store; the engine writes its spool.
        self.log_dir = self._folder.log_dir if remote is None else remote.path
        try:
            self._open(formats, flush_interval, image_workers, jpeg_quality, record_git)
            if remote is not None:
                self._upload = Uploader(remote, label=f"{self.name}/version_{self.version}")
                self._heartbeat.upload = self._upload  # it looks at the spool after each flush
        except BaseException:
            self._folder.release()
            if remote is not None:
                remote.release_claim()
            raise
        # The compiled fast path becomes this Experiment's log(); the method below
        # documents it and serves debug mode.
        self._fast.log.__doc__ = Experiment.log.__doc__
        self.__dict__["log"] = self._fast.log
        _exit.register(self)
        self._writer.start()
        if self._upload is not None:
            self._upload.start()

    def _open(
        self, formats: tuple[str, ...] | list[str], flush_interval: float, image_workers: int, jpeg_quality: int,
        record_git: bool,
    ) -> None:
        folder = self._folder
        existing = self._resume(folder.recover())
        self._git = _git.snapshot(
            os.getcwd(),
            tag_name=f"tt_{self.name}_v{self.version}" if self.create_git_tag else None,
            message=f"Test tube exp: {self.name}" + (f" - {self.description}" if self.description else ""),
        ) if (record_git or self.create_git_tag) else {"ok": False, "error": "not recorded (record_git=False)"}
        self._media = MediaEncoder(folder.media, workers=image_workers, jpeg_quality=jpeg_quality,
                                   on_done=self._release_bytes)
        nslots, var_bytes = _ring.geometry(self._max_rows, self._max_bytes)
        self._ring = _ring.Ring(folder.ring, nslots, var_bytes)
        self._fast = FastPath(self._steps, self._ring, self._log_slow, self._wait_room_for, self._lock)
        source = RingSource(self._ring, self._steps, self._fast, self._deferred, self._columns)
        journal = JournalFile(folder.journal, source)
        sinks: list[Sink] = []
        if "csv" in formats:
            sinks.append(CsvSink(folder.csv, journal))
        if "parquet" in formats:
            sinks.append(ParquetSink(folder.parquet, journal, rows=existing))
        if "tensorboard" in formats:
            sinks.append(TensorBoardSink(os.path.join(folder.log_dir, TF_DIR), folder.media, tags=self._tags_snapshot,
                                         group=f"{self.name}/version_{self.version}"))
        if existing:
            # Resuming: rebuild the published files from the journal once,
            # whatever a crash left them as.
            for sink in sinks:
                sink.close()
        self._heartbeat = Heartbeat(folder, self._meta_record(flush_interval), self.tags)
        self._writer = Writer(source, journal, sinks, self._media, self._heartbeat,
                              label=f"{self.name}/version_{self.version}", autosave=self.autosave,
                              flush_interval=flush_interval, max_rows=self._max_rows,
                              drain_bytes=min(BATCH_BYTES, var_bytes // 2))
        self._heartbeat.write("running")
        self._heartbeat.write_tags()

    def _resume(self, found: Recovered) -> int:
        """Take up what earlier sessions of this version left (tags, step, columns); return its row count."""
        self._columns.update(found.columns)
        if found.rows:
            self._steps.continue_after(found.last_step)
        self.tags.update(found.tags)
        if found.meta.get("created_at"):
            self.created_at = found.meta["created_at"]
        if self.description is None and found.meta.get("description") is not None:
            self.description = found.meta["description"]
        self._media_names.update(found.media_names)
        return found.rows

    # -- the hot path ----------------------------------------------------------

    def log(self, metrics: Mapping[str, Any] | None = None, step: int | None = None, *, global_step: int | None = None,
            metrics_dict: Mapping[str, Any] | None = None) -> None:
        """Add one row: ``metrics`` plus ``step`` and ``created_at``.

        Never does I/O (the row is stored into the ring, a memory-mapped file, before
        it returns: it survives a crash of the process); blocks only while the ring is full.  ``step`` defaults
        to one more than the previous row's; ``global_step`` is the original's
        name for it.  Values are captured now: changing ``metrics`` afterwards
        changes nothing.  Raises ``TypeError``/``ValueError`` naming the key for
        a value that cannot be stored, and then nothing of the row is queued.
        ``metrics_dict`` is 0.7.5's name for ``metrics``, for calls by keyword.
        """
        # Each open Experiment replaces this method with its compiled fast path
        # (``_fastpath``), which hands every row it does not know to _log_slow.
        self._log_slow(metrics, step, global_step, metrics_dict)

    def _log_slow(self, metrics: Any, step: Any, global_step: Any, metrics_dict: Any = None, *,
                  walltime: float | None = None) -> None:
        now = _time_ns() if walltime is None else _walltime_ns(walltime)
        if self._inert:
            return
        self._check_usable("log")
        if metrics_dict is not None:
            if metrics is not None:
                raise LogTypeError("log(): pass the row once, as metrics or as metrics_dict (0.7.5's name), not both")
            metrics = metrics_dict
        if not isinstance(metrics, Mapping):
            raise LogTypeError(f"log() takes a dict of values, got {type(metrics).__name__}",
                               value_type=type(metrics))
        step = resolve_step(step, global_step)
        row = flatten(metrics)
        names: list[str] = []
        values: list[Any] = []
        types: list[pa.DataType] = []
        items: list[int] = []
        images: list[tuple[int, str, Any]] = []
        text_bytes = 0
        for key, value in row.items():
            ext = image_extension(key)
            if ext is not None and _is_array_like(value):
                images.append((len(names), key, normalise_image(key, ext, value)))
                value, typ = None, STR
            else:
                value, typ, deferred = normalise(key, value)
                if deferred:
                    items.append(len(names))
                elif typ == STR:
                    text_bytes += len(value)
            names.append(key)
            values.append(value)
            types.append(typ)
        image_bytes = sum(img.pixels.nbytes for _, _, img in images)
        key_names = tuple(names)
        plain = tuple(v.item() if isinstance(v, np.generic) else v for v in values)
        # What the var record will take, with room for the step, the time and image names.
        need = 0 if items else len(_ring.var_payload(0, 0, 0, key_names, plain)) + 64 * (len(images) + 1)
        if need > self._ring.var_bytes - 64:
            raise LogValueError(
                f"log(): this row takes {need} bytes, more than the {self._ring.var_bytes} bytes the "
                f"queue holds for text (max_queue_bytes); log long text in several rows or raise max_queue_bytes",
                key=max(names, key=lambda k: len(str(values[names.index(k)]))) if names else None)
        while True:
            self._wait_for_room(image_bytes, need)
            with self._lock:
                self._check_usable("log")
                if not self._ring.fits(need):
                    continue  # another thread took the room: wait again
                changed: dict[str, pa.DataType] = {}
                for name, typ in zip(names, types):
                    old = changed.get(name, self._columns.get(name))
                    new = typ if old is None else widen(old, typ, name)
                    if new != old:
                        changed[name] = new
                seq = -1  # none taken yet
                try:
                    # Nothing between taking the number and the try can raise (see _fastpath).
                    for seq in self._steps.counter:
                        break
                    step = self._steps.step_for(seq, step)
                    self._columns.update(changed)
                    for pos, key, image in images:
                        values[pos] = self._media_name(key, image.ext, step)
                    if items:
                        queued: dict[Any, Any] = dict(zip(names, values))
                        queued[STEP] = step
                        queued[TIME] = now
                        queued[SEQ] = seq
                        queued[SHAPE] = shape_code(key_names, tuple(items))
                        self._writer.deferred_seen = True
                        self._deferred.append(queued)
                        kind = _ring.DEFERRED
                    else:
                        if images:
                            plain = tuple(v.item() if isinstance(v, np.generic) else v for v in values)
                        self._ring.put_var(_ring.var_payload(seq, step, now, key_names, plain))
                        kind = _ring.SLOW
                    self._image_bytes += image_bytes
                except BaseException:
                    if seq >= 0:
                        self._skip(seq)
                    raise
            break
        # The slot is written outside the lock: it may have to wait for the writer to free it.
        try:
            self._wait_room_for(seq)
            self._ring.mark(seq, kind, step, now)
        except BaseException:
            self._skip(seq)
            raise
        for pos, _, image in images:
            self._media.submit(values[pos], image)
        if key_names and type(metrics) is dict and not images:
            self._teach_fast_path(metrics, row, values)

    def _teach_fast_path(self, metrics: dict[str, Any], row: dict[str, Any], snapshots: list[Any]) -> None:
        """Let the next row of this layout and these value types take the fast path.

        ``row`` is ``metrics`` flattened, ``snapshots`` what was queued for its values.
        """
        shape = shape_of(metrics, row, snapshots)
        if shape is None:
            return
        with self._lock:
            if self._closed or self._writer.error is not None or _exit.forked(self._pid):
                return
            self._fast.add(*shape)
            # A writer error closed the fast path; the slow path has raised it since.
            self._fast.open = True

    def _media_name(self, key: str, ext: str, step: int) -> str:
        return _layout.media_name(media_stem(key, ext), ext, step, self._media_names)

    def _queued_rows(self) -> int:
        return self._writer.queued_rows()

    @property
    def _queued_bytes(self) -> int:
        """Bytes of text and images submitted and not yet written."""
        return self._image_bytes + self._writer.queued_bytes()

    def _skip(self, seq: int) -> None:
        """Mark a sequence number whose row was not stored, now or once its slot is free."""
        if seq < self._ring.limit:
            self._ring.skip(seq)
        else:
            self._writer.late_skips.append(seq)
            self._writer.wake.set()

    def _wait_room_for(self, seq: int) -> None:
        """Wait until the slot of ``seq`` is free (called by the compiled log() when the ring is full)."""
        if seq >= self._ring.room[0]:
            self._writer.wait_room(seq, lambda: self._check_usable("log", closing_ok=True))

    def _wait_for_room(self, image_bytes: int, var_bytes: int) -> None:
        while (self._image_bytes and self._image_bytes + image_bytes > self._max_bytes) or \
                not self._ring.fits(var_bytes):
            self._check_usable("log")
            writer = self._writer
            writer.drained.clear()
            writer.wake.set()
            if not writer.thread.is_alive():
                writer.cycle()
            writer.drained.wait(0.05)

    def _release_bytes(self, nbytes: int) -> None:
        if nbytes:
            with self._lock:
                self._image_bytes -= nbytes

    def _check_usable(self, what: str, *, closing_ok: bool = False) -> None:
        if _exit.forked(self._pid):
            raise ExperimentClosedError(
                f"{what}(): this Experiment was opened in process {self._pid}; a forked child cannot "
                f"write to it. Log from the parent, or open an Experiment in the child."
            )
        if self._closed and not closing_ok:
            raise ExperimentClosedError(f"{what}(): the Experiment {self.name}/version_{self.version} is closed")
        error = self._writer.take_error()
        if error is not None:
            raise writer_error(error, self._writer.label) from error

    # -- everything else ---------------------------------------------------------

    def tag(self, tags: Mapping[str, Any] | None = None, *, tag_dict: Mapping[str, Any] | None = None) -> None:
        """Add tags (hyperparameters, notes); written to ``meta_tags.csv`` at the next flush.

        ``tag_dict`` is 0.7.5's name for ``tags``, for calls by keyword.
        """
        if self._inert:
            return
        if tag_dict is not None:
            if tags is not None:
                raise LogTypeError("tag(): pass the tags once, as tags or as tag_dict (0.7.5's name), not both")
            tags = tag_dict
        if not isinstance(tags, Mapping):
            raise LogTypeError(f"tag() takes a dict, got {type(tags).__name__}", value_type=type(tags))
        _check_tags(tags)
        self._check_usable("tag")
        self._heartbeat.tag(dict(tags))

    def argparse(self, namespace: Any) -> None:
        """Record every hyperparameter of an ``argparse.Namespace`` as a tag (methods are skipped)."""
        self.tag({k: v for k, v in vars(namespace).items() if not k.startswith("_") and not callable(v)})

    def save(self, timeout: float | None = None) -> None:
        """Block until every row and image logged before this call is on disk.

        That is: in ``metrics.csv``, in the journal (``test_tube.read()``) and in
        ``media/``.  ``metrics.parquet`` is refreshed when its rule says so (it is
        never more than half the run behind) and is complete after ``close()``.

        On object storage it also waits until the journal, the images and the
        tags are in the store, and raises ``WriterError`` (cause chained) when
        the store answered nothing for 10 s (every row stays in the local spool).

        Raises ``WriterError`` (cause chained) if the writer failed, and
        ``TimeoutError`` if ``timeout`` seconds pass first.
        """
        if self._inert:
            return
        self._check_usable("save")
        start = time.monotonic()
        barrier = self._writer.flush(timeout)
        self._after_barrier(barrier, "save")
        if self._upload is not None:
            self._upload.sync(None if timeout is None else max(0.0, timeout - (time.monotonic() - start)))

    def _after_barrier(self, barrier: Any, what: str) -> None:
        error = self._writer.take_error() or barrier.error
        if error is not None:
            raise writer_error(error, self._writer.label) from error
        if not barrier.done.is_set():
            raise TimeoutError(f"{what}(): the writer did not finish in time; rows are still queued")

    def close(self, timeout: float | None = None, *, failed: bool = False) -> None:
        """Flush, complete ``metrics.parquet``, stop the writer and release the version.

        Blocks until done, or ``timeout`` seconds (then raises ``TimeoutError``;
        the rows still queued are written by the final flush at exit).  A second
        call does nothing; ``log()`` afterwards raises ``ExperimentClosedError``.
        ``failed=True`` records the run as ``failed`` (end reason
        ``close(failed=True)``) instead of ``finished``: for a training loop that
        stopped on an error it handled itself.  On object storage it then waits
        for the uploads at most ``timeout`` (default ``exit_timeout``) seconds;
        an ``UploadWarning`` names what was not uploaded and the spool keeping it.
        """
        if self._inert or self._closed or _exit.forked(self._pid):
            self._closed = True
            return
        self._stop_taking_rows()
        barrier = self._writer.flush(timeout, final=True)
        if not barrier.done.is_set():
            # Not released: the final flush at exit tries again for what is left.
            raise TimeoutError(f"close(): the writer did not finish within {timeout} s; rows are still queued")
        reason = "close(failed=True)" if failed else "exception in with block" if self._failed else "close"
        raising = False
        try:
            self._writer.thread.join(5.0)
            self._after_barrier(barrier, "close")
            if self._writer.lost_rows:
                # The error was raised by an earlier call; the run still lost rows.
                reason = f"writer error: {self._writer.lost_rows} rows lost"
        except BaseException as exc:
            reason = f"writer error: {type(exc.__cause__ or exc).__name__}"
            raising = True
            raise
        finally:
            self._release("finished" if reason == "close" else "failed", reason, quiet=raising,
                          upload_timeout=timeout)

    def _stop_taking_rows(self) -> None:
        """Refuse every row from now on, under the lock the slow path queues and teaches under.

        So a row on the slow path is queued ahead of the final barrier or
        refused, and teaching the fast path a new shape cannot open it again.
        The wait is bounded: at exit a frozen daemon thread might hold the lock.
        """
        locked = self._lock.acquire(timeout=5.0)
        try:
            self._closed = True
            self._heartbeat.stop()
            self._fast.open = False
        finally:
            if locked:
                self._lock.release()

    def _final_close(self, timeout: float | None) -> tuple[int, str]:
        """The flush at interpreter exit: the rows it could not write, and why."""
        if self._released:
            return 0, ""
        self._stop_taking_rows()
        limit = self._exit_timeout if timeout is None else timeout
        start = time.monotonic()
        barrier = self._writer.flush(limit, final=True)
        if not barrier.done.is_set():
            return self._writer.pending_rows(), f"the final flush timed out after {limit} s"
        error = self._writer.take_error() or barrier.error
        lost = (self._writer.pending_rows() if error is not None else 0) + self._writer.lost_rows
        # The interpreter sets sys.last_value when the script died of an uncaught exception.
        uncaught = getattr(sys, "last_value", None)
        if error is not None:
            reason = f"writer error: {type(error).__name__}"
        elif self._writer.lost_rows:
            reason = f"writer error: {self._writer.lost_rows} rows lost"
        elif _exit.received_signal is not None:
            reason = f"signal {signal.Signals(_exit.received_signal).name}"
        elif uncaught is not None:
            reason = f"uncaught {type(uncaught).__name__}"
        else:
            reason = "exit"
        # No summary for runs() here: computed in the exit flush (Ctrl-C held), it made a script stopped
        # by Ctrl-C exit with status 1 instead of by SIGINT. runs() reads such a run from its files.
        self._release("finished" if reason == "exit" and not self._failed else "failed", reason,
                      quiet=error is not None, summary=False,
                      upload_timeout=max(0.0, limit - (time.monotonic() - start)))
        if error is None and self._writer.lost_rows:
            return lost, f"the writer failed earlier and dropped {self._writer.lost_rows} rows"
        return lost, "" if error is None else f"the writer failed: {type(error).__name__}: {error}"

    def _release(self, status: str, reason: str, *, quiet: bool = False, summary: bool = True,
                 upload_timeout: float | None = None) -> None:
        """Record the end in meta.experiment and let go of threads, files and the lock.

        A failure to write the metadata is raised as ``WriterError``, unless
        ``quiet`` (an error is already on its way up, and that one says more).
        On object storage the spool is then uploaded within ``upload_timeout``
        (default ``exit_timeout``) seconds; what was not is named in an ``UploadWarning``.
        """
        self._released = True
        try:
            self._heartbeat.write(status, reason, summary=self._folder.summary() if summary else None)
        except OSError as exc:
            if not quiet:
                raise writer_error(exc, self._writer.label) from exc
        finally:
            self._media.stop()
            # The ring goes once every row is in the journal; otherwise the next open recovers it.
            self._writer.close_files(remove_ring=self._writer.queued_rows() == 0 and self._writer.error is None)
            self._folder.release()
            _exit.unregister(self)
            if self._upload is not None:
                self._finish_upload(self._exit_timeout if upload_timeout is None else upload_timeout)

    def _finish_upload(self, timeout: float) -> None:
        assert self._upload is not None
        missing = self._upload.finish(timeout)
        if missing:
            warn_from_caller(UploadWarning(
                f"test_tube: {self.name}/version_{self.version} is not complete on the store {self.save_dir} "
                f"after {timeout:g} s: not uploaded: {missing}. Every row is kept in the local spool "
                f"{self._upload.spool}; opening this version again on this host (version={self.version}) "
                f"uploads the rest", spool=self._upload.spool))

    def _meta_record(self, flush_interval: float) -> dict[str, Any]:
        """meta.experiment's fields in order; status and times are filled at each write."""
        return {
            "name": self.name,
            "version": self.version,
            "tags_path": os.path.join(self.log_dir, _layout.TAGS),
            "metrics_path": os.path.join(self.log_dir, _layout.CSV),
            "autosave": self.autosave,
            "description": self.description,
            "created_at": self.created_at,
            "exp_hash": f"{self.name}_v{self.version}",
            "format": _layout.FORMAT,
            "status": None,
            "pid": self._pid,
            "host": _layout.host(),
            "updated_at": None,
            "ended_at": None,
            "end_reason": None,
            "flush_interval": flush_interval,
            "git": self._git,
        }

    def _after_fork_in_child(self) -> None:
        """Called by ``_exit``'s at-fork hook only: this copy owns nothing now; each stage lets go."""
        self._fast.open = False
        self._lock = self._fast.lock = threading.Lock()
        stages: list[Any] = [self._heartbeat, self._writer, self._media, self._folder]
        if self._upload is not None:
            stages.insert(0, self._upload)
        for stage in stages:
            stage.after_fork_in_child()

    def get_data_path(self, exp_name: str, exp_version: int) -> str:
        """The version folder of ``exp_name``/``exp_version`` under this save_dir (a path in the store on one)."""
        if self._options.remote:
            return self._options.location.join(exp_name, f"version_{exp_version}")
        return _layout.version_dir(self.save_dir, exp_name, exp_version)

    def get_media_path(self, exp_name: str, exp_version: int) -> str:
        """The ``media/`` folder of ``exp_name``/``exp_version`` under this save_dir."""
        if self._options.remote:
            return f"{self.get_data_path(exp_name, exp_version)}/{_layout.MEDIA}"
        return os.path.join(self.get_data_path(exp_name, exp_version), _layout.MEDIA)

    def __enter__(self) -> Experiment:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # sys.exit(0) inside the block (a job that checkpointed and asked to be requeued) ends it normally.
        if exc_type is not None and not (isinstance(exc, SystemExit) and exc.code in (None, 0)):
            self._failed = True
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError(
            "an Experiment cannot be pickled: it owns a writer thread and open files. "
            "Pass exp.log_dir to the worker and read results with test_tube.read(), "
            "open a separate Experiment in the worker, or pickle exp.get_meta_copy() (0.7.5's stand-in)."
        )

    def __str__(self) -> str:
        return f"Exp: {self.name}, v: {self.version}"

    def __repr__(self) -> str:
        state = "debug" if self.debug else "inert" if self._inert else "closed" if self._closed else "open"
        return f"<Experiment {self.name!r} version={self.version} {state} log_dir={self.log_dir!r}>"


def _check_tags(tags: Mapping[Any, Any]) -> None:
    """Refuse, at the call, a tag that could not be written to ``meta_tags.csv`` later.

    Each value is written as its ``str()``; one whose ``__str__`` raises, or a
    key or text holding a lone surrogate, would fail every later write of the
    tags file.
    """
    for key, value in tags.items():
        if type(key) is not str or not key:
            raise LogTypeError(f"tag(): keys must be non-empty str, got {key!r}", key=key, value_type=type(key))
        check_text("tag()", key, key, what="key")
        try:
            text = _layout.tag_text(value)
        except Exception as exc:
            raise LogTypeError(f"tag(): str() of the value of {key!r} failed ({type(exc).__name__}: {exc}); "
                               f"tags are written as text", key=key, value_type=type(value)) from exc
        if type(text) is not str:
            raise LogTypeError(f"tag(): str() of the value of {key!r} gave a {type(text).__name__}, not a str",
                               key=key, value_type=type(value))
        check_text("tag()", key, text)


def _inert_log(metrics: Any = None, step: Any = None, *, global_step: Any = None, metrics_dict: Any = None) -> None:
    """log() of an Experiment that writes nothing (debug mode, a rank above 0)."""


def _walltime_ns(walltime: Any) -> int:
    """A SummaryWriter ``walltime`` (seconds since the epoch) as the row's time in ns."""
    if type(walltime) is bool or not isinstance(walltime, (int, float, np.integer, np.floating)):
        raise LogTypeError(f"walltime must be seconds since the epoch (a number), got {walltime!r}", key="walltime",
                           value_type=type(walltime))
    seconds = float(walltime)
    if not 0 <= seconds < 2**62 / 1e9:
        raise LogValueError(f"walltime must be seconds since the epoch, got {walltime!r}", key="walltime")
    # Rows keep microseconds; going through ns in a float would store 1700000000.25 as .249999.
    return round(seconds * 1e6) * 1000


def _is_array_like(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return True
    if isinstance(value, (int, float, bool, str, np.generic)) or value is None:
        return False
    return hasattr(value, "__array__")


def _utc_text() -> str:
    return str(datetime.now(timezone.utc).replace(tzinfo=None))


_warmed = False


def _warm_up() -> None:
    """Run each pyarrow code path the final flush needs once, now.

    pyarrow imports parts of itself lazily on first use; the first use must not
    happen during interpreter shutdown, where imports that register exit hooks fail.
    """
    global _warmed
    if _warmed:
        return
    import io

    import pyarrow.parquet as pq

    from ._engine._sinks import format_rows

    table = pa.table({"f": pa.array([1.0]), "b": pa.array([True]), "s": pa.array(["a,b"], STR)})
    table = concat([BASE_SCHEMA.empty_table(), table])
    format_rows(table, table.column_names)
    pq.write_table(table, io.BytesIO())
    _journal.read_frames(os.devnull)
    b"".join(bytes(memoryview(p)) for p in _journal.encode(table))
    _warmed = True
