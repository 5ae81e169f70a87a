"""benchmarks/eval_models.py: per-set figures of a model folder, equal to the metrics computed directly."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

_spec = importlib.util.spec_from_file_location("eval_models", Path(__file__).parents[1] / "benchmarks/eval_models.py")
em = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(em)

LIGHT = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=[8, 16],
             norm_num_groups=4, add_attention=False, down_block_types=["DownBlock2D"] * 2,
             up_block_types=["UpBlock2D"] * 2)


@pytest.fixture(scope="module")
def cs_setup(tmp_path_factory):
    """Two 64x64 Set11-like PNGs and a tiny cs model whose output layer is zero (it returns its start)."""
    from PIL import Image

    from idm_imaging.models import IDM

    root = tmp_path_factory.mktemp("eval")
    g = np.random.default_rng(0)
    for i in range(2):
        (root / "data/natural/test/Set11").mkdir(parents=True, exist_ok=True)
        img = np.kron(g.random((8, 8)), np.ones((8, 8)))  # piecewise constant
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"data/natural/test/Set11/img{i}.png")
    model = IDM(backbone_type="UNet2DModel", backbone_config=LIGHT, T=2, task="cs", measured_mean=False,
                operator_config={"ratio": 0.25, "block_size": 32, "permute": True, "seed": 5})
    model.unet.zero_output()
    model.save_pretrained(str(root / "cs"), safe_serialization=True)
    return root


def test_evaluate_reports_the_metrics_of_the_model_and_the_pseudo_inverse(cs_setup):
    from idm_imaging.io import read_scan
    from idm_imaging.metrics import psnr_y
    from idm_imaging.models import IDM
    from idm_imaging.operators import BlockCS

    res = em.evaluate(str(cs_setup / "cs"), cs_setup / "data", None, log=lambda *a: None, cs_seeds=(7,))
    assert set(res) == {"Set11", "Set11 seed 7"}  # BSD68 has no files here: left out
    model = IDM.from_pretrained(str(cs_setup / "cs")).eval()
    for name, seed in (("Set11", 5), ("Set11 seed 7", 7)):
        pinv, idm = [], []
        for f in sorted((cs_setup / "data/natural/test/Set11").glob("*.png")):
            x, _ = read_scan(f)
            op = BlockCS(0.25, 32, permute=True, seed=seed, img_size=tuple(x.shape))
            y = op.A(x[None, None])
            pinv.append(psnr_y(op.A_dagger(y)[0, 0].clamp(0, 1), x))
            with torch.no_grad():
                idm.append(psnr_y(model(y, op)[0, 0].clamp(0, 1), x))
        assert res[name]["images"] == 2
        assert res[name]["pinv_psnr"] == pytest.approx(np.mean(pinv), abs=1e-3)
        assert res[name]["idm_psnr"] == pytest.approx(np.mean(idm), abs=1e-3)


def test_main_writes_json_and_keeps_an_existing_file(cs_setup, tmp_path):
    out = tmp_path / "eval.json"
    argv = ["--models", str(cs_setup / "cs"), "--data", str(cs_setup / "data"), "--cs-seeds", "--json", str(out)]
    assert em.main(argv) == 0
    rec = json.loads(out.read_text())
    assert rec["models"][str(cs_setup / "cs")]["Set11"]["images"] == 2 and rec["hardware"]
    out.write_text("keep")
    with pytest.raises(SystemExit):
        em.main(argv)
    assert out.read_text() == "keep"
    assert em.main(["--models", "cs", "--data", str(tmp_path / "missing")]) == 2
