"""Where runs live: a ``save_dir`` as a plain path, a URI, or a path in a given filesystem.

``Experiment``, ``read()`` and ``runs()`` take the same two forms pyarrow's
own functions take: ``save_dir`` alone (a local path, or any URI that
``pyarrow.fs.FileSystem.from_uri`` takes, its query options included:
``s3://bucket/logs?endpoint_override=host:port&scheme=http``), or
``save_dir`` as a path inside a ready ``filesystem=``.  Everything downstream
gets one :class:`Location`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow.fs as pafs


@dataclass(frozen=True)
class Location:
    """A resolved ``save_dir``: the filesystem, the path in it, and how to show it to a user."""

    filesystem: pafs.FileSystem
    path: str
    shown: str

    @property
    def local(self) -> bool:
        """True when ``path`` is an ordinary path of this machine (``os`` functions work on it)."""
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        """``path`` with ``parts`` appended, with the separator this filesystem uses."""
        if self.local:
            return os.path.join(self.path, *parts)
        return "/".join([self.path.rstrip("/"), *parts])


def is_uri(save_dir: str | os.PathLike[str]) -> bool:
    return "://" in os.fspath(save_dir)


def resolve(save_dir: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> Location:
    """One :class:`Location` for the ``(save_dir, filesystem=)`` a user passed.

    Raises ``TypeError`` for a ``filesystem`` that is not a ``pyarrow.fs.FileSystem``
    and ``ValueError`` for a URI that pyarrow cannot open, naming it.
    """
    text = os.fspath(save_dir)
    if filesystem is not None:
        if not isinstance(filesystem, pafs.FileSystem):
            raise TypeError(f"filesystem must be a pyarrow.fs.FileSystem, got {type(filesystem).__name__}")
        if is_uri(text):
            raise ValueError(f"save_dir {text!r} is a URI; with filesystem= it must be a path in that filesystem")
        if isinstance(filesystem, pafs.LocalFileSystem):
            return Location(filesystem, os.path.abspath(text), os.path.abspath(text))
        return Location(filesystem, text.rstrip("/"), f"{filesystem.type_name}:{text}")
    if not is_uri(text):
        path = os.path.abspath(text)
        return Location(pafs.LocalFileSystem(), path, path)
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError, TypeError) as exc:
        raise ValueError(f"save_dir {_without_secret(text)!r} is not a URI pyarrow can open: {exc}") from exc
    if isinstance(fs, pafs.LocalFileSystem):
        return Location(fs, os.path.abspath(path), os.path.abspath(path))
    return Location(fs, path.rstrip("/"), _without_secret(text))


def _without_secret(uri: str) -> str:
    """``uri`` with any ``user:secret@`` removed, for messages and the runs table."""
    scheme, sep, rest = uri.partition("://")
    head, at, tail = rest.partition("@")
    if at and "/" not in head:
        return f"{scheme}{sep}{tail}"
    return uri
