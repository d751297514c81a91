// make_conv_head_kernel: checks, weight packing and threading of the 1x1x1 head (baseline
// ISA); the compute functions live in the per-ISA kernel files (conv_head_body.h).
#include "kernels/conv_head.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>

#include "voxinfer/core/tensor.h"
#include "voxinfer/core/threading.h"

namespace voxinfer::kernels {
namespace {

template <class PlanT, class Fn>
class HeadKernel final : public ConvKernel {
 public:
  HeadKernel(const char* name, Fn fn, const PlanT& plan, Layout src, std::shared_ptr<std::byte> storage)
      : name_(name), fn_(fn), plan_(plan), src_(src), storage_(std::move(storage)) {}
  const char* name() const override { return name_; }
  Layout src_layout() const override { return src_; }
  Layout dst_layout() const override { return Layout::plain; }
  std::size_t workspace_bytes() const override { return 0; }
  void run(const float* src, float* dst, const float* residual, void* /*workspace*/) const override {
    struct Args {
      const HeadKernel* self;
      const float* src;
      float* dst;
      const float* res;
    };
    const Args args{this, src, dst, residual};
    const Args* a = &args;
    // Fixed chunks of pixels (rows), each computed the same way whichever thread takes it.
    parallel_for(plan_.items(), 1, [a](std::int64_t b, std::int64_t e) {
      if constexpr (std::is_same_v<PlanT, head::SmallPlan>)
        a->self->fn_(a->self->plan_, a->src, a->dst, a->res, b, e);
      else
        a->self->fn_(a->self->plan_, a->src, a->dst, b, e);
    });
  }

 private:
  const char* name_;
  Fn fn_;
  PlanT plan_;
  Layout src_;
  std::shared_ptr<std::byte> storage_;  // packed weights and bias
};

// Plan and packed weights ([oc][kd][kh][kw][icb][B]) of a transposed or taps head; `wei` in
// ONNX order: ConvTranspose [ic][oc][k...], Conv [oc][ic][k...].
head::DeconvPlan taps_plan(const ConvParams& p, const float* wei, const Epilogue& ep, int B, bool transposed,
                           std::shared_ptr<std::byte>& storage) {
  head::DeconvPlan plan;
  plan.n = p.n, plan.oc = p.oc, plan.block = B, plan.icb = (p.ic + B - 1) / B;
  plan.id = p.id, plan.ih = p.ih, plan.iw = p.iw, plan.od = p.od, plan.oh = p.oh, plan.ow = p.ow;
  plan.kd = p.kd, plan.kh = p.kh, plan.kw = p.kw, plan.sd = p.sd, plan.sh = p.sh;
  plan.pd = p.pd, plan.ph = p.ph, plan.pw = p.pw, plan.dd = p.dd, plan.dh = p.dh, plan.dw = p.dw;
  plan.act = ep.act, plan.alpha = ep.alpha, plan.beta = ep.beta;
  const std::int64_t taps = p.kd * p.kh * p.kw, wsize = p.oc * taps * plan.icb * B;
  storage = aligned_bytes(static_cast<std::size_t>(wsize + 2 * p.oc) * sizeof(float));
  float* w = reinterpret_cast<float*>(storage.get());
  float* bias = w + wsize;
  float* slope = bias + p.oc;
  std::fill_n(w, wsize, 0.f);
  for (std::int64_t o = 0; o < p.oc; ++o) {
    for (std::int64_t t = 0; t < taps; ++t)
      for (std::int64_t c = 0; c < p.ic; ++c)
        w[((o * taps + t) * plan.icb + c / B) * B + c % B] = wei[(transposed ? c * p.oc + o : o * p.ic + c) * taps + t];
    bias[o] = ep.bias ? ep.bias[o] : 0.f;
    slope[o] = ep.act == Activation::prelu ? ep.slope[ep.slope_per_channel ? o : 0] : 0.f;
  }
  plan.w = w, plan.bias = bias, plan.slope = slope;
  return plan;
}

// The taps head: a convolution with a kernel and at most kMaxTapsOutputs outputs (more fill
// the blocked kernels' vectors well enough).
std::unique_ptr<ConvKernel> make_taps_head(const ConvParams& p, const float* wei, const Epilogue& ep, Layout src, int B,
                                           Isa isa, std::string* why) {
  const char* name = B == 16 ? "conv_taps_head_nCdhw16c__avx512" : isa == Isa::generic ? "conv_taps_head_nCdhw8c__generic"
                                                                                       : "conv_taps_head_nCdhw8c__avx2_fma";
  auto no = [&](const std::string& reason) -> std::unique_ptr<ConvKernel> {
    if (why) *why += std::string(name) + ": " + reason + "\n";
    return nullptr;
  };
  if (p.sw != 1 || p.groups != 1 || p.kd > 16 || p.kh > 16)
    return no("not a convolution with stride 1 along W, one group and at most 16 taps per axis: " + p.str());
  if (p.oc > head::kMaxTapsOutputs) return no("more than " + std::to_string(head::kMaxTapsOutputs) + " output channels");
  if (ep.residual) return no("residual add");
  if (ep.act == Activation::prelu && !ep.slope) return no("PRelu without slopes");
  std::shared_ptr<std::byte> storage;
  const head::DeconvPlan plan = taps_plan(p, wei, ep, B, false, storage);
  const head::DeconvRunFn fn = B == 16 ? head::taps_head_nCdhw16c__avx512
                                       : isa == Isa::generic ? head::taps_head_nCdhw8c__generic
                                                             : head::taps_head_nCdhw8c__avx2_fma;
  return std::make_unique<HeadKernel<head::DeconvPlan, head::DeconvRunFn>>(name, fn, plan, src, std::move(storage));
}

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
  const bool pointwise = p.kd == 1 && p.kh == 1 && p.kw == 1 && p.sd == 1 && p.sh == 1 && p.sw == 1 && !p.pd && !p.ph &&
                         !p.pw && p.groups == 1 && p.od == p.id && p.oh == p.ih && p.ow == p.iw;
  if (!pointwise) return make_taps_head(p, wei, ep, src, B, isa, why);
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
  return std::make_unique<HeadKernel<head::Plan, head::RunFn>>(name, fn, plan, src, std::move(storage));
}

std::unique_ptr<ConvKernel> make_deconv_head_kernel(const ConvParams& p, const float* wei, const Epilogue& ep,
                                                    Layout src, Isa isa, std::string* why) {
  if (static_cast<int>(isa) > static_cast<int>(hardware_isa())) isa = hardware_isa();
  const int B = src == Layout::nCdhw16c ? 16 : src == Layout::nCdhw8c ? 8 : 0;
  const char* name = B == 16 ? "deconv_head_nCdhw16c__avx512" : isa == Isa::generic ? "deconv_head_nCdhw8c__generic"
                                                                                      : "deconv_head_nCdhw8c__avx2_fma";
  auto no = [&](const std::string& reason) -> std::unique_ptr<ConvKernel> {
    if (why) *why += std::string(name) + ": " + reason + "\n";
    return nullptr;
  };
  if (!B) return no("src is not channel-blocked");
  if (B == 16 && isa != Isa::avx512) return no("16-channel blocks need AVX-512");
  if (p.sw != 2 || p.dd != 1 || p.dh != 1 || p.dw != 1 || p.groups != 1 || p.kd > 16 || p.kh > 16)
    return no("not a ConvTranspose with stride 2 along W, no dilation, one group and at most 16 taps per axis: " + p.str());
  if (p.oc > head::kMaxOutputs) return no("more than " + std::to_string(head::kMaxOutputs) + " output channels");
  if (ep.residual) return no("residual add");
  if (ep.act == Activation::prelu && !ep.slope) return no("PRelu without slopes");
  std::shared_ptr<std::byte> storage;
  const head::DeconvPlan plan = taps_plan(p, wei, ep, B, true, storage);
  const head::DeconvRunFn fn = B == 16 ? head::deconv_head_nCdhw16c__avx512
                                       : isa == Isa::generic ? head::deconv_head_nCdhw8c__generic
                                                             : head::deconv_head_nCdhw8c__avx2_fma;
  return std::make_unique<HeadKernel<head::DeconvPlan, head::DeconvRunFn>>(name, fn, plan, src, std::move(storage));
}

std::unique_ptr<ConvKernel> make_small_plain_conv_kernel(const ConvParams& p, const float* wei, const Epilogue& ep,
                                                        Isa isa, std::string* why) {
  if (static_cast<int>(isa) > static_cast<int>(hardware_isa())) isa = hardware_isa();
  const char* name = isa == Isa::avx512 ? "conv3d_small_plain__avx512" : isa == Isa::avx2 ? "conv3d_small_plain__avx2_fma"
                                                                                          : "conv3d_small_plain__generic";
  auto no = [&](const std::string& reason) -> std::unique_ptr<ConvKernel> {
    if (why) *why += std::string(name) + ": " + reason + "\n";
    return nullptr;
  };
  if (p.sd != 1 || p.sh != 1 || p.sw != 1 || p.groups != 1)
    return no("not a convolution with stride 1 and one group: " + p.str());
  if (p.ic > 4) return no("more than 4 input channels");
  if (p.oc > head::kMaxSmallOutputs) return no("more than " + std::to_string(head::kMaxSmallOutputs) + " output channels");
  if (ep.act == Activation::prelu && !ep.slope) return no("PRelu without slopes");
  head::SmallPlan plan;
  plan.n = p.n, plan.ic = p.ic, plan.oc = p.oc;
  plan.id = p.id, plan.ih = p.ih, plan.iw = p.iw, plan.od = p.od, plan.oh = p.oh, plan.ow = p.ow;
  plan.kd = p.kd, plan.kh = p.kh, plan.kw = p.kw, plan.dd = p.dd, plan.dh = p.dh, plan.dw = p.dw;
  plan.pd = p.pd, plan.ph = p.ph, plan.pw = p.pw;
  const int tile = head::small_tile(isa == Isa::avx512 ? 16 : 8);
  plan.row_len = std::max((p.ow + tile - 1) / tile * tile + (p.kw - 1) * p.dw, p.pw + p.iw);
  const std::int64_t cache = (p.kd - 1) * p.dd + 1;
  if (cache * ((p.kh - 1) * p.dh + 1) * p.ic * plan.row_len * 4 > (std::int64_t{4} << 20)) return no("rows too long");
  plan.act = ep.act, plan.alpha = ep.alpha, plan.beta = ep.beta;
  const std::int64_t wsize = p.oc * p.ic * p.kd * p.kh * p.kw;
  auto storage = aligned_bytes(static_cast<std::size_t>(wsize + 2 * p.oc) * sizeof(float));
  float* w = reinterpret_cast<float*>(storage.get());
  float* bias = w + wsize;
  float* slope = bias + p.oc;
  std::copy_n(wei, wsize, w);
  for (std::int64_t o = 0; o < p.oc; ++o) {
    bias[o] = ep.bias ? ep.bias[o] : 0.f;
    slope[o] = ep.act == Activation::prelu ? ep.slope[ep.slope_per_channel ? o : 0] : 0.f;
  }
  plan.w = w, plan.bias = bias, plan.slope = slope;
  const head::SmallRunFn fn = isa == Isa::avx512 ? head::small_plain__avx512
                              : isa == Isa::avx2 ? head::small_plain__avx2_fma
                                                 : head::small_plain__generic;
  return std::make_unique<HeadKernel<head::SmallPlan, head::SmallRunFn>>(name, fn, plan, Layout::plain, std::move(storage));
}

}  // namespace voxinfer::kernels
