// Winograd F(2x2x2, 3x3x3) for 3x3x3 stride-1 convolutions on channel-blocked tensors:
// 64 multiplications per 2x2x2 output tile and channel pair instead of 216 (3.375x fewer).
// Internal interface between the operator (winograd.cpp: checks, weight transform, threading)
// and its per-ISA compute functions (compiled in the per-ISA kernel files), which never
// allocate and never throw.
//
// Transforms (Lavin and Gray), per axis: input B^T d = (d0 - d2, d1 + d2, d2 - d1, d1 - d3);
// weights G g = (g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2); output
// A^T m = (m0 + m1 + m2, m1 - m2 - m3). Index xi = (z * 4 + y) * 4 + x.
#pragma once

#include <cstdint>

#include "voxinfer/kernels/conv.h"

namespace voxinfer::kernels::winograd {

struct Plan {
  std::int64_t n = 1, ic = 1, id = 1, ih = 1, iw = 1, oc = 1, od = 1, oh = 1, ow = 1;
  std::int64_t pd = 0, ph = 0, pw = 0;
  int block = 16;            // channel block of src and dst (16 AVX-512, 8 AVX2)
  std::int64_t icb = 1, ocb = 1;
  std::int64_t td = 1, th = 1, tw = 1;  // output tiles per axis (ceil(o / 2))
  // Tiles of an image are numbered (z, y, x) row-major and cut into chunks of nt (a multiple
  // of the GEMM's tile step); a chunk may span rows and planes. The output-channel blocks are
  // cut into `groups` groups of `gb` blocks (the last may be shorter), so that a work item
  // (image, chunk, group) streams only its group's transformed weights.
  std::int64_t nt = 16;
  std::int64_t gb = 1, groups = 1;
  int nb = 1;                // output-channel blocks per GEMM register tile (1 or 2); divides gb
  const float* u = nullptr;  // transformed weights [64][icb * block][ocb][block], zero-padded
  const float* bias = nullptr;
  const float* slope = nullptr;  // PRelu slopes, ocb * block
  Activation act = Activation::none;
  float alpha = 0.f, beta = 0.f;
  bool residual = false;
  // Plane streaming (ConvKernel::run_planes): output plane od of dst is plane d_begin + od of
  // the problem (d_begin even, so tiles fall where a whole run puts them), and src holds input
  // plane d at d % src_planes (0: src holds all id planes).
  std::int64_t d_begin = 0, src_planes = 0;

  std::int64_t tiles() const { return td * th * tw; }  // per image
  std::int64_t chunks() const { return (tiles() + nt - 1) / nt; }
  std::int64_t items() const { return n * chunks() * groups; }
  // Floats between the 64 transform positions of the transformed input V and of the GEMM
  // output M in scratch: one vector more than the data, so that the 64 positions of a tile,
  // written (V) or read (M) together, do not fall on the same few cache sets (the data
  // alone is a multiple of 4 KiB for most chunk sizes).
  std::int64_t v_step() const { return (icb * nt + 1) * block; }
  std::int64_t m_step() const { return (gb * nt + 1) * block; }
  std::int64_t scratch_floats() const { return 64 * (v_step() + m_step()); }
};

// Items [begin, end) (see Plan). `scratch` holds
// plan.scratch_floats() floats for this call alone.
using RunFn = void (*)(const Plan& plan, const float* src, float* dst, const float* residual, float* scratch,
                       std::int64_t begin, std::int64_t end);

void winograd_f2k3_nCdhw16c__avx512(const Plan&, const float*, float*, const float*, float*, std::int64_t, std::int64_t);
void winograd_f2k3_nCdhw8c__avx2_fma(const Plan&, const float*, float*, const float*, float*, std::int64_t, std::int64_t);

// The kernel for `isa` (AVX2 or AVX-512), or null with the reason appended to `why`.
std::unique_ptr<ConvKernel> create(const ConvParams& p, const float* wei, const Epilogue& ep, Isa isa, std::string* why);

}  // namespace voxinfer::kernels::winograd
