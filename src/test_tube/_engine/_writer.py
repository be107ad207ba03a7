"""The writer: takes rows off the ring into the journal, then publishes them; built from its stages.

A writer is given its stages when it is built (``_stages``): the ring source
(the ring, its counter, the fast path's layouts, the deferred rows, the
columns), the journal file, the sinks (``metrics.csv``, ``metrics.parquet``,
TensorBoard), the media encoder and the heartbeat (the metadata files).  It
calls nothing back: results and errors come back through its barriers.

Vocabulary, used the same way everywhere:

* *submit*: ``log()`` writes a row into its slot of the ring (``_ring``): packed
  values on the fast path (``_fastpath``), a marker plus a variable-length
  record on the slow path; rows holding device tensors wait in a deque until
  the writer reads them;
* *take*: the run of whole slots from the cursor becomes Arrow columns (for the
  usual run of one layout of 8-byte values, one numpy gather and one check: no
  Python per row), is appended to the journal as one frame, and only then are
  the slots freed: a row is always in the ring file or the journal;
* *publish*: journaled rows are handed to the sinks;
* *flush*: a barrier; the journal is synced, the published files brought up to
  date, waiting callers released;
* *close*: a last flush that also completes ``metrics.parquet``, then the threads stop.

Two threads: the *taker* (:meth:`Writer._run_taker`) only takes, so log()
never waits behind publishing (CSV text, Parquet row groups, fsync) unless
publishing falls :data:`HANDED_MAX` rows behind; the *publisher*
(:meth:`Writer._run`) handles barriers, flushes and publishing.  ``log()``
wakes the taker at the ring's wake mark (half full) instead of waiting for it
to look.

Most of the writer's cost next to a busy loop is not CPU but getting the GIL
back after each numpy or pyarrow call that let go of it: up to the
interpreter's switch interval (5 ms by default; 0.5 ms while a writer runs,
``_priority``).  So every stage makes few, big calls: takes as big as the
backlog, rows published :data:`PUBLISH_ROWS` at a time (in
:data:`PUBLISH_STEP` pieces only while someone waits for the publisher).

The writer never dies on one bad batch: an exception is kept, handed to the
next caller (``log()``, ``save()``, ``close()``) and to waiting barriers, and
the writer keeps going; rows it could not journal stay in the ring and are
taken again.
"""

from __future__ import annotations

import operator
import os
import threading
import time
from collections.abc import Callable, Sequence
from itertools import pairwise, repeat
from typing import Any

import numpy as np
import pyarrow as pa

from .._store import _journal

from . import _ring
from .._errors import WriterError
from ._fastpath import PackedShape
from ._media import MediaEncoder
from ._priority import lower_this_thread, restore_switch_interval, shorten_switch_interval
from ._rows import SEQ, SHAPE, SHAPES, STEP, TIME
from .._store._schema import concat, conform
from ._sinks import Sink
from ._stages import Heartbeat, JournalFile, RingSource

#: Bytes of text after which the writer takes rows without waiting for the next look.
BATCH_BYTES = 16 * 2**20

#: Seconds between the writer's looks at the ring when nothing wakes it sooner
#: (``save()``, a full ring).
DRAIN_INTERVAL = 0.1

#: Rows that make a look a take before the next flush is due (var bytes do too,
#: from ``drain_bytes``).  A take has a fixed cost of about 1 ms, mostly with
#: the GIL held, which the training loop pays: a loop logging one row every
#: few milliseconds would pay it ten times a second for a handful of rows.
#: Fewer rows wait in the ring (durable already) for the flush.
DRAIN_ROWS = 8_192

#: Journaled rows handed to the sinks at once between flushes: publishing costs a
#: fixed number of GIL hand-offs per call (about 20 for the CSV text), so fewer,
#: bigger calls; a flush (``save()``, every ``flush_interval``) publishes everything.
PUBLISH_ROWS = 131_072

#: Rows a take is capped at while a caller waits for room.
PRESSED_TAKE = 16_384

#: Journaled rows not yet published after which the taker waits for the publisher
#: (so the rows held in memory, and the work left for ``close()``, stay bounded).
HANDED_MAX = 131_072

#: Rows handed to the sinks at once while the taker waits for the publisher.
PUBLISH_STEP = 8_192

_SEQ_FIELD = pa.field("seq", pa.int64())


class Barrier:
    """A flush request: released once every row below ``target`` is journaled and published."""

    __slots__ = ("done", "error", "final", "target")

    def __init__(self, target: int, final: bool = False) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.final = final
        self.target = target


class Writer:
    """Takes rows off ``ring`` into the journal and the sinks on a background thread."""

    def __init__(
        self,
        source: RingSource,
        journal: JournalFile,
        sinks: Sequence[Sink],
        media: MediaEncoder,
        heartbeat: Heartbeat | None = None,
        *,
        label: str,
        autosave: bool,
        flush_interval: float,
        max_rows: int,
        drain_bytes: int,
    ) -> None:
        """A writer of ``source`` into ``journal``, then ``sinks``; ``media`` encodes images, ``heartbeat``
        refreshes the metadata at each flush.  Nothing runs until :meth:`start`."""
        self.label = label
        self.source = source
        self.ring = source.ring
        self.steps = source.steps
        self.fast = source.fast
        self.deferred = source.deferred
        self.columns = source.columns
        self.journal = journal
        self.sinks = list(sinks)
        self.media = media
        self.heartbeat = heartbeat
        self.autosave = autosave
        self.flush_interval = flush_interval
        self.drain_bytes = drain_bytes
        self.error: BaseException | None = None
        self.wake = threading.Event()
        self.drained = threading.Event()
        self.published = threading.Event()  # set after each publish (the taker may go on)
        self._barriers: list[Barrier] = []
        self._barrier_lock = threading.Lock()
        self.deferred_seen = False  # set once a row with tensors was queued
        self.cursor = 0  # every row below this sequence number is journaled
        self.var_pos = 0  # var records below this position are journaled
        self.late_skips: list[int] = []  # numbers skipped while their slot was not yet free
        self.pressed = False  # a caller waits for room in the ring
        self._handed: list[tuple[int, int, pa.Table]] = []  # journaled, not yet published
        self._in_flight = 0  # rows of the table being published not yet handed to every sink
        self.lost_rows = 0  # rows dropped by a batch that could not be converted
        self._stopping = False
        self._next_flush = time.monotonic() + flush_interval
        self._opened_at = journal.end  # the journal's end when this session began
        self._cycle_lock = threading.Lock()
        self._take_lock = threading.Lock()  # one take at a time: the taker's, or a cycle's
        self.take_wake = threading.Event()
        self._done = False
        self._expected = np.zeros((3, 0), np.int64)
        self.span = min(self.ring.nslots, max_rows)  # rows that may wait in the ring
        self.ring.free(0, self.span, self.span // 2)
        for sink in self.sinks:
            if hasattr(sink, "urgent"):
                sink.urgent = self.waited_on  # small chunks while someone waits for the publisher
        self.thread = threading.Thread(target=self._run, name=f"test_tube-writer[{label}]", daemon=True)
        self.taker = threading.Thread(target=self._run_taker, name=f"test_tube-taker[{label}]", daemon=True)

    @property
    def journal_end(self) -> int:
        return self.journal.end

    @property
    def published_end(self) -> int:
        return self.journal.published_end

    @published_end.setter
    def published_end(self, end: int) -> None:
        self.journal.published_end = end

    def start(self) -> None:
        shorten_switch_interval()
        self.thread.start()
        self.taker.start()

    # -- calling-thread side -------------------------------------------------

    def flush(self, timeout: float | None, *, final: bool = False) -> Barrier:
        """Ask for a flush covering every row submitted so far and wait for it.

        Returns the barrier; ``barrier.done`` is unset if ``timeout`` ran out.
        """
        barrier = Barrier(self.steps.peek(), final)
        with self._barrier_lock:
            self._barriers.append(barrier)
        if final:
            self._stopping = True
        self.wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not barrier.done.wait(0.05):
            if not self.thread.is_alive():
                # No writer (it died, or we are past its lifetime at exit):
                # take the rows on the calling thread instead of waiting forever.
                self.cycle(final=final)
                if barrier.done.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    break
                continue
            if deadline is not None and time.monotonic() >= deadline:
                break
        return barrier

    def wait_room(self, seq: int, check: Callable[[], None]) -> None:
        """Block until the slot of ``seq`` is free (the ring is full); ``check`` raises to give up."""
        ring = self.ring
        if seq < ring.limit:
            # The wake mark: half the ring waits; the writer takes it while log() goes on.
            ring.room[0] = ring.limit  # a stale (lower) limit is only a call in too early
            self.take_wake.set()
            return
        while seq >= ring.limit:
            check()  # raises the writer's error, if any
            self.pressed = True
            self.drained.clear()
            self.take_wake.set()
            self.wake.set()
            if not self.thread.is_alive():
                self.cycle()
            if seq < ring.limit:
                return
            self.drained.wait(0.05)

    def take_error(self) -> BaseException | None:
        error, self.error = self.error, None
        return error

    # -- writer-thread side --------------------------------------------------

    def _run(self) -> None:
        lower_this_thread()
        try:
            while True:
                asked = self.wake.wait(DRAIN_INTERVAL)
                if asked:
                    # Only a wake-up is consumed: one set after a timed-out wait
                    # stays set and makes the next look a take.
                    self.wake.clear()
                self.cycle(asked=asked)
                if self._stopping and not self._barriers:
                    return
        finally:
            self._done = True
            self.take_wake.set()
            restore_switch_interval()

    def _run_taker(self) -> None:
        """Free ring slots as soon as rows wait, whatever the publishing thread is doing.

        Publishing (CSV text, Parquet row groups, fsync) takes far longer than a
        take; on this thread of its own a take never waits for it, so log()
        waits for room only when the journaled rows not yet published reach
        :data:`HANDED_MAX` (publishing cannot keep up: the loop waits for it).
        It keeps the loop's priority (the publisher is lowered): its work is
        short, and it is what a log() waiting for room waits for.
        """
        asked = False
        while not self._done:
            if not asked:
                asked = self.take_wake.wait(DRAIN_INTERVAL)
            self.take_wake.clear()
            if self._done:
                return
            if not (asked or self.queued_rows() >= DRAIN_ROWS or self.queued_bytes() >= self.drain_bytes):
                continue  # a few rows: they wait (durable already) for the flush
            if self.autosave and self._handed_rows() >= HANDED_MAX:
                self.wake.set()
                self.published.wait(DRAIN_INTERVAL)
                self.published.clear()
                continue  # still asked: take as soon as the publisher made room
            asked = False
            took = False
            try:
                with self._take_lock:
                    took = self._take(self.steps.peek())
            except BaseException as exc:  # kept for the next caller; the rows stay in the ring
                self._fail(exc)
                self.wake.set()
            if took and (not self.autosave or self._handed_rows() >= PUBLISH_ROWS
                         or self.published_end == self._opened_at):
                self.wake.set()

    def cycle(self, *, final: bool = False, asked: bool = True) -> None:
        """One round of take, maybe flush; safe to call from any thread."""
        with self._cycle_lock:
            try:
                self._cycle(final, asked)
            except BaseException as exc:  # the writer must outlive any one failure
                self._fail(exc)

    def queued_rows(self) -> int:
        """Rows submitted but not yet journaled."""
        return self.steps.peek() - self.cursor

    def queued_bytes(self) -> int:
        return self.ring.var_pos - self.var_pos

    def _cycle(self, final: bool, asked: bool) -> None:
        now = time.monotonic()
        tick = now >= self._next_flush
        with self._barrier_lock:
            barriers = list(self._barriers)
        hi = self.steps.peek()
        backlog = hi - self.cursor
        wanted = (asked or tick or final or barriers or backlog >= DRAIN_ROWS
                  or self.queued_bytes() >= self.drain_bytes)
        failure: BaseException | None = None
        if wanted and backlog:
            try:
                with self._take_lock:
                    self._take(hi)
            except BaseException as exc:
                failure = exc
                self._fail(exc)
        self.drained.set()
        due = [b for b in barriers if b.target <= self.cursor]
        final = any(b.final for b in due)
        flush = bool(due) or tick
        # The first rows are published at once: a sink's first write builds its file from the
        # journal in one step, which must be short (log() may wait behind it).
        first = self._handed and self.published_end == self._opened_at
        if flush or (self.autosave and (first or self._handed_rows() >= PUBLISH_ROWS)):
            try:
                if flush:
                    self._sync()
                if due or final or self.autosave:
                    if flush and (due or final):
                        self.media.wait_idle()
                    self._publish(final=final, flush=flush, wait=bool(due))
                if flush and self.heartbeat is not None:
                    self.heartbeat.beat()
            except BaseException as exc:
                failure = failure or exc
                self._fail(exc)
        if tick:
            self._next_flush = now + self.flush_interval
        media_error = self.media.take_error()
        if media_error is not None:
            self._fail(media_error)
            failure = failure or media_error
        if failure is not None:
            # Whoever waits hears of it now, instead of waiting for rows that cannot be written yet.
            due = barriers
        if due:
            with self._barrier_lock:
                for barrier in due:
                    if barrier in self._barriers:
                        self._barriers.remove(barrier)
            for barrier in due:
                barrier.error = failure
                barrier.done.set()

    def _take(self, hi: int) -> bool:
        """Journal the run of whole slots from the cursor (up to ``hi``); True if rows were taken.

        While a caller waits for room the take is capped, so the first slots
        are freed after a short step instead of a whole backlog's.
        """
        ring = self.ring
        n = min(hi - self.cursor, ring.nslots)
        if n <= 0:
            return False
        if self.pressed:
            n = min(n, PRESSED_TAKE)
        deferred_taken: list[Any] = []
        var_pos = self.var_pos
        try:
            table = self._take_packed(n)
            if table is None:
                n = ring.whole_run(self.cursor, self.cursor + n)
                if not n:
                    return False
                # One schema for every piece of the take, read once the run is known whole: each
                # of its rows was typed into the columns before its slot was written.
                schema = pa.schema([_SEQ_FIELD, *self.schema()])
                parts: list[pa.Table] = []
                for records in ring.take(self.cursor, n):
                    kinds = records.view(_ring.SLOT_DTYPE)["kind"]
                    more, var_pos = self._convert(records, kinds, deferred_taken, var_pos, schema)
                    parts += more
                table = _in_logging_order(parts).remove_column(0) if parts else None
        except BaseException:
            n = ring.whole_run(self.cursor, self.cursor + n)  # only whole records are dropped
            cursor = self.cursor + n
            # A batch that cannot be converted would fail the same way every time:
            # its rows are dropped and counted, so close() and the exit warning say so.
            self.deferred.extendleft(reversed(deferred_taken))
            self._drop(n, cursor)
            raise
        cursor = self.cursor + n
        try:
            if table is not None and table.num_rows:
                self._journal(table, cursor, var_pos)
            else:
                ring.write_state(_ring.State(0, cursor, var_pos, self.journal_end))
        except BaseException:
            # Not journaled: the rows stay in the ring (and the deferred ones in their deque).
            self.deferred.extendleft(reversed(deferred_taken))
            raise
        self.cursor = cursor
        self.var_pos = var_pos
        ring.free(var_pos, cursor + self.span, cursor + self.span // 2)
        if self.late_skips:
            for seq in list(self.late_skips):
                if seq < ring.limit:
                    self.late_skips.remove(seq)
                    ring.skip(seq)
        self.pressed = False
        self.drained.set()  # whoever waits for room goes on now, while the rows are published
        return True

    def _take_packed(self, n: int) -> pa.Table | None:
        """The usual take in a handful of numpy calls: ``n`` whole slots of one layout of 8-byte values.

        Each call that lets go of the GIL waits for it to come back next to a
        busy loop, so the cost of a take is the number of such calls, not the
        rows: one gather copies every field of every slot out as a contiguous
        column, one comparison checks that each slot is whole and of the
        layout, and the columns become Arrow arrays without another copy.
        None when the run is anything else (the general path takes it).
        """
        ring = self.ring
        pieces = ring.take(self.cursor, n)
        kind = int(pieces[0][:1].view(_ring.SLOT_DTYPE)["kind"][0])
        if kind < 1 or kind > len(self.fast.shapes) or n < 2:
            return None
        shape = self.fast.shapes[kind - 1]
        if shape.gather is None:
            return None
        words = _ring.SLOT // 8
        cols = [piece.view("<i8").reshape(-1, words).T[shape.gather] for piece in pieces]
        fields = cols[0] if len(cols) == 1 else np.concatenate(cols, axis=1)
        expected = self._expected
        if expected.shape[1] < n:
            expected = self._expected = np.stack([np.arange(ring.nslots, dtype=np.int64)] * 2
                                                  + [np.zeros(ring.nslots, np.int64)])
        # seq and trailer equal to their numbers, the kind (with its zero padding) this layout's
        if not np.array_equal(fields[:3] - np.array([[self.cursor], [self.cursor], [kind]]), expected[:, :n]):
            return None
        arrays = [pa.array(fields[3]), _timestamps(fields[4])]
        for j, code in enumerate(shape.words):
            column = fields[5 + j]
            arrays.append(pa.array(column.view(np.float64) if code == "d" else column))
        table = pa.Table.from_arrays(arrays, names=["step", "created_at", *shape.names])
        return conform(table, self.schema())

    def _handed_rows(self) -> int:
        """Journaled rows not yet published (waiting, or in the piece being published)."""
        return int(sum(table.num_rows for _, _, table in self._handed)) + self._in_flight

    def _drop(self, n: int, cursor: int) -> None:
        ring = self.ring
        var_pos = self.var_pos
        rows = 0
        for records in ring.take(self.cursor, n):
            kinds = records.view(_ring.SLOT_DTYPE)["kind"]
            rows += int((kinds != _ring.SKIP).sum())
            for _ in range(int((kinds == _ring.SLOW).sum())):
                _, var_pos = ring.read_var(var_pos)
            for _ in range(int((kinds == _ring.DEFERRED).sum())):
                self.deferred.popleft()
        ring.write_state(_ring.State(0, cursor, var_pos, self.journal_end))
        self.lost_rows += rows
        self.cursor, self.var_pos = cursor, var_pos
        ring.free(var_pos, cursor + self.span, cursor + self.span // 2)
        self.drained.set()

    def waited_on(self) -> bool:
        """Whether a caller waits for room in the ring now (or the taker for the publisher)."""
        return self.pressed or (self.taker.is_alive() and self._handed_rows() >= HANDED_MAX)

    def urgent(self) -> bool:
        """Whether the ring is filling up: a caller waits for room, or half of it is taken."""
        if self.taker.is_alive():
            return self.pressed or self._handed_rows() >= HANDED_MAX
        return self.pressed or self.steps.peek() - self.cursor >= self.span // 2

    def _convert(self, records: np.ndarray, kinds: np.ndarray, deferred_taken: list[Any],
                 var_pos: int, schema: pa.Schema) -> tuple[list[pa.Table], int]:
        """The rows of a run of slots as tables whose first column is the sequence number, as ``schema``."""
        shapes = self.fast.shapes
        first = int(kinds[0])
        if first >= 1 and (kinds == first).all():  # the usual run: one layout
            return [conform(self._from_packed(shapes[first - 1], records), schema)], var_pos
        parts: list[pa.Table] = []
        counts = np.bincount(kinds + 3)
        rows: list[dict[Any, Any]] = []
        for code in np.flatnonzero(counts):
            kind = int(code) - 3
            if kind >= 1:
                parts.append(conform(self._from_packed(shapes[kind - 1], records[kinds == kind]), schema))
            elif kind == _ring.SLOW:
                for _ in range(int(counts[code])):
                    (seq, step, time_ns, names, values), var_pos = self.ring.read_var(var_pos)
                    row = dict(zip(names, values))
                    row[STEP] = step
                    row[TIME] = time_ns
                    row[SEQ] = seq
                    rows.append(row)
            elif kind == _ring.DEFERRED:
                for _ in range(int(counts[code])):
                    row = self.deferred.popleft()
                    deferred_taken.append(row)
                    rows.append(row)
        if rows:
            parts.append(conform(self._from_dicts(rows), schema))
        return parts, var_pos

    def _from_packed(self, shape: PackedShape, records: np.ndarray) -> pa.Table:
        seq, steps, times, values = shape.arrays(records)
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

    def _journal(self, table: pa.Table, cursor: int, var_pos: int) -> None:
        """Append one frame, recording in the ring before and after, so recovery never repeats a row."""
        pieces = _journal.encode(table)
        ring = self.ring
        ring.write_state(_ring.State(0, self.cursor, self.var_pos, self.journal_end,
                                     cursor, var_pos, self.journal_end))
        try:
            start = self.journal.append(pieces)
        except BaseException:
            ring.write_state(_ring.State(0, self.cursor, self.var_pos, self.journal_end))
            raise
        if self.autosave:
            self._handed.append((start, self.journal_end, table))
        ring.write_state(_ring.State(0, cursor, var_pos, self.journal_end))

    def _sync(self) -> None:
        self.journal.sync()

    def _publish(self, *, final: bool, flush: bool, wait: bool) -> None:
        """Hand the journaled rows not yet published to the sinks.

        The tables journaled since the last publish are handed as they are when
        they are exactly the frames since then; otherwise the frames are read back.
        """
        errors: list[BaseException] = []
        while True:
            with self._take_lock:  # the taker appends frames meanwhile
                handed = self._handed
                if self.published_end == self.journal_end:
                    self._handed = []
                    break
                if handed and handed[0][0] == self.published_end:
                    start, end, new = handed.pop(0)
                else:
                    self._handed = []
                    tables, end = self.journal.read_from(self.published_end)
                    new = concat(tables) if tables else None
            self.published_end = end  # a sink rebuilding its file reads the journal up to here
            if new is None:
                break
            # In pieces while the taker waits for the publisher (a caller may wait behind it),
            # whole otherwise: each piece costs a fixed number of GIL hand-offs.
            self._in_flight = new.num_rows
            at = 0
            rebuilt: set[int] = set()  # sinks that rebuilt from the journal: they hold the whole frame
            while at < new.num_rows and not errors:
                size = PUBLISH_STEP if self.waited_on() else new.num_rows - at
                piece = new.slice(at, size) if at or size < new.num_rows else new
                for k, sink in enumerate(self.sinks):
                    if k in rebuilt:
                        continue
                    try:
                        if sink.write(piece):
                            rebuilt.add(k)
                    except BaseException as exc:  # one failing sink must not stop the others
                        errors.append(exc)
                at += size
                self._in_flight = max(0, new.num_rows - at)
                self.published.set()
            self._in_flight = 0
            if errors:
                break
        for sink in self.sinks:
            try:
                if final:
                    sink.close()
                elif flush:
                    sink.flush(wait)
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def schema(self) -> pa.Schema:
        return self.source.schema()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        # Every log() goes through the slow path from now on, which raises the error.
        self.fast.shut()

    def pending_rows(self) -> int:
        """Rows submitted but not yet in the journal (for the exit warning)."""
        return self.queued_rows()

    def close_files(self, *, remove_ring: bool) -> None:
        self.journal.close()
        self.ring.close(remove=remove_ring)

    def after_fork_in_child(self) -> None:
        """The child owns none of this writer's state; forget it without locking (and never touch the ring)."""
        self.deferred.clear()
        self._barriers = []
        self._cycle_lock = threading.Lock()
        self._barrier_lock = threading.Lock()
        self._take_lock = threading.Lock()
        self.journal.after_fork_in_child()
        try:
            os.close(self.ring.fd)  # the ring's flock stays the parent's: readers see when the parent dies
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
    if len(parts) == 1:
        return parts[0]
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
        if typ != pa.float64():
            raise
        return pa.array([None if v is None else float(v) for v in values], typ)


def _timestamps(times: Sequence[int] | np.ndarray) -> pa.Array:
    if isinstance(times, np.ndarray):
        # ns to µs in numpy (the GIL stays with us), one Arrow array viewing the result
        return pa.array(times // 1000, pa.timestamp("us", tz="UTC"))
    ns = pa.array(times, pa.timestamp("ns", tz="UTC"))
    return ns.cast(pa.timestamp("us", tz="UTC"), safe=False)


def writer_error(exc: BaseException, label: str) -> WriterError:
    path = getattr(exc, "filename", None)
    return WriterError(
        f"the writer of {label} failed: {type(exc).__name__}: {exc}. "
        f"Rows published before the failure are intact; rows not yet written are kept and retried.",
        path=path if isinstance(path, str) else None,
    )
