// SegmentationPipeline: preprocessing -> streamed sliding window -> labels per slab ->
// back to the input grid -> postprocess -> statistics.
#include "voxinfer/pipeline/segmentation.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/graph/streaming.h"
#include "voxinfer/pipeline/conform.h"
#include "voxinfer/pipeline/preprocess.h"
#include "voxinfer/pipeline/segment.h"

#include "pipeline/package.h"

namespace voxinfer {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

struct SegmentationPipeline::Impl {
  std::filesystem::path dir;
  PipelineSpec spec;
  SegmentationOptions options;
  std::optional<graph::Session> session;
  std::unique_ptr<SegmentationPipeline> pre_model;  // crop_foreground.model
};

namespace {

// A pre-model package (crop_foreground.model) opened without its own crop and its
// postprocessing: it sees the whole volume and its raw labels are the mask (brainchop runs a
// pre-model on the whole 256^3 volume).
std::unique_ptr<SegmentationPipeline> open_pre_model(const std::filesystem::path& package_dir, const PipelineSpec& spec,
                                                     const SegmentationOptions& options) {
  if (!spec.preprocess.crop_foreground || spec.preprocess.crop_foreground->model.empty()) return nullptr;
  const std::filesystem::path dir = package_dir / spec.preprocess.crop_foreground->model;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(dir / "pipeline.json", ec))
    throw Error(ErrorCode::invalid_model, (package_dir / "pipeline.json").string() +
                                              ": preprocess.crop_foreground.model: " + dir.string() +
                                              " is not a model package (no pipeline.json)");
  PipelineSpec pre = load_pipeline_spec(dir / "pipeline.json");
  if (pre.task != Task::segmentation ||
      (pre.preprocess.crop_foreground && !pre.preprocess.crop_foreground->model.empty()))
    throw Error(ErrorCode::invalid_model, (dir / "pipeline.json").string() +
                                              ": a pre-model must be a segmentation without a pre-model of its own");
  pre.preprocess.crop_foreground.reset();
  pre.postprocess.keep_largest_component.clear();
  pre.postprocess.remove_small_mm3 = 0;
  pre.postprocess.keep_largest_foreground = false;
  const std::filesystem::path model = dir / pre.model;
  SegmentationOptions o = options;
  o.progress = nullptr;
  return std::make_unique<SegmentationPipeline>(dir, std::move(pre), model, std::move(o));
}

}  // namespace

SegmentationPipeline::SegmentationPipeline(const std::filesystem::path& package_dir, SegmentationOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->dir = package_dir;
  impl_->options = std::move(options);
  detail::OpenedPackage p = detail::open_package(package_dir, Task::segmentation, impl_->options.threads);
  const auto& ins = p.session->inputs();
  if (ins.size() != 1)
    throw Error(ErrorCode::unsupported, p.model.string() + ": segmentation models with " + std::to_string(ins.size()) + " inputs are not supported");
  detail::check_image_input(p, ins[0]);
  impl_->spec = std::move(p.spec);
  impl_->session = std::move(p.session);
  impl_->pre_model = open_pre_model(p.dir, impl_->spec, impl_->options);
}

SegmentationPipeline::SegmentationPipeline(const std::filesystem::path& package_dir, PipelineSpec spec,
                                           const std::filesystem::path& model, SegmentationOptions options)
    : impl_(std::make_unique<Impl>()) {
  VOXINFER_CHECK(spec.task == Task::segmentation, invalid_model, package_dir.string() + ": not a segmentation package");
  impl_->dir = package_dir;
  impl_->options = std::move(options);
  spec.model = std::filesystem::absolute(model).string();
  detail::OpenedPackage p = detail::open_translated_package(package_dir, std::move(spec), model, impl_->options.threads);
  const auto& ins = p.session->inputs();
  if (ins.size() != 1)
    throw Error(ErrorCode::unsupported, p.model.string() + ": segmentation models with " + std::to_string(ins.size()) + " inputs are not supported");
  detail::check_image_input(p, ins[0]);
  impl_->spec = std::move(p.spec);
  impl_->session = std::move(p.session);
}

SegmentationPipeline::~SegmentationPipeline() = default;
SegmentationPipeline::SegmentationPipeline(SegmentationPipeline&&) noexcept = default;
SegmentationPipeline& SegmentationPipeline::operator=(SegmentationPipeline&&) noexcept = default;

const PipelineSpec& SegmentationPipeline::spec() const { return impl_->spec; }
const std::filesystem::path& SegmentationPipeline::package_dir() const { return impl_->dir; }
std::string SegmentationPipeline::model_path() const {
  const std::filesystem::path m(impl_->spec.model);
  return m.is_absolute() ? m.string() : (impl_->dir / m).string();
}

SegmentationResult SegmentationPipeline::run(const std::vector<Volume>& inputs) {
  VOXINFER_CHECK(!inputs.empty(), invalid_input, "segment: no input volume");
  if (inputs.size() == 1) return run(inputs[0]);
  std::int64_t channels = 0;
  for (const auto& v : inputs) channels += v.channels();
  const PipelineSpec& spec = impl_->spec;
  if (channels != spec.input.channels)
    throw Error(ErrorCode::invalid_input, std::to_string(inputs.size()) + " inputs give " + std::to_string(channels) +
                                              " channel(s), the model package '" + impl_->dir.filename().string() +
                                              "' expects " + std::to_string(spec.input.channels));
  const Volume& first = inputs[0];
  Volume stacked(channels, first.nz(), first.ny(), first.nx(), first.geometry);
  stacked.metadata = first.metadata;
  std::int64_t ch = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Volume& v = inputs[i];
    const Geometry& a = v.geometry;
    const Geometry& b = first.geometry;
    const double tol = 1e-3;
    const bool same = v.nx() == first.nx() && v.ny() == first.ny() && v.nz() == first.nz() &&
                      (a.spacing - b.spacing).cwiseAbs().maxCoeff() <= tol * b.spacing.cwiseAbs().maxCoeff() &&
                      (a.origin - b.origin).cwiseAbs().maxCoeff() <= tol * std::max(1.0, b.spacing.maxCoeff()) &&
                      (a.direction - b.direction).cwiseAbs().maxCoeff() <= tol;
    if (!same)
      throw Error(ErrorCode::invalid_input, "input " + std::to_string(i + 1) +
                                                " does not lie on the first input's grid (size, spacing, origin and "
                                                "direction must match; resample it first)");
    for (std::int64_t c = 0; c < v.channels(); ++c, ++ch)
      std::memcpy(stacked.channel(ch), v.channel(c), static_cast<std::size_t>(v.voxels()) * sizeof(float));
  }
  return run(stacked);
}

SegmentationResult SegmentationPipeline::run(const Volume& input) {
  const PipelineSpec& spec = impl_->spec;
  SegmentationResult result;
  if (input.channels() != spec.input.channels)
    throw Error(ErrorCode::invalid_input, "the input has " + std::to_string(input.channels()) + " channel(s), the model package '" +
                                              impl_->dir.filename().string() + "' expects " + std::to_string(spec.input.channels));
  input.geometry.validate("input volume");
  if (spec.preprocess.conform && !is_niivue_conformed(input)) {
    // brainchop's ensureConformed: the whole pipeline (a pre-model too) runs on NiiVue's
    // conformed volume; its labels go back onto the input's grid by nearest neighbour.
    const auto t0 = std::chrono::steady_clock::now();
    Volume conformed = niivue_conform(input);
    SegmentationResult r = run(conformed);
    r.labels.metadata = conformed.metadata;
    r.conformed_labels = std::move(r.labels);
    r.labels = resample_to_grid(r.conformed_labels, input.geometry, {input.nx(), input.ny(), input.nz()},
                                Interpolation::nearest);
    r.labels.geometry = input.geometry;
    r.labels.metadata = input.metadata;
    r.stats = label_statistics(r.labels, input, spec.labels);
    r.conformed_input = std::move(conformed);
    if (spec.postprocess.extract) {
      r.conformed_extracted = std::move(r.extracted);
      r.extracted = masked_image(input, r.labels);
    }
    r.seconds_postprocess = seconds_since(t0) - r.seconds_inference;
    return r;
  }
  if (impl_->options.overlap) {
    const double o = *impl_->options.overlap;
    if (!(o >= 0 && o < 1)) throw Error(ErrorCode::invalid_input, "--overlap must be in [0, 1), got " + std::to_string(o));
  }
  SegmentOptions so;
  if (impl_->options.overlap) so.overlap = std::array<double, 3>{*impl_->options.overlap, *impl_->options.overlap, *impl_->options.overlap};
  so.tta = impl_->options.tta;
  so.progress = impl_->options.progress;
  so.probabilities = impl_->options.probabilities;
  if (impl_->pre_model) so.crop_mask = impl_->pre_model->run(input).labels;
  graph::Session& session = *impl_->session;
  double network_seconds = 0;
  // A whole-volume MeshNet streams plane by plane (bounded memory, the same labels);
  // VOXINFER_STREAMING=0 runs the whole graph instead.
  if (spec.inference.whole_volume && graph::streaming_enabled_from_env())
    so.whole_argmax = [&](Tensor& image) -> std::optional<Tensor> {
      const auto t = std::chrono::steady_clock::now();
      auto streaming = graph::StreamingArgmax::create(session, image.shape(), impl_->options.threads);
      if (!streaming) return std::nullopt;
      Tensor labels = streaming->run(std::move(image));
      network_seconds += seconds_since(t);
      return labels;
    };
  const auto t0 = std::chrono::steady_clock::now();
  SegmentResult r = segment_volume(input, spec, [&](const Tensor& batch) {
    const auto t = std::chrono::steady_clock::now();
    Tensor out = session.run(std::vector<Tensor>{batch}).at(0);
    network_seconds += seconds_since(t);
    return out;
  }, so);
  const double total = seconds_since(t0);
  result.labels = std::move(r.labels);
  result.masks = std::move(r.masks);
  result.probabilities = std::move(r.probabilities);
  result.stats = std::move(r.statistics);
  result.window = r.window;
  const auto ms = xyz_to_model(r.model_size, spec.axes);
  result.model_grid = {ms[0], ms[1], ms[2]};
  result.seconds_inference = network_seconds;
  result.seconds_preprocess = 0;
  result.seconds_postprocess = total - network_seconds;  // pre/postprocessing, blending and resampling
  if (spec.postprocess.extract) result.extracted = masked_image(input, result.labels);
  return result;
}

}  // namespace voxinfer
