"""Single-coil Cartesian MRI: masked orthonormal centred 2-D Fourier transform."""

from __future__ import annotations

import numpy as np
import torch

from idm_imaging.operators.base import LinearOperator, check_image, pick, register_operator
from idm_imaging.operators.masks import make_mask

__all__ = ["SingleCoilFourier"]

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal centred 2-D DFT over the last two dims: ``fftshift(fft2(ifftshift(x), norm="ortho"))``.

    Same result as MONAI's ``fftn_centered_t(..., spatial_dims=2)``; done on complex tensors directly because
    MONAI's helper wants a trailing real/imaginary axis and shifts with slice + cat (more copies per call).
    """
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (also its adjoint): ``fftshift(ifft2(ifftshift(k), norm="ortho"))``."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)


def _as_mask(mask) -> torch.Tensor:
    if isinstance(mask, np.ndarray):
        if mask.dtype == object:
            raise TypeError("mask must be a numeric or bool array, got dtype object")
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or numpy array, got {type(mask).__name__}")
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {tuple(mask.shape)}")
    mask = mask.detach().cpu()
    if mask.dtype != torch.bool:
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be boolean or hold only 0 and 1")
        mask = mask != 0
    if not bool(mask.any()):
        raise ValueError("mask is all zeros: nothing would be measured")
    return mask.contiguous()


def _rle_encode(mask: torch.Tensor) -> list[int]:
    """Run lengths of the row-major flattened mask, alternating False/True runs, starting with False."""
    flat = mask.reshape(-1).numpy().astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def _rle_decode(runs, shape) -> torch.Tensor:
    runs = np.asarray(runs, dtype=np.int64)
    values = np.arange(runs.size) % 2 == 1
    flat = np.repeat(values, runs)
    if flat.size != int(shape[0]) * int(shape[1]):
        raise ValueError(f"config['mask_rle'] does not describe a mask of shape {tuple(shape)}")
    return torch.from_numpy(flat.reshape(int(shape[0]), int(shape[1])))


@register_operator
class SingleCoilFourier(LinearOperator):
    r"""Single-coil MRI ``y = M F x``.

    ``F`` is the orthonormal centred 2-D DFT over the last two dims (``ifftshift -> fft2(norm="ortho") ->
    fftshift``; DC at ``(H // 2, W // 2)``) and ``M`` the k-space mask. ``A A^H = M`` is the identity on the
    range, so ``A_dagger = A_adjoint = F^H M``: the zero-filled reconstruction.

    Shapes: ``x`` ``(B, C, H, W)`` real (float32/64, e.g. magnitude images) or complex -> ``y`` complex
    ``(B, C, H, W)`` (complex64/128), zero outside the mask. ``A_adjoint(y)`` is complex ``(B, C, H, W)``.
    Measured k-space (e.g. a fastMRI single-coil slice) with its own mask works the same way.

    Args:
        mask (`torch.Tensor` or `np.ndarray`):
            ``(H, W)`` bool (or 0/1) sampling mask, in centred k-space.

    Example::

        >>> import torch
        >>> from idm_imaging.operators import SingleCoilFourier
        >>> op = SingleCoilFourier.from_mask_params("random", (64, 64), acceleration=4)
        >>> y = op(torch.rand(1, 1, 64, 64))
        >>> y.dtype, op.A_dagger(y).shape
        (torch.complex64, torch.Size([1, 1, 64, 64]))
    """

    is_complex = True

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", _as_mask(mask), persistent=False)
        self._mask_params: dict | None = None
        self._mask_cache: dict = {}

    @classmethod
    def from_mask_params(
        cls, kind: str, shape, acceleration: float, center_fraction: float | None = None, seed: int = 0
    ) -> "SingleCoilFourier":
        """Build the operator on ``make_mask(kind, shape, acceleration, center_fraction, seed)``; its config
        then stores these parameters instead of the mask."""
        op = cls(make_mask(kind, shape, acceleration, center_fraction=center_fraction, seed=seed))
        op._mask_params = {
            "kind": kind,
            "shape": [int(s) for s in shape],
            "acceleration": float(acceleration),
            "center_fraction": None if center_fraction is None else float(center_fraction),
            "seed": int(seed),
        }
        return op

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)

    @property
    def acceleration(self) -> float:
        """Achieved acceleration ``H * W / mask.sum()``."""
        return self.mask.numel() / int(self.mask.sum())

    def _mask_on(self, device: torch.device) -> torch.Tensor:
        if self.mask.device == device:
            return self.mask
        m = self._mask_cache.get(device)
        if m is None:
            m = self._mask_cache[device] = self.mask.to(device)
        return m

    def _check(self, t, name: str) -> None:
        check_image(t, name)
        if tuple(t.shape[-2:]) != self.shape:
            raise ValueError(f"{name} has spatial size {tuple(t.shape[-2:])}, the mask is {self.shape}")

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """``(B, C, H, W)`` real or complex -> complex ``(B, C, H, W)`` k-space, zero outside the mask."""
        self._check(x, "x")
        return fft2c(x) * self._mask_on(x.device)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Complex k-space ``(B, C, H, W)`` -> complex image ``(B, C, H, W)`` (zero-filled: ``F^H M y``)."""
        self._check(y, "y")
        return ifft2c(y * self._mask_on(y.device))

    def _noise_support(self, noise: torch.Tensor) -> torch.Tensor:
        return noise * self._mask_on(noise.device)

    def get_config(self) -> dict:
        if self._mask_params is not None:
            return {"type": "SingleCoilFourier", "mask_params": dict(self._mask_params)}
        return {"type": "SingleCoilFourier", "shape": list(self.shape), "mask_rle": _rle_encode(self.mask)}

    @classmethod
    def from_config(cls, config: dict, *, shape=None, acceleration=None, mask_kind=None,
                    **other) -> "SingleCoilFourier":
        """Rebuild from :meth:`get_config` (``mask_params``, ``mask_rle`` + ``shape``, or an explicit ``mask``
        array) or from a model's record ``{"mask": kind, "acceleration": R, "center_fraction": c}`` (or its
        ranges ``acceleration_range`` / ``mask_kinds``), which needs ``shape`` (see :func:`operator_from_config`)."""
        if other:
            raise ValueError(f"{sorted(other)} do not apply to a SingleCoilFourier record")
        if "mask_params" in config:
            params = dict(config["mask_params"])
            if shape is not None:
                params["shape"] = pick(params, "shape", [int(s) for s in shape])
            params["acceleration"] = pick(params, "acceleration", acceleration)
            params["kind"] = pick(params, "kind", mask_kind)
            return cls.from_mask_params(**params)
        if "mask_rle" in config and "shape" in config:
            if shape is not None:
                pick(config, "shape", [int(s) for s in shape])
            return cls(_rle_decode(config["mask_rle"], config["shape"]))
        if isinstance(config.get("mask"), str) or "mask_kinds" in config or "acceleration_range" in config:
            kind = pick(config, "mask", mask_kind, "mask_kinds")
            acc = pick(config, "acceleration", acceleration, "acceleration_range")
            size = pick(config, "shape", None if shape is None else [int(s) for s in shape])
            if kind is None or acc is None:
                raise ValueError("config for SingleCoilFourier needs 'mask' (a mask kind) and 'acceleration'")
            if size is None:
                raise ValueError("config: this SingleCoilFourier record has no image size; pass shape=(H, W)")
            return cls.from_mask_params(kind, size, acc, center_fraction=config.get("center_fraction"),
                                        seed=int(config.get("seed") or 0))
        if "mask" in config:
            return cls(torch.as_tensor(np.asarray(config["mask"], dtype=bool)))
        raise ValueError("config for SingleCoilFourier needs 'mask_params', 'mask_rle' + 'shape', 'mask' "
                         "(an array, or a mask kind with 'acceleration')")

    def extra_repr(self) -> str:
        return f"shape={self.shape}, acceleration={self.acceleration:.3f}, mask_params={self._mask_params}"
