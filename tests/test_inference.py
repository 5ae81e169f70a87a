"""idm_imaging.inference: intensity handling of signed images and the bf16 support check."""

from __future__ import annotations

import warnings

import pytest
import torch

from idm_imaging import inference
from idm_imaging.inference import bf16_is_fast, reconstruct_volume, resolve_precision, volume_metrics
from idm_imaging.operators import SingleCoilFourier


def _ct(n: int = 128) -> torch.Tensor:
    """A head-CT-like slice in Hounsfield units: air -1000, soft tissue ~40, a bone ring ~1400."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    x = torch.from_numpy(resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)).float()
    return -1000.0 + 2400.0 * x


def test_signed_real_image_under_mri_stays_signed():
    from idm_imaging import IDM

    x = _ct()
    res = reconstruct_volume(x, lambda hw: SingleCoilFourier.from_mask_params("random", hw, 4, seed=0),
                             IDM.from_pretrained("mri").eval())
    assert not res.recon.is_complex() and not res.pinv.is_complex()
    assert (res.offset, res.scale) == pytest.approx((float(x.min()), float(x.max() - x.min())))
    assert float(res.recon.min()) < -800 and float(res.pinv.min()) < -800  # air stays air, not +1000
    zf = volume_metrics(res.pinv, res.reference, "mri", offset=res.offset, scale=res.scale)
    idm = volume_metrics(res.recon, res.reference, "mri", offset=res.offset, scale=res.scale)
    assert idm["psnr"] > zf["psnr"] + 1, (idm, zf)


def test_magnitude_images_keep_zero_at_zero():
    x = _ct(32) + 1000.0  # non-negative: a magnitude image
    res = reconstruct_volume(x, lambda hw: SingleCoilFourier.from_mask_params("random", hw, 4, seed=0))
    assert res.offset == 0.0 and res.scale == pytest.approx(float(x.max())) and res.pinv.is_complex()


class _Probe(torch.nn.Module):
    """Records whether it ran under CPU bf16 autocast; returns the zero-filled image."""

    def __init__(self):
        super().__init__()
        self.autocast = []

    def forward(self, y, op):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return op.A_dagger(y)


@pytest.mark.parametrize("caps, fast", [({}, False), ({"avx2": True, "avx512_f": True}, False),
                                        ({"avx512_bf16": True}, True), ({"amx_bf16": True}, True)])
def test_bf16_only_where_native(monkeypatch, caps, fast):
    monkeypatch.setattr(inference, "_cpu_capabilities", lambda: caps)
    assert bf16_is_fast("cpu") is fast
    probe = _Probe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = reconstruct_volume(torch.rand(16, 16), lambda hw: SingleCoilFourier.from_mask_params(
            "random", hw, 2, seed=0), probe, precision="bf16")
    assert probe.autocast == [fast] and res.info["precision"] == ("bf16" if fast else "fp32")
    slow = [w for w in caught if "bf16" in str(w.message)]
    assert len(slow) == (0 if fast else 1) and "running in fp32" in (str(slow[0].message) if slow else "running in fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", "cpu")
    # the default, "auto": bf16 exactly where it is native, for a model that declares autocast safe (IDM), and
    # without a warning; any other callable runs in fp32
    for safe in (True, False):
        probe = _Probe()
        probe.bf16_autocast_safe = safe
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = reconstruct_volume(torch.rand(16, 16), lambda hw: SingleCoilFourier.from_mask_params(
                "random", hw, 2, seed=0), probe)
        assert probe.autocast == [fast and safe] and res.info["precision"] == ("bf16" if fast and safe else "fp32")


def test_bf16_is_fast_here_matches_the_cpu_flags():
    flags = open("/proc/cpuinfo").read().split() if __import__("os").path.exists("/proc/cpuinfo") else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    assert bf16_is_fast("cpu") == ("avx512_bf16" in flags or "amx_bf16" in flags)
