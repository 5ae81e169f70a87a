#!/usr/bin/env bash
# Copy the training subset the GPU run needs into .gpu-data/ (git-ignored; ../shared does not travel).
# Sized so that the tree that travels (tracked files, 42 MB of them weights, + .whl + .gpu-data) stays under
# the device tool's 64 MiB: natural images re-encoded as JPEG q95 (6.1 MB for Train400 instead of 8.7 MB as PNG).
set -eu
D=${DATASETS:-../shared/datasets}
PY=${PYTHON:-.venv/bin/python}
rm -rf .gpu-data && mkdir -p .gpu-data/natural .gpu-data/mri_mag .gpu-data/siat
"$PY" - "$D" <<'PYEOF'
import glob, sys
from PIL import Image
for f in sorted(glob.glob(f"{sys.argv[1]}/natural/train/Train400/*.png"))[:300]:
    Image.open(f).convert("L").save(".gpu-data/natural/" + f.rsplit("/", 1)[1][:-4] + ".jpg", quality=95)
PYEOF
ls "$D"/mri/train/figshare_T1CE_brain/*.jpg | awk 'NR%15==0' | head -80 | xargs -I{} cp {} .gpu-data/mri_mag/
for i in 1 25 49 73 97; do cp "$D/mri/train/SIAT_T2_brain_complex/lsq$(printf %03d "$i").npy" .gpu-data/siat/; done
du -sh .gpu-data
