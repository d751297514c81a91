// Volume: voxels as a float32 tensor [C, Z, Y, X] (X fastest, as ITK and DICOM store
// them) plus the Geometry that places them in patient space, plus source metadata
// (DICOM identifiers and modules kept for DICOM SEG output; never logged).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "voxinfer/core/geometry.h"
#include "voxinfer/core/tensor.h"

namespace voxinfer {

struct Volume {
  Tensor data;  // f32 [C, Z, Y, X]
  Geometry geometry;
  std::map<std::string, std::string> metadata;

  Volume() = default;
  Volume(std::int64_t channels, std::int64_t nz, std::int64_t ny, std::int64_t nx, const Geometry& g = {})
      : data(Shape{channels, nz, ny, nx}, DType::f32), geometry(g) {}

  std::int64_t channels() const { return data.dim(0); }
  std::int64_t nz() const { return data.dim(1); }
  std::int64_t ny() const { return data.dim(2); }
  std::int64_t nx() const { return data.dim(3); }
  std::int64_t voxels() const { return nz() * ny() * nx(); }

  float* channel(std::int64_t c) { return data.data<float>() + c * voxels(); }
  const float* channel(std::int64_t c) const { return data.data<float>() + c * voxels(); }
  float& at(std::int64_t c, std::int64_t z, std::int64_t y, std::int64_t x) {
    return data.data<float>()[((c * nz() + z) * ny() + y) * nx() + x];
  }
  float at(std::int64_t c, std::int64_t z, std::int64_t y, std::int64_t x) const {
    return data.data<float>()[((c * nz() + z) * ny() + y) * nx() + x];
  }
};

}  // namespace voxinfer
