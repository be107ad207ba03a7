"""The ring: the one object ``log()`` and the writer both touch, a memory-mapped file.

Every row ``log()`` accepts is written into this file before ``log()`` returns.
Bytes stored into a shared mapping of a regular file are in the kernel's page
cache the moment the store happens, so they survive ``kill -9``, ``os._exit``,
the OOM killer and a segfault of the process; only a kernel crash or power loss
loses what the kernel had not yet written back (at most ~30 s of rows, the
kernel's dirty-page age, or none after :meth:`Ring.sync`).

The file lives in the version folder (``_ring.tt``), where every reader looks
for a run, next to the journal it is recovered into; a name starting with
``_`` is skipped by the readers of folders.  Layout::

    [0, 4096)            header: magic, geometry, two copies of the writer's state
    [4096, +SHAPE_BYTES) shape table: one record per fast-path layout (append only)
    slots                nslots x SLOT bytes: one fixed-size record per sequence number
    var                  var_bytes: variable-length records (rows of the slow path)

*Slots.*  Row number ``seq`` (from one ``itertools.count``: atomic under the GIL,
so lock-free and unique across threads) owns slot ``seq % nslots``::

    seq q | step q | time ns q | kind i | pad 4 | values ... | pad | seq q   (SLOT bytes)

``kind`` is the layout's number (>= 1) for a packed row, or one of the markers
:data:`SLOW` (the row is the var record of that ``seq``), :data:`DEFERRED` (its
tensors are read on the writer thread, so it is durable once journaled) and
:data:`SKIP` (a sequence number taken by a call that then raised).  The
sequence number at both ends tells a whole record from a torn one (killed in
the middle of the store: the last field is still the previous lap's) and from
a stale one (a previous lap's: its number is ``nslots`` lower).

*Var records* are appended under the Experiment's lock::

    magic u32 | payload length u32 | crc32 of payload u32 | pad 4 | payload (marshal), padded to 8

A record that would cross the end of the region is preceded by a wrap marker
and written at its start.  The crc tells a whole record from a torn one; a
record whose sequence number does not follow the previous one is stale.

*State.*  The writer frees slots and var space only after the rows are in the
journal, and records how far it got in the header: ``pending`` (cursor, var
position, journal offset) before it appends a frame, ``committed`` after.
Recovery takes every whole record beyond the last frame the journal holds,
so a crash between the two steps neither loses nor repeats a row.
"""

from __future__ import annotations

import fcntl
import marshal
import mmap
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"TTRING01"
HEADER_BYTES = 4096
SHAPE_BYTES = 64 * 1024
SLOT = 128
#: Bytes of values a slot holds (32 bytes of header before them, the trailing seq after).
VALUE_BYTES = SLOT - 40
VALUES_AT = 32
TRAILER_AT = SLOT - 8

# Slot kinds other than a layout number.
EMPTY, SKIP, SLOW, DEFERRED = 0, -1, -2, -3

_GEOMETRY = struct.Struct("<8sIIQQ")  # magic, slot size, nslots, var bytes, generation
_STATE = struct.Struct("<qqqqqqqI")  # counter, cursor, var, journal, pending cursor, var, journal, crc
_STATE_AT = (64, 128)
_VAR_HEAD = struct.Struct("<III4x")
_VAR_MAGIC = 0x52565454  # "TTVR"
_VAR_WRAP = 0x57565454  # "TTVW"
_SLOT_HEAD = struct.Struct("<qqqi4x")
_SKIP = struct.Struct(f"<qqqi{SLOT - 36}xq")

#: The numpy view of a slot's fixed fields.
SLOT_DTYPE = np.dtype({"names": ["seq", "step", "time", "kind", "trailer"],
                       "formats": ["<i8", "<i8", "<i8", "<i4", "<i8"],
                       "offsets": [0, 8, 16, 24, TRAILER_AT], "itemsize": SLOT})

FILE = "_ring.tt"


@dataclass(frozen=True)
class State:
    """How far the journal holds the ring: every seq below ``cursor``, var bytes below ``var``."""

    counter: int = 0
    cursor: int = 0
    var: int = 0
    journal: int = 0
    pending_cursor: int = 0
    pending_var: int = 0
    pending_journal: int = -1  # -1: nothing pending


def geometry(max_rows: int, max_bytes: int) -> tuple[int, int]:
    """(slots, var bytes) for the Experiment's queue bounds: a power of two of slots."""
    nslots = 1 << max(int(max_rows - 1).bit_length(), 4)
    var = max(128 << 10, min(max_bytes, 16 << 20))
    return nslots, (var + 7) & ~7


class Ring:
    """The ring file of one open version, mapped read-write (the writing side)."""

    def __init__(self, path: str, nslots: int, var_bytes: int) -> None:
        """Create a fresh ring at ``path`` (replacing an old one: recover it first)."""
        self.path = path
        self.nslots = nslots
        self.mask = nslots - 1
        self.var_bytes = var_bytes
        self.slots_at = HEADER_BYTES + SHAPE_BYTES
        self.var_at = self.slots_at + nslots * SLOT
        size = self.var_at + var_bytes
        tmp = os.path.join(os.path.dirname(path), f".{FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            # Reserved now: a store into a page a full disk could not give would kill the
            # process with SIGBUS; a full disk is an OSError here, at the Experiment's creation.
            os.posix_fallocate(fd, 0, size)
            os.pwrite(fd, _GEOMETRY.pack(MAGIC, SLOT, nslots, var_bytes, secrets.randbits(63)), 0)
            fcntl.flock(fd, fcntl.LOCK_EX)  # readers leave a live ring alone
            os.replace(tmp, path)
            self.mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.view = memoryview(self.mm)
        self.slots = self.view[self.slots_at:self.var_at]
        self.slot_records = np.frombuffer(self.mm, SLOT_DTYPE, nslots, self.slots_at)
        self._state_counter = 0
        self.state = State()
        self.var_pos = 0  # where the next var record goes (absolute; under the Experiment's lock)
        self.var_free = 0  # var bytes below this are journaled (set by the writer)
        self.shape_pos = 0
        self.limit = nslots  # slots below this seq may be written (set by the writer only)
        # The cell the fast path compares each seq with: the limit, or the wake mark below it
        # (the seq at which log() wakes the writer, so it takes rows before the ring fills).
        self.room = [nslots]

    # -- the logging side ------------------------------------------------------

    def skip(self, seq: int) -> None:
        """Mark ``seq`` as taken by a call that raised, unless its record is already whole."""
        at = (seq & self.mask) * SLOT
        head = _SLOT_HEAD.unpack_from(self.slots, at)
        if head[0] == seq and head[3] != EMPTY and struct.unpack_from("<q", self.slots, at + TRAILER_AT)[0] == seq:
            return
        _SKIP.pack_into(self.slots, at, seq, 0, 0, SKIP, seq)

    def mark(self, seq: int, kind: int, step: int, time_ns: int) -> None:
        """A slot with no values: the row lives elsewhere (``SLOW``, ``DEFERRED``)."""
        _SKIP.pack_into(self.slots, (seq & self.mask) * SLOT, seq, step, time_ns, kind, seq)

    def fits(self, size: int) -> bool:
        """Whether a var record of ``size`` payload bytes fits in the free var space now."""
        need = _record_size(size)
        pos = self.var_pos
        free = self.var_free
        if self.var_bytes - pos % self.var_bytes < need:
            pos += self.var_bytes - pos % self.var_bytes
            if free == self.var_pos:
                free = pos  # everything was taken: the skipped end of the region is free too
        return pos + need - free <= self.var_bytes

    def put_var(self, payload: bytes) -> None:
        """Append one var record (call under the Experiment's lock, after :meth:`fits`)."""
        need = _record_size(len(payload))
        pos = self.var_pos
        off = pos % self.var_bytes
        base = self.var_at
        if self.var_bytes - off < need:
            struct.pack_into("<I", self.view, base + off, _VAR_WRAP)
            pos += self.var_bytes - off
            off = 0
        at = base + off
        self.view[at + _VAR_HEAD.size:at + _VAR_HEAD.size + len(payload)] = payload
        _VAR_HEAD.pack_into(self.view, at, _VAR_MAGIC, len(payload), zlib.crc32(payload))
        self.var_pos = pos + need

    def put_shape(self, payload: bytes) -> bool:
        """Record a layout before the fast path uses it; False when the table is full."""
        need = _record_size(len(payload))
        if self.shape_pos + need > SHAPE_BYTES - 8:
            return False
        at = HEADER_BYTES + self.shape_pos
        self.view[at + _VAR_HEAD.size:at + _VAR_HEAD.size + len(payload)] = payload
        _VAR_HEAD.pack_into(self.view, at, _VAR_MAGIC, len(payload), zlib.crc32(payload))
        self.shape_pos += need
        return True

    # -- the writer side -------------------------------------------------------

    def whole_run(self, cursor: int, hi: int) -> int:
        """How many records from ``cursor`` on are whole, in a row (stops at ``hi``)."""
        if hi <= cursor:
            return 0
        n = min(hi - cursor, self.nslots)
        first = cursor & self.mask
        pieces = [(first, min(n, self.nslots - first))]
        if pieces[0][1] < n:
            pieces.append((0, n - pieces[0][1]))
        done = 0
        for start, length in pieces:
            recs = self.slot_records[start:start + length]
            expected = np.arange(cursor + done, cursor + done + length, dtype=np.int64)
            # A record is whole when both ends carry its number and it has a kind: the zeros of a
            # fresh ring carry number 0 at both ends, and must not pass for the first row.
            ok = (recs["seq"] == expected) & (recs["trailer"] == expected) & (recs["kind"] != EMPTY)
            if ok.all():
                done += length
                continue
            return done + int(np.argmin(ok))
        return done

    def take(self, cursor: int, n: int) -> list[np.ndarray]:
        """Views of the ``n`` slots from ``cursor`` on, as raw ``SLOT``-byte records (two at the wrap).

        Views, not copies: the slots stay as they are until :meth:`free`, and
        whatever the writer builds from them copies what it keeps.
        """
        raw = np.frombuffer(self.mm, np.dtype((np.void, SLOT)), self.nslots, self.slots_at)
        first = cursor & self.mask
        if first + n <= self.nslots:
            return [raw[first:first + n]]
        return [raw[first:], raw[:n - (self.nslots - first)]]

    def read_var(self, pos: int) -> tuple[Any, int]:
        """The var record at ``pos`` and the position after it (the writer knows it is whole)."""
        record, end = _var_at(self.view, self.var_at, self.var_bytes, pos)
        if record is None:
            raise RuntimeError(f"the ring's var record at {pos} is not whole")
        return record, end

    def write_state(self, state: State) -> None:
        """Publish how far the journal holds the ring (two alternating copies, each with a crc)."""
        self._state_counter += 1
        fields = (self._state_counter, state.cursor, state.var, state.journal,
                  state.pending_cursor, state.pending_var, state.pending_journal)
        data = _STATE.pack(*fields, 0)[:-4]
        _STATE.pack_into(self.view, _STATE_AT[self._state_counter & 1], *fields, zlib.crc32(data))
        self.state = state

    def free(self, var: int, limit: int, wake: int) -> None:
        """Var bytes below ``var`` are journaled; seqs below ``limit`` may be written; log() calls in at ``wake``."""
        self.var_free = var
        self.limit = limit
        self.room[0] = min(limit, wake)

    def sync(self) -> None:
        self.mm.flush()

    def close(self, *, remove: bool) -> None:
        """Unmap and close; ``remove`` once every row is in the journal."""
        self.slot_records = None  # type: ignore[assignment]
        self.slots.release()
        self.view.release()
        try:
            self.mm.close()
        except BufferError:  # a view still held somewhere: the mapping goes with the process
            pass
        if remove:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)


def _record_size(payload: int) -> int:
    return (_VAR_HEAD.size + payload + 7) & ~7


def _var_at(view: Any, base: int, size: int, pos: int) -> tuple[Any, int]:
    """(decoded payload, position after) of the var record at ``pos``, or (None, pos) if none is whole."""
    for _ in range(2):
        off = pos % size
        if size - off < _VAR_HEAD.size:
            pos += size - off
            continue
        magic, length, crc = _VAR_HEAD.unpack_from(view, base + off)
        if magic == _VAR_WRAP:
            pos += size - off
            continue
        if magic != _VAR_MAGIC or _record_size(length) > size - off:
            return None, pos
        payload = bytes(view[base + off + _VAR_HEAD.size:base + off + _VAR_HEAD.size + length])
        if zlib.crc32(payload) != crc:
            return None, pos
        try:
            return marshal.loads(payload), pos + _record_size(length)
        except (EOFError, ValueError, TypeError):
            return None, pos
    return None, pos


def shape_payload(index: int, names: tuple[str, ...], codes: str) -> bytes:
    return marshal.dumps((index, names, codes))


def var_payload(seq: int, step: int, time_ns: int, names: tuple[str, ...], values: tuple[Any, ...]) -> bytes:
    return marshal.dumps((seq, step, time_ns, names, values))


# -- the reading side (another process, or the next open of the version) -----------


@dataclass
class Found:
    """What a dead ring holds beyond its journal."""

    state: State
    packed: dict[int, np.ndarray]  # layout number -> whole raw slots of that layout, in seq order
    shapes: dict[int, tuple[tuple[str, ...], str]]  # layout number -> (names, struct codes)
    rows: list[tuple[int, int, int, tuple[str, ...], tuple[Any, ...]]]  # slow rows
    end_seq: int  # one more than the last whole record's seq
    end_var: int


def read_state(view: Any) -> State | None:
    best: tuple[int, ...] | None = None
    for at in _STATE_AT:
        fields = _STATE.unpack_from(view, at)
        data = _STATE.pack(*fields[:-1], 0)[:-4]
        if fields[0] and zlib.crc32(data) == fields[-1] and (best is None or fields[0] > best[0]):
            best = fields
    if best is None:
        return State() if not any(bytes(view[64:192])) else None
    return State(*best[:7])


def open_dead(path: str, *, wait: bool = False) -> tuple[int, mmap.mmap] | None:
    """Map a ring no live writer holds: (fd, map), or None (missing, live, or not a ring).

    The caller closes both.  ``wait``: block until the writer lets go (a
    resuming writer waits for a reader).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        size = os.fstat(fd).st_size
        if size < HEADER_BYTES + SHAPE_BYTES:
            os.close(fd)
            return None
        return fd, mmap.mmap(fd, size)
    except BaseException:
        os.close(fd)
        raise


def scan(mm: mmap.mmap, journal_size: int, journal_frame_at: Any) -> Found | None:
    """Every whole record of a dead ring beyond what the journal holds.

    ``journal_size`` is the journal's length; ``journal_frame_at(offset)`` tells
    whether a whole frame starts at that offset (the frame of a pending commit).
    """
    view = memoryview(mm)
    try:
        magic, slot, nslots, var_bytes, _gen = _GEOMETRY.unpack_from(view, 0)
        if magic != MAGIC or slot != SLOT or nslots & (nslots - 1) or \
                len(view) != HEADER_BYTES + SHAPE_BYTES + nslots * SLOT + var_bytes:
            return None
        state = read_state(view)
        if state is None:
            return None
        cursor, var = state.cursor, state.var
        if state.pending_journal >= 0 and (state.pending_cursor, state.pending_var) != (cursor, var):
            # Killed between appending a frame and recording it: the frame decides.
            if state.pending_journal < journal_size and journal_frame_at(state.pending_journal):
                cursor, var = state.pending_cursor, state.pending_var
        shapes = {}
        for index, names, codes in _shape_records(view):
            shapes[index] = (tuple(names), codes)
        slots_at = HEADER_BYTES + SHAPE_BYTES
        recs = np.frombuffer(mm, SLOT_DTYPE, nslots, slots_at).copy()
        raw = np.frombuffer(mm, np.dtype((np.void, SLOT)), nslots, slots_at).copy()
        where = np.arange(nslots, dtype=np.int64)
        whole = ((recs["seq"] == recs["trailer"]) & (recs["seq"] >= cursor) & (recs["kind"] != EMPTY)
                 & ((recs["seq"] & (nslots - 1)) == where))
        seqs = recs["seq"][whole]
        kinds = recs["kind"][whole]
        order = np.argsort(seqs, kind="stable")
        seqs, kinds, chosen = seqs[order], kinds[order], raw[whole][order]
        packed = {int(k): chosen[kinds == k] for k in np.unique(kinds) if k >= 1 and int(k) in shapes}
        end_seq = int(seqs[-1]) + 1 if len(seqs) else cursor
        rows = []
        pos = var
        last = cursor - 1
        var_at = slots_at + nslots * SLOT
        while True:
            record, after = _var_at(view, var_at, var_bytes, pos)
            if record is None or after - var > var_bytes:
                break
            seq = record[0]
            if seq <= last:
                break  # a previous lap's record
            rows.append(record)
            last = seq
            pos = after
        end_seq = max(end_seq, last + 1)
        return Found(state, packed, shapes, rows, end_seq, pos)
    finally:
        view.release()


def _shape_records(view: Any) -> Iterator[tuple[int, Any, str]]:
    pos = 0
    while pos + _VAR_HEAD.size <= SHAPE_BYTES:
        record, after = _var_at(view, HEADER_BYTES, SHAPE_BYTES, pos)
        if record is None or after <= pos:
            return
        yield record
        pos = after
