"""One training loop for both stages: DDP, Adam + LR schedule, bf16 autocast, clipping, EMA, exact resume.

Output folder layout::

    <output_dir>/train_config.json       resolved config of the run
    <output_dir>/log.csv                 step, loss, lr, seconds (rank 0; loss averaged over ranks)
    <output_dir>/checkpoints/step-N/     see idm_imaging.training.checkpoint (atomic, safetensors + JSON)
    <output_dir>/model/                  final weights, save_pretrained (EMA weights when EMA is on)
    <output_dir>/final_state.json        steps, world size, per-rank sha256 of the final weights

Determinism: a step's randomness (noise, timesteps, MRI masks) comes from a CPU ``torch.Generator`` seeded by
``(seed, rank, step)``; a patch's from ``(seed, epoch, index)``; the epoch order from ``DistributedSampler``
seeded by ``seed``. A resumed run therefore replays exactly the batches and noise an uninterrupted run sees,
and the checkpoint restores weights, Adam moments, LR schedule, EMA and the global RNG states.

Example::

    >>> from idm_imaging.training import train
    >>> out = train("configs/tiny-prior.toml")            # doctest: +SKIP
    >>> out = train("configs/tiny-prior.toml", resume=True)  # continues from out/checkpoints/latest  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from idm_imaging.inference import resolve_device
from idm_imaging.training import checkpoint as ckpt
from idm_imaging.training.config import RunConfig, TrainConfig, load_config
from idm_imaging.training.data import PatchDataset, batches_per_epoch, make_loader
from idm_imaging.training.distributed import DistInfo, barrier, cleanup_distributed, init_distributed, local_device

__all__ = ["train", "make_stage", "make_lr_scheduler", "weights_sha256"]


def make_stage(cfg: RunConfig):
    """The stage object (``PriorStage`` or ``FinetuneStage``) for ``cfg.stage``."""
    if cfg.stage == "prior":
        from idm_imaging.training.prior import PriorStage

        return PriorStage(cfg)
    from idm_imaging.training.finetune import FinetuneStage

    return FinetuneStage(cfg)


class CosineWithWarmup:
    """LR factor: linear warm-up, then half a cosine to 0 at ``total`` steps (diffusers' formula).

    A callable object rather than a closure so that ``LambdaLR.state_dict`` saves ``total`` and ``anchor``,
    which ``train.fit_to_time`` moves mid-run (:meth:`refit`); a resumed run gets them back from the checkpoint.
    """

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = warmup, total
        self.anchor = (warmup, 0.0)  # (step, cosine progress) the schedule runs on from; moved by refit()

    def progress(self, s: int) -> float:
        s0, p0 = self.anchor
        return p0 + (1.0 - p0) * (s - s0) / max(1, self.total - s0)

    def __call__(self, s: int) -> float:
        if s < self.warmup:
            return s / max(1, self.warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, self.progress(s)))))

    def refit(self, step: int, total: int) -> None:
        """End the cosine at ``total`` instead, running on from where it is at ``step``: longer or shorter, the
        LR stays continuous and never rises."""
        if step >= self.warmup:
            self.anchor = (step, min(1.0, self.progress(step)))
        self.total = total


def make_lr_scheduler(opt: torch.optim.Optimizer, tc: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant, step decay (x step_gamma every step_size steps) or cosine to 0."""
    from diffusers.optimization import get_constant_schedule_with_warmup

    if tc.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, CosineWithWarmup(tc.warmup_steps, tc.steps))
    if tc.schedule == "constant":
        return get_constant_schedule_with_warmup(opt, tc.warmup_steps)
    w, size, gamma = tc.warmup_steps, tc.step_size, tc.step_gamma

    def step_decay(s: int) -> float:
        return (s + 1) / w if s < w else gamma ** ((s - w) // size)

    return torch.optim.lr_scheduler.LambdaLR(opt, step_decay)


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the raw bytes of every state-dict tensor, in state-dict order."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence((seed, rank, step)).generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


class _CsvLog:
    """``log.csv`` with columns step, loss, lr, seconds; on resume rows past the checkpoint are dropped."""

    FIELDS = ("step", "loss", "lr", "seconds")

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if resume_step > 0 and path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.FIELDS)
        w.writeheader()
        w.writerows(rows)
        ckpt.atomic_write_text(path, buf.getvalue())
        self.f = open(path, "a", newline="", encoding="utf-8")
        self.w = csv.writer(self.f)

    def write(self, step: int, loss: float, lr: float, seconds: float) -> None:
        self.w.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{seconds:.2f}"])
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _save_checkpoint(out: Path, step: int, elapsed: float, cfg: RunConfig, stage, model, opt, sched, ema,
                     info: DistInfo) -> None:
    root = out / "checkpoints"
    name = f"step-{step:08d}"
    tmp = root / f".tmp-{name}"
    if info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        stage.save_model(model, tmp / "model")
        state = {"step": step, "elapsed": elapsed, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "ema": ema.state_dict() if ema is not None else None}
        ckpt.save_state(state, tmp, "train_state")
        (tmp / "train_config.json").write_text(cfg.to_json(), encoding="utf-8")
    barrier(info)
    ckpt.save_state(ckpt.rng_state(), tmp, f"rng-rank{info.rank}")
    barrier(info)
    if info.is_main:
        ckpt.write_checksums(tmp)
        final = root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        ckpt.atomic_write_text(root / "latest", name)
        ckpt.prune_checkpoints(root, cfg.train.keep_checkpoints)
    barrier(info)


def train(config, resume: bool = False) -> Path:
    """Run (or resume) the training run a config describes; return its output folder.

    Args:
        config (`str`, `os.PathLike`, `dict` or `RunConfig`):
            Path to a TOML/JSON config, a dict, or a ``RunConfig`` (see
            :func:`~idm_imaging.training.config.load_config`).
        resume (`bool`, *optional*, defaults to `False`):
            Whether to continue from ``<output_dir>/checkpoints/latest`` (a fresh start when there is none).

    Returns:
        `Path`: the run's output folder.

    Under torchrun (``WORLD_SIZE > 1``) every process calls this; the process group is created from the
    environment (NCCL on CUDA, gloo on CPU) and destroyed at the end.

    Raises:
        ValueError: bad config (naming the key), no data, or ``output_dir`` already holds checkpoints and
            ``resume`` is False.
    """
    cfg = load_config(config)
    device = resolve_device(cfg.train.device, "config key 'train.device'")
    info = init_distributed(device.type)
    try:
        return _run(cfg, info, local_device(device, info), resume)
    finally:
        cleanup_distributed(info)


def _run(cfg: RunConfig, info: DistInfo, device: torch.device, resume: bool) -> Path:
    """Set the run up (resuming from the latest checkpoint when asked), train, then save the final record."""
    tc = cfg.train
    out = cfg.output_path
    ck = _prepare_output(cfg, out, info, resume)
    _seed(cfg, device)
    p = _build(cfg, info, device)
    step, elapsed, total_steps = _resume(ck, p, tc, info, device)
    _wrap(p, tc, info, device)
    outputs = _Outputs(out, cfg, info, step, total_steps)
    clock = _CLOCKS[tc.clock]
    # The running loss stays on the device: one host sync per log interval, not per step.
    st = _Progress(step=step, total_steps=total_steps, clock=clock, t0=clock() - elapsed,
                   loss_sum=torch.zeros((), dtype=torch.float64, device=device))
    p.model.train()
    try:
        _train_loop(cfg, info, device, out, p, st, outputs)
    finally:
        outputs.close()

    _finish(out, cfg, p.stage, p.model, p.ema, info, device, st.step, st.clock() - st.t0)
    return out


@dataclass
class _Parts:
    """What the loop trains with: stage, model (``net``: wrapped for DDP / compile), data, optimiser, schedule,
    EMA and the autocast context."""

    stage: Any
    model: torch.nn.Module
    dataset: PatchDataset
    batches_per_epoch: int
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    ema: Any
    net: Any = None
    autocast: Callable = contextlib.nullcontext


@dataclass
class _Progress:
    """The loop's running state: step, total steps (moved by ``fit_to_time``), clock, loss since the last log
    point, the time budget's verdict and the step-rate mark."""

    step: int
    total_steps: int
    clock: Callable[[], float]
    t0: float
    loss_sum: torch.Tensor
    loss_n: int = 0
    out_of_time: bool = False
    # (step, time) at this process's first log point: the mean step rate is timed from there
    rate_mark: tuple[int, float] | None = None


class _Outputs:
    """Rank 0's progress outputs: ``log.csv``, TensorBoard (when installed) and the progress bar; None elsewhere."""

    def __init__(self, out: Path, cfg: RunConfig, info: DistInfo, step: int, total_steps: int):
        self.log = _CsvLog(out / "log.csv", step) if info.is_main else None
        self.tb = _tensorboard(out) if info.is_main else None
        self.bar = None
        if info.is_main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=step, desc=f"{cfg.stage}", unit="it", dynamic_ncols=True)

    def write(self, step: int, loss: float, lr: float, seconds: float) -> None:
        """Record a log point in ``log.csv``, TensorBoard and the progress bar."""
        self.log.write(step, loss, lr, seconds)
        if self.tb is not None:
            self.tb.add_scalar("loss", loss, step)
            self.tb.add_scalar("lr", lr, step)
        self.bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2e}")

    def close(self) -> None:
        """Close the progress bar, ``log.csv`` and the TensorBoard writer."""
        if self.bar is not None:
            self.bar.close()
        if self.log is not None:
            self.log.close()
        if self.tb is not None:
            self.tb.close()


def _prepare_output(cfg: RunConfig, out: Path, info: DistInfo, resume: bool) -> Path | None:
    """Check the output folder, write ``train_config.json`` (rank 0) and return the checkpoint to resume from."""
    ckpt.check_output_dir(out, resume)
    ck = ckpt.latest_checkpoint(out) if resume else None
    barrier(info)  # every rank checks the folder before rank 0 writes into it
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(out / "train_config.json", cfg.to_json())
    barrier(info)
    return ck


def _seed(cfg: RunConfig, device: torch.device) -> None:
    """Seed torch, NumPy and ``random`` from ``cfg.seed`` (and flush CPU denormals)."""
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormals (dark image regions, tiny grads) slow CPU kernels many-fold
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)


def _build(cfg: RunConfig, info: DistInfo, device: torch.device) -> _Parts:
    """Build the stage, its model, the patch dataset, Adam, the LR schedule and the EMA."""
    tc = cfg.train
    stage = make_stage(cfg)
    model = stage.build_model().to(device)
    dataset = PatchDataset([str(cfg.resolve(p)) for p in cfg.data.train], cfg.data.patch_size, seed=cfg.seed,
                           augment=cfg.data.augment, complex_mode=stage.complex_mode)
    bpe = batches_per_epoch(dataset, cfg.data.batch_size, info.world_size)
    if bpe == 0:
        raise ValueError(f"config key 'data.batch_size' ({cfg.data.batch_size}) exceeds the {len(dataset)} slices "
                         f"each of {info.world_size} rank(s) gets")

    # Fused Adam on CUDA: one kernel per step instead of several per parameter (the small models are launch-bound).
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tuple(tc.adam_betas), weight_decay=tc.weight_decay,
                           fused=device.type == "cuda")
    sched = make_lr_scheduler(opt, tc)
    ema = None
    if tc.ema_decay > 0:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(model.parameters(), decay=tc.ema_decay)
    return _Parts(stage, model, dataset, bpe, opt, sched, ema)


def _resume(ck: Path | None, p: _Parts, tc: TrainConfig, info: DistInfo,
            device: torch.device) -> tuple[int, float, int]:
    """Restore weights, optimiser, schedule, EMA and this rank's RNG states from checkpoint ``ck``; return
    ``(step, elapsed seconds, total steps)`` (a fresh start without one)."""
    total_steps = tc.steps
    if ck is None:
        return 0, 0.0, total_steps
    ckpt.load_model_weights(p.model, ck / "model")
    st = ckpt.load_state(ck, "train_state")
    p.opt.load_state_dict(st["optimizer"])
    p.sched.load_state_dict(st["scheduler"])
    if p.ema is not None:
        if st["ema"] is None:
            raise ValueError(f"checkpoint {ck} has no EMA state but config key 'train.ema_decay' enables EMA")
        p.ema.load_state_dict(st["ema"])
        p.ema.to(device)
    step, elapsed = int(st["step"]), float(st["elapsed"])
    if tc.fit_to_time:
        total_steps = p.sched.lr_lambdas[0].total
    rng_file = ck / f"rng-rank{info.rank}.json"
    ckpt.set_rng_state(ckpt.load_state(ck, f"rng-rank{info.rank}" if rng_file.is_file() else "rng-rank0"))
    return step, elapsed, total_steps


def _wrap(p: _Parts, tc: TrainConfig, info: DistInfo, device: torch.device) -> None:
    """Set ``p.net`` (the model under DDP and ``torch.compile`` when on) and ``p.autocast`` (bf16 or none)."""
    net = p.model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(p.model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        net = torch.compile(net)
    p.net = net
    from idm_imaging.inference import bf16_is_fast

    # "auto": bf16 where the device runs it natively (emulated bf16 on a CPU is many times slower than fp32)
    use_bf16 = tc.mixed_precision == "bf16" or (tc.mixed_precision == "auto" and bf16_is_fast(device))
    p.autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext


def _train_loop(cfg: RunConfig, info: DistInfo, device: torch.device, out: Path, p: _Parts, st: _Progress,
                outputs: _Outputs) -> None:
    """Train epoch by epoch until the total steps are done or the time is up, logging and checkpointing."""
    tc = cfg.train
    while st.step < st.total_steps and not st.out_of_time:
        epoch, b0 = divmod(st.step, p.batches_per_epoch)
        loader = make_loader(p.dataset, cfg.data.batch_size, epoch, cfg.seed, info.rank, info.world_size,
                             start_batch=b0, num_workers=cfg.data.num_workers)
        for x in loader:
            lr_used = _optimisation_step(cfg, info, device, p, st, x)
            if st.step % tc.log_every == 0 or st.step == st.total_steps:
                _log_point(tc, info, device, p, st, outputs, lr_used)
            if outputs.bar is not None:
                outputs.bar.update(1)
            if st.step % tc.checkpoint_every == 0 or st.step == st.total_steps or st.out_of_time:
                _save_checkpoint(out, st.step, st.clock() - st.t0, cfg, p.stage, p.model, p.opt, p.sched, p.ema,
                                 info)
            if st.step >= st.total_steps or st.out_of_time:
                break


def _optimisation_step(cfg: RunConfig, info: DistInfo, device: torch.device, p: _Parts, st: _Progress,
                       x: torch.Tensor) -> float:
    """One step on batch ``x`` (loss, backward, clipping, Adam, schedule, EMA); return the learning rate it used."""
    tc = cfg.train
    gen = torch.Generator().manual_seed(_step_seed(cfg.seed, info.rank, st.step))
    x = x.to(device, non_blocking=True)
    with p.autocast():
        loss = p.stage.loss(p.net, x, gen, st.step)
    p.opt.zero_grad(set_to_none=True)
    loss.backward()
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(p.model.parameters(), tc.grad_clip)
    lr_used = p.opt.param_groups[0]["lr"]
    p.opt.step()
    p.sched.step()
    if p.ema is not None:
        p.ema.step(p.model.parameters())
    st.step += 1
    st.loss_sum += loss.detach()
    st.loss_n += 1
    return lr_used


def _log_point(tc: TrainConfig, info: DistInfo, device: torch.device, p: _Parts, st: _Progress, outputs: _Outputs,
               lr_used: float) -> None:
    """Log the loss averaged over the interval and the ranks, check the time budget and (``fit_to_time``) refit
    the schedule's length to the measured step rate."""
    mean = st.loss_sum / st.loss_n
    if info.enabled:
        torch.distributed.all_reduce(mean)
        mean /= info.world_size
    mean_value = mean.item()
    if not math.isfinite(mean_value):
        raise FloatingPointError(f"non-finite loss {mean_value} in the steps up to {st.step}")
    st.loss_sum, st.loss_n = torch.zeros_like(st.loss_sum), 0
    if info.is_main:
        outputs.write(st.step, mean_value, lr_used, st.clock() - st.t0)
    st.out_of_time = _out_of_time(tc.max_seconds, st.clock() - st.t0, info, device)
    if tc.fit_to_time and st.rate_mark is None:
        st.rate_mark = (st.step, st.clock())
    elif tc.fit_to_time:  # refitted at every log point: the machine may slow down or speed up
        now = st.clock()
        st.total_steps = _fit_steps(tc, st.step, st.rate_mark, now, now - st.t0, info, device)
        p.sched.lr_lambdas[0].refit(p.sched.last_epoch, st.total_steps)
        st.rate_mark = (st.step, now)  # the next fit uses the latest interval's rate
        if outputs.bar is not None:
            outputs.bar.total = st.total_steps


# train.clock: "wall" seconds, or "cpu" seconds of this process (a budget that other load on the machine does not
# eat: what a design study compares arms on)
_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _fit_steps(tc: TrainConfig, step: int, mark: tuple[int, float], now: float, elapsed: float, info: DistInfo,
               device) -> int:
    """Total steps that end the cosine inside ``max_seconds`` at the step rate since ``mark`` (rank 0's figure,
    so that every rank keeps the same schedule); never more than ``train.steps``, never fewer than done."""
    rate = (step - mark[0]) / max(now - mark[1], 1e-9)
    fitted = step + int(0.97 * rate * max(tc.max_seconds - elapsed, 0.0))  # 3 %: final save, slower steps
    total = torch.tensor([float(min(tc.steps, max(fitted, step + 1)))], device=device)
    if info.enabled:
        torch.distributed.broadcast(total, src=0)
    return int(total.item())


def _out_of_time(max_seconds: float, elapsed: float, info: DistInfo, device) -> bool:
    """True once the wall-clock budget is spent; every rank takes rank 0's decision so that all stop together."""
    if max_seconds <= 0:
        return False
    flag = torch.tensor([float(elapsed > max_seconds)], device=device)
    if info.enabled:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def _finish(out: Path, cfg: RunConfig, stage, model, ema, info: DistInfo, device, step: int, seconds: float) -> None:
    """Check every rank holds the same weights, then save ``model/`` (EMA weights when EMA is on)."""
    digest = weights_sha256(model)
    digests = [digest]
    if info.enabled:
        mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8, device=device)
        gathered = [torch.empty_like(mine) for _ in range(info.world_size)]
        torch.distributed.all_gather(gathered, mine)
        digests = [bytes(g.cpu().tolist()).hex() for g in gathered]
    if info.is_main:
        if ema is not None:
            ema.store(model.parameters())
            ema.copy_to(model.parameters())
        tmp = out / ".tmp-model"
        shutil.rmtree(tmp, ignore_errors=True)
        stage.save_model(model, tmp)
        shutil.rmtree(out / "model", ignore_errors=True)
        os.replace(tmp, out / "model")
        if ema is not None:
            ema.restore(model.parameters())
        state = {"steps": step, "seconds": round(seconds, 2), "world_size": info.world_size,
                 "rank_weight_sha256": digests, "ranks_identical": len(set(digests)) == 1,
                 "ema": ema is not None, "device": str(device)}
        ckpt.atomic_write_text(out / "final_state.json", json.dumps(state, indent=2))
    barrier(info)
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP ranks ended with different weights: {digests}")
