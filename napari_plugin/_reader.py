"""napari reader for the scan formats napari does not open itself: NIfTI, DICOM files and series folders, .npy
(real or complex) and fastMRI .h5, all through :func:`idm_imaging.io.read_scan`.

Layers get ``scale`` = the voxel spacing (tensor axis order) and keep the scan's metadata (affine, format, path)
in ``layer.metadata["scan"]`` so results can be written back with the same geometry. napari cannot display
complex arrays: complex data becomes a magnitude layer whose ``metadata["idm_complex"]`` holds the complex64
array, which the reconstruction widget uses. fastMRI files that hold k-space also give a k-space layer
(``log(1 + |k|)`` for display, complex k-space in metadata) and, when stored, a sampling-mask layer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["napari_get_reader", "read_layers", "SUFFIXES"]

SUFFIXES = (".nii", ".nii.gz", ".dcm", ".ima", ".npy", ".h5")


def _is_dicom_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    files = [p for p in path.iterdir() if p.is_file()]
    return any(p.suffix.lower() in (".dcm", ".ima") for p in files) or (
        bool(files) and all(p.suffix == "" for p in files[:20])
        and any(_has_dicm(p) for p in files[:5]))


def _has_dicm(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def napari_get_reader(path):
    """npe2 reader hook: return :func:`read_layers` when ``path`` is a scan this plugin reads, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(os.fspath(path))
    name = p.name.lower()
    if _is_dicom_folder(p) or (p.is_file() and any(name.endswith(s) for s in SUFFIXES)):
        return read_layers
    return None


def _clean_meta(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in ("kspace", "mask")}


def read_layers(path) -> list[tuple]:
    """Read one scan into napari layer-data tuples ``(data, kwargs, "image" | "labels")``."""
    from idm_imaging.io import read_scan

    if isinstance(path, (list, tuple)):
        path = path[0]
    p = Path(os.fspath(path))
    tensor, meta = read_scan(p)  # crafted files raise ScanReadError (HDF5/MATLAB are parsed in a child process)
    if "kspace" in meta.get("datasets", {}):
        tensor, meta = read_scan(p, kspace=True)
    data = tensor.numpy()
    spacing = tuple(float(s) for s in meta.get("spacing", (1.0,) * data.ndim))
    base = p.name
    for suffix in (".nii.gz",) + SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    layer_meta = {"scan": _clean_meta(meta)}
    if np.iscomplexobj(data):
        layer_meta["idm_complex"] = data.astype(np.complex64)
        data = np.abs(data)
    layers = [(data.astype(np.float32), {"name": base, "scale": spacing, "metadata": layer_meta,
                                          "colormap": "gray"}, "image")]
    if meta.get("format") in ("nifti", "dicom", "dicom-series"):  # anatomical geometry: show it as DICOM viewers do
        from napari_plugin._engine import display_affine

        layers[0][1]["affine"] = display_affine(meta["affine"], data.shape, spacing)
    k = meta.get("kspace")
    if k is not None:
        k = np.asarray(k)
        if k.ndim == data.ndim and k.shape[-2:] == data.shape[-2:]:  # single-coil, same grid as the image
            layers.append((np.log1p(np.abs(k)).astype(np.float32),
                           {"name": f"{base} k-space", "scale": spacing, "visible": False,
                            "metadata": {"scan": _clean_meta(meta), "idm_complex": k.astype(np.complex64),
                                         "idm_kind": "kspace"}}, "image"))
            mask = meta.get("mask")
            if mask is not None:
                mask = np.broadcast_to(np.asarray(mask).astype(bool).reshape(-1)[None, :]
                                       if np.asarray(mask).ndim == 1 else np.asarray(mask, bool),
                                       k.shape[-2:]).astype(np.uint8)
                layers.append((mask, {"name": f"{base} mask", "scale": spacing[-2:], "visible": False}, "labels"))
    return layers
