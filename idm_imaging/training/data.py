"""Training data: random patches from folders/globs of images, volumes and arrays.

Every matched file contributes its 2-D slices (an image is one slice; a NIfTI/DICOM/.npy/.mat volume
``(D, H, W)`` gives D slices). ``PatchDataset[(index, epoch)]`` returns one patch ``(1, P, P)``:

- luminance images (PNG/JPEG/TIFF) in [0, 1] as read; every other format (arrays, volumes) is divided by the
  slice's ``max |x|`` so that ``max |x| = 1`` (complex data included);
- complex slices stay ``complex64`` when ``complex_mode == "complex"``, become ``|x|`` with "magnitude"; real
  slices become ``complex64`` with zero imaginary part under "complex" (so a batch has one dtype);
- a random ``P x P`` crop (reflect-padded first when the slice is smaller), then one of the 8 flips/rotations.

The randomness of sample ``index`` in ``epoch`` comes only from ``numpy.random.default_rng((seed, epoch,
index))``, so patches do not depend on the worker count, the worker that loads them, or resuming.
:class:`EpochSampler` yields ``(index, epoch)`` keys (a ``DistributedSampler`` order, so each DDP rank gets its
own shard) and can start mid-epoch, which is what exact ``--resume`` needs.

Example::

    >>> ds = PatchDataset(["imgs/*.png"], patch_size=64, seed=0)        # doctest: +SKIP
    >>> x = ds[(3, 0)]; x.shape, x.dtype                                 # doctest: +SKIP
    (torch.Size([1, 64, 64]), torch.float32)
"""

from __future__ import annotations

import glob
import os
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

__all__ = ["IMAGE_EXTS", "VOLUME_EXTS", "find_files", "read_slices", "PatchDataset", "EpochSampler", "make_loader",
           "augment8"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_EXTS = (".nii", ".nii.gz", ".dcm", ".npy", ".mat")


def _ext(path: str) -> str:
    p = path.lower()
    return ".nii.gz" if p.endswith(".nii.gz") else os.path.splitext(p)[1]


def find_files(patterns: list[str]) -> list[str]:
    """Sorted files matched by glob patterns (``**`` allowed); a folder matches every supported file below it.

    Raises:
        ValueError: a pattern matches no supported file (the message names the pattern).
    """
    out: list[str] = []
    for pat in patterns:
        pat = str(pat)
        matches = [pat] if os.path.isfile(pat) else (
            glob.glob(os.path.join(pat, "**", "*"), recursive=True) if os.path.isdir(pat)
            else glob.glob(pat, recursive=True))
        files = sorted(m for m in matches if os.path.isfile(m) and _ext(m) in IMAGE_EXTS + VOLUME_EXTS)
        if not files:
            raise ValueError(f"data pattern {pat!r} matches no supported file ({', '.join(IMAGE_EXTS + VOLUME_EXTS)})")
        out.extend(files)
    return out


def _read_fallback(path: str) -> np.ndarray:
    """Minimal reader used only while ``idm_imaging.io.read_scan`` is unavailable."""
    ext = _ext(path)
    if ext in IMAGE_EXTS:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I"):
                a = np.asarray(im, dtype=np.float32)
                return a / max(float(a.max()), 1.0)
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    if ext == ".npy":
        return np.load(path, allow_pickle=False)
    if ext in (".nii", ".nii.gz"):
        import nibabel

        a = np.asarray(nibabel.load(path).dataobj)
        return np.moveaxis(a, -1, 0) if a.ndim == 3 else a  # NIfTI (X, Y, Z) -> slices first
    if ext == ".dcm":
        import pydicom

        return pydicom.dcmread(path).pixel_array.astype(np.float32)
    if ext == ".mat":
        try:
            import scipy.io

            d = scipy.io.loadmat(path)
            arrays = [v for k, v in d.items() if not k.startswith("__") and isinstance(v, np.ndarray)]
        except NotImplementedError:  # MATLAB v7.3 = HDF5; arrays come transposed
            import h5py

            with h5py.File(path, "r") as f:
                arrays = [np.asarray(f[k]).T for k in f.keys() if isinstance(f[k], h5py.Dataset)]
        arrays = [a for a in arrays if a.ndim >= 2 and a.size > 1]
        if not arrays:
            raise ValueError(f"file {path} holds no 2-D array")
        return max(arrays, key=lambda a: a.size)
    raise ValueError(f"file {path}: unsupported extension {ext!r}")


def _read(path: str) -> np.ndarray:
    try:
        from idm_imaging.io import read_scan
    except ImportError:
        a = _read_fallback(path)
    else:
        t, _meta = read_scan(path)
        a = t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    a = np.asarray(a)
    if a.dtype.kind == "c":
        a = a.astype(np.complex64)
    else:
        a = a.astype(np.float32)
    if a.ndim == 3 and a.shape[-1] in (3, 4) and _ext(path) in IMAGE_EXTS:  # stray RGB: ITU-R BT.601 luminance
        a = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"file {path}: expected a 2-D image or a (D, H, W) volume, got shape {a.shape}")
    return a


@lru_cache(maxsize=4)
def read_slices(path: str) -> np.ndarray:
    """All 2-D slices of a file as ``(D, H, W)`` float32 or complex64 (cached: volumes are read once)."""
    return _read(path)


def augment8(x: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 dihedral transforms of the last two axes: ``rot90`` by ``k % 4``, then a flip if k >= 4."""
    y = np.rot90(x, k % 4, axes=(-2, -1))
    if k >= 4:
        y = y[..., ::-1]
    return np.ascontiguousarray(y)


class PatchDataset(Dataset):
    """Random ``(1, P, P)`` patches from every 2-D slice of the matched files (see the module docstring).

    Args:
        patterns (`list[str]`):
            Glob patterns or folders.
        patch_size (`int`):
            Patch side ``P`` (>= 1).
        seed (`int`, *optional*, defaults to 0):
            Base seed; sample ``(index, epoch)`` uses ``default_rng((seed, epoch, index))``.
        augment (`bool`, *optional*, defaults to `True`):
            Whether to apply one of the 8 flips/rotations.
        complex_mode (`str`, *optional*, defaults to `"magnitude"`):
            ``"magnitude"`` (float32 output) or ``"complex"`` (complex64 output).
    """

    def __init__(self, patterns: list[str], patch_size: int, seed: int = 0, augment: bool = True,
                 complex_mode: str = "magnitude"):
        if complex_mode not in ("magnitude", "complex"):
            raise ValueError(f"complex_mode must be 'magnitude' or 'complex', got {complex_mode!r}")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.files = find_files(list(patterns))
        self.patch_size = int(patch_size)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.complex_mode = complex_mode
        # (file, slice) pairs; images are one slice, volumes are opened once to count theirs.
        self.items: list[tuple[int, int]] = []
        for i, f in enumerate(self.files):
            single = _ext(f) in IMAGE_EXTS and _ext(f) not in (".tif", ".tiff")  # TIFFs may hold pages
            n = 1 if single else read_slices(f).shape[0]
            self.items.extend((i, s) for s in range(n))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> torch.Tensor:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for {len(self.items)} slices")
        fi, si = self.items[index]
        path = self.files[fi]
        x = read_slices(path)[si]
        if _ext(path) not in IMAGE_EXTS:
            m = float(np.abs(x).max())
            if m > 0:
                x = x / m
        if np.iscomplexobj(x) and self.complex_mode == "magnitude":
            x = np.abs(x).astype(np.float32)
        rng = np.random.default_rng((self.seed, int(epoch), int(index)))
        p = self.patch_size
        ph, pw = max(0, p - x.shape[0]), max(0, p - x.shape[1])
        if ph or pw:
            mode = "reflect" if min(x.shape) > 1 else "edge"
            x = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode=mode)
        i0 = int(rng.integers(0, x.shape[0] - p + 1))
        j0 = int(rng.integers(0, x.shape[1] - p + 1))
        x = x[i0:i0 + p, j0:j0 + p]
        k = int(rng.integers(0, 8))
        if self.augment:
            x = augment8(x, k)
        x = np.ascontiguousarray(x)
        if self.complex_mode == "complex":
            x = x.astype(np.complex64)
        return torch.from_numpy(x)[None]


class EpochSampler(Sampler):
    """Yields ``(index, epoch)`` keys in ``DistributedSampler`` order, starting ``start`` samples into the epoch.

    With ``num_replicas = 1`` it is a seeded shuffle of the whole set; under DDP each rank gets a disjoint shard.
    """

    def __init__(self, n: int, epoch: int, seed: int, rank: int = 0, num_replicas: int = 1, start: int = 0):
        self.inner = DistributedSampler(range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                                        drop_last=False)
        self.inner.set_epoch(epoch)
        self.epoch = epoch
        self.start = start

    def __iter__(self):
        for k, i in enumerate(self.inner):
            if k >= self.start:
                yield (i, self.epoch)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.start)


def make_loader(dataset: PatchDataset, batch_size: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1,
                start_batch: int = 0, num_workers: int = 2) -> DataLoader:
    """DataLoader over one epoch (whole batches only), skipping the first ``start_batch`` batches (resume)."""
    sampler = EpochSampler(len(dataset), epoch, seed, rank, world_size, start=start_batch * batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=True,
                      persistent_workers=False, pin_memory=False)


def batches_per_epoch(dataset: PatchDataset, batch_size: int, world_size: int = 1) -> int:
    """Whole batches each rank draws per epoch (``DistributedSampler`` pads the set to a multiple of ranks)."""
    per_rank = -(-len(dataset) // world_size)
    return per_rank // batch_size
