"""``idm-imaging demo``: the README's main job, offline, on images that ship with scikit-image.

Simulates a block-CS acquisition (ratio 0.1) of the camera image and a 4x single-coil Cartesian acquisition
of the Shepp-Logan phantom, reconstructs both, writes side-by-side PNGs and prints PSNR/SSIM.
When embedded models are installed, IDM runs beside the pseudo-inverse / zero-filled baseline with the model the
command line picks for each setting (``idm_imaging.models.registry.default_model``: ``cs`` at 10 %, ``mri`` at
4x); otherwise only the baseline runs and a note says so.
"""

from __future__ import annotations

import time
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="simulate two acquisitions of built-in images and reconstruct them")
    p.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda:N (default: %(default)s)")
    p.set_defaults(func=run)


def test_images(size: int) -> dict[str, np.ndarray]:
    """Camera (natural) and Shepp-Logan phantom (MRI-like), float32 in [0, 1], size x size."""
    import numpy as np
    from skimage import data, transform

    camera = data.camera().astype(np.float32) / 255.0
    phantom = data.shepp_logan_phantom().astype(np.float32)
    return {
        name: np.clip(transform.resize(img, (size, size), anti_aliasing=True), 0, 1).astype(np.float32)
        for name, img in (("camera", camera), ("phantom", phantom))
    }


def demo_models(say=print) -> dict:
    """task -> (name, loaded embedded IDM): the default for the demo's 10 % CS and 4x MRI jobs, for the tasks
    that have one installed; a note for those that do not."""
    from idm_imaging.models import IDM
    from idm_imaging.models.registry import default_model

    loaded = {}
    for task, setting in (("cs", {"ratio": 0.1}), ("mri", {"acceleration": 4.0})):
        name = default_model(task, **setting)
        if name is not None:
            loaded[task] = (name, IDM.from_pretrained(name).eval().float())
    missing = [t for t in ("cs", "mri") if t not in loaded]
    if missing:
        say(f"note: no embedded model for {', '.join(missing)}: showing the pseudo-inverse / zero-filled "
            "baseline only for those jobs")
    return loaded


def run(args) -> int:
    import numpy as np
    import torch

    from idm_imaging.cli._common import check_device
    from idm_imaging.inference import resolve_device
    from idm_imaging.io import write_scan
    from idm_imaging.metrics import fastmri_metrics, psnr_y, ssim_y
    from idm_imaging.operators import BlockCS, SingleCoilFourier

    if args.size < 32:
        raise ValueError(f"--size must be >= 32, got {args.size}")
    check_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    images = test_images(args.size)
    models = demo_models()

    jobs = [
        ("cs_camera_ratio0.1", images["camera"], BlockCS(0.1, block_size=32, permute=True, seed=0)),
        ("mri_phantom_4x", images["phantom"],
         SingleCoilFourier.from_mask_params("random", (args.size, args.size), 4, seed=0)),
    ]
    print(f"{'job':<22} {'method':<16} {'PSNR dB':>8} {'SSIM':>6} {'seconds':>8}")
    for name, img, op in jobs:
        x = torch.from_numpy(img)[None, None].to(device)
        op = op.to(device)
        y = op.measure(x)
        task = "mri" if op.is_complex else "cs"
        methods = [("zero-filled" if op.is_complex else "pseudo-inverse", op.A_dagger)]
        if task in models:
            label, model = models[task]
            model = model.to(device)
            methods.append((f"IDM {label}", lambda y_, m=model, o=op: m(y_, o)))
        panels = [img]
        for method, recon in methods:
            t0 = time.perf_counter()
            with torch.no_grad():
                x_hat = recon(y)
            seconds = time.perf_counter() - t0
            x_hat = x_hat.abs() if x_hat.is_complex() else x_hat
            rec = x_hat[0, 0].clamp(0, 1).cpu().numpy()
            if op.is_complex:
                m = fastmri_metrics(rec, img)
                psnr_db, ssim_v = m["psnr"], m["ssim"]
            else:
                psnr_db, ssim_v = psnr_y(rec, img), ssim_y(rec, img)
            print(f"{name:<22} {method:<16} {psnr_db:8.2f} {ssim_v:6.3f} {seconds:8.3f}")
            panels.append(rec)
        panels.append(np.clip(np.abs(panels[-1] - img) * 4, 0, 1))
        write_scan(torch.from_numpy(np.concatenate(panels, axis=1)), out / f"{name}.png")
    layout = "reference | baseline" + (" | IDM" if models else "") + " | 4x |error| of the last"
    print(f"wrote {len(jobs)} panels ({layout}) to {out}/")
    return 0
