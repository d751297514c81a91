#!/usr/bin/env bash
# voxinfer batch throughput with and without the one-study look-ahead, interleaved rounds on the
# same cases (copies of the shared 512x512x20 CT) with the nnU-Net reference folder, 2 threads.
#   benchmarks/batch_throughput.sh [CASES] [ROUNDS]      (defaults 8 and 3; needs ./build and ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${1:-8}
ROUNDS=${2:-3}
VX=./build/examples/voxinfer
SHARED=${VOXINFER_SHARED_DIR:-../shared}/data/nnunet_v2
MODEL=$SHARED/nnUNet_results/Dataset311_VoxAbdCT/nnUNetTrainer__nnUNetPlans__3d_fullres
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/in"
for i in $(seq -w 1 "$CASES"); do cp "$SHARED/inputs/p2dicom_dcm2niix_0000.nii.gz" "$W/in/case$i.nii.gz"; done
run() {  # label, extra options
  local label=$1; shift
  rm -rf "$W/out"
  "$VX" batch --model "$MODEL" --inputs "$W/in" --output-dir "$W/out" --folds 0 --disable-tta --threads 2 "$@" 2> "$W/log"
  grep -o '[0-9.]* studies per hour' "$W/log" | awk -v l="$label" '{print l, $1}' >> "$W/rates"
}
for r in $(seq "$ROUNDS"); do run lookahead; run no_lookahead --no-lookahead; done
for l in lookahead no_lookahead; do
  awk -v l=$l '$1==l {print $2}' "$W/rates" | sort -g | awk -v l=$l '{a[NR]=$1} END {printf "%-13s median %.0f studies/hour over %d rounds\n", l, (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2, NR}'
done
