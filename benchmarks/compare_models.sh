#!/usr/bin/env bash
# Times every model of the shared zoo in ONNX Runtime and in voxinfer, interleaved
# (ORT, voxinfer, ORT, voxinfer, ...), and prints the medians and the speed ratio.
#   benchmarks/compare_models.sh ANCHORS_DIR [MODELS_DIR] [THREADS] [ROUNDS]
# ANCHORS_DIR is a writable copy of the shared anchors folder after its setup.sh (it holds
# onnxruntime-node and ort_bench.js); MODELS_DIR defaults to ../shared/models.
set -euo pipefail
cd "$(dirname "$0")/.."
ANCHORS=${1:?usage: benchmarks/compare_models.sh ANCHORS_DIR [MODELS_DIR] [THREADS] [ROUNDS]}
MODELS=${2:-../shared/models}
THREADS=${3:-2}
ROUNDS=${4:-3}
VX=./build/examples/voxinfer
printf "%-16s %-14s %10s %10s %8s %12s\n" model shape ort_ms voxinfer_ms speedup voxinfer_rss
for entry in tiny:16 unet_spleen:64 basicunet_s:48 segresnet_s:48 attentionunet_s:48 vnet_s:48 densenet121_s:64; do
  name=${entry%%:*}; s=${entry##*:}; shape=1,1,$s,$s,$s
  model=$MODELS/$name/model.onnx
  [[ -f $model ]] || continue
  ort=(); vox=(); rss=0
  for ((r = 0; r < ROUNDS; r++)); do
    o=$(node "$ANCHORS/ort_bench.js" "$model" --shape $shape --threads "$THREADS" --runs 5 --warmup 1 | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p')
    line=$($VX bench "$model" --shape $shape --threads "$THREADS" --runs 5 --warmup 1 | tail -1)
    v=$(sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' <<<"$line")
    rss=$(sed -n 's/.*peak_rss_mb=\([0-9.]*\).*/\1/p' <<<"$line")
    ort+=("$o"); vox+=("$v")
  done
  om=$(printf "%s\n" "${ort[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  vm=$(printf "%s\n" "${vox[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf "%-16s %-14s %10.2f %10.2f %7.2fx %9s MB\n" "$name" "$shape" "$om" "$vm" "$(awk -v a="$om" -v b="$vm" 'BEGIN {print a / b}')" "$rss"
done
