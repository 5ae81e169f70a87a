#!/usr/bin/env bash
# Train every shipped model on 2 CPU cores (~90 min): the prior, then two runs side by side, one thread each: cs
# beside cs-0.1 (fine-tuned from the prior) followed by mri.
# Each run stops at its step count or its train.max_seconds, whichever comes first; rerun with RESUME=--resume
# to continue an interrupted run. Then: python benchmarks/install_models.py runs && python benchmarks/eval_models.py
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=${RESUME:-}
t() { OMP_NUM_THREADS=$1 "$PY" -m idm_imaging.training "configs/$2.toml" $R > "runs/$2.out" 2>&1; }
mkdir -p runs
t 2 prior-gray
t 1 cs & { t 1 cs-0.1; t 1 mri; } & wait
echo done
