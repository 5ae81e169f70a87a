"""Qt-free reconstruction engine behind the napari widget.

Everything here works on numpy stacks and plain callables, so it is testable without Qt or napari.

The widget runs :func:`reconstruct` (a generator) in napari's ``thread_worker``: it yields a :class:`Progress`
after every batch of slices, checks ``cancel()`` between batches, and *returns* a :class:`ReconResult` (or
``None`` when cancelled). Nothing is handed back before the last slice is done, so a cancelled run leaves no
partial output.

Math: each slice ``x`` (H, W) is scaled to ``x / s`` with ``s = max |volume|`` (the models are trained on [0, 1]
images), measured as ``y = A (x / s) + n`` with the chosen operator, reconstructed as ``A^+ y`` (zero-filled /
pseudo-inverse) and, when a model is given, ``IDM(y, A)``; outputs are scaled back by ``s``. Metrics compare the
magnitudes with the fully sampled input (fastMRI protocol for MRI, Y-channel protocol on [0, 1] for block CS).

Example::

    >>> import numpy as np
    >>> from napari_plugin._engine import Acquisition, run_to_completion
    >>> img = np.random.rand(64, 64).astype(np.float32)
    >>> res = run_to_completion(img, Acquisition(mode="fourier", acceleration=4), name="img")
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
    "Progress",
    "OutputLayer",
    "ReconResult",
    "available_devices",
    "model_choices",
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
        from idm_imaging.operators import BlockCS, SingleCoilFourier

        if self.mode == "block_cs":
            return BlockCS(self.ratio, block_size=self.block_size, permute=self.permute, seed=self.seed,
                           img_size=tuple(shape))
        if self.mode == "fourier":
            return SingleCoilFourier.from_mask_params(self.mask_kind, tuple(shape), self.acceleration,
                                                      center_fraction=self.center_fraction, seed=self.seed)
        import torch

        return SingleCoilFourier(torch.as_tensor(np.asarray(mask, dtype=bool)))


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


def _registry_names() -> list[Any]:
    """Embedded model entries: ``available_models()`` when the registry has it, else REGISTRY names on disk."""
    try:
        from idm_imaging.models import registry
    except ImportError:  # models not shipped: only pseudo-inverse and checkpoint folders
        return []
    try:
        if hasattr(registry, "available_models"):
            return list(registry.available_models())
        return [n for n, folder in getattr(registry, "REGISTRY", {}).items()
                if (registry.WEIGHTS_DIR / folder).is_dir()]
    except Exception:  # a broken registry must not break the widget
        return []


def model_choices(task: str) -> list[str]:
    """Model menu for ``task`` ("cs"/"mri"): embedded models of that task, then pseudo-inverse, then checkpoint.

    Embedded models come from ``idm_imaging.models.registry.available_models()`` (names such as ``"mri-4x"``
    or entries with a ``"task"``/``"name"``); the default (first entry) is an embedded model when one exists.
    """
    names = []
    for entry in _registry_names():
        if isinstance(entry, str):
            name, entry_task = entry, entry.split("-", 1)[0]
        elif isinstance(entry, dict):
            name, entry_task = entry.get("name"), entry.get("task")
        else:
            name, entry_task = getattr(entry, "name", None), getattr(entry, "task", None)
        if name and entry_task == task:
            names.append(str(name))
    return names + [PSEUDO_INVERSE, CHECKPOINT]


def load_model(choice: str, checkpoint: str | None = None):
    """Return the IDM for a menu ``choice`` (None for pseudo-inverse); raises ValueError naming the folder."""
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
        model = IDM.from_pretrained(str(source))
    except Exception as exc:
        raise ValueError(f"model {str(source)!r} could not be loaded: {exc}") from exc
    return model.eval()


def _as_stack(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2-D image or a 3-D stack (D, H, W), got shape {a.shape}")
    if min(a.shape[-2:]) < 8:
        raise ValueError(f"{name}: each slice must be at least 8x8 pixels, got {a.shape[-2:]}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    return a[None] if a.ndim == 2 else a


def _metrics(rec: np.ndarray, ref: np.ndarray, task: str) -> dict[str, float]:
    """PSNR/SSIM of magnitude volumes ``rec``/``ref`` (D, H, W), both divided by the reference's maximum."""
    if task == "mri":
        from idm_imaging.metrics import fastmri_metrics

        m = fastmri_metrics(rec, ref)
        return {k: float(v) for k, v in m.items()}
    from idm_imaging.metrics import psnr_y, ssim_y

    # paper protocol per image (grayscale = Y channel, [0, 1] -> 0-255 inside psnr_y/ssim_y), mean over slices
    ps = [psnr_y(r, g) for r, g in zip(rec, ref)]
    ss = [ssim_y(r, g) for r, g in zip(rec, ref)]
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}


def reconstruct(
    image: np.ndarray | None,
    acquisition: Acquisition,
    *,
    name: str = "image",
    model=None,
    model_name: str = "IDM",
    device: str = "cpu",
    batch_size: int = 4,
    kspace: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
) -> Generator[Progress, None, ReconResult | None]:
    """Reconstruct a 2-D image or a 3-D stack slice by slice; a generator for napari's ``thread_worker``.

    Args:
        image: the fully sampled reference, (H, W) or (D, H, W), real or complex (any numeric dtype); ignored
            (may be None) in ``"measured"`` mode.
        acquisition: what to simulate (or ``mode="measured"``: use ``kspace`` and ``mask``).
        name: the input layer's name, used as prefix of the output names.
        model: an ``IDM`` (``model(y, operator)``) or None for the pseudo-inverse only; its ``config.task``
            must match ``acquisition.task``.
        device: torch device string ("cpu", "cuda:0", "mps").
        batch_size: slices per forward pass.
        kspace: measured centred k-space (H, W) or (D, H, W), complex (``"measured"`` mode).
        mask: sampling mask (H, W), nonzero = sampled (``"measured"`` mode).
        cancel: callable or ``threading.Event``; when true between batches the run stops and returns None.

    Yields:
        :class:`Progress` before the first batch and after each batch.

    Returns:
        :class:`ReconResult` with real (magnitude) output stacks shaped like the input, or None if cancelled.
    """
    import time

    import torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    is_cancelled = cancel.is_set if isinstance(cancel, threading.Event) else (cancel or (lambda: False))
    if model is not None:
        task = getattr(getattr(model, "config", None), "task", None)
        if task is not None and task != acquisition.task:
            raise ValueError(f"model {model_name!r} is for task {task!r} but the acquisition "
                             f"{acquisition.label!r} needs a {acquisition.task!r} model")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device") from exc

    measured = acquisition.mode == "measured"
    squeeze = False
    if measured:
        if kspace is None or mask is None:
            raise ValueError("measured k-space needs both a k-space layer and a mask layer")
        squeeze = np.asarray(kspace).ndim == 2
        k = _as_stack(kspace, "kspace").astype(np.complex64)
        m = np.asarray(mask)
        if m.shape != k.shape[-2:]:
            raise ValueError(f"mask must have the k-space slice shape {k.shape[-2:]}, got {m.shape}")
        m = m != 0
        ref = None
    else:
        if image is None:
            raise ValueError(f"{name}: choose an input image layer")
        squeeze = np.asarray(image).ndim == 2
        x = _as_stack(image, name)
        if acquisition.mode == "block_cs" and np.iscomplexobj(x):
            x = np.abs(x)  # block CS is a real acquisition: use the magnitude
        x = x.astype(np.complex64 if np.iscomplexobj(x) else np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{name}: image contains NaN or infinite values")
        ref = np.abs(x)
        m = None

    shape = (k if measured else x).shape[-2:]
    depth = (k if measured else x).shape[0]
    op = acquisition.operator(shape, mask=m).to(dev)
    if measured:
        # scale from the zero-filled volume so the model sees [0, 1]-ish images
        with torch.no_grad():
            zf = op.A_dagger(torch.from_numpy(k[:, None] * m)).abs()
        scale = float(zf.max()) or 1.0
    else:
        scale = float(ref.max()) or 1.0

    t0 = time.perf_counter()
    yield Progress(0, depth, f"reconstructing {depth} slice(s) on {dev}")
    zero_filled = np.empty((depth, *shape), np.float32)
    recon = np.empty((depth, *shape), np.float32) if model is not None else None
    y = xb = out = None
    if model is not None:
        model.to(dev)
    try:
        with torch.no_grad():
            for start in range(0, depth, batch_size):
                if is_cancelled():
                    return None
                stop = min(start + batch_size, depth)
                if measured:
                    y = torch.from_numpy(k[start:stop, None] * m / scale).to(dev)
                else:
                    xb = torch.from_numpy(x[start:stop, None] / scale).to(dev)
                    if op.is_complex and not xb.is_complex():
                        xb = xb.to(torch.complex64)
                    # noise seeded per slice (seed + slice index): results do not depend on the batch size
                    y = torch.cat([op.measure(xb[i:i + 1], sigma=acquisition.sigma, seed=acquisition.seed + start + i)
                                   for i in range(stop - start)]) if acquisition.sigma > 0 else op.A(xb)
                zero_filled[start:stop] = op.A_dagger(y).abs()[:, 0].float().cpu().numpy() * scale
                if model is not None:
                    out = model(y, op)
                    recon[start:stop] = out.abs()[:, 0].float().cpu().numpy() * scale
                yield Progress(stop, depth, f"slice {stop}/{depth}")
    except torch.OutOfMemoryError as exc:
        raise MemoryError(f"out of memory on {dev} with batch_size={batch_size}: lower the batch size "
                          f"or use the cpu") from exc
    finally:
        # give the accelerator back: model to the CPU, drop every device tensor, cuFFT plans, cached blocks
        if model is not None and dev.type != "cpu":
            model.to("cpu")
        op = y = xb = out = None  # noqa: F841
        if dev.type == "cuda":
            torch.backends.cuda.cufft_plan_cache[dev.index if dev.index is not None else
                                                 torch.cuda.current_device()].clear()
            clear_cublas = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)  # ~33 MiB of cuBLAS workspaces
            if clear_cublas is not None:
                clear_cublas()
            torch.cuda.empty_cache()
    if is_cancelled():
        return None

    params = {"acquisition": acquisition.to_dict(), "input": name, "device": str(dev), "batch_size": batch_size,
              "model": model_name if model is not None else PSEUDO_INVERSE, "intensity_scale": scale}
    zf_name = "zero-filled" if acquisition.task == "mri" else "pseudo-inverse"
    outputs = [(zf_name, f"{name} {zf_name} {acquisition.label}", zero_filled)]
    if recon is not None:
        outputs.append(("IDM", f"{name} IDM {acquisition.label}", recon))
    metrics: dict[str, dict[str, float]] = {}
    layers = []
    for method, lname, data in outputs:
        meta = {"idm_imaging": {**params, "method": method}}
        if ref is not None:
            metrics[method] = _metrics(data / scale, ref / scale, acquisition.task)
            meta["idm_imaging"]["metrics"] = metrics[method]
        layers.append(OutputLayer(data[0] if squeeze else data, lname, meta))
    if ref is not None:
        best, best_data = outputs[-1][0], outputs[-1][2]
        err = np.abs(best_data - ref)
        meta = {"idm_imaging": {**params, "method": f"|{best} - reference|", "metrics": metrics[best]}}
        layers.append(OutputLayer(err[0] if squeeze else err, f"{name} |error| {acquisition.label}", meta))
    return ReconResult(layers, metrics, time.perf_counter() - t0)


def run_to_completion(image, acquisition: Acquisition, **kwargs) -> ReconResult | None:
    """Drive :func:`reconstruct` synchronously (scripts and tests); returns its result."""
    gen = reconstruct(image, acquisition, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
