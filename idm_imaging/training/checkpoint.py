"""Atomic, pickle-free training checkpoints.

A checkpoint is a folder ``<output>/checkpoints/step-00000100/``:

- ``model/``: the (unwrapped) model via diffusers ``save_pretrained`` (``config.json`` + safetensors);
- ``train_state.safetensors`` + ``train_state.json``: optimizer, LR scheduler and EMA state; every tensor goes
  to the safetensors file under a flat key (``optimizer.state.3.exp_avg``, ``ema.shadow.12``) and every other
  value to the JSON file, whose structure keeps a ``{"__tensor__": key}`` placeholder where a tensor was;
- ``rng-rank{r}.safetensors`` + ``.json``: each rank's torch (CPU and CUDA), numpy and Python RNG states;
- ``train_config.json``: the resolved run config.

The folder is written under a temporary name and renamed (``os.replace``); ``checkpoints/latest`` (written the
same way) names the newest complete one, so a process killed at any moment leaves a loadable checkpoint.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from idm_imaging.io import atomic_write_text

__all__ = ["flatten_state", "unflatten_state", "save_state", "load_state", "rng_state", "set_rng_state",
           "atomic_write_text", "latest_checkpoint", "load_model_weights", "prune_checkpoints"]


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


def load_state(folder: Path, name: str) -> dict:
    """Read what :func:`save_state` wrote."""
    tensors = load_file(str(folder / f"{name}.safetensors"))
    return unflatten_state(json.loads((folder / f"{name}.json").read_text(encoding="utf-8")), tensors)


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
    """The folder named by ``checkpoints/latest``, or None when there is no complete checkpoint."""
    marker = Path(output_dir) / "checkpoints" / "latest"
    if not marker.is_file():
        return None
    folder = marker.parent / marker.read_text(encoding="utf-8").strip()
    return folder if folder.is_dir() else None


def load_model_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load the safetensors weights a ``save_pretrained`` folder holds into ``model`` (strict)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ValueError(f"checkpoint folder {folder} holds no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    model.load_state_dict(state, strict=True)


def prune_checkpoints(ckpt_root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step folders (and stale temporary folders)."""
    steps = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
    for p in steps[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_root.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
