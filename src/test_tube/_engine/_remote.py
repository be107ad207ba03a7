"""A version folder on object storage: its claim, its local spool, and taking it up again.

Object storage has no ``mkdir`` that fails when the folder exists and no lock
that dies with its holder (and pyarrow offers no conditional PUT), so a
version is claimed with plain PUT and LIST: PUT ``version_<N>/_claims/<host>-<pid>-<random>``, then LIST
``version_<N>/``; the claim wins iff it is the only claim listed and nothing
else is there.  Of two claimers, the one whose LIST comes second sees the
other's claim (S3 is strongly consistent: list-after-write), so at most one
wins.  A loser deletes its claim and tries the next number.

A version that holds data already (``version=N`` of an earlier run) is taken
up by the same PUT-then-LIST, counting only the *fresh* claims (made within
:data:`FRESH_CLAIM` seconds of ours, by the store's clock): a closed run
deletes its claim, a dead one leaves an old one behind, two openers at once
both see fresh claims.  A run whose heartbeat is fresh is refused as in use.

The engine writes into a *spool*, an ordinary local version folder (ring,
journal, published files), which the upload stage (``_upload``) copies to the
store.  The spool lives at ``$TEST_TUBE_SPOOL`` (default
``~/.cache/test_tube/spool``) ``/<hash of the store location>/<name>/version_<N>``:
a fixed place, so that a run killed before its upload finished is found again
by the next open of that version on this host, whose recovery takes the rows
of its ring and journal and whose upload stage sends what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from .._errors import UploadWarning, VersionInUseError, warn_from_caller
from .._store import _layout
from .._store._location import Location
from .._store._reader import StoredRun

#: Client settings for a store we open ourselves from a URI: a stopped server is
#: noticed within seconds instead of the SDK's minutes of retries; the upload
#: stage retries with its own backoff, so the client tries each request once.
CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT = 3.0

#: Claims younger than this (store clock, relative to ours) count against taking up a version.
FRESH_CLAIM = 120.0

#: A run whose meta.experiment is younger than this and says ``running`` is in use (see ``_runs``).
LIVE_HEARTBEAT = 60.0

ENV_SPOOL = "TEST_TUBE_SPOOL"

#: In the spool: the claim of the session writing it (hidden: never uploaded).
CLAIM_FILE = ".claim"

#: Under ``<prefix>/<name>/``: the version each per_rank launch agreed on (as on disk, see ``_rendezvous``).
RANK_CLAIMS = ".rank_claims"

def writer_filesystem(location: Location, *, given: bool) -> pafs.FileSystem:
    """The filesystem the writer uses: an S3 store opened from a URI gets our timeouts.

    A ``filesystem=`` the user built is used as it is (its timeouts are theirs).
    """
    fs = location.filesystem
    if given or not isinstance(fs, pafs.S3FileSystem):
        return fs
    rebuild, (options,) = fs.__reduce__()  # the options from_uri parsed, query included
    options = dict(options)
    if options.get("connect_timeout", -1) < 0:
        options["connect_timeout"] = CONNECT_TIMEOUT
    if options.get("request_timeout", -1) < 0:
        options["request_timeout"] = REQUEST_TIMEOUT
    options["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=1)
    # Small objects in one PutObject instead of a three-request multipart upload.
    options["allow_delayed_open"] = True
    result: pafs.FileSystem = rebuild(options)
    return result


def spool_root(location: Location) -> str:
    """The local folder this store location's runs are spooled under."""
    base = os.environ.get(ENV_SPOOL) or os.path.join(os.path.expanduser("~"), ".cache", "test_tube", "spool")
    key = hashlib.sha256(f"{location.filesystem.type_name}\n{location.shown}\n{location.path}".encode())
    return os.path.join(os.path.abspath(base), key.hexdigest()[:16])


@dataclass
class RemoteVersion:
    """A claimed version on the store: where it is, our claim, what it held when we took it up."""

    filesystem: pafs.FileSystem
    path: str  # <prefix>/<name>/version_<N> in the filesystem
    claim: str  # our claim object
    spool: str  # the local version folder the engine writes
    version: int = 0
    #: bytes of the journal already on the store (its segments, contiguous from 0)
    uploaded_journal: int = 0
    #: media names already on the store
    uploaded_media: set[str] = field(default_factory=set)

    def release_claim(self) -> None:
        """Delete our claim (the run is complete on the store); a failure leaves a stale one, harmless."""
        try:
            self.filesystem.delete_file(self.claim)
        except OSError:
            pass


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p)


def next_version(fs: pafs.FileSystem, exp_path: str) -> int:
    """1 + the highest N for which ``version_<N>/`` holds any object (0 for none)."""
    found = []
    for info in fs.get_file_info(pafs.FileSelector(exp_path, allow_not_found=True)):
        m = _layout.VERSION_DIR.fullmatch(info.base_name)
        if m:
            found.append(int(m.group(1)))
    return max(found) + 1 if found else 0


def _files(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    # Directory markers (pyarrow leaves one when it deletes the last object of a folder) are not objects of a run.
    return [i for i in infos if i.type == pafs.FileType.File]


def _token() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(64):016x}"


def _put(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def claim_new(fs: pafs.FileSystem, exp_path: str) -> tuple[int, str]:
    """Claim the next free version under ``exp_path``; return it and our claim."""
    version = next_version(fs, exp_path)
    token = _token()
    while True:
        version_path = join(exp_path, f"version_{version}")
        claim = join(version_path, _layout.CLAIMS, token)
        _put(fs, claim, b"")
        files = _files(fs, version_path)
        if [f.path for f in files] == [claim]:
            return version, claim
        fs.delete_file(claim)
        time.sleep(random.uniform(0.0, 0.05))  # two losers of one number should not meet again at the next
        version = max(version + 1, next_version(fs, exp_path))


def claim_existing(fs: pafs.FileSystem, version_path: str, spool: str) -> str:
    """Claim a version that holds data already (to take it up); return our claim.

    Raises ``VersionInUseError`` when another writer claimed it at the same
    time or its heartbeat says it is running.  The claim an ended session of
    this host left in ``spool`` (its upload did not finish) is not a rival.
    """
    claim = join(version_path, _layout.CLAIMS, _token())
    _put(fs, claim, b"")
    files = _files(fs, version_path)
    ours = next((f for f in files if f.path == claim), None)
    now = ours.mtime.timestamp() if ours is not None and ours.mtime is not None else time.time()
    claims_dir = join(version_path, _layout.CLAIMS) + "/"
    left = _claim_left_in(spool)
    rivals = [f for f in files if f.path.startswith(claims_dir) and f.path not in (claim, left)
              and f.mtime is not None and f.mtime.timestamp() > now - FRESH_CLAIM]
    meta = next((f for f in files if f.path == join(version_path, _layout.META)), None)
    why = ""
    if rivals:
        why = f"another writer claimed it {now - rivals[0].mtime.timestamp():.0f} s ago"
    elif meta is not None and meta.mtime is not None and meta.mtime.timestamp() > now - LIVE_HEARTBEAT:
        found = _read_json(fs, meta.path)
        # The heartbeat of the ended session whose claim the spool recorded is not a live writer.
        session = f"{found.get('host')}-{found.get('pid')}-"
        if found.get("status") == "running" and not (left and left.rsplit("/", 1)[-1].startswith(session)):
            why = "its meta.experiment says running, with a heartbeat under a minute old"
    if why:
        fs.delete_file(claim)
        raise VersionInUseError(f"{version_path} is open for writing elsewhere ({why}); use another version, "
                                f"or close the other Experiment first", log_dir=version_path)
    if left and any(f.path == left for f in files):
        try:
            fs.delete_file(left)
        except OSError:
            pass  # stale either way: it only keeps new claimers off this number
    return claim


def _claim_left_in(spool: str) -> str:
    """The claim an ended session of this host recorded in its spool ('' if none, or if it is still running)."""
    try:
        with open(os.path.join(spool, CLAIM_FILE), encoding="utf-8") as f:
            left = f.read().strip()
    except FileNotFoundError:
        return ""
    try:
        os.close(_layout.lock(spool))  # taken only if the session that wrote it has ended
    except VersionInUseError:
        return ""
    return left


def record_claim(remote: RemoteVersion) -> None:
    """Note our claim in the spool, so the next session here knows it for ours if this one cannot delete it."""
    _layout.publish(os.path.join(remote.spool, CLAIM_FILE), remote.claim.encode(), fsync=False)


def _read_json(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    try:
        with fs.open_input_stream(path) as f:
            value = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def open_version(location: Location, fs: pafs.FileSystem, name: str, version: int | None,
                 rank_dir: str = "") -> RemoteVersion:
    """Claim (or take up) a version on the store and prepare its spool; nothing is uploaded yet.

    ``rank_dir`` (``rank_<r>``, with ``per_rank`` and a given version) is the folder of that version claimed.
    """
    exp_path = location.join(name)
    taken_up = False
    if version is None:
        version, claim = claim_new(fs, exp_path)
        folder = join(exp_path, f"version_{version}")
    else:
        folder = join(exp_path, f"version_{version}", rank_dir)
        spool = os.path.join(spool_root(location), name, f"version_{version}", rank_dir)
        if _files(fs, folder):
            claim = claim_existing(fs, folder, spool)
            taken_up = True
        else:
            claim = _claim_exactly(fs, folder)
    spool = os.path.join(spool_root(location), name, f"version_{version}", rank_dir)
    remote = RemoteVersion(fs, folder, claim, spool, version)
    try:
        if taken_up:
            _download(remote)
        else:
            _set_aside(spool, "a new version was claimed on the store")
        os.makedirs(spool, exist_ok=True)
        record_claim(remote)
    except BaseException:
        remote.release_claim()
        raise
    return remote


class StorePlace:
    """Where the ranks of one launch agree on a version on object storage (a ``_rendezvous.Place``).

    Rank 0's claim of the version folder is dropped (:meth:`release`) once its
    ``rank_0/`` folder holds its own claim, which keeps new claimers off the number from then on.
    """

    def __init__(self, fs: pafs.FileSystem, exp_path: str) -> None:
        self.fs = fs
        self.exp_path = exp_path
        self.claimed = ""

    def claim(self) -> int:
        version, self.claimed = claim_new(self.fs, self.exp_path)
        return version

    def publish(self, key: str, version: int) -> None:
        _put(self.fs, join(self.exp_path, RANK_CLAIMS, key), str(version).encode())

    def read(self, key: str) -> int | None:
        path = join(self.exp_path, RANK_CLAIMS, key)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return int(f.read())

    def release(self) -> None:
        if self.claimed:
            try:
                self.fs.delete_file(self.claimed)
            except OSError:
                pass  # stale: it only keeps new claimers off a number that is taken anyway
            self.claimed = ""


def _claim_exactly(fs: pafs.FileSystem, folder: str) -> str:
    """Claim this empty folder by the sole-claim rule, or raise ``VersionInUseError``."""
    claim = join(folder, _layout.CLAIMS, _token())
    _put(fs, claim, b"")
    if [f.path for f in _files(fs, folder)] != [claim]:
        fs.delete_file(claim)
        raise VersionInUseError(f"{folder} was claimed by another writer at the same moment; use another version",
                                log_dir=folder)
    return claim


def _set_aside(spool: str, why: str) -> None:
    """Move a spool folder that does not belong to the run being opened out of the way, never deleting it."""
    if not os.path.exists(spool):
        return
    aside = f"{spool}.set-aside-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    os.replace(spool, aside)
    warn_from_caller(UploadWarning(f"test_tube: the spool folder {spool} held files the store does not have "
                                   f"({why}); moved to {aside}, nothing deleted", spool=aside))


def _download(remote: RemoteVersion) -> None:
    """Bring what the store holds of a version into its spool, unless the spool is ahead of the store.

    The spool is ahead when this host wrote the version last and did not finish
    its upload (or was killed): its journal then holds at least the store's
    segments, and the upload stage sends the rest.
    """
    fs, spool = remote.filesystem, remote.spool
    # The read layer's view of the stored version: its files, and its journal segments up to the first gap.
    stored = StoredRun(Location(fs, remote.path, remote.path))
    files = stored.entries()
    chain = stored.segments()
    end = stored.journal_size()
    journal = os.path.join(spool, _layout.JOURNAL)
    local = os.path.getsize(journal) if os.path.exists(journal) else 0
    keep_local = local > 0 and local >= end
    if not keep_local:
        _set_aside(spool, "the store holds more of this version's journal than this host")
        os.makedirs(os.path.join(spool, _layout.MEDIA), exist_ok=True)
        tmp = _layout.temp_path(journal)
        with open(tmp, "wb") as out:
            for _, name, _ in chain:
                with fs.open_input_stream(join(remote.path, name)) as f:
                    shutil.copyfileobj(f, out, 4 * 2**20)
            os.fsync(out.fileno())
        os.replace(tmp, journal)
        for name in (_layout.META, _layout.TAGS):
            if name in files:
                with fs.open_input_stream(join(remote.path, name)) as f:
                    _layout.publish(os.path.join(spool, name), f.read(), fsync=False)
    remote.uploaded_journal = end
    local_media = os.path.join(spool, _layout.MEDIA)
    os.makedirs(local_media, exist_ok=True)
    for name in files:
        folder, _, base = name.partition("/")
        if folder == _layout.MEDIA and base and "/" not in base:
            remote.uploaded_media.add(base)
            target = os.path.join(local_media, base)
            if not os.path.exists(target):
                # Images are downloaded so the version's names stay unique and TensorBoard's sink finds them.
                with fs.open_input_stream(join(remote.path, name)) as f:
                    _layout.publish(target, f.read(), fsync=False)
