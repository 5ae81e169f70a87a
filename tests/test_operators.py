"""BlockCS and SingleCoilFourier: adjointness, exact inversion on the range, reference implementations,
determinism, dtype/device following, noise, config round trip and bad input."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from idm_imaging.operators import (
    DIHEDRAL,
    BlockCS,
    Dihedral,
    LinearOperator,
    SingleCoilFourier,
    fft2c,
    make_mask,
    operator_from_config,
)

KINDS = ["random", "equispaced", "gaussian1d", "gaussian2d", "poisson", "radial", "spiral"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _dot(a, b):
    """Real inner product <a, b> = Re sum(conj(a) b)."""
    return (a.conj() * b).sum().real if a.is_complex() or b.is_complex() else (a * b).sum()


def _adjoint_gap(op, x, y):
    ax = op.A(x)
    return (abs(_dot(ax, y) - _dot(x, op.A_adjoint(y))) / (ax.norm() * y.norm())).item()


# ------------------------------------------------------------------------------------------------------
# BlockCS
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("permute", [True, False])
@pytest.mark.parametrize("size", [(37, 45), (64, 64)])
@pytest.mark.parametrize("block", [8, 32])
def test_blockcs_adjoint_and_inverse(permute, size, block):
    g = torch.Generator().manual_seed(0)
    op = BlockCS(0.25, block_size=block, permute=permute, seed=7, img_size=size)
    x = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
    y = op.A(x)
    hp, wp = -(-size[0] // block) * block, -(-size[1] // block) * block
    assert y.shape == (2, 3, math.ceil(0.25 * block * block), hp // block, wp // block)
    assert y.dtype == torch.float64
    assert _adjoint_gap(op, x, torch.randn(y.shape, generator=g, dtype=torch.float64)) < 1e-5
    assert op.A_dagger(y).shape == x.shape
    # A A^T = I on the padded domain (no cropping): A(A_dagger(y)) == y for any y, in particular y = A x
    full = BlockCS(0.25, block_size=block, permute=permute, seed=7)
    z = full.A_dagger(y)
    assert z.shape == (2, 3, hp, wp)
    torch.testing.assert_close(full.A(z), y, rtol=0, atol=1e-12)
    y_any = torch.randn(y.shape, generator=g, dtype=torch.float64)  # A A^T = I: any y is in the range
    torch.testing.assert_close(full.A(full.A_dagger(y_any)), y_any, rtol=0, atol=1e-12)
    # without padding the cropped operator is exact too
    if size == (64, 64):
        torch.testing.assert_close(op.A(op.A_dagger(y)), y, rtol=0, atol=1e-12)


def test_blockcs_phi_orthonormal_rows_and_q():
    op = BlockCS(0.1, block_size=32, seed=1)
    assert op.q == 103 and op.phi.shape == (103, 1024)
    torch.testing.assert_close(op.phi @ op.phi.T, torch.eye(103, dtype=torch.float64), atol=1e-12, rtol=0)
    assert BlockCS(0.1, block_size=10).q == 10  # no float drift: ceil(0.1 * 100) = 10
    assert BlockCS(1.0, block_size=4).q == 16


def test_blockcs_matches_naive_loop():
    """Reference: pad, permute the flattened image, loop over blocks, Phi @ block (row-major)."""
    op = BlockCS(0.3, block_size=8, permute=True, seed=3, img_size=(19, 21))
    x = torch.rand(1, 2, 19, 21, dtype=torch.float64)
    xp = F.pad(x, (0, 3, 0, 5))  # -> 24 x 24
    xp = xp.reshape(1, 2, -1)[..., op.permutation(24, 24)].reshape(1, 2, 24, 24)
    ref = torch.zeros(1, 2, op.q, 3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            blk = xp[:, :, i * 8 : i * 8 + 8, j * 8 : j * 8 + 8].reshape(1, 2, 64)
            ref[:, :, :, i, j] = blk @ op.phi.T
    torch.testing.assert_close(op.A(x), ref, rtol=0, atol=1e-12)


def test_blockcs_permutation_scrambles_and_channels_independent():
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    a, b = BlockCS(0.2, 32, permute=True, seed=0), BlockCS(0.2, 32, permute=False, seed=0)
    assert not torch.allclose(a.A(x), b.A(x))
    torch.testing.assert_close(a.A(x)[:, 1:2], a.A(x[:, 1:2]), rtol=0, atol=1e-12)
    # non-permuted: a block of x only affects its own measurement column
    x2 = x.clone()
    x2[..., :32, :32] += 1.0
    d = (b.A(x2) - b.A(x)).abs().amax(dim=(0, 1, 2))
    assert d[0, 0] > 0 and d.flatten()[1:].max() == 0


def test_blockcs_determinism_and_dtype():
    x = torch.rand(2, 1, 48, 48)
    y1 = BlockCS(0.1, 16, seed=5).A(x)
    assert torch.equal(y1, BlockCS(0.1, 16, seed=5).A(x))
    assert not torch.allclose(y1, BlockCS(0.1, 16, seed=6).A(x))
    assert y1.dtype == torch.float32
    assert BlockCS(0.1, 16, seed=5).A(x.double()).dtype == torch.float64
    torch.testing.assert_close(y1.double(), BlockCS(0.1, 16, seed=5).A(x.double()), atol=1e-5, rtol=1e-5)


def test_blockcs_gradient_is_adjoint():
    op = BlockCS(0.3, 8, seed=0, img_size=(20, 20))
    x = torch.rand(1, 1, 20, 20, dtype=torch.float64, requires_grad=True)
    v = torch.randn(op.A(x).shape, dtype=torch.float64)
    (op(x) * v).sum().backward()
    torch.testing.assert_close(x.grad, op.A_adjoint(v), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------------
# SingleCoilFourier
# ------------------------------------------------------------------------------------------------------
def test_fft2c_matches_numpy_and_monai():
    from monai.networks.blocks.fft_utils_t import fftn_centered_t

    x = torch.randn(2, 1, 37, 45, dtype=torch.complex128)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(fft2c(x).numpy(), ref, atol=1e-12)
    monai = torch.view_as_complex(fftn_centered_t(torch.view_as_real(x), spatial_dims=2).contiguous())
    torch.testing.assert_close(fft2c(x), monai, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(64, 64), (37, 45), (48, 33)])
def test_fourier_adjoint_and_inverse(kind, size):
    g = torch.Generator().manual_seed(1)
    op = SingleCoilFourier(make_mask(kind, size, 4, seed=0))
    x = torch.randn(2, 1, *size, generator=g, dtype=torch.complex128)
    y = torch.randn(2, 1, *size, generator=g, dtype=torch.complex128)
    assert _adjoint_gap(op, x, y) < 1e-5
    yr = op.A(x)
    assert yr.dtype == torch.complex128 and yr.shape == x.shape
    assert (yr[..., ~op.mask] == 0).all()
    torch.testing.assert_close(op.A(op.A_dagger(yr)), yr, rtol=0, atol=1e-12)
    # real input: same as complex input with zero imaginary part; adjointness with a real x too
    xr = torch.randn(1, 1, *size, generator=g, dtype=torch.float64)
    torch.testing.assert_close(op.A(xr), op.A(xr.to(torch.complex128)), rtol=0, atol=1e-12)
    assert _adjoint_gap(op, xr.to(torch.complex128), y[:1]) < 1e-5


def test_fourier_full_mask_is_unitary_and_zero_filled_reference():
    x = torch.randn(1, 1, 31, 40, dtype=torch.complex128)
    op = SingleCoilFourier(torch.ones(31, 40, dtype=torch.bool))
    torch.testing.assert_close(op.A_adjoint(op.A(x)), x, rtol=0, atol=1e-12)
    mask = make_mask("random", (31, 40), 4, seed=0)
    op = SingleCoilFourier(mask.numpy())  # numpy mask accepted
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    zf = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k * mask.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(op.A_dagger(op.A(x)).numpy(), zf, atol=1e-12)


def test_fourier_dtype_following_and_forward():
    op = SingleCoilFourier.from_mask_params("equispaced", (32, 32), 4)
    x = torch.rand(1, 1, 32, 32)
    assert op(x).dtype == torch.complex64 and op.A_dagger(op(x)).dtype == torch.complex64
    assert op(x.double()).dtype == torch.complex128
    assert torch.equal(op(x), op.A(x)) and op.is_complex and not BlockCS(0.5, 4).is_complex
    assert isinstance(op, LinearOperator) and isinstance(op, torch.nn.Module)


# ------------------------------------------------------------------------------------------------------
# measure(): seeded noise
# ------------------------------------------------------------------------------------------------------
def test_measure_noise_blockcs():
    op = BlockCS(0.5, 16, seed=0)
    x = torch.rand(4, 1, 128, 128, dtype=torch.float64)
    n = op.measure(x, sigma=0.1, seed=3) - op.A(x)
    assert n.numel() > 30000 and abs(n.std().item() - 0.1) < 0.003 and abs(n.mean().item()) < 0.002
    assert torch.equal(op.measure(x, 0.1, seed=3), op.measure(x, 0.1, seed=3))
    assert not torch.equal(op.measure(x, 0.1, seed=3), op.measure(x, 0.1, seed=4))
    assert torch.equal(op.measure(x), op.A(x))


def test_measure_noise_fourier():
    op = SingleCoilFourier.from_mask_params("random", (128, 128), 2, seed=0)
    x = torch.rand(4, 1, 128, 128, dtype=torch.float64)
    n = op.measure(x, sigma=0.2, seed=1) - op.A(x)
    assert n.dtype == torch.complex128
    assert (n[..., ~op.mask] == 0).all()
    on = n[..., op.mask]
    assert abs(on.abs().pow(2).mean().sqrt().item() - 0.2) < 0.005
    assert abs(on.real.std().item() - 0.2 / math.sqrt(2)) < 0.005
    assert torch.equal(op.measure(x, 0.2, seed=1), op.measure(x, 0.2, seed=1))


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf"), "0.1"])
def test_measure_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        BlockCS(0.5, 4).measure(torch.rand(1, 1, 8, 8), sigma=sigma)


# ------------------------------------------------------------------------------------------------------
# config round trip
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op",
    [
        BlockCS(0.1, 32, permute=True, seed=4, img_size=(37, 45)),
        BlockCS(0.5, 8, permute=False, seed=2),
        SingleCoilFourier.from_mask_params("poisson", (37, 45), 6, center_fraction=0.1, seed=9),
        SingleCoilFourier(make_mask("spiral", (40, 36), 3, seed=1)),
        SingleCoilFourier(torch.rand(17, 19) > 0.5),
    ],
)
def test_config_round_trip(op):
    cfg = json.loads(json.dumps(op.get_config()))
    assert cfg["type"] == type(op).__name__
    op2 = operator_from_config(cfg)
    assert type(op2) is type(op)
    h, w = (37, 45) if isinstance(op, BlockCS) and op.img_size else (op.shape if op.is_complex else (64, 64))
    x = torch.rand(2, 1, h, w, dtype=torch.float64)
    assert torch.equal(op.A(x), op2.A(x))
    if op.is_complex:
        assert torch.equal(op.mask, op2.mask)
        assert ("mask_params" in cfg) == (op._mask_params is not None)


def test_rle_mask_starting_with_true():
    m = torch.zeros(5, 6, dtype=torch.bool)
    m[0, 0] = m[4, 5] = m[2] = True
    op2 = operator_from_config(json.loads(json.dumps(SingleCoilFourier(m).get_config())))
    assert torch.equal(op2.mask, m)


# ------------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(ratio=0.0), ValueError, "ratio"),
        (dict(ratio=1.5), ValueError, "ratio"),
        (dict(ratio=-0.1), ValueError, "ratio"),
        (dict(ratio="0.1"), TypeError, "ratio"),
        (dict(block_size=1), ValueError, "block_size"),
        (dict(block_size=4.0), TypeError, "block_size"),
        (dict(seed=0.5), TypeError, "seed"),
        (dict(permute="yes"), TypeError, "permute"),
        (dict(img_size=(0, 4)), ValueError, "img_size"),
        (dict(img_size=(4,)), ValueError, "img_size"),
    ],
)
def test_blockcs_bad_construction(kwargs, exc, match):
    args = dict(ratio=0.1, block_size=8)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        BlockCS(**args)


def test_blockcs_bad_call():
    op = BlockCS(0.25, 8)
    with pytest.raises(ValueError, match="x"):
        op.A(torch.rand(64))  # 1-D
    with pytest.raises(ValueError, match="x"):
        op.A(torch.rand(1, 1, 1, 16, 16))  # 5-D
    with pytest.raises(TypeError, match="x"):
        op.A(torch.rand(1, 1, 16, 16, dtype=torch.complex64))
    with pytest.raises(TypeError, match="x"):
        op.A(torch.ones(1, 1, 16, 16, dtype=torch.int64))
    with pytest.raises(TypeError, match="x"):
        op.A(np.zeros((1, 1, 16, 16)))
    with pytest.raises(ValueError, match="y"):
        op.A_adjoint(torch.rand(1, 1, 15, 2, 2))  # q is 16
    with pytest.raises(ValueError, match="y"):
        op.A_adjoint(torch.rand(1, 16, 2, 2))
    with pytest.raises(TypeError, match="y"):
        op.A_adjoint(torch.rand(1, 1, 16, 2, 2, dtype=torch.complex64))
    sized = BlockCS(0.25, 8, img_size=(20, 20))
    with pytest.raises(ValueError, match="x"):
        sized.A(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="y"):
        sized.A_adjoint(torch.rand(1, 1, 16, 2, 2))  # 16x16 < img_size


def test_fourier_bad_input():
    with pytest.raises(ValueError, match="mask"):
        SingleCoilFourier(torch.ones(1, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        SingleCoilFourier(torch.ones(8, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        SingleCoilFourier(torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        SingleCoilFourier(torch.full((8, 8), 0.5))
    with pytest.raises(TypeError, match="mask"):
        SingleCoilFourier([[True, False]])
    op = SingleCoilFourier(torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="x"):
        op.A(torch.rand(1, 1, 8, 9))  # mask of the wrong shape for x
    with pytest.raises(ValueError, match="x"):
        op.A(torch.rand(8))
    with pytest.raises(ValueError, match="x"):
        op.A(torch.rand(1, 1, 1, 8, 8))
    with pytest.raises(TypeError, match="x"):
        op.A(torch.ones(1, 1, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="y"):
        op.A_adjoint(torch.rand(1, 1, 7, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="kind must be one of"):
        SingleCoilFourier.from_mask_params("zigzag", (8, 8), 4)


def test_operator_from_config_bad_input():
    with pytest.raises(ValueError, match="type"):
        operator_from_config({"type": "Nope"})
    with pytest.raises(TypeError, match="config"):
        operator_from_config("BlockCS")
    with pytest.raises(ValueError, match="mask_rle"):
        operator_from_config({"type": "SingleCoilFourier", "shape": [4, 4], "mask_rle": [3, 2]})


# ------------------------------------------------------------------------------------------------------
# GPU
# ------------------------------------------------------------------------------------------------------
@CUDA
@pytest.mark.gpu
def test_cpu_gpu_agreement():
    x = torch.rand(2, 1, 37, 45, dtype=torch.float64)
    for op in (
        BlockCS(0.1, 32, seed=3, img_size=(37, 45)),
        SingleCoilFourier.from_mask_params("poisson", (37, 45), 4, seed=1),
    ):
        y = op.A(x)
        yg = op.A(x.cuda())
        assert yg.device.type == "cuda" and yg.dtype == y.dtype
        torch.testing.assert_close(yg.cpu(), y, rtol=0, atol=1e-10)
        torch.testing.assert_close(op.A_dagger(yg).cpu(), op.A_dagger(y), rtol=0, atol=1e-10)
        assert op.A(x.float().cuda()).dtype in (torch.float32, torch.complex64)
        # seeded noise is the same on both devices
        torch.testing.assert_close(op.measure(x.cuda(), 0.1, seed=2).cpu(), op.measure(x, 0.1, seed=2), atol=1e-10, rtol=0)
        # a BlockCS built on another process/device from the same seed gives the same y (generated on CPU)
        op2 = operator_from_config(op.get_config()).cuda()
        torch.testing.assert_close(op2.A(x.cuda()).cpu(), y, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------------------
# sizes and records
# ------------------------------------------------------------------------------------------------------
def test_blockcs_without_img_size_refuses_a_size_it_cannot_give_back():
    x = torch.rand(1, 1, 67, 45)
    with pytest.raises(ValueError, match=r"img_size=\(67, 45\)"):
        BlockCS(0.3).A(x)
    op = BlockCS(0.3, img_size=(67, 45))
    assert op.A_dagger(op.A(x)).shape == (1, 1, 67, 45)
    assert BlockCS(0.3).A(torch.rand(1, 1, 64, 96)).shape == (1, 1, 308, 2, 3)  # multiples need no size


#: the records the fine-tuning stage writes for single-setting models (FinetuneStage.operator_settings): the ratio
#: and seed / the mask settings at the top level (the former cs-0.1 folder's record first)
_SINGLE = {"cs 10 %": {"type": "BlockCS", "ratio": 0.1, "block_size": 32, "permute": True, "seed": 0,
                       "fresh_per_step": True},
           "mri 4x": {"type": "SingleCoilFourier", "mask": "random", "acceleration": 4.0, "center_fraction": 0.08,
                      "fresh_per_step": True},
           "mri 8x": {"type": "SingleCoilFourier", "mask": "random", "acceleration": 8.0, "center_fraction": 0.04}}


@pytest.mark.parametrize("setting", list(_SINGLE))
def test_operator_from_config_takes_the_models_records(setting):
    rec = _SINGLE[setting]
    op = operator_from_config(rec, shape=(64, 64))
    if rec["type"] == "BlockCS":
        assert (op.ratio, op.block_size, op.permute, op.img_size, op.seed) == (rec["ratio"], 32, True, (64, 64), 0)
    else:
        ref = make_mask(rec["mask"], (64, 64), rec["acceleration"], center_fraction=rec["center_fraction"])
        assert torch.equal(op.mask, ref)
        with pytest.raises(ValueError, match=r"shape=\(H, W\)"):
            operator_from_config(rec)
        with pytest.raises(ValueError, match="disagrees"):
            operator_from_config(rec, shape=(64, 64), acceleration=rec["acceleration"] + 1)


def test_operator_from_config_takes_the_shipped_range_records_at_an_alias_setting():
    """Each alias's setting (e.g. mri-8x: 8x) builds the operator from its model's range record."""
    from idm_imaging.models.registry import ALIASES, WEIGHTS_DIR, available_models, resolve_name

    aliases = [a for a in ALIASES if resolve_name(a)[0] in available_models()]
    if not aliases:
        pytest.skip("no shipped model with an alias in this installation")
    for alias in aliases:
        target, setting = resolve_name(alias)
        rec = json.loads((WEIGHTS_DIR / target / "config.json").read_text())["operator_config"]
        if rec["type"] == "BlockCS":
            op = operator_from_config(rec, shape=(64, 64), **setting)
            assert (op.ratio, op.block_size, op.img_size) == (setting["ratio"], 32, (64, 64)), alias
        else:
            op = operator_from_config(rec, shape=(64, 64), mask_kind="random", **setting)
            assert torch.equal(op.mask, make_mask("random", (64, 64), setting["acceleration"])), alias


def test_operator_from_config_range_records():
    cs = {"type": "BlockCS", "ratio_range": [0.01, 0.6], "block_size": 32, "permute": True, "fresh_per_step": True}
    with pytest.raises(ValueError, match=r"ratio_range.*not one; pass ratio="):
        operator_from_config(cs)
    op = operator_from_config(cs, ratio=0.25, shape=(40, 40))
    assert (op.ratio, op.q, op.img_size) == (0.25, 256, (40, 40))
    with pytest.raises(ValueError, match="outside"):
        operator_from_config(cs, ratio=0.8)
    mri = {"type": "SingleCoilFourier", "acceleration_range": [2, 12], "mask_kinds": ["random", "poisson"],
           "fresh_per_step": True}
    with pytest.raises(ValueError, match="acceleration_range.*not one"):
        operator_from_config(mri, shape=(64, 64), mask_kind="random")
    with pytest.raises(ValueError, match="mask_kinds.*not one"):
        operator_from_config(mri, shape=(64, 64), acceleration=6)
    with pytest.raises(ValueError, match="not one of"):
        operator_from_config(mri, shape=(64, 64), acceleration=6, mask_kind="spiral")
    op = operator_from_config(mri, shape=(96, 96), acceleration=6, mask_kind="poisson")
    assert torch.equal(op.mask, make_mask("poisson", (96, 96), 6))
    with pytest.raises(ValueError, match="do not apply"):
        operator_from_config(cs, ratio=0.1, acceleration=4)


# ------------------------------------------------------------------------------------------------------
# Dihedral (a flipped / rotated view of an operator)
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flip,rot", DIHEDRAL)
def test_dihedral_adjoint_inverse_and_pseudo_inverse(flip, rot):
    g = torch.Generator().manual_seed(1)
    for op, x in ((BlockCS(0.25, block_size=8, seed=3, img_size=(16, 24)),
                   torch.randn(2, 1, 16, 24, generator=g, dtype=torch.float64)),
                  (SingleCoilFourier(make_mask("random", (16, 24), 4, seed=2)),
                   torch.randn(2, 1, 16, 24, generator=g, dtype=torch.complex128))):
        d = Dihedral(op, flip=flip, rot=rot)
        gx = d.transform(x)
        assert gx.shape[-2:] == ((24, 16) if rot % 2 else (16, 24))
        assert torch.equal(d.inverse(gx), x)
        torch.testing.assert_close(d.A(gx), op.A(x), rtol=0, atol=1e-12)  # A_g (g x) = A x
        y = op.A(x)
        assert _adjoint_gap(d, gx, torch.randn(y.shape, generator=g, dtype=y.dtype)) < 1e-10
        torch.testing.assert_close(d.A(d.A_dagger(y)), y, rtol=0, atol=1e-10)
        torch.testing.assert_close(d.A_dagger(y), d.transform(op.A_dagger(y)), rtol=0, atol=0)
    assert (flip, rot) != (False, 0) or torch.equal(d.transform(x), x)


def test_dihedral_elements_distinct_and_bad_input():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    op = BlockCS(0.5, block_size=2)
    images = {tuple(Dihedral(op, f, r).transform(x).flatten().tolist()) for f, r in DIHEDRAL}
    assert len(images) == 8
    assert all(r % 2 == 0 for _, r in DIHEDRAL[:4])  # the first four keep (H, W)
    with pytest.raises(TypeError, match="rot"):
        Dihedral(op, rot=1.0)
    with pytest.raises(NotImplementedError, match="Dihedral"):
        Dihedral(op).get_config()
