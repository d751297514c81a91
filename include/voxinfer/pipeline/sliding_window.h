// Sliding-window inference as nnU-Net and MONAI define it: tiles placed per axis,
// padding when the image is smaller than a tile, Gaussian (or constant) importance
// weighting, batched network calls through a callback, optional mirror test-time
// augmentation, fp32 accumulation. The streaming form finishes output slabs along the
// slowest axis as soon as no later tile touches them, so its memory grows with a slab,
// not with K x volume. All tensors here are in the model's axis order.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "voxinfer/core/tensor.h"
#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer {

using Size3 = std::array<std::int64_t, 3>;

// The network: a batch [B, C, r0, r1, r2] in, logits [B, K, r0, r1, r2] out (K fixed over
// calls). The returned tensor is read before the next call, so it may alias the
// network's own buffers.
using TileCallback = std::function<Tensor(const Tensor& batch_input)>;

// Receives finished output planes [begin, begin + n) along axis 0 as a contiguous
// [K, n, S1, S2] tensor (weighted average, no activation), in increasing order, each
// plane exactly once. The tensor is reused afterwards: copy what must be kept.
using SlabConsumer = std::function<void(const Tensor& slab, std::int64_t begin)>;

// Called after each batch with the tiles done so far and the total.
using ProgressCallback = std::function<void(std::int64_t tiles_done, std::int64_t tiles_total)>;

struct SlidingWindowOptions {
  Size3 roi_size{0, 0, 0};
  std::array<double, 3> overlap{0.5, 0.5, 0.5};
  BlendMode blend = BlendMode::gaussian;
  double sigma_scale = 0.125;
  WindowStyle style = WindowStyle::nnunet;
  std::vector<int> mirror_axes;  // spatial axes 0..2; all non-empty subsets are run and averaged
  std::int64_t batch = 1;        // the last batch may be smaller
  float pad_value = 0;           // fills the padding of images smaller than a tile
  bool pad_replicate = false;    // pad with the nearest edge voxel instead of pad_value
  ProgressCallback progress;

  static SlidingWindowOptions from_spec(const InferenceSpec& spec);
};

// Tile starts along one axis of `size` (>= roi) voxels:
//   nnunet: n = ceil((size - roi) / (roi * (1 - overlap))) + 1 tiles spread evenly,
//           start_i = round_half_even(i * (size - roi) / (n - 1))   (compute_steps_for_sliding_window)
//   monai:  stride = max(1, int(roi * (1 - overlap))) (roi when size == roi), tiles at
//           i * stride until one reaches the end, the last moved back to size - roi
//           (dense_patch_slices).
std::vector<std::int64_t> tile_starts(std::int64_t size, std::int64_t roi, double overlap, WindowStyle style);

// Importance map [r0, r1, r2] (f32), with sigma_a = sigma_scale * r_a:
//   nnunet: prod_a exp(-(i_a - r_a/2)^2 / (2 sigma_a^2)) (integer centre r_a/2), zero beyond
//           scipy's truncation radius int(4 sigma_a + 0.5), max 1, zeros replaced by the
//           smallest non-zero value (compute_gaussian).
//   monai:  prod_a exp(-(i_a - (r_a - 1)/2)^2 / (2 sigma_a^2)) in f32, clamped below at
//           max(min, 1e-3) (compute_importance_map).
//   constant blend: all ones.
Tensor importance_map(const Size3& roi, BlendMode blend, double sigma_scale, WindowStyle style);

// Where tiles go for an image of `image_size` (model order), in run order (axis 0 slowest).
struct SlidingWindowPlan {
  Size3 image_size{}, padded_size{}, pad_lo{}, roi{};
  std::array<std::vector<std::int64_t>, 3> starts;  // per axis, in padded coordinates
  std::vector<Size3> tiles;                         // run order, padded coordinates
  std::int64_t batch = 1;
  std::int64_t ring_planes = 0;  // axis-0 planes the streaming accumulator holds
  std::int64_t max_slab_planes = 0;
  int tta_passes = 1;            // 1 + number of mirror combinations
};
SlidingWindowPlan plan_sliding_window(const Size3& image_size, const SlidingWindowOptions& options);

// Bytes of the buffers sliding_window_stream (stream) or sliding_window (!stream) holds
// at once at most, for C input and K output channels: accumulator and weight sum, the
// emitted slab or the full output, the importance map, the batch input and the network
// output (and with TTA the flipped input and the running sum). Excludes the input image
// and the network's own working memory.
std::size_t predicted_peak_bytes(const SlidingWindowPlan& plan, std::int64_t in_channels, std::int64_t out_channels,
                                 bool stream = true);

struct SlidingWindowStats {
  std::int64_t tiles = 0, batches = 0, network_calls = 0, out_channels = 0;
  std::size_t predicted_peak_bytes = 0;  // predicted_peak_bytes() for this run
  std::size_t measured_peak_bytes = 0;   // the same buffers, tracked while running
};

// Streams the weighted-average logits of `image` ([C, S0, S1, S2] or [1, C, S0, S1, S2],
// f32) to `consumer` slab by slab. Throws Error(invalid_model) when the callback returns
// a tensor of the wrong shape.
void sliding_window_stream(const Tensor& image, const SlidingWindowOptions& options, const TileCallback& network,
                           const SlabConsumer& consumer, SlidingWindowStats* stats = nullptr);

// Whole-volume mode for small volumes: the full [K, S0, S1, S2] result at once.
Tensor sliding_window(const Tensor& image, const SlidingWindowOptions& options, const TileCallback& network,
                      SlidingWindowStats* stats = nullptr);

// Reverses a [B, C, r0, r1, r2] tensor along the flagged spatial axes (a copy).
Tensor flip_spatial(const Tensor& t, const std::array<bool, 3>& axes);

}  // namespace voxinfer
