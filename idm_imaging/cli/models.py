"""``idm-imaging models``: list the embedded (shipped) models, or show one model's settings (name or folder)."""

from __future__ import annotations

import json
from pathlib import Path

from idm_imaging.cli._common import UserError, embedded_models, model_info


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list embedded models or show one (models list | models info NAME|DIR)",
                       description=__doc__.split(": ", 1)[1])
    msub = p.add_subparsers(dest="action", metavar="ACTION")
    lp = msub.add_parser("list", help="list the embedded models (the default action)")
    lp.add_argument("--json", action="store_true", help="print JSON")
    ip = msub.add_parser("info", help="name, task, operator settings and model card of one model")
    ip.add_argument("name", metavar="NAME|DIR", help="embedded model name or a model folder")
    ip.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run, action=None, json=False)


def _operator_text(op: dict | None) -> str:
    if not op:
        return "-"
    if op.get("type") == "BlockCS":
        seeds = "any seed" if op.get("fresh_per_step") else f"seed {op.get('seed')} only"  # one fixed matrix
        return f"BlockCS ratio={op.get('ratio')} B={op.get('block_size')} ({seeds})"
    mp = op.get("mask_params") or op  # the fine-tuning stage records the mask settings at the top level
    kind, acc = mp.get("kind", mp.get("mask")), mp.get("acceleration")
    if kind and isinstance(acc, (int, float)):
        cf = mp.get("center_fraction")
        return f"SingleCoilFourier {kind} {acc:g}x" + (f" centre {cf:g}" if cf else "")
    return json.dumps(op)[:60]


def run(args) -> int:
    if args.action == "info":
        from idm_imaging.models.registry import REGISTRY, WEIGHTS_DIR

        if args.name in REGISTRY:
            folder = WEIGHTS_DIR / REGISTRY[args.name]
            if not folder.is_dir():
                raise UserError(f"NAME {args.name!r} is registered but its folder {folder} is missing")
            info = model_info(folder, args.name)
        elif Path(args.name).expanduser().is_dir():
            info = model_info(Path(args.name).expanduser())
        else:
            raise UserError(f"NAME {args.name!r} is neither an embedded model ({sorted(REGISTRY) or 'none'}) "
                            "nor a model folder")
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for k in ("name", "task", "T", "backbone", "folder", "model_card"):
                print(f"{k:<11} {info[k] if info[k] is not None else '-'}")
            print(f"{'operator':<11} {json.dumps(info['operator']) if info['operator'] else '-'}")
        return 0
    models = embedded_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print("no embedded models in this installation: reconstruct uses the pseudo-inverse / zero-filled image "
              "by default; pass --model DIR for a trained model folder (config.json + safetensors)")
        return 0
    print(f"{'name':<12} {'task':<5} {'T':>3}  operator")
    for m in models:
        print(f"{m['name']:<12} {m['task'] or '-':<5} {m['T'] or '-':>3}  {_operator_text(m['operator'])}")
    return 0
