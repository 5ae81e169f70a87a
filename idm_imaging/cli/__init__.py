"""The ``idm-imaging`` command line: one entry point, one sub-command per job.

Each sub-command is a module with ``add_parser(sub)`` and ``run(args) -> int``. User errors (bad arguments,
unreadable files: :class:`UserError`, ``ValueError``, ``TypeError``, ``FileNotFoundError``) print one line and exit
with code 2, without a traceback.

Example::

    >>> from idm_imaging.cli import main
    >>> main(["models", "list"])  # doctest: +SKIP
"""

from __future__ import annotations

import sys

from idm_imaging.cli import benchmark, demo, models, reconstruct, simulate, train
from idm_imaging.cli._common import ArgumentParser, UserError

__all__ = ["main", "build_parser", "UserError", "COMMANDS"]

COMMANDS = {"demo": demo, "reconstruct": reconstruct, "simulate": simulate, "train": train,
            "benchmark": benchmark, "models": models}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="idm-imaging",
        description="Reconstruct images from compressed-sensing measurements with Invertible Diffusion Models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["benchmark"] and argv[1:2] not in (["-h"], ["--help"]):
        # the benchmark parses its own options (--quick, --out ...): pass them through verbatim
        args = parser.parse_args(["benchmark"])
        args.args = argv[1:]
    else:
        args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, TypeError, FileNotFoundError) as exc:
        msg = " ".join(str(exc).split())  # one line
        print(f"idm-imaging {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"idm-imaging {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
