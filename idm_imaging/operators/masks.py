"""k-space sampling masks for :class:`~idm_imaging.operators.SingleCoilFourier`.

Every mask is an ``(H, W)`` boolean array in *centred* k-space (DC at ``(H // 2, W // 2)``, the layout produced by
``fftshift(fft2(ifftshift(x)))``). Lines of the 1-D kinds are columns: the phase-encode direction is ``W``.

Contract shared by every kind
-----------------------------
- ``acceleration`` R > 1: the mask holds ``round(H * W / R)`` samples (1-D kinds: ``round(W / R)`` whole columns),
  so the achieved acceleration ``H * W / mask.sum()`` is within 5% of R. Counts are tuned iteratively (exact
  sample selection, or bisection on the trajectory density) rather than trusting an expected value; a shape too
  small to reach R within 5% raises ``ValueError``.
- ``center_fraction`` c (default ``0.32 / R``: 0.08 at 4x, 0.04 at 8x): the fully sampled centre. 1-D kinds:
  ``round(c * W)`` central columns (fastMRI convention). 2-D kinds: a central box of ``round(c * H)`` x
  ``round(c * W)`` pixels. The centre counts towards the sample budget, so it must be smaller than it.
- ``seed``: every random choice comes from ``numpy.random.default_rng(seed)``; same seed, same mask.

MONAI's ``RandomKspaceMask``/``EquispacedKspaceMask`` draw the line count from an expected value (the achieved
acceleration varies from draw to draw) and only cover 1-D Cartesian sampling, so they do not fit this contract.

Example::

    >>> from idm_imaging.operators import make_mask
    >>> m = make_mask("poisson", (256, 256), acceleration=4, seed=0)
    >>> m.shape, m.dtype, round(m.numel() / m.sum().item(), 2)
    (torch.Size([256, 256]), torch.bool, 4.0)
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = [
    "MASK_KINDS",
    "MaskFunc",
    "RandomMask",
    "EquispacedMask",
    "Gaussian1DMask",
    "Gaussian2DMask",
    "PoissonDiscMask",
    "RadialMask",
    "SpiralMask",
    "make_mask",
]

_TOLERANCE = 0.05


def _check_shape(shape) -> tuple[int, int]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape)
    ):
        raise ValueError(f"shape must be a pair of ints (H, W), got {shape!r}")
    h, w = int(shape[0]), int(shape[1])
    if h < 4 or w < 4:
        raise ValueError(f"shape must be at least (4, 4), got {shape!r}")
    return h, w


class MaskFunc:
    """Base of the mask generators: ``MaskFunc(acceleration, center_fraction=None, seed=0)(shape)``.

    Returns a ``numpy`` bool array of ``shape`` ``(H, W)``; see the module docstring for the contract.
    Subclasses implement :meth:`_sample` (and set :attr:`kind`).
    """

    kind = ""
    one_dimensional = False

    def __init__(self, acceleration: float, center_fraction: float | None = None, seed: int = 0):
        if isinstance(acceleration, bool) or not isinstance(acceleration, numbers.Real):
            raise TypeError(f"acceleration must be a number, got {type(acceleration).__name__}")
        acceleration = float(acceleration)
        if not math.isfinite(acceleration) or acceleration <= 1.0:
            raise ValueError(f"acceleration must be a finite number > 1, got {acceleration}")
        if center_fraction is None:
            center_fraction = 0.32 / acceleration
        if isinstance(center_fraction, bool) or not isinstance(center_fraction, numbers.Real):
            raise TypeError(f"center_fraction must be a number or None, got {type(center_fraction).__name__}")
        center_fraction = float(center_fraction)
        if not (0.0 <= center_fraction < 1.0):
            raise ValueError(f"center_fraction must be in [0, 1), got {center_fraction}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.acceleration = acceleration
        self.center_fraction = center_fraction
        self.seed = int(seed)

    # -- helpers shared by the kinds -------------------------------------------------------------
    def _center(self, h: int, w: int) -> np.ndarray:
        """Bool (H, W) array of the fully sampled centre (columns for 1-D kinds, a box for 2-D kinds)."""
        c = np.zeros((h, w), dtype=bool)
        n_w = int(round(self.center_fraction * w))
        if n_w > 0:
            pw = (w - n_w + 1) // 2  # fastMRI placement: covers the DC column W // 2
            if self.one_dimensional:
                c[:, pw : pw + n_w] = True
            else:
                n_h = int(round(self.center_fraction * h))
                if n_h > 0:
                    ph = (h - n_h + 1) // 2
                    c[ph : ph + n_h, pw : pw + n_w] = True
        return c

    def _target(self, h: int, w: int) -> int:
        """Number of samples (pixels) the mask must hold."""
        if self.one_dimensional:
            return h * max(1, int(round(w / self.acceleration)))
        return max(1, int(round(h * w / self.acceleration)))

    @staticmethod
    def _radius(h: int, w: int) -> np.ndarray:
        """Normalised k-space radius (0 at DC, 1 on the inscribed ellipse), shape (H, W)."""
        ky = (np.arange(h) - h // 2) / (h / 2)
        kx = (np.arange(w) - w // 2) / (w / 2)
        return np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)

    def _sample(self, h: int, w: int, center: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, shape) -> np.ndarray:
        h, w = _check_shape(shape)
        target = self._target(h, w)
        center = self._center(h, w)
        if center.sum() > target:
            raise ValueError(
                f"center_fraction={self.center_fraction} samples more than 1/acceleration "
                f"(acceleration={self.acceleration}) of k-space for shape {(h, w)}"
            )
        rng = np.random.default_rng(self.seed)
        mask = self._sample(h, w, center, target, rng) | center
        achieved = h * w / max(int(mask.sum()), 1)
        if abs(achieved - self.acceleration) > _TOLERANCE * self.acceleration:
            raise ValueError(
                f"shape {(h, w)} is too small to reach acceleration {self.acceleration} within 5% with "
                f"kind {self.kind!r} (achieved {achieved:.3f})"
            )
        return mask

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(acceleration={self.acceleration}, "
            f"center_fraction={self.center_fraction}, seed={self.seed})"
        )


def _weighted_pick(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` entries drawn without replacement with probability proportional to ``weights``.

    Exponential-keys trick (Efraimidis-Spirakis): the k smallest ``Exp(1) / w`` are a successive weighted draw.
    """
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    keys = rng.exponential(size=weights.shape) / np.maximum(weights, 1e-300)
    return np.argpartition(keys, k - 1)[:k]


def _fill_to_target(mask: np.ndarray, center: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Drop random non-centre samples until ``(mask | center).sum() == target`` (only ever removes)."""
    mask = mask | center
    surplus = int(mask.sum()) - target
    if surplus > 0:
        free = np.flatnonzero(mask & ~center)
        drop = rng.choice(free, size=min(surplus, free.size), replace=False)
        mask = mask.copy()
        mask.flat[drop] = False
    return mask


# ------------------------------------------------------------------------------------------------------
# 1-D Cartesian kinds: whole columns (phase encodes along W)
# ------------------------------------------------------------------------------------------------------
class _LineMask(MaskFunc):
    one_dimensional = True

    def _pick_columns(self, free_cols: np.ndarray, n: int, w: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _sample(self, h, w, center, target, rng):
        n_lines = target // h
        center_cols = center[0]
        free_cols = np.flatnonzero(~center_cols)
        n = n_lines - int(center_cols.sum())
        cols = center_cols.copy()
        cols[self._pick_columns(free_cols, n, w, rng)] = True
        return np.broadcast_to(cols, (h, w)).copy()


class RandomMask(_LineMask):
    """fastMRI ``RandomMaskFunc``: uniformly random columns plus a fully sampled centre.

    Unlike fastMRI the number of columns is exact: ``round(W / R)`` in total, centre included.
    """

    kind = "random"

    def _pick_columns(self, free_cols, n, w, rng):
        return rng.choice(free_cols, size=n, replace=False)


class EquispacedMask(_LineMask):
    """fastMRI-style equispaced columns (random offset from the seed) around a fully sampled centre.

    The ``round(W / R) - n_centre`` outer columns are equally spaced over the columns outside the centre.
    """

    kind = "equispaced"

    def _pick_columns(self, free_cols, n, w, rng):
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        step = free_cols.size / n
        pos = np.floor(rng.uniform(0, step) + step * np.arange(n)).astype(np.int64)
        return free_cols[np.clip(pos, 0, free_cols.size - 1)]


class Gaussian1DMask(_LineMask):
    """Variable-density random columns: drawn without replacement with a Gaussian weight in ``k_x``.

    Weight ``exp(-kx^2 / (2 * 0.25^2))`` with ``kx`` in [-1, 1) across the width; plus a fully sampled centre.
    """

    kind = "gaussian1d"
    std = 0.25

    def _pick_columns(self, free_cols, n, w, rng):
        kx = (free_cols - w // 2) / (w / 2)
        return free_cols[_weighted_pick(np.exp(-0.5 * (kx / self.std) ** 2), n, rng)]


# ------------------------------------------------------------------------------------------------------
# 2-D kinds
# ------------------------------------------------------------------------------------------------------
class Gaussian2DMask(MaskFunc):
    """Variable-density random points: exactly ``round(HW / R)`` pixels, centre box included, drawn without
    replacement with weight ``exp(-rho^2 / (2 * 0.3^2))`` (``rho`` = normalised k-space radius)."""

    kind = "gaussian2d"
    std = 0.3

    def _sample(self, h, w, center, target, rng):
        free = np.flatnonzero(~center)
        weight = np.exp(-0.5 * (self._radius(h, w).ravel()[free] / self.std) ** 2)
        mask = center.copy()
        mask.flat[free[_weighted_pick(weight, target - int(center.sum()), rng)]] = True
        return mask


class PoissonDiscMask(MaskFunc):
    """Variable-density Poisson-disc points (BART/sigpy-style) plus a fully sampled centre box.

    Random sequential dart throwing over every pixel in a seeded random order: a pixel is accepted unless it lies
    closer than ``r(p) = r0 * (1 + slope * rho)`` to an earlier accepted point ``p`` (``rho`` = normalised radius
    of ``p``), so the hard-core distance grows from the centre outwards. ``r0`` is tuned (multiplicative secant
    steps, then bisection) until the count is just above the target; the few surplus points are then dropped at
    random, which keeps the minimum-distance property.
    """

    kind = "poisson"
    slope = 1.0
    _quant = 0.05  # radius quantisation of the cached disc stencils

    def _throw(self, h, w, order_i, order_j, rho_list, r0, stencils):
        rmax = int(math.ceil(r0 * (1 + self.slope * math.sqrt(2)))) + 1
        forbidden = np.zeros((h + 2 * rmax, w + 2 * rmax), dtype=bool)
        acc_i, acc_j = [], []
        q = self._quant
        for i, j, rho in zip(order_i, order_j, rho_list):
            if forbidden[i + rmax, j + rmax]:
                continue
            acc_i.append(i)
            acc_j.append(j)
            key = int(round(r0 * (1 + self.slope * rho) / q))
            st = stencils.get(key)
            if st is None:
                r = key * q
                k = int(math.ceil(r))
                yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
                st = stencils[key] = (k, (yy * yy + xx * xx) < r * r)
            k, disc = st
            if k:
                sl = forbidden[i + rmax - k : i + rmax + k + 1, j + rmax - k : j + rmax + k + 1]
                sl |= disc
        mask = np.zeros((h, w), dtype=bool)
        mask[np.asarray(acc_i, dtype=np.int64), np.asarray(acc_j, dtype=np.int64)] = True
        return mask

    def _sample(self, h, w, center, target, rng):
        order = rng.permutation(h * w)
        oi, oj = np.divmod(order, w)
        rho = self._radius(h, w).ravel()[order]
        rho_list = rho.tolist()
        oi, oj = oi.tolist(), oj.tolist()
        stencils: dict = {}

        def count(r0):
            m = self._throw(h, w, oi, oj, rho_list, r0, stencils) | center
            return int(m.sum()), m

        # the jammed density of a hard-core process scales like 1 / r0^2: secant steps in log space
        density = target / (h * w)
        r0 = max(0.5, 0.8 / math.sqrt(density) / (1 + self.slope * 0.7))
        lo, hi = 0.0, None  # count(lo) >= target (r0 = 0 samples everything), count(hi) < target
        best = None
        for _ in range(30):
            n, m = count(r0)
            if n >= target:
                lo = r0
                if best is None or n < best[0]:
                    best = (n, m)
                if n <= target * (1 + 0.02):
                    break
            else:
                hi = r0
            r_new = r0 * math.sqrt(n / target) if n > 0 else r0 / 2
            if hi is not None and not (lo < r_new < hi):
                r_new = 0.5 * (lo + hi)
            if abs(r_new - r0) < 1e-4:
                break
            r0 = r_new
        if best is None:
            best = (h * w, np.ones((h, w), dtype=bool))
        return _fill_to_target(best[1], center, target, rng)


class _TrajectoryMask(MaskFunc):
    """A non-Cartesian trajectory gridded (nearest neighbour) onto the Cartesian grid. Its density parameter
    (spokes, turns) is bisected to the sparsest trajectory whose gridded count reaches the target; the surplus
    samples farthest from the centre are then dropped, so the count is exact."""

    def _points(self, h, w, density, phase) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _grid(self, h, w, density, phase, center):
        ky, kx = self._points(h, w, density, phase)
        iy = np.clip(np.rint(ky * (h / 2) + h // 2), 0, h - 1).astype(np.int64)
        ix = np.clip(np.rint(kx * (w / 2) + w // 2), 0, w - 1).astype(np.int64)
        mask = center.copy()
        mask[iy, ix] = True
        return mask

    def _bounds(self, h, w) -> tuple[float, float]:
        raise NotImplementedError

    integer_density = False

    def _sample(self, h, w, center, target, rng):
        phase = float(rng.uniform(0.0, 2.0 * math.pi))
        lo, hi = self._bounds(h, w)  # count(lo) < target <= count(hi) (checked below)
        m_hi = self._grid(h, w, hi, phase, center)
        if int(m_hi.sum()) < target:
            raise ValueError(f"shape {(h, w)} is too small for acceleration {self.acceleration} with {self.kind!r}")
        for _ in range(60):  # bisection for the sparsest trajectory that still reaches the target
            if (self.integer_density and hi - lo <= 1) or hi - lo < 1e-3 * hi:
                break
            mid = (lo + hi) / 2
            if self.integer_density:
                mid = float(math.floor(mid))
            m = self._grid(h, w, mid, phase, center)
            if int(m.sum()) >= target:
                hi, m_hi = mid, m
            else:
                lo = mid
        # exact count: drop the outermost surplus samples (shortens the trajectory by a sliver of k-space)
        surplus = int(m_hi.sum()) - target
        if surplus > 0:
            free = np.flatnonzero(m_hi & ~center)
            rho = self._radius(h, w).ravel()[free] + 1e-9 * rng.random(free.size)  # random tie-break
            m_hi = m_hi.copy()
            m_hi.flat[free[np.argsort(rho)[-surplus:]]] = False
        return m_hi


class RadialMask(_TrajectoryMask):
    """Radial spokes through the k-space centre at equally spaced angles over [0, pi) with a seeded random
    rotation; the number of spokes is tuned. Spokes span the inscribed ellipse (trimmed at the rim to hit the
    exact count); plus a fully sampled centre box."""

    kind = "radial"
    integer_density = True

    def _bounds(self, h, w):
        return 0.0, float(4 * (h + w))

    def _points(self, h, w, density, phase):
        n_spokes = max(1, int(density))
        theta = phase + math.pi * np.arange(n_spokes) / n_spokes
        t = np.linspace(-1.0, 1.0, 2 * max(h, w) + 1)
        return np.sin(theta)[:, None] * t[None, :], np.cos(theta)[:, None] * t[None, :]


class SpiralMask(_TrajectoryMask):
    """Archimedean spiral ``k(t) = t * exp(i (2 pi n t + phase))``, t in [0, 1], over the inscribed ellipse, with
    a seeded random rotation; the number of turns ``n`` (continuous) is tuned. Plus a fully sampled centre box."""

    kind = "spiral"

    def _bounds(self, h, w):
        return 0.0, float(max(h, w))

    def _points(self, h, w, density, phase):
        # ~2 samples per pixel of arc length (arc ~ pi * n * R for n turns of radius up to R)
        n_pts = int(4 * math.pi * density * max(h, w) / 2) + 2 * max(h, w)
        t = np.linspace(0.0, 1.0, n_pts)
        ang = 2 * math.pi * density * t + phase
        return t * np.sin(ang), t * np.cos(ang)


MASK_KINDS: dict[str, type[MaskFunc]] = {
    cls.kind: cls
    for cls in (RandomMask, EquispacedMask, Gaussian1DMask, Gaussian2DMask, PoissonDiscMask, RadialMask, SpiralMask)
}


def make_mask(kind: str, shape, acceleration: float, center_fraction: float | None = None, seed: int = 0):
    """Generate an ``(H, W)`` bool ``torch.Tensor`` k-space mask (centred k-space; see the module docstring).

    Args:
        kind (`str`):
            One of ``"random"``, ``"equispaced"``, ``"gaussian1d"``, ``"gaussian2d"``, ``"poisson"``, ``"radial"``,
            ``"spiral"``.
        shape (`tuple[int, int]`):
            Mask size ``(H, W)``.
        acceleration (`float`):
            Undersampling factor R > 1; the result has ``H * W / mask.sum()`` within 5% of R.
        center_fraction (`float`, *optional*):
            Fully sampled centre fraction; `None` gives ``0.32 / R``.
        seed (`int`, *optional*, defaults to 0):
            Seed of the numpy Generator.

    Returns:
        `torch.Tensor`: the ``(H, W)`` bool mask.

    Example::

        >>> make_mask("random", (320, 320), 4).float().mean().item() == 80 / 320
        True
    """
    if not isinstance(kind, str) or kind not in MASK_KINDS:
        raise ValueError(f"kind must be one of {sorted(MASK_KINDS)}, got {kind!r}")
    return torch.from_numpy(MASK_KINDS[kind](acceleration, center_fraction, seed)(shape))
