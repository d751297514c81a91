// Preprocessing of Volumes before a network sees them, and the way back: reorientation
// (axis permutation and flips only), resampling to a spacing or onto a reference grid,
// intensity normalisation, and conversion to and from the model's [1, C, ...] tensor in
// "zyx" or "xyz" axis order. Every function states what it does to the geometry.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "voxinfer/core/geometry.h"
#include "voxinfer/core/tensor.h"
#include "voxinfer/core/volume.h"
#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer {

// ---- reorientation ------------------------------------------------------------------

// An exact change of voxel order: output index axis c (0 = x, 1 = y, 2 = z) is input
// index axis perm[c], reversed when flip[c]. No interpolation ever happens.
struct AxisPermutation {
  std::array<int, 3> perm{0, 1, 2};
  std::array<bool, 3> flip{false, false, false};

  bool is_identity() const { return perm == std::array<int, 3>{0, 1, 2} && flip == std::array<bool, 3>{}; }
};

// The permutation that brings `g` closest to orientation `code` (nibabel's convention:
// the letter each index axis increases towards, e.g. "RAS"). Each target letter takes
// the input axis whose direction is closest to it (the assignment that maximises the
// summed |cosines|, so oblique grids get a unique answer). Oblique directions are kept,
// only permuted and negated: the result's orientation_code() is `code`.
AxisPermutation orientation_transform(const Geometry& g, std::string_view code);
AxisPermutation inverse(const AxisPermutation& t);

// Geometry after applying `t` to a grid of `size` (x, y, z): spacing and direction
// columns are permuted (flipped columns negated); the origin becomes the physical
// position of the input voxel that lands on index (0, 0, 0). Every voxel centre keeps
// its physical position.
Geometry permute_geometry(const Geometry& g, const std::array<std::int64_t, 3>& size, const AxisPermutation& t);

// Applies `t` to every channel of `v` (metadata is copied).
Volume permute_axes(const Volume& v, const AxisPermutation& t);

// permute_axes(v, orientation_transform(v.geometry, code)). Undo it with
// permute_axes(result, inverse(t)).
Volume reorient(const Volume& v, std::string_view code);

// ---- resampling ---------------------------------------------------------------------

enum class Interpolation { linear, nearest };

// Grid of `g` with `size` resampled to `spacing` (x, y, z) (SizeRule: pipeline_spec.h): same origin (the first
// voxel centre stays put) and direction, new spacing, size from `rule`.
std::array<std::int64_t, 3> resampled_size(const std::array<std::int64_t, 3>& size, const Geometry& g,
                                           const std::array<double, 3>& spacing, SizeRule rule = SizeRule::extent);

// Resamples every channel onto the grid described above. Linear is trilinear; sample
// positions beyond the last input voxel centre take the border value (MONAI's default
// "border" padding). Parallel over output planes; bitwise independent of thread count.
Volume resample_to_spacing(const Volume& v, const std::array<double, 3>& spacing,
                           Interpolation interp = Interpolation::linear, SizeRule rule = SizeRule::extent);

// Resamples every channel onto an exact grid (geometry + size (x, y, z)), e.g. the
// original input's grid after inference. Each output voxel centre is mapped through
// physical space into `v`'s continuous index (coordinates within 1e-6 voxel of an
// integer snap to it, so identical grids are copied exactly); outside `v` the border
// value is used.
Volume resample_to_grid(const Volume& v, const Geometry& geometry, const std::array<std::int64_t, 3>& size,
                        Interpolation interp = Interpolation::linear);

// Trilinear resize of the spatial axes to `size` (x, y, z), as torch's interpolate with
// align_corners=False (MONAI Resize, mode "trilinear"): src = (dst + 0.5) * n_in / n_out - 0.5.
// The geometry is scaled so that the volume covers the same physical extent.
Volume resize(const Volume& v, const std::array<std::int64_t, 3>& size);

// ---- cropping (classification) -------------------------------------------------------

// The window of `size` voxels (x, y, z) starting at index `start` (may be negative or run
// past the end): voxels outside the volume get `pad_value`. The origin moves to the
// physical position of `start`; spacing and direction are kept.
Volume crop_or_pad(const Volume& v, const std::array<std::int64_t, 3>& start, const std::array<std::int64_t, 3>& size,
                   float pad_value = 0);

// MONAI ResizeWithPadOrCrop: per axis, a centre crop starting at n/2 - size/2 when the
// volume is larger, symmetric padding (the odd voxel after) when smaller.
Volume center_crop_or_pad(const Volume& v, const std::array<std::int64_t, 3>& size, float pad_value = 0);

// Inclusive-exclusive bounding box (x, y, z) of the voxels > 0 in any channel (MONAI's
// CropForeground default), grown by `margin` and clamped to the volume; nullopt if none.
struct Box {
  std::array<std::int64_t, 3> begin{}, end{};
};
// `level`: the voxels > level count (brainchop's threshold mask uses level = t x maximum).
std::optional<Box> foreground_box(const Volume& v, std::int64_t margin = 0, float level = 0.f);

// The `size` window centred on the foreground box (on the volume when there is none).
Volume foreground_crop(const Volume& v, const std::array<std::int64_t, 3>& size, std::int64_t margin = 0,
                       float pad_value = 0);

// ---- intensity ----------------------------------------------------------------------

// Applies the ops in order, in place (see IntensityOp and docs/pipeline.md for each).
void apply_intensity(Volume& v, std::span<const IntensityOp> ops);
void apply_intensity(Volume& v, const IntensityOp& op);

// np.percentile with linear interpolation over `values` (which it reorders); p in [0, 100].
double percentile(std::span<float> values, double p);

// ---- the model's tensor -------------------------------------------------------------

// Volume [C, Z, Y, X] -> the model's input [1, C, Z, Y, X] ("zyx"; shares storage) or
// [1, C, X, Y, Z] ("xyz"; a transposed copy).
Tensor to_model_tensor(const Volume& v, AxisOrder axes);

// The inverse for any channel count: [1, K, ...] or [K, ...] in model order -> a
// contiguous [K, Z, Y, X] tensor (a copy for "xyz").
Tensor from_model_order(const Tensor& t, AxisOrder axes);

// from_model_order wrapped into a Volume on `geometry`.
Volume volume_from_model_tensor(const Tensor& t, AxisOrder axes, const Geometry& geometry);

}  // namespace voxinfer
