// Internal interface between the direct blocked convolution operator (conv_direct.cpp,
// baseline ISA: validation, weight packing, threading) and its per-ISA compute functions
// (conv3d_f32_nCdhw8c__avx2_fma.cpp, conv3d_f32_nCdhw16c__avx512.cpp), which only see raw
// pointers and this plan, never allocate and never throw.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "voxinfer/kernels/conv.h"

namespace voxinfer::kernels::direct {

// Everything a compute function needs, fixed at creation. Packed weights are
// [tile][icb in group][kd][kh][kw][ic in block (icblk)][nb][block o], where a tile is nb
// consecutive output-channel blocks of one group; bias and slopes are padded to ocb*block.
struct Plan {
  // The problem (for ConvTranspose: the input grid is id/ih/iw, the output od/oh/ow).
  std::int64_t n = 1, ic = 1, id = 1, ih = 1, iw = 1, oc = 1, od = 1, oh = 1, ow = 1;
  std::int64_t kd = 1, kh = 1, kw = 1, sd = 1, sh = 1, sw = 1, dd = 1, dh = 1, dw = 1, pd = 0, ph = 0, pw = 0;
  std::int64_t groups = 1;
  // ConvTranspose (no dilation, groups 1), computed as stride^3 sub-pixel convolutions:
  // output o = stride * m + r of residue class r reads input m + tap_off[axis][r] + j
  // through tap j < tap_n[axis][r]; class c = (rd * sh + rh) * sw + rw has its own packed
  // weights at class_off[c], laid out like a convolution's.
  bool transposed = false;
  static constexpr int kMaxStride = 4;
  std::int64_t tap_n[3][kMaxStride] = {};
  std::int64_t tap_off[3][kMaxStride] = {};
  std::int64_t class_off[kMaxStride * kMaxStride * kMaxStride] = {};

  int block = 8;            // channel block of src/dst (8 or 16)
  int nb = 1;               // output-channel blocks per tile (register blocking over channels)
  bool plain_src = false;   // src is plain NCDHW (few input channels), else nCdhw<block>c
  std::int64_t icb = 1;     // input-channel blocks per group (plain: 1)
  std::int64_t icblk = 8;   // input channels per packed block (plain: ic)
  std::int64_t icg = 1;     // input channels per group
  std::int64_t ocb = 1;     // output-channel blocks in dst (all groups)
  std::int64_t ocb_g = 1;   // output-channel blocks per group
  std::int64_t tiles_g = 1; // tiles per group
  std::int64_t icb_step = 1;  // input-channel blocks accumulated per pass over the output rows
  bool kd_split = false;      // one pass per kernel depth tap too (smaller weights per pass)
  bool plane = false;         // tiles over the flattened rows of a work item (narrow rows)
  std::int64_t rows = 1;      // output rows (oh; ConvTranspose: input rows) per work item
  std::int64_t row_groups = 1;
  std::int64_t ow_lo = 0, ow_hi = 0;  // outputs in [ow_lo, ow_hi) read no W padding
  // Plane streaming (ConvKernel::run_planes): output plane od of dst is plane d_begin + od of
  // the problem, and src holds input plane d at d % src_planes (0: src holds all id planes).
  std::int64_t d_begin = 0, src_planes = 0;

  const float* wei = nullptr;    // packed weights
  const float* bias = nullptr;   // padded bias (zeros when the layer has none)
  const float* slope = nullptr;  // padded PReLU slopes, or null
  Activation act = Activation::none;
  float alpha = 0.f, beta = 0.f;
  bool residual = false;

  std::int64_t tiles() const { return groups * tiles_g; }
  // Work items: (n, tile, d, row group), each owning distinct output rows.
  std::int64_t items() const { return n * tiles() * od * row_groups; }
};

// Computes work items [begin, end) of the plan.
using RunFn = void (*)(const Plan& plan, const float* src, float* dst, const float* residual, std::int64_t begin,
                       std::int64_t end);

// Register tiles a compute function is built for: output-channel blocks per tile and the
// output pixels of a full tile for that count. nb = 0 ends the list.
struct TileShape {
  int nb;
  int ur;
};

// One optimized implementation of the list (src/kernels/conv_impls.inc).
struct Impl {
  const char* name;
  Isa isa;
  int block;
  bool transposed;
  RunFn run;
  const TileShape* shapes;
};

// The implementation list, best first; `count` gets its length.
const Impl* impls(std::size_t* count);

// Options that tests and benchmarks use to reach every variant of an implementation.
struct Tuning {
  int nb = 0;                  // force output-channel blocks per tile (0: heuristic)
  std::int64_t icb_step = 0;   // force input-channel blocks per pass (0: heuristic)
  std::int64_t rows = 0;       // force rows per work item (0: heuristic)
  int plain_src = -1;          // force plain (1) or blocked (0) src (-1: heuristic)
  int kd_split = -1;           // force one pass per depth tap (1) or not (0) (-1: heuristic)
  int plane = -1;              // force plane tiles (1) or row tiles (0) (-1: heuristic)
  bool any_width = false;      // accept layers whose channels all fit a narrower block
};

// Creates the kernel of one implementation, or null with the reason appended to `why`.
std::unique_ptr<ConvKernel> create(const Impl& impl, const ConvParams& p, const float* wei, const Epilogue& ep,
                                   bool transposed, const Tuning& tuning, std::string* why);

}  // namespace voxinfer::kernels::direct
