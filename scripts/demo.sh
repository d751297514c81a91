#!/usr/bin/env bash
# Sets up, builds and runs voxinfer's main job on the shipped sample: grey/white matter
# segmentation of a T1 MRI with a real trained network (brainchop's MeshNet, MIT licence).
# Outputs go to ./demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
VOXINFER_TARGET=voxinfer_cli ./scripts/build.sh
OUT=demo-output
mkdir -p "$OUT"
echo
echo "voxinfer segment: examples/data/t1_crop.nii.gz (256^3 T1 MRI) with examples/models/meshnet_gwm"
./build/examples/voxinfer segment \
  --model examples/models/meshnet_gwm \
  --input examples/data/t1_crop.nii.gz \
  --output "$OUT/t1_crop_labels.nii.gz" \
  --stats "$OUT/t1_crop_stats.json" \
  --preview "$OUT/t1_crop_preview.png"
echo
echo "Results:"
echo "  label map   $OUT/t1_crop_labels.nii.gz  (uint8, 1 = white matter, 2 = grey matter, on the input's grid)"
echo "  statistics  $OUT/t1_crop_stats.json"
echo "  preview     $OUT/t1_crop_preview.png"
