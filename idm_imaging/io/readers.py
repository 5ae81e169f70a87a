"""Read scans of every supported format into ``(tensor, meta)``.

Conventions (all formats):

* tensor: ``torch.float32`` for real data, ``torch.complex64`` for complex data; shape ``(H, W)`` for a 2-D image
  and ``(D, H, W)`` for a volume (slices first). H indexes rows (top to bottom), W columns.
* ``meta["spacing"]``: voxel size in tensor axis order, ``(dy, dx)`` or ``(dz, dy, dx)`` (mm where known, else 1).
* ``meta["affine"]``: 4x4 float64 mapping the *reversed* tensor index ``(w, h, d, 1)`` to RAS+ world mm, i.e. the
  NIfTI/nibabel/MONAI affine of the array ``tensor.T``. Formats without geometry get ``diag(dx, dy, dz, 1)``.
* 8/16-bit raster images (PNG/TIFF/JPEG) are scaled to [0, 1] (divided by 255 or 65535, ``meta["value_scale"]``,
  which :func:`~idm_imaging.io.write_scan` multiplies back so outputs keep the input's scale); float TIFFs, medical
  formats and arrays keep their stored values (DICOM after rescale slope/intercept).
* Untrusted files: the data a file declares is checked against a size limit before anything is allocated
  (``max_bytes``, default ``$IDM_IMAGING_MAX_SCAN_BYTES`` or 2 GiB); HDF5 and MATLAB files are parsed in a child
  process, so a crafted file that crashes their C readers gives a ScanReadError, not a dead process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from idm_imaging.io._common import (
    ScanReadError, ScanTooLargeError, check_size, detect_format, geometry_affine, max_scan_bytes,
)

__all__ = ["read_scan"]

# LPS (DICOM patient) -> RAS (NIfTI/MONAI world).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_scan(path: os.PathLike | str, *, kspace: bool = False, key: str | None = None,
              max_bytes: int | None = None) -> tuple[torch.Tensor, dict]:
    """Read a scan file (or a DICOM series folder) as a float tensor plus metadata.

    Args:
        path (`str` or `os.PathLike`):
            PNG/TIFF/JPEG, NIfTI (.nii, .nii.gz; 2-D or 3-D), DICOM file or series folder, .npy (real or
            complex), .mat (v5 via scipy, v7.3 via h5py), or fastMRI single-coil .h5. The format comes from the
            suffix, else from the file's first bytes.
        kspace (`bool`, *optional*, defaults to `False`):
            fastMRI .h5 only: whether to also return ``meta["kspace"]`` (complex64 ``(D, H, W)``, or
            ``(D, C, H, W)`` for multi-coil files) and ``meta["mask"]`` (bool, as stored) when the file holds one.
        key (`str`, *optional*):
            .mat / .h5 only: the variable (dataset) to read. `None` takes the largest numeric array for .mat;
            ``reconstruction_esc``, then ``reconstruction_rss``, then ``reconstruction`` for .h5 (a file with only
            k-space gives its zero-filled complex image, orthonormal centred inverse FFT).
        max_bytes (`int`, *optional*):
            Refuse a file whose image (or any array read) declares more bytes than this, before reading it.
            `None` takes ``$IDM_IMAGING_MAX_SCAN_BYTES`` (a number of bytes, or 500M, 8G ...), else 2 GiB.

    Returns:
        `tuple[torch.Tensor, dict]`: ``(tensor, meta)``; tensor float32 or complex64, ``(H, W)`` or
        ``(D, H, W)``; meta a dict with at least ``path``, ``format``
        (png/tiff/jpeg/nifti/dicom/dicom-series/npy/mat/fastmri-h5), ``affine`` (4x4 float64, RAS), ``spacing``
        (tuple, tensor axis order), ``is_complex`` and ``dtype`` (the stored dtype); plus ``value_scale``
        (raster), ``files`` (DICOM series, sorted), ``key`` (.mat), ``image_key``/``attrs`` (.h5), ``datasets``
        (.h5: name -> shape of every root dataset), ``kspace``/``mask`` (.h5 with ``kspace=True``).

    Raises:
        ScanReadError: missing, unreadable, truncated, crafted or unknown-format file, or an array that is not
            2-D/3-D. ScanTooLargeError (a ScanReadError): the file declares more data than ``max_bytes``.
        ValueError: the data holds NaN or Inf (message names the file).

    Example::

        >>> from idm_imaging import data_root
        >>> img, meta = read_scan(data_root() / "samples/CT_head_512.dcm")  # doctest: +SKIP
        >>> img.shape, meta["spacing"]  # doctest: +SKIP
        (torch.Size([512, 512]), (0.478516, 0.478516))
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not isinstance(kspace, bool):
        raise TypeError(f"kspace must be a bool, got {type(kspace).__name__}")
    if key is not None and not isinstance(key, str):
        raise TypeError(f"key must be a str or None, got {type(key).__name__}")
    path = Path(path).expanduser()
    limit = max_scan_bytes(max_bytes)
    fmt = detect_format(path)
    if key is not None and fmt not in ("mat", "fastmri-h5"):
        raise ValueError(f"key={key!r} only applies to .mat and .h5 files, not {fmt} file {str(path)!r}")
    reader = _READERS[fmt]
    try:
        arr, meta = reader(path, kspace=kspace, key=key, limit=limit)
    except (ScanReadError, KeyboardInterrupt):
        raise
    except MemoryError:
        raise ScanTooLargeError(f"scan {str(path)!r}: not enough memory to read it") from None
    except Exception as err:  # third-party readers raise many types for truncated / corrupt files
        raise ScanReadError(f"cannot read {fmt} scan {str(path)!r}: {type(err).__name__}: {err}") from err

    if arr.ndim not in (2, 3):
        raise ScanReadError(f"scan {str(path)!r} holds an array of shape {arr.shape}; expected (H, W) or (D, H, W)")
    _check_finite(arr, path, "image")
    stored_dtype = str(arr.dtype)
    is_complex = np.iscomplexobj(arr)
    with np.errstate(over="ignore"):  # overflow to Inf is reported just below
        arr = arr.astype(np.complex64 if is_complex else np.float32, copy=False)
    _check_finite(arr, path, "image (after conversion to 32-bit)")
    spacing = tuple(float(s) for s in meta.pop("spacing", (1.0,) * arr.ndim))
    affine = meta.pop("affine", None)
    out = {
        "path": str(path),
        "format": fmt,
        "affine": geometry_affine(spacing) if affine is None else np.asarray(affine, dtype=np.float64),
        "spacing": spacing,
        "is_complex": bool(is_complex),
        "dtype": stored_dtype,
    }
    out.update(meta)
    if "kspace" in out:
        ks = np.asarray(out["kspace"])
        _check_finite(ks, path, "kspace")
        out["kspace"] = torch.from_numpy(np.ascontiguousarray(ks.astype(np.complex64, copy=False)))
    if "mask" in out:
        out["mask"] = torch.from_numpy(np.ascontiguousarray(np.asarray(out["mask"]) != 0))
    return torch.from_numpy(np.ascontiguousarray(arr)), out


def _check_finite(arr: np.ndarray, path: Path, what: str) -> None:
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        raise ValueError(f"scan {str(path)!r}: {what} contains NaN or Inf values")


# --- raster images -------------------------------------------------------------------------------------------

def _luminance_array(img) -> tuple[np.ndarray, float]:
    """One PIL frame -> 2-D array and the divisor that maps it to [0, 1] (1 for float images)."""
    if img.mode == "F":
        return np.asarray(img), 1.0
    if img.mode.startswith("I"):  # 16-bit PNG/TIFF open as I;16* or I
        return np.asarray(img), 65535.0
    if img.mode == "1":
        return np.asarray(img), 1.0
    if img.mode != "L":
        # RGB(A), palette, LA, CMYK, YCbCr -> ITU-R BT.601 luma (Pillow's "L": 0.299 R + 0.587 G + 0.114 B).
        img = img.convert("L")
    return np.asarray(img), 255.0


def _read_raster(path: Path, *, limit: int, **_: Any) -> tuple[np.ndarray, dict]:
    from monai.data import PILReader
    from PIL import ImageSequence

    # reverse_indexing=False keeps (rows, cols) = (H, W); the default gives MONAI's (W, H).
    reader = PILReader(reverse_indexing=False)
    img = reader.read(str(path))  # lazy: only the header is parsed here
    try:
        frames = getattr(img, "n_frames", 1)
        check_size(path, (frames, img.size[1], img.size[0]), 8, limit, "image")  # decoded as float64
        frames = [f.copy() for f in ImageSequence.Iterator(img)] if frames > 1 else [img]
        planes, scales = zip(*(_luminance_array(f) for f in frames))
    finally:
        img.close()
    if len(set(p.shape for p in planes)) != 1:
        raise ScanReadError(f"multi-page image {str(path)!r} has pages of different sizes")
    scale = scales[0]
    arr = np.stack(planes) if len(planes) > 1 else planes[0]
    meta = {"value_scale": scale, "dtype": str(arr.dtype)}
    return (arr / scale if scale != 1.0 else arr.astype(np.float64)), meta


# --- NIfTI ---------------------------------------------------------------------------------------------------

def _read_nifti(path: Path, *, limit: int, **_: Any) -> tuple[np.ndarray, dict]:
    # nibabel directly: MONAI's NibabelReader casts via get_fdata (no complex) and returns (X, Y, Z) order.
    import nibabel as nib

    img = nib.load(str(path))  # header only; the data is read below
    stored = np.dtype(img.header.get_data_dtype())
    scaled = img.header.get_slope_inter()[0] not in (None, 1.0) or img.header.get_slope_inter()[1] not in (None, 0.0)
    check_size(path, img.shape, max(stored.itemsize, 8 if scaled else 4), limit, "image")
    data = np.asanyarray(img.dataobj)  # applies scl_slope/scl_inter
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise ScanReadError(f"NIfTI file {str(path)!r} has shape {data.shape}; expected a 2-D image or 3-D volume")
    zooms = img.header.get_zooms()[: data.ndim]
    # NIfTI (i, j, k) = (x, y, z) -> tensor (k, j, i) = (D, H, W); the affine stays that of the stored array.
    arr = np.ascontiguousarray(data.T)
    # the qform / sform codes say what the affine means (1 scanner, 2 aligned, ...): kept so a written result says the same
    codes = {"qform_code": int(img.header["qform_code"]), "sform_code": int(img.header["sform_code"])}
    return arr, {"affine": np.asarray(img.affine, dtype=np.float64), "spacing": tuple(reversed(zooms)), **codes}


# --- DICOM ---------------------------------------------------------------------------------------------------

def _dicom_pixels(ds, path: Path, limit: int) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    shape = (int(getattr(ds, "NumberOfFrames", 1) or 1), int(getattr(ds, "Rows", 0) or 0),
             int(getattr(ds, "Columns", 0) or 0), int(getattr(ds, "SamplesPerPixel", 1) or 1))
    check_size(path, shape, 8, limit, "pixel data")  # decoded as float64
    arr = ds.pixel_array
    if int(getattr(ds, "SamplesPerPixel", 1)) == 3:  # colour -> BT.601 luma
        arr = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    arr = apply_modality_lut(arr, ds)  # RescaleSlope / RescaleIntercept (or a modality LUT)
    return np.asarray(arr, dtype=np.float64)


def _dicom_plane(ds, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """Row cosine, column cosine, position (LPS) and (row spacing, column spacing) of one DICOM image.

    Raises ScanReadError naming the file when the geometry is unusable (it would give a singular affine).
    """
    try:
        iop = np.array([float(v) for v in getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])])
        ipp = np.array([float(v) for v in getattr(ds, "ImagePositionPatient", [0, 0, 0])])
        ps = [float(v) for v in (getattr(ds, "PixelSpacing", None) or [1.0, 1.0])]
    except (TypeError, ValueError) as exc:
        raise ScanReadError(f"DICOM file {str(path)!r}: unreadable geometry tags ({exc})") from None
    if iop.shape != (6,) or ipp.shape != (3,) or len(ps) != 2 or not np.isfinite([*iop, *ipp, *ps]).all():
        raise ScanReadError(f"DICOM file {str(path)!r}: ImageOrientationPatient / ImagePositionPatient / "
                            "PixelSpacing have the wrong number of values or are not finite")
    row, col = iop[:3], iop[3:]
    if (abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2
            or abs(float(row @ col)) > 1e-2):
        raise ScanReadError(f"DICOM file {str(path)!r}: ImageOrientationPatient {iop.tolist()} is not two "
                            "orthogonal unit vectors")
    if not (ps[0] > 0 and ps[1] > 0):
        raise ScanReadError(f"DICOM file {str(path)!r}: PixelSpacing {ps} must be > 0")
    return row, col, ipp, (ps[0], ps[1])


def _dicom_affine(row_cos, col_cos, ipp, pixel_spacing, slice_step) -> np.ndarray:
    """RAS affine of the index (w=column, h=row, d=slice); ``slice_step`` is the LPS vector between slices."""
    lps = np.eye(4)
    lps[:3, 0] = row_cos * pixel_spacing[1]  # along a row = increasing column index
    lps[:3, 1] = col_cos * pixel_spacing[0]
    lps[:3, 2] = slice_step
    lps[:3, 3] = ipp
    return _LPS_TO_RAS @ lps


def _dicom_meta(ds) -> dict:
    return {k.lower(): str(getattr(ds, k)) for k in ("Modality", "SeriesInstanceUID") if k in ds}


def _slice_gap(ds) -> float:
    dz = abs(float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 1.0))
    return dz if dz > 0 and np.isfinite(dz) else 1.0


def _read_dicom(path: Path, *, limit: int, **_: Any) -> tuple[np.ndarray, dict]:
    import pydicom

    ds = pydicom.dcmread(str(path))
    row_cos, col_cos, ipp, ps = _dicom_plane(ds, path)
    arr = _dicom_pixels(ds, path, limit)
    normal = np.cross(row_cos, col_cos)
    dz = _slice_gap(ds)
    meta = _dicom_meta(ds)
    meta["dtype"] = str(ds.pixel_array.dtype)
    meta["affine"] = _dicom_affine(row_cos, col_cos, ipp, ps, normal * dz)
    meta["spacing"] = (dz, *ps) if arr.ndim == 3 else ps  # multi-frame file: (frames, rows, cols)
    return arr, meta


def _read_dicom_series(path: Path, *, limit: int, **_: Any) -> tuple[np.ndarray, dict]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    slices = []
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            slices.append((f, pydicom.dcmread(str(f))))
        except InvalidDicomError:
            continue  # not DICOM (README, DICOMDIR-less junk): skip
    if not slices:
        raise ScanReadError(f"DICOM series folder {str(path)!r} holds no DICOM files")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise ScanReadError(f"folder {str(path)!r} mixes {len(series)} DICOM series; give one series per folder")

    planes_geo = [_dicom_plane(ds, f) for f, ds in slices]
    row_cos, col_cos, _, ps = planes_geo[0]
    normal = np.cross(row_cos, col_cos)
    check_size(path, (len(slices), int(getattr(slices[0][1], "Rows", 0) or 0),
                      int(getattr(slices[0][1], "Columns", 0) or 0)), 8, limit, "series")
    if all("ImagePositionPatient" in ds for _, ds in slices):
        order_key = [float(np.dot(g[2], normal)) for g in planes_geo]
    elif all("InstanceNumber" in ds for _, ds in slices):
        order_key = [float(ds.InstanceNumber) for _, ds in slices]
    else:
        order_key = list(range(len(slices)))
    order = np.argsort(order_key, kind="stable")
    slices = [slices[i] for i in order]
    planes_geo = [planes_geo[i] for i in order]

    planes = [_dicom_pixels(ds, f, limit) for f, ds in slices]
    if len({p.shape for p in planes}) != 1 or planes[0].ndim != 2:
        raise ScanReadError(f"DICOM series {str(path)!r}: slices are not all 2-D images of one size")
    arr = np.stack(planes)

    positions = np.array([g[2] for g in planes_geo])
    if len(slices) > 1 and all("ImagePositionPatient" in ds for _, ds in slices):
        dist = positions @ normal
        gaps = np.diff(dist)
        if np.any(np.abs(gaps) < 1e-6):
            raise ScanReadError(f"DICOM series {str(path)!r} has two slices at the same position")
        step = (positions[-1] - positions[0]) / (len(slices) - 1)  # keeps gantry tilt
        dz = float(np.linalg.norm(step))
    else:
        dz = _slice_gap(slices[0][1])
        step = normal * dz
    meta = _dicom_meta(slices[0][1])
    meta["dtype"] = str(slices[0][1].pixel_array.dtype)
    meta["affine"] = _dicom_affine(row_cos, col_cos, positions[0], ps, step)
    meta["spacing"] = (dz, *ps)
    meta["files"] = [str(f) for f, _ in slices]
    return arr, meta


# --- arrays --------------------------------------------------------------------------------------------------

def _numeric(arr: np.ndarray) -> bool:
    return isinstance(arr, np.ndarray) and arr.dtype.kind in "biufc" and arr.size > 0


def _read_npy(path: Path, *, limit: int, **_: Any) -> tuple[np.ndarray, dict]:
    fmt = np.lib.format
    with open(path, "rb") as f:  # the header first: a 100-byte file may declare terabytes
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = read_header(f)
        data_start = f.tell()
    if dtype.hasobject:
        raise ScanReadError(f".npy file {str(path)!r} holds Python objects, which are never unpickled")
    n = check_size(path, shape, dtype.itemsize, limit, "array")
    have = path.stat().st_size - data_start
    if have < n:
        raise ScanReadError(f".npy file {str(path)!r} is truncated: its header declares {n} bytes of data, "
                            f"the file holds {have}")
    arr = np.load(str(path), allow_pickle=False)
    if not _numeric(arr):
        raise ScanReadError(f".npy file {str(path)!r} holds a non-numeric or empty array (dtype {arr.dtype})")
    return arr, {}


def _matlab_layout(arr: np.ndarray) -> np.ndarray:
    """MATLAB (rows, cols, slices) -> (slices, rows, cols)."""
    return np.moveaxis(arr, -1, 0) if arr.ndim == 3 else arr


def _read_mat(path: Path, *, key: str | None = None, limit: int, **_: Any) -> tuple[np.ndarray, dict]:
    from idm_imaging.io._containers import read_container

    arrays, meta = read_container("mat", path, kspace=False, key=key, limit=limit)
    return _matlab_layout(arrays["image"]), meta


# --- fastMRI -------------------------------------------------------------------------------------------------

def _read_fastmri(path: Path, *, kspace: bool = False, key: str | None = None, limit: int
                  ) -> tuple[np.ndarray, dict]:
    from idm_imaging.io._containers import read_container

    arrays, meta = read_container("fastmri-h5", path, kspace=kspace, key=key, limit=limit)
    ksp = arrays.get("kspace")
    if meta["image_key"] is not None:
        arr = arrays["image"]
    else:
        check_size(path, ksp.shape, 8, limit, "zero-filled image")
        arr = _zero_filled(ksp)
        meta["image_key"] = "zero-filled(kspace)"
    if kspace:
        meta["kspace"] = ksp
        if "mask" in arrays:
            meta["mask"] = arrays["mask"]
    return arr, meta


def _zero_filled(ksp: np.ndarray) -> np.ndarray:
    """Orthonormal centred 2-D inverse FFT over the last two axes; multi-coil (D, C, H, W) -> RSS magnitude."""
    from monai.data.fft_utils import ifftn_centered

    k = torch.view_as_real(torch.from_numpy(np.ascontiguousarray(ksp.astype(np.complex64))))
    img = torch.view_as_complex(ifftn_centered(k, spatial_dims=2, is_complex=True).contiguous()).numpy()
    if img.ndim == 4:
        img = np.sqrt((np.abs(img) ** 2).sum(axis=1))
    return img


_READERS = {
    "png": _read_raster,
    "tiff": _read_raster,
    "jpeg": _read_raster,
    "nifti": _read_nifti,
    "dicom": _read_dicom,
    "dicom-series": _read_dicom_series,
    "npy": _read_npy,
    "mat": _read_mat,
    "fastmri-h5": _read_fastmri,
}
