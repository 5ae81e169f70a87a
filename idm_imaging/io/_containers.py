"""HDF5 (fastMRI .h5, MATLAB v7.3) and MATLAB v5 files, read in a child process.

libhdf5 and scipy.io's C readers can crash the whole process on a crafted file (segmentation fault); a crash
in a child becomes a ScanReadError naming the file instead of taking down the command line or napari. The child
also caps its address space, and every dataset's declared size is checked before it is read. Arrays come back
as .npy files (``allow_pickle=False``) and the metadata as JSON: nothing is unpickled.

This module imports numpy, h5py and scipy only (no torch), so the child starts quickly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from idm_imaging.io._common import ScanReadError, ScanTooLargeError, check_size

__all__ = ["read_container"]

# fastMRI image datasets, in order of preference.
FASTMRI_IMAGE_KEYS = ("reconstruction_esc", "reconstruction_rss", "reconstruction")
_MAT_ITEMSIZE = {"double": 16, "single": 8, "int8": 2, "uint8": 2, "int16": 4, "uint16": 4, "int32": 8,
                 "uint32": 8, "int64": 16, "uint64": 16, "logical": 1}  # complex worst case: 2x


def read_container(fmt: str, path: Path, *, kspace: bool, key: str | None, limit: int
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read ``path`` (fmt ``mat`` or ``fastmri-h5``) in a child process; returns ``(arrays, meta)``.

    arrays: ``image`` (and ``kspace`` / ``mask`` for fastMRI with ``kspace=True``) as stored.
    """
    request = {"fmt": fmt, "path": str(path), "kspace": kspace, "key": key, "limit": limit}
    with tempfile.TemporaryDirectory(prefix="idm-read-") as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        try:
            proc = subprocess.run([sys.executable, "-m", "idm_imaging.io._containers", json.dumps(request), tmp],
                                  stdin=subprocess.DEVNULL, capture_output=True, env=env)
        except KeyboardInterrupt:
            raise
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else "?"
            raise ScanReadError(f"cannot read {fmt} scan {str(path)!r}: its reader crashed ({sig}); "
                                "the file is corrupt or not a valid file of this format")
        lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
        try:
            reply = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            tail = " ".join(proc.stderr.decode("utf-8", "replace").split())[-300:]
            raise ScanReadError(f"cannot read {fmt} scan {str(path)!r}: its reader failed (exit "
                                f"{proc.returncode}): {tail}") from None
        if not reply["ok"]:
            cls = ScanTooLargeError if reply["type"] == "ScanTooLargeError" else ScanReadError
            raise cls(reply["error"])
        arrays = {name: np.load(os.path.join(tmp, f"{name}.npy"), allow_pickle=False) for name in reply["arrays"]}
    return arrays, reply["meta"]


# ------------------------------------------------------------------------------------------- child side
def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.size <= 64:
        return _jsonable(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)[:200]


def _pick(candidates: dict, key: str | None, path: Path) -> str:
    if not candidates:
        raise ScanReadError(f"{str(path)!r} holds no numeric array")
    if key is None:
        return max(candidates, key=lambda k: candidates[k])
    if key not in candidates:
        raise ScanReadError(f"{str(path)!r} has no numeric variable {key!r}; it has {sorted(candidates)}")
    return key


def _read_dataset(ds, path: Path, limit: int, what: str) -> np.ndarray:
    check_size(path, ds.shape, ds.dtype.itemsize, limit, f"dataset {what!r}")
    return ds[()]


def _read_fastmri(path: Path, kspace: bool, key: str | None, limit: int):
    import h5py

    with h5py.File(str(path), "r") as f:
        datasets = {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}
        arrays = {k: v for k, v in datasets.items() if v.dtype.kind in "biufc" and v.ndim >= 2}
        if key is not None:
            if key not in arrays:
                raise ScanReadError(f"{str(path)!r} has no array dataset {key!r}; it has {sorted(arrays)}")
            image_key = key
        else:
            image_key = next((k for k in FASTMRI_IMAGE_KEYS if k in arrays), None)
        if image_key is None and "kspace" not in arrays:
            raise ScanReadError(f"{str(path)!r} holds neither a fastMRI reconstruction nor k-space; "
                                f"it has {sorted(arrays)}")
        if kspace and "kspace" not in arrays:
            raise ScanReadError(f"kspace=True but {str(path)!r} has no 'kspace' dataset")
        out = {}
        if image_key is not None:
            out["image"] = _read_dataset(arrays[image_key], path, limit, image_key)
        if kspace or image_key is None:
            out["kspace"] = _read_dataset(arrays["kspace"], path, limit, "kspace")
        if kspace and "mask" in datasets:
            out["mask"] = _read_dataset(datasets["mask"], path, limit, "mask")
        meta = {
            "image_key": image_key,
            "attrs": {k: _jsonable(v) for k, v in f.attrs.items()},
            "datasets": {k: list(v.shape) for k, v in datasets.items()},
        }
    return out, meta


def _read_mat_v5(path: Path, key: str | None, limit: int):
    import scipy.io

    sizes, shapes = {}, {}
    for name, shape, cls in scipy.io.whosmat(str(path)):
        if cls in _MAT_ITEMSIZE and 0 not in shape:
            sizes[name] = int(np.prod(shape))
            shapes[name] = (shape, _MAT_ITEMSIZE[cls])
    name = _pick(sizes, key, path)
    check_size(path, shapes[name][0], shapes[name][1], limit, f"variable {name!r}")
    data = scipy.io.loadmat(str(path), variable_names=[name])
    arr = np.asarray(data[name])
    if arr.dtype.kind not in "biufc" or arr.size == 0:
        raise ScanReadError(f"{str(path)!r}: variable {name!r} is not a numeric array")
    return {"image": arr}, {"key": name, "mat_version": "5"}


def _read_mat_v73(path: Path, key: str | None, limit: int):
    import h5py

    def is_numeric(ds) -> bool:
        if ds.attrs.get("MATLAB_class", b"") in (b"char", b"cell", b"struct", b"logical_sparse"):
            return False
        if "MATLAB_empty" in ds.attrs and ds.attrs["MATLAB_empty"]:
            return False
        names = ds.dtype.names
        return (names is not None and {"real", "imag"} <= set(names)) or ds.dtype.kind in "biuf"

    with h5py.File(str(path), "r") as f:
        sizes: dict[str, int] = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.startswith("#") and is_numeric(obj):
                sizes[name] = obj.size

        f.visititems(visit)
        name = _pick(sizes, key, path)
        raw = _read_dataset(f[name], path, limit, name)
    if raw.dtype.names is not None:  # MATLAB complex: compound {real, imag}
        raw = raw["real"] + 1j * raw["imag"]
    # HDF5 stores MATLAB's column-major array with reversed dimensions.
    return {"image": np.asarray(raw).T}, {"key": name, "mat_version": "7.3"}


def _child(request: dict, out_dir: str) -> dict:
    import h5py

    path, limit = Path(request["path"]), int(request["limit"])
    if request["fmt"] == "fastmri-h5":
        arrays, meta = _read_fastmri(path, request["kspace"], request["key"], limit)
    elif h5py.is_hdf5(str(path)):
        arrays, meta = _read_mat_v73(path, request["key"], limit)
    else:
        arrays, meta = _read_mat_v5(path, request["key"], limit)
    for name, arr in arrays.items():
        with open(os.path.join(out_dir, f"{name}.npy"), "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return {"ok": True, "arrays": sorted(arrays), "meta": meta}


def main(argv: list[str]) -> int:
    request, out_dir = json.loads(argv[0]), argv[1]
    try:
        import resource

        # room for the declared data (checked against the limit) a few times over, plus the libraries
        cap = 4 * int(request["limit"]) + 4 * 1024**3
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ImportError, ValueError, OSError):  # no resource module (Windows) or a lower hard limit
        pass
    try:
        reply = _child(request, out_dir)
    except ScanReadError as exc:
        reply = {"ok": False, "type": type(exc).__name__, "error": str(exc)}
    except MemoryError:
        reply = {"ok": False, "type": "ScanTooLargeError",
                 "error": f"scan {request['path']!r}: reading it needs more memory than its declared size allows"}
    except Exception as exc:  # noqa: BLE001 (corrupt files raise many types)
        reply = {"ok": False, "type": "ScanReadError",
                 "error": f"cannot read {request['fmt']} scan {request['path']!r}: {type(exc).__name__}: {exc}"}
    print(json.dumps(reply, default=_jsonable))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
