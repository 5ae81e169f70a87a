"""MONAI transforms that reconstruct an image from a measurement and its acquisition record.

:class:`IDMReconstruct` / :class:`IDMReconstructd` rebuild the operator from the record written by the
acquisition transforms (:mod:`idm_imaging.transforms.acquisition`), run a reconstruction model (IDM, or the
pseudo-inverse baseline) and return a MetaTensor carrying the image's meta, so ``SaveImaged`` writes it
with the input's affine.

3-D volumes ``(C, H, W, D)`` are reconstructed slice by slice along the last axis, ``batch_size`` slices per
model call, by the slice engine the command line and the napari plugin use
(:func:`idm_imaging.inference.iter_slice_batches`). MONAI's ``SliceInferer`` is not used: it slices an
*image-shaped* input on the output grid, whereas a block-CS measurement ``(C, q, nh, nw, D)`` does not live
on the image grid; slicing the measurement's last axis is its equivalent here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor

from idm_imaging.inference import ReconstructionOptions, iter_slice_batches, resolve_precision, to_units
from idm_imaging.operators import BlockCS, operator_from_config
from idm_imaging.transforms.acquisition import _from_slices, _like, _normalise_record, _plain

__all__ = ["IDMReconstruct", "IDMReconstructd"]


def _model_device(model: Any) -> torch.device | None:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return None


class IDMReconstruct(Transform):
    """Reconstruct ``x_hat`` from a measurement ``y`` and the acquisition record that produced it.

    Args:
        model (`Callable` or `str`, *optional*, defaults to `"pinv"`):
            A callable ``model(y, operator) -> x_hat`` with ``y`` batched ``(B, 1, ...)`` (one channel of one
            slice per batch entry) and ``x_hat`` ``(B, 1, H, W)`` real or complex, e.g. an
            ``idm_imaging.models.IDM`` (put it in eval mode yourself); or `None` / ``"pinv"`` for the operator's
            pseudo-inverse ``A^+ y`` (the zero-filled image for MRI).
        device (`str` or `torch.device`, *optional*):
            Where the model runs; `None` takes the model's parameter device, else the measurement's device. The
            result comes back on the measurement's device.
        batch_size (`int`, *optional*, defaults to 8):
            Slices (times channels) per model call, >= 1.
        return_complex (`bool`, *optional*, defaults to `False`):
            Whether to keep a complex reconstruction complex; `False` returns its magnitude.
        precision (`str`, *optional*, defaults to `"auto"`):
            ``"auto"`` (bf16 for an IDM where the device has native bf16, else fp32), ``"fp32"`` or ``"bf16"``
            (the model under bfloat16 autocast; fp32 with a warning where bf16 has no native support), see
            :func:`idm_imaging.inference.resolve_precision`.

    Intensities: a model sees the measurement of ``(x - offset) / scale`` with the record's ``intensity`` entry
    (written by the acquisition transforms: the command line's normalisation) and its output is mapped back to
    the image's units. A record without it (measured data): MRI takes ``scale = max |A^+ y|`` over the volume, as
    the command line does for measured k-space; block CS needs the image in [0, 1] and raises otherwise. The
    pseudo-inverse (``model=None``) needs no normalisation: it is ``A^+ y`` as is.

    Call: ``recon(meas, params, ref=None)``; ``meas`` as written by the acquisition transform (2-D: block CS
    ``(C, q, nh, nw)``, MRI ``(C, H, W)``; 3-D: the same with the slice axis ``D`` last); ``params`` the
    acquisition record (dict, a DataLoader-collated-then-decollated dict, or its JSON string); ``ref`` a
    MetaTensor whose meta (affine, filename) the output copies. Returns ``(C, H, W[, D])`` float (complex
    if ``return_complex`` and the model returns complex), a MetaTensor when ``ref`` is one.

    Example:
        >>> import torch
        >>> from idm_imaging.transforms import BlockCSAcquisition
        >>> y, x_pinv, params, _ = BlockCSAcquisition(ratio=0.5, block_size=8, seed=0)(torch.rand(1, 16, 16))
        >>> x_hat = IDMReconstruct("pinv")(y, params)
        >>> bool(torch.allclose(x_hat, x_pinv, atol=1e-6))
        True
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        model: Callable | str | None = "pinv",
        device: str | torch.device | None = None,
        batch_size: int = 8,
        return_complex: bool = False,
        precision: str = "auto",
    ) -> None:
        if isinstance(model, str) and model != "pinv":
            raise ValueError(f"model: expected a callable, None or 'pinv', got {model!r}")
        if model is not None and not isinstance(model, str) and not callable(model):
            raise TypeError(
                f"model: expected a callable model(y, operator), None or 'pinv', got {type(model).__name__}"
            )
        self.options = ReconstructionOptions(batch_size=batch_size, precision=precision)  # checks them
        self.model = None if model in (None, "pinv") else model
        self.device = torch.device(device) if device is not None else None  # None: the model's or the input's
        self.return_complex = bool(return_complex)

    def __call__(self, meas: Any, params: Any, ref: Any = None) -> torch.Tensor:
        rec = _normalise_record(params, "params")
        if not isinstance(meas, torch.Tensor):
            meas = convert_to_tensor(meas, track_meta=False)
        y = _plain(meas)
        sd = rec["spatial_dims"]
        op = operator_from_config(rec["operator"])
        per_slice = 4 if isinstance(op, BlockCS) else 3  # (C, q, nh, nw) or (C, H, W)
        if y.ndim != per_slice + (sd == 3):
            raise ValueError(
                f"meas: expected {per_slice + (sd == 3)} dims for a {sd}-D {type(op).__name__} measurement, "
                f"got shape {tuple(y.shape)}"
            )
        if not bool(torch.isfinite(y).all()):
            raise ValueError("meas: contains NaN or Inf values")
        out_device = y.device
        device = self.device or _model_device(self.model) or out_device
        yb = y[None] if sd == 2 else y.movedim(-1, 0)  # (N, C, ...)
        n, c = yb.shape[:2]
        yb = yb.reshape(n * c, 1, *yb.shape[2:])  # one channel of one slice per batch entry
        op = op.to(device)
        precision = "fp32" if self.model is None else resolve_precision(self.options.precision, device, self.model)
        offset, scale, real_out, shift = 0.0, 1.0, False, None
        if self.model is not None:
            with torch.no_grad():
                offset, scale = _intensity(rec, op, yb, device)
                shift = offset * op.A(torch.ones(1, 1, *_image_size(op, yb), device=device)) if offset else None
            real_out = op.is_complex and offset != 0  # a real signed image: see intensity_range

        def measure(start: int, stop: int) -> torch.Tensor:
            yc = yb[start:stop].to(device)
            if self.model is None:
                return yc
            return (yc - shift.to(yc.dtype)) / scale if shift is not None else yc / scale

        chunks = [b.pinv if self.model is None else to_units(b.recon, offset, scale, real_out)
                  for b in iter_slice_batches(measure, n * c, op, self.model, batch_size=self.options.batch_size,
                                              precision=precision, pinv=False)]
        x = torch.cat(chunks).to(out_device)
        if x.is_complex() and not self.return_complex:
            x = x.abs()
        x = _from_slices(x.reshape(n, c, *x.shape[2:]), sd)
        return _like(x, ref)


def _image_size(op: torch.nn.Module, yb: torch.Tensor) -> tuple[int, int]:
    """(H, W) of the images behind a batch of measurements."""
    if isinstance(op, BlockCS):
        return op.img_size or (yb.shape[-2] * op.block_size, yb.shape[-1] * op.block_size)
    return tuple(yb.shape[-2:])


def _intensity(rec: dict, op: torch.nn.Module, yb: torch.Tensor, device) -> tuple[float, float]:
    """(offset, scale) of the record, else derived from the measurement (see :class:`IDMReconstruct`)."""
    inten = rec.get("intensity")
    if inten is not None:
        try:
            offset, scale = float(inten["offset"]), float(inten["scale"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"params: 'intensity' must be {{'offset': number, 'scale': number}}, got {inten!r}") \
                from None
        if not (math.isfinite(offset) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"params: intensity scale must be a finite number > 0, got {inten!r}")
        return offset, scale
    peak, low = 0.0, 0.0
    for i in range(0, yb.shape[0], 16):
        z = op.A_dagger(yb[i : i + 16].to(device))
        peak = max(peak, float(z.abs().amax()))
        low = min(low, float(z.real.amin()) if z.is_complex() else float(z.amin()))
    if op.is_complex:
        return 0.0, peak or 1.0
    if peak > 1.5 or low < -0.5:
        raise ValueError("params: the acquisition record has no 'intensity' entry and the measurement is not of an "
                         "image in [0, 1]; scale the image to [0, 1] first (ScaleIntensityd) or acquire it with "
                         "BlockCSAcquisition(d), which records the intensity range")
    return 0.0, 1.0


class IDMReconstructd(MapTransform):
    """Dictionary version of :class:`IDMReconstruct`.

    For each key ``k`` (the image's key, e.g. "image") it reads ``d[k + "_meas"]`` and ``d[k + "_acq"]``
    (the acquisition transforms' outputs) and writes ``d[k + "_recon"]``, a MetaTensor with the meta of
    ``d[k + "_pinv"]`` (else ``d[k]``), i.e. the input image's affine. Postfixes are arguments.

    After a ``DataLoader``, apply it per item of ``monai.data.decollate_batch(batch)`` (MONAI's post-transform
    pattern); the collated record is accepted as is.

    Example:
        >>> import torch
        >>> from monai.transforms import Compose
        >>> from idm_imaging.transforms import BlockCSAcquisitiond
        >>> acq = BlockCSAcquisitiond("image", ratio=0.25, block_size=8, seed=0)
        >>> t = Compose([acq, IDMReconstructd("image", "pinv")])
        >>> tuple(t({"image": torch.rand(1, 16, 16)})["image_recon"].shape)
        (1, 16, 16)
    """

    def __init__(
        self,
        keys: KeysCollection,
        model: Callable | str | None = "pinv",
        device: str | torch.device | None = None,
        batch_size: int = 8,
        return_complex: bool = False,
        precision: str = "auto",
        meas_postfix: str = "_meas",
        acq_postfix: str = "_acq",
        ref_postfix: str = "_pinv",
        output_postfix: str = "_recon",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.recon = IDMReconstruct(model, device=device, batch_size=batch_size, return_complex=return_complex,
                                    precision=precision)
        self.meas_postfix, self.acq_postfix = meas_postfix, acq_postfix
        self.ref_postfix, self.output_postfix = ref_postfix, output_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.keys:
            mk, ak = f"{key}{self.meas_postfix}", f"{key}{self.acq_postfix}"
            if mk not in d or ak not in d:
                if self.allow_missing_keys:
                    continue
                raise KeyError(f"key {key!r}: IDMReconstructd needs {mk!r} and {ak!r} in the data")
            ref = d.get(f"{key}{self.ref_postfix}")
            if not isinstance(ref, MetaTensor):
                ref = d.get(key)
            try:
                d[f"{key}{self.output_postfix}"] = self.recon(d[mk], d[ak], ref=ref)
            except (ValueError, TypeError) as e:
                raise type(e)(f"key {key!r}: {e}") from e
        return d
