"""IDM against TV-FISTA on public images that no model here was trained or tuned on: the photographs bundled
with scikit-image (``skimage.data``; no download), under the benchmark's block-CS protocol (block 32, permuted,
seed 0; PSNR on the Y channel, 0-255; centre crops).

    python benchmarks/public_images.py                      # 10 / 30 / 50 %, 256x256 crops
    python benchmarks/public_images.py --ratios 0.05 0.2 --crop 384
    python benchmarks/public_images.py --precision fp32     # as on a CPU without native bf16

Prints one row per ratio (mean over images, IDM - TV) and writes ``benchmarks/results/public-images.json``
with every image's figures (``--out`` to change; an existing file is replaced only with ``--overwrite``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# scikit-image's bundled photographs (grayscale or RGB -> Y); binary, synthetic and download-only images left out
IMAGES = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel", "moon", "page",
          "rocket", "text")


def load(names=IMAGES, crop: int = 256) -> list[tuple[str, torch.Tensor]]:
    """``(name, (1, 1, H, W) float32 in [0, 1])``: Y channel of RGB images, centre crop of at most ``crop``."""
    import skimage.data

    from idm_imaging.benchmark.run import center_crop
    from idm_imaging.metrics import rgb_to_y

    out = []
    for name in names:
        a = torch.from_numpy(np.asarray(getattr(skimage.data, name)()).astype(np.float32) / 255.0)
        if a.ndim == 3:
            a = rgb_to_y(a[..., :3]).float()
        out.append((name, center_crop(a[None, None], crop)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--images", nargs="+", choices=IMAGES, default=list(IMAGES), metavar="NAME",
                    help="a subset of the photographs (default: all %(default)s)")
    ap.add_argument("--model", default="cs", help="IDM model name or folder (default: %(default)s)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="IDM's precision (auto, the default: bf16 where the CPU has native bf16, else fp32)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "public-images.json")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    if a.out.exists() and not a.overwrite:
        ap.error(f"--out: {a.out} exists (pass --overwrite to replace it)")
    if a.crop < 32:
        ap.error(f"--crop: expected at least 32, got {a.crop}")
    from idm_imaging.benchmark.baselines import TVFista
    from idm_imaging.benchmark.run import BenchmarkConfig, idm_method, score_block_cs
    from idm_imaging.inference import resolve_precision
    from idm_imaging.io import atomic_write_text
    from idm_imaging.models import IDM

    images = load(a.images, crop=a.crop)
    model = IDM.from_pretrained(a.model).eval()
    precision = resolve_precision(a.precision, "cpu", model)
    methods = {"TV-FISTA": TVFista(iterations=BenchmarkConfig.tv_iterations),
               "IDM": idm_method(model, torch.device("cpu"), precision)}
    rows, per_image = [], []
    for ratio in a.ratios:
        scores, entries = {}, [{"image": name, "ratio": ratio} for name, _ in images]
        for m, method in methods.items():
            scores[m], seconds = score_block_cs(method, images, ratio)
            for entry, p, s in zip(entries, scores[m], seconds):
                entry.update({m: round(p, 3), f"{m} s": round(s, 2)})
        per_image += entries
        row = {"ratio": ratio, **{m: round(float(np.mean(v)), 3) for m, v in scores.items()}}
        row["IDM - TV-FISTA"] = round(row["IDM"] - row["TV-FISTA"], 3)
        row["images where IDM wins"] = int(sum(i > t for i, t in zip(scores["IDM"], scores["TV-FISTA"])))
        rows.append(row)
        print(f"{ratio:5.0%}  TV-FISTA {row['TV-FISTA']:.2f}  IDM {row['IDM']:.2f}  "
              f"({row['IDM - TV-FISTA']:+.2f} dB, IDM better on {row['images where IDM wins']}/{len(images)})")
        sys.stdout.flush()
    record = {"what": "IDM vs TV-FISTA on scikit-image's bundled photographs (block CS, benchmark protocol)",
              "command": " ".join(["python benchmarks/public_images.py", *(sys.argv[1:] if argv is None else argv)]),
              "date": _dt.date.today().isoformat(), "model": a.model, "precision": precision,
              "ensemble": model.ensemble_size("cpu", precision == "bf16"),
              "images": [n for n, _ in images], "crop": a.crop, "torch": torch.__version__,
              "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads", "rows": rows,
              "per_image": per_image}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(record, indent=2) + "\n")
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
