"""The writer: the one thread that drains the queue and touches the run's files.

Vocabulary, used the same way everywhere:

* *submit*: ``log()`` appends a row to a queue (``collections.deque``): packed
  bytes to its shape's queue on the fast path (``_fastpath``), a dict to the
  main queue on the slow path, where flush barriers travel too;
* *drain*: the writer pops what is queued, converts it to Arrow column by
  column and puts the rows back in the order they were logged, so no row
  stays a Python object for longer than one flush window;
* *flush*: a barrier; the pending rows go to the journal, then to the published
  files (``metrics.csv``, ``metrics.parquet``), and waiting callers are released;
* *close*: a last flush that also completes ``metrics.parquet``, then the thread stops.

The writer never dies on one bad batch: an exception is kept, handed to the
next caller (``log()``, ``save()``, ``close()``), and the writer keeps going.
"""

from __future__ import annotations

import operator
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise, repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _journal
from ._errors import WriterError
from ._fastpath import FastPath, PackedShape
from ._media import MediaEncoder
from ._priority import lower_this_thread
from ._rows import FLOAT, SEQ, SHAPE, SHAPES, STEP, TIME
from ._schema import BASE_SCHEMA, concat, conform
from ._sinks import Sink

#: Rows (or bytes) after which a batch is journaled without waiting for the next flush.
BATCH_ROWS = 65_536
BATCH_BYTES = 16 * 2**20

#: Seconds between the writer's looks at the queue when nothing wakes it sooner
#: (``save()``, a full queue).
DRAIN_INTERVAL = 0.1

#: Rows that make a look a drain before the next flush is due (queued text and
#: images do too, from ``drain_bytes``).  A drain has a fixed cost of about 1 ms
#: (``benchmarks/writer_profile.py --rows 2``), mostly with the GIL held, which the
#: training loop pays: a loop logging one row every few milliseconds (or one image
#: every 50 ms) would pay it ten times a second for a handful of rows.  Fewer rows
#: wait for the flush, which drains everything, so no row stays a Python object
#: longer than one flush window.
DRAIN_ROWS = 8_192

_SEQ_FIELD = pa.field("seq", pa.int64())


class Barrier:
    """A flush request travelling through the queue behind the rows it covers."""

    __slots__ = ("done", "error", "final")

    def __init__(self, final: bool = False) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.final = final


class Writer:
    """Drains ``queue`` into the journal and the sinks on a background thread."""

    def __init__(
        self,
        *,
        label: str,
        queue: deque[Any],
        fast: FastPath,
        columns: dict[str, pa.DataType],
        journal_path: str,
        sinks: list[Sink],
        media: MediaEncoder,
        autosave: bool,
        flush_interval: float,
        max_pending_bytes: int,
        queued_bytes: Callable[[], int],
        drain_bytes: int,
        on_publish: Callable[[], None],
        on_drain: Callable[[int], None],
        on_error: Callable[[], None],
    ) -> None:
        self.label = label
        self.queue = queue
        self.fast = fast
        self.columns = columns
        self.journal_path = journal_path
        self.sinks = sinks
        self.media = media
        self.autosave = autosave
        self.flush_interval = flush_interval
        self.max_pending_bytes = max_pending_bytes
        self._queued_bytes = queued_bytes  # text and images submitted, not yet released
        self.drain_bytes = drain_bytes
        self._on_publish = on_publish
        self._on_drain = on_drain
        self._on_error = on_error
        self.error: BaseException | None = None
        self.wake = threading.Event()
        self.drained = threading.Event()
        # Raised by callers, lowered by the writer: under a lock, since a lost
        # update would let a barrier be taken for a row, or stop the writer early.
        self.barriers_pending = 0
        self._barrier_lock = threading.Lock()
        self.deferred_seen = False  # set once a row with tensors was queued
        self.lost_rows = 0  # rows dropped by a batch that could not be converted
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._stopping = False
        self._journal_fd = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.journal_end = os.fstat(self._journal_fd).st_size
        self.published_end = self.journal_end
        self._next_flush = time.monotonic() + flush_interval
        self._cycle_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"test_tube-writer[{label}]", daemon=True)

    def start(self) -> None:
        self.thread.start()

    # -- calling-thread side -------------------------------------------------

    def flush(self, timeout: float | None, *, final: bool = False) -> Barrier:
        """Queue a barrier behind every row submitted so far and wait for it.

        Returns the barrier; ``barrier.done`` is unset if ``timeout`` ran out.
        """
        barrier = Barrier(final)
        with self._barrier_lock:
            self.barriers_pending += 1
        self.queue.append(barrier)
        if final:
            self._stopping = True
        self.wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not barrier.done.wait(0.05):
            if not self.thread.is_alive():
                # No writer (it died, or we are past its lifetime at exit):
                # drain on the calling thread instead of waiting forever.
                self.cycle(final=final)
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        return barrier

    def take_error(self) -> BaseException | None:
        error, self.error = self.error, None
        return error

    # -- writer-thread side --------------------------------------------------

    def _run(self) -> None:
        lower_this_thread()
        while True:
            asked = self.wake.wait(DRAIN_INTERVAL)
            if asked:
                # Only a wake-up is consumed: one set after a timed-out wait
                # stays set and makes the next look a drain.
                self.wake.clear()
            self.cycle(asked=asked)
            if self._stopping and not self.queue and not self.barriers_pending:
                return

    def cycle(self, *, final: bool = False, asked: bool = True) -> None:
        """One round of drain, maybe flush; safe to call from any thread.

        ``asked``: someone is waiting (``save()``, a full queue), so drain
        now; a periodic look drains only when enough rows wait or a flush is due.
        """
        with self._cycle_lock:
            try:
                self._cycle(final, asked)
            except BaseException as exc:  # the writer must outlive any one failure
                self._fail(exc)

    def _cycle(self, final: bool, asked: bool) -> None:
        now = time.monotonic()
        tick = now >= self._next_flush
        barriers: list[Barrier] = []
        wanted = (asked or tick or final or self.barriers_pending or self.queued_rows() >= DRAIN_ROWS
                  or self._queued_bytes() >= self.drain_bytes)
        if wanted and (self._pending_bytes < self.max_pending_bytes or self.barriers_pending):
            barriers = self._drain()
        final = final or any(b.final for b in barriers)
        # A flush makes everything durable and published; in between, full
        # batches are journaled (and appended to the CSV with autosave) so the
        # work is spread over the run instead of piling up at the next flush.
        flush = bool(barriers) or final or tick
        full = self._pending_rows >= BATCH_ROWS or self._pending_bytes >= BATCH_BYTES
        failure: BaseException | None = None
        if flush or full:
            try:
                self._write_journal(sync=flush)
                if barriers or final or self.autosave:
                    if flush:
                        self.media.wait_idle()
                    self._publish(final=final, flush=flush, wait=bool(barriers))
                if flush:
                    self._on_publish()
            except BaseException as exc:
                failure = exc
                self._fail(exc)
        if tick:
            self._next_flush = now + self.flush_interval
        media_error = self.media.take_error()
        if media_error is not None:
            self._fail(media_error)
            failure = failure or media_error
        for barrier in barriers:
            barrier.error = failure
            barrier.done.set()

    def _drain(self) -> list[Barrier]:
        queue = self.queue
        # The main queue first: every row logged before a barrier is then
        # already in its queue, fast or slow, when the fast queues are taken.
        items = [queue.popleft() for _ in range(len(queue))]
        barriers: list[Barrier] = []
        if self.barriers_pending:
            rows = []
            for item in items:
                if type(item) is Barrier:
                    barriers.append(item)
                else:
                    rows.append(item)
            with self._barrier_lock:
                self.barriers_pending -= len(barriers)
            items = rows
        packed = list(self.fast.drain())
        self.drained.set()
        if items or packed:
            try:
                table = self._convert(items, packed)
            except BaseException as exc:
                # These rows are gone: counted, so close() and the exit warning can say so.
                self.lost_rows += len(items) + sum(len(data) // shape.packer.size for shape, data in packed)
                # Whoever waits on these barriers hears of it now, instead of waiting forever.
                for barrier in barriers:
                    barrier.error = exc
                    barrier.done.set()
                raise
            self._pending.append(table)
            self._pending_rows += table.num_rows
            self._pending_bytes += table.nbytes
            self._on_drain(_text_length(table))
        return barriers

    def _convert(self, rows: list[dict[Any, Any]], packed: list[tuple[PackedShape, bytes]]) -> pa.Table:
        """Turn drained rows into one table in logging order (every row came with its step)."""
        schema = pa.schema([_SEQ_FIELD, *self.schema()])
        parts = [conform(self._from_packed(shape, data), schema) for shape, data in packed]
        if rows:
            parts.append(conform(self._from_dicts(rows), schema))
        return _in_logging_order(parts).remove_column(0)

    def _from_packed(self, shape: PackedShape, data: bytes) -> pa.Table:
        seq, steps, times, values = shape.arrays(data)
        arrays = [pa.array(seq), pa.array(steps), _timestamps(times), *values]
        return pa.Table.from_arrays(arrays, names=["seq", "step", "created_at", *shape.names])

    def _from_dicts(self, rows: list[dict[Any, Any]]) -> pa.Table:
        """Turn slow-path rows into a table, one column at a time.

        Each column is gathered with a C-level ``map(dict.get, ...)`` (a missing
        key gives None, a null) and converted by pyarrow in one call, so no
        Python code runs per row.
        """
        columns = list(self.columns.items())
        if self.deferred_seen:
            rows = [self._read_items(row) if SHAPE in row else row for row in rows]
        arrays = [
            pa.array(list(map(_SEQ, rows)), pa.int64()),
            pa.array(list(map(_STEP, rows)), pa.int64()),
            _timestamps(list(map(_TIME, rows))),
            *(_column(list(map(dict.get, rows, repeat(name))), typ) for name, typ in columns),
        ]
        return pa.Table.from_arrays(arrays, names=["seq", "step", "created_at", *(name for name, _ in columns)])

    def _read_items(self, row: dict[Any, Any]) -> dict[Any, Any]:
        """Read tensors now, on the writer thread, so log() never waited for a device.

        A tensor whose ``.item()`` fails (a device error) is stored as null and
        the error is handed to the next call; the rest of the batch is kept.
        """
        shape = SHAPES[row[SHAPE]]
        row = dict(row)
        for pos in shape.items:
            name = shape.names[pos]
            try:
                row[name] = row[name].item()
            except Exception as exc:
                row[name] = None
                self._fail(ValueError(f"{name!r} at step {row[STEP]}: .item() of the logged tensor failed "
                                      f"({type(exc).__name__}: {exc}); stored as null"))
        return row

    def _write_journal(self, *, sync: bool) -> None:
        if self._pending:
            pieces = _journal.encode(concat(self._pending))
            try:
                _writev_all(self._journal_fd, pieces)
            except BaseException:
                # Cut a torn frame off again, so later frames stay reachable.
                os.ftruncate(self._journal_fd, self.journal_end)
                raise
            self.journal_end += sum(memoryview(p).nbytes for p in pieces)
            self._pending.clear()
            self._pending_rows = 0
            self._pending_bytes = 0
        if sync:
            os.fsync(self._journal_fd)
            if os.fstat(self._journal_fd).st_nlink == 0:
                raise FileNotFoundError(f"the journal {self.journal_path} was deleted while the run was writing it")

    def _publish(self, *, final: bool, flush: bool, wait: bool) -> None:
        """Hand the journaled rows not yet published to the sinks."""
        tables, end = _journal.read_frames(self.journal_path, self.published_end)
        self.published_end = end
        errors: list[BaseException] = []
        new = concat(tables) if tables else None
        for sink in self.sinks:
            try:
                if new is not None:
                    sink.write(new)
                if final:
                    sink.close()
                elif flush:
                    sink.flush(wait)
            except BaseException as exc:  # one failing sink must not stop the others
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- the Source that sinks rebuild from ------------------------------------

    def schema(self) -> pa.Schema:
        """Every column so far in first-seen order, with its current (widest) type."""
        return pa.schema([*BASE_SCHEMA, *(pa.field(k, t) for k, t in list(self.columns.items()))])

    def frames(self, schema: pa.Schema, stop: int | None = None) -> Iterator[pa.Table]:
        for table, _ in _journal.iter_frames(self.journal_path, 0, stop):
            yield conform(table, schema)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._on_error()

    def queued_rows(self) -> int:
        """Rows waiting in the queues (a barrier counts too; it always comes with a wake-up)."""
        return len(self.queue) + self.fast.queued()

    def pending_rows(self) -> int:
        """Rows submitted but not yet in the journal (for the exit warning)."""
        journal_rows: int = sum(t.num_rows for t in self._pending)
        return journal_rows + self.fast.queued() + sum(1 for i in list(self.queue) if type(i) is not Barrier)

    def close_files(self) -> None:
        os.close(self._journal_fd)

    def after_fork_in_child(self) -> None:
        """The child owns none of this writer's state; forget it without locking."""
        self.queue.clear()
        self.fast.clear()
        self._pending = []
        self._cycle_lock = threading.Lock()
        self._barrier_lock = threading.Lock()
        try:
            os.close(self._journal_fd)
        except OSError:
            pass


_STEP = operator.itemgetter(STEP)
_TIME = operator.itemgetter(TIME)
_SEQ = operator.itemgetter(SEQ)


def _in_logging_order(parts: list[pa.Table]) -> pa.Table:
    """Concatenate tables whose first column is the sequence number, in that order.

    One key set logged from one thread is already in order; parts that do not
    interleave are only put in order of their first row; rows that do (two key
    sets alternating, several threads) are sorted.
    """
    seqs = [part.column(0).to_numpy() for part in parts]
    order = sorted(range(len(parts)), key=lambda i: int(seqs[i][0]))
    in_order = all((s[1:] > s[:-1]).all() for s in seqs) and all(
        seqs[a][-1] < seqs[b][0] for a, b in pairwise(order)
    )
    table = pa.concat_tables([parts[i] for i in order])
    if in_order:
        return table
    return table.take(np.argsort(np.concatenate([seqs[i] for i in order]), kind="stable"))


def _column(values: list[Any], typ: pa.DataType) -> pa.Array:
    """One column of slow-path values as ``typ``.

    pyarrow refuses an int beyond 2**53 in a float column (it would round);
    the column rule lets ints widen to floats, so those are rounded the way
    Python's ``float()`` rounds them.
    """
    try:
        return pa.array(values, typ)
    except (pa.ArrowInvalid, OverflowError):
        if typ != FLOAT:
            raise
        return pa.array([None if v is None else float(v) for v in values], typ)


def _timestamps(times: Sequence[int] | np.ndarray) -> pa.Array:
    ns = pa.array(times, pa.timestamp("ns", tz="UTC"))
    return ns.cast(pa.timestamp("us", tz="UTC"), safe=False)


def _text_length(table: pa.Table) -> int:
    total = 0
    for column in table.columns:
        if pa.types.is_large_string(column.type) or pa.types.is_string(column.type):
            total += pc.sum(pc.utf8_length(column)).as_py() or 0
    return total


def _writev_all(fd: int, pieces: list[bytes | pa.Buffer]) -> None:
    views = [memoryview(p) for p in pieces]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def writer_error(exc: BaseException, label: str) -> WriterError:
    path = getattr(exc, "filename", None)
    return WriterError(
        f"the writer of {label} failed: {type(exc).__name__}: {exc}. "
        f"Rows published before the failure are intact; rows not yet written are kept and retried.",
        path=path if isinstance(path, str) else None,
    )
