// Statistics and the affine pass of the normalisation operators (InstanceNormalization,
// GroupNormalization), vectorised per ISA and independent of the thread count.
//
// Statistics: the data is cut by the caller into fixed chunks; a chunk's mean and sum of
// squared deviations come from two passes over it while it is in L2 (float, 32 partial sums
// so that the loads pipeline), and chunks are merged in a fixed order in double (Chan, Golub
// and LeVeque's pairwise update). Memory traffic: one read of the data.
//
// Internal interface between the operator (graph/ops_nn.cpp) and the per-ISA compute
// functions (norm_body.h, compiled in the per-ISA kernel files), which never allocate and
// never throw. Data is a flat run of floats whose "lane" (channel) is index % lanes, with
// lanes 1 (plain NCDHW), 8 or 16 (nCdhw8c / nCdhw16c rows).
#pragma once

#include <algorithm>
#include <cstdint>

#include "voxinfer/core/cpu.h"
#include "voxinfer/kernels/conv.h"

namespace voxinfer::kernels::norm {

struct Moments {
  double n = 0, mean = 0, m2 = 0;  // count, mean, sum of squared deviations from the mean

  void merge(const Moments& b) {
    if (b.n == 0) return;
    if (n == 0) {
      *this = b;
      return;
    }
    const double t = n + b.n, d = b.mean - mean;
    mean += d * (b.n / t);
    m2 += b.m2 + d * d * (n * b.n / t);
    n = t;
  }
  double variance() const { return n > 0 ? m2 / n : 0.0; }
};

// Floats per chunk: 128 KiB, which stays in L2 between the two passes.
inline constexpr std::int64_t kChunkFloats = 32768;
// Floats summed side by side (partial sums per lane: kPartials / lanes).
inline constexpr int kPartials = 32;

// Per-lane moments of p[0, count) into out[0, lanes).
using MomentsFn = void (*)(const float* p, std::int64_t count, int lanes, Moments* out);
// d[i] = act((s[i] - m[l]) * a[l] + b[l]) with l = i % lanes; s may equal d. Relu, LeakyRelu
// (alpha), PRelu (slope[l] per lane) and Sigmoid; other activations are not fused into
// normalisations. `stream`: write d
// with non-temporal stores (for outputs far larger than the caches: no read for ownership,
// and the caches keep what is still to be read).
using AffineFn = void (*)(const float* s, float* d, std::int64_t count, int lanes, const float* m, const float* a,
                          const float* b, Activation act, float alpha, const float* slope, bool stream);

struct Fns {
  MomentsFn moments;
  AffineFn affine;
};

// The functions for an ISA (generic, AVX2+FMA or AVX-512).
Fns fns(Isa isa);

void moments__avx512(const float*, std::int64_t, int, Moments*);
void moments__avx2_fma(const float*, std::int64_t, int, Moments*);
void moments__generic(const float*, std::int64_t, int, Moments*);
void affine__avx512(const float*, float*, std::int64_t, int, const float*, const float*, const float*, Activation,
                    float, const float*, bool);
void affine__avx2_fma(const float*, float*, std::int64_t, int, const float*, const float*, const float*, Activation,
                      float, const float*, bool);
void affine__generic(const float*, float*, std::int64_t, int, const float*, const float*, const float*, Activation,
                     float, const float*, bool);

}  // namespace voxinfer::kernels::norm
