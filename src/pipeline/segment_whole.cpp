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
  // Only the model-order image stays while the network runs: the preprocessed grid and its
  // crop are released once they gave it (their geometry is all that is needed afterwards).
  Volume full = preprocess_for_model(input, spec);
  const std::optional<Box> box = crop_box(full, spec, options);
  const std::array<std::int64_t, 3> begin = box ? box->begin : std::array<std::int64_t, 3>{0, 0, 0};
  const std::array<std::int64_t, 3> size =
      box ? std::array<std::int64_t, 3>{box->end[0] - box->begin[0], box->end[1] - box->begin[1],
                                        box->end[2] - box->begin[2]}
          : std::array<std::int64_t, 3>{full.nx(), full.ny(), full.nz()};
  const Geometry full_geometry = full.geometry;
  const std::array<std::int64_t, 3> full_size{full.nx(), full.ny(), full.nz()};
  Tensor image;
  {
    const Volume v = box ? crop_or_pad(full, begin, size) : std::move(full);
    full = Volume();
    result.model_geometry = v.geometry;
    image = to_model_tensor(v, spec.axes);
  }
  result.model_size = size;

  if (options.progress) options.progress(0, 1);
  const auto ms = xyz_to_model(size, spec.axes);
  result.window.tiles = 1;
  result.window.batches = 1;
  result.window.network_calls = 1;
  Tensor labels_model;
  // Argmax labels straight from a streaming network: no logits.
  if (options.whole_argmax && spec.postprocess.activation != Activation::sigmoid) {
    if (std::optional<Tensor> streamed = options.whole_argmax(image)) {
      VOXINFER_CHECK(streamed->rank() == 4 && streamed->dim(1) == ms[0] && streamed->dim(2) == ms[1] &&
                         streamed->dim(3) == ms[2],
                     internal, "segment: the streamed labels " + streamed->shape().str() + " do not match the input");
      labels_model = *streamed;
    }
  }
  if (!labels_model.defined()) {
    Tensor logits = network(image);
    image = Tensor();
    VOXINFER_CHECK(logits.dtype() == DType::f32 && logits.rank() == 5 && logits.dim(0) == 1, invalid_model,
                   "segment: the network output must be f32 [1, K, D, H, W], got " + logits.shape().str());
    VOXINFER_CHECK(logits.dim(2) == ms[0] && logits.dim(3) == ms[1] && logits.dim(4) == ms[2], invalid_model,
                   "segment: the network output " + logits.shape().str() + " does not keep the input's spatial size");
    const std::int64_t k = logits.dim(1);
    result.window.out_channels = k;
    std::vector<int> values;
    for (const auto& l : spec.labels) values.push_back(l.value);
    const Tensor flat = logits.contiguous().reshape(Shape{k, ms[0], ms[1], ms[2]});
    logits = Tensor();
    labels_model =
        predict_labels(flat, spec.postprocess.activation, static_cast<float>(spec.postprocess.threshold), values);
  }
  image = Tensor();
  if (options.progress) options.progress(1, 1);

  const Volume cropped = volume_from_model_tensor(labels_model, spec.axes, result.model_geometry);
  labels_model = Tensor();
  // Paste into a zero volume of the whole model grid.
  Volume whole(1, full_size[2], full_size[1], full_size[0], full_geometry);
  std::fill_n(whole.channel(0), whole.voxels(), 0.f);
  for (std::int64_t z = 0; z < size[2]; ++z)
    for (std::int64_t y = 0; y < size[1]; ++y)
      std::memcpy(whole.channel(0) + ((z + begin[2]) * full_size[1] + y + begin[1]) * full_size[0] + begin[0],
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
