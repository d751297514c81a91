#!/usr/bin/env bash
# Installs what voxinfer needs to build and test, from Debian 12 packages.
# Idempotent: apt-get runs only when a package is missing.
set -euo pipefail

PACKAGES=(
  g++ cmake ninja-build ccache pkg-config git ca-certificates
  libeigen3-dev libtbb-dev libinsighttoolkit5-dev libgdcm-tools libdcmtk-dev libopenjp2-7-dev
  libprotobuf-dev protobuf-compiler libonnx-dev nlohmann-json3-dev libcli11-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libzip-dev dicom3tools dcm2niix python3-pydicom python3-numpy python3-nibabel slurm-wlm munge
  python3-dev pybind11-dev python3-pybind11 python3-pytest python3-onnx python3-setuptools python3-wheel  # Python package
  clang libclang-rt-14-dev  # libFuzzer and the sanitizers for scripts/fuzz.sh
  orthanc dcmtk curl openssl  # the DICOM node tests: a real PACS, DCMTK's echoscu/storescu, TLS keys
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "voxinfer setup: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "voxinfer setup: all packages present"
fi
