#!/usr/bin/env bash
# One call on a lent GPU (device tool): issue 4's benchmark, then the shipped models trained further (issue 5).
# Needs .whl/ (diffusers, monai, importlib_metadata wheels; see shared/design/GPU_RUNS.md) and .gpu-data/
# (benchmarks/gpu/pack_data.sh) carried.
# Usage on the device machine (0 skips a part): [BENCH_S=70] [TRAIN_S=300] [BENCH_SKIP="infer ..."] [TRAIN_MODELS="cs-0.1 mri-4x"] bash benchmarks/gpu/run_gpu.sh
# Results under $OUT: device.txt, gpu_bench.json/.log, train_report.json, models-N.tar (runs of train_all.py).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target .site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader;
  python3 -c "import torch, diffusers, monai; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'monai', monai.__version__)"; } \
  > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
BENCH_S=${BENCH_S:-60}
if [ "$BENCH_S" != 0 ]; then
  # shellcheck disable=SC2086
  timeout $((BENCH_S + 40)) python3 benchmarks/gpu_bench.py --out "$OUT/gpu_bench.json" --budget-s "$BENCH_S" \
    --compile-need-s 100000 ${BENCH_SKIP:+--skip $BENCH_SKIP} > "$OUT/gpu_bench.log" 2>&1
  echo "bench rc=$?"; tail -c 1500 "$OUT/gpu_bench.log"
fi
if [ "${TRAIN_S:-300}" != 0 ]; then
  # shellcheck disable=SC2086
  python3 benchmarks/gpu/train_all.py --out "$OUT" --runs runs/gpu --seconds "${TRAIN_S:-300}" \
    ${TRAIN_MODELS:+--models $TRAIN_MODELS} > "$OUT/train_all.log" 2>&1
  echo "train rc=$?"; tail -c 2500 "$OUT/train_all.log"
fi
