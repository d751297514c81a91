// Segmentation over a network callback, with the output resampled slab by slab.
#include "voxinfer/pipeline/segment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/pipeline/postprocess.h"
#include "voxinfer/pipeline/preprocess.h"

namespace voxinfer {
namespace {

// Same rule as resample_to_grid: snap near-integers, clamp to the grid, split.
struct Tap {
  std::int64_t i0, i1;
  float w;
};

inline Tap tap(double x, std::int64_t n) {
  const double r = std::nearbyint(x);
  if (std::abs(x - r) < 1e-6) x = r;
  const double q = std::clamp(x, 0.0, static_cast<double>(n - 1));
  const auto i0 = static_cast<std::int64_t>(std::floor(q));
  const auto w = static_cast<float>(q - static_cast<double>(i0));
  // Without weight the upper neighbour is not read: its plane may not have arrived yet.
  return {i0, w > 0.f ? std::min(i0 + 1, n - 1) : i0, w};
}

// The highest plane a sample needs along an axis.
inline std::int64_t needed_plane(double x, std::int64_t n) {
  return tap(x, n).i1;
}

inline float lerp(float a, float b, float w) { return w == 0.f ? a : (1.f - w) * a + w * b; }

}  // namespace

SlabResampler::SlabResampler(const Geometry& model_geometry, const std::array<std::int64_t, 3>& model_size,
                             AxisOrder axes, const Geometry& target_geometry,
                             const std::array<std::int64_t, 3>& target_size, Activation activation, float threshold,
                             std::vector<int> sigmoid_values, bool activated)
    : model_size_(model_size),
      target_size_(target_size),
      activation_(activation),
      threshold_(threshold),
      activated_(activated),
      values_(std::move(sigmoid_values)),
      out_(1, target_size[2], target_size[1], target_size[0], target_geometry) {
  const Eigen::Matrix3d in_inv = (model_geometry.direction * model_geometry.spacing.asDiagonal()).inverse();
  m_ = in_inv * target_geometry.direction * target_geometry.spacing.asDiagonal();
  b_ = in_inv * (target_geometry.origin - model_geometry.origin);
  vol_axis_ = axes == AxisOrder::zyx ? std::array<int, 3>{2, 1, 0} : std::array<int, 3>{0, 1, 2};
}

float SlabResampler::label_of(const float* v) const {
  if (activation_ == Activation::sigmoid) {
    float label = 0;
    for (std::int64_t k = 0; k < k_; ++k)
      if ((activated_ ? v[k] : 1.f / (1.f + std::exp(-v[k]))) >= threshold_) label = static_cast<float>(values_[static_cast<std::size_t>(k)]);
    return label;
  }
  std::int64_t best = 0;  // softmax keeps the argmax
  for (std::int64_t k = 1; k < k_; ++k)
    if (v[k] > v[best]) best = k;
  return static_cast<float>(best);
}

void SlabResampler::set_rule(std::shared_ptr<const VoxelRule> rule, bool keep_channels) {
  rule_ = std::move(rule);
  keep_masks_ = keep_channels && rule_ && rule_->out_channels() > 1;
}

void SlabResampler::keep_probabilities() { keep_probabilities_ = true; }

void SlabResampler::consume(const Tensor& slab_in, std::int64_t begin) {
  const auto a0 = static_cast<std::size_t>(vol_axis_[0]), a1 = static_cast<std::size_t>(vol_axis_[1]),
             a2 = static_cast<std::size_t>(vol_axis_[2]);
  const std::int64_t s0 = model_size_[a0], s1 = model_size_[a1], s2 = model_size_[a2];
  VOXINFER_CHECK(slab_in.dtype() == DType::f32 && slab_in.rank() == 4 && slab_in.dim(2) == s1 && slab_in.dim(3) == s2,
                 invalid_input, "slab resampler: expected a slab [K, n, " + std::to_string(s1) + ", " + std::to_string(s2) +
                                    "], got " + slab_in.shape().str());
  VOXINFER_CHECK(begin == next_ && begin + slab_in.dim(1) <= s0, invalid_input,
                 "slab resampler: slabs must arrive in order (expected plane " + std::to_string(next_) + ", got " +
                     std::to_string(begin) + ")");
  if (k_ == 0) {
    k_ = slab_in.dim(0);
    VOXINFER_CHECK(activation_ != Activation::sigmoid || static_cast<std::int64_t>(values_.size()) == k_, invalid_model,
                   "the network has " + std::to_string(k_) + " output channels but " + std::to_string(values_.size()) +
                       " labels are listed (sigmoid outputs need one label per channel)");
  }
  VOXINFER_CHECK(slab_in.dim(0) == k_, invalid_input, "slab resampler: the channel count changed between slabs");
  VOXINFER_CHECK(!rule_ || rule_->in_channels() == k_, invalid_model,
                 "the network has " + std::to_string(k_) + " output channels, the post-processing expects " +
                     std::to_string(rule_ ? rule_->in_channels() : 0));
  if (begin == 0) {
    if (keep_masks_) masks_ = Volume(rule_->out_channels(), target_size_[2], target_size_[1], target_size_[0], out_.geometry);
    if (keep_probabilities_) probabilities_ = Volume(k_, target_size_[2], target_size_[1], target_size_[0], out_.geometry);
  }
  const Tensor slab = slab_in.contiguous();
  const std::int64_t n = slab.dim(1), end = begin + n;
  const float* sp = slab.data<float>();
  const float* hp = halo_.defined() ? halo_.data<float>() : nullptr;
  const std::int64_t plane = s1 * s2;
  const std::int64_t tx = target_size_[0], ty = target_size_[1], tz = target_size_[2];
  float* out = out_.channel(0);
  const Eigen::Matrix3d m = m_;
  const Eigen::Vector3d b = b_;
  auto src_of = [&](std::int64_t x, std::int64_t y, std::int64_t z) {
    return Eigen::Vector3d(m * Eigen::Vector3d(static_cast<double>(x), static_cast<double>(y), static_cast<double>(z)) + b);
  };
  const bool increasing = m(static_cast<int>(a0), 0) >= 0;
  parallel_for(ty * tz, 16, [&](std::int64_t rb, std::int64_t re) {
    std::vector<float> v(static_cast<std::size_t>(k_));
    std::vector<float> scratch(rule_ ? rule_->scratch_size() : 0);
    std::vector<float> mask(rule_ ? static_cast<std::size_t>(rule_->out_channels()) : 0);
    const std::int64_t target_voxels = tx * ty * tz;
    for (std::int64_t row = rb; row < re; ++row) {
      const std::int64_t y = row % ty, z = row / ty;
      auto need = [&](std::int64_t x) { return needed_plane(src_of(x, y, z)[static_cast<int>(a0)], s0); };
      // `need` is monotone along the row: binary-search the run of x that needs [begin, end).
      auto first = [&](auto pred) {
        std::int64_t lo = 0, hi = tx;
        while (lo < hi) {
          const std::int64_t mid = (lo + hi) / 2;
          if (pred(need(mid))) hi = mid;
          else lo = mid + 1;
        }
        return lo;
      };
      std::int64_t x_lo, x_hi;
      if (increasing) {
        x_lo = first([&](std::int64_t p) { return p >= begin; });
        x_hi = first([&](std::int64_t p) { return p >= end; });
      } else {
        x_lo = first([&](std::int64_t p) { return p < end; });
        x_hi = first([&](std::int64_t p) { return p < begin; });
      }
      for (std::int64_t x = x_lo; x < x_hi; ++x) {
        const Eigen::Vector3d s = src_of(x, y, z);
        // Taps per Volume axis (x, y, z), then where each corner's values lie: corner
        // c = cx + 2 cy + 4 cz reads base[c][k * stride[c]] for channel k.
        std::array<Tap, 3> t{};
        for (int a = 0; a < 3; ++a) t[static_cast<std::size_t>(a)] = tap(s[a], model_size_[static_cast<std::size_t>(a)]);
        std::array<const float*, 8> base{};
        std::array<std::int64_t, 8> stride{};
        for (int c = 0; c < 8; ++c) {
          const std::array<std::int64_t, 3> idx{c & 1 ? t[0].i1 : t[0].i0, c & 2 ? t[1].i1 : t[1].i0, c & 4 ? t[2].i1 : t[2].i0};
          const std::int64_t p = idx[a0], off = idx[a1] * s2 + idx[a2];
          const auto k = static_cast<std::size_t>(c);
          if (p >= begin) {
            base[k] = sp + (p - begin) * plane + off;
            stride[k] = n * plane;
          } else {  // the halo holds plane begin - 1
            base[k] = hp + off;
            stride[k] = plane;
          }
        }
        for (std::int64_t k = 0; k < k_; ++k) {
          auto at = [&](int c) { return base[static_cast<std::size_t>(c)][k * stride[static_cast<std::size_t>(c)]]; };
          // Same order as resample_to_grid: along x, then y, then z.
          const float c00 = lerp(at(0), at(1), t[0].w);
          const float c01 = lerp(at(2), at(3), t[0].w);
          const float c10 = lerp(at(4), at(5), t[0].w);
          const float c11 = lerp(at(6), at(7), t[0].w);
          v[static_cast<std::size_t>(k)] = lerp(lerp(c00, c01, t[1].w), lerp(c10, c11, t[1].w), t[2].w);
        }
        const std::int64_t at = (z * ty + y) * tx + x;
        if (rule_) {
          out[at] = rule_->label(v.data(), activated_, scratch.data());
          if (keep_masks_) {
            rule_->channels(v.data(), activated_, scratch.data(), mask.data());
            for (std::size_t c = 0; c < mask.size(); ++c) masks_.data.data<float>()[static_cast<std::int64_t>(c) * target_voxels + at] = mask[c] != 0.f ? 1.f : 0.f;
          }
        } else {
          out[at] = label_of(v.data());
        }
        if (keep_probabilities_) {
          float* p = probabilities_.data.data<float>() + at;
          if (!activated_ && activation_ == Activation::softmax) {
            float m = v[0];
            for (std::int64_t k = 1; k < k_; ++k) m = std::max(m, v[static_cast<std::size_t>(k)]);
            float sum = 0;
            for (std::int64_t k = 0; k < k_; ++k) sum += std::exp(v[static_cast<std::size_t>(k)] - m);
            for (std::int64_t k = 0; k < k_; ++k) p[k * target_voxels] = std::exp(v[static_cast<std::size_t>(k)] - m) / sum;
          } else if (!activated_ && activation_ == Activation::sigmoid) {
            for (std::int64_t k = 0; k < k_; ++k) p[k * target_voxels] = 1.f / (1.f + std::exp(-v[static_cast<std::size_t>(k)]));
          } else {
            for (std::int64_t k = 0; k < k_; ++k) p[k * target_voxels] = v[static_cast<std::size_t>(k)];
          }
        }
      }
    }
  });
  // Keep the last plane for the next slab's interpolation.
  Tensor halo(Shape{k_, s1, s2}, DType::f32);
  for (std::int64_t k = 0; k < k_; ++k)
    std::memcpy(halo.data<float>() + k * plane, sp + (k * n + n - 1) * plane, static_cast<std::size_t>(plane) * sizeof(float));
  halo_ = halo;
  next_ = end;
}

Volume SlabResampler::finish() {
  const std::int64_t s0 = model_size_[static_cast<std::size_t>(vol_axis_[0])];
  VOXINFER_CHECK(next_ == s0, internal,
                 "slab resampler: only " + std::to_string(next_) + " of " + std::to_string(s0) + " planes arrived");
  halo_ = Tensor();
  return out_;
}

Volume preprocess_for_model(const Volume& input, const PipelineSpec& spec) {
  VOXINFER_CHECK(input.data.defined() && input.data.rank() == 4, invalid_input, "segment: the input volume is empty");
  VOXINFER_CHECK(input.channels() == spec.input.channels, invalid_input,
                 "the model takes " + std::to_string(spec.input.channels) + " input channel(s), the input has " +
                     std::to_string(input.channels()));
  input.geometry.validate("input volume");
  Volume v = spec.preprocess.orientation ? reorient(input, *spec.preprocess.orientation) : input;
  if (spec.preprocess.spacing)
    v = resample_to_spacing(v, model_to_xyz(*spec.preprocess.spacing, spec.axes), Interpolation::linear,
                            spec.preprocess.size_rule);
  if (v.data.shares_storage_with(input.data)) v.data = v.data.clone();  // intensity ops work in place
  apply_intensity(v, spec.preprocess.intensity);
  if (spec.preprocess.resize) v = resize(v, model_to_xyz(*spec.preprocess.resize, spec.axes));
  if (spec.preprocess.crop) {
    const auto size = model_to_xyz(spec.preprocess.crop->size, spec.axes);
    v = spec.preprocess.crop->mode == CropSpec::Mode::center ? center_crop_or_pad(v, size)
                                                             : foreground_crop(v, size, spec.preprocess.crop->margin);
  }
  return v;
}

SegmentResult segment_volume(const Volume& input, const PipelineSpec& spec, const TileCallback& network,
                             const SegmentOptions& options) {
  if (spec.inference.whole_volume) return segment_whole_volume(input, spec, network, options);
  VOXINFER_CHECK(spec.task == Task::segmentation, invalid_model, "segment: the model package is not a segmentation");
  SegmentResult result;
  const Volume full = preprocess_for_model(input, spec);
  // A foreground crop: the network sees the box, its output is padded back with zeros.
  std::optional<Box> box;
  if (spec.preprocess.crop_foreground) box = foreground_box(full, spec.preprocess.crop_foreground->margin);
  if (box) {
    const auto k = model_to_xyz(spec.preprocess.crop_foreground->k_divisible, spec.axes);
    for (std::size_t a = 0; a < 3; ++a) {
      if (k[a] <= 1) continue;
      const std::int64_t n = box->end[a] - box->begin[a], t = (n + k[a] - 1) / k[a] * k[a];
      box->begin[a] -= (t - n) / 2;
      box->end[a] = box->begin[a] + t;
    }
  }
  float pad_value = 0;
  if (spec.preprocess.pad) {
    // SpatialPadd / DivisiblePadd: the (cropped) box grown per axis; the output is cropped back.
    const PadSpec& pad = *spec.preprocess.pad;
    Box b = box ? *box : Box{{0, 0, 0}, {full.nx(), full.ny(), full.nz()}};
    const auto at_least = model_to_xyz(pad.size, spec.axes);
    const auto k = model_to_xyz(pad.divisible, spec.axes);
    for (std::size_t a = 0; a < 3; ++a) {
      const std::int64_t n = b.end[a] - b.begin[a];
      std::int64_t t = std::max(n, at_least[a]);
      if (k[a] > 1) t = (t + k[a] - 1) / k[a] * k[a];
      const std::int64_t lo = pad.at_end ? 0 : (t - n) / 2;
      b.begin[a] -= lo;
      b.end[a] = b.begin[a] + t;
    }
    box = b;
    pad_value = static_cast<float>(pad.value);
  }
  const Volume v = box ? crop_or_pad(full, box->begin,
                                     {box->end[0] - box->begin[0], box->end[1] - box->begin[1], box->end[2] - box->begin[2]},
                                     pad_value)
                       : full;
  result.model_size = {v.nx(), v.ny(), v.nz()};
  result.model_geometry = v.geometry;
  const Tensor image = to_model_tensor(v, spec.axes);

  SlidingWindowOptions sw = SlidingWindowOptions::from_spec(spec.inference);
  if (spec.inference.single_tile) {
    sw.roi_size = xyz_to_model(result.model_size, spec.axes);
    sw.overlap = {0, 0, 0};
  }
  if (options.overlap && !spec.inference.single_tile) sw.overlap = *options.overlap;
  if (options.tta) {
    if (!*options.tta) sw.mirror_axes.clear();
    else if (sw.mirror_axes.empty()) sw.mirror_axes = {0, 1, 2};
  }
  sw.progress = options.progress;

  std::vector<int> values;
  for (const auto& l : spec.labels) values.push_back(l.value);
  const bool probabilities = spec.inference.average == AverageSpace::probabilities;
  const bool resample_probabilities = spec.postprocess.resample == ResampleSpace::probabilities;
  // MONAI's AsDiscreted before Invertd: the labels are made on the model grid itself.
  const bool model_grid_labels = spec.postprocess.labels_on_model_grid;
  SlabResampler resampler(full.geometry, {full.nx(), full.ny(), full.nz()}, spec.axes,
                          model_grid_labels ? full.geometry : input.geometry,
                          model_grid_labels ? std::array<std::int64_t, 3>{full.nx(), full.ny(), full.nz()}
                                            : std::array<std::int64_t, 3>{input.nx(), input.ny(), input.nz()},
                          spec.postprocess.activation, static_cast<float>(spec.postprocess.threshold), values,
                          probabilities || resample_probabilities);
  if (!spec.postprocess.lambdas.empty() || !spec.postprocess.lambdas_before.empty() ||
      spec.postprocess.discretize != Discretize::by_activation || spec.postprocess.activation == Activation::sigmoid) {
    // The network's channel count: the spec's labels say it for sigmoid outputs; MONAI's
    // chains name it in the spec's out_channels.
    const std::int64_t k = spec.postprocess.out_channels > 0 ? spec.postprocess.out_channels
                                                              : static_cast<std::int64_t>(values.size());
    if (!spec.postprocess.lambdas.empty() || !spec.postprocess.lambdas_before.empty() ||
        spec.postprocess.discretize != Discretize::by_activation)
      resampler.set_rule(std::make_shared<const VoxelRule>(spec.postprocess, k, values), true);
    else if (k > 1)
      resampler.set_rule(std::make_shared<const VoxelRule>(spec.postprocess, k, values), true);
  }
  if (options.probabilities) resampler.keep_probabilities();
  // The cropped grid's slabs padded with zeros onto the whole grid (model order), planes
  // outside the box along axis 0 emitted as zero slabs before and after.
  SlabConsumer to_resampler = resampler.consumer();
  Tensor padded_slab;
  if (box) {
    const auto lo = xyz_to_model(box->begin, spec.axes);
    const auto full_size = xyz_to_model(std::array<std::int64_t, 3>{full.nx(), full.ny(), full.nz()}, spec.axes);
    const auto crop_size = xyz_to_model(result.model_size, spec.axes);
    to_resampler = [&resampler, lo, full_size, crop_size, &padded_slab](const Tensor& slab_in, std::int64_t begin) {
      // The box may reach outside the whole grid (padding): only its part inside is kept.
      const Tensor slab = slab_in.contiguous();
      const std::int64_t k = slab.dim(0), n = slab.dim(1), c1 = crop_size[1], c2 = crop_size[2];
      const std::int64_t f0 = full_size[0], f1 = full_size[1], f2 = full_size[2];
      auto zeros = [&](std::int64_t at, std::int64_t planes) {
        if (planes <= 0) return;
        Tensor z(Shape{k, planes, f1, f2}, DType::f32);
        std::fill_n(z.data<float>(), z.numel(), 0.f);
        resampler.consume(z, at);
      };
      if (begin == 0) zeros(0, lo[0]);
      const std::int64_t p_a = std::max<std::int64_t>(0, -lo[0] - begin), p_b = std::min(n, f0 - lo[0] - begin);
      if (p_a < p_b) {
        const std::int64_t m = p_b - p_a;
        if (!padded_slab.defined() || padded_slab.dim(1) != m || padded_slab.dim(0) != k)
          padded_slab = Tensor(Shape{k, m, f1, f2}, DType::f32);
        float* dst = padded_slab.data<float>();
        std::fill_n(dst, padded_slab.numel(), 0.f);
        const float* src = slab.data<float>();
        const std::int64_t i_a = std::max<std::int64_t>(0, -lo[1]), i_b = std::min(c1, f1 - lo[1]);
        const std::int64_t j_a = std::max<std::int64_t>(0, -lo[2]), j_b = std::min(c2, f2 - lo[2]);
        for (std::int64_t c = 0; c < k && j_a < j_b; ++c)
          for (std::int64_t p = p_a; p < p_b; ++p)
            for (std::int64_t i = i_a; i < i_b; ++i)
              std::copy(src + ((c * n + p) * c1 + i) * c2 + j_a, src + ((c * n + p) * c1 + i) * c2 + j_b,
                        dst + ((c * m + p - p_a) * f1 + lo[1] + i) * f2 + lo[2] + j_a);
        resampler.consume(padded_slab, lo[0] + begin + p_a);
      }
      if (begin + n == crop_size[0]) zeros(lo[0] + crop_size[0], f0 - lo[0] - crop_size[0]);
    };
  }
  // Resampling probabilities: each finished slab is activated on the model grid first (when
  // the tiles did not average probabilities already), into one reused buffer.
  Tensor activated_slab;
  const SlabConsumer activating_consumer = [&](const Tensor& slab, std::int64_t begin) {
    if (!activated_slab.defined() || activated_slab.shape() != slab.shape()) activated_slab = Tensor(slab.shape(), DType::f32);
    const Tensor src = slab.contiguous();
    std::memcpy(activated_slab.data<float>(), src.data<float>(), src.nbytes());
    apply_activation(activated_slab, spec.postprocess.activation);
    to_resampler(activated_slab, begin);
  };
  // Averaging probabilities: the activation goes on every network output (mirrored passes
  // included) before blending, into one reused buffer.
  Tensor activated;
  const TileCallback activated_network = [&](const Tensor& batch) {
    const Tensor out = network(batch);
    VOXINFER_CHECK(out.dtype() == DType::f32 && out.rank() == 5, invalid_model,
                   "segment: the network output must be f32 [B, K, D, H, W], got " + out.shape().str());
    if (!activated.defined() || activated.shape() != out.shape()) activated = Tensor(out.shape(), DType::f32);
    const Tensor src = out.contiguous();
    std::memcpy(activated.data<float>(), src.data<float>(), src.nbytes());
    const std::int64_t per_image = activated.numel() / activated.dim(0);
    for (std::int64_t b = 0; b < activated.dim(0); ++b) {
      Tensor image_b = Tensor::wrap(activated.data<float>() + b * per_image,
                                    Shape{activated.dim(1), activated.dim(2), activated.dim(3), activated.dim(4)}, DType::f32);
      apply_activation(image_b, spec.postprocess.activation);
    }
    return activated;
  };
  sliding_window_stream(image, sw, probabilities ? activated_network : network,
                        resample_probabilities && !probabilities ? activating_consumer : to_resampler,
                        &result.window);
  result.labels = resampler.finish();
  result.masks = resampler.masks();
  result.probabilities = resampler.probabilities();
  if (model_grid_labels) {
    // Invertd of a discrete map: the largest components kept on the model grid when MONAI
    // keeps them before Invertd, then each map resampled onto the input's grid.
    if (spec.postprocess.components_on_model_grid) postprocess_labels(result.labels, spec.postprocess);
    const std::array<std::int64_t, 3> size{input.nx(), input.ny(), input.nz()};
    const Interpolation interp = spec.postprocess.invert_nearest ? Interpolation::nearest : Interpolation::linear;
    result.labels = resample_to_grid(result.labels, input.geometry, size, interp);
    if (result.masks.data.defined()) result.masks = resample_to_grid(result.masks, input.geometry, size, interp);
    if (result.probabilities.data.defined())
      result.probabilities = resample_to_grid(result.probabilities, input.geometry, size, Interpolation::linear);
    result.labels.geometry = input.geometry;
  }
  if (result.masks.data.defined()) result.masks.metadata = input.metadata;
  result.labels.metadata = input.metadata;
  if (!(model_grid_labels && spec.postprocess.components_on_model_grid)) postprocess_labels(result.labels, spec.postprocess);
  if (model_grid_labels && !spec.postprocess.invert_nearest) {
    // Blended label values at the edges (MONAI's trilinear Invertd of a label map): the
    // statistics count each voxel under its nearest label value.
    Volume rounded = result.labels;
    rounded.data = result.labels.data.clone();
    float* p = rounded.channel(0);
    for (std::int64_t i = 0; i < rounded.voxels(); ++i) p[i] = std::floor(p[i] + 0.5f);
    result.statistics = label_statistics(rounded, input, spec.labels);
    return result;
  }
  result.statistics = label_statistics(result.labels, input, spec.labels);
  return result;
}

}  // namespace voxinfer
