"""Offline sample data: the Shepp-Logan phantom and a synthetic brain-like MRI slice / stack.

Nothing is downloaded: the phantom ships with scikit-image, the brain slice is drawn here from ellipses with a
folded cortex (skimage's ``data.brain()`` needs a network download, so it is not used).
"""

from __future__ import annotations

import numpy as np

__all__ = ["shepp_logan", "synthetic_brain", "synthetic_brain_stack", "make_phantom", "make_brain"]


def make_phantom(size: int = 256) -> np.ndarray:
    """Shepp-Logan phantom, float32 (size, size) in [0, 1]."""
    from skimage import data, transform

    img = data.shepp_logan_phantom().astype(np.float32)
    return np.clip(transform.resize(img, (size, size), anti_aliasing=True), 0, 1).astype(np.float32)


def make_brain(size: int = 256, z: float = 0.0) -> np.ndarray:
    """Synthetic T2-like axial brain slice, float32 (size, size) in [0, 1].

    ``z`` in [-1, 1] moves the slice from the bottom to the top of the head (the head narrows and the
    ventricles shrink away from the centre), so stacks of slices look like a volume.
    """
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j].astype(np.float32)
    shrink = float(np.sqrt(max(1.0 - 0.6 * z * z, 0.05)))
    r = np.hypot(xx / 0.78, yy / 0.92) / shrink
    theta = np.arctan2(yy, xx)
    img = np.zeros((size, size), np.float32)
    img[(r < 1.0) & (r > 0.93)] = 0.85  # scalp fat: bright
    img[(r <= 0.93) & (r > 0.88)] = 0.05  # skull: dark
    # cortex with gyri: grey matter outside a folded white-matter boundary
    fold = 0.05 * np.sin(14 * theta + 3 * z) + 0.02 * np.sin(31 * theta)
    brain = r <= 0.87
    img[brain] = 0.55  # grey matter
    img[brain & (r < 0.72 + fold)] = 0.38  # white matter
    img[brain & (r > 0.84 + 0.5 * fold)] = 0.95  # CSF in sulci: bright on T2
    vent = (np.hypot((np.abs(xx) - 0.1) / 0.07, (yy + 0.05) / 0.28) < 1.0 - 1.5 * abs(z))
    img[brain & vent] = 1.0
    img[brain & (np.hypot(xx / 0.04, (yy - 0.35) / 0.06) < 1)] = 0.7  # a small lesion
    rng = np.random.default_rng(0)
    texture = rng.normal(0, 1, (size, size)).astype(np.float32)
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(img, 0.8) + 0.02 * gaussian_filter(texture, 2.0) * (img > 0.1)
    return np.clip(img, 0, 1).astype(np.float32)


def shepp_logan():
    """napari sample: the Shepp-Logan phantom, 256x256."""
    return [(make_phantom(256), {"name": "Shepp-Logan phantom", "colormap": "gray"}, "image")]


def synthetic_brain():
    """napari sample: one synthetic brain MRI slice, 256x256, 1 mm pixels."""
    return [(make_brain(256), {"name": "synthetic brain slice", "colormap": "gray", "scale": (1.0, 1.0)}, "image")]


def synthetic_brain_stack(depth: int = 32):
    """napari sample: a synthetic brain stack (depth, 256, 256), 4 mm slices of 1 mm pixels."""
    stack = np.stack([make_brain(256, z) for z in np.linspace(-0.8, 0.8, depth)])
    return [(stack, {"name": "synthetic brain stack", "colormap": "gray", "scale": (4.0, 1.0, 1.0)}, "image")]
