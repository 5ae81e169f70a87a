"""Qt-free volume reconstruction: simulate (or take) measurements slice by slice and reconstruct them.

Used by the command line (``idm-imaging reconstruct`` / ``simulate``); works on 2-D images ``(H, W)`` and 3-D
volumes ``(D, H, W)`` (slices first, the :func:`idm_imaging.io.read_scan` layout), real or complex.

Intensity normalisation (the models are trained on images in [0, 1]): the model sees ``x' = (x - offset) / scale``
and results are mapped back as ``x = scale * x' + offset``.

* block CS (``task "cs"``, real): ``offset = min x``, ``scale = max x - min x`` (min-max over the volume); so CT in
  Hounsfield units and 16-bit images enter the model in [0, 1].
* MRI (``task "mri"``): ``offset = 0``, ``scale = max |x|`` for complex and non-negative (magnitude) images; for
  measured k-space ``scale = max |A^+ y|`` of the zero-filled volume (measured data has no known minimum). A real
  image with negative values (CT in Hounsfield units) is min-max normalised as for block CS and its results are
  the real part, mapped back: a signed image stays signed instead of becoming a magnitude.

Each slice is measured as ``y = A x' + sigma n`` with noise seeded by ``seed + slice index`` (results do not depend
on ``batch_size``), reconstructed as ``A^+ y`` (pseudo-inverse / zero-filled) and, with a model, ``model(y, A)``.

Example::

    >>> import torch
    >>> from idm_imaging.inference import reconstruct_volume
    >>> from idm_imaging.operators import BlockCS
    >>> vol = torch.rand(3, 32, 32)
    >>> res = reconstruct_volume(vol, lambda hw: BlockCS(0.5, block_size=16, img_size=hw), None, batch_size=2)
    >>> res.pinv.shape, res.recon is None
    (torch.Size([3, 32, 32]), True)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Generator, Iterator, NamedTuple

import numpy as np
import torch

__all__ = ["VolumeReconstruction", "ReconstructionOptions", "reconstruct_volume", "iter_reconstruct_volume",
           "SliceBatch", "iter_slice_batches", "to_units", "intensity_range", "volume_metrics", "resolve_device",
           "kspace_slice_network", "bf16_is_fast", "resolve_precision", "PRECISIONS"]

PRECISIONS = ("auto", "fp32", "bf16")  # what ``precision`` accepts everywhere (resolve_precision)


@dataclass
class VolumeReconstruction:
    """Result of :func:`reconstruct_volume`; images have the input's shape ((H, W) or (D, H, W)), original units.

    pinv: ``A^+ y`` (real for block CS, complex for MRI). recon: the model's output (same dtype rules) or None
    without a model. measurement: ``y`` of all slices, ``(D, 1, ...)`` as the operator produces it (D = 1 for a
    2-D input), in normalised units. operator: the operator (built once for the slice size). offset/scale: the
    intensity normalisation. reference: the fully sampled input (None for measured data).
    """

    pinv: torch.Tensor
    recon: torch.Tensor | None
    measurement: torch.Tensor
    operator: torch.nn.Module
    offset: float
    scale: float
    reference: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def normalised(self, t: torch.Tensor) -> torch.Tensor:
        """Map an output back to the model's [0, 1] units: ``(t - offset) / scale`` (magnitude for complex)."""
        t = t.abs() if t.is_complex() else t
        return (t - self.offset) / self.scale


def resolve_device(device: str | torch.device | None, name: str = "device") -> torch.device:
    """``"auto"``/None -> ``cuda`` when available, else ``cpu``; otherwise a checked torch device.

    Raises ValueError naming ``name`` (the argument or setting) for unknown strings or CUDA devices that are not
    present.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{name}: {device!r} is not a torch device (use auto, cpu or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    return dev


def _cpu_capabilities() -> dict:
    get = getattr(torch.cpu, "get_capabilities", None)
    try:
        return dict(get()) if get is not None else {}
    except Exception:  # an unknown platform: assume no native bf16
        return {}


def bf16_is_fast(device: str | torch.device | None = None) -> bool:
    """Whether bfloat16 autocast speeds the models up on ``device`` (None / "auto": the default device).

    CUDA: compute capability 8.0 or newer (native bf16 tensor cores). CPU: native bf16 instructions
    (AVX512-BF16, AMX-BF16, or Arm's BF16). Without them the CPU emulates bf16 and a reconstruction runs many
    times slower than in float32; other devices: False.
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if dev.type == "cpu":
        caps = _cpu_capabilities()
        return any(bool(caps.get(k)) for k in ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"))
    return False


def resolve_precision(precision: str, device: str | torch.device | None = None, model: Any = None) -> str:
    """The precision to run ``model`` in on ``device``: ``"fp32"`` or ``"bf16"``.

    ``"auto"`` is ``"bf16"`` where :func:`bf16_is_fast` and the model says that autocast is safe for it (an
    attribute ``bf16_autocast_safe = True``: :class:`~idm_imaging.models.IDM`, whose data-consistency steps run in
    float32 inside autocast), else ``"fp32"``. ``"bf16"`` where bf16 is not fast runs in ``"fp32"`` with a
    ``UserWarning`` (bf16 would be slower there, and no more accurate).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision == "auto":
        return "bf16" if getattr(model, "bf16_autocast_safe", False) is True and bf16_is_fast(device) else "fp32"
    if precision == "bf16" and not bf16_is_fast(device):
        warnings.warn(f"precision: bf16 has no native support on {resolve_device(device)} here and would be slower "
                      "than fp32; running in fp32", UserWarning, stacklevel=2)
        return "fp32"
    return precision


def intensity_range(x: torch.Tensor, complex_operator: bool) -> tuple[float, float]:
    """``(offset, scale)`` that map ``x`` to the models' range as ``(x - offset) / scale``.

    Block CS (real operator) and real images with negative values: min-max. MRI of a complex or non-negative
    image: ``(0, max |x|)``, which keeps zero at zero (k-space carries no offset). A constant image gets scale 1.
    """
    if x.is_complex() or (complex_operator and float(x.min()) >= 0):
        return 0.0, float(x.abs().max()) or 1.0
    lo, hi = float(x.min()), float(x.max())
    return lo, (hi - lo) or 1.0


def _as_stack(t: Any, name: str) -> tuple[torch.Tensor, bool]:
    if isinstance(t, np.ndarray):
        if not (np.issubdtype(t.dtype, np.number) or t.dtype == bool):
            raise TypeError(f"{name}: expected a numeric array, got dtype {t.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(t))
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(t).__name__}")
    if t.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2-D image or a 3-D stack ((H, W) or (D, H, W)), "
                         f"got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name}: empty array of shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.is_complex()):
        t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or Inf values")
    return (t[None] if t.ndim == 2 else t), t.ndim == 2


def reconstruct_volume(
    volume: torch.Tensor | np.ndarray,
    operator_factory: Callable[[tuple[int, int]], torch.nn.Module],
    model: Callable | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> VolumeReconstruction:
    """Reconstruct a 2-D image or 3-D volume slice by slice: :func:`iter_reconstruct_volume` run to the end.

    ``options`` are its keywords (``options=ReconstructionOptions(...)`` and / or that dataclass's fields);
    ``progress`` is called as ``progress(done_slices, total_slices)`` after each batch (e.g. a tqdm update).
    """
    steps = iter_reconstruct_volume(volume, operator_factory, model, **options)
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None and done:
            progress(done, total)


@dataclass(frozen=True)
class ReconstructionOptions:
    """How :func:`iter_reconstruct_volume` runs; the command line and the napari plugin each pass one.

    Args:
        batch_size (`int`, *optional*, defaults to 4):
            Slices per model call (>= 1).
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`):
            ``"auto"``, ``"cpu"``, ``"cuda:N"`` or a torch.device (see :func:`resolve_device`).
        measured (`bool`, *optional*, defaults to `False`):
            The volume is measured k-space (MRI only): reconstruct it as given.
        sigma (`float`, *optional*, defaults to 0.0):
            Std of Gaussian measurement noise added in normalised units (simulation only, >= 0).
        seed (`int`, *optional*, defaults to 0):
            Noise seed of slice 0 (slice i uses ``seed + i``).
        name (`str`, *optional*, defaults to `"volume"`):
            What error messages call the volume.
        precision (`str`, *optional*, defaults to `"auto"`):
            ``"auto"``, ``"fp32"`` or ``"bf16"``: bf16 runs the model under bfloat16 autocast (an IDM keeps its
            measurement projection in float32), faster on CPUs with AVX512-BF16/AMX and on GPUs
            (``benchmarks/cpu_bench.py``); ``"auto"`` picks it for an IDM where it is faster
            (:func:`resolve_precision`); ``info`` records what ran.

    Example:
        >>> ReconstructionOptions(batch_size=8, sigma=0.01).seed
        0
    """

    batch_size: int = 4
    device: str | torch.device | None = "cpu"
    measured: bool = False
    sigma: float = 0.0
    seed: int = 0
    name: str = "volume"
    precision: str = "auto"

    def __post_init__(self):
        b, s = self.batch_size, self.sigma
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {b!r}")
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise ValueError(f"sigma: expected a finite number >= 0, got {s!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected 'auto', 'fp32' or 'bf16', got {self.precision!r}")


def iter_reconstruct_volume(
    volume: torch.Tensor | np.ndarray,
    operator_factory: Callable[[tuple[int, int]], torch.nn.Module],
    model: Callable | None = None,
    options: ReconstructionOptions | None = None,
    **kwargs: Any,
) -> Generator[tuple[int, int], None, VolumeReconstruction]:
    """Reconstruct a 2-D image or 3-D volume slice by slice, ``batch_size`` slices per model call, step by step.

    A generator (GUIs show progress and cancel between batches): it yields ``(done_slices, total_slices)`` once
    after the checks and the normalisation (``done == 0``) and after every batch, and returns (as
    ``StopIteration.value``) the :class:`VolumeReconstruction`. To cancel, stop iterating and ``close()`` it: no
    partial result exists.

    Args:
        volume (`torch.Tensor` or `np.ndarray`):
            Fully sampled image ``(H, W)``/``(D, H, W)`` (real or complex), or with ``measured=True`` centred
            complex k-space of that shape (zero where not sampled).
        operator_factory (`Callable[[tuple[int, int]], torch.nn.Module]`):
            ``(H, W) -> operator`` (see ``docs/ARCHITECTURE.md``); called once.
        model (`Callable`, *optional*):
            ``model(y, operator) -> (B, 1, H, W)`` (e.g. an ``IDM`` in eval mode); `None` gives ``A^+ y`` only.
        options (`ReconstructionOptions`, *optional*):
            How to run; `None` uses the defaults of :class:`ReconstructionOptions`.
        **kwargs:
            Fields of :class:`ReconstructionOptions` (``batch_size``, ``device``, ``measured``, ``sigma``,
            ``seed``, ``name``, ``precision``); they replace those of ``options``.

    Returns:
        :class:`VolumeReconstruction` with outputs in the input's units and shape (the generator's return value).
    """
    o = replace(options or ReconstructionOptions(), **kwargs)
    if model is not None and not callable(model):
        raise TypeError(f"model: expected a callable model(y, operator) or None, got {type(model).__name__}")
    if not callable(operator_factory):
        raise TypeError(f"operator_factory: expected a callable (H, W) -> operator, got {type(operator_factory).__name__}")
    dev = resolve_device(o.device)
    precision = resolve_precision(o.precision, dev, model) if model is not None else o.precision
    x, squeeze = _as_stack(volume, o.name)
    op, x = _operator_for(operator_factory, x, o.measured)
    op = op.to(dev)
    offset, scale = _normalisation(x, op, o.measured, dev)
    # a real signed image under a Fourier operator: its results are real (see the module docstring)
    real_out = op.is_complex and not x.is_complex() and offset != 0
    if isinstance(model, torch.nn.Module):
        model.to(dev)
    measure = _slice_measurements(x, op, offset, scale, o, dev)

    depth, pinv, recon, meas = x.shape[0], [], [], []
    yield 0, depth
    for batch in iter_slice_batches(measure, depth, op, model, batch_size=o.batch_size, precision=precision):
        meas.append(batch.y.cpu())
        pinv.append(batch.pinv[:, 0].cpu())
        if batch.recon is not None:
            recon.append(batch.recon[:, 0].cpu())
        yield batch.stop, depth

    def back(parts: list[torch.Tensor]) -> torch.Tensor:
        t = to_units(torch.cat(parts), offset, scale, real_out)
        return t[0] if squeeze else t

    ref = None if o.measured else (x[0] if squeeze else x)
    return VolumeReconstruction(
        pinv=back(pinv), recon=back(recon) if recon else None, measurement=torch.cat(meas), operator=op.cpu(),
        offset=offset, scale=scale, reference=ref,
        info={"device": str(dev), "batch_size": o.batch_size, "sigma": float(o.sigma), "seed": int(o.seed),
              "measured": bool(o.measured), "slices": depth, "precision": precision if model is not None else None},
    )


def _operator_for(operator_factory: Callable, x: torch.Tensor, measured: bool) -> tuple[torch.nn.Module, torch.Tensor]:
    """The operator for the slices of the stack ``x`` and the stack in the dtype it is measured in."""
    op = operator_factory((int(x.shape[1]), int(x.shape[2])))
    if measured and not op.is_complex:
        raise ValueError("measured: only measured k-space (a complex Fourier operator) can be reconstructed as given")
    if not op.is_complex and x.is_complex():
        raise ValueError("volume: block CS is a real acquisition; got a complex image (use its magnitude)")
    return op, x.to(torch.complex64 if measured or x.is_complex() else torch.float32)


def _normalisation(x: torch.Tensor, op: torch.nn.Module, measured: bool, dev: torch.device) -> tuple[float, float]:
    """``(offset, scale)`` of the stack: :func:`intensity_range`, or for measured k-space ``(0, max |A^+ y|)``."""
    if not measured:
        return intensity_range(x, op.is_complex)
    with torch.no_grad():
        zf = torch.cat([op.A_dagger(x[i:i + 1, None].to(dev)).abs().amax().reshape(1) for i in range(x.shape[0])])
    return 0.0, float(zf.max()) or 1.0


def _slice_measurements(x: torch.Tensor, op: torch.nn.Module, offset: float, scale: float,
                        o: ReconstructionOptions, dev: torch.device) -> Callable[[int, int], torch.Tensor]:
    """``measure(start, stop)`` for :func:`iter_slice_batches`: the normalised slices measured (noise of slice i
    seeded by ``seed + i``), or measured k-space as given."""

    def measure(start: int, stop: int) -> torch.Tensor:
        xb = ((x[start:stop, None] - offset) / scale).to(dev)
        if op.is_complex and not xb.is_complex():
            xb = xb.to(torch.complex64)
        if o.measured:
            return xb
        if o.sigma > 0:
            return torch.cat([op.measure(xb[i:i + 1], sigma=float(o.sigma), seed=int(o.seed) + start + i)
                              for i in range(stop - start)])
        return op.A(xb)

    return measure


class SliceBatch(NamedTuple):
    """One batch of :func:`iter_slice_batches`: slices ``start:stop``; ``y`` the measurement ``(B, 1, ...)``,
    ``pinv`` ``A^+ y`` ``(B, 1, H, W)`` (None when not asked for and a model ran), ``recon`` the model's output
    ``(B, 1, H, W)`` as float32 / complex64 (None without a model). All on the operator's device, model units."""

    start: int
    stop: int
    y: torch.Tensor
    pinv: torch.Tensor | None
    recon: torch.Tensor | None


def iter_slice_batches(
    measure: Callable[[int, int], torch.Tensor],
    total: int,
    operator: torch.nn.Module,
    model: Callable | None = None,
    *,
    batch_size: int = 4,
    precision: str = "fp32",
    pinv: bool = True,
) -> Iterator[SliceBatch]:
    """The slice engine: ``total`` slices, ``batch_size`` per model call, one :class:`SliceBatch` per batch.

    :func:`iter_reconstruct_volume` (the command line, the napari plugin) and the MONAI transform
    :class:`idm_imaging.transforms.IDMReconstruct` run through it. ``measure(start, stop)`` returns the
    measurements ``(stop - start, 1, ...)`` of slices ``start:stop`` on the device of ``operator`` and ``model``,
    in the model's units; ``model(y, operator) -> (B, 1, H, W)`` or None (``A^+ y`` only); ``precision`` as
    resolved by :func:`resolve_precision`; ``pinv``: also ``A^+ y`` when a model runs. Callers check
    ``batch_size``. Raises ValueError when the model's output is not ``(B, 1, H, W)``. Gradients are off within
    a batch, not across the yields.
    """
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        with torch.no_grad():
            y = measure(start, stop)
            p = operator.A_dagger(y) if pinv or model is None else None
            out = None
            if model is not None:
                with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    out = model(y, operator)
                if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[:2] != (stop - start, 1):
                    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise ValueError(f"model: expected an output of shape (B, 1, H, W) with B={stop - start}, "
                                     f"got {got}")
                out = out.to(torch.complex64 if out.is_complex() else torch.float32)
        yield SliceBatch(start, stop, y, p, out)


def to_units(t: torch.Tensor, offset: float, scale: float, real_out: bool = False) -> torch.Tensor:
    """Map a result from the model's units back to the image's: ``t * scale + offset``, its real part when
    ``real_out`` (a real signed image measured by a Fourier operator, see the module docstring)."""
    return (t.real if real_out and t.is_complex() else t) * scale + offset


def volume_metrics(pred: torch.Tensor, target: torch.Tensor, task: str, *, offset: float = 0.0,
                   scale: float = 1.0) -> dict[str, float]:
    """Quality of ``pred`` against ``target`` ((H, W) or (D, H, W), any units).

    ``task "mri"``: fastMRI protocol on magnitudes over the volume (``psnr``, ``ssim``, ``nmse``; data range = max of
    the target); with an ``offset`` (a real signed image, see :func:`intensity_range`) on ``t - offset`` instead,
    so that negative values are not folded onto positive ones. ``task "cs"``: paper protocol (:func:`idm_imaging.metrics.psnr_y` / ``ssim_y``) on the images mapped
    to [0, 1] by ``(t - offset) / scale``, averaged over slices.
    """
    if task not in ("cs", "mri"):
        raise ValueError(f"task: expected 'cs' or 'mri', got {task!r}")
    p = pred.abs() if pred.is_complex() else pred
    t = target.abs() if target.is_complex() else target
    if p.shape != t.shape:
        raise ValueError(f"pred: shape {tuple(p.shape)} differs from target shape {tuple(t.shape)}")
    if task == "mri":
        from idm_imaging.metrics import fastmri_metrics

        if offset != 0:
            p = (pred.real if pred.is_complex() else pred) - offset
            t = (target.real if target.is_complex() else target) - offset
        return {k: float(v) for k, v in fastmri_metrics(p.numpy(), t.numpy()).items()}
    from idm_imaging.metrics import psnr_y, ssim_y

    p = ((p - offset) / scale).clamp(0, 1).numpy()
    t = ((t - offset) / scale).clamp(0, 1).numpy()
    p, t = (p[None], t[None]) if p.ndim == 2 else (p, t)
    return {"psnr": float(np.mean([psnr_y(a, b) for a, b in zip(p, t)])),
            "ssim": float(np.mean([ssim_y(a, b) for a, b in zip(p, t)]))}


def kspace_slice_network(model: Callable | None, operator: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``network(x) -> x_hat`` for MONAI's ``SliceInferer`` on the k-space (MRI) path.

    ``SliceInferer`` hands image-grid slices ``(B, 2, H, W)`` (real/imag of the complex zero-filled image
    ``A^+ y``); because ``A A^+ y = y`` for a Fourier mask operator, the measurement is recovered exactly as
    ``y = A(real + i imag)`` and ``model(y, operator)`` (or ``A^+ y`` when ``model`` is None) is returned as a
    magnitude ``(B, 1, H, W)``. Use ``roi_size`` = the full slice: the Fourier operator is global, windows
    would change the problem. (Block-CS measurements ``(q, nh, nw)`` do not live on the image grid, so that path
    uses :class:`idm_imaging.transforms.IDMReconstruct`, which batches slices the same way.)
    """
    if not getattr(operator, "is_complex", False):
        raise ValueError("operator: kspace_slice_network needs a complex (Fourier) operator")

    def network(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 2:
            raise ValueError(f"x: expected (B, 2, H, W) real/imag slices, got shape {tuple(x.shape)}")
        z = torch.complex(x[:, :1].float(), x[:, 1:2].float())
        y = operator.A(z)
        out = operator.A_dagger(y) if model is None else model(y, operator)
        return out.abs().to(x.dtype)

    return network
