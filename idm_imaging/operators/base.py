"""Base class of the acquisition operators and the config registry.

Every operator is a ``torch.nn.Module`` with deepinv-style names: ``A(x)``, ``A_adjoint(y)``, ``A_dagger(y)`` and
``forward = A``. Images ``x`` are ``(B, C, H, W)``. ``A``/``A_adjoint`` only check shapes and dtypes (never
values: no host-device synchronisation), so they can run many times per reconstruction.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

__all__ = ["LinearOperator", "operator_from_config", "register_operator"]

_REGISTRY: dict[str, type["LinearOperator"]] = {}


def register_operator(cls: type["LinearOperator"]) -> type["LinearOperator"]:
    """Class decorator: make ``cls`` rebuildable by :func:`operator_from_config` under ``cls.__name__``."""
    _REGISTRY[cls.__name__] = cls
    return cls


def check_image(x: Any, name: str = "x") -> torch.Tensor:
    """Raise unless ``x`` is a 4-D ``(B, C, H, W)`` floating or complex tensor (shape/dtype only, no sync)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a floating or complex tensor, got dtype {x.dtype}")
    return x


class LinearOperator(torch.nn.Module):
    """A linear acquisition operator ``y = A x`` (abstract).

    Subclasses implement :meth:`A`, :meth:`A_adjoint` and :meth:`get_config`; :meth:`A_dagger` defaults to the
    adjoint (exact for the operators here, whose ``A A^H`` is the identity on the range).

    Attributes:
        is_complex (`bool`, defaults to `False`):
            True when the natural image domain is complex (MRI); the measurements are then complex too.
    """

    is_complex: bool = False

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 (deepinv name)
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Pseudo-inverse; the adjoint for operators with orthonormal rows (``A A^H = I``)."""
        return self.A_adjoint(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def measure(self, x: torch.Tensor, sigma: float = 0.0, seed: int | None = None) -> torch.Tensor:
        """``A(x)`` plus Gaussian noise of standard deviation ``sigma``.

        Complex measurements get circular complex noise with ``E|n|^2 = sigma^2`` (``sigma / sqrt(2)`` per real
        and imaginary part, as ``torch.randn`` does for complex dtypes). With an integer ``seed`` the noise is
        drawn on the CPU from ``torch.Generator().manual_seed(seed)`` and moved, so it is the same on any
        device; with ``seed=None`` it comes from the global RNG of ``x``'s device.
        """
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        y = self.A(x)
        if sigma == 0:
            return y
        if seed is None:
            noise = torch.randn_like(y)
        else:
            gen = torch.Generator().manual_seed(int(seed))
            noise = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(y.device)
        return y + self._noise_support(noise) * sigma

    def _noise_support(self, noise: torch.Tensor) -> torch.Tensor:
        """Restrict noise to the measured entries (identity here; masked for k-space)."""
        return noise

    def to_deepinv(self, sigma: float = 0.0):
        """This operator as deepinv physics whose ``physics(x)`` draws the noise of ``measure(x, sigma)`` (needs
        the ``deepinv`` extra): :func:`idm_imaging.interop.deepinv.to_deepinv`."""
        from idm_imaging.interop.deepinv import to_deepinv

        return to_deepinv(self, sigma)

    def get_config(self) -> dict:
        """JSON-serialisable dict with a ``"type"`` key; :func:`operator_from_config` rebuilds the operator."""
        raise NotImplementedError


def operator_from_config(config: dict, *, shape=None, ratio: float | None = None,
                         acceleration: float | None = None, mask_kind: str | None = None) -> LinearOperator:
    """Rebuild an operator from an acquisition record: :meth:`LinearOperator.get_config` output or a model's
    ``operator_config`` (``IDM.config.operator_config``).

    A model's record may leave out what it was not trained for: the image ``shape`` (pass ``shape=(H, W)``), or
    name a range (``ratio_range``, ``acceleration_range``, ``mask_kinds``), which is a family of operators, not
    one: pass the concrete ``ratio`` / ``acceleration`` / ``mask_kind``. Keyword values fill what the record
    leaves open and must agree with what it fixes.

    Example::

        >>> from idm_imaging.operators import BlockCS, operator_from_config
        >>> op = operator_from_config(BlockCS(0.1, seed=3).get_config())
        >>> op.ratio, op.seed
        (0.1, 3)
        >>> rec = {"type": "SingleCoilFourier", "acceleration_range": [2, 12], "mask_kinds": ["random"]}
        >>> operator_from_config(rec, shape=(64, 64), acceleration=8, mask_kind="random").acceleration
        8.0
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    kind = config.get("type")
    if kind not in _REGISTRY:
        raise ValueError(f"config['type'] must be one of {sorted(_REGISTRY)}, got {kind!r}")
    given = {k: v for k, v in (("shape", shape), ("ratio", ratio), ("acceleration", acceleration),
                               ("mask_kind", mask_kind)) if v is not None}
    if not given:
        return _REGISTRY[kind].from_config(config)
    return _REGISTRY[kind].from_config(config, **given)


def pick(config: dict, key: str, value: Any, range_key: str | None = None) -> Any:
    """The record's ``key`` or the caller's ``value`` (for :func:`operator_from_config`): a ``range_key`` in the
    record (e.g. ``ratio_range``) is a family of operators, so it needs ``value`` inside that range; a fixed
    ``key`` must agree with ``value``. Returns None when neither is there."""
    fixed = config.get(key)
    if fixed is not None:
        if value is not None and not _same(fixed, value):
            raise ValueError(f"{key}={value!r} disagrees with the record's {key}={fixed!r}")
        return fixed
    if range_key is not None and config.get(range_key) is not None:
        span = config[range_key]
        if value is None:
            raise ValueError(f"config: {range_key}={span!r} describes a range of {config.get('type')} operators, "
                             f"not one; pass {key}= a value in it")
        if isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(v, numbers.Real) for v in span):
            lo, hi = float(span[0]), float(span[1])
            if not lo <= float(value) <= hi:
                raise ValueError(f"{key}={value!r} is outside the record's {range_key} [{lo:g}, {hi:g}]")
        elif isinstance(span, (list, tuple)) and value not in span:
            raise ValueError(f"{key}={value!r} is not one of the record's {range_key} {list(span)}")
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return a == b
