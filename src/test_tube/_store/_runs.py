"""The runs table: one row per version of every experiment under a save_dir.

Reading never modifies a run: no lock is taken and no file is written.

A finished (or failed) run is summarised without loading its rows:

* the row count and each column's min and max come from the Parquet footer
  (row-group statistics);
* the last values come from the last frames of the journal, found by searching
  backwards from its end, so the cost does not grow with the run's length;
* anything those cannot answer (a column whose statistics are missing, a value
  not in the last frames) is read from ``metrics.parquet``, that column only.

A running, crashed or legacy run, or one whose ``metrics.parquet`` is older than
its journal, is summarised from :func:`test_tube.read`, which is always current.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import time
import warnings
import zlib
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import _journal, _layout
from .._errors import DamagedRunError
from ._read import read

#: Seconds without a heartbeat after which a run whose process cannot be
#: checked (it ran on another host) counts as crashed; the bound is at least
#: ten flush intervals of that run.
HEARTBEAT_BOUND = 60.0

#: The columns every runs table starts with, in order.
BUILTIN_COLUMNS = ("name", "version", "log_dir", "created_at", "description", "status", "rows", "last_step")

#: The column, right after ``version``, that a table holding per-rank runs has (see :func:`runs`).
RANK_COLUMN = "rank"

#: A tag whose name is taken by a built-in or metric column gets this prefix.
TAG_PREFIX = "tag:"

_VERSION_DIR = re.compile(r"version_(\d+)")
# Experiment writes rank_{int}; no leading zeros, so that rank_01 cannot stand for the same rank as rank_1.
_RANK_DIR = re.compile(r"rank_(0|[1-9]\d*)")
# The files that make a folder a run of its own; a version folder of per-rank runs has none of them.
_RUN_FILES = (_layout.META, _layout.JOURNAL, _layout.CSV, _layout.PARQUET)
_TIME_UTC = pa.timestamp("us", tz="UTC")
_SKIP = ("step", "created_at")
# How far back the journal is searched for last values before reading
# the column from metrics.parquet instead.
_TAIL_FRAMES = 16
_TAIL_BYTES = 8 * 2**20


def runs(save_dir: str | os.PathLike[str], name: str | None = None) -> pa.Table:
    """Summarise every run under ``save_dir`` as a ``pyarrow.Table``, one row per run.

    A run is a version folder, or, for ``Experiment(per_rank=True)``, one
    ``version_<N>/rank_<r>`` folder: a version folder that holds ``rank_<r>``
    folders and no run files of its own gives one row per rank.

    Columns, in order: ``name``, ``version``, then ``rank`` (int64; null for an
    ordinary run) only when some run in the table is a per-rank one, so tables
    without per-rank runs keep their columns; then ``log_dir`` (the rank folder
    for a per-rank run), ``created_at`` (timestamp, UTC), ``description``,
    ``status``, ``rows`` (rows logged), ``last_step`` (step of the last row);
    then one column per tag, named like the tag (``tag:<name>`` where that
    name is taken by another column) and typed bool, int64, float64 or string
    when every run agrees, the text as written otherwise; then, for each
    numeric metric, ``<metric>.last`` (its last logged value, NaN included),
    ``<metric>.min`` and ``<metric>.max`` (NaN ignored).  A run that lacks a
    tag or metric has null there.

    ``status`` is ``running``, ``finished``, ``failed`` (closed after an
    exception), ``crashed`` (the writing process is gone without closing: it
    is no longer alive on this host, or, for a run from another host, its
    heartbeat is older than ``max(HEARTBEAT_BOUND, 10 * flush_interval)``
    seconds), ``unknown`` (written by test-tube 0.7.5, or not started yet), or
    ``damaged`` (``meta.experiment`` or ``meta_tags.csv`` cannot be parsed, or
    the rows cannot be read: a warning names the file; the other runs are
    listed as usual).

    ``name`` restricts the table to one experiment.  ``save_dir`` may also be
    one experiment's folder (the one holding ``version_<N>`` folders).  Rows
    are ordered by name, then version, then rank.  Finished runs are read from
    their Parquet footer and journal tail, not row by row.  Reads only; safe to
    call while runs are writing.  Raises ``FileNotFoundError`` when
    ``save_dir`` (or ``save_dir/name``) is not a folder.
    """
    found = find_runs(os.path.abspath(os.fspath(save_dir)), name)
    summaries = [summarise(run.log_dir, run.name, run.version, rank=run.rank) for run in found]
    return _table(summaries)


class FoundRun(NamedTuple):
    """One run folder :func:`find_runs` found: a version folder, or a rank folder inside one."""

    name: str
    version: int
    rank: int | None
    log_dir: str


def find_runs(save_dir: str | os.PathLike[str], name: str | None = None) -> list[FoundRun]:
    """Every run folder under ``save_dir``, ordered by name, version, rank (see :func:`runs`)."""
    root = os.fspath(save_dir)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} is not a folder")
    if name is not None:
        exp_dir = os.path.join(root, name)
        if not os.path.isdir(exp_dir):
            raise FileNotFoundError(f"{root} has no experiment {name!r}")
        return _versions(exp_dir, name)
    found: list[FoundRun] = []
    with os.scandir(root) as entries:
        dirs = sorted(e.name for e in entries if e.is_dir())
    if any(_VERSION_DIR.fullmatch(d) for d in dirs):
        # save_dir is one experiment's folder
        return _versions(root, os.path.basename(os.path.abspath(root)))
    for exp in dirs:
        found.extend(_versions(os.path.join(root, exp), exp))
    return found


def _versions(exp_dir: str, name: str) -> list[FoundRun]:
    with os.scandir(exp_dir) as entries:
        versions = sorted(
            int(m.group(1)) for e in entries if (m := _VERSION_DIR.fullmatch(e.name)) and e.is_dir()
        )
    found: list[FoundRun] = []
    for v in versions:
        version_dir = os.path.join(exp_dir, f"version_{v}")
        ranks = rank_dirs(version_dir)
        if ranks:
            found.extend(FoundRun(name, v, r, d) for r, d in ranks)
        else:
            found.append(FoundRun(name, v, None, version_dir))
    return found


def rank_dirs(version_dir: str) -> list[tuple[int, str]]:
    """``(rank, folder)`` of each ``rank_<r>`` folder of a per-rank version, by rank.

    Empty for an ordinary version: one with a run file of its own
    (``meta.experiment``, the journal, ``metrics.csv`` or ``metrics.parquet``),
    or without ``rank_<r>`` folders.  One ``scandir`` of the folder.
    """
    ranks: list[tuple[int, str]] = []
    try:
        with os.scandir(version_dir) as entries:
            for e in entries:
                if e.name in _RUN_FILES:
                    return []
                if (m := _RANK_DIR.fullmatch(e.name)) and e.is_dir():
                    ranks.append((int(m.group(1)), e.path))
    except (FileNotFoundError, NotADirectoryError):
        return []  # deleted while listed
    return sorted(ranks)


# -- status -----------------------------------------------------------------


def run_status(meta: dict[str, Any], *, now: float | None = None) -> str:
    """The status of a run from its ``meta.experiment`` (see :func:`runs`)."""
    status = meta.get("status")
    if not isinstance(status, str):
        return "unknown"
    if status != "running":
        return status
    alive = _writer_alive(meta)
    if alive is None:
        beat = _utc_seconds(meta.get("updated_at") or meta.get("created_at"))
        interval = meta.get("flush_interval")
        bound = max(HEARTBEAT_BOUND, 10 * interval if isinstance(interval, (int, float)) else 0.0)
        alive = beat is None or (time.time() if now is None else now) - beat <= bound
    return "running" if alive else "crashed"


def _writer_alive(meta: dict[str, Any]) -> bool | None:
    """Whether the process that wrote ``meta`` still runs; None when this host cannot tell."""
    pid = meta.get("pid")
    if os.name != "posix" or meta.get("host") != socket.gethostname() or type(pid) is not int or pid <= 0:
        return None  # (on Windows, os.kill(pid, 0) would terminate the process)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    stat = _process_stat(pid)
    if stat is None:
        return True
    zombie, started = stat
    if zombie:
        return False
    # A process that started after the run's last heartbeat reuses the pid.
    beat = _utc_seconds(meta.get("updated_at"))
    return started is None or beat is None or started <= beat + 2.0


def _process_stat(pid: int) -> tuple[bool, float | None] | None:
    """Whether ``pid`` is a zombie, and its start time (epoch seconds); None without /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return True, None
    boot = _boot_time()
    return False, None if boot is None else boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


@functools.cache
def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _utc_seconds(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _utc_micros(text: Any) -> int | None:
    """Microseconds since the epoch of a ``created_at`` text (UTC unless it says otherwise)."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return (parsed - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# -- one run ----------------------------------------------------------------


@dataclass
class Metric:
    """The summary of one numeric column: its type, last, min and max value."""

    type: pa.DataType
    last: Any = None
    min: Any = None
    max: Any = None


@dataclass
class Summary:
    """Everything the runs table says about one run (a version, or one rank of a per-rank version)."""

    name: str
    version: int
    log_dir: str
    meta: dict[str, Any]
    status: str
    rows: int | None = None
    last_step: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    rank: int | None = None
    damage: str | None = None  # what makes the run "damaged", naming the file


def summarise(log_dir: str, name: str | None = None, version: int | None = None, *,
              rank: int | None = None) -> Summary:
    """Summarise one run folder (see :func:`runs`); reads only.

    ``name`` and ``version`` default to what the path says
    (``<name>/version_<N>``, or ``<name>/version_<N>/rank_<r>``, which also
    gives ``rank``); pass them when the caller already knows.
    """
    damage: list[str] = []
    meta = _read_meta(log_dir, damage)
    path_name, path_version, path_rank = run_identity(log_dir)
    if name is None:
        name = path_name
    if version is None:
        version = path_version if path_version is not None else meta.get("version", -1)
    if rank is None:
        rank = path_rank
    summary = Summary(name, _version(version), log_dir, meta, run_status(meta), rank=rank)
    try:
        summary.tags = read_tag_texts(log_dir)
    except (OSError, DamagedRunError) as exc:
        damage.append(str(exc))
        warnings.warn(f"test_tube.runs(): unreadable {_layout.TAGS} in {log_dir}: {exc}", RuntimeWarning,
                      stacklevel=3)
    if damage:
        summary.damage = damage[0]
        summary.status = "damaged"
    parquet = os.path.join(log_dir, _layout.PARQUET)
    journal = os.path.join(log_dir, _layout.JOURNAL)
    if summary.status in ("finished", "failed") and _parquet_complete(parquet, journal):
        try:
            _from_parquet(summary, parquet, journal)
            return summary
        except (OSError, pa.ArrowException):
            # a damaged metrics.parquet: the journal still has every row
            summary.metrics = {}
    try:
        _from_table(summary, read(log_dir))
    except (OSError, pa.ArrowException, DamagedRunError) as exc:
        summary.rows = summary.last_step = None
        summary.metrics = {}
        if isinstance(exc, DamagedRunError) or summary.damage:
            summary.damage = summary.damage or str(exc)
            summary.status = "damaged"
        warnings.warn(f"test_tube.runs(): cannot read the rows of {log_dir}: {type(exc).__name__}: {exc}",
                      RuntimeWarning, stacklevel=3)
    return summary


def _version(value: Any) -> int:
    """The version a run folder's path or meta gives; -1 when neither says."""
    if type(value) is int:
        return value
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return -1


def run_identity(log_dir: str) -> tuple[str, int | None, int | None]:
    """Experiment name, version and rank that a run folder's path spells.

    ``<name>/version_<N>/rank_<r>`` gives ``(name, N, r)``,
    ``<name>/version_<N>`` gives ``(name, N, None)``; a folder named otherwise
    gives its parent's name and no version or rank.
    """
    absolute = os.path.abspath(log_dir)
    parent, base = os.path.split(absolute)
    rank = _RANK_DIR.fullmatch(base)
    if rank and (version := _VERSION_DIR.fullmatch(os.path.basename(parent))):
        return os.path.basename(os.path.dirname(parent)), int(version.group(1)), int(rank.group(1))
    m = _VERSION_DIR.fullmatch(base)
    return os.path.basename(parent), int(m.group(1)) if m else None, None


def _read_meta(log_dir: str, damage: list[str]) -> dict[str, Any]:
    try:
        return _layout.read_meta(log_dir)
    except (OSError, DamagedRunError) as exc:
        damage.append(str(exc))
        warnings.warn(f"test_tube.runs(): unreadable {_layout.META} in {log_dir}: {exc}", RuntimeWarning,
                      stacklevel=4)
        return {}


def read_tag_texts(log_dir: str) -> dict[str, str]:
    """The tags of a run as the text written in ``meta_tags.csv``, in order."""
    rows = _layout.read_tag_rows(log_dir)
    return {row[0]: row[1] for row in rows[1:] if len(row) >= 2}


def _parquet_complete(parquet: str, journal: str) -> bool:
    """Whether ``metrics.parquet`` holds every journaled row: it was written after the journal."""
    try:
        p = os.stat(parquet).st_mtime_ns
    except FileNotFoundError:
        return False
    try:
        return p >= os.stat(journal).st_mtime_ns
    except FileNotFoundError:
        return True


def _is_metric(name: str, typ: pa.DataType) -> bool:
    return name not in _SKIP and (pa.types.is_integer(typ) or pa.types.is_floating(typ))


def _metric_type(typ: pa.DataType) -> pa.DataType:
    """int64 for integers that fit it, float64 for the rest (floats, uint64)."""
    return pa.float64() if pa.types.is_floating(typ) or typ == pa.uint64() else pa.int64()


def _from_table(summary: Summary, table: pa.Table) -> None:
    """Summarise from every row (running, crashed and legacy runs)."""
    summary.rows = table.num_rows
    if "step" in table.column_names and table.num_rows:
        summary.last_step = _last_valid(table.column("step"))
    for name, column in zip(table.column_names, table.columns):
        if not _is_metric(name, column.type):
            continue
        typ = _metric_type(column.type)
        metric = Metric(typ, last=_last_valid(column))
        if metric.last is not None:
            bounds = pc.min_max(column)
            metric.min, metric.max = bounds["min"].as_py(), bounds["max"].as_py()
        summary.metrics[name] = _coerce(metric)


def _from_parquet(summary: Summary, parquet: str, journal: str) -> None:
    """Summarise a closed run from the Parquet footer and the journal's last frames."""
    with pa.OSFile(parquet) as f:  # a plain file skips pyarrow's filesystem lookup (a third of the cost)
        meta = pq.read_metadata(f)
    schema = meta.schema.to_arrow_schema()
    summary.rows = meta.num_rows
    wanted: dict[str, int] = {}  # metric -> column index
    for i, f in enumerate(schema):
        if _is_metric(f.name, f.type):
            wanted[f.name] = i
            summary.metrics[f.name] = Metric(_metric_type(f.type))
    to_read: set[str] = set()
    seen: set[str] = set()
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        rows = group.num_rows
        for name, i in wanted.items():
            stats = group.column(i).statistics
            if stats is None:
                to_read.add(name)
                continue
            if stats.has_min_max:
                metric = summary.metrics[name]
                metric.min = stats.min if metric.min is None else min(metric.min, stats.min)
                metric.max = stats.max if metric.max is None else max(metric.max, stats.max)
                seen.add(name)
            elif stats.null_count != rows:
                to_read.add(name)  # values but no bounds: all NaN, or a writer without them
    # Columns with no value at all keep null last/min/max and need no tail.
    need = {name for name in wanted if name in seen or name in to_read}
    if meta.num_rows and "step" in schema.names:
        need.add("step")
    last = _tail_values(journal, need) if need else {}
    missing = (need - set(last)) | to_read
    if missing:
        _read_columns(summary, parquet, sorted(missing), last, bounds=to_read)
    summary.last_step = last.get("step")
    for name, metric in summary.metrics.items():
        metric.last = last.get(name)
        summary.metrics[name] = _coerce(metric)


def _read_columns(summary: Summary, parquet: str, names: list[str], last: dict[str, Any], bounds: set[str]) -> None:
    """Fill what the footer and journal could not: last values, and bounds of ``bounds``."""
    table = pq.read_table(parquet, columns=names)
    for name in names:
        column = table.column(name)
        if name not in last:
            last[name] = _last_valid(column)
        if name in bounds and last[name] is not None:
            b = pc.min_max(column)
            summary.metrics[name].min, summary.metrics[name].max = b["min"].as_py(), b["max"].as_py()


def _tail_values(journal: str, names: set[str]) -> dict[str, Any]:
    """The last non-null value of each of ``names``, from the journal's last frames.

    Looks at no more than ``_TAIL_FRAMES`` frames; a name not found there is
    left out, and the caller reads it from ``metrics.parquet``.
    """
    found: dict[str, Any] = {}
    todo = set(names)
    frames = _frames_backwards(journal)
    try:
        for count, frame in enumerate(frames):
            for name, column in zip(frame.column_names, frame.columns):
                if name in todo:
                    value = _last_valid(column)
                    if value is not None:
                        found[name] = value
                        todo.discard(name)
            if not todo or count + 1 >= _TAIL_FRAMES:
                break
    finally:
        frames.close()  # closes the journal now, not when the generator is collected
    return found


def _frames_backwards(path: str) -> Generator[pa.Table, None, None]:
    """The complete frames of a journal, last first.

    A frame is recognised by its magic, a length that ends exactly where the
    next frame starts, and its checksum, so bytes of a payload that happen to
    spell the magic are never mistaken for a header.  Stops at anything else
    (a torn tail, more than ``_TAIL_BYTES`` read).
    """
    header = _journal._HEADER
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        end = f.seek(0, os.SEEK_END)
        budget = _TAIL_BYTES
        while end > 0 and budget > 0:
            window = min(end, 65_536)
            while True:
                f.seek(end - window)
                data = f.read(window)
                budget -= window
                start = _find_frame(data, header)
                if start is not None or window == end or budget <= 0:
                    break
                window = min(end, window * 4)
            if start is None:
                return
            payload = memoryview(data)[start + header.size:]
            yield pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
            end -= window - start


def _find_frame(data: bytes, header: Any) -> int | None:
    """Offset in ``data`` of the frame that ends exactly at the end of ``data``."""
    pos = len(data)
    while True:
        pos = data.rfind(_journal.MAGIC, 0, pos)
        if pos < 0:
            return None
        if pos + header.size <= len(data):
            _, length, crc = header.unpack_from(data, pos)
            body = pos + header.size
            if body + length == len(data) and zlib.crc32(memoryview(data)[body:]) == crc:
                return pos


def _last_valid(column: pa.ChunkedArray | pa.Array) -> Any:
    """The last non-null value of a column, or None."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for chunk in reversed(chunks):
        n = len(chunk)
        if not n:
            continue
        last = chunk[n - 1]
        if last.is_valid:
            return last.as_py()
        if chunk.null_count < n:
            valid = chunk.drop_null()
            return valid[len(valid) - 1].as_py()
    return None


def _coerce(metric: Metric) -> Metric:
    """Floats as float (an int-typed journal frame may hold the last value of a widened column).

    Parquet statistics store a zero minimum as -0.0; ``+ 0.0`` turns it back into 0.0.
    """
    if pa.types.is_floating(metric.type):
        metric.last, metric.min, metric.max = (
            None if v is None else float(v) + 0.0 for v in (metric.last, metric.min, metric.max)
        )
    return metric


# -- the table ----------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Any:
    return _layout.parse_tag(text)


def _table(summaries: list[Summary]) -> pa.Table:
    columns: dict[str, pa.Array] = {
        "name": pa.array([s.name for s in summaries], pa.string()),
        "version": pa.array([s.version for s in summaries], pa.int64()),
    }
    if any(s.rank is not None for s in summaries):
        # Only then: a table without per-rank runs keeps the columns it always had.
        columns[RANK_COLUMN] = pa.array([s.rank for s in summaries], pa.int64())
    columns |= {
        "log_dir": pa.array([s.log_dir for s in summaries], pa.string()),
        "created_at": pa.array([_utc_micros(s.meta.get("created_at")) for s in summaries], _TIME_UTC),
        "description": pa.array([_text_or_none(s.meta.get("description")) for s in summaries], pa.string()),
        "status": pa.array([s.status for s in summaries], pa.string()),
        "rows": pa.array([s.rows for s in summaries], pa.int64()),
        "last_step": pa.array([s.last_step for s in summaries], pa.int64()),
    }
    metric_types: dict[str, pa.DataType] = {}
    for s in summaries:
        for name, metric in s.metrics.items():
            if metric_types.get(name) != pa.float64():
                metric_types[name] = metric.type
    metric_columns: dict[str, pa.Array] = {}
    for name, typ in metric_types.items():
        for part in ("last", "min", "max"):
            values = [getattr(s.metrics[name], part) if name in s.metrics else None for s in summaries]
            if pa.types.is_floating(typ):
                values = [None if v is None else float(v) for v in values]
            metric_columns[f"{name}.{part}"] = pa.array(values, typ)
    taken = set(columns) | set(metric_columns)
    tag_names: dict[str, None] = {}
    for s in summaries:
        tag_names.update(dict.fromkeys(s.tags))
    for tag in tag_names:
        label = TAG_PREFIX + tag if tag in taken else tag
        columns[label] = _tag_array([s.tags.get(tag) for s in summaries])
    columns.update(metric_columns)
    return pa.table(columns)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _tag_array(texts: list[str | None]) -> pa.Array:
    """One tag across runs, typed when every run agrees on a type, else the text as written."""
    values = [None if t is None else _parse(t) for t in texts]
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return pa.array(values, pa.bool_())
    if kinds and kinds <= {int, float}:
        ints = kinds == {int}
        if ints and all(v is None or -(2**63) <= v < 2**63 for v in values):
            return pa.array(values, pa.int64())
        try:
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
        except OverflowError:  # an int too large for a float: keep the text
            pass
    if kinds == {str}:
        return pa.array(values, pa.string())
    # mixed kinds, lists, dicts: keep what was written (a tag of None stays null)
    return pa.array([None if t is None or v is None else t for t, v in zip(texts, values)], pa.string())
