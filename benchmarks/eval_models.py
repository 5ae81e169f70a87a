"""Evaluate the embedded models on the shared test sets and write their model cards.

For each model: PSNR/SSIM of IDM next to the pseudo-inverse (CS: Set11 and BSD68, paper protocol, Y channel
0-255; MRI: BrainImages_test and the held-out SIAT slices lsq121-lsq140, fastMRI protocol on magnitudes),
then ``model_card.json`` and ``MODEL_CARD.md`` in the model's folder (training facts come from the
``training.json`` packed beside the weights).

    python benchmarks/eval_models.py [--models cs mri mri-8x ...] [--limit N] [--datasets ../shared/datasets] [--bf16]
                                     [--cs-seeds 1 2 ...]

An alias (``idm_imaging.models.registry.ALIASES``, e.g. ``mri-8x``) evaluates the model it names at the alias's
setting; it has no folder of its own, so it is evaluated with ``--no-cards`` only.

CS models are also evaluated on Set11 with the block-CS seeds of ``--cs-seeds`` (default 1; the card's own seed
is the one in its operator_config): a model trained with a fresh matrix per step takes any seed.

``--bf16`` also reconstructs every image under bfloat16 autocast (``--precision bf16`` of the command line) and
reports its PSNR, the PSNR change against float32 and its seconds per image.

Learning curve (what more training would take): each evaluation adds a point (training seen so far;
main-set PSNR without IDM's measured-mean step, which came after the first points) to ``learning_curve.json`` in
the model's folder (install_models.py carries it over when a run continues the model). The card fits
PSNR = a + b log10(samples) over the last three and the last two points and, at the smaller positive slope,
projects the samples, and the time at the lineage's GPU rate, that the target would take. Samples are counted
in 128x128-patch equivalents (steps x batch x (patch / 128)^2).
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
        want_raw = raw_too and set_name == SETS[task][0][0]  # the learning curve's measure (see update_curve)
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


TARGETS = {"cs": ("Set11", 28.0)}  # Set11 at 10 % (the ratio a range model is evaluated at)


def lineage(info: dict) -> list[dict]:
    """The training stages of a ``training.json``, oldest first (each stage's ``continued_from`` is the one before)."""
    stages = []
    while info:
        stages.append({k: v for k, v in info.items() if k != "continued_from"})
        info = info.get("continued_from") or {}
    return stages[::-1]


def stage_samples(stage: dict) -> float:
    """Training samples of one stage in 128x128-patch equivalents: steps x batch x (patch / 128)^2."""
    return stage["steps"] * stage["batch_size"] * (stage["patch_size"] / 128) ** 2


def samples_seen(info: dict) -> float:
    """Training seen by a model (128x128-patch equivalents), summed over its lineage."""
    return float(sum(stage_samples(s) for s in lineage(info)))


def gpu_rate(info: dict) -> tuple[float, str] | None:
    """Samples per second of the lineage's latest GPU stage (128x128-patch equivalents), with its device."""
    for s in reversed(lineage(info)):
        if "NVIDIA" in str(s.get("device")) and s.get("seconds"):
            return stage_samples(s) / s["seconds"], s["device"]
    return None


def projection(name: str, curve: list[dict], info: dict) -> str:
    """Log-linear fits PSNR = a + b log10(samples) through the newest point, over the last three and the last two
    points; the smaller positive slope (the more conservative) projects what the target would take."""
    if name not in TARGETS or len(curve) < 3:
        return ""
    set_name, target = TARGETS[name]
    pts = [(p["samples"], p[set_name]) for p in curve if set_name in p][-3:]
    if len(pts) < 3:
        return ""
    x, y = np.log10([p[0] for p in pts]), np.array([p[1] for p in pts])
    b3 = float(np.polyfit(x, y, 1)[0])
    b2 = float((y[2] - y[1]) / (x[2] - x[1]))
    b = min((v for v in (b3, b2) if v > 0), default=0.0)
    if isinstance(target, str):  # relative to the pseudo-inverse of the newest point
        target = curve[-1][f"{set_name} pseudo-inverse"] + 8.0
    now, psnr_now = pts[-1]
    text = (f"Slope on {set_name}: {b3:+.2f} dB per 10x training over the last three points, {b2:+.2f} over the "
            f"last two. ")
    if b <= 0:
        return text + "No projection: PSNR does not grow with training on these points."
    need = now * 10 ** ((target - psnr_now) / b)
    text += (f"At the smaller positive slope the target ({target:.2f} dB) would take about {need:,.0f} samples, "
             f"{need / now:.0f}x what the model has seen")
    rate = gpu_rate(info)
    if rate:
        hours = (need - now) / rate[0] / 3600
        text += f"; at the rate of its {rate[1]} stage ({rate[0]:.0f} samples/s) about {hours:.1f} GPU-hours more"
    return text + (". A log-linear extrapolation: a planning figure, not a promise (learning curves flatten; stages "
                   "differ in learning rate and, for CS, in fixed or fresh matrices).")


def update_curve(folder: Path, info: dict, metrics: dict, date: str) -> list[dict]:
    """Add (or replace, for the same total steps) this evaluation's point in ``learning_curve.json``."""
    from idm_imaging.io import atomic_write_text

    path = folder / "learning_curve.json"
    curve = json.loads(path.read_text()) if path.is_file() else []
    steps = info.get("total_steps", info.get("steps"))
    point = {"total_steps": steps, "samples": samples_seen(info), "date": date,
             **{s: r["idm_psnr"] for s, r in metrics.items()},
             **{f"{s} pseudo-inverse": r["pinv_psnr"] for s, r in metrics.items()}}
    # the network before the measured-mean step, so that older points compare
    point.update({s: r["idm_raw_psnr"] for s, r in metrics.items() if "idm_raw_psnr" in r})
    curve = [p for p in curve if p["total_steps"] != steps] + [point]
    curve.sort(key=lambda p: p["samples"])
    atomic_write_text(path, json.dumps(curve, indent=1))
    return curve


def write_card(name: str, metrics: dict, hardware: str, date: str | None = None) -> None:
    from idm_imaging.io import atomic_write_text
    from idm_imaging.models.registry import resolve_checkpoint

    folder = resolve_checkpoint(name)
    info_file = folder / "training.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    cfg = json.loads((folder / "config.json").read_text())
    date = date or time.strftime("%Y-%m-%d")
    curve = update_curve(folder, info, metrics, date) if info else []
    card = {"name": name, "task": cfg.get("task"), "operator": cfg.get("operator_config"), "T": cfg.get("T"),
            "backbone": cfg.get("backbone_type"), "training": info,
            "train_seconds": info.get("total_seconds", info.get("seconds")), "data": {"train": info.get("data", [])},
            "evaluation": {"date": date, "hardware": hardware,
                           "command": "python benchmarks/eval_models.py", "results": metrics},
            "learning_curve": curve, "projection": projection(name, curve, info)}
    atomic_write_text(folder / "model_card.json", json.dumps(card, indent=2))
    lines = [f"# {name}", "", f"Task: {card['task']}, operator settings: `{json.dumps(card['operator'])}`, "
             f"T = {card['T']}, backbone {card['backbone']}.", "",
             "## Training", "", "```", json.dumps(info, indent=2), "```", "",
             f"## Evaluation ({card['evaluation']['date']}, {hardware}, `python benchmarks/eval_models.py`)", "",
             "| set | images | pseudo-inverse PSNR / SSIM | IDM PSNR / SSIM | IDM s/image |", "|---|---|---|---|---|"]
    for s, r in metrics.items():
        lines.append(f"| {s} | {r['images']} | {r['pinv_psnr']:.2f} / {r['pinv_ssim']:.3f} | "
                     f"{r['idm_psnr']:.2f} / {r['idm_ssim']:.3f} | {r['idm_seconds_per_image']:.2f} |")
    raw = {s: r["idm_raw_psnr"] for s, r in metrics.items() if "idm_raw_psnr" in r}
    if raw:
        lines += ["", "Without the measured-mean step (`measured_mean=False`): "
                  + "; ".join(f"{s} {v:.2f} dB ({metrics[s]['idm_psnr'] - v:+.2f} dB with it)" for s, v in raw.items())]
    if any("bf16_psnr_change" in r for r in metrics.values()):
        lines += ["", "bfloat16 autocast (`--precision bf16`): "
                  + "; ".join(f"{s} {r['idm_bf16_psnr']:.2f} dB ({r['bf16_psnr_change']:+.3f} dB), "
                              f"{r['idm_bf16_seconds_per_image']:.2f} s/image" for s, r in metrics.items())]
    if curve:
        main_set = SETS[cfg.get("task", "cs")][0][0]
        lines += ["", "## Learning curve", "", "PSNR of the network without the measured-mean step (so that the points "
                  "before and after it was added compare).", "",
                  f"| total steps | samples (128x128 patches) | {main_set} PSNR | date |",
                  "|---|---|---|---|"]
        lines += [f"| {p['total_steps']} | {p['samples']:,.0f} | {p.get(main_set, float('nan')):.2f} | {p['date']} |"
                  for p in curve]
        if card["projection"]:
            lines += ["", card["projection"]]
    atomic_write_text(folder / "MODEL_CARD.md", "\n".join(lines) + "\n")


def main(argv=None) -> int:
    from idm_imaging.models.registry import REGISTRY, resolve_name

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=[n for n in REGISTRY if n != "prior-gray"])
    ap.add_argument("--limit", type=int, default=None, help="at most N images per set")
    ap.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--no-cards", action="store_true", help="print only, do not write model cards")
    ap.add_argument("--cs-seeds", type=int, nargs="*", default=[1], help="other block-CS seeds to evaluate on Set11")
    ap.add_argument("--bf16", action="store_true", help="also reconstruct under bfloat16 autocast and report the change")
    ap.add_argument("--rewrite-cards", action="store_true",
                    help="evaluate nothing: rewrite the cards from the metrics their model_card.json holds")
    args = ap.parse_args(argv)
    aliases = [n for n in args.models if resolve_name(n)[1]]
    if aliases and (args.rewrite_cards or not args.no_cards):
        ap.error(f"--models {' '.join(aliases)}: an alias names another model's folder (its card is that model's); "
                 "evaluate it with --no-cards")
    if args.rewrite_cards:
        from idm_imaging.models.registry import resolve_checkpoint

        for name in args.models:
            ev = json.loads((resolve_checkpoint(name) / "model_card.json").read_text())["evaluation"]
            write_card(name, ev["results"], ev["hardware"], ev["date"])
        return 0
    datasets = Path(args.datasets)
    if not datasets.is_dir():
        print(f"datasets folder {datasets} not found: nothing to evaluate", file=sys.stderr)
        return 2
    hardware = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
    for name in args.models:
        metrics = evaluate(name, datasets, args.limit, bf16=args.bf16, cs_seeds=tuple(args.cs_seeds))
        if not args.no_cards:
            write_card(name, metrics, hardware)
    return 0


if __name__ == "__main__":
    sys.exit(main())
