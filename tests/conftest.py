"""Shared pytest options: ``--full`` runs the fault suite's long variants (also ``TT_FULL=1``)."""

from __future__ import annotations

import os

import pytest


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
