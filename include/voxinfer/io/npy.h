// NumPy .npy files (format versions 1.0, 2.0 and 3.0): f32, f16, f64, i64, i32, i16,
// u8 and bool, little or big endian, C or Fortran order. Reading always yields a
// contiguous, native-endian, C-order tensor.
#pragma once

#include <string>

#include "voxinfer/core/tensor.h"

namespace voxinfer {

// Reads a .npy file. Malformed files (bad magic, truncated data, a header whose shape
// does not match the file size) throw voxinfer::Error naming the file.
Tensor read_npy(const std::string& path);

// Writes a .npy (version 1.0, or 2.0 when the header needs it), little endian, C order.
// The file appears atomically: it is written under a temporary name and renamed.
void write_npy(const std::string& path, const Tensor& tensor);

}  // namespace voxinfer
