"""Training pipeline: config validation, deterministic data, prior + finetune stages, exact resume, DDP."""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from idm_imaging.training import PatchDataset, load_config, train
from idm_imaging.training.data import augment8, make_loader
from idm_imaging.training.loop import weights_sha256

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _tiny(kind: str = "prior") -> dict:
    with open(REPO / "configs" / f"tiny-{kind}.toml", "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Six smooth random grayscale PNGs of different sizes (one smaller than the patch)."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 48), (36, 36), (12, 20), (48, 40), (44, 52), (40, 40)]):
        base = rng.random((h // 4 + 1, w // 4 + 1))
        img = np.kron(base, np.ones((4, 4)))[:h, :w]  # blocky, so a denoiser has something to learn
        Image.fromarray((img * 255).astype(np.uint8)).save(d / f"img{i}.png")
    return d


def _cfg(images: Path, out: Path, kind: str = "prior", **train_over) -> dict:
    d = _tiny(kind)
    d["data"]["train"] = [str(images / "*.png")]
    d["output_dir"] = str(out)
    d["train"].update(train_over)
    return d


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # same reduction order as this process
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("patch, key", [
    ({"bogus": 1}, "bogus"),
    ({"data": {"bogus": 1}}, "data.bogus"),
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"train": {"steps": "ten"}}, "train.steps"),
    ({"train": {"schedule": "linear"}}, "train.schedule"),
    ({"prior": {"unet": {"not_an_arg": 3}}}, "prior.unet.not_an_arg"),
    ({"prior": {"down_block_types": ["DownBlock2D"]}}, "prior.down_block_types"),
    ({"stage": "finetune"}, "finetune"),
    ({"stage": "finetune", "finetune": {"prior": "p", "task": "ct"}}, "finetune.task"),
])
def test_bad_config_names_key(images, tmp_path, patch, key):
    d = _cfg(images, tmp_path / "out")
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k].update(v)
        else:
            d[k] = v
    with pytest.raises(ValueError, match=f"'{key}'"):
        load_config(d)


def test_config_toml_roundtrip(tmp_path):
    cfg = load_config(REPO / "configs" / "prior-gray.toml")
    assert cfg.stage == "prior" and cfg.prior.block_out_channels[:2] == [48, 96]
    assert cfg.prior.down_block_types[0] == "DownBlock2D"  # no attention at the highest resolution
    # the saved JSON form loads back to the same config
    p = tmp_path / "c.json"
    p.write_text(cfg.to_json())
    assert load_config(p).to_dict() == cfg.to_dict()
    # a continuation's relative paths (output, weights it starts from) are saved absolute: the run folder's
    # train_config.json rebuilds the same model from anywhere
    import tomllib

    raw = tomllib.loads((REPO / "configs" / "cs.toml").read_text())["finetune"]["init_weights"]
    cont = load_config(REPO / "configs" / "cs.toml")
    assert raw.startswith("../") and Path(cont.to_dict()["finetune"]["init_weights"]) == (REPO / "configs" / raw).resolve()
    (tmp_path / "elsewhere").mkdir()
    p2 = tmp_path / "elsewhere" / "train_config.json"
    p2.write_text(cont.to_json())
    assert load_config(p2).to_dict() == cont.to_dict()
    from idm_imaging.models.registry import REGISTRY

    shipped = [n for n in REGISTRY if n != "prior-gray"]
    for name in shipped:  # every shipped model has its CPU config
        c = load_config(REPO / "configs" / f"{name}.toml")  # CPU runs: plain autograd (faster, memory is no issue)
        assert c.stage == "finetune" and not c.finetune.reversible and c.train.max_seconds > 0
    gpu = sorted(p.stem for p in (REPO / "configs" / "gpu").glob("*.toml") if p.stem != "prior-gray")
    assert gpu and set(gpu) <= set(shipped)  # a GPU config continues a shipped model, never an alias
    for name in gpu:
        c = load_config(REPO / "configs" / f"{name}.toml")
        g = load_config(REPO / "configs" / "gpu" / f"{name}.toml")  # GPU runs: continue the shipped model in bf16
        assert g.stage == "finetune" and g.finetune.init == name and g.finetune.task == c.finetune.task
        assert g.train.mixed_precision == "bf16" and g.train.fit_to_time and not g.finetune.prior
        assert all(p.startswith("$IDM_IMAGING_DATA/") for p in g.data.train)  # the one data setting


# ---------------------------------------------------------------- data


def test_augment8_distinct():
    x = np.arange(12.0).reshape(3, 4)
    outs = [augment8(x, k) for k in range(8)]
    keys = {(o.shape, o.tobytes()) for o in outs}
    assert len(keys) == 8
    for o in outs:  # each is a permutation of the pixels
        assert sorted(o.ravel()) == sorted(x.ravel())


def test_dataset_deterministic(images, tmp_path):
    ds = PatchDataset([str(images / "*.png")], patch_size=16, seed=3)
    assert len(ds) == 6
    a = ds[(2, 0)]  # the 12x20 image: reflect-padded up to 16x16
    assert a.shape == (1, 16, 16) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, PatchDataset([str(images)], 16, seed=3)[(2, 0)])  # a folder works like a glob
    assert not torch.equal(ds[(0, 0)], ds[(0, 1)])  # new epoch, new crop/augmentation
    assert not torch.equal(ds[(0, 0)], PatchDataset([str(images / "*.png")], 16, seed=4)[(0, 0)])
    # same batches whatever the number of workers
    b0 = torch.cat(list(make_loader(ds, 2, epoch=1, seed=3, num_workers=0)))
    b2 = torch.cat(list(make_loader(ds, 2, epoch=1, seed=3, num_workers=2)))
    assert torch.equal(b0, b2) and b0.shape == (6, 1, 16, 16)
    # resuming mid-epoch replays the remaining batches
    tail = torch.cat(list(make_loader(ds, 2, epoch=1, seed=3, start_batch=1, num_workers=0)))
    assert torch.equal(tail, b0[2:])
    # two DDP ranks get disjoint shards
    r0 = list(make_loader(ds, 1, 0, 3, rank=0, world_size=2, num_workers=0).sampler)
    r1 = list(make_loader(ds, 1, 0, 3, rank=1, world_size=2, num_workers=0).sampler)
    assert {i for i, _ in r0}.isdisjoint({i for i, _ in r1}) and len(r0) == len(r1) == 3


def test_dataset_complex_and_volumes(tmp_path):
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((24, 24)) + 1j * rng.standard_normal((24, 24))).astype(np.complex64) * 7
    np.save(tmp_path / "z.npy", z)
    vol = rng.random((3, 24, 24)).astype(np.float32) * 500
    np.save(tmp_path / "vol.npy", vol)
    ds = PatchDataset([str(tmp_path / "*.npy")], patch_size=24, seed=0, augment=False, complex_mode="complex")
    assert len(ds) == 4  # 3 volume slices + 1 image
    xs = [ds[i] for i in range(4)]
    assert all(x.dtype == torch.complex64 for x in xs)
    for x in xs:  # whole slice as the patch: max |x| = 1 after normalisation
        assert math.isclose(float(x.abs().max()), 1.0, rel_tol=1e-6)
    zi = [i for i, (f, _) in enumerate(ds.items) if ds.files[f].endswith("z.npy")][0]
    np.testing.assert_allclose(ds[zi][0].numpy(), z / np.abs(z).max(), rtol=1e-5)
    mag = PatchDataset([str(tmp_path / "z.npy")], 24, seed=0, augment=False, complex_mode="magnitude")[0]
    assert mag.dtype == torch.float32
    np.testing.assert_allclose(mag[0].numpy(), np.abs(z) / np.abs(z).max(), rtol=1e-5)


# ---------------------------------------------------------------- prior stage


def test_prior_trains_and_loads(images, tmp_path):
    from diffusers import UNet2DConditionModel

    out = train(_cfg(images, tmp_path / "run", steps=5, checkpoint_every=5))
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)
    unet = UNet2DConditionModel.from_pretrained(str(out / "model"), use_safetensors=True)
    assert weights_sha256(unet) == json.loads((out / "final_state.json").read_text())["rank_weight_sha256"][0]
    ck = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    assert json.loads((ck / "train_config.json").read_text())["train"]["steps"] == 5
    assert json.loads((ck / "train_state.json").read_text())  # optimizer state, no pickle anywhere
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))
    torch.manual_seed(0)  # training changed the weights
    fresh = UNet2DConditionModel.from_config(unet.config)
    assert not torch.equal(fresh.conv_in.weight, unet.conv_in.weight)
    with pytest.raises(ValueError, match="output_dir"):  # refuses to overwrite a run without resume
        train(_cfg(images, tmp_path / "run", steps=5))


def test_fit_to_time_ends_the_cosine_inside_the_budget(images, tmp_path, monkeypatch):
    """train.fit_to_time shortens steps from the measured rate: the LR reaches ~0 before max_seconds runs out."""
    from idm_imaging.training import loop
    from idm_imaging.training.loop import CosineWithWarmup

    f = CosineWithWarmup(2, 10)  # diffusers' formula: linear warm-up, half cosine to 0 at total
    assert [f(0), f(1), f(2), f(10)] == [0.0, 0.5, 1.0, 0.0] and math.isclose(f(6), 0.5)
    # refit, longer then shorter: the LR runs on from where it is, never rises, and ends at the new total
    f.refit(6, 30)
    lrs = [f(s) for s in range(6, 31)]
    assert math.isclose(lrs[0], 0.5) and all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == 0.0
    before = f(12)
    f.refit(12, 16)
    assert math.isclose(f(12), before) and f(14) < before and f(16) == 0.0
    with pytest.raises(ValueError, match="'train.fit_to_time'"):
        load_config(_cfg(images, tmp_path / "bad", fit_to_time=True, schedule="cosine"))  # no max_seconds
    # a clock that advances 0.1 s per reading: the same steps on any machine under any load (a real clock makes
    # the measured step rate, and so the fitted total, depend on what else the machine runs)
    ticks = itertools.count()
    monkeypatch.setitem(loop._CLOCKS, "wall", lambda: 0.1 * next(ticks))
    out = train(_cfg(images, tmp_path / "fit", steps=100_000, schedule="cosine", max_seconds=3, fit_to_time=True,
                     log_every=5, checkpoint_every=100_000))
    rows = list(csv.DictReader(open(out / "log.csv")))
    done = json.loads((out / "final_state.json").read_text())["steps"]
    assert 10 <= done < 100_000 and int(rows[-1]["step"]) == done
    # ended by the fitted schedule, at the budget (a few readings of the clock past it: the last log point's)
    assert 3 <= float(rows[-1]["seconds"]) <= 3.5
    assert float(rows[-1]["lr"]) < 0.05 * float(rows[0]["lr"])  # the cosine ran to its end
    ck = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    assert json.loads((ck / "train_state.json").read_text())  # the fitted total is saved for a resume


def test_resume_after_kill_is_exact(images, tmp_path):
    steps = 24
    base = _cfg(images, tmp_path / "straight", steps=steps, checkpoint_every=4, ema_decay=0.9, schedule="step",
                step_size=5)
    straight = train(base)

    killed = copy.deepcopy(base)
    killed["output_dir"] = str(tmp_path / "killed")
    cfg_path = tmp_path / "killed.json"
    cfg_path.write_text(json.dumps(killed))
    proc = subprocess.Popen([PY, "-m", "idm_imaging.training", str(cfg_path)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    t0 = time.time()
    while not latest.exists() and proc.poll() is None and time.time() - t0 < 120:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.exists(), "the run ended before writing a checkpoint"
    assert not (tmp_path / "killed" / "model").exists(), "the run finished before it was killed"
    resumed_from = int(latest.read_text().split("-")[1])
    assert 0 < resumed_from < steps

    r = subprocess.run([PY, "-m", "idm_imaging.training", str(cfg_path), "--resume"], env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(straight / "model"), _weights(tmp_path / "killed" / "model")  # EMA weights
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fa = json.loads((straight / "final_state.json").read_text())["rank_weight_sha256"]
    fb = json.loads((tmp_path / "killed" / "final_state.json").read_text())["rank_weight_sha256"]
    assert fa == fb  # raw (non-EMA) weights too
    la = list(csv.DictReader(open(straight / "log.csv")))
    lb = list(csv.DictReader(open(tmp_path / "killed" / "log.csv")))
    assert [(x["step"], x["loss"], x["lr"]) for x in la] == [(x["step"], x["loss"], x["lr"]) for x in lb]


@pytest.mark.slow
def test_ddp_two_ranks_identical(images, tmp_path):
    cfg = _cfg(images, tmp_path / "ddp", steps=4, checkpoint_every=2)
    cfg_path = tmp_path / "ddp.json"
    cfg_path.write_text(json.dumps(cfg))
    env = _env()
    env["OMP_NUM_THREADS"] = "1"
    torchrun = Path(PY).with_name("torchrun")
    cmd = [str(torchrun)] if torchrun.exists() else [PY, "-m", "torch.distributed.run"]
    r = subprocess.run(cmd + ["--standalone", "--nproc_per_node", "2", "-m", "idm_imaging.training",
                              str(cfg_path)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((tmp_path / "ddp" / "final_state.json").read_text())
    assert state["world_size"] == 2
    h0, h1 = state["rank_weight_sha256"]
    assert h0 == h1 and state["ranks_identical"]
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tmp_path / "ddp" / "model"), use_safetensors=True)
    assert weights_sha256(unet) == h0
    ck = tmp_path / "ddp" / "checkpoints" / "step-00000004"
    assert (ck / "rng-rank0.json").is_file() and (ck / "rng-rank1.json").is_file()
    # the two ranks drew different shards: a single-process run of the same config ends elsewhere
    single = train(_cfg(images, tmp_path / "single", steps=4, checkpoint_every=2))
    assert json.loads((single / "final_state.json").read_text())["rank_weight_sha256"][0] != h0


# ---------------------------------------------------------------- finetune stage


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> Path:
    from idm_imaging.training.prior import PriorStage

    d = tmp_path_factory.mktemp("prior")
    cfg = load_config({**_tiny("prior"), "data": {**_tiny("prior")["data"], "patch_size": 32}})
    stage = PriorStage(cfg)
    torch.manual_seed(0)
    stage.save_model(stage.build_model(), d / "model")
    return d / "model"


@pytest.mark.parametrize("task", ["cs", "mri"])
def test_finetune_l1_decreases(images, tmp_path, tiny_prior, task):
    pytest.importorskip("idm_imaging.models", exc_type=ImportError)
    pytest.importorskip("idm_imaging.operators", exc_type=ImportError)
    from idm_imaging.models import IDM
    from idm_imaging.training.finetune import FinetuneStage

    d = _cfg(images, tmp_path / "ft", kind="finetune")
    d["finetune"]["prior"] = str(tiny_prior)
    d["finetune"]["task"] = task
    stage = FinetuneStage(load_config(d))
    ds = PatchDataset([str(images / "*.png")], 32, seed=99, complex_mode=stage.complex_mode)
    x = torch.stack([ds[(i, 5)] for i in range(len(ds))])  # held-out crops (another seed and epoch)

    def l1(model) -> float:
        with torch.no_grad():
            return float(stage.loss(model.eval(), x, torch.Generator().manual_seed(7), step=0))

    before = l1(stage.build_model())
    out = train(d)
    losses = [float(r["loss"]) for r in csv.DictReader(open(out / "log.csv"))]
    assert len(losses) == d["train"]["steps"] and all(math.isfinite(v) for v in losses)
    model = IDM.from_pretrained(out / "model")
    assert model.reversible and model.config.task == task
    after = l1(model)
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("task", ["cs", "mri"])
def test_finetune_psnr_loss_is_minus_the_mean_psnr(images, tmp_path, tiny_prior, task):
    """finetune.loss = "psnr": the mean over images of 10 log10(MSE) (peak 1), whatever the error's scale."""
    from idm_imaging.training.finetune import FinetuneStage

    d = _cfg(images, tmp_path / "ft", kind="finetune")
    d["finetune"].update(prior=str(tiny_prior), task=task, loss="psnr")
    stage = FinetuneStage(load_config(d))
    x = torch.rand(2, 1, 32, 32)
    x = x.to(torch.complex64) if task == "mri" else x
    err = torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # image 0 off by 0.1 everywhere, image 1 by 0.01
    model = lambda y, op: x + err  # noqa: E731
    mse = err.flatten() ** 2 / (2 if task == "mri" else 1)  # complex: the error is in the real part only
    expect = float((10 * torch.log10(mse)).mean())
    assert abs(float(stage.loss(model, x, torch.Generator().manual_seed(0), step=0)) - expect) < 1e-3
    d["finetune"]["loss"] = "l2"
    with pytest.raises(ValueError, match="finetune.loss"):
        load_config(d)


@pytest.mark.parametrize("task", ["cs", "mri"])
def test_finetune_operator_fresh_per_step_or_fixed(images, tmp_path, tiny_prior, task):
    """fresh_operator_per_step draws each step's matrix / mask from the step's generator (reproducible, different
    across steps); off, every step uses operator_seed. The former key fresh_mask_per_step is still read."""
    from idm_imaging.training.finetune import FinetuneStage

    d = _cfg(images, tmp_path / "ft", kind="finetune")
    d["finetune"].update(prior=str(tiny_prior), task=task, operator_seed=5)
    probe = torch.rand(1, 1, 32, 32)

    def measure(stage, seed):
        op = stage.operator(torch.Generator().manual_seed(seed))
        return op.A(probe.to(torch.complex64) if task == "mri" else probe), op

    fresh = FinetuneStage(load_config(d))
    assert fresh.fc.fresh_operator_per_step and fresh.operator_settings()["fresh_per_step"]
    (a1, _), (a1b, _), (a2, _) = measure(fresh, 1), measure(fresh, 1), measure(fresh, 2)
    assert torch.equal(a1, a1b) and not torch.allclose(a1, a2)

    d["finetune"]["fresh_mask_per_step"] = False  # the former name
    fixed = FinetuneStage(load_config(d))
    assert not fixed.fc.fresh_operator_per_step
    (b1, op1), (b2, op2) = measure(fixed, 1), measure(fixed, 2)
    assert op1 is op2 and torch.equal(b1, b2)
    if task == "cs":
        assert op1.seed == 5


def test_finetune_init_continues_from_a_trained_idm(images, tmp_path, tiny_prior):
    """``finetune.init`` starts from an IDM (folder or embedded name) instead of a prior: same weights at step 0,
    the config's acquisition recorded, task/T mismatches and prior+init named as config keys."""
    from idm_imaging.models import IDM
    from idm_imaging.models.registry import resolve_checkpoint
    from idm_imaging.training.finetune import FinetuneStage

    d = _cfg(images, tmp_path / "ft", kind="finetune", steps=2)
    d["finetune"]["prior"] = str(tiny_prior)
    first = FinetuneStage(load_config(d)).build_model()
    with torch.no_grad():
        for p in first.parameters():
            p.add_(0.01 * torch.randn_like(p))
    first.save_pretrained(tmp_path / "first")

    d["finetune"]["prior"] = ""
    d["finetune"]["init"] = str(tmp_path / "first")
    d["finetune"]["ratio"] = 0.3
    stage = FinetuneStage(load_config(d))
    cont = stage.build_model()
    assert cont.config.operator_config["ratio"] == 0.3 and cont.reversible == d["finetune"].get("reversible", True)
    a, b = first.state_dict(), cont.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    out = train(d)
    assert IDM.from_pretrained(out / "model").config.operator_config["ratio"] == 0.3
    assert json.loads((out / "train_config.json").read_text())["finetune"]["init"] == str(tmp_path / "first")

    # finetune.idm overrides the loaded model's sampler settings (same weights)
    longer = FinetuneStage(load_config({**d, "finetune": {**d["finetune"], "idm": {"start": "tv", "start_iterations": 120,
                                                                                  "start_inner": 2}}})).build_model()
    assert (longer.config.start, longer.config.start_iterations, longer.config.start_inner) == ("tv", 120, 2)
    assert all(torch.equal(a[k], longer.state_dict()[k]) for k in a)
    with pytest.raises(ValueError, match="'finetune.init'.*task"):
        FinetuneStage(load_config({**d, "finetune": {**d["finetune"], "task": "mri"}})).build_model()
    with pytest.raises(ValueError, match="'finetune.prior'"):
        load_config({**d, "finetune": {**d["finetune"], "prior": str(tiny_prior)}})
    # an embedded prior by name
    d["finetune"].update(prior="prior-gray", init="")
    assert FinetuneStage(load_config(d)).prior_path == resolve_checkpoint("prior-gray")


TINY_LIGHT = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=[8, 16],
                  norm_num_groups=4, add_attention=False, down_block_types=["DownBlock2D"] * 2,
                  up_block_types=["UpBlock2D"] * 2)


def test_finetune_ratio_range_draws_each_step_and_is_recorded(images, tmp_path):
    """``finetune.ratio_range``: each step's block-CS ratio is drawn from the range (reproducibly, from the step's
    generator); the model records the range, takes any ratio inside it without a warning, warns outside."""
    import warnings

    from idm_imaging.operators import BlockCS
    from idm_imaging.training.finetune import FinetuneStage

    d = _cfg(images, tmp_path / "ft", kind="finetune")
    d["finetune"].update(prior="", backbone=TINY_LIGHT, ratio_range=[0.05, 0.6])
    stage = FinetuneStage(load_config(d))
    ratios = [stage.operator(torch.Generator().manual_seed(s)).ratio for s in range(40)]
    assert all(0.05 <= r <= 0.6 for r in ratios) and max(ratios) - min(ratios) > 0.3
    assert stage.operator(torch.Generator().manual_seed(3)).ratio == ratios[3]
    rec = stage.operator_settings()
    assert rec["ratio_range"] == [0.05, 0.6] and "ratio" not in rec and rec["fresh_per_step"]
    model = stage.build_model().eval()
    x = torch.rand(1, 1, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for r in (0.05, 0.37, 0.6):
            op = BlockCS(r, block_size=16, seed=11)
            model(op.A(x), op)
    with pytest.warns(UserWarning, match="ratios 0.05 to 0.6"):
        op = BlockCS(0.8, block_size=16)
        model(op.A(x), op)
    with pytest.raises(ValueError, match="finetune.ratio_range"):
        load_config({**d, "finetune": {**d["finetune"], "ratio_range": [0.5, 0.2]}})


def test_finetune_acceleration_range_and_mask_kinds(images, tmp_path):
    """MRI: each step draws an acceleration (log-uniform in the range) and a mask kind; both recorded."""
    from idm_imaging.training.finetune import FinetuneStage

    d = _cfg(images, tmp_path / "ft", kind="finetune")
    d["finetune"].update(prior="", backbone=TINY_LIGHT, task="mri", acceleration_range=[2.0, 12.0],
                         mask_kinds=["random", "equispaced", "poisson"], idm={"complex_as_batch": True})
    stage = FinetuneStage(load_config(d))
    drawn = [stage.draw_setting(torch.Generator().manual_seed(s)) for s in range(60)]
    assert all(2.0 <= a <= 12.0 for a, _, _ in drawn)
    assert {k for _, k, _ in drawn} == {"random", "equispaced", "poisson"}
    for s in range(20):  # every drawn setting gives a mask (32 columns reach some accelerations only roughly)
        gen = torch.Generator().manual_seed(s)
        op = stage.operator(gen)
        gen = torch.Generator().manual_seed(s)
        torch.randint(0, 2**31 - 1, (1,), generator=gen)  # the seed draw comes first
        acc, _, _ = stage.draw_setting(gen)
        assert op.is_complex and abs(op.mask.numel() / op.mask.sum().item() - acc) / acc < 0.2
    assert stage.operator_settings() == {"type": "SingleCoilFourier", "acceleration_range": [2.0, 12.0],
                                         "mask_kinds": ["random", "equispaced", "poisson"], "fresh_per_step": True}
    with pytest.raises(ValueError, match="finetune.mask_kinds"):
        load_config({**d, "finetune": {**d["finetune"], "mask_kinds": ["zigzag"]}})


def test_finetune_backbone_starts_as_the_pseudo_inverse_and_trains(images, tmp_path):
    """``finetune.backbone``: a random-initialised diffusers UNet whose noise head starts at zero, so the untrained
    IDM returns the pseudo-inverse (times the couplings' mixing weight); it trains under a CPU-time clock and
    ``init_weights`` carries its weights into an MRI model of the same backbone (complex_as_batch)."""
    from idm_imaging.models import IDM
    from idm_imaging.operators import BlockCS
    from idm_imaging.training.finetune import FinetuneStage

    d = _cfg(images, tmp_path / "ft", kind="finetune", clock="cpu", steps=4, checkpoint_every=4)
    d["finetune"].update(prior="", backbone=TINY_LIGHT, ratio_range=[0.1, 0.5])
    model = FinetuneStage(load_config(d)).build_model().eval()
    op = BlockCS(0.3, block_size=16, seed=2)
    x = torch.rand(2, 1, 32, 32)
    y = op.A(x)
    model.register_to_config(measured_mean=False)
    with torch.no_grad():
        out, pinv = model(y, op), op.A_dagger(y)
    k = (out * pinv).sum() / (pinv * pinv).sum()  # the couplings' learned mixing scales the estimate
    assert 0.5 < k < 1.5
    torch.testing.assert_close(out, k * pinv, atol=1e-5, rtol=1e-4)
    out = train(d)
    assert json.loads((out / "final_state.json").read_text())["steps"] == 4
    cs = IDM.from_pretrained(out / "model")
    assert cs.config.backbone_type == "UNet2DModel" and cs.config.operator_config["ratio_range"] == [0.1, 0.5]

    m = _cfg(images, tmp_path / "mri", kind="finetune")
    m["finetune"].update(prior="", backbone=TINY_LIGHT, task="mri", init_weights=str(out / "model"),
                         idm={"complex_as_batch": True})
    mri = FinetuneStage(load_config(m)).build_model()
    a, b = cs.state_dict(), mri.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="finetune.init_weights"):
        load_config({**m, "finetune": {**m["finetune"], "backbone": {}, "prior": "p"}})
    with pytest.raises(ValueError, match="train.clock"):
        load_config({**d, "train": {**d["train"], "clock": "sundial"}})
