"""Shared pieces of the scan I/O: the error type, format detection and array checks."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

__all__ = [
    "ScanReadError", "ScanTooLargeError", "detect_format", "full_suffix", "geometry_affine", "SUFFIX_FORMATS",
    "MAX_BYTES_ENV", "max_scan_bytes", "check_size", "format_bytes",
]


class ScanReadError(ValueError):
    """A scan file is missing, unreadable, truncated or of an unknown format; the message names the file."""


class ScanTooLargeError(ScanReadError):
    """A scan declares more data than the size limit (checked before anything is allocated)."""


#: Environment variable overriding the default limit on the data one scan may declare (bytes; K/M/G/T suffixes).
MAX_BYTES_ENV = "IDM_IMAGING_MAX_SCAN_BYTES"
DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB: a 512 x 512 x 2048 float32 volume; real scans are far smaller


def parse_bytes(text: str) -> int:
    """``"8G"`` -> 8 GiB; plain numbers are bytes. Raises ValueError."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m:
        raise ValueError(f"expected a size such as 500M or 8G, got {text!r}")
    value = float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " ")
    if value < 1:
        raise ValueError(f"expected a size >= 1 byte, got {text!r}")
    return int(value)


def max_scan_bytes(override: int | None = None) -> int:
    """The size limit in bytes: ``override``, else ``$IDM_IMAGING_MAX_SCAN_BYTES``, else 2 GiB."""
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override < 1:
            raise ValueError(f"max_bytes: expected an int >= 1, got {override!r}")
        return override
    env = os.environ.get(MAX_BYTES_ENV)
    if env:
        try:
            return parse_bytes(env)
        except ValueError as exc:
            raise ValueError(f"${MAX_BYTES_ENV}: {exc}") from None
    return DEFAULT_MAX_BYTES


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def check_size(path: os.PathLike | str, shape, itemsize: int, limit: int, what: str = "data") -> int:
    """Raise ScanTooLargeError when ``prod(shape) * itemsize`` exceeds ``limit``; return the byte count.

    Called on the sizes a file *declares*, before reading, so a crafted header cannot make us allocate.
    """
    n = int(itemsize)
    for s in shape:
        n *= int(s)
    if n > limit:
        raise ScanTooLargeError(
            f"scan {str(path)!r}: {what} of shape {tuple(int(s) for s in shape)} declares {format_bytes(n)}, "
            f"above the {format_bytes(limit)} limit; if the file is genuine, raise the limit with "
            f"{MAX_BYTES_ENV}=SIZE (e.g. 8G) or read_scan(..., max_bytes=...)"
        )
    return n


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
    if not path.is_file():  # a FIFO or device would block or never end
        raise ScanReadError(f"scan {str(path)!r} is not a regular file (a pipe, socket or device); give a file")
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
