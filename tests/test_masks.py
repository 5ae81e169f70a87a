"""k-space masks: acceleration contract, centre, determinism, per-kind structure, bad input."""

import numpy as np
import pytest
import torch

from idm_imaging.operators import MASK_KINDS, make_mask
from idm_imaging.operators.masks import EquispacedMask, PoissonDiscMask, RandomMask

KINDS = ["random", "equispaced", "gaussian1d", "gaussian2d", "poisson", "radial", "spiral"]
SIZES = [(256, 256), (270, 256), (320, 320), (255, 257)]
ACCELERATIONS = [2, 3, 4, 5, 6, 8, 10]


def test_all_kinds_registered():
    assert sorted(MASK_KINDS) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_acceleration_within_5_percent(kind):
    for shape in SIZES:
        for acc in ACCELERATIONS:
            m = make_mask(kind, shape, acc, seed=1)
            assert m.shape == shape and m.dtype == torch.bool
            achieved = m.numel() / m.sum().item()
            assert abs(achieved - acc) <= 0.05 * acc, (kind, shape, acc, achieved)


@pytest.mark.parametrize("kind", KINDS)
def test_centre_fully_sampled_and_deterministic(kind):
    h, w = 270, 256
    m = make_mask(kind, (h, w), 4, seed=3).numpy()
    n = round(0.08 * w)  # default centre fraction 0.32 / 4
    pw = (w - n + 1) // 2
    if kind in ("random", "equispaced", "gaussian1d"):
        assert m[:, pw : pw + n].all()
    nh = round(0.08 * h)
    ph = (h - nh + 1) // 2
    assert m[ph : ph + nh, pw : pw + n].all()
    assert m[h // 2, w // 2]  # DC always sampled
    assert torch.equal(make_mask(kind, (h, w), 4, seed=3), make_mask(kind, (h, w), 4, seed=3))
    assert not torch.equal(make_mask(kind, (h, w), 4, seed=3), make_mask(kind, (h, w), 4, seed=4))


def test_default_center_fraction():
    assert RandomMask(4).center_fraction == pytest.approx(0.08)
    assert RandomMask(8).center_fraction == pytest.approx(0.04)
    m = make_mask("random", (64, 100), 4, center_fraction=0.2, seed=0).numpy()
    assert m[:, 40:60].all()  # round(0.2 * 100) = 20 central columns, pad (100 - 20 + 1) // 2 = 40


@pytest.mark.parametrize("kind", ["random", "equispaced", "gaussian1d"])
def test_line_masks_are_whole_columns(kind):
    m = make_mask(kind, (255, 257), 6, seed=0).numpy()
    assert (m == m[:1]).all()
    assert m[0].sum() == round(257 / 6)


def test_equispaced_spacing_is_even():
    m = EquispacedMask(8, seed=5)((64, 320))[0]
    centre = np.zeros(320, bool)
    n = round(0.04 * 320)
    centre[(320 - n + 1) // 2 :][:n] = True
    cols = np.flatnonzero(m & ~centre)
    free_rank = np.searchsorted(np.flatnonzero(~centre), cols)  # positions among the non-centre columns
    gaps = np.diff(free_rank)
    assert gaps.max() - gaps.min() <= 1


@pytest.mark.parametrize("kind", ["gaussian1d", "gaussian2d", "poisson", "radial"])
def test_variable_density_decreases_outwards(kind):
    h = w = 256
    m = make_mask(kind, (h, w), 6, seed=2).numpy()
    ky = (np.arange(h) - h // 2) / (h / 2)
    kx = (np.arange(w) - w // 2) / (w / 2)
    rho = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    if kind == "gaussian1d":
        rho = np.broadcast_to(np.abs(kx)[None, :], (h, w))
    inner = m[(rho > 0.1) & (rho < 0.3)].mean()
    outer = m[(rho > 0.6) & (rho < 0.9)].mean()
    assert inner > 1.5 * outer > 0


def test_poisson_hard_core_distance():
    """Outside the centre box no two samples of an 8x Poisson-disc mask touch (4-neighbours)."""
    m = PoissonDiscMask(8, seed=0)((128, 128))
    c = PoissonDiscMask(8, seed=0)._center(128, 128)
    free = m & ~c
    assert not (free[1:] & free[:-1]).any()
    assert not (free[:, 1:] & free[:, :-1]).any()


def test_radial_spokes_pass_through_centre_symmetrically():
    m = make_mask("radial", (128, 128), 8, center_fraction=0.0, seed=0).numpy()
    # each spoke is a line through DC: point symmetry about (64, 64) up to rasterisation
    sym = m[1:, 1:][::-1, ::-1]
    assert (m[1:, 1:] & sym).sum() > 0.9 * m[1:, 1:].sum()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="cartesian"), "kind must be one of"),
        (dict(acceleration=1.0), "acceleration"),
        (dict(acceleration=0.5), "acceleration"),
        (dict(acceleration=float("nan")), "acceleration"),
        (dict(shape=(64,)), "shape"),
        (dict(shape=(64, 64, 2)), "shape"),
        (dict(shape=(2, 64)), "shape"),
        (dict(center_fraction=0.5), "center_fraction"),
        (dict(center_fraction=-0.1), "center_fraction"),
        (dict(shape=(6, 6), acceleration=9.0), "shape"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(kind="random", shape=(64, 64), acceleration=4.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as info:
        make_mask(**args)
    if kwargs.get("kind") == "cartesian":
        for k in KINDS:
            assert k in str(info.value)


def test_bad_types():
    with pytest.raises(TypeError, match="acceleration"):
        make_mask("random", (64, 64), "4")
    with pytest.raises(TypeError, match="seed"):
        make_mask("random", (64, 64), 4, seed=1.5)
