"""Reversible engine: additive couplings whose backward pass rebuilds inputs from outputs.

A coupling maps a pair of same-shaped tensors ``(x1, x2)`` to::

    y1 = (1 - v) * F(x1, *sides, ctx) + v * x2        y2 = x1

with ``v`` a learned scalar. Its exact inverse is ``x1 = y2``, ``x2 = (y1 - (1 - v) F(y2)) / v``.
A :class:`ReversibleSequence` chains couplings. In reversible mode (and when gradients are needed) it runs
through :class:`_ReversibleFunction`, which keeps only the final ``(y1, y2)`` (plus the side inputs, which
the caller stores anyway) and, in backward, walks the couplings in reverse: rebuilds each coupling's inputs,
recomputes ``F`` under ``enable_grad`` and backpropagates through that one coupling. Activations inside ``F``
are therefore never stored across the sequence; the engine nests (an ``F`` may itself contain sequences).

* ``sides``: tensors that ``F`` reads and that need gradients but are not part of the reversible state (UNet
  skip connections). They are explicit inputs of the autograd function.
* ``ctx``: any Python object (measurement, operator, step index) handed to every ``F`` unchanged; it is not
  differentiated and is kept by the autograd node so that backward recomputes ``F`` in the same context.
* Parameters: backward differentiates each recomputed ``F`` with respect to :meth:`Coupling.body_params`, the
  tensors requiring grad that ``F`` depends on: the body's own parameters, or, for a body that uses parameters
  registered elsewhere (sampling steps sharing one backbone), those its ``params`` callable lists. A tensor
  ``F`` reads but that is missing from that list gets no gradient.
* Autocast: the autocast state of the forward call (CPU and CUDA) is re-entered in backward, so the
  recomputation runs the same kernels as the forward pass.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch
from torch import nn

__all__ = ["Coupling", "ReversibleSequence", "checkpointed"]

_AUTOCAST_DEVICES = ("cpu", "cuda")


def _autocast_state() -> list[tuple[str, bool, torch.dtype]]:
    return [(d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in _AUTOCAST_DEVICES]


def _enter_autocast(stack: contextlib.ExitStack, state) -> None:
    for device, enabled, dtype in state:
        if enabled:
            stack.enter_context(torch.autocast(device_type=device, dtype=dtype, enabled=True))


class Coupling(nn.Module):
    """Additive coupling ``y1 = (1 - v) F(x1, *sides, ctx) + v x2``, ``y2 = x1``.

    Args:
        body (`nn.Module` or `Callable`):
            ``F``; an ``nn.Module`` (registered under this coupling) or a plain callable (not registered; needs
            ``params``).
        v (`float`, *optional*, defaults to 0.5):
            Initial value of the learned mixing scalar (must stay away from 0 for a stable inverse).
        n_sides (`int`, *optional*, defaults to 0):
            How many side tensors ``F`` takes (they are consumed in order from the sequence's ``sides``).
        params (`Callable`, *optional*):
            Zero-argument callable returning the tensors requiring grad that ``F`` depends on, for a body whose
            parameters are registered elsewhere (a backbone shared by several couplings); `None` takes the body's
            own parameters.

    Shapes: ``x1``, ``x2`` any shape, equal; ``F(x1)`` has the shape of ``x1``. ``F`` is called as
    ``body(x1, *sides, ctx=ctx)``.

    Example:
        >>> import torch
        >>> class Body(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.lin = torch.nn.Linear(4, 4)
        ...     def forward(self, x, ctx=None):
        ...         return torch.tanh(self.lin(x))
        >>> c = Coupling(Body())
        >>> x1, x2 = torch.randn(2, 4), torch.randn(2, 4)
        >>> y1, y2 = c(x1, x2)
        >>> r1, r2 = c.inverse(y1, y2)
        >>> bool(torch.allclose(r2, x2, atol=1e-5))
        True
    """

    def __init__(self, body: Callable, v: float = 0.5, n_sides: int = 0, params: Callable | None = None):
        super().__init__()
        if isinstance(body, nn.Module):
            self.body = body
        else:
            if params is None:
                raise TypeError("Coupling: a non-Module body needs `params` (callable returning its tensors)")
            object.__setattr__(self, "body", body)  # not registered: its parameters live elsewhere
        self._params = params
        self.n_sides = int(n_sides)
        self.v = nn.Parameter(torch.tensor(float(v)))

    def body_params(self) -> list[torch.Tensor]:
        """Tensors requiring grad that ``F`` depends on (excluding ``v``): what the reversible backward
        differentiates the recomputed ``F`` with respect to."""
        params = self._params() if self._params is not None else self.body.parameters()
        return [p for p in params if p.requires_grad]

    def f(self, x1, sides=(), ctx=None):
        return self.body(x1, *sides, ctx=ctx)

    def forward(self, x1, x2, sides: Sequence[torch.Tensor] = (), ctx: Any = None):
        return _mix(x2, self.f(x1, sides, ctx), self.v), x1

    def inverse(self, y1, y2, sides: Sequence[torch.Tensor] = (), ctx: Any = None):
        """Rebuild ``(x1, x2)`` from ``(y1, y2)``."""
        v = self.v
        return y2, (y1 - self.f(y2, sides, ctx) * (1 - v)) / v


def _lerp_promotes_0dim_weight() -> bool:
    # newer torch accepts a 0-dim weight of another dtype (bf16 state, fp32 v); the check is device-independent
    try:
        torch.lerp(torch.zeros(1, dtype=torch.bfloat16), torch.zeros(1, dtype=torch.bfloat16), torch.tensor(0.5))
        return True
    except RuntimeError:
        return False


_LERP_0DIM = _lerp_promotes_0dim_weight()


def _mix(x2, f, v):
    """``v x2 + (1 - v) f`` as one fused ``lerp`` kernel when the dtypes allow (also under autocast: bf16
    state, fp32 ``v``), else the promoting two-product form (e.g. fp32 state, bf16 ``f``)."""
    if x2.dtype == f.dtype and (v.dtype == x2.dtype or (_LERP_0DIM and v.dim() == 0)):
        return torch.lerp(x2, f, 1 - v)
    return x2 * v + f * (1 - v)


def _add_grads(lst, items):
    """``lst[i] += g`` for all ``(i, g)`` (``g`` may be None; an index may repeat). The sums with existing
    entries are one ``_foreach_add`` (a few kernels on a GPU instead of one per tensor); out of place, because
    autograd may hand out the same tensor for several inputs."""
    old, new, where, pending = [], [], [], {}
    for i, g in items:
        if g is None:
            continue
        if i in pending:
            new[pending[i]] = new[pending[i]] + g
        elif lst[i] is None:
            lst[i] = g
        else:
            pending[i] = len(old)
            old.append(lst[i])
            new.append(g)
            where.append(i)
    if old:
        for i, s in zip(where, torch._foreach_add(old, new)):
            lst[i] = s


def _split_sides(couplings, sides):
    out, i = [], 0
    for c in couplings:
        out.append(tuple(sides[i : i + c.n_sides]))
        i += c.n_sides
    if i != len(sides):
        raise ValueError(f"sides: the couplings take {i} side tensors, got {len(sides)}")
    return out


class _ReversibleFunction(torch.autograd.Function):
    """Autograd node of a whole sequence: stores outputs only, recomputes in backward."""

    @staticmethod
    def forward(fctx, seq, run_ctx, n_sides, x1, x2, *tensors):
        sides = tensors[:n_sides]
        fctx.seq, fctx.run_ctx, fctx.n_sides = seq, run_ctx, n_sides
        fctx.params = tensors[n_sides:]
        fctx.autocast = _autocast_state()
        for c, s in zip(seq.couplings, _split_sides(seq.couplings, sides)):
            x1, x2 = c(x1, x2, s, run_ctx)
        fctx.save_for_backward(x1, x2, *sides)
        return x1, x2

    @staticmethod
    def backward(fctx, g1, g2):
        y1, y2, *sides = fctx.saved_tensors
        seq, run_ctx = fctx.seq, fctx.run_ctx
        params = fctx.params
        index = {id(p): i for i, p in enumerate(params)}
        pgrads: list[torch.Tensor | None] = [None] * len(params)
        side_list = _split_sides(seq.couplings, sides)
        side_grads: list[torch.Tensor | None] = [None] * len(sides)
        offsets, o = [], 0
        for c in seq.couplings:
            offsets.append(o)
            o += c.n_sides

        with contextlib.ExitStack() as stack:
            _enter_autocast(stack, fctx.autocast)
            for k in range(len(seq.couplings) - 1, -1, -1):
                c = seq.couplings[k]
                v = c.v.detach()
                w = 1 - v
                bparams = c.body_params()
                with torch.enable_grad():
                    x1 = y2.detach().requires_grad_(True)
                    s_in = [s.detach().requires_grad_(True) for s in side_list[k]]
                    f = c.f(x1, s_in, run_ctx)
                with torch.no_grad():
                    x2 = (y1 - f * w) / v
                    gv = (g1 * (x2 - f)).sum()
                    gx2 = g1 * v
                    gf = g1 * w
                    if gf.dtype != f.dtype:
                        gf = gf.to(f.dtype)
                inputs = [x1, *s_in, *bparams]
                grads = torch.autograd.grad(f, inputs, gf, allow_unused=True)
                del f
                gx1 = g2 if grads[0] is None else g2 + grads[0]
                _add_grads(side_grads, [(offsets[k] + j, g) for j, g in enumerate(grads[1 : 1 + len(s_in)])])
                items = [(index.get(id(p)), g) for p, g in zip(bparams, grads[1 + len(s_in) :])]
                iv = index.get(id(c.v))
                if iv is not None:
                    items.append((iv, gv if gv.dtype == c.v.dtype else gv.to(c.v.dtype)))
                _add_grads(pgrads, [(i, g) for i, g in items if i is not None])
                y1, y2, g1, g2 = x1.detach(), x2, gx1, gx2
        return (None, None, None, g1, g2, *side_grads, *pgrads)


class ReversibleSequence(nn.Module):
    """A chain of :class:`Coupling` s; ``forward(x1, x2, sides=(), ctx=None) -> (y1, y2)``.

    With ``reversible=True`` and gradients enabled, intermediate activations are not stored (see module
    docstring); with ``reversible=False`` it is an ordinary autograd loop with the same parameters. The
    parameters the reversible backward differentiates are the union of the couplings' :meth:`Coupling.body_params`
    and mixing scalars.

    Example:
        >>> import torch
        >>> class Body(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.lin = torch.nn.Linear(3, 3)
        ...     def forward(self, x, ctx=None):
        ...         return torch.sin(self.lin(x))
        >>> seq = ReversibleSequence([Coupling(Body()) for _ in range(4)])
        >>> x1 = torch.randn(2, 3, requires_grad=True)
        >>> y1, y2 = seq(x1, x1 * 1.0)
        >>> (y1.sum() + y2.sum()).backward()
        >>> x1.grad.shape
        torch.Size([2, 3])
    """

    def __init__(self, couplings: Sequence[Coupling], reversible: bool = True):
        super().__init__()
        self.couplings = nn.ModuleList(couplings)
        self.reversible = reversible

    def _all_params(self) -> list[torch.Tensor]:
        seen, out = set(), []
        for c in self.couplings:
            for p in [*c.body_params(), c.v]:
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def forward(self, x1, x2, sides: Sequence[torch.Tensor] = (), ctx: Any = None):
        sides = tuple(sides)
        if self.reversible and torch.is_grad_enabled():
            return _ReversibleFunction.apply(self, ctx, len(sides), x1, x2, *sides, *self._all_params())
        for c, s in zip(self.couplings, _split_sides(self.couplings, sides)):
            x1, x2 = c(x1, x2, s, ctx)
        return x1, x2

    def inverse(self, y1, y2, sides: Sequence[torch.Tensor] = (), ctx: Any = None):
        """Rebuild the inputs ``(x1, x2)`` from the outputs ``(y1, y2)``."""
        for c, s in zip(reversed(self.couplings), reversed(_split_sides(self.couplings, tuple(sides)))):
            y1, y2 = c.inverse(y1, y2, s, ctx)
        return y1, y2


def checkpointed(enabled: bool, fn: Callable, *args):
    """``fn(*args)`` through non-reentrant gradient checkpointing when ``enabled`` and grads are on."""
    if enabled and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)
