"""``idm-imaging reconstruct``: reconstruct a scan (2-D or 3-D) from a simulated or measured acquisition.

A fully sampled INPUT (image, NIfTI, DICOM file or series folder, .npy, .mat, fastMRI .h5 without undersampled
k-space) is measured with the acquisition the arguments describe, reconstructed and compared with the input
(metrics printed). A fastMRI .h5 with undersampled k-space is reconstructed as given, with its own mask.
OUTPUT keeps the input geometry (NIfTI affine, DICOM spacing/orientation in a NIfTI output) and its intensity
scale. OUTPUT is written only when the whole run succeeded, never over INPUT, and over an existing file only
with --overwrite.
"""

from __future__ import annotations

import sys
import time

from idm_imaging.cli._common import (
    UserError, acquisition_label, add_acquisition_args, add_input_args, apply_model_setting, check_acquisition_args,
    check_device, check_output_path, load_input, operator_factory, positive_int, resolve_model, select_slices,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reconstruct", help="reconstruct a scan from a simulated (or measured) acquisition",
        description=__doc__.split("\n\n", 1)[1],
        epilog="example: idm-imaging reconstruct brain.nii.gz --out recon.nii.gz --task mri --mask random "
               "--acceleration 4",
    )
    p.add_argument("input", metavar="INPUT", help="image, NIfTI, DICOM file/folder, .npy, .mat or fastMRI .h5")
    p.add_argument("--out", required=True, metavar="OUTPUT",
                   help="output file (.nii.gz, .nii, .png, .tif, .npy, .mat); DICOM input -> write .nii.gz")
    add_input_args(p)
    add_acquisition_args(p)
    g = p.add_argument_group("model and execution")
    g.add_argument("--model", metavar="NAME|DIR",
                   help="embedded model name, trained model folder, or 'pinv' (default: the embedded model of the "
                        "task, else the pseudo-inverse); an alias such as mri-8x also sets --acceleration / "
                        "--ratio when not given (idm-imaging models list)")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: %(default)s)")
    g.add_argument("--batch-size", type=positive_int, default=4, help="slices per model call (default: %(default)s)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="bf16: the model under bfloat16 autocast, faster on AVX512-BF16 / AMX CPUs and GPUs; "
                        "auto: bf16 where the device has native bf16, else fp32 (default: %(default)s)")
    g.add_argument("--ensemble", type=int, choices=[1, 2, 4, 8], default=None,
                   help="average this many reconstructions of the flipped / rotated problem (each costs one "
                        "reconstruction; the model card gives the gain; default: the model's own setting, for the "
                        "embedded cs 2, and 1 in float32 on a CPU)")
    p.set_defaults(func=run)


def _print_metrics(rows: list[tuple[str, dict]]) -> None:
    keys = [k for k in ("psnr", "ssim", "nmse") if all(k in m for _, m in rows)]
    head = {"psnr": "PSNR dB", "ssim": "SSIM", "nmse": "NMSE"}
    print(f"{'method':<24}" + "".join(f"{head[k]:>10}" for k in keys))
    for name, m in rows:
        print(f"{name:<24}" + "".join(f"{m[k]:>10.4f}" if k != "psnr" else f"{m[k]:>10.2f}" for k in keys))


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from idm_imaging.inference import ReconstructionOptions, reconstruct_volume, resolve_device
    from idm_imaging.io import write_scan
    from idm_imaging.operators import build_operator

    check_device(args.device)
    inp = load_input(args.input, args)
    select_slices(inp, args.slices)
    if not inp.measured:  # measured k-space brings its own mask
        apply_model_setting(args)
    check_acquisition_args(args, need_mask=not inp.measured)
    out = check_output_path(args.out, inp.volume.ndim, inputs=(args.input,), overwrite=args.overwrite)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UserError(f"--device {exc}".replace("--device device: ", "--device ")) from None
    for note in inp.notes:
        print(f"note: {note}")
    model, label = resolve_model(args.model, args)

    if inp.measured:
        factory = lambda hw: build_operator("mri", hw, mask=inp.mask)  # noqa: E731
        what = "measured k-space"
    else:
        factory = operator_factory(args)
        what = acquisition_label(args)
    depth = 1 if inp.volume.ndim == 2 else int(inp.volume.shape[0])
    print(f"{label} on {device}: {what}, {depth} slice(s) of {tuple(inp.volume.shape[-2:])}")
    bar = tqdm(total=depth, unit="slice", file=sys.stderr, disable=depth <= 1, desc="reconstruct")
    t0 = time.perf_counter()
    try:
        options = ReconstructionOptions(batch_size=args.batch_size, device=device, measured=inp.measured,
                                        sigma=args.sigma, seed=args.seed, precision=args.precision)
        res = reconstruct_volume(inp.volume, factory, model, options=options,
                                 progress=lambda done, total: bar.update(done - bar.n))
    except torch.OutOfMemoryError:
        raise UserError(f"--batch-size {args.batch_size}: out of memory on {device}; lower it or use --device cpu") \
            from None
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    result = res.recon if res.recon is not None else res.pinv
    keep_complex = inp.volume.is_complex() and out.name.endswith((".npy", ".mat"))
    rows = _metrics(res, inp, args, label)  # before writing: a failure here must leave no output behind
    try:
        write_scan(result if keep_complex or not result.is_complex() else result.abs(), out, inp.meta,
                   overwrite=args.overwrite)
    except FileExistsError:
        raise UserError(f"--out {args.out!r} appeared during the run; pass --overwrite to replace it") from None
    print(f"wrote {out} ({seconds:.1f} s)")
    if rows:
        _print_metrics(rows)
    return 0


def _metrics(res, inp, args, label) -> list[tuple[str, dict]]:
    from idm_imaging.inference import volume_metrics

    pinv_name = "zero-filled" if args.task == "mri" else "pseudo-inverse"
    rows = []
    if res.reference is not None:
        rows.append((pinv_name, volume_metrics(res.pinv, res.reference, args.task, offset=res.offset,
                                               scale=res.scale)))
        if res.recon is not None:
            rows.append((label, volume_metrics(res.recon, res.reference, args.task, offset=res.offset,
                                               scale=res.scale)))
    elif inp.reference is not None:
        from idm_imaging.metrics import fastmri_metrics
        from idm_imaging.metrics.fastmri import center_crop

        ref = inp.reference.abs().numpy()
        for name, t in [(pinv_name, res.pinv)] + ([(label, res.recon)] if res.recon is not None else []):
            crop = center_crop(t.abs().numpy(), ref.shape[-2:])
            if crop.shape == ref.shape:
                rows.append((name, fastmri_metrics(crop, ref)))
        if rows:
            print("metrics against the file's reference image (centre crop, fastMRI protocol):")
    return rows
