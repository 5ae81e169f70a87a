"""Our DPS (idm_imaging.benchmark.baselines.DPS) against deepinv's DPS on the same prior and measurements.

Block CS (30 %, block 32, seed 0) on centre crops of Train400 training images (never the test sets); PSNR (Y,
[0, 1] clipped) of our DPS (zeta 1), deepinv's DPS (each ``--weights`` value) and the pseudo-inverse, per image
and seed. Needs deepinv (``.venv-deepinv``). Example::

    OMP_NUM_THREADS=1 .venv-deepinv/bin/python benchmarks/dps_agreement.py --steps 50 --size 64 --images 3 \\
        --seeds 0 1 --weights 1 --out benchmarks/results/dps-agreement.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="Train400 folder (default: natural/train/Train400 under "
                                                 "$IDM_IMAGING_DATA, see idm_imaging.datasets.data_root)")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--zeta", type=float, default=1.0)
    ap.add_argument("--weights", type=float, nargs="*", default=[1.0])
    ap.add_argument("--matched", action="store_true", help="also deepinv with weight = zeta / c_t per step")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--date", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    import deepinv

    from idm_imaging.benchmark.baselines import DPS, DiffusionPrior
    from idm_imaging.benchmark.run import _load_images
    from idm_imaging.interop.deepinv import deepinv_dps
    from idm_imaging.metrics import psnr_y
    from idm_imaging.operators import BlockCS

    torch.set_num_threads(1)
    prior = DiffusionPrior.load("prior-gray")
    from idm_imaging.datasets import data_root

    folder = Path(a.data) if a.data else data_root() / "natural" / "train" / "Train400"
    images = _load_images(folder, a.images, a.size)
    variants = {f"deepinv w={w:g}": {"weight": w} for w in a.weights}
    if a.matched:
        variants["deepinv w=zeta/c_t"] = {"zeta_per_step": a.zeta}
    methods = ["ours", *variants, "pseudo-inverse"]
    rows, secs = [], {m: [] for m in methods}
    for name, x in images:
        op = BlockCS(a.ratio, block_size=32, seed=0, img_size=tuple(x.shape[-2:]))
        y = op.A(x)
        pinv = psnr_y(op.A_dagger(y)[0, 0], x[0, 0])
        for seed in a.seeds:
            row = {"image": name, "seed": seed, "pseudo-inverse": round(pinv, 3)}
            t0 = time.perf_counter()
            out = DPS(prior, steps=a.steps, zeta=a.zeta, seed=seed)(y, op)
            secs["ours"].append(time.perf_counter() - t0)
            row["ours"] = round(psnr_y(out.detach()[0, 0], x[0, 0]), 3)
            for key, kw in variants.items():
                t0 = time.perf_counter()
                out = deepinv_dps(prior, steps=a.steps, seed=seed, **kw)(y, op.to_deepinv())
                secs[key].append(time.perf_counter() - t0)
                row[key] = round(psnr_y(out.detach().float()[0, 0], x[0, 0]), 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    mean = {m: round(sum(r[m] for r in rows) / len(rows), 3) for m in methods}
    res = {
        "what": "our DPS vs deepinv's DPS on our diffusion prior (prior-gray), same measurements",
        "date": a.date,
        "command": "OMP_NUM_THREADS=1 .venv-deepinv/bin/python benchmarks/dps_agreement.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"operator": f"BlockCS({a.ratio}, block_size=32, seed=0), noise-free",
                     "images": f"{len(images)} centre crops {a.size}x{a.size} of {a.data or 'natural/train/Train400'} "
                               "(training images)",
                     "seeds": a.seeds, "steps": a.steps, "ours": {"zeta": a.zeta},
                     "deepinv": {"weights": a.weights, "per_step_weight_zeta_over_c_t": a.matched, "solver": "ddpm",
                                 "num_steps": a.steps + 1},
                     "psnr": "Y channel, [0, 1] clipped, 255 peak"},
        "per_image": rows, "mean_psnr": mean,
        "mean_seconds_per_image": {m: round(sum(v) / len(v), 2) for m, v in secs.items() if v},
        "libraries": {"deepinv": deepinv.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "hardware": f"CPU ({platform.processor() or platform.machine()}), 1 thread",
    }
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(mean))
    return res


if __name__ == "__main__":
    main()
