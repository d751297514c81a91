// 3D convolution and transposed convolution: parameters, the reference kernels (plain
// loops, the oracle for every optimized kernel) and the optimized-kernel interface.
// 1D and 2D convolutions are expressed as 3D with unit dimensions.
//
// Plain layouts: activations NCDHW, Conv weights [O, I/groups, KD, KH, KW],
// ConvTranspose weights [I, O/groups, KD, KH, KW] (as ONNX stores them).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "voxinfer/core/cpu.h"
#include "voxinfer/core/layout.h"

namespace voxinfer::kernels {

// Elementwise activation applied after bias (and residual add) in a fused epilogue.
enum class Activation : std::uint8_t { none, relu, leaky_relu, prelu, sigmoid, clip };

struct Epilogue {
  const float* bias = nullptr;      // [O] or null
  const float* residual = nullptr;  // same shape and layout as dst, added after bias, before the activation
  Activation act = Activation::none;
  float alpha = 0.f;                // leaky_relu slope; clip min
  float beta = 0.f;                 // clip max
  const float* slope = nullptr;     // prelu: [O] per-channel slopes, or one shared slope if slope_per_channel is false
  bool slope_per_channel = true;
};

struct ConvParams {
  std::int64_t n = 1;
  std::int64_t ic = 1, id = 1, ih = 1, iw = 1;  // input channels and spatial size
  std::int64_t oc = 1, od = 1, oh = 1, ow = 1;  // output channels and spatial size
  std::int64_t kd = 1, kh = 1, kw = 1;
  std::int64_t sd = 1, sh = 1, sw = 1;          // strides
  std::int64_t dd = 1, dh = 1, dw = 1;          // dilations
  std::int64_t pd = 0, ph = 0, pw = 0;          // padding at the beginning (end padding is implied by o*)
  std::int64_t groups = 1;

  // Output size of a convolution with the given end paddings.
  static std::int64_t conv_out(std::int64_t in, std::int64_t k, std::int64_t s, std::int64_t d, std::int64_t p0,
                               std::int64_t p1) {
    return (in + p0 + p1 - d * (k - 1) - 1) / s + 1;
  }
  std::int64_t flops() const { return 2 * n * oc * od * oh * ow * (ic / groups) * kd * kh * kw; }
  std::string str() const;  // "n=1 ic=.. id=.. ... groups=.." for failure messages
};

// Applies the epilogue to one value of output channel o (bias is added by the caller).
float apply_activation(const Epilogue& ep, std::int64_t o, float v);

// Reference convolution: plain loops over NCDHW. dst = act(conv(src, wei) + bias + residual).
void conv3d_ref(const ConvParams& p, const float* src, const float* wei, const Epilogue& ep, float* dst);

// Reference transposed convolution (ONNX ConvTranspose semantics; p.pd/ph/pw are the
// begin pads, o* the output size including output_padding). Weights [IC, OC/groups, K...].
void conv_transpose3d_ref(const ConvParams& p, const float* src, const float* wei, const Epilogue& ep, float* dst);

// An optimized convolution, created once per layer (weights packed at creation), run many times.
class ConvKernel {
 public:
  virtual ~ConvKernel() = default;
  virtual const char* name() const = 0;             // e.g. "conv3d_f32_nCdhw8c__avx2_fma"
  virtual Layout src_layout() const = 0;            // layout it reads (plain or nCdhw8c/16c)
  virtual Layout dst_layout() const = 0;            // layout it writes (residual uses the same)
  virtual std::size_t workspace_bytes() const = 0;  // scratch needed by run()
  // Never allocates, never throws. `residual` (same layout as dst) is read when the
  // epilogue given to make_conv_kernel had a non-null residual pointer, else ignored.
  virtual void run(const float* src, float* dst, const float* residual, void* workspace) const = 0;

  // Plane streaming (a whole volume computed a few output planes at a time, see
  // graph/streaming.h): 0 when the kernel cannot, else the multiple that d_begin must be (1 for
  // the direct kernels, 2 for Winograd's 2x2x2 tiles, so that they fall where a whole run puts
  // them).
  virtual std::int64_t plane_alignment() const { return 0; }
  // Output planes [d_begin, d_begin + planes) of the problem given at creation (its od is the
  // whole output) into dst, which holds just those planes (channel blocks planes * oh * ow * B
  // floats apart). src holds input plane d (0 <= d < id) at position d % src_planes, so a ring
  // of src_planes planes that holds every plane those outputs read will do. Each output voxel
  // gets the same operations in the same order as in run(); no residual. Only where
  // plane_alignment() is non-zero and divides d_begin.
  virtual void run_planes(const float* /*src*/, std::int64_t /*src_planes*/, float* /*dst*/, std::int64_t /*d_begin*/,
                          std::int64_t /*planes*/, void* /*workspace*/) const {}
};

// Picks the first optimized implementation that accepts the problem for the given ISA,
// packing `wei` (plain layout) and copying bias/slopes. Returns null when none accepts
// (the caller then uses the reference kernel); `why` gets each rejection's reason.
// Layouts of the kernels built so far (src/kernels/conv_direct.cpp): dst is nCdhw16c for
// AVX-512 and nCdhw8c for AVX2 and generic; src is the same blocked layout, except plain
// NCDHW for convolutions with at most 4 input channels. The blocked dst's channel padding
// is written as zeros; a blocked src's padding is read only by the Winograd kernels, which
// multiply it by zero weights (so it must hold finite values: every blocked producer writes zeros). `ep.residual` only says
// whether run() will get a residual; workspace_bytes() is 0 for now.
std::unique_ptr<ConvKernel> make_conv_kernel(const ConvParams& p, const float* wei, const Epilogue& ep, bool transposed,
                                             Isa isa, std::string* why = nullptr);

// A convolution with few output channels that reads a channel-blocked src (`src`: nCdhw8c,
// or nCdhw16c with AVX-512) and writes plain NCDHW: no channel-padded output and no reorder.
// Either a 1x1x1 head (stride 1, no padding, at most 16 outputs; activations none, relu,
// leaky_relu, sigmoid, clip) or a taps head (any kernel, dilation and padding, stride 1
// along W, at most 4 outputs; every activation). One group, no residual. Null (with the
// reason in `why`) otherwise.
std::unique_ptr<ConvKernel> make_conv_head_kernel(const ConvParams& p, const float* wei, const Epilogue& ep, Layout src,
                                                  Isa isa, std::string* why = nullptr);

// The same for a ConvTranspose with stride 2 along W and few outputs (a network's last
// up-sampling to its classes): blocked input, plain NCDHW output, each output pixel the sum
// of its taps' dot products over the input channels. ONNX ConvTranspose weights
// [IC, OC, K...]; no dilation, one group, no residual. Null (with the reason in `why`)
// otherwise.
std::unique_ptr<ConvKernel> make_deconv_head_kernel(const ConvParams& p, const float* wei, const Epilogue& ep,
                                                    Layout src, Isa isa, std::string* why = nullptr);

// A small convolution from plain NCDHW to plain NCDHW: at most 4 input and 4 output channels
// (a network's last 3x3x3 layer on its classes), stride 1, one group, any kernel, dilation
// and padding; residual (plain) and every activation fused. Vectors run along W, so all
// lanes are used where a channel-blocked kernel would fill 3 of 8 or 16. Null (with the
// reason in `why`) otherwise.
std::unique_ptr<ConvKernel> make_small_plain_conv_kernel(const ConvParams& p, const float* wei, const Epilogue& ep,
                                                        Isa isa, std::string* why = nullptr);

}  // namespace voxinfer::kernels
