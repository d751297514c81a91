// Statistics for the normalisation operators, vectorisable and independent of the thread
// count: the data is cut into fixed chunks; a chunk's mean and sum of squared deviations
// come from two passes over it while it is in cache (float, several partial sums so the
// compiler can vectorise and pipeline them); chunks are merged in a fixed order in double
// (Chan, Golub and LeVeque's pairwise update). Memory traffic: one read of the data.
#pragma once

#include <algorithm>
#include <cstdint>

namespace voxinfer::graph {

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
inline constexpr std::int64_t kMomentChunkFloats = 32768;

// Per-lane moments of `rows` rows of L lanes (row r starts at p + r * L) into out[0, L).
template <int L>
void chunk_moments(const float* p, std::int64_t rows, Moments* out) {
  constexpr int U = L >= 32 ? 1 : 32 / L;  // rows in flight: 32 independent partial sums
  float s[U][L] = {};
  std::int64_t r = 0;
  for (; r + U <= rows; r += U)
    for (int u = 0; u < U; ++u)
      for (int l = 0; l < L; ++l) s[u][l] += p[(r + u) * L + l];
  for (; r < rows; ++r)
    for (int l = 0; l < L; ++l) s[0][l] += p[r * L + l];
  // c: the chunk's mean to float precision. The second pass sums deviations from c (small
  // numbers, summed accurately in float) and their squares, which corrects the mean and
  // gives M2 = sum (x - c)^2 - n (mean - c)^2 even for data with a large offset.
  float c[L];
  for (int l = 0; l < L; ++l) {
    double t = 0;
    for (int u = 0; u < U; ++u) t += s[u][l];
    c[l] = rows > 0 ? static_cast<float>(t / static_cast<double>(rows)) : 0.f;
  }
  float e[U][L] = {}, q[U][L] = {};
  for (r = 0; r + U <= rows; r += U)
    for (int u = 0; u < U; ++u)
      for (int l = 0; l < L; ++l) {
        const float d = p[(r + u) * L + l] - c[l];
        e[u][l] += d;
        q[u][l] += d * d;
      }
  for (; r < rows; ++r)
    for (int l = 0; l < L; ++l) {
      const float d = p[r * L + l] - c[l];
      e[0][l] += d;
      q[0][l] += d * d;
    }
  for (int l = 0; l < L; ++l) {
    double se = 0, sq = 0;
    for (int u = 0; u < U; ++u) se += e[u][l], sq += q[u][l];
    const double n = static_cast<double>(rows), shift = rows > 0 ? se / n : 0.0;
    out[l] = Moments{n, c[l] + shift, std::max(0.0, sq - n * shift * shift)};
  }
}

}  // namespace voxinfer::graph
