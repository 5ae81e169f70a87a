"""Acquisition physics: block compressed sensing and single-coil Fourier MRI, plus k-space masks.

All operators follow the contract in ``docs/ARCHITECTURE.md``: ``A``, ``A_adjoint``, ``A_dagger``,
``forward = A``, ``measure``, ``is_complex``, ``get_config`` / :func:`operator_from_config`.
"""

from idm_imaging.operators.base import LinearOperator, operator_from_config, register_operator
from idm_imaging.operators.block_cs import BlockCS
from idm_imaging.operators.dihedral import DIHEDRAL, Dihedral
from idm_imaging.operators.factory import build_operator
from idm_imaging.operators.fourier import SingleCoilFourier, fft2c, ifft2c
from idm_imaging.operators.masks import MASK_KINDS, MaskFunc, make_mask

__all__ = [
    "BlockCS",
    "DIHEDRAL",
    "Dihedral",
    "LinearOperator",
    "MASK_KINDS",
    "MaskFunc",
    "SingleCoilFourier",
    "build_operator",
    "fft2c",
    "ifft2c",
    "make_mask",
    "operator_from_config",
    "register_operator",
]
