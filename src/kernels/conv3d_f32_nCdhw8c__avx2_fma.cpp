// Direct blocked convolution for AVX2+FMA: nCdhw8c activations, 8-wide vectors, 16 ymm
// registers. Compiled with -mavx2 -mfma only (voxinfer_isa_sources). Also the AVX2 builds of
// the Winograd, 1x1x1-head and normalisation bodies.
#include <immintrin.h>

#include "kernels/conv3d_direct_body.h"

namespace voxinfer::kernels::direct {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int B = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  // Non-temporal store (p 32-byte aligned), and the fence that orders such stores.
  static void stream(float* p, V v) { _mm256_stream_ps(p, v); }
  static void stream_fence() { _mm_sfence(); }
  static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static constexpr int kRegs = 16;
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  // An empty asm that takes v in a register: the compiler cannot re-read it from memory.
  static void pin(V& v) { asm("" : "+x"(v)); }
  // First layers, the 4 x 3 tile (4 output blocks x 3 pixels) over rows of 1 input channel
  // with 3 taps along W at dilation 1 and stride 1: per row, 36 FMAs of straight-line code
  // on fixed registers, the 5 input values of a row broadcast once each (tap kw of pixel u
  // reads value kw + u). rows[k] holds row k's first input value and its packed weights
  // [kw][block][8]; off is the tile's first pixel. GCC, given the same code in intrinsics,
  // spilled accumulators or split the row into a loop per tap.
  template <class Row>
  static void first_rows_4x3(V (&acc)[4][3], const Row* rows, int n, std::int64_t off) {
    static_assert(sizeof(Row) == 16);  // {const float* src, const float* wei}
    if (n <= 0) return;
    asm volatile(
        "1:\n\t"
        "mov (%[rows]), %%rax\n\t"
        "mov 8(%[rows]), %%rdx\n\t"
        "lea (%%rax,%[off],4), %%rax\n\t"
        "add $16, %[rows]\n\t"
        "vbroadcastss 0(%%rax), %%ymm12\n\t"
        "vbroadcastss 4(%%rax), %%ymm13\n\t"
        "vbroadcastss 8(%%rax), %%ymm14\n\t"
        "vmovups 0(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a00]\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a01]\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a02]\n\t"
        "vmovups 32(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a10]\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a11]\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a12]\n\t"
        "vmovups 64(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a20]\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a21]\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a22]\n\t"
        "vmovups 96(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a30]\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a31]\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a32]\n\t"
        "vbroadcastss 12(%%rax), %%ymm12\n\t"
        "vmovups 128(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a00]\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a01]\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a02]\n\t"
        "vmovups 160(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a10]\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a11]\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a12]\n\t"
        "vmovups 192(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a20]\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a21]\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a22]\n\t"
        "vmovups 224(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a30]\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a31]\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a32]\n\t"
        "vbroadcastss 16(%%rax), %%ymm13\n\t"
        "vmovups 256(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a00]\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a01]\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a02]\n\t"
        "vmovups 288(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a10]\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a11]\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a12]\n\t"
        "vmovups 320(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a20]\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a21]\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a22]\n\t"
        "vmovups 352(%%rdx), %%ymm15\n\t"
        "vfmadd231ps %%ymm14, %%ymm15, %[a30]\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %[a31]\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %[a32]\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        : [a00] "+x"(acc[0][0]), [a01] "+x"(acc[0][1]), [a02] "+x"(acc[0][2]), [a10] "+x"(acc[1][0]),
          [a11] "+x"(acc[1][1]), [a12] "+x"(acc[1][2]), [a20] "+x"(acc[2][0]), [a21] "+x"(acc[2][1]),
          [a22] "+x"(acc[2][2]), [a30] "+x"(acc[3][0]), [a31] "+x"(acc[3][1]), [a32] "+x"(acc[3][2]),
          [rows] "+r"(rows), [n] "+r"(n)
        : [off] "r"(off)
        : "rax", "rdx", "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory");
  }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  // v >= 0 ? a : b, lane by lane.
  static V select_nonneg(V v, V a, V b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(v, zero(), _CMP_GE_OQ)); }
  // Zeroes lanes n..7.
  static V keep_lanes(V v, int n) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_and_ps(v, _mm256_castsi256_ps(m));
  }
  // exp(x) with Cephes' expf polynomial (about 1 ulp on the clamped range).
  static V exp(V x) {
    x = _mm256_min_ps(_mm256_max_ps(x, set1(-87.3f)), set1(88.3f));
    const V n = _mm256_round_ps(_mm256_mul_ps(x, set1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm256_fnmadd_ps(n, set1(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, set1(-2.12194440e-4f), r);
    V y = set1(1.9875691500e-4f);
    y = fma(y, r, set1(1.3981999507e-3f));
    y = fma(y, r, set1(8.3334519073e-3f));
    y = fma(y, r, set1(4.1665795894e-2f));
    y = fma(y, r, set1(1.6666665459e-1f));
    y = fma(y, r, set1(5.0000001201e-1f));
    y = fma(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, set1(1.f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  }
  // Lane q of the result is the sum of r[q]'s 8 lanes (interleave and add at 32-bit, 64-bit
  // and 128-bit granularity).
  static V lane_sums(const V (&r)[8]) {
    V t[4], u[2];
    for (int k = 0; k < 4; ++k) t[k] = _mm256_add_ps(_mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]), _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]));
    for (int k = 0; k < 2; ++k) {
      const __m256d a = _mm256_castps_pd(t[2 * k]), b = _mm256_castps_pd(t[2 * k + 1]);
      u[k] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(a, b)), _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)));
    }
    return _mm256_add_ps(_mm256_permute2f128_ps(u[0], u[1], 0x20), _mm256_permute2f128_ps(u[0], u[1], 0x31));
  }
  static V sigmoid(V v) {
    const V e = exp(_mm256_sub_ps(zero(), v));
    return _mm256_div_ps(set1(1.f), _mm256_add_ps(set1(1.f), e));
  }
};

}  // namespace

void conv3d_f32_nCdhw8c__avx2_fma(const Plan& p, const float* src, float* dst, const float* res, std::int64_t b,
                                  std::int64_t e) {
  switch (p.nb) {
    case 1: return run_shape<Avx2, 1, 12>(p, src, dst, res, b, e);
    case 2: return run_shape<Avx2, 2, 6>(p, src, dst, res, b, e);
    case 4: return run_shape<Avx2, 4, 3>(p, src, dst, res, b, e);
    default: return;
  }
}

}  // namespace voxinfer::kernels::direct

#include "kernels/winograd_body.h"

namespace voxinfer::kernels::winograd {

void winograd_f2k3_nCdhw8c__avx2_fma(const Plan& p, const float* src, float* dst, const float* res, float* scratch, std::int64_t b,
                                     std::int64_t e) {
  run_items<direct::Avx2, 4>(p, src, dst, res, scratch, b, e);
}

}  // namespace voxinfer::kernels::winograd

#include "kernels/conv_head_body.h"

namespace voxinfer::kernels::head {

void head_nCdhw8c__avx2_fma(const Plan& p, const float* src, float* dst, std::int64_t b, std::int64_t e) {
  run_items<direct::Avx2>(p, src, dst, b, e);
}

void deconv_head_nCdhw8c__avx2_fma(const DeconvPlan& p, const float* src, float* dst, std::int64_t b, std::int64_t e) {
  deconv_items<direct::Avx2>(p, src, dst, b, e);
}

void taps_head_nCdhw8c__avx2_fma(const DeconvPlan& p, const float* src, float* dst, std::int64_t b, std::int64_t e) {
  taps_items<direct::Avx2>(p, src, dst, b, e);
}

void small_plain__avx2_fma(const SmallPlan& p, const float* src, float* dst, const float* res, std::int64_t b, std::int64_t e) {
  small_run<direct::Avx2>(p, src, dst, res, b, e);
}

}  // namespace voxinfer::kernels::head

#include "kernels/norm_body.h"

namespace voxinfer::kernels::norm {

void moments__avx2_fma(const float* p, std::int64_t count, int lanes, Moments* out) {
  moments_any<direct::Avx2>(p, count, lanes, out);
}
void affine__avx2_fma(const float* s, float* d, std::int64_t count, int lanes, const float* m, const float* a, const float* b,
                     Activation act, float alpha, const float* slope, bool stream) {
  affine_any<direct::Avx2>(s, d, count, lanes, m, a, b, act, alpha, slope, stream);
}

}  // namespace voxinfer::kernels::norm
