"""Scan I/O: round trips with exact values and geometry, real shared files, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
import scipy.io
import torch
from PIL import Image

from idm_imaging.io import ScanReadError, read_scan, write_scan


def _rng(seed=0):
    return np.random.default_rng(seed)


# --- raster images --------------------------------------------------------------------------------------------

def test_png_round_trip_exact_and_clipped(tmp_path):
    u8 = _rng().integers(0, 256, (17, 23), dtype=np.uint8)
    x = torch.from_numpy(u8 / 255.0).float()
    path = write_scan(x, tmp_path / "a.png")
    y, meta = read_scan(path)
    assert meta["format"] == "png" and y.dtype == torch.float32 and y.shape == (17, 23)
    assert torch.equal(y, torch.from_numpy((u8 / 255.0).astype(np.float32)))
    assert np.array_equal(np.asarray(Image.open(path)), u8)
    assert np.array_equal(meta["affine"], np.eye(4)) and meta["spacing"] == (1.0, 1.0)
    # out-of-range values are clipped, not wrapped
    write_scan(np.array([[-0.5, 1.7], [0.5, 1.0]]), tmp_path / "c.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c.png")), [[0, 255], [128, 255]])


def test_rgb_and_palette_read_as_bt601_luma(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (10, 200, 30)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    y, _ = read_scan(tmp_path / "rgb.png")
    assert y[0, 0].item() == pytest.approx(round(0.299 * 255) / 255, abs=1e-7)
    assert y[1, 1].item() == pytest.approx(round(0.299 * 10 + 0.587 * 200 + 0.114 * 30) / 255, abs=1.5 / 255)
    pal = Image.fromarray(rgb, "RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "pal.tif")
    yp, meta = read_scan(tmp_path / "pal.tif")
    assert meta["format"] == "tiff"
    assert np.array_equal(yp.numpy(), (np.asarray(pal.convert("L")) / 255.0).astype(np.float32))


def test_tiff_float_round_trip_2d_and_3d(tmp_path):
    img = _rng(1).normal(size=(9, 11)).astype(np.float32)
    vol = _rng(2).normal(size=(3, 9, 11)).astype(np.float32)
    y2, m2 = read_scan(write_scan(img, tmp_path / "a.tif"))
    y3, m3 = read_scan(write_scan(torch.from_numpy(vol), tmp_path / "b.tiff"))
    assert torch.equal(y2, torch.from_numpy(img)) and m2["value_scale"] == 1.0
    assert torch.equal(y3, torch.from_numpy(vol)) and m3["spacing"] == (1.0, 1.0, 1.0)


def test_jpeg_reads_as_unit_range_luminance(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    Image.fromarray(ramp, "L").save(tmp_path / "r.jpg", quality=100)
    y, meta = read_scan(tmp_path / "r.jpg")
    assert meta["format"] == "jpeg" and y.shape == (16, 32)
    assert np.abs(y.numpy() - ramp / 255.0).max() < 3 / 255


# --- NIfTI ----------------------------------------------------------------------------------------------------

# float32-exact, rotated, anisotropic, translated
_AFFINE = np.array([[0.0, -0.5, 0.0, 10.25], [1.25, 0.0, 0.0, -20.5], [0.0, 0.0, 2.0, 30.0], [0, 0, 0, 1]])


def test_nifti_3d_round_trip_keeps_affine_and_voxel_order(tmp_path):
    xyz = _rng(3).normal(size=(6, 5, 4)).astype(np.float32)  # stored (x, y, z)
    nib.save(nib.Nifti1Image(xyz, _AFFINE), tmp_path / "src.nii.gz")
    vol, meta = read_scan(tmp_path / "src.nii.gz")
    assert vol.shape == (4, 5, 6)  # (D, H, W) = (z, y, x)
    assert vol[3, 2, 1].item() == xyz[1, 2, 3]
    assert np.array_equal(meta["affine"], _AFFINE)
    assert meta["spacing"] == pytest.approx((2.0, 0.5, 1.25))
    out = write_scan(vol, tmp_path / "out.nii.gz", meta)
    back = nib.load(out)
    assert np.array_equal(back.affine, _AFFINE)
    assert np.array_equal(back.get_fdata(dtype=np.float32), xyz)
    vol2, meta2 = read_scan(out)
    assert torch.equal(vol2, vol) and np.array_equal(meta2["affine"], _AFFINE)


def test_nifti_2d_and_spacing_only_meta(tmp_path):
    img = _rng(4).normal(size=(7, 9)).astype(np.float32)
    out = write_scan(img, tmp_path / "a.nii", {"spacing": (0.5, 0.25)})
    y, meta = read_scan(out)
    assert torch.equal(y, torch.from_numpy(img)) and meta["format"] == "nifti"
    assert np.array_equal(meta["affine"], np.diag([0.25, 0.5, 1.0, 1.0])) and meta["spacing"] == (0.5, 0.25)


def test_complex_to_nifti_and_png_writes_magnitude(tmp_path):
    z = (np.array([[0.6, 0.0], [0.3, 1.0]]) * np.exp(1j * np.array([[1.0, 2.0], [-1.0, 0.5]]))).astype(np.complex64)
    y, meta = read_scan(write_scan(torch.from_numpy(z), tmp_path / "m.nii.gz"))
    assert not meta["is_complex"] and np.allclose(y.numpy(), np.abs(z), atol=1e-7)
    assert np.array_equal(np.asarray(Image.open(write_scan(z, tmp_path / "m.png"))), [[153, 0], [77, 255]])


# --- DICOM ----------------------------------------------------------------------------------------------------

def _dicom_slice(path, pixels, z, instance, series_uid):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = CTImageStorage
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, fm.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "CT", series_uid, instance
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelSpacing = [0.5, 0.75]  # row spacing, column spacing
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-40.0, -30.0, z]
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.PixelData = pixels.astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _make_series(folder, n=4):
    folder.mkdir()
    uid = pydicom.uid.generate_uid()
    raw = [np.full((6, 8), 10 * k, np.int16) + np.arange(8, dtype=np.int16) for k in range(n)]
    zs = [10.0 + 2.5 * k for k in range(n)]
    # file names and instance numbers in an order other than the slice positions
    for name, k in zip("dbca"[:n], range(n)):
        _dicom_slice(str(folder / f"{name}.dcm"), raw[k], zs[k], instance=n - k, series_uid=uid)
    (folder / "notes.txt").write_text("not dicom")
    return raw, zs


def test_dicom_series_sorted_by_position_with_spacing_and_rescale(tmp_path):
    raw, zs = _make_series(tmp_path / "series")
    vol, meta = read_scan(tmp_path / "series")
    assert meta["format"] == "dicom-series" and vol.shape == (4, 6, 8)
    assert np.array_equal(vol.numpy(), np.stack(raw) * 2.0 - 100.0)  # ordered by z, slope/intercept applied
    assert meta["spacing"] == pytest.approx((2.5, 0.5, 0.75))
    expected = np.array([[-0.75, 0, 0, 40.0], [0, -0.5, 0, 30.0], [0, 0, 2.5, 10.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(meta["affine"], expected, atol=1e-12)
    assert [os.path.basename(f) for f in meta["files"]] == ["d.dcm", "b.dcm", "c.dcm", "a.dcm"]
    # geometry through nibabel: NIfTI written from the series has the same world coordinates
    out = write_scan(vol, tmp_path / "series.nii.gz", meta)
    assert np.allclose(nib.load(out).affine, expected)


def test_dicom_single_file(tmp_path):
    raw, _ = _make_series(tmp_path / "s", n=2)
    img, meta = read_scan(tmp_path / "s" / "b.dcm")
    assert meta["format"] == "dicom" and img.shape == (6, 8)
    assert np.array_equal(img.numpy(), raw[1] * 2.0 - 100.0)
    assert meta["spacing"] == (0.5, 0.75) and meta["affine"][2, 3] == 12.5


# --- arrays ---------------------------------------------------------------------------------------------------

def test_npy_real_and_complex_round_trip(tmp_path):
    z = (_rng(5).normal(size=(2, 5, 6)) + 1j * _rng(6).normal(size=(2, 5, 6))).astype(np.complex64)
    zc, meta = read_scan(write_scan(torch.from_numpy(z), tmp_path / "z.npy"))
    assert zc.dtype == torch.complex64 and meta["is_complex"] and torch.equal(zc, torch.from_numpy(z))
    r = _rng(7).normal(size=(5, 6))
    rr, meta = read_scan(write_scan(r, tmp_path / "r.npy"))
    assert rr.dtype == torch.float32 and meta["dtype"] == "float64"
    assert torch.equal(rr, torch.from_numpy(r.astype(np.float32)))


def test_mat_v5_round_trip_and_layout(tmp_path):
    vol = _rng(8).normal(size=(3, 5, 6)).astype(np.float32)
    out = write_scan(vol, tmp_path / "v.mat", {"key": "vol"})
    stored = scipy.io.loadmat(out)["vol"]
    assert stored.shape == (5, 6, 3)  # MATLAB (rows, cols, slices)
    back, meta = read_scan(out)
    assert meta["format"] == "mat" and meta["key"] == "vol" and torch.equal(back, torch.from_numpy(vol))
    z = (_rng(9).normal(size=(4, 5)) + 1j).astype(np.complex64)
    scipy.io.savemat(tmp_path / "z.mat", {"small": np.ones((2, 2)), "big": z, "name": "text"})
    zc, meta = read_scan(tmp_path / "z.mat")  # largest numeric array
    assert meta["key"] == "big" and torch.equal(zc, torch.from_numpy(z))
    small, _ = read_scan(tmp_path / "z.mat", key="small")
    assert torch.equal(small, torch.ones(2, 2))
    with pytest.raises(ScanReadError, match="nope"):
        read_scan(tmp_path / "z.mat", key="nope")


def _write_mat73(path, variables):
    """MATLAB v7.3 layout: HDF5 with a 512-byte user block, arrays stored transposed, complex as {real, imag}."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in variables.items():
            arr = np.asarray(arr)
            if np.iscomplexobj(arr):
                comp = np.empty(arr.T.shape, dtype=[("real", "<f8"), ("imag", "<f8")])
                comp["real"], comp["imag"] = arr.T.real, arr.T.imag
                ds = f.create_dataset(name, data=comp)
            else:
                ds = f.create_dataset(name, data=arr.T)
            ds.attrs["MATLAB_class"] = np.bytes_("double")
        f.create_dataset("label", data=np.frombuffer(b"a\x00b\x00", np.uint16)).attrs["MATLAB_class"] = np.bytes_("char")
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(128, b" "))


def test_mat_v73_transposed_and_complex(tmp_path):
    img = _rng(10).normal(size=(5, 7))
    mat_vol = _rng(11).normal(size=(5, 7, 3))  # MATLAB (rows, cols, slices)
    z = _rng(12).normal(size=(4, 6)) + 1j * _rng(13).normal(size=(4, 6))
    _write_mat73(tmp_path / "v73.mat", {"img": img, "vol": mat_vol, "z": z})
    a, meta = read_scan(tmp_path / "v73.mat", key="img")
    assert meta["mat_version"] == "7.3" and torch.equal(a, torch.from_numpy(img.astype(np.float32)))
    v, meta = read_scan(tmp_path / "v73.mat")  # largest: vol
    assert meta["key"] == "vol" and torch.equal(v, torch.from_numpy(np.moveaxis(mat_vol, -1, 0).astype(np.float32)))
    c, meta = read_scan(tmp_path / "v73.mat", key="z")
    assert meta["is_complex"] and torch.equal(c, torch.from_numpy(z.astype(np.complex64)))


# --- fastMRI --------------------------------------------------------------------------------------------------

def _write_fastmri(path, with_recon=True):
    rng = _rng(14)
    k = (rng.normal(size=(3, 16, 12)) + 1j * rng.normal(size=(3, 16, 12))).astype(np.complex64)
    recon = rng.random((3, 8, 8)).astype(np.float32)
    mask = (rng.random(12) > 0.5).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
        if with_recon:
            f.create_dataset("reconstruction_esc", data=recon)
        f.create_dataset("mask", data=mask)
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = float(recon.max())
    return k, recon, mask


def test_fastmri_h5_image_kspace_and_mask(tmp_path):
    k, recon, mask = _write_fastmri(tmp_path / "file1.h5")
    img, meta = read_scan(tmp_path / "file1.h5")
    assert meta["format"] == "fastmri-h5" and meta["image_key"] == "reconstruction_esc"
    assert torch.equal(img, torch.from_numpy(recon)) and "kspace" not in meta
    assert meta["attrs"]["acquisition"] == "CORPD_FBK"
    img, meta = read_scan(tmp_path / "file1.h5", kspace=True)
    assert meta["kspace"].dtype == torch.complex64 and torch.equal(meta["kspace"], torch.from_numpy(k))
    assert torch.equal(meta["mask"], torch.from_numpy(mask > 0))


def test_fastmri_h5_without_reconstruction_gives_zero_filled_image(tmp_path):
    k, _, _ = _write_fastmri(tmp_path / "test.h5", with_recon=False)
    img, meta = read_scan(tmp_path / "test.h5")
    ref = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    assert meta["is_complex"] and img.shape == (3, 16, 12)
    np.testing.assert_allclose(img.numpy(), ref, atol=1e-5)


# --- real shared files ----------------------------------------------------------------------------------------

def test_shared_natural_images(datasets_dir):
    parrots = datasets_dir / "natural/test/Set11/Parrots.tif"  # palette mode
    bsd = datasets_dir / "natural/test/BSD68/test001.png"
    for f in (parrots, bsd):
        if not f.exists():
            pytest.skip(f"{f} not found (IDM_IMAGING_DATA names a folder without natural/test/)")
        img, meta = read_scan(f)
        ref = np.asarray(Image.open(f).convert("L")) / 255.0
        assert img.shape == ref.shape and np.array_equal(img.numpy(), ref.astype(np.float32))


def test_shared_ct_dicom(ct_dicom):
    f = ct_dicom
    img, meta = read_scan(f)
    ds = pydicom.dcmread(f)
    assert img.shape == (512, 512) and meta["spacing"] == pytest.approx((0.478516, 0.478516))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(img.numpy(), expected.astype(np.float32))
    assert meta["affine"][0, 3] == pytest.approx(-float(ds.ImagePositionPatient[0]))  # LPS -> RAS


def test_shared_siat_npy_and_cardiac_mat(datasets_dir):
    npy = datasets_dir / "mri/train/SIAT_T2_brain_complex/lsq001.npy"
    mat = datasets_dir / "mri/train/cardiac_DeepADMMNet/im-01.mat"
    if not (npy.exists() and mat.exists()):
        pytest.skip(f"{npy} or {mat} not found (IDM_IMAGING_DATA names a folder without mri/train/)")
    z, meta = read_scan(npy)
    assert meta["is_complex"] and torch.equal(z, torch.from_numpy(np.load(npy)))
    c, meta = read_scan(mat)
    with h5py.File(mat, "r") as f:
        ref = f["im_ori"][()].T
    assert meta["key"] == "im_ori" and torch.equal(c, torch.from_numpy(ref.astype(np.float32)))


# --- bad input ------------------------------------------------------------------------------------------------

def _valid_files(tmp_path):
    files = {
        "png": write_scan(np.full((64, 64), 0.5), tmp_path / "t.png"),
        "nii": write_scan(np.ones((4, 16, 16)), tmp_path / "t.nii"),
        "niigz": write_scan(_rng().normal(size=(4, 32, 32)), tmp_path / "t.nii.gz"),
        "npy": write_scan(np.ones((32, 32)), tmp_path / "t.npy"),
        "mat": write_scan(_rng().normal(size=(32, 32)), tmp_path / "t.mat"),
        "tif": write_scan(np.ones((32, 32)), tmp_path / "t.tif"),
    }
    _write_fastmri(tmp_path / "t.h5")
    files["h5"] = tmp_path / "t.h5"
    _make_series(tmp_path / "s", n=1)
    files["dcm"] = tmp_path / "s" / "d.dcm"
    return files


def test_truncated_files_raise_scan_read_error_naming_file(tmp_path):
    for name, f in _valid_files(tmp_path).items():
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
        with pytest.raises(ScanReadError, match=f.name) as err:
            read_scan(f)
        assert isinstance(err.value, ValueError), name


def test_missing_unknown_and_non_numeric_files(tmp_path):
    with pytest.raises(ScanReadError, match="nothere.nii"):
        read_scan(tmp_path / "nothere.nii")
    (tmp_path / "junk.xyz").write_bytes(b"hello world" * 10)
    with pytest.raises(ScanReadError, match="junk.xyz"):
        read_scan(tmp_path / "junk.xyz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ScanReadError, match="obj.npy"):  # allow_pickle=False refuses it
        read_scan(tmp_path / "obj.npy")
    np.save(tmp_path / "vec.npy", np.ones(5))
    with pytest.raises(ScanReadError, match="vec.npy"):
        read_scan(tmp_path / "vec.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanReadError, match="empty"):
        read_scan(tmp_path / "empty")
    with pytest.raises(TypeError, match="path"):
        read_scan(3)


def test_nan_and_inf_in_data_raise_value_error_naming_file(tmp_path):
    a = np.ones((8, 8))
    a[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(ValueError, match="nan.npy.*NaN"):
        read_scan(tmp_path / "nan.npy")
    b = np.ones((2, 8, 8), np.float32)
    b[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(b, np.eye(4)), tmp_path / "inf.nii")
    with pytest.raises(ValueError, match="inf.nii"):
        read_scan(tmp_path / "inf.nii")
    np.save(tmp_path / "big.npy", np.full((4, 4), 1e300))  # overflows float32
    with pytest.raises(ValueError, match="big.npy"):
        read_scan(tmp_path / "big.npy")


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"previous result")

    def half_write(img, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_scan(np.ones((2, 4, 4)), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]
    assert target.read_bytes() == b"previous result"


def test_write_rejects_bad_input_and_writes_nothing(tmp_path):
    bad = np.ones((4, 4))
    bad[0, 0] = np.inf
    cases = [
        (ValueError, "NaN or Inf", bad, "a.npy"),
        (ValueError, r"\(H, W\) or \(D, H, W\)", np.ones(5), "a.npy"),
        (TypeError, "tensor", [[1.0]], "a.npy"),
        (ValueError, "a.dcm", np.ones((4, 4)), "a.dcm"),
        (ValueError, "PNG holds one", np.ones((2, 4, 4)), "a.png"),
        (ValueError, "key", np.ones((4, 4)), "a.mat"),
    ]
    for exc, msg, arr, name in cases:
        meta = {"key": "1bad"} if name == "a.mat" else None
        with pytest.raises(exc, match=msg):
            write_scan(arr, tmp_path / name, meta)
    with pytest.raises(ValueError, match="does not exist"):
        write_scan(np.ones((4, 4)), tmp_path / "no" / "a.npy")
    assert list(tmp_path.iterdir()) == []


def test_writes_keep_the_raster_scale(tmp_path):
    img = (np.arange(32 * 32).reshape(32, 32) * 47).astype(np.uint16)  # 0..48081
    Image.fromarray(img).save(tmp_path / "a.tif")
    x, meta = read_scan(tmp_path / "a.tif")
    assert meta["value_scale"] == 65535.0 and float(x.max()) < 1
    for name in ("o.tif", "o.nii.gz", "o.npy"):
        back, _ = read_scan(write_scan(x, tmp_path / name, meta))
        assert np.allclose(back.numpy(), img, atol=1e-2), name
    back, m = read_scan(write_scan(x, tmp_path / "o.png", meta))  # 16-bit PNG
    assert np.array_equal(np.rint(back.numpy() * m["value_scale"]), img)


def test_atomic_write_fsyncs_and_clears_a_killed_writers_temporaries(tmp_path, monkeypatch):
    import idm_imaging.io.writers as writers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".o.npy.{dead.pid}.abc123.tmp.npy"  # left by a writer killed with SIGKILL
    stale.write_bytes(b"x")
    alive = tmp_path / f".o.npy.{os.getppid()}.def456.tmp.npy"  # a live writer's: kept
    alive.write_bytes(b"x")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(writers.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    write_scan(np.ones((4, 4), np.float32), tmp_path / "o.npy")
    assert len(synced) == 2  # the file, then its folder
    assert not stale.exists() and alive.exists()
    with pytest.raises(FileExistsError):
        write_scan(np.zeros((4, 4), np.float32), tmp_path / "o.npy", overwrite=False)
    assert np.load(tmp_path / "o.npy").sum() == 16


@pytest.mark.parametrize("codes", [(1, 1), (1, 2), (2, 0)])
def test_nifti_output_keeps_the_input_qform_and_sform_codes(tmp_path, codes):
    """A NIfTI result says what its input's affine meant: the qform / sform codes come through read -> write."""
    import nibabel as nib

    from idm_imaging.io import read_scan, write_scan

    affine = np.diag([0.9, 1.1, 2.0, 1.0])
    affine[:3, 3] = [-40, 12, 7]
    src = nib.Nifti1Image(np.random.default_rng(0).random((8, 6, 3)).astype(np.float32), affine)
    src.set_qform(affine, code=codes[0])
    src.set_sform(affine, code=codes[1])
    nib.save(src, tmp_path / "in.nii.gz")
    x, meta = read_scan(tmp_path / "in.nii.gz")
    write_scan(x, tmp_path / "out.nii.gz", meta)
    out = nib.load(tmp_path / "out.nii.gz")
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == codes
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
