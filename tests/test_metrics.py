"""Metrics: closed forms for PSNR/NMSE, SSIM identities, MATLAB Y conversion, fastMRI data range and crop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from idm_imaging.metrics import fastmri_metrics, nmse, psnr, psnr_y, rgb_to_y, ssim, ssim_y


def _gray(seed=0, shape=(48, 40)):
    rng = np.random.default_rng(seed)
    return rng.integers(40, 216, shape).astype(np.float64) / 255.0  # margin so small noise stays in [0, 1]


def test_rgb_to_y_matches_matlab_formula_on_a_known_pixel():
    rgb = np.zeros((3, 2, 2))
    rgb[:, 0, 1] = (1.0, 0.5, 0.25)
    expected = (16 + 65.481 * 1.0 + 128.553 * 0.5 + 24.966 * 0.25) / 255
    y = rgb_to_y(rgb)
    assert y.shape == (2, 2) and y[0, 1] == pytest.approx(expected, abs=1e-12)
    assert y[0, 0] == pytest.approx(16 / 255) and rgb_to_y(np.ones((3, 1, 1)))[0, 0] * 255 == pytest.approx(235.0)
    # channels-last, torch and uint8 give the same Y
    hwc = np.moveaxis(rgb, 0, -1)
    assert np.allclose(rgb_to_y(hwc), y)
    assert torch.allclose(rgb_to_y(torch.from_numpy(rgb)), torch.from_numpy(y))
    u8 = np.array([[[255, 128, 64]]], np.uint8)  # (1, 1, 3)
    assert rgb_to_y(u8)[0, 0] == pytest.approx((16 + 65.481 + 128.553 * 128 / 255 + 24.966 * 64 / 255) / 255)
    with pytest.raises(ValueError, match="image"):
        rgb_to_y(np.ones((4, 5)))


def test_psnr_y_equals_closed_form_for_known_noise():
    target = _gray()
    noise = np.random.default_rng(1).choice([-3.0, 0.0, 2.0], size=target.shape) / 255.0
    pred = target + noise
    mse = np.mean((255 * noise) ** 2)
    assert psnr_y(pred, target) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
    assert psnr_y(torch.from_numpy(pred).float()[None], torch.from_numpy(target).float()[None]) == pytest.approx(
        10 * math.log10(255**2 / mse), abs=1e-3
    )
    assert psnr_y(target, target) == math.inf


def test_psnr_y_on_rgb_uses_y_channel_and_quantize_rounds():
    rng = np.random.default_rng(2)
    t = rng.random((3, 32, 32)) * 0.8 + 0.1
    p = t + rng.normal(0, 0.01, t.shape)
    yt, yp = rgb_to_y(t) * 255, rgb_to_y(p) * 255
    assert psnr_y(p, t) == pytest.approx(10 * math.log10(255**2 / np.mean((yt - yp) ** 2)), abs=1e-9)
    # sub-half-level errors vanish when both are rounded to 8-bit levels
    g = _gray(3)
    shifted = g + 0.3 / 255
    assert math.isfinite(psnr_y(shifted, g)) and psnr_y(shifted, g, quantize=True) == math.inf
    # predictions are clamped to [0, 1] like the reference evaluation
    assert psnr_y(np.clip(g + 0.5, 0, 1), g) == psnr_y(g + 0.5, g)


def test_ssim_y_identity_and_degradation_order():
    g = _gray(4, (64, 64))
    assert ssim_y(g, g) == pytest.approx(1.0, abs=1e-12)
    assert ssim_y(g, g, gaussian_weights=True) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(5)
    mild, strong = g + rng.normal(0, 0.01, g.shape), g + rng.normal(0, 0.08, g.shape)
    assert 0 < ssim_y(strong, g) < ssim_y(mild, g) < 1
    # data range 255 on the 0-255 scale (same as data range 1 on [0, 1])
    expected = structural_similarity(g * 255, np.clip(mild, 0, 1) * 255, data_range=255)
    assert ssim_y(mild, g) == pytest.approx(expected, abs=1e-12)


def test_fastmri_nmse_psnr_closed_form_and_target_max_data_range():
    rng = np.random.default_rng(6)
    target = rng.random((3, 32, 32)) * 2.0 + 0.3  # positive: the protocol takes magnitudes
    pred = target + rng.normal(0, 0.05, target.shape)
    pred[0, 0, 0] = 10.0  # pred max far above target max: must not set the data range
    m = fastmri_metrics(torch.from_numpy(pred), torch.from_numpy(target))
    mse = np.mean((target - pred) ** 2)
    assert m["nmse"] == pytest.approx(np.sum((target - pred) ** 2) / np.sum(target**2), rel=1e-12)
    assert m["psnr"] == pytest.approx(10 * math.log10(target.max() ** 2 / mse), abs=1e-9)
    per_slice = [structural_similarity(t, p, data_range=target.max()) for t, p in zip(target, pred)]
    assert m["ssim"] == pytest.approx(np.mean(per_slice), abs=1e-12)
    assert m["ssim"] != pytest.approx(np.mean([structural_similarity(t, p, data_range=pred.max())
                                               for t, p in zip(target, pred)]), abs=1e-6)
    assert nmse(pred, target) == m["nmse"] and psnr(pred, target) == pytest.approx(m["psnr"])
    assert ssim(target, target) == pytest.approx(1.0)


def test_fastmri_uses_magnitude_and_center_crop():
    rng = np.random.default_rng(7)
    mag = rng.random((2, 40, 36)) + 0.1
    phase = np.exp(1j * rng.uniform(-np.pi, np.pi, mag.shape))
    pred_mag = mag * (1 + rng.normal(0, 0.02, mag.shape))
    a = fastmri_metrics(pred_mag * phase, mag * np.conj(phase))
    b = fastmri_metrics(pred_mag, mag)
    assert a == pytest.approx(b)
    # errors outside the central 20x16 crop do not count; an axis smaller than the crop is kept whole
    pred = mag.copy()
    pred[:, :5] += 1.0
    pred[:, :, -3:] += 1.0
    cropped = fastmri_metrics(pred, mag, crop=(20, 16))
    assert cropped["nmse"] == 0.0 and cropped["psnr"] == math.inf and cropped["ssim"] == pytest.approx(1.0)
    assert fastmri_metrics(pred, mag, crop=320)["nmse"] == pytest.approx(fastmri_metrics(pred, mag)["nmse"])
    one = fastmri_metrics(pred[0], mag[0])  # (H, W) is a one-slice volume
    assert one == pytest.approx(fastmri_metrics(pred[:1], mag[:1]))


def test_bad_input_names_arguments():
    a, b = np.ones((16, 16)), np.ones((16, 17))
    for fn in (psnr_y, ssim_y, psnr, ssim, nmse, fastmri_metrics):
        with pytest.raises(ValueError, match="pred.*target"):
            fn(a, b)
    nan = np.ones((16, 16))
    nan[3, 3] = np.nan
    with pytest.raises(ValueError, match="pred"):
        psnr_y(nan, a)
    with pytest.raises(TypeError, match="target"):
        fastmri_metrics(a, [[1.0]])
    with pytest.raises(ValueError, match="target"):
        fastmri_metrics(a, np.zeros((16, 16)))
    with pytest.raises(ValueError, match="crop"):
        fastmri_metrics(a, a, crop=(0, 3))
