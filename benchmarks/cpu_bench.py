"""CPU benchmark: one 256x256 reconstruction on 2 cores, IDM in float32 and under bfloat16 autocast, next to
TV-FISTA (200 iterations, the benchmark's classical peer) on the same measurement, in the same run.

Default model: the embedded ``cs`` (a convolution-only UNet2DModel refining a TV-FISTA start) with its default
test-time ensemble (``"auto"``: two reconstructions under bfloat16, one in float32; ``ensemble_fp32`` /
``ensemble_bf16`` in the JSON; ``--ensemble 1`` times one pass everywhere); ``--model DIR`` times another saved
IDM (or embedded name); ``--model layout`` a random-weight ``--layout`` of ``benchmarks/_layouts.py`` (speed
does not depend on the values). bfloat16 is many times slower on CPUs without native support (no AVX512-BF16 /
AMX): the JSON says whether this CPU has it. Prints one JSON object.

    python benchmarks/cpu_bench.py                       # 2 threads, 256x256, ratio 0.1
    python benchmarks/cpu_bench.py --model path/to/idm --threads 2
    python benchmarks/cpu_bench.py --ensemble-start-iterations 0   # every ensemble member's TV start from scratch
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


def _interleaved_times(fns: dict, repeats: int) -> tuple[dict, dict, dict]:
    """Each ``fn`` once (the first call), then ``repeats`` rounds that call every ``fn`` in turn: a change of the
    machine's load during the run then falls on all of them alike. Returns first-call seconds, per-round seconds
    and the last outputs, each by name."""
    first, times, outs = {}, {k: [] for k in fns}, {}
    for k, fn in fns.items():
        t0 = time.perf_counter()
        outs[k] = fn()
        first[k] = time.perf_counter() - t0
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return first, times, outs


def bench(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from idm_imaging.benchmark.baselines import TVFista
    from idm_imaging.inference import bf16_is_fast
    from idm_imaging.models import IDM
    from idm_imaging.models.registry import available_models
    from idm_imaging.operators import BlockCS

    torch.manual_seed(0)
    name = args.model or ("cs" if "cs" in available_models() else "layout")
    if name == "layout":
        model, source = IDM(backbone_config=layout(args.layout), T=args.T), f"layout {args.layout} (random weights)"
    else:
        kw = {"ensemble": args.ensemble} if args.ensemble else {}
        if args.ensemble_start_iterations is not None:  # 0: every member's start from scratch
            kw["ensemble_start_iterations"] = args.ensemble_start_iterations or None
        model, source = IDM.from_pretrained(name, **kw), str(name)
    model.eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    op = BlockCS(args.ratio, block_size=32)
    x = torch.rand(args.batch, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    y = op.A(x)

    def idm(bf16: bool):
        def call():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return model(y, op)
        return call

    tv = TVFista(iterations=200)
    res = {"script": "benchmarks/cpu_bench.py", "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "native_bf16": bool(bf16_is_fast(torch.device("cpu"))), "threads": args.threads, "model": source,
           "T": model.T, "start": model.config.get("start", "pinv"), "ensemble": model.config.get("ensemble", 1),
           "ensemble_fp32": model.ensemble_size("cpu", False), "ensemble_bf16": model.ensemble_size("cpu", True),
           "ensemble_start_iterations": model.config.get("ensemble_start_iterations"),
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3), "size": args.size,
           "batch": args.batch, "ratio": args.ratio, "channels_last": args.channels_last, "repeats": args.repeats}
    fns = {"idm_fp32": idm(False), "idm_bf16": idm(True), "tv_fista_200": lambda: tv(y, op)}
    first, times, outs = _interleaved_times(fns, args.repeats)
    for label in fns:
        med = statistics.median(times[label])
        res[label] = {"first_call_s": round(first[label], 3), "median_s": round(med, 3),
                      "per_image_s": round(med / args.batch, 3), "out_finite": bool(torch.isfinite(outs[label]).all())}
    for p in ("fp32", "bf16"):  # the median of the rounds' ratios: each round's calls ran under the same load
        res[f"idm_{p}_vs_tv"] = round(statistics.median(
            a / b for a, b in zip(times[f"idm_{p}"], times["tv_fista_200"])), 3)
    res["idm_no_slower_than_tv"] = res["idm_fp32_vs_tv"] <= 1.0
    if res["native_bf16"]:  # where bf16 is native, the reconstruction runs it (precision "auto")
        res["idm_auto_no_slower_than_tv"] = res["idm_bf16_vs_tv"] <= 1.0
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="saved IDM folder, embedded name or 'layout' (default: the embedded cs)")
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="cpu")
    p.add_argument("--T", type=int, default=3)
    p.add_argument("--ensemble", type=lambda v: v if v == "auto" else int(v), choices=[1, 2, 4, 8, "auto"],
                   help="override the model's test-time ensemble ('auto': 2, 1 in float32 on a CPU)")
    p.add_argument("--ensemble-start-iterations", type=int, metavar="N",
                   help="override the model's warm TV iterations of each further member's start (0: from scratch)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    for name in ("T", "size", "batch", "threads", "repeats"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.lower()} must be positive")
    if args.ensemble_start_iterations is not None and not 0 <= args.ensemble_start_iterations <= 1000:
        p.error("--ensemble-start-iterations must be 0 (from scratch) to 1000")
    if args.model and args.model != "layout" and not os.path.isdir(args.model) and os.sep in args.model:
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
