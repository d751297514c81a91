// Body of the 1x1x1 head compute functions over a vector-traits type T (see
// conv3d_direct_body.h); T also provides lane_sums(r), whose lane q is the sum of r[q]'s lanes.
#pragma once

#include <algorithm>
#include <cstdint>

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

}  // namespace voxinfer::kernels::head
