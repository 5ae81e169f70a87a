"""Draw every k-space mask kind at 4x and 8x on a 256 x 256 grid into docs/masks.png.

Run: ``python docs/make_mask_figure.py`` (writes to a temporary name, then renames).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from idm_imaging.operators.masks import MASK_KINDS, make_mask  # noqa: E402

SHAPE = (256, 256)
ACCELERATIONS = (4, 8)


def main(out: str | os.PathLike = Path(__file__).with_name("masks.png")) -> Path:
    out = Path(out)
    kinds = list(MASK_KINDS)
    fig, axes = plt.subplots(len(ACCELERATIONS), len(kinds), figsize=(2.2 * len(kinds), 3.0 * len(ACCELERATIONS)))
    for r, acc in enumerate(ACCELERATIONS):
        for c, kind in enumerate(kinds):
            m = make_mask(kind, SHAPE, acc, seed=0)
            ax = axes[r, c]
            ax.imshow(m.numpy(), cmap="gray", interpolation="nearest")
            ax.set_title(f"{kind} {acc}x\nachieved {m.numel() / m.sum().item():.2f}x", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"idm_imaging.operators.make_mask, {SHAPE[0]}x{SHAPE[1]}, seed 0, centre fraction 0.32/R", fontsize=10)
    fig.tight_layout()
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
