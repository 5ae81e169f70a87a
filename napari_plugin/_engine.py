"""Qt-free reconstruction engine behind the napari widget.

Everything here works on numpy stacks and plain callables, so it is testable without Qt or napari.

The widget builds a :class:`Job` (its inputs, checked at once) and runs :func:`reconstruct` (a generator) in
napari's ``thread_worker``: it yields a :class:`Progress` after every batch of slices, checks ``cancel()`` between
batches, and *returns* a :class:`ReconResult` (or ``None`` when cancelled). Nothing is handed back before the last
slice is done, so a cancelled run leaves no partial output.

Math (shared with the command line, :mod:`idm_imaging.inference`): each slice is normalised to the models'
[0, 1] range (``(x - min) / (max - min)`` for block CS, ``x / max |x|`` for MRI), measured as ``y = A x' + n``,
reconstructed as ``A^+ y`` (zero-filled / pseudo-inverse) and, when a model is given, ``IDM(y, A)``; outputs are
mapped back and shown as magnitudes. Metrics compare them with the fully sampled input (fastMRI protocol for MRI,
Y-channel protocol on [0, 1] for block CS).

Example::

    >>> import numpy as np
    >>> from napari_plugin._engine import Acquisition, Job, run_to_completion
    >>> img = np.random.rand(64, 64).astype(np.float32)
    >>> res = run_to_completion(Job(Acquisition(mode="fourier", acceleration=4), image=img, name="img"))
    >>> [layer.name for layer in res.layers]
    ['img zero-filled 4x random', 'img |error| 4x random']
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Generator

import numpy as np

__all__ = [
    "ACQUISITION_MODES",
    "MASK_KINDS",
    "PSEUDO_INVERSE",
    "CHECKPOINT",
    "Acquisition",
    "Job",
    "Progress",
    "OutputLayer",
    "ReconResult",
    "available_devices",
    "model_choices",
    "model_setting",
    "default_model",
    "display_affine",
    "load_model",
    "reconstruct",
    "run_to_completion",
]

ACQUISITION_MODES = ("block_cs", "fourier", "measured")
try:
    from idm_imaging.operators import MASK_KINDS as _KINDS

    MASK_KINDS = tuple(_KINDS)
except ImportError:  # pragma: no cover - operators are part of the package
    MASK_KINDS = ("random", "equispaced", "gaussian1d", "gaussian2d", "poisson", "radial", "spiral")
PSEUDO_INVERSE = "pseudo-inverse only"
CHECKPOINT = "checkpoint folder..."
_TASK = {"block_cs": "cs", "fourier": "mri", "measured": "mri"}


@dataclass(frozen=True)
class Acquisition:
    """Acquisition parameters chosen in the widget.

    ``mode``: ``"block_cs"`` (natural images, real), ``"fourier"`` (simulated single-coil MRI from a fully
    sampled image) or ``"measured"`` (k-space given as data plus a sampling mask).
    """

    mode: str = "fourier"
    ratio: float = 0.1
    block_size: int = 32
    permute: bool = True
    mask_kind: str = "random"
    acceleration: float = 4.0
    center_fraction: float | None = None
    seed: int = 0
    sigma: float = 0.0

    def __post_init__(self):
        if self.mode not in ACQUISITION_MODES:
            raise ValueError(f"mode must be one of {ACQUISITION_MODES}, got {self.mode!r}")
        if self.mode == "block_cs" and not 0 < self.ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.mode == "fourier":
            if self.mask_kind not in MASK_KINDS:
                raise ValueError(f"mask_kind must be one of {MASK_KINDS}, got {self.mask_kind!r}")
            if not self.acceleration > 1:
                raise ValueError(f"acceleration must be > 1, got {self.acceleration}")
        if self.sigma < 0 or not math.isfinite(self.sigma):
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma}")

    @property
    def task(self) -> str:
        """``"cs"`` or ``"mri"``: the model task this acquisition needs."""
        return _TASK[self.mode]

    @property
    def label(self) -> str:
        """Short human label used in layer names, e.g. ``"4x random"`` or ``"CS 10% B32"``."""
        if self.mode == "block_cs":
            return f"CS {self.ratio * 100:g}% B{self.block_size}"
        if self.mode == "fourier":
            return f"{self.acceleration:g}x {self.mask_kind}"
        return "measured k-space"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (stored in every output layer's metadata)."""
        return asdict(self)

    def operator(self, shape: tuple[int, int], mask: np.ndarray | None = None):
        """Build the ``idm_imaging.operators`` operator for images of ``shape`` (H, W)."""
        from idm_imaging.operators import build_operator

        return build_operator(self.task, shape, ratio=self.ratio, block_size=self.block_size, permute=self.permute,
                              mask_kind=self.mask_kind, acceleration=self.acceleration,
                              center_fraction=self.center_fraction, seed=self.seed,
                              mask=np.asarray(mask, dtype=bool) if self.mode == "measured" else None)


@dataclass
class Progress:
    """What the worker yields: ``done`` of ``total`` slices, plus a status line."""

    done: int
    total: int
    message: str = ""


@dataclass
class OutputLayer:
    """One result layer: real ``data`` shaped like the input, its ``name`` and ``metadata``."""

    data: np.ndarray
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReconResult:
    """Everything a finished run produces. ``metrics`` maps a method ("zero-filled" or "pseudo-inverse", "IDM")
    to ``{"psnr": dB, "ssim": ...}`` (plus "nmse" for MRI); empty without a fully sampled reference."""

    layers: list[OutputLayer]
    metrics: dict[str, dict[str, float]]
    seconds: float = 0.0

    def summary(self) -> str:
        """One line per method, e.g. ``"IDM: PSNR 31.20 dB, SSIM 0.871"``."""
        return "\n".join(f"{k}: PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.3f}" for k, v in self.metrics.items())


def available_devices() -> list[str]:
    """``["cpu", "cuda:0", ..., "mps"]`` for the accelerators torch can use here; the best one comes first."""
    import torch

    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices + ["cpu"]


def model_choices(task: str) -> list[str]:
    """Model menu for ``task`` ("cs"/"mri"): embedded models of that task, then pseudo-inverse, then checkpoint.

    Embedded models come from ``idm_imaging.models.registry.available_models(aliases=True)`` (names such as
    ``"mri"``, then aliases such as ``"mri-8x"``); the default (first entry) is an embedded model when one exists.
    """
    from idm_imaging.models.registry import available_models

    names = [name for name in available_models(aliases=True) if name.split("-", 1)[0] == task]
    return names + [PSEUDO_INVERSE, CHECKPOINT]


def display_affine(scan_affine, shape, spacing=None) -> np.ndarray:
    """napari layer ``affine`` ((ndim + 1) x (ndim + 1), tensor axis order) that shows a slice the way DICOM viewers
    do: rows run towards posterior / inferior, columns towards the patient's left (radiological view).

    ``scan_affine`` is :func:`idm_imaging.io.read_scan`'s ``meta["affine"]`` (reversed tensor index -> RAS mm).
    Each in-plane axis (H, W) that runs towards a positive RAS direction (right, anterior, superior) is mirrored,
    so a NIfTI stored in RAS order is no longer upside down, and a DICOM (stored in LPS order) is left as it is.
    The data is not touched, so results keep the scan's voxel order and geometry when written back. ``spacing``:
    the layer's ``scale`` (tensor order), to mirror in place.
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    aff = np.asarray(scan_affine, dtype=np.float64)
    out = np.eye(ndim + 1)
    if aff.shape != (4, 4) or not np.isfinite(aff).all() or ndim not in (2, 3):
        return out
    spacing = tuple(float(v) for v in (spacing if spacing is not None else (1.0,) * ndim))[-ndim:]
    for t in (ndim - 2, ndim - 1):  # tensor axes H, W are the affine's index columns 1, 0
        direction = aff[:3, ndim - 1 - t]
        if np.abs(direction).max() > 0 and direction[int(np.argmax(np.abs(direction)))] > 0:
            out[t, t] = -1.0
            out[t, ndim] = (shape[t] - 1) * spacing[t]
    return out


def model_setting(choice: str) -> tuple[str, dict[str, float]]:
    """The model a menu ``choice`` loads and the acquisition setting it stands for: an alias (e.g. ``"mri-8x"``)
    gives ``("mri", {"acceleration": 8.0})`` (``idm_imaging.models.registry.resolve_name``); any other choice
    itself and ``{}``."""
    try:
        from idm_imaging.models.registry import resolve_name
    except ImportError:  # models not shipped
        return choice, {}
    return resolve_name(choice)


def default_model(acquisition: Acquisition) -> str | None:
    """The embedded model the command line would pick for ``acquisition`` (nearest ratio / acceleration:
    ``idm_imaging.models.registry.default_model``), or None when none of its task is installed."""
    try:
        from idm_imaging.models.registry import default_model as pick
    except ImportError:  # models not shipped
        return None
    if acquisition.mode == "block_cs":
        return pick("cs", ratio=acquisition.ratio)
    return pick("mri", acceleration=acquisition.acceleration if acquisition.mode == "fourier" else None)


def load_model(choice: str, checkpoint: str | None = None, ensemble: int | None = None):
    """Return the IDM for a menu ``choice`` (None for pseudo-inverse); raises ValueError naming the folder.

    ``ensemble``: the number of flipped / rotated reconstructions to average (1, 2, 4 or 8; IDM's ``ensemble``),
    None for the model's own setting."""
    if choice == PSEUDO_INVERSE:
        return None
    try:
        from idm_imaging.models import IDM
    except ImportError as exc:
        raise ValueError(f"model {choice!r}: idm_imaging.models.IDM is not available ({exc})") from exc
    source = checkpoint if choice == CHECKPOINT else choice
    if choice == CHECKPOINT and not checkpoint:
        raise ValueError("checkpoint: choose a model folder first")
    try:
        model = IDM.from_pretrained(str(source), **({} if ensemble is None else {"ensemble": ensemble}))
    except Exception as exc:
        raise ValueError(f"model {str(source)!r} could not be loaded: {exc}") from exc
    return model.eval()


@dataclass(frozen=True, eq=False)
class Job:
    """One run's inputs and settings, checked on construction so bad input fails before any work starts.

    Args:
        acquisition (`Acquisition`):
            What to simulate (or ``mode="measured"``: use ``kspace`` and ``mask``).
        image (`np.ndarray`, *optional*):
            The fully sampled reference, (H, W) or (D, H, W), real or complex (any numeric dtype); ignored (may be
            None) in ``"measured"`` mode.
        name (`str`, *optional*, defaults to `"image"`):
            The input layer's name, used as prefix of the output names.
        kspace (`np.ndarray`, *optional*):
            Measured centred k-space (H, W) or (D, H, W), complex (``"measured"`` mode).
        mask (`np.ndarray`, *optional*):
            Sampling mask (H, W), nonzero = sampled (``"measured"`` mode).
        device (`str`, *optional*, defaults to `"cpu"`):
            Torch device string ("auto", "cpu", "cuda:0", "mps").
        batch_size (`int`, *optional*, defaults to 4):
            Slices per forward pass (an int >= 1, checked by ``idm_imaging.inference.iter_reconstruct_volume``).
        precision (`str`, *optional*, defaults to `"auto"`):
            "auto", "fp32" or "bf16" (the model under bfloat16 autocast; "auto" picks bf16 where the device has
            native bf16, see ``idm_imaging.inference.resolve_precision``).
    """

    acquisition: Acquisition
    image: np.ndarray | None = None
    name: str = "image"
    kspace: np.ndarray | None = None
    mask: np.ndarray | None = None
    device: str = "cpu"
    batch_size: int = 4
    precision: str = "auto"

    def __post_init__(self):
        if self.measured:
            if self.kspace is None or self.mask is None:
                raise ValueError("measured k-space needs both a k-space layer and a mask layer")
            shape = np.shape(self.kspace)
            if np.shape(self.mask) != shape[-2:]:
                raise ValueError(f"mask must have the k-space slice shape {shape[-2:]}, got {np.shape(self.mask)}")
        else:
            if self.image is None:
                raise ValueError(f"{self.name}: choose an input image layer")
            shape = np.shape(self.image)
        if len(shape) in (2, 3) and min(shape[-2:]) < 8:
            raise ValueError(f"{self.input_name}: each slice must be at least 8x8 pixels, got {shape[-2:]}")

    @property
    def measured(self) -> bool:
        """Whether the input is measured k-space (``kspace`` and ``mask``) rather than an image to simulate from."""
        return self.acquisition.mode == "measured"

    def options(self, device):
        """The ``idm_imaging.inference.ReconstructionOptions`` of this run on the resolved ``device``."""
        from idm_imaging.inference import ReconstructionOptions

        acq = self.acquisition
        return ReconstructionOptions(batch_size=self.batch_size, device=device, measured=self.measured,
                                     sigma=acq.sigma, seed=acq.seed, name=self.input_name, precision=self.precision)

    @property
    def input_name(self) -> str:
        """How error messages name the input: ``"kspace"`` for measured k-space, else the layer's ``name``."""
        return "kspace" if self.measured else self.name

    def volume(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The stack handed to the slice loop and the boolean mask (None unless measured): measured k-space is
        masked, and a complex image under block CS (a real acquisition) becomes its magnitude."""
        if self.measured:
            mask = np.asarray(self.mask) != 0
            return np.asarray(self.kspace) * mask, mask
        data = np.asarray(self.image)
        if self.acquisition.mode == "block_cs" and np.iscomplexobj(data):
            data = np.abs(data)
        return data, None


def reconstruct(
    job: Job,
    model=None,
    *,
    model_name: str = "IDM",
    cancel: Callable[[], bool] | threading.Event | None = None,
) -> Generator[Progress, None, ReconResult | None]:
    """Reconstruct a 2-D image or a 3-D stack slice by slice; a generator for napari's ``thread_worker``.

    The slice loop, normalisation and metrics are :func:`idm_imaging.inference.iter_reconstruct_volume` and
    :func:`~idm_imaging.inference.volume_metrics`; this adds cancelling, layer naming and GPU memory release.

    Args:
        job (`Job`):
            The input data and run settings.
        model (`IDM`, *optional*):
            An ``IDM`` (``model(y, operator)``); `None` gives the pseudo-inverse only. Its ``config.task`` must
            match ``job.acquisition.task``.
        model_name (`str`, *optional*, defaults to `"IDM"`):
            What the IDM output layer's name says ran, e.g. ``"mri"``.
        cancel (`Callable[[], bool]` or `threading.Event`, *optional*):
            When true between batches, the run stops and returns `None`.

    Yields:
        :class:`Progress` before the first batch and after each batch.

    Returns:
        `ReconResult` with real (magnitude) output stacks shaped like the input, or `None` if cancelled.
    """
    import time

    from idm_imaging.inference import iter_reconstruct_volume, resolve_device

    _check_model_task(model, model_name, job.acquisition)
    is_cancelled = cancel.is_set if isinstance(cancel, threading.Event) else (cancel or (lambda: False))
    data, mask = job.volume()
    dev = resolve_device(job.device)
    acq = job.acquisition
    t0 = time.perf_counter()
    steps = iter_reconstruct_volume(data, lambda hw: acq.operator(hw, mask=mask), model, job.options(dev))
    res = yield from _run_steps(steps, model, dev, job.batch_size, is_cancelled)
    if res is None:
        return None
    layers, metrics = _result_layers(job, res, str(dev), model_name if model is not None else PSEUDO_INVERSE)
    return ReconResult(layers, metrics, time.perf_counter() - t0)


def _check_model_task(model, model_name: str, acquisition: Acquisition) -> None:
    """Refuse a model trained for the other task (a CS model on k-space or the reverse) before anything runs."""
    task = getattr(getattr(model, "config", None), "task", None) if model is not None else None
    if task is not None and task != acquisition.task:
        raise ValueError(f"model {model_name!r} is for task {task!r} but the acquisition "
                         f"{acquisition.label!r} needs a {acquisition.task!r} model")


def _run_steps(steps, model, dev, batch_size: int, is_cancelled: Callable[[], bool]):
    """Yield a :class:`Progress` per batch of the slice loop ``steps`` and return its result (None when cancelled),
    so the widget can show progress and stop between batches; the device is given back however the loop ends."""
    import traceback

    import torch

    try:
        while True:
            try:
                done, total = next(steps)
            except StopIteration as stop:
                return stop.value
            yield Progress(done, total, f"slice {done}/{total}" if done else
                           f"reconstructing {total} slice(s) on {dev}")
            if is_cancelled():
                return None
    except torch.OutOfMemoryError as exc:
        traceback.clear_frames(exc.__traceback__)  # the failed batch's device tensors live in these frames
        raise MemoryError(f"out of memory on {dev} with batch_size={batch_size}: lower the batch size "
                          f"or use the cpu") from exc
    finally:
        steps.close()
        _release_device(model, dev)


def _release_device(model, dev) -> None:
    """Give the accelerator back after a run: model to the CPU, cuFFT plans, cuBLAS workspaces, cached blocks."""
    import torch

    if model is not None and dev.type != "cpu":
        model.to("cpu")
    if dev.type == "cuda":
        torch.backends.cuda.cufft_plan_cache[dev.index if dev.index is not None else
                                             torch.cuda.current_device()].clear()
        clear_cublas = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)  # ~33 MiB of cuBLAS workspaces
        if clear_cublas is not None:
            clear_cublas()
        torch.cuda.empty_cache()


def _result_layers(job: Job, res, device: str, model_label: str) -> tuple[list[OutputLayer], dict[str, dict]]:
    """The output layers (pseudo-inverse, IDM, |error|) and their metrics; every layer's metadata records the run's
    parameters, so a result can be traced back to how it was made."""
    from idm_imaging.inference import volume_metrics

    acq = job.acquisition
    params = {"acquisition": acq.to_dict(), "input": job.name, "device": device, "batch_size": job.batch_size,
              "model": model_label, "intensity_scale": res.scale, "intensity_offset": res.offset,
              "precision": res.info.get("precision")}
    zf_name = "zero-filled" if acq.task == "mri" else "pseudo-inverse"
    # magnitudes of complex results; a real result (block CS, a signed image under MRI) keeps its sign
    outputs = [(zf_name, f"{job.name} {zf_name} {acq.label}", _shown(res.pinv))]
    if res.recon is not None:
        outputs.append(("IDM", f"{job.name} IDM ({model_label}) {acq.label}", _shown(res.recon)))
    metrics: dict[str, dict[str, float]] = {}
    layers = []
    for method, lname, out in outputs:
        meta = {"idm_imaging": {**params, "method": method}}
        if res.reference is not None:
            metrics[method] = volume_metrics(out, res.reference, acq.task, offset=res.offset, scale=res.scale)
            meta["idm_imaging"]["metrics"] = metrics[method]
        layers.append(OutputLayer(out.numpy(), lname, meta))
    if res.reference is not None:
        best = outputs[-1][0]
        err = (outputs[-1][2] - _shown(res.reference)).abs().numpy()
        meta = {"idm_imaging": {**params, "method": f"|{best} - reference|", "metrics": metrics[best]}}
        layers.append(OutputLayer(err, f"{job.name} |error| {acq.label}", meta))
    return layers, metrics


def _shown(t):
    return t.abs() if t.is_complex() else t


def run_to_completion(job: Job, **kwargs) -> ReconResult | None:
    """Drive :func:`reconstruct` synchronously (scripts and tests); ``kwargs`` go to it; returns its result."""
    gen = reconstruct(job, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
