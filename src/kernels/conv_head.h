// 1x1x1 convolution "head": few output channels (a segmentation network's logits) read
// from a channel-blocked activation and written as plain NCDHW, so that no channel-padded
// blocked output and no reorder are needed. Internal interface between the operator
// (conv_head.cpp) and its per-ISA compute functions (conv_head_body.h, compiled in the
// per-ISA kernel files), which never allocate and never throw.
#pragma once

#include <cstdint>

#include "voxinfer/kernels/conv.h"

namespace voxinfer::kernels::head {

inline constexpr std::int64_t kMaxOutputs = 16;
inline constexpr std::int64_t kMaxTapsOutputs = 4;  // convolutions with a kernel (taps head)
inline constexpr std::int64_t kChunk = 4096;  // pixels per work item (a multiple of every block)

struct Plan {
  std::int64_t n = 1, icb = 1, oc = 1, sp = 1;  // sp: voxels per channel; icb: input-channel blocks
  int block = 8;
  const float* w = nullptr;     // [oc][icb][block], zero beyond ic
  const float* bias = nullptr;  // [oc]
  Activation act = Activation::none;
  float alpha = 0.f, beta = 0.f;

  std::int64_t chunks() const { return (sp + kChunk - 1) / kChunk; }
  std::int64_t items() const { return n * chunks(); }
};

using RunFn = void (*)(const Plan& plan, const float* src, float* dst, std::int64_t begin, std::int64_t end);

// The transposed head: a ConvTranspose with stride 2 along W (MONAI's last up-sampling to the
// classes), the same dot products over the input-channel blocks, summed over each output
// pixel's taps. Work items are output rows (image, od, oh). The same plan serves the taps
// head: a convolution with a kernel, stride 1 along W (VNet's last 5x5x5 layer).
struct DeconvPlan {
  std::int64_t n = 1, icb = 1, oc = 1;
  std::int64_t id = 1, ih = 1, iw = 1, od = 1, oh = 1, ow = 1;
  std::int64_t kd = 1, kh = 1, kw = 1, sd = 1, sh = 1, pd = 0, ph = 0, pw = 0;  // stride along W: 2 (1 for taps heads)
  std::int64_t dd = 1, dh = 1, dw = 1;  // dilations (taps heads)
  int block = 8;
  const float* w = nullptr;     // [oc][kd][kh][kw][icb][block], zero beyond ic
  const float* bias = nullptr;   // [oc]
  const float* slope = nullptr;  // [oc], PRelu
  Activation act = Activation::none;
  float alpha = 0.f, beta = 0.f;

  std::int64_t items() const { return n * od * oh; }
};

using DeconvRunFn = void (*)(const DeconvPlan& plan, const float* src, float* dst, std::int64_t begin, std::int64_t end);

// Small plain convolution: plain input with few channels, plain output with at most
// kMaxSmallOutputs channels (a network's last 3x3x3 layer on its classes), stride 1, groups
// 1; vectors run along W over input rows copied with their padding. Work items are output
// rows (image, od, oh).
inline constexpr std::int64_t kMaxSmallOutputs = 4;
struct SmallPlan {
  std::int64_t n = 1, ic = 1, oc = 1;
  std::int64_t id = 1, ih = 1, iw = 1, od = 1, oh = 1, ow = 1;
  std::int64_t kd = 1, kh = 1, kw = 1, dd = 1, dh = 1, dw = 1, pd = 0, ph = 0, pw = 0;
  std::int64_t row_len = 0;     // floats per padded input row (every tile reads inside it)
  const float* w = nullptr;     // [oc][ic][kd][kh][kw], as ONNX
  const float* bias = nullptr;  // [oc]
  const float* slope = nullptr;  // [oc], PRelu
  Activation act = Activation::none;
  float alpha = 0.f, beta = 0.f;

  std::int64_t items() const { return n * od * oh; }
};

using SmallRunFn = void (*)(const SmallPlan& plan, const float* src, float* dst, const float* res, std::int64_t begin,
                            std::int64_t end);
void small_plain__avx512(const SmallPlan&, const float*, float*, const float*, std::int64_t, std::int64_t);
void small_plain__avx2_fma(const SmallPlan&, const float*, float*, const float*, std::int64_t, std::int64_t);
void small_plain__generic(const SmallPlan&, const float*, float*, const float*, std::int64_t, std::int64_t);
// Output pixels per tile of the small plain kernel for a vector width B (UR vectors).
inline constexpr int small_tile(int B) { return B == 16 ? 4 * 16 : 3 * 8; }

void head_nCdhw16c__avx512(const Plan&, const float*, float*, std::int64_t, std::int64_t);
void head_nCdhw8c__avx2_fma(const Plan&, const float*, float*, std::int64_t, std::int64_t);
void head_nCdhw8c__generic(const Plan&, const float*, float*, std::int64_t, std::int64_t);
void deconv_head_nCdhw16c__avx512(const DeconvPlan&, const float*, float*, std::int64_t, std::int64_t);
void deconv_head_nCdhw8c__avx2_fma(const DeconvPlan&, const float*, float*, std::int64_t, std::int64_t);
void deconv_head_nCdhw8c__generic(const DeconvPlan&, const float*, float*, std::int64_t, std::int64_t);
void taps_head_nCdhw16c__avx512(const DeconvPlan&, const float*, float*, std::int64_t, std::int64_t);
void taps_head_nCdhw8c__avx2_fma(const DeconvPlan&, const float*, float*, std::int64_t, std::int64_t);
void taps_head_nCdhw8c__generic(const DeconvPlan&, const float*, float*, std::int64_t, std::int64_t);

}  // namespace voxinfer::kernels::head
