// Reorientation, resampling, intensity normalisation and model-order conversion of Volumes.
#include "voxinfer/pipeline/preprocess.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"

namespace voxinfer {
namespace {

using Dims3 = std::array<std::int64_t, 3>;

Dims3 size_xyz(const Volume& v) { return {v.nx(), v.ny(), v.nz()}; }

void require_volume(const Volume& v, const char* what) {
  VOXINFER_CHECK(v.data.defined() && v.data.rank() == 4 && v.data.dtype() == DType::f32 && v.data.is_contiguous(),
                 invalid_input, std::string(what) + ": expected a contiguous f32 volume [C, Z, Y, X]");
}

// Snaps a continuous coordinate to the nearest integer when it is within rounding noise.
inline double snap(double x) {
  const double r = std::nearbyint(x);
  return std::abs(x - r) < 1e-6 ? r : x;
}

// One axis of a separable sampler: for each output index the two input neighbours and
// the weight of the second.
struct AxisTable {
  std::vector<std::int64_t> i0, i1;
  std::vector<float> w;
};

AxisTable make_table(std::int64_t n_out, std::int64_t n_in, Interpolation interp,
                     const std::function<double(std::int64_t)>& src_of) {
  AxisTable t;
  t.i0.resize(static_cast<std::size_t>(n_out));
  t.i1.resize(static_cast<std::size_t>(n_out));
  t.w.resize(static_cast<std::size_t>(n_out));
  for (std::int64_t o = 0; o < n_out; ++o) {
    const auto k = static_cast<std::size_t>(o);
    const double x = std::clamp(snap(src_of(o)), 0.0, static_cast<double>(n_in - 1));
    if (interp == Interpolation::nearest) {
      // Halves round up, as ITK's NearestNeighborInterpolateImageFunction does.
      const auto i = std::min<std::int64_t>(static_cast<std::int64_t>(std::floor(x + 0.5)), n_in - 1);
      t.i0[k] = t.i1[k] = i;
      t.w[k] = 0;
    } else {
      const auto i = static_cast<std::int64_t>(std::floor(x));
      t.i0[k] = i;
      t.i1[k] = std::min(i + 1, n_in - 1);
      t.w[k] = static_cast<float>(x - static_cast<double>(i));
    }
  }
  return t;
}

inline float lerp(float a, float b, float w) { return w == 0.f ? a : (1.f - w) * a + w * b; }

// Separable resampling of every channel through per-axis tables (x, y, z).
Volume resample_separable(const Volume& v, const Dims3& out_size, const Geometry& out_geometry,
                          const std::array<AxisTable, 3>& tab) {
  Volume out(v.channels(), out_size[2], out_size[1], out_size[0], out_geometry);
  out.metadata = v.metadata;
  const std::int64_t nx = v.nx(), ny = v.ny();
  const std::int64_t planes = v.channels() * out_size[2];
  parallel_for(planes, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t p = b; p < e; ++p) {
      const std::int64_t c = p / out_size[2], z = p % out_size[2];
      const float* src = v.channel(c);
      float* dst = out.channel(c) + z * out_size[1] * out_size[0];
      const auto kz = static_cast<std::size_t>(z);
      const float* s0 = src + tab[2].i0[kz] * ny * nx;
      const float* s1 = src + tab[2].i1[kz] * ny * nx;
      const float wz = tab[2].w[kz];
      for (std::int64_t y = 0; y < out_size[1]; ++y) {
        const auto ky = static_cast<std::size_t>(y);
        const std::int64_t y0 = tab[1].i0[ky] * nx, y1 = tab[1].i1[ky] * nx;
        const float wy = tab[1].w[ky];
        float* row = dst + y * out_size[0];
        for (std::int64_t x = 0; x < out_size[0]; ++x) {
          const auto kx = static_cast<std::size_t>(x);
          const std::int64_t x0 = tab[0].i0[kx], x1 = tab[0].i1[kx];
          const float wx = tab[0].w[kx];
          const float c00 = lerp(s0[y0 + x0], s0[y0 + x1], wx), c01 = lerp(s0[y1 + x0], s0[y1 + x1], wx);
          const float c10 = lerp(s1[y0 + x0], s1[y0 + x1], wx), c11 = lerp(s1[y1 + x0], s1[y1 + x1], wx);
          row[x] = lerp(lerp(c00, c01, wy), lerp(c10, c11, wy), wz);
        }
      }
    }
  });
  return out;
}

std::int64_t round_half_even(double x) { return static_cast<std::int64_t>(std::nearbyint(x)); }

}  // namespace

// ---- reorientation ------------------------------------------------------------------

AxisPermutation orientation_transform(const Geometry& g, std::string_view code) {
  const Eigen::Matrix3d target = direction_from_code(std::string(code));
  std::array<int, 3> perm{0, 1, 2}, best{0, 1, 2};
  double best_score = -1;
  do {
    double score = 0;
    for (int c = 0; c < 3; ++c) score += std::abs(target.col(c).dot(g.direction.col(perm[static_cast<std::size_t>(c)])));
    if (score > best_score + 1e-12) {
      best_score = score;
      best = perm;
    }
  } while (std::next_permutation(perm.begin(), perm.end()));
  AxisPermutation t;
  t.perm = best;
  for (int c = 0; c < 3; ++c)
    t.flip[static_cast<std::size_t>(c)] = target.col(c).dot(g.direction.col(best[static_cast<std::size_t>(c)])) < 0;
  return t;
}

AxisPermutation inverse(const AxisPermutation& t) {
  AxisPermutation inv;
  for (std::size_t c = 0; c < 3; ++c) {
    const auto a = static_cast<std::size_t>(t.perm[c]);
    inv.perm[a] = static_cast<int>(c);
    inv.flip[a] = t.flip[c];
  }
  return inv;
}

Geometry permute_geometry(const Geometry& g, const Dims3& size, const AxisPermutation& t) {
  Geometry out;
  Eigen::Vector3d first = Eigen::Vector3d::Zero();  // input index of output voxel (0,0,0)
  for (int c = 0; c < 3; ++c) {
    const auto k = static_cast<std::size_t>(c);
    const int a = t.perm[k];
    out.spacing[c] = g.spacing[a];
    out.direction.col(c) = t.flip[k] ? Eigen::Vector3d(-g.direction.col(a)) : Eigen::Vector3d(g.direction.col(a));
    if (t.flip[k]) first[a] = static_cast<double>(size[static_cast<std::size_t>(a)] - 1);
  }
  out.origin = g.index_to_physical(first);
  return out;
}

Volume permute_axes(const Volume& v, const AxisPermutation& t) {
  require_volume(v, "permute_axes");
  const Dims3 in = size_xyz(v);
  const std::array<std::int64_t, 3> in_stride{1, in[0], in[0] * in[1]};
  Dims3 out_size{};
  std::array<std::int64_t, 3> step{};
  std::int64_t base = 0;
  for (std::size_t c = 0; c < 3; ++c) {
    const auto a = static_cast<std::size_t>(t.perm[c]);
    out_size[c] = in[a];
    step[c] = t.flip[c] ? -in_stride[a] : in_stride[a];
    if (t.flip[c]) base += (in[a] - 1) * in_stride[a];
  }
  Volume out(v.channels(), out_size[2], out_size[1], out_size[0], permute_geometry(v.geometry, in, t));
  out.metadata = v.metadata;
  const std::int64_t planes = v.channels() * out_size[2];
  parallel_for(planes, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t p = b; p < e; ++p) {
      const std::int64_t c = p / out_size[2], z = p % out_size[2];
      const float* src = v.channel(c) + base + z * step[2];
      float* dst = out.channel(c) + z * out_size[1] * out_size[0];
      for (std::int64_t y = 0; y < out_size[1]; ++y) {
        const float* s = src + y * step[1];
        for (std::int64_t x = 0; x < out_size[0]; ++x) *dst++ = s[x * step[0]];
      }
    }
  });
  return out;
}

Volume reorient(const Volume& v, std::string_view code) {
  return permute_axes(v, orientation_transform(v.geometry, code));
}

// ---- resampling ---------------------------------------------------------------------

Dims3 resampled_size(const Dims3& size, const Geometry& g, const std::array<double, 3>& spacing, SizeRule rule) {
  Dims3 out{};
  for (std::size_t a = 0; a < 3; ++a) {
    VOXINFER_CHECK(std::isfinite(spacing[a]) && spacing[a] > 0, invalid_input,
                   "resample: target spacing[" + std::to_string(a) + "] must be positive");
    const double ratio = g.spacing[static_cast<int>(a)] / spacing[a];
    const double n = static_cast<double>(size[a]);
    out[a] = rule == SizeRule::extent ? round_half_even(n * ratio) : round_half_even((n - 1) * ratio + 1);
    out[a] = std::max<std::int64_t>(out[a], 1);
  }
  return out;
}

Volume resample_to_spacing(const Volume& v, const std::array<double, 3>& spacing, Interpolation interp,
                           SizeRule rule) {
  require_volume(v, "resample_to_spacing");
  const Dims3 in = size_xyz(v);
  const Dims3 out_size = resampled_size(in, v.geometry, spacing, rule);
  Geometry g = v.geometry;
  g.spacing = Eigen::Vector3d(spacing[0], spacing[1], spacing[2]);
  std::array<AxisTable, 3> tab;
  for (std::size_t a = 0; a < 3; ++a) {
    const double sp_out = spacing[a], sp_in = v.geometry.spacing[static_cast<int>(a)];
    tab[a] = make_table(out_size[a], in[a], interp, [&](std::int64_t o) {
      return sp_out == sp_in ? static_cast<double>(o) : static_cast<double>(o) * sp_out / sp_in;
    });
  }
  return resample_separable(v, out_size, g, tab);
}

Volume resample_to_grid(const Volume& v, const Geometry& geometry, const Dims3& size, Interpolation interp) {
  require_volume(v, "resample_to_grid");
  for (std::size_t a = 0; a < 3; ++a)
    VOXINFER_CHECK(size[a] > 0, invalid_input, "resample_to_grid: the target size must be positive");
  const Eigen::Matrix3d in_inv = (v.geometry.direction * v.geometry.spacing.asDiagonal()).inverse();
  const Eigen::Matrix3d m = in_inv * geometry.direction * geometry.spacing.asDiagonal();
  const Eigen::Vector3d off = in_inv * (geometry.origin - v.geometry.origin);
  // Axis-aligned grids (the common case) take the separable path.
  bool diagonal = true;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c)
      if (r != c && std::abs(m(r, c)) > 1e-9) diagonal = false;
  const Dims3 in = size_xyz(v);
  if (diagonal) {
    std::array<AxisTable, 3> tab;
    for (std::size_t a = 0; a < 3; ++a) {
      const int ai = static_cast<int>(a);
      tab[a] = make_table(size[a], in[a], interp, [&](std::int64_t o) { return m(ai, ai) * static_cast<double>(o) + off[ai]; });
    }
    return resample_separable(v, size, geometry, tab);
  }
  Volume out(v.channels(), size[2], size[1], size[0], geometry);
  out.metadata = v.metadata;
  const std::int64_t nx = in[0], ny = in[1];
  parallel_for(size[2], 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t z = b; z < e; ++z) {
      for (std::int64_t y = 0; y < size[1]; ++y) {
        for (std::int64_t x = 0; x < size[0]; ++x) {
          const Eigen::Vector3d o(static_cast<double>(x), static_cast<double>(y), static_cast<double>(z));
          Eigen::Vector3d s = m * o + off;
          std::array<std::int64_t, 3> i0{}, i1{};
          std::array<float, 3> w{};
          for (int a = 0; a < 3; ++a) {
            const auto k = static_cast<std::size_t>(a);
            const double hi = static_cast<double>(in[k] - 1);
            const double q = std::clamp(snap(s[a]), 0.0, hi);
            if (interp == Interpolation::nearest) {
              i0[k] = i1[k] = std::min<std::int64_t>(static_cast<std::int64_t>(std::floor(q + 0.5)), in[k] - 1);
            } else {
              i0[k] = static_cast<std::int64_t>(std::floor(q));
              i1[k] = std::min(i0[k] + 1, in[k] - 1);
              w[k] = static_cast<float>(q - static_cast<double>(i0[k]));
            }
          }
          for (std::int64_t c = 0; c < v.channels(); ++c) {
            const float* src = v.channel(c);
            auto at = [&](std::int64_t zz, std::int64_t yy, std::int64_t xx) { return src[(zz * ny + yy) * nx + xx]; };
            const float c00 = lerp(at(i0[2], i0[1], i0[0]), at(i0[2], i0[1], i1[0]), w[0]);
            const float c01 = lerp(at(i0[2], i1[1], i0[0]), at(i0[2], i1[1], i1[0]), w[0]);
            const float c10 = lerp(at(i1[2], i0[1], i0[0]), at(i1[2], i0[1], i1[0]), w[0]);
            const float c11 = lerp(at(i1[2], i1[1], i0[0]), at(i1[2], i1[1], i1[0]), w[0]);
            out.channel(c)[(z * size[1] + y) * size[0] + x] = lerp(lerp(c00, c01, w[1]), lerp(c10, c11, w[1]), w[2]);
          }
        }
      }
    }
  });
  return out;
}

Volume resize(const Volume& v, const Dims3& size) {
  require_volume(v, "resize");
  const Dims3 in = size_xyz(v);
  std::array<AxisTable, 3> tab;
  Eigen::Vector3d first;
  Geometry g = v.geometry;
  for (std::size_t a = 0; a < 3; ++a) {
    VOXINFER_CHECK(size[a] > 0, invalid_input, "resize: the target size must be positive");
    // float arithmetic as torch computes the source index for f32 tensors.
    const float scale = static_cast<float>(in[a]) / static_cast<float>(size[a]);
    auto src = [scale](std::int64_t o) { return scale * (static_cast<float>(o) + 0.5f) - 0.5f; };
    tab[a] = make_table(size[a], in[a], Interpolation::linear,
                        [&](std::int64_t o) { return static_cast<double>(std::max(src(o), 0.f)); });
    first[static_cast<int>(a)] = static_cast<double>(src(0));
    g.spacing[static_cast<int>(a)] = v.geometry.spacing[static_cast<int>(a)] * static_cast<double>(in[a]) /
                                     static_cast<double>(size[a]);
  }
  g.origin = v.geometry.index_to_physical(first);
  return resample_separable(v, size, g, tab);
}

// ---- cropping -----------------------------------------------------------------------

Volume crop_or_pad(const Volume& v, const Dims3& start, const Dims3& size, float pad_value) {
  require_volume(v, "crop_or_pad");
  for (std::size_t a = 0; a < 3; ++a) VOXINFER_CHECK(size[a] > 0, invalid_input, "crop_or_pad: the size must be positive");
  Geometry g = v.geometry;
  g.origin = v.geometry.index_to_physical(
      Eigen::Vector3d(static_cast<double>(start[0]), static_cast<double>(start[1]), static_cast<double>(start[2])));
  Volume out(v.channels(), size[2], size[1], size[0], g);
  out.metadata = v.metadata;
  const Dims3 in = size_xyz(v);
  // Valid x run of every row: [x_lo, x_hi) in output coordinates.
  const std::int64_t x_lo = std::clamp(-start[0], std::int64_t{0}, size[0]);
  const std::int64_t x_hi = std::clamp(in[0] - start[0], x_lo, size[0]);
  parallel_for(v.channels() * size[2], 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t p = b; p < e; ++p) {
      const std::int64_t c = p / size[2], z = p % size[2], iz = z + start[2];
      for (std::int64_t y = 0; y < size[1]; ++y) {
        float* row = out.channel(c) + (z * size[1] + y) * size[0];
        const std::int64_t iy = y + start[1];
        if (iz < 0 || iz >= in[2] || iy < 0 || iy >= in[1]) {
          std::fill(row, row + size[0], pad_value);
          continue;
        }
        const float* src = v.channel(c) + (iz * in[1] + iy) * in[0] + start[0];
        std::fill(row, row + x_lo, pad_value);
        std::copy(src + x_lo, src + x_hi, row + x_lo);
        std::fill(row + x_hi, row + size[0], pad_value);
      }
    }
  });
  return out;
}

Volume center_crop_or_pad(const Volume& v, const Dims3& size, float pad_value) {
  require_volume(v, "center_crop_or_pad");
  const Dims3 in = size_xyz(v);
  Dims3 start{};
  for (std::size_t a = 0; a < 3; ++a)
    start[a] = in[a] >= size[a] ? in[a] / 2 - size[a] / 2 : -((size[a] - in[a]) / 2);
  return crop_or_pad(v, start, size, pad_value);
}

std::optional<Box> foreground_box(const Volume& v, std::int64_t margin, float level) {
  require_volume(v, "foreground_box");
  const Dims3 in = size_xyz(v);
  Box box{{in[0], in[1], in[2]}, {0, 0, 0}};
  bool any = false;
  for (std::int64_t c = 0; c < v.channels(); ++c) {
    const float* p = v.channel(c);
    for (std::int64_t z = 0; z < in[2]; ++z)
      for (std::int64_t y = 0; y < in[1]; ++y)
        for (std::int64_t x = 0; x < in[0]; ++x)
          if (p[(z * in[1] + y) * in[0] + x] > level) {
            any = true;
            const Dims3 i{x, y, z};
            for (std::size_t a = 0; a < 3; ++a) {
              box.begin[a] = std::min(box.begin[a], i[a]);
              box.end[a] = std::max(box.end[a], i[a] + 1);
            }
          }
  }
  if (!any) return std::nullopt;
  for (std::size_t a = 0; a < 3; ++a) {
    box.begin[a] = std::max<std::int64_t>(0, box.begin[a] - margin);
    box.end[a] = std::min(in[a], box.end[a] + margin);
  }
  return box;
}

Volume foreground_crop(const Volume& v, const Dims3& size, std::int64_t margin, float pad_value) {
  const std::optional<Box> box = foreground_box(v, margin);
  if (!box) return center_crop_or_pad(v, size, pad_value);
  Dims3 start{};
  for (std::size_t a = 0; a < 3; ++a) {
    const std::int64_t len = box->end[a] - box->begin[a];
    start[a] = box->begin[a] + len / 2 - size[a] / 2;
  }
  return crop_or_pad(v, start, size, pad_value);
}

// ---- intensity ----------------------------------------------------------------------

double percentile(std::span<float> values, double p) {
  VOXINFER_CHECK(!values.empty(), invalid_input, "percentile of no values");
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(rank));
  const std::size_t hi = std::min(lo + 1, values.size() - 1);
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(lo), values.end());
  const double a = values[lo];
  double b = a;
  if (hi != lo) b = *std::min_element(values.begin() + static_cast<std::ptrdiff_t>(lo) + 1, values.end());
  const double t = rank - static_cast<double>(lo);
  // numpy's _lerp: from the nearer end, so that t = 1 gives b exactly.
  return t >= 0.5 ? b - (b - a) * (1 - t) : a + (b - a) * t;
}

namespace {

constexpr std::int64_t kGrain = 1 << 16;

template <typename F>
void for_each_value(float* p, std::int64_t n, F f) {
  parallel_for(n, kGrain, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) p[i] = f(p[i]);
  });
}

struct Moments {
  double sum = 0;
  std::int64_t n = 0;
};

// Mean and population standard deviation (two passes, fixed partition).
std::pair<double, double> mean_std(const float* p, std::int64_t n, bool nonzero) {
  const Moments m = parallel_reduce(
      n, kGrain, Moments{},
      [&](std::int64_t b, std::int64_t e) {
        Moments r;
        for (std::int64_t i = b; i < e; ++i)
          if (!nonzero || p[i] != 0.f) {
            r.sum += p[i];
            ++r.n;
          }
        return r;
      },
      [](Moments a, const Moments& b) { return Moments{a.sum + b.sum, a.n + b.n}; });
  if (m.n == 0) return {0.0, 1.0};
  const double mean = m.sum / static_cast<double>(m.n);
  const double ss = parallel_reduce(
      n, kGrain, 0.0,
      [&](std::int64_t b, std::int64_t e) {
        double r = 0;
        for (std::int64_t i = b; i < e; ++i)
          if (!nonzero || p[i] != 0.f) r += (p[i] - mean) * (p[i] - mean);
        return r;
      },
      [](double a, double b) { return a + b; });
  return {mean, std::sqrt(ss / static_cast<double>(m.n))};
}

std::pair<float, float> min_max(const float* p, std::int64_t n) {
  using MM = std::pair<float, float>;
  return parallel_reduce(
      n, kGrain, MM{std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()},
      [&](std::int64_t b, std::int64_t e) {
        MM r{std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
        for (std::int64_t i = b; i < e; ++i) {
          r.first = std::min(r.first, p[i]);
          r.second = std::max(r.second, p[i]);
        }
        return r;
      },
      [](MM a, const MM& b) { return MM{std::min(a.first, b.first), std::max(a.second, b.second)}; });
}

// Applies a per-image op to one block of values (a channel, or all channels).
void apply_per_image(float* p, std::int64_t n, const IntensityOp& op) {
  switch (op.kind) {
    case IntensityOp::Kind::minmax: {
      const auto [mn, mx] = min_max(p, n);
      if (!(mx > mn)) {
        for_each_value(p, n, [](float) { return 0.f; });
        return;
      }
      const float lo = mn, range = mx - mn;
      for_each_value(p, n, [=](float x) { return (x - lo) / range; });
      return;
    }
    case IntensityOp::Kind::zscore: {
      auto [mean, sd] = mean_std(p, n, op.nonzero);
      if (!(sd > 0)) sd = 1;  // constant image: subtract the mean only
      const auto m = static_cast<float>(mean), s = static_cast<float>(sd);
      const bool nz = op.nonzero;
      for_each_value(p, n, [=](float x) { return nz && x == 0.f ? 0.f : (x - m) / s; });
      return;
    }
    case IntensityOp::Kind::quantile: {
      // brainchop's quantile normalisation: the sorted values' s[floor(lo N)] and
      // s[ceil(hi N) - 1], then (x - qmin) / (qmax - qmin) in float32, not clipped.
      std::vector<float> vals(p, p + n);
      const auto i_lo = static_cast<std::size_t>(std::floor(op.lo * static_cast<double>(n)));
      const auto i_hi = static_cast<std::size_t>(std::max(1.0, std::ceil(op.hi * static_cast<double>(n)))) - 1;
      std::nth_element(vals.begin(), vals.begin() + static_cast<std::ptrdiff_t>(i_hi), vals.end());
      const float qmax = vals[i_hi];
      std::nth_element(vals.begin(), vals.begin() + static_cast<std::ptrdiff_t>(std::min(i_lo, i_hi)),
                       vals.begin() + static_cast<std::ptrdiff_t>(i_hi));
      const float qmin = vals[std::min(i_lo, i_hi)];
      if (!(qmax > qmin)) {
        for_each_value(p, n, [](float) { return 0.f; });
        return;
      }
      const float range = qmax - qmin;
      for_each_value(p, n, [=](float x) { return (x - qmin) / range; });
      return;
    }
    case IntensityOp::Kind::percentile_clip: {
      std::vector<float> vals;
      vals.reserve(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i)
        if (!op.nonzero || p[i] != 0.f) vals.push_back(p[i]);
      if (vals.empty()) return;
      const auto lo = static_cast<float>(percentile(vals, op.lo));
      const auto hi = static_cast<float>(percentile(vals, op.hi));
      const bool nz = op.nonzero;
      for_each_value(p, n, [=](float x) { return nz && x == 0.f ? 0.f : std::clamp(x, lo, hi); });
      return;
    }
    default: return;
  }
}

}  // namespace

void apply_intensity(Volume& v, const IntensityOp& op) {
  require_volume(v, "apply_intensity");
  float* p = v.data.data<float>();
  const std::int64_t n = v.data.numel();
  switch (op.kind) {
    case IntensityOp::Kind::clip: {
      const auto lo = static_cast<float>(op.min), hi = static_cast<float>(op.max);
      for_each_value(p, n, [=](float x) { return std::clamp(x, lo, hi); });
      return;
    }
    case IntensityOp::Kind::scale: {
      // MONAI ScaleIntensityRange: (x - a) / (b - a) * (d - c) + c, optionally clipped.
      const auto a = static_cast<float>(op.from[0]), den = static_cast<float>(op.from[1] - op.from[0]);
      const auto c = static_cast<float>(op.to[0]), span = static_cast<float>(op.to[1] - op.to[0]);
      const auto lo = static_cast<float>(std::min(op.to[0], op.to[1])), hi = static_cast<float>(std::max(op.to[0], op.to[1]));
      const bool clip = op.clip_output;
      for_each_value(p, n, [=](float x) {
        const float y = (x - a) / den * span + c;
        return clip ? std::clamp(y, lo, hi) : y;
      });
      return;
    }
    case IntensityOp::Kind::zscore:
      if (op.mean && op.std) {
        const auto m = static_cast<float>(*op.mean), s = static_cast<float>(*op.std);
        for_each_value(p, n, [=](float x) { return (x - m) / s; });
        return;
      }
      [[fallthrough]];
    case IntensityOp::Kind::minmax:
    case IntensityOp::Kind::percentile_clip:
    case IntensityOp::Kind::quantile:
      if (op.channel_wise) {
        for (std::int64_t c = 0; c < v.channels(); ++c) apply_per_image(v.channel(c), v.voxels(), op);
      } else {
        apply_per_image(p, n, op);
      }
      return;
  }
}

void apply_intensity(Volume& v, std::span<const IntensityOp> ops) {
  for (const auto& op : ops) apply_intensity(v, op);
}

// ---- the model's tensor -------------------------------------------------------------

namespace {

// [K, A, B, C] -> [K, C, B, A] (a full reversal of the three spatial axes).
Tensor reverse_spatial(const Tensor& src_t, const Shape& out_shape) {
  const Tensor src_c = src_t.contiguous();
  Tensor out(out_shape, DType::f32);
  const std::int64_t k = src_c.dim(0), a = src_c.dim(1), b = src_c.dim(2), c = src_c.dim(3);
  const float* src = src_c.data<float>();
  float* dst = out.data<float>();
  // Output plane (channel, i over c) gathers src[ch, :, :, i].
  parallel_for(k * c, 1, [&](std::int64_t pb, std::int64_t pe) {
    for (std::int64_t p = pb; p < pe; ++p) {
      const std::int64_t ch = p / c, i = p % c;
      const float* s = src + ch * a * b * c + i;
      float* d = dst + (ch * c + i) * b * a;
      for (std::int64_t j = 0; j < b; ++j)
        for (std::int64_t l = 0; l < a; ++l) d[j * a + l] = s[(l * b + j) * c];
    }
  });
  return out;
}

}  // namespace

Tensor to_model_tensor(const Volume& v, AxisOrder axes) {
  require_volume(v, "to_model_tensor");
  const std::int64_t c = v.channels(), z = v.nz(), y = v.ny(), x = v.nx();
  if (axes == AxisOrder::zyx) return v.data.reshape(Shape{1, c, z, y, x});
  return reverse_spatial(v.data, Shape{c, x, y, z}).reshape(Shape{1, c, x, y, z});
}

Tensor from_model_order(const Tensor& t, AxisOrder axes) {
  VOXINFER_CHECK(t.dtype() == DType::f32 && (t.rank() == 4 || (t.rank() == 5 && t.dim(0) == 1)), invalid_input,
                 "from_model_order: expected an f32 tensor [1, K, ...] or [K, ...], got " + t.shape().str());
  const Tensor src = t.rank() == 5 ? t.contiguous().reshape(Shape{t.dim(1), t.dim(2), t.dim(3), t.dim(4)}) : t.contiguous();
  if (axes == AxisOrder::zyx) return src;
  return reverse_spatial(src, Shape{src.dim(0), src.dim(3), src.dim(2), src.dim(1)});
}

Volume volume_from_model_tensor(const Tensor& t, AxisOrder axes, const Geometry& geometry) {
  Volume v;
  v.data = from_model_order(t, axes);
  v.geometry = geometry;
  return v;
}

}  // namespace voxinfer
