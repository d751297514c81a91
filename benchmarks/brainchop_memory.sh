#!/usr/bin/env bash
# Peak memory and wall time of `voxinfer segment` on brainchop's MeshNets (256^3 T1), plane
# streaming (the default) against the whole-graph run (VOXINFER_STREAMING=0), side by side, and
# whether both give the same label file. Usage:
#   benchmarks/brainchop_memory.sh [BUILD_DIR] [THREADS] [REPEATS] [MODEL...]
# Needs GNU time (/usr/bin/time) and the shared zoo input (../shared/data/brainchop_zoo).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
THREADS=${2:-2}
REPEATS=${3:-1}
shift $(( $# > 3 ? 3 : $# )) || true
MODELS=("$@")
[[ ${#MODELS[@]} -gt 0 ]] || MODELS=(model5_gw_ae model18cls model21_104class mindgrab)
INPUT=${BRAINCHOP_INPUT:-../shared/data/brainchop_zoo/input/t1_crop.nii.gz}
CLI=$BUILD/examples/voxinfer
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
[[ -x $CLI && -f $INPUT ]] || { echo "needs $CLI and $INPUT" >&2; exit 1; }

run() {  # mode model rep -> "rss_MiB wall_s network_s"
  local mode=$1 model=$2 rep=$3 log=$OUT/$1_$2_$3.log
  VOXINFER_STREAMING=$mode /usr/bin/time -v "$CLI" segment --model "examples/models/brainchop/$model" -i "$INPUT" \
    -o "$OUT/${mode}_$model.nii.gz" --threads "$THREADS" > "$log" 2>&1 \
    || { echo "voxinfer failed, see below" >&2; cat "$log" >&2; exit 1; }
  local rss wall net
  rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2 / 1024}' "$log")
  wall=$(awk -F': ' '/Elapsed \(wall/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; ++i) s = s * 60 + t[i]; print s}' "$log")
  net=$(sed -n 's/.*(inference \([0-9.]*\) s.*/\1/p' "$log" | tail -1)
  echo "$rss $wall ${net:-?}"
}
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

printf '%-18s %-10s %10s %10s %10s %s\n' model mode rss_MiB wall_s network_s labels
for model in "${MODELS[@]}"; do
  for mode in 0 1; do
    rss=(); wall=(); net=()
    for ((r = 0; r < REPEATS; ++r)); do
      read -r a b c < <(run "$mode" "$model" "$r")
      rss+=("$a"); wall+=("$b"); net+=("$c")
    done
    m_rss=$(printf '%s\n' "${rss[@]}" | median)
    m_wall=$(printf '%s\n' "${wall[@]}" | median)
    m_net=$(printf '%s\n' "${net[@]}" | median)
    same=""
    if [[ $mode == 1 ]]; then
      if cmp -s <(zcat "$OUT/0_$model.nii.gz") <(zcat "$OUT/1_$model.nii.gz"); then same="identical"; else same="DIFFERENT"; fi
    fi
    printf '%-18s %-10s %10s %10s %10s %s\n' "$model" "$([[ $mode == 1 ]] && echo streaming || echo whole)" "$m_rss" "$m_wall" "$m_net" "$same"
  done
done
