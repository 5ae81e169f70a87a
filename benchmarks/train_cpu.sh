#!/usr/bin/env bash
# Train every shipped model on 2 CPU cores (~5 h): the prior, then two lanes side by side, one thread each: cs
# (stage 1, stage 2) beside mri (stages 1-3).
# Each run stops at its step count or its train.max_seconds, whichever comes first; rerun with RESUME=--resume
# to continue an interrupted run. Then: python benchmarks/install_models.py runs && python benchmarks/eval_models.py
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=${RESUME:-}
t() { OMP_NUM_THREADS=$1 "$PY" -m idm_imaging.training "configs/$2.toml" $R > "runs/$2.out" 2>&1; }
mkdir -p runs
t 2 prior-gray
{ t 1 cs-stage1; t 1 cs; } & { t 1 mri-stage1; t 1 mri-stage2; t 1 mri; } & wait
echo done
