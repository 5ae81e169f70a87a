"""Train the shipped models in one GPU call: the prior, then the five fine-tunings side by side.

The small models are launch-bound on a big GPU, so five processes share it far better than one after another.
``--smoke`` shrinks every run (CPU, a few steps) to test this script before spending device time.
Usage: python benchmarks/gpu/train_all.py --out OUT [--smoke]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "gpu"
TASKS = ["cs-0.1", "cs-0.3", "cs-0.5", "mri-4x", "mri-8x"]


def resolved(name: str, smoke: bool, out_root: Path) -> Path:
    """Write the run config (shrunk for --smoke) to out_root and return its path."""
    from idm_imaging.training import load_config

    cfg = load_config(CONFIGS / f"{name}.toml").to_dict()
    cfg["output_dir"] = str(out_root / name)
    if cfg["stage"] == "finetune":
        cfg["finetune"]["prior"] = str(out_root / "prior-gray" / "model")
    if smoke:
        cfg["data"].update(patch_size=64, batch_size=2, num_workers=0)
        cfg["train"].update(steps=3, max_seconds=60, log_every=1, device="cpu", warmup_steps=0)
    path = out_root / f"{name}.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def train_cmd(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "idm_imaging.training", str(cfg)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="folder for the packed models and logs")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "gpu"), help="training output folder")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    out, runs = Path(args.out).resolve(), Path(args.runs).resolve()  # configs resolve relative paths elsewhere
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": {}}

    t0 = time.perf_counter()
    with open(out / "train_prior.log", "w") as log:
        rc = subprocess.call(train_cmd(resolved("prior-gray", args.smoke, runs)), stdout=log, stderr=subprocess.STDOUT)
    report["runs"]["prior-gray"] = {"rc": rc, "wall_s": round(time.perf_counter() - t0, 1)}
    if rc != 0:
        print(json.dumps(report))
        return rc

    t1 = time.perf_counter()
    procs = {}
    for name in TASKS:
        log = open(out / f"train_{name}.log", "w")
        procs[name] = (subprocess.Popen(train_cmd(resolved(name, args.smoke, runs)), stdout=log,
                                        stderr=subprocess.STDOUT), log)
    for name, (p, log) in procs.items():
        report["runs"][name] = {"rc": p.wait(), "wall_s": round(time.perf_counter() - t1, 1)}
        log.close()

    for name in ["prior-gray", *TASKS]:
        fs = runs / name / "final_state.json"
        if fs.is_file():
            report["runs"][name]["final_state"] = json.loads(fs.read_text())
    # One archive of every final model + its log and config (the device tool returns at most 8 files).
    tmp = out / "models.tar.tmp"
    with tarfile.open(tmp, "w") as tar:
        for name in ["prior-gray", *TASKS]:
            for part in ("model", "log.csv", "train_config.json", "final_state.json"):
                if (runs / name / part).exists():
                    tar.add(runs / name / part, arcname=f"{name}/{part}")
    tmp.replace(out / "models.tar")
    (out / "train_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0 if all(r["rc"] == 0 for r in report["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
