"""The read layer: the run folders under a save_dir, and one run folder's files, on any filesystem.

Every reader (``read()``, ``runs()``, the command line, ``serve``) goes
through here: it owns which names make a folder a run, how a run is named
(``name/version_N[/rank_r]``), and how the journal is read, whether it is the
local ``_journal.arrows`` or the ``_journal/<offset>.arrows`` segments a run
on object storage has instead (see ``_layout``).

On a local disk a run folder is read with ``os`` calls (a ``scandir``, a
``stat``, ``pread``), which cost microseconds.  On any other
``pyarrow.fs.FileSystem`` every call is a request, so a :class:`Store` lists
the whole save_dir once (one listing, paged by the store) and hands each run
its own entries: summarising a finished run then reads ``meta.experiment``
and ``meta_tags.csv`` (and, when the summary ``close()`` recorded there does
not match the files, the footer of ``metrics.parquet`` and the last journal
segment), each a HEAD and a GET (pyarrow's Python API opens an object by
path only, so it asks for the size first).  Nothing here writes.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import _journal, _layout
from ._location import Location, resolve

#: The files that make a folder a run of its own; a version folder of per-rank runs has none of them.
RUN_FILES = (_layout.META, _layout.JOURNAL, _layout.JOURNAL_SEGMENTS, _layout.CSV, _layout.PARQUET)
#: The files the readers read: a change to any of them is a change of the run.
READ_FILES = (_layout.META, _layout.TAGS, _layout.JOURNAL, _layout.PARQUET, _layout.CSV)


#: Journal segments on object storage that :meth:`StoredRun.frames` fetches at once.
SEGMENT_READERS = 16


def run_id(name: Any, version: Any, rank: Any = None) -> str:
    """How a run is named to a user: ``name/version_N``, or ``name/version_N/rank_r`` for one rank."""
    return f"{name}/version_{version}" + (f"/rank_{rank}" if rank is not None else "")


@dataclass(frozen=True)
class Entry:
    """A file of a run folder as a listing gives it."""

    size: int
    mtime_ns: int


def child(location: Location, *parts: str) -> Location:
    """The location of ``parts`` below ``location``; a URI keeps its query options after the new path."""
    if location.local:
        path = os.path.join(location.path, *parts)
        return Location(location.filesystem, path, path)
    shown, q, query = location.shown.partition("?")
    return Location(location.filesystem, location.join(*parts), "/".join([shown.rstrip("/"), *parts]) + q + query)


class StoredRun:
    """One run folder, read only: its names, metadata, tags, journal, Parquet footer and media.

    ``entries`` (object storage): the folder's files from a listing already
    made, names relative to the folder (``media/x.png``); without it the
    folder is listed on first use.  What it lists and stats is kept for the
    object's life, one consistent look at the folder: make a new one to see
    a run's new files.  Only file contents are read anew each time.
    """

    def __init__(self, location: Location, entries: dict[str, Entry] | None = None) -> None:
        self.location = location
        self.fs = location.filesystem
        self.path = location.path
        self.shown = location.shown
        self.local = location.local
        self._entries = entries
        self._names: set[str] | None = None
        self._info: dict[str, Entry | None] = {}  # local: one stat of each file for this object's life
        self._prefix = self.path.rstrip(os.sep) + os.sep if self.local else self.path.rstrip("/") + "/"

    def __repr__(self) -> str:
        return f"StoredRun({self.shown!r})"

    # -- what is there -----------------------------------------------------------

    def file(self, name: str) -> str:
        """The path of a file of this folder in its filesystem (``media/x.png`` for one in a subfolder)."""
        if self.local and os.sep != "/":
            name = name.replace("/", os.sep)
        return self._prefix + name

    def entries(self) -> dict[str, Entry]:
        """Every file below the folder (object storage), listed once; names relative to the folder."""
        if self._entries is None:
            self._entries = _listing(self.fs, self.path)
        return self._entries

    def names(self) -> set[str]:
        """The names directly in the folder (files and folders); empty for a missing folder."""
        if self._names is None:
            if self.local:
                try:
                    with os.scandir(self.path) as it:
                        self._names = {e.name for e in it}
                except (FileNotFoundError, NotADirectoryError):
                    self._names = set()
            else:
                self._names = {name.split("/", 1)[0] for name in self.entries()}
        return self._names

    def exists(self) -> bool:
        """Whether the folder is there (on object storage: whether anything is stored below it)."""
        if self.local:
            return os.path.isdir(self.path)
        return bool(self.entries())

    def is_run(self) -> bool:
        """Whether the folder holds a run of its own (one of :data:`RUN_FILES`)."""
        return not self.names().isdisjoint(RUN_FILES)

    def info(self, name: str) -> Entry | None:
        """Size and modification time of one file of the folder; None when it is not there.

        Each file is looked at once in the life of this object, as a listing
        is made once: make a new one to see what changed since.
        """
        if not self.local:
            return self.entries().get(name)
        if name in self._info:
            return self._info[name]
        try:
            st = os.stat(self._prefix + name)
        except (FileNotFoundError, NotADirectoryError):
            found = None
        else:
            found = Entry(st.st_size, st.st_mtime_ns)
        self._info[name] = found
        return found

    def rank_folders(self) -> list[tuple[int, StoredRun]]:
        """``(rank, run)`` of each ``rank_<r>`` folder of a per-rank version, by rank.

        Empty for an ordinary version: one with a run file of its own, or
        without ``rank_<r>`` folders.
        """
        names = self.names()
        if not names.isdisjoint(RUN_FILES):
            return []
        ranks: list[tuple[int, StoredRun]] = []
        for name in names:
            m = _layout.RANK_DIR.fullmatch(name)
            if m is None:
                continue
            if self.local:
                if not os.path.isdir(os.path.join(self.path, name)):
                    continue
                ranks.append((int(m.group(1)), StoredRun(child(self.location, name))))
            else:
                prefix = name + "/"
                entries = {k[len(prefix):]: e for k, e in self.entries().items() if k.startswith(prefix)}
                ranks.append((int(m.group(1)), StoredRun(child(self.location, name), entries)))
        return sorted(ranks, key=lambda r: r[0])

    def identity(self) -> tuple[str, int | None, int | None]:
        """Experiment name, version and rank that the folder's path spells.

        ``<name>/version_<N>/rank_<r>`` gives ``(name, N, r)``,
        ``<name>/version_<N>`` gives ``(name, N, None)``; a folder named otherwise
        gives its parent's name and no version or rank.
        """
        paths = os.path if self.local else posixpath
        absolute = os.path.abspath(self.path) if self.local else self.path.rstrip("/")
        parent, base = paths.split(absolute)
        rank = _layout.RANK_DIR.fullmatch(base)
        if rank and (version := _layout.VERSION_DIR.fullmatch(paths.basename(parent))):
            return paths.basename(paths.dirname(parent)), int(version.group(1)), int(rank.group(1))
        m = _layout.VERSION_DIR.fullmatch(base)
        return paths.basename(parent), int(m.group(1)) if m else None, None

    # -- small files ---------------------------------------------------------------

    def read_bytes(self, name: str) -> bytes | None:
        """The bytes of one file of the folder; None when it is not there."""
        if self.local:
            try:
                fd = os.open(self.file(name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            try:
                data = os.read(fd, 1 << 16)
                if len(data) < 1 << 16:
                    return data  # the files read this way are small: one read, no fstat
                chunks = [data]
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)
        entry = self.entries().get(name)
        if entry is None:
            return None
        try:
            with self.fs.open_input_stream(self.file(name), compression=None) as f:
                return bytes(f.read())
        except FileNotFoundError:
            return None

    def meta(self) -> dict[str, Any]:
        """``meta.experiment``; empty when there is none; ``DamagedRunError`` naming it when unparsable."""
        data = self.read_bytes(_layout.META)
        return {} if data is None else _layout.parse_meta(data, self._shown(_layout.META))

    def tag_rows(self) -> list[list[str]]:
        """The rows of ``meta_tags.csv``, header first; ``DamagedRunError`` naming it when unreadable."""
        data = self.read_bytes(_layout.TAGS)
        return [] if data is None else _layout.parse_tag_rows(data, self._shown(_layout.TAGS))

    def tag_texts(self) -> dict[str, str]:
        """The tags as the text written in ``meta_tags.csv``, in order."""
        return {row[0]: row[1] for row in self.tag_rows()[1:] if len(row) >= 2}

    def _shown(self, name: str) -> str:
        return self.file(name) if self.local else f"{self.shown.partition('?')[0]}/{name}"

    # -- the journal -------------------------------------------------------------------

    def segments(self) -> list[tuple[int, str, Entry]]:
        """The journal as ``(start offset, name, entry)`` pieces in order, up to the first gap.

        On a local disk: the one file ``_journal.arrows``.  On object storage:
        the ``_journal/<offset>.arrows`` segments, each starting where the one
        before ends (a missing segment ends the journal: nothing after it is
        trusted), or an ``_journal.arrows`` copied there whole.
        """
        if self.local:
            entry = self.info(_layout.JOURNAL)
            return [] if entry is None else [(0, _layout.JOURNAL, entry)]
        entries = self.entries()
        prefix = _layout.JOURNAL_SEGMENTS + "/"
        found = sorted(
            (offset, name, entry) for name, entry in entries.items()
            if name.startswith(prefix) and (offset := _layout.segment_offset(name[len(prefix):])) is not None
        )
        if not found:
            whole = entries.get(_layout.JOURNAL)
            return [] if whole is None else [(0, _layout.JOURNAL, whole)]
        chain = []
        expected = 0
        for offset, name, entry in found:
            if offset != expected:
                break
            chain.append((offset, name, entry))
            expected = offset + entry.size
        return chain

    def journal_size(self) -> int:
        """Bytes of journal that :meth:`segments` chains together."""
        pieces = self.segments()
        return pieces[-1][0] + pieces[-1][2].size if pieces else 0

    def journal_mtime_ns(self) -> int | None:
        """When the journal last grew (the last segment's time); None without a journal."""
        pieces = self.segments()
        return pieces[-1][2].mtime_ns if pieces else None

    def frames(self, start: int = 0) -> tuple[list[pa.Table], int]:
        """The journal's complete frames from byte ``start`` (a frame boundary), and where they end.

        What follows the returned offset is a torn or damaged frame, or
        nothing yet.
        """
        if self.local:
            return _journal.read_frames(self.file(_layout.JOURNAL), start)
        tables: list[pa.Table] = []
        end = start
        todo = [piece for piece in self.segments() if piece[0] + piece[2].size > start]
        if len(todo) > 2:
            # Each segment is a request: many are fetched side by side, then read in order.
            with ThreadPoolExecutor(max_workers=min(SEGMENT_READERS, len(todo)),
                                    thread_name_prefix="test-tube-segments") as pool:
                datas: Iterable[bytes | None] = list(pool.map(self.read_bytes, [name for _, name, _ in todo]))
        else:
            datas = (self.read_bytes(name) for _, name, _ in todo)
        for (offset, _, _), data in zip(todo, datas):
            if offset > end or data is None:
                break  # a gap, or deleted meanwhile
            skip = end - offset
            found, used = _journal.frames_of(memoryview(data)[skip:])
            tables.extend(found)
            end += used
            if skip + used < len(data):
                break  # a torn or damaged frame: nothing after it is trusted
        return tables, end

    def last_frames(self, budget: int = _journal.TAIL_BYTES) -> Generator[pa.Table, None, None]:
        """The journal's complete frames, last first, reading no more than ``budget`` bytes from its end.

        The caller closes the iterator (``close()``) when done, which closes
        the file at once.
        """
        if self.local:
            yield from _journal.last_frames(self.file(_layout.JOURNAL), budget)
            return
        pieces = self.segments()
        if len(pieces) == 1 and pieces[0][1] == _layout.JOURNAL:
            _, name, entry = pieces[0]  # a whole journal copied here: ranged reads from its end
            with self.fs.open_input_file(self.file(name)) as f:
                yield from _journal.last_frames_in(lambda offset, n: bytes(f.read_at(n, offset)), entry.size,
                                                   budget)
            return
        for _, name, entry in reversed(pieces):
            if budget <= 0:
                return
            budget -= entry.size
            data = self.read_bytes(name)
            if data is None:
                return
            tables, used = _journal.frames_of(data)
            if used < len(data):
                # only a segment's whole frames before damage count; the ones after it are unknown
                yield from reversed(tables)
                return
            yield from reversed(tables)

    # -- Parquet, CSV, ring -------------------------------------------------------------

    def parquet_complete(self) -> bool:
        """Whether ``metrics.parquet`` holds every journaled row: it was written after the journal."""
        parquet = self.info(_layout.PARQUET)
        if parquet is None:
            return False
        journal = self.journal_mtime_ns()
        return journal is None or parquet.mtime_ns >= journal

    def parquet_metadata(self) -> pq.FileMetaData:
        """The footer of ``metrics.parquet`` (one read of its end); ``FileNotFoundError`` when missing."""
        if self.local:
            with pa.OSFile(self.file(_layout.PARQUET)) as f:  # a plain file skips pyarrow's filesystem lookup
                return pq.read_metadata(f)
        with self._open(_layout.PARQUET) as f:
            return pq.read_metadata(f)

    def read_parquet(self, columns: list[str] | None = None) -> pa.Table:
        """``metrics.parquet``, or only ``columns`` of it."""
        if self.local:
            return pq.read_table(self.file(_layout.PARQUET), columns=columns)
        with self._open(_layout.PARQUET) as f:
            return pq.read_table(f, columns=columns)

    def parquet_schema(self) -> pa.Schema:
        return self.parquet_metadata().schema.to_arrow_schema()

    def _open(self, name: str) -> Any:
        entry = self.entries().get(name)
        if entry is None:
            raise FileNotFoundError(f"{self._shown(name)} does not exist")
        return self.fs.open_input_file(self.file(name))

    def ring_table(self) -> pa.Table | None:
        """Rows a dead writer left in its ring beyond the journal; only a local run has a ring."""
        if not self.local:
            return None
        from . import _ring_recovery

        return _ring_recovery.ring_table(self.path)

    def has_ring(self) -> bool:
        if not self.local:
            return False
        from . import _ring_recovery

        return os.path.exists(_ring_recovery.ring_path(self.path))

    # -- media -----------------------------------------------------------------------

    def media(self) -> set[str]:
        """The names of the images in ``media/`` (temporary files and other names left out)."""
        if self.local:
            try:
                with os.scandir(os.path.join(self.path, _layout.MEDIA)) as it:
                    return {e.name for e in it if _layout.media_type(e.name)}
            except (FileNotFoundError, NotADirectoryError):
                return set()
        prefix = _layout.MEDIA + "/"
        return {name[len(prefix):] for name in self.entries()
                if name.startswith(prefix) and "/" not in name[len(prefix):]
                and _layout.media_type(name[len(prefix):])}

    # -- change detection -------------------------------------------------------------

    def signature(self) -> tuple[Any, ...]:
        """Size and time of each file the readers read: changes whenever the writer publishes.

        ``metrics.csv`` counts only without a journal (a run of test-tube
        0.7.5): otherwise the journal changes with it.
        """
        parts: list[Any] = [self.info(name) for name in _SIGNED]
        if parts[2] is None:
            parts.append(self.info(_layout.CSV))
        if not self.local:
            pieces = self.segments()
            parts.append(pieces[-1] if pieces else None)
        return tuple(parts)


_SIGNED = (_layout.META, _layout.TAGS, _layout.JOURNAL, _layout.PARQUET)


def _listing(fs: pafs.FileSystem, path: str) -> dict[str, Entry]:
    """Every file below ``path``, names relative to it; empty when nothing is there."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except NotADirectoryError:
        return {}
    cut = len(path.rstrip("/")) + 1
    return {info.path[cut:]: Entry(info.size or 0, info.mtime_ns or 0)
            for info in infos if info.type == pafs.FileType.File}


class FoundRun(NamedTuple):
    """One run folder :meth:`Store.runs` found: a version folder, or a rank folder inside one.

    ``log_dir`` is how the run is shown: its path on a local disk, its URI
    (without secrets) on object storage.
    """

    name: str
    version: int
    rank: int | None
    log_dir: str
    folder: StoredRun

    @property
    def id(self) -> str:
        return run_id(self.name, self.version, self.rank)


class Store:
    """The runs under a save_dir (a local folder, or a prefix on any pyarrow filesystem)."""

    def __init__(self, location: Location) -> None:
        self.location = location

    @classmethod
    def open(cls, save_dir: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> Store:
        return cls(resolve(save_dir, filesystem))

    @property
    def shown(self) -> str:
        return self.location.shown

    def folder(self, *parts: str) -> StoredRun:
        """One folder below the save_dir (or the save_dir itself), to read as a run."""
        return StoredRun(child(self.location, *parts) if parts else self.location)

    def runs(self, name: str | None = None) -> list[FoundRun]:
        """Every run folder, ordered by name, version, rank.

        ``name`` restricts it to one experiment.  The save_dir may also be one
        experiment's folder (the one holding ``version_<N>`` folders).  Raises
        ``FileNotFoundError`` when the save_dir (or its experiment ``name``)
        is not there.
        """
        if self.location.local:
            return self._local_runs(name)
        return self._remote_runs(name)

    def _local_runs(self, name: str | None) -> list[FoundRun]:
        root = self.location.path
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{root} is not a folder")
        if name is not None:
            exp_dir = os.path.join(root, name)
            if not os.path.isdir(exp_dir):
                raise FileNotFoundError(f"{root} has no experiment {name!r}")
            return self._local_versions(child(self.location, name), name)
        with os.scandir(root) as entries:
            dirs = sorted(e.name for e in entries if e.is_dir())
        if any(_layout.VERSION_DIR.fullmatch(d) for d in dirs):
            # save_dir is one experiment's folder
            return self._local_versions(self.location, os.path.basename(os.path.abspath(root)))
        found: list[FoundRun] = []
        for exp in dirs:
            found.extend(self._local_versions(child(self.location, exp), exp))
        return found

    @staticmethod
    def _local_versions(exp: Location, name: str) -> list[FoundRun]:
        try:
            with os.scandir(exp.path) as entries:
                versions = sorted(
                    int(m.group(1)) for e in entries
                    if (m := _layout.VERSION_DIR.fullmatch(e.name)) and e.is_dir()
                )
        except (FileNotFoundError, NotADirectoryError):
            return []  # deleted while listed
        found: list[FoundRun] = []
        for v in versions:
            run = StoredRun(child(exp, f"version_{v}"))
            ranks = run.rank_folders()
            if ranks:
                found.extend(FoundRun(name, v, r, f.path, f) for r, f in ranks)
            else:
                found.append(FoundRun(name, v, None, run.path, run))
        return found

    def _remote_runs(self, name: str | None) -> list[FoundRun]:
        root = self.location if name is None else child(self.location, name)
        listing = _listing(root.filesystem, root.path)
        if not listing:
            if name is not None:
                raise FileNotFoundError(f"{self.shown} has no experiment {name!r}")
            raise FileNotFoundError(f"{self.shown} holds nothing (no object under it)")
        # (experiment, version) -> the version folder's files, names relative to it
        versions: dict[tuple[str, int], dict[str, Entry]] = {}
        top = {key.split("/", 1)[0] for key in listing if "/" in key}
        one_experiment = name is not None or any(_layout.VERSION_DIR.fullmatch(d) for d in top)
        exp_name = name if name is not None else posixpath.basename(self.location.path.rstrip("/"))
        for key, entry in listing.items():
            parts = key.split("/")
            exp, rest = (exp_name, parts) if one_experiment else (parts[0], parts[1:])
            if len(rest) < 2 or (m := _layout.VERSION_DIR.fullmatch(rest[0])) is None:
                continue
            versions.setdefault((exp, int(m.group(1))), {})["/".join(rest[1:])] = entry
        found: list[FoundRun] = []
        for (exp, v) in sorted(versions):
            parts = [f"version_{v}"] if one_experiment else [exp, f"version_{v}"]
            run = StoredRun(child(root, *parts), versions[(exp, v)])
            ranks = run.rank_folders()
            if ranks:
                found.extend(FoundRun(exp, v, r, f.shown, f) for r, f in ranks)
            else:
                found.append(FoundRun(exp, v, None, run.shown, run))
        return found
