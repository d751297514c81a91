# Finds every third-party dependency from Debian 12 packages. A missing one stops
# configure with the name of the package that provides it.
include_guard(GLOBAL)

macro(voxinfer_require pkg debian)
  find_package(${pkg} ${ARGN} QUIET)
  if(NOT ${pkg}_FOUND)
    message(FATAL_ERROR "voxinfer needs ${pkg}: install the Debian package '${debian}' "
                        "(apt-get install -y --no-install-recommends ${debian}) or run ./scripts/setup.sh")
  endif()
endmacro()

voxinfer_require(Eigen3 libeigen3-dev NO_MODULE)
voxinfer_require(TBB libtbb-dev)
voxinfer_require(nlohmann_json nlohmann-json3-dev)
voxinfer_require(Protobuf libprotobuf-dev)
voxinfer_require(ONNX libonnx-dev)
voxinfer_require(ITK libinsighttoolkit5-dev)
voxinfer_require(DCMTK libdcmtk-dev)
if(VOXINFER_BUILD_EXAMPLES)
  voxinfer_require(CLI11 libcli11-dev)
endif()
if(VOXINFER_BUILD_TESTS)
  voxinfer_require(GTest libgtest-dev)
endif()
if(VOXINFER_BUILD_BENCHMARKS)
  voxinfer_require(benchmark libbenchmark-dev)
endif()
