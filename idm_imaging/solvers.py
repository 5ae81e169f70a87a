"""Classical reconstruction steps that only need an operator's ``A`` / ``A_adjoint`` / ``A_dagger``.

Used by the IDM network (its measured-mean step and its TV warm start) and by the benchmark's TV-FISTA and
PnP-BM3D baselines: one implementation for all of them.

Example:
    >>> import torch
    >>> from idm_imaging.operators import BlockCS
    >>> op = BlockCS(0.5, block_size=8, seed=0)
    >>> x = torch.zeros(1, 1, 32, 32); x[..., 8:24, 8:24] = 1
    >>> y = op.A(x)
    >>> err = lambda z: float((z - x).pow(2).mean())
    >>> err(tv_fista(y, op, lam=0.01, iterations=100)) < 0.5 * err(op.A_dagger(y))
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["measured_mean_shift", "tv_prox", "tv_fista"]


def measured_mean_shift(x: torch.Tensor, y: torch.Tensor, operator: Any) -> torch.Tensor:
    """``x`` (B, 1, H, W) moved along the part of the constant image that the measurements miss, ``(I - A^+ A) 1``,
    until its mean is ``mu = <A 1, y> / ||A 1||^2``: the least-squares mean of an image ``mu 1 + r`` given
    ``y = A x`` when ``A r`` is uncorrelated with ``A 1`` (a global pixel permutation makes it so). ``A x`` is
    unchanged, so a data-consistent ``x`` stays consistent. A no-op where the mean is measured exactly (the
    k-space centre: ``A^+ A 1 = 1``) or not at all (``A 1 = 0``).

    Args:
        x (`torch.Tensor`):
            The estimate, real or complex ``(B, 1, H, W)``.
        y (`torch.Tensor`):
            Its measurements ``(B, ...)`` as ``operator.A`` gives them.
        operator (`LinearOperator`):
            The acquisition; any object with ``A`` and ``A_dagger`` works.

    Returns:
        `torch.Tensor` of the shape and dtype of ``x``: the shifted estimate.
    """
    ones = torch.ones_like(x[:1])
    c = operator.A(ones)
    missed = ones - operator.A_dagger(c)  # (I - A^+ A) 1
    cc, free = (c.abs() ** 2).sum(), missed.mean()
    mu = (c.conj() * y).sum(dim=tuple(range(1, y.ndim))) / cc.clamp_min(torch.finfo(cc.dtype).tiny)
    ok = (cc > 1e-6 * ones.numel()) & (free.abs() > 1e-6)
    delta = torch.where(ok, (mu.to(x.dtype) - x.mean(dim=(1, 2, 3))) / torch.where(ok, free, 1), 0)
    return x + delta.view(-1, 1, 1, 1) * missed


def _grad(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences with Neumann boundary: (B, C, H, W) -> two (B, C, H, W)."""
    gx = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    gy = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1, 0, 0))
    return gx, gy


def _div(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Discrete divergence, the negative adjoint of :func:`_grad`."""
    dx = torch.cat([px[..., :1, :], px[..., 1:-1, :] - px[..., :-2, :], -px[..., -2:-1, :]], dim=-2)
    dy = torch.cat([py[..., :, :1], py[..., :, 1:-1] - py[..., :, :-2], -py[..., :, -2:-1]], dim=-1)
    return dx + dy


def tv_prox(f: torch.Tensor, lam: float, iterations: int = 20, p=None):
    r"""Prox of isotropic TV: ``argmin_u 0.5 ||u - f||^2 + lam TV(u)`` by Chambolle's projection (2004).

    Dual iteration (step ``tau = 1/8``, the convergent bound for this discretisation):
    ``p <- (p + tau grad(div p - f / lam)) / (1 + tau |grad(div p - f / lam)|)``; ``u = f - lam div p``.
    Written in torch (rather than ``skimage.restoration.denoise_tv_chambolle``) so that it runs on the GPU
    and can be warm-started from the previous FISTA iteration's dual ``p``.

    Args:
        f (`torch.Tensor`):
            Real ``(B, C, H, W)`` image to denoise (H, W >= 2).
        lam (`float`):
            TV weight > 0.
        iterations (`int`, *optional*, defaults to 20):
            Dual iterations.
        p (`tuple[torch.Tensor, torch.Tensor]`, *optional*):
            Warm start ``(px, py)`` of the dual; `None` starts from zeros.

    Returns:
        `tuple`: ``(u, (px, py))``, the prox ``u`` (shape of ``f``) and the final dual, to warm-start the next call.
    """
    tau = 0.125
    if p is None:
        px, py = torch.zeros_like(f), torch.zeros_like(f)
    else:
        px, py = p
    for _ in range(iterations):
        gx, gy = _grad(_div(px, py) - f / lam)
        norm = torch.sqrt(gx * gx + gy * gy)
        px = (px + tau * gx) / (1 + tau * norm)
        py = (py + tau * gy) / (1 + tau * norm)
    return f - lam * _div(px, py), (px, py)


@torch.no_grad()
def tv_fista(y: torch.Tensor, operator: Any, lam: float = 0.001, iterations: int = 200, inner: int = 10,
             mean_start: bool = False, x0: torch.Tensor | None = None) -> torch.Tensor:
    r"""TV-regularised reconstruction by FISTA: ``min_x 0.5 ||A x - y||_2^2 + lam TV(x)``.

    Gradient step ``1 / L`` with ``L = ||A||^2 = 1`` (``A A^H = I`` for the operators here), prox by
    :func:`tv_prox` (warm-started), Nesterov momentum ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``. Complex
    operators (MRI): TV acts on the real and imaginary parts as two channels.

    Args:
        y (`torch.Tensor`):
            Measurements ``(B, ...)`` of ``operator``.
        operator (`LinearOperator`):
            The acquisition; any object with ``A``, ``A_adjoint``, ``is_complex`` and, if present, ``A_dagger``
            (the start ``A^+ y``; ``A_adjoint`` otherwise) works.
        lam (`float`, *optional*, defaults to 0.001):
            TV weight (images in [0, 1]).
        iterations (`int`, *optional*, defaults to 200):
            Outer FISTA iterations.
        inner (`int`, *optional*, defaults to 10):
            Chambolle iterations per prox.
        mean_start (`bool`, *optional*, defaults to `False`):
            Whether to start from :func:`measured_mean_shift` of ``A^+ y`` instead of ``A^+ y``: at low block-CS
            ratios ``A^+ y`` misses most of the image mean, which FISTA then needs many iterations to find.
        x0 (`torch.Tensor`, *optional*):
            The start, shaped like ``A^+ y`` (complex for a complex operator), instead of ``A^+ y``: a warm start
            from an estimate at hand (``mean_start`` is then ignored).

    Returns:
        `torch.Tensor` of shape ``(B, 1, H, W)``: the reconstruction, complex for a complex operator.
    """
    cplx = bool(getattr(operator, "is_complex", False))
    to_r = (lambda z: torch.cat([z.real, z.imag], 1)) if cplx else (lambda z: z)  # noqa: E731
    to_c = (lambda r: torch.complex(*r.chunk(2, dim=1))) if cplx else (lambda r: r)  # noqa: E731
    if x0 is None:
        x0 = getattr(operator, "A_dagger", operator.A_adjoint)(y)
        x0 = measured_mean_shift(x0, y, operator) if mean_start else x0
    x = to_r(x0)
    z, t, p = x.clone(), 1.0, None
    for _ in range(iterations):
        g = to_r(operator.A_adjoint(operator.A(to_c(z)) - y))
        x_new, p = tv_prox(z - g, lam, inner, p)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return to_c(x)
