"""``test-tube serve``: a local web page over a save_dir, on the standard library's HTTP server.

SAVE_DIR is a folder or a URI (``s3://bucket/logs?endpoint_override=...``):
runs are found and read through the read layer (``_store._reader``), which
lists a save_dir on object storage once per request.

Routes (GET and HEAD only; the server never writes anything):

* ``/``: the page; ``/static/<file>``: its JS and CSS, shipped in the package
  (``_static/``, uPlot vendored), so it works offline and loads nothing
  from elsewhere.
* ``/api/runs``: every run under SAVE_DIR: id, name, version, rank, status,
  rows, last step, tags, and last/min/max of each numeric metric.
* ``/api/run?name=N&version=V[&rank=R]``: one run: ``meta.experiment``, tags,
  its numeric columns, and its images by key and step.
* ``/api/series?name=N&version=V[&rank=R]&metric=M[&x=step|time][&buckets=W][&x_min=A&x_max=B]``:
  one metric of one run, reduced by :func:`test_tube._store._downsample.envelope`
  to at most four points per bucket (a bucket is a pixel column).
* ``/api/series_many?run=ID&run=ID...&metric=M&metric=M...[&x=...][&buckets=W][&x_min=A&x_max=B]``:
  the same for every metric of every run named by its id (as ``/api/runs`` gives
  it), in one request and one answer: the page's grid of charts asks for all of
  them at once.  A run that is gone, or lacks a metric, is an entry in
  ``errors``, not a failed request.
* ``/media?name=N&version=V[&rank=R]&file=F``: one image of a run.

A run is named by its experiment name, version and, for one rank of a
``per_rank=True`` version (``version_<N>/rank_<r>``), its rank; never by a
path.  Its id is ``name/version_N`` or ``name/version_N/rank_r``.  Without
``rank`` a request names an ordinary version, with it one rank folder.  The
name is looked up among the runs the read layer lists, and the folder it
resolves to (symbolic links followed) must lie inside SAVE_DIR; anything else,
including a run deleted while the page shows it, is a 404 with a message
(JSON under ``/api/``, a small HTML page elsewhere), never a traceback.

Rows are read with :func:`test_tube.read`, that is from the journal up to the
writer's last flush, so a half-written file is never read; a chart of a run
that ended reads two columns of its complete ``metrics.parquet`` instead.  Reads are cached
per run and keyed by the size and modification time of the run's files, so a
page that polls an unchanged run costs a few ``stat`` calls.
"""

from __future__ import annotations

import html
import ipaddress
import json
import logging
import math
import os
import re
import socket
import socketserver
import stat
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from .._store import _downsample, _layout
from ._plot import series as _metric_points
from .._store._location import Location, resolve
from .._store._read import read_run
from .._store._reader import READ_FILES, FoundRun, Store, StoredRun, run_id
from .._engine._rows import image_extension
from .._store._lru import Lru
from .._store._runs import Summary, run_status, summarise
from .._store._schema import concat

#: The port ``test-tube serve`` listens on unless told otherwise (TensorBoard's 6006, plus one).
DEFAULT_PORT = 6007
#: Buckets (pixel columns) a series is reduced to when the page does not say.
DEFAULT_BUCKETS = 1000
MAX_BUCKETS = 10_000
#: Threads one ``/api/series_many`` request reads runs with.
READERS = 4
#: Series one ``/api/series_many`` request may ask for (runs times metrics).
MAX_SERIES = 2_000

# The only files served from _static/, with their types: a request names one of these or gets a 404.
_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "uplot/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uplot/uPlot.min.css": "text/css; charset=utf-8",
    "uplot/LICENSE": "text/plain; charset=utf-8",
}
_IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg"}
# The page and its assets only: nothing may be fetched from another origin.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
# A version or rank in a query: ASCII digits only (str.isdigit() also takes "²", which int() refuses).
_INDEX = re.compile(r"[0-9]{1,18}")

# Debug messages only (a client that went away); a logger with no handler of ours prints nothing by default.
_log = logging.getLogger("test_tube.serve")



class HttpError(Exception):
    """A request that gets an error status and a one-line message, never a traceback."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class App:
    """What the server answers, independent of HTTP: runs, one run, series, media, static files."""

    def __init__(self, save_dir: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> None:
        self.store = Store(resolve(save_dir, filesystem))
        self.local = self.store.location.local
        self.save_dir = self.store.shown  # a URI without its credentials, on object storage
        self.root = os.path.realpath(self.save_dir) if self.local else self.save_dir
        # Summaries are small; tables and series of a long run are not, so only a few are kept.
        self._summaries = Lru(4096)
        self._tables = Lru(2)
        self._series = Lru(8)
        # Downsampled answers, as JSON text: small (at most 4 * buckets points each), so many are kept;
        # a page that redraws 50 runs x 20 metrics without new rows is answered from here.
        self._reduced = Lru(4096)

    # -- runs -----------------------------------------------------------------

    def runs(self) -> dict[str, Any]:
        """The runs table: one entry per run inside SAVE_DIR, ordered by name, version, rank.

        ``rank`` is null for an ordinary run, the rank for one rank of a ``per_rank=True`` version.
        """
        rows = []
        for found in self._found():
            try:
                summary, entry = self._entry(found)
            except FileNotFoundError:
                continue  # deleted between the listing and the read
            # status is not cached: a running run may have died
            rows.append({**entry, "status": "damaged" if summary.damage else run_status(summary.meta)})
        return {"save_dir": self.save_dir, "runs": rows}

    def run(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """One run: meta, tags as written, numeric columns, media by key."""
        found = self._run(query)
        folder = found.folder
        try:
            meta = folder.meta()
            tags = folder.tag_texts()
            try:
                table = self._table(found)
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                table = read_run(folder)  # raises DamagedRunError naming the journal, for the page to show
            media = self._media(found, table)
        except FileNotFoundError:
            raise _gone(found.id) from None
        columns = [n for n, t in zip(table.column_names, table.schema.types)
                   if n not in ("step", "created_at") and _numeric(t)]
        return {"id": found.id, "name": found.name, "version": found.version, "rank": found.rank,
                "status": run_status(meta), "rows": table.num_rows, "meta": meta, "tags": tags, "metrics": columns,
                "media": media}

    def series(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """One metric of one run, downsampled to at most four points per bucket."""
        found = self._run(query)
        metric = _param(query, "metric")
        x, buckets, x_min, x_max = _view_params(query)
        try:
            key = (found.log_dir, metric, x, found.folder.signature())
            xs, ys, nonfinite = self._series.get(key, lambda: self._points(found, metric, x))
        except FileNotFoundError:
            raise _gone(found.id) from None
        total = len(xs)
        if x_min is not None or x_max is not None:
            xs, ys = _downsample.window(xs, ys, x_min, x_max)
        shown_x, shown_y = _downsample.envelope(xs, ys, buckets)
        # points: values a chart can place; nonfinite: NaN and infinities, which it cannot
        return {"id": found.id, "metric": metric, "x": x, "points": total,
                "nonfinite": nonfinite, "downsampled": len(shown_x) < len(xs),
                "xs": shown_x.tolist(), "ys": shown_y.tolist()}

    def series_many(self, query: Mapping[str, list[str]]) -> bytes:
        """Several metrics of several runs, each as :meth:`series` gives it, as one JSON answer.

        ``run`` (repeated) names runs by id, ``metric`` (repeated) the metrics;
        each run gives one entry per metric it has.  The runs are looked up in
        one listing of SAVE_DIR, not one per series.  An id that names no run,
        or a metric a run lacks, is reported under ``errors`` with a message.
        """
        ids = query.get("run") or []
        metrics = query.get("metric") or []
        if not ids or not metrics:
            raise HttpError(HTTPStatus.BAD_REQUEST, "name at least one run= and one metric=")
        if len(ids) * len(metrics) > MAX_SERIES:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"at most {MAX_SERIES} series a request, "
                                                    f"asked for {len(ids)} runs x {len(metrics)} metrics")
        x, buckets, x_min, x_max = _view_params(query)
        by_id = {found.id: found for found in self._found()}
        wanted = list(dict.fromkeys(metrics))

        def one(run_id: str) -> tuple[list[bytes], list[dict[str, Any]]]:
            """The series of one run, and what went wrong."""
            parts: list[bytes] = []
            errors: list[dict[str, Any]] = []
            found = by_id.get(run_id)
            if found is None:
                return parts, [{"id": run_id, "error": str(_gone(run_id, self.save_dir))}]
            signature = found.folder.signature()
            keys = {m: (found.log_dir, m, x, signature, buckets, x_min, x_max) for m in wanted}
            try:
                todo = [m for m in wanted if self._reduced.peek(keys[m]) is None]
                # Several series of one run not yet cached: its columns are read once, not once per metric.
                table = self._metric_table(found, todo, x) if len(todo) > 1 else None
                for metric in wanted:
                    part = self._reduced.peek(keys[metric])
                    if part is None:
                        try:
                            part = _series_json(self._reduce(found, metric, x, buckets, x_min, x_max, signature,
                                                             table))
                        except HttpError as exc:
                            if exc.status != HTTPStatus.NOT_FOUND or "has no metric" not in str(exc):
                                errors.append({"id": run_id, "metric": metric, "error": str(exc)})
                            continue
                        self._reduced.put(keys[metric], part)
                    parts.append(part)
            except FileNotFoundError:
                errors.append({"id": run_id, "error": str(_gone(run_id))})
            return parts, errors

        runs = list(dict.fromkeys(ids))
        if len(runs) > 1:
            # Reading Parquet and turning columns into arrays mostly runs without the GIL: runs not yet
            # cached are read side by side.  The pool lives for this request only.
            with ThreadPoolExecutor(max_workers=min(READERS, len(runs)), thread_name_prefix="test-tube-serve") as pool:
                answers = list(pool.map(one, runs))
        else:
            answers = [one(r) for r in runs]
        parts = [p for run_parts, _ in answers for p in run_parts]
        errors = [e for _, run_errors in answers for e in run_errors]
        head = _json({"x": x, "buckets": buckets, "errors": errors})
        return head[:-1] + b', "series": [' + b", ".join(parts) + b"]}"

    def _reduce(self, found: FoundRun, metric: str, x: str, buckets: int, x_min: float | None,
                x_max: float | None, signature: tuple[Any, ...],
                table: pa.Table | None = None) -> dict[str, Any]:
        """One series as :meth:`series` answers it, for a run already looked up (``table``: its rows, if read)."""
        key = (found.log_dir, metric, x, signature)
        xs, ys, nonfinite = self._series.get(key, lambda: self._points(found, metric, x, table))
        total = len(xs)
        if x_min is not None or x_max is not None:
            xs, ys = _downsample.window(xs, ys, x_min, x_max)
        shown_x, shown_y = _downsample.envelope(xs, ys, buckets)
        return {"id": found.id, "metric": metric, "x": x, "points": total, "nonfinite": nonfinite,
                "downsampled": len(shown_x) < len(xs), "xs": shown_x.tolist(), "ys": shown_y.tolist()}

    def media_file(self, query: Mapping[str, list[str]]) -> tuple[bytes, str]:
        """The bytes and type of one image of a run, named as in :meth:`run`'s media list."""
        found = self._run(query)
        file = _param(query, "file")
        missing = HttpError(HTTPStatus.NOT_FOUND, f"{found.id} has no image {file!r}")
        kind = _layout.media_type(file)
        # A NUL byte never names a file (os.path refuses it with ValueError): checked before any path call.
        if kind is None or "\0" in file or "/" in file or os.sep in file or (os.altsep and os.altsep in file):
            raise missing
        if not self.local:
            data = found.folder.read_bytes(f"{_layout.MEDIA}/{file}") if file in found.folder.media() else None
            if data is None:
                raise missing
            return data, _IMAGE_TYPES[kind]
        folder = os.path.join(found.log_dir, _layout.MEDIA)
        path = os.path.realpath(os.path.join(folder, file))
        if os.path.dirname(path) != os.path.realpath(folder) or not _inside(path, self.root):
            raise missing
        data = _read_regular(path)
        if data is None:
            raise missing
        return data, _IMAGE_TYPES[kind]

    @staticmethod
    def static(path: str) -> tuple[bytes, str]:
        """A file of the page, from the package; only those listed in ``_STATIC``."""
        if path not in _STATIC:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such file: /static/{path}")
        return resources.files(__package__).joinpath("_static", *path.split("/")).read_bytes(), _STATIC[path]

    @staticmethod
    def index() -> bytes:
        """The page."""
        return resources.files(__package__).joinpath("_static", "index.html").read_bytes()

    # -- helpers ---------------------------------------------------------------

    def _found(self) -> list[FoundRun]:
        """Runs under SAVE_DIR whose folder really is inside it (a symlink out of it is left out).

        Each ``log_dir`` is the resolved path, rank folders included: a
        ``rank_<r>`` link out of SAVE_DIR is left out like a version link.
        On object storage there are no links: one listing of SAVE_DIR gives
        every run and its files.
        """
        try:
            found = self.store.runs()
        except FileNotFoundError:
            raise HttpError(HTTPStatus.NOT_FOUND, f"{self.save_dir} no longer exists") from None
        if not self.local:
            return found
        inside = []
        for run in found:
            real = os.path.realpath(run.log_dir)
            if _inside(real, self.root) and self._files_inside(real):
                location = Location(run.folder.fs, real, real)
                inside.append(run._replace(log_dir=real, folder=StoredRun(location)))
        return inside

    def _files_inside(self, log_dir: str) -> bool:
        """Whether every file the server may read in a run folder resolves inside SAVE_DIR.

        A run file that is a symbolic link out of SAVE_DIR (``meta_tags.csv`` ->
        someone's secrets on a shared disk) leaves the whole run out.
        """
        for file in READ_FILES:
            path = os.path.join(log_dir, file)
            if os.path.islink(path) and not _inside(os.path.realpath(path), self.root):
                return False
        return True

    def _run(self, query: Mapping[str, list[str]]) -> FoundRun:
        """The run a request names, by name, version and optional rank, looked up among the runs inside SAVE_DIR.

        Without ``rank`` only an ordinary version matches; with it only that
        rank folder of a per-rank version.  Anything else is a 404.
        """
        name = _param(query, "name")
        text = _param(query, "version")
        rank_text = query["rank"][-1] if query.get("rank") else None
        wanted = run_id(name, text, rank_text)
        if not _INDEX.fullmatch(text) or (rank_text is not None and not _INDEX.fullmatch(rank_text)):
            raise HttpError(HTTPStatus.NOT_FOUND, f"no run {wanted} in {self.save_dir}")
        version = int(text)
        rank = int(rank_text) if rank_text is not None else None
        ranks: list[int] = []
        for found in self._found():
            if found.name == name and found.version == version:
                if found.rank == rank:
                    return found
                if found.rank is not None:
                    ranks.append(found.rank)
        if ranks and rank is None:
            # The version exists, as one run per rank: say how to name one.
            raise HttpError(HTTPStatus.NOT_FOUND, f"{run_id(name, version)} in {self.save_dir} holds one run "
                                                  f"per rank; add rank= (one of {', '.join(map(str, ranks))})")
        raise _gone(wanted, self.save_dir)

    def _entry(self, run: FoundRun) -> tuple[Summary, dict[str, Any]]:
        """A run's summary and its entry in :meth:`runs` (JSON-ready, without its status), cached by its files."""
        def compute() -> tuple[Summary, dict[str, Any]]:
            summary = summarise(run.folder, run.name, run.version, rank=run.rank)
            entry = _jsonable({
                "id": run.id,
                "name": run.name,
                "version": run.version,
                "rank": run.rank,
                "rows": summary.rows,
                "damage": summary.damage,
                "last_step": summary.last_step,
                "created_at": summary.meta.get("created_at"),
                "description": summary.meta.get("description"),
                "tags": {k: _layout.parse_tag(v) for k, v in summary.tags.items()},
                "metrics": {m: [s.last, s.min, s.max] for m, s in summary.metrics.items()},
            })
            return summary, entry
        return self._summaries.get((run.log_dir, run.folder.signature()), compute)

    def _table(self, found: FoundRun) -> pa.Table:
        """Every row of a run, as :func:`read` gives them.

        A run that is writing grows by journal frames: the frames after the
        cached end are read and appended, so a live 10^7-row run costs its new
        rows per redraw, not its whole journal (on object storage: its new
        segments).  A journal that is another file now (the run was deleted
        and made again) or shorter is read whole.
        """
        folder = found.folder
        log_dir = found.log_dir
        if not folder.exists():
            raise FileNotFoundError(log_dir)
        if folder.has_ring() and folder.ring_table() is not None:
            return read_run(folder)  # a run that died without closing: its ring's rows too
        if folder.local:
            try:
                st = os.stat(os.path.join(log_dir, _layout.JOURNAL))
            except FileNotFoundError:  # a run of test-tube 0.7.5, or one not started yet
                return self._tables.get((log_dir, folder.signature()), lambda: read_run(folder))
            ident: Any = (st.st_dev, st.st_ino)
            size = st.st_size
        else:
            pieces = folder.segments()
            if not pieces:
                return self._tables.get((log_dir, folder.signature()), lambda: read_run(folder))
            ident = pieces[0][2].mtime_ns  # the first segment's time: another one means the run was made again
            size = folder.journal_size()
        known = self._tables.peek(log_dir)
        if known is not None and known[0] == ident and known[1] <= size:
            _, start, table = known
            if start == size:
                return table
            frames, end = folder.frames(start)
            if frames:
                table = concat([table, *frames])
        else:
            frames, end = folder.frames()
            if not frames:
                return read_run(folder)  # no complete frame yet: whatever read() finds
            table = concat(frames)
        self._tables.put(log_dir, (ident, end, table))
        return table

    def _metric_table(self, found: FoundRun, metric: str | list[str], x: str) -> pa.Table:
        """Rows holding at least ``metric`` (one name, or several) and the x column (``step``, or ``created_at`` for time).

        A run whose ``metrics.parquet`` holds every journaled row (a run that
        ended) is read from it, two columns only: on a run of many metrics
        that is a fraction of the journal, which holds every column.  A run
        still writing is read through :func:`read` (the journal, cached).
        """
        folder = found.folder
        if folder.parquet_complete():
            try:
                names = folder.parquet_schema().names
                wanted = ["created_at" if x == "time" else "step"] + ([metric] if isinstance(metric, str) else metric)
                if all(c in names for c in wanted):
                    return folder.read_parquet(columns=wanted)
            except (OSError, pa.ArrowException):
                pass  # replaced or damaged since: the journal is the record
        return self._table(found)

    def _points(self, found: FoundRun, metric: str, x: str,
                table: pa.Table | None = None) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], int]:
        """x and y of the finite values of ``metric``, and how many NaN or infinite values were left out.

        ``table``: the run's rows, already read with this metric's column (else they are read here).
        """
        run_id = found.id
        if not found.folder.exists():
            raise FileNotFoundError(found.log_dir)
        if table is None or metric not in table.column_names:
            table = self._metric_table(found, metric, x)
        if metric not in table.column_names or metric in ("step", "created_at"):
            raise HttpError(HTTPStatus.NOT_FOUND, f"{run_id} has no metric {metric!r}")
        if not _numeric(table.schema.field(metric).type):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"metric {metric!r} of {run_id} is not "
                                                    f"numeric ({table.schema.field(metric).type})")
        xs, ys = _metric_points(table, metric, x)
        finite = np.isfinite(ys)
        nonfinite = int(len(ys) - np.count_nonzero(finite))
        if nonfinite:
            xs, ys = xs[finite], ys[finite]
        return xs, ys, nonfinite

    def _media(self, found: FoundRun, table: pa.Table) -> dict[str, list[tuple[int, str]]]:
        """Images by logged key, each a list of ``(step, file)`` ordered by step, as the rows say.

        Key and step come from the row that logged the image (its cell holds
        ``media/<file>``), never from the file name, which is cut for long
        keys and numbered when a key logs several images at one step.  Only
        regular files inside SAVE_DIR are listed: no FIFO, folder, or link out.
        """
        if not found.folder.exists():
            raise FileNotFoundError(found.log_dir)
        if "step" not in table.column_names:
            return {}
        if self.local:
            folder = os.path.join(found.log_dir, _layout.MEDIA)
            try:
                with os.scandir(folder) as entries:
                    names = {e.name: e for e in entries}
            except (FileNotFoundError, NotADirectoryError):
                return {}
            real_folder = os.path.realpath(folder)

            def listable(file: str) -> bool:
                entry = names.get(file)
                return entry is not None and self._listable(entry, real_folder)
        else:
            stored = found.folder.media()

            def listable(file: str) -> bool:
                return file in stored
        by_key: dict[str, list[tuple[int, str]]] = {}
        steps = table.column("step")
        prefix = _layout.MEDIA + "/"
        for key, typ in zip(table.column_names, table.schema.types):
            if key in ("step", "created_at") or image_extension(key) is None or not _text(typ):
                continue
            cells = table.column(key)
            valid = pc.is_valid(cells)
            for step, cell in zip(pc.filter(steps, valid).to_pylist(), pc.filter(cells, valid).to_pylist()):
                if step is None or not cell.startswith(prefix):
                    continue
                file = cell[len(prefix):]
                if _layout.media_type(file) and listable(file):
                    by_key.setdefault(key, []).append((step, file))
        return {key: sorted(by_key[key]) for key in sorted(by_key)}

    def _listable(self, entry: os.DirEntry[str], real_folder: str) -> bool:
        """A regular file, or a link to one that stays in the media folder inside SAVE_DIR."""
        if entry.is_file(follow_symlinks=False):
            return True
        if not entry.is_symlink():
            return False
        real = os.path.realpath(entry.path)
        try:
            regular = stat.S_ISREG(os.stat(real).st_mode)
        except OSError:
            return False
        return regular and os.path.dirname(real) == real_folder and _inside(real, self.root)


def _read_regular(path: str) -> bytes | None:
    """The bytes of ``path`` if it is a regular file, else None.

    Opened without blocking and checked with ``fstat`` before reading: a
    FIFO named like an image would otherwise hang the request in ``open()``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read()


def _text(typ: pa.DataType) -> bool:
    return bool(pa.types.is_string(typ) or pa.types.is_large_string(typ))


def _gone(run_id: str, save_dir: str | None = None) -> HttpError:
    where = f" in {save_dir}" if save_dir else ""
    return HttpError(HTTPStatus.NOT_FOUND, f"no run {run_id}{where} (deleted, or never there)")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _numeric(typ: pa.DataType) -> bool:
    return bool(pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ))


def _param(query: Mapping[str, list[str]], key: str, default: str | None = None) -> str:
    values = query.get(key)
    if not values:
        if default is None:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"missing query parameter {key!r}")
        return default
    return values[-1]



def _view_params(query: Mapping[str, list[str]]) -> tuple[str, int, float | None, float | None]:
    """The chart view a series request asks for: x (step or time), buckets, and the x window."""
    x = _param(query, "x", "step")
    if x not in ("step", "time"):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"x must be step or time, got {x!r}")
    buckets = _int_param(query, "buckets", DEFAULT_BUCKETS, 1, MAX_BUCKETS)
    return x, buckets, _float_param(query, "x_min"), _float_param(query, "x_max")

def _int_param(query: Mapping[str, list[str]], key: str, default: int, low: int, high: int) -> int:
    text = _param(query, key, str(default))
    try:
        value = int(text)
    except ValueError:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{key} must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{key} must be {low}..{high}, got {value}")
    return value


def _float_param(query: Mapping[str, list[str]], key: str) -> float | None:
    values = query.get(key)
    if not values:
        return None
    try:
        value = float(values[-1])
    except ValueError:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{key} must be a number, got {values[-1]!r}") from None
    if not math.isfinite(value):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{key} must be finite, got {values[-1]!r}")
    return value


def _jsonable(value: Any) -> Any:
    """JSON-safe: NaN and infinities as the strings "NaN", "Infinity", "-Infinity"; times as ISO text."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# -- HTTP ------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    """The HTTP server of ``test-tube serve``; ``serve_forever()`` runs it, ``shutdown()`` stops it."""

    daemon_threads = True  # a page left open must not keep the process from exiting

    def __init__(self, save_dir: str | os.PathLike[str], host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 filesystem: pafs.FileSystem | None = None) -> None:
        app = App(save_dir, filesystem)
        if not app.store.folder().exists():
            raise FileNotFoundError(f"{app.save_dir} is not a folder")
        self.app = app
        self.host = host
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.loopback = _is_loopback(host)
        super().__init__((host, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that resets the connection is a debug message; anything else is one line, not a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            _log.debug("connection from %s closed: %s", client_address, exc)
            return
        message = f"{type(exc).__name__}: {exc}".splitlines()[0] if exc else "unknown error"
        print(f"test-tube serve: error: request from {client_address[0]}: {message}", file=sys.stderr)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which can wait on DNS; the address is enough.
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.host
        self.server_port = self.server_address[1]

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:6007/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.server_port}/"


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "test-tube"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        # The page polls every few seconds: a line per request would bury the errors.
        pass

    def _answer(self, body: bool) -> None:
        url = urlsplit(self.path)
        api = url.path.startswith("/api/")
        try:
            if not self._host_allowed():
                # A page from another site that points a name at 127.0.0.1 (DNS rebinding) must not read runs.
                raise HttpError(HTTPStatus.FORBIDDEN, "this server answers requests for localhost only")
            data, kind = self._route(url.path, parse_qs(url.query, keep_blank_values=True))
            self._send(HTTPStatus.OK, data, kind, body)
        except HttpError as exc:
            self._error(exc.status, str(exc), api, body)
        except ConnectionError as exc:
            # The client went away mid-answer (a reload, a closed tab): nothing to answer, nothing to report.
            _log.debug("%s %s: client went away: %s", self.command, url.path, exc)
            self.close_connection = True
        except Exception as exc:  # a bug or an unreadable file: one line on stderr, a message in the page
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"test-tube serve: error: {self.command} {url.path}: {message}", file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, message, api, body)

    def _route(self, path: str, query: dict[str, list[str]]) -> tuple[bytes, str]:
        app = self.server.app
        if path in ("/", "/index.html"):
            return app.index(), "text/html; charset=utf-8"
        if path.startswith("/static/"):
            return app.static(path[len("/static/"):])
        if path == "/media":
            return app.media_file(query)
        if path == "/api/runs":  # thousands of runs: their entries are JSON-ready already, no walk over them
            return json.dumps(app.runs(), ensure_ascii=False, allow_nan=False).encode(), "application/json"
        handlers: dict[str, Callable[[], dict[str, Any]]] = {
            "/api/run": lambda: app.run(query),
            "/api/series": lambda: app.series(query),
        }
        if path == "/api/series_many":
            return app.series_many(query), "application/json"
        if path not in handlers:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        return _json(handlers[path]()), "application/json"

    def _host_allowed(self) -> bool:
        if not self.server.loopback:
            return True
        host = self.headers.get("Host", "")
        name = host[1:host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
        return name.lower() == self.server.host.lower() or _is_loopback(name)

    def _error(self, status: HTTPStatus, message: str, api: bool, body: bool) -> None:
        if api:
            self._send(status, _json({"error": message, "status": int(status)}), "application/json", body)
            return
        page = (f"<!doctype html><meta charset=utf-8><title>{status.value} {status.phrase}</title>"
                f"<h1>{status.value} {status.phrase}</h1><p>{html.escape(message)}</p>"
                f"<p><a href=\"/\">Back to the runs</a></p>\n")
        self._send(status, page.encode(), "text/html; charset=utf-8", body)

    def _send(self, status: HTTPStatus, data: bytes, kind: str, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in _SECURITY_HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


def _series_json(series: dict[str, Any]) -> bytes:
    """One series as JSON; its ``xs`` and ``ys`` are finite floats, encoded without walking them one by one."""
    head = {k: v for k, v in series.items() if k not in ("xs", "ys")}
    points = json.dumps({"xs": series["xs"], "ys": series["ys"]}, allow_nan=False).encode()
    return _json(head)[:-1] + b", " + points[1:]


def _json(payload: Any) -> bytes:
    return json.dumps(_jsonable(payload), ensure_ascii=False, allow_nan=False).encode()
