#!/usr/bin/env bash
# voxinfer batch as a Slurm array job on a real one-node cluster (scripts/slurm_cluster.sh):
# 12 cases over --array=0-3, one task cancelled mid-run, the array resubmitted with --resume;
# every output exists once and equals a single-process run byte for byte.
#   VOX=voxinfer NN=<nnU-Net folder> IN=<input _0000.nii.gz> ROOT=<repository> slurm_batch_test.sh
set -euo pipefail
command -v sbatch > /dev/null || { echo "sbatch not installed (scripts/setup.sh installs slurm-wlm)"; exit 77; }
[[ $(id -u) -eq 0 ]] || { echo "the one-node cluster needs root"; exit 77; }
work=$PWD/slurm_batch
rm -rf "$work"; mkdir -p "$work/in"
export SLURM_CONF
SLURM_CONF=$("$ROOT/scripts/slurm_cluster.sh" start "$work/cluster")
for i in $(seq -w 0 11); do cp "$IN" "$work/in/c${i}_0000.nii.gz"; done
opts=(--folds 0 --disable-tta)
"$VOX" batch --model "$NN" --inputs "$work/in" --output-dir "$work/single" --threads 1 "${opts[@]}" 2> "$work/single.log"

submit() {
  sbatch --parsable --array=0-3 --cpus-per-task=1 --export=ALL,VOXINFER="$VOX" --output="$work/task-%A_%a.log" \
    "$ROOT/examples/slurm/segment_array.sbatch" "$NN" "$work/in" "$work/array" "${opts[@]}" "$@"
}
wait_for() {  # job id
  for _ in $(seq 600); do
    [[ -z $(squeue -h -j "$1" 2> /dev/null) ]] && return 0
    sleep 0.5
  done
  echo "array $1 did not finish"; scancel "$1"; exit 1
}
job=$(submit)
# Cancel task 2 as soon as it runs.
for _ in $(seq 600); do
  state=$(squeue -h -j "${job}_2" -o %T 2> /dev/null || true)
  [[ $state == RUNNING ]] && break
  [[ -z $state ]] && break
  sleep 0.2
done
scancel "${job}_2" || true
wait_for "$job"
echo "after the cancelled run: $(ls "$work/array"/*.nii.gz 2> /dev/null | wc -l) label maps"
job2=$(submit)
wait_for "$job2"
n=$(ls "$work/array"/*.nii.gz | wc -l)
[[ $n -eq 12 ]] || { echo "expected 12 label maps, found $n"; cat "$work"/task-*.log; exit 1; }
if ls -A "$work/array" | grep -v -E '^(c[0-9]+\.nii\.gz|c[0-9]+_stats\.json|manifest-[0-9]+-of-4\.jsonl)$'; then
  echo "unexpected files left in the output folder"; exit 1
fi
for f in "$work/single"/*.nii.gz; do cmp "$f" "$work/array/$(basename "$f")"; done
"$VOX" batch --summary "$work/array"
"$ROOT/scripts/slurm_cluster.sh" stop "$work/cluster"
