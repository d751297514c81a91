// Postprocessing of network outputs and label maps: activation and argmax over channels,
// 3D connected components (26- or 6-connectivity), keeping the largest component of
// chosen labels, removing small components, and per-label statistics.
// Label maps are single-channel Volumes holding integer label values (0 = background),
// so they reorient and resample (nearest) like images.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "voxinfer/core/tensor.h"
#include "voxinfer/core/volume.h"
#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer {

// ---- channels -----------------------------------------------------------------------
// All take a contiguous f32 tensor [K, ...] whose axis 0 is the channel axis.

void softmax_channels(Tensor& t);  // in place, max-subtracted
void sigmoid_inplace(Tensor& t);
void apply_activation(Tensor& t, Activation a);  // none: unchanged

// [K, ...] -> [1, ...]: index of the largest channel (the first on ties, as numpy).
Tensor argmax_channels(const Tensor& t);

// [K, ...] -> [1, ...]: values[k] of the last channel k with t[k] >= threshold, else 0
// (multi-label sigmoid outputs; list nested regions outer to inner).
Tensor threshold_channels(const Tensor& t, std::span<const int> values, float threshold);

// Network output -> label values: softmax or none: argmax (channel k is label k);
// sigmoid: threshold_channels(sigmoid(t), values) with `values` one label per channel.
Tensor predict_labels(const Tensor& logits, Activation activation, float threshold, std::span<const int> values);

// ---- connected components -----------------------------------------------------------

struct Components {
  Tensor ids;                        // i32 [Z, Y, X]: 0 background, 1..count in raster order of first voxel
  std::vector<std::int64_t> voxels;  // voxels[id], entry 0 unused
  std::vector<int> values;           // label value of each component, entry 0 unused
  std::int64_t count() const { return static_cast<std::int64_t>(voxels.size()) - 1; }
};

// Components of voxels with the same non-zero label; connectivity 26 (faces, edges and
// corners; the default of nnU-Net and MONAI) or 6 (faces). Parallel union-find over fixed
// slabs of planes, merged serially: the result does not depend on the thread count.
Components connected_components(const Volume& labels, int connectivity = 26);

// Sets to 0 every component of each listed label except its largest (the first on ties).
void keep_largest_component(Volume& labels, std::span<const int> values, int connectivity = 26);

// Sets to 0 every voxel outside the largest connected component of all non-zero voxels taken
// together, whatever their labels (brainchop's bwlabels step; the first on ties).
void keep_largest_foreground(Volume& labels, int connectivity = 26);

// The image's channel 0 where `labels` is non-zero, 0 elsewhere, on the labels' grid (which
// must be the image's): brainchop's Brain_Extraction output.
Volume masked_image(const Volume& image, const Volume& labels);

// Sets to 0 every component smaller than min_mm3 (voxels x spacing product).
void remove_small_components(Volume& labels, double min_mm3, int connectivity = 26);

// keep_largest_component then remove_small_components as `spec` asks, with one labelling;
// keep_largest_foreground first when asked.
void postprocess_labels(Volume& labels, const PostprocessSpec& spec);

// ---- statistics ---------------------------------------------------------------------

struct LabelStats {
  int value = 0;
  std::string name;
  std::int64_t voxels = 0;
  double volume_ml = 0;           // voxels x spacing product / 1000
  double mean = 0, min = 0, max = 0;  // of the image over the label (0 when voxels == 0)
};

// One entry per label of `names` (in that order, also when absent from the map), then
// any other non-zero value found, ascending. `image` must be on the label map's grid;
// channel `channel` is measured.
std::vector<LabelStats> label_statistics(const Volume& labels, const Volume& image,
                                         std::span<const LabelSpec> names = {}, int channel = 0);

// {"labels": [{"value", "name", "voxels", "volume_ml", "mean", "min", "max"}, ...]};
// mean/min/max are null for an empty label.
std::string to_json(std::span<const LabelStats> stats);

}  // namespace voxinfer
