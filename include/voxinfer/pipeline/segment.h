// The segmentation data flow of DESIGN.md over a network callback: reorient, resample,
// normalise, sliding window (streamed), logits resampled slab by slab straight onto the
// input's grid, activation and argmax there, postprocessing, statistics. The full
// K-channel output never exists at once: memory holds the input, the model-space image,
// one ring of tile planes and the label map.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "voxinfer/core/geometry.h"
#include "voxinfer/core/tensor.h"
#include "voxinfer/core/volume.h"
#include "voxinfer/pipeline/channel_expression.h"
#include "voxinfer/pipeline/pipeline_spec.h"
#include "voxinfer/pipeline/postprocess.h"
#include "voxinfer/pipeline/sliding_window.h"

namespace voxinfer {

// A SlabConsumer that turns model-order logit slabs of the model-space grid into labels on
// a target grid: each target voxel centre is mapped through physical space into the model
// grid, its K logits are interpolated trilinearly (border values outside, as when
// resampling), then the activation rule gives the label (argmax for softmax/none; sigmoid
// thresholds, one label value per channel). nnU-Net likewise resamples logits before the
// nonlinearity. Each target voxel is computed once, when the slab holding its upper
// neighbour plane arrives; the previous slab's last plane is kept for interpolation.
// With `activated` the slabs already hold probabilities (inference.average "probabilities"):
// sigmoid outputs are then thresholded as they are.
class SlabResampler {
 public:
  // `model_geometry`/`model_size` (x, y, z): the grid the network saw, as a Volume;
  // `axes`: the order of the slabs' axes; target grid as geometry + size (x, y, z).
  SlabResampler(const Geometry& model_geometry, const std::array<std::int64_t, 3>& model_size, AxisOrder axes,
                const Geometry& target_geometry, const std::array<std::int64_t, 3>& target_size,
                Activation activation, float threshold = 0.5f, std::vector<int> sigmoid_values = {},
                bool activated = false);

  // MONAI's post-processing chain (activation, Lambdad expressions, AsDiscreted) instead of
  // the rule above; with `keep_channels` its final channels are kept too when there are
  // several (overlapping label masks).
  void set_rule(std::shared_ptr<const VoxelRule> rule, bool keep_channels);
  // Also keep the activated values (probabilities; raw values for Activation::none), K channels
  // on the target grid.
  void keep_probabilities();

  void consume(const Tensor& slab, std::int64_t begin);
  SlabConsumer consumer() {
    return [this](const Tensor& slab, std::int64_t begin) { consume(slab, begin); };
  }
  // The label map on the target grid (single channel); throws unless every plane arrived.
  Volume finish();
  // After finish(): the kept channels (empty Volumes when not asked for).
  Volume masks() const { return masks_; }
  Volume probabilities() const { return probabilities_; }

 private:
  float label_of(const float* logits) const;

  Eigen::Matrix3d m_;  // target index -> model Volume index
  Eigen::Vector3d b_;
  std::array<std::int64_t, 3> model_size_{}, target_size_{};
  std::array<int, 3> vol_axis_{};  // slab axis j -> Volume index axis
  Activation activation_;
  float threshold_;
  bool activated_ = false;
  std::vector<int> values_;
  Volume out_;
  std::shared_ptr<const VoxelRule> rule_;
  bool keep_masks_ = false, keep_probabilities_ = false;
  Volume masks_, probabilities_;
  Tensor halo_;  // [K, S1, S2]: the last plane of the previous slab
  std::int64_t next_ = 0, k_ = 0;
};

struct SegmentOptions {
  std::optional<std::array<double, 3>> overlap;  // overrides inference.overlap
  std::optional<bool> tta;                       // false: no mirroring; true: mirror_axes, or all three if none
  ProgressCallback progress;
  // crop_foreground with a pre-model: its label map (on the input's grid); the network sees
  // the box of its non-zero voxels.
  std::optional<Volume> crop_mask;
  // inference.roi_size "whole" with argmax labels: the index of the largest output channel
  // per voxel (f32 [1, D, H, W]) for the model-order image [1, C, D, H, W], when the network can
  // give it without its whole output (plane streaming, graph/streaming.h); nullopt, and the
  // network callback runs instead. When it returns labels it may have let go of `image`.
  std::function<std::optional<Tensor>(Tensor& image)> whole_argmax;
  // Also return the activated values on the input's grid (SegmentResult::probabilities).
  bool probabilities = false;
};

struct SegmentResult {
  Volume labels;                        // single channel, exactly on the input's grid
  std::vector<LabelStats> statistics;   // over input channel 0, one entry per spec label
  SlidingWindowStats window;
  // Overlapping label masks (one 0/1 channel per label, in spec label order) when the
  // post-processing ends in several channels (sigmoid outputs, MONAI's Lambdad); else empty.
  Volume masks;
  // With SegmentOptions::probabilities: K channels on the input's grid; else empty.
  Volume probabilities;
  std::array<std::int64_t, 3> model_size{};  // the model-space grid (x, y, z)
  Geometry model_geometry;
};

// Preprocesses `input` as `spec` says and returns the model-space volume (before the axis
// order conversion): reorient, resample, intensity ops, then (classification) resize or
// crop. Checks the channel count (Error invalid_input). Shared by classification.
Volume preprocess_for_model(const Volume& input, const PipelineSpec& spec);

// inference.roi_size "whole": one network call on the whole (cropped) model grid, argmax,
// labels back onto the input's grid, postprocessing (segment_whole.cpp).
SegmentResult segment_whole_volume(const Volume& input, const PipelineSpec& spec, const TileCallback& network,
                                   const SegmentOptions& options = {});

// Runs the whole segmentation over `network` (tiles in, logits out: see TileCallback).
SegmentResult segment_volume(const Volume& input, const PipelineSpec& spec, const TileCallback& network,
                             const SegmentOptions& options = {});

}  // namespace voxinfer
