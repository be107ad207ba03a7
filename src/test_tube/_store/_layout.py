"""The on-disk layout: version folders, version claims, metadata files, the writer lock.

::

    <save_dir>/<name>/version_<N>/
        meta.experiment    one JSON object (the original's keys plus ours)
        meta_tags.csv      key,value
        metrics.csv        current after every flush
        metrics.parquet    complete after close(); refreshed while running
        media/             images
        _journal.arrows    every flushed row (crash-tolerant; see _journal)
        .lock              held by the process writing this version

Every file other than the journal and the media is published whole (temp file
in the same folder, then ``os.replace``), so a reader never sees half a file.
"""

from __future__ import annotations

import ast
import csv
import fcntl
import io
import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import DamagedRunError, VersionInUseError

META = "meta.experiment"
TAGS = "meta_tags.csv"
#: The key of META under which close() records the run's summary for runs() (see ``_runs.closing_summary``).
SUMMARY = "summary"
CSV = "metrics.csv"
PARQUET = "metrics.parquet"
JOURNAL = "_journal.arrows"
MEDIA = "media"
LOCK = ".lock"
#: On object storage (no append): the journal as immutable segments, and version claims.
JOURNAL_SEGMENTS = "_journal"
CLAIMS = "_claims"
FORMAT = "test_tube/1"

VERSION_DIR = re.compile(r"version_(\d+)")
# Experiment writes rank_{int}; no leading zeros, so that rank_01 cannot stand for the same rank as rank_1.
RANK_DIR = re.compile(r"rank_(0|[1-9]\d*)")


def segment_name(offset: int) -> str:
    """The object name of the journal segment that starts at byte ``offset`` of the local journal."""
    return f"{offset:016d}.arrows"


def segment_offset(name: str) -> int | None:
    """The start offset a segment's name gives, or None for a name that is not a segment."""
    m = _SEGMENT.fullmatch(name)
    return int(m.group(1)) if m else None


_SEGMENT = re.compile(r"(\d{16})\.arrows")


def media_name(stem: str, ext: str, step: int, taken: set[str]) -> str:
    """The ``media/<file>`` cell of an image: ``<stem>_<step>.<ext>``, numbered when taken; adds it to ``taken``."""
    base = f"{stem}_{step}"
    name = f"{base}.{ext}"
    counter = 1
    while name in taken:
        name = f"{base}_{counter}.{ext}"
        counter += 1
    taken.add(name)
    return f"{MEDIA}/{name}"


def media_type(file: str) -> str | None:
    """The image format of a file in ``media/`` (``png``, ``jpg``, ``jpeg``); None for anything else.

    Temporary files of a publish start with ``.`` and are never media.
    """
    m = _MEDIA_FILE.fullmatch(file)
    return m.group(1) if m else None


_MEDIA_FILE = re.compile(r"[^.].*\.(png|jpe?g)", re.DOTALL)


def experiment_dir(save_dir: str, name: str) -> str:
    return os.path.join(save_dir, name)


def version_dir(save_dir: str, name: str, version: int) -> str:
    return os.path.join(save_dir, name, f"version_{version}")


def existing_versions(exp_dir: str) -> list[int]:
    """Version numbers present in ``exp_dir``; names like ``version_2_backup`` are ignored."""
    try:
        entries = os.listdir(exp_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for e in entries if (m := VERSION_DIR.fullmatch(e)))


def next_version(exp_dir: str) -> int:
    versions = existing_versions(exp_dir)
    return versions[-1] + 1 if versions else 0


def claim_version(exp_dir: str) -> int:
    """Create the next free ``version_<N>`` folder and return N.

    ``os.mkdir`` fails if the folder exists, so concurrent processes each get a
    distinct version: a loser of the race simply tries the next number.
    """
    os.makedirs(exp_dir, exist_ok=True)
    version = next_version(exp_dir)
    while True:
        try:
            os.mkdir(os.path.join(exp_dir, f"version_{version}"))
            return version
        except FileExistsError:
            version += 1


def lock(log_dir: str) -> int:
    """Take the writer lock of a version folder; return its file descriptor.

    Raises ``VersionInUseError`` when another live process holds it.  The kernel
    drops the lock when the holder dies, so a crashed run never stays locked.
    Temp files a killed holder left behind are removed once the lock is ours.
    """
    fd = os.open(os.path.join(log_dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise VersionInUseError(
            f"{log_dir} is open for writing in another process; "
            f"use another version, or close the other Experiment first",
            log_dir=log_dir,
        ) from None
    remove_stale_temps(log_dir)
    return fd


def remove_stale_temps(log_dir: str) -> None:
    """Delete the ``.<file>.tmp`` files of publishes that a crash interrupted.

    Only the holder of the lock publishes in a version folder, so while we hold
    it every such file is a leftover; without this, each kill could leave one
    (a footer-less Parquet file among them) for good.
    """
    for folder in (log_dir, os.path.join(log_dir, MEDIA)):
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.remove(os.path.join(folder, name))
                except FileNotFoundError:
                    pass


def temp_path(path: str) -> str:
    """Where to write ``path`` before renaming it into place: ``.<name>.<pid>.tmp`` beside it.

    The one name every writer of a run uses, so :func:`remove_stale_temps`
    recognises what a crash left, and readers (which skip names starting with
    ``.``) never see a file being written.
    """
    folder, base = os.path.split(path)
    return os.path.join(folder, f".{base}.{os.getpid()}.tmp")


def publish(path: str, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one."""
    tmp = temp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)


def append_whole(fd: int, pieces: Sequence[Any]) -> int:
    """Append ``pieces`` to ``fd`` (opened with ``O_APPEND``) as one record; the bytes written.

    All or nothing: a write that fails part way (a full disk) is cut off again,
    so what follows the file's old end is only ever whole records and a reader
    never meets a torn one.  ``pieces`` are written with ``writev``, at most
    ``_IOV_MAX`` at a time, without being copied together first.
    """
    size = os.fstat(fd).st_size
    views = [v for v in (memoryview(p).cast("B") for p in pieces) if len(v)]
    total = sum(len(v) for v in views)
    first = 0
    try:
        while first < len(views):
            written = os.writev(fd, views[first:first + _IOV_MAX])
            while first < len(views) and written >= len(views[first]):
                written -= len(views[first])
                first += 1
            if written:
                views[first] = views[first][written:]
    except BaseException:
        os.ftruncate(fd, size)
        raise
    return total


#: The most buffers one writev takes on Linux is 1024; well below it.
_IOV_MAX = 512


def write_meta(log_dir: str, meta: Mapping[str, Any]) -> None:
    # Atomic but not fsynced: it is rewritten at every flush as a heartbeat, and
    # the rows' durability rests on the journal's fsync, not on this file.
    publish(os.path.join(log_dir, META), json.dumps(meta, ensure_ascii=False).encode(), fsync=False)


def read_meta(log_dir: str) -> dict[str, Any]:
    """The metadata of a version; an empty dict when there is none.

    Raises ``DamagedRunError`` naming the file when it cannot be parsed (cut
    short, bytes changed, nested too deep for the parser).
    """
    path = os.path.join(log_dir, META)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    return parse_meta(data, path)


def parse_meta(data: bytes, path: str) -> dict[str, Any]:
    """``meta.experiment``'s bytes as a dict (see :func:`read_meta`); ``path`` names the file in errors."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DamagedRunError(f"{path} is damaged: {type(exc).__name__}: {str(exc)[:200]}; move it away to "
                              f"resume this version (it holds only metadata: created_at, description, status)",
                              path=path) from None
    return meta if isinstance(meta, dict) else {}


def write_tags(log_dir: str, tags: Mapping[str, Any]) -> None:
    """Publish ``meta_tags.csv``: header ``key,value``, values as text, in insertion order."""
    lines = [csv_line(["key", "value"]), *(csv_line([key, value]) for key, value in tags.items())]
    publish(os.path.join(log_dir, TAGS), "".join(lines).encode(), fsync=False)


def csv_line(fields: list[str]) -> str:
    """One CSV line ending in ``\\n``; a field holding ``,``, ``"``, ``\\r`` or ``\\n`` is quoted.

    The csv module leaves a lone ``\\r`` unquoted when the line ends in
    ``\\n``, and readers (pandas, csv.reader) take it for a line break.
    """
    return ",".join(_quoted(f) for f in fields) + "\n"


def _quoted(field: str) -> str:
    if _NEEDS_QUOTES.search(field):
        return '"' + field.replace('"', '""') + '"'
    return field


_NEEDS_QUOTES = re.compile('[,"\r\n]')


def read_tags(log_dir: str) -> dict[str, Any]:
    """Tags as written by :func:`write_tags` (or the original test-tube).

    Values are parsed back with ``ast.literal_eval`` where that works (numbers,
    booleans, lists), and kept as text otherwise, as Lightning does.
    """
    rows = read_tag_rows(log_dir)
    tags: dict[str, Any] = {}
    for row in rows[1:]:
        if len(row) >= 2:
            tags[row[0]] = parse_tag(row[1])
    return tags


def read_tag_rows(log_dir: str) -> list[list[str]]:
    """The rows of ``meta_tags.csv`` (header first); none when there is no such file.

    Raises ``DamagedRunError`` naming the file when it is not UTF-8 CSV.
    """
    path = os.path.join(log_dir, TAGS)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return parse_tag_rows(data, path)


def parse_tag_rows(data: bytes, path: str) -> list[list[str]]:
    """``meta_tags.csv``'s bytes as rows (see :func:`read_tag_rows`); ``path`` names the file in errors."""
    try:
        text = data.decode("utf-8")
        if '"' not in text and "\r" not in text and "\0" not in text:
            # What write_tags writes for plain values; csv.reader gives the same rows, slower.
            lines = text.split("\n")
            if lines[-1] == "":
                lines.pop()
            return [line.split(",") if line else [] for line in lines]
        return list(csv.reader(io.StringIO(text, newline="")))
    except (ValueError, csv.Error) as exc:
        raise DamagedRunError(f"{path} is damaged: {type(exc).__name__}: {str(exc)[:200]}; move it away to "
                              f"resume this version (it holds the tags)", path=path) from None


def parse_tag(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def tag_text(value: Any) -> str:
    """How a tag value is written: ``str()`` as the original did (``True``, ``0.001``, ``[1, 2]``)."""
    return value if isinstance(value, str) else str(value)


def host() -> str:
    return socket.gethostname()
