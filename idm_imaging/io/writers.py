"""Write a result tensor to disk, format from the suffix, atomically (temp file in the same folder + os.replace)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from idm_imaging.io._common import full_suffix, geometry_affine

__all__ = ["write_scan"]

_WRITE_SUFFIXES = (".png", ".tif", ".tiff", ".nii", ".nii.gz", ".npy", ".mat")


def write_scan(tensor: torch.Tensor | np.ndarray, path: os.PathLike | str, meta: Mapping | None = None, *,
               overwrite: bool = True) -> Path:
    """Write an ``(H, W)`` image or ``(D, H, W)`` volume; the format comes from the suffix of ``path``.

    ``meta["value_scale"]`` (set by :func:`read_scan` for 8/16-bit raster input, whose values it divided by 255 or
    65535) is multiplied back, so a result keeps its input's scale in every format: a 16-bit TIFF read as
    [0, 1] is written as 0..65535 floats, or as a 16-bit PNG.

    * ``.png``: grayscale, ``round(255 * clip(x, 0, 1))`` (2-D only); 16-bit when ``meta["value_scale"]`` is
      65535, then ``round(65535 * clip(x, 0, 1))``.
    * ``.tif`` / ``.tiff``: float32, one page per slice.
    * ``.nii`` / ``.nii.gz``: float32 NIfTI of ``tensor.T`` (the inverse of :func:`read_scan`), affine from
      ``meta["affine"]``, else ``diag`` of ``meta["spacing"]`` (tensor axis order), else identity; so a volume read
      from NIfTI and written back keeps its affine and voxel order.
    * ``.npy``: the array as is (dtype kept, complex kept).
    * ``.mat``: MATLAB v5 variable ``meta.get("key", "img")``; volumes stored as MATLAB (rows, cols, slices).

    Complex data is written as its magnitude except to .npy and .mat, which keep it. DICOM is not written (write
    NIfTI instead). The file appears complete or not at all (:func:`atomic_write`); with ``overwrite=False`` an
    existing ``path`` is never replaced (FileExistsError).

    Args:
        tensor (`torch.Tensor` or `np.ndarray`):
            Real or complex ``(H, W)`` image or ``(D, H, W)`` volume, finite.
        path (`str` or `os.PathLike`):
            Destination file; its folder must exist.
        meta (`Mapping`, *optional*):
            Metadata (e.g. the dict from :func:`read_scan`); read: ``affine``, ``spacing``, ``key``,
            ``value_scale``.
        overwrite (`bool`, *optional*, defaults to `True`):
            Whether to replace an existing file; `False` raises FileExistsError instead.

    Returns:
        `Path`: the written path.

    Example::

        >>> import os, tempfile, torch
        >>> from idm_imaging.io import read_scan
        >>> folder = tempfile.mkdtemp()
        >>> img, meta = read_scan(write_scan(torch.randn(3, 16, 16), os.path.join(folder, "t1.nii.gz")))
        >>> write_scan(img.clamp(min=0), os.path.join(folder, "t1_clamped.nii.gz"), meta).name
        't1_clamped.nii.gz'
    """
    arr = _as_array(tensor)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if meta is not None and not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping or None, got {type(meta).__name__}")
    meta = dict(meta or {})
    path = Path(path).expanduser()
    suffix = full_suffix(path)
    writer = _WRITERS.get(suffix)
    if writer is None:
        raise ValueError(
            f"cannot write {str(path)!r}: unsupported suffix {suffix!r}; use one of {', '.join(_WRITE_SUFFIXES)}"
        )
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: it is a folder")
    scale = meta.get("value_scale", 1.0)
    if not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
        raise ValueError(f"meta['value_scale'] must be a positive number, got {scale!r}")
    if suffix != ".png" and scale != 1.0:
        arr = arr * scale  # back to the input's units (PNG takes [0, 1] and its bit depth instead)
    atomic_write(path, lambda tmp: writer(arr, tmp, meta, path), suffix, overwrite=overwrite)
    return path


def _as_array(tensor: Any) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        arr = tensor.detach().cpu().numpy()
    elif isinstance(tensor, np.ndarray):
        arr = tensor
    else:
        raise TypeError(f"tensor must be a torch.Tensor or numpy.ndarray, got {type(tensor).__name__}")
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"tensor must be numeric, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"tensor must have shape (H, W) or (D, H, W), got {tuple(arr.shape)}")
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        raise ValueError("tensor contains NaN or Inf values; refusing to write it")
    return arr


def atomic_write(path: os.PathLike | str, write: Callable[[str], None], suffix: str = "", *,
                 overwrite: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, fsync it, then rename it to ``path``.

    Nothing half-written is ever left at ``path``: on any failure (or KeyboardInterrupt / SIGTERM turned into
    an exception) the temporary file is removed and an existing ``path`` is untouched; after the rename the
    folder is fsynced too, so the file survives a power cut. The temporary name ``.NAME.PID.XXXX.tmpSUFFIX``
    carries the writer's process id: temporaries left by a killed writer (SIGKILL) are removed by the next
    write to ``path``. ``suffix`` is kept at the end of the temporary name (nibabel picks gzip from it).
    ``overwrite=False``: raise FileExistsError rather than replace an existing ``path`` (checked atomically).
    """
    path = Path(path)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: no check-then-replace race
            os.unlink(tmp)
        _fsync_folder(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.NAME.PID.*.tmp*`` beside ``path`` whose writer process no longer exists."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        m = pattern.match(name)
        if m and not _alive(int(m.group(1))):
            try:
                os.unlink(path.parent / name)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or unknown: keep its file
    return True


def atomic_write_text(path: os.PathLike | str, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite)


def _real(arr: np.ndarray) -> np.ndarray:
    return np.abs(arr) if np.iscomplexobj(arr) else arr


def _write_png(arr: np.ndarray, tmp: str, meta: dict, path: Path) -> None:
    from PIL import Image

    if arr.ndim != 2:
        raise ValueError(f"cannot write {str(path)!r}: PNG holds one (H, W) image, got {arr.shape}; use .tif/.nii/.npy")
    unit = np.clip(_real(arr).astype(np.float64), 0.0, 1.0)
    if meta.get("value_scale") == 65535.0:
        Image.fromarray(np.rint(unit * 65535.0).astype(np.uint16)).save(tmp, format="PNG")  # 16-bit grayscale
    else:
        Image.fromarray(np.rint(unit * 255.0).astype(np.uint8), mode="L").save(tmp, format="PNG")


def _write_tiff(arr: np.ndarray, tmp: str, meta: dict, path: Path) -> None:
    from PIL import Image

    planes = _real(arr).astype(np.float32)
    pages = [Image.fromarray(p, mode="F") for p in (planes if planes.ndim == 3 else [planes])]
    pages[0].save(tmp, format="TIFF", save_all=len(pages) > 1, append_images=pages[1:])


def _write_nifti(arr: np.ndarray, tmp: str, meta: dict, path: Path) -> None:
    import nibabel as nib

    if meta.get("affine") is not None:
        affine = np.asarray(meta["affine"], dtype=np.float64)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise ValueError(f"meta['affine'] must be a finite 4x4 matrix, got shape {affine.shape}")
    else:
        affine = geometry_affine(tuple(meta.get("spacing", (1.0,) * arr.ndim))[-arr.ndim:])
    data = np.ascontiguousarray(_real(arr).astype(np.float32).T)  # tensor (D, H, W) -> NIfTI (x, y, z)
    img = nib.Nifti1Image(data, affine)
    # the input's qform / sform codes (a NIfTI scan's own; 1 = scanner coordinates for DICOM and other inputs)
    img.set_qform(affine, code=int(meta.get("qform_code", 1)))
    img.set_sform(affine, code=int(meta.get("sform_code", 1)))
    img.header.set_xyzt_units("mm")
    nib.save(img, tmp)


def _write_npy(arr: np.ndarray, tmp: str, meta: dict, path: Path) -> None:
    with open(tmp, "wb") as f:  # a file object: np.save(path) would append ".npy" to the temp name
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)


def _write_mat(arr: np.ndarray, tmp: str, meta: dict, path: Path) -> None:
    import scipy.io

    key = meta.get("key", "img")
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", key):
        raise ValueError(f"meta['key'] must be a MATLAB variable name, got {key!r}")
    data = np.moveaxis(arr, 0, -1) if arr.ndim == 3 else arr  # (D, H, W) -> MATLAB (rows, cols, slices)
    with open(tmp, "wb") as f:
        scipy.io.savemat(f, {key: np.ascontiguousarray(data)}, do_compression=True)


_WRITERS = {
    ".png": _write_png,
    ".tif": _write_tiff,
    ".tiff": _write_tiff,
    ".nii": _write_nifti,
    ".nii.gz": _write_nifti,
    ".npy": _write_npy,
    ".mat": _write_mat,
}
