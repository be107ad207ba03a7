"""The published files: ``metrics.csv`` and ``metrics.parquet``.

Both sinks share one small protocol, driven by the writer thread only:

* ``write(table)`` receives rows that are already in the journal, in logging order
  (one frame, whole or in pieces); it returns True when it rebuilt its file from
  the journal instead, which holds the whole frame: the frame's other pieces are
  then not handed to it;
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
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._store import _layout
from .._store._schema import conform


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
    def write(self, table: pa.Table) -> bool | None: ...
    def flush(self, wait: bool) -> None: ...
    def close(self) -> None: ...


#: Rows formatted at once: short chunks while someone waits for the publisher, long ones otherwise.
CSV_CHUNK = 8_192
CSV_CHUNK_CALM = 131_072


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

    def write(self, table: pa.Table) -> bool:
        if self._columns is None or not set(table.column_names) <= set(self._columns):
            self.rewrite()
            return True
        start = 0
        while start < table.num_rows:
            # Short chunks while a caller waits for room in the ring, long ones otherwise:
            # each chunk costs a fixed number of GIL hand-offs.
            size = CSV_CHUNK if self.urgent() else CSV_CHUNK_CALM
            self._append(format_rows(table.slice(start, size), self._columns))
            start += size
        return False

    def urgent(self) -> bool:
        """Whether a caller waits for room in the ring (the writer sets it)."""
        return False

    def _append(self, data: memoryview) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                _layout.append_whole(fd, [data])  # a partial line is cut off again: no torn row
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
    """``metrics.parquet``: streamed as row groups into a hidden file, published whole at ``close()``.

    While the run goes, a flush republishes the file when the rows since the
    last publish reach the rows it holds (so it is never more than half the
    run behind and the total work stays linear); that rewrite streams the
    journal on a background thread (pyarrow releases the GIL for most of it).
    Every row is also encoded once into a second, hidden file as it arrives,
    so ``close()`` only writes the last row group and the footer and renames
    it: its cost does not grow with the run.  A column that appears or widens
    mid-run restarts the hidden file from the journal (a handful of times a run).
    """

    def __init__(self, path: str, source: Source, *, rows: int = 0) -> None:
        """``rows``: rows already journaled (when resuming a run)."""
        self.path = path
        self._source = source
        self._rows_in_file = -1  # unknown: the first flush publishes
        self._rows = rows
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stream: pq.ParquetWriter | None = None
        self._stream_schema: pa.Schema | None = None
        self._stream_rows = 0
        self._held: list[pa.Table] = []
        self._held_rows = 0
        self._restarts = 0
        self._stream_path = _layout.temp_path(os.path.join(os.path.dirname(path), "stream." + os.path.basename(path)))

    def write(self, table: pa.Table) -> bool:
        if self._restarts > _MAX_RESTARTS:
            self._rows += table.num_rows
            return False  # columns keep changing: close() rewrites from the journal instead
        schema = self._source.schema()
        if self._stream_schema is not None and not schema.equals(self._stream_schema):
            self._drop_stream()
            self._restarts += 1
            if self._restarts > _MAX_RESTARTS:
                self._rows += table.num_rows
                return False
        if self._stream_schema is None:
            # (Re)start from the journal, which already holds this table.
            self._stream_schema = schema
            for frame in self._source.frames(schema, self._source.published_end):
                self._hold(frame)
            self._rows = self._stream_rows + self._held_rows  # every frame, this one whole
            return True
        self._rows += table.num_rows
        self._hold(conform(table, schema))
        return False

    def _hold(self, table: pa.Table) -> None:
        self._held.append(table)
        self._held_rows += table.num_rows
        if self._held_rows >= _STREAM_GROUP:
            self._write_held()

    def _write_held(self) -> None:
        if not self._held:
            return
        assert self._stream_schema is not None
        if self._stream is None:
            self._stream = pq.ParquetWriter(self._stream_path, self._stream_schema, compression="zstd",
                                            use_dictionary=_text_columns(self._stream_schema) or False)
        table = pa.concat_tables(self._held) if len(self._held) > 1 else self._held[0]
        self._held = []
        self._stream_rows += self._held_rows
        self._held_rows = 0
        self._stream.write_table(table, row_group_size=max(_STREAM_GROUP, table.num_rows))

    def _drop_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            finally:
                self._stream = None
            try:
                os.remove(self._stream_path)
            except FileNotFoundError:
                pass
        self._stream_schema = None
        self._held = []
        self._held_rows = 0
        self._stream_rows = 0

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
        if self._rows == self._rows_in_file:
            self._drop_stream()
            return
        schema = self._source.schema()
        if (self._stream_schema is not None and schema.equals(self._stream_schema)
                and self._stream_rows + self._held_rows == self._rows):
            self._write_held()
            if self._stream is None:  # no row group yet: an empty file of this schema
                self._stream = pq.ParquetWriter(self._stream_path, schema, compression="zstd")
            self._stream.close()
            self._stream = None
            self._stream_schema = None
            os.replace(self._stream_path, self.path)
            self._rows_in_file = self._rows
            return
        self._drop_stream()
        self._rewrite(schema, self._source.published_end, self._rows)

    def _rewrite_in_background(self, schema: pa.Schema, stop: int, rows: int) -> None:
        try:
            self._rewrite(schema, stop, rows)
        except BaseException as exc:  # handed to the writer by wait()
            self._error = exc

    def _rewrite(self, schema: pa.Schema, stop: int, rows: int) -> None:
        tmp = _layout.temp_path(self.path)
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=_text_columns(schema) or False) as writer:
            for table in _batched(self._source.frames(schema, stop)):
                writer.write_table(table, row_group_size=_ROW_GROUP)
        os.replace(tmp, self.path)
        self._rows_in_file = rows


def _text_columns(schema: pa.Schema) -> list[str]:
    # Dictionary encoding only pays for text; on float columns it triples the cost.
    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


_MAX_RESTARTS = 8
#: Rows of a row group of the streamed file: small enough that writing one is a
#: short step (log() may wait behind it while publishing falls behind), big enough to compress well.
_STREAM_GROUP = 65_536
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

    Each kind of column becomes text in one vectorised step (all float columns
    together, all int columns together) and the lines are joined in Arrow in
    one call, so no Python code runs per row and the number of pyarrow calls
    does not grow with the columns: each call lets go of the GIL, and getting
    it back next to a busy training loop takes up to the interpreter's switch
    interval.  The cell separators are part of the join: after a float cell
    that needs ``.0`` (see :func:`_float_marks`) the separator is ``.0,``, so
    no text column is rebuilt to append it.  The result is a view of Arrow's
    buffer, written out without another copy.
    """
    n = table.num_rows
    if n == 0:
        return memoryview(b"")
    names = set(table.column_names)
    texts: list[Any] = [None] * len(columns)
    seps: list[Any] = [_COMMA] * (len(columns) - 1) + [_NEWLINE]
    batched: dict[str, list[tuple[int, pa.Array]]] = {"float": [], "int": []}
    for k, name in enumerate(columns):
        if name not in names:
            texts[k] = _EMPTY  # a missing cell is an empty one
            continue
        column = table.column(name)
        t = column.type
        if pa.types.is_floating(t) and t == pa.float64():
            batched["float"].append((k, column.combine_chunks()))
        elif pa.types.is_integer(t):
            batched["int"].append((k, column.combine_chunks().cast(pa.int64())))
        else:
            texts[k] = _cell_text(column)
    for kind, members in batched.items():
        if not members:
            continue
        joined = pa.concat_arrays([array for _, array in members]) if len(members) > 1 else members[0][1]
        text = pc.cast(joined, _TEXT)
        marks = _float_marks(joined, text) if kind == "float" else None
        for m, (k, _) in enumerate(members):
            texts[k] = text.slice(m * n, n)
            if marks is not None:
                last = k == len(columns) - 1
                seps[k] = pc.if_else(marks.slice(m * n, n), _POINT_ZERO_NEWLINE if last else _POINT_ZERO_COMMA,
                                     _NEWLINE if last else _COMMA)
    parts: list[Any] = []
    for text, sep in zip(texts, seps):
        parts += (text, sep)
    lines = pc.binary_join_element_wise(*parts, _EMPTY, null_handling="replace", null_replacement="")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    # The lines are one contiguous run of bytes in the array's data buffer.
    _, offsets, data = lines.buffers()
    first = _OFFSETS.unpack_from(offsets, lines.offset * 8)[0]
    last = _OFFSETS.unpack_from(offsets, (lines.offset + n) * 8)[0]
    return memoryview(data.slice(first, last - first))


def _float_marks(column: pa.Array, text: pa.Array) -> pa.Array | None:
    """Where Arrow's text of a float needs ``.0`` to read as Python spells it, or None if nowhere.

    Arrow spells 3.0 "3", which readers would take for an int.  x - trunc(x)
    is exactly 0 for a whole finite float (nan for an infinity or nan, null for
    null): two cheap passes find them; of those, only the cells where Arrow did
    not choose an exponent ("1e+16") get the ``.0``.
    """
    whole = pc.equal(pc.subtract(column, pc.trunc(column)), _ZERO)
    count = pc.sum(whole).as_py() or 0
    if not count:
        return None
    plain = pc.invert(pc.match_substring(pc.filter(text, whole), "e"))
    return pc.fill_null(pc.replace_with_mask(whole, whole, plain), False)


_TEXT = pa.large_string()
_OFFSETS = struct.Struct("<q")
_EMPTY = pa.scalar("", _TEXT)
_COMMA = pa.scalar(",", _TEXT)
_NEWLINE = pa.scalar("\n", _TEXT)
_POINT_ZERO_COMMA = pa.scalar(".0,", _TEXT)
_POINT_ZERO_NEWLINE = pa.scalar(".0\n", _TEXT)


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
    """Floats as Python spells them: Arrow's shortest text, with ``.0`` after a whole number.

    Arrow spells 3.0 "3", which readers would take for an int.  x - trunc(x)
    is exactly 0 for a whole finite float (nan for an infinity or nan, null for
    null): two cheap passes find them, and only those cells are rewritten,
    except where Arrow chose an exponent ("1e+16").
    """
    text = pc.cast(column, _TEXT)
    whole = pc.equal(pc.subtract(column, pc.trunc(column)), _ZERO)
    count = pc.sum(whole).as_py() or 0
    if not count:
        return text
    if count == len(column):
        return pc.if_else(pc.match_substring(text, "e"), text, pc.binary_join_element_wise(text, _POINT_ZERO, _EMPTY))
    cells = pc.filter(text, whole)
    fixed = pc.if_else(pc.match_substring(cells, "e"), cells, pc.binary_join_element_wise(cells, _POINT_ZERO, _EMPTY))
    return pc.replace_with_mask(text, whole, fixed)


_POINT_ZERO = pa.scalar(".0", pa.large_string())
_ZERO = pa.scalar(0.0, pa.float64())

