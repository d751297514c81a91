// nnU-Net v2's resampling (see the header). The nd interpolation of scipy.ndimage.zoom and
// map_coordinates is a tensor product of 1-D B-spline kernels, and the 'nearest' prefilter of
// the edge-padded volume is a product of 1-D filters that commute with edge padding along the
// other axes, so it is computed here as one 1-D pass per axis that changes size: each pass
// pads a line by 12 edge voxels, prefilters it (orders above 1) and evaluates scipy's
// weights at scipy's coordinates, all in float64. Only the summation order differs from
// scipy's, which moves the float64 result by ~1e-15 relative; axes of unchanged size are
// skipped (their interpolation is the identity up to that same rounding).
#include "voxinfer/pipeline/nnunet_resample.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"

namespace voxinfer::nnunet {
namespace {

using Dims = std::array<std::int64_t, 3>;

constexpr int kMaxOrder = 5;
// scipy pads by 12 edge voxels before the prefilter in mode 'nearest' (_prepad_for_spline_filter).
constexpr std::int64_t kPrepad = 12;
// Lines interleaved in one block when a pass runs along a non-contiguous axis.
constexpr std::int64_t kLanes = 128;
// The reflect-boundary start of the causal filter sums z^i * c[i]; once |z^i| is below this, the
// remaining terms change the result by less than 2^-62 of the line's largest value.
constexpr double kNegligibleZ = 0x1p-64;
// batchgenerators keeps a label where its resized mask reaches this (nnU-Net's own pass along a
// separate axis: where it exceeds it).
constexpr double kLabelThreshold = 0.5;

std::string dims_str(const Dims& d) {
  return "(" + std::to_string(d[0]) + ", " + std::to_string(d[1]) + ", " + std::to_string(d[2]) + ")";
}

// ---- float16 -------------------------------------------------------------------------------

// Rounds a double to the nearest IEEE half (ties to even, overflow to infinity) straight from
// float64, as numpy's float64 -> float16 cast does; rounding through float32 first would round
// twice. Returned as the float of the same value.
float round_to_half(double x) {
  constexpr std::uint64_t kSign = 1ULL << 63;
  constexpr std::uint64_t kTwo16 = 0x40F0000000000000ULL;   // 65536.0: first value past the half range
  constexpr std::uint64_t kTwoM14 = 0x3F10000000000000ULL;  // 2^-14: smallest normal half
  constexpr std::uint64_t kInfBits = 0x7FF0000000000000ULL;
  constexpr int kDroppedBits = 52 - 10;  // double mantissa bits a half lacks
  const auto bits = std::bit_cast<std::uint64_t>(x);
  const std::uint64_t sign = bits & kSign;
  std::uint64_t mag = bits ^ sign;
  const float inf = std::numeric_limits<float>::infinity();
  if (mag >= kTwo16) {
    if (mag > kInfBits) return static_cast<float>(x);  // NaN
    return sign ? -inf : inf;
  }
  if (mag < kTwoM14) {
    // Subnormal halves are the multiples of 2^-24: adding 2^28 rounds to that grid (ties to even).
    const double r = (std::bit_cast<double>(mag) + 0x1p28) - 0x1p28;
    return static_cast<float>(std::bit_cast<double>(std::bit_cast<std::uint64_t>(r) | sign));
  }
  // Keep 11 significant bits, ties to even; a carry moves into the exponent.
  mag += (1ULL << (kDroppedBits - 1)) - 1 + ((mag >> kDroppedBits) & 1);
  mag &= ~((1ULL << kDroppedBits) - 1);
  if (mag >= kTwo16) return sign ? -inf : inf;
  return static_cast<float>(std::bit_cast<double>(mag | sign));
}

// ---- 1-D B-splines, with scipy.ndimage's arithmetic -----------------------------------------

// Weights of the order+1 taps around x (x relative to the first tap's knot as scipy sets it).
void spline_weights(double x, int order, double* w) {
  x -= std::floor((order & 1) ? x : x + 0.5);
  double y = x, z = 1.0 - x, t = 0.0;
  switch (order) {
    case 1:
      w[0] = 1.0 - x;
      break;
    case 2:
      w[1] = 0.75 - x * x;
      y = 0.5 - x;
      w[0] = 0.5 * y * y;
      break;
    case 3:
      w[1] = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0;
      w[2] = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0;
      w[0] = z * z * z / 6.0;
      break;
    case 4:
      t = x * x;
      w[2] = t * (t * 0.25 - 0.625) + 115.0 / 192.0;
      y = 1.0 + x;
      w[1] = y * (y * (y * (5.0 - y) / 6.0 - 1.25) + 5.0 / 24.0) + 55.0 / 96.0;
      w[3] = z * (z * (z * (5.0 - z) / 6.0 - 1.25) + 5.0 / 24.0) + 55.0 / 96.0;
      y = 0.5 - x;
      t = y * y;
      w[0] = t * t / 24.0;
      break;
    case 5:
      t = y * y;
      w[2] = t * (t * (0.25 - y / 12.0) - 0.5) + 0.55;
      t = z * z;
      w[3] = t * (t * (0.25 - z / 12.0) - 0.5) + 0.55;
      y += 1.0;
      w[1] = y * (y * (y * (y * (y / 24.0 - 0.375) + 1.25) - 1.75) + 0.625) + 0.425;
      z += 1.0;
      w[4] = z * (z * (z * (z * (z / 24.0 - 0.375) + 1.25) - 1.75) + 0.625) + 0.425;
      y = 1.0 - x;
      t = y * y;
      w[0] = y * t * t / 120.0;
      break;
    default:
      break;
  }
  // The weights sum to one; the last one is what the others leave.
  w[order] = 1.0;
  for (int i = 0; i < order; ++i) w[order] -= w[i];
}

// Poles of the B-spline prefilter of each order (closed forms in scipy's ni_splines.c).
int filter_poles(int order, double* poles) {
  switch (order) {
    case 2:
      poles[0] = -0.171572875253809902396622551580603843;  // sqrt(8) - 3
      return 1;
    case 3:
      poles[0] = -0.267949192431122706472553658494127633;  // sqrt(3) - 2
      return 1;
    case 4:
      poles[0] = -0.361341225900220177092212841325675255;
      poles[1] = -0.013725429297339121360331226939128204;
      return 2;
    case 5:
      poles[0] = -0.430575347099973791851434783493520110;
      poles[1] = -0.043096288203264653822712376822550182;
      return 2;
    default:
      return 0;
  }
}

// B-spline prefilter of `lanes` interleaved lines of length n (element i of lane l at
// c[i * lanes + l]) with the boundary start scipy uses for 'nearest' (its 'reflect' start).
// Interleaving lets the recursions run across lines at once. kW > 0 fixes the lane count at
// compile time. acc holds `lanes` doubles.
template <std::int64_t kW>
void prefilter(double* c, std::int64_t n, std::int64_t lanes_arg, int order, double* acc) {
  const std::int64_t lanes = kW > 0 ? kW : lanes_arg;
  if (n <= 1) return;
  double poles[2];
  const int npoles = filter_poles(order, poles);
  double gain = 1.0;
  for (int p = 0; p < npoles; ++p) gain *= (1.0 - poles[p]) * (1.0 - 1.0 / poles[p]);
  for (std::int64_t i = 0; i < n * lanes; ++i) c[i] *= gain;
  for (int p = 0; p < npoles; ++p) {
    const double z = poles[p];
    const double zn = std::pow(z, static_cast<double>(n));
    // Causal start: c0 + z / (1 - z^2n) * (c0 + z^n c[n-1] + sum_i z^i (c[i] + z^n c[n-1-i])).
    const double* last = c + (n - 1) * lanes;
    for (std::int64_t l = 0; l < lanes; ++l) acc[l] = c[l] + zn * last[l];
    double zi = z;
    for (std::int64_t i = 1; i < n && std::fabs(zi) >= kNegligibleZ; ++i) {
      const double* ci = c + i * lanes;
      const double* cm = c + (n - 1 - i) * lanes;
      for (std::int64_t l = 0; l < lanes; ++l) acc[l] += zi * (ci[l] + zn * cm[l]);
      zi *= z;
    }
    const double start = z / (1 - zn * zn);
    for (std::int64_t l = 0; l < lanes; ++l) c[l] = acc[l] * start + c[l];
    for (std::int64_t i = 1; i < n; ++i) {
      double* ci = c + i * lanes;
      const double* cp = ci - lanes;
      for (std::int64_t l = 0; l < lanes; ++l) ci[l] += z * cp[l];
    }
    const double end = z / (z - 1);
    double* cl = c + (n - 1) * lanes;
    for (std::int64_t l = 0; l < lanes; ++l) cl[l] *= end;
    for (std::int64_t i = n - 2; i >= 0; --i) {
      double* ci = c + i * lanes;
      const double* cn = ci + lanes;
      for (std::int64_t l = 0; l < lanes; ++l) ci[l] = z * (cn[l] - ci[l]);
    }
  }
}

// One axis resized from n to m samples in grid mode (input coordinate (o + 0.5) * n / m - 0.5,
// the align_corners=False map), mode 'nearest': taps into the padded line, clamped to it.
struct AxisKernel {
  std::int64_t n = 0, m = 0, pad = 0;
  int order = 0;
  std::vector<std::int64_t> taps;  // m * (order + 1) indices into the padded line
  std::vector<double> weights;     // m * (order + 1)
  std::int64_t padded() const { return n + 2 * pad; }
};

AxisKernel make_kernel(std::int64_t n, std::int64_t m, int order) {
  AxisKernel k;
  k.n = n;
  k.m = m;
  k.order = order;
  k.pad = order >= 2 ? kPrepad : 0;
  const int t = order + 1;
  const std::int64_t last = k.padded() - 1;
  k.taps.resize(static_cast<std::size_t>(m * t));
  k.weights.resize(static_cast<std::size_t>(m * t));
  const double zoom = static_cast<double>(n) / static_cast<double>(m);
  for (std::int64_t o = 0; o < m; ++o) {
    // Same operations as scipy's zoom_shift (and numpy's coordinate map for map_coordinates).
    double cc = static_cast<double>(o);
    cc += 0.5;
    cc *= zoom;
    cc -= 0.5;
    cc += static_cast<double>(k.pad);
    const std::int64_t start = static_cast<std::int64_t>(std::floor((order & 1) ? cc : cc + 0.5)) - order / 2;
    const auto at = static_cast<std::size_t>(o * t);
    for (int j = 0; j < t; ++j) k.taps[at + static_cast<std::size_t>(j)] = std::clamp<std::int64_t>(start + j, 0, last);
    if (order == 0) {
      k.weights[at] = 1.0;
    } else {
      spline_weights(cc, order, &k.weights[at]);
    }
  }
  return k;
}

// Runs one axis kernel over `lanes` interleaved lines held in buf (padded() rows of `lanes`
// doubles, input sample i of every lane in row pad + i): pads, prefilters, and hands output
// sample o of every lane to store(o, values). acc holds `lanes` doubles.
template <std::int64_t kW, typename Store>
void run_kernel_impl(const AxisKernel& k, std::int64_t lanes_arg, double* buf, double* acc, Store&& store) {
  const std::int64_t lanes = kW > 0 ? kW : lanes_arg;
  const std::int64_t n = k.n, pad = k.pad;
  const auto row_bytes = static_cast<std::size_t>(lanes) * sizeof(double);
  for (std::int64_t i = 0; i < pad; ++i) {
    std::memcpy(buf + i * lanes, buf + pad * lanes, row_bytes);
    std::memcpy(buf + (pad + n + i) * lanes, buf + (pad + n - 1) * lanes, row_bytes);
  }
  if (k.order >= 2) prefilter<kW>(buf, k.padded(), lanes, k.order, acc);
  const int t = k.order + 1;
  const std::int64_t* taps = k.taps.data();
  const double* weights = k.weights.data();
  for (std::int64_t o = 0; o < k.m; ++o, taps += t, weights += t) {
    // scipy: t = 0; t += c[tap] * w for each tap in order.
    for (std::int64_t l = 0; l < lanes; ++l) acc[l] = 0.0;
    for (int j = 0; j < t; ++j) {
      const double w = weights[j];
      const double* row = buf + taps[j] * lanes;
      for (std::int64_t l = 0; l < lanes; ++l) acc[l] += row[l] * w;
    }
    store(o, static_cast<const double*>(acc));
  }
}

// Lines of the contiguous axis go through in groups of this many, interleaved.
constexpr std::int64_t kLineGroup = 8;

template <typename Store>
void run_kernel(const AxisKernel& k, std::int64_t lanes, double* buf, double* acc, Store&& store) {
  if (lanes == kLineGroup) {
    run_kernel_impl<kLineGroup>(k, lanes, buf, acc, store);
  } else {
    run_kernel_impl<0>(k, lanes, buf, acc, store);
  }
}

// ---- where passes read from and write to ------------------------------------------------------

// Reads a volume as float64: the f32 input or a float64 intermediate, either its values or the
// 0/1 mask of one label.
struct Source {
  const float* f32 = nullptr;
  const double* f64 = nullptr;
  bool mask = false;
  double label = 0;

  void load(std::int64_t at, std::int64_t count, double* dst) const {
    if (f32) {
      const float* s = f32 + at;
      if (mask) {
        for (std::int64_t i = 0; i < count; ++i) dst[i] = static_cast<double>(s[i]) == label ? 1.0 : 0.0;
      } else {
        for (std::int64_t i = 0; i < count; ++i) dst[i] = static_cast<double>(s[i]);
      }
    } else {
      const double* s = f64 + at;
      if (mask) {
        for (std::int64_t i = 0; i < count; ++i) dst[i] = s[i] == label ? 1.0 : 0.0;
      } else {
        std::memcpy(dst, s, static_cast<std::size_t>(count) * sizeof(double));
      }
    }
  }
};

// Takes a stage's results, by runs of consecutive output indices: stores them as float64 or
// f32 (optionally clipped to the input's range, globally or per slice, and rounded to half), or
// writes a label where they reach a threshold.
struct Sink {
  enum class Kind { f64, f32, label };
  Kind kind = Kind::f32;
  double* f64 = nullptr;
  float* f32 = nullptr;
  Dims dims{};  // the stage's output shape (to find the slice of an index)
  // kNoClip, kGlobalClip, or the axis whose slices carry their own bounds.
  int clip = kNoClip;
  const double* lo = nullptr;
  const double* hi = nullptr;
  bool f16 = false;
  // Kind::label: label written where the value is >= threshold (> when strict).
  double threshold = kLabelThreshold;
  bool strict = false;
  double label = 0;

  static constexpr int kNoClip = -2;
  static constexpr int kGlobalClip = -1;

  void store(std::int64_t at, std::int64_t count, const double* v) const {
    if (kind == Kind::label) {
      store_label(at, count, v);
      return;
    }
    if (clip == kNoClip) {
      put(at, count, v, nullptr, nullptr, 0);
      return;
    }
    if (clip == kGlobalClip) {
      put(at, count, v, lo, hi, 0);
      return;
    }
    // Bounds per slice: split into runs along axis 2, where the slice index is known.
    while (count > 0) {
      const std::int64_t i2 = at % dims[2], row = at / dims[2];
      const std::int64_t i1 = row % dims[1], i0 = row / dims[1];
      const std::int64_t run = std::min(count, dims[2] - i2);
      if (clip == 2) {
        put(at, run, v, lo + i2, hi + i2, 1);
      } else {
        const std::int64_t s = clip == 0 ? i0 : i1;
        put(at, run, v, lo + s, hi + s, 0);
      }
      at += run;
      v += run;
      count -= run;
    }
  }

 private:
  // Stores count values, clipped to lo[i * step], hi[i * step] when lo is given.
  void put(std::int64_t at, std::int64_t count, const double* v, const double* l, const double* h,
           std::int64_t step) const {
    if (kind == Kind::f64) {
      double* d = f64 + at;
      if (!l) {
        std::memcpy(d, v, static_cast<std::size_t>(count) * sizeof(double));
        return;
      }
      for (std::int64_t i = 0; i < count; ++i) d[i] = clamp(v[i], l[i * step], h[i * step]);
      return;
    }
    float* d = f32 + at;
    if (!l) {
      if (f16) {
        for (std::int64_t i = 0; i < count; ++i) d[i] = round_to_half(v[i]);
      } else {
        for (std::int64_t i = 0; i < count; ++i) d[i] = static_cast<float>(v[i]);
      }
      return;
    }
    if (f16) {
      for (std::int64_t i = 0; i < count; ++i) d[i] = round_to_half(clamp(v[i], l[i * step], h[i * step]));
    } else if (step == 0) {
      const double a = *l, b = *h;
      for (std::int64_t i = 0; i < count; ++i) d[i] = static_cast<float>(clamp(v[i], a, b));
    } else {
      for (std::int64_t i = 0; i < count; ++i) d[i] = static_cast<float>(clamp(v[i], l[i * step], h[i * step]));
    }
  }

  void store_label(std::int64_t at, std::int64_t count, const double* v) const {
    for (std::int64_t i = 0; i < count; ++i) {
      if (strict ? v[i] > threshold : v[i] >= threshold) {
        if (f32) {
          f32[at + i] = f16 ? round_to_half(label) : static_cast<float>(label);
        } else {
          f64[at + i] = label;
        }
      }
    }
  }

  // np.clip: NaN stays NaN.
  static double clamp(double x, double a, double b) {
    x = x < a ? a : x;
    return x > b ? b : x;
  }
};

// ---- stages ---------------------------------------------------------------------------------

using Kernels = std::array<const AxisKernel*, 3>;

std::int64_t chunk_grain(std::int64_t count) {
  // About four chunks per thread; the result does not depend on the partition.
  const std::int64_t per = static_cast<std::int64_t>(num_threads()) * 4;
  return std::max<std::int64_t>(1, (count + per - 1) / per);
}

// Pass along axis 0 of a [rows, inner] volume (inner = d1 * d2), blocks of kLanes columns.
void pass_axis0(const Source& src, std::int64_t inner, const AxisKernel& k, const Sink& sink) {
  const std::int64_t blocks = (inner + kLanes - 1) / kLanes;
  parallel_for(blocks, chunk_grain(blocks), [&](std::int64_t b0, std::int64_t b1) {
    std::vector<double> buf(static_cast<std::size_t>(k.padded() * kLanes)), acc(static_cast<std::size_t>(kLanes));
    for (std::int64_t b = b0; b < b1; ++b) {
      const std::int64_t lane0 = b * kLanes, lanes = std::min(kLanes, inner - lane0);
      for (std::int64_t i = 0; i < k.n; ++i) src.load(i * inner + lane0, lanes, buf.data() + (k.pad + i) * lanes);
      run_kernel(k, lanes, buf.data(), acc.data(),
                 [&](std::int64_t o, const double* v) { sink.store(o * inner + lane0, lanes, v); });
    }
  });
}

// Scratch of one worker for in-plane passes.
struct PlaneScratch {
  std::vector<double> buf, acc, plane, line, out;

  PlaneScratch(std::int64_t d1, std::int64_t d2, const AxisKernel* k1, const AxisKernel* k2) {
    const std::int64_t n1 = k1 ? k1->m : d1, n2 = k2 ? k2->m : d2;
    std::int64_t rows = 0;
    if (k1) rows = std::max(rows, k1->padded() * kLanes);
    if (k2) rows = std::max(rows, k2->padded() * kLineGroup);
    buf.resize(static_cast<std::size_t>(rows));
    acc.resize(static_cast<std::size_t>(kLanes));
    if (k1 && k2) plane.resize(static_cast<std::size_t>(std::max(n1 * d2, d1 * n2)));
    line.resize(static_cast<std::size_t>(d2));
    out.resize(static_cast<std::size_t>(kLineGroup * std::max(n2, d2)));
  }
};

// Pass along axis 1 of a [k.n, width] plane: load(i, lane0, lanes, dst) reads row i,
// store(o, lane0, lanes, values) takes output row o.
template <typename Load, typename Store>
void rows_pass(const AxisKernel& k, std::int64_t width, PlaneScratch& s, Load&& load, Store&& store) {
  for (std::int64_t lane0 = 0; lane0 < width; lane0 += kLanes) {
    const std::int64_t lanes = std::min(kLanes, width - lane0);
    for (std::int64_t i = 0; i < k.n; ++i) load(i, lane0, lanes, s.buf.data() + (k.pad + i) * lanes);
    run_kernel(k, lanes, s.buf.data(), s.acc.data(),
               [&](std::int64_t o, const double* v) { store(o, lane0, lanes, v); });
  }
}

// Pass along axis 2 over `count` lines of k.n samples: load(r, dst) reads line r,
// store(r, values) takes its k.m outputs. Lines go in interleaved groups of kLineGroup.
template <typename Load, typename Store>
void lines_pass(const AxisKernel& k, std::int64_t count, PlaneScratch& s, Load&& load, Store&& store) {
  double* buf = s.buf.data();
  double* out = s.out.data();
  if (k.order < 2) {
    // No prefilter, so no recursion to interleave: evaluate each line where it is.
    for (std::int64_t r = 0; r < count; ++r) {
      load(r, buf);
      if (k.order == 0) {
        for (std::int64_t o = 0; o < k.m; ++o) out[o] = 0.0 + buf[k.taps[static_cast<std::size_t>(o)]];
      } else {
        const std::int64_t* taps = k.taps.data();
        const double* w = k.weights.data();
        for (std::int64_t o = 0; o < k.m; ++o)
          out[o] = (0.0 + buf[taps[2 * o]] * w[2 * o]) + buf[taps[2 * o + 1]] * w[2 * o + 1];
      }
      store(r, static_cast<const double*>(out));
    }
    return;
  }
  for (std::int64_t r0 = 0; r0 < count; r0 += kLineGroup) {
    const std::int64_t lanes = std::min(kLineGroup, count - r0);
    for (std::int64_t g = 0; g < lanes; ++g) {
      load(r0 + g, s.line.data());
      for (std::int64_t i = 0; i < k.n; ++i) buf[(k.pad + i) * lanes + g] = s.line[static_cast<std::size_t>(i)];
    }
    run_kernel(k, lanes, buf, s.acc.data(), [&](std::int64_t o, const double* v) {
      for (std::int64_t g = 0; g < lanes; ++g) out[g * k.m + o] = v[g];
    });
    for (std::int64_t g = 0; g < lanes; ++g) store(r0 + g, static_cast<const double*>(out + g * k.m));
  }
}

// The in-plane passes (axes 1 and 2) of one plane: [d1, d2] read from src at src_base, written
// to sink at dst_base as [n1, n2]. The pass that shrinks the plane more goes first.
void resample_plane(const Source& src, std::int64_t src_base, const Sink& sink, std::int64_t dst_base, std::int64_t d1,
                    std::int64_t d2, const AxisKernel* k1, const AxisKernel* k2, PlaneScratch& s) {
  const std::int64_t n1 = k1 ? k1->m : d1, n2 = k2 ? k2->m : d2;
  const auto bytes = [](std::int64_t count) { return static_cast<std::size_t>(count) * sizeof(double); };
  auto src_row = [&](std::int64_t i, std::int64_t lane0, std::int64_t lanes, double* dst) {
    src.load(src_base + i * d2 + lane0, lanes, dst);
  };
  auto src_line = [&](std::int64_t r, double* dst) { src.load(src_base + r * d2, d2, dst); };
  auto sink_row = [&](std::int64_t o, std::int64_t lane0, std::int64_t lanes, const double* v) {
    sink.store(dst_base + o * n2 + lane0, lanes, v);
  };
  auto sink_line = [&](std::int64_t r, const double* v) { sink.store(dst_base + r * n2, n2, v); };
  if (k1 && k2) {
    double* tmp = s.plane.data();
    if (n1 * d2 <= d1 * n2) {
      // Axis 1 first into tmp [n1, d2], then the lines of tmp along axis 2.
      rows_pass(*k1, d2, s, src_row, [&](std::int64_t o, std::int64_t lane0, std::int64_t lanes, const double* v) {
        std::memcpy(tmp + o * d2 + lane0, v, bytes(lanes));
      });
      lines_pass(
          *k2, n1, s, [&](std::int64_t r, double* dst) { std::memcpy(dst, tmp + r * d2, bytes(d2)); }, sink_line);
    } else {
      // Lines along axis 2 first into tmp [d1, n2], then axis 1.
      lines_pass(*k2, d1, s, src_line,
                 [&](std::int64_t r, const double* v) { std::memcpy(tmp + r * n2, v, bytes(n2)); });
      rows_pass(
          *k1, n2, s,
          [&](std::int64_t i, std::int64_t lane0, std::int64_t lanes, double* dst) {
            std::memcpy(dst, tmp + i * n2 + lane0, bytes(lanes));
          },
          sink_row);
    }
  } else if (k1) {
    rows_pass(*k1, d2, s, src_row, sink_row);
  } else if (k2) {
    lines_pass(*k2, d1, s, src_line, sink_line);
  } else {
    for (std::int64_t r = 0; r < d1; ++r) {
      src_line(r, s.line.data());
      sink_line(r, s.line.data());
    }
  }
}

// In-plane passes of `count` planes of shape [d1, d2], in parallel over planes.
void resample_planes(const Source& src, std::int64_t count, std::int64_t d1, std::int64_t d2, const AxisKernel* k1,
                     const AxisKernel* k2, const Sink& sink) {
  const std::int64_t n1 = k1 ? k1->m : d1, n2 = k2 ? k2->m : d2;
  parallel_for(count, chunk_grain(count), [&](std::int64_t p0, std::int64_t p1) {
    PlaneScratch s(d1, d2, k1, k2);
    for (std::int64_t p = p0; p < p1; ++p) resample_plane(src, p * d1 * d2, sink, p * n1 * n2, d1, d2, k1, k2, s);
  });
}

std::unique_ptr<double[]> doubles(std::int64_t count) {
  return std::unique_ptr<double[]>(new double[static_cast<std::size_t>(count)]);
}

// Resizes one [d0, d1, d2] volume along the axes that have a kernel (null: unchanged) and hands
// the result to sink. The pass along axis 0 runs over the whole volume, the in-plane passes
// plane by plane; whichever side comes first is the one that leaves the smaller float64
// intermediate.
// axis0_first, when given, overrides that choice (a slab of planes makes the choice of the whole
// volume, so that it computes the same operations).
void resample_volume(const Source& src, const Dims& d, const Kernels& k, const Sink& sink,
                     std::optional<bool> axis0_first = std::nullopt) {
  const Dims n{k[0] ? k[0]->m : d[0], k[1] ? k[1]->m : d[1], k[2] ? k[2]->m : d[2]};
  const bool in_plane = k[1] || k[2];
  if (k[0] && in_plane) {
    if (axis0_first.value_or(n[0] * d[1] * d[2] <= d[0] * n[1] * n[2])) {
      auto tmp = doubles(n[0] * d[1] * d[2]);
      Sink to_tmp;
      to_tmp.kind = Sink::Kind::f64;
      to_tmp.f64 = tmp.get();
      pass_axis0(src, d[1] * d[2], *k[0], to_tmp);
      Source from_tmp;
      from_tmp.f64 = tmp.get();
      resample_planes(from_tmp, n[0], d[1], d[2], k[1], k[2], sink);
    } else {
      auto tmp = doubles(d[0] * n[1] * n[2]);
      Sink to_tmp;
      to_tmp.kind = Sink::Kind::f64;
      to_tmp.f64 = tmp.get();
      resample_planes(src, d[0], d[1], d[2], k[1], k[2], to_tmp);
      Source from_tmp;
      from_tmp.f64 = tmp.get();
      pass_axis0(from_tmp, n[1] * n[2], *k[0], sink);
    }
  } else if (k[0]) {
    pass_axis0(src, d[1] * d[2], *k[0], sink);
  } else {
    resample_planes(src, d[0], d[1], d[2], k[1], k[2], sink);
  }
}

// ---- reductions ---------------------------------------------------------------------------

// Per-slice [min, max] along `axis` of a [d0, d1, d2] volume (axis -1: one global range).
// NaNs are skipped, as skimage's nanmin/nanmax do. Min and max are exact, so chunks combine in
// any order.
void slice_ranges(const float* v, const Dims& d, int axis, std::vector<double>& lo, std::vector<double>& hi) {
  const auto slices = static_cast<std::size_t>(axis < 0 ? 1 : d[static_cast<std::size_t>(axis)]);
  const float inf = std::numeric_limits<float>::infinity();
  struct Range {
    std::vector<float> lo, hi;
  };
  const Range init{std::vector<float>(slices, inf), std::vector<float>(slices, -inf)};
  const std::int64_t rows = d[0] * d[1];
  const Range r = parallel_reduce(
      rows, std::max<std::int64_t>(1, (std::int64_t{1} << 16) / d[2]), init,
      [&](std::int64_t r0, std::int64_t r1) {
        Range part = init;
        for (std::int64_t row = r0; row < r1; ++row) {
          const float* p = v + row * d[2];
          if (axis == 2) {
            float* l = part.lo.data();
            float* h = part.hi.data();
            for (std::int64_t i = 0; i < d[2]; ++i) {
              l[i] = p[i] < l[i] ? p[i] : l[i];
              h[i] = p[i] > h[i] ? p[i] : h[i];
            }
            continue;
          }
          // Independent lanes, so that the compiler vectorises the select (no fast-math needed).
          constexpr std::int64_t kW = 8;
          std::array<float, kW> l, h;
          l.fill(inf);
          h.fill(-inf);
          std::int64_t i = 0;
          for (; i + kW <= d[2]; i += kW) {
            for (std::int64_t k = 0; k < kW; ++k) {
              const auto j = static_cast<std::size_t>(k);
              l[j] = p[i + k] < l[j] ? p[i + k] : l[j];
              h[j] = p[i + k] > h[j] ? p[i + k] : h[j];
            }
          }
          for (; i < d[2]; ++i) {
            l[0] = p[i] < l[0] ? p[i] : l[0];
            h[0] = p[i] > h[0] ? p[i] : h[0];
          }
          const auto s = static_cast<std::size_t>(axis == 0 ? row / d[1] : axis == 1 ? row % d[1] : 0);
          for (std::size_t k = 0; k < l.size(); ++k) {
            part.lo[s] = std::min(part.lo[s], l[k]);
            part.hi[s] = std::max(part.hi[s], h[k]);
          }
        }
        return part;
      },
      [](Range a, const Range& b) {
        for (std::size_t i = 0; i < a.lo.size(); ++i) {
          a.lo[i] = std::min(a.lo[i], b.lo[i]);
          a.hi[i] = std::max(a.hi[i], b.hi[i]);
        }
        return a;
      });
  lo.assign(r.lo.begin(), r.lo.end());
  hi.assign(r.hi.begin(), r.hi.end());
}

// Sorted distinct values (NaN skipped), as np.unique.
template <typename T>
std::vector<double> unique_values(const T* v, std::int64_t count) {
  using Set = std::vector<double>;
  return parallel_reduce(
      count, std::int64_t{1} << 18, Set{},
      [&](std::int64_t b, std::int64_t e) {
        Set s;
        double last = std::numeric_limits<double>::quiet_NaN();
        for (std::int64_t i = b; i < e; ++i) {
          const double x = static_cast<double>(v[i]);
          if (x == last || std::isnan(x)) continue;
          last = x;
          const auto it = std::lower_bound(s.begin(), s.end(), x);
          if (it == s.end() || *it != x) s.insert(it, x);
        }
        return s;
      },
      [](const Set& a, const Set& b) {
        Set out;
        std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
        return out;
      });
}

// ---- nnU-Net's resample_data_or_seg for one channel -------------------------------------------

struct Plan {
  Dims in{}, out{};
  SeparateZ sep;
  int order = 3, order_z = 0;
  bool f16 = false;
  std::array<bool, 3> resized{};      // axes whose size changes
  std::array<AxisKernel, 3> kernels;  // with `order` (the in-plane axes when separate)
  AxisKernel kernel_z;                // sep.axis with order_z
  // The pass order resample_volume picks for the whole volume in the call that resizes axis 0
  // and an in-plane axis together (set by make_plan; slabs reuse it).
  std::optional<bool> axis0_first;
};

Kernels kernels_of(const Plan& p, bool with_sep_axis) {
  Kernels k{};
  for (int a = 0; a < 3; ++a) {
    const auto i = static_cast<std::size_t>(a);
    if (!p.resized[i]) continue;
    if (p.sep.separate && a == p.sep.axis) {
      if (with_sep_axis) k[i] = &p.kernel_z;
    } else if (!with_sep_axis) {
      k[i] = &p.kernels[i];
    }
  }
  return k;
}

bool any(const Kernels& k) {
  return k[0] || k[1] || k[2];
}

Plan make_plan(const Dims& in, const Dims& out, SeparateZ sep, int order, int order_z, bool f16) {
  Plan p;
  p.in = in;
  p.out = out;
  p.sep = sep;
  p.order = order;
  p.order_z = order_z;
  p.f16 = f16;
  for (std::size_t a = 0; a < 3; ++a) {
    p.resized[a] = in[a] != out[a];
    if (!p.resized[a]) continue;
    if (sep.separate && static_cast<int>(a) == sep.axis) {
      p.kernel_z = make_kernel(in[a], out[a], order_z);
    } else {
      p.kernels[a] = make_kernel(in[a], out[a], order);
    }
  }
  // The one resample_volume call that may combine axis 0 with in-plane axes is the (first)
  // stage with `order`: its input is the data, its output the in-plane shape of that stage.
  const Kernels k = kernels_of(p, false);
  if (k[0] && (k[1] || k[2])) {
    Dims n = in;
    for (std::size_t a = 0; a < 3; ++a)
      if (k[a]) n[a] = out[a];
    p.axis0_first = n[0] * in[1] * in[2] <= in[0] * n[1] * n[2];
  }
  return p;
}

// Clip bounds of one channel: one global range, or one per slice along the separate axis.
struct Ranges {
  std::vector<double> lo, hi;
};

Ranges data_ranges(const Plan& p, const float* src) {
  Ranges r;
  slice_ranges(src, p.in, p.sep.separate ? p.sep.axis : -1, r.lo, r.hi);
  return r;
}

Sink final_sink(const Plan& p, float* dst) {
  Sink s;
  s.kind = Sink::Kind::f32;
  s.f32 = dst;
  s.dims = p.out;
  s.f16 = p.f16;
  return s;
}

// Data of one channel; lo/hi: its clip bounds (Ranges, possibly offset to a slab's window).
void resample_channel_data(const Plan& p, const float* src, float* dst, const double* lo, const double* hi) {
  Source input;
  input.f32 = src;
  Sink out = final_sink(p, dst);
  if (!p.sep.separate) {
    out.clip = Sink::kGlobalClip;
    out.lo = lo;
    out.hi = hi;
    resample_volume(input, p.in, kernels_of(p, false), out, p.axis0_first);
    return;
  }
  const int a = p.sep.axis;
  const Kernels plane = kernels_of(p, false), along = kernels_of(p, true);
  if (!any(plane)) {
    // The 2D resizes keep every slice as it is.
    resample_volume(input, p.in, along, out);
    return;
  }
  if (!any(along)) {
    out.clip = a;
    out.lo = lo;
    out.hi = hi;
    resample_volume(input, p.in, plane, out, p.axis0_first);
    return;
  }
  // 2D resize of every slice, clipped to the slice's range, into a float64 volume; then the axis.
  Dims mid = p.out;
  mid[static_cast<std::size_t>(a)] = p.in[static_cast<std::size_t>(a)];
  auto here = doubles(mid[0] * mid[1] * mid[2]);
  Sink to_here;
  to_here.kind = Sink::Kind::f64;
  to_here.f64 = here.get();
  to_here.dims = mid;
  to_here.clip = a;
  to_here.lo = lo;
  to_here.hi = hi;
  resample_volume(input, p.in, plane, to_here, p.axis0_first);
  Source from_here;
  from_here.f64 = here.get();
  resample_volume(from_here, mid, along, out);
}

// Writes label where each label's mask, resized by kernels k, passes the sink's threshold.
void resample_labels(const Source& values, const std::vector<double>& labels, const Dims& d, const Kernels& k,
                     Sink sink) {
  for (const double label : labels) {
    Source mask = values;
    mask.mask = true;
    mask.label = label;
    sink.label = label;
    resample_volume(mask, d, k, sink);
  }
}

void resample_channel_seg(const Plan& p, const float* src, float* dst) {
  Source input;
  input.f32 = src;
  const std::int64_t count = p.in[0] * p.in[1] * p.in[2];
  Sink labels_out = final_sink(p, dst);
  labels_out.kind = Sink::Kind::label;
  if (!p.sep.separate) {
    if (p.order == 0) {
      resample_volume(input, p.in, kernels_of(p, false), final_sink(p, dst));
    } else {
      // Clipping the masks to their range never changes which side of 0.5 they are on.
      resample_labels(input, unique_values(src, count), p.in, kernels_of(p, false), labels_out);
    }
    return;
  }
  const int a = p.sep.axis;
  const Kernels plane = kernels_of(p, false), along = kernels_of(p, true);
  // The per-slice 2D resize of resize_segmentation; a slice without a label gives a zero mask,
  // so running every label of the channel on every slice is the same.
  auto in_plane = [&](const Sink& sink) {
    if (p.order == 0) {
      Sink copy = sink;
      copy.kind = sink.f32 ? Sink::Kind::f32 : Sink::Kind::f64;
      resample_volume(input, p.in, plane, copy);
    } else {
      resample_labels(input, unique_values(src, count), p.in, plane, sink);
    }
  };
  if (!any(along)) {
    in_plane(labels_out);
    return;
  }
  Dims mid = p.out;
  mid[static_cast<std::size_t>(a)] = p.in[static_cast<std::size_t>(a)];
  const std::int64_t mid_count = mid[0] * mid[1] * mid[2];
  std::unique_ptr<double[]> here;
  Source from_here;
  if (any(plane)) {
    here = doubles(mid_count);
    std::fill(here.get(), here.get() + mid_count, 0.0);
    Sink to_here;
    to_here.kind = Sink::Kind::label;
    to_here.f64 = here.get();
    to_here.dims = mid;
    in_plane(to_here);
    from_here.f64 = here.get();
  } else {
    from_here = input;
  }
  if (p.order_z == 0) {
    resample_volume(from_here, mid, along, final_sink(p, dst));
    return;
  }
  // Masks along the axis, set where np.round(mask) > 0.5, i.e. where the mask exceeds 0.5.
  const std::vector<double> labels = here ? unique_values(here.get(), mid_count) : unique_values(src, count);
  labels_out.strict = true;
  resample_labels(from_here, labels, mid, along, labels_out);
}

void check_arguments(const Tensor& data, const std::array<std::int64_t, 3>& new_shape, SeparateZ sep, int order,
                     int order_z) {
  VOXINFER_CHECK(data.layout() == Layout::plain && data.rank() == 4 && data.dtype() == DType::f32, invalid_input,
                 "nnU-Net resampling expects f32 data [C, d0, d1, d2], got " + std::string(dtype_name(data.dtype())) +
                     " " + data.shape().str());
  VOXINFER_CHECK(order >= 0 && order <= kMaxOrder && order_z >= 0 && order_z <= kMaxOrder, invalid_input,
                 "nnU-Net resampling: spline orders must be 0..5, got order " + std::to_string(order) +
                     " and order_z " + std::to_string(order_z));
  VOXINFER_CHECK(!sep.separate || (sep.axis >= 0 && sep.axis <= 2), invalid_input,
                 "nnU-Net resampling: separate z needs an axis 0..2, got " + std::to_string(sep.axis));
  const Dims in{data.dim(1), data.dim(2), data.dim(3)};
  for (std::size_t a = 0; a < 3; ++a) {
    VOXINFER_CHECK(in[a] >= 1 && new_shape[a] >= 1, invalid_input,
                   "nnU-Net resampling: cannot resize " + dims_str(in) + " to " + dims_str(new_shape));
  }
}

// Copies (rounded to half when asked): nnU-Net returns data of unchanged shape as it is.
void copy_values(const float* s, float* d, std::int64_t count, bool f16) {
  parallel_for(count, std::int64_t{1} << 16, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) d[i] = f16 ? round_to_half(s[i]) : s[i];
  });
}

// The axis-0 kernel of a plan with `order` (or order_z along a separate axis 0), if resized.
const AxisKernel* axis0_kernel(const Plan& p) {
  if (!p.resized[0]) return nullptr;
  return p.sep.separate && p.sep.axis == 0 ? &p.kernel_z : &p.kernels[0];
}

}  // namespace

SeparateZ decide_separate_z(std::optional<bool> force, const std::array<double, 3>& current_spacing,
                            const std::array<double, 3>& new_spacing, double threshold) {
  for (int a = 0; a < 3; ++a) {
    const auto i = static_cast<std::size_t>(a);
    VOXINFER_CHECK(current_spacing[i] > 0 && new_spacing[i] > 0, invalid_input,
                   "nnU-Net resampling: spacings must be positive, got current (" + std::to_string(current_spacing[0]) +
                       ", " + std::to_string(current_spacing[1]) + ", " + std::to_string(current_spacing[2]) +
                       ") and new (" + std::to_string(new_spacing[0]) + ", " + std::to_string(new_spacing[1]) + ", " +
                       std::to_string(new_spacing[2]) + ")");
  }
  auto anisotropic = [&](const std::array<double, 3>& s) {
    return *std::max_element(s.begin(), s.end()) / *std::min_element(s.begin(), s.end()) > threshold;
  };
  // get_lowres_axis: the axes where max(spacing) / spacing == 1.
  auto lowres_axes = [](const std::array<double, 3>& s) {
    const double top = *std::max_element(s.begin(), s.end());
    std::vector<int> axes;
    for (int a = 0; a < 3; ++a)
      if (top / s[static_cast<std::size_t>(a)] == 1.0) axes.push_back(a);
    return axes;
  };
  std::vector<int> axes;
  if (force) {
    if (!*force) return {};
    axes = lowres_axes(current_spacing);
  } else if (anisotropic(current_spacing)) {
    axes = lowres_axes(current_spacing);
  } else if (anisotropic(new_spacing)) {
    axes = lowres_axes(new_spacing);
  } else {
    return {};
  }
  // Two or three axes tied for the largest spacing: no separate z.
  if (axes.size() != 1) return {};
  return {true, axes[0]};
}

std::array<std::int64_t, 3> compute_new_shape(const std::array<std::int64_t, 3>& shape,
                                              const std::array<double, 3>& spacing,
                                              const std::array<double, 3>& new_spacing) {
  std::array<std::int64_t, 3> out{};
  for (std::size_t a = 0; a < 3; ++a) {
    VOXINFER_CHECK(
        new_spacing[a] > 0 && spacing[a] > 0 && shape[a] >= 0, invalid_input,
        "compute_new_shape: spacings must be positive and the shape non-negative, got shape " + dims_str(shape));
    // int(round(old_spacing / new_spacing * old_shape)); Python's round takes halves to even.
    out[a] = static_cast<std::int64_t>(std::nearbyint(spacing[a] / new_spacing[a] * static_cast<double>(shape[a])));
  }
  return out;
}

Tensor resample_data_or_seg(const Tensor& data, const std::array<std::int64_t, 3>& new_shape, bool is_seg,
                            SeparateZ sep, int order, int order_z, bool round_to_f16) {
  check_arguments(data, new_shape, sep, order, order_z);
  const Tensor src = data.contiguous();
  const Dims in{src.dim(1), src.dim(2), src.dim(3)};
  const std::int64_t channels = src.dim(0);
  Tensor out(Shape{channels, new_shape[0], new_shape[1], new_shape[2]}, DType::f32);
  const float* s = src.data<float>();
  float* d = out.data<float>();
  if (in == new_shape) {
    copy_values(s, d, src.numel(), round_to_f16);
    return out;
  }
  const Plan p = make_plan(in, new_shape, sep, order, order_z, round_to_f16);
  const std::int64_t in_count = in[0] * in[1] * in[2], out_count = new_shape[0] * new_shape[1] * new_shape[2];
  for (std::int64_t c = 0; c < channels; ++c) {
    if (is_seg) {
      resample_channel_seg(p, s + c * in_count, d + c * out_count);
    } else {
      const Ranges r = data_ranges(p, s + c * in_count);
      resample_channel_data(p, s + c * in_count, d + c * out_count, r.lo.data(), r.hi.data());
    }
  }
  return out;
}

bool can_stream_planes(SeparateZ sep, int order, int order_z) {
  return (sep.separate && sep.axis == 0 ? order_z : order) <= 1;
}

void resample_data_in_slabs(const Tensor& data, const std::array<std::int64_t, 3>& new_shape, SeparateZ sep, int order,
                            int order_z, bool round_to_f16, std::int64_t slab_planes,
                            const std::function<void(std::int64_t, const Tensor&)>& consume) {
  check_arguments(data, new_shape, sep, order, order_z);
  VOXINFER_CHECK(slab_planes >= 1, invalid_input,
                 "nnU-Net resampling: slabs need at least one plane, got " + std::to_string(slab_planes));
  const Tensor src = data.contiguous();
  const Dims in{src.dim(1), src.dim(2), src.dim(3)};
  const std::int64_t channels = src.dim(0);
  const std::int64_t in_plane = in[1] * in[2], out_plane = new_shape[1] * new_shape[2];
  const std::int64_t in_count = in[0] * in_plane;
  const float* s = src.data<float>();
  const Plan p = make_plan(in, new_shape, sep, order, order_z, round_to_f16);
  const AxisKernel* k0 = axis0_kernel(p);
  VOXINFER_CHECK(in == new_shape || !k0 || k0->order <= 1, unsupported,
                 "nnU-Net resampling: streaming planes needs axis 0 interpolated with order 0 or 1, got order " +
                     std::to_string(k0 ? k0->order : 0));
  std::vector<Ranges> ranges;
  if (in != new_shape) {
    for (std::int64_t c = 0; c < channels; ++c) ranges.push_back(data_ranges(p, s + c * in_count));
  }
  for (std::int64_t first = 0; first < new_shape[0]; first += slab_planes) {
    const std::int64_t count = std::min(slab_planes, new_shape[0] - first);
    Tensor slab(Shape{channels, count, new_shape[1], new_shape[2]}, DType::f32);
    float* d = slab.data<float>();
    if (in == new_shape) {
      for (std::int64_t c = 0; c < channels; ++c)
        copy_values(s + c * in_count + first * in_plane, d + c * count * out_plane, count * in_plane, round_to_f16);
      consume(first, slab);
      continue;
    }
    // The input planes these outputs read: all taps of axis 0 (no prefilter along it, so the
    // window computes exactly what the whole volume does).
    Plan w = p;
    std::int64_t lo = first, hi = first + count - 1;
    if (k0) {
      const auto t = static_cast<std::ptrdiff_t>(k0->order + 1);
      const auto taps = k0->taps.begin() + first * t, taps_end = taps + count * t;
      const auto [min_tap, max_tap] = std::minmax_element(taps, taps_end);
      lo = *min_tap;
      hi = *max_tap;
      AxisKernel& sub = p.sep.separate && p.sep.axis == 0 ? w.kernel_z : w.kernels[0];
      sub.n = hi - lo + 1;
      sub.m = count;
      sub.taps.assign(taps, taps_end);
      for (auto& tap : sub.taps) tap -= lo;
      sub.weights.assign(k0->weights.begin() + first * t, k0->weights.begin() + (first + count) * t);
    }
    w.in[0] = hi - lo + 1;
    w.out[0] = count;
    // Per-slice bounds along axis 0 follow the window; the others cover the whole volume.
    const std::size_t shift = p.sep.separate && p.sep.axis == 0 ? static_cast<std::size_t>(lo) : 0;
    for (std::int64_t c = 0; c < channels; ++c) {
      const Ranges& r = ranges[static_cast<std::size_t>(c)];
      resample_channel_data(w, s + c * in_count + lo * in_plane, d + c * count * out_plane, r.lo.data() + shift,
                            r.hi.data() + shift);
    }
    consume(first, slab);
  }
}

}  // namespace voxinfer::nnunet
