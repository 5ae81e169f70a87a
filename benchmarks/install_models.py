"""Install trained runs as the embedded defaults: idm_imaging/weights/<name>/.

RUNS is a folder of training runs, one sub-folder per model named like it (``output_dir`` of configs/*.toml:
runs/<name>/; of configs/gpu/*.toml: runs/gpu/<name>/). Runs without ``final_state.json`` (unfinished) are passed over.

The prior is stored in float16 to keep the shipped weights small (it is cast back to float32 on load); each
folder gets a ``training.json`` with the run's facts (steps, seconds, device, data, final loss).
A run that continued an embedded model (``finetune.init``) keeps that model's ``training.json`` under
``continued_from`` and adds ``total_steps`` / ``total_seconds``; its ``learning_curve.json``
comes along.
Usage: python benchmarks/install_models.py RUNS [--date YYYY-MM-DD] [--device "NVIDIA H100"] [--configs configs/gpu]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "idm_imaging" / "weights"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", help="folder of training runs (runs/<name>/)")
    ap.add_argument("--date", default="")
    ap.add_argument("--device", default="")
    ap.add_argument("--configs", default="configs/gpu", help="folder of the runs' config files (recorded in training.json)")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    if not runs.is_dir():
        ap.error(f"runs: {runs} is not a folder")
    for run in sorted(runs.iterdir()):
        name = run.name
        if not (run / "final_state.json").is_file():
            continue
        state = json.loads((run / "final_state.json").read_text())
        cfg = json.loads((run / "train_config.json").read_text())
        with open(run / "log.csv") as f:
            rows = list(csv.DictReader(f))
        info = {"steps": state["steps"], "seconds": state["seconds"], "device": args.device or state["device"],
                "date": args.date, "stage": cfg["stage"], "data": [Path(p).parent.name for p in cfg["data"]["train"]],
                "patch_size": cfg["data"]["patch_size"], "batch_size": cfg["data"]["batch_size"],
                "lr": cfg["train"]["lr"], "schedule": cfg["train"]["schedule"],
                "mixed_precision": cfg["train"].get("mixed_precision", "auto"),
                "final_loss": float(rows[-1]["loss"]) if rows else None,
                "config": f"{args.configs.rstrip('/')}/{name}.toml"}
        ft = cfg.get("finetune") or {}
        if ft.get("prior"):
            info["prior"] = Path(ft["prior"]).name if Path(ft["prior"]).name != "model" else ft["prior"]
        init = ft.get("init")
        if init:
            prev_file = WEIGHTS / Path(init).name / "training.json"
            prev = json.loads(prev_file.read_text()) if prev_file.is_file() else {}
            info["init"] = init
            info["continued_from"] = prev
            info["total_steps"] = prev.get("total_steps", prev.get("steps", 0)) + info["steps"]
            info["total_seconds"] = round(prev.get("total_seconds", prev.get("seconds", 0)) + info["seconds"], 2)
        dest = WEIGHTS / name
        staging = WEIGHTS / f".{name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(run / "model", staging)
        if cfg["stage"] == "finetune":  # runs made before the fine-tuning stage recorded its acquisition
            from idm_imaging.training import load_config
            from idm_imaging.training.finetune import FinetuneStage

            model_cfg = json.loads((staging / "config.json").read_text())
            # a run that continued a loaded model has that machine's folder here: not for shipping
            model_cfg.pop("_name_or_path", None)
            if not model_cfg.get("operator_config"):
                fc = load_config(cfg).finetune
                model_cfg["operator_config"] = FinetuneStage.operator_settings(argparse.Namespace(fc=fc))
            (staging / "config.json").write_text(json.dumps(model_cfg, indent=2, sort_keys=True) + "\n")
        if name == "prior-gray":
            _to_fp16(staging)
            # The DDNM/DPS baselines read the prior's value range from here.
            (staging / "prior.json").write_text(json.dumps({"signed_range": cfg["prior"]["signed_range"]}))
        (staging / "training.json").write_text(json.dumps(info, indent=2))
        curve = WEIGHTS / Path(init).name / "learning_curve.json" if init else None
        if curve is not None and curve.is_file():  # the evaluations of the model this run continued
            shutil.copy(curve, staging / "learning_curve.json")
        (staging / "log.csv").write_bytes((run / "log.csv").read_bytes())
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
        print(name, info)
    return 0


def _to_fp16(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    for f in folder.rglob("*.safetensors"):
        sd = {k: v.half() if v.is_floating_point() else v for k, v in load_file(f).items()}
        save_file(sd, f, metadata={"format": "pt"})


if __name__ == "__main__":
    sys.exit(main())
