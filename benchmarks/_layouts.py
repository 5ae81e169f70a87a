"""Backbone layouts shared by the benchmarks (diffusers ``UNet2DConditionModel`` config dicts, random weights).

* ``sd15``: Stable Diffusion 1.5's UNet config; after IDM's surgery ~115M parameters (the paper's backbone).
* ``small``: a scaled-down SD-style layout (channels 64/128/256/256, attention at the first three levels), the
  size at which the authors' public implementation was timed for comparison.
* ``cpu``: a CPU-friendly SD-style layout (32/64/64/64, ``DownBlock2D`` first: no attention at the highest
  resolution), the kind of model shipped as the embedded default.
* ``tiny``: for smoke tests of the scripts.
"""

from __future__ import annotations

import copy

_SD_DOWN = ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
_SD_UP = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3

LAYOUTS = {
    "sd15": dict(block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, cross_attention_dim=768,
                 attention_head_dim=8, in_channels=4, out_channels=4, sample_size=64,
                 down_block_types=_SD_DOWN, up_block_types=_SD_UP),
    "small": dict(block_out_channels=[64, 128, 256, 256], layers_per_block=2, cross_attention_dim=64,
                  attention_head_dim=8, in_channels=4, out_channels=4, sample_size=64, norm_num_groups=32,
                  down_block_types=_SD_DOWN, up_block_types=_SD_UP),
    "cpu": dict(block_out_channels=[32, 64, 64, 64], layers_per_block=1, cross_attention_dim=32,
                attention_head_dim=8, in_channels=4, out_channels=4, sample_size=64, norm_num_groups=16,
                down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]),
    "tiny": dict(block_out_channels=[16, 32, 32, 32], layers_per_block=1, cross_attention_dim=16,
                 attention_head_dim=4, in_channels=4, out_channels=4, sample_size=32, norm_num_groups=8,
                 down_block_types=_SD_DOWN, up_block_types=_SD_UP),
}


def layout(name: str) -> dict:
    """A fresh copy of the named layout's config dict (``ValueError`` naming ``layout`` if unknown)."""
    if name not in LAYOUTS:
        raise ValueError(f"layout: {name!r} unknown; choose from {sorted(LAYOUTS)}")
    return copy.deepcopy(LAYOUTS[name])
