"""Scan I/O: read any supported scan into ``(tensor, meta)`` and write results back atomically.

Data flows one way: scan -> operator -> measurement -> model -> image -> metrics; this package is the
first and the last arrow. See :func:`read_scan` and :func:`write_scan` for the formats and conventions.

Example::

    >>> import os, tempfile, torch
    >>> from idm_imaging.io import read_scan, write_scan
    >>> folder = tempfile.mkdtemp()
    >>> path = write_scan(torch.rand(3, 16, 16), os.path.join(folder, "vol.nii.gz"))
    >>> img, meta = read_scan(path)                      # (D, H, W) float32, meta["affine"] 4x4 RAS
    >>> tuple(img.shape), meta["affine"].shape
    ((3, 16, 16), (4, 4))
    >>> half = write_scan(img * 0.5, os.path.join(folder, "half.nii.gz"), meta)   # same affine and voxel order
"""

from idm_imaging.io._common import ScanReadError, ScanTooLargeError

__all__ = ["read_scan", "write_scan", "atomic_write", "atomic_write_text", "ScanReadError", "ScanTooLargeError"]


def __getattr__(name):
    # lazy: the readers import torch, which the child process that parses HDF5/MATLAB files does not need
    if name == "read_scan":
        from idm_imaging.io.readers import read_scan

        return read_scan
    if name in ("write_scan", "atomic_write", "atomic_write_text"):
        from idm_imaging.io import writers

        return getattr(writers, name)
    raise AttributeError(f"module 'idm_imaging.io' has no attribute {name!r}")
