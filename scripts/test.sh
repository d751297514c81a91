#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite, then checks that the installed
# package works from another CMake project.
#   ./scripts/test.sh             release build in ./build, all tests, install + consumer check
#   ./scripts/test.sh --sanitize  AddressSanitizer + UBSan build in ./build-asan, unit tests
# Tests that need the shared models and data sets look for ../shared (or
# $VOXINFER_SHARED_DIR) and skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

JOBS=$(nproc)
if [[ "${1:-}" == "--sanitize" ]]; then
  export VOXINFER_BUILD_DIR=build-asan
  # Optimised but without debug info: debug info makes the instrumented build several times
  # slower on 2 cores; reports still name the functions.
  ./scripts/build.sh -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG" "-DCMAKE_C_FLAGS_RELEASE=-O2 -DNDEBUG" \
    -DVOXINFER_SANITIZE=address,undefined -DVOXINFER_WERROR=ON -DVOXINFER_BUILD_BENCHMARKS=OFF
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
  # Leaks inside ITK's NRRD writer on its error path (tests/lsan.supp says which and why).
  export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest --test-dir build-asan -L unit -j "$JOBS" --output-on-failure --timeout 900
  exit 0
fi

# The Python module is built for, and tested with, a python3 that has NumPy and pytest (one
# earlier in PATH, such as a pyenv shim, may lack them; Debian's has them after setup.sh).
PYTHON=$(command -v python3)
if ! "$PYTHON" -c "import numpy, pytest" 2>/dev/null; then PYTHON=/usr/bin/python3; fi
./scripts/build.sh -DVOXINFER_WERROR=ON "-DPython_EXECUTABLE=$PYTHON"
ctest --test-dir build -j "$JOBS" --output-on-failure --timeout 1200
# The Python package from the build tree (any failure, or no test collected, fails the run).
PYTHONPATH="$PWD/build/python" VOXINFER_CLI="$PWD/build/examples/voxinfer" \
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/python

# The installed package must be usable with find_package(voxinfer).
rm -rf build/install build/consumer
cmake --install build --prefix build/install > /dev/null
cmake -S tests/consumer -B build/consumer -DCMAKE_PREFIX_PATH="$PWD/build/install" > build/consumer.log 2>&1 \
  || { cat build/consumer.log; exit 1; }
cmake --build build/consumer >> build/consumer.log 2>&1 || { cat build/consumer.log; exit 1; }
LD_LIBRARY_PATH="$PWD/build/install/lib:${LD_LIBRARY_PATH:-}" ./build/consumer/voxinfer_consumer
# The installed Python package finds the library through its run path.
(cd build && env -u LD_LIBRARY_PATH PYTHONPATH="$PWD/install/lib/python3/dist-packages" "$PYTHON" -c \
  "import voxinfer, numpy; assert voxinfer.Volume(numpy.zeros((2, 2, 2))).shape == (1, 2, 2, 2)")
# The installed command line runs from its non-system prefix without LD_LIBRARY_PATH (RPATH).
env -u LD_LIBRARY_PATH ./build/install/bin/voxinfer --version
