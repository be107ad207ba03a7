"""The published files: ``metrics.csv`` and ``metrics.parquet``.

Both sinks share one small protocol, driven by the writer thread only:

* ``write(table)`` receives rows that are already in the journal, in logging order;
* ``flush()`` makes the file current as far as the sink promises;
* ``close()`` makes it complete.

``rebuild`` is a callable returning every journaled row as one table; a sink
uses it when appending is not enough (a new column in the CSV header, a fresh
Parquet file), which keeps the total cost linear in the run.
"""

from __future__ import annotations

import csv
import io
import os
import struct
from collections.abc import Callable
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._layout import publish

Rebuild = Callable[[], pa.Table]


class Sink(Protocol):
    def write(self, table: pa.Table) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class CsvSink:
    """``metrics.csv``: appended in place after each journal write, rewritten on a new column.

    Cells follow the original's spelling: ``True``/``False``, ``nan``, ``inf``,
    an empty cell for a missing value, ``created_at`` as
    ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC), floats with a ``.0`` when whole.
    """

    def __init__(self, path: str, rebuild: Rebuild) -> None:
        self.path = path
        self._rebuild = rebuild
        self._columns: list[str] | None = None

    def write(self, table: pa.Table) -> None:
        if self._columns is None or not set(table.column_names) <= set(self._columns):
            self.rewrite(self._rebuild())
            return
        data = format_rows(table, self._columns)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        except BaseException:
            # The file may end in a partial line now: rebuild it on the next write.
            self._columns = None
            raise

    def rewrite(self, table: pa.Table) -> None:
        """Publish the whole file from ``table`` (every row so far)."""
        columns = table.column_names
        publish(self.path, header(columns) + format_rows(table, columns), fsync=False)
        self._columns = columns

    def flush(self) -> None:
        pass  # every write() is already in the file

    def close(self) -> None:
        if self._columns is None:
            self.rewrite(self._rebuild())


class ParquetSink:
    """``metrics.parquet``: rewritten whole, often enough to stay at most half a run behind.

    A rewrite happens on ``flush()`` when the rows since the last rewrite reach
    the rows the file holds, so the total work stays linear; ``close()`` always
    brings it up to date.
    """

    def __init__(self, path: str, rebuild: Rebuild, rows_in_file: int = 0) -> None:
        self.path = path
        self._rebuild = rebuild
        self._rows_in_file = rows_in_file
        self._rows = rows_in_file
        self._exists = os.path.exists(path)

    def write(self, table: pa.Table) -> None:
        self._rows += table.num_rows

    def flush(self) -> None:
        if self._rows - self._rows_in_file >= max(self._rows_in_file, 1):
            self._publish()

    def close(self) -> None:
        if self._rows != self._rows_in_file or not self._exists:
            self._publish()

    def _publish(self) -> None:
        table = self._rebuild()
        folder, base = os.path.split(self.path)
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.tmp")
        # Dictionary encoding only pays for text; on float columns it triples the cost.
        text = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        pq.write_table(table, tmp, compression="zstd", use_dictionary=text or False)
        os.replace(tmp, self.path)
        self._rows_in_file = self._rows = table.num_rows
        self._exists = True


def header(columns: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue().encode()


def format_rows(table: pa.Table, columns: list[str]) -> bytes:
    """CSV lines (no header) for ``table``, with cells in the order of ``columns``.

    Each column becomes text in one vectorised step and the lines are joined in
    Arrow, so no Python code runs per row.
    """
    n = table.num_rows
    if n == 0:
        return b""
    names = set(table.column_names)
    texts = [
        _cell_text(table.column(name)).cast(_TEXT) if name in names else pa.nulls(n, _TEXT) for name in columns
    ]
    lines = pc.binary_join_element_wise(
        *texts, pa.scalar(",", _TEXT), null_handling="replace", null_replacement=""
    )
    lines = pc.binary_join_element_wise(lines, pa.scalar("", _TEXT), pa.scalar("\n", _TEXT))
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    _, offsets, data = lines.buffers()
    first, last = _OFFSETS.unpack_from(offsets, lines.offset * 8)[0], _OFFSETS.unpack_from(offsets, (lines.offset + n) * 8)[0]
    return data.to_pybytes()[first:last]


_TEXT = pa.large_string()
_OFFSETS = struct.Struct("<q")


def _cell_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    t = column.type
    if pa.types.is_timestamp(t):
        # A cast of a tz-naive timestamp prints "YYYY-MM-DD HH:MM:SS.ffffff";
        # strftime would be ten times slower.
        return pc.cast(column.cast(pa.timestamp("us")), pa.string())
    if pa.types.is_boolean(t):
        return pc.if_else(column, "True", "False")
    if pa.types.is_floating(t):
        text = pc.cast(column, pa.string())
        whole = pc.and_(pc.is_finite(column), pc.equal(pc.floor(column), column))
        if pc.any(whole).as_py():
            # Python spells a whole float "3.0"; Arrow spells it "3", which readers
            # would take for an int.  Large values ("1e+16") keep their exponent.
            whole = pc.and_(whole, pc.invert(pc.match_substring(text, "e")))
            text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
        return text
    if pa.types.is_null(t):
        return pa.chunked_array([pa.nulls(len(column), pa.string())])
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # Quote only the cells that need it (and empty strings, to tell them from
        # a missing value), so numbers stay unquoted and readers infer their types.
        column = column.cast(_TEXT)
        needs = pc.match_substring_regex(column, '^$|[,"\r\n]')
        if pc.any(needs).as_py():
            quote = pa.scalar('"', _TEXT)
            escaped = pc.replace_substring(column, '"', '""')
            quoted = pc.binary_join_element_wise(quote, escaped, quote, pa.scalar("", _TEXT))
            return pc.if_else(needs, quoted, column)
    return column


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
