"""Sanity limits for model folders from elsewhere: check a config and its weights file before building anything.

A model folder is data: a config with ``T = 1e9`` or ``layers_per_block = 1e6`` would make the constructor build
for hours or allocate petabytes, a weights "file" may be a FIFO, a device or truncated. These checks read only
``config.json`` and the safetensors header and fail in milliseconds with a ValueError naming the file and key.

Example::

    >>> from idm_imaging.models.limits import check_model_config
    >>> check_model_config({"T": 1_000_000_000})
    Traceback (most recent call last):
    ...
    ValueError: config: T=1000000000 is out of range: expected an int in 1..1000 (sampling steps)
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

__all__ = ["check_model_config", "check_model_folder", "read_model_config", "MAX_CONFIG_BYTES"]

MAX_CONFIG_BYTES = 1024**2  # a diffusers config.json is a few KB
MAX_HEADER_BYTES = 100 * 1024**2  # safetensors' own limit
MAX_PARAMETERS = 4e9  # about 5x Stable Diffusion's UNet
# key -> (min, max) for ints of an IDM config and of its backbone (diffusers UNet) config
_INT_RANGES = {
    "T": (1, 1000, "sampling steps"),
    "layers_per_block": (1, 16, "resnets per UNet block"),
    "transformer_layers_per_block": (1, 16, "transformer layers per UNet block"),
    "in_channels": (1, 64, "UNet input channels"),
    "out_channels": (1, 64, "UNet output channels"),
    "sample_size": (1, 4096, "UNet sample size"),
    "cross_attention_dim": (1, 8192, "cross-attention width"),
    "attention_head_dim": (1, 8192, "attention head width"),
    "num_attention_heads": (1, 1024, "attention heads"),
    "norm_num_groups": (1, 4096, "normalisation groups"),
}


def _check_int(where: str, key: str, value: Any) -> None:
    lo, hi, what = _INT_RANGES[key]
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or len(values) > 16:
        raise ValueError(f"{where}: {key}={value!r} is out of range: expected 1 to 16 values")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{where}: {key}={value!r} is out of range: expected an int in {lo}..{hi} ({what})")


def _check_backbone(where: str, cfg: dict) -> None:
    for key in _INT_RANGES:
        if key != "T" and cfg.get(key) is not None:
            _check_int(where, key, cfg[key])
    channels = cfg.get("block_out_channels")
    if channels is None:
        return
    if not isinstance(channels, (list, tuple)) or not 1 <= len(channels) <= 8:
        raise ValueError(f"{where}: block_out_channels={channels!r} is out of range: expected 1 to 8 ints")
    for c in channels:
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 8192:
            raise ValueError(f"{where}: block_out_channels={channels!r} is out of range: expected ints in 1..8192")
    layers = cfg.get("layers_per_block") or 2
    layers = max(layers) if isinstance(layers, (list, tuple)) else layers
    tl = cfg.get("transformer_layers_per_block") or 1
    tl = max(tl) if isinstance(tl, (list, tuple)) else tl
    # a resnet is two 3x3 convolutions (18 c^2), a transformer layer about 12 c^2; 2L+1 of each per level
    params = sum((2 * layers + 1) * (18 + 12 * tl) * c * c for c in channels)
    if params > MAX_PARAMETERS:
        raise ValueError(f"{where}: block_out_channels={list(channels)} with layers_per_block={layers} make a "
                         f"UNet of about {params:.2g} parameters, above the {MAX_PARAMETERS:.0g} limit")


def check_model_config(config: dict, where: str = "config") -> None:
    """Raise ValueError (naming ``where`` and the key) when an IDM or diffusers UNet config is out of range.

    Checks ``T``, the backbone's block count, widths and depths and a parameter estimate; builds nothing.
    """
    if not isinstance(config, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(config).__name__}")
    if "T" in config:
        _check_int(where, "T", config["T"])
    backbone = config.get("backbone_config")
    if backbone is not None:
        if not isinstance(backbone, dict):
            raise ValueError(f"{where}: backbone_config must be a JSON object, got {type(backbone).__name__}")
        _check_backbone(f"{where}: backbone_config", backbone)
    elif "block_out_channels" in config:  # a diffusers UNet folder (a prior)
        _check_backbone(where, config)


def _regular_file(path: Path, what: str) -> int:
    """Size of ``path``, which must be (or link to) a regular file: a FIFO or device would block or never end."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ValueError(f"{what} {str(path)!r} cannot be opened ({exc.strerror or exc})") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {str(path)!r} is not a regular file")
    return st.st_size


def read_model_config(folder: os.PathLike | str) -> dict:
    """``folder/config.json`` as a dict, after checking it is a small regular file holding a JSON object."""
    path = Path(folder) / "config.json"
    size = _regular_file(path, "config")
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"config {str(path)!r} is {size} bytes; a model config is a few KB")
    try:
        cfg = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"config {str(path)!r} must hold a JSON object, got {type(cfg).__name__}")
    return cfg


def _check_safetensors(path: Path) -> None:
    size = _regular_file(path, "weights")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"weights {str(path)!r} is truncated ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"weights {str(path)!r} is truncated or not a safetensors file "
                             f"(header of {n} bytes in a {size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"weights {str(path)!r} has a corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise ValueError(f"weights {str(path)!r} has a corrupt safetensors header")
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise ValueError(f"weights {str(path)!r} has a corrupt safetensors header") from None
    if end != size - 8 - n:
        raise ValueError(f"weights {str(path)!r} is truncated or padded: its header declares {end} bytes of "
                         f"tensor data, the file holds {size - 8 - n}")


def check_model_folder(folder: os.PathLike | str, weights_name: str = "diffusion_pytorch_model.safetensors") -> dict:
    """Check ``config.json`` (:func:`check_model_config`) and the safetensors weights of a model folder.

    Returns the config. A missing weights file is left to the loader (its message lists what it found).
    """
    folder = Path(folder)
    cfg = read_model_config(folder)
    check_model_config(cfg, where=f"config {str(folder / 'config.json')!r}")
    weights = folder / weights_name
    if weights.exists() or weights.is_symlink():
        _check_safetensors(weights)
    return cfg
