// Whole-volume segmentation (inference.roi_size "whole"): the network sees the whole
// preprocessed grid, or the box of a mask around the foreground, once, with no tiles and no
// padding, as brainchop runs its fully convolutional MeshNets. The labels are the argmax on
// that grid, pasted into a zero volume of the model grid and brought back onto the input's
// grid (copied when the grids are the same, nearest neighbour otherwise).
#include <algorithm>
#include <cstring>

#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/preprocess.h"
#include "voxinfer/pipeline/segment.h"

namespace voxinfer {
namespace {

bool same_grid(const Volume& a, const Volume& b) {
  return a.nx() == b.nx() && a.ny() == b.ny() && a.nz() == b.nz() && a.geometry.spacing == b.geometry.spacing &&
         a.geometry.origin == b.geometry.origin && a.geometry.direction == b.geometry.direction;
}

float maximum(const Volume& v) {
  float m = -std::numeric_limits<float>::infinity();
  const float* p = v.data.data<float>();
  for (std::int64_t i = 0; i < v.data.numel(); ++i) m = std::max(m, p[i]);
  return m;
}

// The box the network sees, on the model grid `full` (nullopt: the whole grid).
std::optional<Box> crop_box(const Volume& full, const PipelineSpec& spec, const SegmentOptions& options) {
  if (!spec.preprocess.crop_foreground) return std::nullopt;
  const ForegroundCropSpec& c = *spec.preprocess.crop_foreground;
  if (options.crop_mask) {
    const Volume& m = *options.crop_mask;
    const Volume on_grid = same_grid(m, full) ? m
                                              : resample_to_grid(m, full.geometry, {full.nx(), full.ny(), full.nz()},
                                                                 Interpolation::nearest);
    return foreground_box(on_grid, c.margin);
  }
  VOXINFER_CHECK(c.model.empty(), internal, "segment: the pre-model's mask is missing");
  if (c.threshold > 0) {
    // brainchop: normalised > max * threshold, the product in float32.
    const float level = maximum(full) * static_cast<float>(c.threshold);
    return foreground_box(full, c.margin, level);
  }
  return foreground_box(full, c.margin);
}

}  // namespace

SegmentResult segment_whole_volume(const Volume& input, const PipelineSpec& spec, const TileCallback& network,
                                   const SegmentOptions& options) {
  VOXINFER_CHECK(spec.task == Task::segmentation, invalid_model, "segment: the model package is not a segmentation");
  SegmentResult result;
  const Volume full = preprocess_for_model(input, spec);
  const std::optional<Box> box = crop_box(full, spec, options);
  const std::array<std::int64_t, 3> begin = box ? box->begin : std::array<std::int64_t, 3>{0, 0, 0};
  const std::array<std::int64_t, 3> size =
      box ? std::array<std::int64_t, 3>{box->end[0] - box->begin[0], box->end[1] - box->begin[1],
                                        box->end[2] - box->begin[2]}
          : std::array<std::int64_t, 3>{full.nx(), full.ny(), full.nz()};
  const Volume v = box ? crop_or_pad(full, begin, size) : full;
  result.model_size = size;
  result.model_geometry = v.geometry;

  if (options.progress) options.progress(0, 1);
  Tensor logits;
  {
    const Tensor image = to_model_tensor(v, spec.axes);
    logits = network(image);
  }
  VOXINFER_CHECK(logits.dtype() == DType::f32 && logits.rank() == 5 && logits.dim(0) == 1, invalid_model,
                 "segment: the network output must be f32 [1, K, D, H, W], got " + logits.shape().str());
  const auto ms = xyz_to_model(size, spec.axes);
  VOXINFER_CHECK(logits.dim(2) == ms[0] && logits.dim(3) == ms[1] && logits.dim(4) == ms[2], invalid_model,
                 "segment: the network output " + logits.shape().str() + " does not keep the input's spatial size");
  const std::int64_t k = logits.dim(1);
  result.window.tiles = 1;
  result.window.batches = 1;
  result.window.network_calls = 1;
  result.window.out_channels = k;
  if (options.progress) options.progress(1, 1);

  std::vector<int> values;
  for (const auto& l : spec.labels) values.push_back(l.value);
  Tensor labels_model;
  {
    const Tensor flat = logits.contiguous().reshape(Shape{k, ms[0], ms[1], ms[2]});
    labels_model =
        predict_labels(flat, spec.postprocess.activation, static_cast<float>(spec.postprocess.threshold), values);
    logits = Tensor();
  }
  const Volume cropped = volume_from_model_tensor(labels_model, spec.axes, v.geometry);
  // Paste into a zero volume of the whole model grid.
  Volume whole(1, full.nz(), full.ny(), full.nx(), full.geometry);
  std::fill_n(whole.channel(0), whole.voxels(), 0.f);
  for (std::int64_t z = 0; z < size[2]; ++z)
    for (std::int64_t y = 0; y < size[1]; ++y)
      std::memcpy(whole.channel(0) + ((z + begin[2]) * full.ny() + y + begin[1]) * full.nx() + begin[0],
                  cropped.channel(0) + (z * size[1] + y) * size[0], static_cast<std::size_t>(size[0]) * sizeof(float));
  result.labels =
      same_grid(whole, input)
          ? std::move(whole)
          : resample_to_grid(whole, input.geometry, {input.nx(), input.ny(), input.nz()}, Interpolation::nearest);
  result.labels.geometry = input.geometry;
  result.labels.metadata = input.metadata;
  postprocess_labels(result.labels, spec.postprocess);
  result.statistics = label_statistics(result.labels, input, spec.labels);
  return result;
}

}  // namespace voxinfer
