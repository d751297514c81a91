// NIfTI-2 files, which ITK 5.2 cannot read (see nifti2.cpp).
#pragma once

#include <cstdint>
#include <string>

#include "voxinfer/core/volume.h"

namespace voxinfer {

// True when the (possibly gzipped) file starts with a NIfTI-2 header (sizeof_hdr 540).
bool is_nifti2_file(const std::string& path);

// Reads a NIfTI-2 file (.nii, .nii.gz, or a .hdr/.img pair) into a float32 Volume.
Volume read_nifti2(const std::string& path, std::int64_t max_voxels);

}  // namespace voxinfer
