// PipelineSpec: the typed, validated contents of a model package's pipeline.json
// (DESIGN.md "The model package"; every field is documented in docs/pipeline.md).
// Parsing rejects unknown fields, wrong types and impossible values with
// Error(invalid_model, "pipeline.json: <field.path>: <what was expected>").
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace voxinfer {

enum class Task { segmentation, classification };

// Order of the spatial axes the model sees: "xyz" = [N, C, X, Y, Z] (MONAI, nibabel
// arrays), "zyx" = [N, C, Z, Y, X] (nnU-Net, SimpleITK arrays). roi_size, spacing,
// mirror_axes and resize are given in this same order.
enum class AxisOrder { xyz, zyx };

// One intensity normalisation step, applied in list order to every channel.
struct IntensityOp {
  enum class Kind { clip, scale, minmax, zscore, percentile_clip, quantile };
  Kind kind = Kind::clip;
  double min = 0, max = 0;                          // clip
  std::array<double, 2> from{0, 1}, to{0, 1};       // scale
  bool clip_output = false;                         // scale: clip the result to `to`
  std::optional<double> mean, std;                  // zscore: both set = fixed, none = per image
  bool nonzero = false;                             // per-image stats over nonzero voxels only
  bool channel_wise = true;                         // per-image stats per channel (else over all channels)
  double lo = 0, hi = 100;                          // percentile_clip, percent in [0, 100]; quantile: fractions
};

struct CropSpec {
  enum class Mode { center, foreground };
  Mode mode = Mode::center;
  std::array<std::int64_t, 3> size{0, 0, 0};  // model axis order
  std::int64_t margin = 0;                     // foreground: voxels added around the bounding box
};

// How many voxels a resampled axis gets (docs/pipeline.md):
//   extent:  round(n * spacing / new_spacing)           (nnU-Net's compute_new_shape)
//   centres: round((n - 1) * spacing / new_spacing + 1) (MONAI's Spacing, scale_extent=False)
// Halves round to even in both, as numpy does.
enum class SizeRule { extent, centres };

// Segmentation: the network sees only the bounding box of the voxels > 0 (any channel, after
// the intensity ops) grown by `margin` and clamped to the volume; its output is padded back
// with zeros onto the whole grid before it returns to the input's grid (MONAI CropForegroundd
// with allow_smaller, then Invertd). No foreground: the whole volume.
// brainchop's mask: `threshold` t in (0, 1] takes the voxels > t x (the image's maximum)
// (float32 product) instead of > 0; `model` names a pre-model package (a folder relative to
// this one), run on the whole input without its own crop and postprocessing, whose labels
// != 0 are the mask.
struct ForegroundCropSpec {
  std::int64_t margin = 0;
  double threshold = 0;  // 0: voxels > 0
  std::string model{};   // empty: the mask comes from the image
  // MONAI's k_divisible (model order): the box grows about its centre to multiples of k (the
  // odd voxel after); parts outside the volume are zero-padded, as CropForegroundd does.
  std::array<std::int64_t, 3> k_divisible{1, 1, 1};
};

// MONAI's SpatialPadd / DivisiblePadd, last in the preprocessing (after the foreground crop):
// per axis (model order) the network sees the grid grown to at least `size` (0: no minimum) and
// then to a multiple of `divisible`, padded with `value`, symmetrically (the odd voxel after)
// or at the end only; its output is cropped back (their inversion).
struct PadSpec {
  std::array<std::int64_t, 3> size{0, 0, 0};
  std::array<std::int64_t, 3> divisible{1, 1, 1};
  bool at_end = false;
  double value = 0;
};

struct PreprocessSpec {
  // NiiVue's conform() first (256^3, 1 mm, LIA, uint8; pipeline/conform.h) unless the input
  // already is 256^3 uint8 LIA (brainchop's ensureConformed); labels are then also returned on
  // the conformed grid. Not combined with orientation or spacing.
  bool conform = false;
  std::optional<std::string> orientation;              // e.g. "RAS"; absent = keep
  std::optional<std::array<double, 3>> spacing;        // mm, model axis order; absent = keep
  SizeRule size_rule = SizeRule::extent;               // grid size after resampling to `spacing`
  std::vector<IntensityOp> intensity;
  std::optional<std::array<std::int64_t, 3>> resize;   // classification only, model axis order
  std::optional<CropSpec> crop;                        // classification only
  std::optional<ForegroundCropSpec> crop_foreground;   // segmentation only
  std::optional<PadSpec> pad;                          // segmentation only (MONAI bundles)
};

enum class BlendMode { gaussian, constant };
// Whose sliding window to reproduce: tile placement and Gaussian shape (docs/pipeline.md).
enum class WindowStyle { nnunet, monai };
// What the tiles' weighted average is taken over: the network's raw outputs (MONAI's default,
// nnU-Net v2), or its outputs after the postprocess activation (nnU-Net v1, MONAI with a
// softmax in the predictor).
enum class AverageSpace { logits, probabilities };

struct InferenceSpec {
  std::array<std::int64_t, 3> roi_size{0, 0, 0};  // model axis order
  std::array<double, 3> overlap{0.5, 0.5, 0.5};    // per axis, in [0, 1)
  BlendMode blend = BlendMode::gaussian;
  double sigma_scale = 0.125;
  std::vector<int> mirror_axes;                    // spatial axes 0..2 in model axis order
  std::int64_t batch = 1;
  WindowStyle style = WindowStyle::nnunet;
  AverageSpace average = AverageSpace::logits;
  // roi_size "whole": the network runs once on the whole (cropped) grid, without tiles or
  // padding, as fully convolutional whole-volume models (brainchop's MeshNets) are run.
  bool whole_volume = false;
  // One tile as large as the whole (cropped) model grid, through the same blending and
  // resampling as tiles: MONAI's SimpleInferer (the network sees the image as it is).
  bool single_tile = false;
  double pad_value = 0;  // fills the padding of images smaller than a tile (MONAI's cval)
  bool pad_replicate = false;  // pad with the nearest edge voxel instead (padding_mode "replicate")
};

enum class Activation { softmax, sigmoid, none };

// What goes back onto the input's grid: the blended logits, activated there (nnU-Net), or
// the probabilities after the activation on the model grid (MONAI's Activationsd then Invertd).
enum class ResampleSpace { logits, probabilities };

// How a voxel's activated values become a label: by_activation is pipeline.json's rule
// (softmax/none: argmax; sigmoid: threshold, one label per channel); the others are MONAI's
// AsDiscreted, set by bundles that also carry element-wise Lambdad expressions.
enum class Discretize { by_activation, argmax, threshold, none };

struct PostprocessSpec {
  Activation activation = Activation::softmax;
  ResampleSpace resample = ResampleSpace::logits;
  double threshold = 0.5;                          // sigmoid: a channel is on at >= threshold
  std::vector<int> keep_largest_component;         // label values
  double remove_small_mm3 = 0;                     // 0 = off
  int connectivity = 26;                           // 6 or 26
  // Every non-zero label becomes 1, last (brainchop's Brain_Masking and Brain_Extraction masks).
  bool binarize = false;
  // Also return the input's voxels inside the labels (brainchop's Brain_Extraction image).
  bool extract = false;
  // Keep only the largest connected component of all non-zero voxels together (brainchop).
  bool keep_largest_foreground = false;
  // Element-wise channel expressions ("lambda x: ...", MONAI's Lambdad; see
  // channel_expression.h), per voxel on the input's grid: `lambdas_before` on the activated
  // values, then `discretize`, then `lambdas`.
  Discretize discretize = Discretize::by_activation;
  std::int64_t out_channels = 0;  // the network's output channels, when known (0: from the labels)
  std::vector<std::string> lambdas_before, lambdas;
  // MONAI's AsDiscreted before Invertd: the labels are made on the model grid (the largest
  // component kept there too when `components_on_model_grid`), then resampled onto the
  // input's grid by nearest neighbour, or trilinearly as Invertd with nearest_interp false
  // does (label values then blend at the edges).
  bool labels_on_model_grid = false;
  bool invert_nearest = true;
  bool components_on_model_grid = false;
};

struct LabelCode {
  std::string scheme, value, meaning;
};

struct LabelSpec {
  int value = 0;
  std::string name;
  std::optional<std::array<int, 3>> color;
  std::optional<LabelCode> code;
};

struct InputSpec {
  std::int64_t channels = 1;
  std::vector<std::string> modality;  // empty, or one entry per channel
  std::int64_t tabular_length = 0;    // classification: length of an extra non-image input
  std::vector<std::string> tabular_names;
};

// Edits of the imported network that the model file does not hold: a parameter-free
// per-channel normalisation (InstanceNormalization, scale 1, bias 0) after every convolution
// whose name matches the glob `instance_norm_after` (brainchop's "*_gn" layers).
struct NetworkEditSpec {
  std::string instance_norm_after;
  double epsilon = 1e-5;
};

struct PipelineSpec {
  Task task = Task::segmentation;
  std::string model;  // file name relative to the package folder
  AxisOrder axes = AxisOrder::zyx;
  std::string name, version, description, license;
  InputSpec input;
  PreprocessSpec preprocess;
  InferenceSpec inference;
  PostprocessSpec postprocess;
  std::optional<NetworkEditSpec> network;
  std::vector<LabelSpec> labels;     // segmentation
  std::vector<std::string> classes;  // classification

  // The label with this value, or nullptr.
  const LabelSpec* find_label(int value) const;
};

// Parses pipeline.json text. Throws Error(invalid_model, "pipeline.json: <path>: <expected>").
PipelineSpec parse_pipeline_spec(std::string_view json_text);
// Reads and parses a file (a missing or unreadable file is Error(invalid_model) naming it).
PipelineSpec load_pipeline_spec(const std::filesystem::path& file);

std::string_view task_name(Task t) noexcept;
std::string_view axis_order_name(AxisOrder a) noexcept;
std::string_view activation_name(Activation a) noexcept;

// A spec triple in model axis order converted to Volume index order (x, y, z), and back.
template <typename T>
std::array<T, 3> model_to_xyz(const std::array<T, 3>& v, AxisOrder axes) {
  return axes == AxisOrder::xyz ? v : std::array<T, 3>{v[2], v[1], v[0]};
}
template <typename T>
std::array<T, 3> xyz_to_model(const std::array<T, 3>& v, AxisOrder axes) {
  return model_to_xyz(v, axes);  // the permutation is its own inverse
}

}  // namespace voxinfer
