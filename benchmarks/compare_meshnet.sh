#!/usr/bin/env bash
# The brain MeshNet on 256^3 in ONNX Runtime, voxinfer and PyTorch, interleaved round by
# round, with each process's peak RSS.
#   benchmarks/compare_meshnet.sh ANCHORS_DIR [DATA_DIR] [THREADS] [ROUNDS]
# ANCHORS_DIR is a writable copy of the shared anchors folder after its setup.sh (it holds
# onnxruntime-node and ort_bench.js); DATA_DIR defaults to ../shared/data/brainchop_meshnet.
# Needs python3-torch (apt-get install -y python3-torch python3-onnx).
set -euo pipefail
cd "$(dirname "$0")/.."
ANCHORS=${1:?usage: benchmarks/compare_meshnet.sh ANCHORS_DIR [DATA_DIR] [THREADS] [ROUNDS]}
DATA=${2:-../shared/data/brainchop_meshnet}
THREADS=${3:-2}
ROUNDS=${4:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The PyTorch module exported to ONNX for ONNX Runtime (one untimed forward).
/usr/bin/python3 benchmarks/meshnet_torch.py --data "$DATA" --threads "$THREADS" --runs 0 --export "$work/meshnet.onnx" >/dev/null
for ((r = 1; r <= ROUNDS; r++)); do
  echo "round $r ($(cut -d' ' -f1-3 /proc/loadavg) load)"
  /usr/bin/time -f "  ort   peak_rss_kb=%M" node "$ANCHORS/ort_bench.js" "$work/meshnet.onnx" --shape 1,1,256,256,256 \
    --threads "$THREADS" --runs 3 --warmup 1 2>&1 | grep -E "median_ms|peak_rss" | sed 's/^ort/  ort  /'
  /usr/bin/time -f "  vox   peak_rss_kb=%M" ./build/examples/voxinfer bench examples/models/meshnet_gwm/model.json \
    --shape 1,1,256,256,256 --threads "$THREADS" --runs 3 --warmup 1 2>&1 | grep -E "^voxinfer|peak_rss_kb" | sed 's/^voxinfer/  vox  /'
  /usr/bin/time -f "  torch peak_rss_kb=%M" /usr/bin/python3 benchmarks/meshnet_torch.py --data "$DATA" \
    --threads "$THREADS" --runs 3 2>&1 | grep -E "median_ms|peak_rss|agree" | sed 's/^torch/  torch/; s/^agree/  torch labels agree/'
done
