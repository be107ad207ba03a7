"""Damaged runs: find what every file of a run still holds, and never let a reopen lose it.

A run's rows live in three places: the journal (the record), and
``metrics.parquet`` and ``metrics.csv``, which the writer publishes from it, so
each published file holds a prefix of the journal's frames.  A byte flipped on
disk, a truncated copy or a hand edit can damage any of them.  What is kept:

* every *whole* frame of the journal (its checksum matches), also those after
  a damaged one (:func:`_journal.scan` looks past the damage);
* the rows of the longest readable published file beyond the journal's
  frames before the first damage: rows that were only in the damaged bytes
  come back from there when the file was published after them;
* whole frames after the damage that the published file does not already
  hold (told by the step and time of their last row).

:func:`salvage` computes that without writing (``read()`` uses it);
:func:`repair_before_resume` writes it as the new journal before a reopen
rebuilds the published files from the journal, so a reopen never leaves a
published file with fewer rows than it had.  Frames that are whole but
disagree with each other (made by hand) are not guessed at: they raise
:class:`DamagedRunError` naming the file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import _journal, _layout
from .._errors import DamagedRunError, DamagedRunWarning, warn_from_caller
from ._schema import concat, conform

_TIME = pa.timestamp("us", tz="UTC")


@dataclass
class Salvage:
    """What a run's files hold, put back in logging order."""

    journal: str
    scan: _journal.Scan
    pieces: list[pa.Table] = field(default_factory=list)
    kept: int = 0  # rows from whole journal frames
    recovered: int = 0  # rows from a published file
    source: str | None = None  # which one
    damaged: tuple[tuple[int, int], ...] = ()

    @property
    def rows(self) -> int:
        return self.kept + self.recovered

    @property
    def needed(self) -> bool:
        """Whether the journal alone, read up to its first tear, would give less than this."""
        return bool(self.damaged or self.recovered or len(self.scan.prefix) != len(self.scan.frames))

    def table(self) -> pa.Table:
        return concat(self.pieces)

    def warning(self, what: str, advice: str) -> DamagedRunWarning:
        ranges = ", ".join(f"{a}-{b}" for a, b in self.damaged)
        source = f", {self.recovered} recovered from {self.source}" if self.recovered else ""
        if self.damaged:
            state = f"is damaged (bytes {ranges} of {self.scan.size} are not whole frames)"
            lost = " Rows that were only in the damaged bytes, and in no published file, are lost."
        else:
            state = f"holds fewer rows than {self.source} (it was cut short or replaced)"
            lost = ""
        message = (f"{what}: {self.journal} {state}; {self.rows} rows can be read: {self.kept} from its whole "
                   f"frames{source}.{lost} {advice}")
        return DamagedRunWarning(message, path=self.journal, damaged=self.damaged, rows=self.rows,
                                 recovered=self.recovered)


def salvage(log_dir: str) -> Salvage:
    """Every row the files of a run still hold (see the module docstring); writes nothing.

    Raises :class:`DamagedRunError` for whole frames that contradict each other.
    """
    journal = os.path.join(log_dir, _layout.JOURNAL)
    found = _journal.scan(journal)
    check_frames(found.frames, journal)
    result = Salvage(journal, found)
    prefix = found.prefix
    after = found.frames[len(prefix):]
    result.pieces = [f.table for f in prefix]
    result.kept = sum(f.table.num_rows for f in prefix)
    damaged = list(found.damaged)
    if found.torn and not running(log_dir):
        damaged.append(found.gaps[-1])  # a run that ended has no write in progress: a cut, not a tear
    result.damaged = tuple(damaged)
    schema = _schema_of([f.table for f in found.frames])
    published = _longest_published(log_dir, schema, result.kept)
    covered: set[tuple[Any, Any]] = set()
    if published is not None:
        name, table = published
        extra = table.slice(result.kept)
        result.pieces.append(extra)
        result.recovered = extra.num_rows
        result.source = name
        covered = set(zip(extra.column("step").to_pylist(), _micros(extra.column("created_at"))))
    for frame in after:
        table = frame.table
        last = (table.column("step")[-1].as_py(), _micros(table.column("created_at").slice(table.num_rows - 1))[0]) \
            if table.num_rows else None
        if last is not None and last in covered:
            continue  # the published file holds this frame already
        result.pieces.append(table)
        result.kept += table.num_rows
    try:
        _schema_of(result.pieces)
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise DamagedRunError(f"{log_dir}: the journal and {result.source} disagree on a column's type ({exc}); "
                              f"move one of them away", path=journal) from None
    return result


def repair_before_resume(log_dir: str) -> None:
    """Before a version is reopened: make the journal hold every row any file of the run still holds.

    The reopen then rebuilds ``metrics.csv`` and ``metrics.parquet`` from the
    journal, so neither ever ends up with fewer rows than before.  When the
    journal is damaged, or a published file holds rows it lacks, it is
    replaced by what :func:`salvage` finds, the damaged one is kept beside it
    as ``_journal.arrows.damaged-<n>``, and a :class:`DamagedRunWarning` says
    what was damaged and what was recovered.  A torn last frame of a crashed
    run (a kill during a write) is no damage and is left to the reopen.
    Raises :class:`DamagedRunError` naming the file when frames contradict each other.
    """
    journal = os.path.join(log_dir, _layout.JOURNAL)
    if not os.path.exists(journal):
        if os.path.exists(os.path.join(log_dir, _layout.PARQUET)):
            _journal_from_published(log_dir, journal)
        return  # a run of test-tube 0.7.5 (metrics.csv only) is imported by the reopen
    if healthy(log_dir, journal, check=True):
        return
    result = salvage(log_dir)
    if not result.needed:
        return
    kept_as = _keep_damaged(journal)
    data = b"".join(bytes(memoryview(p)) for piece in result.pieces if piece.num_rows
                    for p in _journal.encode(piece))
    _layout.publish(journal, data)
    warn_from_caller(result.warning("reopen", f"The damaged journal is kept as {kept_as}."))


def healthy(log_dir: str, journal: str, *, check: bool = False) -> bool:
    """Whether the journal ends in whole frames and no published file holds more rows; streams, one frame at a time.

    ``check``: also raise :class:`DamagedRunError` for frames that contradict
    each other (as :func:`check_frames`).
    """
    rows = end = 0
    schema: pa.Schema | None = None
    for table, stop in _journal.iter_frames(journal):
        if check:
            schema = _check_frame(_journal.Frame(end, stop, table), schema, journal)
        rows += table.num_rows
        end = stop
    try:
        size = os.path.getsize(journal)
    except FileNotFoundError:
        size = 0
    return end == size and not _published_ahead(log_dir, rows)


def _published_ahead(log_dir: str, rows: int) -> bool:
    """Whether ``metrics.parquet`` (its footer) or ``metrics.csv`` (its newlines) may hold more than ``rows`` rows."""
    try:
        with pa.OSFile(os.path.join(log_dir, _layout.PARQUET)) as f:
            if pq.read_metadata(f).num_rows > rows:
                return True
    except (OSError, pa.ArrowException):
        pass  # missing or damaged: it holds nothing to keep
    csv = os.path.join(log_dir, _layout.CSV)
    try:
        return _line_count(csv) - 1 > rows
    except FileNotFoundError:
        return False


def check_frames(frames: tuple[_journal.Frame, ...] | list[_journal.Frame], path: str) -> None:
    """Raise :class:`DamagedRunError` unless every frame has ``step`` and ``created_at`` and the frames agree."""
    schema: pa.Schema | None = None
    for frame in frames:
        schema = _check_frame(frame, schema, path)


def _check_frame(frame: _journal.Frame, schema: pa.Schema | None, path: str) -> pa.Schema:
    """The columns so far, with ``frame``'s; raises :class:`DamagedRunError` if it contradicts them."""
    fields = frame.table.schema
    where = f"{path}: the frame at bytes {frame.start}-{frame.end}"
    if fields.names[:2] != ["step", "created_at"] or not pa.types.is_integer(fields.field(0).type) \
            or not pa.types.is_timestamp(fields.field(1).type):
        raise DamagedRunError(f"{where} does not start with an integer step and a created_at time "
                              f"(it has {fields.names[:2]}); it was not written by test_tube", path=path)
    if schema is None:
        return fields
    names = set(schema.names)
    for f in fields:
        if f.name in names:
            old = schema.field(f.name).type
            # The column rule of log(): one type, ints widening to floats, None fitting any.
            if not (old == f.type or pa.types.is_null(old) or pa.types.is_null(f.type)
                    or {old, f.type} == {pa.int64(), pa.float64()}):
                raise DamagedRunError(f"{where} holds column {f.name!r} as {f.type}, earlier frames as {old}; "
                                      f"it was not written by test_tube", path=path)
    return pa.unify_schemas([schema, fields], promote_options="permissive")


def _schema_of(tables: list[pa.Table]) -> pa.Schema | None:
    if not tables:
        return None
    return pa.unify_schemas([t.schema for t in tables], promote_options="permissive")


def running(log_dir: str) -> bool:
    """Whether ``meta.experiment`` says the run is (or was, until it crashed) writing; true when it cannot tell."""
    try:
        meta = _layout.read_meta(log_dir)
    except DamagedRunError:
        return True  # cannot tell: a tear is not reported as damage
    return bool(meta.get("status", "running") == "running")


def _micros(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    return pc.cast(column, pa.int64()).to_pylist()  # type: ignore[no-any-return]


def _longest_published(log_dir: str, schema: pa.Schema | None, beyond: int) -> tuple[str, pa.Table] | None:
    """The readable published file holding the most rows, if it holds more than ``beyond``."""
    best: tuple[str, pa.Table] | None = None
    parquet = os.path.join(log_dir, _layout.PARQUET)
    if os.path.exists(parquet):
        try:
            table = pq.read_table(parquet)
        except (OSError, pa.ArrowException):
            table = None  # damaged itself: rebuilt from the journal by the reopen
        if table is not None and table.num_rows > beyond and _has_base(table):
            best = (_layout.PARQUET, table)
            schema = table.schema
    csv = os.path.join(log_dir, _layout.CSV)
    most = max(beyond, best[1].num_rows if best else 0)
    if os.path.exists(csv) and _line_count(csv) - 1 > most:
        # Counting newlines bounds the rows (a quoted cell may hold more), so a file
        # that cannot hold more rows is never parsed.
        table = _read_csv(csv, schema)
        if table is not None and table.num_rows > most:
            best = (_layout.CSV, table)
    return best


def _has_base(table: pa.Table) -> bool:
    names = table.column_names
    return bool(names[:2] == ["step", "created_at"] and pa.types.is_integer(table.schema.field(0).type)
                and pa.types.is_timestamp(table.schema.field(1).type))


def _line_count(path: str) -> int:
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _read_csv(path: str, schema: pa.Schema | None) -> pa.Table | None:
    """``metrics.csv`` typed as the journal's columns; None when it cannot be read so.

    A last line without its newline is a tear and is dropped, never read as a value.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    types: dict[str, pa.DataType] = {"step": pa.int64(), "created_at": pa.timestamp("us")}
    if schema is not None:
        types |= {f.name: f.type for f in schema if f.name not in types}
    options = pacsv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=True,
                                   quoted_strings_can_be_null=False, true_values=["True"], false_values=["False"])
    try:
        table = pacsv.read_csv(pa.BufferReader(data), convert_options=options)
        if not _names_ok(table):
            return None
        times = table.column("created_at").cast(_TIME)
        table = table.set_column(1, pa.field("created_at", _TIME), times)
        if schema is not None:
            table = conform(table, pa.unify_schemas([schema, table.schema], promote_options="permissive"))
    except (pa.ArrowException, ValueError):
        return None
    return table


def _names_ok(table: pa.Table) -> bool:
    return bool(table.column_names[:2] == ["step", "created_at"] and table.schema.field(0).type == pa.int64())


def _journal_from_published(log_dir: str, journal: str) -> None:
    """A run of ours whose journal is gone: make it again from the longest published file."""
    published = _longest_published(log_dir, None, 0)
    if published is None:
        return
    name, table = published
    data = b"".join(bytes(memoryview(p)) for p in _journal.encode(table))
    _layout.publish(journal, data)
    warn_from_caller(DamagedRunWarning(f"reopen: {journal} was missing; {table.num_rows} rows recovered from {name}",
                                       path=journal, rows=table.num_rows, recovered=table.num_rows))


def _keep_damaged(journal: str) -> str:
    n = 1
    while os.path.exists(f"{journal}.damaged-{n}"):
        n += 1
    target = f"{journal}.damaged-{n}"
    shutil.copyfile(journal, target)
    return target
