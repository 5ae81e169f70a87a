"""An operator seen through a flip and a rotation of the image: ``A_g = A g^{-1}``.

For an element ``g`` of the dihedral group of the square (a horizontal flip, then ``rot`` quarter turns
counter-clockwise), ``y = A x = A g^{-1} (g x)``: the same measurements are measurements of the transformed image
``g x`` by ``A_g = A g^{-1}``. ``g`` permutes pixels, so ``g^{-1} = g^T`` and

.. math::

    A_g = A g^T, \\qquad A_g^H = g A^H, \\qquad A_g^+ = g A^+, \\qquad A_g A_g^H = A A^H.

A reconstruction method ``R`` that is not exactly equivariant gives a different estimate ``g^{-1} R(y, A_g)`` for
each ``g``; their mean is a test-time ensemble (used by :class:`~idm_imaging.models.IDM`). Each estimate is
consistent with ``y`` when ``R``'s is, and so is their mean (the consistent images form an affine set).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import LinearOperator

__all__ = ["DIHEDRAL", "Dihedral"]

#: The eight elements ``(flip, rot)``, ordered so that the first 2 and the first 4 keep ``(H, W)`` (no transpose).
DIHEDRAL: tuple[tuple[bool, int], ...] = ((False, 0), (True, 0), (False, 2), (True, 2),
                                          (False, 1), (True, 1), (False, 3), (True, 3))


class Dihedral(LinearOperator):
    """``operator`` composed with the inverse of a flip and rotation of the image (see the module docstring).

    Args:
        operator (`LinearOperator`):
            Any operator with ``A``, ``A_adjoint`` and ``A_dagger`` on ``(B, C, H, W)`` images.
        flip (`bool`, *optional*, defaults to `False`):
            Whether to flip the image left-right first.
        rot (`int`, *optional*, defaults to 0):
            Quarter turns counter-clockwise applied after the flip (``torch.rot90`` on the last two dims); taken
            modulo 4.

    ``transform(x)`` is ``g x`` and ``inverse(x)`` is ``g^{-1} x``; a rotation by an odd ``rot`` swaps ``H`` and ``W``.

    Example:
        >>> import torch
        >>> from idm_imaging.operators import BlockCS
        >>> op = BlockCS(0.25, block_size=8, img_size=(16, 24))
        >>> g = Dihedral(op, flip=True, rot=1)
        >>> x = torch.rand(1, 1, 16, 24)
        >>> torch.allclose(g.A(g.transform(x)), op.A(x))
        True
        >>> g.A_dagger(op.A(x)).shape                       # the transformed image: 24 x 16
        torch.Size([1, 1, 24, 16])
        >>> u, v = torch.rand(1, 1, 24, 16), torch.rand_like(op.A(x))
        >>> bool(torch.isclose((g.A(u) * v).sum(), (u * g.A_adjoint(v)).sum(), rtol=1e-4))
        True
    """

    def __init__(self, operator: Any, flip: bool = False, rot: int = 0):
        super().__init__()
        if isinstance(rot, bool) or not isinstance(rot, int):
            raise TypeError(f"rot: expected an int (quarter turns), got {type(rot).__name__}")
        self.operator, self.flip, self.rot = operator, bool(flip), rot % 4
        self.is_complex = bool(getattr(operator, "is_complex", False))

    def extra_repr(self) -> str:
        return f"flip={self.flip}, rot={self.rot}"

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``g x``: flip (if set), then ``rot`` quarter turns."""
        x = torch.flip(x, (-1,)) if self.flip else x
        return torch.rot90(x, self.rot, (-2, -1)) if self.rot else x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """``g^{-1} x``."""
        x = torch.rot90(x, -self.rot, (-2, -1)) if self.rot else x
        return torch.flip(x, (-1,)) if self.flip else x

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.operator.A(self.inverse(x))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.transform(self.operator.A_adjoint(y))

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.transform(self.operator.A_dagger(y))

    def get_config(self) -> dict:
        raise NotImplementedError("Dihedral: a view of another operator; save that operator's config instead")
