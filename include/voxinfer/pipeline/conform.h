// NiiVue's conform(): any head volume resliced onto a 256^3 grid of 1 mm voxels in LIA
// orientation with uint8 intensities, as brainchop prepares every input (its ensureConformed
// calls NiiVue's conform(volume, toRAS=false, isLinear=true, asFloat32=false,
// isRobustMinMax=false)). The result is NiiVue's voxel for voxel: the same vox2vox map with
// gl-matrix's float32 storage, the same trilinear sampling and out-of-volume rule, the same
// robust maximum from a 1000-bin histogram for non-uint8 data and the same clamping and
// truncation to uint8. See docs/pipeline.md ("NiiVue's conform").
#pragma once

#include <array>
#include <cstdint>

#include "voxinfer/core/volume.h"

namespace voxinfer {

struct ConformOptions {
  std::array<std::int64_t, 3> size{256, 256, 256};  // output voxels along NIfTI i, j, k
  double voxel_mm = 1.0;
  bool to_ras = false;  // false: LIA (FreeSurfer's conformed orientation); true: RAS
  bool linear = true;   // trilinear; false: nearest neighbour (NiiVue rounds the source index)
};

// What conform computed, for reports and tests (NiiVue's names).
struct ConformParameters {
  double global_min = 0, global_max = 0;  // NiiVue's global range (central half of each axis)
  double src_min = 0, scale = 1;          // output = clamp(scale * (value - src_min), 0, 255)
  bool uint8_input = false;               // uint8 sources are not rescaled (scale 1)
  std::array<float, 16> out_affine{};     // RAS voxel-to-world of the output, row-major
  std::array<float, 16> inv_vox2vox{};    // output voxel -> input voxel (NIfTI i, j, k), row-major
};

// The metadata key that records a volume's on-disk voxel type ("uint8", "int16", "float32" ...);
// the image reader sets it. conform() rescales every type but uint8, as NiiVue does.
inline constexpr const char* kVoxelTypeKey = "voxel_type";

// brainchop's ensureConformed test: 256^3 voxels, stored as uint8 (the volume's
// metadata["voxel_type"]), axes pointing L, I, A (nearest-axis orientation). Like brainchop it
// does not look at the spacing.
bool is_niivue_conformed(const Volume& volume);

// NiiVue's conform of a single-channel volume (Error invalid_input for several channels).
// The result holds integers 0..255, metadata["voxel_type"] = "uint8", and the geometry of
// NiiVue's output affine; the input's other metadata is kept.
Volume niivue_conform(const Volume& volume, const ConformOptions& options = {}, ConformParameters* parameters = nullptr);

}  // namespace voxinfer
