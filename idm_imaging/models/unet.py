"""Reversible UNet composed from a diffusers backbone's own modules (level 2 of IDM).

The diffusers UNet is built (or given), then its submodules are *moved* into a flat list of operations that
this module runs itself, calling each submodule's own ``forward`` (``resnet(h, None)``, ``attn1``, ``ff``,
``Attention(h)``, ``Downsample2D(h)`` ...). Nothing in diffusers is patched.

Coupling scheme (the paper's): the features ``h`` of a run of shape-keeping blocks become the pair
``(h, s h)`` (``s`` learned, init 1); every shape-keeping block ``G`` (a ResnetBlock2D with equal in/out
channels, a self-attention transformer / attention block, an injector) becomes the coupling
``y1 = (1 - v) G(x1) + v x2, y2 = x1``; the run ends with ``h' = y1 + m y2`` (``m`` learned, init 0).
Each coupling is invertible for any ``G`` (``x1 = y2``, ``x2 = (y1 - (1 - v) G(y2)) / v``) and, unlike
channel-halving couplings, applies the pretrained block to full-width features, so pretrained weights keep
their meaning. Up-block resnets that keep the channel count of ``h`` read the skip connection as a *side
input*: ``G(x1) = resnet(cat[x1, skip])`` is still a map ``C -> C``, so they are couplings too. A run ends
where a skip connection must be emitted (down blocks) or a shape-changing block comes.
Shape-changing blocks (channel-changing resnets, down/upsamplers, conv_in, the output head) run through
non-reentrant gradient checkpointing.

Backbones:
* ``UNet2DConditionModel`` (Stable Diffusion 1.x layout): first two down blocks (the second without its
  downsampler) and last two up blocks are kept; time embedding, mid block and cross-attention (``attn2``)
  are dropped; the features entering the up path are repeated along channels to the width the first kept up
  block expects (as the reference does).
* ``UNet2DModel`` (pixel-space DDPM layout): all down, mid and up blocks kept, time embedding dropped.
Resnets get ``temb=None`` (``time_emb_proj`` removed): with ``time_embedding_norm="default"`` diffusers then
skips the embedding; ``"scale_shift"`` needs an embedding and is rejected. Dropout is set to 0 so that the
backward recomputation is deterministic.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from .injector import Injector, StepContext
from .reversible import Coupling, ReversibleSequence, checkpointed

__all__ = ["ReversibleUNet", "SUPPORTED_BACKBONES", "build_diffusers_unet"]

SUPPORTED_BACKBONES = ("UNet2DConditionModel", "UNet2DModel")
_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "AttnDownBlock2D")
_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "AttnUpBlock2D")


def clean_config(config: dict) -> dict:
    """JSON-safe copy of a diffusers config (private ``_`` keys dropped, tuples -> lists)."""
    return json.loads(json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}))


def build_diffusers_unet(backbone_type: str, backbone_config: dict) -> nn.Module:
    """Instantiate the diffusers UNet class named ``backbone_type`` from a config dict (random weights)."""
    if backbone_type not in SUPPORTED_BACKBONES:
        raise ValueError(f"backbone_type: {backbone_type!r} is not supported; supported: {list(SUPPORTED_BACKBONES)}")
    import diffusers

    cls = getattr(diffusers, backbone_type)
    return cls.from_config(dict(backbone_config))


class ResnetBody(nn.Module):
    """``G(x, *skips) = resnet(cat[x, *skips], temb=None)``; (B, Cin, H, W) -> (B, Cout, H', W')."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        resnet.time_emb_proj = None  # time embedding dropped (diffusers skips it when temb is None)
        self.resnet = resnet

    def forward(self, x, *skips, ctx=None):
        if skips:
            x = torch.cat([x, *skips], dim=1)
        return self.resnet(x, None)


class SelfAttentionBody(nn.Module):
    """Self-attention only: a diffusers ``Transformer2DModel`` without cross-attention, or an ``Attention``.

    For a transformer: ``h = proj_in(norm(x))`` as tokens, per block ``h += attn1(norm1(h))``,
    ``h += ff(norm3(h))`` (``attn2``/``norm2`` removed), ``x + proj_out(h)``. (B, C, H, W) -> same.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.is_transformer = hasattr(module, "transformer_blocks")
        if self.is_transformer:
            if not getattr(module, "is_input_continuous", True):
                raise ValueError("backbone_config: only continuous-input Transformer2DModel blocks are supported")
            for blk in module.transformer_blocks:
                if getattr(blk, "norm_type", "layer_norm") != "layer_norm" or getattr(blk, "only_cross_attention", False):
                    raise ValueError("backbone_config: transformer blocks must use norm_type='layer_norm' self-attention")
                blk.attn2 = None  # cross-attention dropped
                blk.norm2 = None
        self.block = module

    def forward(self, x, ctx=None):
        if not self.is_transformer:
            return self.block(x)  # diffusers Attention: group norm + SDPA + residual on (B, C, H, W)
        t = self.block
        b, _, hh, ww = x.shape
        h = t.norm(x)
        if not t.use_linear_projection:
            h = t.proj_in(h)
            inner = h.shape[1]
            h = h.permute(0, 2, 3, 1).reshape(b, hh * ww, inner)
        else:
            inner = h.shape[1]
            h = t.proj_in(h.permute(0, 2, 3, 1).reshape(b, hh * ww, inner))
        for blk in t.transformer_blocks:
            h = blk.attn1(blk.norm1(h)) + h
            h = blk.ff(blk.norm3(h)) + h
        if not t.use_linear_projection:
            h = t.proj_out(h.reshape(b, hh, ww, inner).permute(0, 3, 1, 2))
        else:
            h = t.proj_out(h).reshape(b, hh, ww, inner).permute(0, 3, 1, 2)
        return h + x


class InjectorBody(nn.Module):
    def __init__(self, injector: Injector):
        super().__init__()
        self.injector = injector

    def forward(self, x, ctx=None):
        return self.injector(x, ctx)


class _Ckpt(nn.Module):
    """A shape-changing block under gradient checkpointing; optionally pops a skip / pushes its output."""

    def __init__(self, body: nn.Module, pop_skip: bool = False, push_skip: bool = False):
        super().__init__()
        self.body, self.pop_skip, self.push_skip = body, pop_skip, push_skip
        self.checkpoint = True

    def _call(self, h, *skips):
        if isinstance(self.body, ResnetBody):
            return self.body(h, *skips)
        return self.body(h)

    def forward(self, h, skips: list, ctx):
        args = (h, skips.pop()) if self.pop_skip else (h,)
        h = checkpointed(self.checkpoint, self._call, *args)
        if self.push_skip:
            skips.append(h)
        return h


class _Head(nn.Module):
    """conv_norm_out -> act -> conv_out (diffusers' own modules)."""

    def __init__(self, norm, act, conv):
        super().__init__()
        self.norm, self.act, self.conv = norm, act, conv

    def forward(self, h):
        if self.norm is not None:
            h = self.act(self.norm(h))
        return self.conv(h)


class _Repeat(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, h, skips, ctx):
        return h.repeat(1, self.k, 1, 1)


class _Stage(nn.Module):
    """A run of couplings on ``(h, s h)`` merged to ``y1 + m y2``; pops ``n_sides`` skips as side inputs."""

    def __init__(self, couplings, push_skip: bool):
        super().__init__()
        self.seq = ReversibleSequence(couplings)
        self.n_sides = sum(c.n_sides for c in couplings)
        self.push_skip = push_skip
        self.s = nn.Parameter(torch.tensor(1.0))
        self.m = nn.Parameter(torch.tensor(0.0))

    def forward(self, h, skips: list, ctx):
        sides = [skips.pop() for _ in range(self.n_sides)]
        y1, y2 = self.seq(h, h * self.s, sides, ctx)
        h = y1 + y2 * self.m
        if self.push_skip:
            skips.append(h)
        return h


def _drop_dropout(unet: nn.Module) -> None:
    """Replace every ``nn.Dropout`` by ``nn.Identity``: the backward recomputation must be deterministic."""
    for parent in list(unet.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(parent, name, nn.Identity())


def _select_blocks(unet: nn.Module, backbone_type: str) -> tuple[list, nn.Module | None, list]:
    """The kept ``(down_blocks, mid_block, up_blocks)``: SD layout: first two down, last two up, no mid block."""
    down_blocks, up_blocks, mid = list(unet.down_blocks), list(unet.up_blocks), None
    if backbone_type == "UNet2DConditionModel":
        if len(down_blocks) < 2 or len(up_blocks) < 2:
            raise ValueError("backbone_config: the SD layout needs at least two down and two up blocks")
        down_blocks, up_blocks = down_blocks[:2], up_blocks[-2:]
    else:
        mid = unet.mid_block
    for blk in down_blocks:
        if type(blk).__name__ not in _DOWN:
            raise ValueError(f"backbone_config: down block {type(blk).__name__} unsupported; supported: {list(_DOWN)}")
    for blk in up_blocks:
        if type(blk).__name__ not in _UP:
            raise ValueError(f"backbone_config: up block {type(blk).__name__} unsupported; supported: {list(_UP)}")
    return down_blocks, mid, up_blocks


def _sampler_body(module: nn.Module) -> nn.Module:
    """A down/upsampler as a shape-changing body (resnet-style samplers take the skip-free resnet call)."""
    return ResnetBody(module) if hasattr(module, "time_emb_proj") else module


class _OpsBuilder:
    """Turns diffusers blocks into the flat op list of :class:`ReversibleUNet`, in order.

    Shape-keeping blocks pile up in ``pending`` as couplings; a run becomes one :class:`_Stage` when it is
    flushed (before a shape-changing block, or where a skip connection is emitted). ``ch`` is the current
    channel count, ``level`` the number of downsamplings so far, ``skip_ch`` the channels of the pushed skips.
    """

    def __init__(self, steps: int, pixel_factor: int, image_channels: int):
        self.steps, self.pixel_factor, self.image_channels = steps, pixel_factor, image_channels
        self.ops: list[nn.Module] = []
        self.pending: list[Coupling] = []
        self.skip_ch: list[int] = []
        self.level, self.ch, self.n_injectors = 0, 0, 0

    def couple(self, body: nn.Module, n_sides: int = 0) -> None:
        self.pending.append(Coupling(body, n_sides=n_sides))

    def inject(self) -> None:
        """An injector coupling at the current width and resolution (one per shape-keeping block)."""
        self.n_injectors += 1
        scale = self.pixel_factor * 2**self.level
        self.couple(InjectorBody(Injector(self.ch, scale, self.steps, self.image_channels)))

    def flush(self, push_skip: bool = False) -> None:
        if self.pending:
            self.ops.append(_Stage(list(self.pending), push_skip))
            self.pending.clear()

    def shape_changing(self, body: nn.Module, pop_skip: bool = False, push_skip: bool = False) -> None:
        self.flush()
        self.ops.append(_Ckpt(body, pop_skip=pop_skip, push_skip=push_skip))

    def add_attention(self, attns, j: int) -> None:
        if attns is not None and attns[j] is not None:
            self.couple(SelfAttentionBody(attns[j]))
            self.inject()

    def add_down_block(self, blk: nn.Module, keep_downsampler: bool) -> None:
        """Each resnet (+ attention) ends a stage that emits a skip; then the downsampler emits one too."""
        attns = getattr(blk, "attentions", None)
        for j, res in enumerate(blk.resnets):
            if res.in_channels == res.out_channels == self.ch:
                self.couple(ResnetBody(res))
            else:
                self.shape_changing(ResnetBody(res))
            self.ch = res.out_channels
            self.inject()
            self.add_attention(attns, j)
            self.flush(push_skip=True)
            self.skip_ch.append(self.ch)
        if getattr(blk, "downsamplers", None) is not None and keep_downsampler:
            self.shape_changing(_sampler_body(blk.downsamplers[0]), push_skip=True)
            self.level += 1
            self.skip_ch.append(self.ch)

    def add_mid_block(self, mid: nn.Module) -> None:
        """resnet, (attention, resnet)*: one stage, every block a coupling followed by an injector."""
        items = [mid.resnets[0]]
        for a, r in zip(mid.attentions, mid.resnets[1:]):
            items += [a, r]
        for it in items:
            if it is not None:
                self.couple(ResnetBody(it) if hasattr(it, "conv1") else SelfAttentionBody(it))
                self.inject()
        self.flush()

    def widen_for_up_path(self, first_in_channels: int) -> None:
        """Repeat the features along channels to the width the first kept up block expects (SD layout)."""
        need = first_in_channels - self.skip_ch[-1]
        if need != self.ch:
            if need % self.ch:
                raise ValueError(f"backbone_config: up path expects {need} channels, down path gives {self.ch}")
            self.flush()
            self.ops.append(_Repeat(need // self.ch))
            self.ch = need

    def add_up_block(self, blk: nn.Module) -> None:
        """Resnets that keep the width read their skip as a side input (couplings); the others pop it."""
        attns = getattr(blk, "attentions", None)
        for j, res in enumerate(blk.resnets):
            sc = self.skip_ch.pop()
            if res.in_channels != self.ch + sc:
                raise ValueError(f"backbone_config: inconsistent up block channels ({res.in_channels} != {self.ch}+{sc})")
            if self.ch == res.out_channels:
                self.couple(ResnetBody(res), n_sides=1)
            else:
                self.shape_changing(ResnetBody(res), pop_skip=True)
            self.ch = res.out_channels
            self.inject()
            self.add_attention(attns, j)
        self.flush()
        if getattr(blk, "upsamplers", None) is not None:
            self.shape_changing(_sampler_body(blk.upsamplers[0]))
            self.level -= 1


class ReversibleUNet(nn.Module):
    """Noise estimator ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` built from a diffusers UNet.

    Args:
        backbone_type (`str`):
            ``"UNet2DConditionModel"`` (SD 1.x layout) or ``"UNet2DModel"``.
        backbone_config (`dict`):
            The diffusers config dict of that class.
        steps (`int`):
            Number of sampling steps (per-step injector convs).
        pixel_factor (`int`, *optional*, defaults to 1):
            Factor between the (padded) image and the UNet input (pixel unshuffle ``r``).
        image_channels (`int`, *optional*, defaults to 1):
            The injectors' image channels: 1 (real) or 2 (complex as real/imaginary).
        unet (`nn.Module`, *optional*):
            An existing diffusers UNet to take the modules from (its weights are used); `None` builds one from
            ``backbone_config``.

    ``forward(x, ctx)``: ``ctx`` is the :class:`~.injector.StepContext` the injectors read. ``H`` and ``W``
    must be divisible by :attr:`downsampling`. ``reversible`` switches couplings and checkpointing on/off.
    ``diffusers_key_map`` maps this module's parameter names to the source UNet's state-dict keys.
    :meth:`step_parameters` lists the parameters one sampling step uses.

    Example:
        >>> import torch
        >>> from idm_imaging.models.injector import StepContext
        >>> cfg = dict(block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4, in_channels=1,
        ...            out_channels=1, down_block_types=["DownBlock2D", "DownBlock2D"],
        ...            up_block_types=["UpBlock2D", "UpBlock2D"], sample_size=16)
        >>> net = ReversibleUNet("UNet2DModel", cfg, steps=1, pixel_factor=1)
        >>> ctx = StepContext(step=0, project=lambda im: im, aty=torch.zeros(1, 1, 16, 16))
        >>> net(torch.randn(1, 1, 16, 16), ctx).shape
        torch.Size([1, 1, 16, 16])
    """

    def __init__(self, backbone_type: str, backbone_config: dict, steps: int, pixel_factor: int = 1,
                 image_channels: int = 1, unet: nn.Module | None = None):
        super().__init__()
        if unet is None:
            unet = build_diffusers_unet(backbone_type, backbone_config)
        elif type(unet).__name__ not in SUPPORTED_BACKBONES:
            raise ValueError(f"unet: {type(unet).__name__} is not supported; supported: {list(SUPPORTED_BACKBONES)}")
        if unet.config.get("resnet_time_scale_shift", "default") != "default":
            raise ValueError("backbone_config: resnet_time_scale_shift must be 'default' (no time embedding is kept)")
        _drop_dropout(unet)
        self.in_channels, self.out_channels = int(unet.config.in_channels), int(unet.config.out_channels)
        down_blocks, mid, up_blocks = _select_blocks(unet, backbone_type)

        b = _OpsBuilder(steps, pixel_factor, image_channels)
        b.shape_changing(unet.conv_in, push_skip=True)
        b.ch = unet.conv_in.out_channels
        b.skip_ch.append(b.ch)
        for i, blk in enumerate(down_blocks):
            # the SD layout keeps the second down block without its downsampler
            keep_downsampler = not (backbone_type == "UNet2DConditionModel" and i == len(down_blocks) - 1)
            b.add_down_block(blk, keep_downsampler)
        self.downsampling = pixel_factor * 2**b.level
        self.unet_downsampling = 2**b.level
        if mid is not None:
            b.add_mid_block(mid)
        b.widen_for_up_path(up_blocks[0].resnets[0].in_channels)
        for blk in up_blocks:
            b.add_up_block(blk)
        if b.level != 0 or b.skip_ch:
            raise ValueError("backbone_config: down/up paths do not match after block selection")
        b.shape_changing(_Head(unet.conv_norm_out, unet.conv_act, unet.conv_out))
        self.ops = nn.ModuleList(b.ops)
        self.n_injectors = b.n_injectors

        # Parameter-name map to the source diffusers UNet (same module objects).
        src = {id(p): k for k, p in unet.named_parameters()}
        self.diffusers_key_map = {k: src[id(p)] for k, p in self.named_parameters() if id(p) in src}
        self._reversible = True

    @property
    def reversible(self) -> bool:
        return self._reversible

    @reversible.setter
    def reversible(self, value: bool) -> None:
        self._reversible = bool(value)
        for m in self.modules():
            if isinstance(m, ReversibleSequence):
                m.reversible = self._reversible
            elif isinstance(m, _Ckpt):
                m.checkpoint = self._reversible

    def zero_output(self) -> None:
        """Zero the last convolution (diffusers' ``conv_out``): the noise estimate is then 0 whatever the input, so
        a network trained from random weights starts as its sampler's start, not as noise."""
        head = [m for m in self.modules() if isinstance(m, _Head)][-1]
        torch.nn.init.zeros_(head.conv.weight)
        if head.conv.bias is not None:
            torch.nn.init.zeros_(head.conv.bias)

    def load_diffusers_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy the kept modules' weights from a diffusers UNet state dict (keys as in diffusers)."""
        missing = [d for d in self.diffusers_key_map.values() if d not in state]
        own = dict(self.named_parameters())
        bad = [d for k, d in self.diffusers_key_map.items() if d in state and state[d].shape != own[k].shape]
        if missing or bad:
            raise ValueError(f"unet: weights do not match the backbone config; missing keys {missing[:20]}, "
                             f"shape mismatches {bad[:20]}")
        with torch.no_grad():
            for k, d in self.diffusers_key_map.items():
                own[k].copy_(state[d])

    def step_parameters(self, step: int) -> list[nn.Parameter]:
        """The parameters a forward at sampling step ``step`` reads: all but the other steps' injector convs."""
        others = set()
        for m in self.modules():
            if isinstance(m, Injector):
                for j, convs in enumerate(zip(m.to_image, m.to_features)):
                    if j != step:
                        others.update(id(p) for conv in convs for p in conv.parameters())
        return [p for p in self.parameters() if id(p) not in others]

    def forward(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        h = x
        for op in self.ops:
            h = op(h, skips, ctx)
        return h
