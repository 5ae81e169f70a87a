"""Run configuration: one TOML file fully describes a training run.

Layout of a config file (every table and key optional unless marked)::

    stage = "prior"            # required: "prior" (DDPM pre-training) or "finetune" (IDM, L1)
    seed = 0
    output_dir = "runs/prior-gray"   # relative paths resolve against the config file's folder

    [data]
    train = ["$IDM_IMAGING_DATA/natural/train/Train400/*.png"]   # globs or folders (the data setting:
                                                                  # idm_imaging.datasets)
    patch_size = 64
    batch_size = 8
    num_workers = 2
    augment = true             # the 8 flips/rotations
    complex_mode = "auto"      # "auto" | "magnitude" | "complex"

    [train]
    steps = 1000
    lr = 2e-4
    schedule = "cosine"        # "constant" | "step" (halve every step_size) | "cosine"
    ...

    [prior]                    # stage "prior": the diffusers backbone (SD-1.x layout, our size)
    [finetune]                 # stage "finetune": prior checkpoint, T, task + operator settings

``load_config(path_or_dict)`` returns a validated :class:`RunConfig`; unknown keys or bad values raise a
``ValueError`` that names the key (``"train.lr"``). ``RunConfig.to_dict()`` is the resolved, JSON-serialisable
form that is saved next to every checkpoint.

Example::

    >>> cfg = load_config({"stage": "prior", "data": {"train": ["imgs/*.png"]}, "train": {"steps": 10}})
    >>> cfg.train.steps, cfg.prior.block_out_channels
    (10, [32, 64, 64, 64])
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DataConfig",
    "TrainConfig",
    "PriorConfig",
    "FinetuneConfig",
    "RunConfig",
    "load_config",
]


@dataclass
class DataConfig:
    """Training data: files matched by ``train`` globs, random square patches of ``patch_size``."""

    train: list[str] = field(default_factory=list)
    patch_size: int = 64
    batch_size: int = 8
    num_workers: int = 2
    augment: bool = True
    # "auto": keep complex for the MRI task, magnitude otherwise; "magnitude" | "complex" force it.
    complex_mode: str = "auto"

    def validate(self) -> None:
        _check(isinstance(self.train, list) and self.train and all(isinstance(p, str) for p in self.train),
               "data.train", "a non-empty list of glob patterns or folders")
        _check(self.patch_size >= 8 and self.patch_size % 8 == 0, "data.patch_size", "a multiple of 8, >= 8")
        _check(self.batch_size >= 1, "data.batch_size", ">= 1")
        _check(self.num_workers >= 0, "data.num_workers", ">= 0")
        _check(self.complex_mode in ("auto", "magnitude", "complex"), "data.complex_mode",
               "'auto', 'magnitude' or 'complex'")


@dataclass
class TrainConfig:
    """Optimisation: Adam, LR schedule, precision, clipping, EMA, checkpoint cadence."""

    steps: int = 1000
    lr: float = 1e-4
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" | "step" | "cosine"
    warmup_steps: int = 0
    step_size: int = 1000  # "step": multiply the LR by step_gamma every step_size steps
    step_gamma: float = 0.5
    mixed_precision: str = "auto"  # "auto" (bf16 on CUDA, off on CPU) | "bf16" | "no"
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    ema_decay: float = 0.0  # 0 = no EMA; else diffusers EMAModel decay (e.g. 0.999)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    compile: bool = False  # torch.compile the model (GPU runs)
    max_seconds: float = 0.0  # wall-clock budget: stop (checkpoint + final model) once exceeded; 0 = off
    # Shorten ``steps`` from the measured step rate (at every log point) so that the cosine schedule ends inside
    # max_seconds (a budget cut mid-cosine leaves the LR high). The result then depends on the machine's speed.
    fit_to_time: bool = False
    # What max_seconds counts: "wall" (elapsed time) or "cpu" (this process's CPU time: with one thread and
    # num_workers = 0, the same budget whatever else runs on the machine).
    clock: str = "wall"

    def validate(self) -> None:
        _check(self.steps >= 1, "train.steps", ">= 1")
        _check(self.lr > 0, "train.lr", "> 0")
        _check(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas), "train.adam_betas",
               "two numbers in [0, 1)")
        _check(self.weight_decay >= 0, "train.weight_decay", ">= 0")
        _check(self.schedule in ("constant", "step", "cosine"), "train.schedule", "'constant', 'step' or 'cosine'")
        _check(0 <= self.warmup_steps < self.steps or self.warmup_steps == 0, "train.warmup_steps",
               "in [0, steps)")
        _check(self.step_size >= 1, "train.step_size", ">= 1")
        _check(0 < self.step_gamma <= 1, "train.step_gamma", "in (0, 1]")
        _check(self.mixed_precision in ("auto", "bf16", "no"), "train.mixed_precision", "'auto', 'bf16' or 'no'")
        _check(self.grad_clip >= 0, "train.grad_clip", ">= 0")
        _check(0 <= self.ema_decay < 1, "train.ema_decay", "in [0, 1)")
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", ">= 1")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", ">= 1")
        _check(self.log_every >= 1, "train.log_every", ">= 1")
        _check(self.max_seconds >= 0, "train.max_seconds", ">= 0 (0 = no time budget)")
        _check(not self.fit_to_time or (self.max_seconds > 0 and self.schedule == "cosine"), "train.fit_to_time",
               "used only with train.max_seconds > 0 and train.schedule = 'cosine'")
        _check(self.clock in ("wall", "cpu"), "train.clock", "'wall' or 'cpu'")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "train.device",
               "'auto', 'cpu' or 'cuda[:N]'")


@dataclass
class PriorConfig:
    """Stage (a): DDPM noise prediction for a diffusers UNet of our own size.

    The grayscale patch ``(B, 1, P, P)`` in [0, 1] is mapped to [-1, 1] and pixel-unshuffled by 2 to
    ``(B, 4, P/2, P/2)``, as IDM feeds Stable Diffusion's 4-channel UNet. ``unet_class`` picks the diffusers
    class: ``UNet2DConditionModel`` (SD-1.x layout; an unconditional model gets zero ``encoder_hidden_states``
    of shape ``(B, 1, cross_attention_dim)``) or ``UNet2DModel``. ``unet`` holds extra keyword arguments for
    that class (validated against its signature).
    """

    unet_class: str = "UNet2DConditionModel"
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64, 64])
    down_block_types: list[str] = field(
        default_factory=lambda: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
    up_block_types: list[str] = field(
        default_factory=lambda: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"])
    layers_per_block: int = 1
    cross_attention_dim: int = 32
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    signed_range: bool = True  # train on 2 x - 1 in [-1, 1] (DDPM convention); False: on x in [0, 1]
    unshuffle: int = 2  # pixel-unshuffle factor: 1 x H x W -> unshuffle^2 x H/u x W/u
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"  # "linear" | "scaled_linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    unet: dict = field(default_factory=dict)

    def validate(self) -> None:
        _check(self.unet_class in ("UNet2DConditionModel", "UNet2DModel"), "prior.unet_class",
               "'UNet2DConditionModel' or 'UNet2DModel'")
        n = len(self.block_out_channels)
        _check(n >= 1 and all(isinstance(c, int) and c > 0 for c in self.block_out_channels),
               "prior.block_out_channels", "a list of positive ints")
        _check(len(self.down_block_types) == n, "prior.down_block_types", f"{n} entries (one per block)")
        _check(len(self.up_block_types) == n, "prior.up_block_types", f"{n} entries (one per block)")
        _check(all(c % self.norm_num_groups == 0 for c in self.block_out_channels), "prior.norm_num_groups",
               "a divisor of every block_out_channels entry")
        _check(self.layers_per_block >= 1, "prior.layers_per_block", ">= 1")
        _check(self.unshuffle in (1, 2, 4), "prior.unshuffle", "1, 2 or 4")
        _check(self.num_train_timesteps >= 2, "prior.num_train_timesteps", ">= 2")
        _check(self.beta_schedule in ("linear", "scaled_linear"), "prior.beta_schedule",
               "'linear' or 'scaled_linear'")
        _check(0 < self.beta_start < self.beta_end < 1, "prior.beta_start", "0 < beta_start < beta_end < 1")
        _check(isinstance(self.unet, dict), "prior.unet", "a table")
        import inspect

        import diffusers

        params = inspect.signature(getattr(diffusers, self.unet_class).__init__).parameters
        for k in self.unet:
            _check(k in params, f"prior.unet.{k}", f"a keyword argument of diffusers.{self.unet_class}")


@dataclass
class FinetuneConfig:
    """Stage (b): IDM end-to-end fine-tuning (L1 or -PSNR on the output, ``loss``) for one task.

    ``prior``: a diffusers UNet folder (``save_pretrained`` output, e.g. the prior stage's ``model/``, or the
    embedded ``"prior-gray"``) given to ``IDM.from_diffusers``. ``init`` instead: an IDM to continue from (an
    embedded name such as ``"mri"`` or an alias such as ``"mri-4x"`` or an ``IDM.save_pretrained`` folder), to
    fine-tune a shipped model on your own data or to continue a run on another day; its task and T must match this
    section. Give exactly one of the two. ``task = "cs"``: ``BlockCS(ratio, block_size, permute, seed)``;
    ``task = "mri"``: ``SingleCoilFourier(make_mask("random", (P, P), acceleration, center_fraction, seed))``. With
    ``fresh_operator_per_step`` (the default) each step draws its own seed, so that the model works with any
    matrix / mask of its ratio / acceleration; otherwise every step uses ``operator_seed`` (one fixed matrix, as
    in the paper; such a model is fitted to that one matrix / mask and does worse with other seeds).
    ``fresh_mask_per_step`` is the former name of ``fresh_operator_per_step`` and still accepted.
    """

    prior: str = ""
    init: str = ""
    # A randomly initialised backbone instead of a prior: the diffusers class and its config (for light designs
    # that have no pretrained prior; the first of prior / init / backbone that is given is used).
    backbone_type: str = "UNet2DModel"
    backbone: dict = field(default_factory=dict)
    # With backbone: start from the weights of another IDM folder whose parameters have the same names and shapes
    # (e.g. an MRI model with idm.complex_as_batch from a CS model of the same backbone and T).
    init_weights: str = ""
    T: int = 3
    task: str = "cs"
    reversible: bool = True
    idm: dict = field(default_factory=dict)  # extra keyword arguments for IDM.from_diffusers
    ratio: float = 0.1
    block_size: int = 32
    permute: bool = True
    operator_seed: int = 0
    acceleration: float = 4.0
    center_fraction: float = 0.08
    fresh_operator_per_step: bool = True
    noise_sigma: float = 0.0  # measurement noise std during training
    # One model for many acquisitions: each step draws its ratio (block CS) uniformly from ratio_range, or its
    # acceleration from acceleration_range and its mask kind from mask_kinds (MRI); [] = the fixed ratio /
    # acceleration above.
    ratio_range: list[float] = field(default_factory=list)
    acceleration_range: list[float] = field(default_factory=list)
    mask_kinds: list[str] = field(default_factory=lambda: ["random"])
    # "l1": mean absolute error over the batch. "psnr": the mean over images of 10 log10(MSE), i.e. minus their
    # PSNR, so that every ratio / acceleration counts alike (an L1 loss is dominated by the lowest ratios, whose
    # errors are largest).
    loss: str = "l1"

    def validate(self) -> None:
        _check(self.loss in ("l1", "psnr"), "finetune.loss", "'l1' or 'psnr'")
        _check(isinstance(self.prior, str) and isinstance(self.init, str), "finetune.prior",
               "a path to a diffusers UNet folder (finetune.init: an IDM name or folder)")
        _check(sum(map(bool, (self.prior, self.init, self.backbone))) == 1, "finetune.prior",
               "given, or else finetune.init (an IDM to continue from) or finetune.backbone (a random-initialised "
               "diffusers UNet config), exactly one of the three")
        _check(not self.init_weights or bool(self.backbone), "finetune.init_weights", "used only with finetune.backbone")
        _check(self.backbone_type in ("UNet2DConditionModel", "UNet2DModel"), "finetune.backbone_type",
               "'UNet2DConditionModel' or 'UNet2DModel'")
        _check(self.ratio_range == [] or (len(self.ratio_range) == 2 and 0 < self.ratio_range[0] <= self.ratio_range[1] <= 1),
               "finetune.ratio_range", "[] or [low, high] with 0 < low <= high <= 1")
        _check(self.acceleration_range == [] or (len(self.acceleration_range) == 2
                                                 and 1 <= self.acceleration_range[0] <= self.acceleration_range[1]),
               "finetune.acceleration_range", "[] or [low, high] with 1 <= low <= high")
        from idm_imaging.operators.masks import MASK_KINDS

        _check(len(self.mask_kinds) >= 1 and all(k in MASK_KINDS for k in self.mask_kinds), "finetune.mask_kinds",
               f"a non-empty list of {sorted(MASK_KINDS)}")
        _check(self.T >= 1, "finetune.T", ">= 1")
        _check(self.task in ("cs", "mri"), "finetune.task", "'cs' or 'mri'")
        _check(0 < self.ratio <= 1, "finetune.ratio", "in (0, 1]")
        _check(self.block_size >= 1, "finetune.block_size", ">= 1")
        _check(self.acceleration >= 1, "finetune.acceleration", ">= 1")
        _check(0 < self.center_fraction < 1, "finetune.center_fraction", "in (0, 1)")
        _check(self.noise_sigma >= 0, "finetune.noise_sigma", ">= 0")
        _check(isinstance(self.idm, dict), "finetune.idm", "a table")


@dataclass
class RunConfig:
    """A whole run. ``config_dir`` (not a TOML key) is where relative paths resolve."""

    stage: str = "prior"
    seed: int = 0
    output_dir: str = "runs/run"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    finetune: FinetuneConfig | None = None
    config_dir: str = "."

    def validate(self) -> None:
        _check(self.stage in ("prior", "finetune"), "stage", "'prior' or 'finetune'")
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed", "an int >= 0")
        _check(isinstance(self.output_dir, str) and self.output_dir != "", "output_dir", "a path")
        self.data.validate()
        self.train.validate()
        if self.stage == "prior":
            self.prior.validate()
        else:
            _check(self.finetune is not None, "finetune", "a [finetune] table for stage 'finetune'")
            self.finetune.validate()

    def resolve(self, path: str) -> Path:
        """Expand ``~``/``$VARS`` and resolve a relative path against the config file's folder.
        ``$IDM_IMAGING_DATA`` is the datasets folder of :func:`idm_imaging.data_root` even when the variable is
        unset."""
        if "IDM_IMAGING_DATA" in path and not os.environ.get("IDM_IMAGING_DATA"):
            from idm_imaging.datasets import data_root

            try:
                root = str(data_root())
            except FileNotFoundError as err:
                raise ValueError(f"{path}: {err}") from None
            path = path.replace("${IDM_IMAGING_DATA}", root).replace("$IDM_IMAGING_DATA", root)
        p = Path(os.path.expandvars(os.path.expanduser(path)))
        return p if p.is_absolute() else (Path(self.config_dir) / p).resolve()

    def model_ref(self, value: str) -> str:
        """``finetune.prior`` / ``finetune.init``: an embedded model name (``"prior-gray"``, ``"cs"``) as is,
        anything else a path resolved like :meth:`resolve`; ``""`` (not set) stays ``""``."""
        from idm_imaging.models.registry import REGISTRY, resolve_name

        return value if not value or resolve_name(value)[0] in REGISTRY else str(self.resolve(value))

    @property
    def output_path(self) -> Path:
        return self.resolve(self.output_dir)

    def to_dict(self) -> dict:
        """Resolved, JSON-serialisable form (paths made absolute); ``load_config`` accepts it back."""
        d = dataclasses.asdict(self)
        d.pop("config_dir")
        d["output_dir"] = str(self.output_path)
        d["data"]["train"] = [str(self.resolve(p)) for p in self.data.train]
        if self.finetune is not None:
            for key in ("prior", "init", "init_weights"):
                d["finetune"][key] = self.model_ref(d["finetune"][key])
        else:
            d.pop("finetune")
        if self.stage == "finetune":
            d.pop("prior")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _check(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise ValueError(f"config key {key!r} must be {what}")


_SECTIONS = {"data": DataConfig, "train": TrainConfig, "prior": PriorConfig, "finetune": FinetuneConfig}


def _coerce(key: str, value: Any, default: Any, annotation: str) -> Any:
    """Check ``value`` against the field's type (taken from its annotation); ints are accepted for floats."""
    ann = annotation.replace(" ", "")
    if ann.startswith("bool"):
        ok = isinstance(value, bool)
    elif ann.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif ann.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif ann.startswith("str"):
        ok = isinstance(value, str)
    elif ann.startswith("list"):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
    elif ann.startswith("dict"):
        ok = isinstance(value, dict)
    else:  # pragma: no cover - every field has one of the types above
        ok = True
    if not ok:
        raise ValueError(f"config key {key!r} has the wrong type: expected {annotation}, got {type(value).__name__}")
    return value


def _build(cls, table: Any, prefix: str):
    if not isinstance(table, dict):
        raise ValueError(f"config key {prefix!r} must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in table.items():
        key = f"{prefix}.{k}" if prefix else k
        if k not in fields or k == "config_dir":
            raise ValueError(f"unknown config key {key!r}")
        if k in _SECTIONS and cls is RunConfig:
            if k == "finetune" and isinstance(v, dict) and "fresh_mask_per_step" in v:  # the former name
                v = {("fresh_operator_per_step" if kk == "fresh_mask_per_step" else kk): vv for kk, vv in v.items()}
            kwargs[k] = _build(_SECTIONS[k], v, k)
        else:
            kwargs[k] = _coerce(key, v, fields[k].default, str(fields[k].type))
    return cls(**kwargs)


def load_config(source: str | os.PathLike | dict | RunConfig) -> RunConfig:
    """Read and validate a run config.

    Args:
        source (`str`, `os.PathLike`, `dict` or `RunConfig`):
            A path to a ``.toml`` (or ``.json``, e.g. a saved ``train_config.json``) file, a dict with the same
            structure, or a ``RunConfig`` (validated and returned).

    Returns:
        `RunConfig`: the validated config.

    Raises:
        ValueError: unknown key, wrong type or bad value; the message names the key (``"train.lr"``).
        FileNotFoundError: the file does not exist.
    """
    if isinstance(source, RunConfig):
        source.validate()
        return source
    config_dir = Path.cwd()
    if isinstance(source, dict):
        table = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            table = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"config file {path} is not valid {path.suffix[1:].upper()}: {e}") from e
        config_dir = path.resolve().parent
    else:
        raise TypeError(f"config must be a path, dict or RunConfig, got {type(source).__name__}")
    cfg = _build(RunConfig, table, "")
    cfg.config_dir = str(config_dir)
    cfg.validate()
    return cfg
