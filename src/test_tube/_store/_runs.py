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

Cheaper still, ``close()`` records the summary it would get this way in
``meta.experiment`` (:func:`closing_summary`, under :data:`_layout.SUMMARY`),
with the size and time of the files it came from; a finished run whose files
still match is summarised from that record alone (:func:`_from_record`), and
any other is summarised as above.

The files are found and read through the read layer (``_reader``), the same
way on a local disk and on object storage (where the journal is segments).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from . import _layout
from .._errors import DamagedRunError, warn_from_caller
from ._lru import Lru
from ._read import read_run
from ._reader import Entry, FoundRun, Store, StoredRun
from ._location import resolve

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

_TIME_UTC = pa.timestamp("us", tz="UTC")
_SKIP = ("step", "created_at")
# How far back the journal is searched for last values before reading
# the column from metrics.parquet instead.
_TAIL_FRAMES = 16


def runs(save_dir: str | os.PathLike[str], name: str | None = None, *,
         filesystem: pafs.FileSystem | None = None) -> pa.Table:
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

    ``save_dir`` is a local folder, or any URI that
    ``pyarrow.fs.FileSystem.from_uri`` takes, its query options included
    (``s3://bucket/logs?endpoint_override=host:port&scheme=http``); with
    ``filesystem=`` (a ``pyarrow.fs.FileSystem``) it is a path in that
    filesystem.  There ``log_dir`` is the run's URI without credentials.
    ``name`` restricts the table to one experiment.  ``save_dir`` may also be
    one experiment's folder (the one holding ``version_<N>`` folders).  Rows
    are ordered by name, then version, then rank.  A finished run is answered
    from the summary its ``close()`` recorded in ``meta.experiment`` while its
    files are the ones it was computed from, else from its Parquet footer and
    journal tail; never row by row.  Reads only; safe to
    call while runs are writing.  Raises ``FileNotFoundError`` when
    ``save_dir`` (or ``save_dir/name``) is not a folder (on object storage:
    when nothing is stored under it), and ``ValueError`` naming a URI that
    pyarrow cannot open.
    """
    store = Store(resolve(save_dir, filesystem))
    return _table(summarise_all(store.runs(name)))


def summarise_all(found: list[FoundRun]) -> list[Summary]:
    """:func:`summarise` each run, in order; runs on object storage several at a time (each is requests).

    A finished run whose files are as they were when this process last
    summarised it (same size and time of each file the readers read, as a
    ``stat`` or the save_dir's listing gives them) is not read again: only a
    run's status can change without its files changing (a heartbeat that
    stops), and that is worked out anew from its metadata each time.
    """
    if len(found) < 2 or all(run.folder.local for run in found):
        return [_summary(run) for run in found]
    with ThreadPoolExecutor(max_workers=min(REMOTE_READERS, len(found)), thread_name_prefix="test-tube-runs") as pool:
        return list(pool.map(_summary, found))


#: Runs on object storage that :func:`runs` summarises at once (their requests overlap).
REMOTE_READERS = 16


def _summary(run: FoundRun) -> Summary:
    key = (run.log_dir, run.name, run.version, run.rank, run.folder.signature())
    known: Summary | None = _SUMMARIES.peek(key)
    if known is not None:
        return dataclasses.replace(known, status=run_status(known.meta))
    summary = summarise(run.folder, run.name, run.version, rank=run.rank)
    if summary.status in _SETTLED and summary.damage is None and summary.rows is not None:
        # Only runs whose files no longer change, and only clean ones: a damaged run warns at every call.
        _SUMMARIES.put(key, summary)
    return summary


_SETTLED = ("finished", "failed", "unknown")
#: Summaries of settled runs by their files' signature; least recently used ones go first.
#: A few KB a run: tens of MB at most, for more runs than a save_dir usually holds.
_SUMMARIES = Lru(20_000)


def find_runs(save_dir: str | os.PathLike[str], name: str | None = None) -> list[FoundRun]:
    """Every run folder under a local ``save_dir``, ordered by name, version, rank (see :func:`runs`)."""
    return Store(resolve(save_dir)).runs(name)


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


@dataclass(slots=True)  # slots: thousands are kept between calls, and fewer objects are less to collect
class Metric:
    """The summary of one numeric column: its type, last, min and max value."""

    type: pa.DataType
    last: Any = None
    min: Any = None
    max: Any = None


@dataclass(slots=True)
class Summary:
    """Everything the runs table says about one run (a version, or one rank of a per-rank version)."""

    name: str
    version: int
    log_dir: str  # the path, or on object storage the URI without credentials
    meta: dict[str, Any]
    status: str
    rows: int | None = None
    last_step: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    rank: int | None = None
    damage: str | None = None  # what makes the run "damaged", naming the file


def summarise(log_dir: str | StoredRun, name: str | None = None, version: int | None = None, *,
              rank: int | None = None) -> Summary:
    """Summarise one run folder (see :func:`runs`); reads only.

    ``log_dir``: a local path, or a run folder of the read layer.  ``name``
    and ``version`` default to what the path says (``<name>/version_<N>``,
    or ``<name>/version_<N>/rank_<r>``, which also gives ``rank``); pass them,
    and ``rank`` (None for an ordinary run), when the caller already knows.
    """
    run = log_dir if isinstance(log_dir, StoredRun) else StoredRun(resolve(log_dir))
    shown = run.shown
    damage: list[str] = []
    meta = _read_meta(run, damage)
    if name is None or version is None:
        path_name, path_version, path_rank = run.identity()
        if name is None:
            name = path_name
        if version is None:
            version = path_version if path_version is not None else meta.get("version", -1)
        if rank is None:
            rank = path_rank
    summary = Summary(name, _version(version), shown, meta, run_status(meta), rank=rank)
    try:
        summary.tags = run.tag_texts()
    except (OSError, DamagedRunError) as exc:
        damage.append(str(exc))
        warn_from_caller(f"test_tube.runs(): unreadable {_layout.TAGS} in {shown}: {exc}", RuntimeWarning)
    if damage:
        summary.damage = damage[0]
        summary.status = "damaged"
    if summary.status in ("finished", "failed") and _from_record(summary, run):
        return summary
    if summary.status in ("finished", "failed") and _parquet_complete(run):
        try:
            _from_parquet(summary, run)
            return summary
        except (OSError, pa.ArrowException):
            # a damaged metrics.parquet: the journal still has every row
            summary.metrics = {}
    try:
        _from_table(summary, read_run(run))
    except (OSError, pa.ArrowException, DamagedRunError) as exc:
        summary.rows = summary.last_step = None
        summary.metrics = {}
        if isinstance(exc, DamagedRunError) or summary.damage:
            summary.damage = summary.damage or str(exc)
            summary.status = "damaged"
        warn_from_caller(f"test_tube.runs(): cannot read the rows of {shown}: {type(exc).__name__}: {exc}",
                         RuntimeWarning)
    return summary


def _version(value: Any) -> int:
    """The version a run folder's path or meta gives; -1 when neither says."""
    if type(value) is int:
        return value
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return -1


def _read_meta(run: StoredRun, damage: list[str]) -> dict[str, Any]:
    try:
        return run.meta()
    except (OSError, DamagedRunError) as exc:
        damage.append(str(exc))
        warn_from_caller(f"test_tube.runs(): unreadable {_layout.META} in {run.shown}: {exc}", RuntimeWarning)
        return {}


def _parquet_complete(run: StoredRun) -> bool:
    """Whether ``metrics.parquet`` holds every journaled row (a hook the tests replace)."""
    return run.parquet_complete()


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


def _from_parquet(summary: Summary, run: StoredRun) -> None:
    """Summarise a closed run from the Parquet footer and the journal's last frames."""
    meta = run.parquet_metadata()
    schema = meta.schema.to_arrow_schema()
    summary.rows = meta.num_rows
    wanted: dict[str, tuple[int, bool]] = {}  # metric -> column index, and whether its raw bounds are its values
    for i, f in enumerate(schema):
        typ = f.type
        if _is_metric(f.name, typ):
            wanted[f.name] = i, typ in _RAW_BOUNDS
            summary.metrics[f.name] = Metric(_metric_type(typ))
    to_read: set[str] = set()
    seen: set[str] = set()
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        rows = group.num_rows
        for name, (i, raw) in wanted.items():
            stats = group.column(i).statistics
            if stats is None:
                to_read.add(name)
                continue
            if stats.has_min_max:
                metric = summary.metrics[name]
                low, high = (stats.min_raw, stats.max_raw) if raw else (stats.min, stats.max)
                metric.min = low if metric.min is None else min(metric.min, low)
                metric.max = high if metric.max is None else max(metric.max, high)
                seen.add(name)
            elif stats.null_count != rows:
                to_read.add(name)  # values but no bounds: all NaN, or a writer without them
    # Columns with no value at all keep null last/min/max and need no tail.
    need = {name for name in wanted if name in seen or name in to_read}
    if meta.num_rows and "step" in schema.names:
        need.add("step")
    last = _tail_values(run, need) if need else {}
    missing = (need - set(last)) | to_read
    if missing:
        _read_columns(summary, run, sorted(missing), last, bounds=to_read)
    summary.last_step = last.get("step")
    for name, metric in summary.metrics.items():
        metric.last = last.get(name)
        summary.metrics[name] = _coerce(metric)


# Arrow types whose Parquet statistics are stored as the value itself (DOUBLE, FLOAT, INT64 without a
# logical type that changes them): their raw bounds skip pyarrow's conversion, a third of the footer's cost.
_RAW_BOUNDS = (pa.float64(), pa.float32(), pa.int64())


def _read_columns(summary: Summary, run: StoredRun, names: list[str], last: dict[str, Any],
                  bounds: set[str]) -> None:
    """Fill what the footer and journal could not: last values, and bounds of ``bounds``."""
    table = run.read_parquet(columns=names)
    for name in names:
        column = table.column(name)
        if name not in last:
            last[name] = _last_valid(column)
        if name in bounds and last[name] is not None:
            b = pc.min_max(column)
            summary.metrics[name].min, summary.metrics[name].max = b["min"].as_py(), b["max"].as_py()


def _tail_values(run: StoredRun, names: set[str]) -> dict[str, Any]:
    """The last non-null value of each of ``names``, from the journal's last frames.

    Looks at no more than ``_TAIL_FRAMES`` frames; a name not found there is
    left out, and the caller reads it from ``metrics.parquet``.
    """
    found: dict[str, Any] = {}
    todo = set(names)
    frames = run.last_frames()
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


# -- the summary close() records ---------------------------------------------

_FLOAT = pa.float64()
_TYPES = {"int64": pa.int64(), "float64": _FLOAT}
# JSON has no NaN or infinity (json.load would take Python's tokens, other readers would not): they are text.
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def closing_summary(log_dir: str) -> dict[str, Any] | None:
    """What ``close()`` records under :data:`_layout.SUMMARY` for the run in ``log_dir`` (a local folder).

    The summary :func:`summarise` gives a finished run, computed the same way
    (footer and journal tail), with the size and time of ``metrics.parquet``
    and of the journal it came from.  None when there is nothing to record:
    ``metrics.parquet`` missing or older than the journal (a writer that
    failed), unreadable, or changed while it was read; readers then read the
    files as for any run.  Plain JSON values only: NaN and infinities as the
    text ``"nan"``, ``"inf"``, ``"-inf"``; ints stay ints, floats floats.
    """
    run = StoredRun(resolve(log_dir))
    summary = Summary("", -1, run.shown, {}, "finished")
    try:
        files = _files(run)
        if not run.parquet_complete():
            return None
        _from_parquet(summary, run)
        if _files(StoredRun(resolve(log_dir))) != files:
            return None  # written to while it was read: what it says may be of neither state
    except (OSError, pa.ArrowException, DamagedRunError):
        return None  # the final metadata is still written; runs() reads the files, and says what is wrong
    metrics = [[name, "float64" if pa.types.is_floating(m.type) else "int64", *map(_encode, (m.last, m.min, m.max))]
               for name, m in summary.metrics.items()]
    return {"files": files, "rows": summary.rows, "last_step": summary.last_step, "metrics": metrics}


def _files(run: StoredRun) -> dict[str, list[int] | None]:
    """``[size, mtime_ns]`` of ``metrics.parquet`` and of the journal (all its segments); None when missing."""
    parquet = run.info(_layout.PARQUET)
    if run.local:
        journal = run.info(_layout.JOURNAL)
    else:
        pieces = run.segments()
        journal = Entry(run.journal_size(), pieces[-1][2].mtime_ns) if pieces else None
    return {
        _layout.PARQUET: None if parquet is None else [parquet.size, parquet.mtime_ns],
        _layout.JOURNAL: None if journal is None else [journal.size, journal.mtime_ns],
    }


def _encode(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else "inf" if value > 0 else "-inf"
    return value


def _decode(value: Any, typ: pa.DataType) -> Any:
    """One recorded value as the summary holds it; ``ValueError`` for what ``close()`` never writes."""
    if value is None:
        return None
    if typ == pa.int64():
        if type(value) is not int:
            raise ValueError(value)
        return value
    if type(value) is str:
        return _NONFINITE[value]  # KeyError for other text
    if type(value) not in (int, float):
        raise ValueError(value)
    return float(value)


def _matches(run: StoredRun, files: Any) -> bool:
    """Whether the files a record came from are still the ones in the folder.

    On a local disk: the same size and time.  On object storage the times are
    the store's (when each object was uploaded), so: the same sizes, and no
    file newer than ``meta.experiment``, which a writer uploads last of all.
    """
    now = _files(run)
    if run.local:
        return bool(now == files)
    meta = run.info(_layout.META)
    if meta is None or not isinstance(files, dict) or set(files) != set(now):
        return False
    for name, entry in now.items():
        was = files[name]
        if (entry is None) != (was is None):
            return False
        if entry is not None and (entry[0] != was[0] or entry[1] > meta.mtime_ns):
            return False
    return True


def _from_record(summary: Summary, run: StoredRun) -> bool:
    """Fill ``summary`` from the record ``close()`` left in its meta; False (nothing changed) when unusable.

    Unusable: no record (a run of test-tube 0.7.5, or of a version before
    records), the files changed since (resumed, rewritten, damaged), or a
    record this version does not read.  The caller then reads the files,
    which give the same table.
    """
    record = summary.meta.get(_layout.SUMMARY)
    if not isinstance(record, dict):
        return False
    # Only the summary needs it: not kept in summary.meta (held for every run a process summarised).
    del summary.meta[_layout.SUMMARY]
    try:
        if not _matches(run, record["files"]):
            return False
        rows, last_step = record["rows"], record["last_step"]
        if type(rows) is not int or (last_step is not None and type(last_step) is not int):
            return False
        metrics: dict[str, Metric] = {}
        for name, type_name, last, low, high in record["metrics"]:
            typ = _TYPES[type_name]
            if type(name) is not str:
                return False
            if typ is _FLOAT and type(last) is type(low) is type(high) is float:
                metrics[name] = Metric(typ, last, low, high)  # the usual case, without a call per value
            else:
                metrics[name] = Metric(typ, _decode(last, typ), _decode(low, typ), _decode(high, typ))
    except (KeyError, TypeError, ValueError, IndexError):
        return False
    summary.rows, summary.last_step, summary.metrics = rows, last_step, metrics
    return True


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
