"""Hostile files and folders: the crafted corpus of tests/data/fuzz/ (tests/data/make_fuzz_corpus.py), FIFOs,
crafted model folders. Each must give a one-line error naming the file, never a crash, a hang or an allocation."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from idm_imaging.cli import main
from idm_imaging.io import ScanReadError, ScanTooLargeError, read_scan

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
from make_fuzz_corpus import EXPECTED, OUT as CORPUS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FILES = sorted(EXPECTED)


def test_corpus_is_committed_and_small():
    assert sorted(p.name for p in CORPUS.iterdir()) == FILES
    assert all((CORPUS / n).stat().st_size <= 8192 for n in FILES)


@pytest.mark.parametrize("name", FILES)
def test_read_scan_refuses_with_a_message_naming_the_file(name):
    path = CORPUS / name
    if EXPECTED[name] is None:  # a hostile part that must simply not be touched
        img, meta = read_scan(path)
        assert tuple(img.shape) == (2, 16, 16) and float(img.max()) == 1.0
        assert meta["datasets"]["unrelated"] == [4, 1024, 1024, 1024]
        return
    t0 = time.perf_counter()
    with pytest.raises(ScanReadError) as exc:
        read_scan(path, kspace=name.endswith(".h5") and "kspace" in name)
    assert time.perf_counter() - t0 < 60
    msg = str(exc.value)
    assert name in msg and EXPECTED[name] in msg and "\n" not in msg


def test_child_process_crash_is_reported_not_fatal():
    # the reader segfaults on this file (checked in a bare interpreter): we must survive it
    code = "import h5py, sys\nwith h5py.File(sys.argv[1], 'r') as f: f['img'][()]"
    bare = subprocess.run([sys.executable, "-c", code, str(CORPUS / "mat73_crash_float_bias.mat")],
                          capture_output=True)
    assert bare.returncode < 0  # killed by a signal
    with pytest.raises(ScanReadError, match="reader crashed"):
        read_scan(CORPUS / "mat73_crash_float_bias.mat")


def test_size_limit_is_overridable(monkeypatch, tmp_path):
    arr = np.ones((64, 64), np.float32)  # 16 KiB
    np.save(tmp_path / "a.npy", arr)
    with pytest.raises(ScanTooLargeError, match="IDM_IMAGING_MAX_SCAN_BYTES"):
        read_scan(tmp_path / "a.npy", max_bytes=1000)
    monkeypatch.setenv("IDM_IMAGING_MAX_SCAN_BYTES", "10K")
    with pytest.raises(ScanTooLargeError, match="10.0 KiB limit"):
        read_scan(tmp_path / "a.npy")
    monkeypatch.setenv("IDM_IMAGING_MAX_SCAN_BYTES", "1M")
    assert read_scan(tmp_path / "a.npy")[0].shape == (64, 64)
    # the same limit on the HDF5 path, in the child process
    monkeypatch.setenv("IDM_IMAGING_MAX_SCAN_BYTES", "100")
    with pytest.raises(ScanTooLargeError, match="reconstruction_rss"):
        read_scan(CORPUS / "h5_unrelated_huge.h5")


@pytest.mark.parametrize("name", [n for n in FILES if EXPECTED[n] is not None])
def test_cli_one_line_error_and_nothing_written(name, tmp_path, capsys):
    out = tmp_path / "o.nii.gz"
    code = main(["reconstruct", str(CORPUS / name), "--out", str(out), "--task", "mri", "--acceleration", "4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert name in err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_napari_reader_raises_scan_read_error():
    from napari_plugin._reader import read_layers

    with pytest.raises(ScanReadError, match="crashed"):
        read_layers(str(CORPUS / "mat73_crash_float_bias.mat"))
    layers = read_layers(str(CORPUS / "h5_unrelated_huge.h5"))  # no k-space: the image layer alone
    assert len(layers) == 1 and layers[0][0].shape == (2, 16, 16)


def test_fifo_input_is_refused_not_waited_on(tmp_path, capsys):
    fifo = tmp_path / "scan.nii"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(ScanReadError, match="not a regular file"):
        read_scan(fifo)
    code = main(["reconstruct", str(fifo), "--out", str(tmp_path / "o.nii"), "--task", "cs", "--ratio", "0.1"])
    err = capsys.readouterr().err
    assert code == 2 and "not a regular file" in err and time.perf_counter() - t0 < 30


# ------------------------------------------------------------------------------------------ model folders
@pytest.fixture()
def model_folder(tmp_path):
    """A copy of an embedded model's config with a tiny valid weights file (header only checks)."""
    from idm_imaging.models.registry import WEIGHTS_DIR

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text((WEIGHTS_DIR / "mri" / "config.json").read_text())
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(
        (WEIGHTS_DIR / "mri" / "diffusion_pytorch_model.safetensors").read_bytes())
    return folder


def _set(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if key == "layers_per_block":
            cfg["backbone_config"][key] = value
        else:
            cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


def _reconstruct(folder, tmp_path, capsys):
    img = tmp_path / "in.npy"
    np.save(img, np.ones((32, 32), np.float32))
    t0 = time.perf_counter()
    code = main(["reconstruct", str(img), "--out", str(tmp_path / "o.npy"), "--task", "mri", "--acceleration", "4",
                 "--model", str(folder)])
    err = capsys.readouterr().err.strip()
    return code, err, time.perf_counter() - t0


@pytest.mark.parametrize("change,needle", [
    ({"T": 1_000_000_000}, "T=1000000000"),
    ({"layers_per_block": 1_000_000}, "layers_per_block=1000000"),
])
def test_crafted_model_config_refused_fast(model_folder, tmp_path, capsys, change, needle):
    _set(model_folder, **change)
    code, err, seconds = _reconstruct(model_folder, tmp_path, capsys)
    assert code == 2 and needle in err and "config.json" in err and len(err.splitlines()) == 1
    assert seconds < 20


def test_truncated_and_non_regular_weights_refused(model_folder, tmp_path, capsys):
    weights = model_folder / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    code, err, _ = _reconstruct(model_folder, tmp_path, capsys)
    assert code == 2 and "truncated" in err and "safetensors" in err
    weights.unlink()
    weights.symlink_to("/dev/zero")  # a link to a device: would read forever
    code, err, seconds = _reconstruct(model_folder, tmp_path, capsys)
    assert code == 2 and "not a regular file" in err and seconds < 20
    weights.unlink()
    weights.symlink_to(tmp_path / "nowhere.safetensors")  # dangling
    code, err, _ = _reconstruct(model_folder, tmp_path, capsys)
    assert code == 2 and "cannot be opened" in err


def test_local_folder_never_touches_the_network(model_folder, tmp_path):
    # a config naming a hub id, loaded in a fresh process where any connection attempt fails loudly
    _set(model_folder, _name_or_path="CompVis/stable-diffusion-v1-4")
    img = tmp_path / "in.npy"
    np.save(img, np.ones((32, 32), np.float32))
    guard = ("import socket, sys\n"
             "def no(*a, **k): raise SystemExit('NETWORK ' + repr(a))\n"
             "socket.socket.connect = no; socket.create_connection = no; socket.getaddrinfo = no\n"
             "from idm_imaging.cli import main\n"
             "sys.exit(main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DIFFUSERS_"))}
    proc = subprocess.run([sys.executable, "-c", guard, "reconstruct", str(img), "--out", str(tmp_path / "o.npy"),
                           "--task", "mri", "--acceleration", "4", "--model", str(model_folder)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert "NETWORK" not in proc.stderr + proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
