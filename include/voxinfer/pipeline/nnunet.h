// nnU-Net v2 model folders as model packages: a trained results folder
// (`.../DatasetXXX_Name/<trainer>__<plans>__<configuration>/` with dataset.json, plans.json
// and fold_N/checkpoint_final.pth) is read as it is, and a study goes through nnU-Net's own
// steps: the reader's axis order, transpose_forward, crop to the nonzero box, the plans'
// normalization per channel, resampling to the configuration's spacing with nnU-Net's rules,
// sliding-window prediction with nnU-Net's tile steps and Gaussian, mirroring over the
// checkpoint's axes, fold ensembling, and the export (logits resampled back to the cropped
// shape, softmax/argmax or region thresholds, un-cropped, transpose_backward) onto the
// input's exact grid. docs/nnunet.md describes each step and what it matches in nnU-Net.
//
// The pipeline layer reads no files but JSON: checkpoints come in through a loader callback
// (app/nnunet.h wires the PyTorch checkpoint reader of the io layer).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "voxinfer/core/tensor.h"
#include "voxinfer/core/volume.h"
#include "voxinfer/graph/nnunet_network.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/pipeline/sliding_window.h"

namespace voxinfer::nnunet {

using Index3 = std::array<std::int64_t, 3>;
using Spacing3 = std::array<double, 3>;

// One channel's normalization scheme from plans.json.
struct Normalization {
  enum class Scheme { ct, zscore, none, rescale_to_01, rgb_to_01 };
  Scheme scheme = Scheme::zscore;
  bool use_mask_for_norm = false;
  // CTNormalization: the dataset fingerprint's foreground intensity properties.
  double mean = 0, std = 1, lower = 0, upper = 0;
  std::string name;  // as plans.json spells it
};

// resampling_fn_*_kwargs of plans.json.
struct ResamplingRule {
  int order = 3, order_z = 0;
  std::optional<bool> force_separate_z;  // null = decided by the anisotropy threshold
};

// A label or a region: regions list several label values (region-based training).
struct LabelEntry {
  std::string name;
  std::vector<int> values;
};

struct Dataset {
  std::vector<std::string> channel_names;  // by channel index
  std::vector<LabelEntry> labels;          // dataset.json order ("background" first)
  std::optional<int> ignore_label;
  bool has_regions = false;
  std::vector<int> regions_class_order;  // region-based: the label value of each head
  std::string file_ending = ".nii.gz";
  std::string reader = "SimpleITKIO";  // overwrite_image_reader_writer or plans' image_reader_writer
  int num_heads() const;
  // The heads' names, in output-channel order.
  std::vector<std::string> head_names() const;
};

struct Configuration {
  std::string name;  // "3d_fullres", "3d_lowres", "2d"
  int dims = 3;
  Index3 patch_size{};                       // array order; 2D: {1, h, w}
  std::vector<double> spacing;               // 3 entries (2 for 2D), array order after transpose_forward
  std::vector<Normalization> normalization;  // one per input channel
  ResamplingRule data_rule, probabilities_rule;
  graph::NnunetArchitecture architecture;
  std::int64_t batch_size = 1;
};

// What a checkpoint holds that inference needs.
struct Checkpoint {
  std::map<std::string, Tensor> weights;        // network_weights
  std::optional<std::vector<int>> mirror_axes;  // inference_allowed_mirroring_axes (nullopt: none)
  std::string trainer_name, configuration;      // as recorded in the checkpoint (may be empty)
};
using CheckpointLoader = std::function<Checkpoint(const std::filesystem::path&)>;

// nnU-Net's postprocessing.json (or .pkl translated to the same): remove all but the largest
// component of each listed label/region, in order.
struct PostprocessingStep {
  std::vector<std::vector<int>> labels_or_regions;  // each entry: one label, or a region
  int background = 0;
};

struct LoadOptions {
  std::vector<int> folds;  // empty: every fold_N present
  std::string checkpoint = "checkpoint_final.pth";
  std::string configuration;  // empty: from the folder name / checkpoint
  int threads = 0;
  bool profile = false;  // time every step of the sessions
};

class Model {
 public:
  // Reads dataset.json and plans.json, finds the folds, loads each checkpoint through `loader`
  // and builds one network per fold. Errors name the file and field: Error(invalid_input) for
  // a missing folder, Error(invalid_model) for anything wrong inside it, Error(unsupported) for
  // a cascade configuration or an architecture voxinfer does not build.
  static Model open(const std::filesystem::path& folder, const CheckpointLoader& loader,
                    const LoadOptions& options = {});
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const std::filesystem::path& folder() const;
  const Dataset& dataset() const;
  const Configuration& configuration() const;
  const std::vector<int>& folds() const;
  const std::vector<int>& mirror_axes() const;  // empty when the trainer allows none
  const std::array<int, 3>& transpose_forward() const;
  const std::vector<PostprocessingStep>& postprocessing() const;
  std::string trainer_name() const;
  std::int64_t parameter_count() const;  // of one fold's network
  graph::Session& session(std::size_t fold_index);
  const graph::Graph& graph(std::size_t fold_index) const;

 private:
  Model();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True when `folder` looks like an nnU-Net results folder (dataset.json and plans.json).
bool is_model_folder(const std::filesystem::path& folder);

// The state of a case between preprocessing and export (nnU-Net's "properties").
struct Preprocessed {
  Tensor data;  // f32 [C, n0, n1, n2], the network input
  Index3 shape_before_cropping{}, shape_after_cropping{};
  std::array<std::array<std::int64_t, 2>, 3> bbox{};  // per array axis [begin, end)
  Spacing3 spacing{};                                 // original spacing in array order (after transpose_forward)
  Spacing3 target_spacing{};
  // How the input Volumes map to the array: reorientation (NibabelIOWithReorient) then
  // Volume [C, Z, Y, X] -> array axes permuted by transpose_forward.
  Geometry input_geometry;  // of the input as given
  Index3 input_size{};      // (x, y, z) of the input as given
  bool reoriented = false;
};

// nnU-Net's DefaultPreprocessor.run_case on Volumes (one per channel, or one Volume with all
// channels). Error(invalid_input) when the channel count or the grids disagree.
Preprocessed preprocess(const Model& model, const std::vector<Volume>& channels);

struct PredictOptions {
  double step_size = 0.5;      // tile_step_size, in (0, 1]
  bool mirroring = true;       // use the checkpoint's mirror axes
  bool probabilities = false;  // also return the probabilities on the input grid
  bool postprocess = true;     // apply the folder's postprocessing
  bool keep_logits = false;    // also return the preprocessed-space logits (Prediction::logits)
  ProgressCallback progress;   // tiles done / total over all folds and passes
};

struct Prediction {
  Volume labels;         // on the input's exact grid
  Volume probabilities;  // K channels on the input grid, when asked
  Tensor logits;         // f16 [K, n0, n1, n2] in preprocessed space, with keep_logits
  std::int64_t tiles = 0;
  double seconds_preprocess = 0, seconds_inference = 0, seconds_export = 0;
  Index3 network_grid{};  // n0, n1, n2
};

// preprocess + predict_logits + export_prediction.
Prediction predict(Model& model, const std::vector<Volume>& channels, const PredictOptions& options = {});
// The fold-averaged, mirror-averaged sliding-window logits of a preprocessed case, an f16
// tensor [K, n0, n1, n2]: nnU-Net's predictor keeps them in half precision, and so does
// voxinfer (the accumulators too), which also halves the memory of many-class models.
Tensor predict_logits(Model& model, const Tensor& data, const PredictOptions& options, std::int64_t* tiles = nullptr);
// An f16 tensor as f32.
Tensor half_to_float(const Tensor& t);
// nnU-Net's convert_predicted_logits_to_segmentation_with_correct_shape + write_seg geometry.
Prediction export_prediction(const Model& model, const Preprocessed& p, const Tensor& logits,
                             const PredictOptions& options);

// One line per step, for `voxinfer info FOLDER`.
std::string describe(const Model& model);

// ---- several nnU-Net folders on one study (TotalSegmentator's way) -----------------------
//
// A composite package is a folder with `nnunet_composite.json` (docs/pipeline.md): an optional
// crop model whose labels (grown by a margin in mm) bound the region the other models see, and
// a list of nnU-Net folders whose label maps are merged through class maps into one label map
// with the package's label names. Folder paths are relative to the package folder.
struct CompositeStep {
  std::string folder;      // relative to the package folder
  std::vector<int> folds;  // empty: all
  std::string checkpoint = "checkpoint_final.pth";
  double step_size = 0.5;
  bool mirroring = true;
  std::map<int, int> class_map;  // model label -> output label (unlisted: dropped)
};

struct CompositeSpec {
  std::string name, version;
  std::optional<CompositeStep> crop;  // its class_map is unused
  std::vector<int> crop_labels;       // labels of the crop model that bound the region
  double crop_margin_mm = 0;
  std::vector<CompositeStep> models;
  std::vector<std::pair<int, std::string>> labels;  // output label -> name
};

bool is_composite_folder(const std::filesystem::path& folder);
// Parses nnunet_composite.json; Error(invalid_model) naming the field otherwise.
CompositeSpec load_composite(const std::filesystem::path& folder);

struct CompositeResult {
  Volume labels;                                                       // on the input's grid
  std::optional<std::array<std::array<std::int64_t, 2>, 3>> crop_box;  // (x, y, z) [begin, end) when cropped
  std::int64_t tiles = 0;
  double seconds = 0;
};

// Runs the crop model (if any), crops every channel, runs each model on the crop and merges
// their label maps into one on the input's grid (later models win where two claim a voxel).
// `progress` reports per model. A crop model that finds none of its labels leaves the study
// uncropped (crop_box empty).
CompositeResult run_composite(const std::filesystem::path& folder, const CompositeSpec& spec,
                              const std::vector<Volume>& channels, const CheckpointLoader& loader, int threads = 0,
                              const std::function<void(const std::string&)>& log = {});

}  // namespace voxinfer::nnunet
