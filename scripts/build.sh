#!/usr/bin/env bash
# Configures and builds voxinfer in ./build (or $VOXINFER_BUILD_DIR). Extra arguments go to
# cmake; VOXINFER_TARGET builds one target only (e.g. voxinfer_cli).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${VOXINFER_BUILD_DIR:-build}
GEN=()
if command -v ninja >/dev/null; then GEN=(-G Ninja); fi
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release "$@" > "$BUILD_DIR.configure.log" 2>&1 \
    || { cat "$BUILD_DIR.configure.log"; exit 1; }
else
  cmake -S . -B "$BUILD_DIR" "$@" > "$BUILD_DIR.configure.log" 2>&1 || { cat "$BUILD_DIR.configure.log"; exit 1; }
fi
if [[ -n "${VOXINFER_TARGET:-}" ]]; then
  cmake --build "$BUILD_DIR" --parallel "$(nproc)" --target "$VOXINFER_TARGET"
else
  cmake --build "$BUILD_DIR" --parallel "$(nproc)"
fi
