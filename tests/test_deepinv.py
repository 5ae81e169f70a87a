"""deepinv interop: our operators as deepinv physics and back, IDM inside deepinv, deepinv's solvers.

Runs where deepinv is importable (``make test-deepinv`` builds ``.venv-deepinv``); skipped elsewhere.
"""

from __future__ import annotations

import math

import pytest
import torch

deepinv = pytest.importorskip(
    "deepinv", reason="deepinv is not installed here: `make test-deepinv` runs these tests in .venv-deepinv "
                      "(pip install 'idm-imaging[deepinv]')")

from idm_imaging.interop.deepinv import (  # noqa: E402
    DeepinvSolver, IDMReconstructor, OperatorPhysics, PhysicsOperator, channels_to_complex, complex_to_channels,
    operator_from_deepinv,
)
from idm_imaging.metrics import psnr  # noqa: E402
from idm_imaging.operators import MASK_KINDS, BlockCS, SingleCoilFourier, make_mask  # noqa: E402

CS_CASES = [(0.1, 32, True, (64, 64)), (0.3, 16, False, (37, 45)), (0.5, 8, True, None)]


def _close(a, b, tol=1e-6):
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


def _phantom(n: int = 64, shift: int = 0) -> torch.Tensor:
    x = torch.full((1, 1, n, n), 0.1)
    x[..., n // 8 + shift: n // 2 + shift, n // 8: n // 2] = 0.8
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    x[0, 0][((yy - 0.68 * n) ** 2 + (xx - 0.68 * n) ** 2) < (0.18 * n) ** 2] = 0.5
    return x


def _tiny_idm(task: str):
    from idm_imaging.models import IDM

    torch.manual_seed(0)
    return IDM(T=1, task=task).eval()


# ------------------------------------------------------------------------------------------ operators
@pytest.mark.parametrize("ratio,block,permute,size", CS_CASES)
def test_block_cs_physics_equals_ours(ratio, block, permute, size):
    op = BlockCS(ratio, block_size=block, permute=permute, seed=3, img_size=size)
    physics = op.to_deepinv()
    assert isinstance(physics, deepinv.physics.LinearPhysics)
    h, w = size or (48, 40)
    x = torch.rand(2, 1, h, w, dtype=torch.float64)
    y = op.A(x)
    assert _close(physics.A(x), y) and _close(physics(x), y)  # sigma 0: no noise
    yr = torch.randn_like(y)
    assert _close(physics.A_adjoint(yr), op.A_adjoint(yr)) and _close(physics.A_dagger(yr), op.A_dagger(yr))
    # adjointness <A x, y> = <x, A^T y> (deepinv's own check) and the pseudo-inverse when no crop is involved
    assert abs(float(physics.adjointness_test(x))) < 1e-10
    if size is None or op.padded_size(*size) == tuple(size):
        assert _close(physics.A(physics.A_dagger(y)), y)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_mri_physics_equals_ours_for_every_mask_kind(kind):
    op = SingleCoilFourier(make_mask(kind, (48, 40), 4, seed=1))
    physics = op.to_deepinv()
    assert isinstance(physics, deepinv.physics.MRI)
    x = torch.randn(2, 1, 48, 40, dtype=torch.complex128)
    xc = complex_to_channels(x)
    y = op.A(x)
    assert _close(channels_to_complex(physics.A(xc)), y)
    yr = op.A(torch.randn_like(x))
    yc = complex_to_channels(yr)
    assert _close(channels_to_complex(physics.A_adjoint(yc)), op.A_adjoint(yr))
    assert _close(channels_to_complex(physics.A_dagger(yc)), op.A_dagger(yr))
    # adjointness in the real 2-channel layout, and A A^+ y = y
    assert abs(float(physics.adjointness_test(xc))) < 1e-8
    assert _close(physics.A(physics.A_dagger(yc)), yc)


def test_noise_models_match_measure():
    sigma, n = 0.05, 128
    x = torch.rand(4, 1, n, n, dtype=torch.float64)
    op = BlockCS(0.3, block_size=16, seed=0)
    ours, theirs = op.measure(x, sigma, seed=0) - op.A(x), op.to_deepinv(sigma)(x) - op.A(x)
    assert abs(float(ours.std()) / sigma - 1) < 0.02 and abs(float(theirs.std()) / sigma - 1) < 0.02
    mri = SingleCoilFourier(make_mask("random", (n, n), 4, seed=0))
    m = mri.mask
    ours = (mri.measure(x.to(torch.complex128), sigma, seed=0) - mri.A(x))[..., m]
    theirs = channels_to_complex(mri.to_deepinv(sigma)(complex_to_channels(x.to(torch.complex128)))
                                 - complex_to_channels(mri.A(x)))
    assert float(theirs[..., ~m].abs().max()) == 0.0  # both measure only where the mask is on
    for noise in (ours, theirs[..., m]):
        assert abs(math.sqrt(float((noise.abs() ** 2).mean())) / sigma - 1) < 0.03  # E|n|^2 = sigma^2
        assert abs(float(noise.real.std()) / (sigma / math.sqrt(2)) - 1) < 0.03


@pytest.mark.parametrize("kind", ["random", "radial"])
def test_round_trip_ours_deepinv_ours_gives_the_same_y(kind):
    x = torch.rand(1, 1, 64, 64)
    cs = BlockCS(0.1, block_size=32, seed=5, img_size=(64, 64))
    back = operator_from_deepinv(cs.to_deepinv())
    assert back is cs and torch.equal(back.A(x), cs.A(x))
    mri = SingleCoilFourier(make_mask(kind, (64, 64), 6, seed=2))
    back = operator_from_deepinv(mri.to_deepinv())
    assert isinstance(back, SingleCoilFourier) and torch.equal(back.mask, mri.mask)
    assert torch.equal(back.A(x), mri.A(x))
    # a physics built in deepinv with its own mask converts too
    mask = make_mask(kind, (64, 64), 6, seed=2).float()
    back = operator_from_deepinv(deepinv.physics.MRI(mask=mask, img_size=(2, 64, 64)))
    assert torch.equal(back.mask, mask.bool())


def test_compressed_sensing_and_orthonormal_linear_physics_convert():
    torch.manual_seed(0)
    cs = deepinv.physics.CompressedSensing(m=200, img_size=(1, 16, 16), rng=torch.Generator().manual_seed(0))
    op = operator_from_deepinv(cs)
    assert isinstance(op, PhysicsOperator) and not op.is_complex
    x = torch.rand(2, 1, 16, 16)
    y = cs.A(x)
    assert torch.equal(op.A(x), y) and _close(op.A(op.A_dagger(y)), y, 1e-4)  # exact pseudo-inverse, not A^T
    assert not _close(op.A(op.A_adjoint(y)), y, 1e-2)
    # a generic LinearPhysics with orthonormal rows: A^+ = A^T
    q = torch.linalg.qr(torch.randn(256, 256, generator=torch.Generator().manual_seed(1)))[0][:64]
    lp = deepinv.physics.LinearPhysics(A=lambda v, **k: v.reshape(v.shape[0], -1) @ q.T,
                                       A_adjoint=lambda v, **k: (v @ q).reshape(-1, 1, 16, 16), img_size=(1, 16, 16))
    op = operator_from_deepinv(lp)
    assert op.orthonormal_rows and _close(op.A(op.A_dagger(lp.A(x))), lp.A(x), 1e-5)


def test_unsupported_physics_is_rejected_clearly():
    blur = deepinv.physics.Blur(deepinv.physics.blur.gaussian_blur(sigma=2.0))
    with pytest.raises(ValueError, match="no orthonormal rows"):
        operator_from_deepinv(blur, img_size=(1, 32, 32))
    with pytest.raises(ValueError, match="img_size"):
        operator_from_deepinv(blur)
    with pytest.raises(TypeError, match="LinearPhysics"):
        operator_from_deepinv(deepinv.physics.Physics(A=lambda v, **k: v**2))
    masks = torch.stack([make_mask("random", (32, 32), 4, seed=s) for s in (0, 1)]).float()[:, None].repeat(1, 2, 1, 1)
    with pytest.raises(ValueError, match="mask differs"):
        operator_from_deepinv(deepinv.physics.MRI(mask=masks, img_size=(2, 32, 32)))
    with pytest.raises(TypeError, match="deepinv counterpart"):
        PhysicsOperator(blur, True).to_deepinv()
    with pytest.raises(ValueError, match="sigma"):
        BlockCS(0.1).to_deepinv(sigma=-1.0)
    with pytest.raises(TypeError, match="real idm_imaging operator"):
        OperatorPhysics(SingleCoilFourier(torch.ones(8, 8, dtype=torch.bool)))


# ------------------------------------------------------------------------------------------ IDM inside deepinv
def test_idm_reconstructor_equals_idm_on_both_tasks():
    model = _tiny_idm("cs")
    rec = IDMReconstructor(model)
    assert isinstance(rec, deepinv.models.Reconstructor)
    x = _phantom(64)
    op = BlockCS(0.3, block_size=16, seed=0, img_size=(64, 64))
    with torch.no_grad():
        assert torch.equal(rec(op.A(x), op.to_deepinv()), model(op.A(x), op))
    mri_model = _tiny_idm("mri")
    mri = SingleCoilFourier(make_mask("equispaced", (64, 64), 4, seed=0))
    xc = x.to(torch.complex64)
    with torch.no_grad():
        ours = mri_model(mri.A(xc), mri)
        theirs = IDMReconstructor(mri_model)(complex_to_channels(mri.A(xc)), mri.to_deepinv())
    assert theirs.shape == (1, 2, 64, 64) and torch.allclose(channels_to_complex(theirs), ours, atol=1e-6)


def test_deepinv_test_psnr_equals_our_benchmark_psnr():
    from torch.utils.data import DataLoader

    from idm_imaging.benchmark.run import _Recorder

    model = _tiny_idm("cs")
    images = [_phantom(64, shift=s) * (0.7 + 0.1 * s) + 0.05 * s for s in range(3)]
    op = BlockCS(0.3, block_size=16, seed=0, img_size=(64, 64))
    ours = _Recorder(torch.device("cpu"), lambda s: None)
    with torch.no_grad():
        ours.evaluate("main", "synthetic", "CS 30%", "IDM", lambda y, o: model(y, o),
                      [(f"img{i}", x, op) for i, x in enumerate(images)], "natural")
    loader = DataLoader([x[0] for x in images], batch_size=1)  # a dataset yielding x alone: y is physics(x)
    # our protocol clips the reconstruction to [0, 1]; deepinv's PSNR does so with norm_inputs="clip"
    res = deepinv.test(IDMReconstructor(model), loader, op.to_deepinv(), online_measurements=True, verbose=False,
                       show_progress_bar=False, compare_no_learning=False,
                       metrics=deepinv.loss.metric.PSNR(norm_inputs="clip"))
    assert abs(res["PSNR"] - ours.rows[0]["psnr"]) < 0.01, (res, ours.rows[0])


# ------------------------------------------------------------------------------------------ deepinv's solvers
@pytest.mark.parametrize("kind", ["tv", "wavelet"])
def test_deepinv_solvers_run_on_our_operators(kind):
    x = _phantom(64)
    op = BlockCS(0.3, block_size=16, seed=0)
    y = op.A(x)
    solver = DeepinvSolver(kind, lam=0.003, iterations=30)
    out = solver(y, op)
    pinv = psnr(op.A_dagger(y), x, data_range=1.0)
    assert psnr(out, x, data_range=1.0) > pinv + (8 if kind == "tv" else 3)
    assert solver.settings()["library"] == f"deepinv {deepinv.__version__}"
    mri = SingleCoilFourier(make_mask("random", (64, 64), 4, seed=1))
    out = solver(mri.A(x.to(torch.complex64)), mri)  # deepinv's 2-channel MRI inside, complex out
    assert out.is_complex() and out.shape == (1, 1, 64, 64)
    if kind == "tv":
        assert psnr(out.abs(), x, data_range=1.0) > psnr(mri.A_dagger(mri.A(x)).abs(), x, data_range=1.0) + 3
    with pytest.raises(ValueError, match="kind"):
        DeepinvSolver("l0")
    with pytest.raises(ValueError, match="inner"):
        DeepinvSolver("tv", inner=0)


@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_deepinv_tv_solves_the_same_problem_as_our_tv_fista(ratio):
    from idm_imaging.benchmark.baselines import TVFista
    from idm_imaging.solvers import _grad

    x = _phantom(64)
    x = x + 0.1 * torch.sin(torch.arange(64.0) / 3)[None, None, :, None]  # some texture, not piecewise constant
    op = BlockCS(ratio, block_size=16, seed=0)
    y = op.A(x)

    def objective(u, lam):
        gx, gy = _grad(u)
        return float(0.5 * ((op.A(u) - y) ** 2).sum() + lam * (gx * gx + gy * gy).sqrt().sum())

    lam = 0.003
    ours, theirs = TVFista(lam=lam, iterations=200)(y, op), DeepinvSolver("tv", lam=lam, iterations=200)(y, op)
    p_ours, p_theirs = psnr(ours, x, data_range=1.0), psnr(theirs, x, data_range=1.0)
    assert p_theirs > psnr(op.A_dagger(y), x, data_range=1.0) + 5
    assert abs(p_theirs - p_ours) < 0.5, (p_theirs, p_ours)
    assert objective(theirs, lam) < 1.02 * objective(ours, lam)


def test_deepinv_wavelet_weight_is_the_l1_weight():
    from deepinv.models import WaveletDenoiser

    solver = DeepinvSolver("wavelet", lam=0.02)
    z = torch.rand(1, 1, 32, 32)
    prox = solver.solver.prior[0].prox(z, None, gamma=0.02)  # as FISTA calls it: g_param, gamma = lam * step
    want = WaveletDenoiser(level=3, wv="db8", non_linearity="soft")(z, ths=0.02)
    assert _close(prox, want)



# ------------------------------------------------------------------------------------------ DiffPIR on our prior
def _tiny_prior(signed: bool = True):
    import diffusers

    from idm_imaging.benchmark.baselines import DiffusionPrior

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                 block_out_channels=(16, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    return DiffusionPrior(unet, signed_range=signed, name="tiny")


@pytest.mark.parametrize("signed", [True, False])
def test_prior_denoiser_is_tweedie_of_our_prior(signed):
    from idm_imaging.interop.deepinv import PriorDenoiser

    prior = _tiny_prior(signed)
    den = PriorDenoiser(prior)
    x = _phantom(32)
    rng = 2.0 if signed else 1.0  # the prior's range is [-1, 1] or [0, 1]
    for t in (50, 400):
        a = prior.alphas_cumprod[t]
        z = a.sqrt() * prior.to_prior(x)  # the noisy sample at t (noise-free here)
        with torch.no_grad():
            x0 = (z - (1 - a).sqrt() * prior.eps(z, t)) / a.sqrt()
            ours = prior.to_image(x0).clamp(0, 1)
            # deepinv's sigma is on [0, 1] images: sqrt(1 / a_t - 1) divided by the prior's range width
            theirs = den(x, float((1 / a - 1).sqrt() / rng))
        assert _close(theirs, ours, 1e-5), (t, float((theirs - ours).abs().max()))


def test_deepinv_diffpir_runs_on_our_operator_and_is_seeded():
    from idm_imaging.interop.deepinv import DeepinvDiffPIR

    x = _phantom(32)
    op = BlockCS(0.5, block_size=8, seed=0)
    y = op.A(x)
    method = DeepinvDiffPIR(_tiny_prior(), steps=5)
    a, b = method(y, op), method(y, op)
    assert a.shape == x.shape and torch.isfinite(a).all() and torch.equal(a, b)
    assert method.settings()["library"] == f"deepinv {deepinv.__version__}"
    with pytest.raises(ValueError, match="MRI"):
        method(torch.zeros(1, 1, 32, 32, dtype=torch.complex64), SingleCoilFourier(make_mask("random", (32, 32), 4)))
    with pytest.raises(ValueError, match="steps"):
        DeepinvDiffPIR(_tiny_prior(), steps=1)


# ------------------------------------------------------------------------------------------ DPS: ours and deepinv's
def test_our_dps_agrees_with_deepinv_dps_at_the_same_step_size():
    """Our DPS (kept: the benchmark's core needs no deepinv) against deepinv's ``DPS`` on the same prior-gray prior,
    block CS 30 % of a 64x64 natural image, 10 steps, seed 0. deepinv's likelihood step is ``weight c_t grad`` with
    a schedule factor ``c_t``, ours ``zeta grad``: with ``weight = zeta / c_t`` on each step (``zeta_per_step``)
    the two are one method and land within 1.5 dB (measured here: 0.3 dB; 0.9 dB mean gap over 3 Train400 crops x
    2 seeds at 50 steps, benchmarks/results/dps-agreement.json), both far above ``A^+ y``; deepinv's default
    constant ``weight = 1`` takes a step about ``zeta / c_t`` times smaller and stays near ``A^+ y`` at 10 steps
    (measured: 6.6 dB below), so the agreement is the step size's, not any two samplers'."""
    from skimage.data import camera
    from skimage.transform import resize

    from idm_imaging.benchmark.baselines import DPS, DiffusionPrior
    from idm_imaging.interop.deepinv import deepinv_dps
    from idm_imaging.metrics import psnr_y

    x = torch.from_numpy(resize(camera() / 255.0, (64, 64), anti_aliasing=True)).float()[None, None]
    prior = DiffusionPrior.load("prior-gray")
    op = BlockCS(0.3, block_size=32, seed=0, img_size=(64, 64))
    y = op.A(x)
    ours = psnr_y(DPS(prior, steps=10, zeta=5.0, seed=0)(y, op).detach()[0, 0], x[0, 0])
    matched = psnr_y(deepinv_dps(prior, 10, seed=0, zeta_per_step=5.0)(y, op.to_deepinv()).float()[0, 0], x[0, 0])
    default = psnr_y(deepinv_dps(prior, 10, seed=0)(y, op.to_deepinv()).float()[0, 0], x[0, 0])
    pinv = psnr_y(op.A_dagger(y)[0, 0], x[0, 0])
    assert abs(ours - matched) < 1.5, (ours, matched)
    assert min(ours, matched) > pinv + 8, (ours, matched, pinv)
    assert matched > default + 4, (matched, default)
    with pytest.raises(ValueError, match="steps"):
        deepinv_dps(prior, 0)
