"""CPU benchmark: time of one 256x256 IDM reconstruction on 2 cores (goal <= 0.5 s).

Default model: a CPU-friendly SD-style ``UNet2DConditionModel`` layout (``benchmarks/_layouts.py``: ``cpu``,
channels 32/64/64/64, ``DownBlock2D`` first so there is no attention at the highest resolution), T = 3,
random weights (speed does not depend on the values). ``--model DIR`` times a saved IDM instead
(``config.json`` + safetensors, or an embedded model name). Prints one JSON object.

    python benchmarks/cpu_bench.py                       # 2 threads, 256x256, ratio 0.1
    python benchmarks/cpu_bench.py --model path/to/idm --threads 2
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _layouts import LAYOUTS, layout  # noqa: E402


def bench(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from idm_imaging.models import IDM
    from idm_imaging.operators import BlockCS

    torch.manual_seed(0)
    if args.model:
        model = IDM.from_pretrained(args.model)
        source = str(args.model)
    else:
        model = IDM(backbone_config=layout(args.layout), T=args.T)
        source = f"layout {args.layout} (random weights)"
    model.eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    op = BlockCS(args.ratio, block_size=32)
    x = torch.rand(args.batch, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    y = op.A(x)

    def call():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            return model(y, op)

    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "script": "benchmarks/cpu_bench.py", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": args.threads,
        "model": source, "T": model.T, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "size": args.size, "batch": args.batch, "ratio": args.ratio, "amp": args.amp,
        "channels_last": args.channels_last, "first_call_s": round(first, 3),
        "median_s": round(med, 3), "min_s": round(min(times), 3), "per_image_s": round(med / args.batch, 3),
        "repeats": len(times), "goal_s": 0.5, "meets_goal": med / args.batch <= 0.5,
        "out_finite": bool(torch.isfinite(out).all()),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="saved IDM folder or embedded name (default: random --layout)")
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="cpu")
    p.add_argument("--T", type=int, default=3)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    for name in ("T", "size", "batch", "threads", "repeats"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.lower()} must be positive")
    if args.model and not os.path.isdir(args.model) and os.sep in args.model:
        p.error(f"--model: {args.model} is not a folder")
    res = bench(args)
    text = json.dumps(res)
    print(text)
    if args.out:
        from idm_imaging.io import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return res


if __name__ == "__main__":
    main()
