"""Train the shipped models in one GPU call: five fine-tunings side by side (the prior first with --from-scratch).

By default each run continues the shipped model of its name (configs/gpu/*.toml: ``finetune.init``); with
``--from-scratch`` the prior is trained first (configs/gpu/prior-gray.toml) and every fine-tuning starts from it.
The small models are launch-bound on a big GPU, so five processes share it far better than one after another.
``--seconds`` sets every run's ``train.max_seconds`` (with ``fit_to_time`` the cosine ends inside it).
The device tool returns at most 8 files of 16 MiB: the runs are packed into ``models-N.tar`` of <= 14 MB each
(model, log.csv, train_config.json, final_state.json, stdout.log); extract them all into one folder and give it
to benchmarks/install_models.py.
``--smoke`` shrinks every run (CPU, a few steps) to test this script before spending device time.
Usage: python benchmarks/gpu/train_all.py --out OUT [--seconds 300] [--from-scratch] [--smoke]
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
TAR_LIMIT = 14_000_000


def resolved(name: str, args, runs: Path) -> Path:
    """Write the run config (scratch / seconds / smoke applied) to runs/ and return its path."""
    from idm_imaging.training import load_config

    cfg = load_config(CONFIGS / f"{name}.toml").to_dict()
    cfg["output_dir"] = str(runs / name)
    if cfg["stage"] == "finetune" and args.from_scratch:
        cfg["finetune"].update(prior=str(runs / "prior-gray" / "model"), init="")
    if args.seconds and cfg["stage"] == "finetune":
        cfg["train"]["max_seconds"] = args.seconds
    if args.smoke:
        cfg["data"].update(patch_size=64, batch_size=2, num_workers=0)
        cfg["train"].update(steps=3, max_seconds=60, log_every=1, device="cpu", warmup_steps=0)
    path = runs / f"{name}.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def train_cmd(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "idm_imaging.training", str(cfg)]


def pack(runs: Path, names: list[str], out: Path) -> list[str]:
    """Greedy tars of whole runs, each under TAR_LIMIT bytes (written to a temporary name, then renamed)."""
    parts = ("model", "log.csv", "train_config.json", "final_state.json", "stdout.log")

    def size(path: Path) -> int:
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        return sum(f.stat().st_size for f in files)

    sizes = {n: sum(size(runs / n / p) for p in parts if (runs / n / p).exists())
             for n in names if (runs / n / "final_state.json").is_file()}
    groups, cur, cur_size = [], [], 0
    for n, s in sizes.items():
        if cur and cur_size + s > TAR_LIMIT:
            groups.append(cur)
            cur, cur_size = [], 0
        cur.append(n)
        cur_size += s
    if cur:
        groups.append(cur)
    written = []
    for i, group in enumerate(groups, 1):
        tmp, final = out / f"models-{i}.tar.tmp", out / f"models-{i}.tar"
        with tarfile.open(tmp, "w") as tar:
            for n in group:
                for p in parts:
                    if (runs / n / p).exists():
                        tar.add(runs / n / p, arcname=f"{n}/{p}")
        tmp.replace(final)
        written.append(final.name)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the packed models and the report")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "gpu"), help="training output folder")
    ap.add_argument("--seconds", type=float, default=0.0, help="train.max_seconds of every fine-tuning")
    ap.add_argument("--from-scratch", action="store_true", help="train the prior first and fine-tune from it")
    ap.add_argument("--models", nargs="+", choices=TASKS, default=TASKS,
                    help="the fine-tunings to run side by side (default: all; GPU minutes go further on fewer)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    out, runs = Path(args.out).resolve(), Path(args.runs).resolve()  # configs resolve relative paths elsewhere
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "from_scratch": args.from_scratch, "runs": {}}
    names = (["prior-gray"] if args.from_scratch else []) + args.models

    if args.from_scratch:
        t0 = time.perf_counter()
        (runs / "prior-gray").mkdir(exist_ok=True)
        with open(runs / "prior-gray.log", "w") as log:
            rc = subprocess.call(train_cmd(resolved("prior-gray", args, runs)), stdout=log, stderr=subprocess.STDOUT)
        report["runs"]["prior-gray"] = {"rc": rc, "wall_s": round(time.perf_counter() - t0, 1)}
        if rc != 0:
            print(json.dumps(report))
            return rc

    t1 = time.perf_counter()
    procs = {}
    for name in args.models:
        log = open(runs / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(train_cmd(resolved(name, args, runs)), stdout=log, stderr=subprocess.STDOUT),
                       log)
    for name, (p, log) in procs.items():
        report["runs"][name] = {"rc": p.wait(), "wall_s": round(time.perf_counter() - t1, 1)}
        log.close()

    for name in names:
        if (runs / f"{name}.log").is_file() and (runs / name).is_dir():
            (runs / name / "stdout.log").write_bytes((runs / f"{name}.log").read_bytes()[-200_000:])
        fs = runs / name / "final_state.json"
        if fs.is_file():
            report["runs"][name]["final_state"] = json.loads(fs.read_text())
        elif (runs / f"{name}.log").is_file():
            report["runs"][name]["log_tail"] = (runs / f"{name}.log").read_text(errors="replace")[-1500:]
    report["tars"] = pack(runs, names, out)
    (out / "train_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0 if all(r["rc"] == 0 for r in report["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
