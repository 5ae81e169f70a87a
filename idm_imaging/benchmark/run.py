"""The benchmark run: every method on the same images and operators; JSON + CSV results, Markdown, figure.

Main table: Set11 and BSD68 at block-CS ratios 5/10/20/30/40/50% (block 32, permuted, ``seed=0``);
BrainImages_test and the held-out SIAT slices lsq121-lsq140 at 4x/8x, random and equispaced 1-D Cartesian
(``make_mask(kind, ..., seed=image index)``, centre fraction 0.32 / R). IDM is the embedded default for each
setting (:func:`~idm_imaging.models.registry.default_model`: the ``cs`` / ``mri`` models take every setting).
Generalisation table: a single-setting model (IDM, VarNet) on settings it was not trained for: other CS ratios,
the other acceleration, equispaced and radial masks. Metrics: natural images by the paper protocol
(:func:`~idm_imaging.metrics.psnr_y` / :func:`~idm_imaging.metrics.ssim_y`, Y channel on 0-255), MRI by the
fastMRI protocol (:func:`~idm_imaging.metrics.fastmri_metrics` on magnitudes, per image, then averaged).
Seconds per image are wall-clock times of the reconstruction alone (CUDA synchronised).

Methods whose model is missing (IDM names not shipped yet, no prior for DDNM/DPS, no MRI training data for
VarNet) and datasets that are absent are skipped with the reason recorded in the results' ``skipped`` list.

External peers (implementations nobody here wrote, each row noting its library and version): PnP-BM3D (the
``bm3d`` package as denoiser in TV-FISTA's projection loop, :class:`~idm_imaging.benchmark.baselines.PnPBM3D`)
and, where the ``deepinv`` extra is installed, deepinv's TV and wavelet solvers
(:class:`~idm_imaging.interop.deepinv.DeepinvSolver`). Parameters are tuned on Train400 crops, never on the test
sets (:mod:`idm_imaging.benchmark.tune`, records in ``benchmarks/results/tuning-*.json``).

Example::

    >>> from idm_imaging.benchmark import run
    >>> results = run(quick=True, out_dir="benchmarks/results", device="cpu")  # doctest: +SKIP
    >>> [r["method"] for r in results["rows"]][:2]  # doctest: +SKIP
    ['pseudo-inverse', 'TV-FISTA']
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import glob
import io
import json
import os
import platform
import sys
import time
import warnings
from importlib.util import find_spec
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from idm_imaging.inference import PRECISIONS, resolve_device
from idm_imaging.models.registry import default_model
from idm_imaging.benchmark.baselines import (
    DDNM, DPS, DiffusionPrior, PnPBM3D, PseudoInverse, TVFista, VarNet, train_varnet,
)

__all__ = ["BenchmarkConfig", "run", "main"]

_REPO = Path(__file__).resolve().parents[2]
PRIOR_NAME = "prior-gray"


@dataclass
class BenchmarkConfig:
    """Every setting of a run (all recorded in the results file).

    ``n_*``: how many images of each set (None: all, in sorted file order); ``crop``: centre crop to at most
    ``crop x crop`` (None: whole images); ``models``: name -> folder overrides (default: the embedded names);
    ``prior``: name or folder of the diffusion prior; ``varnet_budget_s``: VarNet training time per
    acceleration (None: the IDM model's recorded training time when found, else ``varnet_default_budget_s``);
    ``diffusion`` / ``varnet``: False leaves DDNM and DPS / VarNet out (recorded as skipped); ``bm3d`` /
    ``deepinv``: False leaves PnP-BM3D / deepinv's solvers out; ``pnp_iterations``: PnP-BM3D iterations (None:
    its tuned default); ``precision``: IDM's, as in :func:`~idm_imaging.inference.resolve_precision` (``"auto"``:
    what the product runs by default on this device).
    """

    quick: bool = False
    ratios: tuple = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
    accelerations: tuple = (4, 8)
    mri_masks: tuple = ("random", "equispaced")
    mri_sets: tuple = ("BrainImages_test", "SIAT_lsq121-140")
    natural_sets: tuple = ("Set11", "BSD68")
    n_natural: int | None = None
    n_mri: int | None = None
    crop: int | None = None
    diffusion_steps: int = 100
    tv_iterations: int = 200
    gen_ratios: dict = field(default_factory=lambda: {0.1: (0.3, 0.5), 0.3: (0.1, 0.5), 0.5: (0.1, 0.3)})
    gen_masks: tuple = ("equispaced", "radial")
    gen_cross_acceleration: bool = True
    models: dict = field(default_factory=dict)
    prior: str = PRIOR_NAME
    diffusion: bool = True
    varnet: bool = True
    bm3d: bool = True
    deepinv: bool = True
    pnp_iterations: int | None = None
    precision: str = "auto"
    varnet_budget_s: float | None = None
    varnet_default_budget_s: float = 1800.0
    varnet_cascades: int = 8
    varnet_features: tuple = (16, 16, 32, 64, 128, 16)
    varnet_patch: int = 128
    varnet_train: tuple = ("mri/train/SIAT_T2_brain_complex/lsq0[0-9][0-9].npy",
                           "mri/train/SIAT_T2_brain_complex/lsq1[01][0-9].npy",
                           "mri/train/SIAT_T2_brain_complex/lsq120.npy",
                           "mri/train/figshare_T1CE_brain/*.jpg",
                           "mri/train/cardiac_DeepADMMNet/*.mat")
    figure_methods_max: int = 8

    @classmethod
    def for_mode(cls, quick: bool, **overrides) -> "BenchmarkConfig":
        """Full run (GPU) or the ``--quick`` CPU subset (minutes on 2 cores)."""
        base = {}
        if quick:
            base = dict(quick=True, ratios=(0.1,), accelerations=(4,), natural_sets=("Set11",), n_natural=3, n_mri=3,
                        mri_masks=("random",), mri_sets=("BrainImages_test",),
                        crop=None, diffusion_steps=20, gen_ratios={0.1: (0.3,)}, gen_cross_acceleration=False,
                        varnet_budget_s=30.0, varnet_cascades=4, varnet_features=(8, 8, 16, 32, 64, 8),
                        varnet_patch=96)
        base.update(overrides)
        names = {f.name for f in dataclasses.fields(cls)}
        for k in base:
            if k not in names:
                raise TypeError(f"{k}: not a benchmark setting; valid: {sorted(names)}")
        if base.get("precision", "auto") not in PRECISIONS:
            raise ValueError(f"precision: expected 'auto', 'fp32' or 'bf16', got {base['precision']!r}")
        return cls(**base)

    @property
    def stem(self) -> str:
        """Name of the results and docs files: ``benchmark`` only for the complete table; ``benchmark-quick``
        for ``--quick``; ``benchmark-partial`` for any other subset (fewer images, crops, methods left out,
        fewer diffusion steps), so a subset never overwrites the full table."""
        if self.quick:
            return "benchmark-quick"
        complete = (self.n_natural is None and self.n_mri is None and self.crop is None and self.diffusion
                    and self.varnet and self.diffusion_steps == 100 and self.precision == "auto")
        return "benchmark" if complete else "benchmark-partial"


# ----------------------------------------------------------------------------------------- helpers
def _atomic_write(path: Path, data: bytes) -> None:
    from idm_imaging.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _hardware(device: torch.device, precision: str = "auto") -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from idm_imaging.inference import resolve_precision
    from idm_imaging.models import IDM

    hw = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device),
          "idm_precision": resolve_precision(precision, device, IDM)}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def center_crop(x: torch.Tensor, crop: int | None) -> torch.Tensor:
    """The centre ``crop x crop`` of ``x`` (``(..., H, W)``; a side shorter than ``crop`` is kept whole)."""
    if crop is None:
        return x
    h, w = x.shape[-2:]
    ch, cw = min(crop, h), min(crop, w)
    t, l = (h - ch) // 2, (w - cw) // 2
    return x[..., t:t + ch, l:l + cw].contiguous()


def _load_images(folder: Path, n: int | None, crop: int | None) -> list[tuple[str, torch.Tensor]]:
    from idm_imaging.io import read_scan

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg"))
    out = []
    for f in files[:n] if n is not None else files:
        img, _ = read_scan(f)
        if img.ndim == 3:  # RGB -> paper-protocol luminance
            from idm_imaging.metrics import rgb_to_y

            img = rgb_to_y(img).float() if img.shape[0] == 3 or img.shape[-1] == 3 else img[0]
        out.append((f.name, center_crop(img.float()[None, None], crop)))
    return out


def _load_mri_set(data_root: Path, set_name: str, n: int | None, crop: int | None) -> list[tuple[str, torch.Tensor]]:
    """BrainImages_test (magnitude PNGs) or the held-out SIAT slices lsq121-lsq140 (complex, max |x| = 1)."""
    if set_name == "BrainImages_test":
        folder = data_root / "mri" / "test" / "BrainImages_test"
        return _load_images(folder, n, crop) if folder.is_dir() else []
    if set_name == "SIAT_lsq121-140":
        folder = data_root / "mri" / "train" / "SIAT_T2_brain_complex"
        files = [folder / f"lsq{k:03d}.npy" for k in range(121, 141) if (folder / f"lsq{k:03d}.npy").is_file()]
        out = []
        for f in files[:n] if n is not None else files:
            a = torch.from_numpy(np.load(f, allow_pickle=False).astype(np.complex64))
            out.append((f.name, center_crop((a / a.abs().max())[None, None], crop)))
        return out
    raise ValueError(f"mri_sets: unknown set {set_name!r}; known: BrainImages_test, SIAT_lsq121-140")


def _model_label(folder: Path) -> str:
    """``embedded:<name>`` for the package's own weights (no machine paths in committed results), else the path."""
    from idm_imaging.models.registry import WEIGHTS_DIR

    folder = Path(folder).resolve()
    return f"embedded:{folder.name}" if folder.parent == Path(WEIGHTS_DIR).resolve() else str(folder)


def _data_label(folder: str | os.PathLike) -> str:
    """The datasets folder as a record shows it: relative to the repository when it sits beside it (the
    documented layout), so that results do not carry one machine's absolute paths."""
    try:
        return os.path.relpath(folder, _REPO) if Path(folder).resolve().is_relative_to(_REPO.parent) else str(folder)
    except ValueError:  # another drive
        return str(folder)


def _model_folder(name: str, cfg: BenchmarkConfig) -> tuple[Path | None, str | None]:
    """Folder of a trained model (override or embedded name), or (None, reason)."""
    from idm_imaging.models import resolve_checkpoint

    try:
        return resolve_checkpoint(cfg.models.get(name, name)), None
    except ValueError as e:
        return None, str(e)


def _prior_training(folder: Path) -> dict:
    """How much training the diffusion prior had (its ``training.json``): DDNM and DPS are only as good as it."""
    f = Path(folder) / "training.json"
    try:
        t = json.loads(f.read_text(encoding="utf-8"))
        return {"prior_training": f"{t['steps']} steps of batch {t['batch_size']}, {t['patch_size']}x{t['patch_size']} "
                                  f"patches, {t['seconds'] / 60:.0f} min on {t['device']}"}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _training_record(folder: Path) -> dict:
    """Training seconds and data patterns recorded next to a model, when the training run left them."""
    rec: dict = {}
    cands = (folder / "model_card.json", folder / "final_state.json", folder.parent / "final_state.json",
             folder / "config_resolved.json", folder.parent / "config_resolved.json", folder.parent / "config.json")
    for cand in cands:
        if not cand.is_file():
            continue
        try:
            d = json.loads(cand.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(d, dict):
            continue
        for k in ("seconds", "train_seconds", "training_seconds"):
            if isinstance(d.get(k), (int, float)) and "seconds" not in rec:
                rec["seconds"] = float(d[k])
        data = d.get("data")
        if isinstance(data, dict) and isinstance(data.get("train"), list) and "train" not in rec:
            rec["train"] = [str(p) for p in data["train"]]
            rec["train_base"] = str(cand.parent)
    return rec


class _Recorder:
    """Collects rows, skip notes and the figure's images."""

    def __init__(self, device: torch.device, log: Callable[[str], None]):
        self.device, self.log = device, log
        self.rows: list[dict] = []
        self.skipped: list[dict] = []
        self.figure: dict[str, dict] = {}

    def skip(self, table: str, what: str, reason: str) -> None:
        self.skipped.append({"table": table, "what": what, "reason": reason})
        self.log(f"skip [{table}] {what}: {reason}")

    def evaluate(self, table: str, dataset: str, setting: str, method: str, fn: Callable, cases: list,
                 kind: str, model: str = "", note: str = "") -> None:
        """Run ``fn(y, op)`` on every ``(name, x, op)`` case; record mean PSNR/SSIM and seconds per image."""
        from idm_imaging.metrics import fastmri_metrics, psnr_y, ssim_y

        ps, ss, secs = [], [], []
        for i, (name, x, op) in enumerate(cases):
            xd = x.to(self.device)
            op = op.to(self.device)
            y = op.A(xd.to(torch.complex64) if op.is_complex else xd)
            _sync(self.device)
            t0 = time.perf_counter()
            with torch.inference_mode(method != "DPS"), warnings.catch_warnings():
                if table == "generalisation":  # untrained settings on purpose: the model's warning is expected
                    warnings.filterwarnings("ignore", message="operator: this model was trained for")
                out = fn(y, op)
            _sync(self.device)
            secs.append(time.perf_counter() - t0)
            out = out.detach().cpu()
            if out.is_complex():
                out = out.abs()
            x = x.abs() if x.is_complex() else x  # complex scans are scored on magnitudes (fastMRI protocol)
            if kind == "natural":
                ps.append(psnr_y(out[0, 0], x[0, 0]))
                ss.append(ssim_y(out[0, 0], x[0, 0]))
            else:
                m = fastmri_metrics(out[0, 0], x[0, 0])
                ps.append(m["psnr"])
                ss.append(m["ssim"])
            if i == 0 and table == "main":
                fig = self.figure.setdefault(f"{dataset} {setting}", {"target": x[0, 0].numpy(), "image": name,
                                                                       "kind": kind, "methods": {}})
                fig["methods"][method] = out[0, 0].float().numpy()
        row = {"table": table, "dataset": dataset, "setting": setting, "method": method, "model": model,
               "psnr": round(float(np.mean(ps)), 3), "ssim": round(float(np.mean(ss)), 4),
               "seconds_per_image": round(float(np.mean(secs)), 4), "n_images": len(cases), "note": note}
        self.rows.append(row)
        self.log(f"[{table}] {dataset} {setting} {method}: PSNR {row['psnr']:.2f} SSIM {row['ssim']:.4f} "
                 f"{row['seconds_per_image']:.3f} s/img")


def _load_idm(name: str, cfg: BenchmarkConfig, device: torch.device, rec: _Recorder, table: str, what: str):
    from idm_imaging.models import IDM

    folder, why = _model_folder(name, cfg)
    if folder is None:
        rec.skip(table, what, f"IDM model {name!r} not available ({why})")
        return None, None
    try:
        model = IDM.from_pretrained(folder).to(device).eval()
    except (ValueError, OSError) as e:
        rec.skip(table, what, f"IDM model {name!r} failed to load: {e}")
        return None, None
    return model, folder


def _default_idm(task: str, cfg: BenchmarkConfig, device: torch.device, rec: _Recorder, what: str, **setting):
    """``(name, model, folder)`` of the embedded default for ``task`` at ``setting`` (``ratio=`` / ``acceleration=``,
    :func:`~idm_imaging.models.registry.default_model`); model and folder None, with the reason recorded, when
    there is none or it does not load."""
    name = default_model(task, **setting)
    if name is None:
        (key, value), = setting.items()
        rec.skip("main", what, f"no embedded model for {key} {value}")
        return None, None, None
    return (name, *_load_idm(name, cfg, device, rec, "main", what))


def idm_method(model, device: torch.device, precision: str = "auto"):
    """IDM as the product runs it at ``precision`` (default ``"auto"``: under bfloat16 autocast where the device
    has native bf16, else float32; :func:`~idm_imaging.inference.resolve_precision`)."""
    from idm_imaging.inference import resolve_precision

    bf16 = resolve_precision(precision, device, model) == "bf16"

    def fn(y, op):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(y, op)
        return out if out.is_complex() else out.float()
    return fn


# ----------------------------------------------------------------------------------------- the run
@dataclass
class _Run:
    """What the steps of a run share: settings, device, recorder, datasets folder, the methods every setting runs
    (with their recorded settings) and the IDM models used."""

    cfg: BenchmarkConfig
    dev: torch.device
    rec: _Recorder
    data_root: Path
    pinv: PseudoInverse
    tv: TVFista
    methods: dict
    prior: DiffusionPrior | None = None
    prior_folder: Path | None = None
    diffusion: list = field(default_factory=list)
    diffusion_natural: list = field(default_factory=list)  # samplers of a grayscale prior: block CS only
    steps_note: str = ""
    external: list = field(default_factory=list)
    idm_models: dict = field(default_factory=dict)


def run(quick: bool = False, out_dir: str | os.PathLike = "benchmarks/results", device: str | torch.device = "cpu",
        *, datasets_dir: str | os.PathLike | None = None, docs_dir: str | os.PathLike | None = None,
        log: Callable[[str], None] | None = print, command: str | None = None, **settings) -> dict:
    """Run the benchmark and write ``out_dir/STEM.{json,csv}``, ``docs_dir/STEM.md`` and
    ``docs_dir/STEM_figure.png``, where STEM is :attr:`BenchmarkConfig.stem` (``benchmark``,
    ``benchmark-quick`` or ``benchmark-partial``).

    Args:
        quick (`bool`, *optional*, defaults to `False`):
            The CPU subset (3 Set11 images at 10%, 3 brain images at 4x, whole 256x256 images, 20 DDNM/DPS steps,
            30 s of VarNet training) instead of the full table.
        out_dir (`str` or `os.PathLike`, *optional*, defaults to `"benchmarks/results"`):
            Folder of the results files.
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`):
            Torch device ("cpu", "cuda", "cuda:0").
        datasets_dir (`str` or `os.PathLike`, *optional*):
            The datasets folder (default: :func:`idm_imaging.data_root`, i.e. ``$IDM_IMAGING_DATA`` or
            ``../shared/datasets`` next to the repository); sets that are missing are recorded as skipped.
        docs_dir (`str` or `os.PathLike`, *optional*):
            Folder of the Markdown table and figure (default ``<repo>/docs``).
        log (`Callable[[str], None]`, *optional*, defaults to `print`):
            Progress printer (None: silent).
        command (`str`, *optional*):
            The command line quoted in the Markdown (default: this call, as Python).
        settings:
            Overrides of :class:`BenchmarkConfig` fields.

    Returns:
        `dict`: the results (also written as JSON): ``meta``, ``settings``, ``methods``, ``rows``, ``skipped``.
    """
    dev = _check_arguments(quick, out_dir, device)
    cfg = BenchmarkConfig.for_mode(quick, **settings)
    from idm_imaging.datasets import data_root as data_folder

    data_root = data_folder(datasets_dir, must_exist=False)  # a missing folder: its sets are reported as skipped
    docs = Path(docs_dir) if docs_dir is not None else _REPO / "docs"
    out = Path(out_dir)
    logf = log or (lambda s: None)
    r = _setup(cfg, dev, _Recorder(dev, logf), data_root)
    _natural_sets(r)
    _mri_sets(r)
    results = _results(r, _command(command, quick, settings))
    _write_outputs(results, r, out, docs, logf)
    return results


def _check_arguments(quick, out_dir, device) -> torch.device:
    """Check ``run``'s arguments and return the torch device (TypeError / ValueError naming the argument)."""
    if not isinstance(quick, bool):
        raise TypeError(f"quick: expected a bool, got {type(quick).__name__}")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir: expected a path, got {type(out_dir).__name__}")
    return resolve_device(device)


def _setup(cfg: BenchmarkConfig, dev: torch.device, rec: _Recorder, data_root: Path) -> _Run:
    """Seed, then build the methods every setting runs: pseudo-inverse, TV-FISTA, DDNM / DPS, external peers."""
    torch.manual_seed(0)
    pinv, tv = PseudoInverse(), TVFista(iterations=cfg.tv_iterations)
    methods: dict[str, dict] = {"pseudo-inverse": {"kind": "A^+ y (zero-filled for MRI)", **pinv.settings()},
                                "TV-FISTA": tv.settings()}
    r = _Run(cfg, dev, rec, data_root, pinv, tv, methods)
    _setup_diffusion(r)
    r.steps_note = "" if cfg.diffusion_steps == 100 else f"{cfg.diffusion_steps} steps (quick)"
    r.external = _external_methods(cfg, rec, methods)
    return r


def _setup_diffusion(r: _Run) -> None:
    """Load the diffusion prior and build DDNM and DPS on it (and deepinv's DiffPIR where deepinv is installed), or
    record why they are skipped."""
    cfg, rec = r.cfg, r.rec
    r.prior_folder, why = _model_folder(cfg.prior, cfg)
    if not cfg.diffusion:
        rec.skip("main", "DDNM, DPS", "left out of this run (diffusion=False, --no-diffusion)")
    elif r.prior_folder is None:
        rec.skip("main", "DDNM, DPS", f"diffusion prior {cfg.prior!r} not available ({why})")
    else:
        try:
            r.prior = DiffusionPrior.from_folder(r.prior_folder, name=str(cfg.prior)).to(r.dev)
        except (ValueError, OSError) as e:
            rec.skip("main", "DDNM, DPS", f"diffusion prior {cfg.prior!r} failed to load: {e}")
    if r.prior is None:
        return
    ddnm = DDNM(r.prior, steps=cfg.diffusion_steps)
    dps = DPS(r.prior, steps=cfg.diffusion_steps)
    r.diffusion = [("DDNM", ddnm), ("DPS", dps)]
    note = "" if cfg.diffusion_steps == 100 else f"{cfg.diffusion_steps} steps (--quick), published: 100"
    trained = _prior_training(r.prior_folder)
    r.methods["DDNM"] = {**ddnm.settings(), **trained, "note": note}
    r.methods["DPS"] = {**dps.settings(), **trained, "note": note}
    if _library_ready(rec, "deepinv DiffPIR", cfg.deepinv, "deepinv", _DEEPINV_MISSING):
        from idm_imaging.interop.deepinv import DeepinvDiffPIR

        diffpir = DeepinvDiffPIR(r.prior, steps=cfg.diffusion_steps)
        r.diffusion_natural = [(diffpir.name, diffpir)]
        r.methods[diffpir.name] = {**diffpir.settings(), **trained, "note": note}


def _shared_rows(r: _Run, set_name: str, setting: str, cases: list, kind: str, first: str) -> None:
    """Main-table rows of the methods every setting runs: ``first`` (the pseudo-inverse, named for the modality),
    TV-FISTA, the external peers, DDNM and DPS."""
    r.rec.evaluate("main", set_name, setting, first, r.pinv, cases, kind)
    r.rec.evaluate("main", set_name, setting, "TV-FISTA", r.tv, cases, kind)
    for mname, m, lib in r.external:
        r.rec.evaluate("main", set_name, setting, mname, m, cases, kind, note=lib)
    for mname, m in r.diffusion + (r.diffusion_natural if kind == "natural" else []):
        r.rec.evaluate("main", set_name, setting, mname, m, cases, kind, model=r.prior.name, note=r.steps_note)


def _natural_sets(r: _Run) -> None:
    """Natural images, block CS: every method at every ratio, set by set."""
    for set_name in r.cfg.natural_sets:
        folder = r.data_root / "natural" / "test" / set_name
        if not folder.is_dir():
            r.rec.skip("main", set_name, f"dataset folder {folder} not found")
            continue
        images = _load_images(folder, r.cfg.n_natural, r.cfg.crop)
        for ratio in r.cfg.ratios:
            _cs_ratio(r, set_name, images, ratio)


def _cs_ratio(r: _Run, set_name: str, images: list, ratio: float) -> None:
    """One block-CS ratio on one set: the shared methods, then IDM (and its generalisation rows)."""
    setting = f"CS {round(ratio * 100)}%"
    cases = [(n, x, BlockCS_for(ratio, x)) for n, x in images]
    _shared_rows(r, set_name, setting, cases, "natural", "pseudo-inverse")
    name, model, mfolder = _default_idm("cs", r.cfg, r.dev, r.rec, f"IDM on {set_name} {setting}", ratio=ratio)
    if model is None:
        return
    r.idm_models[name] = _model_label(mfolder)
    idm = idm_method(model, r.dev, r.cfg.precision)
    r.rec.evaluate("main", set_name, setting, "IDM", idm, cases, "natural", model=name)
    _cs_generalisation(r, set_name, images, ratio, name, model)


def _cs_generalisation(r: _Run, set_name: str, images: list, ratio: float, name: str, model) -> None:
    """Generalisation rows of a single-ratio IDM model: the other ratios ``gen_ratios`` lists for its own."""
    single = "ratio_range" not in (model.config.operator_config or {})
    for other in r.cfg.gen_ratios.get(ratio, ()) if single else ():
        gset = f"CS {round(other * 100)}% (trained {round(ratio * 100)}%)"
        gcases = [(n, x, BlockCS_for(other, x)) for n, x in images]
        idm = idm_method(model, r.dev, r.cfg.precision)
        r.rec.evaluate("generalisation", set_name, gset, "IDM", idm, gcases, "natural", model=name)


def _mri_sets(r: _Run) -> None:
    """MRI, single-coil Cartesian: every method at every acceleration and mask, set by set."""
    from idm_imaging.operators import SingleCoilFourier

    for set_name in r.cfg.mri_sets:
        images = _load_mri_set(r.data_root, set_name, r.cfg.n_mri, r.cfg.crop)
        if not images:
            r.rec.skip("main", set_name, f"dataset {set_name} not found under {r.data_root / 'mri'}")
            continue

        def mri_cases(kind: str, acc: float, images=images):
            return [(n, x, SingleCoilFourier.from_mask_params(kind, tuple(x.shape[-2:]), acc, seed=i))
                    for i, (n, x) in enumerate(images)]

        for acc in r.cfg.accelerations:
            _mri_acceleration(r, set_name, acc, mri_cases)


def _mri_acceleration(r: _Run, set_name: str, acc, mri_cases: Callable) -> None:
    """One acceleration on one MRI set: every mask's main rows; on BrainImages_test's random mask also VarNet and
    the generalisation rows of the single-setting models."""
    name, model, mfolder = _default_idm("mri", r.cfg, r.dev, r.rec, f"IDM on {set_name} {acc}x", acceleration=acc)
    record = _training_record(mfolder) if mfolder is not None else {}
    for kind in r.cfg.mri_masks:
        setting = f"{acc}x {kind} Cartesian"
        cases = mri_cases(kind, acc)
        _shared_rows(r, set_name, setting, cases, "mri", "zero-filled")
        trained: list[tuple[str, Callable, str]] = []
        if model is not None:
            r.idm_models[name] = _model_label(mfolder)
            idm = idm_method(model, r.dev, r.cfg.precision)
            r.rec.evaluate("main", set_name, setting, "IDM", idm, cases, "mri", model=name)
            trained.append(("IDM", idm, name))
        if set_name != "BrainImages_test" or kind != "random":
            continue
        vn = _varnet_for(acc, r.cfg, r.data_root, record, r.dev, r.rec, r.methods, setting)
        if vn is not None:
            r.rec.evaluate("main", set_name, setting, "VarNet", vn, cases, "mri",
                           model=f"varnet-{acc}x", note=r.methods[f"VarNet {acc}x"]["note"])
            trained.append(("VarNet", vn, f"varnet-{acc}x"))
        if model is not None and "acceleration_range" in (model.config.operator_config or {}):
            trained = trained[1:]  # a model for every acceleration and mask: its rows are all main rows
        _mri_generalisation(r, set_name, acc, trained, mri_cases)


def _mri_generalisation(r: _Run, set_name: str, acc, trained: list, mri_cases: Callable) -> None:
    """Generalisation rows of the models trained for ``acc`` x random: the ``gen_masks`` at ``acc`` and (with
    ``gen_cross_acceleration``) the random mask at the other accelerations, next to the zero-filled reference."""
    gen = [(k, acc) for k in r.cfg.gen_masks]
    if r.cfg.gen_cross_acceleration:
        gen += [("random", a) for a in r.cfg.accelerations if a != acc]
    for gkind, a in gen if trained else ():
        gcases = mri_cases(gkind, a)
        gset = f"{a}x {gkind} (trained {acc}x random)"
        r.rec.evaluate("generalisation", set_name, gset, "zero-filled", r.pinv, gcases, "mri",
                       note="reference, no training")
        for mname, fn, model_name in trained:
            r.rec.evaluate("generalisation", set_name, gset, mname, fn, gcases, "mri", model=model_name)


def _command(command: str | None, quick: bool, settings: dict) -> str:
    """The command quoted in the Markdown: the one given, else this call written as Python."""
    if command is not None:
        return command
    args = ([f"quick={quick}"] if quick else []) + [f"{k}={v!r}" for k, v in settings.items()]
    return f"idm_imaging.benchmark.run({', '.join(args)})"


def _results(r: _Run, command: str) -> dict:
    """The results dict: ``meta`` (versions, command, date, hardware, models), ``settings``, ``methods``, ``rows``,
    ``skipped``."""
    import idm_imaging

    return {
        "meta": {"package": "idm-imaging", "version": idm_imaging.__version__, "torch": torch.__version__,
                 "command": command,
                 "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "hardware": _hardware(r.dev, r.cfg.precision), "quick": r.cfg.quick,
                 "datasets_dir": _data_label(r.data_root),
                 "models": {"prior": _model_label(r.prior_folder) if r.prior is not None else None, **r.idm_models}},
        "settings": _jsonable(dataclasses.asdict(r.cfg)),
        "methods": r.methods,
        "rows": r.rec.rows,
        "skipped": r.rec.skipped,
    }


def _write_outputs(results: dict, r: _Run, out: Path, docs: Path, logf: Callable[[str], None]) -> None:
    """Write ``out/STEM.json`` and ``.csv``, ``docs/STEM.md`` and (when there are rows) ``docs/STEM_figure.png``."""
    stem = r.cfg.stem
    _atomic_write(out / f"{stem}.json", json.dumps(results, indent=2).encode())
    _atomic_write(out / f"{stem}.csv", _csv(r.rec.rows).encode())
    _atomic_write(docs / f"{stem}.md", _markdown(results, out / f"{stem}.json", f"{stem}_figure.png").encode())
    fig = _figure(r.rec.figure, r.cfg.figure_methods_max)
    if fig is not None:
        _atomic_write(docs / f"{stem}_figure.png", fig)
    logf(f"wrote {out / (stem + '.json')}, {out / (stem + '.csv')}, {docs / (stem + '.md')}"
         + (f", {docs / (stem + '_figure.png')}" if fig is not None else " (no figure: no rows)"))


def BlockCS_for(ratio: float, x: torch.Tensor):  # noqa: N802 (named after the operator it builds)
    """The benchmark's block-CS operator for image ``x``: block 32, permuted, seed 0, cropping to its size."""
    from idm_imaging.operators import BlockCS

    return BlockCS(ratio, block_size=32, permute=True, seed=0, img_size=tuple(x.shape[-2:]))


def score_block_cs(method: Callable, images: list[tuple[str, torch.Tensor]],
                   ratio: float) -> tuple[list[float], list[float]]:
    """Score ``method`` under the benchmark's block-CS protocol at one ratio.

    Args:
        method (`Callable`):
            ``method(y, operator)`` returning the image ``(1, 1, H, W)``; run under ``torch.no_grad``.
        images (`list[tuple[str, torch.Tensor]]`):
            ``(name, x)`` pairs, ``x`` of shape ``(1, 1, H, W)`` in [0, 1].
        ratio (`float`):
            Sampling ratio of :func:`BlockCS_for`.

    Returns:
        `tuple[list[float], list[float]]`: each image's PSNR (Y channel, 0-255, :func:`~idm_imaging.metrics.psnr_y`
        of the real part) and its seconds.
    """
    from idm_imaging.metrics import psnr_y

    scores, seconds = [], []
    for _, x in images:
        op = BlockCS_for(ratio, x)
        y = op.A(x)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = method(y, op)
        seconds.append(time.perf_counter() - t0)
        scores.append(float(psnr_y(out[0, 0].real, x[0, 0])))
    return scores, seconds


_DEEPINV_MISSING = "deepinv is not installed (pip install 'idm-imaging[deepinv]')"


def _library_ready(rec: _Recorder, what: str, on: bool, package: str, missing: str) -> bool:
    """Whether peers from an optional library run: ``on`` (the setting named ``package``) and the library
    importable; otherwise ``what`` is recorded as skipped with the reason, never an error."""
    if not on:
        rec.skip("main", what, f"left out of this run ({package}=False)")
    elif find_spec(package) is None:
        rec.skip("main", what, missing)
    else:
        return True
    return False


def _external_methods(cfg: BenchmarkConfig, rec: _Recorder, methods: dict) -> list[tuple[str, Callable, str]]:
    """PnP-BM3D and deepinv's solvers at their tuned defaults, as ``(name, method, "library version")``; a
    missing library is recorded as skipped, never an error."""
    from importlib.metadata import version

    out = []
    if _library_ready(rec, "PnP-BM3D", cfg.bm3d, "bm3d", "the bm3d package is not installed (pip install bm3d)"):
        kw = {} if cfg.pnp_iterations is None else {"iterations": cfg.pnp_iterations}
        m = PnPBM3D(**kw)
        out.append((m.name, m, f"bm3d {version('bm3d')}"))
    if _library_ready(rec, "deepinv TV, deepinv wavelet", cfg.deepinv, "deepinv", _DEEPINV_MISSING):
        from idm_imaging.interop.deepinv import DeepinvSolver

        for kind in DeepinvSolver.KINDS:
            m = DeepinvSolver(kind, iterations=cfg.tv_iterations)
            out.append((m.name, m, f"deepinv {version('deepinv')}"))
    for name, m, _ in out:
        methods[name] = m.settings()
    return out


def _varnet_for(acc, cfg: BenchmarkConfig, data_root: Path, record: dict, dev, rec: _Recorder, methods: dict,
                setting: str):
    if not cfg.varnet:
        rec.skip("main", f"VarNet {setting}", "disabled (varnet=False)")
        return None
    patterns = []
    if record.get("train"):  # run folders record glob patterns; model cards only the set names
        base = Path(record["train_base"])
        patterns = [p if os.path.isabs(p) else str((base / p).resolve()) for p in record["train"]]
        source = "the IDM model's recorded training data"
    if not any(glob.glob(p) for p in patterns):
        patterns = [str(data_root / p) for p in cfg.varnet_train]
        source = "the benchmark's MRI training sets (the IDM model records no usable data patterns)"
    if not any(glob.glob(p) for p in patterns):
        rec.skip("main", f"VarNet {setting}", f"no MRI training data found ({patterns[:2]}...)")
        return None
    if cfg.varnet_budget_s is not None:
        budget, bsrc = float(cfg.varnet_budget_s), "setting varnet_budget_s"
    elif "seconds" in record:
        budget, bsrc = float(record["seconds"]), "the IDM model's recorded training time"
    else:
        budget, bsrc = float(cfg.varnet_default_budget_s), "default (IDM training time not recorded)"
    torch.manual_seed(0)
    model = VarNet(num_cascades=cfg.varnet_cascades, features=cfg.varnet_features)
    info = train_varnet(model, patterns, acc, time_budget_s=budget, patch_size=cfg.varnet_patch, device=dev,
                        batch_size=4, log=rec.log)
    note = f"trained {info['steps']} steps in {info['seconds']:.0f} s on {dev}"
    if cfg.quick:
        note += " (--quick budget)"
    methods[f"VarNet {acc}x"] = {**model.settings(), **{k: v for k, v in info.items() if k != "train"},
                                 "train_patterns": [_data_label(p) for p in patterns], "data_source": source,
                                 "budget_source": bsrc, "note": note}
    model.eval()

    def fn(y, op):
        with torch.no_grad():
            return model(y, op)
    return fn


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


_CSV_FIELDS = ["table", "dataset", "setting", "method", "model", "psnr", "ssim", "seconds_per_image", "n_images",
               "note"]


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in _CSV_FIELDS})
    return buf.getvalue()


def _table(rows: list[dict]) -> list[str]:
    lines = ["| dataset | setting | method | model | PSNR (dB) | SSIM | s / image | images | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['setting']} | {r['method']} | {r['model'] or '-'} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.4f} | {r['seconds_per_image']:.3f} | {r['n_images']} | {r['note'] or ''} |")
    return lines


def _markdown(res: dict, results_path: Path, figure_name: str) -> str:
    meta, cfg = res["meta"], res["settings"]
    hw = meta["hardware"]
    main = [r for r in res["rows"] if r["table"] == "main"]
    gen = [r for r in res["rows"] if r["table"] == "generalisation"]
    out = ["# Benchmark: IDM against its peers", "",
           f"Generated by `{meta['command']}` (do not edit by hand; rerun to regenerate).", "",
           f"- package idm-imaging {meta['version']}, torch {meta['torch']}, date {meta['date']}",
           f"- hardware: {hw.get('gpu') or hw['cpu']} (device `{hw['device']}`, {hw['torch_threads']} CPU threads; "
           f"IDM in {hw.get('idm_precision', 'fp32')}"
           + (", the default precision there)" if cfg.get("precision", "auto") == "auto" else ", as asked)"),
           f"- results file: `{results_path.as_posix()}` (and `.csv`)",
           f"- models: {json.dumps(meta['models'])}"]
    if meta["quick"]:
        extent = "whole images" if cfg["crop"] is None else f"centre crops of {cfg['crop']}x{cfg['crop']}"
        out += ["", f"**Quick subset** (`--quick`): {cfg['n_natural']} Set11 images at "
                f"{', '.join(f'{round(r * 100)}%' for r in cfg['ratios'])}, {cfg['n_mri']} brain images at "
                f"{', '.join(f'{a}x' for a in cfg['accelerations'])}, {extent}, "
                f"{cfg['diffusion_steps']} DDNM/DPS steps (published: 100), VarNet trained for "
                f"{cfg['varnet_budget_s']:.0f} s. These numbers are a smoke test of the pipeline, not the benchmark; "
                "the full table comes from a run without `--quick` (GPU)."]
    elif results_path.stem.endswith("-partial"):
        left_out = [m for m, on in (("DDNM and DPS", cfg["diffusion"]), ("VarNet", cfg["varnet"]),
                                    ("PnP-BM3D", cfg.get("bm3d", True))) if not on]
        n = {cfg["n_natural"], cfg["n_mri"]}
        out += ["", "**Partial run**: "
                + ("every image" if n == {None} else
                   f"the first {cfg['n_natural'] or 'all'} images of each natural set and {cfg['n_mri'] or 'all'} "
                   "of each MRI set (sorted file order)")
                + (f", centre crops of {cfg['crop']}x{cfg['crop']}" if cfg["crop"] else ", whole images")
                + (f"; left out: {', '.join(left_out)}" if left_out else "")
                + ("" if cfg["diffusion_steps"] == 100 or not cfg["diffusion"]
                   else f"; {cfg['diffusion_steps']} DDNM/DPS steps (published: 100)")
                + ". Not the full benchmark: the complete table is a run with no subset options (GPU)."]
    out += ["", "Protocol: natural images by the paper protocol (Y channel, 0-255, PSNR peak 255, scikit-image SSIM "
            "7x7 uniform window, reconstruction clipped to [0, 1]); MRI by the fastMRI protocol (magnitude, data range "
            "= target max, per image, averaged). Block CS: block 32, global pixel permutation, seed 0. MRI masks: "
            "`make_mask(kind, shape, R, seed=image index)`, centre fraction 0.32 / R. Seconds per image: "
            "reconstruction only, wall clock."]
    libs = [f"{n} ({m['library']})" for n, m in res["methods"].items() if isinstance(m, dict) and m.get("library")]
    if libs:
        out += ["", "External implementations (library and version; tuning records on Train400 crops in "
                "`benchmarks/results/tuning-*.json`): " + ", ".join(libs) + "."]
    out += ["", "## Main table", ""]
    out += _table(main) if main else ["(no rows: see skipped)"]
    ratios = _speed_ratios(main)
    if ratios:
        out += ["", "Speed of IDM relative to the diffusion baselines (same prior backbone): "
                + "; ".join(ratios) + " (target: >= 20x)."]
    out += ["", "## Generalisation (settings the trained models were not trained for)", ""]
    out += _table(gen) if gen else ["(no rows: no trained model available)"]
    out += ["", "## Skipped", ""]
    out += [f"- [{s['table']}] {s['what']}: {s['reason']}" for s in res["skipped"]] or ["(nothing)"]
    out += ["", "## Method settings", ""]
    for name, s in res["methods"].items():
        out.append(f"- **{name}**: " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in s.items()))
    out += ["- **IDM**: the shipped models (`IDM.from_pretrained(name)`), T and weights as trained, with the model "
            "default `measured_mean = true` (the output's mean set to the least-squares mean from y along the "
            "unmeasured part of the constant image); no other test-time settings.", "",
            "References: TV-FISTA (Beck & Teboulle 2009, TV prox by Chambolle 2004); DDNM (Wang, Yu, "
            "Zhang, ICLR 2023); DPS (Chung et al., ICLR 2023); PnP-BM3D (Venkatakrishnan et al. 2013, BM3D by Dabov "
            "et al. 2007, the `bm3d` package); deepinv (Tachella et al., the `deepinv` library: TV and wavelet FISTA, "
            "DiffPIR by Zhu et al., CVPR workshops 2023, on the same prior as DDNM / DPS); e2e-VarNet (Sriram et al., MICCAI 2020; MONAI "
            "`VariationalNetworkModel`); IDM (Chen et al., TPAMI 2025).", "",
            f"![every method on the same image, with error maps]({figure_name})", ""]
    return "\n".join(out)


def _speed_ratios(rows: list[dict]) -> list[str]:
    out = []
    by = {}
    for r in rows:
        by.setdefault((r["dataset"], r["setting"]), {})[r["method"]] = r["seconds_per_image"]
    for (d, s), m in by.items():
        if "IDM" in m and m["IDM"] > 0:
            parts = [f"{k} {m[k] / m['IDM']:.1f}x" for k in ("DDNM", "DPS") if k in m]
            if parts:
                out.append(f"{d} {s}: " + ", ".join(parts))
    return out


def _figure(figs: dict, max_methods: int) -> bytes | None:
    if not figs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = 1 + min(max_methods, max(len(f["methods"]) for f in figs.values()))
    fig, axes = plt.subplots(2 * len(figs), ncol, figsize=(2.2 * ncol, 4.6 * len(figs)), squeeze=False)
    from idm_imaging.metrics import fastmri_metrics, psnr_y

    for k, (title, f) in enumerate(figs.items()):
        tgt = f["target"]
        ax_img, ax_err = axes[2 * k], axes[2 * k + 1]
        ax_img[0].imshow(tgt, cmap="gray", vmin=0, vmax=1)
        ax_img[0].set_title(f"{title}\n{f['image']} (target)", fontsize=7)
        ax_err[0].axis("off")
        ax_err[0].text(0.5, 0.5, "|error| maps\n(0 to 0.2)", ha="center", va="center", fontsize=8)
        for j, (name, img) in enumerate(list(f["methods"].items())[: ncol - 1], start=1):
            score = psnr_y(img, tgt) if f["kind"] == "natural" else fastmri_metrics(img, tgt)["psnr"]
            ax_img[j].imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax_img[j].set_title(f"{name}\n{score:.2f} dB", fontsize=7)
            ax_err[j].imshow(np.abs(img - tgt), cmap="inferno", vmin=0, vmax=0.2)
        for j in range(len(f["methods"]) + 1, ncol):
            ax_img[j].axis("off")
            ax_err[j].axis("off")
        for ax in list(ax_img) + list(ax_err):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return _palette_png(buf.getvalue())


def _palette_png(png: bytes) -> bytes:
    """The PNG with a 256-colour palette: gray images and one colour map need no more, and the file is ~3x
    smaller (figures are committed with the results)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT,
                                                        dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m idm_imaging.benchmark [--quick] [--out DIR] [--device DEV] [--datasets DIR] [--docs DIR]``."""
    ap = argparse.ArgumentParser(prog="idm-imaging benchmark", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU subset (minutes): 3 Set11 images at 10%%, 3 brain "
                    "images at 4x, whole images, 20 DDNM/DPS steps")
    ap.add_argument("--out", default="benchmarks/results", help="folder of the JSON/CSV results")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", "--datasets", dest="datasets", default=None,
                    help="datasets folder (default: $IDM_IMAGING_DATA, else ../shared/datasets next to the repository)")
    ap.add_argument("--docs", default=None, help="folder of the Markdown table and figure (default docs/)")
    ap.add_argument("--limit", type=int, default=None, help="first N images of each test set (a partial run)")
    ap.add_argument("--no-diffusion", action="store_true", help="leave DDNM and DPS out (a partial run)")
    ap.add_argument("--steps", type=int, default=None, help="DDNM/DPS steps (default 100; --quick 20)")
    ap.add_argument("--varnet-budget", type=float, default=None, help="VarNet training seconds per acceleration")
    ap.add_argument("--no-varnet", action="store_true", help="skip VarNet training and its rows")
    ap.add_argument("--no-bm3d", action="store_true", help="leave PnP-BM3D out (about 20x TV-FISTA's time)")
    ap.add_argument("--no-deepinv", action="store_true", help="leave deepinv's TV and wavelet solvers out")
    ap.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="IDM's precision (auto: bf16 where the device has native bf16, else fp32)")
    a = ap.parse_args(argv)
    overrides: dict = {}
    if a.steps is not None:
        overrides["diffusion_steps"] = a.steps
    if a.varnet_budget is not None:
        overrides["varnet_budget_s"] = a.varnet_budget
    if a.no_varnet:
        overrides["varnet"] = False
    if a.no_diffusion:
        overrides["diffusion"] = False
    if a.no_bm3d:
        overrides["bm3d"] = False
    if a.no_deepinv:
        overrides["deepinv"] = False
    if a.precision != "auto":
        overrides["precision"] = a.precision
    if a.limit is not None:
        if a.limit < 1:
            ap.error(f"--limit: expected a positive number of images, got {a.limit}")
        overrides["n_natural"] = overrides["n_mri"] = a.limit
    command = " ".join(["python -m idm_imaging.benchmark", *(sys.argv[1:] if argv is None else argv)])
    try:
        run(quick=a.quick, out_dir=a.out, device=a.device, datasets_dir=a.datasets, docs_dir=a.docs,
            command=command, **overrides)
    except (ValueError, TypeError) as e:
        ap.exit(2, f"idm-imaging benchmark: error: {e}\n")
    return 0
