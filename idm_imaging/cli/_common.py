"""Pieces shared by the sub-commands: the user-error type, acquisition arguments, input loading, model choice.

Imports nothing heavy at module level (torch, the operators, the models are imported where used), so that
``idm-imaging --help`` starts quickly.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

__all__ = [
    "UserError", "ArgumentParser", "positive_int", "add_acquisition_args", "operator_factory", "acquisition_label",
    "LoadedInput", "load_input", "check_output_path", "embedded_models", "model_info", "resolve_model",
    "apply_model_setting", "setting_text",
    "add_input_args", "select_slices", "check_device", "MASK_KINDS",
]

#: idm_imaging.operators.MASK_KINDS, spelled out so that building the parser does not import torch
#: (tests/test_cli.py checks that the two agree).
MASK_KINDS = ("random", "equispaced", "gaussian1d", "gaussian2d", "poisson", "radial", "spiral")
MAX_BLOCK_SIZE = 64  # BlockCS draws a (B^2 x B^2) orthogonal matrix: 128 MiB at B = 64, 2.25 PiB at 4096
DEVICE_KINDS = ("auto", "cpu", "cuda")

MODEL_CARD_NAMES = ("MODEL_CARD.md", "README.md", "model_card.md")
WRITE_SUFFIXES = (".png", ".tif", ".tiff", ".nii", ".nii.gz", ".npy", ".mat")
PINV_NAMES = ("pinv", "pseudo-inverse", "none")


class UserError(Exception):
    """A bad argument or file: printed as one line, exit code 2, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (``prog: error: message (see prog --help)``) and exit code 2."""

    def error(self, message: str):  # noqa: D102 (argparse API)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def add_acquisition_args(p: argparse.ArgumentParser) -> None:
    """``--task cs --ratio R`` | ``--task mri --mask KIND --acceleration A`` plus noise and seed options."""
    g = p.add_argument_group("acquisition")
    g.add_argument("--task", choices=("cs", "mri"), required=True,
                   help="cs: block compressed sensing of a real image; mri: single-coil k-space undersampling")
    g.add_argument("--ratio", type=float, help="cs: sampling ratio in (0, 1], e.g. 0.1")
    g.add_argument("--block-size", type=positive_int, default=32,
                   help=f"cs: block side, at most {MAX_BLOCK_SIZE} (default: %(default)s)")
    g.add_argument("--no-permute", action="store_true", help="cs: no global pixel permutation")
    g.add_argument("--mask", choices=MASK_KINDS, help="mri: k-space mask kind (default: random)")
    g.add_argument("--acceleration", type=float, help="mri: acceleration factor > 1, e.g. 4 (required with mri)")
    g.add_argument("--center-fraction", type=float, default=None,
                   help="mri: fully sampled centre fraction (default: the mask kind's default)")
    g.add_argument("--sigma", type=_nonneg_float, default=0.0,
                   help="std of Gaussian measurement noise on the [0, 1]-normalised image (default: 0)")
    g.add_argument("--seed", type=int, default=0, help="operator / mask and noise seed (default: %(default)s)")


def check_acquisition_args(args, need_mask: bool = True) -> None:
    """Cross-argument checks argparse cannot express; raises UserError naming the argument."""
    if args.task == "cs":
        for name in ("mask", "acceleration", "center_fraction"):
            if getattr(args, name) is not None:
                raise UserError(f"--{name.replace('_', '-')} applies to --task mri, not --task cs")
        if args.ratio is None:
            raise UserError("--ratio is required with --task cs")
        if not 0 < args.ratio <= 1:
            raise UserError(f"--ratio must be in (0, 1], got {args.ratio}")
        if args.block_size > MAX_BLOCK_SIZE:
            n = args.block_size ** 2
            raise UserError(f"--block-size {args.block_size}: block CS draws a ({n} x {n}) orthogonal matrix "
                            f"({n * n * 8 / 1024**3:.3g} GiB); use a block size <= {MAX_BLOCK_SIZE} "
                            "(the embedded models use 32)")
    else:
        if args.ratio is not None:
            raise UserError("--ratio applies to --task cs, not --task mri (use --mask and --acceleration)")
        if need_mask:
            if args.mask is None:
                args.mask = "random"  # the default --help shows (and the napari widget's)
            if args.acceleration is None:
                raise UserError("--acceleration is required with --task mri")
        if args.acceleration is not None and not args.acceleration > 1:
            raise UserError(f"--acceleration must be > 1, got {args.acceleration}")
        if args.center_fraction is not None and not 0 < args.center_fraction < 1:
            raise UserError(f"--center-fraction must be in (0, 1), got {args.center_fraction}")
    if not 0 <= args.seed <= 2**31 - 1:
        raise UserError(f"--seed must be in [0, 2**31 - 1], got {args.seed}")


def operator_factory(args) -> Callable[[tuple[int, int]], "torch.nn.Module"]:
    """``(H, W) -> operator`` for the simulated acquisition the arguments describe."""
    from idm_imaging.operators import build_operator

    def make(hw):
        try:
            return build_operator(args.task, hw, ratio=args.ratio, block_size=args.block_size,
                                  permute=not args.no_permute, mask_kind=args.mask, acceleration=args.acceleration,
                                  center_fraction=args.center_fraction, seed=args.seed)
        except ValueError as exc:
            if args.task == "cs":
                raise
            raise UserError(f"--mask {args.mask} --acceleration {args.acceleration}: {exc}") from exc

    return make


def acquisition_label(args) -> str:
    if args.task == "cs":
        return f"block CS ratio {args.ratio:g} (B={args.block_size})"
    return f"{args.acceleration:g}x {args.mask} k-space mask"


# ----------------------------------------------------------------------------------------------------- input
@dataclass
class LoadedInput:
    """What ``reconstruct``/``simulate`` work on.

    volume: (H, W) or (D, H, W) image, or centred k-space when ``measured``. meta: read_scan's metadata (affine,
    spacing) for the output. mask: (H, W) bool for measured k-space. reference: an image stored beside measured
    k-space (fastMRI ``reconstruction_*``), compared after a centre crop.
    """

    volume: torch.Tensor
    meta: dict
    measured: bool = False
    mask: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)


def add_input_args(p: argparse.ArgumentParser) -> None:
    """``--slices A:B`` and ``--overwrite`` (reconstruct, simulate)."""
    p.add_argument("--slices", metavar="A:B",
                   help="volumes: only slices A to B-1 (0-based, Python slice syntax: 10:20, :5, 100:), e.g. to try "
                        "a few slices of a large volume first; the output keeps their position (affine)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output file(s)")


def select_slices(inp: LoadedInput, text: str | None) -> None:
    """Keep slices ``A:B`` of a volume input (and its reference, affine origin and DICOM file list)."""
    if text is None:
        return
    if inp.volume.ndim != 3:
        raise UserError(f"--slices {text!r}: INPUT is a 2-D image, not a volume")
    depth = int(inp.volume.shape[0])
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(v) if v.strip() else None for v in parts)
    except ValueError:
        raise UserError(f"--slices {text!r}: expected A:B with integers, e.g. 10:20") from None
    index = range(depth)[slice(start, stop)]
    if len(index) == 0:
        raise UserError(f"--slices {text!r} selects no slice of the {depth}-slice volume")
    a, b = index.start, index.stop
    inp.volume = inp.volume[a:b]
    if inp.reference is not None and inp.reference.ndim == 3:
        inp.reference = inp.reference[a:b]
    meta = dict(inp.meta)
    if meta.get("affine") is not None:
        import numpy as np

        affine = np.array(meta["affine"], dtype=np.float64)
        affine[:3, 3] += affine[:3, 2] * a  # the affine maps index (w, h, d): move the origin to slice a
        meta["affine"] = affine
    if isinstance(meta.get("files"), list) and len(meta["files"]) == depth:
        meta["files"] = meta["files"][a:b]
    inp.meta = meta
    inp.notes.append(f"slices {a}:{b} of {depth}")


def load_input(path_text: str, args) -> LoadedInput:
    """Read INPUT; fastMRI .h5 with undersampled k-space becomes a measured input (``--task mri`` only)."""
    import torch

    from idm_imaging.io import read_scan

    path = Path(path_text).expanduser()
    if not path.exists():
        raise UserError(f"INPUT {str(path)!r} does not exist")
    img, meta = read_scan(path)
    notes: list[str] = []
    if meta["format"] == "fastmri-h5" and "kspace" in meta.get("datasets", {}):
        img, meta = read_scan(path, kspace=True)
        k = meta.pop("kspace")
        if k.ndim != 3:
            raise UserError(f"INPUT {str(path)!r}: multi-coil k-space {tuple(k.shape)} is not supported "
                            "(single-coil only); reconstruct its RSS image instead with a simulated acquisition")
        stored = meta.pop("mask", None)
        if stored is not None:
            mask = stored.reshape(1, -1).expand(k.shape[-2], -1) if stored.ndim == 1 else stored
            if tuple(mask.shape) != tuple(k.shape[-2:]):
                raise UserError(f"INPUT {str(path)!r}: mask shape {tuple(stored.shape)} does not fit k-space "
                                f"{tuple(k.shape)}")
        else:
            mask = (k.abs() > 0).any(dim=0)
        mask = mask.to(torch.bool)
        if not bool(mask.all()):
            if args.task != "mri":
                raise UserError(f"--task cs: {str(path)!r} holds measured k-space; use --task mri")
            if args.mask is not None or args.acceleration is not None:
                notes.append("the file holds measured k-space with its own mask: --mask/--acceleration are ignored")
            ref = None
            if meta.get("image_key", "").startswith("reconstruction"):
                ref = img
            meta.pop("image_key", None)
            notes.append(f"reconstructing the measured k-space as given ({k.shape[0]} slice(s), "
                         f"acceleration {mask.numel() / max(int(mask.sum()), 1):.2f})")
            return LoadedInput(k * mask, meta, True, mask, ref, notes)
        # fully sampled k-space: simulate from its complex image
        from idm_imaging.operators import ifft2c

        img = ifft2c(k[:, None])[:, 0]
        notes.append("fully sampled k-space: simulating the acquisition from its complex image")
        meta["spacing"] = (1.0,) * img.ndim
    else:
        img, meta = read_scan(path)
    if args.task == "cs" and img.is_complex():
        img = img.abs()
        notes.append("--task cs is a real acquisition: using the magnitude of the complex input")
    return LoadedInput(img, meta, False, None, None, notes)


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name the same file (links and relative spellings included)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output_path(out: str, ndim: int, flag: str = "--out", *, inputs: tuple[str, ...] = (),
                      overwrite: bool = False) -> Path:
    """Fail before computing: the folder must exist, the suffix be writable, PNG only for 2-D images; never the
    input, nor an existing file unless ``overwrite``."""
    from idm_imaging.io._common import full_suffix

    p = Path(out).expanduser()
    for src in inputs:
        s = Path(src).expanduser()
        if same_file(p, s):
            raise UserError(f"{flag} {out!r} is INPUT {src!r}: writing it would destroy the scan; choose another path")
    if p.exists() and not p.is_dir() and not overwrite:
        raise UserError(f"{flag} {out!r} exists; pass --overwrite to replace it")
    suffix = full_suffix(p)
    if suffix not in WRITE_SUFFIXES:
        raise UserError(f"{flag} {out!r}: unsupported suffix {suffix!r}; use one of {', '.join(WRITE_SUFFIXES)} "
                        "(DICOM input: write .nii.gz, which keeps the DICOM geometry)")
    if not p.parent.is_dir():
        raise UserError(f"{flag} {out!r}: folder {str(p.parent)!r} does not exist")
    if p.is_dir():
        raise UserError(f"{flag} {out!r} is a folder; give a file name")
    if ndim == 3 and suffix == ".png":
        raise UserError(f"{flag} {out!r}: a 3-D volume cannot be written as PNG; use .nii.gz, .tif or .npy")
    return p


# ---------------------------------------------------------------------------------------------------- models
def check_device(text: str, flag: str = "--device") -> None:
    """Only devices this package runs on: auto, cpu, cuda, cuda:N (not meta, mps, xla ...)."""
    kind, _, index = text.partition(":")
    if kind not in DEVICE_KINDS or (index and (kind != "cuda" or not index.isdigit())):
        raise UserError(f"{flag} {text!r}: unsupported device; use auto, cpu, cuda or cuda:N")


def model_info(folder: Path, name: str | None = None) -> dict[str, Any]:
    """Name, task, steps, backbone, operator settings and model card of a model folder (reads config.json only)."""
    from idm_imaging.models.limits import read_model_config

    cfg_file = folder / "config.json"
    try:
        cfg = read_model_config(folder)
    except (OSError, ValueError) as exc:
        raise UserError(f"model {name or str(folder)!r}: cannot use {cfg_file}: {exc}") from None
    card = next((folder / n for n in MODEL_CARD_NAMES if (folder / n).is_file()), None)
    return {
        "name": name or folder.name,
        "folder": str(folder),
        "task": cfg.get("task"),
        "T": cfg.get("T"),
        "backbone": cfg.get("backbone_type") or cfg.get("_class_name"),
        "operator": cfg.get("operator_config"),
        "model_card": str(card) if card else None,
    }


def setting_text(setting: dict) -> str:
    """``{"ratio": 0.3}`` -> ``"ratio 0.3"``, ``{"acceleration": 8.0}`` -> ``"8x"``: an alias's acquisition setting."""
    return ", ".join(f"{v:g}x" if k == "acceleration" else f"{k} {v:g}" for k, v in setting.items())


def embedded_models(aliases: bool = False) -> list[dict[str, Any]]:
    """Every registered embedded model whose folder is present (see ``idm_imaging.models.registry``); with
    ``aliases``, then every alias of those, with ``alias_of`` (the model it loads) and ``setting`` (what it stands
    for) added."""
    from idm_imaging.models import registry

    present = registry.available_models()
    out = [model_info(registry.WEIGHTS_DIR / registry.REGISTRY[name], name) for name in sorted(present)]
    if aliases:
        for name in registry.available_models(aliases=True)[len(present):]:
            target, setting = registry.resolve_name(name)
            out.append({**model_info(registry.WEIGHTS_DIR / registry.REGISTRY[target], name), "alias_of": target,
                        "setting": setting})
    return out


def apply_model_setting(args, say: Callable[[str], None] = print) -> None:
    """``--model`` naming an alias (``idm_imaging.models.registry.ALIASES``, e.g. ``mri-8x``: the ``mri`` model at
    8x): its setting fills ``--ratio`` / ``--acceleration`` when not given. A different value given on the command
    line wins; the model is then named by its own name (``mri``), so that no label claims a setting that did not
    run. A folder of the alias's name is a folder, as in ``resolve_checkpoint``; another task's alias is left to
    :func:`resolve_model`, which reports the task mismatch."""
    spec = getattr(args, "model", None)
    if not spec or Path(spec).expanduser().is_dir():
        return
    from idm_imaging.models.registry import resolve_name

    target, setting = resolve_name(spec)
    for key, value in setting.items():
        if (key == "ratio") != (args.task == "cs"):
            continue
        given = getattr(args, key, None)
        if given is None:
            setattr(args, key, value)
            say(f"note: --model {spec} is the model {target!r} at {setting_text({key: value})}: "
                f"--{key} {value:g}")
        elif given != value:
            args.model = target
            say(f"note: --model {spec} is the model {target!r} at {setting_text({key: value})}; running "
                f"{target!r} at the given --{key} {given:g}")


def resolve_model(spec: str | None, args, say: Callable[[str], None] = print):
    """The model for ``--model`` (embedded name, folder, or "pinv"); without it the embedded default of the task.

    Returns ``(model or None, label)``; None means the pseudo-inverse / zero-filled reconstruction.
    """
    pinv_label = "zero-filled" if args.task == "mri" else "pseudo-inverse"
    if spec is not None and spec.lower() in PINV_NAMES:
        return None, pinv_label
    if spec is None:
        from idm_imaging.models.registry import default_model

        spec = default_model(args.task, ratio=getattr(args, "ratio", None),
                             acceleration=getattr(args, "acceleration", None))
        if spec is None:
            say(f"note: no embedded IDM model for --task {args.task} in this installation; using the "
                f"{pinv_label} reconstruction (pass --model DIR for a trained model)")
            return None, pinv_label
        say(f"using the embedded model {spec!r} (default for --task {args.task}; see `idm-imaging models`)")
    from idm_imaging.models import IDM
    from idm_imaging.models.registry import ALIASES, REGISTRY, resolve_checkpoint, resolve_name

    if resolve_name(spec)[0] not in REGISTRY and not Path(spec).expanduser().is_dir():
        raise UserError(f"--model {spec!r} is neither a model folder nor an embedded model "
                        f"(embedded: {sorted(REGISTRY) or 'none'}; aliases: {sorted(ALIASES) or 'none'}; "
                        "or 'pinv')")
    try:
        folder = resolve_checkpoint(os.path.expanduser(spec))
        ensemble = getattr(args, "ensemble", None)
        overrides = {} if ensemble is None else {"ensemble": ensemble}
        model = IDM.from_pretrained(folder, **overrides)  # checks the folder (config, weights) before building
    except (ValueError, OSError) as exc:
        raise UserError(f"--model {spec!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (safetensors / diffusers raise their own types on corrupt files)
        raise UserError(f"--model {spec!r}: cannot load {folder}: {type(exc).__name__}: {exc}") from None
    task = model.config.task
    if task != args.task:
        raise UserError(f"--model {spec!r} is a {task!r} model but --task is {args.task!r}")
    return model.eval().float(), f"IDM ({Path(spec).name})"
