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
import pyarrow.compute as pc

from . import _exit, _git, _journal, _layout, _rank, _recovery, _rendezvous
from ._errors import ExperimentClosedError, LogTypeError, LogValueError
from ._fastpath import FastPath, Steps, shape_of
from ._media import MediaEncoder
from ._read import _read_legacy_csv
from ._rows import (
    INT64_MAX,
    INT64_MIN,
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
from ._sinks import CsvSink, ParquetSink, Sink
from ._summary_writer import SummaryWriterMethods
from ._tensorboard import TF_DIR, TensorBoardSink
from ._schema import BASE_SCHEMA, concat
from ._writer import BATCH_BYTES, Writer, writer_error

_time_ns = time.time_ns
_FORMATS = frozenset({"csv", "parquet", "tensorboard"})
DEFAULT_SAVE_DIR = "test_tube_logs"


class Experiment(SummaryWriterMethods):
    """One run of a training script: its tags, its logged rows and its images.

    ``log()`` never does I/O: it snapshots the row, appends it to an in-memory
    queue and returns; it blocks only when the queue is full (``max_queue_rows``
    rows or ``max_queue_bytes`` of text and images).  A background writer thread
    drains the queue, appends to a crash-tolerant journal and publishes
    ``metrics.csv``/``metrics.parquet``.  ``save()`` blocks until every row
    logged before it is in those files.  All methods are thread-safe.

    Positional arguments follow test-tube 0.7.5's order, ``(save_dir, name,
    debug, version, autosave, description, create_git_tag, rank)``, so code
    written for it keeps working; pass them by keyword to be clear.

    Args:
        save_dir: root folder; ``None`` means ``./test_tube_logs`` in the
            current working directory.
        name: experiment name; files go to ``<save_dir>/<name>/version_<N>/``.
        debug: if true, nothing is created, no thread starts, every method does nothing.
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
        flush_interval: seconds between periodic flushes; a crash loses at most this window.
        formats: published files, a subset of ``{"csv", "parquet", "tensorboard"}``; all three
            by default.  ``"tensorboard"`` writes ``tf/events.out.tfevents.*`` (see ``_tensorboard``),
            so ``tensorboard --logdir <save_dir>`` shows the run, as test-tube 0.7.5's did.
        max_queue_rows: rows that may wait for the writer before ``log()`` blocks (on the fast
            path, rows of one key set; see ``_fastpath``).
        max_queue_bytes: bytes of strings and images that may wait before ``log()`` blocks.
        exit_timeout: seconds the final flush at interpreter exit may take.
        image_workers: threads encoding images in parallel.
        jpeg_quality: JPEG quality (1-95) for ``jpg``/``jpeg`` keys.
        record_git: record the HEAD commit and dirty flag in ``meta.experiment``.
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
    ) -> None:
        _check_positional(debug=debug, autosave=autosave, create_git_tag=create_git_tag, description=description)
        _check_options(name, version, rank, flush_interval, formats, max_queue_rows, max_queue_bytes, exit_timeout,
                       image_workers, jpeg_quality)
        self.name = name
        self.save_dir = os.path.abspath(os.fspath(save_dir) if save_dir is not None else DEFAULT_SAVE_DIR)
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
        self._queue: deque[Any] = deque()  # rows of the slow path, and flush barriers
        self._steps = Steps()  # one counter orders every row, fast or slow, and gives its step
        self._fast = FastPath(self._steps, max_queue_rows, self._log_slow)
        self._columns: dict[str, pa.DataType] = {}
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self._media_names: set[str] = set()
        self._closed = False
        self._released = False
        self._pid = os.getpid()
        self._tags_dirty = False
        self._failed = False
        exp_dir = _layout.experiment_dir(self.save_dir, name)
        if self._inert:
            self.version = version if version is not None else _layout.next_version(exp_dir)
            self.log_dir = _layout.version_dir(self.save_dir, name, self.version)
            # A plain function in the instance: a rank above 0 pays one call per log().
            self.__dict__["log"] = _inert_log
            return

        _warm_up()
        if self.per_rank:
            self.version = version if version is not None else _rendezvous.shared_version(exp_dir, self.rank)
            self.log_dir = os.path.join(_layout.version_dir(self.save_dir, name, self.version), f"rank_{self.rank}")
            os.makedirs(self.log_dir, exist_ok=True)
        elif version is None:
            self.version = _layout.claim_version(exp_dir)
            self.log_dir = _layout.version_dir(self.save_dir, name, self.version)
        else:
            self.version = version
            self.log_dir = _layout.version_dir(self.save_dir, name, self.version)
            os.makedirs(self.log_dir, exist_ok=True)
        self._lock_fd = _layout.lock(self.log_dir)
        try:
            self._open(formats, flush_interval, image_workers, jpeg_quality, record_git)
        except BaseException:
            os.close(self._lock_fd)
            raise
        # The compiled fast path becomes this Experiment's log(); the method below
        # documents it and serves debug mode.
        self._fast.log.__doc__ = Experiment.log.__doc__
        self.__dict__["log"] = self._fast.log
        _exit.register(self)
        self._writer.start()

    def _open(
        self, formats: tuple[str, ...] | list[str], flush_interval: float, image_workers: int, jpeg_quality: int,
        record_git: bool,
    ) -> None:
        media_dir = os.path.join(self.log_dir, _layout.MEDIA)
        os.makedirs(media_dir, exist_ok=True)
        journal_path = os.path.join(self.log_dir, _layout.JOURNAL)
        existing = self._recover(journal_path, media_dir)
        self._git = _git.snapshot(
            os.getcwd(),
            tag_name=f"tt_{self.name}_v{self.version}" if self.create_git_tag else None,
            message=f"Test tube exp: {self.name}" + (f" - {self.description}" if self.description else ""),
        ) if (record_git or self.create_git_tag) else {"ok": False, "error": "not recorded (record_git=False)"}
        self._media = MediaEncoder(media_dir, workers=image_workers, jpeg_quality=jpeg_quality,
                                   on_done=self._release_bytes)
        sinks: list[Sink] = []
        self._writer = Writer(
            label=f"{self.name}/version_{self.version}",
            queue=self._queue,
            fast=self._fast,
            columns=self._columns,
            journal_path=journal_path,
            sinks=sinks,
            media=self._media,
            autosave=self.autosave,
            flush_interval=flush_interval,
            max_pending_bytes=max(self._max_bytes, 64 * 2**20),
            queued_bytes=self._queued_byte_count,
            drain_bytes=min(BATCH_BYTES, self._max_bytes // 2),
            on_publish=self._on_publish,
            on_drain=self._release_bytes,
            on_error=self._on_writer_error,
        )
        if "csv" in formats:
            sinks.append(CsvSink(os.path.join(self.log_dir, _layout.CSV), self._writer))
        if "parquet" in formats:
            sinks.append(ParquetSink(os.path.join(self.log_dir, _layout.PARQUET), self._writer, rows=existing))
        if "tensorboard" in formats:
            sinks.append(TensorBoardSink(os.path.join(self.log_dir, TF_DIR), media_dir, tags=self._tags_snapshot,
                                         group=f"{self.name}/version_{self.version}"))
        if existing:
            # Resuming: rebuild the published files from the journal once,
            # whatever a crash left them as.
            for sink in sinks:
                sink.close()
        self._write_meta("running")
        _layout.write_tags(self.log_dir, {k: _layout.tag_text(v) for k, v in self.tags.items()})

    def _recover(self, journal_path: str, media_dir: str) -> int:
        """Load what an earlier session of this version left (tags, step, columns); return its row count."""
        # First, so that no published file is rebuilt from a journal that holds fewer rows than it.
        _recovery.repair_before_resume(self.log_dir)
        if not os.path.exists(journal_path):
            _import_legacy_csv(self.log_dir, journal_path)
        rows = 0
        end = 0
        last_step = -1
        for frame, end in _journal.iter_frames(journal_path):
            rows += frame.num_rows
            if frame.num_rows:
                last_step = frame.column("step")[-1].as_py()
            for field in frame.schema:
                if field.name not in ("step", "created_at"):
                    old = self._columns.get(field.name)
                    self._columns[field.name] = field.type if old is None else widen(old, field.type, field.name)
        if os.path.exists(journal_path) and os.path.getsize(journal_path) > end:
            os.truncate(journal_path, end)  # a torn frame from a crash
        if rows:
            self._steps.continue_after(last_step)
        self.tags.update(_layout.read_tags(self.log_dir))
        old = _layout.read_meta(self.log_dir)
        if old.get("created_at"):
            self.created_at = old["created_at"]
        if self.description is None and old.get("description") is not None:
            self.description = old["description"]
        self._media_names.update(os.listdir(media_dir))
        return rows

    # -- the hot path ----------------------------------------------------------

    def log(self, metrics: Mapping[str, Any] | None = None, step: int | None = None, *, global_step: int | None = None,
            metrics_dict: Mapping[str, Any] | None = None) -> None:
        """Add one row: ``metrics`` plus ``step`` and ``created_at``.

        Never does I/O; blocks only while the queue is full.  ``step`` defaults
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
        step = _resolve_step(step, global_step)
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
        self._wait_for_room(text_bytes + image_bytes)
        with self._lock:
            self._check_usable("log")
            changed: dict[str, pa.DataType] = {}
            for name, typ in zip(names, types):
                old = changed.get(name, self._columns.get(name))
                new = typ if old is None else widen(old, typ, name)
                if new != old:
                    changed[name] = new
            self._columns.update(changed)
            seq, step = self._steps.take(step)
            for pos, key, image in images:
                values[pos] = self._media_name(key, image.ext, step)
            self._queued_bytes += text_bytes + image_bytes
            key_names = tuple(names)
            queued: dict[Any, Any] = dict(zip(names, values))
            queued[STEP] = step
            queued[TIME] = now
            queued[SEQ] = seq
            if items:
                queued[SHAPE] = shape_code(key_names, tuple(items))
                self._writer.deferred_seen = True
            # Under the lock that close() takes: the row is ahead of the final barrier, or refused.
            self._queue.append(queued)
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
            if self._closed or self._writer.error is not None or self._pid != os.getpid():
                return
            self._fast.add(*shape)
            # A writer error closed the fast path; the slow path has raised it since.
            self._fast.open = True

    def _media_name(self, key: str, ext: str, step: int) -> str:
        stem = media_stem(key, ext)
        base = f"{stem}_{step}"
        name = f"{base}.{ext}"
        counter = 1
        while name in self._media_names:
            name = f"{base}_{counter}.{ext}"
            counter += 1
        self._media_names.add(name)
        return f"{_layout.MEDIA}/{name}"

    def _queued_rows(self) -> int:
        return self._writer.queued_rows()

    def _queued_byte_count(self) -> int:
        return self._queued_bytes

    def _wait_for_room(self, nbytes: int) -> None:
        while self._queued_rows() >= self._max_rows or (
            self._queued_bytes and self._queued_bytes + nbytes > self._max_bytes
        ):
            self._check_usable("log")
            writer = self._writer
            writer.drained.clear()
            writer.wake.set()
            if not writer.thread.is_alive():
                writer.cycle()
            writer.drained.wait(0.05)

    def _on_writer_error(self) -> None:
        # Send every log() through the slow path, which raises the error.
        with self._lock:
            self._fast.open = False

    def _release_bytes(self, nbytes: int) -> None:
        if nbytes:
            with self._lock:
                self._queued_bytes -= nbytes

    def _check_usable(self, what: str) -> None:
        if self._pid != os.getpid():
            raise ExperimentClosedError(
                f"{what}(): this Experiment was opened in process {self._pid}; a forked child cannot "
                f"write to it. Log from the parent, or open an Experiment in the child."
            )
        if self._closed:
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
        with self._lock:
            self.tags.update(tags)
            self._tags_dirty = True

    def argparse(self, namespace: Any) -> None:
        """Record every hyperparameter of an ``argparse.Namespace`` as a tag (methods are skipped)."""
        self.tag({k: v for k, v in vars(namespace).items() if not k.startswith("_") and not callable(v)})

    def save(self, timeout: float | None = None) -> None:
        """Block until every row and image logged before this call is on disk.

        That is: in ``metrics.csv``, in the journal (``test_tube.read()``) and in
        ``media/``.  ``metrics.parquet`` is refreshed when its rule says so (it is
        never more than half the run behind) and is complete after ``close()``.

        Raises ``WriterError`` (cause chained) if the writer failed, and
        ``TimeoutError`` if ``timeout`` seconds pass first.
        """
        if self._inert:
            return
        self._check_usable("save")
        barrier = self._writer.flush(timeout)
        self._after_barrier(barrier, "save")

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
        stopped on an error it handled itself.
        """
        if self._inert or self._closed or self._pid != os.getpid():
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
            self._release("finished" if reason == "close" else "failed", reason, quiet=raising)

    def _stop_taking_rows(self) -> None:
        """Refuse every row from now on, under the lock the slow path queues and teaches under.

        So a row on the slow path is queued ahead of the final barrier or
        refused, and teaching the fast path a new shape cannot open it again.
        The wait is bounded: at exit a frozen daemon thread might hold the lock.
        """
        locked = self._lock.acquire(timeout=5.0)
        try:
            self._closed = True
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
        self._release("finished" if reason == "exit" and not self._failed else "failed", reason,
                      quiet=error is not None)
        if error is None and self._writer.lost_rows:
            return lost, f"the writer failed earlier and dropped {self._writer.lost_rows} rows"
        return lost, "" if error is None else f"the writer failed: {type(error).__name__}: {error}"

    def _release(self, status: str, reason: str, *, quiet: bool = False) -> None:
        """Record the end in meta.experiment and let go of threads, files and the lock.

        A failure to write the metadata is raised as ``WriterError``, unless
        ``quiet`` (an error is already on its way up, and that one says more).
        """
        self._released = True
        try:
            self._write_meta(status, reason)
        except OSError as exc:
            if not quiet:
                raise writer_error(exc, self._writer.label) from exc
        finally:
            self._media.stop()
            self._writer.close_files()
            os.close(self._lock_fd)
            _exit.unregister(self)

    def _on_publish(self) -> None:
        """Called by the writer after each flush: refresh the metadata files (the heartbeat)."""
        with self._lock:
            dirty, self._tags_dirty = self._tags_dirty, False
            tags = {k: _layout.tag_text(v) for k, v in self.tags.items()} if dirty else None
        if tags is not None:
            _layout.write_tags(self.log_dir, tags)
        if not self._closed:
            self._write_meta("running")

    def _write_meta(self, status: str, end_reason: str | None = None) -> None:
        now = _utc_text()
        meta = {
            "name": self.name,
            "version": self.version,
            "tags_path": os.path.join(self.log_dir, _layout.TAGS),
            "metrics_path": os.path.join(self.log_dir, _layout.CSV),
            "autosave": self.autosave,
            "description": self.description,
            "created_at": self.created_at,
            "exp_hash": f"{self.name}_v{self.version}",
            "format": _layout.FORMAT,
            "status": status,
            "pid": self._pid,
            "host": _layout.host(),
            "updated_at": now,
            "ended_at": None if status == "running" else now,
            "end_reason": end_reason,
            "flush_interval": self._writer.flush_interval,
            "git": self._git,
        }
        _layout.write_meta(self.log_dir, meta)

    def _after_fork_in_child(self) -> None:
        self._fast.open = False
        self._lock = threading.Lock()
        self._writer.after_fork_in_child()
        self._media.after_fork_in_child()
        try:
            os.close(self._lock_fd)  # the parent keeps the lock; closing our copy does not drop it
        except OSError:
            pass

    def get_data_path(self, exp_name: str, exp_version: int) -> str:
        """The version folder of ``exp_name``/``exp_version`` under this save_dir."""
        return _layout.version_dir(self.save_dir, exp_name, exp_version)

    def get_media_path(self, exp_name: str, exp_version: int) -> str:
        """The ``media/`` folder of ``exp_name``/``exp_version`` under this save_dir."""
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


def _resolve_step(step: Any, global_step: Any) -> int | None:
    if global_step is not None:
        if step is not None and step != global_step:
            raise LogValueError(f"log(): step={step!r} and global_step={global_step!r} disagree; pass one")
        step = global_step
    if step is None:
        return None
    if type(step) is bool or not isinstance(step, (int, np.integer)):
        raise LogTypeError(f"log(): step must be an int, got {type(step).__name__} {step!r}", key="step",
                           value_type=type(step))
    value = int(step)
    if not INT64_MIN <= value <= INT64_MAX:
        raise LogValueError(f"log(): step {value} does not fit in a 64-bit integer", key="step")
    return value


def _is_array_like(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return True
    if isinstance(value, (int, float, bool, str, np.generic)) or value is None:
        return False
    return hasattr(value, "__array__")


def _utc_text() -> str:
    return str(datetime.now(timezone.utc).replace(tzinfo=None))


def _check_positional(*, description: Any, **flags: Any) -> None:
    """Refuse values that show arguments given in another version's positional order.

    test-tube releases put ``debug``, ``version``, ``autosave`` and
    ``description`` in different orders; a number or text where a flag goes,
    or a flag where the description goes, is an argument in the wrong place,
    never to be taken silently.
    """
    for flag, value in flags.items():
        if not (isinstance(value, (bool, np.bool_)) or (type(value) is int and value in (0, 1))):
            raise TypeError(
                f"Experiment({flag}=...) must be a bool, got {value!r}: an argument in another position? "
                f"Positional arguments follow test-tube 0.7.5 (save_dir, name, debug, version, autosave, "
                f"description, create_git_tag, rank); pass them by keyword"
            )
    if description is not None and not isinstance(description, str):
        raise TypeError(f"Experiment(description=...) must be a str or None, got {description!r}: "
                        f"an argument in another position? Pass it by keyword")


def _check_options(
    name: Any, version: Any, rank: Any, flush_interval: Any, formats: Any, max_queue_rows: Any, max_queue_bytes: Any,
    exit_timeout: Any, image_workers: Any, jpeg_quality: Any,
) -> None:
    if not isinstance(name, str) or not name or os.sep in name or name in (".", ".."):
        raise ValueError(f"Experiment(name=...) must be a non-empty folder name, got {name!r}")
    if version is not None and (type(version) is bool or not isinstance(version, (int, np.integer)) or version < 0):
        raise ValueError(f"Experiment(version=...) must be None or an int >= 0, got {version!r}")
    if rank is not None and (type(rank) is bool or not isinstance(rank, (int, np.integer)) or rank < 0):
        raise ValueError(f"Experiment(rank=...) must be None or an int >= 0, got {rank!r}")
    if not flush_interval > 0:
        raise ValueError(f"flush_interval must be > 0 seconds, got {flush_interval!r}")
    unknown = set(formats) - _FORMATS
    if unknown:
        raise ValueError(f"formats: unknown {sorted(unknown)}; choose from {sorted(_FORMATS)}")
    if max_queue_rows < 1 or max_queue_bytes < 1:
        raise ValueError("max_queue_rows and max_queue_bytes must be >= 1")
    if not exit_timeout > 0:
        raise ValueError(f"exit_timeout must be > 0 seconds, got {exit_timeout!r}")
    if image_workers < 1:
        raise ValueError(f"image_workers must be >= 1, got {image_workers!r}")
    if not 1 <= jpeg_quality <= 95:
        raise ValueError(f"jpeg_quality must be in 1..95, got {jpeg_quality!r}")


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

    from ._sinks import format_rows

    table = pa.table({"f": pa.array([1.0]), "b": pa.array([True]), "s": pa.array(["a,b"], STR)})
    table = concat([BASE_SCHEMA.empty_table(), table])
    format_rows(table, table.column_names)
    pq.write_table(table, io.BytesIO())
    _journal.read_frames(os.devnull)
    b"".join(bytes(memoryview(p)) for p in _journal.encode(table))
    _warmed = True
