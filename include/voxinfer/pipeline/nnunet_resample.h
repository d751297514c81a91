// nnU-Net v2's resampling of images, logits and segmentations (nnunetv2 2.8.1,
// preprocessing/resampling/default_resampling.py), reproduced to float rounding: the same
// separate-z decision and new shapes, skimage.transform.resize(mode='edge',
// anti_aliasing=False) on float64 data (scipy.ndimage.zoom in grid mode, with scipy's 12-voxel
// edge padding and B-spline prefilter for orders above 1, and the clip to the input's range),
// the per-slice 2D resize plus map_coordinates along the low-resolution axis, and
// batchgenerators' per-label resize of segmentations. Arrays are in nnU-Net's order
// [C, d0, d1, d2] (after transpose_forward); no geometry is involved.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>

#include "voxinfer/core/tensor.h"

namespace voxinfer::nnunet {

// Whether to resample the low-resolution axis on its own, and which axis that is.
struct SeparateZ {
  bool separate = false;
  int axis = -1;
};

// determine_do_sep_z_and_axis. `force` is force_separate_z (std::nullopt: decided by the
// anisotropy threshold, nnunetv2.configuration.ANISO_THRESHOLD = 3): the current spacing
// decides first, then the new one; the axis is the one with the largest spacing. Two or three
// axes tied for the largest spacing (e.g. (0.24, 1.25, 1.25)) mean no separate z, even forced.
SeparateZ decide_separate_z(std::optional<bool> force, const std::array<double, 3>& current_spacing,
                            const std::array<double, 3>& new_spacing, double threshold = 3.0);

// compute_new_shape: round(spacing / new_spacing * shape) per axis, halves to even.
std::array<std::int64_t, 3> compute_new_shape(const std::array<std::int64_t, 3>& shape,
                                              const std::array<double, 3>& spacing,
                                              const std::array<double, 3>& new_spacing);

// resample_data_or_seg. `data` is f32 [C, d0, d1, d2]; the result is f32 [C, n0, n1, n2].
//   is_seg = false: every channel is resized with spline `order` (0..5), then clipped to the
//     channel's [min, max]. With sep.separate, each slice along sep.axis is resized in 2D and
//     clipped to that slice's range, then the axis is interpolated with `order_z` (0..5, no
//     clip).
//   is_seg = true: channels hold label values. Order 0 is nearest; otherwise each label's
//     mask is resized with `order` and the label is written where it reaches 0.5 (ascending
//     labels, later ones win; voxels no label reaches are 0). Along a separate axis with
//     order_z > 0 the same happens with masks strictly above 0.5.
// round_to_f16: the result is rounded to IEEE half straight from the float64 result (nnU-Net's
// float16 logits), then stored as f32. A shape equal to the input's returns a copy.
// Internally float64 throughout, as nnU-Net; bitwise identical for any thread count.
Tensor resample_data_or_seg(const Tensor& data, const std::array<std::int64_t, 3>& new_shape, bool is_seg,
                            SeparateZ sep, int order, int order_z, bool round_to_f16 = false);

// Whether resample_data_in_slabs can stream a resampling with these settings: axis 0 must be
// interpolated with order 0 or 1 (order_z when sep.axis == 0, else order), so that each output
// plane reads at most two input planes. nnU-Net's defaults for logits (order 1, order_z 0) can.
bool can_stream_planes(SeparateZ sep, int order, int order_z);

// resample_data_or_seg(data, new_shape, false, sep, order, order_z, round_to_f16), delivered
// in slabs of consecutive output planes along axis 0: consume(first, slab) receives f32
// [C, count, n1, n2] holding planes [first, first + count), in order, count <= slab_planes.
// Bitwise equal to the whole result, while only a slab and the input planes it reads are
// resampled at a time (the export path can reduce logits plane by plane). Slabs of at least
// num_threads() planes keep every thread busy. Throws unsupported unless can_stream_planes (or
// axis 0 keeps its size).
void resample_data_in_slabs(const Tensor& data, const std::array<std::int64_t, 3>& new_shape, SeparateZ sep, int order,
                            int order_z, bool round_to_f16, std::int64_t slab_planes,
                            const std::function<void(std::int64_t first, const Tensor& slab)>& consume);

}  // namespace voxinfer::nnunet
