"""A real S3 server on 127.0.0.1 for the object-storage tests: moto's, in its own environment.

``S3Server.start()`` creates ``.venv-s3`` from ``tests/s3-server-requirements.txt``
the first time (moto pins botocore, so it lives apart from the project's
environment), starts ``moto_server`` on a free port and waits until it answers.
Faults are real: ``pause()`` stops the process (connections hang, as a store
that stopped answering does), ``resume()`` lets it go on with its objects kept,
``kill()`` takes it away for good.

Where the server cannot be installed or started, :func:`start_or_skip` skips
with the reason; nowhere else does a test skip.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.fs as pafs

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-s3"
REQUIREMENTS = ROOT / "tests" / "s3-server-requirements.txt"
KEY = "testing"
SECRET = "testing"
REGION = "us-east-1"


class S3Unavailable(RuntimeError):
    """The server could not be installed or started here (the message says why)."""


def _install() -> Path:
    server = VENV / "bin" / "moto_server"
    if server.exists():
        return server
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=120)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "-r", str(REQUIREMENTS)],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        raise S3Unavailable(f"could not install moto's S3 server into {VENV}: {exc} {detail[-500:]}") from exc
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """One moto server process; its endpoint is ``127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.bucket_name = ""
        self._log = open(os.devnull, "wb")  # noqa: SIM115 - kept open for the process's lifetime

    def start(self, timeout: float = 60.0) -> S3Server:
        server = _install()
        self.proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise S3Unavailable(f"moto_server exited with {self.proc.returncode} before answering")
            try:
                urllib.request.urlopen(f"http://{self.endpoint}/", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise S3Unavailable(f"moto_server did not answer on {self.endpoint} within {timeout:.0f} s")

    # -- what tests use -----------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Credentials for child processes (moto accepts any; pyarrow wants some)."""
        return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION}

    def query(self) -> str:
        return f"endpoint_override={self.endpoint}&scheme=http&region={REGION}"

    def uri(self, bucket: str, prefix: str = "") -> str:
        """``s3://KEY:SECRET@bucket/prefix?endpoint_override=...``: everything pyarrow needs in one string."""
        path = f"{bucket}/{prefix}".rstrip("/")
        return f"s3://{KEY}:{SECRET}@{path}?{self.query()}"

    def filesystem(self, **options: object) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(
            access_key=KEY,
            secret_key=SECRET,
            region=REGION,
            endpoint_override=self.endpoint,
            scheme="http",
            allow_bucket_creation=True,
            **options,  # type: ignore[arg-type]
        )

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (S3 names: lowercase, digits, dashes) and return it."""
        self.filesystem().create_dir(name)
        return name

    def pause(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def start_or_skip() -> S3Server:
    import pytest

    try:
        return S3Server().start()
    except S3Unavailable as exc:
        pytest.skip(f"no S3 server: {exc}")
