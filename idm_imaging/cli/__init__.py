"""The ``idm-imaging`` command line: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import sys

from idm_imaging.cli import demo


class UserError(Exception):
    """A bad argument or file: printed as one line, exit code 2, no traceback."""


COMMANDS = {"demo": demo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idm-imaging",
        description="Reconstruct images from compressed-sensing measurements with Invertible Diffusion Models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"idm-imaging {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
