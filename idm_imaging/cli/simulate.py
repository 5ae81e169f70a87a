"""``idm-imaging simulate``: measure a fully sampled scan and write the measurement, A^+ y and the parameters.

Writes into the folder ``--out`` (created if missing), for INPUT ``<stem>.<ext>``:
``<stem>_meas.npy`` (the measurement of every slice, ``(D, 1, ...)`` as the operator produces it: block CS
``(D, 1, q, nh, nw)`` real, MRI ``(D, 1, H, W)`` complex k-space; D = 1 for a 2-D image; on the [0, 1]-normalised
image), ``<stem>_pinv.<ext>`` (pseudo-inverse / zero-filled image in the input's units and geometry; .png for
2-D raster input, .npy for .npy input, else .nii.gz) and ``<stem>_acq.json`` (the acquisition record of
``idm_imaging.transforms``: operator config, noise, seed and the intensity normalisation
``x_normalised = (x - offset) / scale``, marked ``"normalised": true``; ``replay_acquisition`` re-measures the
input from it). All three files are written only when the run succeeded, and never over
existing files unless --overwrite; a failed run leaves nothing behind (not even the folder it created).
"""

from __future__ import annotations

import json
from pathlib import Path

from idm_imaging.cli._common import (
    UserError, acquisition_label, add_acquisition_args, add_input_args, check_acquisition_args, load_input,
    operator_factory, same_file, select_slices,
)


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="simulate an acquisition: write measurement, pseudo-inverse and parameters",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("input", metavar="INPUT", help="fully sampled image, NIfTI, DICOM file/folder, .npy, .mat or .h5")
    p.add_argument("--out", required=True, metavar="FOLDER", help="output folder (created if missing)")
    add_input_args(p)
    add_acquisition_args(p)
    p.set_defaults(func=run)


def _pinv_suffix(fmt: str, ndim: int) -> str:
    if fmt in ("png", "tiff", "jpeg") and ndim == 2:
        return ".png"
    if fmt == "npy":
        return ".npy"
    return ".nii.gz"


def _stem(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz",):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem if path.is_file() else name


def run(args) -> int:
    import numpy as np

    from idm_imaging.inference import ReconstructionOptions, reconstruct_volume
    from idm_imaging.io import atomic_write, atomic_write_text, write_scan

    check_acquisition_args(args)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {args.out!r} is a file; give a folder")
    inp = load_input(args.input, args)
    select_slices(inp, args.slices)
    if inp.measured:
        raise UserError(f"INPUT {args.input!r} holds measured (undersampled) k-space; simulate needs a fully "
                        "sampled scan (use `idm-imaging reconstruct` for measured data)")
    stem = _stem(Path(args.input).expanduser())
    suffix = _pinv_suffix(inp.meta.get("format", ""), inp.volume.ndim)
    paths = {"measurement": out / f"{stem}_meas.npy", "pinv": out / f"{stem}_pinv{suffix}",
             "record": out / f"{stem}_acq.json"}
    for p in paths.values():
        if same_file(p, Path(args.input).expanduser()):
            raise UserError(f"--out {args.out!r}: {p.name} is INPUT {args.input!r}; choose another folder")
        if p.exists() and not args.overwrite:
            raise UserError(f"--out {args.out!r}: {p.name} exists; pass --overwrite to replace it")
    for note in inp.notes:
        print(f"note: {note}")
    res = reconstruct_volume(inp.volume, operator_factory(args), None,
                             options=ReconstructionOptions(batch_size=16, sigma=args.sigma, seed=args.seed))
    pinv = res.pinv if (suffix == ".npy" and inp.volume.is_complex()) or not res.pinv.is_complex() else res.pinv.abs()
    record = {
        "operator": res.operator.get_config(),
        "sigma": args.sigma,
        "noise_seed": args.seed,
        "spatial_dims": inp.volume.ndim,
        "intensity": {"offset": res.offset, "scale": res.scale},
        "normalised": True,  # the measurement is of the normalised image, in the slice layout (D, 1, ...)
        "noise_per_slice": True,  # as reconstruct_volume draws it: results do not depend on the batch size
        "input": str(Path(args.input).expanduser()),
        "slices": args.slices,
        "task": args.task,
        "acquisition": acquisition_label(args),
        "image_shape": list(inp.volume.shape),
        "measurement_shape": list(res.measurement.shape),
        "measurement_dtype": str(res.measurement.dtype).replace("torch.", ""),
        "files": {"measurement": paths["measurement"].name, "pinv": paths["pinv"].name},
    }
    text = json.dumps(record, indent=2)

    def save_measurement(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save(path) would append ".npy" to the temp name
            np.save(f, res.measurement.numpy(), allow_pickle=False)

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for name, write in (
            ("measurement", lambda p: atomic_write(p, save_measurement, overwrite=args.overwrite)),
            ("pinv", lambda p: write_scan(pinv, p, inp.meta, overwrite=args.overwrite)),
            ("record", lambda p: atomic_write_text(p, text, overwrite=args.overwrite)),
        ):
            write(paths[name])
            written.append(paths[name])
    except BaseException as exc:
        for p in written:  # all three or none: a measurement without its record is unusable
            p.unlink(missing_ok=True)
        if created:
            try:
                out.rmdir()
            except OSError:
                pass
        if isinstance(exc, FileExistsError):
            raise UserError(f"--out {args.out!r}: {exc.filename or 'a file'} appeared during the run; "
                            "pass --overwrite to replace it") from None
        raise
    print(f"wrote {paths['measurement']}, {paths['pinv']} and {paths['record']}")
    return 0
