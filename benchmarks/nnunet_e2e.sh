#!/usr/bin/env bash
# nnU-Net v2 folders end to end: the whole `voxinfer segment` process (read -> written label
# map) on the reference set's 512x512x20 CT in nnU-Net's two timed settings, with peak RSS from
# /usr/bin/time -v, and the network forward against ONNX Runtime on the same network exported
# by PyTorch, interleaved in one run. Medians of N rounds.
#   benchmarks/nnunet_e2e.sh [ROUNDS]      (default 3; needs ./build and ../shared/data/nnunet_v2)
# ONNX Runtime is timed when an anchors copy with onnxruntime-node is given in $ANCHORS
# (see ../shared/anchors/README.md: a writable copy after `npm install` there).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
VX=./build/examples/voxinfer
SHARED=${VOXINFER_SHARED_DIR:-../shared}/data/nnunet_v2
MODEL=$SHARED/nnUNet_results/Dataset311_VoxAbdCT/nnUNetTrainer__nnUNetPlans__3d_fullres
IN=$SHARED/inputs/p2dicom_dcm2niix_0000.nii.gz
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

run_case() {  # $1 = label, rest = options
  local label=$1; shift
  /usr/bin/time -v "$VX" segment --model "$MODEL" -i "$IN" -o "$OUT/labels.nii.gz" --threads 2 "$@" \
    > /dev/null 2> "$OUT/time.log"
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$OUT/time.log")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$OUT/time.log")
  echo "$label $wall $rss" >> "$OUT/e2e.txt"
}

for r in $(seq "$ROUNDS"); do
  run_case f0_nomirror --folds 0 --disable-tta
  run_case f0f1_mirror --folds 0,1
  "$VX" bench "$MODEL" --shape 1,1,14,80,80 --threads 2 --runs 10 --warmup 2 | tail -1 | sed 's/.*median_ms=\([0-9.]*\).*/voxinfer \1/' >> "$OUT/net.txt"
  if [[ -n "${ANCHORS:-}" && -f "$ANCHORS/ort_bench.js" ]]; then
    node "$ANCHORS/ort_bench.js" "$SHARED/onnx/network_fold0.onnx" --shape 1,1,14,80,80 --threads 2 --runs 10 --warmup 2 |
      tail -1 | sed 's/.*median_ms=\([0-9.]*\).*/ort \1/' >> "$OUT/net.txt"
  fi
done

echo "whole process, 2 threads, p2dicom_dcm2niix (512x512x20), $ROUNDS rounds (nnU-Net 2.8.1 on this machine kind: 15.0 s / 56.8 s, 629 MiB)"
for label in f0_nomirror f0f1_mirror; do
  wall=$(awk -v l=$label '$1==l {print $2}' "$OUT/e2e.txt" | median)
  rss=$(awk -v l=$label '$1==l {print $3}' "$OUT/e2e.txt" | median)
  ref=$([[ $label == f0_nomirror ]] && echo 15.0 || echo 56.8)
  printf "  %-12s voxinfer %6.2f s  %5s MiB   nnU-Net %5.1f s 629 MiB   speed-up %.1fx, memory %.0f%%\n" \
    "$label" "$wall" "$rss" "$ref" "$(echo "$ref / $wall" | bc -l)" "$(echo "100 * $rss / 629" | bc -l)"
done
echo "network forward 1x1x14x80x80, 2 threads, median of medians (ms):"
for sys in voxinfer ort; do
  v=$(awk -v s=$sys '$1==s {print $2}' "$OUT/net.txt" | median)
  [[ -n "$v" ]] && echo "  $sys $v"
done
