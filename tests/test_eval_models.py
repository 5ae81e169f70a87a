"""benchmarks/eval_models.py's learning curve: the lineage arithmetic and the projection to a target."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("eval_models", Path(__file__).parents[1] / "benchmarks/eval_models.py")
em = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(em)

CPU = {"steps": 100, "seconds": 500.0, "device": "CPU", "patch_size": 64, "batch_size": 4}
GPU = {"steps": 50, "seconds": 100.0, "device": "NVIDIA H100", "patch_size": 256, "batch_size": 2,
       "continued_from": CPU, "total_steps": 150}


def test_lineage_and_samples_count_128_patch_equivalents():
    assert [s["steps"] for s in em.lineage(GPU)] == [100, 50]
    # 100 x 4 x (64/128)^2 + 50 x 2 x (256/128)^2
    assert em.samples_seen(GPU) == pytest.approx(100 + 400)
    rate, device = em.gpu_rate(GPU)
    assert rate == pytest.approx(400 / 100.0) and device == "NVIDIA H100"
    assert em.gpu_rate(CPU) is None


def test_projection_inverts_an_exact_log_linear_curve(tmp_path):
    # PSNR = 10 + 4 log10(samples): 28 dB needs 10^4.5 samples
    curve = [{"total_steps": k, "samples": 10.0 ** e, "Set11": 10 + 4 * e} for k, e in ((1, 3), (2, 4), (3, 4.25))]
    text = em.projection("cs", curve, GPU)
    assert "+4.00 dB per 10x training over the last three points, +4.00 over the last two" in text
    assert "31,623 samples" in text
    hours = (10 ** 4.5 - 10 ** 4.25) / 4.0 / 3600
    assert f"about {hours:.1f} GPU-hours" in text
    assert em.projection("cs", curve[:2], GPU) == ""  # fewer than three points: no projection
    # a flattening curve: the last two points' smaller slope (2 dB per 10x) makes the projection
    curve[-1]["Set11"] = 10 + 4 * 4 + 2 * 0.25
    assert f"{10 ** 4.25 * 10 ** ((28 - 26.5) / 2):,.0f} samples" in em.projection("cs", curve, GPU)
    flat = [dict(p, Set11=25.0) for p in curve]
    assert "No projection" in em.projection("cs", flat, GPU)


def test_update_curve_replaces_a_re_evaluation_of_the_same_model(tmp_path):
    metrics = {"Set11": {"idm_psnr": 20.0, "pinv_psnr": 6.0}}
    em.update_curve(tmp_path, GPU, metrics, "2026-01-01")
    curve = em.update_curve(tmp_path, GPU, {"Set11": {"idm_psnr": 21.0, "pinv_psnr": 6.0}}, "2026-01-02")
    assert len(curve) == 1 and curve[0]["Set11"] == 21.0 and curve[0]["samples"] == 500.0
