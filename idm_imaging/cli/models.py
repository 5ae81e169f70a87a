"""``idm-imaging models``: list the embedded (shipped) models and their aliases, or show one model's settings (name,
alias or folder)."""

from __future__ import annotations

import json
from pathlib import Path

from idm_imaging.cli._common import UserError, embedded_models, model_info, setting_text


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list embedded models or show one (models list | models info NAME|DIR)",
                       description=__doc__.split(": ", 1)[1])
    msub = p.add_subparsers(dest="action", metavar="ACTION")
    lp = msub.add_parser("list", help="list the embedded models and their aliases (the default action)")
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
        span = op.get("ratio_range")  # a model trained on ratios drawn per step
        ratio = f"{span[0]:g}-{span[1]:g}" if isinstance(span, list) and len(span) == 2 else op.get("ratio")
        return f"BlockCS ratio={ratio} B={op.get('block_size')} ({seeds})"
    span = op.get("acceleration_range")  # a model trained on accelerations and mask kinds drawn per step
    if isinstance(span, list) and len(span) == 2:
        kinds = op.get("mask_kinds") or []
        return f"SingleCoilFourier {span[0]:g}-{span[1]:g}x, {len(kinds) or 'any'} mask kinds"
    mp = op.get("mask_params") or op  # the fine-tuning stage records the mask settings at the top level
    kind, acc = mp.get("kind", mp.get("mask")), mp.get("acceleration")
    if kind and isinstance(acc, (int, float)):
        cf = mp.get("center_fraction")
        return f"SingleCoilFourier {kind} {acc:g}x" + (f" centre {cf:g}" if cf else "")
    return json.dumps(op)[:60]


def run(args) -> int:
    if args.action == "info":
        from idm_imaging.models.registry import resolve_checkpoint, resolve_name

        local = Path(args.name).expanduser()
        try:
            folder = resolve_checkpoint(local if local.is_dir() else args.name)
        except ValueError as err:  # "name_or_dir: <why>" -> "NAME <why>"
            raise UserError(f"NAME {str(err).split(': ', 1)[1]}") from None
        target, setting = resolve_name(args.name)
        info = model_info(folder, None if local.is_dir() else args.name)
        if setting:
            info.update(alias_of=target, setting=setting)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for k in ("name", "task", "T", "backbone", "folder", "model_card"):
                print(f"{k:<11} {info[k] if info[k] is not None else '-'}")
            print(f"{'operator':<11} {json.dumps(info['operator']) if info['operator'] else '-'}")
            if setting:
                print(f"{'alias of':<11} {target} at {setting_text(setting)}")
        return 0
    models = embedded_models(aliases=True)
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print("no embedded models in this installation: reconstruct uses the pseudo-inverse / zero-filled image "
              "by default; pass --model DIR for a trained model folder (config.json + safetensors)")
        return 0
    print(f"{'name':<12} {'task':<5} {'T':>3}  operator")
    for m in models:
        what = (f"alias of {m['alias_of']} at {setting_text(m['setting'])}" if m.get("alias_of")
                else _operator_text(m["operator"]))
        print(f"{m['name']:<12} {m['task'] or '-':<5} {m['T'] or '-':>3}  {what}")
    return 0
