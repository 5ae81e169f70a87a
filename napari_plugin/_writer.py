"""napari writer: save an image layer as NIfTI with the scan's geometry (``idm_imaging.io.write_scan``).

Layers read by this plugin, and reconstructions made from them, carry the scan's metadata (affine) in
``layer.metadata["scan"]``; other layers are written with ``diag(scale)`` as affine.
"""

from __future__ import annotations

import numpy as np

__all__ = ["write_nifti"]


def write_nifti(path: str, data, meta: dict) -> list[str]:
    """npe2 single-layer writer: ``data`` (H, W) or (D, H, W), ``meta`` the layer attributes; returns [path]."""
    from idm_imaging.io import write_scan

    metadata = meta.get("metadata") or {}
    scan = dict(metadata.get("scan") or {})
    arr = np.asarray(data)
    if "affine" not in scan:
        scale = meta.get("scale")
        if scale is not None:
            scan["spacing"] = tuple(float(s) for s in scale)[-arr.ndim:]
    return [str(write_scan(arr, path, {k: scan[k] for k in ("affine", "spacing") if k in scan}))]
