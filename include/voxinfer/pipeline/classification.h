// ClassificationPipeline: a classification model package applied to one or more Volumes
// (stacked as channels) plus optional tabular values, with two explanations that need no
// gradients: occlusion sensitivity (as MONAI defines it) and flip test-time augmentation
// uncertainty. Library use:
//   voxinfer::ClassificationPipeline pipeline("models/densenet");
//   auto result = pipeline.run({volume});
//   result.classes[0].name, result.classes[0].probability
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "voxinfer/core/volume.h"
#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer {

struct OcclusionOptions {
  std::array<std::int64_t, 3> mask_size{16, 16, 16};  // model axis order; clipped to the image
  double overlap = 0.25;                             // between neighbouring occlusions, in [0, 1)
  enum class Mode { gaussian, mean_patch, mean_img } mode = Mode::mean_img;
  std::int64_t n_batch = 8;                          // occluded copies per network call (1 for fixed-batch models)
  int target = -1;                                   // class index; -1: the most probable class
  std::function<void(std::int64_t done, std::int64_t total)> progress;
};

struct ClassProbability {
  std::string name;
  double probability = 0;
};

struct ClassUncertainty {
  std::string name;
  double mean = 0, std = 0, vvc = 0;  // over the flip passes; vvc = std / mean
};

struct ClassificationResult {
  std::vector<ClassProbability> classes;        // in the package's class order
  std::vector<float> logits;                    // raw network outputs
  int top = 0;                                  // index of the most probable class
  std::optional<Volume> explanation;            // occlusion sensitivity on the input's grid (f32)
  int explained_class = -1;
  std::int64_t occlusions = 0;
  std::vector<ClassUncertainty> uncertainty;    // when TTA was asked for
  int tta_passes = 0;
};

struct ClassificationOptions {
  int threads = 0;
  bool uncertainty = false;                // flip TTA over all combinations of the three axes (8 passes)
  std::optional<OcclusionOptions> explain; // occlusion sensitivity
};

class ClassificationPipeline {
 public:
  explicit ClassificationPipeline(const std::filesystem::path& package_dir, ClassificationOptions options = {});
  ~ClassificationPipeline();
  ClassificationPipeline(ClassificationPipeline&&) noexcept;
  ClassificationPipeline& operator=(ClassificationPipeline&&) noexcept;

  // `inputs` are stacked as channels (each must lie on the first one's grid); `tabular`
  // feeds the model's second input when the package declares one.
  ClassificationResult run(const std::vector<Volume>& inputs, const std::vector<float>& tabular = {});

  const PipelineSpec& spec() const;
  std::string model_path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Occlusion sensitivity over any network on a model-space tensor [1, C, S0, S1, S2]:
// for every occlusion position (tile starts of mask_size at `overlap`, as a sliding
// window places them) the region is replaced (mean_img: the image's channel mean;
// mean_patch: the patch's channel mean; gaussian: multiplied by 1 - a Gaussian of
// sigma = mask/4 centred on the patch) and the drop of the target class's activated
// output, p(x) - p(occluded), is averaged over every voxel the region covered. Returns
// [S0, S1, S2] (f32). `activate` maps logits [B, K] to probabilities in place.
Tensor occlusion_sensitivity(const Tensor& image, const std::function<Tensor(const Tensor&)>& network,
                             const std::function<void(Tensor&)>& activate, const OcclusionOptions& options, int target,
                             std::int64_t* occlusions = nullptr);

}  // namespace voxinfer
