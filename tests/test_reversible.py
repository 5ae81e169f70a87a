"""Reversible engine: exact inversion, gradient equality with plain autograd, nesting, autocast, memory."""

import pytest
import torch
from torch import nn

from idm_imaging.models.reversible import Coupling, ReversibleSequence


class Body(nn.Module):
    """Nonlinear shape-keeping F, optionally reading side tensors (like a UNet skip)."""

    def __init__(self, c=4, n_sides=0):
        super().__init__()
        self.conv = nn.Conv2d(c * (1 + n_sides), c, 3, padding=1)
        self.norm = nn.GroupNorm(2, c)

    def forward(self, x, *sides, ctx=None):
        h = torch.cat([x, *sides], 1) if sides else x
        out = torch.tanh(self.norm(self.conv(h)))
        return out * ctx if ctx is not None else out


class NestedBody(nn.Module):
    """F that itself contains a reversible sequence (level 1 over level 2)."""

    def __init__(self, c=4):
        super().__init__()
        self.inner = ReversibleSequence([Coupling(Body(c), v=0.4), Coupling(Body(c), v=0.6)])
        self.s = nn.Parameter(torch.tensor(1.3))

    def forward(self, x, ctx=None):
        y1, y2 = self.inner(x, x * self.s, (), ctx)
        return y1 + 0.3 * y2


def _seq(kind, dtype=torch.float64):
    torch.manual_seed(0)
    if kind == "flat":
        seq = ReversibleSequence([Coupling(Body(), v=0.3 + 0.1 * i) for i in range(4)])
    elif kind == "sides":
        seq = ReversibleSequence([Coupling(Body(n_sides=1), n_sides=1), Coupling(Body()), Coupling(Body(n_sides=1), n_sides=1)])
    else:
        seq = ReversibleSequence([Coupling(NestedBody()), Coupling(NestedBody())])
    return seq.to(dtype)


def _n_sides(seq):
    return sum(c.n_sides for c in seq.couplings)


@pytest.mark.parametrize("kind", ["flat", "sides", "nested"])
def test_sequence_inverts_float64(kind):
    seq = _seq(kind)
    x1, x2 = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    sides = [torch.randn(2, 4, 8, 8, dtype=torch.float64) for _ in range(_n_sides(seq))]
    with torch.no_grad():
        y1, y2 = seq(x1, x2, sides, 0.7)
        r1, r2 = seq.inverse(y1, y2, sides, 0.7)
    assert not torch.allclose(y1, x1)
    assert (r1 - x1).abs().max() < 1e-5 and (r2 - x2).abs().max() < 1e-5


def test_single_coupling_inverts_float32():
    torch.manual_seed(1)
    c = Coupling(Body(), v=0.5)
    x1, x2 = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        y1, y2 = c(x1, x2)
        r1, r2 = c.inverse(y1, y2)
    assert torch.equal(r1, x1)
    assert (r2 - x2).norm() / x2.norm() < 1e-3


def _grads(seq, x1, x2, sides, reversible):
    seq.zero_grad()
    for m in seq.modules():
        if isinstance(m, ReversibleSequence):
            m.reversible = reversible
    ins = [t.clone().requires_grad_(True) for t in (x1, x2, *sides)]
    y1, y2 = seq(ins[0], ins[1], ins[2:], 0.9)
    torch.manual_seed(5)
    w1, w2 = torch.randn_like(y1), torch.randn_like(y2)
    ((y1 * w1).sum() + (y2 * w2).sum()).backward()
    return [t.grad for t in ins], {k: p.grad.clone() for k, p in seq.named_parameters()}


@pytest.mark.parametrize("kind", ["flat", "sides", "nested"])
def test_reversible_gradients_equal_plain(kind):
    seq = _seq(kind)
    x1, x2 = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    sides = [torch.randn(2, 4, 8, 8, dtype=torch.float64) for _ in range(_n_sides(seq))]
    gi_p, gp_p = _grads(seq, x1, x2, sides, False)
    gi_r, gp_r = _grads(seq, x1, x2, sides, True)
    for a, b in zip(gi_p, gi_r):
        assert (a - b).norm() <= 1e-8 * a.norm()
    assert gp_p.keys() == gp_r.keys() and len(gp_p) > 0
    for k in gp_p:
        assert (gp_p[k] - gp_r[k]).norm() <= 1e-8 * gp_p[k].norm() + 1e-12, k


def test_reversible_stores_only_outputs():
    """Saved activations do not grow with the number of couplings in reversible mode; they do in plain mode."""

    def saved_bytes(n, reversible):
        torch.manual_seed(0)
        seq = ReversibleSequence([Coupling(Body()) for _ in range(n)], reversible=reversible)
        x = torch.randn(1, 4, 16, 16, requires_grad=True)
        total = [0]

        def pack(t):
            if t.numel() > 64:  # activations, not the conv weights or scalars
                total[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            seq(x, x * 1.0)
        return total[0]

    assert saved_bytes(2, True) == saved_bytes(8, True)
    assert saved_bytes(8, False) > 3 * saved_bytes(2, False)
    assert saved_bytes(8, True) < saved_bytes(8, False) / 4


def test_autocast_bf16_cpu_close_to_fp32():
    seq = _seq("nested", torch.float32)
    x = torch.randn(2, 4, 8, 8)
    grads = {}
    for mode in ("fp32", "bf16"):
        seq.zero_grad()
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            y1, y2 = seq(xi, xi * 0.5)
        (y1.float().square().mean() + y2.float().mean()).backward()
        grads[mode] = torch.cat([xi.grad.flatten()] + [p.grad.flatten() for p in seq.parameters()])
        assert torch.isfinite(grads[mode]).all()
    err = (grads["bf16"] - grads["fp32"]).norm() / grads["fp32"].norm()
    assert err < 0.05, err


def test_side_count_checked():
    seq = _seq("sides")
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="sides"):
        seq(x, x, [x])


def test_non_module_body_needs_params():
    with pytest.raises(TypeError, match="params"):
        Coupling(lambda x, ctx=None: x)
