"""``idm-imaging train``: train a diffusion prior or fine-tune an IDM from a TOML run config."""

from __future__ import annotations

from pathlib import Path

from idm_imaging.cli._common import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a prior or fine-tune an IDM from a TOML config",
                       description=__doc__.split(": ", 1)[1] + " See idm_imaging.training.config for the keys; "
                       "multi-GPU: torchrun --nproc_per_node N -m idm_imaging.training CONFIG.")
    p.add_argument("config", metavar="CONFIG", help="TOML (or JSON) run config, e.g. configs/cs.toml")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/latest")
    p.set_defaults(func=run)


def run(args) -> int:
    if not Path(args.config).expanduser().is_file():
        raise UserError(f"CONFIG {args.config!r} is not a file")
    try:
        from idm_imaging.training import train  # heavy (data loading, DDP): imported only here
    except ImportError as exc:
        raise UserError(f"training is not available in this installation ({exc})") from None
    out = train(str(Path(args.config).expanduser()), resume=args.resume)
    print(f"training finished: {out}")
    return 0
