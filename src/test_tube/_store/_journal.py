"""The crash-tolerant journal: every flushed row, appended as framed Arrow IPC streams.

A Parquet file is unreadable until its footer is written, so durability rests
here instead.  Each append is one *frame*::

    b"TTJ1" | payload length (u64 LE) | crc32 of payload (u32 LE) | payload

where the payload is a complete Arrow IPC stream (schema, batches, end marker)
of the rows flushed together.  Frames may carry different schemas (a column
that appears mid-run, an int column widened to float).  A kill can only tear
the last frame; :func:`read_frames` stops at the first frame that is short or
fails its checksum, so recovery returns exactly the rows of complete frames and
never a value that was not logged.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

MAGIC = b"TTJ1"
_HEADER = struct.Struct("<4sQI")


def encode(table: pa.Table) -> list[bytes | pa.Buffer]:
    """The pieces of one frame holding ``table``, ready for one ``writev``."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload = sink.getvalue()
    return [_HEADER.pack(MAGIC, payload.size, zlib.crc32(payload)), payload]


def read_frames(path: str | os.PathLike[str], start: int = 0) -> tuple[list[pa.Table], int]:
    """The complete frames of a journal from byte ``start`` on, and the offset where they end.

    A missing file reads as no frames.  Anything after the returned offset is a
    torn or corrupt tail left by a crash (or a frame still being written).
    """
    tables: list[pa.Table] = []
    end = start
    for table, end in iter_frames(path, start):
        tables.append(table)
    return tables, end


def iter_frames(
    path: str | os.PathLike[str], start: int = 0, stop: int | None = None
) -> Iterator[tuple[pa.Table, int]]:
    """Yield each complete frame from byte ``start`` (up to ``stop``) with the offset after it.

    Frames are read one at a time, so rebuilding a file from a long journal
    holds one frame in memory, not the run.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        f.seek(start)
        offset = start
        while stop is None or offset < stop:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            magic, length, crc = _HEADER.unpack(header)
            # A length torn or flipped into a huge number must end the read, not allocate it.
            if magic != MAGIC or length > os.fstat(f.fileno()).st_size - offset - _HEADER.size:
                return
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            try:
                table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
            except (pa.ArrowInvalid, OSError):
                return
            offset += _HEADER.size + length
            yield table, offset


def torn_at(path: str | os.PathLike[str], offset: int) -> bool:
    """Whether the bytes from ``offset`` to the end are only the start of a frame (a write cut short)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(offset)
        head = f.read(_HEADER.size)
    return _torn(head, size - offset)


def _torn(head: bytes, remaining: int) -> bool:
    if not head or not MAGIC.startswith(head[:4]):
        return False
    return len(head) < _HEADER.size or _HEADER.unpack(head)[1] > remaining - _HEADER.size


@dataclass(frozen=True)
class Frame:
    """One whole frame found by :func:`scan`: its byte range and its rows."""

    start: int
    end: int
    table: pa.Table


@dataclass(frozen=True)
class Scan:
    """Every whole frame of a journal, and the byte ranges between them that are not frames.

    ``torn`` is true when the last range is only the start of a frame (a
    header whose length runs past the end of the file): what a kill during a
    write, or a write still in progress, leaves.  Any other range is damage.
    """

    size: int
    frames: tuple[Frame, ...]
    gaps: tuple[tuple[int, int], ...]
    torn: bool

    @property
    def damaged(self) -> tuple[tuple[int, int], ...]:
        """The byte ranges that are damage, not a torn tail."""
        return self.gaps[:-1] if self.torn else self.gaps

    @property
    def prefix(self) -> tuple[Frame, ...]:
        """The frames before the first gap: the rows in logging order with nothing missing between them."""
        if not self.gaps:
            return self.frames
        return tuple(f for f in self.frames if f.end <= self.gaps[0][0])


def scan(path: str | os.PathLike[str]) -> Scan:
    """Find every whole frame of a journal, also past damage in the middle of it.

    Unlike :func:`iter_frames`, which stops at the first frame that is short or
    fails its checksum, this looks on from there for the next position where a
    whole frame starts (magic, a length that fits, a matching checksum, a
    readable Arrow stream), so a flipped byte in frame 3 costs frame 3 only.
    Bytes of a payload that happen to spell the magic are never taken for a
    frame: their checksum would have to match too.  Reads the whole file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return Scan(0, (), (), False)
    size = len(data)
    frames: list[Frame] = []
    gaps: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        frame = _frame_at(data, pos)
        if frame is not None:
            frames.append(frame)
            pos = frame.end
            continue
        nxt = data.find(MAGIC, pos + 1)
        while nxt >= 0 and _frame_at(data, nxt) is None:
            nxt = data.find(MAGIC, nxt + 1)
        gaps.append((pos, size if nxt < 0 else nxt))
        if nxt < 0:
            break
        pos = nxt
    torn = False
    if gaps and gaps[-1][1] == size:
        start = gaps[-1][0]
        torn = _torn(data[start:start + _HEADER.size], size - start)
    return Scan(size, tuple(frames), tuple(gaps), torn)


def _frame_at(data: bytes | memoryview, pos: int) -> Frame | None:
    if pos + _HEADER.size > len(data):
        return None
    magic, length, crc = _HEADER.unpack_from(data, pos)
    body = pos + _HEADER.size
    if magic != MAGIC or length > len(data) - body:
        return None
    payload = memoryview(data)[body:body + length]
    if zlib.crc32(payload) != crc:
        return None
    try:
        table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
    except (pa.ArrowInvalid, OSError):
        return None
    return Frame(pos, body + length, table)


def frames_of(data: bytes | memoryview) -> tuple[list[pa.Table], int]:
    """The complete frames at the start of ``data`` (bytes of a journal from a frame boundary on).

    Returns them and the number of bytes they take; what follows is a torn or
    damaged frame.  Reads a journal segment of object storage, which holds
    whole frames only.
    """
    tables: list[pa.Table] = []
    pos = 0
    while (frame := _frame_at(data, pos)) is not None:
        tables.append(frame.table)
        pos = frame.end
    return tables, pos


def boundaries(path: str | os.PathLike[str]) -> list[int]:
    """The offset where each complete frame of a journal ends, in order (none for a missing file)."""
    return [end for _, end in iter_frames(path)]


#: How far back :func:`last_frames` reads before it gives up on finding more frames.
TAIL_BYTES = 8 * 2**20


def last_frames(path: str | os.PathLike[str], budget: int = TAIL_BYTES) -> Iterator[pa.Table]:
    """The complete frames of a journal file, last first, reading from its end (see :func:`last_frames_in`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        yield from last_frames_in(lambda offset, n: os.pread(fd, n, offset), os.fstat(fd).st_size, budget)
    finally:
        os.close(fd)


def last_frames_in(read_at: Callable[[int, int], bytes], size: int, budget: int = TAIL_BYTES) -> Iterator[pa.Table]:
    """The complete frames of a journal of ``size`` bytes, last first; ``read_at(offset, n)`` reads it.

    A frame is recognised by its magic, a length that ends exactly where the
    next frame starts, and its checksum, so bytes of a payload that happen to
    spell the magic are never mistaken for a header.  Stops at anything else
    (a torn tail, more than ``budget`` bytes read).  The cost does not grow
    with the journal's length.
    """
    end = size
    while end > 0 and budget > 0:
        window = min(end, 65_536)
        while True:
            data = read_at(end - window, window)
            budget -= window
            start = _frame_ending(data)
            if start is not None or window == end or budget <= 0:
                break
            window = min(end, window * 4)
        if start is None:
            return
        yield pa.ipc.open_stream(pa.py_buffer(memoryview(data)[start + _HEADER.size:])).read_all()
        end -= window - start


def _frame_ending(data: bytes) -> int | None:
    """Offset in ``data`` of the frame that ends exactly at the end of ``data``."""
    pos = len(data)
    while True:
        pos = data.rfind(MAGIC, 0, pos)
        if pos < 0:
            return None
        if pos + _HEADER.size <= len(data):
            _, length, crc = _HEADER.unpack_from(data, pos)
            body = pos + _HEADER.size
            if body + length == len(data) and zlib.crc32(memoryview(data)[body:]) == crc:
                return pos
