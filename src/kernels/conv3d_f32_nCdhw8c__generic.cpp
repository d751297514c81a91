// Direct blocked convolution in portable C++: nCdhw8c activations over GCC/Clang vector
// extensions, built with the baseline flags of the library (SSE2 on x86-64, NEON on
// AArch64). The fallback when no wider ISA is available or allowed (VOXINFER_MAX_ISA=generic);
// multiply and add are separate operations here, so results differ from the FMA kernels in
// the last bits. Also the portable builds of the 1x1x1-head and normalisation bodies.
#include <cstring>

#include "kernels/conv3d_direct_body.h"

namespace voxinfer::kernels::direct {
namespace {

// 16-byte vectors are native on every target the library builds for (SSE2, NEON); a block
// of 8 channels is a pair of them. (A 32-byte vector-extension type would be lowered
// through memory by GCC when the target has no 32-byte registers.)
using v4f = float __attribute__((vector_size(16)));
using v4i = std::int32_t __attribute__((vector_size(16)));

struct V8 {
  v4f lo, hi;
};

struct Generic {
  using V = V8;
  static constexpr int B = 8;
  static constexpr int kRegs = 8;  // 16 SSE/NEON registers hold 8 of these pairs
  static V zero() { return {v4f{}, v4f{}}; }
  static V set1(float x) {
    const v4f v = {x, x, x, x};
    return {v, v};
  }
  static V load(const float* p) {
    V v;
    std::memcpy(&v.lo, p, sizeof v.lo);
    std::memcpy(&v.hi, p + 4, sizeof v.hi);
    return v;
  }
  static void store(float* p, V v) {
    std::memcpy(p, &v.lo, sizeof v.lo);
    std::memcpy(p + 4, &v.hi, sizeof v.hi);
  }
  // No portable non-temporal store: an ordinary one.
  static void stream(float* p, V v) { store(p, v); }
  static void stream_fence() {}
  static V bcast(const float* p) { return set1(*p); }
  static V fma(V a, V b, V c) { return {a.lo * b.lo + c.lo, a.hi * b.hi + c.hi}; }
  static V add(V a, V b) { return {a.lo + b.lo, a.hi + b.hi}; }
  static V sub(V a, V b) { return {a.lo - b.lo, a.hi - b.hi}; }
  static V mul(V a, V b) { return {a.lo * b.lo, a.hi * b.hi}; }
  static V max(V a, V b) { return {a.lo > b.lo ? a.lo : b.lo, a.hi > b.hi ? a.hi : b.hi}; }
  static V min(V a, V b) { return {a.lo < b.lo ? a.lo : b.lo, a.hi < b.hi ? a.hi : b.hi}; }
  static V select_nonneg(V v, V a, V b) {
    const v4f z = {};
    return {v.lo >= z ? a.lo : b.lo, v.hi >= z ? a.hi : b.hi};
  }
  static V keep_lanes(V v, int n) {
    const v4i lo = {0, 1, 2, 3}, hi = {4, 5, 6, 7};
    const v4f z = {};
    return {lo < n ? v.lo : z, hi < n ? v.hi : z};
  }
  static v4f exp4(v4f x) {
    const v4f lo_clamp = {-87.3f, -87.3f, -87.3f, -87.3f}, hi_clamp = {88.3f, 88.3f, 88.3f, 88.3f};
    x = x < lo_clamp ? lo_clamp : x;
    x = x > hi_clamp ? hi_clamp : x;
    // n = round(x / ln 2) via floor(t + 0.5), with floor from truncation.
    const v4f t = x * 1.44269504088896341f + 0.5f;
    v4i n = __builtin_convertvector(t, v4i);
    n -= (__builtin_convertvector(n, v4f) > t) ? 1 : 0;
    const v4f nf = __builtin_convertvector(n, v4f);
    v4f r = x - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    v4f y = r * 1.9875691500e-4f + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + (r + 1.f);
    const v4i e = (n + 127) << 23;
    v4f scale;
    std::memcpy(&scale, &e, sizeof scale);
    return y * scale;
  }
  static V lane_sums(const V (&r)[8]) {
    float out[8];
    for (int q = 0; q < 8; ++q) {
      float l[8];
      store(l, r[q]);
      out[q] = 0.f;
      for (int k = 0; k < 8; ++k) out[q] += l[k];
    }
    return load(out);
  }
  static V sigmoid(V v) { return {1.f / (1.f + exp4(-v.lo)), 1.f / (1.f + exp4(-v.hi))}; }
};

}  // namespace

void conv3d_f32_nCdhw8c__generic(const Plan& p, const float* src, float* dst, const float* res, std::int64_t b,
                                 std::int64_t e) {
  switch (p.nb) {
    case 1: return run_shape<Generic, 1, 4>(p, src, dst, res, b, e);
    case 2: return run_shape<Generic, 2, 2>(p, src, dst, res, b, e);
    default: return;
  }
}

}  // namespace voxinfer::kernels::direct

#include "kernels/conv_head_body.h"

namespace voxinfer::kernels::head {

void head_nCdhw8c__generic(const Plan& p, const float* src, float* dst, std::int64_t b, std::int64_t e) {
  run_items<direct::Generic>(p, src, dst, b, e);
}

void deconv_head_nCdhw8c__generic(const DeconvPlan& p, const float* src, float* dst, std::int64_t b, std::int64_t e) {
  deconv_items<direct::Generic>(p, src, dst, b, e);
}

void taps_head_nCdhw8c__generic(const DeconvPlan& p, const float* src, float* dst, std::int64_t b, std::int64_t e) {
  taps_items<direct::Generic>(p, src, dst, b, e);
}

void small_plain__generic(const SmallPlan& p, const float* src, float* dst, const float* res, std::int64_t b, std::int64_t e) {
  small_run<direct::Generic>(p, src, dst, res, b, e);
}

}  // namespace voxinfer::kernels::head

#include "kernels/norm_body.h"

namespace voxinfer::kernels::norm {

void moments__generic(const float* p, std::int64_t count, int lanes, Moments* out) {
  moments_any<direct::Generic>(p, count, lanes, out);
}
void affine__generic(const float* s, float* d, std::int64_t count, int lanes, const float* m, const float* a, const float* b,
                    Activation act, float alpha, const float* slope, bool stream) {
  affine_any<direct::Generic>(s, d, count, lanes, m, a, b, act, alpha, slope, stream);
}

}  // namespace voxinfer::kernels::norm
