// SegmentationPipeline: a model package (model + pipeline.json) applied to a Volume:
// reorient, resample, normalise, sliding-window inference with the Session, activation
// and argmax per finished slab, labels back onto the input's exact grid, postprocess,
// statistics. Library use:
//   voxinfer::SegmentationPipeline pipeline("models/meshnet");
//   auto result = pipeline.run(volume);   // result.labels lies on volume's grid
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "voxinfer/core/volume.h"
#include "voxinfer/pipeline/pipeline_spec.h"
#include "voxinfer/pipeline/postprocess.h"
#include "voxinfer/pipeline/sliding_window.h"

namespace voxinfer {

struct SegmentationOptions {
  int threads = 0;                    // 0: VOXINFER_NUM_THREADS or all cores
  std::optional<double> overlap;      // overrides inference.overlap
  std::optional<bool> tta;            // false: no mirroring; true: the package's mirror_axes (all three if none)
  ProgressCallback progress;          // tiles done / total
  bool probabilities = false;         // also return the activated outputs on the input's grid
};

struct SegmentationResult {
  Volume labels;                      // label values (integers in f32) on the input's grid and geometry
  Volume masks;                       // overlapping labels: one 0/1 channel per spec label, else empty
  Volume probabilities;               // with SegmentationOptions::probabilities: K channels, else empty
  std::vector<LabelStats> stats;      // per label, measured on the input image
  SlidingWindowStats window;          // tiles, predicted and measured accumulator bytes
  Size3 model_grid{};                 // size of the preprocessed grid (model axis order)
  // preprocess.conform on an input that was not conformed: the labels on NiiVue's conformed
  // grid (what brainchop shows), and the conformed image; `labels` is their nearest-neighbour
  // resampling onto the input's grid. Empty otherwise.
  Volume conformed_labels;
  Volume conformed_input;
  // postprocess.extract: the input's channel 0 where the label is non-zero, 0 elsewhere, on the
  // input's grid, and (conformed inputs) the conformed image inside the conformed labels.
  Volume extracted;
  Volume conformed_extracted;
  double seconds_preprocess = 0;      // included in seconds_postprocess (not separated yet)
  double seconds_inference = 0;       // time inside the network
  double seconds_postprocess = 0;     // everything else: preprocessing, blending, resampling, postprocessing
};

class SegmentationPipeline {
 public:
  // Loads `package_dir`/pipeline.json and the model it names. Throws Error(invalid_model)
  // naming the field or file when the package is wrong.
  explicit SegmentationPipeline(const std::filesystem::path& package_dir, SegmentationOptions options = {});
  // A package translated from another format (a MONAI bundle): `spec` as the translation gave
  // it and the network file `model`; `package_dir` names the package in messages.
  SegmentationPipeline(const std::filesystem::path& package_dir, PipelineSpec spec, const std::filesystem::path& model,
                       SegmentationOptions options = {});
  ~SegmentationPipeline();
  SegmentationPipeline(SegmentationPipeline&&) noexcept;
  SegmentationPipeline& operator=(SegmentationPipeline&&) noexcept;

  SegmentationResult run(const Volume& input);
  // Several images stacked as channels in the given order (one file per channel, as MONAI
  // bundles and nnU-Net take multi-modal studies); each must lie on the first one's grid
  // (Error invalid_input otherwise, and when the channel count differs from the package's).
  SegmentationResult run(const std::vector<Volume>& channels);

  const PipelineSpec& spec() const;
  const std::filesystem::path& package_dir() const;
  // The model's identity for provenance: file name, SHA-256 is not computed; name/version from the spec.
  std::string model_path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace voxinfer
