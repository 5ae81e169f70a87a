"""Benchmark: IDM against its peers (pseudo-inverse, TV-FISTA, PnP-BM3D, deepinv's solvers, DDNM, DPS, MONAI
VarNet) on the same images.

Entry points: :func:`run` (``python -m idm_imaging.benchmark [--quick]``); the baselines live in
:mod:`idm_imaging.benchmark.baselines`.

Example::

    >>> from idm_imaging.benchmark import run
    >>> results = run(quick=True, out_dir="benchmarks/results")  # doctest: +SKIP
"""

from idm_imaging.benchmark.baselines import (
    DDNM, DPS, DiffusionPrior, PnPBM3D, PseudoInverse, TVFista, VarNet, tv_prox, train_varnet,
)
from idm_imaging.benchmark.run import BenchmarkConfig, main, run

__all__ = ["run", "main", "BenchmarkConfig", "PseudoInverse", "TVFista", "tv_prox", "PnPBM3D", "DiffusionPrior",
           "DDNM", "DPS", "VarNet", "train_varnet"]
