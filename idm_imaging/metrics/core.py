"""Generic PSNR / SSIM / NMSE on real arrays (complex inputs: magnitude), data range defaulting to target max."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["psnr", "ssim", "nmse", "to_numpy", "check_pair"]


def to_numpy(x: Any, name: str) -> np.ndarray:
    """torch tensor / numpy array -> finite numpy array (float64, or complex128); errors name ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.numpy() if not x.is_complex() else x.to(torch.complex128).numpy()
    elif not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def check_pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both arguments as numpy arrays of one shape (else ValueError naming pred and target)."""
    p, t = to_numpy(pred, "pred"), to_numpy(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {p.shape} and target {t.shape}")
    return p, t


def _magnitudes(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = check_pair(pred, target)
    return np.abs(p) if np.iscomplexobj(p) else p, np.abs(t) if np.iscomplexobj(t) else t


def _data_range(t: np.ndarray, data_range: float | None) -> float:
    dr = float(t.max()) if data_range is None else float(data_range)
    if not np.isfinite(dr) or dr <= 0:
        raise ValueError(f"data_range must be > 0 (default: target max), got {dr}")
    return dr


def psnr(pred: Any, target: Any, data_range: float | None = None) -> float:
    """PSNR in dB: ``10 log10(data_range^2 / mean(|target - pred|^2))`` over all elements (inf if equal).

    Args:
        pred (`np.ndarray` or `torch.Tensor`):
            The estimate, any shape; complex values are taken as magnitudes.
        target (`np.ndarray` or `torch.Tensor`):
            The reference, same shape as ``pred``; complex values are taken as magnitudes.
        data_range (`float`, *optional*):
            Peak value; `None` takes ``target.max()`` (fastMRI convention).

    Returns:
        `float`: the PSNR in dB.
    """
    from skimage.metrics import peak_signal_noise_ratio

    p, t = _magnitudes(pred, target)
    dr = _data_range(t, data_range)
    if np.array_equal(p, t):
        return float("inf")
    return float(peak_signal_noise_ratio(t, p, data_range=dr))


def ssim(pred: Any, target: Any, data_range: float | None = None, *, gaussian_weights: bool = False) -> float:
    """SSIM of an ``(H, W)`` image, or the mean of per-slice 2-D SSIMs of a ``(D, H, W)`` volume (fastMRI).

    scikit-image's ``structural_similarity``: 7x7 uniform window by default; ``gaussian_weights=True`` gives the
    Wang et al. (2004) Gaussian window (sigma 1.5, population covariance). H and W must be at least 7.

    Args:
        pred (`np.ndarray` or `torch.Tensor`):
            The estimate, ``(H, W)`` or ``(D, H, W)``; complex values are taken as magnitudes.
        target (`np.ndarray` or `torch.Tensor`):
            The reference, same shape as ``pred``; complex values are taken as magnitudes.
        data_range (`float`, *optional*):
            Data range of the images; `None` takes ``target.max()`` over the whole volume.
        gaussian_weights (`bool`, *optional*, defaults to `False`):
            Whether to use the Gaussian window of Wang et al. instead of the 7x7 uniform one.

    Returns:
        `float`: the SSIM (the mean over slices for a volume).
    """
    from skimage.metrics import structural_similarity

    p, t = _magnitudes(pred, target)
    if p.ndim not in (2, 3):
        raise ValueError(f"pred and target must be (H, W) or (D, H, W), got {p.shape}")
    if min(p.shape[-2:]) < 7:
        raise ValueError(f"pred and target must be at least 7x7 for SSIM, got {p.shape}")
    dr = _data_range(t, data_range)
    kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False} if gaussian_weights else {}
    if p.ndim == 2:
        return float(structural_similarity(t, p, data_range=dr, **kw))
    return float(np.mean([structural_similarity(ts, ps, data_range=dr, **kw) for ts, ps in zip(t, p)]))


def nmse(pred: Any, target: Any) -> float:
    """Normalised MSE ``||target - pred||_2^2 / ||target||_2^2`` (complex allowed: complex difference)."""
    p, t = check_pair(pred, target)
    denom = float(np.sum(np.abs(t) ** 2))
    if denom == 0:
        raise ValueError("target is all zeros; NMSE is undefined")
    return float(np.sum(np.abs(t - p) ** 2) / denom)
