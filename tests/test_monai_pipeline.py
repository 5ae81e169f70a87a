"""IDM inside a MONAI pipeline: LoadImaged -> acquisition -> IDMReconstructd -> PSNRMetric/SSIMMetric -> SaveImaged.

3-D volumes: block CS goes through :class:`IDMReconstructd` (slices of the measurement's last axis, ``batch_size``
per call: MONAI's ``SliceInferer`` cannot slice a block-CS measurement ``(C, q, nh, nw, D)``, which is not on the
image grid); the k-space path also runs through MONAI's ``SliceInferer`` (full-slice ROI, ``sw_batch_size`` slices per
call) with :func:`idm_imaging.inference.kspace_slice_network`, and both routes must agree.
"""

import nibabel as nib
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from monai.data import CacheDataset, DataLoader, decollate_batch
from monai.inferers import SliceInferer
from monai.metrics import PSNRMetric, SSIMMetric
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, SaveImaged, ScaleIntensityd

from idm_imaging.inference import kspace_slice_network
from idm_imaging.metrics import psnr
from idm_imaging.models import IDM, tiny_backbone_config
from idm_imaging.transforms import BlockCSAcquisitiond, IDMReconstructd, KspaceUndersampled, operator_from_record

AFFINES = [np.array([[0.8, 0, 0, -12], [0, 0.8, 0, 7], [0, 0, 2.5, 30], [0, 0, 0, 1]]),
           np.array([[0, -1.1, 0, 5], [0.9, 0, 0, -3], [0, 0, 3.0, 1], [0, 0, 0, 1]])]


def _tiny_idm(task):
    torch.manual_seed(0)
    return IDM.from_diffusers(UNet2DConditionModel(**tiny_backbone_config()), T=2, task=task).eval()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Two NIfTI volumes (32, 32, 4), smooth structures, different affines."""
    folder = tmp_path_factory.mktemp("vols")
    yy, xx, zz = np.mgrid[0:32, 0:32, 0:4] / 32
    files = []
    for i, aff in enumerate(AFFINES):
        vol = 0.2 + np.exp(-((yy - 0.4 - 0.1 * i) ** 2 + (xx - 0.5) ** 2) / 0.03) + 0.3 * xx + 0.5 * zz
        path = folder / f"vol{i}.nii.gz"
        nib.save(nib.Nifti1Image(vol.astype(np.float32), aff), path)
        files.append({"image": str(path)})
    return files


def _per_slice(x):
    """(C, H, W, D) -> (D, C, H, W): 2-D metrics per slice."""
    return x.as_tensor().permute(3, 0, 1, 2) if hasattr(x, "as_tensor") else x.permute(3, 0, 1, 2)


def test_block_cs_pipeline_cachedataset_metrics_and_saveimaged(volumes, tmp_path):
    load = [LoadImaged("image"), EnsureChannelFirstd("image"), ScaleIntensityd("image")]
    acq = BlockCSAcquisitiond("image", ratio=0.25, block_size=16, seed=0)
    ds = CacheDataset(volumes, transform=Compose([*load, acq]), cache_rate=1.0, num_workers=0, progress=False)
    assert len(ds._cache) == 2  # the deterministic prefix is cached, the acquisition runs per access
    recon = IDMReconstructd("image", _tiny_idm("cs"), batch_size=3)
    pinv_t = IDMReconstructd("image", "pinv", output_postfix="_pinv2")
    save = SaveImaged("image_recon", output_dir=str(tmp_path), output_postfix="recon", separate_folder=False,
                      resample=False, print_log=False)
    psnr_m, ssim_m = PSNRMetric(max_val=1.0), SSIMMetric(spatial_dims=2, data_range=1.0, win_size=7)
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=0)))
    items = decollate_batch(batch)
    assert len(items) == 2
    for item, aff in zip(items, AFFINES):
        out = save(pinv_t(recon(item)))
        x_hat, ref = out["image_recon"], out["image"]
        assert tuple(x_hat.shape) == (1, 32, 32, 4) and torch.isfinite(x_hat).all()
        assert np.allclose(np.asarray(x_hat.affine), aff)
        # the pseudo-inverse reconstructed from the collated record equals the acquisition's own A^+ y
        assert torch.allclose(out["image_pinv2"].as_tensor(), out["image_pinv"].as_tensor(), atol=1e-5)
        psnr_m(_per_slice(x_hat), _per_slice(ref))
        ssim_m(_per_slice(x_hat), _per_slice(ref))
        # MONAI's PSNR of IDM output equals our metric with the same data range (mean over slices)
        ours = np.mean([psnr(p[0].numpy(), t[0].numpy(), data_range=1.0)
                        for p, t in zip(_per_slice(x_hat), _per_slice(ref))])
        monai_last = PSNRMetric(max_val=1.0)(_per_slice(x_hat), _per_slice(ref)).mean().item()
        assert monai_last == pytest.approx(ours, rel=1e-4)
    p, s = psnr_m.aggregate().item(), ssim_m.aggregate().item()
    assert np.isfinite(p) and np.isfinite(s) and -1 <= s <= 1 and p > 0
    for i, aff in enumerate(AFFINES):
        saved = nib.load(tmp_path / f"vol{i}_recon.nii.gz")
        assert np.allclose(saved.affine, aff) and saved.shape == (32, 32, 4)


def test_kspace_volume_through_sliceinferer_matches_idmreconstructd(volumes):
    model = _tiny_idm("mri")
    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), ScaleIntensityd("image"),
                   KspaceUndersampled("image", mask_kind="random", acceleration=4, seed=1, return_complex=True),
                   IDMReconstructd("image", model, batch_size=4, precision="fp32")])  # as the SliceInferer route
    ds = CacheDataset(volumes[:1], transform=pre, cache_rate=1.0, num_workers=0, progress=False)
    item = ds[0]
    zf = item["image_pinv"].as_tensor()  # complex (1, H, W, D)
    assert zf.is_complex()
    op = operator_from_record(item["image_acq"])
    inferer = SliceInferer(roi_size=(32, 32), sw_batch_size=2, spatial_dim=2, progress=False)
    calls = []
    net = kspace_slice_network(model, op)
    out = inferer(torch.cat([zf.real, zf.imag])[None], lambda x: calls.append(x.shape[0]) or net(x))
    assert tuple(out.shape) == (1, 1, 32, 32, 4) and calls == [2, 2]  # 4 slices, 2 per call
    assert torch.allclose(out[0], item["image_recon"].as_tensor(), atol=1e-4)
    # the same route with model=None is the zero-filled magnitude
    zf_out = inferer(torch.cat([zf.real, zf.imag])[None], kspace_slice_network(None, op))
    assert torch.allclose(zf_out[0], zf.abs(), atol=1e-5)
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0)(_per_slice(item["image_recon"]), _per_slice(item["image"]))
    assert torch.isfinite(ssim).all()
