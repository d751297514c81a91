// Winograd F(2x2x2, 3x3x3) convolution: checks, weight transform and threading (baseline
// ISA); the compute functions live in the per-ISA kernel files (winograd_body.h).
#include "kernels/winograd.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "voxinfer/core/tensor.h"
#include "voxinfer/core/threading.h"

namespace voxinfer::kernels::winograd {
namespace {

// Largest channel counts taken (the scratch of a chunk grows with them).
constexpr std::int64_t kMaxChannels = 512;

class WinogradConv final : public ConvKernel {
 public:
  WinogradConv(const char* name, RunFn fn, const Plan& plan, std::shared_ptr<std::byte> storage, int slots)
      : name_(name), fn_(fn), plan_(plan), storage_(std::move(storage)), slots_(slots) {}

  const char* name() const override { return name_; }
  Layout src_layout() const override { return plan_.block == 16 ? Layout::nCdhw16c : Layout::nCdhw8c; }
  Layout dst_layout() const override { return src_layout(); }
  std::size_t workspace_bytes() const override { return static_cast<std::size_t>(slots_) * slot_bytes(); }

  void run(const float* src, float* dst, const float* residual, void* workspace) const override {
    run_plan(plan_, src, dst, plan_.residual ? residual : nullptr, workspace);
  }
  std::int64_t plane_alignment() const override { return 2; }
  void run_planes(const float* src, std::int64_t src_planes, float* dst, std::int64_t d_begin, std::int64_t planes,
                  void* workspace) const override {
    Plan q = plan_;
    q.od = planes;
    q.td = (planes + 1) / 2;
    q.d_begin = d_begin;
    q.src_planes = src_planes;
    q.residual = false;
    run_plan(q, src, dst, nullptr, workspace);
  }

 private:
  void run_plan(const Plan& plan, const float* src, float* dst, const float* residual, void* workspace) const {
    struct Args {
      const WinogradConv* self;
      const Plan* plan;
      const float* src;
      float* dst;
      const float* res;
      std::byte* ws;
    };
    const Args args{this, &plan, src, dst, residual, static_cast<std::byte*>(workspace)};
    const Args* a = &args;
    // A fixed number of slots, each with its own scratch and a fixed share of the items:
    // every item writes its own outputs, so the result does not depend on the thread count.
    parallel_for(slots_, 1, [a](std::int64_t b, std::int64_t e) {
      const Plan& p = *a->plan;
      for (std::int64_t s = b; s < e; ++s) {
        std::int64_t ib = 0, ie = 0;
        balance211(p.items(), a->self->slots_, static_cast<int>(s), ib, ie);
        if (ib < ie)
          a->self->fn_(p, a->src, a->dst, a->res, reinterpret_cast<float*>(a->ws + s * static_cast<std::int64_t>(a->self->slot_bytes())),
                       ib, ie);
      }
    });
  }

  std::size_t slot_bytes() const {
    return static_cast<std::size_t>(round_up(plan_.scratch_floats() * static_cast<std::int64_t>(sizeof(float)), 64));
  }
  const char* name_;
  RunFn fn_;
  Plan plan_;
  std::shared_ptr<std::byte> storage_;  // transformed weights, bias, slopes
  int slots_;
};

}  // namespace

std::unique_ptr<ConvKernel> create(const ConvParams& p, const float* wei, const Epilogue& ep, Isa isa, std::string* why) {
  const bool avx512 = isa == Isa::avx512;
  const char* name = avx512 ? "winograd_f2k3_nCdhw16c__avx512" : "winograd_f2k3_nCdhw8c__avx2_fma";
  auto no = [&](const std::string& reason) -> std::unique_ptr<ConvKernel> {
    if (why) *why += std::string(name) + ": " + reason + "\n";
    return nullptr;
  };
  if (isa != Isa::avx512 && isa != Isa::avx2) return no("needs AVX2 or AVX-512");
  if (const char* env = std::getenv("VOXINFER_WINOGRAD"); env && std::string(env) == "0") return no("disabled by VOXINFER_WINOGRAD=0");
  if (p.kd != 3 || p.kh != 3 || p.kw != 3) return no("kernel is not 3x3x3");
  if (p.sd != 1 || p.sh != 1 || p.sw != 1 || p.dd != 1 || p.dh != 1 || p.dw != 1) return no("stride or dilation is not 1");
  if (p.groups != 1) return no("grouped");
  if (p.ic <= 4) return no("at most 4 input channels (read from a plain input by the direct kernels)");
  if (p.ic > kMaxChannels || p.oc > kMaxChannels) return no("more than " + std::to_string(kMaxChannels) + " channels");
  if (avx512 && std::max(p.ic, p.oc) <= 8) return no("channels all fit a block of 8 (the 8-channel kernels waste less)");

  Plan plan;
  const int B = avx512 ? 16 : 8;
  const int slots = std::clamp(std::max(num_threads(), static_cast<int>(std::thread::hardware_concurrency())), 1, 64);
  plan.n = p.n, plan.ic = p.ic, plan.id = p.id, plan.ih = p.ih, plan.iw = p.iw;
  plan.oc = p.oc, plan.od = p.od, plan.oh = p.oh, plan.ow = p.ow;
  plan.pd = p.pd, plan.ph = p.ph, plan.pw = p.pw;
  plan.block = B;
  plan.icb = (p.ic + B - 1) / B;
  plan.ocb = (p.oc + B - 1) / B;
  plan.td = (p.od + 1) / 2, plan.th = (p.oh + 1) / 2, plan.tw = (p.ow + 1) / 2;
  // Tiles per chunk: every chunk streams all transformed weights (64 * ic * oc floats) once,
  // so layers with more channels take larger chunks, whose scratch (64 * nt * (ic + oc)
  // floats) outgrows L2 but costs less than streaming the weights more often. No larger than
  // the image's tiles; halved while there are fewer chunks than slots, then the output
  // channels are split into groups to give every slot work.
  const int ur = avx512 ? 8 : 4;  // the GEMM's tile step (run_items' UR)
  const std::int64_t wbytes = 64 * plan.icb * plan.ocb * B * B * 4;
  plan.nt = wbytes <= (1 << 20) ? 16 : wbytes <= (8 << 20) ? 32 : 64;
  plan.nt = std::min(plan.nt, round_up(plan.tiles(), ur));
  while (plan.n * plan.chunks() < slots && plan.nt >= 32) plan.nt = round_up(plan.nt / 2, ur);
  plan.groups = std::clamp<std::int64_t>(slots / (plan.n * plan.chunks()), 1, plan.ocb);
  plan.gb = (plan.ocb + plan.groups - 1) / plan.groups;
  if (plan.ocb % 2 == 0 && plan.gb % 2 != 0 && plan.groups > 1) ++plan.gb;  // keep the 2-block register tile
  plan.groups = (plan.ocb + plan.gb - 1) / plan.gb;
  plan.nb = plan.ocb % 2 == 0 && plan.gb % 2 == 0 ? 2 : 1;
  plan.act = ep.act, plan.alpha = ep.alpha, plan.beta = ep.beta;
  plan.residual = ep.residual != nullptr;

  // U[xi][ic][ob][lane] = (G g G^T) along the three axes, in double; zero beyond ic and oc.
  const std::int64_t icp = plan.icb * B, ocp = plan.ocb * B;
  const std::int64_t usize = 64 * icp * ocp;
  auto storage = aligned_bytes(static_cast<std::size_t>(usize + 2 * ocp) * sizeof(float));
  float* u = reinterpret_cast<float*>(storage.get());
  float* bias = u + usize;
  float* slope = bias + ocp;
  std::memset(u, 0, static_cast<std::size_t>(usize + 2 * ocp) * sizeof(float));
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  for (std::int64_t o = 0; o < p.oc; ++o)
    for (std::int64_t i = 0; i < p.ic; ++i) {
      const float* g = wei + (o * p.ic + i) * 27;
      double t1[4][3][3], t2[4][4][3];
      for (int a = 0; a < 4; ++a)
        for (int kh = 0; kh < 3; ++kh)
          for (int kw = 0; kw < 3; ++kw) {
            double s = 0;
            for (int kd = 0; kd < 3; ++kd) s += G[a][kd] * g[(kd * 3 + kh) * 3 + kw];
            t1[a][kh][kw] = s;
          }
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b)
          for (int kw = 0; kw < 3; ++kw) {
            double s = 0;
            for (int kh = 0; kh < 3; ++kh) s += G[b][kh] * t1[a][kh][kw];
            t2[a][b][kw] = s;
          }
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b)
          for (int c = 0; c < 4; ++c) {
            double s = 0;
            for (int kw = 0; kw < 3; ++kw) s += G[c][kw] * t2[a][b][kw];
            const int xi = (a * 4 + b) * 4 + c;
            u[((xi * icp + i) * plan.ocb + o / B) * B + o % B] = static_cast<float>(s);
          }
    }
  for (std::int64_t o = 0; o < p.oc; ++o) {
    bias[o] = ep.bias ? ep.bias[o] : 0.f;
    if (ep.act == Activation::prelu) slope[o] = ep.slope[ep.slope_per_channel ? o : 0];
  }
  plan.u = u, plan.bias = bias, plan.slope = slope;
  return std::make_unique<WinogradConv>(name, avx512 ? winograd_f2k3_nCdhw16c__avx512 : winograd_f2k3_nCdhw8c__avx2_fma, plan,
                                        std::move(storage), slots);
}

}  // namespace voxinfer::kernels::winograd
