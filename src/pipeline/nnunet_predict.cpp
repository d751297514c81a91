// nnU-Net's preprocessing, sliding-window prediction and export on Volumes.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include <immintrin.h>

#include "pipeline/nnunet_internal.h"
#include "voxinfer/core/cpu.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/pipeline/nnunet_resample.h"
#include "voxinfer/pipeline/preprocess.h"

namespace voxinfer::nnunet {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// IEEE half precision (round to nearest even), as torch stores nnU-Net's logits; portable bit
// conversions (any compiler), F16C for the accumulation where the CPU has it.
using Half = std::uint16_t;

inline Half to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u)  // infinity, NaN (quiet, payload kept where it fits)
    return static_cast<Half>(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0u));
  if (a >= 0x477ff000u) return static_cast<Half>(sign | 0x7c00u);  // rounds to infinity
  if (a < 0x38800000u) {  // a subnormal half: let the FPU round at 2^-24 by adding 0.5
    float v;
    std::memcpy(&v, &a, 4);
    v += 0.5f;
    std::uint32_t r;
    std::memcpy(&r, &v, 4);
    return static_cast<Half>(sign | (r - 0x3f000000u));
  }
  a += 0xc8000fffu + ((a >> 13) & 1u);  // rebias the exponent, round half to even
  return static_cast<Half>(sign | (a >> 13));
}

inline float to_float(Half h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  std::uint32_t bits;
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  } else if (e == 31) {
    bits = sign | 0x7f800000u | (m << 13);
  } else {
    bits = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float round_half(float x) {
  return to_float(to_half(x));
}

// acc[i] = half(acc[i] + w[i] * x[i]) over n values (x null: acc[i] = half(acc[i] + w[i])), the
// in-place add of a float32 tensor into a float16 one.
__attribute__((target("avx2,f16c"))) void accumulate_half_f16c(Half* acc, const float* x, const float* w,
                                                               std::int64_t n) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(w + i);
    if (x) v = _mm256_mul_ps(v, _mm256_loadu_ps(x + i));
    auto* ap = reinterpret_cast<__m128i*>(acc + i);
    const __m256 a = _mm256_add_ps(_mm256_cvtph_ps(_mm_loadu_si128(ap)), v);
    _mm_storeu_si128(ap, _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) acc[i] = to_half(to_float(acc[i]) + (x ? w[i] * x[i] : w[i]));
}

void accumulate_half(Half* acc, const float* x, const float* w, std::int64_t n) {
  static const bool f16c = hardware_isa() != Isa::generic;  // every AVX2 CPU has F16C
  if (f16c) return accumulate_half_f16c(acc, x, w, n);
  for (std::int64_t i = 0; i < n; ++i) acc[i] = to_half(to_float(acc[i]) + (x ? w[i] * x[i] : w[i]));
}

Half* halves(Tensor& t) {
  return reinterpret_cast<Half*>(t.raw());
}
const Half* halves(const Tensor& t) {
  return reinterpret_cast<const Half*>(t.raw());
}

// out[c, i0, i1, i2] = in[c, j...] with out axis a = in axis perm[a] (shape [C, s0, s1, s2]).
Tensor permute3(const Tensor& in, const std::array<int, 3>& perm) {
  const std::int64_t C = in.dim(0);
  const std::array<std::int64_t, 3> s{in.dim(1), in.dim(2), in.dim(3)};
  if (perm == std::array<int, 3>{0, 1, 2}) return in;
  const std::array<std::int64_t, 3> os{s[static_cast<std::size_t>(perm[0])], s[static_cast<std::size_t>(perm[1])],
                                       s[static_cast<std::size_t>(perm[2])]};
  Tensor out(Shape{C, os[0], os[1], os[2]}, DType::f32);
  const std::array<std::int64_t, 3> is{s[1] * s[2], s[2], 1};
  const std::int64_t st0 = is[static_cast<std::size_t>(perm[0])], st1 = is[static_cast<std::size_t>(perm[1])],
                     st2 = is[static_cast<std::size_t>(perm[2])];
  const float* src = in.data<float>();
  float* dst = out.data<float>();
  const std::int64_t vox = s[0] * s[1] * s[2];
  parallel_for(C * os[0], 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t ci = b; ci < e; ++ci) {
      const std::int64_t c = ci / os[0], i0 = ci % os[0];
      const float* sp = src + c * vox + i0 * st0;
      float* dp = dst + (c * os[0] + i0) * os[1] * os[2];
      for (std::int64_t i1 = 0; i1 < os[1]; ++i1)
        for (std::int64_t i2 = 0; i2 < os[2]; ++i2) *dp++ = sp[i1 * st1 + i2 * st2];
    }
  });
  return out;
}

std::array<int, 3> inverse_perm(const std::array<int, 3>& p) {
  std::array<int, 3> inv{};
  for (int i = 0; i < 3; ++i) inv[static_cast<std::size_t>(p[static_cast<std::size_t>(i)])] = i;
  return inv;
}

bool same_grid(const Volume& a, const Volume& b) {
  if (a.nx() != b.nx() || a.ny() != b.ny() || a.nz() != b.nz()) return false;
  const auto& ga = a.geometry;
  const auto& gb = b.geometry;
  const double tol = 1e-3;
  return (ga.spacing - gb.spacing).cwiseAbs().maxCoeff() <= tol * ga.spacing.cwiseAbs().maxCoeff() &&
         (ga.origin - gb.origin).cwiseAbs().maxCoeff() <= tol * std::max(1.0, ga.spacing.maxCoeff()) &&
         (ga.direction - gb.direction).cwiseAbs().maxCoeff() <= 1e-3;
}

// scipy's binary_fill_holes on the cropped mask: background not 6-connected to the box's
// faces becomes foreground. (Holes are inside the nonzero box, so filling the crop matches
// filling the whole image.)
std::vector<std::uint8_t> fill_holes(std::vector<std::uint8_t> mask, const Index3& s) {
  const std::int64_t n = s[0] * s[1] * s[2];
  std::vector<std::uint8_t> outside(static_cast<std::size_t>(n), 0);
  std::vector<std::int64_t> stack;
  const auto push = [&](std::int64_t i) {
    if (!mask[static_cast<std::size_t>(i)] && !outside[static_cast<std::size_t>(i)]) {
      outside[static_cast<std::size_t>(i)] = 1;
      stack.push_back(i);
    }
  };
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        if (a == 0 || b == 0 || c == 0 || a == s[0] - 1 || b == s[1] - 1 || c == s[2] - 1)
          push((a * s[1] + b) * s[2] + c);
  while (!stack.empty()) {
    const std::int64_t i = stack.back();
    stack.pop_back();
    const std::int64_t c = i % s[2], b = (i / s[2]) % s[1], a = i / (s[1] * s[2]);
    if (a > 0) push(i - s[1] * s[2]);
    if (a + 1 < s[0]) push(i + s[1] * s[2]);
    if (b > 0) push(i - s[2]);
    if (b + 1 < s[1]) push(i + s[2]);
    if (c > 0) push(i - 1);
    if (c + 1 < s[2]) push(i + 1);
  }
  for (std::int64_t i = 0; i < n; ++i) mask[static_cast<std::size_t>(i)] = outside[static_cast<std::size_t>(i)] ? 0 : 1;
  return mask;
}

void normalize_channel(float* x, std::int64_t n, const Normalization& norm, const std::vector<std::uint8_t>* mask,
                       const std::string& what) {
  switch (norm.scheme) {
    case Normalization::Scheme::none:
      return;
    case Normalization::Scheme::ct: {
      const auto lo = static_cast<float>(norm.lower), hi = static_cast<float>(norm.upper),
                 mean = static_cast<float>(norm.mean);
      const auto sd = static_cast<float>(std::max(norm.std, 1e-8));
      parallel_for(n, 1 << 16, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i) {
          float v = x[i];
          v = std::isnan(v) ? v : std::min(std::max(v, lo), hi);
          v -= mean;
          v /= sd;
          x[i] = v;
        }
      });
      return;
    }
    case Normalization::Scheme::zscore: {
      const bool masked = norm.use_mask_for_norm && mask;
      double sum = 0, sum2 = 0;
      std::int64_t count = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        if (masked && !(*mask)[static_cast<std::size_t>(i)]) continue;
        sum += x[i];
        ++count;
      }
      if (count == 0) return;
      const double mean = sum / static_cast<double>(count);
      for (std::int64_t i = 0; i < n; ++i) {
        if (masked && !(*mask)[static_cast<std::size_t>(i)]) continue;
        const double d = x[i] - mean;
        sum2 += d * d;
      }
      if (!std::isfinite(mean) || !std::isfinite(sum2))
        fail(ErrorCode::invalid_input,
             what + ": the image holds NaN or infinite values; ZScoreNormalization cannot normalise it");
      const auto m = static_cast<float>(mean);
      const auto sd = static_cast<float>(std::max(std::sqrt(sum2 / static_cast<double>(count)), 1e-8));
      parallel_for(n, 1 << 16, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i)
          if (!masked || (*mask)[static_cast<std::size_t>(i)]) x[i] = (x[i] - m) / sd;
      });
      return;
    }
    case Normalization::Scheme::rescale_to_01: {
      float lo = std::numeric_limits<float>::infinity(), hi = -lo;
      for (std::int64_t i = 0; i < n; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
      }
      for (std::int64_t i = 0; i < n; ++i) x[i] -= lo;
      const float d = std::max(hi - lo, 1e-8f);
      for (std::int64_t i = 0; i < n; ++i) x[i] /= d;
      return;
    }
    case Normalization::Scheme::rgb_to_01:
      for (std::int64_t i = 0; i < n; ++i) {
        if (!(x[i] >= 0 && x[i] <= 255))
          fail(ErrorCode::invalid_input,
               what + ": RGBTo01Normalization needs values in 0..255, found " + std::to_string(x[i]));
        x[i] /= 255.f;
      }
      return;
  }
}

// Keeps the largest 26-connected component of the voxels whose label is in `values`; the
// rest of them become `background` (nnU-Net's remove_all_but_largest_component_from_segmentation).
void keep_largest_of_union(std::vector<float>& lab, const Index3& s, const std::vector<int>& values, int background) {
  const std::int64_t n = s[0] * s[1] * s[2];
  std::vector<std::int32_t> comp(static_cast<std::size_t>(n), -1);
  const auto in_set = [&](std::int64_t i) {
    const int v = static_cast<int>(lab[static_cast<std::size_t>(i)]);
    return std::find(values.begin(), values.end(), v) != values.end();
  };
  std::vector<std::int64_t> sizes, stack;
  for (std::int64_t start = 0; start < n; ++start) {
    if (comp[static_cast<std::size_t>(start)] >= 0 || !in_set(start)) continue;
    const auto id = static_cast<std::int32_t>(sizes.size());
    std::int64_t size = 0;
    comp[static_cast<std::size_t>(start)] = id;
    stack.push_back(start);
    while (!stack.empty()) {
      const std::int64_t i = stack.back();
      stack.pop_back();
      ++size;
      const std::int64_t c = i % s[2], b = (i / s[2]) % s[1], a = i / (s[1] * s[2]);
      for (int da = -1; da <= 1; ++da)
        for (int db = -1; db <= 1; ++db)
          for (int dc = -1; dc <= 1; ++dc) {
            const std::int64_t na = a + da, nb = b + db, nc = c + dc;
            if (na < 0 || nb < 0 || nc < 0 || na >= s[0] || nb >= s[1] || nc >= s[2]) continue;
            const std::int64_t j = (na * s[1] + nb) * s[2] + nc;
            if (comp[static_cast<std::size_t>(j)] >= 0 || !in_set(j)) continue;
            comp[static_cast<std::size_t>(j)] = id;
            stack.push_back(j);
          }
    }
    sizes.push_back(size);
  }
  if (sizes.size() < 2) return;
  const auto keep = static_cast<std::int32_t>(std::max_element(sizes.begin(), sizes.end()) - sizes.begin());
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int32_t c = comp[static_cast<std::size_t>(i)];
    if (c >= 0 && c != keep) lab[static_cast<std::size_t>(i)] = static_cast<float>(background);
  }
}

}  // namespace

Preprocessed preprocess(const Model& model, const std::vector<Volume>& channels_in) {
  const Dataset& ds = model.dataset();
  const Configuration& cfg = model.configuration();
  const auto want = static_cast<std::int64_t>(ds.channel_names.size());
  std::vector<Volume> channels;
  for (const auto& v : channels_in)
    for (std::int64_t c = 0; c < v.channels(); ++c) {
      Volume one(1, v.nz(), v.ny(), v.nx(), v.geometry);
      std::memcpy(one.channel(0), v.channel(c), static_cast<std::size_t>(v.voxels()) * sizeof(float));
      one.metadata = v.metadata;
      channels.push_back(std::move(one));
    }
  if (static_cast<std::int64_t>(channels.size()) != want) {
    std::string names;
    for (const auto& n : ds.channel_names) names += (names.empty() ? "" : ", ") + n;
    fail(ErrorCode::invalid_input, "the model takes " + std::to_string(want) + " input channel" +
                                       (want == 1 ? "" : "s") + " (" + names + "), " + std::to_string(channels.size()) +
                                       " given");
  }
  for (std::size_t c = 1; c < channels.size(); ++c)
    if (!same_grid(channels[0], channels[c]))
      fail(ErrorCode::invalid_input,
           "input channel " + std::to_string(c) + " (" + ds.channel_names[c] + ") is not on the grid of channel 0");

  Preprocessed p;
  p.input_geometry = channels[0].geometry;
  p.input_size = {channels[0].nx(), channels[0].ny(), channels[0].nz()};
  if (ds.reader == "NibabelIOWithReorient") {
    for (auto& v : channels) v = reorient(v, "RAS");
    p.reoriented = true;
  }
  const Volume& v0 = channels[0];
  // The reader's array: Volume [Z, Y, X] order, spacing reversed (nibabel's transpose(2, 1, 0),
  // SimpleITK's GetArrayFromImage).
  Tensor arr(Shape{want, v0.nz(), v0.ny(), v0.nx()}, DType::f32);
  for (std::int64_t c = 0; c < want; ++c)
    std::memcpy(arr.data<float>() + c * v0.voxels(), channels[static_cast<std::size_t>(c)].channel(0),
                static_cast<std::size_t>(v0.voxels()) * sizeof(float));
  channels.clear();
  const Spacing3 sp_arr{v0.geometry.spacing[2], v0.geometry.spacing[1], v0.geometry.spacing[0]};
  const auto& tf = model.transpose_forward();
  arr = permute3(arr, tf);
  for (int i = 0; i < 3; ++i)
    p.spacing[static_cast<std::size_t>(i)] = sp_arr[static_cast<std::size_t>(tf[static_cast<std::size_t>(i)])];
  const Index3 s{arr.dim(1), arr.dim(2), arr.dim(3)};
  p.shape_before_cropping = s;

  // Crop to the nonzero box of all channels.
  Index3 lo{s[0], s[1], s[2]}, hi{-1, -1, -1};
  const float* a = arr.data<float>();
  const std::int64_t vox = s[0] * s[1] * s[2];
  for (std::int64_t i0 = 0; i0 < s[0]; ++i0)
    for (std::int64_t i1 = 0; i1 < s[1]; ++i1)
      for (std::int64_t i2 = 0; i2 < s[2]; ++i2) {
        const std::int64_t i = (i0 * s[1] + i1) * s[2] + i2;
        bool nz = false;
        for (std::int64_t c = 0; c < want && !nz; ++c) nz = a[c * vox + i] != 0.f;
        if (!nz) continue;
        lo = {std::min(lo[0], i0), std::min(lo[1], i1), std::min(lo[2], i2)};
        hi = {std::max(hi[0], i0), std::max(hi[1], i1), std::max(hi[2], i2)};
      }
  if (hi[0] < 0) lo = {0, 0, 0}, hi = {s[0] - 1, s[1] - 1, s[2] - 1};  // an all-zero image: no crop
  for (int i = 0; i < 3; ++i)
    p.bbox[static_cast<std::size_t>(i)] = {lo[static_cast<std::size_t>(i)], hi[static_cast<std::size_t>(i)] + 1};
  const Index3 cs{hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1};
  p.shape_after_cropping = cs;
  Tensor crop(Shape{want, cs[0], cs[1], cs[2]}, DType::f32);
  for (std::int64_t c = 0; c < want; ++c)
    for (std::int64_t i0 = 0; i0 < cs[0]; ++i0)
      for (std::int64_t i1 = 0; i1 < cs[1]; ++i1)
        std::memcpy(crop.data<float>() + ((c * cs[0] + i0) * cs[1] + i1) * cs[2],
                    a + c * vox + ((i0 + lo[0]) * s[1] + i1 + lo[1]) * s[2] + lo[2],
                    static_cast<std::size_t>(cs[2]) * sizeof(float));
  arr = Tensor();

  // The nonzero mask (holes filled) for ZScoreNormalization with use_mask_for_norm.
  std::vector<std::uint8_t> mask;
  const std::int64_t cvox = cs[0] * cs[1] * cs[2];
  for (const auto& n : cfg.normalization)
    if (n.scheme == Normalization::Scheme::zscore && n.use_mask_for_norm && mask.empty()) {
      mask.assign(static_cast<std::size_t>(cvox), 0);
      for (std::int64_t c = 0; c < want; ++c)
        for (std::int64_t i = 0; i < cvox; ++i)
          if (crop.data<float>()[c * cvox + i] != 0.f) mask[static_cast<std::size_t>(i)] = 1;
      mask = fill_holes(std::move(mask), cs);
    }
  for (std::int64_t c = 0; c < want; ++c)
    normalize_channel(
        crop.data<float>() + c * cvox, cvox, cfg.normalization[static_cast<std::size_t>(c)],
        mask.empty() ? nullptr : &mask,
        "input channel " + std::to_string(c) + " (" + ds.channel_names[static_cast<std::size_t>(c)] + ")");

  // Resample to the configuration's spacing (2D: the slice axis keeps its spacing).
  p.target_spacing = cfg.dims == 2 ? Spacing3{p.spacing[0], cfg.spacing[0], cfg.spacing[1]}
                                   : Spacing3{cfg.spacing[0], cfg.spacing[1], cfg.spacing[2]};
  const Index3 ns = compute_new_shape(cs, p.spacing, p.target_spacing);
  const SeparateZ sep = decide_separate_z(cfg.data_rule.force_separate_z, p.spacing, p.target_spacing);
  p.data = resample_data_or_seg(crop, ns, false, sep, cfg.data_rule.order, cfg.data_rule.order_z);
  return p;
}

namespace {

// One fold's sliding window exactly as nnUNetPredictor runs it on the CPU: the image padded
// to the patch (centred, zeros), tiles in compute_steps order, each tile's prediction
// averaged over the mirror combinations (itertools order) in float32, weighted by the
// Gaussian of compute_gaussian scaled to 10 and stored in half precision, accumulated into
// half-precision sums (predicted_logits and n_predictions are torch.half) and divided at the
// end. Returns [K, s0, s1, s2] holding half-precision values.
Tensor sliding_window_nnunet(graph::Session& session, const Tensor& data, const Index3& patch, double step,
                             const std::vector<int>& mirror_axes, const std::function<void()>& tile_done) {
  const std::int64_t C = data.dim(0);
  const Index3 s{data.dim(1), data.dim(2), data.dim(3)};
  Index3 ps{}, lo{};
  for (std::size_t a = 0; a < 3; ++a) {
    ps[a] = std::max(s[a], patch[a]);
    lo[a] = (ps[a] - s[a]) / 2;
  }
  std::array<std::vector<std::int64_t>, 3> starts;
  for (std::size_t a = 0; a < 3; ++a) starts[a] = tile_starts(ps[a], patch[a], 1.0 - step, WindowStyle::nnunet);
  // The Gaussian: compute_gaussian(value_scaling_factor=10) in float16, zeros replaced by the
  // smallest non-zero value.
  Tensor g = importance_map(patch, BlendMode::gaussian, 0.125, WindowStyle::nnunet);
  const std::int64_t pv = patch[0] * patch[1] * patch[2];
  float* gp = g.data<float>();
  float gmin = std::numeric_limits<float>::infinity();
  for (std::int64_t i = 0; i < pv; ++i) {
    gp[i] = round_half(gp[i] * 10.f);
    if (gp[i] > 0) gmin = std::min(gmin, gp[i]);
  }
  for (std::int64_t i = 0; i < pv; ++i)
    if (gp[i] == 0.f) gp[i] = gmin;
  // Mirror combinations: all non-empty subsets of the axes, by size, in itertools order.
  std::vector<std::array<bool, 3>> combos;
  const std::size_t na = mirror_axes.size();
  for (std::size_t k = 1; k <= na; ++k) {
    std::vector<bool> pick(na, false);
    std::fill(pick.begin(), pick.begin() + static_cast<std::ptrdiff_t>(k), true);
    do {
      std::array<bool, 3> f{false, false, false};
      for (std::size_t i = 0; i < na; ++i)
        if (pick[i]) f[static_cast<std::size_t>(mirror_axes[i])] = true;
      combos.push_back(f);
    } while (std::prev_permutation(pick.begin(), pick.end()));
  }

  std::int64_t K = -1;
  Tensor acc, wsum(Shape{ps[0], ps[1], ps[2]}, DType::f16);
  Tensor tile(Shape{1, C, patch[0], patch[1], patch[2]}, DType::f32);
  const float* src = data.data<float>();
  for (const std::int64_t s0 : starts[0])
    for (const std::int64_t s1 : starts[1])
      for (const std::int64_t s2 : starts[2]) {
        // The tile, with zeros where it reaches into the padding.
        float* t = tile.data<float>();
        std::fill(t, t + C * pv, 0.f);
        for (std::int64_t c = 0; c < C; ++c)
          for (std::int64_t a = 0; a < patch[0]; ++a) {
            const std::int64_t i0 = s0 + a - lo[0];
            if (i0 < 0 || i0 >= s[0]) continue;
            for (std::int64_t b = 0; b < patch[1]; ++b) {
              const std::int64_t i1 = s1 + b - lo[1];
              if (i1 < 0 || i1 >= s[1]) continue;
              const std::int64_t x0 = std::max<std::int64_t>(0, lo[2] - s2), x1 = std::min(patch[2], s[2] + lo[2] - s2);
              if (x1 > x0)
                std::memcpy(t + ((c * patch[0] + a) * patch[1] + b) * patch[2] + x0,
                            src + ((c * s[0] + i0) * s[1] + i1) * s[2] + s2 + x0 - lo[2],
                            static_cast<std::size_t>(x1 - x0) * sizeof(float));
            }
          }
        Tensor pred = session.run(std::vector<Tensor>{tile})[0].contiguous().clone();
        for (const auto& f : combos) {
          const Tensor back = flip_spatial(session.run(std::vector<Tensor>{flip_spatial(tile, f)})[0], f);
          float* pp = pred.data<float>();
          const float* bp = back.data<float>();
          for (std::int64_t i = 0; i < pred.numel(); ++i) pp[i] += bp[i];
        }
        if (K < 0) {
          K = pred.dim(1);
          acc = Tensor(Shape{K, ps[0], ps[1], ps[2]}, DType::f16);
        }
        VOXINFER_CHECK(pred.dim(1) == K && pred.numel() == K * pv, invalid_model,
                       "the network returned logits of shape " + pred.shape().str());
        float* pp = pred.data<float>();
        if (!combos.empty()) {
          const auto n = static_cast<float>(combos.size() + 1);
          for (std::int64_t i = 0; i < pred.numel(); ++i) pp[i] /= n;
        }
        parallel_for(K * patch[0], 1, [&](std::int64_t b0, std::int64_t e0) {
          for (std::int64_t ka = b0; ka < e0; ++ka) {
            const std::int64_t k = ka / patch[0], a = ka % patch[0];
            for (std::int64_t b = 0; b < patch[1]; ++b) {
              Half* ap = halves(acc) + ((k * ps[0] + s0 + a) * ps[1] + s1 + b) * ps[2] + s2;
              const std::int64_t off = (a * patch[1] + b) * patch[2];
              accumulate_half(ap, pp + k * pv + off, gp + off, patch[2]);
              if (k == 0)
                accumulate_half(halves(wsum) + ((s0 + a) * ps[1] + s1 + b) * ps[2] + s2, nullptr, gp + off, patch[2]);
            }
          }
        });
        if (tile_done) tile_done();
      }
  // Divide, and cut the padding away.
  if (ps == s) {  // divide in place: no second K-channel volume
    Half* ap = halves(acc);
    const Half* wp = halves(wsum);
    const std::int64_t n = s[0] * s[1] * s[2];
    parallel_for(K * n, 1 << 16, [&](std::int64_t b0, std::int64_t e0) {
      for (std::int64_t i = b0; i < e0; ++i) ap[i] = to_half(to_float(ap[i]) / to_float(wp[i % n]));
    });
    return acc;
  }
  Tensor out(Shape{K, s[0], s[1], s[2]}, DType::f16);
  parallel_for(K * s[0], 1, [&](std::int64_t b0, std::int64_t e0) {
    for (std::int64_t ka = b0; ka < e0; ++ka) {
      const std::int64_t k = ka / s[0], a = ka % s[0];
      for (std::int64_t b = 0; b < s[1]; ++b) {
        const Half* ap = halves(acc) + ((k * ps[0] + a + lo[0]) * ps[1] + b + lo[1]) * ps[2] + lo[2];
        const Half* wp = halves(wsum) + ((a + lo[0]) * ps[1] + b + lo[1]) * ps[2] + lo[2];
        Half* op = halves(out) + ((k * s[0] + a) * s[1] + b) * s[2];
        for (std::int64_t c = 0; c < s[2]; ++c) op[c] = to_half(to_float(ap[c]) / to_float(wp[c]));
      }
    }
  });
  return out;
}

}  // namespace

Tensor half_to_float(const Tensor& t) {
  VOXINFER_CHECK(t.dtype() == DType::f16, invalid_input, "half_to_float: expected an f16 tensor");
  Tensor out(t.shape(), DType::f32);
  const Half* s = halves(t);
  float* d = out.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) d[i] = to_float(s[i]);
  return out;
}

Tensor predict_logits(Model& model, const Tensor& data, const PredictOptions& options, std::int64_t* tiles) {
  if (!(options.step_size > 0 && options.step_size <= 1))
    fail(ErrorCode::invalid_input, "--step-size must be in (0, 1], got " + std::to_string(options.step_size));
  const Configuration& cfg = model.configuration();
  const std::vector<int> mirror = options.mirroring ? model.mirror_axes() : std::vector<int>{};
  const std::size_t nf = model.folds().size();
  std::int64_t per_fold = 1;
  for (std::size_t a = 0; a < 3; ++a) {
    const std::int64_t n = std::max(data.dim(static_cast<int>(a) + 1), cfg.patch_size[a]);
    per_fold *= static_cast<std::int64_t>(
        tile_starts(n, cfg.patch_size[a], 1.0 - options.step_size, WindowStyle::nnunet).size());
  }
  const std::int64_t total = per_fold * static_cast<std::int64_t>(nf);
  std::int64_t done = 0;
  const std::function<void()> tick = [&] {
    ++done;
    if (options.progress) options.progress(done, total);
  };
  Tensor sum;
  for (std::size_t f = 0; f < nf; ++f) {
    Tensor l = sliding_window_nnunet(model.session(f), data, cfg.patch_size, options.step_size, mirror, tick);
    if (f == 0) {
      sum = l;
      continue;
    }
    Half* sp = halves(sum);
    const Half* lp = halves(l);
    parallel_for(sum.numel(), 1 << 16, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) sp[i] = to_half(to_float(sp[i]) + to_float(lp[i]));
    });
  }
  if (tiles) *tiles += total;
  if (nf > 1) {
    Half* sp = halves(sum);
    const auto d = static_cast<float>(nf);
    parallel_for(sum.numel(), 1 << 16, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) sp[i] = to_half(to_float(sp[i]) / d);
    });
  }
  return sum;
}

Prediction export_prediction(const Model& model, const Preprocessed& p, const Tensor& logits,
                             const PredictOptions& options) {
  const Dataset& ds = model.dataset();
  const Configuration& cfg = model.configuration();
  Prediction out;
  const SeparateZ sep = decide_separate_z(cfg.probabilities_rule.force_separate_z, p.target_spacing, p.spacing);
  const std::int64_t K = logits.dim(0);
  const Index3 cs = p.shape_after_cropping, s = p.shape_before_cropping;
  const std::int64_t cvox = cs[0] * cs[1] * cs[2], vox = s[0] * s[1] * s[2];
  const std::int64_t lvox = logits.dim(1) * logits.dim(2) * logits.dim(3);
  const bool regions = ds.has_regions;

  // Logits resampled to the cropped shape one channel at a time (nnU-Net resamples all of
  // them, then takes the argmax): a running maximum keeps memory at a few single-channel
  // volumes. Only --save-probabilities keeps every channel.
  std::vector<float> best(static_cast<std::size_t>(cvox), -std::numeric_limits<float>::infinity());
  std::vector<std::uint16_t> arg(static_cast<std::size_t>(cvox), 0);
  Tensor all;
  if (options.probabilities) all = Tensor(Shape{K, cs[0], cs[1], cs[2]}, DType::f32);
  for (std::int64_t k = 0; k < K; ++k) {
    Tensor lk(Shape{1, logits.dim(1), logits.dim(2), logits.dim(3)}, DType::f32);
    {
      const Half* src = halves(logits) + k * lvox;
      float* dst = lk.data<float>();
      parallel_for(lvox, 1 << 16, [&](std::int64_t b0, std::int64_t e0) {
        for (std::int64_t i = b0; i < e0; ++i) dst[i] = to_float(src[i]);
      });
    }
    const Tensor r =
        resample_data_or_seg(lk, cs, false, sep, cfg.probabilities_rule.order, cfg.probabilities_rule.order_z, true);
    const float* rl = r.data<float>();
    if (options.probabilities)
      std::memcpy(all.data<float>() + k * cvox, rl, static_cast<std::size_t>(cvox) * sizeof(float));
    parallel_for(cvox, 1 << 15, [&](std::int64_t b0, std::int64_t e0) {
      for (std::int64_t i = b0; i < e0; ++i) {
        if (!regions) {
          if (rl[i] > best[static_cast<std::size_t>(i)] || k == 0) {  // the first maximum wins, as numpy's argmax
            best[static_cast<std::size_t>(i)] = rl[i];
            arg[static_cast<std::size_t>(i)] = static_cast<std::uint16_t>(k);
          }
        } else if (1.f / (1.f + std::exp(-rl[i])) > 0.5f) {
          arg[static_cast<std::size_t>(i)] =
              static_cast<std::uint16_t>(ds.regions_class_order[static_cast<std::size_t>(k)]);
        }
      }
    });
  }
  best = {};

  // Labels un-cropped (zero outside the box).
  std::vector<float> lab(static_cast<std::size_t>(vox), 0.f);
  const auto at = [&](std::int64_t i0, std::int64_t i1, std::int64_t i2) {
    return ((i0 + p.bbox[0][0]) * s[1] + i1 + p.bbox[1][0]) * s[2] + i2 + p.bbox[2][0];
  };
  parallel_for(cs[0], 1, [&](std::int64_t b0, std::int64_t e0) {
    for (std::int64_t i0 = b0; i0 < e0; ++i0)
      for (std::int64_t i1 = 0; i1 < cs[1]; ++i1)
        for (std::int64_t i2 = 0; i2 < cs[2]; ++i2)
          lab[static_cast<std::size_t>(at(i0, i1, i2))] =
              static_cast<float>(arg[static_cast<std::size_t>((i0 * cs[1] + i1) * cs[2] + i2)]);
  });
  arg = {};
  for (const auto& step : model.postprocessing()) {
    if (!options.postprocess) break;
    std::vector<int> values;
    for (const auto& lr : step.labels_or_regions) values.insert(values.end(), lr.begin(), lr.end());
    keep_largest_of_union(lab, s, values, step.background);
  }

  // Back to the input's grid: transpose_backward, then the reader's reorientation undone.
  const std::array<int, 3> tb = inverse_perm(model.transpose_forward());
  const auto to_volume = [&](Tensor t) {
    t = permute3(t, tb);
    // t is [C, Z, Y, X] of the (reoriented) input.
    Geometry g = p.input_geometry;
    AxisPermutation ax;
    if (p.reoriented) {
      ax = orientation_transform(p.input_geometry, "RAS");
      g = permute_geometry(p.input_geometry, p.input_size, ax);
    }
    Volume v;
    v.data = t;
    v.geometry = g;
    if (p.reoriented) v = permute_axes(v, inverse(ax));
    return v;
  };
  {
    Tensor lt(Shape{1, s[0], s[1], s[2]}, DType::f32);
    std::memcpy(lt.raw(), lab.data(), lab.size() * sizeof(float));
    out.labels = to_volume(lt);
  }
  if (options.probabilities) {
    Tensor pt(Shape{K, s[0], s[1], s[2]}, DType::f32);
    float* pp = pt.data<float>();
    if (!regions)
      for (std::int64_t i = 0; i < vox; ++i) pp[i] = 1.f;  // background outside the box
    const float* rl = all.data<float>();
    parallel_for(cs[0], 1, [&](std::int64_t b, std::int64_t e) {
      std::vector<float> v(static_cast<std::size_t>(K));
      for (std::int64_t i0 = b; i0 < e; ++i0)
        for (std::int64_t i1 = 0; i1 < cs[1]; ++i1)
          for (std::int64_t i2 = 0; i2 < cs[2]; ++i2) {
            const std::int64_t i = (i0 * cs[1] + i1) * cs[2] + i2, o = at(i0, i1, i2);
            if (regions) {
              for (std::int64_t k = 0; k < K; ++k) pp[k * vox + o] = 1.f / (1.f + std::exp(-rl[k * cvox + i]));
              continue;
            }
            float m = rl[i];
            for (std::int64_t k = 1; k < K; ++k) m = std::max(m, rl[k * cvox + i]);
            float sum = 0;
            for (std::int64_t k = 0; k < K; ++k)
              sum += (v[static_cast<std::size_t>(k)] = std::exp(rl[k * cvox + i] - m));
            for (std::int64_t k = 0; k < K; ++k) pp[k * vox + o] = v[static_cast<std::size_t>(k)] / sum;
          }
    });
    out.probabilities = to_volume(pt);
  }
  return out;
}

Prediction predict(Model& model, const std::vector<Volume>& channels, const PredictOptions& options) {
  auto t0 = Clock::now();
  const Preprocessed p = preprocess(model, channels);
  const double t_pre = since(t0);
  t0 = Clock::now();
  std::int64_t tiles = 0;
  Tensor logits = predict_logits(model, p.data, options, &tiles);
  const double t_inf = since(t0);
  t0 = Clock::now();
  Prediction out = export_prediction(model, p, logits, options);
  out.seconds_export = since(t0);
  out.seconds_preprocess = t_pre;
  out.seconds_inference = t_inf;
  out.tiles = tiles;
  out.network_grid = {p.data.dim(1), p.data.dim(2), p.data.dim(3)};
  if (options.keep_logits) out.logits = std::move(logits);
  return out;
}

std::string describe(const Model& model) {
  const Dataset& ds = model.dataset();
  const Configuration& c = model.configuration();
  const auto& a = c.architecture;
  std::ostringstream o;
  const auto list = [](const auto& v) {
    std::ostringstream s;
    s << "(";
    for (std::size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
    s << ")";
    return s.str();
  };
  o << "nnU-Net v2 model folder   " << model.folder().filename().string() << "\n";
  o << "trainer                   " << model.trainer_name() << "\n";
  o << "configuration             " << c.name << " (" << c.dims << "D)\n";
  o << "network                   " << a.kind_name() << ", " << a.n_stages() << " stages, features " << list(a.features)
    << ", " << model.parameter_count() << " parameters per fold\n";
  o << "folds                     ";
  for (std::size_t i = 0; i < model.folds().size(); ++i)
    o << (i ? ", " : "") << (model.folds()[i] < 0 ? std::string("all") : std::to_string(model.folds()[i]));
  o << "\n";
  std::vector<std::int64_t> patch(c.patch_size.begin() + (c.dims == 2 ? 1 : 0), c.patch_size.end());
  o << "patch size                " << list(patch) << " (array order)\n";
  o << "spacing                   " << list(c.spacing) << " mm (array order)\n";
  o << "reader                    " << ds.reader << ", transpose_forward " << list(model.transpose_forward()) << "\n";
  for (std::size_t i = 0; i < ds.channel_names.size(); ++i) {
    const auto& n = c.normalization[i];
    o << "channel " << i << "                 " << ds.channel_names[i] << ": " << n.name;
    if (n.scheme == Normalization::Scheme::ct)
      o << " (clip " << n.lower << " .. " << n.upper << ", mean " << n.mean << ", std " << n.std << ")";
    if (n.use_mask_for_norm) o << " within the nonzero mask";
    o << "\n";
  }
  o << "resampling                data order " << c.data_rule.order << " (z " << c.data_rule.order_z
    << "), logits order " << c.probabilities_rule.order << " (z " << c.probabilities_rule.order_z
    << "), separate z above anisotropy 3\n";
  o << "mirroring axes            " << (model.mirror_axes().empty() ? std::string("none") : list(model.mirror_axes()))
    << "\n";
  o << "labels                    ";
  bool first = true;
  for (const auto& l : ds.labels) {
    o << (first ? "" : ", ") << l.name << "=";
    if (l.values.size() == 1)
      o << l.values[0];
    else
      o << list(l.values);
    first = false;
  }
  o << (ds.has_regions ? " (region-based, sigmoid)" : " (softmax)") << "\n";
  o << "postprocessing            "
    << (model.postprocessing().empty() ? std::string("none")
                                       : std::to_string(model.postprocessing().size()) + " step(s)")
    << "\n";
  return o.str();
}

}  // namespace voxinfer::nnunet
