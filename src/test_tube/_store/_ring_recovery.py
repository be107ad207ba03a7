"""Recovery: the rows a dead process left in its ring, beyond what its journal holds.

Used by the read side (``read()``, and through it ``runs()``, the command line
and ``serve``), which only looks, and by the next open of the version, which
appends them to the journal as one frame and records that in the old ring
(the same two-step commit the writer uses), so a crash during recovery
neither loses nor repeats a row.  A ring a live writer holds is left alone:
its rows reach the journal within one writer cycle.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa

from . import _journal

from .._engine import _ring
from .._engine._fastpath import PackedShape
from .._engine._rows import STR
from ._schema import concat


def ring_path(log_dir: str) -> str:
    return os.path.join(log_dir, _ring.FILE)


def _frame_at(journal: str) -> Any:
    def check(offset: int) -> bool:
        return any(True for _ in _journal.iter_frames(journal, offset, offset + 1))
    return check


def _journal_size(journal: str) -> int:
    try:
        return os.path.getsize(journal)
    except FileNotFoundError:
        return 0


def ring_table(log_dir: str) -> pa.Table | None:
    """The whole rows of a dead ring beyond the journal, in logging order (None: nothing, or live)."""
    path = ring_path(log_dir)
    if not os.path.exists(path):
        return None
    opened = _ring.open_dead(path)
    if opened is None:
        return None
    fd, mm = opened
    try:
        journal = os.path.join(log_dir, "_journal.arrows")
        found = _ring.scan(mm, _journal_size(journal), _frame_at(journal))
        return None if found is None else table_of(found)
    finally:
        mm.close()
        os.close(fd)


def recover_into_journal(log_dir: str, journal: str) -> int:
    """Append a dead ring's rows to the journal (the caller holds the version's lock); rows recovered."""
    path = ring_path(log_dir)
    if not os.path.exists(path):
        return 0
    opened = _ring.open_dead(path, wait=True)
    if opened is None:
        return 0
    fd, mm = opened
    try:
        end = _journal_size(journal)
        found = _ring.scan(mm, end, _frame_at(journal))
        if found is None:
            return 0
        table = table_of(found)
        if table is None:
            return 0
        view = memoryview(mm)
        try:
            old = found.state
            _write_state(view, old, _ring.State(0, old.cursor, old.var, old.journal,
                                                found.end_seq, found.end_var, end))
            pieces = _journal.encode(table)
            with open(journal, "ab") as f:
                for piece in pieces:
                    f.write(memoryview(piece))
                f.flush()
                os.fsync(f.fileno())
            _write_state(view, old, _ring.State(0, found.end_seq, found.end_var, end))
            mm.flush()
        finally:
            view.release()
        return int(table.num_rows)
    finally:
        mm.close()
        os.close(fd)


def _write_state(view: Any, old: _ring.State, state: _ring.State) -> None:
    """Write ``state`` into both copies of a dead ring's header, newer than any copy there."""
    counter = max(old.counter, *(_ring._STATE.unpack_from(view, at)[0] for at in _ring._STATE_AT)) + 1
    fields = (counter, state.cursor, state.var, state.journal,
              state.pending_cursor, state.pending_var, state.pending_journal)
    import zlib

    data = _ring._STATE.pack(*fields, 0)[:-4]
    for at in _ring._STATE_AT:
        _ring._STATE.pack_into(view, at, *fields, zlib.crc32(data))


def table_of(found: _ring.Found) -> pa.Table | None:
    """The found rows as one table in logging order: ``step``, ``created_at``, then the keys."""
    parts: list[pa.Table] = []
    for kind, raw in found.packed.items():
        if not len(raw):
            continue
        names, codes = found.shapes[kind]
        shape = PackedShape(kind, names, codes)
        seq, steps, times, values = shape.arrays(raw)
        parts.append(pa.Table.from_arrays(
            [pa.array(seq), pa.array(steps), pa.array(times // 1000, pa.timestamp("us", tz="UTC")), *values],
            names=["seq", "step", "created_at", *names]))
    if found.rows:
        parts.append(_slow_table(found.rows))
    if not parts:
        return None
    table = concat(parts)
    order = np.argsort(table.column("seq").to_numpy(), kind="stable")
    return table.take(order).remove_column(0)


def _slow_table(rows: list[tuple[int, int, int, tuple[str, ...], tuple[Any, ...]]]) -> pa.Table:
    columns: dict[str, list[Any]] = {}
    n = len(rows)
    for i, (_, _, _, names, values) in enumerate(rows):
        for name, value in zip(names, values):
            column = columns.get(name)
            if column is None:
                column = columns[name] = [None] * n
            column[i] = value
    arrays = [pa.array([r[0] for r in rows], pa.int64()), pa.array([r[1] for r in rows], pa.int64()),
              pa.array([r[2] // 1000 for r in rows], pa.timestamp("us", tz="UTC"))]
    for cells in columns.values():
        array = _array(cells)
        arrays.append(array.cast(STR) if pa.types.is_string(array.type) else array)
    return pa.Table.from_arrays(arrays, names=["seq", "step", "created_at", *columns])


def _array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, OverflowError, pa.ArrowTypeError):
        # ints beyond 2**53 next to floats: the column rule widened them to float
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
