"""Tests of the napari plugin: the Qt-free engine, reader/writer, sample data, manifest, and the dock widget.

Widget tests need napari + Qt + an X server with OpenGL; run them under Xvfb:
    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest tests/test_napari_plugin.py
Engine, reader and sample-data tests run anywhere.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_plugin import _engine
from napari_plugin._engine import CHECKPOINT, PSEUDO_INVERSE, Acquisition, Job, reconstruct, run_to_completion
from napari_plugin._sample_data import make_brain, make_phantom, synthetic_brain_stack

# -- engine (no Qt) ------------------------------------------------------------------------------------------------


def test_fourier_zero_filled_matches_operator_and_error_layer():
    from idm_imaging.metrics import fastmri_metrics
    from idm_imaging.operators import SingleCoilFourier

    img = make_phantom(128) * 3.0  # arbitrary intensity scale: the engine normalises and scales back
    acq = Acquisition(mode="fourier", mask_kind="random", acceleration=4, seed=3)
    res = run_to_completion(Job(acq, image=img, name="ph"))
    names = [layer.name for layer in res.layers]
    assert names == ["ph zero-filled 4x random", "ph |error| 4x random"]
    op = SingleCoilFourier.from_mask_params("random", (128, 128), 4, seed=3)
    expected = op.A_dagger(op.A(torch.from_numpy(img)[None, None].to(torch.complex64))).abs()[0, 0].numpy()
    zf, err = res.layers[0].data, res.layers[1].data
    assert zf.shape == img.shape and zf.dtype == np.float32
    np.testing.assert_allclose(zf, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(err, np.abs(zf - img), atol=1e-5)
    m = res.layers[0].metadata["idm_imaging"]
    assert m["acquisition"]["acceleration"] == 4 and m["acquisition"]["mask_kind"] == "random"
    assert m["metrics"]["psnr"] == pytest.approx(fastmri_metrics(expected, img)["psnr"], abs=1e-3)
    assert 15 < m["metrics"]["psnr"] < 60 and 0 < m["metrics"]["ssim"] <= 1


def test_block_cs_full_ratio_pseudo_inverse_is_exact():
    img = make_brain(64)
    full = Acquisition(mode="block_cs", ratio=1.0, block_size=16, permute=False)
    res = run_to_completion(Job(full, image=img, name="b"))
    assert [layer.name for layer in res.layers] == ["b pseudo-inverse CS 100% B16", "b |error| CS 100% B16"]
    np.testing.assert_allclose(res.layers[0].data, img, atol=1e-4)
    assert res.metrics["pseudo-inverse"]["psnr"] > 70
    low_acq = Acquisition(mode="block_cs", ratio=0.1, block_size=16, permute=False)
    low = run_to_completion(Job(low_acq, image=img, name="b"))
    assert low.metrics["pseudo-inverse"]["psnr"] < res.metrics["pseudo-inverse"]["psnr"] - 30


def test_stack_progress_per_batch_and_first_yield_is_immediate():
    stack = synthetic_brain_stack(32)[0][0]
    assert stack.shape == (32, 256, 256)
    gen = reconstruct(Job(Acquisition(acceleration=8, mask_kind="equispaced"), image=stack, name="s", batch_size=4))
    first = next(gen)
    assert (first.done, first.total) == (0, 32)  # before any slice is computed: progress shows at once
    done = []
    try:
        while True:
            done.append(next(gen).done)
    except StopIteration as stop:
        result = stop.value
    assert done == list(range(4, 33, 4))
    assert result.layers[0].data.shape == (32, 256, 256)
    # slice i of the stack equals a single-slice run of that slice (same mask; intensity scale undone)
    single = run_to_completion(Job(Acquisition(acceleration=8, mask_kind="equispaced"), image=stack[5:6], name="one"))
    np.testing.assert_allclose(result.layers[0].data[5], single.layers[0].data[0], atol=1e-4)


def test_cancel_mid_stack_returns_nothing():
    stack = np.stack([make_brain(64, z) for z in np.linspace(-0.5, 0.5, 10)])
    cancel = threading.Event()
    gen = reconstruct(Job(Acquisition(), image=stack, name="s", batch_size=2), cancel=cancel)
    seen = [next(gen).done, next(gen).done]
    cancel.set()
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert seen == [0, 2] and stop.value.value is None


def test_measured_kspace_equals_simulated():
    from idm_imaging.operators import fft2c, make_mask

    img = make_phantom(96)
    mask = make_mask("gaussian2d", (96, 96), 4, seed=1)
    mask = np.asarray(mask)
    k = fft2c(torch.from_numpy(img).to(torch.complex64)[None, None])[0, 0].numpy() * mask
    res = run_to_completion(Job(Acquisition(mode="measured"), name="k", kspace=k, mask=mask.astype(np.uint8)))
    assert [layer.name for layer in res.layers] == ["k zero-filled measured k-space"]  # no reference: no error
    sim = run_to_completion(Job(Acquisition(mode="fourier", mask_kind="gaussian2d", acceleration=4, seed=1), image=img))
    np.testing.assert_allclose(res.layers[0].data, sim.layers[0].data, atol=1e-4)
    assert res.metrics == {}


@pytest.mark.parametrize("bad, match", [(np.zeros(10), "2-D image or a 3-D stack"),
                                        (np.zeros((2, 2, 8, 8)), "2-D image or a 3-D stack"),
                                        (np.full((16, 16), np.nan), "NaN")])
def test_bad_input_raises_naming_the_layer(bad, match):
    with pytest.raises(ValueError, match=match) as info:
        run_to_completion(Job(Acquisition(), image=bad, name="mylayer"))
    assert "mylayer" in str(info.value)


def test_bad_batch_size_and_task_mismatch():
    with pytest.raises(ValueError, match="batch_size"):
        run_to_completion(Job(Acquisition(), image=make_phantom(32), batch_size=0))
    idm = pytest.importorskip("idm_imaging.models").IDM
    with pytest.raises(ValueError, match="'cs'"):
        run_to_completion(Job(Acquisition(), image=make_phantom(32)), model=idm(T=1, task="cs"), model_name="tiny")
    with pytest.raises(ValueError, match="checkpoint"):
        _engine.load_model(CHECKPOINT, None)
    with pytest.raises(ValueError, match="nowhere"):
        _engine.load_model(CHECKPOINT, "/nowhere/model")


@pytest.mark.parametrize("kwargs, match", [
    ({"acquisition": Acquisition(mode="measured"), "kspace": np.zeros((16, 16), np.complex64)},
     "needs both a k-space layer and a mask layer"),
    ({"acquisition": Acquisition(mode="measured"), "kspace": np.zeros((16, 16), np.complex64),
      "mask": np.ones((8, 8))}, r"mask must have the k-space slice shape \(16, 16\), got \(8, 8\)"),
    ({"acquisition": Acquisition(), "name": "nolayer"}, "nolayer: choose an input image layer"),
    ({"acquisition": Acquisition(), "image": np.zeros((4, 16)), "name": "thin"},
     r"thin: each slice must be at least 8x8 pixels, got \(4, 16\)"),
    ({"acquisition": Acquisition(mode="measured"), "kspace": np.zeros((2, 6, 6), np.complex64),
      "mask": np.ones((6, 6))}, "kspace: each slice must be at least 8x8 pixels"),
])
def test_job_rejects_bad_input_before_any_work(kwargs, match):
    with pytest.raises(ValueError, match=match):  # refused while the job is built, before reconstruct is called
        Job(**kwargs)


def test_model_choices_and_devices():
    from idm_imaging.models.registry import available_models

    for task, shipped, alias in (("cs", "cs", "cs-0.1"), ("mri", "mri", "mri-8x")):
        choices = _engine.model_choices(task)
        assert choices[-2:] == [PSEUDO_INVERSE, CHECKPOINT]
        # every embedded model of the task, then its aliases; none of the other task's nor the prior; an
        # embedded default
        models = [m for m in available_models() if m.split("-")[0] == task]
        assert choices[:-2] == models + [m for m in available_models(aliases=True)[len(available_models()):]
                                         if m.split("-")[0] == task]
        assert shipped in choices and alias in choices and "prior-gray" not in choices
        assert choices[0] != PSEUDO_INVERSE and choices.index(shipped) < choices.index(alias)
        assert _engine.model_setting(alias)[0] in models and _engine.model_setting(shipped) == (shipped, {})
    devices = _engine.available_devices()
    assert devices[-1] == "cpu" and all(torch.device(d) is not None for d in devices)


def test_tiny_idm_runs_through_engine():
    idm = pytest.importorskip("idm_imaging.models").IDM
    torch.manual_seed(0)
    model = idm(T=1, task="mri")
    img = make_phantom(32)
    res = run_to_completion(Job(Acquisition(acceleration=4), image=np.stack([img, img[::-1]]), batch_size=2, name="p"),
                            model=model, model_name="tiny")
    assert [layer.name for layer in res.layers] == ["p zero-filled 4x random", "p IDM (tiny) 4x random",
                                                    "p |error| 4x random"]
    stack = np.stack([img, img[::-1]])
    zf, recon, err = (layer.data for layer in res.layers)
    assert recon.shape == (2, 32, 32) and not np.allclose(recon, zf, atol=1e-3)
    np.testing.assert_allclose(err, np.abs(recon - stack), atol=1e-5)  # the error layer is |IDM - reference|
    from idm_imaging.metrics import fastmri_metrics

    assert res.metrics["IDM"]["psnr"] == pytest.approx(fastmri_metrics(recon, stack)["psnr"], abs=1e-3)
    # slice batching does not change a slice: batch 1 gives the same volume
    one = run_to_completion(Job(Acquisition(acceleration=4), image=stack, batch_size=1, name="p"), model=model,
                            model_name="tiny")
    np.testing.assert_allclose(one.layers[1].data, recon, atol=1e-5)
    assert res.layers[1].metadata["idm_imaging"]["model"] == "tiny"


@pytest.mark.skipif(not __import__("idm_imaging.inference").inference.bf16_is_fast("cpu"),
                    reason="this CPU has no native bf16: bf16 runs in fp32")
def test_engine_bf16_close_to_fp32():
    idm = pytest.importorskip("idm_imaging.models").IDM
    torch.manual_seed(0)
    model = idm(T=1, task="mri")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))  # off the zero-initialised injectors, so the UNet matters
    out = {prec: run_to_completion(Job(Acquisition(acceleration=4), image=make_phantom(32), precision=prec, name="p"),
                                   model=model).layers[1].data for prec in ("fp32", "bf16")}
    rel = np.linalg.norm(out["bf16"] - out["fp32"]) / np.linalg.norm(out["fp32"])
    assert 0 < rel < 0.02, rel


@pytest.mark.slow
def test_embedded_mri_model_beats_zero_filled():
    """With the shipped mri model, by its 4x alias, IDM must beat the zero-filled reconstruction on the brain
    sample."""
    if "mri-4x" not in _engine.model_choices("mri"):
        pytest.skip("embedded model 'mri' not shipped yet")
    model = _engine.load_model("mri-4x")
    res = run_to_completion(Job(Acquisition(acceleration=4), image=make_brain(256)), model=model, model_name="mri-4x")
    # Require a clear 1 dB over the zero-filled image.
    assert res.metrics["IDM"]["psnr"] > res.metrics["zero-filled"]["psnr"] + 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_frees_memory():
    idm = pytest.importorskip("idm_imaging.models").IDM
    stack = np.stack([make_brain(128, z) for z in np.linspace(-0.8, 0.8, 16)])
    torch.manual_seed(0)
    model = idm(T=2, task="mri").eval()
    acq = Acquisition(acceleration=4, sigma=0.01, seed=1)
    cpu = run_to_completion(Job(acq, image=stack, device="cpu", batch_size=4), model=model)
    base = torch.cuda.memory_allocated()
    gpu = run_to_completion(Job(acq, image=stack, device="cuda:0", batch_size=16), model=model)
    for a, b in zip(cpu.layers, gpu.layers):
        assert np.abs(a.data - b.data).max() / stack.max() < 5e-3, a.name
    assert torch.cuda.memory_allocated() == base and next(model.parameters()).device.type == "cpu"
    torch.cuda.set_per_process_memory_fraction(0.001)
    try:
        with pytest.raises(MemoryError, match="batch_size=64"):
            run_to_completion(Job(acq, image=np.stack([make_brain(512)] * 64), device="cuda:0", batch_size=64),
                              model=model)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert torch.cuda.memory_allocated() == base


# -- sample data, reader, writer, manifest ---------------------------------------------------------------------------


def test_sample_data():
    ph = make_phantom(256)
    assert ph.shape == (256, 256) and ph.dtype == np.float32 and ph.min() >= 0 and ph.max() == pytest.approx(1, 0.05)
    br = make_brain(128)
    assert br.shape == (128, 128) and 0 <= br.min() and br.max() <= 1 and br.std() > 0.1
    # the head narrows towards the top of the stack
    assert (make_brain(128, 0.8) > 0.1).sum() < (make_brain(128, 0.0) > 0.1).sum()


def test_reader_nifti_scale_and_complex_npy(tmp_path):
    import nibabel as nib

    from napari_plugin._reader import napari_get_reader

    vol = np.random.default_rng(0).random((5, 20, 24)).astype(np.float32)  # (D, H, W)
    affine = np.diag([0.5, 0.7, 3.0, 1.0])  # voxel sizes of the NIfTI axes (W, H, D)
    nib.save(nib.Nifti1Image(vol.T, affine), tmp_path / "scan.nii.gz")
    reader = napari_get_reader(str(tmp_path / "scan.nii.gz"))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(tmp_path / "scan.nii.gz"))
    assert kind == "image" and kwargs["name"] == "scan"
    np.testing.assert_allclose(data, vol)
    np.testing.assert_allclose(kwargs["scale"], (3.0, 0.7, 0.5))
    np.testing.assert_allclose(kwargs["metadata"]["scan"]["affine"], affine)

    c = (np.random.default_rng(1).standard_normal((16, 16)) + 1j).astype(np.complex64)
    np.save(tmp_path / "c.npy", c)
    [(data, kwargs, _)] = napari_get_reader(str(tmp_path / "c.npy"))(str(tmp_path / "c.npy"))
    np.testing.assert_allclose(data, np.abs(c))
    np.testing.assert_array_equal(kwargs["metadata"]["idm_complex"], c)
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None


def test_reader_dicom_folder(ct_dicom):
    src = ct_dicom
    from napari_plugin._reader import read_layers

    [(data, kwargs, _)] = read_layers(str(src))
    assert data.shape == (512, 512)
    np.testing.assert_allclose(kwargs["scale"], (0.478516, 0.478516), rtol=1e-5)


def test_writer_keeps_geometry(tmp_path):
    from idm_imaging.io import read_scan

    from napari_plugin._writer import write_nifti

    affine = np.diag([0.5, 0.7, 3.0, 1.0])
    vol = np.random.default_rng(0).random((4, 10, 12)).astype(np.float32)
    [out] = write_nifti(str(tmp_path / "rec.nii.gz"), vol, {"metadata": {"scan": {"affine": affine}}})
    back, meta = read_scan(out)
    np.testing.assert_allclose(back.numpy(), vol)
    np.testing.assert_allclose(meta["affine"], affine)
    [out] = write_nifti(str(tmp_path / "plain.nii"), vol[0], {"scale": (2.0, 3.0), "metadata": {}})
    assert read_scan(out)[1]["spacing"] == pytest.approx((2.0, 3.0))


def test_manifest_is_valid_and_commands_resolve():
    npe2 = pytest.importorskip("npe2")
    import importlib

    manifest = npe2.PluginManifest.from_file(Path(_engine.__file__).with_name("napari.yaml"))
    assert {w.display_name for w in manifest.contributions.widgets} == {"IDM reconstruction"}
    for cmd in manifest.contributions.commands:
        module, attr = cmd.python_name.split(":")
        if module == "napari_plugin._widget" and (not _have_display() or importlib.util.find_spec("napari") is None):
            continue  # importing Qt needs napari and a display
        assert callable(getattr(importlib.import_module(module), attr)), cmd.python_name


# -- the dock widget (napari + Xvfb) ---------------------------------------------------------------------------------

def _have_display() -> bool:
    # Qt aborts the whole process without an X server on Linux: skip instead (run under xvfb-run)
    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def napari_needed(test):
    """Mark a widget test: needs napari and (on Linux) an X server; skipped at collection otherwise."""
    test = pytest.mark.napari(test)
    test = pytest.mark.skipif(importlib.util.find_spec("napari") is None, reason="napari not installed")(test)
    return pytest.mark.skipif(not _have_display(), reason="needs an X server: run under xvfb-run")(test)


@pytest.fixture
def widget(make_napari_viewer):
    pytest.importorskip("napari")
    from napari_plugin._widget import IDMReconstructionWidget

    viewer = make_napari_viewer()
    w = IDMReconstructionWidget(viewer)
    viewer.window.add_dock_widget(w, name="IDM reconstruction")
    yield viewer, w
    if w.worker is not None:
        w.cancel()


def _wait(qtbot, w, timeout=30000):
    qtbot.waitUntil(lambda: not w.running, timeout=timeout)


@napari_needed
def test_widget_docks_via_manifest(make_napari_viewer):
    pytest.importorskip("napari")
    viewer = make_napari_viewer()
    dock, w = viewer.window.add_plugin_dock_widget("idm-imaging", "IDM reconstruction")
    assert type(w).__name__ == "IDMReconstructionWidget"
    viewer.open_sample("idm-imaging", "phantom")
    assert viewer.layers[-1].name == "Shepp-Logan phantom"
    assert w.input.value is viewer.layers["Shepp-Logan phantom"]


@napari_needed
def test_widget_run_adds_layers_with_input_geometry(widget, qtbot):
    viewer, w = widget
    flip = _engine.display_affine(np.diag([0.8, 0.5, 1.0, 1.0]), (128, 128), (0.5, 0.8))  # a RAS NIfTI slice
    layer = viewer.add_image(make_phantom(128), name="phantom", scale=(0.5, 0.8), translate=(3.0, -2.0),
                             affine=flip)
    w.input.value = layer
    w.mode.value = "Single-coil MRI (simulated)"
    w.acceleration.value = 4.0
    w.model.value = PSEUDO_INVERSE
    w.run_button.clicked.emit()
    assert w.running
    _wait(qtbot, w)
    assert [lay.name for lay in viewer.layers] == ["phantom", "phantom zero-filled 4x random",
                                                   "phantom |error| 4x random"]
    for lay in list(viewer.layers)[1:]:
        np.testing.assert_allclose(lay.scale, (0.5, 0.8))
        np.testing.assert_allclose(lay.translate, (3.0, -2.0))
        np.testing.assert_allclose(lay.affine.affine_matrix, flip)  # shown the same way as the input
    psnr = viewer.layers[1].metadata["idm_imaging"]["metrics"]["psnr"]
    assert math.isfinite(psnr) and psnr > 15
    assert viewer.layers[1].metadata["idm_imaging"]["acquisition"]["mask_kind"] == "random"
    assert "PSNR" in w.metrics.value and f"{psnr:.2f}" in w.metrics.value
    assert w.progress.value == w.progress.max == 1
    assert w.run_button.enabled and not w.cancel_button.enabled


@napari_needed
def test_widget_checkpoint_folder_idm(widget, qtbot, tmp_path):
    idm = pytest.importorskip("idm_imaging.models").IDM
    viewer, w = widget
    torch.manual_seed(0)
    idm(T=1, task="mri").save_pretrained(str(tmp_path / "tiny"))
    layer = viewer.add_image(np.stack([make_phantom(32)] * 3), name="vol", scale=(4.0, 1.0, 1.0))
    w.input.value = layer
    w.model.value = CHECKPOINT
    assert not w.checkpoint.native.isHidden()
    w.checkpoint.value = str(tmp_path / "tiny")
    w.batch_size.value = 2
    w.run_button.clicked.emit()
    _wait(qtbot, w, 60000)
    names = [lay.name for lay in viewer.layers]
    assert names == ["vol", "vol zero-filled 4x random", "vol IDM (tiny) 4x random", "vol |error| 4x random"]
    assert viewer.layers["vol IDM (tiny) 4x random"].data.shape == (3, 32, 32)
    np.testing.assert_allclose(viewer.layers["vol IDM (tiny) 4x random"].scale, (4.0, 1.0, 1.0))
    assert math.isfinite(viewer.layers["vol IDM (tiny) 4x random"].metadata["idm_imaging"]["metrics"]["psnr"])
    # the ensemble box loads the model with that many flipped reconstructions averaged (default: the model's own)
    assert w._get_model(CHECKPOINT, str(tmp_path / "tiny")).config.ensemble == 1
    w.ensemble.value = "4"
    w.run_button.clicked.emit()
    _wait(qtbot, w, 60000)
    assert w._get_model(CHECKPOINT, str(tmp_path / "tiny"), 4).config.ensemble == 4
    assert list(w._model_cache) == [(CHECKPOINT, str(tmp_path / "tiny"), 4)]  # the run loaded that one
    with pytest.raises(ValueError, match="ensemble"):
        _engine.load_model(CHECKPOINT, str(tmp_path / "tiny"), ensemble=3)


@napari_needed
def test_widget_model_follows_the_acquisition_like_the_cli(widget):
    from idm_imaging.models.registry import default_model

    viewer, w = widget
    if default_model("mri", acceleration=8) is None or default_model("cs", ratio=0.5) is None:
        pytest.skip("no embedded models in this installation")
    w.mode.value = "Single-coil MRI (simulated)"
    w.acceleration.value = 4.0
    assert w.model.value == default_model("mri", acceleration=4)
    w.acceleration.value = 8.0
    assert w.model.value == default_model("mri", acceleration=8)
    w.mode.value = "Block CS (natural images)"
    w.ratio.value = 0.5
    assert w.model.value == default_model("cs", ratio=0.5)
    w.model.value = PSEUDO_INVERSE  # the user's choice stays
    w.ratio.value = 0.1
    assert w.model.value == PSEUDO_INVERSE


@napari_needed
def test_widget_alias_sets_its_acquisition(widget):
    """Choosing an alias (mri-8x: the mri model at 8x) sets the acceleration; moving the acceleration off it names
    the model by its own name, so no output claims a setting that did not run."""
    from idm_imaging.models.registry import available_models

    viewer, w = widget
    if "mri-8x" not in available_models(aliases=True):
        pytest.skip("no embedded mri model in this installation")
    w.mode.value = "Single-coil MRI (simulated)"
    w.acceleration.value = 4.0
    w.model.value = "mri-8x"
    assert w.acceleration.value == 8.0 and w.model.value == "mri-8x"
    assert w.acquisition().acceleration == 8.0
    w.acceleration.value = 6.0
    assert w.model.value == "mri"
    w.mode.value = "Block CS (natural images)"
    w.ratio.value = 0.1
    w.model.value = "cs-0.5"
    assert abs(w.ratio.value - 0.5) < 1e-9 and w.model.value == "cs-0.5"


@napari_needed
def test_widget_offers_bf16_only_where_native(make_napari_viewer, monkeypatch):
    from idm_imaging import inference
    from napari_plugin._widget import IDMReconstructionWidget

    monkeypatch.setattr(inference, "_cpu_capabilities", lambda: {"avx2": True})
    w = IDMReconstructionWidget(make_napari_viewer())
    w.device.value = "cpu"
    assert not w.bf16.enabled and not w.bf16.value and "faster" not in w.bf16.text
    monkeypatch.setattr(inference, "_cpu_capabilities", lambda: {"amx_bf16": True})
    w._update_bf16()
    assert w.bf16.enabled and w.bf16.value and "faster" in w.bf16.text  # on by default where it is faster


def test_display_affine_shows_nifti_upright_like_dicom():
    """A RAS-stored NIfTI (rows run anterior, columns right) is mirrored in-plane for display; DICOM is not."""
    ras = np.diag([0.9, 0.8, 2.0, 1.0])
    aff = _engine.display_affine(ras, (5, 40, 30), (2.0, 0.8, 0.9))
    world_row = lambda h: (aff @ np.array([0, h * 0.8, 0, 1.0]))[1]  # noqa: E731
    assert world_row(39) < world_row(0)  # the anterior end (h = 39) is at the top, as in a DICOM viewer
    assert (aff[1, 3], aff[2, 3]) == pytest.approx((39 * 0.8, 29 * 0.9))  # mirrored in place
    assert aff[0, 0] == 1  # slices keep their order
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    dicom = lps_to_ras @ np.diag([0.48, 0.48, 5.0, 1.0])  # columns -> patient left, rows -> posterior
    np.testing.assert_array_equal(_engine.display_affine(dicom, (64, 64)), np.eye(3))
    np.testing.assert_array_equal(_engine.display_affine(np.full((4, 4), np.nan), (64, 64)), np.eye(3))


def test_engine_signed_image_stays_signed():
    ct = -1000.0 + 2000.0 * make_phantom(64)
    res = run_to_completion(Job(Acquisition(acceleration=4), image=ct, name="ct"))
    assert res.layers[0].data.min() < -900  # air is -1000 HU, not its magnitude
    np.testing.assert_allclose(res.layers[-1].data, np.abs(res.layers[0].data - ct), atol=0.05)  # signed error
    assert res.metrics["zero-filled"]["psnr"] > 15


class _GatedPseudoInverse(torch.nn.Module):
    """Reconstruction model = the pseudo-inverse, released one batch at a time by the test (timing control)."""

    class config:  # noqa: N801 (mimics diffusers' model.config)
        task = "mri"

    def __init__(self):
        super().__init__()
        self.gate = threading.Semaphore(0)

    def forward(self, y, op):
        assert self.gate.acquire(timeout=20), "test never released the batch"
        return op.A_dagger(y)


@napari_needed
def test_widget_cancel_mid_stack_leaves_no_layer(widget, qtbot):
    viewer, w = widget
    layer = viewer.add_image(np.stack([make_brain(64, z) for z in np.linspace(-0.5, 0.5, 8)]), name="stack")
    model = _GatedPseudoInverse()
    w._get_model = lambda choice, checkpoint, ensemble=None: model
    w.input.value = layer
    w.batch_size.value = 1
    w.run_button.clicked.emit()
    model.gate.release(2)
    qtbot.waitUntil(lambda: w.progress.value == 2, timeout=10000)
    assert w.cancel_button.enabled
    w.cancel_button.clicked.emit()
    model.gate.release(100)
    _wait(qtbot, w)
    assert [lay.name for lay in viewer.layers] == ["stack"]
    assert w.progress.value < 8 and w.metrics.value == "cancelled"


@napari_needed
def test_bad_inputs_notify_not_crash(widget, qtbot, monkeypatch, tmp_path):
    from napari_plugin import _widget

    viewer, w = widget
    errors = []
    monkeypatch.setattr(_widget, "show_error", errors.append)
    assert w.input.value is None
    w.run_button.clicked.emit()  # no layer yet
    assert errors and "choose an image layer" in errors[-1]
    viewer.add_image(np.zeros((2, 3, 16, 16), np.float32), name="four_d")
    w.input.value = viewer.layers["four_d"]
    w.run_button.clicked.emit()
    assert "four_d" in errors[-1] and "2-D or 3-D" in errors[-1]
    assert not w.running
    # a missing model folder fails inside the worker and is reported the same way
    viewer.add_image(make_phantom(32), name="ph")
    w.input.value = viewer.layers["ph"]
    w.model.value = CHECKPOINT
    w.checkpoint.value = str(tmp_path / "missing_model")
    w.run_button.clicked.emit()
    _wait(qtbot, w)
    assert "missing_model" in errors[-1]
    assert [lay.name for lay in viewer.layers] == ["four_d", "ph"]
