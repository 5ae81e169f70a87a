"""Shared pieces of the scan I/O: the error type, format detection and array checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["ScanReadError", "detect_format", "full_suffix", "geometry_affine", "SUFFIX_FORMATS"]


class ScanReadError(ValueError):
    """A scan file is missing, unreadable, truncated or of an unknown format; the message names the file."""


# Suffix -> format name used in ``meta["format"]``.
SUFFIX_FORMATS = {
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".ima": "dicom",
    ".npy": "npy",
    ".mat": "mat",
    ".h5": "fastmri-h5",
    ".hdf5": "fastmri-h5",
}


def full_suffix(path: os.PathLike | str) -> str:
    """Lower-case suffix, treating ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def _sniff(path: Path) -> str | None:
    """Format from the first bytes (files without a known suffix)."""
    with open(path, "rb") as f:
        head = f.read(352)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"MATLAB"):
        return "mat"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "fastmri-h5"
    if head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    return None


def detect_format(path: Path) -> str:
    """Format name of ``path`` (a folder is a DICOM series); raises ScanReadError when unknown or missing."""
    if not path.exists():
        raise ScanReadError(f"scan file {str(path)!r} does not exist")
    if path.is_dir():
        return "dicom-series"
    fmt = SUFFIX_FORMATS.get(full_suffix(path))
    if fmt is not None:
        return fmt
    try:
        fmt = _sniff(path)
    except OSError as err:
        raise ScanReadError(f"cannot read scan file {str(path)!r}: {err}") from err
    if fmt is None:
        raise ScanReadError(
            f"unknown scan format for {str(path)!r} (suffix {full_suffix(path)!r}); "
            f"supported suffixes: {', '.join(sorted(SUFFIX_FORMATS))} or a DICOM series folder"
        )
    return fmt


def geometry_affine(spacing: tuple[float, ...]) -> np.ndarray:
    """4x4 affine ``diag(dx, dy, dz, 1)`` for ``spacing`` given in tensor axis order ((D,) H, W)."""
    xyz = list(reversed([float(s) for s in spacing])) + [1.0] * (3 - len(spacing))
    return np.diag(xyz + [1.0]).astype(np.float64)
