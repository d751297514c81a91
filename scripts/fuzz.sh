#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, AddressSanitizer + UBSan) in ./build-fuzz and runs
# each for SECONDS_PER_HARNESS (default 60) over its committed corpus tests/fuzz/corpus/<harness>.
#   ./scripts/fuzz.sh 20      CI: about 20 s per harness
#   ./scripts/fuzz.sh 3600    the local long run: one hour per harness
# New inputs go to build-fuzz/fuzz-corpus/<harness> (merge the useful ones into the committed
# corpus by hand); crashes, leaks and timeouts to build-fuzz/fuzz-artifacts/. Prints executions
# and time per harness and fails when any harness found something.
set -euo pipefail
cd "$(dirname "$0")/.."
PER=${1:-60}
BUILD=${VOXINFER_FUZZ_BUILD_DIR:-build-fuzz}
GEN=()
if command -v ninja > /dev/null; then GEN=(-G Ninja); fi
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
    "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -gline-tables-only -DNDEBUG" "-DCMAKE_C_FLAGS_RELEASE=-O1 -DNDEBUG" \
    -DVOXINFER_SANITIZE=address,undefined -DVOXINFER_FUZZ=ON -DVOXINFER_BUILD_TESTS=OFF \
    -DVOXINFER_BUILD_EXAMPLES=OFF -DVOXINFER_BUILD_BENCHMARKS=OFF > "$BUILD.configure.log" 2>&1 \
    || { cat "$BUILD.configure.log"; exit 1; }
fi
cmake --build "$BUILD" --parallel "$(nproc)" --target voxinfer_fuzz

HARNESSES=(fuzz_nifti fuzz_dicom fuzz_dicom_seg fuzz_onnx fuzz_tfjs fuzz_pipeline_spec fuzz_npy fuzz_torch_checkpoint
           fuzz_nnunet fuzz_monai_bundle)
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p "$BUILD/fuzz-artifacts" "$BUILD/fuzz-logs"
failed=()
summary="harness                 executions   seconds   exec/s  corpus  result"
for h in "${HARNESSES[@]}"; do
  work="$BUILD/fuzz-corpus/$h"
  mkdir -p "$work"
  extra=()
  if [[ -f "tests/fuzz/$h.dict" ]]; then extra+=("-dict=tests/fuzz/$h.dict"); fi
  log="$BUILD/fuzz-logs/$h.log"
  start=$(date +%s%N)
  set +e
  "$BUILD/tests/fuzz/$h" "$work" "tests/fuzz/corpus/$h" -max_total_time="$PER" -timeout=25 -rss_limit_mb=4096 \
    -malloc_limit_mb=4096 -max_len=65536 -print_final_stats=1 -artifact_prefix="$BUILD/fuzz-artifacts/$h-" \
    "${extra[@]}" > "$log" 2>&1
  rc=$?
  set -e
  secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  corpus=$(find "$work" -type f | wc -l)
  result=ok
  if [[ $rc -ne 0 ]]; then
    result="FOUND (exit $rc; see $log)"
    failed+=("$h")
  fi
  rate=$(awk -v n="${execs:-0}" -v t="$secs" 'BEGIN { printf "%.0f", t > 0 ? n / t : 0 }')
  summary+=$(printf '\n%-22s %11s %9s %8s %7s  %s' "$h" "${execs:-0}" "$secs" "$rate" "$corpus" "$result")
done
echo "$summary"
if ((${#failed[@]})); then
  echo "fuzz: findings in ${failed[*]}"
  for h in "${failed[@]}"; do grep -m5 -E "ERROR|SUMMARY|runtime error" "$BUILD/fuzz-logs/$h.log" || true; done
  exit 1
fi
