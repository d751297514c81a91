// Plain <-> channel-blocked activation reorders. Work items are (n, channel block, run of
// pixels); each writes its own part of dst, so any thread count gives the same bytes.
#include "voxinfer/kernels/reorder.h"

#include <algorithm>

#include "voxinfer/core/threading.h"

namespace voxinfer::kernels {
namespace {

// Pixels per work item, and per inner tile (a tile of block x kTile floats stays in L1).
constexpr std::int64_t kItemPixels = 4096;
constexpr std::int64_t kTile = 64;

struct Geometry {
  std::int64_t n, c, spatial, cb, runs;
  int block;
};

Geometry geometry(std::int64_t n, std::int64_t c, std::int64_t spatial, int block) {
  return {n, c, spatial, (c + block - 1) / block, (spatial + kItemPixels - 1) / kItemPixels, block};
}

template <bool ToBlocked>
void reorder_items(const Geometry& g, const float* src, float* dst, std::int64_t begin, std::int64_t end) {
  const std::int64_t B = g.block;
  for (std::int64_t item = begin; item < end; ++item) {
    const std::int64_t run = item % g.runs, nb = item / g.runs;  // nb = n * cb + channel block
    const std::int64_t n = nb / g.cb, b = nb % g.cb;
    const std::int64_t s0 = run * kItemPixels, s1 = std::min(g.spatial, s0 + kItemPixels);
    const std::int64_t lanes = std::min<std::int64_t>(B, g.c - b * B);
    float* blk = nullptr;
    const float* cblk = nullptr;
    if constexpr (ToBlocked) blk = dst + nb * g.spatial * B;
    else cblk = src + nb * g.spatial * B;
    for (std::int64_t t0 = s0; t0 < s1; t0 += kTile) {
      const std::int64_t t1 = std::min(s1, t0 + kTile);
      for (std::int64_t l = 0; l < B; ++l) {
        const std::int64_t ch = b * B + l;
        if constexpr (ToBlocked) {
          float* out = blk + l;
          if (l < lanes) {
            const float* in = src + (n * g.c + ch) * g.spatial;
            for (std::int64_t s = t0; s < t1; ++s) out[s * B] = in[s];
          } else {
            for (std::int64_t s = t0; s < t1; ++s) out[s * B] = 0.f;
          }
        } else {
          if (l >= lanes) break;
          const float* in = cblk + l;
          float* out = dst + (n * g.c + ch) * g.spatial;
          for (std::int64_t s = t0; s < t1; ++s) out[s] = in[s * B];
        }
      }
    }
  }
}

template <bool ToBlocked>
void reorder(const float* src, float* dst, std::int64_t n, std::int64_t c, std::int64_t spatial, int block) {
  if (n <= 0 || c <= 0 || spatial <= 0) return;
  const Geometry g = geometry(n, c, spatial, block);
  // One captured pointer keeps the std::function of parallel_for free of allocations.
  struct Args {
    Geometry g;
    const float* src;
    float* dst;
  };
  const Args args{g, src, dst};
  const Args* a = &args;
  parallel_for(n * g.cb * g.runs, 1,
               [a](std::int64_t b, std::int64_t e) { reorder_items<ToBlocked>(a->g, a->src, a->dst, b, e); });
}

}  // namespace

void reorder_plain_to_blocked(const float* src, float* dst, std::int64_t n, std::int64_t c, std::int64_t spatial,
                              int block) {
  reorder<true>(src, dst, n, c, spatial, block);
}

void reorder_blocked_to_plain(const float* src, float* dst, std::int64_t n, std::int64_t c, std::int64_t spatial,
                              int block) {
  reorder<false>(src, dst, n, c, spatial, block);
}

void zero_channel_padding(float* dst, std::int64_t n, std::int64_t c, std::int64_t spatial, int block) {
  if (block <= 1 || c % block == 0) return;
  const std::int64_t cp = round_up(c, block);
  parallel_for(n * spatial, 4096, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t r = b; r < e; ++r) {
      float* last = dst + (r / spatial) * cp * spatial + (cp / block - 1) * spatial * block + (r % spatial) * block;
      for (std::int64_t lane = c % block; lane < block; ++lane) last[lane] = 0.f;
    }
  });
}

}  // namespace voxinfer::kernels
