"""Opening scans in napari through the plugin's reader, as a user does: File > Open (napari's reader choice) or
``viewer.open(path, plugin="idm-imaging")``; ``viewer.open(path)`` alone means napari's built-in reader."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("napari")


@pytest.fixture
def nifti(tmp_path):
    vol = np.random.default_rng(0).random((4, 20, 24)).astype(np.float32)  # (D, H, W)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(vol.T, np.diag([0.5, 0.7, 3.0, 1.0])), path)
    return path, vol


def test_viewer_open_with_the_plugin_reads_nifti_with_its_geometry(make_napari_viewer, nifti):
    from napari_plugin._reader import read_layers

    path, vol = nifti
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="idm-imaging")
    [(_, kwargs, _)] = read_layers(str(path))
    np.testing.assert_array_equal(np.asarray(layer.data), vol)
    np.testing.assert_allclose(layer.scale, kwargs["scale"])
    np.testing.assert_allclose(layer.affine.affine_matrix, np.asarray(kwargs["affine"]))


def test_plugin_is_offered_for_scans_and_a_remembered_choice_opens_without_naming_it(make_napari_viewer, nifti,
                                                                                       monkeypatch):
    """File > Open lists the plugin for NIfTI and DICOM; once the user's choice is remembered
    (``settings.plugins.extension2reader``, what napari's chooser stores), ``viewer.open(path, plugin=None)``
    uses it."""
    from napari.plugins import _npe2
    from napari.settings import get_settings

    path, vol = nifti
    viewer = make_napari_viewer()
    for name in ("a.nii.gz", "a.nii", "a.dcm", "a.IMA"):
        assert "idm-imaging" in _npe2.get_readers(name), name
    monkeypatch.setattr(get_settings().plugins, "extension2reader", {"*.nii.gz": "idm-imaging"})
    [layer] = viewer.open(str(path), plugin=None)
    np.testing.assert_array_equal(np.asarray(layer.data), vol)
