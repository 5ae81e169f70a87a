"""MONAI acquisition / reconstruction transforms: real files through full Compose pipelines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch
from monai.data.fft_utils import fftn_centered
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, SaveImaged, ScaleIntensityd
from PIL import Image

from idm_imaging.transforms import (
    BlockCSAcquisition,
    BlockCSAcquisitiond,
    IDMReconstruct,
    IDMReconstructd,
    KspaceUndersample,
    KspaceUndersampled,
    operator_from_record,
    replay_acquisition,
)
from idm_imaging.datasets import data_root


def _sample_dcm() -> Path | None:
    """The datasets folder's CT slice (IDM_IMAGING_DATA), or None: the tests then write a small one."""
    try:
        path = data_root() / "samples" / "CT_head_512.dcm"
    except FileNotFoundError:
        return None
    return path if path.is_file() else None


AFFINE = np.array(
    [[0.0, -0.8, 0.0, 12.5], [0.9, 0.0, 0.0, -40.0], [0.0, 0.0, 2.5, 7.0], [0.0, 0.0, 0.0, 1.0]]
)  # rotated, anisotropic, shifted


def _phantom(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (h / 3) ** 2
    return 0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + 0.2 * disc


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("scans")
    vol = np.stack([_phantom(64, 32) * (1 + 0.1 * k) for k in range(3)], axis=-1).astype(np.float32)  # (64, 32, 3)
    nib.save(nib.Nifti1Image(vol, AFFINE), d / "vol.nii.gz")
    Image.fromarray((255 * _phantom(64, 96) / 1.0).clip(0, 255).astype(np.uint8)).save(d / "img.png")
    dcm = _sample_dcm()
    if dcm is None:  # a small CT-like slice written with pydicom
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(d / "ct.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.Rows, ds.Columns = "CT", 64, 64
        ds.PixelSpacing, ds.ImagePositionPatient = [0.5, 0.5], [-16.0, -16.0, 3.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = (1000 * _phantom(64, 64)).astype(np.uint16).tobytes()
        ds.save_as(str(d / "ct.dcm"), enforce_file_format=True)
        dcm = d / "ct.dcm"
    return {"nifti": d / "vol.nii.gz", "png": d / "img.png", "dicom": dcm}


def _load() -> list:
    return [LoadImaged("image", image_only=True), EnsureChannelFirstd("image"), ScaleIntensityd("image")]


def _cs_shape(x: torch.Tensor, ratio: float, b: int) -> tuple:
    q = math.ceil(ratio * b * b)
    h, w = x.shape[1:3]
    return (x.shape[0], q, math.ceil(h / b), math.ceil(w / b), *x.shape[3:])


@pytest.mark.parametrize("kind", ["nifti", "png", "dicom"])
def test_blockcs_compose_on_files(files, kind):
    pipe = Compose([*_load(), BlockCSAcquisitiond("image", ratio=0.25), IDMReconstructd("image", model="pinv")])
    pipe.set_random_state(7)
    out = pipe({"image": str(files[kind])})
    x, y, pinv, rec, acq = (out[k] for k in ("image", "image_meas", "image_pinv", "image_recon", "image_acq"))

    assert tuple(y.shape) == _cs_shape(x, 0.25, 32) and not y.is_complex()
    assert isinstance(pinv, MetaTensor) and pinv.shape == x.shape and pinv.dtype == torch.float32
    # the affine survives acquisition and reconstruction
    assert torch.equal(pinv.affine, x.affine) and torch.equal(rec.affine, x.affine)
    if kind == "nifti":
        np.testing.assert_allclose(rec.affine.numpy(), AFFINE, atol=1e-6)
    assert pinv.meta["filename_or_obj"] == x.meta["filename_or_obj"]
    # record is JSON and rebuilds the identical acquisition
    acq2 = json.loads(json.dumps(acq))
    assert acq2["operator"]["seed"] == acq["operator"]["seed"]
    assert torch.equal(replay_acquisition(x, acq2), y)
    # pseudo-inverse is consistent with the data (all sizes here are multiples of 32): A(A^+ y) = y
    torch.testing.assert_close(replay_acquisition(pinv, acq), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rec.as_tensor(), pinv.as_tensor(), atol=1e-6, rtol=0)
    # and it is a real reconstruction of the image, not noise: closer than the zero image
    assert float(((pinv - x) ** 2).mean()) < 0.8 * float((x**2).mean())


@pytest.mark.parametrize("kind", ["nifti", "png", "dicom"])
def test_kspace_compose_on_files(files, kind):
    pipe = Compose(
        [
            *_load(),
            KspaceUndersampled("image", mask_kind="random", acceleration=4, return_complex=True),
            IDMReconstructd("image", model=None),
        ]
    )
    pipe.set_random_state(3)
    out = pipe({"image": str(files[kind])})
    x, k, zf, mask, acq = (out[n] for n in ("image", "image_meas", "image_pinv", "image_mask", "image_acq"))
    assert k.is_complex() and k.shape == x.shape
    assert mask.dtype == torch.bool and tuple(mask.shape) == tuple(x.shape[1:3])
    assert abs(mask.numel() / int(mask.sum()) - 4) < 0.2 * 4
    # measurement == mask * MONAI's centred orthonormal FFT of each slice
    xs = x.as_tensor()

    def monai_fft(im):  # MONAI returns real input's spectrum in its (..., 2) real/imaginary layout
        return torch.view_as_complex(fftn_centered(im, spatial_dims=2, is_complex=False).contiguous())

    ref = torch.stack([monai_fft(xs[..., i]) for i in range(xs.shape[-1])], -1) if xs.ndim == 4 else monai_fft(xs)
    m = mask[..., None] if xs.ndim == 4 else mask
    torch.testing.assert_close(k, ref.to(k.dtype) * m, atol=1e-4, rtol=1e-4)
    # zero-filled image is complex, data-consistent, keeps the affine; recon (magnitude) is |zf|
    assert zf.is_complex() and torch.equal(zf.affine, x.affine)
    torch.testing.assert_close(replay_acquisition(zf, acq), k, atol=1e-5, rtol=1e-5)
    assert torch.equal(replay_acquisition(x, acq), k)
    torch.testing.assert_close(out["image_recon"].as_tensor(), zf.as_tensor().abs(), atol=1e-6, rtol=0)
    assert torch.equal(operator_from_record(acq).mask.bool().cpu(), mask)


def test_magnitude_zero_filled_and_complex_input():
    x = torch.rand(1, 40, 36) * torch.exp(1j * torch.rand(1, 40, 36))
    us = KspaceUndersample("poisson", acceleration=3, seed=4)
    k, zf, params, mask = us(x)
    assert not zf.is_complex() and zf.dtype == torch.float32
    zc = operator_from_record(params).A_dagger(k[None])[0]
    torch.testing.assert_close(zf, zc.abs())
    # the record survives JSON and rebuilds the same mask (center_fraction=None is left to the default)
    assert "center_fraction" not in params["operator"]["mask_params"]
    assert torch.equal(operator_from_record(json.dumps(params)).mask.bool(), mask)


def test_determinism_and_seeds():
    img = torch.rand(1, 64, 64)
    a = BlockCSAcquisition(0.1, sigma=0.05).set_random_state(11)
    b = BlockCSAcquisition(0.1, sigma=0.05).set_random_state(11)
    ra, rb = a(img), b(img)
    assert ra.params == rb.params and torch.equal(ra.measurement, rb.measurement)
    # the stream advances: the next call draws a new operator and noise
    ra2 = a(img)
    assert ra2.params["operator"]["seed"] != ra.params["operator"]["seed"]
    # different random states -> different operators and measurements
    rc = BlockCSAcquisition(0.1, sigma=0.05).set_random_state(12)(img)
    assert rc.params["operator"]["seed"] != ra.params["operator"]["seed"]
    assert not torch.allclose(rc.measurement, ra.measurement, atol=1e-3)
    # an int seed fixes the operator; noise still differs per call, and replays exactly from the record
    f = BlockCSAcquisition(0.1, seed=5, sigma=0.05)
    r1, r2 = f(img), f(img)
    assert r1.params["operator"]["seed"] == r2.params["operator"]["seed"] == 5
    assert r1.params["noise_seed"] != r2.params["noise_seed"]
    noise = r1.measurement - replay_acquisition(img, {**r1.params, "sigma": 0.0})
    assert 0.04 < float(noise.std()) < 0.06
    assert torch.equal(replay_acquisition(img, r1.params), r1.measurement)
    # dictionary twin is reproducible through set_random_state and MRI masks differ by seed
    d1 = KspaceUndersampled("image", acceleration=4).set_random_state(1)({"image": img})
    d2 = KspaceUndersampled("image", acceleration=4).set_random_state(1)({"image": img})
    d3 = KspaceUndersampled("image", acceleration=4).set_random_state(2)({"image": img})
    assert torch.equal(d1["image_mask"], d2["image_mask"]) and torch.equal(d1["image_meas"], d2["image_meas"])
    assert not torch.equal(d1["image_mask"], d3["image_mask"])


def test_volume_slice_by_slice_and_model_batches():
    vol = torch.rand(2, 32, 48, 5)  # (C, H, W, D), two channels
    y, pinv, params, _ = BlockCSAcquisition(0.3, block_size=16, seed=2)(vol)
    assert tuple(y.shape) == (2, math.ceil(0.3 * 256), 2, 3, 5)
    op = operator_from_record(params)
    for i in range(5):  # one operator for every slice
        torch.testing.assert_close(y[..., i], op.A(vol[None, ..., i])[0])
        torch.testing.assert_close(pinv[..., i], op.A_dagger(y[None, ..., i])[0])

    calls = []

    def model(yb, operator):  # a stand-in model with IDM's call convention: range-null-space step from 0.5
        calls.append(tuple(yb.shape))
        x0 = torch.full((yb.shape[0], 1, 32, 48), 0.5)
        return x0 - operator.A_dagger(operator.A(x0) - yb)

    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0], dtype=torch.float64))
    rec = IDMReconstruct(model, batch_size=4)(y, params, ref=MetaTensor(vol, affine=affine))
    assert calls == [(4, 1, 77, 2, 3), (4, 1, 77, 2, 3), (2, 1, 77, 2, 3)]  # 10 = 2 channels x 5 slices
    assert rec.shape == vol.shape and torch.equal(rec.affine, affine)
    torch.testing.assert_close(replay_acquisition(rec, params), y, atol=1e-5, rtol=1e-5)  # data-consistent
    assert not torch.allclose(rec.as_tensor(), pinv, atol=1e-3)  # the model did something other than A^+


def test_dataset_dataloader_collation_and_saveimaged(files, tmp_path):
    pre = Compose([*_load(), BlockCSAcquisitiond("image", ratio=0.1, sigma=0.01)])
    pre.set_random_state(0)
    ds = Dataset([{"image": str(files["nifti"])}] * 3, transform=pre)
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=0)))
    assert batch["image_meas"].shape == (3, 1, 103, 2, 1, 3)
    assert isinstance(batch["image_acq"]["operator"]["seed"], torch.Tensor)  # collated
    post = Compose(
        [IDMReconstructd("image", "pinv"), SaveImaged("image_recon", output_dir=tmp_path, output_postfix="recon",
                                                      separate_folder=False, resample=False, print_log=False)]
    )
    items = decollate_batch(batch)
    seeds = [it["image_acq"]["operator"]["seed"] for it in items]
    assert len(set(seeds)) == 3  # one draw per item
    for it in items:
        # the decollated record rebuilds the exact acquisition
        assert torch.equal(replay_acquisition(it["image"], it["image_acq"]), it["image_meas"])
    out = post(items[0])
    written = tmp_path / "vol_recon.nii.gz"
    assert written.is_file()
    img = nib.load(written)
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-5)
    np.testing.assert_allclose(np.asarray(img.dataobj), out["image_recon"][0].numpy(), atol=1e-6)


def test_kspace_record_collates(files):
    pre = Compose([*_load(), KspaceUndersampled("image", mask_kind="gaussian2d", acceleration=5)])
    pre.set_random_state(1)
    batch = next(iter(DataLoader(Dataset([{"image": str(files["png"])}] * 2, transform=pre), batch_size=2)))
    assert batch["image_meas"].shape == (2, 1, 96, 64) and batch["image_mask"].shape == (2, 96, 64)
    for it in decollate_batch(batch):
        assert torch.equal(operator_from_record(it["image_acq"]).mask.bool(), it["image_mask"])
        assert torch.equal(replay_acquisition(it["image"], it["image_acq"]), it["image_meas"])
        rec = IDMReconstructd("image", return_complex=True)(it)["image_recon"]
        torch.testing.assert_close(replay_acquisition(rec, it["image_acq"]), it["image_meas"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: BlockCSAcquisition(0.1)(torch.rand(32, 32)), r"img: expected a channel-first"),
        (lambda: BlockCSAcquisition(0.1)(torch.rand(1, 1, 1, 32, 32)), r"img: expected a channel-first"),
        (lambda: BlockCSAcquisition(0.1)(torch.rand(1, 32, 32, dtype=torch.complex64)), r"img: complex"),
        (lambda: BlockCSAcquisitiond("ct", 0.1)({"ct": torch.full((1, 32, 32), float("nan"))}), r"key 'ct'.*NaN"),
        (lambda: KspaceUndersampled("mr")({"mr": torch.full((1, 32, 32), float("inf"))}), r"key 'mr'.*NaN or Inf"),
        (lambda: BlockCSAcquisition(0.1, sigma=-1.0), r"sigma"),
        (lambda: BlockCSAcquisition(0.1, seed=-3), r"seed"),
        (lambda: BlockCSAcquisition(1.5), r"ratio"),
        (lambda: KspaceUndersample("nonsense"), r"kind"),
        (lambda: IDMReconstruct("idm"), r"model"),
        (lambda: IDMReconstruct("pinv", batch_size=0), r"batch_size"),
        (lambda: replay_acquisition(torch.rand(1, 8, 8), {"operator": {}}), r"params.*'sigma'"),
    ],
)
def test_bad_input_is_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_input_reconstruct():
    y, _, params, _ = BlockCSAcquisition(0.25, block_size=8, seed=0)(torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="meas: expected 4 dims"):
        IDMReconstruct()(y[0], params)
    with pytest.raises(ValueError, match="meas: contains NaN"):
        IDMReconstruct()(y * float("nan"), params)
    with pytest.raises(ValueError, match=r"model: expected an output of shape \(B, 1, H, W\)"):
        IDMReconstruct(lambda yb, op: torch.zeros(yb.shape[0], 3, 16, 16))(y, params)
    with pytest.raises(TypeError, match="model"):
        IDMReconstruct(model=3)
    with pytest.raises(KeyError, match="image_acq"):
        IDMReconstructd("image")({"image_meas": y})
    with pytest.raises(ValueError, match="params: not a valid JSON"):
        IDMReconstruct()(y, "{")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_reconstruct_on_gpu_matches_cpu():
    vol = torch.rand(1, 64, 64, 3)
    y, pinv, params, _ = BlockCSAcquisition(0.2, seed=1)(vol)

    def model(yb, op):  # runs where IDMReconstruct put it
        assert yb.is_cuda
        return op.A_dagger(yb)

    rec = IDMReconstruct(model, device="cuda", batch_size=2)(y, params)
    assert rec.device.type == "cpu"  # back on the measurement's device
    torch.testing.assert_close(rec, pinv, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("acceleration", [5, 6, 10, 12])
def test_kspace_undersample_any_acceleration(acceleration):
    res = KspaceUndersample("random", acceleration=acceleration, seed=0)(torch.rand(1, 128, 128))
    assert abs(res.mask.numel() / int(res.mask.sum()) / acceleration - 1) < 0.05


def _shepp(n: int = 128) -> torch.Tensor:
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    x = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    return torch.from_numpy((x - x.min()) / (x.max() - x.min())).float()[None]  # (1, n, n) in [0, 1], min 0 max 1


@pytest.mark.parametrize("task, model_name, gain, shift", [("mri", "mri-4x", 3000.0, 0.0),
                                                           ("cs", "cs-0.3", 4000.0, -1000.0)])
def test_idmreconstructd_works_in_the_image_units(task, model_name, gain, shift):
    """Raw scanner intensities (IXI T1 ~3000, CT in HU) give the [0, 1] result in their units, not a worse one.
    The models by their alias names (``mri`` at 4x, ``cs`` at 30 %), the settings the acquisitions use."""
    from idm_imaging import IDM
    from idm_imaging.metrics import psnr

    model = IDM.from_pretrained(model_name).eval()
    x = _shepp()
    acq = (KspaceUndersampled("image", acceleration=4, seed=0) if task == "mri"
           else BlockCSAcquisitiond("image", ratio=0.3, seed=0))
    outs = {}
    for g, b in ((1.0, 0.0), (gain, shift)):
        # fp32: bf16 autocast (the default where it is native) rounds differently at each scale, by up to ~0.003
        d = Compose([acq, IDMReconstructd("image", model, precision="fp32")])({"image": x * g + b})
        assert d["image_acq"]["intensity"] == pytest.approx({"offset": b, "scale": g}, rel=1e-6, abs=1e-3)
        outs[g] = d
    raw, unit = outs[gain], outs[1.0]
    torch.testing.assert_close((raw["image_recon"] - shift) / gain, unit["image_recon"], rtol=0, atol=2e-3)
    rec = (raw["image_recon"] - shift) / gain
    pinv = (raw["image_pinv"] - shift) / gain
    assert psnr(rec.numpy(), x.numpy(), data_range=1.0) > psnr(pinv.numpy(), x.numpy(), data_range=1.0) + 1


def test_idmreconstruct_without_intensity_record():
    from idm_imaging import IDM

    x = _shepp(64)
    model = IDM.from_pretrained("cs-0.3").eval()
    y, _, params, _ = BlockCSAcquisition(0.3, seed=0)(x * 3000)
    del params["intensity"]
    with pytest.raises(ValueError, match="no 'intensity' entry.*ScaleIntensityd"):
        IDMReconstruct(model)(y, params)
    y, _, params, _ = BlockCSAcquisition(0.3, seed=0)(x)
    del params["intensity"]
    assert IDMReconstruct(model)(y, params).shape == (1, 64, 64)
    mri = IDM.from_pretrained("mri-4x").eval()
    k, _, params, _ = KspaceUndersample("random", 4, seed=0)(x * 3000)
    full = IDMReconstruct(mri)(k, params)
    del params["intensity"]  # measured k-space: scale = max |zero-filled|, close to the image's own
    assert float((IDMReconstruct(mri)(k, params) - full).abs().max()) < 0.05 * 3000


def test_kspace_undersample_signed_image_stays_signed():
    from idm_imaging import IDM

    ct = _shepp(64) * 2400 - 1000  # air -1000 HU
    d = Compose([KspaceUndersampled("image", acceleration=4, seed=0),
                 IDMReconstructd("image", IDM.from_pretrained("mri-4x").eval())])({"image": ct})
    for key in ("image_pinv", "image_recon"):
        assert not d[key].is_complex() and float(d[key].min()) < -800, key
    assert float((d["image_recon"] - ct).abs().mean()) < float((d["image_pinv"] - ct).abs().mean())
