#!/usr/bin/env bash
# Copy the training subset the GPU run needs into .gpu-data/ (git-ignored; ../shared does not travel).
set -eu
D=${DATASETS:-../shared/datasets}
rm -rf .gpu-data && mkdir -p .gpu-data/natural .gpu-data/mri_mag .gpu-data/siat
cp "$D"/natural/train/Train400/*.png .gpu-data/natural/
ls "$D"/mri/train/figshare_T1CE_brain/*.jpg | awk 'NR%5==0' | head -300 | xargs -I{} cp {} .gpu-data/mri_mag/
for i in $(seq 1 4 120); do cp "$D/mri/train/SIAT_T2_brain_complex/lsq$(printf %03d "$i").npy" .gpu-data/siat/; done
du -sh .gpu-data
