"""Training: datasets, DDPM prior pre-training (stage a), IDM fine-tuning (stage b), DDP, exact-resume checkpoints.

One command trains a model from a TOML config::

    python -m idm_imaging.training configs/prior-gray.toml            # or: torchrun --nproc_per_node N -m ...
    python -m idm_imaging.training configs/prior-gray.toml --resume

    >>> from idm_imaging.training import train
    >>> out_dir = train("configs/tiny-prior.toml")  # doctest: +SKIP
"""

from idm_imaging.training.config import RunConfig, load_config
from idm_imaging.training.data import PatchDataset
from idm_imaging.training.loop import train

__all__ = ["train", "load_config", "RunConfig", "PatchDataset", "main"]


def main(argv=None) -> int:
    """``python -m idm_imaging.training CONFIG [--resume]``; prints the output folder."""
    import argparse

    p = argparse.ArgumentParser(prog="idm-imaging train", description="Train a diffusion prior or fine-tune an IDM.")
    p.add_argument("config", help="TOML run config (see idm_imaging.training.config)")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/latest")
    args = p.parse_args(argv)
    out = train(args.config, resume=args.resume)
    print(out)
    return 0
