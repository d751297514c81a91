// Neural-network operators: Conv, ConvTranspose (1D/2D/3D through the 3D kernels),
// normalizations, pooling, Softmax, MatMul/Gemm, Resize/Upsample, reductions, ArgMax.
#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "graph/ops_common.h"
#include "voxinfer/core/cpu.h"
#include "voxinfer/kernels/conv.h"
#include "voxinfer/kernels/reorder.h"
#include "kernels/norm.h"

namespace voxinfer::graph {
namespace {

using kernels::Activation;
using kernels::ConvParams;
using kernels::Epilogue;
using kernels::norm::Moments;

// Spatial sizes of an NC... shape padded to 3 (leading 1s).
std::array<std::int64_t, 3> spatial3(const Shape& s) {
  std::array<std::int64_t, 3> d{1, 1, 1};
  const int ns = s.rank() - 2;
  for (int i = 0; i < ns; ++i) d[static_cast<std::size_t>(3 - ns + i)] = s[2 + i];
  return d;
}

std::vector<std::int64_t> pad3(const std::vector<std::int64_t>& v, int ns, std::int64_t fill) {
  std::vector<std::int64_t> r(3, fill);
  for (int i = 0; i < ns; ++i) r[static_cast<std::size_t>(3 - ns + i)] = v[static_cast<std::size_t>(i)];
  return r;
}


// Conv and ConvTranspose. Inputs: X, W, optional B; fused graphs add an optional PRelu
// slope (input 3) and residual (input 4).
class ConvOp final : public Op {
 public:
  ConvOp(const Node& n, std::int64_t opset, bool transposed) : Op(n, opset), transposed_(transposed) {}

  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 2, 5);
    const Shape& x = in[0].shape;
    const Shape& w = in[1].shape;
    if (in[0].dtype != DType::f32 || in[1].dtype != DType::f32) fail_unsupported("only f32 convolution is supported");
    if (x.rank() < 3 || x.rank() > 5) fail_input("input must be 3D-5D (N, C, spatial...), got " + x.str());
    if (w.rank() != x.rank()) fail_model("weight rank " + std::to_string(w.rank()) + " does not match input rank " + std::to_string(x.rank()));
    const int ns = x.rank() - 2;
    const std::int64_t groups = node_.get_int("group", 1);
    if (groups < 1 || groups > w[0])
      fail_model("group " + std::to_string(groups) + " must be in [1, " + std::to_string(w[0]) + "]");
    for (int i = 0; i < ns; ++i)
      if (w[2 + i] < 1 || w[2 + i] > kMaxAxisAttr)
        fail_model("weights " + w.str() + " have an empty or oversized kernel");
    auto kshape = axis_ints("kernel_shape", ns, 0, 1);
    if (!node_.has("kernel_shape"))
      for (int i = 0; i < ns; ++i) kshape[static_cast<std::size_t>(i)] = w[2 + i];
    for (int i = 0; i < ns; ++i)
      if (kshape[static_cast<std::size_t>(i)] != w[2 + i]) fail_model("kernel_shape does not match the weights " + w.str());
    const auto strides = axis_ints("strides", ns, 1, 1);
    const auto dil = axis_ints("dilations", ns, 1, 1);
    const auto pads = axis_ints("pads", 2 * ns, 0, 0);
    const std::string auto_pad = node_.get_string("auto_pad", "NOTSET");
    if (auto_pad != "NOTSET" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER" && auto_pad != "VALID")
      fail_model("auto_pad '" + auto_pad + "' is not NOTSET, SAME_UPPER, SAME_LOWER or VALID");

    ConvParams& p = p_;
    p.n = x[0];
    p.groups = groups;
    const auto id = spatial3(x);
    p.ic = x[1];
    p.id = id[0]; p.ih = id[1]; p.iw = id[2];
    const auto k3 = pad3(kshape, ns, 1), s3 = pad3(strides, ns, 1), d3 = pad3(dil, ns, 1);
    p.kd = k3[0]; p.kh = k3[1]; p.kw = k3[2];
    p.sd = s3[0]; p.sh = s3[1]; p.sw = s3[2];
    p.dd = d3[0]; p.dh = d3[1]; p.dw = d3[2];
    std::vector<std::int64_t> pb(static_cast<std::size_t>(ns)), pe(static_cast<std::size_t>(ns)), os(static_cast<std::size_t>(ns));
    for (int i = 0; i < ns; ++i) {
      const auto k = static_cast<std::size_t>(i);
      pb[k] = pads[k];
      pe[k] = pads[k + static_cast<std::size_t>(ns)];
    }
    if (!transposed_) {
      if (x[1] != w[1] * groups)
        fail_input("input has " + std::to_string(x[1]) + " channels, the weights expect " + std::to_string(w[1] * groups));
      if (w[0] % groups) fail_model("output channels not divisible by group");
      p.oc = w[0];
      for (int i = 0; i < ns; ++i) {
        const auto k = static_cast<std::size_t>(i);
        const std::int64_t in = x[2 + i], ke = (kshape[k] - 1) * dil[k] + 1;
        if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
          const std::int64_t o = (in + strides[k] - 1) / strides[k];
          const std::int64_t total = std::max<std::int64_t>(0, (o - 1) * strides[k] + ke - in);
          pb[k] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
          pe[k] = total - pb[k];
        } else if (auto_pad == "VALID") {
          pb[k] = pe[k] = 0;
        } else if (auto_pad != "NOTSET") {
          fail_model("auto_pad '" + auto_pad + "'");
        }
        os[k] = ConvParams::conv_out(in, kshape[k], strides[k], dil[k], pb[k], pe[k]);
        if (os[k] <= 0) fail_input("input spatial size " + x.str() + " is too small for the kernel");
      }
    } else {
      if (x[1] != w[0]) fail_input("input has " + std::to_string(x[1]) + " channels, the weights expect " + std::to_string(w[0]));
      if (w[0] % groups)
        fail_model("input channels " + std::to_string(w[0]) + " not divisible by group " + std::to_string(groups));
      p.oc = w[1] * groups;
      const auto out_pad = axis_ints("output_padding", ns, 0, 0);
      for (int i = 0; i < ns; ++i) {
        const auto k = static_cast<std::size_t>(i);
        if (out_pad[k] >= std::max(strides[k], dil[k]))
          fail_model("attribute 'output_padding' value " + std::to_string(out_pad[k]) +
                     " must be below the stride or the dilation");
      }
      auto out_shape = node_.get_ints("output_shape");
      if (!out_shape.empty()) {
        if (out_shape.size() != static_cast<std::size_t>(ns) && out_shape.size() != static_cast<std::size_t>(ns + 2))
          fail_model("attribute 'output_shape' has " + std::to_string(out_shape.size()) + " values, expected " +
                     std::to_string(ns));
        out_shape.erase(out_shape.begin(), out_shape.end() - ns);
        for (const auto v : out_shape)
          if (v < 1 || v > Shape::kMaxNumel)
            fail_model("attribute 'output_shape' value " + std::to_string(v) + " is not a size");
      }
      for (int i = 0; i < ns; ++i) {
        const auto k = static_cast<std::size_t>(i);
        const std::int64_t in = x[2 + i], ke = (kshape[k] - 1) * dil[k] + 1;
        if (in - 1 > Shape::kMaxNumel / strides[k]) fail_input("input " + x.str() + " is too large for the stride");
        const std::int64_t full = strides[k] * (in - 1) + out_pad[k] + ke;
        if (!out_shape.empty()) {
          const std::int64_t target = out_shape[k];
          const std::int64_t total = full - target;
          if (total < 0)
            fail_input("output_shape " + std::to_string(target) + " is larger than the " + std::to_string(full) +
                       " values input " + x.str() + " gives");
          if (auto_pad == "SAME_UPPER") { pb[k] = total / 2; pe[k] = total - total / 2; }
          else { pe[k] = total / 2; pb[k] = total - total / 2; }
          os[k] = target;
        } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
          const std::int64_t target = in * strides[k];
          const std::int64_t total = full - target;
          if (auto_pad == "SAME_UPPER") { pb[k] = total / 2; pe[k] = total - total / 2; }
          else { pe[k] = total / 2; pb[k] = total - total / 2; }
          os[k] = target;
        } else {
          if (auto_pad == "VALID") pb[k] = pe[k] = 0;
          os[k] = full - pb[k] - pe[k];
        }
        if (os[k] <= 0) fail_input("output size would be empty for input " + x.str());
      }
    }
    const auto pb3 = pad3(pb, ns, 0), o3 = pad3(os, ns, 1);
    p.pd = pb3[0]; p.ph = pb3[1]; p.pw = pb3[2];
    p.od = o3[0]; p.oh = o3[1]; p.ow = o3[2];
    if (in.size() > 2 && in[2].present && in[2].shape.numel() != p.oc) fail_model("bias has " + std::to_string(in[2].shape.numel()) + " values for " + std::to_string(p.oc) + " output channels");
    std::vector<std::int64_t> od{x[0], p.oc};
    for (auto v : os) od.push_back(v);
    out[0].shape = Shape(od);
    out[0].dtype = DType::f32;
    // A fused residual (Add after the convolution) normally has the output's shape; one that
    // only broadcasts to it is added after the convolution on the reference path.
    residual_broadcast_ = false;
    if (in.size() > 4 && in[4].present && in[4].shape != out[0].shape) {
      const Shape& r = in[4].shape;
      bool ok = in[4].dtype == DType::f32 && r.rank() <= out[0].shape.rank();
      for (int k = 1; ok && k <= r.rank(); ++k)
        ok = r[r.rank() - k] == 1 || r[r.rank() - k] == out[0].shape[out[0].shape.rank() - k];
      if (!ok) fail_model("fused residual " + r.str() + " does not broadcast to the output " + out[0].shape.str());
      residual_broadcast_ = true;
    }
  }

  void prepare(const std::vector<ValueMeta>& in, const std::vector<ValueMeta>&) override {
    ep_ = Epilogue{};
    ep_.act = parse_activation(node_, ep_.alpha, ep_.beta);
    has_residual_ = in.size() > 4 && in[4].present && !residual_broadcast_;
    slope_count_ = in.size() > 3 && in[3].present ? in[3].shape.numel() : 0;
    if (ep_.act == Activation::prelu && slope_count_ != 1 && slope_count_ != p_.oc) fail_model("PRelu slope count does not match the channels");
    kernel_.reset();
    head_.reset();
    small_.reset();
    why_.clear();
    head_why_.clear();
    small_why_.clear();
    const bool consts = in[1].constant && (!(in.size() > 2 && in[2].present) || in[2].constant) &&
                        (!(in.size() > 3 && in[3].present) || in[3].constant);
    if (!consts)
      why_ = "optimized kernels: weights, bias or slopes are not constant\n";
    else if (reference_kernels_)
      why_ = "optimized kernels: the session asked for the reference kernels\n";
    else if (residual_broadcast_)
      why_ = "optimized kernels: the fused residual only broadcasts to the output\n";
    if (consts && !reference_kernels_ && !residual_broadcast_) {
      Epilogue ep = ep_;
      ep.bias = in.size() > 2 && in[2].present ? in[2].constant->data<float>() : nullptr;
      ep.slope = slope_count_ ? in[3].constant->data<float>() : nullptr;
      ep.slope_per_channel = slope_count_ != 1;
      static float dummy = 0;
      ep.residual = has_residual_ ? &dummy : nullptr;
      // 16-channel blocks waste memory and bandwidth on narrow layers (the brain MeshNet has 5
      // channels): prefer the 8-channel kernels there.
      Isa isa = active_isa();
      if (isa == Isa::avx512 && std::max(p_.ic / p_.groups, p_.oc / p_.groups) <= 8) {
        isa = Isa::avx2;
        why_ = "avx512 kernels: all channels fit a block of 8, the 8-channel kernels waste less\n";
      }
      kernel_ = kernels::make_conv_kernel(p_, in[1].constant->data<float>(), ep, transposed_, isa, &why_);
      if (kernel_ && kernel_->src_layout() != Layout::plain) {
        const float* w = in[1].constant->data<float>();
        head_ = transposed_ ? kernels::make_deconv_head_kernel(p_, w, ep, kernel_->src_layout(), isa, &head_why_)
                            : kernels::make_conv_head_kernel(p_, w, ep, kernel_->src_layout(), isa, &head_why_);
      }
      if (kernel_ && !transposed_ && kernel_->src_layout() == Layout::plain)
        small_ =
            kernels::make_small_plain_conv_kernel(p_, in[1].constant->data<float>(), ep, active_isa(), &small_why_);
    }
  }

  // Workspace: the kernel's scratch, then blocked copies of src, dst and residual when the
  // kernel reads or writes a blocked layout (reorders at the operator boundary).
  std::size_t blocked_bytes(Layout l, std::int64_t c, std::int64_t spatial) const {
    if (l == Layout::plain) return 0;
    return static_cast<std::size_t>(round_up(static_cast<std::int64_t>(kernels::activation_elements(l, p_.n, c, spatial) * 4), 64));
  }
  std::size_t kernel_ws() const { return static_cast<std::size_t>(round_up(static_cast<std::int64_t>(kernel_->workspace_bytes()), 64)); }
  // Which boundary reorders remain once the Session has chosen the value layouts.
  bool reorder_src() const { return kernel_ && kernel_->src_layout() != Layout::plain && in_layout_ == Layout::plain; }
  bool reorder_dst() const {
    return kernel_ && kernel_->dst_layout() != Layout::plain && out_layout_ == Layout::plain && !plain_head() &&
           !plain_small();
  }
  // A convolution from few plain channels to few plain channels (a network's last layer on
  // its classes, residual included) runs the small plain kernel, vectorised along W: no
  // channel-padded blocked dst and no reorders.
  bool plain_small() const {
    return small_ && in_layout_ == Layout::plain && out_layout_ == Layout::plain &&
           (!has_residual_ || res_layout_ == Layout::plain);
  }
  // A 1x1x1 head (or a stride-2 ConvTranspose) with few output channels reading a blocked
  // input and writing a plain output (a network's logits, or its last up-sampling to the
  // classes) is computed straight from the blocked input by the head kernel: the convolution
  // kernel's path would write a channel-padded blocked dst (16 channels for 3 classes) and
  // reorder it, through a workspace as large as that padded output.
  bool plain_head() const {
    return head_ && kernel_ && !has_residual_ && out_layout_ == Layout::plain && in_layout_ == kernel_->src_layout() &&
           in_layout_ != Layout::plain;
  }
  bool reorder_res() const {
    return kernel_ && has_residual_ && kernel_->dst_layout() != Layout::plain && res_layout_ == Layout::plain &&
           !plain_small();
  }
  std::size_t workspace_bytes() const override {
    if (!kernel_ || plain_head() || plain_small()) return 0;
    const std::int64_t isp = p_.id * p_.ih * p_.iw, osp = p_.od * p_.oh * p_.ow;
    return kernel_ws() + (reorder_src() ? blocked_bytes(kernel_->src_layout(), p_.ic, isp) : 0) +
           (reorder_dst() ? blocked_bytes(kernel_->dst_layout(), p_.oc, osp) : 0) +
           (reorder_res() ? blocked_bytes(kernel_->dst_layout(), p_.oc, osp) : 0);
  }
  // Few-channel layers with plain input prefer a plain output: the small plain kernel then
  // fills its vectors along W, where a blocked dst would hold 4 channels in 8 or 16 lanes.
  Layout preferred_output_layout(int o) const override {
    if (o != 0 || !kernel_ || small_) return Layout::plain;
    return kernel_->dst_layout();
  }
  bool accepts_input_layout(int i, Layout l) const override {
    if (l == Layout::plain) return true;
    if (!kernel_) return false;
    if (i == 0) return kernel_->src_layout() == l;
    if (i == 4) return kernel_->dst_layout() == l;
    return false;
  }
  void set_layouts(const std::vector<Layout>& in, const std::vector<Layout>& out) override {
    in_layout_ = in.empty() ? Layout::plain : in[0];
    res_layout_ = in.size() > 4 ? in[4] : Layout::plain;
    out_layout_ = out.empty() ? Layout::plain : out[0];
  }
  int reorders() const override { return (reorder_src() ? 1 : 0) + (reorder_dst() ? 1 : 0) + (reorder_res() ? 1 : 0); }
  std::string kernel_name() const override {
    if (plain_head()) return head_->name();
    if (plain_small()) return small_->name();
    return kernel_ ? kernel_->name() : (transposed_ ? "conv_transpose3d_ref" : "conv3d_ref");
  }
  // The list's rejections, then why the head or small plain kernel did or did not replace
  // the blocked kernel once the layouts were chosen.
  std::string kernel_declines() const override {
    std::string r = why_;
    if (!kernel_) return r;
    if (plain_head() || plain_small())
      return r + kernel_->name() + ": the input or output is plain with few channels, " + kernel_name() +
             " needs no channel padding and no reorder\n";
    r += head_why_ + small_why_;
    if (head_)
      r += std::string(head_->name()) + (has_residual_ ? ": the convolution adds a residual\n"
                                         : out_layout_ != Layout::plain
                                             ? ": the output stays blocked for its consumers\n"
                                             : ": the input arrives plain\n");
    if (small_) r += std::string(small_->name()) + ": the input, output or residual is blocked\n";
    return r;
  }
  std::int64_t flops(const std::vector<ValueMeta>&, const std::vector<ValueMeta>&) const override {
    if (!transposed_) return p_.flops();
    return 2 * p_.n * p_.ic * p_.id * p_.ih * p_.iw * (p_.oc / p_.groups) * p_.kd * p_.kh * p_.kw;
  }

  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void* ws) override {
    const float* residual = has_residual_ ? in[4]->data<float>() : nullptr;
    if (plain_head()) {
      head_->run(in[0]->data<float>(), out[0]->data<float>(), nullptr, nullptr);
      return;
    }
    if (plain_small()) {
      small_->run(in[0]->data<float>(), out[0]->data<float>(), residual, nullptr);
      return;
    }
    if (kernel_) {
      auto* base = static_cast<std::byte*>(ws);
      void* kws = base;
      base += kernel_ws();
      const std::int64_t isp = p_.id * p_.ih * p_.iw, osp = p_.od * p_.oh * p_.ow;
      const Layout sl = kernel_->src_layout(), dl = kernel_->dst_layout();
      const float* src = in[0]->data<float>();
      if (reorder_src()) {
        auto* b = reinterpret_cast<float*>(base);
        kernels::reorder_plain_to_blocked(src, b, p_.n, p_.ic, isp, layout_block(sl));
        src = b;
        base += blocked_bytes(sl, p_.ic, isp);
      }
      float* dst = out[0]->data<float>();
      if (reorder_dst()) {
        dst = reinterpret_cast<float*>(base);
        base += blocked_bytes(dl, p_.oc, osp);
      }
      if (reorder_res()) {
        auto* r = reinterpret_cast<float*>(base);
        kernels::reorder_plain_to_blocked(residual, r, p_.n, p_.oc, osp, layout_block(dl));
        residual = r;
      }
      kernel_->run(src, dst, residual, kws);
      if (reorder_dst()) kernels::reorder_blocked_to_plain(dst, out[0]->data<float>(), p_.n, p_.oc, osp, layout_block(dl));
      return;
    }
    Epilogue ep = ep_;
    ep.bias = in.size() > 2 && in[2] ? in[2]->data<float>() : nullptr;
    ep.slope = slope_count_ ? in[3]->data<float>() : nullptr;
    ep.slope_per_channel = slope_count_ != 1;
    ep.residual = residual;
    if (residual_broadcast_) {  // convolution, then the broadcast residual, then the activation
      Epilogue linear = ep;
      linear.act = Activation::none;
      if (transposed_) kernels::conv_transpose3d_ref(p_, in[0]->data<float>(), in[1]->data<float>(), linear, out[0]->data<float>());
      else kernels::conv3d_ref(p_, in[0]->data<float>(), in[1]->data<float>(), linear, out[0]->data<float>());
      add_broadcast_residual(*in[4], *out[0], ep);
      return;
    }
    if (transposed_) kernels::conv_transpose3d_ref(p_, in[0]->data<float>(), in[1]->data<float>(), ep, out[0]->data<float>());
    else kernels::conv3d_ref(p_, in[0]->data<float>(), in[1]->data<float>(), ep, out[0]->data<float>());
  }

 private:
  bool transposed_;
  ConvParams p_;
  Epilogue ep_;
  // out = act(out + residual) with the residual broadcast to out (plain layouts).
  static void add_broadcast_residual(const Tensor& res, Tensor& out, const Epilogue& ep) {
    const Shape& os = out.shape();
    const Shape& rs = res.shape();
    const int rank = os.rank(), off = rank - rs.rank();
    std::vector<std::int64_t> rstride(static_cast<std::size_t>(rank), 0);
    for (std::int64_t k = rank - 1, st = 1; k >= off; --k) {
      rstride[static_cast<std::size_t>(k)] = rs[static_cast<int>(k) - off] == 1 ? 0 : st;
      st *= rs[static_cast<int>(k) - off];
    }
    const float* r = res.data<float>();
    float* o = out.data<float>();
    std::vector<std::int64_t> idx(static_cast<std::size_t>(rank), 0);
    const std::int64_t total = os.numel();
    for (std::int64_t i = 0; i < total; ++i) {
      std::int64_t ro = 0;
      for (int k = 0; k < rank; ++k) ro += idx[static_cast<std::size_t>(k)] * rstride[static_cast<std::size_t>(k)];
      o[i] = kernels::apply_activation(ep, rank > 1 ? idx[1] : 0, o[i] + r[ro]);
      for (int k = rank - 1; k >= 0 && ++idx[static_cast<std::size_t>(k)] == os[k]; --k) idx[static_cast<std::size_t>(k)] = 0;
    }
  }

  bool has_residual_ = false;
  bool residual_broadcast_ = false;
  std::int64_t slope_count_ = 0;
  std::unique_ptr<kernels::ConvKernel> kernel_;
  std::unique_ptr<kernels::ConvKernel> head_;  // 1x1x1 head, blocked src to plain dst, when it applies
  std::unique_ptr<kernels::ConvKernel> small_;  // few plain channels to few plain channels, when it applies
  std::string why_, head_why_, small_why_;      // rejections while choosing (for `info`)
  Layout in_layout_ = Layout::plain, out_layout_ = Layout::plain, res_layout_ = Layout::plain;
};

// ------------------------------------------------------------------ normalizations

// Per-lane values of the channel block [c0, c0 + lanes) from a per-channel array (null: all
// zero); lanes past the c channels (block padding) get 0.
void lane_values(const float* v, std::int64_t c0, std::int64_t c, int lanes, float* out) {
  for (int l = 0; l < lanes; ++l) out[l] = v && c0 + l < c ? v[c0 + l] : 0.f;
}

// d (plain NCDHW) = act((s - m) * a + b) for s channel-blocked with bi lanes: m, a, b per
// (image, channel) at image * stride + channel (stride 0: one set for all images), PRelu slopes
// per channel (null without PRelu). A layout boundary (a normalisation before a plain
// consumer): the affine kernel on runs of block rows into a small buffer, then each lane
// copied to its channel plane.
void affine_blocked_to_plain(const kernels::norm::Fns& nk, const float* s, float* d, std::int64_t n, std::int64_t c,
                             std::int64_t sp, int bi, const float* m, const float* a, const float* b, std::int64_t stride,
                             const float* slope, const Epilogue& ep) {
  constexpr std::int64_t kRun = 256;  // pixels per work item
  const std::int64_t ncb = (c + bi - 1) / bi, runs = (sp + kRun - 1) / kRun;
  parallel_for(n * ncb * runs, 1, [&](std::int64_t b0, std::int64_t e0) {
    alignas(64) float buf[kRun * 16];
    alignas(64) float lm[16], la[16], lb[16], ls[16];
    for (std::int64_t it = b0; it < e0; ++it) {
      const std::int64_t seg = it / runs, i0 = (it % runs) * kRun, len = std::min(kRun, sp - i0);
      const std::int64_t img = seg / ncb, c0 = (seg % ncb) * bi, nl = std::min<std::int64_t>(bi, c - c0);
      lane_values(m ? m + img * stride : nullptr, c0, c, bi, lm);
      lane_values(a + img * stride, c0, c, bi, la);
      lane_values(b + img * stride, c0, c, bi, lb);
      lane_values(slope, c0, c, bi, ls);
      nk.affine(s + seg * sp * bi + i0 * bi, buf, len * bi, bi, lm, la, lb, ep.act, ep.alpha, ls, false);
      for (std::int64_t l = 0; l < nl; ++l) {
        float* dst = d + (img * c + c0 + l) * sp + i0;
        for (std::int64_t i = 0; i < len; ++i) dst[i] = buf[i * bi + l];
      }
    }
  });
}

// An operator whose first input may be channel-blocked (5D f32, rank5_ set by infer) and whose
// output keeps that layout, so that chains of Conv -> (normalisation, pooling) -> Conv stay
// blocked: InstanceNorm/GroupNorm (nnU-Net's and SegResNet's blocks), BatchNorm (DenseNet's
// BN -> ReLU -> Conv after a blocked Concat) and 3D pooling.
class BlockedThroughOp : public Op {
 public:
  using Op::Op;
  Layout preferred_output_layout(int o) const override { return o == 0 && rank5_ ? in_layout_ : Layout::plain; }
  bool accepts_input_layout(int i, Layout l) const override {
    return l == Layout::plain || (i == 0 && rank5_ && !layout_is_weights(l));
  }
  void set_layouts(const std::vector<Layout>& in, const std::vector<Layout>& out) override {
    in_layout_ = in.empty() ? Layout::plain : in[0];
    out_layout_ = out.empty() ? Layout::plain : out[0];
  }

 protected:
  // For `info` and profiles: what a run with these layouts executes.
  std::string name_for(const char* what, bool to_plain_too = false) const {
    const int b = layout_block(in_layout_);
    const std::string in = b > 1 ? "_nCdhw" + std::to_string(b) + "c" : "_plain";
    if (in_layout_ == out_layout_) return what + in;
    if (to_plain_too && b > 1 && out_layout_ == Layout::plain) return what + in + "_to_plain";
    return "ref";  // other layout boundaries: strided per-channel loops
  }
  bool rank5_ = false;
  Layout in_layout_ = Layout::plain, out_layout_ = Layout::plain;
};

class BatchNormOp final : public BlockedThroughOp {
 public:
  using BlockedThroughOp::BlockedThroughOp;
  std::string kernel_name() const override { return name_for((std::string("norm_affine__") + isa_name(active_isa())).c_str(), true); }
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 5, 5);
    const Shape& x = in[0].shape;
    if (x.rank() < 2) fail_input("input must have a channel axis");
    for (int i = 1; i < 5; ++i) {
      const ValueMeta& v = in[static_cast<std::size_t>(i)];
      if (v.shape.numel() != x[1])
        fail_model("parameter " + std::to_string(i) + " has " + std::to_string(v.shape.numel()) +
                   " values, expected one per channel (" + std::to_string(x[1]) + ")");
      if (v.dtype != DType::f32) fail_unsupported("parameter " + std::to_string(i) + " must be f32");
    }
    out[0].shape = x;
    out[0].dtype = DType::f32;
    for (std::size_t i = 1; i < out.size(); ++i) out[i].present = false;
    rank5_ = x.rank() == 5 && in[0].dtype == DType::f32;
  }
  int inplace_input() const override { return 0; }

  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const Shape& x = in[0]->shape();
    const std::int64_t c = x[1], n = x[0], sp = x.numel() / std::max<std::int64_t>(1, n * c);
    const float eps = node_.get_float("epsilon", 1e-5f);
    std::vector<float> a(static_cast<std::size_t>(c)), b(static_cast<std::size_t>(c));
    const float *sc = in[1]->data<float>(), *bi = in[2]->data<float>(), *mu = in[3]->data<float>(), *var = in[4]->data<float>();
    for (std::int64_t k = 0; k < c; ++k) {
      a[static_cast<std::size_t>(k)] = sc[k] / std::sqrt(var[k] + eps);
      b[static_cast<std::size_t>(k)] = bi[k] - mu[k] * a[static_cast<std::size_t>(k)];
    }
    const float* s = in[0]->data<float>();
    float* d = out[0]->data<float>();
    Epilogue ep;
    ep.act = parse_activation(node_, ep.alpha, ep.beta);
    const int lb = layout_block(in_layout_), ob = layout_block(out_layout_);
    const kernels::norm::Fns nk = kernels::norm::fns(active_isa());
    if (lb != ob) {  // blocked in, plain out (the only boundary the layout pass makes)
      affine_blocked_to_plain(nk, s, d, n, c, sp, lb, nullptr, a.data(), b.data(), 0, nullptr, ep);
      return;
    }
    // x * a + b: the affine pass of the normalisations with a zero mean, per ISA.
    static const float kZero[16] = {};
    const std::int64_t ncb = (c + lb - 1) / lb;
    parallel_for(n * ncb, 1, [&](std::int64_t b0, std::int64_t e0) {
      for (std::int64_t r = b0; r < e0; ++r) {
        const std::int64_t c0 = (r % ncb) * lb;
        alignas(64) float la[16], lbb[16];
        lane_values(a.data(), c0, c, lb, la);
        lane_values(b.data(), c0, c, lb, lbb);
        nk.affine(s + r * sp * lb, d + r * sp * lb, sp * lb, lb, kZero, la, lbb, ep.act, ep.alpha, kZero, false);
        if (lb > 1 && c0 + lb > c && ep.act == Activation::sigmoid)  // channel padding stays zero
          for (std::int64_t i = 0; i < sp; ++i)
            for (std::int64_t l = c - c0; l < lb; ++l) d[(r * sp + i) * lb + l] = 0.f;
      }
    });
  }
};

// Mean and variance of `count` values, accumulated in double in a fixed order.
inline void moments(const float* p, std::int64_t count, double& mean, double& var) {
  double s = 0;
  for (std::int64_t i = 0; i < count; ++i) s += p[i];
  mean = s / static_cast<double>(count);
  double q = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    const double t = p[i] - mean;
    q += t * t;
  }
  var = q / static_cast<double>(count);
}

// InstanceNormalization and GroupNormalization: statistics over (channels of a group) x spatial.
class GroupNormOp final : public BlockedThroughOp {
 public:
  GroupNormOp(const Node& n, std::int64_t opset, bool instance) : BlockedThroughOp(n, opset), instance_(instance) {}
  std::string kernel_name() const override { return name_for((std::string("norm__") + isa_name(active_isa())).c_str(), true); }
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 3, 4);  // a fused PRelu's slope is input 3
    const Shape& x = in[0].shape;
    if (x.rank() < 3) fail_input("input must be N, C, spatial...; got " + x.str());
    slope_count_ = in.size() > 3 && in[3].present ? in[3].shape.numel() : 0;
    if (slope_count_ > 1 && (slope_count_ != x[1] || x.rank() != 5))
      fail_model("fused PRelu: " + std::to_string(slope_count_) + " slopes do not match the channels of " + x.str());
    groups_ = instance_ ? x[1] : node_.get_int("num_groups", 1);
    if (groups_ < 1 || x[1] % groups_) fail_model("num_groups " + std::to_string(groups_) + " does not divide " + std::to_string(x[1]) + " channels");
    per_channel_ = instance_ || in[1].shape.numel() == x[1];
    rank5_ = x.rank() == 5 && in[0].dtype == DType::f32;
    // The kernels read one scale and one bias per channel (or per group): shorter ones would
    // be read past their end.
    const std::int64_t want = per_channel_ ? x[1] : groups_;
    for (int i = 1; i <= 2; ++i) {
      const ValueMeta& v = in[static_cast<std::size_t>(i)];
      if (v.dtype != DType::f32) fail_unsupported(std::string(i == 1 ? "scale" : "bias") + " must be f32");
      if (v.shape.numel() != want)
        fail_model(std::string(i == 1 ? "scale" : "bias") + " has " + std::to_string(v.shape.numel()) +
                   " values, expected " + std::to_string(want) +
                   (per_channel_ ? " (one per channel)" : " (one per group)"));
    }
    out[0].shape = x;
    out[0].dtype = DType::f32;
  }
  int inplace_input() const override { return 0; }

  // Statistics in one read of the input (chunked two-pass moments, merged in double), then
  // one pass computing (x - mean) * a + b and the fused activation. Either side may be channel-blocked
  // (nCdhw8c/16c): element (n, c, i) lives at
  // n*Cp*sp + (c/b)*sp*b + i*b + c%b, with b = 1 for plain; padding lanes of a blocked
  // output are written as 0.
  //
  // The data is cut into units, contiguous spans that hold whole groups: (image, group) when
  // plain, (image, channel blocks of one or more whole groups) when blocked. When there are
  // enough units to keep every thread busy, each thread takes a unit at a time, statistics then
  // result, so the second read finds the unit still in cache (8 MiB for 32 channels at 128^3
  // plain): one read from memory instead of two. Otherwise statistics over all units, then the
  // result. Both orders compute the same chunks and merge them in the same order, so the result
  // does not depend on which one runs.
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const Shape& x = in[0]->shape();
    const std::int64_t n = x[0], c = x[1], sp = x.numel() / (n * c), cpg = c / groups_;
    const int bi = layout_block(in_layout_), bo = layout_block(out_layout_);
    const float eps = node_.get_float("epsilon", 1e-5f);
    const float *s = in[0]->data<float>(), *sc = in[1]->data<float>(), *bias = in[2]->data<float>();
    float* d = out[0]->data<float>();
    Epilogue ep;
    ep.act = parse_activation(node_, ep.alpha, ep.beta);
    // PRelu slope per channel (one value broadcast, or one per channel).
    std::vector<float> slope(ep.act == Activation::prelu ? static_cast<std::size_t>(c) : 0);
    if (!slope.empty()) {
      if (!slope_count_) fail_model("fused PRelu without a slope");
      const float* sv = in[3]->data<float>();
      for (std::int64_t ch = 0; ch < c; ++ch) slope[static_cast<std::size_t>(ch)] = sv[slope_count_ == 1 ? 0 : ch];
    }

    const bool blocked = bi > 1;
    const kernels::norm::Fns nk = kernels::norm::fns(active_isa());
    const std::int64_t ncb = blocked ? round_up(c, bi) / bi : 0;
    // Segments: channel blocks (blocked) or groups (plain), each a contiguous span of `span`
    // floats cut into chunks of `chunk` floats (whole rows when blocked).
    const std::int64_t span = blocked ? sp * bi : cpg * sp;
    const std::int64_t chunk = kernels::norm::kChunkFloats;
    const std::int64_t nch = (span + chunk - 1) / chunk;
    const int lanes = blocked ? bi : 1;
    // Outputs far larger than any cache are written with non-temporal stores: no read for
    // ownership, and the input of the unit being normalised stays cached. Smaller ones stay in
    // cache for the next operator.
    const bool stream = out[0]->numel() * static_cast<std::int64_t>(sizeof(float)) >= (std::int64_t{64} << 20);
    const std::int64_t segs = blocked ? n * ncb : n * groups_;
    std::vector<Moments> part(static_cast<std::size_t>(segs * nch * lanes));
    std::vector<Moments> stats(static_cast<std::size_t>(n * groups_));
    std::vector<float> cm(static_cast<std::size_t>(n * c)), ca(cm.size()), cb(cm.size());

    auto seg_stats = [&](std::int64_t seg, std::int64_t k) {
      const std::int64_t i0 = k * chunk;
      nk.moments(s + seg * span + i0, std::min(chunk, span - i0), lanes, part.data() + (seg * nch + k) * lanes);
    };
    // Moments of the groups in segments [s0, s1) of one image (whole groups) and their
    // per-channel affine.
    auto finish = [&](std::int64_t s0, std::int64_t s1) {
      for (std::int64_t seg = s0; seg < s1; ++seg) {
        if (!blocked) {
          for (std::int64_t k = 0; k < nch; ++k) stats[static_cast<std::size_t>(seg)].merge(part[static_cast<std::size_t>(seg * nch + k)]);
          continue;
        }
        const std::int64_t b = seg / ncb, c0 = (seg % ncb) * bi;
        for (std::int64_t ch = c0; ch < std::min(c, c0 + bi); ++ch) {
          Moments m;
          for (std::int64_t k = 0; k < nch; ++k) m.merge(part[static_cast<std::size_t>((seg * nch + k) * bi + ch - c0)]);
          stats[static_cast<std::size_t>(b * groups_ + ch / cpg)].merge(m);
        }
      }
      const std::int64_t b = blocked ? s0 / ncb : s0 / groups_;
      const std::int64_t c0 = blocked ? (s0 % ncb) * bi : (s0 % groups_) * cpg;
      const std::int64_t c1 = std::min(c, c0 + (s1 - s0) * (blocked ? bi : cpg));
      for (std::int64_t ch = c0; ch < c1; ++ch) {
        const std::int64_t g = ch / cpg;
        const Moments& m = stats[static_cast<std::size_t>(b * groups_ + g)];
        const double inv = 1.0 / std::sqrt(m.variance() + eps);
        const double scale = per_channel_ ? sc[ch] : sc[g], shift = per_channel_ ? bias[ch] : bias[g];
        cm[static_cast<std::size_t>(b * c + ch)] = static_cast<float>(m.mean);
        ca[static_cast<std::size_t>(b * c + ch)] = static_cast<float>(inv * scale);
        cb[static_cast<std::size_t>(b * c + ch)] = static_cast<float>(shift);
      }
    };

    // out = act((x - mean) * a + b) for chunk k of segment seg, when both sides share the layout.
    auto seg_apply = [&](std::int64_t seg, std::int64_t k) {
      const std::int64_t i0 = k * chunk, i1 = std::min(span, i0 + chunk);
      const float* src = s + seg * span;
      float* dst = d + seg * span;
      if (!blocked) {
        const std::int64_t b = seg / groups_, ch0 = (seg % groups_) * cpg;
        for (std::int64_t i = i0; i < i1;) {  // a chunk may cross the channels of a group
          const std::int64_t e = std::min(i1, (i / sp + 1) * sp);
          const auto r = static_cast<std::size_t>(b * c + ch0 + i / sp);
          const float* sl = slope.empty() ? nullptr : &slope[static_cast<std::size_t>(ch0 + i / sp)];
          nk.affine(src + i, dst + i, e - i, 1, &cm[r], &ca[r], &cb[r], ep.act, ep.alpha, sl, stream);
          i = e;
        }
        return;
      }
      alignas(64) float lm[16], la[16], lb[16], ls[16];
      const std::int64_t b = seg / ncb, cb0 = (seg % ncb) * bi;
      lane_values(cm.data() + b * c, cb0, c, bi, lm);
      lane_values(ca.data() + b * c, cb0, c, bi, la);
      lane_values(cb.data() + b * c, cb0, c, bi, lb);
      lane_values(slope.empty() ? nullptr : slope.data(), cb0, c, bi, ls);
      nk.affine(src + i0, dst + i0, i1 - i0, bi, lm, la, lb, ep.act, ep.alpha, ls, stream);
      if (cb0 + bi > c && ep.act == Activation::sigmoid)  // channel padding stays zero
        for (std::int64_t i = i0; i < i1; i += bi)
          for (std::int64_t l = c - cb0; l < bi; ++l) dst[i + l] = 0.f;
    };

    // Segments per unit: 1 when plain or when a block holds whole groups; cpg / bi blocks when
    // a group spans several blocks; 0 (no units) when groups straddle block boundaries.
    const bool same_layout = bi == bo;
    const std::int64_t seg_per_unit = !blocked ? 1 : bi % cpg == 0 ? 1 : cpg % bi == 0 ? cpg / bi : 0;
    const std::int64_t units = seg_per_unit ? segs / seg_per_unit : 0;
    const std::int64_t th = num_threads();
    if (same_layout && units >= th && (units % th == 0 || units >= 4 * th)) {
      const std::int64_t per_unit = seg_per_unit * nch;  // chunks
      auto stats_of = [&](std::int64_t u, std::int64_t j) { seg_stats(u * seg_per_unit + j / nch, j % nch); };
      auto apply_of = [&](std::int64_t u, std::int64_t j) { seg_apply(u * seg_per_unit + j / nch, j % nch); };
      parallel_for(units, 1, [&](std::int64_t u0, std::int64_t u1) {
        for (std::int64_t u = u0; u < u1; ++u) {
          for (std::int64_t j = 0; j < per_unit; ++j) stats_of(u, j);
          finish(u * seg_per_unit, (u + 1) * seg_per_unit);
          for (std::int64_t j = 0; j < per_unit; ++j) apply_of(u, j);
        }
      });
      return;
    }
    parallel_for(segs * nch, 1, [&](std::int64_t b0, std::int64_t e0) {
      for (std::int64_t it = b0; it < e0; ++it) seg_stats(it / nch, it % nch);
    });
    // Per image: an image holds whole groups even when they straddle channel blocks.
    for (std::int64_t b = 0; b < n; ++b) finish(b * (segs / n), (b + 1) * (segs / n));
    if (same_layout) {
      parallel_for(segs * nch, 1, [&](std::int64_t b0, std::int64_t e0) {
        for (std::int64_t it = b0; it < e0; ++it) seg_apply(it / nch, it % nch);
      });
      return;
    }
    // Blocked in, plain out: the only boundary the layout pass makes (the output takes the
    // input's layout or plain).
    if (!blocked || bo != 1) fail_unsupported("normalisation from " + std::string(layout_name(in_layout_)) + " to " + std::string(layout_name(out_layout_)));
    affine_blocked_to_plain(nk, s, d, n, c, sp, bi, cm.data(), ca.data(), cb.data(), c, slope.empty() ? nullptr : slope.data(), ep);
  }

 private:
  bool instance_;
  std::int64_t groups_ = 1;
  std::int64_t slope_count_ = 0;
  bool per_channel_ = true;
};

class LayerNormOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 2, 3);
    const Shape& x = in[0].shape;
    axis_ = static_cast<int>(norm_axis(node_.get_int("axis", -1), x.rank(), node_));
    inner_ = 1;
    for (int i = axis_; i < x.rank(); ++i) inner_ *= x[i];
    if (in[1].shape.numel() != inner_) fail_model("scale must have " + std::to_string(inner_) + " values");
    if (in.size() > 2 && in[2].present && in[2].shape.numel() != inner_)
      fail_model("bias must have " + std::to_string(inner_) + " values");
    for (std::size_t i = 1; i < in.size(); ++i)
      if (in[i].present && in[i].dtype != DType::f32) fail_unsupported("scale and bias must be f32");
    out[0].shape = x;
    out[0].dtype = DType::f32;
    for (std::size_t i = 1; i < out.size(); ++i) out[i].present = false;
  }
  int inplace_input() const override { return 0; }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const float eps = node_.get_float("epsilon", 1e-5f);
    const std::int64_t rows = in[0]->numel() / inner_;
    const float* s = in[0]->data<float>();
    const float* sc = in[1]->data<float>();
    const float* bi = in.size() > 2 && in[2] ? in[2]->data<float>() : nullptr;
    float* d = out[0]->data<float>();
    const std::int64_t inner = inner_;
    parallel_for(rows, 16, [&](std::int64_t b0, std::int64_t e0) {
      for (std::int64_t r = b0; r < e0; ++r) {
        double mean = 0, var = 0;
        moments(s + r * inner, inner, mean, var);
        const double inv = 1.0 / std::sqrt(var + eps);
        for (std::int64_t i = 0; i < inner; ++i)
          d[r * inner + i] = static_cast<float>((s[r * inner + i] - mean) * inv) * sc[i] + (bi ? bi[i] : 0.f);
      }
    });
  }

 private:
  int axis_ = -1;
  std::int64_t inner_ = 1;
};

// ------------------------------------------------------------------ pooling

class PoolOp final : public BlockedThroughOp {
 public:
  PoolOp(const Node& n, std::int64_t opset, bool max, bool global) : BlockedThroughOp(n, opset), max_(max), global_(global) {}
  std::string kernel_name() const override { return name_for("pool", true); }
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 1, 1);
    const Shape& x = in[0].shape;
    if (x.rank() < 3 || x.rank() > 5) fail_input("input must be 3D-5D, got " + x.str());
    const int ns = x.rank() - 2;
    ConvParams& p = p_;
    p.n = x[0];
    p.ic = p.oc = x[1];
    const auto id = spatial3(x);
    p.id = id[0]; p.ih = id[1]; p.iw = id[2];
    std::vector<std::int64_t> k, s, dl, pb(static_cast<std::size_t>(ns), 0), pe(static_cast<std::size_t>(ns), 0);
    if (global_) {
      for (int i = 0; i < ns; ++i) k.push_back(x[2 + i]);
      s.assign(static_cast<std::size_t>(ns), 1);
      dl.assign(static_cast<std::size_t>(ns), 1);
    } else {
      if (!node_.has("kernel_shape")) fail_model("attribute 'kernel_shape' is required");
      k = axis_ints("kernel_shape", ns, 1, 1);
      s = axis_ints("strides", ns, 1, 1);
      dl = axis_ints("dilations", ns, 1, 1);
      const auto pads = axis_ints("pads", 2 * ns, 0, 0);
      for (int i = 0; i < ns; ++i) {
        const auto j = static_cast<std::size_t>(i);
        pb[j] = pads[j];
        pe[j] = pads[j + static_cast<std::size_t>(ns)];
        // A window wholly inside the padding would average nothing (as ONNX Runtime, refused).
        if (pb[j] >= k[j] || pe[j] >= k[j])
          fail_model("attribute 'pads' value " + std::to_string(std::max(pb[j], pe[j])) +
                     " must be smaller than kernel_shape " + std::to_string(k[j]));
      }
      count_include_pad_ = node_.get_int("count_include_pad", 0) != 0;
      if (node_.get_int("storage_order", 0) != 0) fail_unsupported("storage_order 1");
      if (node_.outputs.size() > 1 && !node_.outputs[1].empty()) fail_unsupported("MaxPool indices output");
    }
    const std::string auto_pad = node_.get_string("auto_pad", "NOTSET");
    if (auto_pad != "NOTSET" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER" && auto_pad != "VALID")
      fail_model("auto_pad '" + auto_pad + "' is not NOTSET, SAME_UPPER, SAME_LOWER or VALID");
    const bool ceil_mode = node_.get_int("ceil_mode", 0) != 0;
    std::vector<std::int64_t> od{x[0], x[1]};
    for (int i = 0; i < ns; ++i) {
      const auto j = static_cast<std::size_t>(i);
      const std::int64_t in = x[2 + i], ke = (k[j] - 1) * dl[j] + 1;
      std::int64_t o;
      if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
        o = (in + s[j] - 1) / s[j];
        const std::int64_t total = std::max<std::int64_t>(0, (o - 1) * s[j] + ke - in);
        pb[j] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
        pe[j] = total - pb[j];
      } else if (auto_pad == "VALID") {
        pb[j] = pe[j] = 0;
        o = (in - ke) / s[j] + 1;
      } else {
        const std::int64_t span = in + pb[j] + pe[j] - ke;
        o = (ceil_mode ? (span + s[j] - 1) / s[j] : span / s[j]) + 1;
        // ceil mode: the last window must start inside the input or left padding
        if (ceil_mode && (o - 1) * s[j] >= in + pb[j]) --o;
      }
      if (o <= 0) fail_input("input " + x.str() + " is too small for the pooling window");
      od.push_back(o);
    }
    const auto k3 = pad3(k, ns, 1), s3 = pad3(s, ns, 1), d3 = pad3(dl, ns, 1), p3 = pad3(pb, ns, 0);
    p.kd = k3[0]; p.kh = k3[1]; p.kw = k3[2];
    p.sd = s3[0]; p.sh = s3[1]; p.sw = s3[2];
    p.dd = d3[0]; p.dh = d3[1]; p.dw = d3[2];
    p.pd = p3[0]; p.ph = p3[1]; p.pw = p3[2];
    out[0].shape = Shape(od);
    const auto o3 = spatial3(out[0].shape);
    p.od = o3[0]; p.oh = o3[1]; p.ow = o3[2];
    out[0].dtype = DType::f32;
    for (std::size_t i = 1; i < out.size(); ++i) out[i].present = false;
    rank5_ = x.rank() == 5 && in[0].dtype == DType::f32;
  }

  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const float* src = in[0]->data<float>();
    float* dst = out[0]->data<float>();
    const int bi = layout_block(in_layout_), bo = layout_block(out_layout_);
    if (bi == 16 && bo == 1) return run_blocked<16, true>(src, dst);
    if (bi == 8 && bo == 1) return run_blocked<8, true>(src, dst);
    if (bi != bo) return run_mixed(src, dst, bi, bo);
    if (bi == 16) return run_blocked<16>(src, dst);
    if (bi == 8) return run_blocked<8>(src, dst);
    run_blocked<1>(src, dst);  // plain NCDHW is 1-lane blocks
  }

 private:
  // Taps [lo, hi) of one axis whose input position o * s - pad + t * dil falls inside [0, in),
  // and how many fall before in + pad (the positions count_include_pad counts).
  struct AxisTaps {
    std::int64_t lo, hi, with_pad;
  };
  static AxisTaps axis_taps(std::int64_t o, std::int64_t s, std::int64_t pad, std::int64_t dil, std::int64_t k, std::int64_t in) {
    AxisTaps a{k, 0, 0};
    for (std::int64_t t = 0; t < k; ++t) {
      const std::int64_t pos = o * s - pad + t * dil;
      if (pos >= 0 && pos < in) a.lo = std::min(a.lo, t), a.hi = t + 1;
      if (pos < in + pad) ++a.with_pad;
    }
    if (a.hi <= a.lo) a.lo = a.hi = 0;
    return a;
  }
  // Blocked (nCdhw<B>c, B = 1 for plain) in and out: per output voxel, the window's B-lane rows
  // combined lane by lane, valid taps in order (those of each axis found once); padding lanes
  // stay 0. PLAIN_OUT: blocked in, plain out (a layout boundary), the lanes of each voxel
  // stored to their channels' planes (DenseNet's stem MaxPool: 1.8 ms a run on the per-channel
  // loops).
  template <int B, bool PLAIN_OUT = false>
  void run_blocked(const float* src, float* dst) const {
    const ConvParams p = p_;
    const bool mx = max_, cip = count_include_pad_;
    const std::int64_t ncb = (p.ic + B - 1) / B, isp = p.id * p.ih * p.iw, osp = p.od * p.oh * p.ow;
    parallel_for(p.n * ncb * p.od, 1, [&](std::int64_t b0, std::int64_t e0) {
      for (std::int64_t it = b0; it < e0; ++it) {
        const std::int64_t blk = it / p.od, z = it % p.od;
        const float* s = src + blk * isp * B;
        float* d = dst + blk * osp * B + z * p.oh * p.ow * B;
        const AxisTaps az = axis_taps(z, p.sd, p.pd, p.dd, p.kd, p.id);
        for (std::int64_t y = 0; y < p.oh; ++y) {
          const AxisTaps ay = axis_taps(y, p.sh, p.ph, p.dh, p.kh, p.ih);
          for (std::int64_t x = 0; x < p.ow; ++x) {
            const AxisTaps ax = axis_taps(x, p.sw, p.pw, p.dw, p.kw, p.iw);
            float acc[B];
            for (int l = 0; l < B; ++l) acc[l] = mx ? -std::numeric_limits<float>::infinity() : 0.f;
            for (std::int64_t a = az.lo; a < az.hi; ++a) {
              const std::int64_t iz = z * p.sd - p.pd + a * p.dd;
              for (std::int64_t b = ay.lo; b < ay.hi; ++b) {
                const std::int64_t iy = y * p.sh - p.ph + b * p.dh;
                for (std::int64_t c = ax.lo; c < ax.hi; ++c) {
                  const float* q = s + ((iz * p.ih + iy) * p.iw + x * p.sw - p.pw + c * p.dw) * B;
                  if (mx)
                    for (int l = 0; l < B; ++l) acc[l] = q[l] > acc[l] ? q[l] : acc[l];
                  else
                    for (int l = 0; l < B; ++l) acc[l] += q[l];
                }
              }
            }
            if (!mx) {
              const std::int64_t cnt = (az.hi - az.lo) * (ay.hi - ay.lo) * (ax.hi - ax.lo);
              const float div = static_cast<float>(cip ? az.with_pad * ay.with_pad * ax.with_pad : std::max<std::int64_t>(cnt, 1));
              for (int l = 0; l < B; ++l) acc[l] /= div;
            }
            if constexpr (PLAIN_OUT) {
              // it = (image, channel block, z): channel cb * B + l of image n, lanes past ic dropped.
              const std::int64_t n = blk / ncb, c0 = (blk % ncb) * B, lanes = std::min<std::int64_t>(B, p.ic - c0);
              float* o = dst + (n * p.ic + c0) * osp + (z * p.oh + y) * p.ow + x;
              for (std::int64_t l = 0; l < lanes; ++l) o[l * osp] = acc[l];
            } else {
              float* o = d + (y * p.ow + x) * B;
              for (int l = 0; l < B; ++l) o[l] = acc[l];
            }
          }
        }
      }
    });
    // Channel padding: max over zeros is 0, but an empty window would leave -inf there.
    if (B > 1 && !PLAIN_OUT) kernels::zero_channel_padding(dst, p.n, p.ic, osp, B);
  }

  // Blocked in, plain out (a layout boundary): channel by channel, strided.
  void run_mixed(const float* src, float* dst, int bi, int bo) const {
    const ConvParams p = p_;
    const bool mx = max_, cip = count_include_pad_;
    const std::int64_t isp = p.id * p.ih * p.iw, osp = p.od * p.oh * p.ow;
    parallel_for(p.n * p.ic, 1, [&](std::int64_t b0, std::int64_t e0) {
      for (std::int64_t nc = b0; nc < e0; ++nc) {
        const float* s = src + kernels::channel_offset(bi, p.ic, isp, nc / p.ic, nc % p.ic);
        float* d = dst + kernels::channel_offset(bo, p.ic, osp, nc / p.ic, nc % p.ic);
        for (std::int64_t z = 0; z < p.od; ++z) {
          const AxisTaps az = axis_taps(z, p.sd, p.pd, p.dd, p.kd, p.id);
          for (std::int64_t y = 0; y < p.oh; ++y) {
            const AxisTaps ay = axis_taps(y, p.sh, p.ph, p.dh, p.kh, p.ih);
            for (std::int64_t x = 0; x < p.ow; ++x) {
              const AxisTaps ax = axis_taps(x, p.sw, p.pw, p.dw, p.kw, p.iw);
              float acc = mx ? -std::numeric_limits<float>::infinity() : 0.f;
              for (std::int64_t a = az.lo; a < az.hi; ++a)
                for (std::int64_t b = ay.lo; b < ay.hi; ++b)
                  for (std::int64_t c = ax.lo; c < ax.hi; ++c) {
                    const std::int64_t iz = z * p.sd - p.pd + a * p.dd, iy = y * p.sh - p.ph + b * p.dh,
                                       ix = x * p.sw - p.pw + c * p.dw;
                    const float v = s[((iz * p.ih + iy) * p.iw + ix) * bi];
                    if (mx) acc = v > acc ? v : acc;
                    else acc += v;
                  }
              if (!mx) {
                const std::int64_t cnt = (az.hi - az.lo) * (ay.hi - ay.lo) * (ax.hi - ax.lo);
                acc /= static_cast<float>(cip ? az.with_pad * ay.with_pad * ax.with_pad : std::max<std::int64_t>(cnt, 1));
              }
              d[((z * p.oh + y) * p.ow + x) * bo] = acc;
            }
          }
        }
      }
    });
    kernels::zero_channel_padding(dst, p.n, p.ic, osp, bo);
  }

  bool max_, global_;
  bool count_include_pad_ = false;
  ConvParams p_;
};

// ------------------------------------------------------------------ softmax

class SoftmaxOp final : public Op {
 public:
  SoftmaxOp(const Node& n, std::int64_t opset, bool log) : Op(n, opset), log_(log) {}
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 1, 1);
    const Shape& x = in[0].shape;
    const std::int64_t axis = norm_axis(node_.get_int("axis", opset_ >= 13 ? -1 : 1), x.rank(), node_);
    outer_ = 1; len_ = 1; inner_ = 1;
    if (opset_ >= 13) {
      for (int i = 0; i < axis; ++i) outer_ *= x[i];
      len_ = x[static_cast<int>(axis)];
      for (int i = static_cast<int>(axis) + 1; i < x.rank(); ++i) inner_ *= x[i];
    } else {  // coerced to 2D [outer, rest]
      for (int i = 0; i < axis; ++i) outer_ *= x[i];
      for (int i = static_cast<int>(axis); i < x.rank(); ++i) len_ *= x[i];
    }
    out[0].shape = x;
    out[0].dtype = DType::f32;
  }
  int inplace_input() const override { return 0; }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const float* s = in[0]->data<float>();
    float* d = out[0]->data<float>();
    const std::int64_t len = len_, inner = inner_;
    const bool lg = log_;
    parallel_for(outer_ * inner_, 256, [&](std::int64_t b0, std::int64_t e0) {
      for (std::int64_t r = b0; r < e0; ++r) {
        const std::int64_t o = r / inner, i = r % inner;
        const float* src = s + o * len * inner + i;
        float* dst = d + o * len * inner + i;
        float m = -std::numeric_limits<float>::infinity();
        for (std::int64_t k = 0; k < len; ++k) m = std::max(m, src[k * inner]);
        double sum = 0;
        for (std::int64_t k = 0; k < len; ++k) sum += std::exp(static_cast<double>(src[k * inner] - m));
        if (lg) {
          const float ls = static_cast<float>(std::log(sum));
          for (std::int64_t k = 0; k < len; ++k) dst[k * inner] = src[k * inner] - m - ls;
        } else {
          const double inv = 1.0 / sum;
          for (std::int64_t k = 0; k < len; ++k) dst[k * inner] = static_cast<float>(std::exp(static_cast<double>(src[k * inner] - m)) * inv);
        }
      }
    });
  }

 private:
  bool log_;
  std::int64_t outer_ = 1, len_ = 1, inner_ = 1;
};

// ------------------------------------------------------------------ MatMul / Gemm

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapC = Eigen::Map<const RowMat>;
using MapM = Eigen::Map<RowMat>;

class MatMulOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 2, 2);
    Shape a = in[0].shape, b = in[1].shape;
    if (in[0].dtype != DType::f32 || in[1].dtype != DType::f32) fail_unsupported("only f32 MatMul");
    if (a.rank() == 0 || b.rank() == 0) fail_input("MatMul of a scalar");
    a_vec_ = a.rank() == 1;
    b_vec_ = b.rank() == 1;
    if (a_vec_) a = Shape{1, a[0]};
    if (b_vec_) b = Shape{b[0], 1};
    m_ = a[a.rank() - 2]; k_ = a[a.rank() - 1]; n_ = b[b.rank() - 1];
    if (b[b.rank() - 2] != k_) fail_input("inner dimensions differ: " + in[0].shape.str() + " x " + in[1].shape.str());
    std::vector<std::int64_t> ba(a.dims().begin(), a.dims().end() - 2), bb(b.dims().begin(), b.dims().end() - 2);
    batch_ = broadcast_shapes(Shape(ba), Shape(bb), node_);
    a_batch_ = Shape(ba);
    b_batch_ = Shape(bb);
    std::vector<std::int64_t> od(batch_.dims().begin(), batch_.dims().end());
    if (!a_vec_) od.push_back(m_);
    if (!b_vec_) od.push_back(n_);
    out[0].shape = Shape(od);
    out[0].dtype = DType::f32;
  }
  std::int64_t flops(const std::vector<ValueMeta>&, const std::vector<ValueMeta>&) const override {
    return 2 * batch_.numel() * m_ * n_ * k_;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const float* a = in[0]->data<float>();
    const float* b = in[1]->data<float>();
    float* d = out[0]->data<float>();
    const auto sa = broadcast_strides(a_batch_, batch_), sb = broadcast_strides(b_batch_, batch_);
    const auto cs = batch_.contiguous_strides();
    const std::int64_t nb = batch_.numel(), m = m_, n = n_, k = k_;
    parallel_for(nb, 1, [&](std::int64_t b0, std::int64_t e0) {
      for (std::int64_t i = b0; i < e0; ++i) {
        std::int64_t oa = 0, ob = 0;
        for (int r = 0; r < batch_.rank(); ++r) {
          const std::int64_t idx = (i / cs[static_cast<std::size_t>(r)]) % batch_[r];
          oa += idx * sa[static_cast<std::size_t>(r)];
          ob += idx * sb[static_cast<std::size_t>(r)];
        }
        // batch strides are in batch elements; scale to matrices
        MapC A(a + oa * m * k, m, k);
        MapC B(b + ob * k * n, k, n);
        MapM D(d + i * m * n, m, n);
        D.noalias() = A * B;
      }
    });
  }

 private:
  bool a_vec_ = false, b_vec_ = false;
  std::int64_t m_ = 0, n_ = 0, k_ = 0;
  Shape batch_, a_batch_, b_batch_;
};

class GemmOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    require_inputs(in, 2, 3);
    const Shape& a = in[0].shape;
    const Shape& b = in[1].shape;
    if (a.rank() != 2 || b.rank() != 2) fail_input("Gemm needs 2D inputs, got " + a.str() + " and " + b.str());
    ta_ = node_.get_int("transA", 0) != 0;
    tb_ = node_.get_int("transB", 0) != 0;
    m_ = ta_ ? a[1] : a[0];
    k_ = ta_ ? a[0] : a[1];
    n_ = tb_ ? b[0] : b[1];
    if ((tb_ ? b[1] : b[0]) != k_) fail_input("inner dimensions differ: " + a.str() + " and " + b.str());
    out[0].shape = Shape{m_, n_};
    if (in.size() > 2 && in[2].present) broadcast_shapes(in[2].shape, out[0].shape, node_);
    out[0].dtype = DType::f32;
  }
  std::int64_t flops(const std::vector<ValueMeta>&, const std::vector<ValueMeta>&) const override { return 2 * m_ * n_ * k_; }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const float alpha = node_.get_float("alpha", 1.f), beta = node_.get_float("beta", 1.f);
    MapC A(in[0]->data<float>(), in[0]->dim(0), in[0]->dim(1));
    MapC B(in[1]->data<float>(), in[1]->dim(0), in[1]->dim(1));
    MapM D(out[0]->data<float>(), m_, n_);
    if (ta_ && tb_) D.noalias() = alpha * (A.transpose() * B.transpose());
    else if (ta_) D.noalias() = alpha * (A.transpose() * B);
    else if (tb_) D.noalias() = alpha * (A * B.transpose());
    else D.noalias() = alpha * (A * B);
    if (in.size() > 2 && in[2]) {
      const Tensor& c = *in[2];
      const float* pc = c.data<float>();
      const auto st = broadcast_strides(c.shape(), out[0]->shape());
      for (std::int64_t i = 0; i < m_; ++i)
        for (std::int64_t j = 0; j < n_; ++j) D(i, j) += beta * pc[i * st[0] + j * st[1]];
    }
  }

 private:
  bool ta_ = false, tb_ = false;
  std::int64_t m_ = 0, n_ = 0, k_ = 0;
};

// ------------------------------------------------------------------ Resize / Upsample

class ResizeOp final : public Op {
 public:
  ResizeOp(const Node& n, std::int64_t opset, bool upsample) : Op(n, opset), upsample_(upsample) {}
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    const Shape& x = in[0].shape;
    const int r = x.rank();
    mode_ = node_.get_string("mode", "nearest");
    if (mode_ == "bilinear" || mode_ == "trilinear") mode_ = "linear";
    if (mode_ != "nearest" && mode_ != "linear") fail_unsupported("resize mode '" + mode_ + "'");
    ctm_ = node_.get_string("coordinate_transformation_mode", upsample_ || opset_ < 11 ? "asymmetric" : "half_pixel");
    nearest_mode_ = node_.get_string("nearest_mode", upsample_ || opset_ < 11 ? "floor" : "round_prefer_floor");
    if (upsample_ && opset_ < 11 && mode_ == "nearest") nearest_mode_ = "floor";
    if (ctm_ == "tf_crop_and_resize") fail_unsupported("coordinate_transformation_mode tf_crop_and_resize");
    std::vector<float> scales;
    std::vector<std::int64_t> sizes;
    if (upsample_) {
      scales = node_.get_floats("scales");
      if (in.size() > 1 && in[1].present) {
        if (!in[1].constant) fail_unsupported("scales must be constant");
        scales = tensor_to_floats(*in[1].constant);
      }
    } else if (opset_ < 11) {
      if (!in[1].constant) fail_unsupported("scales must be constant");
      scales = tensor_to_floats(*in[1].constant);
    } else {
      if (in.size() > 2 && in[2].present) {
        if (!in[2].constant) fail_unsupported("scales must be constant");
        scales = tensor_to_floats(*in[2].constant);
      }
      if (in.size() > 3 && in[3].present) {
        if (!in[3].constant) fail_unsupported("sizes must be constant");
        sizes = tensor_to_int64s(*in[3].constant);
      }
    }
    const auto axes = node_.get_ints("axes");
    if (!axes.empty()) fail_unsupported("the axes attribute");
    if (node_.get_string("keep_aspect_ratio_policy", "stretch") != "stretch") fail_unsupported("keep_aspect_ratio_policy");
    scale_.assign(static_cast<std::size_t>(r), 1.f);
    std::vector<std::int64_t> od(static_cast<std::size_t>(r));
    if (!sizes.empty()) {
      if (static_cast<int>(sizes.size()) != r) fail_model("sizes must have one value per axis");
      for (int i = 0; i < r; ++i) {
        od[static_cast<std::size_t>(i)] = sizes[static_cast<std::size_t>(i)];
        scale_[static_cast<std::size_t>(i)] = static_cast<float>(sizes[static_cast<std::size_t>(i)]) / static_cast<float>(x[i]);
      }
    } else {
      if (static_cast<int>(scales.size()) != r) fail_model("scales must have one value per axis");
      for (int i = 0; i < r; ++i) {
        scale_[static_cast<std::size_t>(i)] = scales[static_cast<std::size_t>(i)];
        od[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(std::floor(static_cast<double>(x[i]) * scales[static_cast<std::size_t>(i)]));
      }
    }
    out[0].shape = Shape(od);
    out[0].dtype = in[0].dtype;
    if (in[0].dtype != DType::f32) fail_unsupported("only f32 Resize");
  }

  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const Shape& is = in[0]->shape();
    const Shape& os = out[0]->shape();
    const int r = is.rank();
    // Per axis, per output index: two source indices and the weight of the second.
    std::vector<std::vector<std::int64_t>> i0(static_cast<std::size_t>(r)), i1(static_cast<std::size_t>(r));
    std::vector<std::vector<float>> w1(static_cast<std::size_t>(r));
    for (int a = 0; a < r; ++a) {
      const auto k = static_cast<std::size_t>(a);
      const std::int64_t in_n = is[a], out_n = os[a];
      const double sc = scale_[k];
      for (std::int64_t o = 0; o < out_n; ++o) {
        double xo;
        if (ctm_ == "half_pixel") xo = (o + 0.5) / sc - 0.5;
        else if (ctm_ == "half_pixel_symmetric") {
          const double adj = static_cast<double>(out_n) / (sc * static_cast<double>(in_n));
          const double center = static_cast<double>(in_n) / 2.0;
          const double offset = center * (1.0 - adj);
          xo = offset + (o + 0.5) / sc - 0.5;
        } else if (ctm_ == "pytorch_half_pixel") xo = out_n > 1 ? (o + 0.5) / sc - 0.5 : 0.0;
        else if (ctm_ == "align_corners") xo = out_n > 1 ? static_cast<double>(o) * static_cast<double>(in_n - 1) / static_cast<double>(out_n - 1) : 0.0;
        else if (ctm_ == "asymmetric") xo = o / sc;
        else throw Error(ErrorCode::unsupported, node_.label() + ": coordinate_transformation_mode '" + ctm_ + "'");
        if (mode_ == "nearest") {
          std::int64_t v;
          if (nearest_mode_ == "floor") v = static_cast<std::int64_t>(std::floor(xo));
          else if (nearest_mode_ == "ceil") v = static_cast<std::int64_t>(std::ceil(xo));
          else if (nearest_mode_ == "round_prefer_ceil") v = static_cast<std::int64_t>(std::floor(xo + 0.5));
          else v = (xo - std::floor(xo) == 0.5) ? static_cast<std::int64_t>(std::floor(xo)) : static_cast<std::int64_t>(std::round(xo));
          v = std::clamp<std::int64_t>(v, 0, in_n - 1);
          i0[k].push_back(v);
          i1[k].push_back(v);
          w1[k].push_back(0.f);
        } else {
          xo = std::clamp(xo, 0.0, static_cast<double>(in_n - 1));
          const auto f = static_cast<std::int64_t>(std::floor(xo));
          const std::int64_t c = std::min(f + 1, in_n - 1);
          i0[k].push_back(f);
          i1[k].push_back(c);
          w1[k].push_back(static_cast<float>(xo - static_cast<double>(f)));
        }
      }
    }
    // Separable: one pass per resized axis (2 taps for linear, 1 for nearest), each a
    // weighted copy along that axis. Axes are processed from the last to the first.
    Tensor cur = *in[0];
    Shape cur_shape = is;
    for (int a = r - 1; a >= 0; --a) {
      const auto k = static_cast<std::size_t>(a);
      if (os[a] == cur_shape[a] && mode_ == "nearest") {
        bool identity = true;
        for (std::int64_t o = 0; o < os[a]; ++o) identity = identity && i0[k][static_cast<std::size_t>(o)] == o;
        if (identity) continue;
      }
      if (os[a] == cur_shape[a] && mode_ == "linear") {
        bool identity = true;
        for (std::int64_t o = 0; o < os[a]; ++o)
          identity = identity && i0[k][static_cast<std::size_t>(o)] == o && (w1[k][static_cast<std::size_t>(o)] == 0.f || i1[k][static_cast<std::size_t>(o)] == o);
        if (identity) continue;
      }
      Shape next_shape = cur_shape;
      next_shape[a] = os[a];
      const bool last = [&] {
        for (int b = a - 1; b >= 0; --b) {
          const auto kb = static_cast<std::size_t>(b);
          if (os[b] != cur_shape[b]) return false;
          for (std::int64_t o = 0; o < os[b]; ++o)
            if (i0[kb][static_cast<std::size_t>(o)] != o || (mode_ == "linear" && w1[kb][static_cast<std::size_t>(o)] != 0.f && i1[kb][static_cast<std::size_t>(o)] != o)) return false;
        }
        return true;
      }();
      Tensor next = last ? *out[0] : Tensor(next_shape, DType::f32);
      std::int64_t outer = 1, inner = 1;
      for (int b = 0; b < a; ++b) outer *= cur_shape[b];
      for (int b = a + 1; b < r; ++b) inner *= cur_shape[b];
      const std::int64_t nin = cur_shape[a], nout = os[a];
      const float* src = cur.data<float>();
      float* dst = next.data<float>();
      const auto& I0 = i0[k];
      const auto& I1 = i1[k];
      const auto& W = w1[k];
      parallel_for(outer * nout, std::max<std::int64_t>(1, 8192 / std::max<std::int64_t>(inner, 1)), [&](std::int64_t b0, std::int64_t e0) {
        for (std::int64_t row = b0; row < e0; ++row) {
          const std::int64_t o = row / nout, x = row % nout;
          const float w = W[static_cast<std::size_t>(x)];
          const float* p0 = src + (o * nin + I0[static_cast<std::size_t>(x)]) * inner;
          const float* p1 = src + (o * nin + I1[static_cast<std::size_t>(x)]) * inner;
          float* q = dst + row * inner;
          if (w == 0.f) {
            std::memcpy(q, p0, static_cast<std::size_t>(inner) * sizeof(float));
          } else {
            const float w0 = 1.f - w;
            for (std::int64_t i = 0; i < inner; ++i) q[i] = w0 * p0[i] + w * p1[i];
          }
        }
      });
      cur = next;
      cur_shape = next_shape;
      if (last) return;
    }
    // Nothing was resized (or the last pass was not the final one): copy.
    if (cur.raw() != out[0]->raw()) std::memcpy(out[0]->raw(), cur.raw(), out[0]->nbytes());
  }

 private:
  bool upsample_;
  std::string mode_, ctm_, nearest_mode_;
  std::vector<float> scale_;
};

// ------------------------------------------------------------------ reductions, ArgMax

enum class Reduce { mean, sum, max, min, prod, l2, sumsquare };

class ReduceOp final : public Op {
 public:
  ReduceOp(const Node& n, std::int64_t opset, Reduce k) : Op(n, opset), kind_(k) {}
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    const Shape& x = in[0].shape;
    std::vector<std::int64_t> axes = node_.get_ints("axes");
    if (in.size() > 1 && in[1].present) {
      if (!in[1].constant) fail_unsupported("axes must be constant");
      axes = tensor_to_int64s(*in[1].constant);
    }
    const bool keep = node_.get_int("keepdims", 1) != 0;
    const bool noop = node_.get_int("noop_with_empty_axes", 0) != 0;
    reduce_.assign(static_cast<std::size_t>(x.rank()), axes.empty() && !noop);
    for (auto a : axes) reduce_[static_cast<std::size_t>(norm_axis(a, x.rank(), node_))] = true;
    std::vector<std::int64_t> od;
    for (int i = 0; i < x.rank(); ++i) {
      if (!reduce_[static_cast<std::size_t>(i)]) od.push_back(x[i]);
      else if (keep) od.push_back(1);
    }
    out[0].shape = Shape(od);
    out[0].dtype = in[0].dtype;
    if (in[0].dtype != DType::f32) fail_unsupported("only f32 reductions");
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const Shape& x = in[0]->shape();
    const int r = x.rank();
    // Output index of each input element: strides of the kept axes.
    std::vector<std::int64_t> ostride(static_cast<std::size_t>(r), 0);
    std::int64_t acc = 1;
    for (int i = r - 1; i >= 0; --i)
      if (!reduce_[static_cast<std::size_t>(i)]) {
        ostride[static_cast<std::size_t>(i)] = acc;
        acc *= x[i];
      }
    const std::int64_t on = out[0]->numel();
    const std::int64_t count = on ? x.numel() / on : 0;
    std::vector<double> a(static_cast<std::size_t>(on), kind_ == Reduce::max ? -INFINITY : kind_ == Reduce::min ? INFINITY : kind_ == Reduce::prod ? 1.0 : 0.0);
    const float* s = in[0]->data<float>();
    std::array<std::int64_t, Shape::kMaxRank> idx{};
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      std::int64_t o = 0;
      for (int k = 0; k < r; ++k) o += idx[static_cast<std::size_t>(k)] * ostride[static_cast<std::size_t>(k)];
      double& t = a[static_cast<std::size_t>(o)];
      const double v = s[i];
      switch (kind_) {
        case Reduce::mean: case Reduce::sum: t += v; break;
        case Reduce::max: t = std::max(t, v); break;
        case Reduce::min: t = std::min(t, v); break;
        case Reduce::prod: t *= v; break;
        case Reduce::l2: case Reduce::sumsquare: t += v * v; break;
      }
      for (int k = r - 1; k >= 0; --k) {
        if (++idx[static_cast<std::size_t>(k)] < x[k]) break;
        idx[static_cast<std::size_t>(k)] = 0;
      }
    }
    float* d = out[0]->data<float>();
    for (std::int64_t i = 0; i < on; ++i) {
      double v = a[static_cast<std::size_t>(i)];
      if (kind_ == Reduce::mean) v /= static_cast<double>(std::max<std::int64_t>(count, 1));
      if (kind_ == Reduce::l2) v = std::sqrt(v);
      d[i] = static_cast<float>(v);
    }
  }

 private:
  Reduce kind_;
  std::vector<bool> reduce_;
};

class ArgMaxOp final : public Op {
 public:
  ArgMaxOp(const Node& n, std::int64_t opset, bool is_min) : Op(n, opset), min_(is_min) {}
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    const Shape& x = in[0].shape;
    axis_ = static_cast<int>(norm_axis(node_.get_int("axis", 0), x.rank(), node_));
    const bool keep = node_.get_int("keepdims", 1) != 0;
    std::vector<std::int64_t> od;
    for (int i = 0; i < x.rank(); ++i) {
      if (i != axis_) od.push_back(x[i]);
      else if (keep) od.push_back(1);
    }
    out[0].shape = Shape(od);
    out[0].dtype = DType::i64;
    if (in[0].dtype != DType::f32) fail_unsupported("only f32 ArgMax");
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    const Shape& x = in[0]->shape();
    std::int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis_; ++i) outer *= x[i];
    for (int i = axis_ + 1; i < x.rank(); ++i) inner *= x[i];
    const std::int64_t len = x[axis_];
    const bool last = node_.get_int("select_last_index", 0) != 0;
    const float* s = in[0]->data<float>();
    auto* d = out[0]->data<std::int64_t>();
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t i = 0; i < inner; ++i) {
        std::int64_t best = 0;
        float bv = s[o * len * inner + i];
        for (std::int64_t k = 1; k < len; ++k) {
          const float v = s[(o * len + k) * inner + i];
          const bool better = min_ ? (last ? v <= bv : v < bv) : (last ? v >= bv : v > bv);
          if (better) { bv = v; best = k; }
        }
        d[o * inner + i] = best;
      }
  }

 private:
  bool min_;
  int axis_ = 0;
};

// ------------------------------------------------------------------ Einsum

// General Einsum over any number of inputs (the contractions attention blocks export, such
// as "bhid,bhjd->bhij"): each output element sums the product of the inputs over the
// indices that do not appear in the output. Ellipsis is not supported.
class EinsumOp final : public Op {
 public:
  using Op::Op;
  void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) override {
    std::string eq = node_.get_string("equation", "");
    eq.erase(std::remove(eq.begin(), eq.end(), ' '), eq.end());
    if (eq.find("...") != std::string::npos) fail_unsupported("Einsum with an ellipsis");
    const auto arrow = eq.find("->");
    std::string lhs = arrow == std::string::npos ? eq : eq.substr(0, arrow);
    terms_.clear();
    std::size_t pos = 0;
    while (true) {
      const auto comma = lhs.find(',', pos);
      terms_.push_back(lhs.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
    if (terms_.size() != in.size()) fail_model("equation '" + eq + "' has " + std::to_string(terms_.size()) + " operands for " + std::to_string(in.size()) + " inputs");
    std::map<char, std::int64_t> size;
    for (std::size_t t = 0; t < terms_.size(); ++t) {
      if (static_cast<int>(terms_[t].size()) != in[t].shape.rank()) fail_input("operand " + std::to_string(t) + " has rank " + std::to_string(in[t].shape.rank()) + ", the equation says " + std::to_string(terms_[t].size()));
      if (in[t].dtype != DType::f32) fail_unsupported("only f32 Einsum");
      for (std::size_t i = 0; i < terms_[t].size(); ++i) {
        const char c = terms_[t][i];
        const std::int64_t d = in[t].shape[static_cast<int>(i)];
        auto [it, ins] = size.emplace(c, d);
        if (!ins && it->second != d) {
          if (it->second == 1) it->second = d;
          else if (d != 1) fail_input(std::string("index '") + c + "' has sizes " + std::to_string(it->second) + " and " + std::to_string(d));
        }
      }
    }
    if (arrow != std::string::npos) {
      out_ = eq.substr(arrow + 2);
    } else {  // implicit: indices appearing once, alphabetical
      out_.clear();
      for (const auto& [c, n] : size) {
        int count = 0;
        for (const auto& t : terms_) count += static_cast<int>(std::count(t.begin(), t.end(), c));
        if (count == 1) out_ += c;
      }
    }
    sum_.clear();
    for (const auto& [c, n] : size)
      if (out_.find(c) == std::string::npos) sum_ += c;
    sizes_ = size;
    std::vector<std::int64_t> od;
    for (char c : out_) {
      if (!size.count(c)) fail_model(std::string("output index '") + c + "' does not appear in any operand");
      od.push_back(size[c]);
    }
    out[0].shape = Shape(od);
    out[0].dtype = DType::f32;
  }
  void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void*) override {
    // Strides of every operand per index letter (0 where absent or broadcast).
    const std::string all = out_ + sum_;
    const std::size_t n = all.size(), nt = in.size();
    std::vector<std::int64_t> dims(n);
    for (std::size_t i = 0; i < n; ++i) dims[i] = sizes_[all[i]];
    std::vector<std::vector<std::int64_t>> st(nt, std::vector<std::int64_t>(n, 0));
    for (std::size_t t = 0; t < nt; ++t) {
      const auto cs = in[t]->shape().contiguous_strides();
      for (std::size_t i = 0; i < terms_[t].size(); ++i) {
        const std::size_t k = all.find(terms_[t][i]);
        if (in[t]->shape()[static_cast<int>(i)] != 1) st[t][k] += cs[i];
      }
    }
    std::int64_t sum_count = 1;
    for (std::size_t i = out_.size(); i < n; ++i) sum_count *= dims[i];
    float* d = out[0]->data<float>();
    const std::int64_t on = out[0]->numel();
    const std::size_t no = out_.size();
    parallel_for(on, 64, [&](std::int64_t b0, std::int64_t e0) {
      std::vector<std::int64_t> base(nt);
      for (std::int64_t o = b0; o < e0; ++o) {
        std::int64_t rem = o;
        std::fill(base.begin(), base.end(), 0);
        for (std::size_t i = no; i-- > 0;) {
          const std::int64_t idx = rem % dims[i];
          rem /= dims[i];
          for (std::size_t t = 0; t < nt; ++t) base[t] += idx * st[t][i];
        }
        double acc = 0;
        for (std::int64_t s = 0; s < sum_count; ++s) {
          std::int64_t r2 = s;
          double prod = 1;
          for (std::size_t t = 0; t < nt; ++t) {
            std::int64_t off = base[t], r3 = r2;
            for (std::size_t i = n; i-- > no;) {
              off += (r3 % dims[i]) * st[t][i];
              r3 /= dims[i];
            }
            prod *= in[t]->data<float>()[off];
          }
          acc += prod;
        }
        d[o] = static_cast<float>(acc);
      }
    });
  }

 private:
  std::vector<std::string> terms_;
  std::string out_, sum_;
  std::map<char, std::int64_t> sizes_;
};

}  // namespace

void register_nn_ops() {
  register_op("Conv", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ConvOp>(n, o, false); });
  register_op("ConvTranspose", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ConvOp>(n, o, true); });
  register_op("BatchNormalization", make_op<BatchNormOp>);
  register_op("InstanceNormalization", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<GroupNormOp>(n, o, true); });
  register_op("GroupNormalization", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<GroupNormOp>(n, o, false); });
  register_op("LayerNormalization", make_op<LayerNormOp>);
  register_op("MaxPool", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<PoolOp>(n, o, true, false); });
  register_op("AveragePool", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<PoolOp>(n, o, false, false); });
  register_op("GlobalMaxPool", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<PoolOp>(n, o, true, true); });
  register_op("GlobalAveragePool", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<PoolOp>(n, o, false, true); });
  register_op("Softmax", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<SoftmaxOp>(n, o, false); });
  register_op("LogSoftmax", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<SoftmaxOp>(n, o, true); });
  register_op("MatMul", make_op<MatMulOp>);
  register_op("Gemm", make_op<GemmOp>);
  register_op("Resize", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ResizeOp>(n, o, false); });
  register_op("Upsample", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ResizeOp>(n, o, true); });
  register_op("ReduceMean", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ReduceOp>(n, o, Reduce::mean); });
  register_op("ReduceSum", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ReduceOp>(n, o, Reduce::sum); });
  register_op("ReduceMax", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ReduceOp>(n, o, Reduce::max); });
  register_op("ReduceMin", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ReduceOp>(n, o, Reduce::min); });
  register_op("ReduceProd", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ReduceOp>(n, o, Reduce::prod); });
  register_op("ReduceL2", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ReduceOp>(n, o, Reduce::l2); });
  register_op("ReduceSumSquare", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ReduceOp>(n, o, Reduce::sumsquare); });
  register_op("ArgMax", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ArgMaxOp>(n, o, false); });
  register_op("Einsum", make_op<EinsumOp>);
  register_op("ArgMin", [](const Node& n, std::int64_t o) -> std::unique_ptr<Op> { return std::make_unique<ArgMaxOp>(n, o, true); });
}


Activation parse_activation(const Node& n, float& alpha, float& beta) {
  const std::string a = n.get_string("voxinfer.activation", "");
  alpha = n.get_float("voxinfer.alpha", 0.f);
  beta = n.get_float("voxinfer.beta", 0.f);
  if (a.empty() || a == "none") return Activation::none;
  if (a == "relu") return Activation::relu;
  if (a == "leaky_relu") return Activation::leaky_relu;
  if (a == "prelu") return Activation::prelu;
  if (a == "sigmoid") return Activation::sigmoid;
  if (a == "clip") return Activation::clip;
  throw Error(ErrorCode::invalid_model, n.label() + ": unknown fused activation '" + a + "'");
}

}  // namespace voxinfer::graph
