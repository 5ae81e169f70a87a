"""``idm-imaging benchmark``: run the benchmark suite (``idm_imaging.benchmark``); its options (``--quick``, ``--out``...) are passed through (``idm-imaging benchmark -- --help`` lists them)."""

from __future__ import annotations

import argparse
import importlib

from idm_imaging.cli._common import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="run the benchmarks (idm_imaging.benchmark)",
                       description=__doc__.split(": ", 1)[1],
                       epilog="example: idm-imaging benchmark -- --help   (the benchmark's own options)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments for idm_imaging.benchmark")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        module = importlib.import_module("idm_imaging.benchmark")
    except ModuleNotFoundError as exc:
        if exc.name not in ("idm_imaging.benchmark",):
            raise UserError(f"the benchmark needs a missing package: {exc.name}") from None
        raise UserError("the benchmark suite (idm_imaging.benchmark) is not part of this installation") from None
    entry = getattr(module, "main", None)
    if not callable(entry):
        raise UserError("idm_imaging.benchmark has no main(argv) entry point")
    argv = [a for a in args.args if a != "--"]
    return int(entry(argv) or 0)
