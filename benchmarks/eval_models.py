"""Evaluate embedded models (or model folders) on the test sets.

For each model: PSNR/SSIM of IDM next to the pseudo-inverse (CS: Set11 and BSD68, paper protocol, Y channel
0-255; MRI: BrainImages_test and the held-out SIAT slices lsq121-lsq140, fastMRI protocol on magnitudes).

    python benchmarks/eval_models.py [--models cs mri mri-8x ...] [--limit N] [--data DIR] [--bf16]
                                     [--cs-seeds 1 2 ...] [--json FILE [--overwrite]]

An alias (``idm_imaging.models.registry.ALIASES``, e.g. ``mri-8x``) evaluates the model it names at the alias's
setting. ``--data`` defaults to ``$IDM_IMAGING_DATA`` (layout: ``idm_imaging/datasets.py``).

CS models are also evaluated on Set11 with the block-CS seeds of ``--cs-seeds`` (default 1; the card's own seed
is the one in its operator_config): a model trained with a fresh matrix per step takes any seed.

``--bf16`` also reconstructs every image under bfloat16 autocast (``--precision bf16`` of the command line) and
reports its PSNR, the PSNR change against float32 and its seconds per image.

``--json FILE`` writes the figures (a new file; an existing one is replaced only with ``--overwrite``). Model cards
are written when a model is installed (``benchmarks/design_study.py install``), from its validation curve and the
benchmark's rows.
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SETS = {
    "cs": [("Set11", "natural/test/Set11/*"), ("BSD68", "natural/test/BSD68/*.png")],
    "mri": [("BrainImages_test", "mri/test/BrainImages_test/*.png"),
            ("SIAT_lsq121-140", "mri/train/SIAT_T2_brain_complex/lsq1[2-4]*.npy")],
}


def operator_for(model, shape, index, cs_seed=None, setting=None):
    """The model's own acquisition for one test image (seeded per image so every method sees the same y);
    ``cs_seed`` replaces the block-CS seed of the model's operator_config, ``setting`` (an alias's ``ratio`` /
    ``acceleration``) its ratio / acceleration."""
    from idm_imaging.operators import BlockCS, SingleCoilFourier

    oc = {**(model.config.operator_config or {}), **(setting or {})}
    if model.config.task == "cs":
        return BlockCS(oc.get("ratio", 0.1), oc.get("block_size", 32), permute=oc.get("permute", True),
                       seed=oc.get("seed", 0) if cs_seed is None else cs_seed, img_size=tuple(shape))
    return SingleCoilFourier.from_mask_params("random", tuple(shape), oc.get("acceleration", 4),
                                              center_fraction=oc.get("center_fraction"), seed=1000 + index)


def evaluate(name: str, datasets: Path, limit: int | None, log=print, bf16: bool = False,
             cs_seeds: tuple = (1,)) -> dict:
    from idm_imaging import IDM
    from idm_imaging.io import read_scan
    from idm_imaging.metrics import fastmri_metrics, psnr_y, ssim_y
    from idm_imaging.models.registry import resolve_name

    model = IDM.from_pretrained(name).eval()
    setting = resolve_name(name)[1]  # an alias: its model at its setting
    task = model.config.task
    raw_too = task == "cs" and model.config.measured_mean
    results = {}
    # "Set11 seed N": other block-CS matrices than the model's operator_config seed
    extra = [(f"Set11 seed {k}", SETS["cs"][0][1]) for k in cs_seeds] if task == "cs" else []
    for set_name, pattern in SETS[task] + extra:
        files = sorted(glob.glob(str(datasets / pattern)))
        if task == "mri" and set_name.startswith("SIAT"):
            files = [f for f in files if 121 <= int(Path(f).stem[3:]) <= 140]
        files = files[:limit] if limit else files
        if not files:
            log(f"{name}: {set_name} skipped (no files under {datasets / pattern})")
            continue
        rows = {"pinv": [], "idm": []} | ({"idm_bf16": []} if bf16 else {})
        want_raw = raw_too and set_name == SETS[task][0][0]  # the network alone, without the measured-mean step
        if want_raw:
            rows["idm_raw"] = []
        seconds = seconds_bf16 = 0.0
        for i, f in enumerate(files):
            x, _ = read_scan(f)
            if task == "mri":
                x = x.to(torch.complex64)
                x = x / x.abs().max()
            op = operator_for(model, x.shape, i, cs_seed=int(set_name.split()[-1]) if " seed " in set_name else None,
                              setting=setting)
            xb = x[None, None]
            y = op.A(xb)
            with torch.no_grad():
                t0 = time.perf_counter()
                rec = model(y, op)
                seconds += time.perf_counter() - t0
            pinv = op.A_dagger(y)
            outputs = [("pinv", pinv), ("idm", rec)]
            if want_raw:
                model.register_to_config(measured_mean=False)
                with torch.no_grad():
                    outputs.append(("idm_raw", model(y, op)))
                model.register_to_config(measured_mean=True)
            if bf16:
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    t0 = time.perf_counter()
                    rec16 = model(y, op)
                    seconds_bf16 += time.perf_counter() - t0
                outputs.append(("idm_bf16", rec16.to(rec.dtype)))
            for key, r in outputs:
                r = r[0, 0]
                if task == "cs":
                    rows[key].append((psnr_y(r.clamp(0, 1), x), ssim_y(r.clamp(0, 1), x)))
                else:
                    m = fastmri_metrics(r.abs(), x.abs())
                    rows[key].append((m["psnr"], m["ssim"]))
        results[set_name] = {
            "images": len(files),
            **{f"{k}_{m}": round(float(np.mean([r[j] for r in v])), 3)
               for k, v in rows.items() for j, m in enumerate(("psnr", "ssim"))},
            "idm_seconds_per_image": round(seconds / len(files), 3),
        }
        if bf16:
            res = results[set_name]
            res["idm_bf16_seconds_per_image"] = round(seconds_bf16 / len(files), 3)
            res["bf16_psnr_change"] = round(res["idm_bf16_psnr"] - res["idm_psnr"], 3)
        log(f"{name} {set_name}: {results[set_name]}")
    return results


def main(argv=None) -> int:
    from idm_imaging.datasets import data_root
    from idm_imaging.io import atomic_write_text
    from idm_imaging.models.registry import REGISTRY

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=[n for n in REGISTRY if n != "prior-gray"])
    ap.add_argument("--limit", type=int, default=None, help="at most N images per set")
    ap.add_argument("--data", default=None, help="datasets folder (default: $IDM_IMAGING_DATA)")
    ap.add_argument("--cs-seeds", type=int, nargs="*", default=[1], help="other block-CS seeds to evaluate on Set11")
    ap.add_argument("--bf16", action="store_true", help="also reconstruct under bfloat16 autocast and report the change")
    ap.add_argument("--json", default="", help="write the figures to this JSON file")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = ap.parse_args(argv)
    if args.json and Path(args.json).exists() and not args.overwrite:
        ap.error(f"--json {args.json} exists (pass --overwrite to replace it)")
    datasets = data_root(args.data, must_exist=False)
    if not datasets.is_dir():
        print(f"datasets folder {datasets} not found (--data or IDM_IMAGING_DATA): nothing to evaluate", file=sys.stderr)
        return 2
    out = {"date": time.strftime("%Y-%m-%d"),
           "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads",
           "command": "python benchmarks/eval_models.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "models": {}}
    for name in args.models:
        out["models"][name] = evaluate(name, datasets, args.limit, bf16=args.bf16, cs_seeds=tuple(args.cs_seeds))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
