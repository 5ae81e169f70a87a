#!/usr/bin/env bash
# Continue the shipped models on 2 CPU cores (~105 min): each run starts from the embedded weights
# (finetune.init), two lanes side by side with one thread each. Rerun with RESUME=--resume after an
# interruption. Then: python benchmarks/install_models.py runs/continue && python benchmarks/eval_models.py
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=${RESUME:-}
t() { OMP_NUM_THREADS=1 "$PY" -m idm_imaging.training "configs/continue/$1.toml" $R > "runs/continue/$1.out" 2>&1; }
mkdir -p runs/continue
lane=${1:-all}
if [ "$lane" = cs ] || [ "$lane" = all ]; then (t cs-0.1; t cs-0.3; t cs-0.5) & fi
if [ "$lane" = mri ] || [ "$lane" = all ]; then (t mri-4x; t mri-8x) & fi
wait
echo done
