"""Build an acquisition operator from its parameters: the one constructor the CLI, napari, transforms and
fine-tuning share."""

from __future__ import annotations

import numpy as np
import torch

from idm_imaging.operators.base import LinearOperator
from idm_imaging.operators.block_cs import BlockCS
from idm_imaging.operators.fourier import SingleCoilFourier


def build_operator(
    task: str,
    shape: tuple[int, int],
    *,
    ratio: float | None = None,
    block_size: int = 32,
    permute: bool = True,
    mask_kind: str = "random",
    acceleration: float | None = None,
    center_fraction: float | None = None,
    seed: int = 0,
    mask=None,
) -> LinearOperator:
    """Build the operator of one acquisition for images of ``shape``.

    Args:
        task (`str`):
            ``"cs"`` for block compressed sensing (:class:`BlockCS`), ``"mri"`` for single-coil Fourier
            undersampling (:class:`SingleCoilFourier`).
        shape (`tuple[int, int]`):
            Image size ``(H, W)``.
        ratio (`float`, *optional*):
            CS sampling ratio in (0, 1]. Required with ``task="cs"``.
        block_size (`int`, *optional*, defaults to 32):
            CS block side ``B``.
        permute (`bool`, *optional*, defaults to `True`):
            Whether CS scrambles the pixels across blocks before sampling them.
        mask_kind (`str`, *optional*, defaults to `"random"`):
            MRI mask kind, one of :data:`~idm_imaging.operators.MASK_KINDS`.
        acceleration (`float`, *optional*):
            MRI undersampling factor (> 1). Required with ``task="mri"`` unless ``mask`` is given.
        center_fraction (`float`, *optional*):
            MRI fully sampled centre fraction; `None` takes the mask kind's default.
        seed (`int`, *optional*, defaults to 0):
            Seed of the CS matrix and permutation, or of the MRI mask.
        mask (`torch.Tensor` or `np.ndarray`, *optional*):
            A measured ``(H, W)`` MRI sampling mask, used as is instead of drawing one.

    Returns:
        `LinearOperator`: the operator; its ``get_config()`` records these parameters (or the mask).

    Example:
        >>> from idm_imaging.operators import build_operator
        >>> cs = build_operator("cs", (64, 64), ratio=0.25, block_size=16, seed=1)
        >>> tuple(cs.A(torch.rand(1, 1, 64, 64)).shape)
        (1, 1, 64, 4, 4)
        >>> mri = build_operator("mri", (64, 64), mask_kind="equispaced", acceleration=4)
        >>> round(mri.acceleration)
        4
    """
    shape = tuple(int(s) for s in shape)
    if task == "cs":
        return BlockCS(ratio, block_size=block_size, permute=permute, seed=seed, img_size=shape)
    if task != "mri":
        raise ValueError(f"task must be 'cs' or 'mri', got {task!r}")
    if mask is not None:
        return SingleCoilFourier(torch.as_tensor(np.asarray(mask, dtype=bool)))
    return SingleCoilFourier.from_mask_params(mask_kind, shape, acceleration, center_fraction=center_fraction,
                                              seed=seed)
