"""fastMRI evaluation protocol: magnitude images, optional centre crop, data range = max of the target volume."""

from __future__ import annotations

from typing import Any

import numpy as np

from idm_imaging.metrics.core import check_pair, nmse, psnr, ssim

__all__ = ["fastmri_metrics", "center_crop"]


def center_crop(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre crop of the last two axes to ``size``; an axis already smaller than the crop is kept whole."""
    h, w = x.shape[-2:]
    ch, cw = min(size[0], h), min(size[1], w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def fastmri_metrics(pred: Any, target: Any, *, crop: int | tuple[int, int] | None = None) -> dict[str, float]:
    """PSNR, SSIM and NMSE of a reconstruction as in the fastMRI challenge (``fastmri/evaluate.py``).

    ``maxval = max(|target|)`` over the (cropped) volume; ``psnr = 10 log10(maxval^2 / MSE)`` over the whole volume;
    ``ssim`` = mean over slices of 2-D SSIM with ``data_range=maxval``; ``nmse = ||t - p||^2 / ||t||^2``.

    Args:
        pred (`np.ndarray` or `torch.Tensor`):
            The reconstruction, ``(H, W)``, ``(D, H, W)`` or ``(D, 1, H, W)``; complex values are taken as
            magnitudes.
        target (`np.ndarray` or `torch.Tensor`):
            The reference, same shape as ``pred``; complex values are taken as magnitudes.
        crop (`int` or `tuple[int, int]`, *optional*):
            Centre crop ``(h, w)`` (an int for square) applied where the image is larger, e.g. 320 for knee.

    Returns:
        `dict[str, float]`: ``{"psnr": ..., "ssim": ..., "nmse": ...}``, the PSNR in dB.

    Example::

        >>> target = np.zeros((1, 32, 32)); target[:, 8:24, 8:24] = 1
        >>> {k: round(v, 2) for k, v in fastmri_metrics(target + 0.1, target).items()}
        {'psnr': 20.0, 'ssim': 0.68, 'nmse': 0.04}
    """
    p, t = check_pair(pred, target)
    p, t = np.abs(p), np.abs(t)
    if p.ndim == 4 and p.shape[1] == 1:
        p, t = p[:, 0], t[:, 0]
    if p.ndim == 2:
        p, t = p[None], t[None]
    if p.ndim != 3:
        raise ValueError(f"pred and target must be (H, W), (D, H, W) or (D, 1, H, W), got {p.shape}")
    if crop is not None:
        size = (crop, crop) if isinstance(crop, (int, np.integer)) else tuple(crop)
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
            raise ValueError(f"crop must be a positive int or (h, w) pair, got {crop!r}")
        p, t = center_crop(p, size), center_crop(t, size)
    maxval = float(t.max())
    if maxval <= 0:
        raise ValueError("target is all zeros; the fastMRI data range (target max) is undefined")
    return {"psnr": psnr(p, t, data_range=maxval), "ssim": ssim(p, t, data_range=maxval), "nmse": nmse(p, t)}
