"""Embedded (shipped) IDM checkpoints: name -> folder under ``idm_imaging/weights/``, and aliases.

Each folder holds a diffusers-style ``config.json`` + ``diffusion_pytorch_model.safetensors``. An alias
(:data:`ALIASES`) names a registered model at one acquisition setting: ``"mri-8x"`` loads ``"mri"``, and where the
acquisition is taken from the model name (``idm-imaging reconstruct --model mri-8x`` without ``--acceleration``,
the napari widget's model menu) it stands for 8x. :func:`resolve_name` is the one place that reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REGISTRY", "ALIASES", "WEIGHTS_DIR", "available_models", "resolve_name", "resolve_checkpoint",
           "default_model"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

#: name -> folder name under WEIGHTS_DIR, in the order default_model prefers among models that fit a setting equally:
#: "cs" (any block-CS ratio of its range) and "mri" (any acceleration and mask kind of its range) are the defaults.
#: "prior-gray" is a diffusers UNet folder (the diffusion prior, for IDM.from_diffusers and the DDNM/DPS baselines).
REGISTRY: dict[str, str] = {name: name for name in ("cs", "mri", "prior-gray")}

#: alias -> (registered model, the acquisition setting the alias stands for: ``ratio`` for block CS,
#: ``acceleration`` for MRI). These names belonged to single-setting models that "cs" and "mri" beat on every
#: benchmark row; they load "cs" / "mri" now, and supply their setting where the acquisition follows the model name.
ALIASES: dict[str, tuple[str, dict[str, float]]] = {
    "cs-0.1": ("cs", {"ratio": 0.1}),
    "cs-0.3": ("cs", {"ratio": 0.3}),
    "cs-0.5": ("cs", {"ratio": 0.5}),
    "mri-4x": ("mri", {"acceleration": 4.0}),
    "mri-8x": ("mri", {"acceleration": 8.0}),
}


def resolve_name(name: str | os.PathLike) -> tuple[str, dict[str, float]]:
    """``(registered name, acquisition setting)`` that a model name stands for: an alias gives its target and a copy
    of its setting (``"mri-8x"`` -> ``("mri", {"acceleration": 8.0})``); a registered name, a folder or any other
    text gives itself and ``{}`` (a name in :data:`REGISTRY` is never read as an alias)."""
    text = str(name)
    if text in REGISTRY or text not in ALIASES:
        return text, {}
    target, setting = ALIASES[text]
    return target, dict(setting)


def available_models(aliases: bool = False) -> list[str]:
    """Registered names whose weights are present in this installation; with ``aliases``, then the aliases of those
    (for menus that offer every documented name)."""
    names = [n for n, d in REGISTRY.items() if (WEIGHTS_DIR / d / "config.json").is_file()]
    if aliases:
        names += [a for a in ALIASES if a not in REGISTRY and resolve_name(a)[0] in names]
    return names


def resolve_checkpoint(name_or_dir: str | os.PathLike) -> Path:
    """Existing local folder -> itself; embedded name or alias -> its folder; otherwise ``ValueError`` listing names."""
    if not isinstance(name_or_dir, (str, os.PathLike)):
        raise TypeError(f"name_or_dir: expected a folder path or a model name, got {type(name_or_dir).__name__}")
    p = Path(name_or_dir)
    if p.is_dir():
        return p
    name = str(name_or_dir)
    target, _ = resolve_name(name)
    if target in REGISTRY:
        folder = WEIGHTS_DIR / REGISTRY[target]
        if not folder.is_dir():
            what = repr(name) if target == name else f"{target!r} (alias {name!r})"
            raise ValueError(f"name_or_dir: embedded model {what} is registered but {folder} is missing")
        return folder
    raise ValueError(f"name_or_dir: {name!r} is neither a folder nor an embedded model; "
                     f"available names: {sorted(REGISTRY) or '(none)'}, aliases: {sorted(ALIASES) or '(none)'}")


def default_model(task: str, ratio: float | None = None, acceleration: float | None = None) -> str | None:
    """The embedded model for ``task`` ("cs" / "mri") when none is named (command line, napari widget): the one
    whose training acquisition is closest to the requested block-CS ``ratio`` / MRI ``acceleration`` (inside a
    model's ``ratio_range`` / ``acceleration_range`` counts as exact); the first of the task without a value;
    None when this installation has no model of the task. Always a registered name, never an alias."""
    import json
    import math

    if task not in ("cs", "mri"):
        raise ValueError(f"task: expected 'cs' or 'mri', got {task!r}")
    key, want = ("ratio", ratio) if task == "cs" else ("acceleration", acceleration)
    best, best_gap = None, math.inf
    for name in available_models():
        try:
            cfg = json.loads((WEIGHTS_DIR / REGISTRY[name] / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if cfg.get("task") != task:
            continue
        op = cfg.get("operator_config") or {}
        span = op.get(f"{key}_range")
        value = op.get(key, (op.get("mask_params") or {}).get(key))
        gap = math.inf
        try:
            if want is None:  # no setting named: a model for every setting of the task first
                gap = 0.0 if span is not None else 0.5
            elif span is not None:
                gap = max(float(span[0]) - float(want), float(want) - float(span[1]), 0.0)
            elif value is not None:
                gap = abs(float(value) - float(want))
        except (TypeError, ValueError, IndexError):
            pass
        if best is None or gap < best_gap:
            best, best_gap = name, gap
    return best
