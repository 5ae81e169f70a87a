"""Shared pytest fixtures."""

from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The read-only shared datasets folder, ``<repo>/../shared/datasets``; skips the test when it is absent."""
    path = (_REPO / ".." / "shared" / "datasets").resolve()
    if not path.is_dir():
        pytest.skip(f"shared datasets folder not found at {path} (tests on real data are skipped)")
    return path
