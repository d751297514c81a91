// Preview picture of a segmentation: axial, coronal and sagittal slices through the
// segmentation's centre, the image in grey with the labels as a coloured overlay,
// and a legend. Displayed in radiological convention (patient's left on the right,
// anterior and superior up).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "voxinfer/core/volume.h"
#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer {

struct RgbImage {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  // row-major from the top, 3 bytes per pixel
};

// `labels` must lie on `image`'s grid. Labels without a colour get one from a fixed palette.
RgbImage render_preview(const Volume& image, const Volume& labels, std::span<const LabelSpec> label_specs);

// The colour used for a label value (its spec's colour or the palette's).
std::array<int, 3> label_color(int value, std::span<const LabelSpec> label_specs);

}  // namespace voxinfer
