"""Where the training and test images live: one setting, the environment variable ``IDM_IMAGING_DATA``.

Commands that read datasets take ``--data DIR``; everything else (tests, benchmarks, the training configs'
``$IDM_IMAGING_DATA/...`` globs) reads ``IDM_IMAGING_DATA``. When it is unset, ``../shared/datasets`` next to
the repository is used if it exists. The folder's layout (file names as their public sources ship them)::

    natural/train/Train400/*.png            natural/test/Set11/*.tif
    natural/train/BSDS500_train/*.jpg       natural/test/Set12/*.png
                                            natural/test/BSD68/*.png
    mri/train/SIAT_T2_brain_complex/lsq001.npy ... lsq140.npy   (complex64; lsq121-lsq140 are held out for tests)
    mri/train/figshare_T1CE_brain/*.jpg     mri/test/BrainImages_test/*.png
    mri/train/cardiac_DeepADMMNet/*.mat
    samples/CT_head_512.dcm
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "data_root"]

DATA_ENV = "IDM_IMAGING_DATA"
_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def data_root(data: str | os.PathLike | None = None, must_exist: bool = True) -> Path:
    """The datasets folder.

    Args:
        data (`str` or `os.PathLike`, *optional*):
            An explicit folder (a command's ``--data DIR``). When `None`, ``$IDM_IMAGING_DATA``; when that is
            unset or empty, ``../shared/datasets`` next to the repository.
        must_exist (`bool`, *optional*, defaults to `True`):
            Raise when the folder is missing. `False`: return it anyway (a benchmark then reports its sets as
            skipped).

    Returns:
        `pathlib.Path`: the folder, absolute.

    Raises:
        `FileNotFoundError`: the folder does not exist; the message names ``--data`` and ``IDM_IMAGING_DATA``.

    Example:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     data_root(d) == Path(d).resolve()
    True
    >>> data_root("/no/such/folder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: data folder /no/such/folder not found: pass --data DIR or set IDM_IMAGING_DATA ...
    >>> str(data_root("/no/such/folder", must_exist=False))
    '/no/such/folder'
    """
    if data is not None and str(data) != "":
        path, origin = Path(data).expanduser(), "--data"
    elif os.environ.get(DATA_ENV):
        path, origin = Path(os.environ[DATA_ENV]).expanduser(), DATA_ENV
    else:
        path, origin = _DEFAULT, "default"
    if must_exist and not path.is_dir():
        raise FileNotFoundError(f"data folder {path} not found: pass --data DIR or set {DATA_ENV} to a folder with "
                                f"natural/ and mri/ (layout: idm_imaging.datasets; from {origin})")
    return path.resolve()
