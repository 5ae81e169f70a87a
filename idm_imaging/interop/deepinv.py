"""deepinv interop: our operators as deepinv physics and back, IDM as a deepinv ``Reconstructor``, deepinv's
variational solvers and its diffusion sampler DiffPIR (on our diffusion prior) as benchmark peers. Needs the
``deepinv`` extra (``pip install idm-imaging[deepinv]``).

Conventions. deepinv's ``MRI`` works on real tensors with the real and imaginary parts as 2 channels
``(B, 2, H, W)``; our :class:`~idm_imaging.operators.SingleCoilFourier` on complex ``(B, 1, H, W)``. Both use the
orthonormal centred FFT, so they agree up to :func:`complex_to_channels` / :func:`channels_to_complex`. Our
``measure(x, sigma)`` adds complex noise with ``E|n|^2 = sigma^2`` (``sigma / sqrt(2)`` per part), which is
deepinv's ``GaussianNoise(sigma / sqrt(2))`` on the 2-channel k-space; block CS is real, ``GaussianNoise(sigma)``.

Example::

    >>> import torch
    >>> from idm_imaging import IDM
    >>> from idm_imaging.operators import BlockCS
    >>> from idm_imaging.interop.deepinv import IDMReconstructor
    >>> physics = BlockCS(0.25, block_size=16, img_size=(32, 32)).to_deepinv(sigma=0.0)
    >>> model = IDMReconstructor(IDM(T=1).eval())           # or IDM.from_pretrained("cs")
    >>> x = torch.rand(1, 1, 32, 32)
    >>> with torch.no_grad():
    ...     x_hat = model(physics(x), physics)              # or deepinv.test(model, loader, physics)
    >>> x_hat.shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

import math
from typing import Any

import torch

try:
    import deepinv
    from deepinv.models import Reconstructor
    from deepinv.physics import MRI, CompressedSensing, GaussianNoise, LinearPhysics, Physics, ZeroNoise
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("idm_imaging.interop.deepinv needs deepinv 0.5: pip install 'idm-imaging[deepinv]'") from e

from idm_imaging.operators import BlockCS, LinearOperator, SingleCoilFourier

__all__ = ["OperatorPhysics", "PhysicsOperator", "IDMReconstructor", "DeepinvSolver", "DeepinvDiffPIR",
           "PriorDenoiser", "deepinv_dps", "to_deepinv",
           "operator_from_deepinv", "complex_to_channels", "channels_to_complex"]

_ORTHO_TOL = 1e-4  # relative ||A A^H y - y|| below which a physics counts as having orthonormal rows


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, 1, H, W)`` -> real ``(B, 2, H, W)`` (real, imaginary): deepinv's MRI layout."""
    if not x.is_complex() or x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"x: expected complex (B, 1, H, W), got {x.dtype} {tuple(x.shape)}")
    return torch.cat([x.real, x.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real ``(B, 2, H, W)`` (real, imaginary) -> complex ``(B, 1, H, W)``."""
    if x.is_complex() or x.ndim != 4 or x.shape[1] != 2:
        raise ValueError(f"x: expected real (B, 2, H, W) with real and imaginary channels, got {x.dtype} "
                         f"{tuple(x.shape)}")
    return torch.complex(x[:, :1], x[:, 1:])


def _noise(sigma: float):
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma: expected a finite number >= 0, got {sigma!r}")
    return GaussianNoise(sigma=float(sigma)) if sigma > 0 else ZeroNoise()


class OperatorPhysics(LinearPhysics):
    """A real operator of ours (e.g. :class:`BlockCS`) as a deepinv ``LinearPhysics``: ``A``, ``A_adjoint`` and
    ``A_dagger`` are the operator's own (exact, no iterative solver); ``physics(x)`` adds ``GaussianNoise(sigma)``.
    A dense deepinv ``CompressedSensing`` matrix of a 256x256 image at 10 % would take 1.7 GB; this takes none."""

    def __init__(self, operator: LinearOperator, sigma: float = 0.0):
        if not isinstance(operator, LinearOperator) or operator.is_complex:
            raise TypeError(f"operator: expected a real idm_imaging operator, got {type(operator).__name__}")
        size = getattr(operator, "img_size", None)
        super().__init__(noise_model=_noise(sigma), img_size=None if size is None else (1, *size))
        self.operator = operator

    def A(self, x, **kwargs):  # noqa: N802 (deepinv name)
        return self.operator.A(x)

    def A_adjoint(self, y, **kwargs):  # noqa: N802
        return self.operator.A_adjoint(y)

    def A_dagger(self, y, **kwargs):  # noqa: N802
        return self.operator.A_dagger(y)


def to_deepinv(operator: LinearOperator, sigma: float = 0.0) -> LinearPhysics:
    """Our operator as deepinv physics with the same noise (``operator.measure(x, sigma)``'s distribution).

    :class:`BlockCS` -> :class:`OperatorPhysics`; :class:`SingleCoilFourier` -> ``deepinv.physics.MRI`` with its
    mask (2-channel layout, see the module doc; noise ``GaussianNoise(sigma / sqrt(2))`` per part).
    """
    if isinstance(operator, SingleCoilFourier):
        return MRI(mask=operator.mask.float(), img_size=(2, *operator.shape), device=operator.mask.device,
                   noise_model=_noise(float(sigma) / math.sqrt(2) if sigma else sigma))
    if isinstance(operator, BlockCS):
        return OperatorPhysics(operator, sigma)
    raise TypeError(f"operator: no deepinv counterpart for {type(operator).__name__} (BlockCS, SingleCoilFourier)")


class PhysicsOperator(LinearOperator):
    """A real deepinv ``LinearPhysics`` as one of our operators (``A``, ``A_adjoint`` and ``A_dagger`` delegated),
    for IDM and the benchmark's methods. Built by :func:`operator_from_deepinv`; has no config (not rebuildable
    from JSON)."""

    is_complex = False

    def __init__(self, physics: LinearPhysics, orthonormal_rows: bool):
        super().__init__()
        self.physics = physics
        self.orthonormal_rows = bool(orthonormal_rows)

    def A(self, x):  # noqa: N802
        return self.physics.A(x)

    def A_adjoint(self, y):  # noqa: N802
        return self.physics.A_adjoint(y)

    def A_dagger(self, y):  # noqa: N802
        # orthonormal rows: the adjoint is the pseudo-inverse (deepinv's default A_dagger is an iterative solve)
        return self.physics.A_adjoint(y) if self.orthonormal_rows else self.physics.A_dagger(y)

    def get_config(self) -> dict:
        raise TypeError(f"operator: a wrapped deepinv {type(self.physics).__name__} has no JSON config")


def _single_mask(physics) -> torch.Tensor:
    """The ``(H, W)`` bool mask of a 2-D single-coil deepinv ``MRI``; raises when it is not one binary mask."""
    if getattr(physics, "three_d", False) or type(physics).__name__ != "MRI":
        raise ValueError(f"physics: only 2-D single-coil deepinv MRI is supported, got {type(physics).__name__}"
                         f"{' (3-D)' if getattr(physics, 'three_d', False) else ''}")
    m = physics.mask.detach()
    flat = m.reshape(-1, *m.shape[-2:])
    if not bool((flat == flat[:1]).all()):
        raise ValueError("physics: the MRI mask differs across batch or channels; give one (H, W) mask")
    m = flat[0]
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("physics: the MRI mask must be binary (0/1)")
    return m != 0


def _orthonormal_rows(physics: LinearPhysics, img_size) -> float:
    """Relative error ``||A A^H y - y|| / ||y||`` for ``y = A x``, ``x`` a seeded Gaussian image."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, *img_size), generator=gen)
    y = physics.A(x)
    return float(torch.linalg.vector_norm(physics.A(physics.A_adjoint(y)) - y) / torch.linalg.vector_norm(y))


def operator_from_deepinv(physics: Physics, img_size: tuple | None = None) -> LinearOperator:
    """The way back: deepinv physics -> one of our operators.

    - :class:`OperatorPhysics` -> the operator it wraps (so ours -> deepinv -> ours is the same object);
    - ``MRI`` (2-D, single coil, one binary mask) -> :class:`SingleCoilFourier` on that mask (complex layout:
      feed it ``channels_to_complex(y)``);
    - ``CompressedSensing`` (real) -> :class:`PhysicsOperator` with deepinv's exact pseudo-inverse;
    - any other real ``LinearPhysics`` whose rows are orthonormal (``A A^H = I``, checked on a random image of
      ``img_size`` ``(C, H, W)``, default ``physics.img_size``) -> :class:`PhysicsOperator` with ``A^+ = A^H``.

    Anything else raises ``ValueError``/``TypeError`` naming what is missing.
    """
    if isinstance(physics, OperatorPhysics):
        return physics.operator
    if isinstance(physics, MRI):
        return SingleCoilFourier(_single_mask(physics))
    if not isinstance(physics, LinearPhysics):
        raise TypeError(f"physics: expected a deepinv LinearPhysics, got {type(physics).__name__}")
    if isinstance(physics, CompressedSensing):
        if physics.dtype.is_complex:
            raise ValueError("physics: complex CompressedSensing matrices are not supported (real images only)")
        return PhysicsOperator(physics, orthonormal_rows=False)
    size = img_size if img_size is not None else getattr(physics, "img_size", None)
    if size is None:
        raise ValueError(f"img_size: needed to check that {type(physics).__name__} has orthonormal rows "
                         "(the physics records no img_size); pass (C, H, W)")
    err = _orthonormal_rows(physics, tuple(size))
    if not err < _ORTHO_TOL:
        raise ValueError(f"physics: {type(physics).__name__} has no orthonormal rows (||A A^H y - y|| / ||y|| = "
                         f"{err:.3g}); supported: CompressedSensing, MRI, or a LinearPhysics with A A^H = I")
    return PhysicsOperator(physics, orthonormal_rows=True)


class IDMReconstructor(Reconstructor):
    """An :class:`~idm_imaging.models.IDM` as a deepinv ``Reconstructor``: ``x_hat = model(y, physics)`` with
    deepinv physics and tensors, so ``deepinv.test(model, loader, physics)`` and ``deepinv.Trainer`` run IDM.

    For ``MRI`` physics ``y`` and ``x_hat`` use deepinv's 2-channel layout; for the others they are as ``physics``
    produces them. The physics is converted by :func:`operator_from_deepinv` on every call (cheap; masks may change
    between calls).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        if not callable(getattr(model, "forward", None)) or not hasattr(model, "is_complex"):
            raise TypeError(f"model: expected an idm_imaging IDM, got {type(model).__name__}")
        self.model = model

    def forward(self, y: torch.Tensor, physics: Physics, **kwargs) -> torch.Tensor:
        op = operator_from_deepinv(physics)
        if op.is_complex:
            return complex_to_channels(self.model(channels_to_complex(y), op))
        return self.model(y, op)


class _WaveletL1(deepinv.optim.WaveletPrior):
    """deepinv's ``WaveletPrior`` (l1, soft thresholding) whose prox thresholds at the step ``gamma`` (FISTA's
    ``lambda * stepsize``) rather than at ``0.1 * gamma`` (its keyword ``ths`` defaults to 0.1)."""

    def __init__(self, level: int = 3, wv: str = "db8"):
        super().__init__(level=level, wv=wv, p=1)

    def prox(self, x, *args, gamma: float = 1.0, **kwargs):
        return super().prox(x, ths=1.0, gamma=gamma)


class DeepinvSolver(torch.nn.Module):
    r"""deepinv's variational solvers as a benchmark method ``(y, operator) -> x_hat`` on our operators.

    deepinv's FISTA (``optim_builder("FISTA", data_fidelity=L2())``, fixed step ``1 / L`` with ``L = 1``:
    ``A A^H = I`` for our operators; momentum ``(k + 2) / (k + 3)`` at iteration ``k``) from ``A^+ y``, a fixed
    number of iterations (no early stop), solving

    - ``kind="tv"``: ``min_x 0.5 ||A x - y||^2 + lam TV(x)``, ``TV(x) = ||D x||_{1,2}`` (isotropic, forward
      differences; the same objective as :class:`~idm_imaging.benchmark.baselines.TVFista`). Prior
      ``TVPrior``, whose prox is deepinv's ``TVDenoiser`` (Condat's primal-dual algorithm, warm-started from the
      previous call's primal and dual) with balanced steps ``tau = sigma = 1 / sqrt(8)``
      (``tau sigma ||D||^2 = 1``). deepinv's default ``tau = 0.01`` moves the warm-started primal by about 1 %
      of the way to each new prox input per inner iteration, so ``inner`` steps of it return nearly the
      previous prox output and FISTA stalls near its start.
    - ``kind="wavelet"``: ``min_x 0.5 ||A x - y||^2 + lam ||W_d x||_1``, ``W_d`` the detail coefficients of
      a 3-level ``db8`` wavelet transform (deepinv's ``WaveletPrior``: the approximation band is not penalised),
      prox by soft thresholding at ``lam`` times the step. ``WaveletPrior.prox`` thresholds at
      ``ths * gamma`` with its keyword ``ths`` (default 0.1), which FISTA never sets; here ``ths = 1`` so
      that ``lam`` is the weight of the l1 term.

    MRI: deepinv's 2-channel layout inside, complex out. Default weights: tuned on Train400 crops (training
    images, never the test sets) by ``python -m idm_imaging.benchmark.tune deepinv-tv`` (``deepinv-wavelet``);
    records in ``benchmarks/results/tuning-deepinv-tv.json`` and ``tuning-deepinv-wavelet.json``.

    Args:
        kind (`str`):
            ``"tv"`` or ``"wavelet"``.
        lam (`float`, *optional*):
            Regularisation weight ``lam > 0`` for images in ``[0, 1]``; `None` takes the tuned value
            (:attr:`DEFAULT_LAM`: TV 0.001, wavelet 0.01).
        iterations (`int`, *optional*, defaults to 200):
            FISTA iterations.
        inner (`int`, *optional*, defaults to 5):
            Primal-dual iterations per TV prox (``kind="tv"`` only); tuned together with ``lam``.
    """

    KINDS = ("tv", "wavelet")
    DEFAULT_LAM = {"tv": 0.001, "wavelet": 0.01}
    TV_TAU = 1 / math.sqrt(8)  # TVDenoiser's primal step; its dual step is 1 / (8 tau)

    def __init__(self, kind: str, lam: float | None = None, iterations: int = 200, inner: int = 5):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"kind: expected one of {self.KINDS}, got {kind!r}")
        if lam is None:
            lam = self.DEFAULT_LAM[kind]
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam > 0:
            raise ValueError(f"lam: expected a number > 0, got {lam!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations: expected an int >= 1, got {iterations!r}")
        if isinstance(inner, bool) or not isinstance(inner, int) or inner < 1:
            raise ValueError(f"inner: expected an int >= 1, got {inner!r}")
        self.kind, self.lam, self.iterations, self.inner = kind, float(lam), iterations, inner
        self.name = f"deepinv {'TV' if kind == 'tv' else 'wavelet'}"
        from deepinv.optim import L2, TVPrior, optim_builder

        if kind == "tv":
            prior = TVPrior(n_it_max=self.inner)
            prior.TVModel.tau = self.TV_TAU
        else:
            prior = _WaveletL1(level=3, wv="db8")
        self.solver = optim_builder(
            iteration="FISTA", prior=prior, data_fidelity=L2(), max_iter=iterations, early_stop=False,
            params_algo={"stepsize": 1.0, "lambda": self.lam, "a": 3},
            custom_init=lambda y, physics: {"est": (physics.A_dagger(y), physics.A_dagger(y))})

    def settings(self) -> dict:
        s = {"lam": self.lam, "iterations": self.iterations, "algorithm": "FISTA (deepinv optim_builder)",
             "prior": "TVPrior" if self.kind == "tv" else "WaveletPrior(db8, level 3, l1 on detail coefficients)",
             "step": "1/L, L = 1", "start": "A^+ y", "library": f"deepinv {deepinv.__version__}"}
        if self.kind == "tv":
            s["inner_prox_iterations"] = self.inner
            s["prox_primal_step"] = round(self.TV_TAU, 6)
        return s

    @torch.no_grad()
    def forward(self, y: torch.Tensor, operator: Any) -> torch.Tensor:
        physics = to_deepinv(operator) if isinstance(operator, LinearOperator) else operator
        if self.kind == "tv":  # deepinv's TV prox warm-starts from its last call: not from another image
            self.solver.prior[0].TVModel.restart = True
        if isinstance(physics, MRI):
            return channels_to_complex(self.solver(complex_to_channels(y), physics))
        return self.solver(y, physics)


class PriorDenoiser(torch.nn.Module):
    """Our diffusion prior as a deepinv denoiser ``D(x, sigma)`` on ``[0, 1]`` images: Tweedie's estimate
    ``x0 = (z - sqrt(1 - a_t) eps(z, t)) / sqrt(a_t)``, ``z = sqrt(a_t) x`` in the prior's range, at the timestep
    whose noise level ``sqrt(1 / a_t - 1)`` is nearest to ``sigma`` (``2 sigma`` for a prior trained on ``[-1, 1]``).
    deepinv's ``ScoreModelWrapper`` assumes a ``[-1, 1]`` model on its way out; this takes either range.

    Args:
        prior (`DiffusionPrior`):
            A :class:`~idm_imaging.benchmark.baselines.DiffusionPrior`, e.g. ``DiffusionPrior.load("prior-gray")``.
    """

    def __init__(self, prior: torch.nn.Module):
        super().__init__()
        self.prior = prior
        self.levels = (1 / prior.alphas_cumprod.double() - 1).sqrt()  # noise std per timestep, prior's range

    def _one(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        pr = self.prior
        t = int(torch.argmin((self.levels - (2.0 if pr.signed_range else 1.0) * sigma).abs()))
        a = pr.alphas_cumprod[t].to(x.dtype)
        z = a.sqrt() * pr.to_prior(x)
        return pr.to_image((z - (1 - a).sqrt() * pr.eps(z, t)) / a.sqrt()).clamp(0, 1)

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor, *args, **kwargs) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float64).flatten()
        if bool((s == s[0]).all()):
            return self._one(x, float(s[0]))
        return torch.cat([self._one(x[i:i + 1], float(s[i])) for i in range(x.shape[0])])


class DeepinvDiffPIR(torch.nn.Module):
    """deepinv's DiffPIR (Zhu et al., CVPR 2023 workshops; ``deepinv.sampling.DiffPIR``) on our diffusion prior, as a
    benchmark method ``(y, operator) -> x_hat`` for block CS (a grayscale prior: no MRI).

    Each of ``steps`` iterations denoises with the prior (:class:`PriorDenoiser`), takes deepinv's ``L2`` proximal
    step on ``||A x - y||^2`` with weight ``rho_t = lambda_ sigma^2 / sigma_t^2`` and re-noises with mixing ``zeta``.
    ``sigma``: the data noise level DiffPIR assumes for noise-free data (deepinv's default 0.05; a noisy physics
    overrides it with its own). ``lambda_ = 1``, ``zeta = 0.5``: tuned on Train400 crops over lambda_ 1 / 7 / 30
    and zeta 0.1 / 0.5 (deepinv's defaults are 7 / 0.1) by ``python -m idm_imaging.benchmark.tune deepinv-diffpir``;
    records in ``benchmarks/results/tuning-deepinv-diffpir.json``.
    The sampler is random: ``seed`` fixes it.

    Args:
        prior (`DiffusionPrior`):
            A :class:`~idm_imaging.benchmark.baselines.DiffusionPrior`.
        steps (`int`, *optional*, defaults to 100):
            DiffPIR iterations (at least 2).
        lambda_ (`float`, *optional*, defaults to 1.0):
            DiffPIR's regularisation weight ``lambda_ > 0`` (``rho_t = lambda_ sigma^2 / sigma_t^2``).
        zeta (`float`, *optional*, defaults to 0.5):
            DiffPIR's re-noising mix, in [0, 1].
        sigma (`float`, *optional*, defaults to 0.05):
            Data noise level ``> 0`` assumed for noise-free data.
        seed (`int`, *optional*, defaults to 0):
            The sampler's seed.
    """

    name = "deepinv DiffPIR"

    def __init__(self, prior: torch.nn.Module, steps: int = 100, lambda_: float = 1.0, zeta: float = 0.5,
                 sigma: float = 0.05, seed: int = 0):
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps: expected an int >= 2, got {steps!r}")
        for key, v in (("lambda_", lambda_), ("sigma", sigma)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{key}: expected a number > 0, got {v!r}")
        if not 0 <= zeta <= 1:
            raise ValueError(f"zeta: expected a number in [0, 1], got {zeta!r}")
        from deepinv.optim import L2
        from deepinv.sampling import DiffPIR

        self.prior, self.steps, self.seed = prior, steps, int(seed)
        self.sampler = DiffPIR(model=PriorDenoiser(prior), data_fidelity=L2(), sigma=float(sigma), max_iter=steps,
                               zeta=float(zeta), lambda_=float(lambda_))

    def settings(self) -> dict:
        return {"steps": self.steps, "lambda": self.sampler.lambda_, "zeta": self.sampler.zeta,
                "sigma": self.sampler.sigma, "seed": self.seed, "prior": getattr(self.prior, "name", "prior"),
                "library": f"deepinv {deepinv.__version__}"}

    @torch.no_grad()
    def forward(self, y: torch.Tensor, operator: Any) -> torch.Tensor:
        physics = to_deepinv(operator) if isinstance(operator, LinearOperator) else operator
        if isinstance(physics, MRI):  # our complex operator converts to deepinv's MRI
            raise ValueError("operator: DiffPIR here uses a grayscale prior; MRI is not supported")
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)  # DiffPIR draws from the global generator
        try:
            return self.sampler(y, physics)
        finally:
            torch.random.set_rng_state(gen_state)


def deepinv_dps(prior, steps: int, weight: float = 1.0, seed: int = 0, zeta_per_step: float | None = None):
    r"""deepinv's DPS (``deepinv.sampling.DPS``) on our diffusion prior, called as
    ``sampler(y, operator.to_deepinv())`` (output in ``[0, 1]``): the check that our
    :class:`~idm_imaging.benchmark.baselines.DPS` (the benchmark's, which needs no deepinv) is the same method
    (``tests/test_deepinv.py``, ``benchmarks/dps_agreement.py``).

    Denoiser :class:`~idm_imaging.interop.deepinv.PriorDenoiser`; deepinv's state is kept in the prior's range
    (``minus_one_one`` = the prior's ``signed_range``), as ours is. ``steps`` ancestral steps with ``eta = 1``
    (deepinv's ``"ddpm"`` solver: our DDIM ``eta = 1`` step) on ``steps + 1`` times ``linspace(1, 0)`` of deepinv's
    continuous VP schedule (``beta`` 0.1 to 20, the continuous form of the linear 1e-4 to 0.02 DDPM schedule;
    the denoiser takes the timestep of nearest noise level), the last one to noise 0.

    The likelihood step: deepinv adds ``weight grad ||A x0 - y||`` to the score, so the state moves by
    ``weight c_t grad`` with ``c_t = (a_next - a_t) / sqrt(a_t a_next)`` (``a = alphas_cumprod``; 0.40 on the first
    and 0.006 on the last of 50 steps, summing to about ``ln(1 / a_T) = 10``), where ours moves by ``zeta grad``
    on every step. ``zeta_per_step`` sets ``weight = zeta_per_step / c_t`` on each step: our step size exactly.

    Args:
        prior (`DiffusionPrior`):
            A :class:`~idm_imaging.benchmark.baselines.DiffusionPrior`.
        steps (`int`):
            Sampling steps (denoiser evaluations), at least 1.
        weight (`float`, *optional*, defaults to 1.0):
            The constant ``weight`` of deepinv's DPS (its default); ignored with ``zeta_per_step``.
        seed (`int`, *optional*, defaults to 0):
            Seeds the sampler's own generator (start and noise).
        zeta_per_step (`float`, *optional*):
            Our ``zeta``, applied on every step as above.

    Returns:
        `deepinv.sampling.DPS`: the sampler.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    from deepinv.sampling import DPS

    p = next(prior.parameters())
    sampler = DPS(PriorDenoiser(prior), solver="ddpm", num_steps=steps + 1, weight=float(weight), device=p.device,
                  rng=torch.Generator(p.device).manual_seed(int(seed)), minus_one_one=bool(prior.signed_range))
    if zeta_per_step is not None:
        step = sampler.solver.step

        def matched_step(sde, t0, t1, x, *args, **kwargs):
            a0, a1 = sampler.sde.scale_t(t0) ** 2, sampler.sde.scale_t(t1) ** 2
            sampler.data_fidelity.weight = float(zeta_per_step * (a0 * a1).sqrt() / (a1 - a0))
            return step(sde, t0, t1, x, *args, **kwargs)

        sampler.solver.step = matched_step
    return sampler
