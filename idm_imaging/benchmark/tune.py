"""Tune a peer's parameters on TRAINING images (Train400 crops), never on the test sets; record the result.

A grid search: every combination of the grid, run at each block-CS ratio on the same training crops (block 32,
permuted, seed 0, as the benchmark); the best combination by mean PSNR (paper protocol) over all ratios wins. The
record (grid, every score, the winner, images, command, library versions) goes to
``benchmarks/results/tuning-<method>.json``; the benchmark's defaults are the recorded winners.

Command line::

    python -m idm_imaging.benchmark.tune pnp-bm3d --images 4 --crop 128
    python -m idm_imaging.benchmark.tune deepinv-tv --images 4 --crop 128      # needs deepinv
    python -m idm_imaging.benchmark.tune dps --images 2 --crop 128              # on the embedded diffusion prior

The diffusion samplers (``dps``, ``deepinv-diffpir``) run on the benchmark's prior (``prior-gray``) with its 100
steps (``--steps``); they are random, so each runs with the benchmark's seed 0.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from idm_imaging.datasets import data_root
from idm_imaging.io import atomic_write_text

__all__ = ["GRIDS", "grid_search", "training_images", "main"]

_REPO = Path(__file__).resolve().parents[2]


def _pnp_bm3d(**kw):
    from idm_imaging.benchmark.baselines import PnPBM3D

    return PnPBM3D(**kw)


def _deepinv(kind: str) -> Callable:
    def make(**kw):
        from idm_imaging.interop.deepinv import DeepinvSolver

        return DeepinvSolver(kind, **kw)
    return make


@functools.lru_cache(maxsize=1)
def _prior():
    from idm_imaging.benchmark.baselines import DiffusionPrior
    from idm_imaging.benchmark.run import PRIOR_NAME

    return DiffusionPrior.load(PRIOR_NAME)


def _dps(**kw):
    from idm_imaging.benchmark.baselines import DPS

    return DPS(_prior(), **kw)


def _deepinv_diffpir(**kw):
    from idm_imaging.interop.deepinv import DeepinvDiffPIR

    return DeepinvDiffPIR(_prior(), **kw)


# method -> (factory, grid); "steps" is filled from --steps for the diffusion samplers
GRIDS: dict[str, tuple[Callable, dict]] = {
    "pnp-bm3d": (_pnp_bm3d, {"sigma_start": [0.1, 0.3], "sigma_end": [0.005, 0.02], "iterations": [15],
                             "stage": ["hard"]}),
    # deepinv: 200 iterations, the benchmark's budget for every variational solver (BenchmarkConfig.tv_iterations)
    "deepinv-tv": (_deepinv("tv"), {"lam": [0.0003, 0.001, 0.003], "inner": [3, 5, 10], "iterations": [200]}),
    "deepinv-wavelet": (_deepinv("wavelet"), {"lam": [0.003, 0.01, 0.03, 0.1], "iterations": [200]}),
    # zeta = 1: the DPS paper's setting for linear inverse problems; deepinv's DPS at 50 steps needed a likelihood
    # step about 25x larger than the matched one (benchmarks/results/dps-agreement.json), so the grid goes up
    "dps": (_dps, {"zeta": [1.0, 3.0, 10.0, 30.0], "steps": [100]}),
    # lambda_ 7, zeta 0.1: deepinv's defaults (the paper's range is lambda 1-10, zeta 0-1)
    "deepinv-diffpir": (_deepinv_diffpir, {"lambda_": [1.0, 7.0, 30.0], "zeta": [0.1, 0.5], "steps": [100]}),
}
_DIFFUSION = tuple(m for m, (_, grid) in GRIDS.items() if "steps" in grid)  # the samplers


def training_images(datasets_dir: str | os.PathLike, n: int, crop: int | None) -> list[tuple[str, torch.Tensor]]:
    """The first ``n`` Train400 images (sorted names), centre-cropped to ``crop``: ``(name, (1, 1, H, W))``."""
    from idm_imaging.benchmark.run import _load_images

    folder = Path(datasets_dir) / "natural" / "train" / "Train400"
    if not folder.is_dir():
        raise ValueError(f"datasets_dir: training folder {folder} not found")
    return _load_images(folder, n, crop)


def grid_search(factory: Callable, grid: dict, images: list, ratios: tuple,
                log: Callable[[str], None] | None = print) -> dict:
    """Score every combination of ``grid`` (``name -> list of values``) with ``factory(**combination)``.

    Returns ``{"results": [{"params", "psnr_by_ratio", "psnr", "seconds_per_image"}], "best": params}``.
    """
    from idm_imaging.benchmark.run import score_block_cs

    if not images:
        raise ValueError("images: no training images")
    keys = list(grid)
    results = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        method = factory(**params)
        by_ratio, secs = {}, []
        for ratio in ratios:
            scores, seconds = score_block_cs(method, images, ratio)
            secs += seconds
            by_ratio[str(ratio)] = round(float(np.mean(scores)), 3)
        row = {"params": params, "psnr_by_ratio": by_ratio, "psnr": round(float(np.mean(list(by_ratio.values()))), 3),
               "seconds_per_image": round(float(np.mean(secs)), 3)}
        results.append(row)
        if log:
            log(f"{params}: {by_ratio} mean {row['psnr']:.2f} dB, {row['seconds_per_image']:.2f} s/img")
            sys.stdout.flush()
    best = max(results, key=lambda r: r["psnr"])["params"]
    return {"results": results, "best": best}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"torch": torch.__version__}
    for pkg in ("bm3d", "deepinv"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m idm_imaging.benchmark.tune", description=__doc__.split("\n\n")[0])
    ap.add_argument("method", choices=sorted(GRIDS))
    ap.add_argument("--images", type=int, default=4, help="first N Train400 images")
    ap.add_argument("--crop", type=int, default=128, help="centre crop (pixels)")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    ap.add_argument("--steps", type=int, default=None,
                    help="sampling steps of dps / deepinv-diffpir (default: the benchmark's 100)")
    ap.add_argument("--data", "--datasets", dest="datasets", default=None,
                    help="datasets folder (default: $IDM_IMAGING_DATA, else ../shared/datasets next to the repository)")
    ap.add_argument("--out", default=None, help="record file (default benchmarks/results/tuning-METHOD.json)")
    a = ap.parse_args(argv)
    try:
        factory, grid = GRIDS[a.method]
        if a.steps is not None:
            if a.method not in _DIFFUSION:
                raise ValueError(f"--steps: only for {' / '.join(_DIFFUSION)}, not {a.method}")
            if a.steps < 2:
                raise ValueError(f"--steps: expected an int >= 2, got {a.steps}")
            grid = {**grid, "steps": [a.steps]}
        data = data_root(a.datasets)
        images = training_images(data, a.images, a.crop)
        res = grid_search(factory, grid, images, tuple(a.ratios))
    except (ValueError, TypeError, ImportError, FileNotFoundError) as e:
        ap.exit(2, f"tune: error: {e}\n")
    out = Path(a.out or _REPO / "benchmarks" / "results" / f"tuning-{a.method}.json")
    record = {"method": a.method,
        "command": " ".join(["python -m idm_imaging.benchmark.tune", *(sys.argv[1:] if argv is None else argv)]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "images": [n for n, _ in images], "training_set": "natural/train/Train400", "crop": a.crop,
        "ratios": a.ratios, "protocol": "block CS, block 32, permuted, seed 0; PSNR on the Y channel (0-255)",
        "versions": _versions(), "grid": grid, **res}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"best {res['best']} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
