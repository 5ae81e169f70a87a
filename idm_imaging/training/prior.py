"""Stage (a): DDPM noise-prediction pre-training of a small SD-1.x-style diffusers UNet on grayscale patches.

Loss: for a clean patch ``x`` (B, 1, P, P) in [0, 1], ``x0 = pixel_unshuffle(2 x - 1, u)`` (B, u^2, P/u, P/u),
``t ~ U{0..N-1}``, ``eps ~ N(0, I)``, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (diffusers
``DDPMScheduler.add_noise``), ``L = mean (UNet(x_t, t) - eps)^2``.

Why ``UNet2DConditionModel`` by default: IDM (``IDM.from_diffusers``) accepts both diffusers classes, but its
backbone surgery follows the paper, which is defined on Stable Diffusion's layout (keep the first two down / last
two up blocks, drop time embedding and text cross-attention, keep self-attention). Training the prior in that
same layout means the fine-tuned model is the paper's architecture at a smaller width. The default is
CPU-friendly: ``DownBlock2D`` (no attention) at the highest resolution, self-attention from the second level on,
and an unconditional model gets zero ``encoder_hidden_states`` of shape ``(B, 1, cross_attention_dim)`` (the
cross-attention then adds a constant that IDM removes with the cross-attention itself).

The trained UNet is saved with ``save_pretrained`` (safetensors), so ``IDM.from_diffusers(folder)`` and
``diffusers.UNet2DConditionModel.from_pretrained(folder)`` load it.

Example::

    >>> import torch
    >>> from idm_imaging.training.config import load_config
    >>> cfg = load_config({"stage": "prior", "data": {"train": ["imgs/*.png"], "patch_size": 32}})
    >>> stage = PriorStage(cfg); unet = stage.build_model()
    >>> loss = stage.loss(unet, torch.rand(2, 1, 32, 32), torch.Generator().manual_seed(0), step=0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from idm_imaging.training.config import RunConfig

__all__ = ["PriorStage", "build_prior_unet"]


def build_prior_unet(cfg: RunConfig) -> torch.nn.Module:
    """The diffusers UNet described by ``cfg.prior`` for patches of ``cfg.data.patch_size``."""
    import diffusers

    pc = cfg.prior
    u = pc.unshuffle
    kwargs = dict(
        sample_size=cfg.data.patch_size // u,
        in_channels=u * u,
        out_channels=u * u,
        down_block_types=tuple(pc.down_block_types),
        up_block_types=tuple(pc.up_block_types),
        block_out_channels=tuple(pc.block_out_channels),
        layers_per_block=pc.layers_per_block,
        norm_num_groups=pc.norm_num_groups,
        attention_head_dim=pc.attention_head_dim,
    )
    if pc.unet_class == "UNet2DConditionModel":
        kwargs["cross_attention_dim"] = pc.cross_attention_dim
    kwargs.update(pc.unet)
    try:
        return getattr(diffusers, pc.unet_class)(**kwargs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"config table 'prior' does not describe a valid diffusers.{pc.unet_class}: {e}") from e


class PriorStage:
    """DDPM epsilon-prediction loss for the UNet of ``cfg.prior`` (see the module docstring for the math)."""

    name = "prior"
    complex_mode = "magnitude"

    def __init__(self, cfg: RunConfig):
        from diffusers import DDPMScheduler

        self.cfg = cfg
        pc = cfg.prior
        if cfg.data.patch_size % (pc.unshuffle * 2 ** (len(pc.block_out_channels) - 1)):
            raise ValueError(
                f"config key 'data.patch_size' ({cfg.data.patch_size}) must be a multiple of unshuffle * "
                f"2^(levels-1) = {pc.unshuffle * 2 ** (len(pc.block_out_channels) - 1)}")
        self.scheduler = DDPMScheduler(num_train_timesteps=pc.num_train_timesteps, beta_schedule=pc.beta_schedule,
                                       beta_start=pc.beta_start, beta_end=pc.beta_end, prediction_type="epsilon")

    def build_model(self) -> torch.nn.Module:
        return build_prior_unet(self.cfg)

    def loss(self, model, x: torch.Tensor, gen: torch.Generator, step: int) -> torch.Tensor:
        """``x``: (B, 1, P, P) float in [0, 1]; randomness only from ``gen`` (a CPU generator)."""
        pc = self.cfg.prior
        x0 = F.pixel_unshuffle(x * 2 - 1 if pc.signed_range else x, pc.unshuffle)
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        t = torch.randint(0, pc.num_train_timesteps, (x0.shape[0],), generator=gen).to(x0.device)
        xt = self.scheduler.add_noise(x0, noise, t)
        if pc.unet_class == "UNet2DConditionModel":
            ctx = torch.zeros(x0.shape[0], 1, pc.cross_attention_dim, device=x0.device, dtype=x0.dtype)
            pred = model(xt, t, encoder_hidden_states=ctx).sample
        else:
            pred = model(xt, t).sample
        return F.mse_loss(pred.float(), noise)

    def save_model(self, model: torch.nn.Module, folder) -> None:
        """UNet via ``save_pretrained`` plus ``scheduler/`` (the DDPM schedule, which IDM's learned alphas start from)."""
        from pathlib import Path

        model.save_pretrained(str(folder), safe_serialization=True)
        self.scheduler.save_pretrained(str(Path(folder) / "scheduler"))
