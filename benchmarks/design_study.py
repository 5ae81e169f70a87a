"""Design study: IDM variants trained for the same CPU time, compared on validation images (not the test sets).

Every arm is one fine-tuning run (``idm_imaging.training.train``) of one block-CS model for every ratio
(``finetune.ratio_range``, a fresh matrix and permutation per step), timed in CPU seconds of its own process
(``train.clock = "cpu"``, one thread), so that arms run side by side get the same budget whatever else the machine
does. Checkpoints along the way give PSNR-vs-CPU-seconds curves on the validation images: the last 8 BSDS500
training images (sorted by name; held out of the arms' training data), centre 256x256 crops, luminance, block CS at
10 / 30 / 50 % with operator seed 1234, paper protocol (Y, 0-255). TV-FISTA on the same images is the reference.

Usage (one arm per process; two processes side by side on a 2-core machine)::

    python benchmarks/design_study.py run light-T8 --budget 480      # trains runs/design-study/light-T8
    python benchmarks/design_study.py eval                             # every arm's checkpoints -> results JSON
    python benchmarks/design_study.py report                           # docs/design-study.md + figure
    python benchmarks/design_study.py ensemble cs --sizes 1 2 4        # a model at each test-time ensemble size

``IDM_IMAGING_DATA`` names the data folder (default ``../shared/datasets`` next to the repository).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from idm_imaging import datasets

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "design-study"
RESULTS = ROOT / "benchmarks" / "results" / "design-study.json"
DOC = ROOT / "docs" / "design-study.md"
FIGURE = ROOT / "docs" / "design-study.png"
VAL_RATIOS = (0.1, 0.3, 0.5)
VAL_SEED = 1234
N_VAL = 8


def data_root() -> Path:
    return datasets.data_root(must_exist=False)


def split_natural() -> tuple[list[str], list[str]]:
    """(training files, validation files): Train400 + BSDS500_train without its last 8 images; those 8."""
    d = data_root() / "natural" / "train"
    bsds = sorted(str(p) for p in (d / "BSDS500_train").glob("*.jpg"))
    if not bsds:
        sys.exit(f"no data: {d}/BSDS500_train is empty or missing (set IDM_IMAGING_DATA)")
    train = sorted(str(p) for p in (d / "Train400").glob("*.png")) + bsds[:-N_VAL]
    return train, bsds[-N_VAL:]


def light_unet(channels: list[int], layers_per_block: int = 1, groups: int = 8) -> dict:
    """A diffusers ``UNet2DModel`` config without attention: convolutions only, pixel-unshuffled input (2x2)."""
    n = len(channels)
    return dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=layers_per_block,
                block_out_channels=list(channels), norm_num_groups=groups, add_attention=False,
                down_block_types=["DownBlock2D"] * n, up_block_types=["UpBlock2D"] * n)


# name -> (what it tests, finetune overrides, data overrides, lr[, train overrides])
ARMS: dict[str, tuple] = {
    "sd-prior-T3": ("today's design: the embedded 15-minute prior (SD-1.x layout 48/96/96/96, attention), T = 3",
                    {"prior": "prior-gray", "T": 3}, {}, 2e-4),
    "light-T3": ("convolution-only UNet2DModel 32/64/128, random init, T = 3",
                 {"backbone": light_unet([32, 64, 128]), "T": 3}, {}, 5e-4),
    "light-T8": ("convolution-only UNet2DModel 32/64/128, random init, T = 8",
                 {"backbone": light_unet([32, 64, 128]), "T": 8}, {}, 5e-4),
    "small-T8": ("narrower UNet2DModel 16/32/64, random init, T = 8",
                 {"backbone": light_unet([16, 32, 64]), "T": 8}, {}, 5e-4),
    "light-T8-p128": ("light-T8 on 128x128 patches, batch 2 (same pixels per step as 64x64 x 8)",
                      {"backbone": light_unet([32, 64, 128]), "T": 8}, {"patch_size": 128, "batch_size": 2}, 5e-4),
    "small-T12": ("narrower UNet2DModel 16/32/64, random init, T = 12",
                  {"backbone": light_unet([16, 32, 64]), "T": 12}, {}, 5e-4),
    "tv-light-T3": ("light-T3 started from 60 TV-FISTA iterations (from the measured mean) instead of A^+ y",
                    {"backbone": light_unet([32, 64, 128]), "T": 3, "idm": {"start": "tv"}}, {}, 5e-4),
    "tv-res-T3": ("tv-light-T3 with a residual output (x0 = x / sqrt(a_t) + r instead of an epsilon), a -PSNR loss "
                  "(every ratio weighs the same) and bf16 autocast",
                  {"backbone": light_unet([32, 64, 128]), "T": 3, "idm": {"start": "tv", "prediction": "residual"},
                   "loss": "psnr"}, {}, 5e-4, {"mixed_precision": "bf16"}),
    "tv-psnr-T3": ("tv-light-T3 with a -PSNR loss and bf16 autocast (epsilon output, as tv-light-T3)",
                   {"backbone": light_unet([32, 64, 128]), "T": 3, "idm": {"start": "tv"}, "loss": "psnr"}, {}, 5e-4,
                   {"mixed_precision": "bf16"}),
    # MRI: one model for 2-12x and every mask kind (scored on SIAT lsq111-120 at 4x / 8x random, not in training)
    "mri-tv-light-T3": ("MRI: light-T3, TV start, complex image as two grayscale images of the batch",
                        {"backbone": light_unet([32, 64, 128]), "T": 3, "task": "mri",
                         "idm": {"start": "tv", "complex_as_batch": True}}, {"patch_size": 128, "batch_size": 2}, 5e-4),
}
MRI_TRAIN = ("mri/train/SIAT_T2_brain_complex/lsq0*.npy", "mri/train/SIAT_T2_brain_complex/lsq10*.npy",
             "mri/train/figshare_T1CE_brain/*.jpg", "mri/train/cardiac_DeepADMMNet/*.mat")


def arm_config(name: str, budget: float, out: Path, checkpoint_every: int = 25) -> dict:
    _, ft, data, lr, *train = ARMS[name]
    if ft.get("task") == "mri":
        train_files = [str(data_root() / p) for p in MRI_TRAIN]
        finetune = {"reversible": False, "fresh_operator_per_step": True, "acceleration_range": [2.0, 12.0],
                    "mask_kinds": ["random", "equispaced", "gaussian1d", "gaussian2d", "poisson", "radial", "spiral"],
                    **ft}
        data = {"complex_mode": "complex", **data}
    else:
        train_files, _ = split_natural()
        finetune = {"task": "cs", "reversible": False, "block_size": 32, "permute": True,
                    "fresh_operator_per_step": True, "ratio_range": [0.01, 0.6], **ft}
    return {
        "stage": "finetune", "seed": 0, "output_dir": str(out),
        "data": {"train": train_files, "patch_size": 64, "batch_size": 8, "num_workers": 0, "augment": True, **data},
        "train": {"steps": 100000, "max_seconds": budget, "fit_to_time": True, "clock": "cpu", "lr": lr,
                  "schedule": "cosine", "warmup_steps": 20, "mixed_precision": "no", "grad_clip": 1.0,
                  "checkpoint_every": checkpoint_every, "keep_checkpoints": 1000, "log_every": 5, "device": "cpu",
                  **(train[0] if train else {})},
        "finetune": finetune,
    }


def run(args) -> None:
    from idm_imaging.training import train

    torch.set_num_threads(1)
    out = RUNS / args.arm
    cfg = arm_config(args.arm, args.budget, out, args.checkpoint_every)
    train(cfg, resume=(out / "checkpoints" / "latest").exists())


def validation_set() -> list[np.ndarray]:
    from PIL import Image

    imgs = []
    for f in split_natural()[1]:
        a = np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0
        h, w = a.shape
        imgs.append(a[(h - 256) // 2:(h - 256) // 2 + 256, (w - 256) // 2:(w - 256) // 2 + 256])
    return imgs


def score(method, imgs) -> dict:
    from idm_imaging.metrics import psnr_y
    from idm_imaging.operators import BlockCS

    out = {}
    for r in VAL_RATIOS:
        op = BlockCS(r, 32, permute=True, seed=VAL_SEED, img_size=(256, 256))
        vals = []
        for a in imgs:
            x = torch.from_numpy(a)[None, None]
            with torch.no_grad():
                xh = method(op.A(x), op)
            vals.append(psnr_y(xh[0, 0].clamp(0, 1).numpy(), a))
        out[f"{r:g}"] = float(np.mean(vals))
    return out


MRI_VAL = ((4.0, "random"), (8.0, "random"), (4.0, "equispaced"), (8.0, "equispaced"))


def mri_validation_set() -> list[np.ndarray]:
    """SIAT lsq111-lsq120 (complex, max |x| = 1), held out of the MRI arm's training data."""
    files = sorted((data_root() / "mri" / "train" / "SIAT_T2_brain_complex").glob("lsq11[1-9].npy"))
    files += sorted((data_root() / "mri" / "train" / "SIAT_T2_brain_complex").glob("lsq120.npy"))
    out = []
    for f in files:
        a = np.load(f, allow_pickle=False).astype(np.complex64)
        out.append(a / np.abs(a).max())
    return out


def score_mri(method, imgs) -> dict:
    from idm_imaging.metrics import fastmri_metrics
    from idm_imaging.operators import SingleCoilFourier, make_mask

    out = {}
    for acc, kind in MRI_VAL:
        vals = []
        for i, a in enumerate(imgs):
            op = SingleCoilFourier(make_mask(kind, a.shape, acc, seed=VAL_SEED + i))
            x = torch.from_numpy(a)[None, None]
            with torch.no_grad():
                xh = method(op.A(x), op)
            vals.append(fastmri_metrics(xh[0, 0].abs().numpy(), np.abs(a))["psnr"])
        out[f"{acc:g}x {kind}"] = float(np.mean(vals))
    return out


def evaluate(args) -> None:
    import warnings

    from idm_imaging.benchmark.baselines import TVFista
    from idm_imaging.training import checkpoint as ckpt
    from idm_imaging.training.config import load_config
    from idm_imaging.training.finetune import FinetuneStage

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    imgs, mri_imgs = validation_set(), None
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"arms": {}}
    if "TV-FISTA" not in results:
        results["TV-FISTA"] = score(TVFista(), imgs)
    for arm_dir in sorted(p for p in RUNS.iterdir() if p.is_dir()) if RUNS.is_dir() else []:
        name = arm_dir.name
        if args.arms and name not in args.arms:
            continue
        cfg = load_config(arm_dir / "train_config.json")
        model = FinetuneStage(cfg).build_model().eval()
        mri = cfg.finetune.task == "mri"
        if mri and mri_imgs is None:
            mri_imgs = mri_validation_set()
            if "TV-FISTA MRI" not in results:  # the references are scored once, not at every evaluation
                results["TV-FISTA MRI"] = score_mri(TVFista(), mri_imgs)
                results["zero-filled MRI"] = score_mri(lambda y, op: op.A_dagger(y), mri_imgs)
        rec = results["arms"].setdefault(name, {"what": ARMS.get(name, ("",))[0], "points": []})
        done = {p["step"] for p in rec["points"]}
        folders = {int(p.name.split("-")[1]): p for p in (arm_dir / "checkpoints").glob("step-*") if p.is_dir()}
        steps = sorted(folders)
        if args.every > 1 and steps:  # a subset of checkpoints (the last always) keeps evaluation short
            steps = sorted(set(steps[::args.every]) | {steps[-1]})
        for s in steps:
            if s in done:
                continue
            ck = folders[s]
            ckpt.load_model_weights(model, ck / "model")
            st = ckpt.load_state(ck, "train_state")
            psnr = score_mri(model, mri_imgs) if mri else score(model, imgs)
            rec["points"].append({"step": s, "cpu_s": round(float(st["elapsed"]), 1),
                                  "samples": s * cfg.data.batch_size * (cfg.data.patch_size / 64) ** 2, **psnr})
            rec["points"].sort(key=lambda p: p["step"])
            print(name, s, psnr, flush=True)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1))
        rec["parameters"] = int(sum(p.numel() for p in model.parameters()))
    RESULTS.write_text(json.dumps(results, indent=1))


def report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(RESULTS.read_text())
    fig, axes = plt.subplots(1, len(VAL_RATIOS) + 1, figsize=(5 * (len(VAL_RATIOS) + 1), 4))
    rows, mri_rows = [], []
    for name, rec in res["arms"].items():
        pts = rec["points"]
        if not pts:
            continue
        if "0.1" not in pts[0]:  # an MRI arm: its own table
            mri_rows.append((name, rec, pts))
            continue
        cpu = np.array([p["cpu_s"] for p in pts]) / 60
        mean = np.array([np.mean([p[f"{r:g}"] for r in VAL_RATIOS]) for p in pts])
        for ax, r in zip(axes, VAL_RATIOS):
            ax.plot(cpu, [p[f"{r:g}"] for p in pts], marker=".", label=name)
        axes[-1].plot(cpu, mean, marker=".", label=name)
        half = [p for p in pts if p["cpu_s"] >= pts[-1]["cpu_s"] / 2]
        slope = (np.mean([half[-1][f"{r:g}"] for r in VAL_RATIOS]) - np.mean([half[0][f"{r:g}"] for r in VAL_RATIOS])) \
            / max((half[-1]["cpu_s"] - half[0]["cpu_s"]) / 3600, 1e-9)
        rows.append((name, rec, pts[-1], float(mean[-1]), slope))
    for ax, r in zip(axes, VAL_RATIOS):
        ax.axhline(res["TV-FISTA"][f"{r:g}"], color="k", ls="--", label="TV-FISTA")
        ax.set_title(f"ratio {r:g}")
    axes[-1].axhline(np.mean([res["TV-FISTA"][f"{r:g}"] for r in VAL_RATIOS]), color="k", ls="--", label="TV-FISTA")
    axes[-1].set_title("mean of the three ratios")
    for ax in axes:
        ax.set_xlabel("CPU minutes (one thread)")
        ax.set_ylabel("validation PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=80)
    rows.sort(key=lambda r: -r[3])
    tv = res["TV-FISTA"]
    lines = ["# Design study: IDM variants at the same CPU time", "",
             "Each arm trains one block-CS model for every ratio (ratio drawn per step from 1-60 %, a fresh matrix",
             "and permutation per step, 64x64 patches, batch 8 unless named, L1 loss, Adam, a cosine fitted to the",
             "budget) for the same CPU time on one thread, and is scored on validation images that no arm trains on",
             "(the last 8 BSDS500 training images by name, centre 256x256 crops; paper protocol, operator seed",
             f"{VAL_SEED}). TV-FISTA (200 iterations, lam 0.001) on the same images: "
             + " / ".join(f"{tv[f'{r:g}']:.2f}" for r in VAL_RATIOS) + " dB at "
             + " / ".join(f"{int(r * 100)} %" for r in VAL_RATIOS) + ".", "",
             "| arm | design | parameters | steps | CPU min | PSNR 10 / 30 / 50 % | mean | slope (dB per CPU-hour, last half) | reproduce |",
             "|---|---|---|---|---|---|---|---|---|"]
    def budget(name):  # the arm's own budget, as its run recorded it
        f = RUNS / name / "train_config.json"
        return json.loads(f.read_text())["train"]["max_seconds"] if f.is_file() else args.budget

    for name, rec, last, mean, slope in rows:
        lines.append(f"| {name} | {rec['what']} | {rec.get('parameters', 0) / 1e6:.2f}M | {last['step']} | "
                     f"{last['cpu_s'] / 60:.1f} | " + " / ".join(f"{last[f'{r:g}']:.2f}" for r in VAL_RATIOS)
                     + f" | {mean:.2f} | {slope:+.2f} | `"
                     + rec.get("reproduce", f"python benchmarks/design_study.py run {name} --budget {budget(name):g}")
                     + "` |")
    if mri_rows:
        keys = [k for k in mri_rows[0][2][0] if k.endswith(("random", "equispaced"))]
        lines += ["", "MRI (one model for 2-12x and every mask kind of `make_mask`, 128x128 patches, batch 2; validation:",
                  "SIAT lsq111-lsq120, not in training; fastMRI PSNR on magnitudes):", "",
                  "| arm | design | steps | CPU min | " + " | ".join(keys) + " |",
                  "|---|---|---|---|" + "---|" * len(keys)]
        for ref in ("zero-filled MRI", "TV-FISTA MRI"):
            if ref in res:
                lines.append(f"| {ref.split()[0]} | reference | - | - | " + " | ".join(f"{res[ref][k]:.2f}" for k in keys) + " |")
        for name, rec, pts in mri_rows:
            for p in pts:
                lines.append(f"| {name} | {rec['what']} | {p['step']} | {p['cpu_s'] / 60:.1f} | "
                             + " | ".join(f"{p[k]:.2f}" for k in keys) + " |")
    lines += ["", "![PSNR against CPU time](design-study.png)", "",
              "Evaluate and redraw: `python benchmarks/design_study.py eval && python benchmarks/design_study.py "
              "report`. Results: `benchmarks/results/design-study.json`.", ""]
    extra = Path(args.notes) if args.notes else None
    if extra and extra.is_file():
        lines += [extra.read_text().rstrip(), ""]
    DOC.write_text("\n".join(lines))
    print("\n".join(lines))


def install(args) -> None:
    """Copy an arm's final model into idm_imaging/weights/<name>/ with training.json, learning_curve.json (the
    validation points of the results file) and MODEL_CARD.md (with --benchmark: the rows of that results JSON)."""
    import platform
    import shutil

    run_dir = RUNS / args.arm
    final = json.loads((run_dir / "final_state.json").read_text())
    cfg = json.loads((run_dir / "train_config.json").read_text())
    dest = ROOT / "idm_imaging" / "weights" / args.name
    if dest.exists() and not args.overwrite:
        sys.exit(f"{dest} exists (pass --overwrite to replace it)")
    # a run that continued an installed model: that model's record and curve come first (read before replacing it)
    prev_dir = Path(args.previous) if args.previous else None
    previous = json.loads((prev_dir / "training.json").read_text()) if prev_dir else None
    prev_points = json.loads((prev_dir / "learning_curve.json").read_text())["points"] if prev_dir else []
    tmp = dest.with_name(f".{args.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir / "model", tmp)
    losses = [ln.split(",") for ln in (run_dir / "log.csv").read_text().splitlines()[1:]]
    ft, tr, data = cfg["finetune"], cfg["train"], cfg["data"]
    training = {
        "steps": final["steps"], "cpu_seconds": final["seconds"], "clock": tr["clock"],
        "device": f"CPU ({platform.processor() or platform.machine()}), one thread; 2-core machine shared with "
                  "another training run", "date": args.date, "stage": "finetune",
        "config": args.config, "data": sorted({Path(p).parent.name for p in data["train"]}),
        "patch_size": data["patch_size"], "batch_size": data["batch_size"], "lr": tr["lr"],
        "schedule": tr["schedule"], "final_loss": float(losses[-1][1]) if losses else None,
        "acquisition": {k: ft[k] for k in ("ratio_range", "acceleration_range", "mask_kinds") if ft.get(k)},
        "loss": ft.get("loss", "l1"), "mixed_precision": tr["mixed_precision"], "idm": ft.get("idm", {}),
    }
    if previous is not None:
        training["continued_from"] = previous
    (tmp / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    res = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"arms": {}}
    arm = res["arms"].get(args.arm, {})
    points = arm.get("points", [])
    if previous is not None and "continues" in arm:  # the arm's points already count from the model's stage 1
        points = prev_points + [p for p in points if p["step"] > (prev_points[-1]["step"] if prev_points else -1)]
    elif previous is not None:  # one curve over the model's whole training: this run's points after the earlier ones
        offset, step0 = _total(previous, "cpu_seconds"), _total(previous, "steps")
        points = prev_points + [{**p, "step": p["step"] + step0, "cpu_s": round(p["cpu_s"] + offset, 1)}
                                for p in points]
    (tmp / "learning_curve.json").write_text(json.dumps(
        {"measure": "validation PSNR (dB) after cpu_s CPU-seconds of training (benchmarks/design_study.py)",
         "points": points}, indent=1) + "\n")
    model_cfg = json.loads((tmp / "config.json").read_text())
    if args.ensemble:  # the test-time ensemble the shipped model runs by default (IDM's ``ensemble``)
        model_cfg["ensemble"] = args.ensemble
    if args.ensemble or args.ensemble_start_iterations is not None:
        model_cfg["ensemble_start_iterations"] = args.ensemble_start_iterations
    (tmp / "config.json").write_text(json.dumps(model_cfg, indent=2, sort_keys=True) + "\n")
    ens, warm = model_cfg.get("ensemble", 1), model_cfg.get("ensemble_start_iterations")
    n_ens = 2 if ens == "auto" else ens  # "auto": 2 except in float32 on a CPU
    lines = [f"# {args.name}", "",
             f"Task `{model_cfg['task']}`, acquisition `{json.dumps(model_cfg['operator_config'], sort_keys=True)}`, "
             f"T = {model_cfg['T']}, start `{model_cfg.get('start', 'pinv')}`, backbone {model_cfg['backbone_type']} "
             f"{model_cfg['backbone_config']['block_out_channels']} (no attention)"
             + (f"; by default the mean of {n_ens} reconstructions of the flipped / rotated problem "
                "(`ensemble`, " + (f"each further one's TV start {warm} iterations warm from the first one's "
                                   "(`ensemble_start_iterations`)" if warm else f"{n_ens}x the time")
                + ("; `\"auto\"`: one in float32 on a CPU, where a second would make it slower than TV-FISTA"
                   if ens == "auto" else "")
                + "; `IDM.from_pretrained(name, ensemble=1)` or `reconstruct --ensemble 1` for one)"
                if n_ens > 1 else "") + ".", "",
             "## Training", "",
             f"{training['steps']} steps of batch {training['batch_size']} ({training['patch_size']}x"
             f"{training['patch_size']} patches) in {training['cpu_seconds'] / 60:.0f} CPU-minutes on one thread, "
             f"{args.date}; `idm-imaging train {args.config}` reproduces it "
             f"(`python benchmarks/design_study.py run {args.arm} --budget {tr['max_seconds']:g} "
             "--checkpoint-every 50` ran it). Details: `training.json`.", ""]
    if previous is not None:
        lines[-2] = (f"{training['steps']} steps of batch {training['batch_size']} ({training['patch_size']}x"
                     f"{training['patch_size']} patches, loss {training['loss']}, {training['mixed_precision']} "
                     f"autocast) in {training['cpu_seconds'] / 60:.0f} minutes ({tr['clock']} clock) on one thread, "
                     f"{args.date}, continuing the model of {_total(previous, 'steps')} steps and "
                     f"{_total(previous, 'cpu_seconds') / 60:.0f} minutes recorded under `continued_from` in "
                     f"`training.json`; `idm-imaging train {args.config}` runs this stage.")
    if args.notes:
        lines += [Path(args.notes).read_text().strip(), ""]
    if points:
        keys = [k for k in points[-1] if k not in ("step", "cpu_s", "samples")]
        lines += ["## Validation during training (`learning_curve.json`)", "",
                  "| step | CPU min | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
        lines += [f"| {p['step']} | {p['cpu_s'] / 60:.1f} | " + " | ".join(f"{p[k]:.2f}" for k in keys) + " |"
                  for p in points]
        lines.append("")
    if args.benchmark:
        bench = json.loads(Path(args.benchmark).read_text())
        rows = [r for r in bench["rows"] if r.get("table") == "main"]
        methods = [m for m in ("zero-filled", "pseudo-inverse", "TV-FISTA", "PnP-BM3D", "IDM")
                   if any(r["method"] == m for r in rows)]
        cells = {(r["dataset"], r["setting"], r["method"]): r for r in rows}
        lines += [f"## Test sets (`{bench['meta']['command']}`, {bench['meta']['date'][:10]})", "",
                  "PSNR dB / SSIM:", "", "| set | setting | " + " | ".join(methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for ds, st in dict.fromkeys((r["dataset"], r["setting"]) for r in rows):
            if not any(m in st for m in (["CS"] if model_cfg["task"] == "cs" else ["x "])):
                continue
            vals = [cells.get((ds, st, m)) for m in methods]
            lines.append(f"| {ds} | {st} | " + " | ".join(
                f"{v['psnr']:.2f} / {v['ssim']:.3f}" if v else "-" for v in vals) + " |")
        lines.append("")
    (tmp / "MODEL_CARD.md").write_text("\n".join(lines))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    print(f"installed {args.arm} as {dest}")


def ensemble(args) -> None:
    """Validation PSNR of one saved model (folder or embedded name) at each test-time ensemble size, with the
    seconds each scoring took (one thread); prints one JSON line per size."""
    import time

    from idm_imaging.models import IDM

    torch.set_num_threads(args.threads)
    for n in args.sizes:
        model = IDM.from_pretrained(args.model, ensemble=n).eval()
        mri = model.config.task == "mri"
        imgs = (mri_validation_set() if mri else validation_set())[: args.limit or None]
        t0 = time.perf_counter()
        psnr = score_mri(model, imgs) if mri else score(model, imgs)
        print(json.dumps({"model": str(args.model), "ensemble": n, "images": len(imgs),
                          "seconds": round(time.perf_counter() - t0, 1),
                          **{k: round(v, 3) for k, v in psnr.items()}}), flush=True)


def _total(record: dict, key: str) -> float:
    """``key`` summed over a training record and the records it continued."""
    return record[key] + (_total(record["continued_from"], key) if "continued_from" in record else 0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train one arm for a CPU-time budget")
    r.add_argument("arm", choices=sorted(ARMS))
    r.add_argument("--budget", type=float, default=480.0, help="CPU seconds (one thread)")
    r.add_argument("--checkpoint-every", type=int, default=25, help="steps between checkpoints")
    e = sub.add_parser("eval", help="score every arm's checkpoints on the validation images")
    e.add_argument("arms", nargs="*")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--every", type=int, default=1, help="score every k-th checkpoint (and the last)")
    o = sub.add_parser("report", help="write docs/design-study.md and its figure")
    o.add_argument("--budget", type=float, default=480.0)
    o.add_argument("--notes", default="", help="a Markdown file appended to the report (conclusions)")
    i = sub.add_parser("install", help="copy an arm's final model into idm_imaging/weights/NAME with its card")
    i.add_argument("arm")
    i.add_argument("name")
    i.add_argument("--config", required=True, help="the configs/*.toml that reproduces the arm (for the card)")
    i.add_argument("--date", required=True)
    i.add_argument("--benchmark", default="", help="a benchmark results JSON whose rows go into the card")
    i.add_argument("--overwrite", action="store_true")
    i.add_argument("--previous", default="", help="the installed model folder the run continued (its training.json "
                                                 "and learning curve come first)")
    i.add_argument("--notes", default="", help="a Markdown file appended to the card")
    i.add_argument("--ensemble", type=lambda v: v if v == "auto" else int(v), choices=[1, 2, 4, 8, "auto"],
                   default=None, help="the model's default test-time ensemble (config.json 'ensemble'; 'auto': 2, "
                   "1 in float32 on a CPU)")
    i.add_argument("--ensemble-start-iterations", type=int, default=None,
                   help="TV iterations of each further member's start, warm from the first's (config.json "
                        "'ensemble_start_iterations'; default: every start from scratch)")
    n = sub.add_parser("ensemble", help="validation PSNR of one model at each test-time ensemble size")
    n.add_argument("model", help="model folder or embedded name")
    n.add_argument("--sizes", type=int, nargs="+", choices=[1, 2, 4, 8], default=[1, 2, 4])
    n.add_argument("--limit", type=int, default=0, help="the first N validation images only (0: all)")
    n.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    {"run": run, "eval": evaluate, "report": report, "install": install, "ensemble": ensemble}[args.cmd](args)


if __name__ == "__main__":
    main()
