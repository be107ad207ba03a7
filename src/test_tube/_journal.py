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
from collections.abc import Iterator

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
