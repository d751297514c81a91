// The nnU-Net branch of `voxinfer segment`.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace voxinfer::cli {

struct NnunetSegmentArgs {
  std::string model, output, series, stats, preview, save_probabilities;
  std::vector<std::string> inputs;
  std::string dicom_seg, dicom_reference;  // a DICOM SEG on the input series (or the reference folder's)
  bool dicom_seg_keep_empty = false;
  std::string dicom_rtstruct;  // an RT Structure Set on the same series
  std::string folds;  // "0,1" or "all"; empty: every fold present
  std::string checkpoint = "final";
  double step_size = 0.5;
  bool disable_tta = false, no_postprocess = false;
  int threads = 0;
};

using ProgressFn = std::function<void(std::int64_t, std::int64_t)>;

void run_nnunet_segment(const NnunetSegmentArgs& args, const ProgressFn& progress);
// A composite package (nnunet_composite.json): crop model, several folders, merged labels.
void run_nnunet_composite(const NnunetSegmentArgs& args);

}  // namespace voxinfer::cli
