"""Peer methods for the benchmark, each a real implementation with its published defaults.

Every method is a callable ``method(y, operator) -> x_hat`` with ``y`` as produced by ``operator.A`` on images
``(B, 1, H, W)`` in [0, 1] and ``x_hat`` real ``(B, 1, H, W)`` (complex for the zero-filled MRI baseline; metrics
take magnitudes). Operators are duck-typed (``A``, ``A_dagger``/``A_adjoint``, ``is_complex``).

- :class:`PseudoInverse`: ``A^+ y`` (zero-filled reconstruction for MRI).
- :class:`TVFista`: FISTA (Beck & Teboulle 2009) on ``0.5 ||A x - y||^2 + lam TV(x)``, isotropic TV, whose prox
  is solved by Chambolle's (2004) dual projection, warm-started.
- :class:`PnPBM3D`: plug-and-play proximal gradient with the ``bm3d`` package's denoiser (Dabov et al. 2007) in
  place of TV's prox, in the same ``1 / L`` projection loop.
- :class:`DDNM`: range-null-space diffusion sampling (Wang et al., ICLR 2023) with our pretrained prior.
- :class:`DPS`: diffusion posterior sampling (Chung et al., ICLR 2023) with our pretrained prior.
- :class:`VarNet` / :func:`train_varnet`: MONAI's end-to-end variational network, single-coil, for MRI.

The diffusion prior (:class:`DiffusionPrior`) is the diffusers UNet of ``prior-gray`` (or any prior folder), fed
as IDM feeds it: grayscale ``x`` in [0, 1] -> the prior's training range (``z = 2 x - 1`` for a prior trained on
[-1, 1], ``signed_range`` in its ``prior.json``; ``z = x`` otherwise, as for the embedded ``prior-gray``) -> pixel
unshuffle by :class:`idm_imaging.models.ImageAdapter` (1 x H x W -> 4 x H/2 x W/2 for a 4-channel UNet).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from idm_imaging.solvers import tv_fista, tv_prox

__all__ = [
    "PseudoInverse",
    "TVFista",
    "tv_prox",
    "PnPBM3D",
    "DiffusionPrior",
    "DDNM",
    "DPS",
    "VarNet",
    "train_varnet",
]


def _check_operator(operator: Any) -> None:
    for name in ("A", "A_adjoint"):
        if not callable(getattr(operator, name, None)):
            raise TypeError(f"operator: needs callable {name}(); got {type(operator).__name__}")


def _check_y(y: Any) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y: expected a torch.Tensor, got {type(y).__name__}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y: measurements contain NaN or Inf")
    return y


def _positive(value: Any, name: str, integer: bool = False, allow_zero: bool = False) -> float | int:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name}: expected {'an int' if integer else 'a number'}, got {type(value).__name__}")
    if not math.isfinite(float(value)) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return int(value) if integer else float(value)


def _dagger(operator: Any) -> Callable:
    return getattr(operator, "A_dagger", operator.A_adjoint)


def _real_project(x: torch.Tensor, y: torch.Tensor, operator: Any) -> torch.Tensor:
    """Range-null-space step ``x - A^+(A x - y)`` on a real image; for a complex operator the real part is kept
    (the benchmark's MRI targets are real magnitude images, and the prior is a real grayscale prior)."""
    r = _dagger(operator)(operator.A(x) - y)
    return x - (r.real if r.is_complex() else r)


# ----------------------------------------------------------------------------------------- pseudo-inverse
class PseudoInverse(nn.Module):
    """``x_hat = A^+ y``: the block-CS pseudo-inverse, or the zero-filled MRI image (complex).

    Example::

        >>> from idm_imaging.operators import BlockCS
        >>> op = BlockCS(0.25, block_size=8); x = torch.rand(1, 1, 16, 16)
        >>> PseudoInverse()(op.A(x), op).shape
        torch.Size([1, 1, 16, 16])
    """

    name = "pseudo-inverse"

    def settings(self) -> dict:
        return {}

    @torch.no_grad()
    def forward(self, y: torch.Tensor, operator: Any) -> torch.Tensor:
        _check_operator(operator)
        return _dagger(operator)(_check_y(y))


# ----------------------------------------------------------------------------------------- TV
class TVFista(nn.Module):
    r"""TV-regularised CS by FISTA: ``min_x 0.5 ||A x - y||_2^2 + lam TV(x)``.

    Gradient step ``1 / L`` with ``L = ||A||^2 = 1`` (``A A^H = I`` for every operator here), prox by
    :func:`tv_prox` (warm-started), Nesterov momentum ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``; start
    ``x_0 = A^+ y``. Complex operators (MRI): the image is complex, TV acts on the real and imaginary parts as
    two channels. Defaults (documented in docs/benchmark.md): ``lam = 0.001`` for images in [0, 1] (best of
    0.001, 0.003, 0.01, 0.03 at 10/30/50% on Train400 crops, not on the test sets), 200 outer iterations, 10
    inner Chambolle iterations.

    Args:
        lam, iterations, inner:
            As in :func:`~idm_imaging.solvers.tv_fista`, with the same defaults.

    Example::

        >>> from idm_imaging.operators import SingleCoilFourier
        >>> op = SingleCoilFourier.from_mask_params("random", (64, 64), acceleration=4)
        >>> x = torch.zeros(1, 1, 64, 64); x[..., 16:48, 16:48] = 1
        >>> x_tv = TVFista(lam=0.01, iterations=100)(op.A(x), op)
    """

    name = "TV-FISTA"

    def __init__(self, lam: float = 0.001, iterations: int = 200, inner: int = 10):
        super().__init__()
        self.lam = _positive(lam, "lam")
        self.iterations = _positive(iterations, "iterations", integer=True)
        self.inner = _positive(inner, "inner", integer=True)

    def settings(self) -> dict:
        return {"lam": self.lam, "iterations": self.iterations, "inner_chambolle_iterations": self.inner,
                "step": "1/L, L = ||A||^2 = 1", "tv": "isotropic, Neumann boundary"}

    @torch.no_grad()
    def forward(self, y: torch.Tensor, operator: Any) -> torch.Tensor:
        _check_operator(operator)
        return tv_fista(_check_y(y), operator, self.lam, self.iterations, self.inner)


# ----------------------------------------------------------------------------------------- PnP-BM3D
class PnPBM3D(nn.Module):
    r"""Plug-and-play proximal gradient (Venkatakrishnan et al. 2013) with BM3D (the ``bm3d`` package) as denoiser.

    The loop of :class:`TVFista` without momentum, BM3D in place of the TV prox::

        x_0 = A^+ y + mean fill;  x_{k+1} = BM3D(x_k - A^H (A x_k - y), sigma_k),  k = 0 .. iterations - 1
        output: x_K - A^+(A x_K - y)                                       (consistent with y)

    with ``sigma_k`` geometric from ``sigma_start`` to ``sigma_end`` (annealing: large residual aliasing first,
    fine detail last). The start has its mean set to the least-squares mean from ``y``
    (:func:`idm_imaging.solvers.measured_mean_shift`, as IDM's output): at 10 % block CS ``A^+ y`` keeps about
    a tenth of the image mean, which the loop would otherwise regain by a tenth per iteration. Step ``1 / L``, ``L = ||A||^2 = 1`` (``A A^H = I`` for the operators here), so each step is
    the projection onto ``{x : A x = y}``. Complex operators (MRI): real and imaginary parts as two channels of one
    BM3D call (block matching on the real part). Defaults: tuned on Train400 crops (training images, never the
    test sets) by :mod:`idm_imaging.benchmark.tune`; the tuned values are in ``benchmarks/results/tuning-*.json``.

    Args:
        sigma_start (`float`, *optional*, defaults to 0.1):
            Denoiser noise level of the first iteration (images in [0, 1]).
        sigma_end (`float`, *optional*, defaults to 0.005):
            Denoiser noise level of the last iteration (geometric in between).
        iterations (`int`, *optional*, defaults to 15):
            Outer iterations.
        profile (`str`, *optional*, defaults to `"np"`):
            BM3D profile (``"np"``: the package's default).
        stage (`str`, *optional*, defaults to `"hard"`):
            ``"hard"`` (hard thresholding only) or ``"all"`` (then Wiener filtering too, the full BM3D, about 2x
            slower).

    Example::

        >>> from idm_imaging.operators import BlockCS
        >>> op = BlockCS(0.3, block_size=16); x = torch.rand(1, 1, 32, 32)
        >>> PnPBM3D(iterations=3)(op.A(x), op).shape
        torch.Size([1, 1, 32, 32])
    """

    name = "PnP-BM3D"

    def __init__(self, sigma_start: float = 0.1, sigma_end: float = 0.005, iterations: int = 15,
                 profile: str = "np", stage: str = "hard"):
        super().__init__()
        import bm3d

        self._bm3d = bm3d
        self.sigma_start = _positive(sigma_start, "sigma_start")
        self.sigma_end = _positive(sigma_end, "sigma_end")
        self.iterations = _positive(iterations, "iterations", integer=True)
        if stage not in ("all", "hard"):
            raise ValueError(f"stage: expected 'all' or 'hard', got {stage!r}")
        self.profile, self.stage = str(profile), stage

    def settings(self) -> dict:
        from importlib.metadata import version

        return {"sigma_start": self.sigma_start, "sigma_end": self.sigma_end, "iterations": self.iterations,
                "schedule": "geometric", "profile": self.profile, "stage": self.stage, "step": "1/L, L = 1",
                "library": f"bm3d {version('bm3d')}"}

    def sigmas(self) -> list[float]:
        k = self.iterations
        r = (self.sigma_end / self.sigma_start) ** (1 / max(1, k - 1))
        return [self.sigma_start * r**i for i in range(k)]

    def _denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """BM3D on every (batch, channel) image; complex images as [real, imag] channels of one call."""
        stage = self._bm3d.BM3DStages.ALL_STAGES if self.stage == "all" else self._bm3d.BM3DStages.HARD_THRESHOLDING
        out = torch.empty_like(x)
        for b in range(x.shape[0]):
            for c in range(x.shape[1]):
                img = x[b, c].detach().cpu()
                arr = torch.stack([img.real, img.imag], -1) if img.is_complex() else img
                den = torch.from_numpy(self._bm3d.bm3d(arr.double().numpy(), sigma, profile=self.profile,
                                                       stage_arg=stage)).reshape(arr.shape)
                out[b, c] = (torch.complex(den[..., 0], den[..., 1]) if img.is_complex() else den).to(out)
        return out

    @torch.no_grad()
    def forward(self, y: torch.Tensor, operator: Any) -> torch.Tensor:
        _check_operator(operator)
        y = _check_y(y)
        from idm_imaging.solvers import measured_mean_shift

        dagger = _dagger(operator)
        x = dagger(y)
        if x.shape[1] == 1:
            x = measured_mean_shift(x, y, operator)
        for sigma in self.sigmas():
            x = self._denoise(x - operator.A_adjoint(operator.A(x) - y), sigma)
        return x - dagger(operator.A(x) - y)


# ----------------------------------------------------------------------------------------- diffusion prior
class DiffusionPrior(nn.Module):
    """A pretrained diffusers UNet (epsilon prediction) as a prior on grayscale images.

    ``eps(z, t)``: ``z`` real ``(B, 1, H, W)`` in the prior's range (``2 x - 1`` when ``signed_range``), ``t`` an
    int timestep -> noise estimate ``(B, 1, H, W)``. The image is reflect-padded to a multiple of the UNet's
    downsampling factor and cropped back; a ``UNet2DConditionModel`` gets zero ``encoder_hidden_states`` of shape
    ``(B, 1, cross_attention_dim)`` (unconditional, as in pre-training).

    Args:
        unet (`torch.nn.Module`):
            A diffusers ``UNet2DConditionModel`` or ``UNet2DModel``.
        scheduler_config (`dict`, *optional*):
            DDPM schedule kwargs (``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule``,
            ``steps_offset``); default: linear 1e-4..0.02 over 1000 steps.
        signed_range (`bool`, *optional*, defaults to `True`):
            The prior was trained on ``2 x - 1`` (True, the DDPM convention) or on ``x``.
        name (`str`, *optional*, defaults to `"prior"`):
            The prior's name in results.

    Example::

        >>> prior = DiffusionPrior.load("prior-gray")    # or DiffusionPrior.from_folder("runs/prior-gray/model")
        >>> prior.eps(torch.randn(1, 1, 64, 64), 500).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(self, unet: nn.Module, scheduler_config: dict | None = None, signed_range: bool = True,
                 name: str = "prior"):
        super().__init__()
        from diffusers import DDIMScheduler

        from idm_imaging.models import ImageAdapter

        if not isinstance(unet, nn.Module) or not hasattr(unet, "config"):
            raise TypeError(f"unet: expected a diffusers UNet, got {type(unet).__name__}")
        self.unet = unet.eval().requires_grad_(False)
        cfg = unet.config
        self.adapter = ImageAdapter(1, int(cfg.in_channels), int(cfg.out_channels))
        if self.adapter.conv_in is not None:
            raise ValueError(f"unet: in_channels={cfg.in_channels} is not a square number of pixel-unshuffled "
                             "grayscale channels (1, 4, 16); a learned adapter would be untrained")
        self.conditional = hasattr(cfg, "cross_attention_dim") and type(unet).__name__ == "UNet2DConditionModel"
        self.factor = self.adapter.r * 2 ** (len(cfg.block_out_channels) - 1)
        sched = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                     steps_offset=0)
        sched.update(scheduler_config or {})
        self.scheduler_config = sched
        self.scheduler = DDIMScheduler(**sched, set_alpha_to_one=True, clip_sample=False)
        self.signed_range = bool(signed_range)
        self.name = name

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, signed_range: bool | None = None, name: str | None = None):
        """Load ``folder`` (diffusers ``save_pretrained`` UNet; ``folder/unet`` too) and ``folder/scheduler``.

        ``signed_range``: None reads ``signed_range`` from ``folder/prior.json`` or a saved run config when
        present, else True (the prior stage's default).
        """
        from idm_imaging.models.idm import load_unet

        p = Path(folder)
        if not p.is_dir():
            raise ValueError(f"folder: {p} is not a folder")
        unet, sched = load_unet(p, name="folder")
        if signed_range is None:
            signed_range = _find_signed_range(p)
        return cls(unet, sched, signed_range=signed_range, name=name or p.name)

    @classmethod
    def load(cls, name_or_dir: str | os.PathLike, signed_range: bool | None = None) -> "DiffusionPrior":
        """An embedded name (``"prior-gray"``, see :mod:`idm_imaging.models.registry`) or a folder."""
        from idm_imaging.models import resolve_checkpoint

        return cls.from_folder(resolve_checkpoint(name_or_dir), signed_range=signed_range, name=str(name_or_dir))

    def to_prior(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1 if self.signed_range else x

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        return (z + 1) / 2 if self.signed_range else z

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.scheduler.alphas_cumprod

    def timesteps(self, steps: int) -> list[int]:
        """``steps`` DDIM timesteps, descending (diffusers ``DDIMScheduler.set_timesteps``, "leading" spacing,
        as the DDNM/DDIM reference code's ``range(0, 1000, 1000 // steps)``)."""
        self.scheduler.set_timesteps(steps)
        return [int(t) for t in self.scheduler.timesteps]

    def eps(self, z: torch.Tensor, t: int) -> torch.Tensor:
        h, w = z.shape[-2:]
        f = self.factor
        ph, pw = (-h) % f, (-w) % f
        zp = F.pad(z, (0, pw, 0, ph), mode="reflect") if (ph or pw) else z
        u = self.adapter.to_unet(zp)
        tt = torch.full((u.shape[0],), int(t), device=u.device, dtype=torch.long)
        if self.conditional:
            ctx = u.new_zeros(u.shape[0], 1, int(self.unet.config.cross_attention_dim))
            out = self.unet(u, tt, encoder_hidden_states=ctx).sample
        else:
            out = self.unet(u, tt).sample
        return self.adapter.from_unet(out)[..., :h, :w]


def _find_signed_range(folder: Path) -> bool:
    for cand in (folder / "prior.json", folder / "config_resolved.json", folder.parent / "config.json",
                 folder.parent / "config_resolved.json"):
        if cand.is_file():
            try:
                d = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            d = d.get("prior", d) if isinstance(d, dict) else {}
            if isinstance(d, dict) and isinstance(d.get("signed_range"), bool):
                return d["signed_range"]
    return True


def _check_prior(prior: Any) -> DiffusionPrior:
    if not isinstance(prior, DiffusionPrior):
        raise TypeError(f"prior: expected a DiffusionPrior, got {type(prior).__name__}")
    return prior


def _generator(seed: Any) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(int(seed))


def _start_shape(y: torch.Tensor, operator: Any) -> torch.Size:
    x = _dagger(operator)(y)
    return x.shape


class _PriorSampler(nn.Module):
    """What DDNM and DPS share: the checked prior, ``steps`` and ``seed``, and the start of sampling."""

    def __init__(self, prior: DiffusionPrior, steps: int, seed: int):
        super().__init__()
        self.prior = _check_prior(prior)
        self.steps = _positive(steps, "steps", integer=True)
        self.seed = seed
        _generator(seed)

    def _start(self, y: torch.Tensor, operator: Any) -> tuple[torch.Tensor, torch.Generator, torch.Tensor, list]:
        """Checked ``y``, the CPU noise generator, ``z_T ~ N(0, I)`` (prior's device and dtype, shape of
        ``A^+ y``) and the DDIM steps as ``(t, a_t, a_next)`` (``alphas_cumprod``; ``a_next = 1`` after the last)."""
        _check_operator(operator)
        y = _check_y(y)
        p = next(self.prior.unet.parameters())
        gen = _generator(self.seed)
        z = torch.randn(_start_shape(y, operator), generator=gen).to(p.device, p.dtype)
        ac = self.prior.alphas_cumprod.to(torch.float64)
        ts = self.prior.timesteps(self.steps)
        return y, gen, z, [(t, float(ac[t]), float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0)
                           for i, t in enumerate(ts)]


class DDNM(_PriorSampler):
    r"""DDNM (Wang, Yu, Zhang, ICLR 2023): DDIM sampling with the range-null-space projection, noise-free case.

    For timesteps ``t_1 > ... > t_S`` (``steps`` DDIM steps, default 100 as published) from ``z_T ~ N(0, I)``::

        eps = prior(z_t, t);  z0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)
        x0 = img(z0);  x0 <- x0 - A^+(A x0 - y);  z0 = prior_range(x0)          (range-null-space step)
        z_next = sqrt(a_next) z0 + sqrt(1 - a_next) (eta n + sqrt(1 - eta^2) eps),  n ~ N(0, I)

    with ``a_next = 1`` after the last step, so the output is the last projected ``x0`` (exactly consistent with
    ``y``). ``eta = 0.85``, the DDNM reference code's default. The update is the reference code's; the schedule is
    diffusers' ``DDIMScheduler`` ("leading" spacing, ``range(0, 1000, 1000 // steps)``). For a complex (MRI)
    operator the projection keeps the real part (real prior, real targets).

    Args:
        prior (`DiffusionPrior`):
            The pretrained prior.
        steps (`int`, *optional*, defaults to 100):
            DDIM steps.
        eta (`float`, *optional*, defaults to 0.85):
            DDIM stochasticity.
        seed (`int`, *optional*, defaults to 0):
            Start / noise seed (a CPU generator, so the same on any device).

    Example::

        >>> from idm_imaging.operators import BlockCS
        >>> op = BlockCS(0.25, block_size=16); x = torch.rand(1, 1, 64, 64)
        >>> DDNM(DiffusionPrior.load("prior-gray"), steps=2)(op.A(x), op).shape   # the published protocol: 100 steps
        torch.Size([1, 1, 64, 64])
    """

    name = "DDNM"

    def __init__(self, prior: DiffusionPrior, steps: int = 100, eta: float = 0.85, seed: int = 0):
        super().__init__(prior, steps, seed)
        self.eta = _positive(eta, "eta", allow_zero=True)
        if self.eta > 1:
            raise ValueError(f"eta: must be in [0, 1], got {eta}")

    def settings(self) -> dict:
        return {"steps": self.steps, "eta": self.eta, "sampler": "DDIM (DDNM reference update)", "seed": self.seed,
                "prior": self.prior.name, "schedule": self.prior.scheduler_config}

    @torch.no_grad()
    def forward(self, y: torch.Tensor, operator: Any) -> torch.Tensor:
        y, gen, z, steps = self._start(y, operator)
        pr, x0 = self.prior, None
        for t, a_t, a_n in steps:
            eps = pr.eps(z, t)
            z0 = (z - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            x0 = _real_project(pr.to_image(z0), y, operator)
            z0 = pr.to_prior(x0)
            noise = torch.randn(z.shape, generator=gen).to(z)
            z = math.sqrt(a_n) * z0 + math.sqrt(1 - a_n) * (self.eta * noise + math.sqrt(1 - self.eta**2) * eps)
        return x0


class DPS(_PriorSampler):
    r"""DPS (Chung, Kim, McCann, Klasky, Ye, ICLR 2023): ancestral sampling plus a likelihood gradient step.

    For ``steps`` timesteps (100 here; the paper uses 1000 DDPM steps) from ``z_T ~ N(0, I)``::

        eps = prior(z_t, t);  z0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)
        z' = DDIM step with eta = 1 (= DDPM ancestral sampling on the sub-sampled schedule)
        z_next = z' - zeta grad_{z_t} || y_p - A z0 ||_2

    with the residual measured in the prior's range (``y_p - A z0 = 2 (y - A x0)`` for a signed prior, as the
    reference code measures in [-1, 1]) and the non-squared norm, i.e. ``zeta_t = zeta / ||y - A x0||`` on the
    squared norm. ``zeta = 3.0``: tuned on Train400 crops over 1 / 3 / 10 / 30 (the paper's setting for
    super-resolution and inpainting, 1.0, is about 4 dB lower on block CS here; ``benchmarks/results/tuning-dps.json``,
    ``python -m idm_imaging.benchmark.tune dps``). Gradients flow through the UNet (autograd). Output: the last
    ``x0``.

    Args:
        prior (`DiffusionPrior`):
            The pretrained prior.
        steps (`int`, *optional*, defaults to 100):
            Sampling steps.
        zeta (`float`, *optional*, defaults to 3.0):
            Likelihood step size.
        seed (`int`, *optional*, defaults to 0):
            Start / noise seed.

    Example::

        >>> from idm_imaging.operators import BlockCS
        >>> op = BlockCS(0.25, block_size=16); x = torch.rand(1, 1, 64, 64)
        >>> DPS(DiffusionPrior.load("prior-gray"), steps=2)(op.A(x), op).shape    # the published protocol: 100 steps
        torch.Size([1, 1, 64, 64])
    """

    name = "DPS"

    def __init__(self, prior: DiffusionPrior, steps: int = 100, zeta: float = 3.0, seed: int = 0):
        super().__init__(prior, steps, seed)
        self.zeta = _positive(zeta, "zeta", allow_zero=True)

    def settings(self) -> dict:
        return {"steps": self.steps, "zeta": self.zeta, "sampler": "DDIM eta=1 (ancestral) + DPS gradient",
                "norm": "||y - A x0||_2 (not squared), measured in the prior's range", "seed": self.seed,
                "prior": self.prior.name, "schedule": self.prior.scheduler_config}

    def forward(self, y: torch.Tensor, operator: Any) -> torch.Tensor:
        y, gen, z, steps = self._start(y, operator)
        pr, x0 = self.prior, None
        scale = 2.0 if pr.signed_range else 1.0
        for t, a_t, a_n in steps:
            with torch.enable_grad():
                z_in = z.detach().requires_grad_(True)
                eps = pr.eps(z_in, t)
                z0 = (z_in - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
                x0 = pr.to_image(z0)
                norm = torch.linalg.vector_norm(scale * (y - operator.A(x0)))
                (grad,) = torch.autograd.grad(norm, z_in)
            eps, z0, x0 = eps.detach(), z0.detach(), x0.detach()
            sigma = math.sqrt((1 - a_n) / (1 - a_t)) * math.sqrt(max(0.0, 1 - a_t / a_n))  # DDIM eta = 1
            noise = torch.randn(z.shape, generator=gen).to(z)
            z = (math.sqrt(a_n) * z0 + math.sqrt(max(0.0, 1 - a_n - sigma**2)) * eps + sigma * noise
                 - self.zeta * grad)
        return x0


# ----------------------------------------------------------------------------------------- VarNet (MONAI)
class _UnitSensitivity(nn.Module):
    """Single-coil 'sensitivity map': 1 + 0i everywhere (``(B, 1, H, W, 2)``), so coil reduce/expand are the
    identity and VarNet's output is the magnitude of its k-space estimate."""

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(masked_kspace[..., :1])
        return torch.cat([ones, torch.zeros_like(ones)], dim=-1)


class VarNet(nn.Module):
    """MONAI's ``VariationalNetworkModel`` (e2e-VarNet, Sriram et al. 2020) in a single-coil setting.

    Sensitivity model: :class:`_UnitSensitivity` (one coil, no map to learn); refinement model: MONAI's
    ``ComplexUnet`` with ``features``; ``num_cascades`` VarNet blocks (soft data consistency + refinement).
    Defaults: fastMRI's e2e-VarNet uses 12 cascades and 18-channel U-Nets; the benchmark uses 8 cascades of
    ``(16, 16, 32, 64, 128, 16)`` so that training fits the IDM model's budget on the benchmark hardware.

    Call: ``x_hat = model(y, operator)``: ``y`` complex ``(B, 1, H, W)`` k-space of a ``SingleCoilFourier``
    (``operator.mask`` ``(H, W)`` bool) -> real magnitude ``(B, 1, H, W)``.

    Example::

        >>> from idm_imaging.operators import SingleCoilFourier
        >>> op = SingleCoilFourier.from_mask_params("random", (64, 64), acceleration=4)
        >>> VarNet(num_cascades=2, features=(8, 8, 16, 16, 32, 8))(op.A(torch.rand(1, 1, 64, 64)), op).shape
        torch.Size([1, 1, 64, 64])
    """

    name = "VarNet"

    def __init__(self, num_cascades: int = 8, features=(16, 16, 32, 64, 128, 16)):
        super().__init__()
        from monai.apps.reconstruction.networks.nets.complex_unet import ComplexUnet
        from monai.apps.reconstruction.networks.nets.varnet import VariationalNetworkModel

        self.num_cascades = _positive(num_cascades, "num_cascades", integer=True)
        if not isinstance(features, (tuple, list)) or len(features) != 6:
            raise ValueError(f"features: expected 6 ints (MONAI BasicUNet), got {features!r}")
        self.features = tuple(int(f) for f in features)
        self.net = VariationalNetworkModel(_UnitSensitivity(), ComplexUnet(features=self.features),
                                           num_cascades=self.num_cascades)

    def settings(self) -> dict:
        return {"num_cascades": self.num_cascades, "features": list(self.features),
                "sensitivity": "single coil, unit map"}

    def forward(self, y: torch.Tensor, operator: Any) -> torch.Tensor:
        y = _check_y(y)
        mask = getattr(operator, "mask", None)
        if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
            raise TypeError("operator: VarNet needs a SingleCoilFourier-like operator with an (H, W) mask")
        if not y.is_complex() or y.ndim != 4 or y.shape[1] != 1 or tuple(y.shape[-2:]) != tuple(mask.shape):
            raise ValueError(f"y: expected complex (B, 1, {mask.shape[0]}, {mask.shape[1]}) k-space, "
                             f"got {y.dtype} {tuple(y.shape)}")
        p = next(self.parameters())
        k = torch.view_as_real(y.to(p.device, torch.complex64)).to(p.dtype)  # (B, 1, H, W, 2)
        m = mask.to(p.device).view(1, 1, *mask.shape, 1)
        return self.net(k, m).unsqueeze(1)


def train_varnet(model: VarNet, train: list[str], acceleration: float, *, time_budget_s: float, enabled: bool = True,
                 max_steps: int | None = None, patch_size: int = 128, batch_size: int = 4, lr: float = 1e-3,
                 center_fraction: float | None = None, device: str | torch.device = "cpu", seed: int = 0,
                 log: Callable[[str], None] | None = None) -> dict:
    """Train ``model`` (L1 on the magnitude, Adam) on random patches with a fresh random 1-D mask per step.

    Same data and protocol as the IDM MRI models: patches of ``train`` (glob patterns, read by
    :class:`idm_imaging.training.data.PatchDataset` in complex mode, magnitude images as real-valued complex),
    each scaled by the file's maximum magnitude, ``make_mask("random", (P, P), acceleration, center_fraction,
    seed=step)``. Stops at ``time_budget_s`` seconds (wall clock) or ``max_steps``.

    Args:
        model (`VarNet`):
            The network to train, in place.
        train (`list[str]`):
            Glob patterns of the training files (``.npy`` complex slices or images).
        acceleration (`float`):
            Acceleration of the training masks.
        time_budget_s (`float`):
            Wall-clock seconds of training (>= 0).
        enabled (`bool`, *optional*, defaults to `True`):
            False skips training (returns ``{"steps": 0, ...}``): the flag the benchmark passes.
        max_steps (`int`, *optional*):
            A step limit besides the time budget.
        patch_size (`int`, *optional*, defaults to 128):
            Side of the square training patches.
        batch_size (`int`, *optional*, defaults to 4):
            Patches per step.
        lr (`float`, *optional*, defaults to 1e-3):
            Adam learning rate.
        center_fraction (`float`, *optional*):
            Fully sampled centre fraction of the masks (default: ``make_mask``'s for the acceleration).
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`):
            Where to train.
        seed (`int`, *optional*, defaults to 0):
            Seed of the patches and masks.
        log (`Callable[[str], None]`, *optional*):
            Progress printer.

    Returns:
        `dict`: ``{"steps", "seconds", "first_loss", "last_loss", "time_budget_s", ...}``.
    """
    from idm_imaging.operators import SingleCoilFourier, make_mask
    from idm_imaging.training.data import PatchDataset

    if not isinstance(model, VarNet):
        raise TypeError(f"model: expected a VarNet, got {type(model).__name__}")
    _positive(time_budget_s, "time_budget_s", allow_zero=True)
    info = {"steps": 0, "seconds": 0.0, "first_loss": None, "last_loss": None, "time_budget_s": float(time_budget_s),
            "patch_size": patch_size, "batch_size": batch_size, "lr": lr, "loss": "L1 on magnitude",
            "optimizer": "Adam", "train": list(train), "acceleration": float(acceleration)}
    if not enabled or time_budget_s == 0:
        return info
    if not isinstance(train, (list, tuple)) or not train:
        raise ValueError("train: expected a non-empty list of glob patterns")
    ds = PatchDataset(list(train), patch_size, seed=seed, augment=True, complex_mode="complex")
    if len(ds) == 0:
        raise ValueError(f"train: no files matched {train}")
    device = torch.device(device)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    step, epoch = 0, 0
    while True:
        idx = torch.randint(0, len(ds), (batch_size,), generator=rng).tolist()
        x = torch.stack([ds[(i, epoch)] for i in idx]).to(device)
        epoch += 1
        op = SingleCoilFourier(make_mask("random", (patch_size, patch_size), acceleration, center_fraction,
                                         seed=seed * 100003 + step)).to(device)
        loss = F.l1_loss(model(op.A(x), op), x.abs())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        lv = float(loss.detach())
        if info["first_loss"] is None:
            info["first_loss"] = lv
        info["last_loss"] = lv
        if log is not None and (step == 1 or step % 50 == 0):
            log(f"varnet {acceleration:g}x step {step} loss {lv:.4f} ({time.perf_counter() - t0:.0f} s)")
        if time.perf_counter() - t0 >= time_budget_s or (max_steps is not None and step >= max_steps):
            break
    model.eval()
    info.update(steps=step, seconds=round(time.perf_counter() - t0, 2))
    return info
