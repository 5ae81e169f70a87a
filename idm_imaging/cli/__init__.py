"""The ``idm-imaging`` command line: one entry point, one sub-command per job.

Each sub-command is a module with ``add_parser(sub)`` and ``run(args) -> int``. User errors (bad arguments,
unreadable files: :class:`UserError`, ``ValueError``, ``OSError``, ``MemoryError``) print one line and exit with
code 2, without a traceback; anything else (``TypeError`` included) is a bug and keeps its traceback. SIGTERM is
handled like Ctrl-C (exit 130 after cleaning up partial outputs). The command never touches the network: the
Hugging Face libraries are put offline.

Example::

    >>> from idm_imaging.cli import main
    >>> main(["models", "list"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
import signal
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


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwinds through atomic_write's cleanup: no temporary file is left behind


def main(argv: list[str] | None = None) -> int:
    # a model folder's config.json may name a hub id: loading a local folder must never reach the network
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        try:
            signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread
            pass
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
    except (UserError, ValueError, OSError) as exc:
        msg = " ".join(str(exc).split())  # one line
        print(f"idm-imaging {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"idm-imaging {args.command}: error: out of memory (a smaller input, --slices or --batch-size "
              "may help)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"idm-imaging {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
