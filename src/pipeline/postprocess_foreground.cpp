// The largest connected component of the whole foreground (all non-zero labels as one), as
// brainchop's post-processing keeps it.
#include <algorithm>

#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/postprocess.h"

namespace voxinfer {

void keep_largest_foreground(Volume& labels, int connectivity) {
  VOXINFER_CHECK(labels.data.defined() && labels.channels() == 1, invalid_input,
                 "largest foreground component: expected a label map");
  Volume mask = labels;
  mask.data = Tensor(labels.data.shape(), DType::f32);
  const float* src = labels.channel(0);
  float* m = mask.channel(0);
  const std::int64_t n = labels.voxels();
  for (std::int64_t i = 0; i < n; ++i) m[i] = src[i] != 0.f ? 1.f : 0.f;
  const Components c = connected_components(mask, connectivity);
  if (c.count() <= 1) return;
  std::int64_t best = 1;
  for (std::int64_t id = 2; id <= c.count(); ++id)
    if (c.voxels[static_cast<std::size_t>(id)] > c.voxels[static_cast<std::size_t>(best)]) best = id;
  const std::int32_t* ids = c.ids.data<std::int32_t>();
  float* dst = labels.channel(0);
  for (std::int64_t i = 0; i < n; ++i)
    if (ids[i] != best) dst[i] = 0.f;
}

}  // namespace voxinfer
