// One door for every kind of segmentation model folder: a pipeline.json package, an nnU-Net v2
// results folder, a composite of nnU-Net folders, or a MONAI bundle. Opened once, run on many
// studies (voxinfer batch, services, C++ callers).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "voxinfer/core/volume.h"
#include "voxinfer/pipeline/pipeline_spec.h"
#include "voxinfer/pipeline/postprocess.h"

namespace voxinfer::app {

struct SegmenterOptions {
  int threads = 0;
  // pipeline.json packages and MONAI bundles
  std::optional<double> overlap;
  std::optional<bool> tta;
  std::optional<std::filesystem::path> network;  // MONAI bundles: the ONNX network
  // nnU-Net folders
  std::vector<int> folds;
  std::string checkpoint = "checkpoint_final.pth";
  double step_size = 0.5;
  bool mirroring = true;
  bool postprocess = true;
  std::function<void(std::int64_t, std::int64_t)> progress;
};

struct SegmenterResult {
  Volume labels;                  // on the input's grid
  std::vector<LabelStats> stats;  // per label, measured on input channel 0
  std::int64_t tiles = 0;
  double seconds_preprocess = 0, seconds_inference = 0, seconds_postprocess = 0;
};

class Segmenter {
 public:
  virtual ~Segmenter() = default;
  // "pipeline.json package", "nnU-Net v2 folder", "nnU-Net composite", "MONAI bundle".
  virtual std::string kind() const = 0;
  virtual std::string name() const = 0;
  virtual std::string version() const = 0;
  virtual std::int64_t channels() const = 0;  // input files a study needs
  virtual const std::vector<LabelSpec>& labels() const = 0;
  // One study: one Volume per channel (or one multi-channel Volume).
  virtual SegmenterResult run(const std::vector<Volume>& channels) = 0;
};

// Opens `folder` as whatever model kind it holds; Error(invalid_input) when it is none of them,
// Error(invalid_model/unsupported) for a broken one.
std::unique_ptr<Segmenter> open_segmenter(const std::filesystem::path& folder, const SegmenterOptions& options = {});

// SHA-256 of a file as lowercase hex (provenance of networks and inputs).
std::string sha256_file(const std::filesystem::path& file);
// SHA-256 of bytes as lowercase hex.
std::string sha256_hex(std::string_view data);

}  // namespace voxinfer::app
