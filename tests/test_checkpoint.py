"""Training output folders and checkpoints: no unrelated file touched, no silent restart, damage detected."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idm_imaging.training import train
from idm_imaging.training import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(4):
        img = np.kron(rng.random((9, 9)), np.ones((4, 4)))[:32, :32]
        Image.fromarray((img * 255).astype(np.uint8)).save(d / f"img{i}.png")
    return d


def _cfg(images: Path, out: Path) -> dict:
    with open(REPO / "configs" / "tiny-prior.toml", "rb") as f:
        d = tomllib.load(f)
    d["data"]["train"] = [str(images / "*.png")]
    d["output_dir"] = str(out)
    d["train"].update(steps=4, checkpoint_every=2, keep_checkpoints=5)
    return d


@pytest.fixture(scope="module")
def run(images, tmp_path_factory) -> Path:
    """A finished tiny run with checkpoints at steps 2 and 4."""
    return train(_cfg(images, tmp_path_factory.mktemp("run") / "out"))


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    cfg = json.loads((dst / "train_config.json").read_text())
    cfg["output_dir"] = str(dst)
    (dst / "train_config.json").write_text(json.dumps(cfg))
    return dst


def test_unrelated_folder_is_refused_and_left_alone(images, tmp_path):
    out = tmp_path / "project"
    (out / "model").mkdir(parents=True)
    (out / "model" / "notes.txt").write_text("mine")
    (out / "log.csv").write_text("my,own,log\n")
    for resume in (False, True):
        with pytest.raises(ValueError, match=r"'output_dir'.*not empty.*not a training run"):
            train(_cfg(images, out), resume=resume)
    assert (out / "model" / "notes.txt").read_text() == "mine" and (out / "log.csv").read_text() == "my,own,log\n"
    assert sorted(p.name for p in out.iterdir()) == ["log.csv", "model"]
    (out / "model" / "notes.txt").unlink()
    (out / "model").rmdir()
    (out / "log.csv").unlink()
    assert (train(_cfg(images, out)) / "model").is_dir()  # an empty folder is fine


def test_checkpoints_record_checksums(run):
    ck = ckpt.latest_checkpoint(run)
    sums = json.loads((ck / "checksums.json").read_text())["sha256"]
    assert {"model/diffusion_pytorch_model.safetensors", "train_state.json", "train_state.safetensors",
            "rng-rank0.json", "rng-rank0.safetensors", "train_config.json"} <= set(sums)


@pytest.mark.parametrize("latest, match", [("step-00000099", r"step-00000099 does not exist.*step-00000002"),
                                           ("../..", r"not a checkpoint of this run"),
                                           ("step-00000002/../../../other", r"not a checkpoint of this run")])
def test_resume_with_a_bad_latest_fails_and_keeps_checkpoints(images, run, tmp_path, latest, match):
    out = _copy(run, tmp_path)
    (out / "checkpoints" / "latest").write_text(latest)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(ValueError, match=match):
        train(_cfg(images, out), resume=True)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    assert {"step-00000002", "step-00000004"} <= set(before)


def test_resume_detects_a_bit_flip_and_names_damaged_files(images, run, tmp_path):
    out = _copy(run, tmp_path)
    weights = out / "checkpoints" / "step-00000004" / "model" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model.safetensors: its sha256 differs"):
        train(_cfg(images, out), resume=True)
    # a checkpoint without checksums (older format): a truncated JSON file is named
    ck = out / "checkpoints" / "step-00000002"
    (ck / "checksums.json").unlink()
    state = ck / "train_state.json"
    state.write_text(state.read_text()[:50])
    with pytest.raises(ValueError, match=r"train_state.json: cannot be read as JSON"):
        ckpt.load_state(ck, "train_state")
    (ck / "train_state.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(ValueError, match=r"train_state.safetensors: cannot be read as safetensors"):
        ckpt.load_state(ck, "train_state")


def test_resume_from_intact_checkpoint_still_works(images, run, tmp_path):
    out = _copy(run, tmp_path)
    (out / "checkpoints" / "latest").write_text("step-00000002")
    assert (train(_cfg(images, out), resume=True) / "model").is_dir()
    assert json.loads((out / "final_state.json").read_text())["steps"] == 4
