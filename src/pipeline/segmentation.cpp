// SegmentationPipeline: preprocessing -> streamed sliding window -> labels per slab ->
// back to the input grid -> postprocess -> statistics.
#include "voxinfer/pipeline/segmentation.h"

#include <chrono>
#include <cstring>

#include "voxinfer/core/threading.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/pipeline/preprocess.h"

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
};

SegmentationPipeline::SegmentationPipeline(const std::filesystem::path& package_dir, SegmentationOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->dir = package_dir;
  impl_->options = std::move(options);
  std::error_code ec;
  if (!std::filesystem::is_directory(package_dir, ec))
    throw Error(ErrorCode::invalid_input, package_dir.string() + ": model package folder not found (it must hold pipeline.json and the model)");
  const auto spec_file = package_dir / "pipeline.json";
  if (!std::filesystem::exists(spec_file, ec))
    throw Error(ErrorCode::invalid_model, spec_file.string() + ": missing (a model package needs pipeline.json)");
  impl_->spec = load_pipeline_spec(spec_file);
  if (impl_->spec.task != Task::segmentation)
    throw Error(ErrorCode::invalid_model, spec_file.string() + ": task is '" + std::string(task_name(impl_->spec.task)) + "', expected 'segmentation'");
  const auto model = package_dir / impl_->spec.model;
  if (!std::filesystem::exists(model, ec))
    throw Error(ErrorCode::invalid_model, model.string() + ": model file named by pipeline.json is missing");
  if (impl_->options.threads > 0) set_num_threads(impl_->options.threads);
  graph::SessionOptions so;
  so.threads = impl_->options.threads;
  impl_->session.emplace(graph::Session::from_file(model.string(), so));
  const auto& ins = impl_->session->inputs();
  if (ins.size() != 1)
    throw Error(ErrorCode::unsupported, model.string() + ": segmentation models with " + std::to_string(ins.size()) + " inputs are not supported");
  const auto& vi = ins[0];
  if (vi.has_shape && vi.dims.size() != 5)
    throw Error(ErrorCode::invalid_model, model.string() + ": input '" + vi.name + "' is " + vi.dims_str() + ", a 3D segmentation model takes [N, C, D, H, W]");
  if (vi.has_shape && vi.dims[1].known() && vi.dims[1].value != impl_->spec.input.channels)
    throw Error(ErrorCode::invalid_model, spec_file.string() + ": input.channels is " + std::to_string(impl_->spec.input.channels) +
                                              " but the model takes " + std::to_string(vi.dims[1].value));
}

SegmentationPipeline::~SegmentationPipeline() = default;
SegmentationPipeline::SegmentationPipeline(SegmentationPipeline&&) noexcept = default;
SegmentationPipeline& SegmentationPipeline::operator=(SegmentationPipeline&&) noexcept = default;

const PipelineSpec& SegmentationPipeline::spec() const { return impl_->spec; }
const std::filesystem::path& SegmentationPipeline::package_dir() const { return impl_->dir; }
std::string SegmentationPipeline::model_path() const { return (impl_->dir / impl_->spec.model).string(); }

SegmentationResult SegmentationPipeline::run(const Volume& input) {
  const PipelineSpec& spec = impl_->spec;
  SegmentationResult result;
  if (input.channels() != spec.input.channels)
    throw Error(ErrorCode::invalid_input, "the input has " + std::to_string(input.channels()) + " channel(s), the model package '" +
                                              impl_->dir.filename().string() + "' expects " + std::to_string(spec.input.channels));
  input.geometry.validate("input volume");
  auto t0 = std::chrono::steady_clock::now();

  // 1. Orientation and spacing of the model.
  AxisPermutation orient;
  Volume work = input;
  work.data = input.data.clone();  // never normalise the caller's voxels in place
  if (spec.preprocess.orientation) {
    orient = orientation_transform(input.geometry, *spec.preprocess.orientation);
    if (!orient.is_identity()) work = permute_axes(input, orient);
  }
  bool resampled = false;
  if (spec.preprocess.spacing) {
    const auto want = model_to_xyz(*spec.preprocess.spacing, spec.axes);
    bool same = true;
    for (int a = 0; a < 3; ++a) same = same && std::abs(work.geometry.spacing[a] - want[static_cast<std::size_t>(a)]) < 1e-6 * want[static_cast<std::size_t>(a)];
    if (!same) {
      work = resample_to_spacing(work, want, Interpolation::linear);
      resampled = true;
    }
  }
  const Geometry model_geometry = work.geometry;
  apply_intensity(work, spec.preprocess.intensity);
  const Tensor image = to_model_tensor(work, spec.axes);  // [1, C, S0, S1, S2]
  const Size3 grid{image.dim(2), image.dim(3), image.dim(4)};
  result.model_grid = grid;
  result.seconds_preprocess = seconds_since(t0);

  // 2. Sliding window; each finished slab becomes labels at once.
  t0 = std::chrono::steady_clock::now();
  SlidingWindowOptions sw = SlidingWindowOptions::from_spec(spec.inference);
  if (impl_->options.overlap) {
    const double o = *impl_->options.overlap;
    if (!(o >= 0 && o < 1)) throw Error(ErrorCode::invalid_input, "--overlap must be in [0, 1), got " + std::to_string(o));
    sw.overlap = {o, o, o};
  }
  if (impl_->options.roi_size) sw.roi_size = *impl_->options.roi_size;
  if (impl_->options.tta) {
    if (!*impl_->options.tta) sw.mirror_axes.clear();
    else if (sw.mirror_axes.empty()) sw.mirror_axes = {0, 1, 2};
  }
  sw.progress = impl_->options.progress;
  Tensor labels_model(Shape{1, grid[0], grid[1], grid[2]}, DType::f32);
  std::vector<int> values;
  for (const auto& l : spec.labels) values.push_back(l.value);
  const std::int64_t plane = grid[1] * grid[2];
  graph::Session& session = *impl_->session;
  sliding_window_stream(
      image, sw,
      [&](const Tensor& batch) {
        auto out = session.run(std::vector<Tensor>{batch});
        return out.at(0);
      },
      [&](const Tensor& slab, std::int64_t begin) {
        Tensor logits = slab.contiguous();
        const Tensor lab = predict_labels(logits, spec.postprocess.activation, static_cast<float>(spec.postprocess.threshold), values);
        std::memcpy(labels_model.data<float>() + begin * plane, lab.data<float>(), static_cast<std::size_t>(lab.numel()) * sizeof(float));
      },
      &result.window);
  result.seconds_inference = seconds_since(t0);

  // 3. Back onto the input's grid: undo the resampling (nearest) and the orientation (exact).
  t0 = std::chrono::steady_clock::now();
  Volume labels = volume_from_model_tensor(labels_model, spec.axes, model_geometry);
  if (resampled) {
    // Physical space is shared, so nearest-neighbour resampling onto the input's own grid
    // also undoes the orientation.
    labels = resample_to_grid(labels, input.geometry, {input.nx(), input.ny(), input.nz()}, Interpolation::nearest);
  } else if (!orient.is_identity()) {
    labels = permute_axes(labels, inverse(orient));  // exact: a pure axis permutation
  }
  labels.geometry = input.geometry;  // identical up to rounding of the round trip
  labels.metadata = input.metadata;
  postprocess_labels(labels, spec.postprocess);
  result.stats = label_statistics(labels, input, spec.labels);
  result.labels = std::move(labels);
  result.seconds_postprocess = seconds_since(t0);
  return result;
}

}  // namespace voxinfer
