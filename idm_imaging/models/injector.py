"""Measurement injectors: let the noise estimator see the measurement at every kept UNet resolution.

For features ``h`` of shape ``(B, C, H/f, W/f)`` (``f`` = pixel factor between the padded image and this
resolution) and the current sampling step ``t``::

    img   = pixel_shuffle(conv1x1_t(h), f)                      (B, c, H, W), c = 1 (real) or 2 (re/im)
    z     = cat([img, A_dagger(A img), A_dagger(y)])            (B, 3c, H, W)
    out   = h + conv1x1_t'(pixel_unshuffle(z, f))               (B, C, H/f, W/f)

The last conv is zero-initialised, so a fresh injector is the identity. It is used as the ``F`` of a
coupling, so the residual form keeps the block shape-preserving. One pair of convs per sampling step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Injector", "StepContext"]


@dataclass(frozen=True, eq=False)
class StepContext:
    """What the injectors read at one sampling step; passed unchanged through the UNet's couplings.

    Args:
        step (`int`):
            Index of the sampling step (0 is ``t = T``); selects the injectors' per-step convs.
        project (`Callable[[torch.Tensor], torch.Tensor]`):
            ``img -> A_dagger(A img)`` on the padded real-channel image ``(N, c, H, W)``; same shape out, computed
            with autocast off in at least float32.
        aty (`torch.Tensor`):
            The padded ``A_dagger(y)`` as real channels, ``(N, c, H, W)``, in the model's real dtype. ``N`` and
            ``c`` are the batch and image channels the UNet sees (``c = 2`` for complex images as real/imaginary
            channels, else 1).
    """

    step: int
    project: Callable[[torch.Tensor], torch.Tensor]
    aty: torch.Tensor


class Injector(nn.Module):
    """Per-step measurement injector for features with ``channels`` channels at pixel factor ``factor``.

    Args:
        channels (`int`):
            Feature channels ``C``.
        factor (`int`):
            Ratio ``f`` between the (padded) image size and this feature map's size.
        steps (`int`):
            Number of sampling steps ``T`` (one conv pair per step).
        image_channels (`int`, *optional*, defaults to 1):
            1 for real images, 2 for complex ones (real/imaginary channels).

    ``forward(h, ctx)``: ``h`` features ``(B, C, H/f, W/f)``, ``ctx`` a :class:`StepContext`; returns the shape of
    ``h``.

    Example:
        >>> import torch
        >>> inj = Injector(channels=8, factor=2, steps=3)
        >>> ctx = StepContext(step=0, project=lambda im: im, aty=torch.zeros(1, 1, 16, 16))
        >>> inj(torch.randn(1, 8, 8, 8), ctx=ctx).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, channels: int, factor: int, steps: int, image_channels: int = 1):
        super().__init__()
        self.factor, self.image_channels = int(factor), int(image_channels)
        f2, c = self.factor**2, self.image_channels
        self.to_image = nn.ModuleList(nn.Conv2d(channels, c * f2, 1) for _ in range(steps))
        self.to_features = nn.ModuleList(nn.Conv2d(3 * c * f2, channels, 1) for _ in range(steps))
        for conv in self.to_features:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        t, f = ctx.step, self.factor
        img = F.pixel_shuffle(self.to_image[t](h), f) if f > 1 else self.to_image[t](h)
        z = torch.cat([img, ctx.project(img), ctx.aty], dim=1)  # cat promotes dtypes
        z = F.pixel_unshuffle(z, f) if f > 1 else z
        return h + self.to_features[t](z)
