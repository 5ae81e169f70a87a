"""Block-based compressed sensing (the IDM natural-image protocol)."""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from idm_imaging.operators.base import LinearOperator, check_image, pick, register_operator

__all__ = ["BlockCS"]

_PERM_SEED_OFFSET = 0x5EED  # the permutation stream differs from Phi's stream for the same seed


def _check_size(img_size) -> tuple[int, int] | None:
    if img_size is None:
        return None
    if isinstance(img_size, torch.Size):
        img_size = tuple(img_size)
    if (
        not isinstance(img_size, (tuple, list))
        or len(img_size) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in img_size)
    ):
        raise ValueError(f"img_size must be None or a pair of positive ints (H, W), got {img_size!r}")
    return int(img_size[0]), int(img_size[1])


@register_operator
class BlockCS(LinearOperator):
    r"""Block compressed sensing ``y = Phi_blocks P pad(x)``.

    The image is zero-padded at the bottom/right to ``(Hp, Wp)``, multiples of ``block_size`` B; optionally
    scrambled by one global random pixel permutation ``P`` of the padded image (the IDM reference protocol); cut
    into ``nh x nw`` blocks of B x B pixels; each block (flattened row-major, length ``n = B^2``) is multiplied by
    the same ``Phi`` of shape ``(q, n)``, ``q = ceil(ratio * n)``. ``Phi`` is the first ``q`` rows of the
    orthogonal ``Q`` of a QR decomposition of a seeded ``n x n`` standard Gaussian (signs fixed by ``diag(R)``),
    so ``Phi Phi^T = I_q``, ``A A^T = I`` and the pseudo-inverse is the adjoint.

    Shapes: ``x`` real ``(B, C, H, W)`` (channels independent) -> ``y`` ``(B, C, q, nh, nw)``, same dtype/device.
    ``A_adjoint(y)``/``A_dagger(y)`` return ``(B, C, Hp, Wp)``, or ``(B, C, *img_size)`` (cropped) when
    ``img_size`` is set. With cropping ``A_dagger`` is the adjoint, the exact pseudo-inverse only when H and W are
    multiples of B (the padded pixels carry no information either way).

    Implementation: pad + one gather (padding, permutation and block rearrangement folded into one index) + one
    matmul; the adjoint is one matmul + one gather + a crop view. ``Phi`` and the index are generated on the CPU
    from ``seed`` (``torch.Generator``), so the operator is identical on every device, and cached per
    ``(device, dtype)``.

    Args:
        ratio (`float`):
            Sampling ratio in (0, 1].
        block_size (`int`, *optional*, defaults to 32):
            Block side ``B``; at least 2.
        permute (`bool`, *optional*, defaults to `True`):
            Whether to apply the global pixel permutation.
        seed (`int`, *optional*, defaults to 0):
            Seed of ``Phi`` and of the permutation.
        img_size (`tuple[int, int]`, *optional*):
            ``(H, W)`` of the images; required when H or W is not a multiple of B (``A`` refuses such an image
            without it, since ``A_dagger`` could not give back its size).

    Example::

        >>> import torch
        >>> from idm_imaging.operators import BlockCS
        >>> op = BlockCS(0.1, block_size=32, img_size=(37, 45))
        >>> y = op(torch.rand(2, 1, 37, 45))
        >>> y.shape, op.A_dagger(y).shape
        (torch.Size([2, 1, 103, 2, 2]), torch.Size([2, 1, 37, 45]))
    """

    is_complex = False

    def __init__(self, ratio: float, block_size: int = 32, permute: bool = True, seed: int = 0, img_size=None):
        super().__init__()
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
            raise TypeError(f"ratio must be a number, got {type(ratio).__name__}")
        if not (0.0 < float(ratio) <= 1.0):
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
            raise TypeError(f"block_size must be an int, got {type(block_size).__name__}")
        if block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {block_size}")
        if not isinstance(permute, bool):
            raise TypeError(f"permute must be a bool, got {type(permute).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.ratio = float(ratio)
        self.block_size = int(block_size)
        self.permute = permute
        self.seed = int(seed)
        self.img_size = _check_size(img_size)
        n = self.block_size**2
        self.q = self.measurements_per_block(self.ratio, self.block_size)
        gen = torch.Generator().manual_seed(self.seed)
        g = torch.randn(n, n, generator=gen, dtype=torch.float64)
        qmat, rmat = torch.linalg.qr(g)
        qmat = qmat * torch.sign(torch.diagonal(rmat)).unsqueeze(0)
        self._phi_cpu = qmat[: self.q].contiguous()  # (q, n) float64, orthonormal rows
        self._phi_cache: dict = {}
        self._index_cache: dict = {}

    # -- cached constants ---------------------------------------------------------------------------
    @property
    def phi(self) -> torch.Tensor:
        """The ``(q, B^2)`` float64 CPU measurement matrix (rows orthonormal)."""
        return self._phi_cpu

    def _phi(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        phi = self._phi_cache.get(key)
        if phi is None:
            phi = self._phi_cache[key] = self._phi_cpu.to(device=device, dtype=dtype)
        return phi

    def permutation(self, hp: int, wp: int) -> torch.Tensor:
        """The global pixel permutation (int64, CPU) of a padded ``(hp, wp)`` image: ``x_perm = x.flat[perm]``."""
        gen = torch.Generator().manual_seed(self.seed + _PERM_SEED_OFFSET)
        return torch.randperm(hp * wp, generator=gen)

    def _indices(self, hp: int, wp: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(fwd, inv): ``blocks.flat = x_pad.flat[fwd]`` in (i, j, r, s) order (block row, block column, row and
        column in the block); ``x_pad.flat = blocks.flat[inv]``."""
        key = (hp, wp, device)
        idx = self._index_cache.get(key)
        if idx is None:
            b = self.block_size
            nh, nw = hp // b, wp // b
            i = torch.arange(nh).view(nh, 1, 1, 1)
            j = torch.arange(nw).view(1, nw, 1, 1)
            r = torch.arange(b).view(1, 1, b, 1)
            s = torch.arange(b).view(1, 1, 1, b)
            fwd = ((i * b + r) * wp + j * b + s).reshape(-1)  # position in the (permuted) padded image
            if self.permute:
                fwd = self.permutation(hp, wp)[fwd]
            inv = torch.argsort(fwd)
            idx = self._index_cache[key] = (fwd.to(device), inv.to(device))
        return idx

    # -- checks ---------------------------------------------------------------------------------------
    @staticmethod
    def _check_real(t, name: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.is_complex():
            raise TypeError(f"{name} must be real: BlockCS is a real-only operator, got dtype {t.dtype}")
        if name == "x":
            check_image(t, name)

    @staticmethod
    def measurements_per_block(ratio: float, block_size: int) -> int:
        """``q = ceil(ratio * B^2)``, at least 1 and at most ``B^2``."""
        n = int(block_size) ** 2
        # guard against ratio * n landing a hair above an integer (0.1 * 100 -> 10.000000000000002)
        return min(n, max(1, math.ceil(float(ratio) * n - 1e-9)))

    def without_crop(self) -> "BlockCS":
        """The same acquisition on the zero-padded ``(Hp, Wp)`` grid (``img_size=None``): ``A(x)`` here equals
        that operator's ``A(pad(x))``, and there ``A_dagger`` is the exact pseudo-inverse. Reconstructors work
        on that grid and crop (what ``IDM`` does), since the cropped adjoint is no projection."""
        return BlockCS(self.ratio, self.block_size, permute=self.permute, seed=self.seed)

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        b = self.block_size
        return -(-h // b) * b, -(-w // b) * b

    # -- operator -------------------------------------------------------------------------------------
    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """``(B, C, H, W)`` real -> ``(B, C, q, nh, nw)``."""
        self._check_real(x, "x")
        bsz, c, h, w = x.shape
        if self.img_size is not None and (h, w) != self.img_size:
            raise ValueError(f"x has spatial size {(h, w)} but the operator was built for img_size={self.img_size}")
        hp, wp = self.padded_size(h, w)
        if self.img_size is None and (hp, wp) != (h, w):
            # the measurement does not know the size: A_dagger and models would hand back the padded image
            raise ValueError(f"x is {h}x{w}, no multiple of block_size={self.block_size}: build the operator with "
                             f"img_size=({h}, {w}) so that images come back at their size")
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h))
        fwd, _ = self._indices(hp, wp, x.device)
        n, nh, nw = self.block_size**2, hp // self.block_size, wp // self.block_size
        blocks = x.reshape(bsz, c, hp * wp).index_select(-1, fwd).view(bsz, c, nh * nw, n)
        # (B, C, L, n) @ (n, q): one GEMM over every block of the batch (a batched product re-reads phi per image)
        y = torch.matmul(blocks, self._phi(x.device, x.dtype).mT)
        return y.mT.reshape(bsz, c, self.q, nh, nw)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """``(B, C, q, nh, nw)`` -> ``(B, C, Hp, Wp)``, cropped to ``img_size`` when set."""
        self._check_real(y, "y")
        if not y.is_floating_point():
            raise TypeError(f"y must be a floating tensor, got dtype {y.dtype}")
        if y.ndim != 5 or y.shape[2] != self.q:
            raise ValueError(f"y must be 5-D (B, C, q={self.q}, nh, nw), got shape {tuple(y.shape)}")
        bsz, c, q, nh, nw = y.shape
        hp, wp = nh * self.block_size, nw * self.block_size
        if self.img_size is not None and (self.img_size[0] > hp or self.img_size[1] > wp):
            raise ValueError(f"y has {nh}x{nw} blocks, too few for img_size={self.img_size}")
        _, inv = self._indices(hp, wp, y.device)
        z = torch.matmul(y.reshape(bsz, c, q, nh * nw).mT, self._phi(y.device, y.dtype))  # (B, C, L, n), one GEMM
        x = z.reshape(bsz, c, hp * wp).index_select(-1, inv).view(bsz, c, hp, wp)
        if self.img_size is not None:
            x = x[..., : self.img_size[0], : self.img_size[1]]
        return x

    # -- config ---------------------------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "type": "BlockCS",
            "ratio": self.ratio,
            "block_size": self.block_size,
            "permute": self.permute,
            "seed": self.seed,
            "img_size": list(self.img_size) if self.img_size is not None else None,
        }

    @classmethod
    def from_config(cls, config: dict, *, shape=None, ratio=None, **other) -> "BlockCS":
        """Rebuild from :meth:`get_config` or a model's record (see :func:`operator_from_config`)."""
        if other:
            raise ValueError(f"{sorted(other)} do not apply to a BlockCS record")
        keys = ("block_size", "permute", "seed")
        kwargs = {k: config[k] for k in keys if config.get(k) is not None}
        kwargs["ratio"] = pick(config, "ratio", ratio, "ratio_range")
        if kwargs["ratio"] is None:
            raise ValueError("config for BlockCS needs 'ratio'")
        kwargs["img_size"] = pick(config, "img_size", None if shape is None else [int(s) for s in shape])
        return cls(**kwargs)

    def extra_repr(self) -> str:
        return (
            f"ratio={self.ratio}, block_size={self.block_size}, q={self.q}, permute={self.permute}, "
            f"seed={self.seed}, img_size={self.img_size}"
        )
