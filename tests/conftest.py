"""Shared pytest options: ``--full`` runs the fault suite's long variants (also ``TT_FULL=1``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from s3lib import S3Server, start_or_skip


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="run the full fault counts: 200 kills, 200 forks, a 10-minute soak (same as TT_FULL=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--full"):
        os.environ["TT_FULL"] = "1"


@pytest.fixture
def full(request: pytest.FixtureRequest) -> bool:
    """True when the long variants were asked for with ``--full`` or ``TT_FULL=1``."""
    return bool(request.config.getoption("--full")) or os.environ.get("TT_FULL") == "1"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1 for the whole session (installed on first use)."""
    server = start_or_skip()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def s3(s3_server: S3Server, request: pytest.FixtureRequest) -> S3Server:
    """The session's server, running, with a fresh bucket ``s3.bucket_name`` for this test."""
    s3_server.resume()
    name = "tt-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    s3_server.bucket_name = s3_server.bucket(f"{name}-{uuid.uuid4().hex[:8]}")
    return s3_server
