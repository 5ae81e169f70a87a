"""Natural-image paper protocol: Y channel of YCbCr (MATLAB ``rgb2ycbcr``), 0-255 scale, data range 255.

Matches the IDM reference evaluation (``test.py`` of the official code): the reconstruction is clamped to [0, 1]
and multiplied by 255 (not rounded), the ground truth is the 8-bit Y image, PSNR with peak 255 and
scikit-image SSIM with ``data_range=255``. ``quantize=True`` also rounds both to integers, as when the
reconstruction is saved to an 8-bit file before scoring (MATLAB-script evaluations).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from idm_imaging.metrics.core import check_pair, psnr, ssim

__all__ = ["rgb_to_y", "psnr_y", "ssim_y"]

# MATLAB rgb2ycbcr for double images in [0, 1]: Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255.
_Y_OFFSET = 16.0
_Y_WEIGHTS = (65.481, 128.553, 24.966)


def _channel_axis(shape: tuple[int, ...], name: str) -> int:
    if len(shape) == 3 and shape[0] == 3:
        return 0
    if len(shape) == 4 and shape[1] == 3:
        return 1
    if len(shape) in (3, 4) and shape[-1] == 3:
        return len(shape) - 1
    raise ValueError(f"{name} must be RGB as (3, H, W), (H, W, 3), (B, 3, H, W) or (B, H, W, 3), got {tuple(shape)}")


def rgb_to_y(image: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Luma Y of YCbCr as MATLAB ``rgb2ycbcr``, on the [0, 1] scale (so Y lies in [16/255, 235/255]).

    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` for R, G, B in [0, 1]; uint8 input is divided by 255 first.

    Args:
        image (`torch.Tensor` or `np.ndarray`):
            RGB ``(3, H, W)``, ``(H, W, 3)``, ``(B, 3, H, W)`` or ``(B, H, W, 3)`` (channels-first wins when
            ambiguous).

    Returns:
        `torch.Tensor` or `np.ndarray`: Y with the channel axis removed, same library as the input (float64 numpy /
        float torch).

    Example::

        >>> round(float(rgb_to_y(np.ones((3, 4, 4)))[0, 0] * 255), 3)      # 16 + 65.481 + 128.553 + 24.966
        235.0
    """
    if not isinstance(image, (torch.Tensor, np.ndarray)):
        raise TypeError(f"image must be a torch.Tensor or numpy.ndarray, got {type(image).__name__}")
    axis = _channel_axis(tuple(image.shape), "image")
    if isinstance(image, torch.Tensor):
        x = image.to(torch.float64) / 255.0 if not image.is_floating_point() else image
        r, g, b = x.unbind(axis)
    else:
        if image.dtype.kind not in "biuf":
            raise TypeError(f"image must be real numeric, got dtype {image.dtype}")
        x = image.astype(np.float64) / 255.0 if image.dtype.kind != "f" else image.astype(np.float64)
        r, g, b = np.moveaxis(x, axis, 0)
    return (_Y_OFFSET + _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b) / 255.0


def _y255(x: np.ndarray, name: str, quantize: bool) -> np.ndarray:
    """[0, 1] gray or RGB image -> 2-D Y on 0-255 (clipped to [0, 255], optionally rounded)."""
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    elif x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 3:
        x = rgb_to_y(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be one gray (H, W) or RGB (3, H, W)/(H, W, 3) image, got {x.shape}")
    y = np.clip(x, 0.0, 1.0) * 255.0
    return np.rint(y) if quantize else y


def _pair(pred: Any, target: Any, quantize: bool) -> tuple[np.ndarray, np.ndarray]:
    p, t = check_pair(pred, target)
    if np.iscomplexobj(p) or np.iscomplexobj(t):
        raise TypeError("pred and target must be real images for the Y-channel protocol")
    return _y255(p, "pred", quantize), _y255(t, "target", quantize)


def psnr_y(pred: Any, target: Any, *, quantize: bool = False) -> float:
    """PSNR (dB) of the Y channel on 0-255: ``10 log10(255^2 / mean((Y_t - Y_p)^2))``; inf for identical images.

    Args:
        pred (`np.ndarray` or `torch.Tensor`):
            One image in [0, 1], gray ``(H, W)`` (taken as Y; ``(1, H, W)``/``(1, 1, H, W)`` too) or RGB
            (converted by :func:`rgb_to_y`). Values are clipped to [0, 1].
        target (`np.ndarray` or `torch.Tensor`):
            The reference, same shape and convention as ``pred``.
        quantize (`bool`, *optional*, defaults to `False`):
            Whether to round the 0-255 values to integers (8-bit files) before scoring.

    Returns:
        `float`: the PSNR in dB.
    """
    p, t = _pair(pred, target, quantize)
    return psnr(p, t, data_range=255.0)


def ssim_y(pred: Any, target: Any, *, quantize: bool = False, gaussian_weights: bool = False) -> float:
    """SSIM of the Y channel on 0-255 with ``data_range=255`` (scikit-image; see :func:`idm_imaging.metrics.ssim`).

    Args:
        pred (`np.ndarray` or `torch.Tensor`):
            One image in [0, 1], gray or RGB, as in :func:`psnr_y`.
        target (`np.ndarray` or `torch.Tensor`):
            The reference, same shape and convention as ``pred``.
        quantize (`bool`, *optional*, defaults to `False`):
            Whether to round the 0-255 values to integers (8-bit files) before scoring.
        gaussian_weights (`bool`, *optional*, defaults to `False`):
            Whether to use the 11x11 Gaussian window of Wang et al. instead of the 7x7 uniform one.

    Returns:
        `float`: the SSIM.
    """
    p, t = _pair(pred, target, quantize)
    return ssim(p, t, data_range=255.0, gaussian_weights=gaussian_weights)
