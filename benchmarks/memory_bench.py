"""Peak memory of one IDM training step (forward + L1 loss + backward), reversible vs plain autograd.

Each mode runs in a fresh subprocess so that CPU peak RSS (``resource.getrusage``) is not polluted by the
other mode. Reported per mode: ``rss_peak_mib`` (process peak), ``rss_step_mib`` (peak minus the resident size
just before the step, i.e. what the step itself added) and, on CUDA, ``cuda_step_mib``
(``torch.cuda.max_memory_allocated`` minus the allocation before the step). Prints one JSON line.

    python benchmarks/memory_bench.py --layout tiny --size 64 --batch 1
    python benchmarks/memory_bench.py --layout sd15 --size 256 --device cuda --amp bf16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

LAYOUTS = {
    # Stable Diffusion 1.5 UNet config (random weights): the paper's backbone after surgery (~115M params).
    "sd15": dict(block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, cross_attention_dim=768,
                 attention_head_dim=8, in_channels=4, out_channels=4, sample_size=64),
    # scaled-down SD-style layout (4.6M parameters in the authors' implementation).
    "small": dict(block_out_channels=[64, 128, 256, 256], layers_per_block=2, cross_attention_dim=64,
                  attention_head_dim=8, in_channels=4, out_channels=4, sample_size=64, norm_num_groups=32),
    "tiny": dict(block_out_channels=[16, 32, 32, 32], layers_per_block=1, cross_attention_dim=16,
                 attention_head_dim=4, in_channels=4, out_channels=4, sample_size=32, norm_num_groups=8),
}
for _cfg in LAYOUTS.values():
    _cfg["down_block_types"] = ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    _cfg["up_block_types"] = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3


def _rss_now_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child(args) -> dict:
    import torch

    from idm_imaging.models import IDM
    from idm_imaging.operators import BlockCS

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = IDM(backbone_config=LAYOUTS[args.layout], T=args.T, reversible=args.mode == "reversible").to(device)
    model.train()
    op = BlockCS(args.ratio, block_size=32).to(device)
    x = torch.rand(args.batch, 1, args.size, args.size, device=device)
    y = op.A(x)
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    rss_before = _rss_now_kib()
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        x_hat = model(y, op)
    loss = (x_hat.float() - x).abs().mean()
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    out = {
        "mode": args.mode,
        "step_s": round(time.perf_counter() - t0, 3),
        "rss_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_step_mib": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024, 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "loss": float(loss),
    }
    if device.type == "cuda":
        out["cuda_step_mib"] = round((torch.cuda.max_memory_allocated() - cuda_before) / 2**20, 1)
        out["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="tiny")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--T", type=int, default=3)
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--mode", choices=["reversible", "plain"], help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.size <= 0 or args.batch <= 0:
        p.error("--size and --batch must be positive")
    if args.child:
        print(json.dumps(child(args)))
        return
    results = {}
    for mode in ("reversible", "plain"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--mode", mode] + (argv or sys.argv[1:])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            results[mode] = {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
        else:
            results[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    summary = {"layout": args.layout, "size": args.size, "batch": args.batch, "T": args.T, "amp": args.amp,
               "device": args.device, **{m: results[m] for m in results}}
    rv, pl = results["reversible"], results["plain"]
    for key in ("rss_step_mib", "cuda_step_mib", "rss_peak_mib", "cuda_peak_mib"):
        if key in rv and key in pl and pl[key] > 0:
            summary[f"ratio_{key}"] = round(rv[key] / pl[key], 3)
    print(json.dumps(summary))


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    main()
