// Body of the normalisation functions (norm.h), written once over a vector-traits type T and
// compiled per ISA by the file that includes it (see conv3d_direct_body.h for why T keeps the
// instantiations apart). The data is a flat run of floats whose lane is index % lanes; with
// lanes in {1, 8, 16}, a group of kPartials floats holds every lane the same number of times,
// so kPartials / T::B vectors can be summed side by side, each position keeping its lane.
// The partial sums and their order are fixed by the code, not by the ISA's vector width (the
// compiler may contract the affine's multiply-add where the ISA has FMA).
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/conv3d_direct_body.h"
#include "kernels/norm.h"

namespace voxinfer::kernels::norm {

template <class T>
void moments_any(const float* p, std::int64_t count, int lanes, Moments* out) {
  using V = typename T::V;
  constexpr int B = T::B, K = kPartials / B;
  static_assert(K * B == kPartials);
  const std::int64_t full = count / kPartials * kPartials;
  const double n = static_cast<double>(count / lanes);
  alignas(64) float part[kPartials];

  // Pass 1: the chunk's mean per lane, to float precision.
  V s[K];
  for (int k = 0; k < K; ++k) s[k] = T::zero();
  for (std::int64_t i = 0; i < full; i += kPartials)
    for (int k = 0; k < K; ++k) s[k] = T::add(s[k], T::load(p + i + k * B));
  for (int k = 0; k < K; ++k) T::store(part + k * B, s[k]);
  double sum[16] = {};
  for (int j = 0; j < kPartials; ++j) sum[j % lanes] += part[j];
  for (std::int64_t i = full; i < count; ++i) sum[i % lanes] += p[i];
  float c[16];
  for (int l = 0; l < lanes; ++l) c[l] = n > 0 ? static_cast<float>(sum[l] / n) : 0.f;

  // Pass 2: deviations from c (small numbers, summed accurately in float) and their squares,
  // which correct the mean and give M2 = sum (x - c)^2 - n (mean - c)^2 even for data with a
  // large offset.
  alignas(64) float pat[kPartials];
  for (int j = 0; j < kPartials; ++j) pat[j] = c[j % lanes];
  V cv[K], e[K], q[K];
  for (int k = 0; k < K; ++k) cv[k] = T::load(pat + k * B), e[k] = T::zero(), q[k] = T::zero();
  for (std::int64_t i = 0; i < full; i += kPartials)
    for (int k = 0; k < K; ++k) {
      const V d = T::sub(T::load(p + i + k * B), cv[k]);
      e[k] = T::add(e[k], d);
      q[k] = T::add(q[k], T::mul(d, d));
    }
  double se[16] = {}, sq[16] = {};
  for (int k = 0; k < K; ++k) T::store(part + k * B, e[k]);
  for (int j = 0; j < kPartials; ++j) se[j % lanes] += part[j];
  for (int k = 0; k < K; ++k) T::store(part + k * B, q[k]);
  for (int j = 0; j < kPartials; ++j) sq[j % lanes] += part[j];
  for (std::int64_t i = full; i < count; ++i) {
    const float d = p[i] - c[i % lanes];
    se[i % lanes] += d;
    sq[i % lanes] += static_cast<double>(d) * d;
  }
  for (int l = 0; l < lanes; ++l) {
    const double shift = n > 0 ? se[l] / n : 0.0;
    const double m2 = sq[l] - n * shift * shift;
    out[l] = Moments{n, c[l] + shift, m2 > 0 ? m2 : 0.0};
  }
}

template <class T, class F>
void affine_loop(const float* s, float* d, std::int64_t count, int lanes, const float* m, const float* a,
                 const float* b, bool stream, F act) {
  using V = typename T::V;
  constexpr int B = T::B, K = kPartials / B;
  alignas(64) float pm[kPartials], pa[kPartials], pb[kPartials];
  for (int j = 0; j < kPartials; ++j) pm[j] = m[j % lanes], pa[j] = a[j % lanes], pb[j] = b[j % lanes];
  V vm[K], va[K], vb[K];
  for (int k = 0; k < K; ++k) vm[k] = T::load(pm + k * B), va[k] = T::load(pa + k * B), vb[k] = T::load(pb + k * B);
  // Vector k of a group of kPartials floats: act((x - m) * a + b) with its lanes' values.
  auto y = [&](const float* x, int k) { return act(T::add(T::mul(T::sub(T::load(x), vm[k]), va[k]), vb[k]), k); };
  const std::int64_t full = count / kPartials * kPartials;
  if (stream && reinterpret_cast<std::uintptr_t>(d) % (B * sizeof(float)) == 0) {
    for (std::int64_t i = 0; i < full; i += kPartials)
      for (int k = 0; k < K; ++k) T::stream(d + i + k * B, y(s + i + k * B, k));
    T::stream_fence();
  } else {
    for (std::int64_t i = 0; i < full; i += kPartials)
      for (int k = 0; k < K; ++k) T::store(d + i + k * B, y(s + i + k * B, k));
  }
  if (full == count) return;
  // The last partial group through a buffer, with the same operations.
  alignas(64) float buf[kPartials] = {};
  const auto rest = static_cast<std::size_t>(count - full);
  std::memcpy(buf, s + full, rest * sizeof(float));
  for (int k = 0; k < K; ++k) T::store(buf + k * B, y(buf + k * B, k));
  std::memcpy(d + full, buf, rest * sizeof(float));
}

template <class T>
void affine_any(const float* s, float* d, std::int64_t count, int lanes, const float* m, const float* a, const float* b,
                Activation act, float alpha, const float* slope, bool stream) {
  using V = typename T::V;
  constexpr int B = T::B, K = kPartials / B;
  switch (act) {
    case Activation::relu:
      return affine_loop<T>(s, d, count, lanes, m, a, b, stream, [](V v, int) { return T::max(v, T::zero()); });
    case Activation::leaky_relu: {
      const V al = T::set1(alpha);
      return affine_loop<T>(s, d, count, lanes, m, a, b, stream,
                            [al](V v, int) { return T::select_nonneg(v, v, T::mul(v, al)); });
    }
    case Activation::prelu: {  // slope[l] per lane, laid out like the other per-lane values
      alignas(64) float ps[kPartials];
      for (int j = 0; j < kPartials; ++j) ps[j] = slope[j % lanes];
      V vs[K];
      for (int k = 0; k < K; ++k) vs[k] = T::load(ps + k * B);
      return affine_loop<T>(s, d, count, lanes, m, a, b, stream,
                            [&vs](V v, int k) { return T::select_nonneg(v, v, T::mul(v, vs[k])); });
    }
    case Activation::sigmoid:
      return affine_loop<T>(s, d, count, lanes, m, a, b, stream, [](V v, int) { return T::sigmoid(v); });
    default:
      return affine_loop<T>(s, d, count, lanes, m, a, b, stream, [](V v, int) { return v; });
  }
}

}  // namespace voxinfer::kernels::norm
