"""IDM: the T-step sampler turned into one reversible reconstruction network (level 1).

State: real-channel images ``(B, c, H, W)`` (``c = 1`` grayscale, ``c = 2`` complex as real/imag).
With ``a_1..a_T`` the learned cumulative alphas (``a_t = sigmoid(logit_t)`` so they stay in (0, 1),
initialised from the prior's DDPM/DDIM schedule at T evenly spaced timesteps) and ``a_0 = 1``::

    x_T = sqrt(a_T) x_s,       (x1, x2) = (x_T, s x_T)
    x_s = A^+ y (start "pinv", the paper's) or K iterations of TV-FISTA from the measured mean (start "tv")
    step t = T..1 (a coupling y1 = (1 - v_t) F_t(x1) + v_t x2, y2 = x1) with
        F_t(x): eps = UNet_t(x); x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t);
                x0 = x0 - A^+(A x0 - y)   (range-null-space projection, on the complex image for MRI)
                return sqrt(a_{t-1}) x0 + sqrt(1 - a_{t-1}) eps     (DDIM, eta = 0)
    x_hat = y1 + m y2          (m learned, init 0)

``UNet_t`` is the reversible UNet (shared backbone, per-step injectors).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..operators.dihedral import DIHEDRAL, Dihedral
from ..solvers import measured_mean_shift, tv_fista
from .injector import StepContext
from .registry import resolve_checkpoint
from .reversible import Coupling, ReversibleSequence
from .unet import SUPPORTED_BACKBONES, ReversibleUNet, build_diffusers_unet, clean_config

__all__ = ["IDM", "ImageAdapter", "RunContext", "SamplingStep", "load_unet", "measured_mean_shift", "read_schedule"]

TASKS = ("cs", "mri")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
_DEFAULT_SCHEDULES = {
    "UNet2DConditionModel": dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                 beta_schedule="scaled_linear", steps_offset=1),
    "UNet2DModel": dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                        steps_offset=0),
}


def _is_square(n: int) -> bool:
    r = math.isqrt(n)
    return r * r == n


class ImageAdapter(nn.Module):
    """Image channels ``c`` <-> UNet channels.

    When ``in_channels = c r^2`` and ``out_channels = c r^2``: pixel unshuffle / shuffle by ``r`` (SD's 4
    channels and a grayscale image: ``r = 2``), no parameters. Otherwise (counts that do not factor): a
    learned 1x1 conv ``c -> in_channels`` in and ``out_channels -> c`` out, ``r = 1``.
    ``to_unet``: (B, c, H, W) -> (B, in, H/r, W/r); ``from_unet``: (B, out, H/r, W/r) -> (B, c, H, W).
    """

    def __init__(self, image_channels: int, in_channels: int, out_channels: int):
        super().__init__()
        c = image_channels
        if in_channels % c == 0 and in_channels == out_channels and _is_square(in_channels // c):
            self.r = math.isqrt(in_channels // c)
            self.conv_in = self.conv_out = None
        else:
            self.r = 1
            self.conv_in = nn.Conv2d(c, in_channels, 1)
            self.conv_out = nn.Conv2d(out_channels, c, 1)

    def to_unet(self, x):
        if self.conv_in is not None:
            return self.conv_in(x)
        return F.pixel_unshuffle(x, self.r) if self.r > 1 else x

    def from_unet(self, h):
        if self.conv_out is not None:
            return self.conv_out(h)
        return F.pixel_shuffle(h, self.r) if self.r > 1 else h


def _schedule_init(cfg: dict, T: int, warm: bool = False) -> torch.Tensor:
    """Cumulative alphas a_1..a_T (ascending t) of a DDIM schedule at T evenly spaced timesteps; ``warm``: spaced
    over the first tenth of the schedule only, the low noise levels where a sampler that starts from a good
    estimate (the "tv" start) begins, as SDEdit-style warm starts do (at the full range the couplings would mix
    states of very different scales and lose the start's detail)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**cfg)
    if warm:
        last = sched.config.num_train_timesteps // 10
        ts = [round(last * k / T) for k in range(T)]
    else:
        sched.set_timesteps(T)
        ts = sorted(int(t) for t in sched.timesteps)
    return sched.alphas_cumprod[ts].to(torch.float64)


def _reflect_pad(x: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    return F.pad(x, (0, pad[1], 0, pad[0]), mode="reflect") if pad != (0, 0) else x


@dataclass(frozen=True, eq=False)
class RunContext:
    """What every sampling step of one call reads (built by ``IDM._prepare``; handed to the steps unchanged).

    Args:
        y (`torch.Tensor`):
            The measurements on the model's device, in the shape ``operator.A`` gives: real in the model's dtype
            (task ``"cs"``) or complex64 / complex128 (task ``"mri"``).
        operator (`Any`):
            The operator the steps project with; for block CS of a size that is no multiple of the block, the
            uncropped operator of the zero-padded grid.
        measured_operator (`Any`):
            The operator as given (for the measured-mean shift of the output).
        size (`tuple[int, int]`):
            ``(H, W)`` of ``A_dagger(y)``, the image the steps reconstruct.
        pad (`tuple[int, int]`):
            ``(bottom, right)`` reflect padding that makes ``H`` and ``W`` multiples of the backbone's
            downsampling.
        aty_padded (`torch.Tensor`):
            ``A_dagger(y)`` as real channels, padded: ``(B, c, H + pad[0], W + pad[1])`` in the model's real dtype
            (``c = 2`` for complex images as real/imaginary channels, else 1).
        out_size (`tuple[int, int]`, *optional*):
            ``(H, W)`` the output is cropped to (the block-CS case above), else None.
    """

    y: torch.Tensor
    operator: Any
    measured_operator: Any
    size: tuple[int, int]
    pad: tuple[int, int]
    aty_padded: torch.Tensor
    out_size: tuple[int, int] | None = None

    def pad_image(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, c, H, W) -> (B, c, H + pad[0], W + pad[1])`` (reflect)."""
        return _reflect_pad(x, self.pad)

    def crop_image(self, x: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`pad_image`."""
        return x[..., : self.size[0], : self.size[1]] if self.pad != (0, 0) else x


class SamplingStep(nn.Module):
    """``F`` of one sampling step: the UNet's noise estimate, the DDIM update and the range-null-space
    projection (see the module docstring); ``(B, c, H, W) -> (B, c, H, W)`` real channels.

    All steps share the model's backbone, adapter and alphas: the step holds the model by reference (not as a
    submodule, so the state dict keeps one copy and no per-step keys) and :meth:`parameters_used` lists what
    ``F`` reads, for the reversible backward (:class:`~.reversible.Coupling`'s ``params``).

    Args:
        model (`IDM`):
            The :class:`IDM` the step belongs to.
        k (`int`):
            Index of the step in the sampler (``k = 0`` is ``t = T``).
    """

    def __init__(self, model: IDM, k: int):
        super().__init__()
        object.__setattr__(self, "model", model)  # a plain reference: registered, the model would contain itself
        self.k = int(k)

    def extra_repr(self) -> str:
        return f"k={self.k}"

    def parameters_used(self) -> list[torch.Tensor]:
        """The tensors requiring grad that ``F`` depends on: the backbone without the other steps' injector
        convs, the adapter and the alpha logits."""
        m = self.model
        params = [*m.unet.step_parameters(self.k), *m.adapter.parameters(), m.alpha_logits]
        return [p for p in params if p.requires_grad]

    def _project(self, x: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """Range-null-space step ``x - A^+(A x - y)`` on the (complex) image; autocast off for accuracy."""
        m = self.model
        with torch.autocast(x.device.type, enabled=False):
            z = m._to_complex(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x)
            op = ctx.operator
            return m._to_real(z - op.A_dagger(op.A(z) - ctx.y))

    def _inject_project(self, img: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """A^+ A img for the injectors, on the padded real-channel image."""
        m = self.model
        with torch.autocast(img.device.type, enabled=False):
            z = m._to_complex(ctx.crop_image(img).float())
            op = ctx.operator
            return ctx.pad_image(m._to_real(op.A_dagger(op.A(z))))

    def forward(self, x: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        m, k = self.model, self.k
        a = m.alphas()
        t = m.T - 1 - k
        a_t = a[t]

        def project(im):
            return self._inject_project(im, ctx)

        if m.complex_as_batch:  # (B, 2, H, W) <-> (2B, 1, H, W): re/im as two grayscale images
            fold = lambda v: v.reshape(-1, 1, *v.shape[-2:])  # noqa: E731
            unfold = lambda v: v.reshape(-1, 2, *v.shape[-2:])  # noqa: E731
            sctx = StepContext(step=k, project=lambda im: fold(project(unfold(im))), aty=fold(ctx.aty_padded))
            h = m.unet(m.adapter.to_unet(fold(ctx.pad_image(x))), sctx)
            eps = ctx.crop_image(unfold(m.adapter.from_unet(h)))
        else:
            sctx = StepContext(step=k, project=project, aty=ctx.aty_padded)
            eps = ctx.crop_image(m.adapter.from_unet(m.unet(m.adapter.to_unet(ctx.pad_image(x)), sctx)))
        if m.config.prediction == "residual":  # the output r corrects the clean estimate directly
            x0 = x / a_t.sqrt() + eps
            eps = -(a_t / (1 - a_t)).sqrt() * eps
        else:
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if m.projection:
            x0 = self._project(x0, ctx)
        if t == 0:  # a_0 = 1: sqrt(a_0) x0 + sqrt(1 - a_0) eps is x0 itself (saves a fill and five kernels)
            return x0
        a_prev = a[t - 1]
        if x0.dtype == eps.dtype:  # one fused multiply-add
            return torch.addcmul(x0 * a_prev.sqrt(), eps, (1 - a_prev).sqrt())
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


class IDM(ModelMixin, ConfigMixin):
    """Invertible Diffusion Model for compressed-sensing / MRI reconstruction.

    Args:
        backbone_type (`str`, *optional*, defaults to `"UNet2DConditionModel"`):
            ``"UNet2DConditionModel"`` (SD 1.x layout) or ``"UNet2DModel"``.
        backbone_config (`dict`, *optional*):
            The diffusers config dict of the backbone (default: a tiny SD-style config).
        T (`int`, *optional*, defaults to 3):
            Number of sampling steps (>= 1).
        task (`str`, *optional*, defaults to `"cs"`):
            ``"cs"`` (real grayscale images, real operator) or ``"mri"`` (complex images, complex operator).
        operator_config (`dict`, *optional*):
            The operator settings the model was trained for (informational, from ``operator.get_config()``).
        reversible (`bool`, *optional*, defaults to `True`):
            Memory-saving reversible backward (True) or plain autograd (False); same parameters.
        schedule (`dict`, *optional*):
            DDIM scheduler kwargs of the prior used to initialise the learned alphas.
        complex_as_batch (`bool`, *optional*, defaults to `False`):
            Task ``"mri"`` only. True: the real and imaginary parts go through the UNet as two grayscale images of
            the batch, so a grayscale prior sees the input it was trained on (pixel unshuffle, half resolution);
            the projection and the injectors' ``A^+ A`` still act on the complex image. False: the two parts are
            the image's two channels, mapped to the UNet's channels by learned 1x1 convs at full resolution (4x
            the UNet cost of a grayscale image).
        measured_mean (`bool`, *optional*, defaults to `True`):
            Move the output along the part of the constant image the measurements miss until its mean is the
            least-squares estimate from ``y`` (:func:`measured_mean_shift`; not in the paper). Measurements stay
            consistent. It removes the brightness bias a model has with matrices that keep more or less of the
            image mean than those it was trained on. A no-op for Cartesian MRI, whose k-space centre measures the
            mean exactly.
        start (`str`, *optional*, defaults to `"pinv"`):
            The estimate the sampler starts from: ``"pinv"`` (``A^+ y``, the paper's) or ``"tv"``
            (:func:`~idm_imaging.solvers.tv_fista` with ``start_iterations`` iterations and TV weight ``start_lam``
            from the measured mean; not in the paper): the network then refines a classical estimate instead of
            filling the null space from ``A^+ y`` alone.
        start_iterations (`int`, *optional*, defaults to 60):
            TV-FISTA iterations of the ``"tv"`` start.
        start_lam (`float`, *optional*, defaults to 0.001):
            TV weight of the ``"tv"`` start (images in [0, 1]).
        prediction (`str`, *optional*, defaults to `"epsilon"`):
            What the UNet's output means. ``"epsilon"`` (the paper's, and what a pretrained prior predicts): the
            noise, ``x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t)``. ``"residual"`` (for randomly initialised
            backbones; not in the paper): a correction of the clean estimate, ``x0 = x / sqrt(a_t) + r``, with
            ``eps = -sqrt(a_t) r / sqrt(1 - a_t)`` for the DDIM update (at the low noise levels a warm start uses,
            an ``eps`` output moves the image far less than ``r`` does).
        start_inner (`int`, *optional*, defaults to 5):
            Chambolle iterations per TV prox of the ``"tv"`` start (warm-started across iterations, so a few
            suffice).
        ensemble (`int` or `str`, *optional*, defaults to 1):
            In eval mode, the mean of this many reconstructions (1, 2, 4 or 8): each of the flipped / rotated
            problem ``(y, A g^{-1})`` (:class:`~idm_imaging.operators.Dihedral`), start included, mapped back by
            ``g^{-1}``. Each costs one reconstruction (less with ``ensemble_start_iterations``). ``"auto"``: 2,
            except in float32 on a CPU (no bfloat16 autocast), where a second reconstruction would make the model
            slower than the TV-FISTA it starts from: 1 there (:meth:`ensemble_size`). Training
            (``model.train()``) always runs one. Override when loading: ``IDM.from_pretrained("cs", ensemble=8)``.
        ensemble_start_iterations (`int`, *optional*):
            With ``start="tv"`` and ``ensemble > 1``: each further reconstruction's TV start runs this many
            TV-FISTA iterations from the first one's TV estimate (flipped / rotated alike) instead of
            ``start_iterations`` from the measured mean: warm, a quarter of the iterations gives the same mean in
            less time. None: every start from scratch.

    Call: ``x_hat = model(y, operator)``; ``y`` as produced by ``operator.A`` (batched); returns real
    ``(B, 1, H, W)`` for ``cs`` and complex ``(B, 1, H, W)`` for ``mri``, on the model's device.

    Example:
        >>> import torch
        >>> from idm_imaging.operators import BlockCS
        >>> model = IDM(T=2)                      # tiny SD-style backbone, random weights
        >>> op = BlockCS(0.25, block_size=16)
        >>> x = torch.rand(1, 1, 32, 32)
        >>> with torch.no_grad():
        ...     x_hat = model(op.A(x), op)
        >>> x_hat.shape
        torch.Size([1, 1, 32, 32])
    """

    config_name = "config.json"
    #: autocast (bf16) may wrap a call: the data-consistency steps and the TV start run in float32 inside it
    bf16_autocast_safe = True

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' split of a config into ``__init__`` arguments, after dropping ``image_channels``: configs saved
        before that argument was removed carry ``"image_channels": 1``, the only value it took."""
        config_dict = dict(config_dict)
        legacy = config_dict.pop("image_channels", 1)
        if legacy != 1:
            raise ValueError(f"image_channels: only single-channel (grayscale or complex) images are supported, "
                             f"got {legacy!r}")
        return super().extract_init_dict(config_dict, **kwargs)

    @register_to_config
    def __init__(
        self,
        backbone_type: str = "UNet2DConditionModel",
        backbone_config: dict | None = None,
        T: int = 3,
        task: str = "cs",
        operator_config: dict | None = None,
        reversible: bool = True,
        schedule: dict | None = None,
        complex_as_batch: bool = False,
        measured_mean: bool = True,
        start: str = "pinv",
        start_iterations: int = 60,
        start_lam: float = 0.001,
        prediction: str = "epsilon",
        start_inner: int = 5,
        ensemble: int | str = 1,
        ensemble_start_iterations: int | None = None,
    ):
        super().__init__()
        if backbone_type not in SUPPORTED_BACKBONES:
            raise ValueError(f"backbone_type: {backbone_type!r} is not supported; supported: {list(SUPPORTED_BACKBONES)}")
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T: number of sampling steps must be an int >= 1, got {T!r}")
        if task not in TASKS:
            raise ValueError(f"task: must be one of {list(TASKS)}, got {task!r}")
        if start not in ("pinv", "tv"):
            raise ValueError(f"start: must be 'pinv' or 'tv', got {start!r}")
        if isinstance(start_iterations, bool) or not isinstance(start_iterations, int) or not 1 <= start_iterations <= 1000:
            raise ValueError(f"start_iterations: an int in [1, 1000], got {start_iterations!r}")
        if isinstance(start_inner, bool) or not isinstance(start_inner, int) or not 1 <= start_inner <= 100:
            raise ValueError(f"start_inner: an int in [1, 100], got {start_inner!r}")
        if not isinstance(start_lam, (int, float)) or not start_lam > 0:
            raise ValueError(f"start_lam: a number > 0, got {start_lam!r}")
        if prediction not in ("epsilon", "residual"):
            raise ValueError(f"prediction: must be 'epsilon' or 'residual', got {prediction!r}")
        if ensemble != "auto" and (type(ensemble) is not int or ensemble not in (1, 2, 4, 8)):
            raise ValueError(f"ensemble: 1, 2, 4 or 8 reconstructions to average, or 'auto', got {ensemble!r}")
        k = ensemble_start_iterations
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000):
            raise ValueError(f"ensemble_start_iterations: an int in [1, 1000] or None, got {k!r}")
        if complex_as_batch and task != "mri":
            raise ValueError("complex_as_batch: only for task 'mri' (complex images)")
        if backbone_config is None:
            backbone_config = tiny_backbone_config(backbone_type)
        if not isinstance(backbone_config, dict):
            raise TypeError(f"backbone_config: expected a dict, got {type(backbone_config).__name__}")
        backbone_config = clean_config(backbone_config)
        schedule = dict(schedule or _DEFAULT_SCHEDULES[backbone_type])
        self.register_to_config(backbone_config=backbone_config, schedule=schedule)  # record the defaults used
        self.complex_as_batch = bool(complex_as_batch)
        self._build(backbone_type, backbone_config, T, task, schedule, unet=None)
        self.reversible = reversible
        #: range-null-space projection on (True) or off (ablation / checks only; not saved)
        self.projection = True

    def _build(self, backbone_type, backbone_config, T, task, schedule, unet):
        self.T, self.task, self.is_complex = T, task, task == "mri"
        c = 2 if self.is_complex and not self.complex_as_batch else 1  # image channels the UNet sees
        if unet is None:
            unet = build_diffusers_unet(backbone_type, backbone_config)
        self.adapter = ImageAdapter(c, int(unet.config.in_channels), int(unet.config.out_channels))
        self.unet = ReversibleUNet(backbone_type, backbone_config, T, self.adapter.r, c, unet=unet)
        a = _schedule_init(schedule, T, warm=self.config.start == "tv")
        self.alpha_logits = nn.Parameter(torch.log(a / (1 - a)).float())  # a_t = sigmoid(logit), t = 1..T
        self.input_scale = nn.Parameter(torch.tensor(1.0))  # s: x2 = s x1 at the start
        self.merge_scale = nn.Parameter(torch.tensor(0.0))  # m: output y1 + m y2
        steps = [SamplingStep(self, k) for k in range(T)]
        self.sampler = ReversibleSequence([Coupling(s, params=s.parameters_used) for s in steps])

    # ------------------------------------------------------------------ modes
    @property
    def reversible(self) -> bool:
        return self.sampler.reversible

    @reversible.setter
    def reversible(self, value: bool) -> None:
        self.sampler.reversible = bool(value)
        self.unet.reversible = bool(value)

    def alphas(self) -> torch.Tensor:
        """Learned cumulative alphas ``a_1..a_T`` (float, in (0, 1))."""
        return torch.sigmoid(self.alpha_logits)

    # ------------------------------------------------------------------ pieces
    def _to_complex(self, x):
        return torch.complex(x[:, :1], x[:, 1:2]) if self.is_complex else x

    def _to_real(self, z):
        return torch.cat([z.real, z.imag], dim=1) if self.is_complex else z

    # ------------------------------------------------------------------ call
    def forward(self, y: torch.Tensor, operator: Any) -> torch.Tensor:
        """Reconstruct ``x_hat`` (B, 1, H, W) from measurements ``y`` of ``operator``."""
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y: expected a torch.Tensor, got {type(y).__name__}")
        if any(c.__module__.split(".")[0] == "deepinv" for c in type(operator).__mro__):
            # a deepinv physics: converted to our operator, y and the output in deepinv's layout
            from idm_imaging.interop.deepinv import IDMReconstructor

            return IDMReconstructor(self)(y, operator)
        for name in ("A", "A_dagger"):
            if not callable(getattr(operator, name, None)):
                raise TypeError(f"operator: needs callable {name}(); got {type(operator).__name__}")
        op_complex = bool(getattr(operator, "is_complex", False))
        if op_complex != self.is_complex:
            raise ValueError(f"operator: a {'complex' if op_complex else 'real'} operator does not fit a "
                             f"{self.task!r} model (task 'mri' needs a complex operator, 'cs' a real one)")
        if y.is_complex() != self.is_complex:
            raise ValueError(f"y: expected {'complex' if self.is_complex else 'real'} measurements for task {self.task!r}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError("y: measurements contain NaN or Inf")
        self._warn_if_untrained_setting(operator)
        x, ctx = self._prepare(y, operator)
        dev = y.device.type
        bf16 = torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.bfloat16
        n = 1 if self.training else self.ensemble_size(y.device, bf16)
        out = self._sample(x, ctx)
        # the first start without its sqrt(a_T): the TV estimate the further members' starts continue
        tv = (x / self.alphas()[-1].sqrt() if n > 1 and self.config.start == "tv"
              and self.config.ensemble_start_iterations is not None else None)
        for flip, rot in DIHEDRAL[1:n]:
            g = Dihedral(ctx.operator, flip, rot)
            g_ctx = self._context(ctx.y, g)
            x_g = self._start(g_ctx, None if tv is None else self._to_complex(g.transform(tv)))
            out = out + g.inverse(self._sample(x_g, g_ctx))
        out = out / n if n > 1 else out
        if ctx.out_size is not None:
            out = out[..., : ctx.out_size[0], : ctx.out_size[1]]
        out = self._to_complex(out)
        if self.config.measured_mean:
            out = measured_mean_shift(out, ctx.y, ctx.measured_operator)
        return out

    def ensemble_size(self, device: str | torch.device, bf16: bool) -> int:
        """The number of reconstructions an eval-mode call averages on ``device`` (``bf16``: under bfloat16
        autocast): ``config.ensemble``, with ``"auto"`` resolved to 1 in float32 on a CPU, else 2."""
        if self.config.ensemble != "auto":
            return self.config.ensemble
        return 1 if torch.device(device).type == "cpu" and not bf16 else 2

    def _warn_if_untrained_setting(self, operator) -> None:
        """Warn when a block-CS operator's ratio or block size is not the one a single-ratio model was trained for
        (such a model does not generalise to other ratios: its model card gives the figures); and, for a model
        trained on one fixed matrix (no ``fresh_per_step``), when the seed or permutation differs."""
        trained = self.config.operator_config or {}
        if trained.get("type") != "BlockCS" or not callable(getattr(operator, "measurements_per_block", None)):
            return
        b = int(trained.get("block_size", operator.block_size))
        if "ratio_range" in trained:  # trained on ratios drawn per step: any ratio of the range, any seed
            lo, hi = trained["ratio_range"]
            if operator.block_size != b or not lo - 1e-9 <= operator.ratio <= hi + 1e-9:
                warnings.warn(f"operator: this model was trained for block CS with {b}x{b} blocks at ratios {lo:g} to "
                              f"{hi:g}; the operator has {operator.block_size}x{operator.block_size} blocks at ratio "
                              f"{operator.ratio:g}: expect a poor reconstruction", UserWarning, stacklevel=3)
            return
        q = type(operator).measurements_per_block(trained.get("ratio", operator.ratio), b)
        if (operator.block_size, operator.q) != (b, q):
            warnings.warn(f"operator: this model was trained for block CS with {q} measurements per {b}x{b} block "
                          f"(ratio {trained.get('ratio')}), the operator takes {operator.q} per "
                          f"{operator.block_size}x{operator.block_size} (ratio {operator.ratio:g}); expect a poor "
                          "reconstruction (use the model of that ratio, or fine-tune one: finetune.init)",
                          UserWarning, stacklevel=3)
        elif not trained.get("fresh_per_step") and "seed" in trained and (
                getattr(operator, "seed", trained["seed"]) != trained["seed"]
                or bool(getattr(operator, "permute", True)) != bool(trained.get("permute", True))):
            warnings.warn(f"operator: this model was trained on one fixed block-CS matrix (seed {trained['seed']}, "
                          f"permute {trained.get('permute', True)}); the operator has seed {operator.seed}, permute "
                          f"{operator.permute}: expect 2-8 dB less (use that seed, or a model trained with "
                          "finetune.fresh_operator_per_step)", UserWarning, stacklevel=3)

    def _sample(self, x: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """The sampler from the start ``x`` (real channels ``(B, c, H, W)``): its merged output, same shape."""
        y1, y2 = self.sampler(x, x * self.input_scale, (), ctx)
        return y1 + y2 * self.merge_scale

    def _prepare(self, y: torch.Tensor, operator: Any) -> tuple[torch.Tensor, RunContext]:
        """Move/convert ``y``, check sizes; return the start ``x_T`` (real channels) and the run context."""
        param = self.alpha_logits
        device, rdtype = param.device, param.dtype
        y = y.to(device=device, dtype=(torch.complex128 if rdtype == torch.float64 else torch.complex64)
                 if self.is_complex else rdtype)
        if isinstance(operator, nn.Module):
            operator = operator.to(device)
        out_size, measured_operator = None, operator
        size = getattr(operator, "img_size", None)
        if size is not None and callable(getattr(operator, "without_crop", None)):
            # block CS of a size that is no multiple of the block: the cropped adjoint is no projection, so
            # reconstruct the zero-padded grid (exact pseudo-inverse there) and crop the result
            if tuple(operator.padded_size(*size)) != tuple(size):
                operator, out_size = operator.without_crop().to(device), tuple(size)
        ctx = self._context(y, operator, measured_operator, out_size)
        return self._start(ctx), ctx

    def _start(self, ctx: RunContext, warm: torch.Tensor | None = None) -> torch.Tensor:
        """``x_T`` (real channels): ``sqrt(a_T)`` times ``A^+ y`` or the TV estimate (``start``); from ``warm`` (an
        earlier TV estimate, in the operator's domain), ``ensemble_start_iterations`` TV iterations."""
        start = ctx.crop_image(ctx.aty_padded)  # A^+ y
        if self.config.start == "tv":
            iterations = self.config.start_iterations if warm is None else self.config.ensemble_start_iterations
            with torch.autocast(ctx.y.device.type, enabled=False):
                start = self._to_real(tv_fista(ctx.y, ctx.operator, lam=self.config.start_lam, iterations=iterations,
                                               inner=self.config.start_inner, mean_start=True, x0=warm))
        return self.alphas()[-1].sqrt() * start

    def _context(self, y: torch.Tensor, operator: Any, measured_operator: Any = None,
                 out_size: tuple[int, int] | None = None) -> RunContext:
        """Check that ``operator`` fits ``y`` and the backbone; the run context of ``y`` (on the model's device)."""
        try:
            aty = operator.A_dagger(y)
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"operator: cannot apply A_dagger to y ({e})") from e
        if aty.ndim != 4:
            raise ValueError(f"operator: A_dagger(y) must be (B, C, H, W), got shape {tuple(aty.shape)}")
        if aty.shape[1] != 1:
            raise ValueError(f"y: the model takes single-channel images, A_dagger(y) has {aty.shape[1]} channels")
        ay = operator.A(aty)
        if ay.shape != y.shape:
            raise ValueError(f"operator: measurement size mismatch, A(A_dagger(y)) has shape {tuple(ay.shape)} "
                             f"but y has {tuple(y.shape)} (operator built for another image size?)")
        H, W = aty.shape[-2:]
        f = self.unet.downsampling
        pad = ((-H) % f, (-W) % f)
        if (pad[0] and pad[0] >= H) or (pad[1] and pad[1] >= W):
            raise ValueError(f"y: image {H}x{W} too small for the backbone (downsampling {f})")
        measured = operator if measured_operator is None else measured_operator
        return RunContext(y=y, operator=operator, measured_operator=measured, size=(H, W), pad=pad,
                          aty_padded=_reflect_pad(self._to_real(aty), pad), out_size=out_size)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike, **kwargs) -> "IDM":
        """Load from a folder (or an embedded name, see :mod:`.registry`): ``config.json`` + safetensors only.

        Raises ``ValueError`` listing missing / unexpected / shape-mismatched keys when the weights do not
        match the config; ``.bin`` (pickle) checkpoints are refused.
        """
        from .limits import check_model_folder

        folder = resolve_checkpoint(name_or_dir)
        check_model_folder(folder, WEIGHTS_NAME)  # sizes and files checked before anything is built or read
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            bins = sorted(p.name for p in folder.glob("*.bin"))
            raise ValueError(f"name_or_dir: {folder} has no {WEIGHTS_NAME}"
                             + (f" (found pickle checkpoints {bins}, which are refused)" if bins else ""))
        if not (folder / cls.config_name).is_file():
            raise ValueError(f"name_or_dir: {folder} has no {cls.config_name}")
        _check_weights(cls, folder, weights)
        kwargs.setdefault("use_safetensors", True)
        if not kwargs["use_safetensors"]:
            raise ValueError("use_safetensors: only safetensors checkpoints are loaded (no pickle)")
        return super().from_pretrained(str(folder), low_cpu_mem_usage=False, **kwargs)

    @classmethod
    def from_diffusers(cls, unet_or_path: Any, T: int = 3, task: str = "cs", **kwargs) -> "IDM":
        """Build an IDM around a pretrained diffusers UNet (object, local folder, or hub id when online).

        For a folder, ``<folder>/unet`` is tried too and ``<folder>/scheduler/scheduler_config.json``
        (if present) initialises the learned alphas. Other kwargs go to :class:`IDM`.
        """
        schedule = kwargs.pop("schedule", None)
        if isinstance(unet_or_path, (str, os.PathLike)):
            unet, schedule = load_unet(unet_or_path, schedule)
        elif isinstance(unet_or_path, nn.Module):
            unet = unet_or_path
        else:
            raise TypeError(f"unet_or_path: expected a diffusers UNet or a folder, got {type(unet_or_path).__name__}")
        btype = type(unet).__name__
        if btype not in SUPPORTED_BACKBONES:
            raise ValueError(f"unet_or_path: {btype} is not supported; supported: {list(SUPPORTED_BACKBONES)}")
        bcfg = clean_config(unet.config)
        model = cls(backbone_type=btype, backbone_config=bcfg, T=T, task=task, schedule=schedule, **kwargs)
        state = {k: v.detach() for k, v in unet.state_dict().items()}
        model.unet.load_diffusers_state_dict(state)
        return model


SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset")


def read_schedule(folder: str | os.PathLike) -> dict | None:
    """The DDPM schedule of a diffusers scheduler folder (its ``scheduler_config.json``); None when absent."""
    f = Path(folder) / "scheduler_config.json"
    if not f.is_file():
        return None
    s = json.loads(f.read_text(encoding="utf-8"))
    return {k: s[k] for k in SCHEDULE_KEYS if k in s}


def load_unet(path: str | os.PathLike, schedule: dict | None = None, name: str = "unet_or_path"):
    """A diffusers UNet in float32 and its DDPM schedule.

    Args:
        path (`str` or `os.PathLike`):
            A folder holding the UNet's ``config.json`` (or ``<folder>/unet``, the pipeline layout), an embedded
            prior name (``"prior-gray"``) or, when online, a hub id. A local folder is read without the network.
        schedule (`dict`, *optional*):
            The schedule to return; None reads ``<folder>/scheduler/scheduler_config.json`` when present.
        name (`str`, *optional*, defaults to `"unet_or_path"`):
            What error messages call ``path``.

    Returns:
        `tuple`: the UNet (``UNet2DConditionModel`` or ``UNet2DModel``) and the schedule (`dict` or None).
    """
    import diffusers

    from .registry import REGISTRY

    p = Path(path)
    if not p.exists() and str(path) in REGISTRY:  # an embedded prior, e.g. "prior-gray"
        p = path = resolve_checkpoint(str(path))
    local = p.exists()
    errors = []
    for sub in (None, "unet"):
        folder = p if sub is None else p / sub
        if local and not (folder / "config.json").is_file():
            continue
        try:  # any UNet class reads the same config.json
            cfg = diffusers.UNet2DConditionModel.load_config(str(path), subfolder=sub, local_files_only=local)
        except Exception as e:  # noqa: BLE001 (hub / missing file: try the next layout)
            errors.append(f"{folder}: {e}")
            continue
        cls_name = cfg.get("_class_name")
        if cls_name not in SUPPORTED_BACKBONES:
            raise ValueError(f"{name}: {cls_name!r} is not supported; supported: {list(SUPPORTED_BACKBONES)}")
        # float32 whatever the stored dtype (the embedded prior is stored in float16)
        unet = getattr(diffusers, cls_name).from_pretrained(str(path), subfolder=sub, use_safetensors=True,
                                                            torch_dtype=torch.float32, local_files_only=local)
        if schedule is None and local:
            schedule = read_schedule(p / "scheduler")
        return unet, schedule
    raise ValueError(f"{name}: no diffusers UNet config found at {path} (tried '.', 'unet'); {errors}")


def _check_weights(cls, folder: Path, weights: Path) -> None:
    """Compare the safetensors keys/shapes with a model built from config.json; raise listing the keys."""
    from safetensors import safe_open

    config = cls.load_config(str(folder))
    with torch.device("meta"):
        model = cls.from_config(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(str(weights), framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or shapes:
        raise ValueError(
            f"name_or_dir: checkpoint {weights} does not match its config; missing keys: {missing}; "
            f"unexpected keys: {unexpected}; shape mismatches: "
            + ", ".join(f"{k} {found[k]} vs {expected[k]}" for k in shapes)
        )


def tiny_backbone_config(backbone_type: str = "UNet2DConditionModel") -> dict:
    """A small config of the given backbone type (for tests and CPU experiments)."""
    if backbone_type == "UNet2DConditionModel":
        return dict(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=[16, 32, 32, 32], norm_num_groups=8, cross_attention_dim=16,
            attention_head_dim=4,
            down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        )
    if backbone_type == "UNet2DModel":
        return dict(
            sample_size=32, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=[16, 32],
            norm_num_groups=8, attention_head_dim=8,
            down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
        )
    raise ValueError(f"backbone_type: {backbone_type!r} is not supported; supported: {list(SUPPORTED_BACKBONES)}")
