"""napari reader: scans with anatomical geometry are shown as DICOM viewers show them (no Qt needed)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from napari_plugin import _engine
from napari_plugin._reader import read_layers


def test_nifti_in_ras_order_is_shown_upright(tmp_path):
    vol = np.zeros((3, 20, 24), np.float32)  # (D, H, W); NIfTI axes (W, H, D) = (x: right, y: anterior, z)
    vol[:, -1, :] = 1  # the most anterior row
    affine = np.diag([0.5, 0.7, 3.0, 1.0])
    nib.save(nib.Nifti1Image(vol.T, affine), tmp_path / "ras.nii.gz")
    [(data, kwargs, _)] = read_layers(str(tmp_path / "ras.nii.gz"))
    np.testing.assert_array_equal(data, vol)  # data untouched: results keep the voxel order
    aff = np.asarray(kwargs["affine"])
    np.testing.assert_allclose(aff, _engine.display_affine(affine, vol.shape, kwargs["scale"]))
    rows = [(aff @ np.array([0.0, h * 0.7, 0.0, 1.0]))[1] for h in (0, 19)]
    assert rows[1] < rows[0]  # the anterior row is drawn at the top, as in a DICOM viewer
    assert aff[2, 2] == -1  # patient's right on the viewer's left (radiological), as DICOM


def test_formats_without_geometry_are_shown_as_stored(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((16, 16)).astype(np.float32))
    [(_, kwargs, _)] = read_layers(str(tmp_path / "x.npy"))
    assert "affine" not in kwargs


def test_dicom_stays_as_it_is(ct_dicom):
    [(data, kwargs, _)] = read_layers(str(ct_dicom))
    np.testing.assert_array_equal(kwargs["affine"], np.eye(3))  # rows already run to posterior, columns to left
