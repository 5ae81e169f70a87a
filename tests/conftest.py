"""Shared pytest fixtures."""

from pathlib import Path

import pytest

from idm_imaging.datasets import data_root


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The datasets folder (``IDM_IMAGING_DATA``, see :mod:`idm_imaging.datasets`); skips the test when absent."""
    try:
        return data_root()
    except FileNotFoundError as e:
        pytest.skip(f"tests on real data skipped: {e}")


@pytest.fixture(scope="session")
def ct_dicom(datasets_dir) -> Path:
    """``samples/CT_head_512.dcm`` of the datasets folder; skips the test when absent."""
    path = datasets_dir / "samples" / "CT_head_512.dcm"
    if not path.is_file():
        pytest.skip(f"{path} not found (IDM_IMAGING_DATA names a folder without samples/)")
    return path
