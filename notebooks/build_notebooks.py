"""Build (and optionally execute) the tutorial notebooks reproducibly with nbformat.

    python notebooks/build_notebooks.py            # write the .ipynb files (no outputs)
    python notebooks/build_notebooks.py --execute  # write and execute them in place (committed copies carry outputs)

Every notebook runs offline on 2 CPU cores in well under 5 minutes. Set ``IDM_NB_SMALL=1`` (the test suite does)
for even smaller settings. Kernel: ``python3`` of the running interpreter (ipykernel installed in the venv).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

COMMON = """\
import os, json, tempfile, time
from pathlib import Path
import numpy as np
import torch
%matplotlib inline
import matplotlib.pyplot as plt
os.environ.setdefault("TQDM_DISABLE", "1")   # no training progress bars in the saved outputs
torch.set_num_threads(min(2, os.cpu_count() or 1))
SMALL = os.environ.get("IDM_NB_SMALL") == "1"   # the test suite runs the notebooks on smaller settings
torch.manual_seed(0)
"""

MODEL_PICK = """\
from idm_imaging.models import IDM
from idm_imaging.models import registry

def embedded_or_untrained(name, task):
    \"\"\"The embedded trained model `name` when installed, else an untrained tiny IDM (outputs not meaningful).\"\"\"
    if name in registry.available_models():
        print(f"using the embedded trained model {name!r}")
        return IDM.from_pretrained(name).eval(), f"IDM {name}"
    print(f"embedded model {name!r} is not installed: using an UNTRAINED tiny IDM to show the API "
          "(its images are not meaningful; pass a trained folder to IDM.from_pretrained)")
    return IDM(T=2, task=task).eval(), "IDM (untrained)"
"""


def quickstart() -> list:
    return [
        new_markdown_cell("# 01 · Quick start\n\nOperators (block compressed sensing and single-coil MRI), "
                          "k-space masks, and reconstructing an image with IDM next to the pseudo-inverse."),
        new_code_cell(COMMON),
        new_markdown_cell("## Operators\n\nEvery operator has `A`, `A_adjoint`, `A_dagger` and `measure`; images "
                          "are `(B, C, H, W)`. Block CS at ratio 0.1 keeps `q = ceil(0.1 * 32^2)` numbers per "
                          "32x32 block."),
        new_code_cell("""\
from skimage import data, transform
from idm_imaging.operators import BlockCS, SingleCoilFourier, MASK_KINDS, make_mask

n = 64 if SMALL else 128
img = transform.resize(data.camera() / 255.0, (n, n), anti_aliasing=True).astype(np.float32)
x = torch.from_numpy(img)[None, None]
op = BlockCS(0.1, block_size=32, seed=0, img_size=(n, n))
y = op.A(x)
print("image", tuple(x.shape), "-> measurement", tuple(y.shape), "| config", op.get_config())
# adjointness <A x, y> = <x, A^T y>
y2 = torch.randn_like(y)
print("adjoint check:", float((op.A(x) * y2).sum()), "vs", float((x * op.A_adjoint(y2)).sum()))"""),
        new_markdown_cell("## k-space masks (4x acceleration)"),
        new_code_cell("""\
fig, axes = plt.subplots(1, len(MASK_KINDS), figsize=(2.2 * len(MASK_KINDS), 2.4))
for ax, kind in zip(axes, MASK_KINDS):
    m = np.asarray(make_mask(kind, (n, n), 4, seed=0))
    ax.imshow(m, cmap="gray"); ax.set_title(f"{kind}\\n{m.size / m.sum():.2f}x", fontsize=9); ax.axis("off")
plt.tight_layout(); plt.show()"""),
        new_markdown_cell("## Reconstruct an image\n\n`model(y, operator)` runs the whole T-step invertible "
                          "sampler; `operator.A_dagger(y)` is the pseudo-inverse baseline."),
        new_code_cell(MODEL_PICK),
        new_code_cell("""\
from idm_imaging.metrics import psnr_y, ssim_y

cs_model, cs_label = embedded_or_untrained("cs", "cs")
with torch.no_grad():
    x_pinv = op.A_dagger(y)
    t0 = time.perf_counter(); x_idm = cs_model(y, op); dt = time.perf_counter() - t0
results = {"pseudo-inverse": x_pinv, cs_label: x_idm}
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
axes[0].imshow(img, cmap="gray", vmin=0, vmax=1); axes[0].set_title("reference")
for ax, (name, r) in zip(axes[1:], results.items()):
    r = r[0, 0].clamp(0, 1).numpy()
    ax.imshow(r, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{name}\\nPSNR {psnr_y(r, img):.2f} dB, SSIM {ssim_y(r, img):.3f}", fontsize=9)
for ax in axes: ax.axis("off")
plt.tight_layout(); plt.show()
print(f"IDM forward: {dt:.2f} s on the CPU")"""),
        new_markdown_cell("## MRI: zero-filled vs IDM (4x random Cartesian)"),
        new_code_cell("""\
from idm_imaging.metrics import fastmri_metrics

phantom = transform.resize(data.shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float32)
mri_op = SingleCoilFourier.from_mask_params("random", (n, n), 4, seed=0)
k = mri_op.measure(torch.from_numpy(phantom)[None, None], sigma=0.0)
mri_model, mri_label = embedded_or_untrained("mri", "mri")
with torch.no_grad():
    zf, rec = mri_op.A_dagger(k).abs(), mri_model(k, mri_op).abs()
for name, r in (("zero-filled", zf), (mri_label, rec)):
    m = fastmri_metrics(r[0, 0].numpy(), phantom)
    print(f"{name:<20} PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.3f}  NMSE {m['nmse']:.4f}")"""),
    ]


def monai_pipeline() -> list:
    return [
        new_markdown_cell("# 02 · MONAI pipeline on a 3-D NIfTI volume\n\n`LoadImaged` -> `KspaceUndersampled` "
                          "-> `IDMReconstructd` -> `SaveImaged`, with MONAI's `PSNRMetric` / `SSIMMetric` per slice. "
                          "The volume is reconstructed slice by slice along its last axis, `batch_size` slices per "
                          "model call."),
        new_code_cell(COMMON),
        new_code_cell("""\
import nibabel as nib
from skimage import data, transform

n, depth = (48, 4) if SMALL else (96, 8)
base = transform.resize(data.shepp_logan_phantom(), (n, n), anti_aliasing=True)
vol = np.stack([base * (0.6 + 0.4 * np.cos(np.pi * (k - depth / 2) / depth)) for k in range(depth)], axis=-1)
work = Path(tempfile.mkdtemp(prefix="idm_nb02_"))
affine = np.diag([0.9, 0.9, 3.0, 1.0]); affine[:3, 3] = [-40, -40, 10]
nib.save(nib.Nifti1Image(vol.astype(np.float32), affine), work / "phantom.nii.gz")
print("volume", vol.shape, "written to", work / "phantom.nii.gz")"""),
        new_code_cell(MODEL_PICK),
        new_code_cell("""\
from monai.data import CacheDataset
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, SaveImaged, ScaleIntensityd
from idm_imaging.transforms import IDMReconstructd, KspaceUndersampled

model, label = embedded_or_untrained("mri", "mri")
pipeline = Compose([
    LoadImaged("image"), EnsureChannelFirstd("image"), ScaleIntensityd("image"),
    KspaceUndersampled("image", mask_kind="random", acceleration=4, seed=0),
    IDMReconstructd("image", model, batch_size=4),
    SaveImaged("image_recon", output_dir=str(work), output_postfix="idm", separate_folder=False,
               resample=False, print_log=False),
])
ds = CacheDataset([{"image": str(work / "phantom.nii.gz")}], transform=pipeline, cache_rate=1.0,
                  num_workers=0, progress=False)
t0 = time.perf_counter(); item = ds[0]; print(f"pipeline: {time.perf_counter() - t0:.1f} s")
saved = nib.load(work / "phantom_idm.nii.gz")
print("saved", saved.shape, "affine kept:", np.allclose(saved.affine, affine))"""),
        new_code_cell("""\
from monai.metrics import PSNRMetric, SSIMMetric

def per_slice(t):  # (C, H, W, D) -> (D, C, H, W)
    return t.as_tensor().permute(3, 0, 1, 2)

ref = per_slice(item["image"])
scores = {}
for key, name in (("image_pinv", "zero-filled"), ("image_recon", label)):
    rec = per_slice(item[key])
    scores[name] = (PSNRMetric(max_val=1.0)(rec, ref)[:, 0].numpy(),
                    SSIMMetric(spatial_dims=2, data_range=1.0)(rec, ref)[:, 0].numpy())
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for name, (p, s) in scores.items():
    axes[0].plot(p, "o-", label=name); axes[1].plot(s, "o-", label=name)
axes[0].set(xlabel="slice", ylabel="PSNR (dB)"); axes[1].set(xlabel="slice", ylabel="SSIM")
axes[0].legend(); plt.tight_layout(); plt.show()
for name, (p, s) in scores.items():
    print(f"{name:<20} mean PSNR {p.mean():.2f} dB, mean SSIM {s.mean():.3f}")"""),
        new_code_cell("""\
mid = depth // 2
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, (key, title) in zip(axes, (("image", "reference"), ("image_pinv", "zero-filled"), ("image_recon", label))):
    ax.imshow(item[key][0, :, :, mid].T, cmap="gray"); ax.set_title(f"{title} (slice {mid})"); ax.axis("off")
plt.tight_layout(); plt.show()"""),
    ]


def finetune() -> list:
    return [
        new_markdown_cell("# 03 · Fine-tune IDM on your own images\n\nA few steps on the CPU with "
                          "`idm_imaging.training.train`: (a) a tiny diffusion prior on a folder of images, then "
                          "(b) IDM fine-tuning from that prior (L1 loss, block CS at ratio 0.25), then reconstruct "
                          "with the result. Real runs use the configs in `configs/` and many more steps."),
        new_code_cell(COMMON),
        new_code_cell("""\
from PIL import Image
from skimage import data, transform

work = Path(tempfile.mkdtemp(prefix="idm_nb03_"))
folder = work / "my_images"; folder.mkdir()
sources = {"camera": data.camera(), "moon": data.moon(), "coins": data.coins(), "text": data.text(),
           "brick": data.brick(), "grass": data.grass()}
for name, im in sources.items():   # your own folder of PNG/TIFF/JPEG images goes here
    im = transform.resize(im / 255.0, (64, 64), anti_aliasing=True)
    Image.fromarray((im * 255).astype(np.uint8)).save(folder / f"{name}.png")
print(sorted(p.name for p in folder.iterdir()))"""),
        new_code_cell("""\
from idm_imaging.training import train

steps_prior, steps_ft = (4, 6) if SMALL else (20, 30)
prior_cfg = {
    "stage": "prior", "seed": 0, "output_dir": str(work / "prior"),
    "data": {"train": [str(folder / "*.png")], "patch_size": 32, "batch_size": 2, "num_workers": 0},
    "train": {"steps": steps_prior, "lr": 1e-3, "schedule": "constant", "checkpoint_every": steps_prior,
              "log_every": max(1, steps_prior // 4), "device": "cpu"},
    "prior": {"unet_class": "UNet2DConditionModel", "block_out_channels": [16, 16],
              "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
              "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1,
              "norm_num_groups": 8, "cross_attention_dim": 8, "attention_head_dim": 4},
}
t0 = time.perf_counter(); prior_dir = train(prior_cfg); print(f"prior: {time.perf_counter() - t0:.1f} s ->", prior_dir)"""),
        new_code_cell("""\
ft_cfg = {
    "stage": "finetune", "seed": 0, "output_dir": str(work / "idm"),
    "data": {"train": [str(folder / "*.png")], "patch_size": 32, "batch_size": 2, "num_workers": 0},
    "train": {"steps": steps_ft, "lr": 2e-3, "schedule": "constant", "checkpoint_every": steps_ft,
              "log_every": max(1, steps_ft // 5), "device": "cpu"},
    "finetune": {"prior": str(Path(prior_dir) / "model"), "T": 2, "task": "cs", "ratio": 0.25, "block_size": 16},
}
t0 = time.perf_counter(); idm_dir = train(ft_cfg); print(f"fine-tune: {time.perf_counter() - t0:.1f} s ->", idm_dir)
print(sorted(p.name for p in (Path(idm_dir) / "model").iterdir()))"""),
        new_code_cell("""\
from idm_imaging.models import IDM
from idm_imaging.operators import BlockCS
from idm_imaging.metrics import psnr_y

model = IDM.from_pretrained(Path(idm_dir) / "model").eval()
test = transform.resize(data.astronaut()[..., 1] / 255.0, (64, 64), anti_aliasing=True).astype(np.float32)
op = BlockCS(0.25, block_size=16, seed=0, img_size=(64, 64))
y = op.A(torch.from_numpy(test)[None, None])
with torch.no_grad():
    pinv, rec = op.A_dagger(y)[0, 0].clamp(0, 1).numpy(), model(y, op)[0, 0].clamp(0, 1).numpy()
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
for ax, (t, im) in zip(axes, (("reference", test), (f"pseudo-inverse {psnr_y(pinv, test):.2f} dB", pinv),
                              (f"fine-tuned IDM {psnr_y(rec, test):.2f} dB", rec))):
    ax.imshow(im, cmap="gray", vmin=0, vmax=1); ax.set_title(t, fontsize=9); ax.axis("off")
plt.tight_layout(); plt.show()
print("a few CPU steps only: the fine-tuned model is a smoke test, not a useful reconstructor yet")"""),
        new_markdown_cell("Use it from the command line: `idm-imaging reconstruct scan.png --out rec.png --task cs "
                          "--ratio 0.25 --block-size 16 --model <output_dir>/model`.\n\n"
                          "## Or continue a shipped model on your images\n\n`finetune.init` starts from an "
                          "embedded model (or any saved IDM folder) instead of a prior: the same acquisition "
                          "(here `cs`: block 32, permuted, any ratio of `ratio_range`, any seed: "
                          "`fresh_operator_per_step`, the default, draws a new matrix every step), your data, a "
                          "small learning rate."),
        new_code_cell("""\
steps_more = 3 if SMALL else 10
more_cfg = {
    "stage": "finetune", "seed": 0, "output_dir": str(work / "cs-mine"),
    "data": {"train": [str(folder / "*.png")], "patch_size": 64, "batch_size": 2, "num_workers": 0},
    "train": {"steps": steps_more, "lr": 2e-5, "schedule": "constant", "checkpoint_every": steps_more,
              "log_every": 1, "device": "cpu"},
    "finetune": {"init": "cs", "T": 3, "task": "cs", "ratio_range": [0.01, 0.6], "block_size": 32, "permute": True,
                 "loss": "psnr", "reversible": False},
}
t0 = time.perf_counter(); mine_dir = train(more_cfg); print(f"continued: {time.perf_counter() - t0:.1f} s ->", mine_dir)
op10 = BlockCS(0.1, block_size=32, permute=True, seed=0, img_size=(64, 64))
y10 = op10.A(torch.from_numpy(test)[None, None])
for label, src in (("shipped cs at 10 %", "cs"), ("continued on my images", Path(mine_dir) / "model")):
    with torch.no_grad():
        out = IDM.from_pretrained(src).eval()(y10, op10)[0, 0].clamp(0, 1).numpy()
    print(f"{label:24s} {psnr_y(out, test):.2f} dB")"""),
    ]


def benchmark_analysis() -> list:
    return [
        new_markdown_cell("# 04 · Benchmark analysis\n\nLoads the committed benchmark results "
                          "(`benchmarks/results/benchmark.json`, else `benchmark-quick.json`, written by "
                          "`idm-imaging benchmark`) and plots PSNR against the CS ratio per method."),
        new_code_cell(COMMON),
        new_code_cell("""\
import re

root = Path.cwd()
while not (root / "pyproject.toml").exists() and root != root.parent:
    root = root.parent
results_dir = root / "benchmarks" / "results"
candidates = [results_dir / "benchmark.json", results_dir / "benchmark-quick.json"]
found = next((p for p in candidates if p.is_file()), None)
if found:
    res = json.loads(found.read_text())
    rows = res["rows"]
    print(f"loaded {found.relative_to(root)}: {len(rows)} rows, {res['meta'].get('hardware', '')}")
else:
    rows = []
    print(f"no benchmark results yet: run `idm-imaging benchmark` (or `--quick`); they will appear in "
          f"{results_dir}/benchmark.json and .csv")"""),
        new_code_cell("""\
def cs_ratio(setting):
    m = re.match(r"CS (\\d+)%", setting)
    return int(m.group(1)) / 100 if m else None

if rows:
    curves = {}
    for r in rows:
        ratio = cs_ratio(r["setting"])
        if r.get("table") == "main" and ratio is not None:
            curves.setdefault((r["dataset"], r["method"]), []).append((ratio, r["psnr"]))
    source = "benchmark"
else:   # no results: a live pseudo-inverse curve on one image, so the plot below has something to show
    from skimage import data, transform
    from idm_imaging.operators import BlockCS
    from idm_imaging.metrics import psnr_y
    img = transform.resize(data.camera() / 255.0, (128, 128), anti_aliasing=True).astype(np.float32)
    x = torch.from_numpy(img)[None, None]
    pts = []
    for ratio in (0.1, 0.3, 0.5):
        op = BlockCS(ratio, block_size=32, seed=0, img_size=(128, 128))
        pts.append((ratio, psnr_y(op.A_dagger(op.A(x))[0, 0].clamp(0, 1).numpy(), img)))
    curves = {("camera (live)", "pseudo-inverse"): pts}
    source = "live example (not benchmark results)"
datasets = sorted({d for d, _ in curves})
fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
for ax, ds in zip(axes[0], datasets):
    for (d, method), pts in sorted(curves.items()):
        if d == ds:
            pts = sorted(pts); ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=method)
    ax.set(title=ds, xlabel="CS ratio", ylabel="PSNR (dB)"); ax.legend(fontsize=8)
fig.suptitle(source); plt.tight_layout(); plt.show()"""),
        new_code_cell("""\
if rows:
    print(f"{'dataset':<18} {'setting':<22} {'method':<22} {'PSNR':>7} {'SSIM':>7}")
    for r in rows:
        if r.get("table") == "main":
            print(f"{r['dataset']:<18} {r['setting']:<22} {r['method']:<22} {r['psnr']:>7.2f} {r['ssim']:>7.4f}")"""),
    ]


def deepinv_interop() -> list:
    return [
        new_markdown_cell("# 05 · IDM inside deepinv\n\nOur operators as deepinv physics, deepinv's own solvers "
                          "(TV and wavelet FISTA) run on them, and IDM as a deepinv `Reconstructor`, side by side on "
                          "three images. Needs the deepinv extra: `pip install 'idm-imaging[deepinv]'` "
                          "(`make test-deepinv` builds that environment and runs this notebook)."),
        new_code_cell(COMMON),
        new_code_cell("""\
import deepinv as dinv
from skimage import data, transform
from idm_imaging.operators import BlockCS, SingleCoilFourier, make_mask
from idm_imaging.interop.deepinv import (DeepinvDiffPIR, DeepinvSolver, IDMReconstructor, channels_to_complex,
                                         complex_to_channels, operator_from_deepinv)
from idm_imaging.benchmark.baselines import DiffusionPrior, TVFista
from idm_imaging.metrics import psnr_y
print("deepinv", dinv.__version__)
n = 64 if SMALL else 128
def crop(img):
    img = transform.resize(img.astype(np.float64) / img.max(), (n, n), anti_aliasing=True)
    return torch.from_numpy(img.astype(np.float32))[None, None]
images = {"camera": crop(data.camera()), "moon": crop(data.moon()), "coins": crop(data.coins())}"""),
        new_markdown_cell("## Our operator as a deepinv physics, and back\n\n`BlockCS.to_deepinv()` returns a "
                          "`deepinv.physics.LinearPhysics` whose `A`, `A_adjoint` and `A_dagger` are ours; "
                          "`operator_from_deepinv` turns it (or deepinv's own `CompressedSensing` / `MRI`) back."),
        new_code_cell("""\
op = BlockCS(0.3, block_size=32, seed=0, img_size=(n, n))
physics = op.to_deepinv()
x = images["camera"]
y = physics(x)
print(type(physics).__name__, "| max |A_ours - A_deepinv|:", float((op.A(x) - y).abs().max()))
u = torch.randn_like(y)
print("adjoint check:", float((y * u).sum()), "vs", float((x * physics.A_adjoint(u)).sum()))
back = operator_from_deepinv(physics)
print("round trip gives the same y:", torch.equal(back.A(x), y))"""),
        new_markdown_cell("## deepinv's solvers and IDM on the same measurements\n\nBlock CS at 10 / 30 %. "
                          "deepinv TV and wavelet: `optim_builder('FISTA', prior=TVPrior / WaveletPrior)` with the "
                          "tuned weights the benchmark uses (`DeepinvSolver.settings()`: weights tuned on Train400 "
                          "crops, TV prox with balanced primal-dual steps, wavelet threshold equal to the weight); "
                          "deepinv DiffPIR: `deepinv.sampling.DiffPIR` with the embedded diffusion prior "
                          "`prior-gray` as its denoiser (`PriorDenoiser`), 50 steps, "
                          "deepinv's default parameters; TV-FISTA is this package's "
                          "solver; IDM is the embedded `cs` model run through `IDMReconstructor` (deepinv's "
                          "`Reconstructor` interface: `model(y, physics)`)."),
        new_code_cell(MODEL_PICK),
        new_code_cell("""\
idm, idm_label = embedded_or_untrained("cs", "cs")
idm_dinv = IDMReconstructor(idm)
prior = DiffusionPrior.load("prior-gray")
methods = {   # 200 iterations each, from A^+ y (fewer leave these solvers far from converged)
    "pseudo-inverse": lambda y, ph: ph.A_dagger(y),
    "deepinv wavelet": lambda y, ph: DeepinvSolver("wavelet", iterations=200)(y, ph),
    "deepinv TV": lambda y, ph: DeepinvSolver("tv", iterations=200)(y, ph),
    "deepinv DiffPIR": lambda y, ph: DeepinvDiffPIR(prior, steps=50)(y, ph),
    "TV-FISTA": lambda y, ph: TVFista(iterations=200)(y, operator_from_deepinv(ph)),
    idm_label: lambda y, ph: idm_dinv(y, ph),
}
table, shown = {}, {}
for ratio in (0.1, 0.3):
    ph = BlockCS(ratio, block_size=32, seed=0, img_size=(n, n)).to_deepinv()
    for name, img in images.items():
        y = ph(img)
        for method, run in methods.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                out = run(y, ph)[0, 0].clamp(0, 1).numpy()
            table[(ratio, name, method)] = (psnr_y(out, img[0, 0].numpy()), time.perf_counter() - t0)
            if ratio == 0.1 and name == "camera":
                shown[method] = out
print(f"{'ratio':>5} {'method':<18}" + "".join(f"{k:>10}" for k in images) + f"{'mean':>8}{'s/img':>7}")
for ratio in (0.1, 0.3):
    for method in methods:
        vals = [table[(ratio, k, method)][0] for k in images]
        secs = np.mean([table[(ratio, k, method)][1] for k in images])
        print(f"{ratio:>5.0%} {method:<18}" + "".join(f"{v:>10.2f}" for v in vals) + f"{np.mean(vals):>8.2f}{secs:>7.2f}")"""),
        new_code_cell("""\
fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3 * (len(shown) + 1), 3.2))
axes[0].imshow(images["camera"][0, 0], cmap="gray", vmin=0, vmax=1); axes[0].set_title("reference")
for ax, (method, out) in zip(axes[1:], shown.items()):
    ax.imshow(out, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{method}\\n{table[(0.1, 'camera', method)][0]:.2f} dB", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.suptitle("block CS 10 %, camera"); plt.tight_layout(); plt.show()"""),
        new_markdown_cell("## deepinv's test loop on IDM, and MRI\n\n`deepinv.test` runs IDM like any deepinv "
                          "model; its PSNR equals ours (same images, same measurements). For MRI the physics is "
                          "deepinv's `MRI` (real and imaginary parts as 2 channels)."),
        new_code_cell("""\
from torch.utils.data import DataLoader

ph = BlockCS(0.3, block_size=32, seed=0, img_size=(n, n)).to_deepinv()
loader = DataLoader([img[0] for img in images.values()], batch_size=1)   # a dataset of (1, H, W) images
with torch.no_grad():   # deepinv's PSNR: on the unclipped output, peak 1
    ours = np.mean([10 * np.log10(1 / float(((idm_dinv(ph(img), ph) - img) ** 2).mean())) for img in images.values()])
    res = dinv.test(idm_dinv, loader, ph, metrics=dinv.metric.PSNR(max_pixel=1.0), online_measurements=True,
                    device="cpu", verbose=False)
psnr_key = next(k for k in res if k.startswith("PSNR") and "std" not in k and "no learning" not in k)
print(f"deepinv.test PSNR {res[psnr_key]:.3f} dB, this notebook {ours:.3f} dB")

brain = crop(data.shepp_logan_phantom()).to(torch.complex64)
mri_op = SingleCoilFourier(make_mask("random", (n, n), 4.0, seed=0))
mri_ph = mri_op.to_deepinv()
print(type(mri_ph).__name__, "| same k-space:",
      bool(torch.allclose(channels_to_complex(mri_ph(complex_to_channels(brain))), mri_op.A(brain), atol=1e-6)))
mri_idm, mri_label = embedded_or_untrained("mri", "mri")
with torch.no_grad():
    k = mri_ph(complex_to_channels(brain))
    zf = channels_to_complex(mri_ph.A_dagger(k)).abs()
    rec = channels_to_complex(IDMReconstructor(mri_idm)(k, mri_ph)).abs()
def mri_psnr(a):
    return 10 * np.log10(1.0 / float(((a - brain.abs()) ** 2).mean()))
print(f"MRI 4x random, Shepp-Logan: zero-filled {mri_psnr(zf):.2f} dB, {mri_label} {mri_psnr(rec):.2f} dB")"""),
    ]


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart,
    "02_monai_pipeline.ipynb": monai_pipeline,
    "03_finetune_your_images.ipynb": finetune,
    "04_benchmark_analysis.ipynb": benchmark_analysis,
    "05_deepinv.ipynb": deepinv_interop,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name]())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 300) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execute", action="store_true", help="execute each notebook and save it with its outputs")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell when executing")
    ap.add_argument("names", nargs="*", help=f"notebooks to build (default: all of {list(NOTEBOOKS)})")
    a = ap.parse_args(argv)
    for name in a.names or NOTEBOOKS:
        nb = build(name)
        if a.execute:
            nb = execute(nb, HERE, timeout=a.timeout)
        nbformat.validate(nb)
        tmp = HERE / f".{name}.tmp"
        nbformat.write(nb, str(tmp))
        tmp.replace(HERE / name)
        print("wrote", HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
