// ClassificationPipeline, occlusion sensitivity and flip-TTA uncertainty.
#include "voxinfer/pipeline/classification.h"

#include <cmath>
#include <cstring>

#include "voxinfer/core/threading.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/pipeline/postprocess.h"
#include "voxinfer/pipeline/preprocess.h"
#include "voxinfer/pipeline/segment.h"
#include "voxinfer/pipeline/sliding_window.h"

#include "pipeline/package.h"

namespace voxinfer {
namespace {

// Softmax or sigmoid over the last axis of [B, K] logits, in place.
void activate_rows(Tensor& t, Activation a) {
  const std::int64_t k = t.dim(-1), rows = t.numel() / std::max<std::int64_t>(k, 1);
  float* p = t.data<float>();
  for (std::int64_t r = 0; r < rows; ++r) {
    float* x = p + r * k;
    if (a == Activation::softmax) {
      float m = x[0];
      for (std::int64_t i = 1; i < k; ++i) m = std::max(m, x[i]);
      double s = 0;
      for (std::int64_t i = 0; i < k; ++i) s += std::exp(static_cast<double>(x[i] - m));
      for (std::int64_t i = 0; i < k; ++i) x[i] = static_cast<float>(std::exp(static_cast<double>(x[i] - m)) / s);
    } else if (a == Activation::sigmoid) {
      for (std::int64_t i = 0; i < k; ++i) x[i] = 1.f / (1.f + std::exp(-x[i]));
    }
  }
}

Tensor flip_image(const Tensor& t, const std::array<bool, 3>& axes) {
  // [B, C, S0, S1, S2]: flip_spatial works on the last three axes.
  return flip_spatial(t, axes);
}

}  // namespace

Tensor occlusion_sensitivity(const Tensor& image, const std::function<Tensor(const Tensor&)>& network,
                             const std::function<void(Tensor&)>& activate, const OcclusionOptions& o, int target,
                             std::int64_t* occlusions) {
  VOXINFER_CHECK(image.rank() == 5 && image.dim(0) == 1, invalid_input, "occlusion sensitivity needs a [1, C, S0, S1, S2] image");
  VOXINFER_CHECK(o.overlap >= 0 && o.overlap < 1, invalid_input, "occlusion overlap must be in [0, 1)");
  const std::int64_t c = image.dim(1);
  const std::array<std::int64_t, 3> size{image.dim(2), image.dim(3), image.dim(4)};
  std::array<std::int64_t, 3> m{};
  std::array<std::vector<std::int64_t>, 3> starts;
  for (int a = 0; a < 3; ++a) {
    const auto k = static_cast<std::size_t>(a);
    VOXINFER_CHECK(o.mask_size[k] > 0, invalid_input, "occlusion mask size must be positive");
    m[k] = std::min(o.mask_size[k], size[k]);
    starts[k] = tile_starts(size[k], m[k], o.overlap, WindowStyle::monai);
  }
  const std::int64_t spatial = size[0] * size[1] * size[2];
  const float* src = image.data<float>();
  // Baseline.
  Tensor base = network(image).contiguous().clone();
  activate(base);
  const std::int64_t k = base.dim(-1);
  VOXINFER_CHECK(target >= 0 && target < k, invalid_input, "explained class index " + std::to_string(target) + " is out of range");
  const float p0 = base.data<float>()[target];
  // Channel means of the image and a Gaussian weight over the mask.
  std::vector<double> img_mean(static_cast<std::size_t>(c), 0.0);
  for (std::int64_t ch = 0; ch < c; ++ch) {
    double s = 0;
    for (std::int64_t i = 0; i < spatial; ++i) s += src[ch * spatial + i];
    img_mean[static_cast<std::size_t>(ch)] = s / static_cast<double>(spatial);
  }
  std::vector<float> gauss(static_cast<std::size_t>(m[0] * m[1] * m[2]));
  for (std::int64_t a = 0; a < m[0]; ++a)
    for (std::int64_t b = 0; b < m[1]; ++b)
      for (std::int64_t d = 0; d < m[2]; ++d) {
        auto g = [](std::int64_t i, std::int64_t n) {
          const double sigma = std::max(0.25 * static_cast<double>(n), 1e-3), x = static_cast<double>(i) - (static_cast<double>(n) - 1) / 2;
          return std::exp(-x * x / (2 * sigma * sigma));
        };
        gauss[static_cast<std::size_t>((a * m[1] + b) * m[2] + d)] = static_cast<float>(g(a, m[0]) * g(b, m[1]) * g(d, m[2]));
      }
  std::vector<std::array<std::int64_t, 3>> positions;
  for (auto s0 : starts[0])
    for (auto s1 : starts[1])
      for (auto s2 : starts[2]) positions.push_back({s0, s1, s2});
  const auto total = static_cast<std::int64_t>(positions.size());
  if (occlusions) *occlusions = total;
  std::vector<double> sum(static_cast<std::size_t>(spatial), 0.0);
  std::vector<std::int32_t> count(static_cast<std::size_t>(spatial), 0);
  const std::int64_t nb = std::max<std::int64_t>(1, o.n_batch);
  for (std::int64_t first = 0; first < total; first += nb) {
    const std::int64_t b = std::min(nb, total - first);
    Tensor batch(Shape{b, c, size[0], size[1], size[2]}, DType::f32);
    float* dst = batch.data<float>();
    for (std::int64_t i = 0; i < b; ++i) {
      std::memcpy(dst + i * c * spatial, src, static_cast<std::size_t>(c * spatial) * sizeof(float));
      const auto& st = positions[static_cast<std::size_t>(first + i)];
      for (std::int64_t ch = 0; ch < c; ++ch) {
        float* x = dst + (i * c + ch) * spatial;
        double patch_mean = 0;
        if (o.mode == OcclusionOptions::Mode::mean_patch) {
          for (std::int64_t a = 0; a < m[0]; ++a)
            for (std::int64_t bb = 0; bb < m[1]; ++bb)
              for (std::int64_t d = 0; d < m[2]; ++d) patch_mean += x[((st[0] + a) * size[1] + st[1] + bb) * size[2] + st[2] + d];
          patch_mean /= static_cast<double>(m[0] * m[1] * m[2]);
        }
        for (std::int64_t a = 0; a < m[0]; ++a)
          for (std::int64_t bb = 0; bb < m[1]; ++bb)
            for (std::int64_t d = 0; d < m[2]; ++d) {
              float& v = x[((st[0] + a) * size[1] + st[1] + bb) * size[2] + st[2] + d];
              switch (o.mode) {
                case OcclusionOptions::Mode::mean_img: v = static_cast<float>(img_mean[static_cast<std::size_t>(ch)]); break;
                case OcclusionOptions::Mode::mean_patch: v = static_cast<float>(patch_mean); break;
                case OcclusionOptions::Mode::gaussian: v *= 1.f - gauss[static_cast<std::size_t>((a * m[1] + bb) * m[2] + d)]; break;
              }
            }
      }
    }
    Tensor out = network(batch).contiguous().clone();
    activate(out);
    VOXINFER_CHECK(out.numel() == b * k, invalid_model, "the network returned " + out.shape().str() + " for a batch of " + std::to_string(b));
    for (std::int64_t i = 0; i < b; ++i) {
      const double drop = static_cast<double>(p0) - out.data<float>()[i * k + target];
      const auto& st = positions[static_cast<std::size_t>(first + i)];
      for (std::int64_t a = 0; a < m[0]; ++a)
        for (std::int64_t bb = 0; bb < m[1]; ++bb)
          for (std::int64_t d = 0; d < m[2]; ++d) {
            const auto idx = static_cast<std::size_t>(((st[0] + a) * size[1] + st[1] + bb) * size[2] + st[2] + d);
            sum[idx] += drop;
            count[idx]++;
          }
    }
    if (o.progress) o.progress(first + b, total);
  }
  Tensor map(Shape{size[0], size[1], size[2]}, DType::f32);
  for (std::int64_t i = 0; i < spatial; ++i)
    map.data<float>()[i] = count[static_cast<std::size_t>(i)] ? static_cast<float>(sum[static_cast<std::size_t>(i)] / count[static_cast<std::size_t>(i)]) : 0.f;
  return map;
}

struct ClassificationPipeline::Impl {
  std::filesystem::path dir;
  PipelineSpec spec;
  ClassificationOptions options;
  std::optional<graph::Session> session;
  bool batch_fixed = false;
};

ClassificationPipeline::ClassificationPipeline(const std::filesystem::path& package_dir, ClassificationOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->dir = package_dir;
  impl_->options = std::move(options);
  detail::OpenedPackage p = detail::open_package(package_dir, Task::classification, impl_->options.threads);
  const auto& ins = p.session->inputs();
  const std::size_t want = p.spec.input.tabular_length > 0 ? 2 : 1;
  if (ins.size() != want)
    throw Error(ErrorCode::invalid_model, p.model.string() + ": the model has " + std::to_string(ins.size()) + " input(s), pipeline.json describes " +
                                              std::to_string(want) + (want == 2 ? " (image + tabular)" : " (image)"));
  detail::check_image_input(p, ins[0]);
  impl_->batch_fixed = ins[0].has_shape && ins[0].dims[0].known();
  impl_->spec = std::move(p.spec);
  impl_->session = std::move(p.session);
}

ClassificationPipeline::~ClassificationPipeline() = default;
ClassificationPipeline::ClassificationPipeline(ClassificationPipeline&&) noexcept = default;
ClassificationPipeline& ClassificationPipeline::operator=(ClassificationPipeline&&) noexcept = default;
const PipelineSpec& ClassificationPipeline::spec() const { return impl_->spec; }
std::string ClassificationPipeline::model_path() const { return (impl_->dir / impl_->spec.model).string(); }

ClassificationResult ClassificationPipeline::run(const std::vector<Volume>& inputs, const std::vector<float>& tabular) {
  const PipelineSpec& spec = impl_->spec;
  VOXINFER_CHECK(!inputs.empty(), invalid_input, "classify: no input volume");
  // Stack the inputs as channels (each on the first one's grid).
  std::int64_t channels = 0;
  for (const auto& v : inputs) channels += v.channels();
  if (channels != spec.input.channels)
    throw Error(ErrorCode::invalid_input, "the model takes " + std::to_string(spec.input.channels) + " input channel(s), got " +
                                              std::to_string(channels) + " from " + std::to_string(inputs.size()) + " input(s)");
  Volume stacked = inputs[0];
  if (inputs.size() > 1) {
    stacked = Volume(channels, inputs[0].nz(), inputs[0].ny(), inputs[0].nx(), inputs[0].geometry);
    stacked.metadata = inputs[0].metadata;
    std::int64_t ch = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const Volume& v = inputs[i];
      if (v.nx() != inputs[0].nx() || v.ny() != inputs[0].ny() || v.nz() != inputs[0].nz() ||
          (v.geometry.affine_lps() - inputs[0].geometry.affine_lps()).cwiseAbs().maxCoeff() > 1e-3)
        throw Error(ErrorCode::invalid_input, "input " + std::to_string(i + 1) + " does not lie on the first input's grid (resample it first)");
      for (std::int64_t c = 0; c < v.channels(); ++c, ++ch) std::memcpy(stacked.channel(ch), v.channel(c), static_cast<std::size_t>(v.voxels()) * sizeof(float));
    }
  }
  const std::int64_t tl = spec.input.tabular_length;
  if (tl > 0 && static_cast<std::int64_t>(tabular.size()) != tl)
    throw Error(ErrorCode::invalid_input, "the model takes " + std::to_string(tl) + " tabular value(s), got " + std::to_string(tabular.size()));
  if (tl == 0 && !tabular.empty()) throw Error(ErrorCode::invalid_input, "this model takes no tabular values");

  const Volume v = preprocess_for_model(stacked, spec);
  const Tensor image = to_model_tensor(v, spec.axes);
  graph::Session& session = *impl_->session;
  const auto tab_dtype = tl > 0 ? session.inputs()[1].dtype : DType::f32;
  auto network = [&](const Tensor& x) {
    std::vector<Tensor> feeds{x};
    if (tl > 0) {
      Tensor t(Shape{x.dim(0), tl}, tab_dtype);
      for (std::int64_t b = 0; b < x.dim(0); ++b)
        for (std::int64_t i = 0; i < tl; ++i) t.data<float>()[b * tl + i] = tabular[static_cast<std::size_t>(i)];
      feeds.push_back(t);
    }
    Tensor out = session.run(feeds).at(0);
    if (out.rank() != 2) out = out.reshape(Shape{x.dim(0), out.numel() / x.dim(0)});
    return out;
  };
  const Activation act = spec.postprocess.activation;
  auto activate = [act](Tensor& t) { activate_rows(t, act); };

  ClassificationResult r;
  Tensor logits = network(image).clone();
  const std::int64_t k = logits.dim(-1);
  if (!spec.classes.empty() && static_cast<std::int64_t>(spec.classes.size()) != k)
    throw Error(ErrorCode::invalid_model, "pipeline.json lists " + std::to_string(spec.classes.size()) + " classes but the model returns " + std::to_string(k));
  r.logits.assign(logits.data<float>(), logits.data<float>() + k);
  Tensor probs = logits.clone();
  activate(probs);
  for (std::int64_t i = 0; i < k; ++i) {
    r.classes.push_back({i < static_cast<std::int64_t>(spec.classes.size()) ? spec.classes[static_cast<std::size_t>(i)] : "class " + std::to_string(i),
                         probs.data<float>()[i]});
    if (probs.data<float>()[i] > probs.data<float>()[r.top]) r.top = static_cast<int>(i);
  }

  if (impl_->options.uncertainty) {
    // All eight combinations of flips of the three spatial axes.
    std::vector<std::vector<double>> p(static_cast<std::size_t>(k));
    for (int mask = 0; mask < 8; ++mask) {
      const std::array<bool, 3> axes{(mask & 1) != 0, (mask & 2) != 0, (mask & 4) != 0};
      Tensor out = network(mask ? flip_image(image, axes) : image).clone();
      activate(out);
      for (std::int64_t i = 0; i < k; ++i) p[static_cast<std::size_t>(i)].push_back(out.data<float>()[i]);
    }
    r.tta_passes = 8;
    for (std::int64_t i = 0; i < k; ++i) {
      const auto& v = p[static_cast<std::size_t>(i)];
      double mean = 0, var = 0;
      for (double x : v) mean += x;
      mean /= static_cast<double>(v.size());
      for (double x : v) var += (x - mean) * (x - mean);
      const double sd = std::sqrt(var / static_cast<double>(v.size()));
      r.uncertainty.push_back({r.classes[static_cast<std::size_t>(i)].name, mean, sd, mean > 0 ? sd / mean : 0.0});
    }
  }

  if (impl_->options.explain) {
    OcclusionOptions o = *impl_->options.explain;
    if (impl_->batch_fixed) o.n_batch = 1;
    const int target = o.target >= 0 ? o.target : r.top;
    const Tensor map = occlusion_sensitivity(image, network, activate, o, target, &r.occlusions);
    // Model order -> Volume on the model grid -> the input's grid.
    const Tensor m4 = map.reshape(Shape{1, 1, map.dim(0), map.dim(1), map.dim(2)});
    Volume mv = volume_from_model_tensor(m4, spec.axes, v.geometry);
    Volume out = resample_to_grid(mv, inputs[0].geometry, {inputs[0].nx(), inputs[0].ny(), inputs[0].nz()}, Interpolation::linear);
    out.metadata = inputs[0].metadata;
    r.explanation = std::move(out);
    r.explained_class = target;
  }
  return r;
}

}  // namespace voxinfer
