"""MONAI transforms that simulate a compressed-sensing acquisition of an image.

Two acquisitions, each as an array transform and a dictionary twin (MONAI's ``...d`` convention):

- :class:`BlockCSAcquisition` / :class:`BlockCSAcquisitiond`: block compressed sensing
  (:class:`idm_imaging.operators.BlockCS`) of a real image.
- :class:`KspaceUndersample` / :class:`KspaceUndersampled`: single-coil Cartesian/non-Cartesian k-space
  undersampling (:class:`idm_imaging.operators.SingleCoilFourier`) of a real or complex image.

Layout (MONAI's, no batch dimension): a 2-D image is ``(C, H, W)``; a 3-D volume from ``LoadImaged`` is
``(C, H, W, D)`` and is acquired slice by slice along the last axis ``D`` with one operator for all slices
(the slices are folded into the operator's batch dimension, so this is one call, not a Python loop).

Every acquisition records the parameters needed to replay it exactly (a JSON-serialisable dict, the
"acquisition record")::

    {"operator": op.get_config(),   # rebuilds the operator: operator_from_config(record["operator"])
     "sigma": float,                # std of the additive Gaussian measurement noise
     "noise_seed": int,             # seed of that noise (drawn from the transform's RandomState)
     "spatial_dims": 2 | 3,         # 3: the measurement carries the slice axis last
     "intensity": {"offset": float, "scale": float},  # the models see (x - offset) / scale (see below)
     "normalised": bool,            # optional: the measurement is of (x - offset) / scale (``idm-imaging simulate``)
     "noise_per_slice": bool}       # optional: slice i's noise is seeded by noise_seed + i (``idm-imaging simulate``)

``intensity`` is what the command line normalises the image with before a model sees it
(:func:`idm_imaging.inference.intensity_range` over the whole image or volume): :class:`IDMReconstruct` maps the
measurement to those units, runs the model and maps the result back, so raw scanner intensities (IXI T1 up to
~3000, CT in Hounsfield units) work as well as images scaled to [0, 1]. The measurement itself is ``A x`` in the
image's own units.

:func:`operator_from_record` and :func:`replay_acquisition` rebuild the operator / the measurement from it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import TransformBackends, convert_to_tensor

from idm_imaging.inference import intensity_range
from idm_imaging.operators import MASK_KINDS, build_operator, operator_from_config

__all__ = [
    "AcquisitionResult",
    "BlockCSAcquisition",
    "BlockCSAcquisitiond",
    "KspaceUndersample",
    "KspaceUndersampled",
    "operator_from_record",
    "replay_acquisition",
]

_MAX_SEED = 2**31 - 1


class AcquisitionResult(NamedTuple):
    """What an array acquisition transform returns.

    measurement: ``BlockCS``: real ``(C, q, nh, nw)`` (2-D) or ``(C, q, nh, nw, D)`` (3-D);
        ``SingleCoilFourier``: complex k-space ``(C, H, W)`` or ``(C, H, W, D)``, zero off the mask.
    pinv: pseudo-inverse image ``A^+ y``, same spatial shape and MetaTensor meta (affine) as the input.
    params: the acquisition record (see the module docstring), JSON-serialisable.
    mask: ``(H, W)`` bool k-space mask (``SingleCoilFourier``) or None (``BlockCS``).
    """

    measurement: torch.Tensor
    pinv: torch.Tensor
    params: dict
    mask: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------- helpers
def _check_image(img: Any, name: str, allow_complex: bool) -> torch.Tensor:
    """Validate a channel-first (C, H, W) or (C, H, W, D) image where data enters; returns a tensor."""
    if not isinstance(img, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name}: expected a torch.Tensor, MetaTensor or numpy array, got {type(img).__name__}")
    t = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
    if t.ndim not in (3, 4):
        raise ValueError(
            f"{name}: expected a channel-first image (C, H, W) or volume (C, H, W, D), got shape {tuple(t.shape)}"
        )
    if t.is_complex():
        if not allow_complex:
            raise ValueError(f"{name}: complex input is not supported by block CS (real images only)")
    elif not t.is_floating_point():
        t = t.float()  # uint8 PNGs, int16 DICOM: acquire in float32
    if t.numel() == 0:
        raise ValueError(f"{name}: empty image of shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or Inf values")
    return t


def _plain(t: torch.Tensor) -> torch.Tensor:
    """Strip MetaTensor tracking so reshapes/FFTs inside the operator do not touch the meta."""
    return t.as_tensor() if isinstance(t, MetaTensor) else t


def _to_slices(x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (1, C, H, W); (C, H, W, D) -> (D, C, H, W): the slices become the operator's batch."""
    return x[None] if x.ndim == 3 else x.permute(3, 0, 1, 2)


def _from_slices(b: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Inverse of :func:`_to_slices` for any per-slice shape: (1, C, ...) -> (C, ...); (D, C, ...) -> (C, ..., D)."""
    return b[0] if spatial_dims == 2 else b.movedim(0, -1).contiguous()


def _like(data: torch.Tensor, ref: Any) -> torch.Tensor:
    """Wrap ``data`` as a MetaTensor carrying a copy of ``ref``'s meta (affine, filename...) when ``ref`` has any."""
    if isinstance(ref, MetaTensor):
        out = MetaTensor(data, meta=dict(ref.meta), applied_operations=list(ref.applied_operations))
        out.affine = ref.affine.clone()
        return out
    return data


def _jsonable(obj: Any) -> Any:
    """Turn a (possibly collated/decollated) record into plain JSON types: tensors/arrays -> numbers/lists.

    Dict entries that are None are dropped (the operator's from_config then uses its default, which is what
    None meant), because ``DataLoader``'s default collation cannot batch None.
    """
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return _jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _normalise_record(params: Any, name: str = "params") -> dict:
    """Accept the record as a dict (possibly with tensors after DataLoader collation) or a JSON string."""
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name}: not a valid JSON acquisition record ({e})") from None
    if not isinstance(params, Mapping):
        raise TypeError(f"{name}: expected an acquisition record dict, got {type(params).__name__}")
    rec = _jsonable(params)
    for k in ("operator", "sigma", "noise_seed", "spatial_dims"):
        if k not in rec:
            raise ValueError(f"{name}: acquisition record lacks the entry {k!r}")
    if rec["spatial_dims"] not in (2, 3):
        raise ValueError(f"{name}: spatial_dims must be 2 or 3, got {rec['spatial_dims']!r}")
    return rec


def operator_from_record(params: Any, name: str = "params") -> torch.nn.Module:
    """Rebuild the operator of an acquisition record (dict, collated dict or JSON string)."""
    rec = _normalise_record(params, name)
    return operator_from_config(rec["operator"])


def _measure(op: torch.nn.Module, x: torch.Tensor, sigma: float, noise_seed: int, per_slice: bool = False
             ) -> torch.Tensor:
    """y = A(x) + sigma * n for all slices at once, or slice i with noise seed ``noise_seed + i`` (``per_slice``);
    x (C, H, W[, D]) plain tensor."""
    xb = _to_slices(x)
    with torch.no_grad():
        if per_slice and sigma > 0:
            y = torch.cat([op.measure(xb[i:i + 1], sigma=sigma, seed=noise_seed + i) for i in range(len(xb))])
        else:
            y = op.measure(xb, sigma=sigma, seed=noise_seed)
    return _from_slices(y, x.ndim - 1)


def _pinv(op: torch.nn.Module, y: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """x = A^+ y for all slices at once; y as produced by :func:`_measure`."""
    yb = y[None] if spatial_dims == 2 else y.movedim(-1, 0)
    with torch.no_grad():
        return _from_slices(op.A_dagger(yb), spatial_dims)


def replay_acquisition(img: Any, params: Any) -> torch.Tensor:
    """Re-measure ``img`` ((C, H, W) or (C, H, W, D)) with the operator and noise of a stored record.

    Returns exactly the measurement the acquisition transform produced for the same image. For a record of
    ``idm-imaging simulate`` pass its input as ``(1, H, W)`` (a 2-D image) or ``(1, H, W, D)`` (a ``(D, H, W)``
    volume); the saved ``(D, 1, ...)`` measurement is the result with its last axis moved first (2-D: D = 1).
    """
    rec = _normalise_record(params)
    x = _plain(_check_image(img, "img", allow_complex=True))
    if x.ndim - 1 != rec["spatial_dims"]:
        raise ValueError(
            f"img: record is for spatial_dims={rec['spatial_dims']}, got an image of shape {tuple(x.shape)}"
        )
    if rec.get("normalised"):
        x = (x - rec["intensity"]["offset"]) / rec["intensity"]["scale"]
    op = operator_from_config(rec["operator"])
    return _measure(op, x, float(rec["sigma"]), int(rec["noise_seed"]), bool(rec.get("noise_per_slice")))


def _check_sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma: expected a finite number >= 0, got {sigma!r}")
    return float(sigma)


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= _MAX_SEED:
        raise ValueError(f"seed: expected None or an int in [0, 2**31 - 1], got {seed!r}")
    return int(seed)


# ------------------------------------------------------------------------------------------------ base
class _Acquisition(Randomizable, Transform):
    """Shared logic: seed drawing, operator caching, slice folding, meta propagation."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, seed: int | None, sigma: float) -> None:
        self.seed = _check_seed(seed)
        self.sigma = _check_sigma(sigma)
        self._op_seed: int = 0
        self._noise_seed: int = 0
        self._cache: tuple[Any, torch.nn.Module] | None = None  # (key, operator): rebuilding Phi costs a QR

    def randomize(self, data: Any = None) -> None:
        # Always draw both numbers so the RandomState stream does not depend on seed/sigma settings.
        op_seed, noise_seed = (int(v) for v in self.R.randint(0, _MAX_SEED, size=2))
        self._op_seed = op_seed if self.seed is None else self.seed
        self._noise_seed = noise_seed

    def _build(self, shape: tuple[int, int]) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _operator(self, shape: tuple[int, int]) -> torch.nn.Module:
        key = (self._op_seed, shape)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._build(shape))
        return self._cache[1]

    def _acquire(self, img: Any, allow_complex: bool, randomize: bool) -> tuple[Any, torch.Tensor, torch.Tensor, dict]:
        x_in = _check_image(img, "img", allow_complex)
        if randomize:
            self.randomize()
        x = _plain(x_in)
        op = self._operator((int(x.shape[1]), int(x.shape[2])))
        y = _measure(op, x, self.sigma, self._noise_seed)
        offset, scale = intensity_range(x, op.is_complex)
        params = {
            "operator": _jsonable(op.get_config()),
            "sigma": self.sigma,
            "noise_seed": self._noise_seed,
            "spatial_dims": x.ndim - 1,
            "intensity": {"offset": offset, "scale": scale},
        }
        return op, x_in, y, params


# --------------------------------------------------------------------------------------------- block CS
class BlockCSAcquisition(_Acquisition):
    """Simulate a block compressed-sensing acquisition ``y = A x + sigma n`` of a real image.

    ``A`` is :class:`idm_imaging.operators.BlockCS` (B x B blocks, ``q = ceil(ratio * B^2)`` orthonormal
    rows, optional global pixel permutation, zero padding to a multiple of B, cropped back on ``A^+``).

    Args:
        ratio (`float`):
            Sampling ratio in (0, 1].
        block_size (`int`, *optional*, defaults to 32):
            Block side B (>= 2).
        permute (`bool`, *optional*, defaults to `True`):
            Whether to apply the global random pixel permutation (the IDM reference protocol).
        seed (`int`, *optional*):
            Operator seed. `None`: drawn from the transform's RandomState on every call (a new operator per
            image; ``set_random_state`` makes the sequence reproducible). An int: the same operator always.
        sigma (`float`, *optional*, defaults to 0.0):
            Std of additive Gaussian measurement noise (>= 0). Its seed is always drawn from the RandomState and
            stored in the record, so a fixed operator still gets fresh noise per image.

    Input: ``img`` real ``(C, H, W)`` or ``(C, H, W, D)`` (tensor, MetaTensor or ndarray), typically in [0, 1];
    integer dtypes are converted to float32. Output (:class:`AcquisitionResult`):
    measurement float ``(C, q, nh, nw[, D])`` with ``nh = ceil(H / B)``, ``nw = ceil(W / B)``; pinv
    ``A^+ y`` float ``(C, H, W[, D])`` as a MetaTensor with the input's meta (affine); params the record
    (operator config incl. seed and img_size); mask None.

    Example:
        >>> import torch
        >>> acq = BlockCSAcquisition(ratio=0.25, block_size=8, seed=3)
        >>> y, x_pinv, params, _ = acq(torch.rand(1, 16, 24))
        >>> tuple(y.shape), tuple(x_pinv.shape), params["operator"]["seed"]
        ((1, 16, 2, 3), (1, 16, 24), 3)
    """

    def __init__(
        self, ratio: float, block_size: int = 32, permute: bool = True, seed: int | None = None, sigma: float = 0.0
    ) -> None:
        super().__init__(seed, sigma)
        self.ratio = ratio
        self.block_size = block_size
        self.permute = bool(permute)
        # Validate ratio/block_size now (the operator checks them) rather than on the first image.
        build_operator("cs", (block_size, block_size), ratio=ratio, block_size=block_size, permute=False)

    def _build(self, shape: tuple[int, int]) -> torch.nn.Module:
        return build_operator("cs", shape, ratio=self.ratio, block_size=self.block_size, permute=self.permute,
                              seed=self._op_seed)

    def __call__(self, img: Any, randomize: bool = True) -> AcquisitionResult:
        op, x_in, y, params = self._acquire(img, allow_complex=False, randomize=randomize)
        pinv = _pinv(op, y, params["spatial_dims"])
        return AcquisitionResult(y, _like(pinv, x_in), params, None)


# --------------------------------------------------------------------------------------------------- MRI
class KspaceUndersample(_Acquisition):
    """Simulate single-coil k-space undersampling ``y = M F x + sigma n`` of a real or complex image.

    ``F`` is the orthonormal centred 2-D DFT (equal to MONAI's ``monai.data.fft_utils.fftn_centered``) and
    ``M`` an ``(H, W)`` mask from :func:`idm_imaging.operators.make_mask`, which offers more patterns than
    MONAI's ``RandomKspaceMask``/``EquispacedKspaceMask``: "random", "equispaced", "gaussian1d",
    "gaussian2d", "poisson", "radial", "spiral".

    Args:
        mask_kind (`str`, *optional*, defaults to `"random"`):
            One of the kinds above.
        acceleration (`float`, *optional*, defaults to 4):
            Undersampling factor (> 1).
        center_fraction (`float`, *optional*):
            Fully sampled centre fraction; `None` takes the mask kind's default.
        seed (`int`, *optional*):
            Mask seed; `None` draws one from the RandomState per call, an int fixes the mask.
        sigma (`float`, *optional*, defaults to 0.0):
            Std of complex Gaussian noise on the sampled k-space entries.
        return_complex (`bool`, *optional*, defaults to `False`):
            Whether to return the zero-filled image as complex; `False` returns its magnitude (what
            magnitude-image pipelines, metrics and ``SaveImaged`` expect), or its real part for a real image with
            negative values (e.g. CT in HU), which keeps its sign.

    Input: ``img`` real or complex ``(C, H, W)`` or ``(C, H, W, D)``. Output (:class:`AcquisitionResult`):
    measurement complex k-space ``(C, H, W[, D])`` (zero off the mask); pinv the zero-filled image
    ``F^H M^T y`` (complex or float magnitude) as a MetaTensor with the input's meta; params the record;
    mask bool ``(H, W)``.

    Example:
        >>> import torch
        >>> us = KspaceUndersample("equispaced", acceleration=4, seed=0)
        >>> k, zf, params, mask = us(torch.rand(1, 32, 32))
        >>> k.dtype, tuple(zf.shape), tuple(mask.shape)
        (torch.complex64, (1, 32, 32), (32, 32))
    """

    def __init__(
        self,
        mask_kind: str = "random",
        acceleration: float = 4,
        center_fraction: float | None = None,
        seed: int | None = None,
        sigma: float = 0.0,
        return_complex: bool = False,
    ) -> None:
        super().__init__(seed, sigma)
        self.mask_kind = mask_kind
        self.acceleration = acceleration
        self.center_fraction = center_fraction
        self.return_complex = bool(return_complex)
        # Validate the mask parameters now; whether the image is large enough for them shows on the first image.
        if not isinstance(mask_kind, str) or mask_kind not in MASK_KINDS:
            raise ValueError(f"mask_kind: kind must be one of {sorted(MASK_KINDS)}, got {mask_kind!r}")
        MASK_KINDS[mask_kind](acceleration, center_fraction, 0)

    def _build(self, shape: tuple[int, int]) -> torch.nn.Module:
        return build_operator("mri", shape, mask_kind=self.mask_kind, acceleration=self.acceleration,
                              center_fraction=self.center_fraction, seed=self._op_seed)

    def __call__(self, img: Any, randomize: bool = True) -> AcquisitionResult:
        op, x_in, y, params = self._acquire(img, allow_complex=True, randomize=randomize)
        zf = _pinv(op, y, params["spatial_dims"])
        if not self.return_complex:
            # a real signed image (CT in HU) keeps its sign: its real part, not a magnitude
            zf = zf.real.contiguous() if params["intensity"]["offset"] != 0 else zf.abs()
        mask = op.mask.detach().to(device="cpu", dtype=torch.bool).clone()
        return AcquisitionResult(y, _like(zf, x_in), params, mask)


# ------------------------------------------------------------------------------------------- dictionary
class _AcquisitionD(Randomizable, MapTransform):
    """Dictionary twin: one random draw per call, shared by all keys (MONAI's convention for paired keys)."""

    backend = _Acquisition.backend

    def __init__(
        self,
        keys: KeysCollection,
        transform: _Acquisition,
        meas_postfix: str,
        pinv_postfix: str,
        acq_postfix: str,
        mask_postfix: str | None,
        allow_missing_keys: bool,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        postfixes = [p for p in (meas_postfix, pinv_postfix, acq_postfix, mask_postfix) if p is not None]
        if any(not isinstance(p, str) or not p for p in postfixes) or len(set(postfixes)) != len(postfixes):
            raise ValueError(f"postfixes: expected distinct non-empty strings, got {postfixes!r}")
        self.acq = transform
        self.meas_postfix, self.pinv_postfix, self.acq_postfix = meas_postfix, pinv_postfix, acq_postfix
        self.mask_postfix = mask_postfix

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.acq.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.acq.randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            try:
                res = self.acq(d[key], randomize=False)
            except (ValueError, TypeError) as e:
                raise type(e)(f"key {key!r}: {e}") from e
            d[f"{key}{self.meas_postfix}"] = res.measurement
            d[f"{key}{self.pinv_postfix}"] = res.pinv
            d[f"{key}{self.acq_postfix}"] = res.params
            if self.mask_postfix is not None and res.mask is not None:
                d[f"{key}{self.mask_postfix}"] = res.mask
        return d


class BlockCSAcquisitiond(_AcquisitionD):
    """Dictionary version of :class:`BlockCSAcquisition`.

    For each key ``k`` (e.g. "image") it adds:
        ``k + "_meas"``: measurement, float ``(C, q, nh, nw[, D])``;
        ``k + "_pinv"``: pseudo-inverse image, MetaTensor ``(C, H, W[, D])`` with ``d[k]``'s meta (affine);
        ``k + "_acq"``: acquisition record (dict, JSON-serialisable; see the module docstring).
    The postfixes are arguments. ``d[k]`` is left unchanged. All keys of one call share one draw
    (operator seed and noise seed).

    Example:
        >>> import torch
        >>> t = BlockCSAcquisitiond("image", ratio=0.1, seed=0)
        >>> out = t({"image": torch.rand(1, 64, 64)})
        >>> sorted(out)
        ['image', 'image_acq', 'image_meas', 'image_pinv']
    """

    def __init__(
        self,
        keys: KeysCollection,
        ratio: float,
        block_size: int = 32,
        permute: bool = True,
        seed: int | None = None,
        sigma: float = 0.0,
        meas_postfix: str = "_meas",
        pinv_postfix: str = "_pinv",
        acq_postfix: str = "_acq",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            BlockCSAcquisition(ratio, block_size=block_size, permute=permute, seed=seed, sigma=sigma),
            meas_postfix,
            pinv_postfix,
            acq_postfix,
            None,
            allow_missing_keys,
        )


class KspaceUndersampled(_AcquisitionD):
    """Dictionary version of :class:`KspaceUndersample`.

    For each key ``k`` it adds ``k + "_meas"`` (complex k-space ``(C, H, W[, D])``), ``k + "_pinv"``
    (zero-filled image MetaTensor with ``d[k]``'s meta; magnitude unless ``return_complex``, the real part for a
    real image with negative values), ``k + "_acq"`` (acquisition record) and ``k + "_mask"`` (bool ``(H, W)``). Postfixes are arguments.

    Example:
        >>> import torch
        >>> t = KspaceUndersampled("image", mask_kind="random", acceleration=4, seed=1)
        >>> sorted(t({"image": torch.rand(1, 32, 32)}))
        ['image', 'image_acq', 'image_mask', 'image_meas', 'image_pinv']
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_kind: str = "random",
        acceleration: float = 4,
        center_fraction: float | None = None,
        seed: int | None = None,
        sigma: float = 0.0,
        return_complex: bool = False,
        meas_postfix: str = "_meas",
        pinv_postfix: str = "_pinv",
        acq_postfix: str = "_acq",
        mask_postfix: str = "_mask",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            KspaceUndersample(
                mask_kind, acceleration, center_fraction=center_fraction, seed=seed, sigma=sigma,
                return_complex=return_complex,
            ),
            meas_postfix,
            pinv_postfix,
            acq_postfix,
            mask_postfix,
            allow_missing_keys,
        )
