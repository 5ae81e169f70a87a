"""The idm-imaging command line: reconstruct on every input kind (geometry kept), simulate, models, errors, --help."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from idm_imaging.cli import COMMANDS, main
from idm_imaging.io import read_scan
from idm_imaging.operators import BlockCS, SingleCoilFourier, fft2c, ifft2c, operator_from_config

REPO = Path(__file__).resolve().parents[1]


def _phantom(n=32, depth=None, seed=0):
    """Smooth positive images (a blob plus a ramp), (n, n) or (depth, n, n), float32 in [0.1, 1]."""
    yy, xx = np.mgrid[0:n, 0:n] / n
    rng = np.random.default_rng(seed)
    imgs = []
    for k in range(depth or 1):
        c = rng.uniform(0.3, 0.7, 2)
        img = 0.1 + 0.6 * np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / 0.05) + 0.3 * xx * (k + 1) / (depth or 1)
        imgs.append(img.astype(np.float32))
    return np.stack(imgs) if depth else imgs[0]


@pytest.fixture(scope="module")
def tiny_mri_model(tmp_path_factory):
    """A tiny random IDM (task mri) saved as a model folder (config.json + safetensors)."""
    from diffusers import UNet2DConditionModel

    from idm_imaging.models import IDM, tiny_backbone_config

    torch.manual_seed(0)
    model = IDM.from_diffusers(UNet2DConditionModel(**tiny_backbone_config()), T=2, task="mri",
                               operator_config={"type": "SingleCoilFourier",
                                                "mask_params": {"kind": "random", "acceleration": 4.0}})
    folder = tmp_path_factory.mktemp("models") / "mri-tiny"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_cs_model(tmp_path_factory):
    """A tiny random IDM (task cs) saved as a model folder."""
    from diffusers import UNet2DConditionModel

    from idm_imaging.models import IDM, tiny_backbone_config

    torch.manual_seed(1)
    model = IDM.from_diffusers(UNet2DConditionModel(**tiny_backbone_config()), T=2, task="cs",
                               operator_config={"type": "BlockCS", "block_size": 16, "ratio_range": [0.01, 0.6]})
    folder = tmp_path_factory.mktemp("models") / "cs-tiny"
    model.save_pretrained(folder)
    return folder


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------ --help
@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS], ["models", "list"], ["models", "info"]])
def test_help_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: idm-imaging")
    if command == ["reconstruct"]:
        for flag in ("--task", "--ratio", "--mask", "--acceleration", "--model", "--device", "--batch-size", "--seed"):
            assert flag in out


def test_console_entry_runs_as_module():
    r = subprocess.run([sys.executable, "-m", "idm_imaging", "models", "list"], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    from idm_imaging.models.registry import available_models

    header, *rows = r.stdout.splitlines()
    assert header.split() == ["name", "task", "T", "operator"]
    # one row per embedded model, then one per alias
    assert [row.split()[0] for row in rows] == sorted(available_models()) + available_models(aliases=True)[
        len(available_models()):]
    if "cs" in available_models():
        cs = next(row for row in rows if row.startswith("cs "))
        assert cs.split()[1:4] == ["cs", "3", "BlockCS"] and "ratio=0.01-0.6 B=32" in cs
        cs01 = next(row for row in rows if row.startswith("cs-0.1 "))  # the former 10 % model: cs at 10 %
        assert cs01.split()[1:] == ["cs", "3", "alias", "of", "cs", "at", "ratio", "0.1"], cs01


def test_a_bug_is_not_reported_as_a_user_error(monkeypatch):
    # a TypeError inside a command is a defect: it keeps its traceback instead of becoming "error: ..." + exit 2
    from idm_imaging.cli import models

    def broken(args):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(models, "run", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["models", "list"])


# -------------------------------------------------------------------------------------------- reconstruct
def test_reconstruct_png_matches_pseudo_inverse(tmp_path, capsys):
    img = _phantom(48)
    u8 = np.rint(img * 255).astype(np.uint8)
    Image.fromarray(u8, mode="L").save(tmp_path / "in.png")
    code, out, err = _run(["reconstruct", tmp_path / "in.png", "--out", tmp_path / "out.png", "--task", "cs",
                           "--ratio", 0.5, "--block-size", 16, "--seed", 3, "--model", "pinv"], capsys)
    assert code == 0, err
    assert "pseudo-inverse" in out
    x = torch.from_numpy(u8.astype(np.float32) / 255)
    lo, hi = float(x.min()), float(x.max())  # min-max normalisation used by the CLI for block CS
    op = BlockCS(0.5, block_size=16, seed=3, img_size=(48, 48))
    expected = op.A_dagger(op.A(((x - lo) / (hi - lo))[None, None]))[0, 0] * (hi - lo) + lo
    got = np.asarray(Image.open(tmp_path / "out.png")).astype(np.float32) / 255
    assert got.shape == (48, 48)
    assert np.abs(got - expected.clamp(0, 1).numpy()).max() <= 0.5 / 255 + 1e-6
    psnr_line = [line for line in out.splitlines() if line.startswith("pseudo-inverse")][-1]  # metric table row
    assert 10 < float(psnr_line.split()[1]) < 60  # printed metric is a real PSNR of this reconstruction


def test_reconstruct_nifti_volume_keeps_affine(tmp_path, capsys, tiny_mri_model):
    vol = _phantom(32, depth=3)
    affine = np.array([[0, 0, 2.0, -10], [0, -1.5, 0, 20], [1.2, 0, 0, 5], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(vol.T.copy(), affine), tmp_path / "vol.nii.gz")
    code, out, err = _run(["reconstruct", tmp_path / "vol.nii.gz", "--out", tmp_path / "rec.nii.gz", "--task", "mri",
                           "--mask", "random", "--acceleration", 4, "--model", tiny_mri_model, "--batch-size", 2,
                           "--device", "cpu"], capsys)
    assert code == 0, err
    res = nib.load(tmp_path / "rec.nii.gz")
    assert np.allclose(res.affine, affine)
    data = np.asarray(res.dataobj)
    assert data.shape == vol.T.shape and np.isfinite(data).all() and data.std() > 0
    rows = out.splitlines()[out.splitlines().index(next(r for r in out.splitlines() if r.startswith("method"))):]
    assert [r.split()[0] for r in rows[1:]] == ["zero-filled", "IDM"]  # both rows of the metric table


@pytest.mark.skipif(not __import__("idm_imaging.inference").inference.bf16_is_fast("cpu"),
                    reason="this CPU has no native bf16: --precision bf16 runs in fp32 (tests/test_inference.py)")
def test_reconstruct_bf16_close_to_fp32(tmp_path, capsys, tiny_mri_model):
    """--precision bf16 runs the UNet under bfloat16 autocast: close to the fp32 result, but not the same numbers."""
    np.save(tmp_path / "img.npy", _phantom(32))
    outs = {}
    for precision in ("fp32", "bf16"):
        code, _, err = _run(["reconstruct", tmp_path / "img.npy", "--out", tmp_path / f"{precision}.npy", "--task", "mri",
                             "--mask", "random", "--acceleration", 4, "--model", tiny_mri_model, "--device", "cpu",
                             "--precision", precision], capsys)
        assert code == 0, err
        outs[precision] = np.load(tmp_path / f"{precision}.npy", allow_pickle=False)
    rel = np.linalg.norm(outs["bf16"] - outs["fp32"]) / np.linalg.norm(outs["fp32"])
    assert 0 < rel < 0.02, rel
    from idm_imaging.inference import reconstruct_volume

    with pytest.raises(ValueError, match="precision"):
        reconstruct_volume(_phantom(32), lambda hw: None, None, precision="fp16")


def test_reconstruct_dicom_series_writes_nifti_with_dicom_spacing(tmp_path, capsys):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    series = tmp_path / "series"
    series.mkdir()
    uid = generate_uid()
    vol = (_phantom(32, depth=3) * 1000).astype(np.int16)
    for k in range(3):
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, fm.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "CT", uid, k + 1
        ds.Rows, ds.Columns = vol.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelSpacing = [0.7, 0.8]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-50.0, -40.0, 5.0 + 2.5 * k]
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = vol[k].tobytes()
        ds.save_as(series / f"s{k}.dcm", enforce_file_format=True)
    code, out, err = _run(["reconstruct", series, "--out", tmp_path / "ct.nii.gz", "--task", "cs", "--ratio", 0.5,
                           "--block-size", 16], capsys)
    assert code == 0, err
    res = nib.load(tmp_path / "ct.nii.gz")
    assert res.header.get_zooms() == pytest.approx((0.8, 0.7, 2.5))  # (column, row, slice) spacing
    _, meta = read_scan(series)
    assert np.allclose(res.affine, meta["affine"])
    data = np.asarray(res.dataobj)
    assert data.shape == (32, 32, 3)
    assert data.min() < -100  # Hounsfield units kept (min-max normalisation undone)


def test_reconstruct_complex_npy_keeps_complex(tmp_path, capsys):
    x = (_phantom(32) * np.exp(1j * np.linspace(0, 1, 32))[None]).astype(np.complex64)
    np.save(tmp_path / "x.npy", x)
    code, out, err = _run(["reconstruct", tmp_path / "x.npy", "--out", tmp_path / "zf.npy", "--task", "mri",
                           "--mask", "equispaced", "--acceleration", 4, "--seed", 1, "--model", "pinv"], capsys)
    assert code == 0, err
    got = np.load(tmp_path / "zf.npy", allow_pickle=False)
    assert got.dtype == np.complex64 and got.shape == (32, 32)
    op = SingleCoilFourier.from_mask_params("equispaced", (32, 32), 4, seed=1)
    expected = op.A_dagger(op.A(torch.from_numpy(x)[None, None]))[0, 0].numpy()
    assert np.allclose(got, expected, atol=1e-5)


def _fastmri_file(path, undersample=True):
    img = _phantom(32, depth=2).astype(np.complex64)
    k = fft2c(torch.from_numpy(img)[:, None])[:, 0].numpy()
    mask = np.zeros(32, np.float32)
    mask[::3] = 1
    mask[14:18] = 1
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k * mask if undersample else k)
        if undersample:
            f.create_dataset("mask", data=mask)
        f.create_dataset("reconstruction_esc", data=np.abs(img).astype(np.float32))
    return img, k, mask


def test_reconstruct_fastmri_kspace_as_given(tmp_path, capsys):
    img, k, mask = _fastmri_file(tmp_path / "file1.h5")
    code, out, err = _run(["reconstruct", tmp_path / "file1.h5", "--out", tmp_path / "rec.nii.gz", "--task", "mri",
                           "--model", "pinv"], capsys)
    assert code == 0, err
    assert "measured k-space" in out and "reference image" in out
    got = np.asarray(nib.load(tmp_path / "rec.nii.gz").dataobj).T
    zf = np.abs(ifft2c(torch.from_numpy(k * mask)[:, None])[:, 0].numpy())
    assert got.shape == (2, 32, 32) and np.allclose(got, zf, atol=1e-5)
    # wrong task for measured k-space
    code, _, err = _run(["reconstruct", tmp_path / "file1.h5", "--out", tmp_path / "r2.nii.gz", "--task", "cs",
                         "--ratio", 0.1], capsys)
    assert code == 2 and "--task" in err


def test_fully_sampled_fastmri_is_simulated_and_needs_mask(tmp_path, capsys):
    _fastmri_file(tmp_path / "full.h5", undersample=False)
    code, _, err = _run(["reconstruct", tmp_path / "full.h5", "--out", tmp_path / "r.nii.gz", "--task", "mri"], capsys)
    assert code == 2 and "--acceleration" in err and len(err.strip().splitlines()) == 1
    code, out, err = _run(["reconstruct", tmp_path / "full.h5", "--out", tmp_path / "r.nii.gz", "--task", "mri",
                           "--mask", "random", "--acceleration", 4], capsys)
    assert code == 0, err
    assert "fully sampled" in out and "zero-filled" in out


# ----------------------------------------------------------------------------------------------- simulate
def test_simulate_writes_measurement_pinv_and_replayable_json(tmp_path, capsys):
    vol = _phantom(32, depth=2)
    nib.save(nib.Nifti1Image(vol.T.copy(), np.diag([0.9, 0.9, 3.0, 1])), tmp_path / "v.nii.gz")
    code, out, err = _run(["simulate", tmp_path / "v.nii.gz", "--out", tmp_path / "sim", "--task", "cs", "--ratio",
                           0.25, "--block-size", 16, "--sigma", 0.01, "--seed", 5], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "sim" / "v_acq.json").read_text())
    y = np.load(tmp_path / "sim" / rec["files"]["measurement"], allow_pickle=False)
    op = operator_from_config(rec["operator"])
    xn = (torch.from_numpy(vol)[:, None] - rec["intensity"]["offset"]) / rec["intensity"]["scale"]
    clean = op.A(xn).numpy()
    assert y.shape == clean.shape == (2, 1, 64, 2, 2)
    noise = y - clean
    assert 0.005 < noise.std() < 0.02  # sigma 0.01 in normalised units
    replay = torch.cat([op.measure(xn[i:i + 1], sigma=0.01, seed=5 + i) for i in range(2)]).numpy()
    assert np.allclose(y, replay, atol=1e-6)
    # the record is the transforms' acquisition record: replay_acquisition re-measures the (1, H, W, D) input
    from idm_imaging.transforms import replay_acquisition

    replayed = replay_acquisition(torch.from_numpy(vol).permute(1, 2, 0)[None], rec).movedim(-1, 0).numpy()
    assert np.allclose(y, replayed, atol=1e-6)
    pinv = nib.load(tmp_path / "sim" / rec["files"]["pinv"])
    assert np.allclose(pinv.affine, np.diag([0.9, 0.9, 3.0, 1]))


def test_simulate_record_replays_a_kspace_image(tmp_path, capsys):
    from idm_imaging.transforms import replay_acquisition

    img = _phantom(32)
    np.save(tmp_path / "img.npy", img)
    code, _, err = _run(["simulate", tmp_path / "img.npy", "--out", tmp_path / "sim", "--task", "mri",
                         "--acceleration", 4, "--mask", "equispaced", "--sigma", 0.02, "--seed", 3], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "sim" / "img_acq.json").read_text())
    y = np.load(tmp_path / "sim" / rec["files"]["measurement"], allow_pickle=False)
    assert rec["spatial_dims"] == 2 and y.shape == (1, 1, 32, 32)
    replayed = replay_acquisition(torch.from_numpy(img)[None], rec)
    assert replayed.shape == (1, 32, 32) and np.allclose(y[0], replayed.numpy(), atol=1e-6)
    assert np.abs(y[0] - replay_acquisition(torch.from_numpy(img)[None], {**rec, "sigma": 0.0}).numpy()).max() > 0.01


# ------------------------------------------------------------------------------------------------- models
def test_models_list_and_info_with_registry(tmp_path, capsys, monkeypatch, tiny_mri_model):
    from idm_imaging.models import registry

    code, out, _ = _run(["models"], capsys)
    if not registry.REGISTRY:
        assert code == 0 and "no embedded models" in out
    elif {"cs", "mri"} <= set(registry.available_models()):  # the shipped models' operator records
        row = next(line for line in out.splitlines() if line.startswith("mri "))  # every acceleration and mask kind
        assert row.split()[3:] == ["SingleCoilFourier", "2-12x,", "7", "mask", "kinds"], row
        row = next(line for line in out.splitlines() if line.startswith("cs "))  # every ratio of its range
        assert row.split()[3:] == ["BlockCS", "ratio=0.01-0.6", "B=32", "(any", "seed)"], row
        row = next(line for line in out.splitlines() if line.startswith("cs-0.1"))
        assert row.split()[1:] == ["cs", "3", "alias", "of", "cs", "at", "ratio", "0.1"], row
        row = next(line for line in out.splitlines() if line.startswith("mri-8x"))
        assert row.split()[1:] == ["mri", "3", "alias", "of", "mri", "at", "8x"], row
        row = next(line for line in out.splitlines() if line.startswith("cs-0.3"))
        assert row.split()[1:] == ["cs", "3", "alias", "of", "cs", "at", "ratio", "0.3"], row
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tiny_mri_model.parent)
    monkeypatch.setattr(registry, "REGISTRY", {"mri-tiny": tiny_mri_model.name})
    code, out, _ = _run(["models", "list"], capsys)
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("mri-tiny"))
    assert row.split()[1:3] == ["mri", "2"] and "random 4x" in row
    assert "alias" not in out  # the aliases' models are not installed here
    code, out, _ = _run(["models", "info", "mri-tiny", "--json"], capsys)
    info = json.loads(out)
    assert info["task"] == "mri" and info["operator"]["mask_params"]["acceleration"] == 4.0
    # without --model, reconstruct picks the embedded default of the task
    np.save(tmp_path / "x.npy", _phantom(32))
    code, out, err = _run(["reconstruct", tmp_path / "x.npy", "--out", tmp_path / "r.npy", "--task", "mri",
                           "--mask", "random", "--acceleration", 4], capsys)
    assert code == 0, err
    assert "using the embedded model 'mri-tiny'" in out
    assert np.load(tmp_path / "r.npy").dtype == np.float32  # real input -> real (magnitude) output
    # a cs request has no embedded model: falls back on the pseudo-inverse and says so
    code, out, _ = _run(["reconstruct", tmp_path / "x.npy", "--out", tmp_path / "r.npy", "--task", "cs",
                         "--ratio", 0.5, "--block-size", 16, "--overwrite"], capsys)
    assert code == 0 and "no embedded IDM model for --task cs" in out
    code, _, err = _run(["models", "info", "nope"], capsys)
    assert code == 2 and "NAME 'nope'" in err


def test_alias_loads_its_model_and_default_model_is_never_an_alias():
    from idm_imaging.models import IDM, registry

    assert registry.ALIASES and not set(registry.ALIASES) & set(registry.REGISTRY)
    for alias, (target, setting) in registry.ALIASES.items():
        assert target in registry.REGISTRY and set(setting) == {"ratio" if target == "cs" else "acceleration"}
        assert registry.resolve_name(alias) == (target, setting)
        assert alias not in registry.available_models()
        if target in registry.available_models():  # the shipped weights: the alias loads exactly its model's
            assert alias in registry.available_models(aliases=True)
            assert registry.resolve_checkpoint(alias) == registry.resolve_checkpoint(target)
            a, b = IDM.from_pretrained(alias), IDM.from_pretrained(target)
            assert dict(a.config) == dict(b.config)
            sa, sb = a.state_dict(), b.state_dict()
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert registry.resolve_name("cs") == ("cs", {}) and registry.resolve_name("/some/folder") == ("/some/folder", {})
    # the former single-ratio models are the range model at their ratio (cs-0.1 included: cs is 2.5 dB above it at 10 %)
    for alias, ratio in (("cs-0.1", 0.1), ("cs-0.3", 0.3), ("cs-0.5", 0.5)):
        assert registry.resolve_name(alias) == ("cs", {"ratio": ratio}) and alias not in registry.REGISTRY
    for ratio in (None, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9, 1.0):
        name = registry.default_model("cs", ratio=ratio)
        assert name is None or (name in registry.REGISTRY and name not in registry.ALIASES), (ratio, name)
    for acc in (None, 1.5, 2, 4, 6, 8, 12, 16):
        name = registry.default_model("mri", acceleration=acc)
        assert name is None or (name in registry.REGISTRY and name not in registry.ALIASES), (acc, name)
    if {"cs", "mri"} <= set(registry.available_models()):
        assert registry.default_model("cs", ratio=0.3) == "cs"
        assert registry.default_model("cs", ratio=0.1) == "cs" and registry.default_model("cs") == "cs"
        assert registry.default_model("mri", acceleration=8) == "mri"


def test_alias_supplies_its_setting_on_the_command_line(tmp_path, capsys, monkeypatch, tiny_mri_model,
                                                        tiny_cs_model):
    """--model mri-8x without --acceleration reconstructs with the mri model at 8x (the same output as naming the
    model and 8x); a value given wins, and the model then runs under its own name; --model cs-0.3 / cs-0.1 supply
    the ratio."""
    from idm_imaging.models import registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tiny_mri_model.parent.parent)
    monkeypatch.setattr(registry, "REGISTRY", {"mri": f"{tiny_mri_model.parent.name}/{tiny_mri_model.name}",
                                               "cs": f"{tiny_cs_model.parent.name}/{tiny_cs_model.name}"})
    np.save(tmp_path / "x.npy", _phantom(32))

    def rec(out, *extra):
        code, text, err = _run(["reconstruct", tmp_path / "x.npy", "--out", tmp_path / out, *extra], capsys)
        assert code == 0, err
        return text, np.load(tmp_path / out)

    text, alias = rec("alias.npy", "--task", "mri", "--model", "mri-8x")
    assert "--model mri-8x is the model 'mri' at 8x" in text
    assert "IDM (mri-8x) on " in text and ": 8x random k-space mask" in text
    _, named = rec("named.npy", "--task", "mri", "--model", "mri", "--acceleration", 8)
    _, at4 = rec("at4.npy", "--task", "mri", "--model", "mri", "--acceleration", 4)
    assert np.array_equal(alias, named) and not np.allclose(alias, at4)
    text, given = rec("given.npy", "--task", "mri", "--model", "mri-8x", "--acceleration", 4)
    assert "running 'mri' at the given --acceleration 4" in text and "IDM (mri) on " in text
    assert np.array_equal(given, at4)
    text, cs = rec("cs.npy", "--task", "cs", "--model", "cs-0.3", "--block-size", 16)
    assert "IDM (cs-0.3) on " in text and ": block CS ratio 0.3 (B=16)" in text
    _, cs_named = rec("cs_named.npy", "--task", "cs", "--model", "cs", "--ratio", 0.3, "--block-size", 16)
    assert np.array_equal(cs, cs_named)
    text, cs01 = rec("cs01.npy", "--task", "cs", "--model", "cs-0.1", "--block-size", 16)
    assert "IDM (cs-0.1) on " in text and ": block CS ratio 0.1 (B=16)" in text
    _, cs01_named = rec("cs01_named.npy", "--task", "cs", "--model", "cs", "--ratio", 0.1, "--block-size", 16)
    assert np.array_equal(cs01, cs01_named) and not np.allclose(cs01, cs)
    code, _, err = _run(["reconstruct", tmp_path / "x.npy", "--out", tmp_path / "no.npy", "--task", "cs",
                         "--model", "cs"], capsys)  # a model's own name implies no setting
    assert code == 2 and "--ratio is required" in err
    code, out, _ = _run(["models", "info", "mri-8x", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["alias_of"] == "mri" and info["setting"] == {"acceleration": 8.0}
    assert info["folder"] == str(tiny_mri_model)


# ------------------------------------------------------------------------------------------------- errors
@pytest.fixture
def png(tmp_path):
    Image.fromarray((_phantom(32) * 255).astype(np.uint8), mode="L").save(tmp_path / "in.png")
    return tmp_path / "in.png"


@pytest.mark.parametrize("extra,needle", [
    (["--task", "cs"], "--ratio"),
    (["--task", "cs", "--ratio", "1.5"], "--ratio"),
    (["--task", "mri", "--ratio", "0.1", "--mask", "random", "--acceleration", "4"], "--ratio"),
    (["--task", "mri", "--mask", "random"], "--acceleration"),
    (["--task", "cs", "--ratio", "0.1", "--block-size", "4096"], "--block-size"),
    (["--task", "cs", "--ratio", "0.1", "--device", "meta"], "--device"),
    (["--task", "cs", "--ratio", "0.1", "--device", "mps"], "--device"),
    (["--task", "cs", "--ratio", "0.1", "--device", "xla"], "--device"),
    (["--task", "cs", "--ratio", "0.1", "--slices", "0:2"], "--slices"),
    (["--task", "mri", "--mask", "random", "--acceleration", "0.5"], "--acceleration"),
    (["--task", "cs", "--ratio", "0.1", "--mask", "random"], "--mask"),
    (["--task", "cs", "--ratio", "0.1", "--batch-size", "0"], "--batch-size"),
    (["--task", "cs", "--ratio", "0.1", "--device", "cuda:7"], "--device"),
    (["--task", "cs", "--ratio", "0.1", "--device", "banana"], "--device"),
    (["--task", "cs", "--ratio", "0.1", "--model", "no-such-model"], "--model"),
    (["--task", "xray", "--ratio", "0.1"], "--task"),
    (["--task", "mri", "--mask", "zigzag", "--acceleration", "4"], "--mask"),
    (["--task", "cs", "--ratio", "0.1", "--ensemble", "3"], "--ensemble"),
])
def test_bad_arguments_exit_2_with_one_line(png, tmp_path, capsys, extra, needle):
    if needle == "--device" and "cuda" in extra[-1] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    try:
        code = main(["reconstruct", str(png), "--out", str(tmp_path / "o.png"), *extra])
    except SystemExit as exc:  # argparse-level errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert needle in err


def test_bad_files_exit_2(tmp_path, png, capsys):
    cases = [
        (["reconstruct", tmp_path / "missing.png", "--out", tmp_path / "o.png", "--task", "cs", "--ratio", 0.1],
         "INPUT"),
        (["reconstruct", png, "--out", tmp_path / "o.dcm", "--task", "cs", "--ratio", 0.1], "--out"),
        (["reconstruct", png, "--out", tmp_path / "nofolder" / "o.png", "--task", "cs", "--ratio", 0.1], "--out"),
        (["train", tmp_path / "missing.toml"], "CONFIG"),
    ]
    for argv, needle in cases:
        code, _, err = _run(argv, capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_benchmark_options_pass_through_or_clear_error(capsys):
    import importlib.util

    if importlib.util.find_spec("idm_imaging.benchmark") is None:
        code, _, err = _run(["benchmark"], capsys)
        assert code == 2 and "idm_imaging.benchmark" in err
        return
    with pytest.raises(SystemExit) as exc:  # the benchmark's own parser sees the option, not ours
        main(["benchmark", "--no-such-option"])
    assert exc.value.code == 2
    assert "idm-imaging benchmark" in capsys.readouterr().err


# ------------------------------------------------------------------------------- start-up, defaults, slices
def test_parser_does_not_import_torch():
    code = ("import sys, time; t = time.perf_counter(); from idm_imaging.cli import build_parser; build_parser(); "
            "print(time.perf_counter() - t, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False", "idm-imaging --help must not import torch (start-up time)"


def test_mask_kinds_spelled_out_match_the_operators():
    from idm_imaging.cli._common import MASK_KINDS
    from idm_imaging.operators import MASK_KINDS as OPERATOR_KINDS

    assert tuple(MASK_KINDS) == tuple(OPERATOR_KINDS)


def test_mri_mask_defaults_to_random(tmp_path, capsys):
    np.save(tmp_path / "x.npy", _phantom(32))
    code, out, err = _run(["reconstruct", tmp_path / "x.npy", "--out", tmp_path / "a.npy", "--task", "mri",
                           "--acceleration", 4, "--model", "pinv"], capsys)
    assert code == 0, err and "random" in out
    _run(["reconstruct", tmp_path / "x.npy", "--out", tmp_path / "b.npy", "--task", "mri", "--acceleration", 4,
          "--model", "pinv", "--mask", "random"], capsys)
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_slices_reconstructs_a_range_and_keeps_its_position(tmp_path, capsys):
    vol = _phantom(32, depth=6)
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    nib.save(nib.Nifti1Image(vol.T.copy(), affine), tmp_path / "v.nii.gz")
    code, out, err = _run(["reconstruct", tmp_path / "v.nii.gz", "--out", tmp_path / "r.nii.gz", "--task", "mri",
                           "--acceleration", 4, "--model", "pinv", "--slices", "2:5"], capsys)
    assert code == 0, err
    img = nib.load(tmp_path / "r.nii.gz")
    assert img.shape == (32, 32, 3)
    assert np.allclose(img.affine[:3, 3], [10, 20, 30 + 2 * 3.0])  # slice 2 of the input is slice 0 here
    for bad in ("5:2", "a:b", "7:9", "3"):
        code, _, err = _run(["reconstruct", tmp_path / "v.nii.gz", "--out", tmp_path / "s.nii.gz", "--task", "mri",
                             "--acceleration", 4, "--slices", bad], capsys)
        assert code == 2 and "--slices" in err, bad


# ------------------------------------------------------------------------------------------------ no lost files
def test_out_equal_to_input_is_refused(tmp_path, capsys):
    np.save(tmp_path / "x.npy", _phantom(32))
    before = (tmp_path / "x.npy").read_bytes()
    for out in (tmp_path / "x.npy", Path(str(tmp_path) + "/./x.npy")):
        code, _, err = _run(["reconstruct", tmp_path / "x.npy", "--out", out, "--task", "cs", "--ratio", 0.3,
                             "--model", "pinv", "--overwrite"], capsys)
        assert code == 2 and "INPUT" in err and "--out" in err
    assert (tmp_path / "x.npy").read_bytes() == before


def test_existing_out_needs_overwrite(tmp_path, capsys):
    np.save(tmp_path / "x.npy", _phantom(32))
    (tmp_path / "o.npy").write_bytes(b"precious")
    argv = ["reconstruct", tmp_path / "x.npy", "--out", tmp_path / "o.npy", "--task", "cs", "--ratio", 0.3,
            "--model", "pinv"]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "--overwrite" in err and (tmp_path / "o.npy").read_bytes() == b"precious"
    code, _, err = _run(argv + ["--overwrite"], capsys)
    assert code == 0, err and np.load(tmp_path / "o.npy").shape == (32, 32)


def test_failed_run_writes_nothing(tmp_path, capsys):
    np.save(tmp_path / "zeros.npy", np.zeros((32, 32), np.float32))  # metrics fail: all-zero reference
    code, _, err = _run(["reconstruct", tmp_path / "zeros.npy", "--out", tmp_path / "o.nii.gz", "--task", "mri",
                         "--acceleration", 4, "--model", "pinv"], capsys)
    assert code == 2 and sorted(os.listdir(tmp_path)) == ["zeros.npy"]


def test_failed_simulate_leaves_nothing_and_respects_existing_files(tmp_path, capsys, monkeypatch):
    import idm_imaging.io.writers as writers

    np.save(tmp_path / "x.npy", _phantom(32))
    out = tmp_path / "sim"
    real = writers._write_npy

    def fail_second(arr, tmp, meta, path):  # the pinv write (after the measurement was written) fails
        raise OSError("disk full")

    monkeypatch.setattr(writers, "_WRITERS", {**writers._WRITERS, ".npy": fail_second})
    code, _, err = _run(["simulate", tmp_path / "x.npy", "--out", out, "--task", "cs", "--ratio", 0.3], capsys)
    assert code == 2 and "disk full" in err
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["x.npy"]
    monkeypatch.setattr(writers, "_WRITERS", {**writers._WRITERS, ".npy": real})
    argv = ["simulate", tmp_path / "x.npy", "--out", out, "--task", "cs", "--ratio", 0.3]
    assert _run(argv, capsys)[0] == 0
    code, _, err = _run(argv + ["--seed", 1], capsys)
    assert code == 2 and "--overwrite" in err
    assert _run(argv + ["--seed", 1, "--overwrite"], capsys)[0] == 0


def test_16bit_tiff_keeps_its_scale(tmp_path, capsys):
    img = (np.clip(_phantom(32), 0, 1) * 48720).astype(np.uint16)
    Image.fromarray(img).save(tmp_path / "x.tif")
    code, _, err = _run(["reconstruct", tmp_path / "x.tif", "--out", tmp_path / "o.tif", "--task", "cs",
                         "--ratio", 1.0, "--model", "pinv"], capsys)
    assert code == 0, err
    out = np.asarray(Image.open(tmp_path / "o.tif"))
    assert np.allclose(out, img, atol=0.05 * 48720) and out.max() > 40000
    code, _, err = _run(["reconstruct", tmp_path / "x.tif", "--out", tmp_path / "o.png", "--task", "cs",
                         "--ratio", 1.0, "--model", "pinv"], capsys)
    png = np.asarray(Image.open(tmp_path / "o.png"))
    assert code == 0 and png.dtype == np.uint16 and abs(int(png.max()) - int(img.max())) < 0.05 * 48720


def test_sigterm_leaves_no_temporary_file(tmp_path):
    code = ("import numpy as np, sys, time\n"
            "from idm_imaging.cli import main\n"
            "import idm_imaging.io.writers as w\n"
            "real = w._write_npy\n"
            "def slow(arr, tmp, meta, path):\n"
            "    real(arr, tmp, meta, path); print('writing', flush=True); time.sleep(60)\n"
            "w._WRITERS['.npy'] = slow\n"
            "np.save(sys.argv[1] + '/x.npy', np.random.rand(32, 32).astype(np.float32))\n"
            "sys.exit(main(['reconstruct', sys.argv[1] + '/x.npy', '--out', sys.argv[1] + '/o.npy', '--task', 'cs',"
            " '--ratio', '0.3', '--model', 'pinv']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("writing"):
            break
    proc.terminate()
    assert proc.wait(60) == 130
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_reconstruct_ensemble_averages_flipped_problems(tmp_path, capsys, tiny_cs_model):
    """--ensemble 4 loads the model with that many flipped / rotated reconstructions averaged (the mean itself:
    tests/test_idm.py)."""
    img = _phantom(32)
    np.save(tmp_path / "img.npy", img)
    outs = {}
    for n in (1, 4):
        code, _, err = _run(["reconstruct", tmp_path / "img.npy", "--out", tmp_path / f"e{n}.npy", "--task", "cs",
                             "--ratio", 0.25, "--model", tiny_cs_model, "--device", "cpu", "--ensemble", n], capsys)
        assert code == 0, err
        outs[n] = np.load(tmp_path / f"e{n}.npy", allow_pickle=False)
    assert np.abs(outs[4] - outs[1]).max() > 1e-4 and np.isfinite(outs[4]).all()
    rel = np.linalg.norm(outs[4] - outs[1]) / np.linalg.norm(outs[1])
    assert 0.01 < rel < 0.5, rel  # averaged, and mapped back (a transposed or flipped mean would be far off)
