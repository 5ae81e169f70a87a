"""Doctest collection (pytest --doctest-modules idm_imaging): modules of an optional extra are passed over when
that extra is not installed."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("deepinv") else ["idm_imaging/interop/deepinv.py"]
