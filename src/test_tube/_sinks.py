"""The published files: ``metrics.csv`` and ``metrics.parquet``.

Both sinks share one small protocol, driven by the writer thread only:

* ``write(table)`` receives rows that are already in the journal, in logging order;
* ``flush(wait)`` makes the file as current as the sink promises (``wait``: a
  caller is blocked in ``save()``, finish any background work first);
* ``close()`` makes it complete.

When appending is not enough (a new column in the CSV header, a fresh Parquet
file) a sink rebuilds its file from a :class:`Source`, which streams the
journal one frame at a time: memory stays bounded however long the run, and
rebuilding only on a new column or on doubling keeps the total work linear.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import _layout


class Source(Protocol):
    """Where a sink rebuilds from: the journal as written so far."""

    def schema(self) -> pa.Schema:
        """Every column so far, in first-seen order, with its current type."""
        ...

    def frames(self, schema: pa.Schema, stop: int | None = None) -> Iterator[pa.Table]:
        """The journaled rows up to byte ``stop``, frame by frame, conformed to ``schema``."""
        ...

    @property
    def published_end(self) -> int:
        """The journal offset up to which the sinks have been handed rows."""
        ...


class Sink(Protocol):
    def write(self, table: pa.Table) -> None: ...
    def flush(self, wait: bool) -> None: ...
    def close(self) -> None: ...


class CsvSink:
    """``metrics.csv``: appended in place after each journal write, rewritten on a new column.

    Cells follow the original's spelling: ``True``/``False``, ``nan``, ``inf``,
    an empty cell for a missing value, ``created_at`` as
    ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC), floats with a ``.0`` when whole.
    """

    def __init__(self, path: str, source: Source) -> None:
        self.path = path
        self._source = source
        self._columns: list[str] | None = None

    def write(self, table: pa.Table) -> None:
        if self._columns is None or not set(table.column_names) <= set(self._columns):
            self.rewrite()
            return
        data = format_rows(table, self._columns)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                size = os.fstat(fd).st_size
                try:
                    _write_all(fd, data)
                except BaseException:
                    # Cut a partial line off again (a full disk), so readers never see a torn row.
                    os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
        except BaseException:
            # The file may end in a partial line now: rebuild it on the next write.
            self._columns = None
            raise

    def rewrite(self) -> None:
        """Publish the whole file from the journal (every row handed to the sinks so far)."""
        schema = self._source.schema()
        columns = schema.names
        tmp = _layout.temp_path(self.path)
        with open(tmp, "wb") as f:
            f.write(header(columns))
            for frame in self._source.frames(schema, self._source.published_end):
                f.write(format_rows(frame, columns))
        os.replace(tmp, self.path)
        self._columns = columns

    def flush(self, wait: bool) -> None:
        pass  # every write() is already in the file

    def close(self) -> None:
        if self._columns is None:
            self.rewrite()


class ParquetSink:
    """``metrics.parquet``: rewritten whole, often enough to stay at most half a run behind.

    A flush starts a rewrite when the rows since the last rewrite reach the
    rows the file holds, so the total work stays linear.  The rewrite streams
    the journal on a background thread (pyarrow releases the GIL for most of
    it), so the writer keeps draining the queue meanwhile; ``close()`` always
    brings the file up to date.
    """

    def __init__(self, path: str, source: Source, *, rows: int = 0) -> None:
        """``rows``: rows already journaled (when resuming a run)."""
        self.path = path
        self._source = source
        self._rows_in_file = -1  # unknown: the first flush publishes
        self._rows = rows
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, table: pa.Table) -> None:
        self._rows += table.num_rows

    def flush(self, wait: bool) -> None:
        if self._thread is None and self._rows - self._rows_in_file >= max(self._rows_in_file, 1):
            self._thread = threading.Thread(
                target=self._rewrite_in_background,
                args=(self._source.schema(), self._source.published_end, self._rows),
                name="test_tube-parquet",
                daemon=True,
            )
            self._thread.start()
        if wait:
            self.wait()

    def wait(self) -> None:
        """Wait for a rewrite in progress; raise its error, if any."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        self.wait()
        if self._rows != self._rows_in_file:
            self._rewrite(self._source.schema(), self._source.published_end, self._rows)

    def _rewrite_in_background(self, schema: pa.Schema, stop: int, rows: int) -> None:
        try:
            self._rewrite(schema, stop, rows)
        except BaseException as exc:  # handed to the writer by wait()
            self._error = exc

    def _rewrite(self, schema: pa.Schema, stop: int, rows: int) -> None:
        tmp = _layout.temp_path(self.path)
        # Dictionary encoding only pays for text; on float columns it triples the cost.
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=text or False) as writer:
            for table in _batched(self._source.frames(schema, stop)):
                writer.write_table(table, row_group_size=_ROW_GROUP)
        os.replace(tmp, self.path)
        self._rows_in_file = rows


_ROW_GROUP = 1 << 17


def _batched(frames: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Group small frames (frequent saves) into row groups of a useful size."""
    held: list[pa.Table] = []
    count = 0
    for frame in frames:
        held.append(frame)
        count += frame.num_rows
        if count >= _ROW_GROUP:
            yield pa.concat_tables(held)
            held, count = [], 0
    if held:
        yield pa.concat_tables(held)


def header(columns: list[str]) -> bytes:
    return _layout.csv_line(columns).encode()


def format_rows(table: pa.Table, columns: list[str]) -> memoryview:
    """CSV lines (no header) for ``table``, with cells in the order of ``columns``.

    Each column becomes text in one vectorised step and the lines are joined in
    Arrow, so no Python code runs per row.  The result is a view of Arrow's
    buffer, written out without another copy.
    """
    n = table.num_rows
    if n == 0:
        return memoryview(b"")
    names = set(table.column_names)
    texts = [_cell_text(table.column(name)) if name in names else pa.nulls(n, _TEXT) for name in columns]
    # The line ending goes onto the last cell (a missing one is an empty cell), so
    # one join builds the lines instead of a second pass over all of them.
    texts[-1] = pc.binary_join_element_wise(pc.fill_null(texts[-1], _EMPTY), _NEWLINE, _EMPTY)
    lines = pc.binary_join_element_wise(*texts, _COMMA, null_handling="replace", null_replacement="")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    # The lines are one contiguous run of bytes in the array's data buffer.
    _, offsets, data = lines.buffers()
    first = _OFFSETS.unpack_from(offsets, lines.offset * 8)[0]
    last = _OFFSETS.unpack_from(offsets, (lines.offset + n) * 8)[0]
    return memoryview(data.slice(first, last - first))


_TEXT = pa.large_string()
_OFFSETS = struct.Struct("<q")
_EMPTY = pa.scalar("", _TEXT)
_COMMA = pa.scalar(",", _TEXT)
_NEWLINE = pa.scalar("\n", _TEXT)
_POINT_ZERO = pa.scalar(".0", _TEXT)
_ZERO = pa.scalar(0.0, pa.float64())


def _cell_text(column: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    t = column.type
    if pa.types.is_timestamp(t):
        # A cast of a tz-naive timestamp prints "YYYY-MM-DD HH:MM:SS.ffffff";
        # strftime would be ten times slower.
        return pc.cast(column.cast(pa.timestamp("us")), _TEXT)
    if pa.types.is_boolean(t):
        return pc.if_else(column, pa.scalar("True", _TEXT), pa.scalar("False", _TEXT))
    if pa.types.is_floating(t):
        return _float_text(column.combine_chunks())
    if pa.types.is_null(t):
        return pa.nulls(len(column), _TEXT)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # Quote only the cells that need it (and empty strings, to tell them from
        # a missing value), so numbers stay unquoted and readers infer their types.
        column = column.cast(_TEXT)
        needs = pc.match_substring_regex(column, '^$|[,"\r\n]')
        if pc.any(needs).as_py():
            quote = pa.scalar('"', _TEXT)
            escaped = pc.replace_substring(column, '"', '""')
            quoted = pc.binary_join_element_wise(quote, escaped, quote, _EMPTY)
            return pc.if_else(needs, quoted, column)
        return column
    return pc.cast(column, _TEXT)


def _float_text(column: pa.Array) -> pa.Array:
    text = pc.cast(column, _TEXT)
    # Python spells a whole float "3.0"; Arrow spells it "3", which readers
    # would take for an int.  x - trunc(x) is exactly 0 for a whole finite
    # float (nan for an infinity or nan, null for null): two passes, not four.
    whole = pc.equal(pc.subtract(column, pc.trunc(column)), _ZERO)
    count = pc.sum(whole).as_py() or 0
    if not count:
        return text
    # Where Arrow chose an exponent ("1e+16") the text gets nothing.
    if count == len(column):
        return pc.if_else(pc.match_substring(text, "e"), text, pc.binary_join_element_wise(text, _POINT_ZERO, _EMPTY))
    # Usually a few cells: rewrite only those instead of copying every cell twice.
    cells = pc.filter(text, whole)
    fixed = pc.if_else(pc.match_substring(cells, "e"), cells, pc.binary_join_element_wise(cells, _POINT_ZERO, _EMPTY))
    return pc.replace_with_mask(text, whole, fixed)


def _write_all(fd: int, data: memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
