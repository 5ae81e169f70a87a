"""IDM inference and training speed and memory on a GPU, at the paper's scale (random weights, nothing downloaded).

Prints one JSON object (also written to ``--out`` after every item, atomically, so that an interrupted run keeps
what it measured) with the device name, torch version, date and these figures, each in its own try/except
(errors land in ``"errors"``); items left when ``--budget-s`` is spent are listed in ``"skipped"``:

* ``infer``: SD-1.5 layout (115M parameters after IDM's surgery), 256x256, T = 3, batch 1, ms/image, fp32 and
  bf16 autocast (warm-up, then medians of ``torch.cuda.synchronize``-timed calls);
* ``throughput``: best images/s over batch sizes (1, 4, 16, 32), bf16; ``infer_512``: 512x512 ms/image, bf16;
* ``psnr_bf16_vs_fp32``: PSNR of the bf16 and fp32 reconstructions of a few images (skimage's camera and
  friends resized to 256, or ``--images DIR``) and their difference;
* ``train_memory_b1``: peak memory of one training step (forward + L1 + backward), batch 1, 256x256, bf16,
  reversible vs plain autograd (plain may run out of memory: recorded);
* ``train_step_b8``: reversible bf16 step time (forward + backward + fused Adam), batch 8, 256x256;
* ``small_train*``: the ``small`` layout (64/128/256/256), T = 3, batch 16 of 128x128, it/s with fused Adam +
  bf16: reversible, plain, channels-last, and the whole step as one CUDA graph;
* ``volume_small`` / ``volume_sd15``: a 160 x 256 x 256 volume reconstructed 32 slices at a time;
* ``variant_*``: channels-last, CUDA graphs and ``torch.compile`` of the inference path (capture and compile
  times reported separately).

Run (a CUDA GPU, ``pip install -e .``; about 10 minutes with ``torch.compile``)::

    python benchmarks/gpu_bench.py --out benchmarks/results/$(date +%F)_h100_gpu_bench.json

``--skip NAME ...`` leaves items out; ``--tiny`` runs tiny sizes on the CPU (< 60 s) to test the script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _layouts import layout  # noqa: E402

FULL = dict(layout="sd15", size=256, batches=(1, 4, 16, 32), big=512, train_size=256, train_batch=8,
            small_layout="small", small_size=128, small_batch=16, small_iters=20, volume=(160, 256, 256),
            volume_batch=32, warmup=3, iters=10, n_images=6)
TINY = dict(layout="tiny", size=64, batches=(1, 2), big=128, train_size=64, train_batch=2,
            small_layout="tiny", small_size=64, small_batch=2, small_iters=2, volume=(8, 64, 64),
            volume_batch=4, warmup=1, iters=2, n_images=2)


class Bench:
    """Holds the device, the results dict and the budget; ``item(name, fn)`` runs one figure safely."""

    def __init__(self, args, sizes):
        import torch

        self.torch, self.args, self.S = torch, args, sizes
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.t_start = time.perf_counter()
        self.res = {"script": "benchmarks/gpu_bench.py", "date": datetime.datetime.now().isoformat(timespec="seconds"),
                    "torch": torch.__version__, "python": platform.python_version(), "device": str(self.dev),
                    "device_name": torch.cuda.get_device_name(0) if self.cuda else platform.processor() or "cpu",
                    "tiny": args.tiny, "budget_s": args.budget_s, "sizes": {k: v for k, v in sizes.items()},
                    "skipped": [], "errors": {}, "variants": {}}
        self.state = {}  # models shared between items
        if self.cuda:
            p = torch.cuda.get_device_properties(0)
            self.res.update(cuda=torch.version.cuda, gpu_mem_gib=round(p.total_memory / 2**30, 1),
                            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                            tf32_cudnn=torch.backends.cudnn.allow_tf32)
        try:
            import diffusers

            self.res["diffusers"] = diffusers.__version__
        except Exception as e:  # noqa: BLE001
            self.res["errors"]["import_diffusers"] = repr(e)

    # -- helpers -----------------------------------------------------------------------------------------
    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t_start)

    def save(self):
        self.res["elapsed_s"] = round(time.perf_counter() - self.t_start, 1)
        if self.args.out:
            from idm_imaging.io import atomic_write_text

            atomic_write_text(self.args.out, json.dumps(self.res, indent=1))

    def item(self, name, fn, need_s=0.0):
        """Run ``fn()`` and store its result under ``name``; skip when fewer than ``need_s`` seconds are left."""
        if name in self.args.skip:
            self.res["skipped"].append(f"{name} (--skip)")
            return None
        if self.left() < max(need_s, 1.0):
            self.res["skipped"].append(f"{name} (budget: {self.left():.0f} s left, needs ~{need_s:.0f})")
            self.save()
            return None
        t0 = time.perf_counter()
        try:
            out = fn()
            if isinstance(out, dict):
                out.setdefault("item_s", round(time.perf_counter() - t0, 1))
            self.res[name] = out
        except Exception as e:  # noqa: BLE001 (one failure must not lose the other figures)
            self.res["errors"][name] = f"{type(e).__name__}: {e}"[:800]
            if self.args.verbose:
                traceback.print_exc()
            out = None
        finally:
            if self.cuda:
                self.torch.cuda.empty_cache()
            print(f"[gpu_bench] {name}: {time.perf_counter() - t0:.1f} s, {self.left():.0f} s left", file=sys.stderr)
            self.save()
        return out

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def timeit(self, fn, warmup=None, iters=None, max_s=None):
        """Median seconds of ``fn()`` (synchronised); stops early after ``max_s`` seconds of timed calls."""
        warmup = self.S["warmup"] if warmup is None else warmup
        iters = self.S["iters"] if iters is None else iters
        for _ in range(warmup):
            fn()
        self.sync()
        times, t_all = [], time.perf_counter()
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
            if max_s is not None and time.perf_counter() - t_all > max_s:
                break
        return statistics.median(times), len(times)

    def autocast(self, amp: bool):
        return self.torch.autocast(self.dev.type, dtype=self.torch.bfloat16, enabled=amp)

    def peak_reset(self):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            return self.torch.cuda.memory_allocated()
        return 0

    def peak_gib(self, before):
        if not self.cuda:
            return None
        self.torch.cuda.synchronize()
        return round((self.torch.cuda.max_memory_allocated() - before) / 2**30, 3)

    # -- model pieces --------------------------------------------------------------------------------------
    def sd(self):
        """The SD-1.5-layout model (eval mode), built once and shared by the items."""
        if "sd" not in self.state:
            self.state["sd"] = self.build(self.S["layout"]).eval()
            self.res["sd_params_m"] = round(sum(p.numel() for p in self.state["sd"].parameters()) / 1e6, 2)
        return self.state["sd"]

    def build(self, name, T=3, reversible=True):
        from idm_imaging.models import IDM

        self.torch.manual_seed(0)
        model = IDM(backbone_config=layout(name), T=T, reversible=reversible)
        return model.to(self.dev)

    def problem(self, batch, size, ratio=0.1, seed=0):
        from idm_imaging.operators import BlockCS

        g = self.torch.Generator().manual_seed(seed)
        x = self.torch.rand(batch, 1, size, size, generator=g).to(self.dev)
        op = BlockCS(ratio, block_size=32).to(self.dev)
        return op, x, op.A(x)

    def optimizer(self, model):
        torch = self.torch
        try:
            return torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(model.parameters(), lr=1e-4, foreach=True)

    def train_step(self, model, opt, op, x, y, amp=True):
        with self.autocast(amp):
            x_hat = model(y, op)
        loss = (x_hat.float() - x).abs().mean()
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
        return loss


def infer_core(model, op):
    """The inference path without the input checks (no host sync: capturable / compilable)."""

    def run(y):
        x, ctx = model._prepare(y, op)
        y1, y2 = model.sampler(x, x * model.input_scale, (), ctx)
        return y1 + y2 * model.merge_scale

    return run


def load_images(args, size, n):
    """Grayscale float images in [0, 1], ``size`` x ``size`` (centre-cropped square, then resized)."""
    import numpy as np
    from skimage import color, data, io, transform

    def prep(im):
        im = np.asarray(im)
        if im.ndim == 3:
            im = color.rgb2gray(im[..., :3])
        im = im.astype(np.float64)
        im = (im - im.min()) / max(im.max() - im.min(), 1e-8)
        h, w = im.shape
        s = min(h, w)
        im = im[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        return transform.resize(im, (size, size), anti_aliasing=True).astype(np.float32)

    out, names = [], []
    if args.images:
        exts = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
        files = sorted(f for f in os.listdir(args.images) if f.lower().endswith(exts))
        if not files:
            raise ValueError(f"--images: no image files in {args.images}")
        for f in files[:n]:
            out.append(prep(io.imread(os.path.join(args.images, f))))
            names.append(f)
    else:
        for name in ("camera", "astronaut", "coins", "moon", "text", "page", "brick", "grass", "coffee", "chelsea"):
            if len(out) >= n:
                break
            try:
                out.append(prep(getattr(data, name)()))
                names.append(name)
            except Exception:  # noqa: BLE001 (some skimage images need a download)
                continue
    return np.stack(out)[:, None], names


# --- the items: each takes the Bench and returns a JSON-able dict -----------------------------------------
def item_infer(B):
    """SD-1.5 layout, batch 1: ms per image in fp32 and under bf16 autocast."""
    torch, model = B.torch, B.sd()
    op, x, y = B.problem(1, B.S["size"])
    out = {}
    for amp in (False, True):
        with torch.no_grad(), B.autocast(amp):
            t, n = B.timeit(lambda: model(y, op))
        out["bf16_ms" if amp else "fp32_ms"] = round(t * 1e3, 2)
    out["speedup_vs_reference_bf16"] = round(95.0 / out["bf16_ms"], 2) if not B.args.tiny else None
    out["target_ms"] = 20
    return out


def item_throughput(B):
    """Images per second under bf16 at each batch size (out of memory recorded as "OOM")."""
    torch, model = B.torch, B.sd()
    per = {}
    for b in B.S["batches"]:
        op, x, y = B.problem(b, B.S["size"])
        try:
            with torch.no_grad(), B.autocast(True):
                t, n = B.timeit(lambda: model(y, op), warmup=2, iters=5, max_s=10)
            per[b] = round(b / t, 1)
        except torch.OutOfMemoryError:
            per[b] = "OOM"
        if B.left() < 20:
            break
    nums = {b: v for b, v in per.items() if isinstance(v, float)}
    best = max(nums, key=nums.get)
    return {"images_per_s": per, "best_batch": best, "best_images_per_s": nums[best], "target": 200}


def item_infer_512(B):
    """512x512, batch 1, bf16."""
    torch, model = B.torch, B.sd()
    op, x, y = B.problem(1, B.S["big"])
    with torch.no_grad(), B.autocast(True):
        t, n = B.timeit(lambda: model(y, op), warmup=2, iters=5)
    return {"bf16_ms": round(t * 1e3, 1), "target_ms": 100}


def item_psnr(B):
    """PSNR of the fp32 and bf16 reconstructions of real images, and their difference."""
    from skimage.metrics import peak_signal_noise_ratio as psnr_fn

    torch, model = B.torch, B.sd()
    imgs, names = load_images(B.args, B.S["size"], B.S["n_images"])
    op, _, _ = B.problem(1, B.S["size"])
    x = torch.from_numpy(imgs).to(B.dev)
    y = op.A(x)
    outs = {}
    for amp in (False, True):
        with torch.no_grad(), B.autocast(amp):
            outs[amp] = torch.cat([model(y[i:i + 1], op) for i in range(len(x))]).float().clamp(0, 1).cpu().numpy()
    p32 = [psnr_fn(imgs[i, 0], outs[False][i, 0], data_range=1.0) for i in range(len(imgs))]
    p16 = [psnr_fn(imgs[i, 0], outs[True][i, 0], data_range=1.0) for i in range(len(imgs))]
    d = [abs(a - b) for a, b in zip(p16, p32)]
    between = [psnr_fn(outs[False][i, 0], outs[True][i, 0], data_range=1.0) for i in range(len(imgs))]
    return {"images": names, "psnr_fp32": [round(v, 3) for v in p32], "psnr_bf16": [round(v, 3) for v in p16],
            "mean_abs_diff_db": round(sum(d) / len(d), 4), "max_abs_diff_db": round(max(d), 4),
            "psnr_bf16_against_fp32_output": [round(v, 1) for v in between], "target_diff_db": 0.05,
            "note": "random weights; ratio 0.1 BlockCS"}


def item_train_memory(B):
    """Peak memory of one bf16 training step at batch 1, reversible and plain autograd."""
    torch, model = B.torch, B.sd()
    model.train()
    op, x, y = B.problem(1, B.S["train_size"])
    out = {}
    try:
        for mode in ("reversible", "plain"):
            model.reversible = mode == "reversible"
            model.zero_grad(set_to_none=True)
            before = B.peak_reset()
            try:
                t0 = time.perf_counter()
                B.train_step(model, None, op, x, y, amp=True)
                B.sync()
                out[mode] = {"peak_gib": B.peak_gib(before), "step_s": round(time.perf_counter() - t0, 3)}
            except torch.OutOfMemoryError as e:
                out[mode] = {"error": "OOM", "detail": str(e)[:200]}
            model.zero_grad(set_to_none=True)
            if B.cuda:
                torch.cuda.empty_cache()
    finally:
        model.reversible = True
        model.eval()
    r, p = out.get("reversible", {}).get("peak_gib"), out.get("plain", {}).get("peak_gib")
    if r and p:
        out["ratio"] = round(r / p, 3)
    out.update(amp="bf16", note="peak minus memory allocated before the step (weights excluded)",
               target_ratio=0.10, reference_gib={"reversible": 2.74, "plain": 14.37})
    return out


def item_train_step_b8(B):
    """Reversible bf16 training step (forward, backward, fused Adam) at batch 8."""
    model = B.sd()
    model.train()
    opt = B.optimizer(model)
    op, x, y = B.problem(B.S["train_batch"], B.S["train_size"])
    try:
        before = B.peak_reset()
        t, n = B.timeit(lambda: B.train_step(model, opt, op, x, y), warmup=1, iters=3, max_s=15)
        peak = B.peak_gib(before)
    finally:
        del opt
        model.zero_grad(set_to_none=True)
        model.eval()
    return {"step_s": round(t, 3), "n": n, "peak_gib": peak, "batch": B.S["train_batch"],
            "reference_s": 3.43, "reference_peak_gib": 13.4}


def item_small_train(B, channels_last=False, reversible=True):
    """Training it/s of the ``small`` layout, batch 16 of 128x128, fused Adam + bf16."""
    S = B.S
    model = B.build(S["small_layout"], reversible=reversible)
    if channels_last:
        model = model.to(memory_format=B.torch.channels_last)
    model.train()
    opt = B.optimizer(model)
    op, x, y = B.problem(S["small_batch"], S["small_size"])
    t, n = B.timeit(lambda: B.train_step(model, opt, op, x, y), warmup=3, iters=S["small_iters"], max_s=15)
    if reversible and not channels_last:
        B.state["small"] = model  # volume_small reuses it
    return {"it_per_s": round(1 / t, 2), "step_ms": round(t * 1e3, 1), "n": n, "batch": S["small_batch"],
            "size": S["small_size"], "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "channels_last": channels_last, "reversible": reversible, "target_it_per_s": 5, "goal": 10,
            "reference_h200": 0.95}


def item_small_train_graph(B, reversible):
    """The small-layout step captured whole in one CUDA graph (forward, L1, backward, fused capturable Adam):
    one launch per step instead of tens of thousands; the replays' losses are reported next to eager steps'."""
    torch, S = B.torch, B.S
    if not B.cuda:
        return {"skipped": "needs CUDA"}
    model = B.build(S["small_layout"], reversible=reversible).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True, capturable=True)
    op, x, y = B.problem(S["small_batch"], S["small_size"])
    core = infer_core(model, op)
    static_x, static_y = x.clone(), y.clone()
    amp = dict(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False)

    def step():
        with torch.autocast(**amp):
            out = core(static_y)
        loss = (out.float() - static_x).abs().mean()
        loss.backward()
        opt.step()
        return loss.detach()

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    eager = []
    with torch.cuda.stream(s):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            eager.append(float(step()))
    torch.cuda.current_stream().wait_stream(s)
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()
    torch.cuda.synchronize()
    capture_s = time.perf_counter() - t0
    losses = []
    for _ in range(3):
        graph.replay()
        losses.append(float(static_loss))
    t, n = B.timeit(graph.replay, warmup=2, iters=S["small_iters"], max_s=10)
    del graph
    return {"it_per_s": round(1 / t, 2), "step_ms": round(t * 1e3, 2), "n": n, "reversible": reversible,
            "capture_s": round(capture_s, 2), "eager_losses": eager, "replay_losses": losses,
            "target_it_per_s": 5, "goal": 10}


def item_volume(B, which):
    """A 160 x 256 x 256 volume reconstructed slice-batched (32 slices a batch), bf16."""
    torch, S = B.torch, B.S
    model = B.sd() if which == "sd15" else B.state.pop("small", None) or B.build(S["small_layout"])
    model.eval()
    d, h, w = S["volume"]
    op, _, _ = B.problem(1, h)
    g = torch.Generator(device=B.dev).manual_seed(0)
    vol = torch.rand(d, 1, h, w, device=B.dev, generator=g)
    ys = op.A(vol)
    bs = S["volume_batch"]

    def recon():
        with torch.no_grad(), B.autocast(True):
            return torch.cat([model(ys[i:i + bs], op) for i in range(0, d, bs)])

    recon()  # warm-up (cudnn autotune for the chunk shapes)
    B.sync()
    t0 = time.perf_counter()
    out = recon()
    B.sync()
    layout_name = which if not B.args.tiny else S["layout"] if which == "sd15" else S["small_layout"]
    return {"layout": layout_name, "seconds": round(time.perf_counter() - t0, 3), "slices": d, "shape": [d, h, w],
            "slice_batch": bs, "amp": "bf16", "out_shape": list(out.shape), "target_s": 5}


def item_channels_last(B):
    """The SD-1.5 inference path in channels-last memory format, batch 1, bf16."""
    torch = B.torch
    model = B.sd().to(memory_format=torch.channels_last)
    op, x, y = B.problem(1, B.S["size"])
    try:
        with torch.no_grad(), B.autocast(True):
            t, n = B.timeit(lambda: model(y, op))
    finally:
        model.to(memory_format=torch.contiguous_format)
    B.res["variants"]["channels_last_bf16_b1_ms"] = round(t * 1e3, 2)
    return {"bf16_b1_ms": round(t * 1e3, 2)}


def item_cuda_graph(B, batch):
    """The inference path captured in one CUDA graph; the replay is checked against the eager model."""
    torch = B.torch
    if not B.cuda:
        return {"skipped": "needs CUDA"}
    model = B.sd()
    op, x, y = B.problem(batch, B.S["size"])
    core = infer_core(model, op)
    static_y = y.clone()
    # autocast's weight-cast cache must be off: cached casts would be freed under the graph
    amp = dict(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False)
    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.autocast(**amp):
            for _ in range(3):
                core(static_y)
        torch.cuda.current_stream().wait_stream(s)
        t0 = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.autocast(**amp):
            static_out = core(static_y)
        torch.cuda.synchronize()
        capture_s = time.perf_counter() - t0
        with torch.autocast(**amp):
            ref = model(y, op)
    static_y.copy_(y)
    t, n = B.timeit(graph.replay)
    err = (static_out.float() - ref.float()).abs().max().item()
    del graph
    B.res["variants"][f"cuda_graph_bf16_b{batch}_ms_per_image"] = round(t * 1e3 / batch, 3)
    return {"ms_per_image": round(t * 1e3 / batch, 3), "images_per_s": round(batch / t, 1),
            "capture_s": round(capture_s, 2), "max_abs_diff_vs_eager": err}


def item_compile(B):
    """``torch.compile`` of the inference path, in a child process killed when the budget runs out
    (compilation cannot be interrupted and must not eat the budget)."""
    import signal
    import subprocess

    args = B.args
    B.state.clear()  # the child process needs the memory
    if B.cuda:
        B.torch.cuda.empty_cache()
    if args.compile_mode == "none":
        return {"skipped": "--compile-mode none"}
    timeout = max(B.left() - 2, 1)
    cmd = [sys.executable, os.path.abspath(__file__), "--compile-child", "--device", args.device,
           "--compile-mode", args.compile_mode] + (["--tiny"] if args.tiny else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # own process group: compile workers die with it
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"timeout after {timeout:.0f} s (budget)", "mode": args.compile_mode}
    if proc.returncode != 0:
        return {"error": (stderr.strip().splitlines() or ["failed"])[-1][:400], "mode": args.compile_mode}
    out = json.loads(stdout.strip().splitlines()[-1])
    B.res["variants"][f"compile_{args.compile_mode}_bf16_b1_ms"] = out.get("bf16_b1_ms")
    return out


def item_cuda_graph_best(B):
    """:func:`item_cuda_graph` at the batch size of the best throughput."""
    return item_cuda_graph(B, (B.res.get("throughput") or {}).get("best_batch", B.S["batches"][-1]))


# (name, fn(B), seconds it needs at least), in run order
ITEMS = (
    ("infer", item_infer, 10),
    ("throughput", item_throughput, 15),
    ("infer_512", item_infer_512, 10),
    ("psnr_bf16_vs_fp32", item_psnr, 10),
    ("train_memory_b1", item_train_memory, 15),
    ("train_step_b8", item_train_step_b8, 25),
    ("small_train", item_small_train, 15),
    # plain autograd: what configs/gpu trains with (no memory pressure at this size)
    ("small_train_plain", partial(item_small_train, reversible=False), 12),
    ("small_train_cuda_graph", partial(item_small_train_graph, reversible=False), 15),
    ("small_train_cuda_graph_reversible", partial(item_small_train_graph, reversible=True), 15),
    ("volume_small", partial(item_volume, which="small"), 10),
    ("volume_sd15", partial(item_volume, which="sd15"), 15),
    ("variant_channels_last", item_channels_last, 10),
    ("variant_cuda_graph_b1", partial(item_cuda_graph, batch=1), 10),
    ("variant_cuda_graph_best", item_cuda_graph_best, 15),
    ("small_train_channels_last", partial(item_small_train, channels_last=True), 15),
    ("variant_compile", item_compile, None),  # needs --compile-need-s
)


def run(args) -> dict:
    """Every item in order (each in its own try/except, skipped once the budget is spent); the results dict."""
    S = dict(TINY if args.tiny else FULL)
    if args.batches:
        S["batches"] = tuple(args.batches)
    B = Bench(args, S)
    if B.cuda:
        B.torch.backends.cudnn.benchmark = True
    for name, fn, need_s in ITEMS:
        if name == "variant_cuda_graph_best":  # named after its batch size, known once throughput ran
            name = f"variant_cuda_graph_b{(B.res.get('throughput') or {}).get('best_batch', S['batches'][-1])}"
        B.item(name, partial(fn, B), need_s=args.compile_need_s if need_s is None else need_s)
    B.save()
    return B.res


def compile_child(args) -> dict:
    """Build the inference model, ``torch.compile`` its core, time it; returns a dict (run in a subprocess)."""
    import torch
    import torch._dynamo

    S = TINY if args.tiny else FULL
    B = Bench(args, S)
    if B.cuda:
        torch.backends.cudnn.benchmark = True
    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    model = B.build(S["layout"]).eval()
    op, x, y = B.problem(1, S["size"])
    kw = {} if args.compile_mode == "default" else {"mode": args.compile_mode}
    compiled = torch.compile(infer_core(model, op), **kw)
    with torch.no_grad(), B.autocast(True):
        t0 = time.perf_counter()
        compiled(y)
        B.sync()
        compile_s = time.perf_counter() - t0
        t, n = B.timeit(lambda: compiled(y))
        ref = model(y, op)
        err = (compiled(y).float() - ref.float()).abs().max().item()
    return {"mode": args.compile_mode, "compile_s": round(compile_s, 1), "bf16_b1_ms": round(t * 1e3, 2),
            "max_abs_diff_vs_eager": err}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the JSON here too (rewritten after every item)")
    p.add_argument("--budget-s", type=float, default=900.0, help="skip remaining items after this many seconds")
    p.add_argument("--tiny", action="store_true", help="tiny layout and sizes (CPU smoke test, < 60 s)")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--images", help="folder of test images for the PSNR item (default: skimage's images)")
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes of the throughput item")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default: 'default'; 'none' with --tiny)",
                   choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune", "none"])
    p.add_argument("--compile-need-s", type=float, default=60.0, help="minimum budget left to try torch.compile")
    p.add_argument("--skip", nargs="*", default=[], help="item names to skip")
    p.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failed items")
    args = p.parse_args(argv)
    if args.compile_mode is None:
        args.compile_mode = "none" if args.tiny else "default"
    if args.budget_s <= 0:
        p.error("--budget-s must be positive")
    if args.images and not os.path.isdir(args.images):
        p.error(f"--images: {args.images} is not a folder")
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.compile_child:
        res = compile_child(args)
    else:
        res = run(args)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
