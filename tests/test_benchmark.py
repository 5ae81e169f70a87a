"""Benchmark baselines on known-answer cases, and the benchmark run on a tiny synthetic setup."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from idm_imaging.benchmark.baselines import (
    DDNM, DPS, DiffusionPrior, PnPBM3D, PseudoInverse, TVFista, VarNet, train_varnet,
)
from idm_imaging.metrics import psnr
from idm_imaging.operators import BlockCS, SingleCoilFourier, make_mask


def _phantom(n: int = 64) -> torch.Tensor:
    """Piecewise-constant: background 0.1, a square 0.8, a disc 0.5, a bar 0.3."""
    x = torch.full((1, 1, n, n), 0.1)
    x[..., n // 8: n // 2, n // 8: n // 2] = 0.8
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    x[0, 0][((yy - 0.68 * n) ** 2 + (xx - 0.68 * n) ** 2) < (0.18 * n) ** 2] = 0.5
    x[..., int(0.75 * n): int(0.85 * n), n // 8: n // 2] = 0.3
    return x


def _tiny_prior(cross: bool = True) -> DiffusionPrior:
    import diffusers

    torch.manual_seed(0)
    if cross:
        unet = diffusers.UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 16),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, cross_attention_dim=8,
            attention_head_dim=4)
    else:
        unet = diffusers.UNet2DModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                     block_out_channels=(16, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    return DiffusionPrior(unet, name="tiny-random")


def test_pseudo_inverse_is_exact_at_full_sampling():
    x = torch.rand(1, 1, 32, 32)
    op = BlockCS(1.0, block_size=8)
    assert torch.allclose(PseudoInverse()(op.A(x), op), x, atol=1e-5)


def test_tv_fista_recovers_phantom_far_better_than_zero_filled():
    x = _phantom(64)
    op = SingleCoilFourier(make_mask("random", (64, 64), 4, seed=1))
    y = op.A(x)
    zf = psnr(PseudoInverse()(y, op).abs(), x, data_range=1.0)
    tv = psnr(TVFista(lam=0.003, iterations=150)(y, op).abs(), x, data_range=1.0)
    assert tv > zf + 8.0, (zf, tv)


def test_tv_fista_block_cs_beats_pseudo_inverse():
    x = _phantom(64)
    op = BlockCS(0.3, block_size=16, seed=0)
    y = op.A(x)
    pinv = psnr(PseudoInverse()(y, op), x, data_range=1.0)
    tv = psnr(TVFista(lam=0.003, iterations=150)(y, op), x, data_range=1.0)
    assert tv > pinv + 8.0, (pinv, tv)


def test_pnp_bm3d_beats_pseudo_inverse_and_ends_consistent():
    x = _phantom(64)
    op = BlockCS(0.3, block_size=16, seed=0)
    y = op.A(x)
    m = PnPBM3D(sigma_start=0.2, sigma_end=0.01, iterations=6, stage="hard")
    out = m(y, op)
    pinv = psnr(PseudoInverse()(y, op), x, data_range=1.0)
    assert psnr(out, x, data_range=1.0) > pinv + 8.0
    assert torch.allclose(op.A(out), y, atol=1e-4)  # the last step is the projection onto {A x = y}
    assert m.sigmas()[0] == pytest.approx(0.2) and m.sigmas()[-1] == pytest.approx(0.01)
    assert m.settings()["library"].startswith("bm3d ")
    mri = SingleCoilFourier(make_mask("random", (64, 64), 4, seed=1))
    out = m(mri.A(x.to(torch.complex64)), mri)  # complex: real and imaginary parts as two channels
    zf = psnr(PseudoInverse()(mri.A(x), mri).abs(), x, data_range=1.0)
    assert out.is_complex() and psnr(out.abs(), x, data_range=1.0) > zf + 2.0
    with pytest.raises(ValueError, match="stage"):
        PnPBM3D(stage="wiener")
    with pytest.raises(ValueError, match="sigma_start"):
        PnPBM3D(sigma_start=0)


@pytest.mark.parametrize("op", [BlockCS(1.0, block_size=8),
                                SingleCoilFourier(torch.ones(32, 32, dtype=torch.bool))], ids=["cs-1.0", "mri-full"])
def test_ddnm_with_identity_operator_returns_input(op):
    x = torch.rand(1, 1, 32, 32)
    out = DDNM(_tiny_prior(), steps=5)(op.A(x), op)
    assert out.shape == x.shape and not out.is_complex()
    assert torch.allclose(out, x, atol=1e-4), float((out - x).abs().max())


def test_ddnm_output_is_consistent_with_measurements():
    x = _phantom(32)
    op = BlockCS(0.25, block_size=8, seed=2)
    y = op.A(x)
    out = DDNM(_tiny_prior(cross=False), steps=5)(y, op)
    assert float((op.A(out) - y).norm() / y.norm()) < 1e-4


def test_dps_reduces_data_consistency_residual():
    x = _phantom(32)
    op = BlockCS(0.25, block_size=8, seed=3)
    y = op.A(x)
    prior = _tiny_prior()
    res = lambda out: float((op.A(out) - y).norm() / y.norm())  # noqa: E731
    free = res(DPS(prior, steps=10, zeta=0.0, seed=0)(y, op))  # unconditional sampling, same noise
    guided = res(DPS(prior, steps=10, zeta=1.0, seed=0)(y, op))
    assert guided < 0.5 * free, (free, guided)


def test_varnet_forward_and_training_step_reduces_loss(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(2):
        img = (np.clip(_phantom(32)[0, 0].numpy() + 0.05 * rng.standard_normal((32, 32)), 0, 1) * 255)
        Image.fromarray(img.astype(np.uint8)).save(tmp_path / f"im{i}.png")
    torch.manual_seed(0)
    model = VarNet(num_cascades=2, features=(4, 4, 8, 8, 16, 4))
    op = SingleCoilFourier(make_mask("random", (32, 32), 4, seed=0))
    x = _phantom(32)
    out = model(op.A(x), op)
    assert out.shape == (1, 1, 32, 32) and not out.is_complex()
    before = float(torch.nn.functional.l1_loss(model(op.A(x), op), x))
    info = train_varnet(model, [str(tmp_path / "*.png")], 4, time_budget_s=3600, max_steps=25, patch_size=32,
                        batch_size=2, lr=3e-3)
    after = float(torch.nn.functional.l1_loss(model(op.A(x), op), x))
    assert info["steps"] == 25
    assert after < before, (before, after)
    assert train_varnet(model, [], 4, time_budget_s=10, enabled=False)["steps"] == 0


def test_bad_inputs_are_rejected():
    prior = _tiny_prior()
    with pytest.raises(ValueError, match="lam"):
        TVFista(lam=-1)
    with pytest.raises(ValueError, match="steps"):
        DDNM(prior, steps=0)
    with pytest.raises(ValueError, match="eta"):
        DDNM(prior, eta=1.5)
    with pytest.raises(TypeError, match="prior"):
        DPS("prior-gray")
    with pytest.raises(TypeError, match="operator"):
        PseudoInverse()(torch.zeros(1), object())
    op = BlockCS(0.5, block_size=8)
    with pytest.raises(ValueError, match="y"):
        TVFista()(torch.full((1, 1, 32, 1, 1), float("nan")), op)


# ----------------------------------------------------------------------------------------- the run
def _write_png(path, arr):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """Synthetic datasets folder, a tiny random prior folder and tiny random IDM models (cs, mri)."""
    from diffusers import DDPMScheduler

    from idm_imaging.models import IDM

    root = tmp_path_factory.mktemp("bench")
    ph = _phantom(64)[0, 0].numpy()
    for i in range(2):
        _write_png(root / "data/natural/test/Set11" / f"img{i}.png", np.roll(ph, 5 * i, axis=1))
        _write_png(root / "data/mri/test/BrainImages_test" / f"brain{i}.png", ph * (0.6 + 0.2 * i))
        _write_png(root / "data/mri/train" / f"train{i}.png", ph[::-1] * 0.9)
    prior = _tiny_prior()
    prior.unet.save_pretrained(str(root / "prior"), safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(str(root / "prior" / "scheduler"))
    torch.manual_seed(0)
    IDM(T=1, task="cs").save_pretrained(str(root / "cs"), safe_serialization=True)
    IDM(T=1, task="mri").save_pretrained(str(root / "mri"), safe_serialization=True)
    return root


def test_run_writes_tables_with_every_method(tiny_setup, tmp_path):
    from idm_imaging.benchmark import run

    root = tiny_setup
    res = run(quick=True, out_dir=tmp_path / "results", docs_dir=tmp_path / "docs", datasets_dir=root / "data",
              log=None, crop=None, n_natural=2, n_mri=2, diffusion_steps=2, tv_iterations=100,
              models={"cs": str(root / "cs"), "mri": str(root / "mri")}, prior=str(root / "prior"),
              varnet_budget_s=0.5, varnet_cascades=1, varnet_features=(4, 4, 8, 8, 16, 4), varnet_patch=32,
              varnet_train=("mri/train/*.png",), pnp_iterations=3, deepinv=False)
    main = {(r["dataset"], r["method"]): r for r in res["rows"] if r["table"] == "main"}
    assert set(main) == {("Set11", m) for m in ("pseudo-inverse", "TV-FISTA", "PnP-BM3D", "DDNM", "DPS", "IDM")} | {
        ("BrainImages_test", m) for m in ("zero-filled", "TV-FISTA", "PnP-BM3D", "DDNM", "DPS", "IDM", "VarNet")}
    # the external row names its library and version, in the row and in the Markdown
    from importlib.metadata import version

    assert main[("Set11", "PnP-BM3D")]["note"] == f"bm3d {version('bm3d')}"
    assert main[("Set11", "PnP-BM3D")]["psnr"] > main[("Set11", "pseudo-inverse")]["psnr"] + 3
    # TV on a near piecewise-constant image beats the pseudo-inverse in both protocols
    assert main[("Set11", "TV-FISTA")]["psnr"] > main[("Set11", "pseudo-inverse")]["psnr"] + 3
    assert main[("BrainImages_test", "TV-FISTA")]["psnr"] > main[("BrainImages_test", "zero-filled")]["psnr"] + 3
    assert all(r["n_images"] == 2 and r["seconds_per_image"] > 0 for r in res["rows"])
    gen = {(r["setting"], r["method"]) for r in res["rows"] if r["table"] == "generalisation"}
    assert ("CS 30% (trained 10%)", "IDM") in gen
    assert {("4x equispaced (trained 4x random)", "IDM"), ("4x radial (trained 4x random)", "VarNet")} <= gen
    # files: JSON equals the returned dict, CSV has one line per row, Markdown and a PNG figure
    on_disk = json.loads((tmp_path / "results/benchmark-quick.json").read_text())
    assert on_disk["rows"] == res["rows"] and on_disk["meta"]["version"] and on_disk["meta"]["hardware"]["cpu"]
    with open(tmp_path / "results/benchmark-quick.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(res["rows"]) and float(rows[0]["psnr"]) == res["rows"][0]["psnr"]
    md = (tmp_path / "docs/benchmark-quick.md").read_text()
    assert "## Main table" in md and "| Set11 | CS 10% | IDM |" in md and "Quick subset" in md
    assert "External implementations" in md and f"PnP-BM3D (bm3d {version('bm3d')})" in md
    assert "(benchmark-quick_figure.png)" in md
    png = (tmp_path / "docs/benchmark-quick_figure.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_skips_missing_models_and_datasets_with_reasons(tmp_path):
    from idm_imaging.benchmark import run

    res = run(quick=True, out_dir=tmp_path / "r", docs_dir=tmp_path / "d", datasets_dir=tmp_path / "nothing",
              log=None, prior="no-such-prior", models={"cs": str(tmp_path / "missing")})
    assert res["rows"] == []
    from importlib.util import find_spec

    from idm_imaging.models.registry import ALIASES, REGISTRY

    data = tmp_path / "nothing"
    expected = {
        ("DDNM, DPS", "diffusion prior 'no-such-prior' not available (name_or_dir: 'no-such-prior' is neither a "
                      f"folder nor an embedded model; available names: {sorted(REGISTRY)}, "
                      f"aliases: {sorted(ALIASES)})"),
        ("Set11", f"dataset folder {data / 'natural/test/Set11'} not found"),
        ("BrainImages_test", f"dataset BrainImages_test not found under {data / 'mri'}"),
    }
    if find_spec("deepinv") is None:  # the core install: deepinv's rows are skipped with the way to get them
        expected.add(("deepinv TV, deepinv wavelet", "deepinv is not installed (pip install 'idm-imaging[deepinv]')"))
    assert {(s["what"], s["reason"]) for s in res["skipped"]} == expected
    assert all(s["table"] == "main" for s in res["skipped"])
    assert "(no rows" in (tmp_path / "d/benchmark-quick.md").read_text()


def test_partial_run_from_the_command_line_never_overwrites_the_full_table(tiny_setup, tmp_path, monkeypatch):
    import sys

    from idm_imaging.benchmark import main

    root = tiny_setup
    # the tiny models stand in for the shipped ones; everything else comes from the command line
    rm = sys.modules["idm_imaging.benchmark.run"]  # the module (the package's `run` is the function)
    real_run = rm.run
    monkeypatch.setattr(rm, "run", lambda **kw: real_run(
        **kw, models={"cs": str(root / "cs"), "mri": str(root / "mri")}, ratios=(0.1,), accelerations=(4,),
        natural_sets=("Set11",), tv_iterations=20, gen_ratios={}, gen_masks=(), gen_cross_acceleration=False,
        pnp_iterations=2))
    argv = ["--limit", "1", "--no-diffusion", "--no-varnet", "--no-deepinv", "--out", str(tmp_path / "r"), "--docs",
            str(tmp_path / "d"), "--datasets", str(root / "data"), "--device", "cpu"]
    assert main(argv) == 0
    res = json.loads((tmp_path / "r/benchmark-partial.json").read_text())
    assert not (tmp_path / "r/benchmark.json").exists() and not (tmp_path / "d/benchmark.md").exists()
    assert {r["method"] for r in res["rows"]} == {"pseudo-inverse", "TV-FISTA", "PnP-BM3D", "IDM", "zero-filled"}
    assert all(r["n_images"] == 1 for r in res["rows"])
    assert any("DDNM, DPS" in s["what"] and "--no-diffusion" in s["reason"] for s in res["skipped"])
    md = (tmp_path / "d/benchmark-partial.md").read_text()
    assert "Partial run" in md and "left out: DDNM and DPS, VarNet" in md
    assert "`python -m idm_imaging.benchmark --limit 1 --no-diffusion --no-varnet --no-deepinv" in md
    assert (tmp_path / "d/benchmark-partial_figure.png").read_bytes()[:4] == b"\x89PNG"


def test_run_rejects_bad_arguments(tmp_path):
    from idm_imaging.benchmark import run

    with pytest.raises(TypeError, match="quick"):
        run(quick="yes", out_dir=tmp_path)
    with pytest.raises(ValueError, match="device"):
        run(quick=True, out_dir=tmp_path, device="tpu:banana")
    with pytest.raises(TypeError, match="no_such_setting"):
        run(quick=True, out_dir=tmp_path, no_such_setting=1)


def test_tuning_grid_search_picks_the_best_combination_on_measured_psnr():
    """The grid search scores every combination on the same images and ratios and keeps the highest mean PSNR: a
    TV weight far too strong loses to the usual one on a piecewise-constant image."""
    from idm_imaging.benchmark.tune import grid_search

    res = grid_search(TVFista, {"lam": [0.001, 0.3], "iterations": [60]}, [("phantom", _phantom(64))], (0.3,),
                      log=None)
    scores = {r["params"]["lam"]: r["psnr"] for r in res["results"]}
    assert res["best"] == {"lam": 0.001, "iterations": 60} and scores[0.001] > scores[0.3] + 3


def test_tuning_command_line_refuses_bad_arguments_by_name(capsys):
    from idm_imaging.benchmark.tune import main

    with pytest.raises(SystemExit) as e:
        main(["deepinv-tv", "--steps", "10"])
    assert e.value.code == 2 and "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["dps", "--steps", "1"])
    assert e.value.code == 2 and "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["pnp-bm3d", "--data", "/no/such/folder"])
    assert e.value.code == 2 and "/no/such/folder" in capsys.readouterr().err


def test_benchmark_precision_is_checked_and_a_forced_precision_never_writes_the_full_table():
    """--precision: a bad value is refused by name; fp32 / bf16 (not what the product runs by default) make the
    run a partial one; IDM runs under bf16 autocast only where that precision resolves to bf16."""
    from idm_imaging.benchmark.run import BenchmarkConfig, idm_method
    from idm_imaging.inference import resolve_precision
    from idm_imaging.models import IDM

    with pytest.raises(ValueError, match="precision"):
        BenchmarkConfig.for_mode(False, precision="fp16")
    assert BenchmarkConfig.for_mode(False).stem == "benchmark"
    assert BenchmarkConfig.for_mode(False, precision="fp32").stem == "benchmark-partial"
    seen = []
    model = lambda y, op: seen.append(torch.is_autocast_enabled("cpu")) or y  # noqa: E731
    model.bf16_autocast_safe = True
    for precision in ("fp32", "auto"):
        idm_method(model, torch.device("cpu"), precision)(torch.zeros(1, 4), None)
    assert seen == [False, resolve_precision("auto", "cpu", IDM) == "bf16"]


def test_results_record_the_datasets_folder_without_this_machines_absolute_path():
    from idm_imaging.benchmark.run import _REPO, _data_label

    assert _data_label(_REPO.parent / "data" / "sets") == "../data/sets"
    assert _data_label("/elsewhere/data") == "/elsewhere/data"


def test_public_images_scores_scikit_image_photographs_and_keeps_an_existing_record(tmp_path, capsys):
    """benchmarks/public_images.py: every bundled photograph scored at the ratio, the rows the means of the
    per-image figures, the embedded model above TV-FISTA on average, and an existing record kept."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "public_images.py"
    spec = importlib.util.spec_from_file_location("public_images", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "public.json"
    names = ["camera", "coins", "moon", "text"]
    assert mod.main(["--ratios", "0.3", "--crop", "96", "--images", *names, "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["images"] == names and [e["image"] for e in rec["per_image"]] == names
    (row,) = rec["rows"]
    for m in ("IDM", "TV-FISTA"):
        assert row[m] == pytest.approx(np.mean([e[m] for e in rec["per_image"]]), abs=2e-3)
    assert row["IDM - TV-FISTA"] > 0
    with pytest.raises(SystemExit):
        mod.main(["--ratios", "0.3", "--images", "moon", "--out", str(out)])
    assert "--overwrite" in capsys.readouterr().err
