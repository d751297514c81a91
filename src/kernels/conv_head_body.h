// Body of the 1x1x1 head compute functions over a vector-traits type T (see
// conv3d_direct_body.h); T also provides lane_sums(r), whose lane q is the sum of r[q]'s lanes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/conv3d_direct_body.h"
#include "kernels/conv_head.h"

namespace voxinfer::kernels::head {

// Per group of B pixels and output channel: B vectors of lane-wise products summed over the
// channel blocks, then reduced across lanes into one vector of B pixel values. Pixels past
// the last whole group are summed in the same order, lane by lane.
template <class T>
void run_items(const Plan& p, const float* src, float* dst, std::int64_t begin, std::int64_t end) {
  using V = typename T::V;
  constexpr int B = T::B;
  const std::int64_t chunks = p.chunks();
  for (std::int64_t item = begin; item < end; ++item) {
    const std::int64_t n = item / chunks, x0 = (item % chunks) * kChunk, x1 = std::min(p.sp, x0 + kChunk);
    const float* in = src + n * p.icb * p.sp * B;
    float* out = dst + n * p.oc * p.sp;
    std::int64_t x = x0;
    for (; x + B <= x1; x += B)
      for (std::int64_t o = 0; o < p.oc; ++o) {
        V r[B];
        for (int q = 0; q < B; ++q) r[q] = T::zero();
        for (std::int64_t cb = 0; cb < p.icb; ++cb) {
          const V w = T::load(p.w + (o * p.icb + cb) * B);
          const float* v = in + (cb * p.sp + x) * B;
          for (int q = 0; q < B; ++q) r[q] = T::fma(w, T::load(v + q * B), r[q]);
        }
        V s = T::add(T::lane_sums(r), T::set1(p.bias[o]));
        s = direct::activation_of<T>(p.act, p.alpha, p.beta, nullptr, s, 0);
        T::store(out + o * p.sp + x, s);
      }
    for (; x < x1; ++x)
      for (std::int64_t o = 0; o < p.oc; ++o) {
        float lanes[B] = {};
        for (std::int64_t cb = 0; cb < p.icb; ++cb)
          for (int l = 0; l < B; ++l) lanes[l] += p.w[(o * p.icb + cb) * B + l] * in[(cb * p.sp + x) * B + l];
        float t = 0.f;
        for (int l = 0; l < B; ++l) t += lanes[l];
        float one[B] = {};
        one[0] = t + p.bias[o];
        const V s = direct::activation_of<T>(p.act, p.alpha, p.beta, nullptr, T::load(one), 0);
        float res[B];
        T::store(res, s);
        out[o * p.sp + x] = res[0];
      }
  }
}

// Reduces a group's B accumulators across lanes into B pixel values of output channel o,
// adds the bias, applies the activation (PRelu: the channel's slope) and stores the pixels
// of [ow0, ow) the group covers to y + ow0.
template <class T>
inline void store_group(const DeconvPlan& p, const typename T::V (&acc)[T::B], std::int64_t o, float* y,
                        std::int64_t ow0) {
  using V = typename T::V;
  constexpr int B = T::B;
  V s = T::add(T::lane_sums(acc), T::set1(p.bias[o]));
  if (p.act == Activation::prelu)  // the vector holds pixels of one channel: one slope
    s = T::select_nonneg(s, s, T::mul(s, T::set1(p.slope[o])));
  else
    s = direct::activation_of<T>(p.act, p.alpha, p.beta, nullptr, s, 0);
  if (ow0 + B <= p.ow) {
    T::store(y + ow0, s);
  } else {
    float tmp[B];
    T::store(tmp, s);
    std::copy_n(tmp, p.ow - ow0, y + ow0);
  }
}

// One group of B output pixels [ow0, ow0 + B) of output channel o, for the taps of one
// output row: W tap kw feeds the pixels q whose ow + pw - kw is even (q of parity P = (pw -
// kw) & 1, as ow0 is even), from input pixels base, base + 1, ... MASKED groups read input
// pixels outside the row from a block of zeros.
template <class T, int P, bool MASKED>
inline void deconv_taps(typename T::V (&acc)[T::B], const float* row, typename T::V w, std::int64_t base,
                        std::int64_t iw) {
  constexpr int B = T::B;
#pragma GCC unroll 16
  for (int q = P; q < B; q += 2) {
    const std::int64_t x = base + (q - P) / 2;
    const float* v = !MASKED || (x >= 0 && x < iw) ? row + x * B : direct::kZeroBlock;
    acc[q] = T::fma(T::load(v), w, acc[q]);
  }
}

template <class T, bool MASKED>
inline void deconv_group(const DeconvPlan& p, const float* in, const std::int64_t* dtap, int nd,
                         const std::int64_t* htap, int nh, std::int64_t o, std::int64_t ow0, typename T::V (&acc)[T::B]) {
  using V = typename T::V;
  constexpr int B = T::B;
  const std::int64_t isp = p.id * p.ih * p.iw;
  for (int q = 0; q < B; ++q) acc[q] = T::zero();
  for (int a = 0; a < nd; ++a)
    for (int b = 0; b < nh; ++b) {
      const std::int64_t kd = dtap[2 * a], kh = htap[2 * b];
      const float* row0 = in + (dtap[2 * a + 1] * p.ih + htap[2 * b + 1]) * p.iw * B;
      const float* w0 = p.w + ((o * p.kd + kd) * p.kh + kh) * p.kw * p.icb * B;
      for (std::int64_t kw = 0; kw < p.kw; ++kw) {
        const std::int64_t t = ow0 + p.pw - kw;  // ow + pw - kw at q = 0
        const int par = static_cast<int>(t & 1);
        const std::int64_t base = (t + par) / 2;  // input pixel of the first q of that parity
        for (std::int64_t cb = 0; cb < p.icb; ++cb) {
          const V w = T::load(w0 + (kw * p.icb + cb) * B);
          const float* row = row0 + cb * isp * B;
          if (par) deconv_taps<T, 1, MASKED>(acc, row, w, base, p.iw);
          else deconv_taps<T, 0, MASKED>(acc, row, w, base, p.iw);
        }
      }
    }
}

// Output rows [begin, end) of a transposed head. Per row: the (kd, input d) and (kh, input
// h) taps that reach it, then groups of B pixels per output channel, reduced across lanes
// like the 1x1x1 head; groups whose taps stay inside the input row skip the range checks.
template <class T>
void deconv_items(const DeconvPlan& p, const float* src, float* dst, std::int64_t begin, std::int64_t end) {
  using V = typename T::V;
  constexpr int B = T::B;
  // Tap lists hold (k, input index) pairs; kernels up to 16 taps per axis.
  std::int64_t dtap[32], htap[32];
  // Full groups: every q reads input pixels (ow0 + q + pw - kw) / 2 inside [0, iw).
  const std::int64_t lo = (p.pw >= p.kw - 1 ? 0 : (p.kw - 1 - p.pw + B - 1) / B * B);
  for (std::int64_t item = begin; item < end; ++item) {
    const std::int64_t n = item / (p.od * p.oh), r = item % (p.od * p.oh), od = r / p.oh, oh = r % p.oh;
    int nd = 0, nh = 0;
    for (std::int64_t k = 0; k < p.kd; ++k) {
      const std::int64_t t = od + p.pd - k;
      if (t >= 0 && t % p.sd == 0 && t / p.sd < p.id) dtap[2 * nd] = k, dtap[2 * nd + 1] = t / p.sd, ++nd;
    }
    for (std::int64_t k = 0; k < p.kh; ++k) {
      const std::int64_t t = oh + p.ph - k;
      if (t >= 0 && t % p.sh == 0 && t / p.sh < p.ih) htap[2 * nh] = k, htap[2 * nh + 1] = t / p.sh, ++nh;
    }
    const float* in = src + n * p.icb * p.id * p.ih * p.iw * B;
    float* out = dst + ((n * p.oc) * p.od + od) * p.oh * p.ow + oh * p.ow;
    const std::int64_t ostride = p.od * p.oh * p.ow;
    for (std::int64_t ow0 = 0; ow0 < p.ow; ow0 += B) {
      // The group's largest input pixel: (ow0 + B - 1 + pw) / 2 at kw = 0.
      const bool full = ow0 >= lo && (ow0 + B - 1 + p.pw) / 2 < p.iw;
      for (std::int64_t o = 0; o < p.oc; ++o) {
        V acc[B];
        if (full) deconv_group<T, false>(p, in, dtap, nd, htap, nh, o, ow0, acc);
        else deconv_group<T, true>(p, in, dtap, nd, htap, nh, o, ow0, acc);
        store_group<T>(p, acc, o, out + o * ostride, ow0);
      }
    }
  }
}

// Convolutions (not transposed) with few outputs and stride 1 along W: W tap kw of pixel q
// reads input pixel ow0 + q - pw + kw * dw.
template <class T, bool MASKED>
inline void taps_group(const DeconvPlan& p, const float* in, const std::int64_t* dtap, int nd, const std::int64_t* htap,
                       int nh, std::int64_t o, std::int64_t ow0, typename T::V (&acc)[T::B]) {
  using V = typename T::V;
  constexpr int B = T::B;
  const std::int64_t isp = p.id * p.ih * p.iw;
  for (int q = 0; q < B; ++q) acc[q] = T::zero();
  for (int a = 0; a < nd; ++a)
    for (int b = 0; b < nh; ++b) {
      const float* row0 = in + (dtap[2 * a + 1] * p.ih + htap[2 * b + 1]) * p.iw * B;
      const float* w0 = p.w + ((o * p.kd + dtap[2 * a]) * p.kh + htap[2 * b]) * p.kw * p.icb * B;
      for (std::int64_t kw = 0; kw < p.kw; ++kw) {
        const std::int64_t x0 = ow0 - p.pw + kw * p.dw;
        for (std::int64_t cb = 0; cb < p.icb; ++cb) {
          const V w = T::load(w0 + (kw * p.icb + cb) * B);
          const float* row = row0 + cb * isp * B;
#pragma GCC unroll 16
          for (int q = 0; q < B; ++q) {
            const std::int64_t x = x0 + q;
            const float* v = !MASKED || (x >= 0 && x < p.iw) ? row + x * B : direct::kZeroBlock;
            acc[q] = T::fma(T::load(v), w, acc[q]);
          }
        }
      }
    }
}

// Output rows [begin, end) of a convolution head with taps (see taps_group).
template <class T>
void taps_items(const DeconvPlan& p, const float* src, float* dst, std::int64_t begin, std::int64_t end) {
  using V = typename T::V;
  constexpr int B = T::B;
  std::int64_t dtap[32], htap[32];
  for (std::int64_t item = begin; item < end; ++item) {
    const std::int64_t n = item / (p.od * p.oh), r = item % (p.od * p.oh), od = r / p.oh, oh = r % p.oh;
    int nd = 0, nh = 0;
    for (std::int64_t k = 0; k < p.kd; ++k) {
      const std::int64_t i = od * p.sd - p.pd + k * p.dd;
      if (i >= 0 && i < p.id) dtap[2 * nd] = k, dtap[2 * nd + 1] = i, ++nd;
    }
    for (std::int64_t k = 0; k < p.kh; ++k) {
      const std::int64_t i = oh * p.sh - p.ph + k * p.dh;
      if (i >= 0 && i < p.ih) htap[2 * nh] = k, htap[2 * nh + 1] = i, ++nh;
    }
    const float* in = src + n * p.icb * p.id * p.ih * p.iw * B;
    float* out = dst + ((n * p.oc) * p.od + od) * p.oh * p.ow + oh * p.ow;
    const std::int64_t ostride = p.od * p.oh * p.ow;
    for (std::int64_t ow0 = 0; ow0 < p.ow; ow0 += B) {
      const bool full = ow0 - p.pw >= 0 && ow0 + B - 1 - p.pw + (p.kw - 1) * p.dw < p.iw;
      for (std::int64_t o = 0; o < p.oc; ++o) {
        V acc[B];
        if (full) taps_group<T, false>(p, in, dtap, nd, htap, nh, o, ow0, acc);
        else taps_group<T, true>(p, in, dtap, nd, htap, nh, o, ow0, acc);
        store_group<T>(p, acc, o, out + o * ostride, ow0);
      }
    }
  }
}

// One tile of the small plain kernel: UR vectors of B output pixels from x0 for OC output
// channels; rows[k] is channel 0 of the k-th valid (kd, kh) input row, padded (pixel w of
// the input at pw + w), channels row_len floats apart, and wk[k] that row's weights.
template <class T, int OC, int UR>
inline void small_tile_run(const SmallPlan& p, const float* const* rows, const std::int64_t* wk, int nrows,
                           std::int64_t x0, float* out, const float* res, std::int64_t osp, std::int64_t count) {
  using V = typename T::V;
  constexpr int B = T::B;
  const std::int64_t wo = p.ic * p.kd * p.kh * p.kw;  // floats between output channels' weights
  V acc[OC][UR];
  for (int o = 0; o < OC; ++o)
    for (int u = 0; u < UR; ++u) acc[o][u] = T::zero();
  for (int k = 0; k < nrows; ++k)
    for (std::int64_t c = 0; c < p.ic; ++c) {
      const float* row = rows[k] + c * p.row_len + x0;
      const float* wr = p.w + wk[k] + c * p.kd * p.kh * p.kw;
      for (std::int64_t kw = 0; kw < p.kw; ++kw) {
        V v[UR];
#pragma GCC unroll 8
        for (int u = 0; u < UR; ++u) v[u] = T::load(row + kw * p.dw + u * B);
#pragma GCC unroll 4
        for (int o = 0; o < OC; ++o) {
          const V wv = T::set1(wr[o * wo + kw]);
#pragma GCC unroll 8
          for (int u = 0; u < UR; ++u) acc[o][u] = T::fma(v[u], wv, acc[o][u]);
        }
      }
    }
  for (int o = 0; o < OC; ++o)
    for (int u = 0; u < UR; ++u) {
      const std::int64_t x = x0 + u * B;
      if (x >= count) break;
      V s = T::add(acc[o][u], T::set1(p.bias[o]));
      float* y = out + o * osp + x;
      const bool whole = x + B <= count;
      if (res) {
        const float* r = res + o * osp + x;
        if (whole) {
          s = T::add(s, T::load(r));
        } else {
          float tmp[B] = {};
          std::copy_n(r, count - x, tmp);
          s = T::add(s, T::load(tmp));
        }
      }
      if (p.act == Activation::prelu)
        s = T::select_nonneg(s, s, T::mul(s, T::set1(p.slope[o])));
      else
        s = direct::activation_of<T>(p.act, p.alpha, p.beta, nullptr, s, 0);
      if (whole) {
        T::store(y, s);
      } else {
        float tmp[B];
        T::store(tmp, s);
        std::copy_n(tmp, count - x, y);
      }
    }
}

// Output rows [begin, end) of the small plain kernel. Input rows are copied with their W
// padding into a cache shared by consecutive rows and planes (slot (d mod span_d, h mod
// span_h), tagged with the source row), so that no tile checks pixels against the row.
template <class T, int OC>
void small_items(const SmallPlan& p, const float* src, float* dst, const float* res, std::int64_t begin,
                 std::int64_t end) {
  constexpr int B = T::B;
  constexpr int UR = small_tile(B) / B;
  direct::RowCache cache((p.kd - 1) * p.dd + 1, (p.kh - 1) * p.dh + 1, p.ic, p.row_len);
  std::vector<const float*> rows(static_cast<std::size_t>(p.kd * p.kh));
  std::vector<std::int64_t> wk(rows.size());
  const std::int64_t isp = p.id * p.ih * p.iw, osp = p.od * p.oh * p.ow;
  for (std::int64_t item = begin; item < end; ++item) {
    const std::int64_t n = item / (p.od * p.oh), r = item % (p.od * p.oh), od = r / p.oh, oh = r % p.oh;
    int nrows = 0;
    for (std::int64_t kd = 0; kd < p.kd; ++kd) {
      const std::int64_t d = od - p.pd + kd * p.dd;
      if (d < 0 || d >= p.id) continue;
      for (std::int64_t kh = 0; kh < p.kh; ++kh) {
        const std::int64_t h = oh - p.ph + kh * p.dh;
        if (h < 0 || h >= p.ih) continue;
        rows[static_cast<std::size_t>(nrows)] = cache.row(src + n * p.ic * isp + (d * p.ih + h) * p.iw, d, h, isp, p.iw, p.pw);
        wk[static_cast<std::size_t>(nrows)] = (kd * p.kh + kh) * p.kw;
        ++nrows;
      }
    }
    const std::int64_t off = (n * p.oc * p.od + od) * p.oh * p.ow + oh * p.ow;
    for (std::int64_t x0 = 0; x0 < p.ow; x0 += UR * B)
      small_tile_run<T, OC, UR>(p, rows.data(), wk.data(), nrows, x0, dst + off, res ? res + off : nullptr, osp, p.ow);
  }
}

template <class T>
void small_run(const SmallPlan& p, const float* src, float* dst, const float* res, std::int64_t begin, std::int64_t end) {
  switch (p.oc) {
    case 1: return small_items<T, 1>(p, src, dst, res, begin, end);
    case 2: return small_items<T, 2>(p, src, dst, res, begin, end);
    case 3: return small_items<T, 3>(p, src, dst, res, begin, end);
    default: return small_items<T, 4>(p, src, dst, res, begin, end);
  }
}

}  // namespace voxinfer::kernels::head
