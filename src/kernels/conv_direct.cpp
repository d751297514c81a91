// The direct blocked convolution operator: validates the problem for one implementation
// of the list, packs weights, bias and slopes once, and runs the ISA's compute function
// over work items with voxinfer::parallel_for. Built for baseline x86-64: only the compute
// functions (one file per ISA) use wider instructions.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "kernels/conv_direct.h"
#include "voxinfer/core/tensor.h"
#include "voxinfer/core/threading.h"

namespace voxinfer::kernels::direct {

void conv3d_f32_nCdhw8c__generic(const Plan&, const float*, float*, const float*, std::int64_t, std::int64_t);
#if defined(__x86_64__) || defined(_M_X64)
void conv3d_f32_nCdhw8c__avx2_fma(const Plan&, const float*, float*, const float*, std::int64_t, std::int64_t);
void conv3d_f32_nCdhw16c__avx512(const Plan&, const float*, float*, const float*, std::int64_t, std::int64_t);
#endif

namespace {

// Must match the switch in each ISA file. The first shape that divides the channel blocks
// of a group is used: more channel blocks per tile measured faster on every U-Net layer.
constexpr TileShape kShapesAvx2[] = {{4, 3}, {2, 6}, {1, 12}, {0, 0}};
constexpr TileShape kShapesAvx512[] = {{4, 6}, {2, 12}, {1, 16}, {0, 0}};
constexpr TileShape kShapesGeneric[] = {{2, 2}, {1, 4}, {0, 0}};

// Best first: the first implementation that accepts a problem wins.
constexpr Impl kImpls[] = {
#if defined(__x86_64__) || defined(_M_X64)
    {"conv3d_f32_nCdhw16c__avx512", Isa::avx512, 16, false, conv3d_f32_nCdhw16c__avx512, kShapesAvx512},
    {"deconv3d_f32_nCdhw16c__avx512", Isa::avx512, 16, true, conv3d_f32_nCdhw16c__avx512, kShapesAvx512},
    {"conv3d_f32_nCdhw8c__avx2_fma", Isa::avx2, 8, false, conv3d_f32_nCdhw8c__avx2_fma, kShapesAvx2},
    {"deconv3d_f32_nCdhw8c__avx2_fma", Isa::avx2, 8, true, conv3d_f32_nCdhw8c__avx2_fma, kShapesAvx2},
#endif
    {"conv3d_f32_nCdhw8c__generic", Isa::generic, 8, false, conv3d_f32_nCdhw8c__generic, kShapesGeneric},
    {"deconv3d_f32_nCdhw8c__generic", Isa::generic, 8, true, conv3d_f32_nCdhw8c__generic, kShapesGeneric},
};

// Channels up to this count are read from plain NCDHW (first layers: CT, MR, 4-modality
// MR), since padding 1-4 channels to a block of 8 or 16 would multiply the work.
constexpr std::int64_t kMaxPlainSrcChannels = 4;
// Target bytes of packed weights per pass over the output rows: they should stay in L1.
constexpr std::int64_t kWeightPassBytes = 24 * 1024;
// ConvTranspose k2s2: bytes of the weights of the residue classes a row pair visits, per tile.
constexpr std::int64_t kClassWeightBytes = 16 * 1024;
// Output pixels a work item should cover so that small planes still amortise a pass.
constexpr std::int64_t kItemPixels = 64;

std::string reject(const Impl& impl, const std::string& reason) {
  return std::string(impl.name) + ": " + reason + "\n";
}

class DirectConv final : public ConvKernel {
 public:
  DirectConv(const Impl& impl, const Plan& plan, std::shared_ptr<std::byte> storage)
      : impl_(impl), plan_(plan), storage_(std::move(storage)) {}

  const char* name() const override { return impl_.name; }
  Layout src_layout() const override {
    if (plan_.plain_src) return Layout::plain;
    return plan_.block == 16 ? Layout::nCdhw16c : Layout::nCdhw8c;
  }
  Layout dst_layout() const override { return plan_.block == 16 ? Layout::nCdhw16c : Layout::nCdhw8c; }
  std::size_t workspace_bytes() const override { return 0; }

  void run(const float* src, float* dst, const float* residual, void* /*workspace*/) const override {
    // parallel_for takes a std::function: capture one pointer so that it never allocates.
    struct Args {
      const Plan* plan;
      RunFn fn;
      const float* src;
      float* dst;
      const float* res;
    };
    const Args args{&plan_, impl_.run, src, dst, plan_.residual ? residual : nullptr};
    const Args* a = &args;
    const std::int64_t items = plan_.items();
    // A fixed number of chunks, independent of the thread count; every item writes its
    // own output rows, so the result does not depend on how chunks are scheduled.
    const std::int64_t grain = std::max<std::int64_t>(1, items / 256);
    parallel_for(items, grain, [a](std::int64_t b, std::int64_t e) { a->fn(*a->plan, a->src, a->dst, a->res, b, e); });
  }

  std::int64_t plane_alignment() const override { return plan_.transposed ? 0 : 1; }
  void run_planes(const float* src, std::int64_t src_planes, float* dst, std::int64_t d_begin, std::int64_t planes,
                  void* /*workspace*/) const override {
    Plan q = plan_;
    q.od = planes;
    q.d_begin = d_begin;
    q.src_planes = src_planes;
    q.residual = false;
    struct Args {
      const Plan* plan;
      RunFn fn;
      const float* src;
      float* dst;
    };
    const Args args{&q, impl_.run, src, dst};
    const Args* a = &args;
    const std::int64_t grain = std::max<std::int64_t>(1, q.items() / 256);
    parallel_for(q.items(), grain, [a](std::int64_t b, std::int64_t e) { a->fn(*a->plan, a->src, a->dst, nullptr, b, e); });
  }

 private:
  const Impl& impl_;
  Plan plan_;
  std::shared_ptr<std::byte> storage_;  // packed weights, bias and slopes
};

}  // namespace

const Impl* impls(std::size_t* count) {
  *count = sizeof(kImpls) / sizeof(kImpls[0]);
  return kImpls;
}

std::unique_ptr<ConvKernel> create(const Impl& impl, const ConvParams& p, const float* wei, const Epilogue& ep,
                                   bool transposed, const Tuning& tuning, std::string* why) {
  auto no = [&](const std::string& reason) -> std::unique_ptr<ConvKernel> {
    if (why) *why += reject(impl, reason);
    return nullptr;
  };
  if (impl.transposed != transposed) return no(transposed ? "not a ConvTranspose kernel" : "only ConvTranspose");
  const std::int64_t B = impl.block;
  if (p.n < 1 || p.ic < 1 || p.oc < 1 || p.id < 1 || p.ih < 1 || p.iw < 1 || p.od < 1 || p.oh < 1 || p.ow < 1 ||
      p.kd < 1 || p.kh < 1 || p.kw < 1 || p.sd < 1 || p.sh < 1 || p.sw < 1 || p.dd < 1 || p.dh < 1 || p.dw < 1 ||
      p.pd < 0 || p.ph < 0 || p.pw < 0 || p.groups < 1 || p.ic % p.groups || p.oc % p.groups)
    return no("invalid parameters " + p.str());
  if (ep.act == Activation::prelu && !ep.slope) return no("PReLU without slopes");

  Plan plan;
  plan.n = p.n, plan.ic = p.ic, plan.id = p.id, plan.ih = p.ih, plan.iw = p.iw;
  plan.oc = p.oc, plan.od = p.od, plan.oh = p.oh, plan.ow = p.ow;
  plan.kd = p.kd, plan.kh = p.kh, plan.kw = p.kw, plan.sd = p.sd, plan.sh = p.sh, plan.sw = p.sw;
  plan.dd = p.dd, plan.dh = p.dh, plan.dw = p.dw, plan.pd = p.pd, plan.ph = p.ph, plan.pw = p.pw;
  plan.groups = p.groups;
  plan.transposed = transposed;
  plan.block = impl.block;
  plan.icg = p.ic / p.groups;
  const std::int64_t ocg = p.oc / p.groups;

  if (transposed) {
    if (p.groups != 1) return no("ConvTranspose with groups=" + std::to_string(p.groups) + " (only 1)");
    if (p.dd != 1 || p.dh != 1 || p.dw != 1) return no("ConvTranspose with dilation, got " + p.str());
    if (p.sd > Plan::kMaxStride || p.sh > Plan::kMaxStride || p.sw > Plan::kMaxStride)
      return no("ConvTranspose stride above " + std::to_string(Plan::kMaxStride) + ", got " + p.str());
  } else {
    // Output sizes are free: taps outside the input are skipped, like the reference does.
    if (p.sw > 2) return no("stride along W " + std::to_string(p.sw) + " (only 1 and 2)");
  }
  // Layers whose channels all fit a block of 8 (MeshNet's 5-channel stack) would fill a
  // third of each 16-lane vector: the 8-channel kernels further down the list do half the
  // work and keep the activations half the size. Asked for by name (tests), it still runs.
  if (B > 8 && !tuning.any_width && plan.icg <= 8 && ocg <= 8)
    return no("all channels fit a block of 8 (ic/groups=" + std::to_string(plan.icg) +
              " oc/groups=" + std::to_string(ocg) + "): the 8-channel kernels waste less");
  if (p.groups > 1 && (plan.icg % B || ocg % B))
    return no("groups=" + std::to_string(p.groups) + " needs channels per group that are multiples of " +
              std::to_string(B) + ", got ic/groups=" + std::to_string(plan.icg) + " oc/groups=" + std::to_string(ocg));

  plan.plain_src = !transposed && p.groups == 1 &&
                   (tuning.plain_src >= 0 ? tuning.plain_src == 1 : p.ic <= kMaxPlainSrcChannels);
  if (plan.plain_src && p.ic > B) return no("plain src needs at most " + std::to_string(B) + " input channels");
  plan.icb = plan.plain_src ? 1 : (plan.icg + B - 1) / B;
  plan.icblk = plan.plain_src ? p.ic : B;
  plan.ocb = (p.oc + B - 1) / B;
  plan.ocb_g = p.groups == 1 ? plan.ocb : ocg / B;

  // Output-channel blocks per tile: a listed shape that divides the blocks of a group.
  int nb = 0, ur = 0;
  if (tuning.nb) {
    for (const TileShape* s = impl.shapes; s->nb; ++s)
      if (s->nb == tuning.nb) nb = s->nb, ur = s->ur;
    if (!nb || plan.ocb_g % nb) return no("tile of " + std::to_string(tuning.nb) + " channel blocks does not fit");
  } else {
    // A ConvTranspose with one tap per residue class (k2s2) visits the weights of sh * sw
    // classes along a row pair; the first shape whose share of them stays within half of L1
    // (64 -> 32 channels on AVX-512: 2 blocks per tile is 32 KiB, 1 block 16 KiB, and 1.3-1.5x
    // faster), else the first that divides the blocks.
    if (transposed && p.kd == p.sd && p.kh == p.sh && p.kw == p.sw)
      for (const TileShape* s = impl.shapes; s->nb && !nb; ++s)
        if (plan.ocb_g % s->nb == 0 &&
            p.sh * p.sw * plan.icb * B * s->nb * B * static_cast<std::int64_t>(sizeof(float)) <= kClassWeightBytes)
          nb = s->nb, ur = s->ur;
    for (const TileShape* s = impl.shapes; s->nb && !nb; ++s)
      if (plan.ocb_g % s->nb == 0) nb = s->nb, ur = s->ur;
  }
  if (!nb) return no("no tile shape divides " + std::to_string(plan.ocb_g) + " channel blocks");
  plan.nb = nb;
  plan.tiles_g = plan.ocb_g / nb;
  const std::int64_t taps = p.kd * p.kh * p.kw;
  const std::int64_t pass_bytes = taps * plan.icblk * nb * B * static_cast<std::int64_t>(sizeof(float));
  plan.icb_step = tuning.icb_step > 0 ? std::min(tuning.icb_step, plan.icb)
                                      : std::clamp<std::int64_t>(kWeightPassBytes / pass_bytes, 1, plan.icb);
  // Off unless asked for: one pass per depth tap measured slower on the U-Net layers, where
  // the extra passes over the output rows cost more than the L1 misses they save.
  plan.kd_split = !transposed && p.kd > 1 && tuning.kd_split == 1;
  // Plane tiles when whole-row tiles would leave many register slots idle (rows shorter
  // than the tile, or a few tiles per row with a ragged end). Plain-src layers read padded
  // rows instead, where a ragged end costs one tile per row, while plane tiles check every
  // pixel of every tap (DenseNet's 7x7x7 stride-2 stem, 32-pixel rows: 27.6 -> 8.1 ms).
  const bool ragged = p.ow % ur != 0 && p.ow <= 4 * ur && !plan.plain_src;
  plan.plane = !transposed && (tuning.plane >= 0 ? tuning.plane == 1 : p.ow < ur || ragged);
  const std::int64_t row_len = p.ow, nrows = p.oh;
  plan.rows = tuning.rows > 0 ? std::min(tuning.rows, nrows)
                              : std::clamp<std::int64_t>((kItemPixels + row_len - 1) / row_len, 1, nrows);
  plan.row_groups = (nrows + plan.rows - 1) / plan.rows;
  if (!transposed) {
    plan.ow_lo = std::min(p.ow, (p.pw + p.sw - 1) / p.sw);
    const std::int64_t last = p.iw - 1 + p.pw - (p.kw - 1) * p.dw;  // ow * sw <= last
    plan.ow_hi = last < 0 ? 0 : std::min(p.ow, last / p.sw + 1);
    plan.ow_hi = std::max(plan.ow_hi, plan.ow_lo);
  }

  // ConvTranspose residue classes per axis: output s*m + r reads input m + off + j through
  // kernel tap k = r + pad - s*(off + j), j < count.
  const std::int64_t kk[3] = {p.kd, p.kh, p.kw}, ss[3] = {p.sd, p.sh, p.sw}, pp[3] = {p.pd, p.ph, p.pw};
  auto tap_k = [&](int axis, std::int64_t r, std::int64_t j) {
    return r + pp[axis] - ss[axis] * (plan.tap_off[axis][r] + j);
  };
  if (transposed) {
    for (int a = 0; a < 3; ++a)
      for (std::int64_t r = 0; r < ss[a]; ++r) {
        std::int64_t kmax = kk[a] - 1;
        while (kmax >= 0 && ((r + pp[a] - kmax) % ss[a] + ss[a]) % ss[a] != 0) --kmax;
        plan.tap_n[a][r] = kmax < 0 ? 0 : kmax / ss[a] + 1;
        plan.tap_off[a][r] = kmax < 0 ? 0 : (r + pp[a] - kmax) / ss[a];
      }
  }

  // One allocation: packed weights (per ConvTranspose class), then bias, then slopes.
  const std::int64_t per_tap = plan.tiles() * plan.icb * plan.icblk * nb * B;
  std::int64_t wsize = 0;
  if (transposed) {
    for (std::int64_t rd = 0; rd < p.sd; ++rd)
      for (std::int64_t rh = 0; rh < p.sh; ++rh)
        for (std::int64_t rw = 0; rw < p.sw; ++rw) {
          plan.class_off[(rd * p.sh + rh) * p.sw + rw] = wsize;
          wsize += plan.tap_n[0][rd] * plan.tap_n[1][rh] * plan.tap_n[2][rw] * per_tap;
        }
  } else {
    wsize = taps * per_tap;
  }
  const std::int64_t csize = plan.ocb * B;
  auto storage = aligned_bytes(static_cast<std::size_t>(wsize + 2 * csize) * sizeof(float));
  float* pw = reinterpret_cast<float*>(storage.get());
  float* pb = pw + wsize;
  float* ps = pb + csize;
  // Packs the taps [nd x nh x nw] of one weight set; wei_at(g, o, il, jd, jh, jw) reads a plain weight.
  auto pack = [&](float* out, std::int64_t nd, std::int64_t nh, std::int64_t nw, auto wei_at) {
    std::int64_t k = 0;
    for (std::int64_t t = 0; t < plan.tiles(); ++t) {
      const std::int64_t g = t / plan.tiles_g;
      const std::int64_t ob0 = g * plan.ocb_g + (t % plan.tiles_g) * nb;
      for (std::int64_t b = 0; b < plan.icb; ++b)
        for (std::int64_t jd = 0; jd < nd; ++jd)
          for (std::int64_t jh = 0; jh < nh; ++jh)
            for (std::int64_t jw = 0; jw < nw; ++jw)
              for (std::int64_t i = 0; i < plan.icblk; ++i)
                for (std::int64_t j = 0; j < nb; ++j)
                  for (std::int64_t l = 0; l < B; ++l, ++k) {
                    const std::int64_t o = (ob0 + j) * B + l;    // output channel
                    const std::int64_t il = b * plan.icblk + i;  // input channel within the group
                    if (o < p.oc && il < plan.icg) out[k] = wei_at(g, o, il, jd, jh, jw);  // else stays zero
                  }
    }
  };
  if (transposed) {
    for (std::int64_t rd = 0; rd < p.sd; ++rd)
      for (std::int64_t rh = 0; rh < p.sh; ++rh)
        for (std::int64_t rw = 0; rw < p.sw; ++rw)
          pack(pw + plan.class_off[(rd * p.sh + rh) * p.sw + rw], plan.tap_n[0][rd], plan.tap_n[1][rh],
               plan.tap_n[2][rw],
               [&](std::int64_t, std::int64_t o, std::int64_t il, std::int64_t jd, std::int64_t jh, std::int64_t jw) {
                 const std::int64_t kd = tap_k(0, rd, jd), kh = tap_k(1, rh, jh), kw = tap_k(2, rw, jw);
                 return wei[((il * p.oc + o) * p.kd + kd) * p.kh * p.kw + kh * p.kw + kw];
               });
  } else {
    pack(pw, p.kd, p.kh, p.kw,
         [&](std::int64_t, std::int64_t o, std::int64_t il, std::int64_t kd, std::int64_t kh, std::int64_t kw) {
           return wei[((o * plan.icg + il) * p.kd + kd) * p.kh * p.kw + kh * p.kw + kw];  // o is global
         });
  }
  for (std::int64_t o = 0; o < p.oc; ++o) {
    pb[o] = ep.bias ? ep.bias[o] : 0.f;
    if (ep.act == Activation::prelu) ps[o] = ep.slope[ep.slope_per_channel ? o : 0];
  }
  plan.wei = pw, plan.bias = pb, plan.slope = ps;
  plan.act = ep.act, plan.alpha = ep.alpha, plan.beta = ep.beta;
  plan.residual = ep.residual != nullptr;
  return std::make_unique<DirectConv>(impl, plan, std::move(storage));
}

}  // namespace voxinfer::kernels::direct
