// make_conv_head_kernel: checks, weight packing and threading of the 1x1x1 head (baseline
// ISA); the compute functions live in the per-ISA kernel files (conv_head_body.h).
#include "kernels/conv_head.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "voxinfer/core/tensor.h"
#include "voxinfer/core/threading.h"

namespace voxinfer::kernels {
namespace {

class HeadKernel final : public ConvKernel {
 public:
  HeadKernel(const char* name, head::RunFn fn, const head::Plan& plan, Layout src, std::shared_ptr<std::byte> storage)
      : name_(name), fn_(fn), plan_(plan), src_(src), storage_(std::move(storage)) {}
  const char* name() const override { return name_; }
  Layout src_layout() const override { return src_; }
  Layout dst_layout() const override { return Layout::plain; }
  std::size_t workspace_bytes() const override { return 0; }
  void run(const float* src, float* dst, const float* /*residual*/, void* /*workspace*/) const override {
    struct Args {
      const HeadKernel* self;
      const float* src;
      float* dst;
    };
    const Args args{this, src, dst};
    const Args* a = &args;
    // Fixed chunks of pixels, each computed the same way whichever thread takes it.
    parallel_for(plan_.items(), 1, [a](std::int64_t b, std::int64_t e) { a->self->fn_(a->self->plan_, a->src, a->dst, b, e); });
  }

 private:
  const char* name_;
  head::RunFn fn_;
  head::Plan plan_;
  Layout src_;
  std::shared_ptr<std::byte> storage_;  // packed weights and bias
};

}  // namespace

std::unique_ptr<ConvKernel> make_conv_head_kernel(const ConvParams& p, const float* wei, const Epilogue& ep, Layout src,
                                                  Isa isa, std::string* why) {
  if (static_cast<int>(isa) > static_cast<int>(hardware_isa())) isa = hardware_isa();
  const int B = src == Layout::nCdhw16c ? 16 : src == Layout::nCdhw8c ? 8 : 0;
  const char* name = B == 16 ? "conv1x1x1_head_nCdhw16c__avx512" : isa == Isa::generic ? "conv1x1x1_head_nCdhw8c__generic"
                                                                                        : "conv1x1x1_head_nCdhw8c__avx2_fma";
  auto no = [&](const std::string& reason) -> std::unique_ptr<ConvKernel> {
    if (why) *why += std::string(name) + ": " + reason + "\n";
    return nullptr;
  };
  if (!B) return no("src is not channel-blocked");
  if (B == 16 && isa != Isa::avx512) return no("16-channel blocks need AVX-512");
  if (p.kd != 1 || p.kh != 1 || p.kw != 1 || p.sd != 1 || p.sh != 1 || p.sw != 1 || p.pd || p.ph || p.pw || p.groups != 1 ||
      p.od != p.id || p.oh != p.ih || p.ow != p.iw)
    return no("not a 1x1x1 convolution with stride 1, no padding and one group: " + p.str());
  if (p.oc > head::kMaxOutputs) return no("more than " + std::to_string(head::kMaxOutputs) + " output channels");
  if (ep.residual) return no("residual add");
  if (ep.act != Activation::none && ep.act != Activation::relu && ep.act != Activation::leaky_relu &&
      ep.act != Activation::sigmoid && ep.act != Activation::clip)
    return no("activation not fused here (PRelu)");

  head::Plan plan;
  plan.n = p.n, plan.oc = p.oc, plan.sp = p.od * p.oh * p.ow, plan.block = B;
  plan.icb = (p.ic + B - 1) / B;
  plan.act = ep.act, plan.alpha = ep.alpha, plan.beta = ep.beta;
  const std::int64_t wsize = p.oc * plan.icb * B;
  auto storage = aligned_bytes(static_cast<std::size_t>(wsize + p.oc) * sizeof(float));
  float* w = reinterpret_cast<float*>(storage.get());
  float* bias = w + wsize;
  for (std::int64_t o = 0; o < p.oc; ++o) {
    for (std::int64_t c = 0; c < p.ic; ++c) w[(o * plan.icb + c / B) * B + c % B] = wei[o * p.ic + c];
    bias[o] = ep.bias ? ep.bias[o] : 0.f;
  }
  plan.w = w, plan.bias = bias;
  const head::RunFn fn = B == 16 ? head::head_nCdhw16c__avx512
                                 : isa == Isa::generic ? head::head_nCdhw8c__generic : head::head_nCdhw8c__avx2_fma;
  return std::make_unique<HeadKernel>(name, fn, plan, src, std::move(storage));
}

}  // namespace voxinfer::kernels
