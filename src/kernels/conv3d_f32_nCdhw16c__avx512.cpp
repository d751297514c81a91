// Direct blocked convolution for AVX-512 (F/BW/VL/DQ): nCdhw16c activations, 16-wide
// vectors, 32 zmm registers. Compiled with the avx512 flags only (voxinfer_isa_sources). Also
// the AVX-512 builds of the Winograd, 1x1x1-head and normalisation bodies.
// GCC 12 reports _mm512_undefined_ps() inside its own intrinsics as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "kernels/conv3d_direct_body.h"

namespace voxinfer::kernels::direct {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int B = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  // Non-temporal store (p 64-byte aligned), and the fence that orders such stores.
  static void stream(float* p, V v) { _mm512_stream_ps(p, v); }
  static void stream_fence() { _mm_sfence(); }
  static V bcast(const float* p) { return _mm512_set1_ps(*p); }
  static constexpr int kRegs = 32;
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  // v >= 0 ? a : b, lane by lane.
  static V select_nonneg(V v, V a, V b) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero(), _CMP_GE_OQ), b, a); }
  // Zeroes lanes n..15.
  static V keep_lanes(V v, int n) { return _mm512_maskz_mov_ps(static_cast<__mmask16>((1u << n) - 1u), v); }
  // exp(x) with Cephes' expf polynomial (about 1 ulp on the clamped range).
  static V exp(V x) {
    x = _mm512_min_ps(_mm512_max_ps(x, set1(-87.3f)), set1(88.3f));
    const V n = _mm512_roundscale_ps(_mm512_mul_ps(x, set1(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm512_fnmadd_ps(n, set1(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, set1(-2.12194440e-4f), r);
    V y = set1(1.9875691500e-4f);
    y = fma(y, r, set1(1.3981999507e-3f));
    y = fma(y, r, set1(8.3334519073e-3f));
    y = fma(y, r, set1(4.1665795894e-2f));
    y = fma(y, r, set1(1.6666665459e-1f));
    y = fma(y, r, set1(5.0000001201e-1f));
    y = fma(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, set1(1.f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
  }
  // Lane q of the result is the sum of r[q]'s 16 lanes: pairs of vectors are interleaved and
  // added at 32-bit, 64-bit and 128-bit granularity (45 operations for 16 sums).
  static V lane_sums(const V (&r)[16]) {
    V t[8], u[4], v[2];
    for (int k = 0; k < 8; ++k) t[k] = _mm512_add_ps(_mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]), _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]));
    for (int k = 0; k < 4; ++k) {
      const __m512d a = _mm512_castps_pd(t[2 * k]), b = _mm512_castps_pd(t[2 * k + 1]);
      u[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    for (int k = 0; k < 2; ++k)
      v[k] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0x88), _mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], 0x88), _mm512_shuffle_f32x4(v[0], v[1], 0xDD));
  }
  static V sigmoid(V v) {
    const V e = exp(_mm512_sub_ps(zero(), v));
    return _mm512_div_ps(set1(1.f), _mm512_add_ps(set1(1.f), e));
  }
};

}  // namespace

void conv3d_f32_nCdhw16c__avx512(const Plan& p, const float* src, float* dst, const float* res, std::int64_t b,
                                 std::int64_t e) {
  switch (p.nb) {
    case 1: return run_shape<Avx512, 1, 16>(p, src, dst, res, b, e);
    case 2: return run_shape<Avx512, 2, 12>(p, src, dst, res, b, e);
    case 4: return run_shape<Avx512, 4, 6>(p, src, dst, res, b, e);
    default: return;
  }
}

}  // namespace voxinfer::kernels::direct

#include "kernels/winograd_body.h"

namespace voxinfer::kernels::winograd {

void winograd_f2k3_nCdhw16c__avx512(const Plan& p, const float* src, float* dst, const float* res, float* scratch, std::int64_t b,
                                    std::int64_t e) {
  run_items<direct::Avx512, 8>(p, src, dst, res, scratch, b, e);
}

}  // namespace voxinfer::kernels::winograd

#include "kernels/conv_head_body.h"

namespace voxinfer::kernels::head {

void head_nCdhw16c__avx512(const Plan& p, const float* src, float* dst, std::int64_t b, std::int64_t e) {
  run_items<direct::Avx512>(p, src, dst, b, e);
}

void deconv_head_nCdhw16c__avx512(const DeconvPlan& p, const float* src, float* dst, std::int64_t b, std::int64_t e) {
  deconv_items<direct::Avx512>(p, src, dst, b, e);
}

void taps_head_nCdhw16c__avx512(const DeconvPlan& p, const float* src, float* dst, std::int64_t b, std::int64_t e) {
  taps_items<direct::Avx512>(p, src, dst, b, e);
}

void small_plain__avx512(const SmallPlan& p, const float* src, float* dst, const float* res, std::int64_t b, std::int64_t e) {
  small_run<direct::Avx512>(p, src, dst, res, b, e);
}

}  // namespace voxinfer::kernels::head

#include "kernels/norm_body.h"

namespace voxinfer::kernels::norm {

void moments__avx512(const float* p, std::int64_t count, int lanes, Moments* out) {
  moments_any<direct::Avx512>(p, count, lanes, out);
}
void affine__avx512(const float* s, float* d, std::int64_t count, int lanes, const float* m, const float* a, const float* b,
                   Activation act, float alpha, const float* slope, bool stream) {
  affine_any<direct::Avx512>(s, d, count, lanes, m, a, b, act, alpha, slope, stream);
}

}  // namespace voxinfer::kernels::norm
