// MONAI bundles (configs/metadata.json, configs/inference.json, models/) translated at load
// time into the PipelineSpec every package kind runs through (DESIGN.md "Model packages: one
// pipeline, several doors"). Each transform of the bundle's preprocessing Compose, its inferer
// and each post-processing transform becomes a setting of the spec with MONAI's semantics
// (Orientationd -> orientation, Spacingd -> spacing on MONAI's grid, ScaleIntensityRanged ->
// scale, SlidingWindowInferer -> WindowStyle::monai, Activationsd + Invertd -> probabilities
// resampled to the input's grid, AsDiscreted -> argmax/threshold ...). A transform, argument
// or expression the translation cannot reproduce is an Error(invalid_model or unsupported)
// naming it and its position: nothing is skipped silently. docs/pipeline.md has the table.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "voxinfer/pipeline/pipeline_spec.h"
#include "voxinfer/pipeline/segmentation.h"

namespace voxinfer::monai {

// Whether `dir` looks like a MONAI bundle: it holds configs/inference.json (or .yaml) and
// configs/metadata.json.
bool is_bundle(const std::filesystem::path& dir);

// One transform of the bundle and what it became.
struct BundleStep {
  std::string section;       // "preprocessing", "inferer" or "postprocessing"
  std::size_t position = 0;  // index in its Compose (0 for the inferer)
  std::string target;        // MONAI's class name, e.g. "Spacingd"
  std::string translation;   // what runs, e.g. "resample to 1.5 x 1.5 x 2 mm (MONAI grid)"
};

struct Bundle {
  std::filesystem::path dir;      // the bundle folder
  std::filesystem::path network;  // the ONNX file that runs
  std::string name, version;      // metadata.json
  PipelineSpec spec;              // the translation; spec.model is `network`
  std::vector<BundleStep> steps;  // in the bundle's order
  std::string image_key = "image";
  // The network's input channels, one input file each, in order: ConcatItemsd's keys when the
  // bundle stacks separate images into the image key; channel_names: metadata.json's
  // network_data_format channel_def (empty when it has none).
  std::vector<std::string> channel_keys, channel_names;
  // SaveImaged's naming (output_postfix, output_ext), when the bundle has one.
  std::string output_postfix, output_ext;
  // With BundleOptions::inspect: what cannot run (transforms, arguments, a missing network),
  // each also listed as a step. Empty otherwise (load_bundle throws the first problem).
  std::vector<std::string> problems;
};

struct BundleOptions {
  std::optional<std::filesystem::path> network;  // default: <dir>/models/model.onnx
  bool inspect = false;  // collect problems in Bundle::problems instead of throwing (voxinfer info)
};

// Reads and translates a bundle. Errors: Error(invalid_input) for a missing folder;
// Error(invalid_model) naming the file, the key and the expression for anything in the
// configs it cannot read; Error(unsupported) naming the transform and its position for a
// transform or argument without a translation; a missing network file is invalid_model.
Bundle load_bundle(const std::filesystem::path& dir, const BundleOptions& options = {});

// load_bundle, then a SegmentationPipeline on its spec and network: what
// `voxinfer segment --model BUNDLE_DIR` runs.
SegmentationPipeline open_segmentation(const std::filesystem::path& dir, const BundleOptions& options = {},
                                       SegmentationOptions segmentation = {});

// Translates config texts directly (JSON for both; used by load_bundle and tests). The
// network path is recorded, not checked.
Bundle translate_bundle(const std::string& metadata_json, const std::string& inference_json,
                        const std::filesystem::path& dir, const std::filesystem::path& network,
                        bool collect_problems = false);

// The translated steps, one per line, for `voxinfer info` (also the spec's own settings).
std::string describe(const Bundle& bundle);

}  // namespace voxinfer::monai
