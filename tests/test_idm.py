"""IDM: inversion of every coupling, reversible == plain gradients, autocast, I/O, projection, bad input."""

import json

import pytest
import torch
from diffusers import UNet2DConditionModel, UNet2DModel

from idm_imaging.models import IDM, ReversibleSequence, tiny_backbone_config
from idm_imaging.operators import BlockCS, SingleCoilFourier, make_mask
from idm_imaging.solvers import tv_fista

BACKBONES = ["UNet2DConditionModel", "UNet2DModel"]


def _problem(task, size=32, batch=2, dtype=torch.float64, seed=0):
    task = task.split("-")[0]
    g = torch.Generator().manual_seed(seed)
    if task == "cs":
        op = BlockCS(0.25, block_size=16, seed=seed)
        x = torch.rand(batch, 1, size, size, generator=g, dtype=dtype)
    else:
        op = SingleCoilFourier(make_mask("random", (size, size), 4, seed=seed))
        cd = torch.complex128 if dtype == torch.float64 else torch.complex64
        x = torch.complex(torch.rand(batch, 1, size, size, generator=g, dtype=dtype),
                          0.3 * torch.rand(batch, 1, size, size, generator=g, dtype=dtype)).to(cd)
    return op, x, op.A(x)


def _model(backbone, task, T=2, dtype=torch.float64, jitter=0.02):
    """``task``: "cs", "mri" (re/im as two channels) or "mri-batch" (re/im as two batch images)."""
    torch.manual_seed(0)
    extra = {"complex_as_batch": True} if task == "mri-batch" else {}
    m = IDM(backbone_type=backbone, T=T, task=task.split("-")[0], **extra).to(dtype)
    with torch.no_grad():  # move off the zero-initialised injectors / m = 0 so every path carries gradient
        for p in m.parameters():
            p.add_(jitter * torch.randn_like(p))
    return m


@pytest.mark.parametrize("backbone,task", [(b, "cs") for b in BACKBONES] + [("UNet2DConditionModel", "mri-batch")])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 1e-3)])
def test_every_coupling_and_sampler_invert(backbone, task, dtype, tol):
    model = _model(backbone, task, dtype=dtype)
    op, _, y = _problem(task, dtype=dtype)
    records = []

    def hook(mod, args, out):
        records.append((mod, args, out))

    seqs = [m for m in model.modules() if isinstance(m, ReversibleSequence)]
    assert len(seqs) >= 5
    handles = [s.register_forward_hook(hook) for s in seqs]
    with torch.no_grad():
        model(y, op)
    for h in handles:
        h.remove()
    assert {id(r[0]) for r in records} == {id(s) for s in seqs}
    with torch.no_grad():
        for mod, (x1, x2, sides, ctx), (y1, y2) in records:
            r1, r2 = mod.inverse(y1, y2, sides, ctx)
            if dtype == torch.float64:
                assert (r1 - x1).abs().max() < tol and (r2 - x2).abs().max() < tol
            else:
                assert (r2 - x2).norm() <= tol * x2.norm() and (r1 - x1).norm() <= tol * x1.norm()


def _all_grads(model, y, op, reversible):
    model.reversible = reversible
    model.zero_grad()
    out = model(y, op)
    target = torch.view_as_real(out) if out.is_complex() else out
    (target * torch.linspace(-1, 1, target.numel(), dtype=target.dtype).view_as(target)).sum().backward()
    return {k: p.grad for k, p in model.named_parameters()}


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("task", ["cs", "mri", "mri-batch"])
def test_reversible_gradients_equal_plain(backbone, task):
    model = _model(backbone, task)
    op, _, y = _problem(task)
    gp = _all_grads(model, y, op, False)
    gr = _all_grads(model, y, op, True)
    total = torch.sqrt(sum(g.square().sum() for g in gp.values() if g is not None))
    n_checked = 0
    for k, a in gp.items():
        b = gr[k]
        assert (a is None) == (b is None), k
        if a is None:
            continue
        # 1e-4 relative; the absolute floor only matters for gradients that are exactly 0 in theory
        # (e.g. attention key biases, invariant under softmax), where both sides are rounding noise.
        assert (a - b).norm() <= 1e-4 * a.norm() + 1e-12 * total, k
        n_checked += 1
    assert n_checked == sum(1 for _ in model.parameters())


def test_autocast_bf16_reversible_close_to_fp32():
    model = _model("UNet2DConditionModel", "cs", dtype=torch.float32)
    op, _, y = _problem("cs", dtype=torch.float32)
    grads = {}
    for mode in ("fp32", "bf16"):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            out = model(y, op)
        out.float().square().mean().backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert torch.isfinite(grads[mode]).all()
    cos = torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0)
    assert cos > 0.95, cos


def test_save_load_round_trip(tmp_path):
    model = _model("UNet2DConditionModel", "cs", dtype=torch.float32)
    op, _, y = _problem("cs", dtype=torch.float32)
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors"]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["T"] == 2 and cfg["task"] == "cs" and cfg["backbone_config"]["block_out_channels"] == [16, 32, 32, 32]
    loaded = IDM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(model(y, op), loaded(y, op))


def test_mismatched_checkpoint_lists_keys(tmp_path):
    model = IDM(T=2)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["T"] = 3  # config now expects a third set of injector convs the weights do not have
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"missing keys: \[.*to_image\.2\.weight"):
        IDM.from_pretrained(tmp_path)


def test_config_with_former_image_channels_loads_silently(tmp_path):
    """Configs saved before ``image_channels`` was dropped carry ``"image_channels": 1``: loaded without a
    warning or a diffusers log line, and not written back; another value is refused."""
    import logging
    import warnings

    model = IDM(T=1)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert "image_channels" not in cfg
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "image_channels": 1}))
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = IDM.from_pretrained(tmp_path)
    finally:
        logger.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]
    assert "image_channels" not in loaded.config
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "image_channels": 2}))
    with pytest.raises(ValueError, match="image_channels"):
        IDM.from_pretrained(tmp_path)


def test_sampling_steps_share_the_backbone():
    """Each step's F is a module holding the model by reference: no per-step state-dict keys, and the
    reversible backward differentiates it with respect to exactly the parameters it reads."""
    import copy

    model = IDM(backbone_type="UNet2DModel", T=2)
    assert [k for k in model.state_dict() if k.startswith("sampler.")] == ["sampler.couplings.0.v",
                                                                           "sampler.couplings.1.v"]
    names = {id(p): k for k, p in model.named_parameters()}
    for k, c in enumerate(model.sampler.couplings):
        used = {names[id(p)] for p in c.body_params()}
        expected = {n for n in names.values() if n.startswith(("unet.", "adapter.")) or n == "alpha_logits"}
        other = 1 - k
        expected = {n for n in expected if f".to_image.{other}." not in n and f".to_features.{other}." not in n}
        assert used == expected
        assert any(f".to_image.{k}." in n for n in used)
    twin = copy.deepcopy(model)
    assert all(c.body.model is twin for c in twin.sampler.couplings)


def test_pickle_checkpoints_refused_and_names_resolved(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(IDM(T=1).config)))
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="refused"):
        IDM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="available names"):
        IDM.from_pretrained("cs-0.99-does-not-exist")


@pytest.mark.parametrize("layout", ["flat", "unet_subfolder"])
def test_from_diffusers_folder(tmp_path, layout):
    torch.manual_seed(3)
    unet = UNet2DConditionModel(**tiny_backbone_config("UNet2DConditionModel"))
    folder = tmp_path / "unet" if layout == "unet_subfolder" else tmp_path
    unet.save_pretrained(folder)
    model = IDM.from_diffusers(tmp_path, T=2, task="cs")
    src = unet.state_dict()
    own = dict(model.unet.named_parameters())
    assert len(model.unet.diffusers_key_map) > 50
    for mine, theirs in model.unet.diffusers_key_map.items():
        assert torch.equal(own[mine], src[theirs]), mine
    # and directly from the object
    model2 = IDM.from_diffusers(unet, T=2)
    op, _, y = _problem("cs", dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(model(y, op), model2(y, op))


@pytest.mark.parametrize("layout", ["flat", "unet_subfolder"])
def test_load_unet_reads_a_local_folder_and_its_schedule_without_the_network(tmp_path, layout, monkeypatch):
    import socket

    from diffusers import DDPMScheduler

    from idm_imaging.models.idm import load_unet, read_schedule

    unet = UNet2DModel(**tiny_backbone_config("UNet2DModel")).half()
    unet.save_pretrained(tmp_path / "unet" if layout == "unet_subfolder" else tmp_path)
    DDPMScheduler(beta_end=0.015, beta_schedule="scaled_linear").save_pretrained(tmp_path / "scheduler")

    def no_network(*args):
        raise OSError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    got, schedule = load_unet(tmp_path)
    assert type(got) is UNet2DModel and got.dtype == torch.float32
    assert all(torch.equal(v.float(), got.state_dict()[k]) for k, v in unet.state_dict().items())
    assert schedule == read_schedule(tmp_path / "scheduler")
    assert (schedule["num_train_timesteps"], schedule["beta_end"], schedule["beta_schedule"]) == (
        1000, 0.015, "scaled_linear")
    assert load_unet(tmp_path, {"num_train_timesteps": 10})[1] == {"num_train_timesteps": 10}
    with pytest.raises(ValueError, match="^folder: no diffusers UNet config"):
        load_unet(tmp_path / "scheduler", name="folder")


def test_from_diffusers_unet2dmodel_weights_used():
    torch.manual_seed(4)
    unet = UNet2DModel(**tiny_backbone_config("UNet2DModel"))
    a, b = IDM.from_diffusers(unet, T=1), IDM(backbone_type="UNet2DModel", T=1)
    op, _, y = _problem("cs", dtype=torch.float32)
    with torch.no_grad():
        assert not torch.allclose(a(y, op), b(y, op))
        b.unet.load_diffusers_state_dict(unet.state_dict())
        assert torch.equal(a(y, op), b(y, op))


@pytest.mark.slow  # ~12-20 s on 2 shared cores (115M random weights)
def test_sd15_config_parameter_count():
    cfg = dict(block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, cross_attention_dim=768,
               attention_head_dim=8, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
               up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, in_channels=4, out_channels=4,
               sample_size=64)
    model = IDM(backbone_config=cfg, T=3)
    backbone = sum(p.numel() for k, p in model.named_parameters() if ".injector." not in k)
    assert 110e6 < backbone < 120e6, backbone
    assert model.unet.downsampling == 4 and model.adapter.r == 2


@pytest.mark.parametrize("task", ["cs", "mri", "mri-batch"])
def test_projection_makes_output_consistent(task):
    model = _model("UNet2DConditionModel", task)
    op, _, y = _problem(task)
    res, last = {}, {}
    with torch.no_grad():
        for proj in (True, False):
            model.projection = proj
            x_hat = model(y, op)
            res[proj] = ((op.A(x_hat) - y).norm() / y.norm()).item()
            # F of the last step returns the projected x0 (a_0 = 1): consistent to rounding
            x, ctx = model._prepare(y, op)
            f_last = model._to_complex(model.sampler.couplings[model.T - 1].body(x, ctx))
            last[proj] = ((op.A(f_last) - y).norm() / y.norm()).item()
    assert last[True] < 1e-10 and last[False] > 1e-2, last
    assert res[True] < 0.6 * res[False], res


def test_measured_mean_shift_recovers_the_image_mean():
    from idm_imaging.models.idm import measured_mean_shift

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    x = (0.3 + 0.4 * torch.sin(6 * xx) * yy + 0.05 * torch.rand(96, 96, generator=g)).double()[None, None]
    # permuted block CS: a consistent output whose mean is 0.1 off (the offset in the null space) is put back
    # to within the least-squares estimate's error, and stays consistent
    op = BlockCS(0.1, block_size=32, seed=2, img_size=(96, 96))
    ones = torch.ones_like(x)
    off = x + 0.1 * (ones - op.A_dagger(op.A(ones)))
    fixed = measured_mean_shift(off, op.A(x), op)
    assert (fixed - x).abs().max() < 6e-3 < (off - x).abs().max()
    assert torch.allclose(op.A(fixed), op.A(x), atol=1e-10)
    # MRI: the k-space centre measures the mean exactly; nothing to move (and nothing to move along)
    mri = SingleCoilFourier(make_mask("random", (96, 96), 4, seed=1))
    guess = x.to(torch.complex128) + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert torch.allclose(measured_mean_shift(guess, mri.A(x.to(torch.complex128)), mri), guess, atol=1e-12)
    # the mean not measured at all (k-space centre row removed): unchanged
    mask = make_mask("random", (96, 96), 4, seed=1)
    mask[48] = False
    hole = SingleCoilFourier(mask)
    assert torch.equal(measured_mean_shift(guess, hole.A(guess), hole), guess)


def test_model_output_mean_is_the_measured_mean():
    model = _model("UNet2DConditionModel", "cs")
    op, x, y = _problem("cs")
    op = BlockCS(0.25, block_size=16, seed=1)
    y = op.A(x)
    with torch.no_grad():
        on = model(y, op)
        model.register_to_config(measured_mean=False)
        off = model(y, op)
    c = op.A(torch.ones_like(x[:1]))
    mu = (c * y).flatten(1).sum(1) / (c * c).sum()
    assert torch.allclose(on.mean(dim=(1, 2, 3)), mu) and not torch.allclose(on, off)
    assert torch.allclose(op.A(on), op.A(off), atol=1e-10)  # the measured part is untouched
    assert IDM().config.measured_mean  # on by default, also for models saved before it existed


def test_tiny_reconstruction_pads_and_crops():
    # Speed is measured by benchmarks/cpu_bench.py, not asserted here.
    torch.manual_seed(0)
    model = IDM(T=3).eval()
    model.register_to_config(measured_mean=False)
    op = BlockCS(0.1, block_size=32, img_size=(62, 58))
    x = torch.rand(1, 1, 62, 58)
    with torch.no_grad():
        x_hat = model(op.A(x), op)
        padded = model(op.A(x), op.without_crop())  # the zero-padded 64x64 grid the model reconstructs
    assert x_hat.shape == (1, 1, 62, 58) and x_hat.dtype == torch.float32
    assert torch.equal(x_hat, padded[..., :62, :58])
    op64 = BlockCS(0.1, block_size=32)
    x2 = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        both, second = model(op64.A(x2), op64), model(op64.A(x2[1:]), op64)
    assert both.shape == (2, 1, 64, 64) and torch.allclose(both[1:], second, atol=1e-5)  # images independent


def test_block_cs_off_block_size_reconstructs_the_padded_grid():
    # 30x27 is no multiple of the block (16): the cropped adjoint is no projection, so IDM works on the padded
    # 32x32 grid, where A_dagger is exact, and crops; same numbers as calling it with the uncropped operator.
    model = _model("UNet2DConditionModel", "cs")
    model.register_to_config(measured_mean=False)  # its mean is over the 30x27 image vs the padded grid's
    op = BlockCS(0.25, block_size=16, seed=3, img_size=(30, 27))
    x = torch.rand(2, 1, 30, 27, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = op.A(x)
    full = op.without_crop()
    assert full.img_size is None and (full.ratio, full.seed, full.permute) == (op.ratio, op.seed, op.permute)
    assert torch.allclose(full.A(torch.nn.functional.pad(x, (0, 5, 0, 2))), y)
    with torch.no_grad():
        cropped, padded = model(y, op), model(y, full)
    assert cropped.shape == (2, 1, 30, 27) and padded.shape == (2, 1, 32, 32)
    assert torch.allclose(cropped, padded[..., :30, :27], atol=1e-12)


def test_warns_on_a_block_cs_ratio_it_was_not_trained_for():
    # a CS model recorded for ratio 0.25 / block 16 warns on ratio 0.5 or block 32, not on its own setting
    # (any seed when trained with fresh matrices) nor when it records no operator (a model straight from a prior)
    import warnings

    model = _model("UNet2DConditionModel", "cs")
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    fresh = {"type": "BlockCS", "ratio": 0.25, "block_size": 16, "seed": 0, "permute": True, "fresh_per_step": True}
    model.register_to_config(operator_config=fresh)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        for op in (BlockCS(0.25, block_size=16, seed=7), BlockCS(0.2499, block_size=16, seed=0)):
            model(op.A(x), op)
    for op in (BlockCS(0.5, block_size=16), BlockCS(0.25, block_size=32)):
        with torch.no_grad(), pytest.warns(UserWarning, match="trained for block CS"):
            model(op.A(x), op)
    # trained on one fixed matrix: another seed or permutation warns too, its own does not
    model.register_to_config(operator_config={**fresh, "fresh_per_step": False})
    for op in (BlockCS(0.25, block_size=16, seed=7), BlockCS(0.25, block_size=16, seed=0, permute=False)):
        with torch.no_grad(), pytest.warns(UserWarning, match="one fixed block-CS matrix"):
            model(op.A(x), op)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        model(BlockCS(0.25, block_size=16, seed=0).A(x), BlockCS(0.25, block_size=16, seed=0))
    model.register_to_config(operator_config=None)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        model(BlockCS(0.5, block_size=16).A(x), BlockCS(0.5, block_size=16))


def test_complex_as_batch_feeds_the_grayscale_prior_per_image():
    # re/im go through the UNet as grayscale images at the prior's own pixel unshuffle (r = 2 for 4 channels),
    # and folding them into the batch must not mix images: each output depends on its own measurement only.
    model = _model("UNet2DConditionModel", "mri-batch")
    assert model.adapter.r == 2 and model.adapter.conv_in is None
    assert _model("UNet2DConditionModel", "mri").adapter.r == 1
    op, _, y = _problem("mri", batch=3)
    with torch.no_grad():
        whole = model(y, op)
        for b in range(3):
            assert (model(y[b:b + 1], op) - whole[b:b + 1]).abs().max() < 1e-10
    with pytest.raises(ValueError, match="complex_as_batch"):
        IDM(T=1, task="cs", complex_as_batch=True)


def test_mri_returns_complex():
    model = IDM(backbone_type="UNet2DModel", T=1, task="mri")
    op, _, y = _problem("mri", dtype=torch.float32)
    with torch.no_grad():
        out = model(y, op)
    assert out.is_complex() and out.shape == (2, 1, 32, 32)
    # an untrained model (zero-initialised injectors) stays near the zero-filled image, imaginary part included,
    # and keeps the measured k-space samples
    zf = op.A_dagger(y)
    assert zf.imag.abs().max() > 0.1 and torch.allclose(out, zf, atol=0.02)
    assert (op.A(out) - y).abs().max() < 1e-3 * y.abs().max()


def test_bad_input():
    model = IDM(T=1)
    op, x, y = _problem("cs", dtype=torch.float32)
    bad = y.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="y"):
        model(bad, op)
    with pytest.raises(TypeError, match="y"):
        model(y.numpy(), op)
    with pytest.raises(TypeError, match="operator"):
        model(y, object())
    mri_op, _, mri_y = _problem("mri", dtype=torch.float32)
    with pytest.raises(ValueError, match="operator"):
        model(mri_y, mri_op)
    with pytest.raises(ValueError, match="y"):  # 3-channel image measurements for a 1-channel model
        model(op.A(torch.rand(1, 3, 32, 32)), op)
    with pytest.raises(ValueError, match="operator"):  # operator built for another image size
        model(y, BlockCS(0.25, block_size=16, img_size=(48, 48)))
    with pytest.raises(ValueError, match="operator"):  # k-space of another size than the mask
        IDM(T=1, task="mri")(torch.zeros(1, 1, 16, 16, dtype=torch.complex64) + 1, mri_op)
    for T in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="T"):
            IDM(T=T)
    with pytest.raises(ValueError, match="UNet2DModel"):
        IDM(backbone_type="UNet3DConditionModel")
    with pytest.raises(ValueError, match="task"):
        IDM(task="ct")


def _zero_head_idm(**kw):
    """A tiny convolution-only IDM whose noise head is zero: the sampler then returns (about) its start."""
    from idm_imaging.models import IDM

    cfg = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=[8, 16],
               norm_num_groups=4, add_attention=False, down_block_types=["DownBlock2D"] * 2,
               up_block_types=["UpBlock2D"] * 2)
    model = IDM(backbone_type="UNet2DModel", backbone_config=cfg, **{"T": 3, "measured_mean": False, **kw}).eval()
    model.unet.zero_output()
    return model


def _cartoon(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.full((1, 1, n, n), 0.3)
    for _ in range(6):
        r0, c0 = torch.randint(0, n - 16, (2,), generator=g).tolist()
        x[..., r0:r0 + 16, c0:c0 + 20] = torch.rand((), generator=g)
    return x


@pytest.mark.parametrize("task", ["cs", "mri"])
def test_tv_start_begins_from_the_tv_estimate(task):
    """start="tv": the sampler starts from TV-FISTA (from the measured mean) at low noise levels, so an untrained
    network (zero noise head) returns the TV estimate, far above the pseudo-inverse start; outputs stay
    consistent with y where the last step projects."""
    from idm_imaging.metrics import psnr
    from idm_imaging.operators import BlockCS, SingleCoilFourier, make_mask

    x = (_cartoon() + 0.05 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    if task == "cs":
        op, xin = BlockCS(0.3, block_size=16, seed=3), x
    else:
        op, xin = SingleCoilFourier(make_mask("random", (64, 64), 4, seed=1)), x.to(torch.complex64)
    y = op.A(xin)
    tv_model = _zero_head_idm(task=task, start="tv", start_iterations=60, complex_as_batch=task == "mri")
    pinv_model = _zero_head_idm(task=task, complex_as_batch=task == "mri")
    with torch.no_grad():
        out_tv, out_pinv = tv_model(y, op).abs(), pinv_model(y, op).abs()
    tv = tv_fista(y, op, 0.001, 60, 5, mean_start=True).abs()
    score = lambda z: psnr(z[0, 0].numpy(), x[0, 0].numpy(), data_range=1.0)  # noqa: E731
    assert abs(score(out_tv) - score(tv)) < 1.0, (score(out_tv), score(tv))
    assert score(out_tv) > score(out_pinv) + 3, (score(out_tv), score(out_pinv))
    assert tv_model.alphas().min() > 0.85  # low noise levels: the start is already an estimate
    with pytest.raises(ValueError, match="start"):
        _zero_head_idm(start="bm3d")
    with pytest.raises(ValueError, match="start_iterations"):
        _zero_head_idm(start="tv", start_iterations=10**6)
    with pytest.raises(ValueError, match="start_inner"):
        _zero_head_idm(start="tv", start_inner=0)
    # start_inner sets the Chambolle iterations of each prox: the untrained model follows its own start
    fast = _zero_head_idm(task=task, start="tv", start_iterations=30, start_inner=1, complex_as_batch=task == "mri")
    with torch.no_grad():
        out_fast = fast(y, op).abs()
    tv_fast = tv_fista(y, op, 0.001, 30, 1, mean_start=True).abs()
    assert abs(score(out_fast) - score(tv_fast)) < abs(score(out_fast) - score(tv)), (score(out_fast), score(tv_fast), score(tv))


def test_residual_prediction_moves_the_clean_estimate_by_the_output():
    """prediction="residual": the UNet output r enters as x0 = x / sqrt(a_t) + r (one step, no projection:
    y1 = (1 - v) (A^+ y + r) + v s x_T exactly); "epsilon" scales the same output by sqrt(1 - a_t) / sqrt(a_t)."""
    from idm_imaging.operators import BlockCS

    op = BlockCS(0.3, block_size=16, seed=3)
    x = _cartoon()
    y = op.A(x)
    outs = {}
    for prediction in ("residual", "epsilon"):
        model = _zero_head_idm(prediction=prediction, T=1)
        model.projection = False
        r = 0.05 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
        model.adapter.from_unet = lambda h, r=r: r.expand(h.shape[0], -1, -1, -1)
        with torch.no_grad():
            outs[prediction] = model(y, op)
        a = model.alphas()[0]
        v, s = model.sampler.couplings[0].v.detach(), model.input_scale.detach()
        x_t = a.sqrt() * op.A_dagger(y)
        x0 = op.A_dagger(y) + r if prediction == "residual" else (x_t - (1 - a).sqrt() * r) / a.sqrt()
        torch.testing.assert_close(outs[prediction], (1 - v) * x0 + v * s * x_t, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prediction"):
        _zero_head_idm(prediction="sample")


def test_tv_fista_mean_start_converges_faster():
    """At 10 % block CS A^+ y misses most of the image mean; starting FISTA from the measured mean gets there in
    far fewer iterations (the warm start IDM's "tv" start uses)."""
    from idm_imaging.metrics import psnr
    from idm_imaging.operators import BlockCS

    x = _cartoon(seed=1)
    op = BlockCS(0.1, block_size=16, seed=0)
    y = op.A(x)
    score = lambda z: psnr(z[0, 0].numpy(), x[0, 0].numpy(), data_range=1.0)  # noqa: E731
    plain, warm = score(tv_fista(y, op, 0.001, 30, 5)), score(tv_fista(y, op, 0.001, 30, 5, mean_start=True))
    assert warm > plain + 2, (plain, warm)


@pytest.mark.parametrize("task", ["cs", "mri"])
def test_ensemble_is_the_mean_over_flipped_and_rotated_problems(task):
    """ensemble=n: the mean of g^{-1} IDM(y, A g^{-1}) over the first n dihedral elements, each from its own start;
    training mode runs one; a non-square image comes back in its own shape after the transposing elements."""
    from idm_imaging.operators import DIHEDRAL, Dihedral

    model = _model("UNet2DConditionModel", task).eval()
    model.register_to_config(measured_mean=False, start="tv", start_iterations=3)
    op, x, y = _problem(task)
    with torch.no_grad():
        one = model(y, op)
        parts = [one] + [Dihedral(op, f, r).inverse(model(y, Dihedral(op, f, r))) for f, r in DIHEDRAL[1:4]]
        model.register_to_config(ensemble=4)
        four = model(y, op)
        model.train()
        trained_one = model(y, op)
    assert not torch.allclose(parts[0], parts[1])  # the tiny model is not equivariant: the mean does something
    torch.testing.assert_close(four, sum(parts) / 4, rtol=0, atol=1e-12)
    torch.testing.assert_close(trained_one, one, rtol=0, atol=1e-12)
    if task == "cs":  # 8 elements on a 32x48 image: rotations by a quarter turn reconstruct 48x32
        model.eval().register_to_config(ensemble=8)
        op2 = BlockCS(0.25, block_size=16, seed=0, img_size=(32, 48))
        with torch.no_grad():
            out = model(op2.A(torch.rand(1, 1, 32, 48, dtype=torch.float64)), op2)
        assert out.shape == (1, 1, 32, 48) and torch.isfinite(out).all()


@pytest.mark.parametrize("task", ["cs", "mri"])
def test_tv_fista_starts_from_x0(task):
    """x0 replaces the start: A^+ y as x0 is the plain run, its measured-mean shift the mean_start run; another x0
    changes the result."""
    from idm_imaging.solvers import measured_mean_shift

    op, x, y = _problem(task)
    x_pinv = op.A_dagger(y)
    plain = tv_fista(y, op, 0.001, 5, 2)
    torch.testing.assert_close(tv_fista(y, op, 0.001, 5, 2, x0=x_pinv), plain, rtol=0, atol=0)
    torch.testing.assert_close(tv_fista(y, op, 0.001, 5, 2, mean_start=True, x0=measured_mean_shift(x_pinv, y, op)),
                               tv_fista(y, op, 0.001, 5, 2, mean_start=True), rtol=0, atol=0)
    assert not torch.allclose(tv_fista(y, op, 0.001, 5, 2, x0=x), plain)


@pytest.mark.parametrize("task", ["cs", "mri"])
def test_ensemble_warm_starts_run_fewer_tv_iterations(task):
    """ensemble_start_iterations=k: the second reconstruction's TV start is k iterations from the first one's TV
    estimate in its own frame: start_iterations - k fewer operator calls, and no measured-mean shift."""
    from idm_imaging.operators import DIHEDRAL, Dihedral

    op, x, y = _problem(task)

    class Counted(type(op)):
        calls = 0

        def A(self, x):
            type(self).calls += 1
            return super().A(x)

    op.__class__ = Counted
    model = _model("UNet2DConditionModel", task).eval()
    model.register_to_config(measured_mean=False, start="tv", start_iterations=12, ensemble=2)
    calls = {}
    with torch.no_grad():
        for k in (None, 3):
            model.register_to_config(ensemble_start_iterations=k)
            Counted.calls = 0
            out = model(y, op)
            calls[k] = Counted.calls
        first, ctx = model._prepare(y, op)
        g = Dihedral(ctx.operator, *DIHEDRAL[1])
        tv1 = model._to_complex(first / model.alphas()[-1].sqrt())
        start2 = tv_fista(y, g, model.config.start_lam, 3, model.config.start_inner, x0=g.transform(tv1))
        g_ctx = model._context(y, g)
        by_hand = (model._sample(first, ctx) + g.inverse(model._sample(
            model.alphas()[-1].sqrt() * model._to_real(start2), g_ctx))) / 2
    assert calls[None] - calls[3] == 12 - 3 + 1, calls  # + 1: no measured-mean shift of A^+ y
    torch.testing.assert_close(out, model._to_complex(by_hand), rtol=0, atol=1e-10)


def test_ensemble_auto_is_two_under_bf16_and_one_in_float32_on_the_cpu():
    """ensemble="auto": the 2-member mean under bfloat16 autocast, one reconstruction in float32 on a CPU; on any
    other device 2 in float32 too."""
    model = _model("UNet2DConditionModel", "cs").eval()
    model.register_to_config(measured_mean=False, start="tv", start_iterations=3)
    op, x, y = _problem("cs")
    outs = {}
    with torch.no_grad():
        for n in (1, 2, "auto"):
            model.register_to_config(ensemble=n)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outs[n, "bf16"] = model(y, op)
            outs[n, "fp32"] = model(y, op)
    assert not torch.allclose(outs[1, "fp32"], outs[2, "fp32"])
    torch.testing.assert_close(outs["auto", "fp32"], outs[1, "fp32"], rtol=0, atol=0)
    torch.testing.assert_close(outs["auto", "bf16"], outs[2, "bf16"], rtol=0, atol=0)
    assert [model.ensemble_size(d, b) for d, b in (("cpu", False), ("cpu", True), ("cuda", False))] == [1, 2, 2]
    model.register_to_config(ensemble=4)
    assert model.ensemble_size("cpu", False) == 4


@pytest.mark.parametrize("k", [0, 1001, 2.0, True])
def test_ensemble_start_iterations_checked(k):
    with pytest.raises(ValueError, match="ensemble_start_iterations"):
        IDM(T=1, ensemble_start_iterations=k)


@pytest.mark.parametrize("n", [0, 3, 16, 2.0, True, "Auto", None])
def test_ensemble_size_checked(n):
    with pytest.raises(ValueError, match="ensemble"):
        IDM(T=1, ensemble=n)
