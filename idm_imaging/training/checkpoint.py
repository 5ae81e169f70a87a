"""Atomic, pickle-free training checkpoints.

A checkpoint is a folder ``<output>/checkpoints/step-00000100/``:

- ``model/``: the (unwrapped) model via diffusers ``save_pretrained`` (``config.json`` + safetensors);
- ``train_state.safetensors`` + ``train_state.json``: optimizer, LR scheduler and EMA state; every tensor goes
  to the safetensors file under a flat key (``optimizer.state.3.exp_avg``, ``ema.shadow.12``) and every other
  value to the JSON file, whose structure keeps a ``{"__tensor__": key}`` placeholder where a tensor was;
- ``rng-rank{r}.safetensors`` + ``.json``: each rank's torch (CPU and CUDA), numpy and Python RNG states;
- ``train_config.json``: the resolved run config.

- ``checksums.json``: the sha256 of every other file of the folder, checked before a resume loads it (a bit flip
  in the weights or a truncated file is an error, not a silently different run).

The folder is written under a temporary name and renamed (``os.replace``); ``checkpoints/latest`` (written the
same way) names the newest complete one, so a process killed at any moment leaves a loadable checkpoint.
A ``latest`` that names anything but an existing ``step-NNNNNNNN`` folder beside it is an error: a resume never
silently starts over (which would prune the valid checkpoints) nor continues another run.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from idm_imaging.io import atomic_write_text

__all__ = ["flatten_state", "unflatten_state", "save_state", "load_state", "rng_state", "set_rng_state",
           "atomic_write_text", "latest_checkpoint", "load_model_weights", "prune_checkpoints", "check_output_dir",
           "write_checksums", "verify_checksums"]

CHECKSUMS = "checksums.json"
_STEP_NAME = re.compile(r"step-\d{8}")
#: what a training run writes into its output_dir (idm_imaging.training.loop)
RUN_ENTRIES = frozenset({"train_config.json", "log.csv", "checkpoints", "model", "final_state.json", "tensorboard",
                         ".tmp-model"})


def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor in a nested dict/list/tuple into ``tensors``; return the JSON-able skeleton."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten_state(k, f"{prefix}.k{i}", tensors), flatten_state(v, f"{prefix}.{k}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        tensors[prefix] = torch.from_numpy(np.ascontiguousarray(obj)).clone()
        return {"__ndarray__": prefix}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"state entry {prefix!r} has unsupported type {type(obj).__name__}")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def save_state(state: dict, folder: Path, name: str) -> None:
    """Write ``name.safetensors`` (tensors) + ``name.json`` (everything else) into ``folder``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state(state, "s", tensors)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton), encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint file {path}: cannot be read as JSON ({exc}); the checkpoint is damaged") \
            from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated or corrupt headers
        raise ValueError(f"checkpoint file {path}: cannot be read as safetensors ({exc}); the checkpoint is "
                         "damaged") from None


def load_state(folder: Path, name: str) -> dict:
    """Read what :func:`save_state` wrote; a damaged file raises ``ValueError`` naming it."""
    tensors = _read_safetensors(Path(folder) / f"{name}.safetensors")
    skeleton = _read_json(Path(folder) / f"{name}.json")
    try:
        return unflatten_state(skeleton, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint file {Path(folder) / f'{name}.json'}: does not match its .safetensors "
                         f"({exc!r})") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(folder: Path) -> None:
    """Record the sha256 of every file under ``folder`` in ``folder/checksums.json``."""
    folder = Path(folder)
    sums = {p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKSUMS}
    (folder / CHECKSUMS).write_text(json.dumps({"sha256": sums}, indent=1), encoding="utf-8")


def verify_checksums(folder: Path) -> None:
    """Raise ``ValueError`` naming the file when a file of the checkpoint is missing or differs from the sha256
    that :func:`write_checksums` recorded. (Checkpoints written before checksums existed are not checked.)"""
    folder = Path(folder)
    if not (folder / CHECKSUMS).exists():
        return
    sums = _read_json(folder / CHECKSUMS)
    if not isinstance(sums, dict) or not isinstance(sums.get("sha256"), dict):
        raise ValueError(f"checkpoint file {folder / CHECKSUMS}: expected {{'sha256': {{file: hex}}}}")
    for rel, digest in sums["sha256"].items():
        path = folder / rel
        if ".." in Path(rel).parts or not path.is_file():
            raise ValueError(f"checkpoint {folder}: {rel} is missing (listed in {CHECKSUMS})")
        if _sha256(path) != digest:
            raise ValueError(f"checkpoint file {path}: its sha256 differs from the one recorded in {CHECKSUMS} "
                             "(the file is corrupted); resume from an earlier checkpoint or start a new run")


def rng_state() -> dict:
    """torch (CPU + every CUDA device), numpy legacy and Python ``random`` states."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": (np_state[0], np_state[1], int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    v, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((v, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint folder ``checkpoints/latest`` names (its checksums verified), or None without ``latest``.

    Raises ``ValueError`` when ``latest`` names anything but an existing ``step-NNNNNNNN`` folder beside it, or
    when the folder fails :func:`verify_checksums`.
    """
    marker = Path(output_dir) / "checkpoints" / "latest"
    if not marker.exists():
        return None
    try:
        name = marker.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"checkpoint marker {marker}: cannot be read ({exc})") from None
    if not _STEP_NAME.fullmatch(name):
        raise ValueError(f"checkpoint marker {marker}: names {name[:80]!r}, not a checkpoint of this run "
                         "(expected step-NNNNNNNN)")
    folder = marker.parent / name
    if not folder.is_dir():
        present = sorted(p.name for p in marker.parent.glob("step-*") if p.is_dir())
        raise ValueError(f"checkpoint marker {marker}: names {name} but {folder} does not exist (present: "
                         f"{', '.join(present) or 'none'}); write the name of an existing one into it to resume "
                         "from there")
    verify_checksums(folder)
    return folder


def check_output_dir(output_dir: Path, resume: bool) -> None:
    """Refuse an ``output_dir`` a run would damage: a file; a non-empty folder that is not a training run (no
    ``train_config.json``: its ``log.csv`` and ``model/`` would be replaced); a run with checkpoints unless
    ``resume``. Raises ``ValueError`` naming the config key."""
    out = Path(output_dir)
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"config key 'output_dir': {out} is a file, not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if not (out / "train_config.json").is_file():
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ValueError(f"config key 'output_dir': {out} is not empty ({shown}) and is not a training run; "
                         "choose a new or empty folder")
    ckpts = out / "checkpoints"
    if not resume and ((ckpts / "latest").exists() or any(ckpts.glob("step-*"))):
        raise ValueError(f"config key 'output_dir': {out} already holds checkpoints; resume or choose another "
                         "folder")


def load_model_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load the safetensors weights a ``save_pretrained`` folder holds into ``model`` (strict)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ValueError(f"checkpoint folder {folder} holds no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(_read_safetensors(f))
    model.load_state_dict(state, strict=True)


def prune_checkpoints(ckpt_root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step folders (and stale temporary folders)."""
    steps = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
    for p in steps[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_root.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
