// Body of the direct blocked convolution, written once over a vector-traits type T and
// compiled per ISA by the file that includes it, with that file's -m flags. Everything
// here is a template on T and each T lives in an anonymous namespace, so instantiations
// built for different ISAs can never be merged by the linker.
//
// Register blocking (oneDNN's direct convolution): a tile is NB output-channel blocks x
// UR output pixels along W, held in NB*UR vector accumulators. For each input channel of
// each tap it loads NB weight vectors and broadcasts UR input values. Input-channel blocks
// are visited in passes of plan.icb_step so that the weights of a pass stay in L1 while
// whole output rows are swept; partial sums live in dst between passes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/conv_direct.h"

namespace voxinfer::kernels::direct {

// What a tile needs about the output row it works on.
struct RowCtx {
  const float* src = nullptr;  // image n, first input-channel block of this pass
  const float* wei = nullptr;  // packed weights of this pass (ConvTranspose: of this tap)
  float* dst = nullptr;        // the row at ow = 0, first output-channel block of the tile
  const float* res = nullptr;  // residual at the same offsets, or null
  std::int64_t nicb = 1;       // input-channel blocks in this pass
  int ic_tail = 8;             // channels in the last block of the pass
  std::int64_t kd_lo = 0, kd_hi = 1, kh_lo = 0, kh_hi = 1, kw_n = 1;  // taps to visit
  std::int64_t d0 = 0, h0 = 0, w0 = 0;  // input d, h, w of tap 0 (w at output pixel 0)
  std::int64_t dd = 1, dh = 1, dw = 1;
  std::int64_t kh = 1, kw = 1;  // tap layout of the packed weights
  std::int64_t ih = 1, iw = 1;  // input rows per plane, pixels per row
  std::int64_t ring = 0;        // src holds input plane d at d % ring (0: at d)
  std::int64_t ow_n = 1, sh = 1, ph = 0;  // output row length, H stride and pad (plane tiles)
  std::int64_t src_cs = 0;      // floats between input-channel blocks (blocked src)
  std::int64_t src_ics = 1;     // floats between input channels (plain src)
  std::int64_t w_tap = 0, w_icb = 0;    // floats per tap and per input-channel block of packed weights
  std::int64_t dst_ws = 0, dst_cs = 0;  // floats between output pixels and output-channel blocks
  std::int64_t ob0 = 0, ocb = 1;        // first output-channel block of the tile, blocks in dst
  int oc_tail = 8;                      // channels in the last output-channel block
  bool first = true, last = true;
  const float* bias = nullptr;
  const float* slope = nullptr;
  Activation act = Activation::none;
  float alpha = 0.f, beta = 0.f;
};

// The epilogue's activation on output-channel block ob (PRelu: per-channel slopes there).
template <class T>
inline typename T::V activation_of(Activation act, float alpha, float beta, const float* slope, typename T::V v,
                                   std::int64_t ob) {
  switch (act) {
    case Activation::none: return v;
    case Activation::relu: return T::max(v, T::zero());
    case Activation::leaky_relu: return T::select_nonneg(v, v, T::mul(v, T::set1(alpha)));
    case Activation::prelu: return T::select_nonneg(v, v, T::mul(v, T::load(slope + ob * T::B)));
    case Activation::sigmoid: return T::sigmoid(v);
    case Activation::clip: return T::min(T::max(v, T::set1(alpha)), T::set1(beta));
  }
  return v;
}

// Runs f(i) for i in [0, n), unrolled by 2 when n is the whole block (a full unroll made
// GCC spill accumulators at the end of the body).
template <int B, class F>
inline void ic_loop(int n, F&& f) {
  if (n == B) {
#pragma GCC unroll 2
    for (int i = 0; i < B; ++i) f(i);
  } else {
    for (int i = 0; i < n; ++i) f(i);
  }
}

// acc[j][u] += w[j] * src[u] for one input channel: si points at pixel 0 (pixels `stride`
// floats apart), wi at the NB weight vectors. The operation order is chosen so that
// accumulators, weights and broadcasts fit the register file: a spilled accumulator would
// put a store-to-load round trip on the FMA chain.
// pixel(u) gives the address of the input value of pixel u.
template <class T, int NB, int UR, class Pixel>
inline void fma_step_at(typename T::V (&acc)[NB][UR], Pixel&& pixel, const float* wi) {
  using V = typename T::V;
  constexpr int B = T::B;
  if constexpr (NB * UR + NB + 1 <= T::kRegs) {
    V wv[NB];
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) wv[j] = T::load(wi + j * B);
#pragma GCC unroll 32
    for (int u = 0; u < UR; ++u) {
      const V x = T::bcast(pixel(u));
#pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) acc[j][u] = T::fma(wv[j], x, acc[j][u]);
    }
  } else {
    // Broadcasts first, then one weight vector at a time (AVX2 with 4 x 3 tiles: 3 + 1 + 12).
    // The weight is pinned to a register: left alone, GCC folds its load into each of the UR
    // FMAs, which makes UR + 1 loads per UR FMAs and the tile load-bound.
    V x[UR];
#pragma GCC unroll 32
    for (int u = 0; u < UR; ++u) x[u] = T::bcast(pixel(u));
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) {
      V w = T::load(wi + j * B);
      if constexpr (requires { T::pin(w); }) T::pin(w);
#pragma GCC unroll 32
      for (int u = 0; u < UR; ++u) acc[j][u] = T::fma(w, x[u], acc[j][u]);
    }
  }
}

// Pixels `Stride` floats apart from si.
template <class T, int NB, int UR, std::int64_t Stride>
inline void fma_step(typename T::V (&acc)[NB][UR], const float* si, const float* wi) {
  fma_step_at<T, NB, UR>(acc, [si](int u) { return si + u * Stride; }, wi);
}

// Read instead of input pixels that fall in the padding (or past the end of a partial tile).
inline constexpr float kZeroBlock[16] = {};

// Tile modes: full tiles read a row without checks; masked tiles check every pixel against
// the input row (W padding) and against ur < UR; plane tiles take UR consecutive pixels of
// the flattened (oh, ow) plane, each with its own address and H and W padding checks, so
// that narrow rows (8 or 4 pixels in the deepest U-Net stages) still fill the registers.
inline constexpr int kFull = 0, kMasked = 1, kPlane = 2;

// The tile's epilogue: partial sums back to dst, or (last pass) bias, residual and
// activation; masked tiles store only their first ur pixels.
// ACT >= 0 makes the activation a constant (the per-vector switch folds away); -1 reads it
// from c.
template <class T, int NB, int UR, bool MASKED, int ACT = -1>
[[gnu::always_inline]] inline void finish(const RowCtx& c, typename T::V (&acc)[NB][UR], std::int64_t ow0, int ur) {
  using V = typename T::V;
  constexpr int B = T::B;
  float* dst = c.dst + ow0 * c.dst_ws;
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) {
    float* dj = dst + j * c.dst_cs;
    if (!c.last) {
#pragma GCC unroll 32
      for (int u = 0; u < UR; ++u)
        if (!MASKED || u < ur) T::store(dj + u * c.dst_ws, acc[j][u]);
      continue;
    }
    const std::int64_t ob = c.ob0 + j;
    const V bias = T::load(c.bias + ob * B);
    const float* rj = c.res ? c.res + ow0 * c.dst_ws + j * c.dst_cs : nullptr;
    const bool partial = ob + 1 == c.ocb && c.oc_tail < B;
#pragma GCC unroll 32
    for (int u = 0; u < UR; ++u) {
      if (MASKED && u >= ur) continue;
      V v = T::add(acc[j][u], bias);
      if (rj) v = T::add(v, T::load(rj + u * c.dst_ws));
      v = activation_of<T>(ACT < 0 ? c.act : static_cast<Activation>(ACT), c.alpha, c.beta, c.slope, v, ob);
      if (partial) v = T::keep_lanes(v, c.oc_tail);  // channel padding of dst stays zero
      T::store(dj + u * c.dst_ws, v);
    }
  }
}

// The epilogue with one switch per tile rather than one per vector: worth it where the
// tile is short (first layers: 3 x 12 FMAs per row); in the other tiles the six copies
// cost more than they save (stride-2 layer g on AVX-512: 290 -> 800 ms).
template <class T, int NB, int UR, bool MASKED>
[[gnu::always_inline]] inline void finish_switched(const RowCtx& c, typename T::V (&acc)[NB][UR], std::int64_t ow0, int ur) {
  switch (c.act) {
    case Activation::none: return finish<T, NB, UR, MASKED, static_cast<int>(Activation::none)>(c, acc, ow0, ur);
    case Activation::relu: return finish<T, NB, UR, MASKED, static_cast<int>(Activation::relu)>(c, acc, ow0, ur);
    case Activation::leaky_relu: return finish<T, NB, UR, MASKED, static_cast<int>(Activation::leaky_relu)>(c, acc, ow0, ur);
    case Activation::prelu: return finish<T, NB, UR, MASKED, static_cast<int>(Activation::prelu)>(c, acc, ow0, ur);
    case Activation::sigmoid: return finish<T, NB, UR, MASKED, static_cast<int>(Activation::sigmoid)>(c, acc, ow0, ur);
    case Activation::clip: return finish<T, NB, UR, MASKED, static_cast<int>(Activation::clip)>(c, acc, ow0, ur);
  }
}

// The accumulators of a tile at its start: zero on the first pass (and past ur in a masked
// tile), else the partial sums the previous pass left in dst.
template <class T, int NB, int UR, bool MASKED>
[[gnu::always_inline]] inline void start(const RowCtx& c, typename T::V (&acc)[NB][UR], std::int64_t ow0, int ur) {
  const float* dst = c.dst + ow0 * c.dst_ws;
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 32
    for (int u = 0; u < UR; ++u)
      acc[j][u] = (c.first || (MASKED && u >= ur)) ? T::zero() : T::load(dst + j * c.dst_cs + u * c.dst_ws);
}

// First layers, one input row of plain src (s at the tile's first pixel, channels ics apart,
// wi the row's packed weights, taps then channels): a tap has only 1-4 input channels, so
// the taps of the row and the channels are unrolled together to keep the loop overhead off
// the FMAs.
template <class T, int NB, int UR, int SW>
[[gnu::always_inline]] inline void plain_row_taps(typename T::V (&acc)[NB][UR], const float* s, const float* wi, int nic,
                                                  std::int64_t kw_n, std::int64_t dw, std::int64_t ics) {
  constexpr int B = T::B;
  if (nic == 1 && kw_n == 3) {  // CT/MR first layers: straight-line code for the row
    if constexpr (NB * UR + NB + 1 > T::kRegs) {
      // A tile that fills the register file (AVX2 4 x 3): straight-line code for the three
      // taps let GCC overlap them and spill an accumulator; a loop does not.
#pragma GCC unroll 1
      for (int kw = 0; kw < 3; ++kw) fma_step<T, NB, UR, SW>(acc, s + kw * dw, wi + kw * NB * B);
    } else {
      fma_step<T, NB, UR, SW>(acc, s, wi);
      fma_step<T, NB, UR, SW>(acc, s + dw, wi + NB * B);
      fma_step<T, NB, UR, SW>(acc, s + 2 * dw, wi + 2 * NB * B);
    }
    return;
  }
  for (std::int64_t kw = 0; kw < kw_n; ++kw) {
    const float* skw = s + kw * dw;
#pragma GCC unroll 4
    for (int i = 0; i < nic; ++i, wi += NB * B) fma_step<T, NB, UR, SW>(acc, skw + i * ics, wi);
  }
}

// Where input plane d lies in src (a ring of planes when streaming).
inline std::int64_t src_plane(const RowCtx& c, std::int64_t d) { return c.ring ? d % c.ring : d; }

// One register tile: NB output-channel blocks x `ur` pixels starting at ow0 (plane tiles:
// at flattened pixel ow0 of the plane c.dst points at).
template <class T, int NB, int UR, int SW, bool PLAIN, int MODE>
void tile(const RowCtx& c, std::int64_t ow0, int ur) {
  constexpr bool MASKED = MODE != kFull;
  using V = typename T::V;
  constexpr int B = T::B;
  constexpr std::int64_t WS = PLAIN ? 1 : B;  // floats between neighbouring input pixels
  const std::int64_t ics = PLAIN ? c.src_ics : 1;
  V acc[NB][UR];
  start<T, NB, UR, MASKED>(c, acc, ow0, ur);

  if constexpr (MODE == kPlane) {
    std::int64_t hb[UR], wb[UR];  // input h and w of tap 0 per pixel
    for (int u = 0; u < UR; ++u) {
      const std::int64_t pix = ow0 + u, oh = pix / c.ow_n;
      hb[u] = u < ur ? oh * c.sh - c.ph : std::int64_t{-1} << 40;  // past the tile: never valid
      wb[u] = (pix - oh * c.ow_n) * SW + c.w0;
    }
    const float* wicb = c.wei;
    for (std::int64_t b = 0; b < c.nicb; ++b, wicb += c.w_icb) {
      const int nic = b + 1 == c.nicb ? c.ic_tail : B;
      const float* sblk = c.src + b * c.src_cs;
      for (std::int64_t kd = c.kd_lo; kd < c.kd_hi; ++kd) {
        const float* splane = sblk + src_plane(c, c.d0 + kd * c.dd) * c.ih * c.iw * WS;
        for (std::int64_t kh = 0; kh < c.kh; ++kh)
          for (std::int64_t kw = 0; kw < c.kw_n; ++kw) {
            unsigned valid = 0;
            const float* sp[UR];
            for (int u = 0; u < UR; ++u) {
              const std::int64_t h = hb[u] + kh * c.dh, x = wb[u] + kw * c.dw;
              const bool ok = h >= 0 && h < c.ih && x >= 0 && x < c.iw;
              sp[u] = ok ? splane + (h * c.iw + x) * WS : kZeroBlock;
              valid |= static_cast<unsigned>(ok) << u;
            }
            if (!valid) continue;
            const float* w = wicb + ((kd * c.kh + kh) * c.kw + kw) * c.w_tap;
            if constexpr (!PLAIN) {
              ic_loop<B>(nic, [&](int i) { fma_step_at<T, NB, UR>(acc, [&](int u) { return sp[u] + i; }, w + i * NB * B); });
            } else {
              for (int i = 0; i < nic; ++i)
                fma_step_at<T, NB, UR>(
                    acc, [&](int u) { return (valid >> u) & 1u ? sp[u] + i * ics : kZeroBlock; }, w + i * NB * B);
            }
          }
      }
    }
  }

  const std::int64_t iw_base = ow0 * SW + c.w0;
  const float* wicb = c.wei;
  for (std::int64_t b = 0; b < (MODE == kPlane ? 0 : c.nicb); ++b, wicb += c.w_icb) {
    const int nic = b + 1 == c.nicb ? c.ic_tail : B;
    const float* sblk = c.src + b * c.src_cs;
    for (std::int64_t kd = c.kd_lo; kd < c.kd_hi; ++kd) {
      const std::int64_t d = c.d0 + kd * c.dd;
      for (std::int64_t kh = c.kh_lo; kh < c.kh_hi; ++kh) {
        const std::int64_t h = c.h0 + kh * c.dh;
        const float* srow = sblk + (src_plane(c, d) * c.ih + h) * c.iw * WS;
        const float* wrow = wicb + (kd * c.kh + kh) * c.kw * c.w_tap;
        if constexpr (!PLAIN) {
          // Strided layers read sh new input rows per output row, and the hardware
          // prefetchers miss their starts: fetch, for this tile's pixels, the rows the next
          // output row adds while this row's last taps are in flight (8-10% on layer g).
          if (c.sh > 1 && kh + c.sh >= c.kh_hi) {
            const float* pf = srow + (c.sh * c.iw + iw_base) * WS;
            for (int l = 0; l < UR * SW * WS; l += 16) __builtin_prefetch(pf + l, 0, 2);
          }
        }
        if constexpr (PLAIN && !MASKED) {
          // First layers: a tap has only 1-4 input channels, so unroll over the taps of the
          // row and the channels together to keep the loop overhead off the FMAs.
          plain_row_taps<T, NB, UR, SW>(acc, srow + iw_base * WS, wrow, nic, c.kw_n, c.dw, ics);
          continue;
        }
        for (std::int64_t kw = 0; kw < c.kw_n; ++kw) {
          const std::int64_t iw0 = iw_base + kw * c.dw;
          const float* w = wrow + kw * c.w_tap;
          if constexpr (!MASKED) {
            const float* s = srow + iw0 * WS;
            ic_loop<B>(nic, [&](int i) { fma_step<T, NB, UR, SW * WS>(acc, s + i * ics, w + i * NB * B); });
          } else {
            unsigned valid = 0;
            for (int u = 0; u < ur; ++u) {
              const std::int64_t x = iw0 + u * SW;
              if (x >= 0 && x < c.iw) valid |= 1u << u;
            }
            if (!valid) continue;
            if constexpr (!PLAIN) {
              // Same FMAs as a full tile, with padding pixels read from a block of zeros: a
              // partial or edge tile then costs what a full one does.
              const float* sp[UR];
#pragma GCC unroll 32
              for (int u = 0; u < UR; ++u) sp[u] = (valid >> u) & 1u ? srow + (iw0 + u * SW) * WS : kZeroBlock;
              ic_loop<B>(nic, [&](int i) { fma_step_at<T, NB, UR>(acc, [&](int u) { return sp[u] + i; }, w + i * NB * B); });
              continue;
            }
            if constexpr (NB * UR + NB + 1 > T::kRegs) {
              // A tile that fills the register file (AVX2 4 x 3), plain input: the full tile's
              // register schedule with padding pixels read as zero (an FMA with 0 leaves the
              // accumulator as it was); the loop below spilled there.
              const float* sp[UR];
#pragma GCC unroll 32
              for (int u = 0; u < UR; ++u) sp[u] = srow + (iw0 + u * SW) * WS;
              for (int i = 0; i < nic; ++i)
                fma_step_at<T, NB, UR>(
                    acc, [&](int u) { return (valid >> u) & 1u ? sp[u] + i * ics : kZeroBlock; }, w + i * NB * B);
              continue;
            }
            ic_loop<B>(nic, [&](int i) {
              const float* wi = w + i * NB * B;
              V wv[NB];
#pragma GCC unroll 8
              for (int j = 0; j < NB; ++j) wv[j] = T::load(wi + j * B);
#pragma GCC unroll 32
              for (int u = 0; u < UR; ++u) {
                if (!((valid >> u) & 1u)) continue;
                const V x = T::bcast(srow + (iw0 + u * SW) * WS + i * ics);
#pragma GCC unroll 8
                for (int j = 0; j < NB; ++j) acc[j][u] = T::fma(wv[j], x, acc[j][u]);
              }
            });
          }
        }
      }
    }
  }

  finish<T, NB, UR, MASKED>(c, acc, ow0, ur);
}

// Sweeps one output row with full tiles where no W padding is read, masked tiles elsewhere.
// Tiles start at multiples of UR, so edge pixels share a tile with interior ones.
template <class T, int NB, int UR, int SW, bool PLAIN>
void row(const RowCtx& c, std::int64_t ow, std::int64_t lo, std::int64_t hi) {
  for (std::int64_t x = 0; x < ow; x += UR) {
    if (x >= lo && x + UR <= hi) {
      tile<T, NB, UR, SW, PLAIN, kFull>(c, x, UR);
    } else {
      tile<T, NB, UR, SW, PLAIN, kMasked>(c, x, static_cast<int>(std::min<std::int64_t>(UR, ow - x)));
    }
  }
}

// First layers (plain src with 1-4 channels): the input rows an output row reads, kept
// with their W padding in a zeroed buffer, so every tile of the row runs the full-tile
// code. A masked edge tile checks each pixel of each tap and cost about twice a full
// one; with 2 of 43 tiles per 128-pixel row that was a tenth of the layer.
struct PaddedRows {
  static constexpr int kMaxRows = 64;  // kd x kh taps of one output row (7 x 7 = 49)
  struct Row {
    const float* src;  // channel 0 of a valid (kd, kh) input row, at pixel 0 of its padding
    const float* wei;  // packed weights of that row's taps
  };
  Row row[kMaxRows];  // the first n
  int n = 0;
  std::int64_t ics = 0;  // floats between the channels of a row
};

// Padded copies of input rows, reused by the output rows that read them: slot
// (d mod span_d, h mod span_h) holds one row of every channel, and its tag names the
// source row it holds. The rows of one output row never share a slot; consecutive output
// rows (and planes) find all but the rows they add already there.
struct RowCache {
  std::vector<float> buf;         // [span_d][span_h][channel][len]; pads stay zero
  std::vector<const float*> tag;  // source row of each slot, or null
  std::int64_t span_d = 1, span_h = 1, len = 0;  // D and H extents of the taps, floats per channel row
  std::int64_t nic = 1;           // channels per row

  RowCache() = default;
  RowCache(std::int64_t sd, std::int64_t sh, std::int64_t channels, std::int64_t row_len)
      : buf(static_cast<std::size_t>(sd * sh * channels * row_len), 0.f), tag(static_cast<std::size_t>(sd * sh), nullptr),
        span_d(sd), span_h(sh), len(row_len), nic(channels) {}
  // The padded copy of input row (d, h): channel 0 of the source row at src, channels ics
  // apart, iw pixels each, placed at lead in the copy. Copied only when its slot holds
  // another row.
  const float* row(const float* src, std::int64_t d, std::int64_t h, std::int64_t ics, std::int64_t iw, std::int64_t lead) {
    const std::size_t slot = static_cast<std::size_t>(d % span_d * span_h + h % span_h);
    float* out = buf.data() + slot * nic * len;
    if (tag[slot] != src) {
      for (std::int64_t i = 0; i < nic; ++i) std::copy_n(src + i * ics, iw, out + i * len + lead);
      tag[slot] = src;
    }
    return out;
  }
};

template <class T, int NB, int UR, int SW, bool PARTIAL>
void padded_tile(const RowCtx& c, const PaddedRows& r, std::int64_t ow0, int ur) {
  using V = typename T::V;
  V acc[NB][UR];
  start<T, NB, UR, PARTIAL>(c, acc, ow0, ur);
  const int nic = c.ic_tail;
  if constexpr (NB == 4 && UR == 3 && SW == 1 && requires { T::first_rows_4x3(acc, r.row, r.n, ow0); }) {
    if (nic == 1 && c.kw_n == 3 && c.dw == 1) {
      T::first_rows_4x3(acc, r.row, r.n, ow0);
      finish_switched<T, NB, UR, PARTIAL>(c, acc, ow0, ur);
      return;
    }
  }
  for (int k = 0; k < r.n; ++k)
    plain_row_taps<T, NB, UR, SW>(acc, r.row[k].src + ow0 * SW, r.row[k].wei, nic, c.kw_n, c.dw, r.ics);
  finish_switched<T, NB, UR, PARTIAL>(c, acc, ow0, ur);
}

// The cache for a plan's rows, or an empty one where rows go through the masked tiles
// (plane tiles, or a buffer over 1 MiB).
inline RowCache make_row_cache(const Plan& p, int ur) {
  if (!p.plain_src || p.plane || p.kd * p.kh > PaddedRows::kMaxRows) return RowCache{};
  const std::int64_t tiles = (p.ow + ur - 1) / ur;  // every tile, the last one included, reads inside a row
  const std::int64_t len = std::max((tiles * ur - 1) * p.sw + (p.kw - 1) * p.dw + 1, p.pw + p.iw);
  const std::int64_t span_d = (p.kd - 1) * p.dd + 1, span_h = (p.kh - 1) * p.dh + 1;
  if (span_d * span_h * p.ic * len * static_cast<std::int64_t>(sizeof(float)) > (std::int64_t{1} << 20)) return RowCache{};
  return RowCache(span_d, span_h, p.ic, len);
}

// One output row of a plain-src layer through padded rows: brings the valid (kd, kh)
// input rows into the cache and sweeps the row with full tiles and one partial tile.
template <class T, int NB, int UR, int SW>
void padded_row(const RowCtx& c, RowCache& rc) {
  PaddedRows r;
  r.ics = rc.len;
  for (std::int64_t kd = c.kd_lo; kd < c.kd_hi; ++kd) {
    const std::int64_t d = c.d0 + kd * c.dd;
    for (std::int64_t kh = c.kh_lo; kh < c.kh_hi; ++kh) {
      const std::int64_t h = c.h0 + kh * c.dh;
      // Input pixel w sits at -w0 + w (the left padding) in the copy.
      const float* row = rc.row(c.src + (src_plane(c, d) * c.ih + h) * c.iw, d, h, c.src_ics, c.iw, -c.w0);
      r.row[r.n++] = {row, c.wei + (kd * c.kh + kh) * c.kw * c.w_tap};
    }
  }
  const std::int64_t full = c.ow_n / UR * UR;
  for (std::int64_t x = 0; x < full; x += UR) padded_tile<T, NB, UR, SW, false>(c, r, x, UR);
  if (full < c.ow_n) padded_tile<T, NB, UR, SW, true>(c, r, full, static_cast<int>(c.ow_n - full));
}

template <class T>
RowCtx base_ctx(const Plan& p) {
  RowCtx c;
  c.ih = p.ih, c.iw = p.iw;
  c.ocb = p.ocb;
  c.oc_tail = static_cast<int>(p.oc - (p.ocb - 1) * T::B);
  c.bias = p.bias, c.slope = p.slope, c.act = p.act, c.alpha = p.alpha, c.beta = p.beta;
  return c;
}

// Work items [begin, end) of a convolution.
template <class T, int NB, int UR, int SW, bool PLAIN>
void conv_items(const Plan& p, const float* src, float* dst, const float* res, std::int64_t begin, std::int64_t end) {
  constexpr int B = T::B;
  // src holds src_planes planes when streaming (ConvKernel::run_planes), else all id planes.
  const std::int64_t isp = (p.src_planes ? p.src_planes : p.id) * p.ih * p.iw, osp = p.od * p.oh * p.ow;
  RowCtx c = base_ctx<T>(p);
  c.ring = p.src_planes;
  c.kh = p.kh, c.kw = p.kw, c.kw_n = p.kw;
  c.dd = p.dd, c.dh = p.dh, c.dw = p.dw, c.w0 = -p.pw;
  c.w_tap = p.icblk * NB * B;
  c.w_icb = p.kd * p.kh * p.kw * c.w_tap;
  c.src_cs = PLAIN ? 0 : isp * B;
  c.src_ics = PLAIN ? isp : 1;
  c.dst_ws = B, c.dst_cs = osp * B;
  c.ow_n = p.ow, c.sh = p.sh, c.ph = p.ph;
  const std::int64_t src_n = PLAIN ? p.ic * isp : (p.ic + B - 1) / B * isp * B;
  const std::int64_t dst_n = p.ocb * osp * B;
  const std::int64_t tiles = p.tiles();
  const std::int64_t lo = std::min(p.ow_lo, p.ow), hi = std::max(lo, std::min(p.ow_hi, p.ow));
  RowCache rows = PLAIN ? make_row_cache(p, UR) : RowCache{};
  for (std::int64_t item = begin; item < end; ++item) {
    std::int64_t r = item;
    const std::int64_t rg = r % p.row_groups;
    r /= p.row_groups;
    const std::int64_t od = r % p.od;
    r /= p.od;
    const std::int64_t t = r % tiles, n = r / tiles;
    const std::int64_t g = t / p.tiles_g;
    c.ob0 = g * p.ocb_g + (t % p.tiles_g) * NB;
    c.d0 = (p.d_begin + od) * p.sd - p.pd;
    std::int64_t kd_lo = 0, kd_hi = p.kd;
    while (kd_lo < p.kd && c.d0 + kd_lo * p.dd < 0) ++kd_lo;
    while (kd_hi > kd_lo && c.d0 + (kd_hi - 1) * p.dd >= p.id) --kd_hi;
    const std::int64_t kd_passes = p.kd_split ? std::max<std::int64_t>(1, kd_hi - kd_lo) : 1;
    const float* src_g = src + n * src_n + (PLAIN ? 0 : g * p.icb * c.src_cs);
    const float* wei_t = p.wei + t * p.icb * c.w_icb;
    float* dst_t = dst + n * dst_n + c.ob0 * c.dst_cs + od * p.oh * p.ow * B;
    const float* res_t = res ? res + (dst_t - dst) : nullptr;
    const std::int64_t oh_end = std::min(p.oh, (rg + 1) * p.rows);
    for (std::int64_t icb0 = 0; icb0 < p.icb; icb0 += p.icb_step) {
      c.nicb = std::min(p.icb_step, p.icb - icb0);
      const bool last_icb = icb0 + c.nicb == p.icb;
      c.ic_tail = PLAIN ? static_cast<int>(p.ic) : (last_icb ? static_cast<int>(p.icg - (p.icb - 1) * B) : B);
      c.src = src_g + icb0 * c.src_cs;
      c.wei = wei_t + icb0 * c.w_icb;
      for (std::int64_t q = 0; q < kd_passes; ++q) {
        c.kd_lo = p.kd_split ? kd_lo + q : kd_lo;
        c.kd_hi = p.kd_split ? std::min(kd_lo + q + 1, kd_hi) : kd_hi;
        c.first = icb0 == 0 && q == 0;
        c.last = last_icb && q + 1 == kd_passes;
        if (p.plane) {
          c.dst = dst_t;
          c.res = res_t;
          const std::int64_t x_end = oh_end * p.ow;
          for (std::int64_t x = rg * p.rows * p.ow; x < x_end; x += UR)
            tile<T, NB, UR, SW, PLAIN, kPlane>(c, x, static_cast<int>(std::min<std::int64_t>(UR, x_end - x)));
          continue;
        }
        for (std::int64_t oh = rg * p.rows; oh < oh_end; ++oh) {
          c.h0 = oh * p.sh - p.ph;
          c.kh_lo = 0, c.kh_hi = p.kh;
          while (c.kh_lo < p.kh && c.h0 + c.kh_lo * p.dh < 0) ++c.kh_lo;
          while (c.kh_hi > c.kh_lo && c.h0 + (c.kh_hi - 1) * p.dh >= p.ih) --c.kh_hi;
          c.dst = dst_t + oh * p.ow * B;
          c.res = res_t ? res_t + oh * p.ow * B : nullptr;
          if constexpr (PLAIN) {
            if (!rows.buf.empty()) {
              padded_row<T, NB, UR, SW>(c, rows);
              continue;
            }
          }
          row<T, NB, UR, SW, PLAIN>(c, p.ow, lo, hi);
        }
      }
    }
  }
}

// Work items [begin, end) of a ConvTranspose: each output row splits into stride_w residue
// classes, and each class is a stride-1 convolution of the input with that class's taps
// (sub-pixel decomposition), written to every stride_w-th pixel of the row.
template <class T, int NB, int UR>
void deconv_items(const Plan& p, const float* src, float* dst, const float* res, std::int64_t begin,
                  std::int64_t end) {
  constexpr int B = T::B;
  const std::int64_t isp = p.id * p.ih * p.iw, osp = p.od * p.oh * p.ow;
  RowCtx c = base_ctx<T>(p);
  c.w_tap = p.icblk * NB * B;
  c.src_cs = isp * B;
  c.dst_ws = p.sw * B, c.dst_cs = osp * B;
  const std::int64_t src_n = (p.ic + B - 1) / B * isp * B;
  const std::int64_t dst_n = p.ocb * osp * B;
  const std::int64_t tiles = p.tiles();
  for (std::int64_t item = begin; item < end; ++item) {
    std::int64_t r = item;
    const std::int64_t rg = r % p.row_groups;
    r /= p.row_groups;
    const std::int64_t od = r % p.od;
    r /= p.od;
    const std::int64_t t = r % tiles, n = r / tiles;
    c.ob0 = t * NB;
    const std::int64_t rd = od % p.sd, nd = p.tap_n[0][rd];
    c.d0 = od / p.sd + p.tap_off[0][rd];
    c.kd_lo = std::clamp<std::int64_t>(-c.d0, 0, nd);
    c.kd_hi = std::clamp<std::int64_t>(p.id - c.d0, c.kd_lo, nd);
    float* dst_t = dst + n * dst_n + c.ob0 * c.dst_cs + od * p.oh * p.ow * B;
    const float* res_t = res ? res + (dst_t - dst) : nullptr;
    const std::int64_t oh_end = std::min(p.oh, (rg + 1) * p.rows);
    for (std::int64_t icb0 = 0; icb0 < p.icb; icb0 += p.icb_step) {
      c.nicb = std::min(p.icb_step, p.icb - icb0);
      c.first = icb0 == 0;
      c.last = icb0 + c.nicb == p.icb;
      c.ic_tail = c.last ? static_cast<int>(p.icg - (p.icb - 1) * B) : B;
      c.src = src + n * src_n + icb0 * c.src_cs;
      for (std::int64_t oh = rg * p.rows; oh < oh_end; ++oh) {
        const std::int64_t rh = oh % p.sh, nh = p.tap_n[1][rh];
        c.h0 = oh / p.sh + p.tap_off[1][rh];
        c.kh_lo = std::clamp<std::int64_t>(-c.h0, 0, nh);
        c.kh_hi = std::clamp<std::int64_t>(p.ih - c.h0, c.kh_lo, nh);
        c.kh = nh;
        for (std::int64_t rw = 0; rw < p.sw && rw < p.ow; ++rw) {
          const std::int64_t nw = p.tap_n[2][rw];
          const std::int64_t cls = (rd * p.sh + rh) * p.sw + rw;
          c.kw = c.kw_n = nw;
          c.w0 = p.tap_off[2][rw];
          c.w_icb = nd * nh * nw * c.w_tap;
          c.wei = p.wei + p.class_off[cls] + (t * p.icb + icb0) * c.w_icb;
          c.dst = dst_t + (oh * p.ow + rw) * B;
          c.res = res_t ? res_t + (oh * p.ow + rw) * B : nullptr;
          // Outputs m of this class, and those whose taps all fall inside the input row.
          const std::int64_t m_n = (p.ow - rw + p.sw - 1) / p.sw;
          const std::int64_t lo = std::clamp<std::int64_t>(-c.w0, 0, m_n);
          const std::int64_t hi = std::clamp<std::int64_t>(p.iw - nw - c.w0 + 1, lo, m_n);
          row<T, NB, UR, 1, false>(c, m_n, lo, hi);
        }
      }
    }
  }
}

// Picks the instantiation for the plan's tile shape, stride and src layout.
template <class T, int NB, int UR>
void run_shape(const Plan& p, const float* src, float* dst, const float* res, std::int64_t b, std::int64_t e) {
  if (p.transposed) return deconv_items<T, NB, UR>(p, src, dst, res, b, e);
  if (p.sw == 1) {
    if (p.plain_src) return conv_items<T, NB, UR, 1, true>(p, src, dst, res, b, e);
    return conv_items<T, NB, UR, 1, false>(p, src, dst, res, b, e);
  }
  if (p.plain_src) return conv_items<T, NB, UR, 2, true>(p, src, dst, res, b, e);
  return conv_items<T, NB, UR, 2, false>(p, src, dst, res, b, e);
}

}  // namespace voxinfer::kernels::direct
