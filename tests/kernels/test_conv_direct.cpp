// Every optimized convolution of the implementation list against the reference kernels,
// over generated sweeps: channels below, equal to, above and not a multiple of the block,
// odd D/H/W, kernels 1-7 (anisotropic), strides, dilations, padding, groups, partial tiles,
// every epilogue. Each case also checks that 1 and 2 threads give the same bytes, that
// nothing is written outside dst (guard zones) and that dst's channel padding is zero.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/conv_direct.h"
#include "kernels/winograd.h"
#include "voxinfer/core/cpu.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/kernels/conv.h"
#include "voxinfer/kernels/reorder.h"

namespace voxinfer::kernels {
namespace {

// Bound on max|err| / max(1, max|value before the activation|): tighter than the project
// bound (1e-4 of the output) and holds with float accumulation over reductions of up to
// ~11000 terms (64 channels x 5x7x5 taps), measured over 3000 random cases.
constexpr double kTolerance = 2e-5;
constexpr std::size_t kGuard = 64;
constexpr std::uint32_t kSentinelBits = 0x7fc0beefu;  // a NaN nothing computes

float sentinel() {
  float f;
  std::memcpy(&f, &kSentinelBits, sizeof f);
  return f;
}
bool is_sentinel(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u == kSentinelBits;
}

std::vector<float> random_vec(std::size_t n, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

struct EpilogueSpec {
  Activation act = Activation::none;
  bool bias = false, residual = false, slope_per_channel = true;
};

std::string act_name(Activation a) {
  switch (a) {
    case Activation::none: return "none";
    case Activation::relu: return "relu";
    case Activation::leaky_relu: return "leaky_relu";
    case Activation::prelu: return "prelu";
    case Activation::sigmoid: return "sigmoid";
    case Activation::clip: return "clip";
  }
  return "?";
}

struct Case {
  ConvParams p;
  bool transposed = false;
  EpilogueSpec ep;
  direct::Tuning tuning;
  std::string str() const {
    std::ostringstream s;
    s << (transposed ? "ConvTranspose " : "Conv ") << p.str() << " act=" << act_name(ep.act) << " bias=" << ep.bias
      << " residual=" << ep.residual << " slope_per_channel=" << ep.slope_per_channel << " tuning{nb=" << tuning.nb
      << " icb_step=" << tuning.icb_step << " rows=" << tuning.rows << " plain_src=" << tuning.plain_src
      << " kd_split=" << tuning.kd_split << " plane=" << tuning.plane << "}";
    return s.str();
  }
};

std::int64_t src_spatial(const ConvParams& p) { return p.id * p.ih * p.iw; }
std::int64_t dst_spatial(const ConvParams& p) { return p.od * p.oh * p.ow; }

// Runs one case through the kernel make(p, wei, ep, why) creates (named `name`, channel block
// `block`), against the reference within tol * max(1, max|value before the activation|);
// returns false (with a message) when it rejects the case, so that sweeps can count accepted
// cases.
template <class Make>
bool check_kernel(const char* name, int block, double tol, Make make, const Case& cs, std::uint32_t seed, bool expect_accept) {
  const ConvParams& p = cs.p;
  SCOPED_TRACE(std::string(name) + " " + cs.str());
  std::mt19937 rng(seed);
  const std::int64_t icg = p.ic / p.groups;
  const std::size_t wsize = static_cast<std::size_t>(cs.transposed ? p.ic * (p.oc / p.groups) * p.kd * p.kh * p.kw
                                                                   : p.oc * icg * p.kd * p.kh * p.kw);
  const auto src = random_vec(static_cast<std::size_t>(p.n * p.ic * src_spatial(p)), rng);
  const auto wei = random_vec(wsize, rng);
  const auto bias = random_vec(static_cast<std::size_t>(p.oc), rng);
  const auto res = random_vec(static_cast<std::size_t>(p.n * p.oc * dst_spatial(p)), rng);
  const auto slopes = random_vec(static_cast<std::size_t>(p.oc), rng, 0.f, 0.5f);
  Epilogue ep;
  ep.act = cs.ep.act;
  ep.bias = cs.ep.bias ? bias.data() : nullptr;
  ep.residual = cs.ep.residual ? res.data() : nullptr;
  ep.alpha = ep.act == Activation::clip ? -0.5f : 0.1f;
  ep.beta = 0.75f;
  ep.slope = slopes.data();
  ep.slope_per_channel = cs.ep.slope_per_channel;

  std::vector<float> ref(res.size()), pre(res.size());
  if (cs.transposed) conv_transpose3d_ref(p, src.data(), wei.data(), ep, ref.data());
  else conv3d_ref(p, src.data(), wei.data(), ep, ref.data());
  // The rounding error of a float reduction scales with the sums before the activation; all
  // activations here are 1-Lipschitz, so that scale also bounds the error after them.
  Epilogue linear = ep;
  linear.act = Activation::none;
  if (cs.transposed) conv_transpose3d_ref(p, src.data(), wei.data(), linear, pre.data());
  else conv3d_ref(p, src.data(), wei.data(), linear, pre.data());

  std::string why;
  auto k = make(p, wei.data(), ep, &why);
  if (!k) {
    EXPECT_FALSE(expect_accept) << "rejected: " << why;
    return false;
  }
  EXPECT_TRUE(why.empty()) << why;
  EXPECT_STREQ(k->name(), name);
  EXPECT_EQ(layout_block(k->dst_layout()), block);

  // Inputs in the kernel's layouts.
  std::vector<float> src_k;
  if (k->src_layout() == Layout::plain) {
    src_k = src;
  } else {
    EXPECT_EQ(layout_block(k->src_layout()), block);
    src_k.assign(static_cast<std::size_t>(activation_elements(k->src_layout(), p.n, p.ic, src_spatial(p))), sentinel());
    reorder_plain_to_blocked(src.data(), src_k.data(), p.n, p.ic, src_spatial(p), block);
  }
  const std::size_t dst_elems =
      static_cast<std::size_t>(activation_elements(k->dst_layout(), p.n, p.oc, dst_spatial(p)));
  std::vector<float> res_k(dst_elems);
  reorder_plain_to_blocked(res.data(), res_k.data(), p.n, p.oc, dst_spatial(p), block);

  auto run = [&](int threads) {
    std::vector<float> buf(dst_elems + 2 * kGuard, sentinel());
    std::vector<std::byte> ws(k->workspace_bytes() + 1);
    set_num_threads(threads);
    k->run(src_k.data(), buf.data() + kGuard, res_k.data(), ws.data());
    set_num_threads(0);
    for (std::size_t i = 0; i < kGuard; ++i) {
      EXPECT_TRUE(is_sentinel(buf[i])) << "write before dst at -" << (kGuard - i);
      EXPECT_TRUE(is_sentinel(buf[kGuard + dst_elems + i])) << "write after dst at +" << i;
    }
    return std::vector<float>(buf.begin() + kGuard, buf.begin() + static_cast<std::ptrdiff_t>(kGuard + dst_elems));
  };
  const auto dst1 = run(1);
  const auto dst2 = run(2);
  EXPECT_EQ(0, std::memcmp(dst1.data(), dst2.data(), dst_elems * sizeof(float))) << "1 and 2 threads differ";

  // Channel padding of dst must be zero (the next blocked layer may read it).
  const std::int64_t cb = (p.oc + block - 1) / block, osp = dst_spatial(p);
  std::int64_t bad_pad = 0;
  for (std::int64_t n = 0; n < p.n; ++n)
    for (std::int64_t s = 0; s < osp; ++s)
      for (std::int64_t l = p.oc - (cb - 1) * block; l < block; ++l)
        bad_pad += dst1[static_cast<std::size_t>(((n * cb + cb - 1) * osp + s) * block + l)] != 0.f;
  EXPECT_EQ(bad_pad, 0) << "non-zero channel padding in dst";

  std::vector<float> out(ref.size());
  reorder_blocked_to_plain(dst1.data(), out.data(), p.n, p.oc, osp, block);
  double max_err = 0, max_pre = 0;
  std::size_t worst = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double e = std::abs(double(out[i]) - double(ref[i]));
    if (!(e <= max_err)) max_err = e, worst = i;  // NaN counts as the worst
    max_pre = std::max(max_pre, std::abs(double(pre[i])));
  }
  EXPECT_LE(max_err, tol * std::max(1.0, max_pre))
      << "at plain index " << worst << ": got " << out[worst] << " expected " << ref[worst]
      << " (largest value before the activation " << max_pre << ")";
  return true;
}

bool check_case(const direct::Impl& impl, const Case& cs, std::uint32_t seed, bool expect_accept = true) {
  return check_kernel(impl.name, impl.block, kTolerance,
                      [&](const ConvParams& p, const float* w, const Epilogue& ep, std::string* why) {
                        direct::Tuning tuning = cs.tuning;
                        tuning.any_width = true;  // test every implementation on small channel counts too
                        return direct::create(impl, p, w, ep, cs.transposed, tuning, why);
                      },
                      cs, seed, expect_accept);
}

std::vector<const direct::Impl*> impls_for(bool transposed) {
  std::size_t count = 0;
  const direct::Impl* list = direct::impls(&count);
  std::vector<const direct::Impl*> v;
  for (std::size_t i = 0; i < count; ++i)
    if (list[i].transposed == transposed) v.push_back(&list[i]);
  return v;
}

bool cpu_has(Isa isa) { return static_cast<int>(hardware_isa()) >= static_cast<int>(isa); }

ConvParams conv_params(std::int64_t ic, std::int64_t oc, std::array<std::int64_t, 3> in, std::array<std::int64_t, 3> k,
                       std::array<std::int64_t, 3> s, std::array<std::int64_t, 3> d, std::array<std::int64_t, 3> pad,
                       std::array<std::int64_t, 3> pad_end, std::int64_t groups = 1, std::int64_t n = 1) {
  ConvParams p;
  p.n = n, p.ic = ic, p.oc = oc, p.groups = groups;
  p.id = in[0], p.ih = in[1], p.iw = in[2];
  p.kd = k[0], p.kh = k[1], p.kw = k[2];
  p.sd = s[0], p.sh = s[1], p.sw = s[2];
  p.dd = d[0], p.dh = d[1], p.dw = d[2];
  p.pd = pad[0], p.ph = pad[1], p.pw = pad[2];
  p.od = ConvParams::conv_out(in[0], k[0], s[0], d[0], pad[0], pad_end[0]);
  p.oh = ConvParams::conv_out(in[1], k[1], s[1], d[1], pad[1], pad_end[1]);
  p.ow = ConvParams::conv_out(in[2], k[2], s[2], d[2], pad[2], pad_end[2]);
  return p;
}

// Random valid convolutions around the block size of `block`.
std::vector<Case> conv_sweep(int block, std::uint32_t seed, int count) {
  std::mt19937 rng(seed);
  auto pick = [&](std::initializer_list<std::int64_t> xs) {
    std::uniform_int_distribution<std::size_t> u(0, xs.size() - 1);
    return *(xs.begin() + static_cast<std::ptrdiff_t>(u(rng)));
  };
  const std::int64_t b = block;
  const Activation acts[] = {Activation::none, Activation::relu, Activation::leaky_relu,
                             Activation::prelu, Activation::sigmoid, Activation::clip};
  std::vector<Case> cases;
  while (static_cast<int>(cases.size()) < count) {
    Case c;
    const std::int64_t ic = pick({1, 2, 3, 5, b - 1, b, b + 1, 2 * b, 2 * b + 3, 4 * b});
    const std::int64_t oc = pick({1, 3, b - 1, b, b + 5, 2 * b, 3 * b, 4 * b, 4 * b + 1, 8 * b});
    std::array<std::int64_t, 3> k{}, s{}, d{}, pad{}, pe{}, in{};
    for (int a = 0; a < 3; ++a) {
      k[a] = pick({1, 3, 3, 3, 5, 7});
      s[a] = pick({1, 1, 1, 2});
      d[a] = pick({1, 1, 1, 2});
      pad[a] = std::min<std::int64_t>(pick({0, 1, 1, 2, 3}), (k[a] - 1) * d[a]);
      pe[a] = std::max<std::int64_t>(0, pad[a] + pick({0, 0, -1, 1}));
      const std::int64_t need = (k[a] - 1) * d[a] + 1 - pad[a] - pe[a];  // smallest input with an output
      in[a] = std::max<std::int64_t>(std::max<std::int64_t>(need, 1), pick({1, 2, 5, 7, 9, 13, 18, 30}));
    }
    c.p = conv_params(ic, oc, in, k, s, d, pad, pe);
    // Keep the reference cheap: at most ~3M multiply-adds per case.
    if (c.p.flops() > 6'000'000 || c.p.flops() <= 0) continue;
    c.ep.act = acts[cases.size() % 6];
    c.ep.bias = (cases.size() / 6) % 2 == 0;
    c.ep.residual = (cases.size() / 3) % 2 == 0;
    c.ep.slope_per_channel = (cases.size() / 12) % 2 == 0;
    cases.push_back(c);
  }
  return cases;
}

class ConvDirect : public ::testing::TestWithParam<int> {};

TEST(ConvDirect, ListNamesTheIsaInEveryKernel) {
  std::size_t count = 0;
  const direct::Impl* list = direct::impls(&count);
#if defined(__x86_64__)
  ASSERT_GE(count, 4u);
#endif
  for (std::size_t i = 0; i < count; ++i) {
    const std::string name = list[i].name;
    EXPECT_NE(name.find(std::string("__") + isa_name(list[i].isa)), std::string::npos) << name;
    EXPECT_NE(name.find(list[i].block == 16 ? "nCdhw16c" : "nCdhw8c"), std::string::npos) << name;
  }
}

void sweep(bool transposed, const std::vector<Case>& cases, Isa isa, std::uint32_t seed, int min_accepted) {
  for (const direct::Impl* impl : impls_for(transposed)) {
    if (impl->isa != isa) continue;
    if (!cpu_has(impl->isa)) GTEST_SKIP() << impl->name << ": this CPU lacks " << isa_name(impl->isa);
    int accepted = 0;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      accepted += check_case(*impl, cases[i], seed + static_cast<std::uint32_t>(i), false);
      if (::testing::Test::HasFailure()) return;  // the first failure says enough
    }
    EXPECT_GE(accepted, min_accepted) << impl->name << " accepted too few cases";
  }
}

TEST(ConvDirect, Avx2RandomSweep) {
  sweep(false, conv_sweep(8, 1234, 160), Isa::avx2, 100, 150);
}
TEST(ConvDirect, GenericRandomSweep) {
  sweep(false, conv_sweep(8, 999, 80), Isa::generic, 300, 75);
}
TEST(ConvDirect, Avx512RandomSweep) {
  sweep(false, conv_sweep(16, 4321, 160), Isa::avx512, 200, 150);
}

// Hand-picked shapes: the U-Net layers in miniature, edges of the register tiles, and
// every tile shape, pass size, row grouping and src layout forced in turn.
std::vector<Case> fixed_cases(int block) {
  const std::int64_t b = block;
  std::vector<Case> v;
  auto add = [&](ConvParams p, EpilogueSpec ep = {}, direct::Tuning t = {}) {
    Case c;
    c.p = p, c.ep = ep, c.tuning = t;
    v.push_back(c);
  };
  const std::array<std::int64_t, 3> one{1, 1, 1}, two{2, 2, 2}, zero{0, 0, 0};
  // 3x3x3 pad 1 at the widths around every UR (partial tiles, all-edge rows).
  for (std::int64_t w : {1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 17, 25, 26})
    add(conv_params(2 * b, 2 * b, {3, 2, w}, {3, 3, 3}, one, one, one, one), {Activation::relu, true, true});
  // Every tile shape and pass size on one problem.
  for (int nb : {1, 2, 4})  // shapes an implementation lacks are rejected and skipped
    for (std::int64_t step : {1, 2, 0})
      for (std::int64_t rows : {1, 3})
        for (int kd_split : {0, 1})
          add(conv_params(3 * b - 2, 4 * b, {4, 5, 19}, {3, 3, 3}, one, one, one, one),
              {Activation::leaky_relu, true, false}, {nb, step, rows, -1, kd_split});
  add(conv_params(b + 1, b, {6, 5, 9}, {3, 3, 3}, two, two, two, one), {Activation::relu, true, true}, {0, 0, 0, -1, 1});
  add(conv_params(b, b, {2, 3, 7}, {5, 3, 3}, one, one, {3, 1, 1}, {3, 1, 1}), {Activation::clip, true, true},
      {0, 0, 0, -1, 1});  // depth taps all outside for some outputs
  add(conv_params(2, b, {5, 6, 9}, {3, 3, 3}, one, one, one, one), {Activation::relu, true, false}, {0, 0, 0, 1, 1});
  // Plane tiles (flattened rows) forced on and off over padding, strides, dilation, plain
  // src, row groups and passes.
  for (int plane : {1, 0}) {
    add(conv_params(2 * b, 4 * b, {4, 8, 8}, {3, 3, 3}, one, one, one, one), {Activation::prelu, true, true},
        {0, 1, 3, -1, -1, plane});
    add(conv_params(b + 3, 2 * b, {5, 7, 4}, {3, 3, 3}, two, one, one, one), {Activation::relu, true, false},
        {0, 0, 0, -1, -1, plane});
    add(conv_params(b, b, {6, 9, 7}, {3, 3, 3}, one, two, two, two), {Activation::sigmoid, false, true},
        {0, 0, 2, -1, -1, plane});
    add(conv_params(1, 4 * b, {5, 5, 5}, {3, 5, 3}, one, one, {1, 2, 1}, {1, 2, 1}), {Activation::clip, true, false},
        {0, 0, 0, 1, -1, plane});
    add(conv_params(3 * b, b, {3, 3, 2}, {1, 1, 1}, one, one, zero, zero), {Activation::none, true, false},
        {0, 0, 0, -1, -1, plane});
  }
  // First layers: plain src with 1..4 channels, and the same problems on blocked src.
  for (std::int64_t ic : {1, 2, 3, 4})
    for (int plain : {1, 0})
      add(conv_params(ic, 2 * b, {5, 6, 15}, {3, 3, 3}, one, one, one, one), {Activation::prelu, true, false},
          {0, 0, 0, plain});
  add(conv_params(1, b, {6, 7, 16}, {3, 3, 3}, two, one, one, one), {Activation::relu, true, false}, {0, 0, 0, 1});
  // First layers through padded input rows: 1 channel into 4 output blocks (the AVX2 4 x 3
  // row code) at widths around the tile, depth passes, a residual, a batch of two, and the
  // rows shared by consecutive output rows and planes at dilation 2.
  for (std::int64_t w : {1, 2, 3, 4, 7, 17})
    for (int kd_split : {0, 1})
      add(conv_params(1, 4 * b, {4, 5, w}, {3, 3, 3}, one, one, one, one), {Activation::leaky_relu, true, true},
          {4, 0, 0, 1, kd_split, 0});
  add(conv_params(1, 4 * b, {5, 4, 11}, {3, 3, 3}, one, one, one, one, 1, 2), {Activation::relu, true, false},
      {4, 0, 2, 1, 0, 0});
  add(conv_params(1, 3 * b, {7, 8, 9}, {3, 3, 3}, one, two, two, two), {Activation::none, true, false},
      {0, 0, 0, 1, 0, 0});
  add(conv_params(3, 2 * b, {5, 6, 10}, {3, 5, 3}, one, one, {1, 2, 1}, {1, 2, 1}), {Activation::prelu, true, true},
      {0, 0, 0, 1, 0, 0});
  // Stride 2 (downsampling), anisotropic kernels, large kernels, dilation.
  add(conv_params(b, 2 * b, {8, 9, 17}, {3, 3, 3}, two, one, one, one), {Activation::clip, true, true});
  add(conv_params(b + 3, b, {4, 9, 9}, {1, 3, 3}, one, one, {0, 1, 1}, {0, 1, 1}), {Activation::sigmoid, true, false});
  add(conv_params(b, b + 1, {9, 9, 4}, {3, 3, 1}, one, one, {1, 1, 0}, {1, 1, 0}), {Activation::none, false, true});
  add(conv_params(5, 5, {9, 10, 21}, {3, 3, 3}, one, {2, 3, 4}, {2, 3, 4}, {2, 3, 4}), {Activation::relu, true, false});
  add(conv_params(b, b, {7, 7, 11}, {5, 5, 5}, one, one, two, two), {Activation::none, true, false});
  add(conv_params(3, b, {7, 8, 13}, {7, 7, 7}, two, one, {3, 3, 3}, {3, 3, 3}), {Activation::relu, true, false});
  add(conv_params(2 * b, 3, {6, 7, 30}, one, one, one, zero, zero), {Activation::sigmoid, true, false});  // 1x1x1 head
  add(conv_params(b, b, {2, 3, 9}, one, two, one, zero, zero), {Activation::none, true, true});          // 1x1x1 s2
  // Batch of two, and groups with whole blocks per group.
  add(conv_params(b + 2, b - 1, {3, 4, 10}, {3, 3, 3}, one, one, one, one, 1, 2), {Activation::relu, true, true});
  add(conv_params(2 * b, 4 * b, {4, 5, 13}, {3, 3, 3}, one, one, one, one, 2), {Activation::prelu, true, true});
  add(conv_params(4 * b, 4 * b, {3, 4, 9}, {3, 3, 3}, {1, 1, 2}, one, one, one, 4), {Activation::leaky_relu, true, false});
  // Output larger than the input allows (end padding beyond the kernel): taps all skipped.
  add(conv_params(b, b, {2, 2, 3}, {3, 3, 3}, one, one, two, two), {Activation::sigmoid, true, true});
  return v;
}

void fixed(Isa isa, int block) {
  const auto cases = fixed_cases(block);
  for (const direct::Impl* impl : impls_for(false)) {
    if (impl->isa != isa) continue;
    if (!cpu_has(impl->isa)) GTEST_SKIP() << impl->name << ": this CPU lacks " << isa_name(impl->isa);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      bool has_shape = cases[i].tuning.nb == 0;
      for (const direct::TileShape* t = impl->shapes; t->nb; ++t) has_shape |= t->nb == cases[i].tuning.nb;
      check_case(*impl, cases[i], 7000 + static_cast<std::uint32_t>(i), has_shape);
    }
  }
}

TEST(ConvDirect, GenericFixedCases) { fixed(Isa::generic, 8); }
TEST(ConvDirect, Avx2FixedCases) { fixed(Isa::avx2, 8); }
TEST(ConvDirect, Avx512FixedCases) { fixed(Isa::avx512, 16); }

// ONNX ConvTranspose output size with output_padding `op`.
std::int64_t deconv_out(std::int64_t in, std::int64_t k, std::int64_t s, std::int64_t pad, std::int64_t op) {
  return (in - 1) * s - 2 * pad + k + op;
}

std::vector<Case> deconv_cases(int block) {
  const std::int64_t b = block;
  std::vector<Case> v;
  const Activation acts[] = {Activation::none, Activation::relu, Activation::leaky_relu,
                             Activation::prelu, Activation::sigmoid, Activation::clip};
  struct Geo {
    std::array<std::int64_t, 3> k, s, pad, op;
  };
  const Geo geos[] = {
      {{2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {0, 0, 0}},  // U-Net k2s2
      {{3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}},  // MONAI k3s2 pad 1 output_padding 1
      {{3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}},
      {{1, 2, 2}, {1, 2, 2}, {0, 0, 0}, {0, 0, 0}},  // anisotropic
      {{4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 1, 0}},
      {{3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}},  // stride 1: a flipped convolution
      {{1, 3, 5}, {3, 3, 3}, {0, 2, 1}, {2, 0, 1}},  // kernel below stride: bias-only outputs
      {{2, 1, 3}, {2, 1, 2}, {0, 0, 1}, {1, 0, 0}},
  };
  int i = 0;
  for (std::int64_t ic : {std::int64_t{1}, b - 1, b, 2 * b + 1, 4 * b})
    for (std::int64_t oc : {std::int64_t{3}, b, b + 1, 2 * b, 4 * b})
      for (const Geo& g : geos) {
        Case c;
        c.transposed = true;
        c.p.ic = ic, c.p.oc = oc;
        c.p.id = 3, c.p.ih = 2 + i % 3, c.p.iw = 5 + i % 9;
        c.p.kd = g.k[0], c.p.kh = g.k[1], c.p.kw = g.k[2];
        c.p.sd = g.s[0], c.p.sh = g.s[1], c.p.sw = g.s[2];
        c.p.pd = g.pad[0], c.p.ph = g.pad[1], c.p.pw = g.pad[2];
        c.p.od = deconv_out(c.p.id, g.k[0], g.s[0], g.pad[0], g.op[0]);
        c.p.oh = deconv_out(c.p.ih, g.k[1], g.s[1], g.pad[1], g.op[1]);
        c.p.ow = deconv_out(c.p.iw, g.k[2], g.s[2], g.pad[2], g.op[2]);
        c.p.n = i % 4 == 0 ? 2 : 1;
        c.ep.act = acts[i % 6];
        c.ep.bias = i % 2 == 0;
        c.ep.residual = i % 3 != 0;
        if (i % 5 == 0) c.tuning.icb_step = 1;
        if (i % 7 == 0) c.tuning.rows = 2;
        if (c.p.flops() > 6'000'000) continue;
        v.push_back(c);
        ++i;
      }
  return v;
}

// Random valid ConvTransposes: kernel 1-5, stride 1-3, padding below the kernel,
// output_padding below the stride.
std::vector<Case> deconv_sweep(int block, std::uint32_t seed, int count) {
  std::mt19937 rng(seed);
  auto uni = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
  const std::int64_t b = block;
  const std::int64_t chans[] = {1, 3, b - 1, b, b + 1, 2 * b + 3, 3 * b};
  const Activation acts[] = {Activation::none, Activation::relu, Activation::leaky_relu,
                             Activation::prelu, Activation::sigmoid, Activation::clip};
  std::vector<Case> v;
  while (static_cast<int>(v.size()) < count) {
    Case c;
    c.transposed = true;
    c.p.ic = chans[uni(0, 6)], c.p.oc = chans[uni(0, 6)];
    std::int64_t* in[3] = {&c.p.id, &c.p.ih, &c.p.iw};
    std::int64_t* out[3] = {&c.p.od, &c.p.oh, &c.p.ow};
    std::int64_t* k[3] = {&c.p.kd, &c.p.kh, &c.p.kw};
    std::int64_t* st[3] = {&c.p.sd, &c.p.sh, &c.p.sw};
    std::int64_t* pad[3] = {&c.p.pd, &c.p.ph, &c.p.pw};
    for (int a = 0; a < 3; ++a) {
      *k[a] = uni(1, 5), *st[a] = uni(1, 3), *pad[a] = uni(0, *k[a] - 1), *in[a] = uni(1, 7);
      *out[a] = deconv_out(*in[a], *k[a], *st[a], *pad[a], uni(0, *st[a] - 1));
    }
    if (c.p.od < 1 || c.p.oh < 1 || c.p.ow < 1 || c.p.flops() > 4'000'000) continue;
    c.ep.act = acts[v.size() % 6];
    c.ep.bias = (v.size() / 6) % 2 == 0;
    c.ep.residual = (v.size() / 3) % 2 == 0;
    v.push_back(c);
  }
  return v;
}

TEST(ConvDirect, TransposedRandomSweep) {
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
    const int block = isa == Isa::avx512 ? 16 : 8;
    if (cpu_has(isa)) sweep(true, deconv_sweep(block, 31 + static_cast<std::uint32_t>(isa), 60), isa, 11000, 60);
  }
}

void deconv(Isa isa, int block) {
  const auto cases = deconv_cases(block);
  for (const direct::Impl* impl : impls_for(true)) {
    if (impl->isa != isa) continue;
    if (!cpu_has(impl->isa)) GTEST_SKIP() << impl->name << ": this CPU lacks " << isa_name(impl->isa);
    for (std::size_t i = 0; i < cases.size(); ++i) check_case(*impl, cases[i], 9000 + static_cast<std::uint32_t>(i));
  }
}

TEST(ConvDirect, GenericTransposed) { deconv(Isa::generic, 8); }
TEST(ConvDirect, Avx2Transposed) { deconv(Isa::avx2, 8); }
TEST(ConvDirect, Avx512Transposed) { deconv(Isa::avx512, 16); }

TEST(ConvDirect, RejectionsSayWhy) {
  for (const direct::Impl* impl : impls_for(false)) {
    const std::int64_t b = impl->block;
    std::string why;
    ConvParams p = conv_params(b, b, {5, 5, 9}, {3, 3, 3}, {1, 1, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
    EXPECT_EQ(direct::create(*impl, p, std::vector<float>(static_cast<std::size_t>(b * b * 27)).data(), Epilogue{},
                             false, {}, &why),
              nullptr);
    EXPECT_NE(why.find("stride along W 3"), std::string::npos) << why;
    why.clear();
    p = conv_params(36, 36, {5, 5, 9}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 3);
    EXPECT_EQ(direct::create(*impl, p, std::vector<float>(36 * 12 * 27).data(), Epilogue{}, false, {}, &why), nullptr);
    EXPECT_NE(why.find("groups=3"), std::string::npos) << why;
  }
  for (const direct::Impl* impl : impls_for(true)) {
    std::string why;
    ConvParams p;  // dilated ConvTranspose
    p.ic = p.oc = 8, p.id = p.ih = p.iw = 4, p.kd = p.kh = p.kw = 3, p.sd = p.sh = p.sw = 2;
    p.dd = p.dh = p.dw = 2, p.od = p.oh = p.ow = 11;
    EXPECT_EQ(direct::create(*impl, p, std::vector<float>(8 * 8 * 27).data(), Epilogue{}, true, {}, &why), nullptr);
    EXPECT_NE(why.find("dilation"), std::string::npos) << why;
  }
}

TEST(ConvDirect, MakeConvKernelFollowsTheIsaCap) {
  const ConvParams p = conv_params(32, 32, {4, 4, 20}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  const std::vector<float> w(32 * 32 * 27, 0.5f);
  std::string why;
  auto g = make_conv_kernel(p, w.data(), Epilogue{}, false, Isa::generic, &why);
  ASSERT_NE(g, nullptr) << why;
  EXPECT_STREQ(g->name(), "conv3d_f32_nCdhw8c__generic");
  EXPECT_NE(why.find("needs avx"), std::string::npos) << why;
  why.clear();
  if (cpu_has(Isa::avx2)) {
    // A 3x3x3 stride-1 layer goes to Winograd first.
    auto k = make_conv_kernel(p, w.data(), Epilogue{}, false, Isa::avx2, &why);
    ASSERT_NE(k, nullptr) << why;
    EXPECT_STREQ(k->name(), "winograd_f2k3_nCdhw8c__avx2_fma");
    EXPECT_EQ(k->src_layout(), Layout::nCdhw8c);
    set_max_isa(Isa::avx2);
    auto k2 = make_conv_kernel(p, w.data(), Epilogue{}, false, active_isa(), &why);
    set_max_isa(Isa::avx512);
    ASSERT_NE(k2, nullptr);
    EXPECT_STREQ(k2->name(), "winograd_f2k3_nCdhw8c__avx2_fma");
    ConvParams strided = p;
    strided.sd = strided.sh = strided.sw = 2;
    strided.od = 2, strided.oh = 2, strided.ow = 10;
    auto k3 = make_conv_kernel(strided, w.data(), Epilogue{}, false, Isa::avx2, &why);
    ASSERT_NE(k3, nullptr);
    EXPECT_STREQ(k3->name(), "conv3d_f32_nCdhw8c__avx2_fma");
  }
  if (cpu_has(Isa::avx512)) {
    auto k = make_conv_kernel(p, w.data(), Epilogue{}, false, Isa::avx512, &why);
    ASSERT_NE(k, nullptr) << why;
    EXPECT_STREQ(k->name(), "winograd_f2k3_nCdhw16c__avx512");
    EXPECT_EQ(k->dst_layout(), Layout::nCdhw16c);
  }
  // Channels that all fit 8 lanes go to the 8-channel kernel even where AVX-512 is allowed.
  const ConvParams small = conv_params(5, 5, {4, 4, 8}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  if (cpu_has(Isa::avx512)) {
    why.clear();
    auto k = make_conv_kernel(small, w.data(), Epilogue{}, false, Isa::avx512, &why);
    ASSERT_NE(k, nullptr) << why;
    EXPECT_STREQ(k->name(), "conv3d_f32_nCdhw8c__avx2_fma");
    EXPECT_NE(why.find("fit a block of 8"), std::string::npos) << why;
  }
  // A first layer reads plain input.
  const ConvParams first = conv_params(1, 32, {4, 4, 8}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  if (auto k = make_conv_kernel(first, w.data(), Epilogue{}, false, active_isa(), &why)) {
    EXPECT_EQ(k->src_layout(), Layout::plain);
  }
}

TEST(Reorder, RoundTripAndZeroPadding) {
  for (int block : {8, 16})
    for (std::int64_t c : {1, 7, 8, 9, 16, 21, 40}) {
      const std::int64_t n = 2, sp = 4099;  // more than one work item per channel block
      std::mt19937 rng(static_cast<std::uint32_t>(c * block));
      const auto x = random_vec(static_cast<std::size_t>(n * c * sp), rng);
      const std::int64_t cb = (c + block - 1) / block;
      std::vector<float> blk(static_cast<std::size_t>(n * cb * block * sp), sentinel()), back(x.size());
      reorder_plain_to_blocked(x.data(), blk.data(), n, c, sp, block);
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t ch = 0; ch < cb * block; ++ch)
          for (std::int64_t s = 0; s < sp; s += 97) {
            const float got = blk[static_cast<std::size_t>(((i * cb + ch / block) * sp + s) * block + ch % block)];
            const float want = ch < c ? x[static_cast<std::size_t>((i * c + ch) * sp + s)] : 0.f;
            ASSERT_EQ(got, want) << "block " << block << " c " << c << " ch " << ch << " s " << s;
          }
      reorder_blocked_to_plain(blk.data(), back.data(), n, c, sp, block);
      ASSERT_EQ(back, x) << "block " << block << " c " << c;
    }
}

// Winograd F(2x2x2, 3x3x3) against the reference: channels below, at and above the block and
// not multiples of it, odd and even sizes (partial output tiles), padding 0-2 at either end,
// batches, every epilogue; 1 and 2 threads give the same bytes, guard zones stay untouched.
// Same tolerance as the direct kernels: over this sweep the error stays below 2e-6 of the
// largest value before the activation.
TEST(ConvWinograd, MatchesReferenceOverSweep) {
  for (const Isa isa : {Isa::avx2, Isa::avx512}) {
    if (!cpu_has(isa)) continue;
    const int block = isa == Isa::avx512 ? 16 : 8;
    const char* name = isa == Isa::avx512 ? "winograd_f2k3_nCdhw16c__avx512" : "winograd_f2k3_nCdhw8c__avx2_fma";
    int accepted = 0;
    std::uint32_t seed = 1000;
    // Chunks of tiles cross rows and planes (rows of 2-21 tiles) and end in a partial chunk.
    const std::array<std::array<std::int64_t, 3>, 6> sizes{{{5, 6, 19}, {8, 9, 37}, {3, 3, 20}, {1, 2, 41}, {4, 7, 5}, {6, 3, 3}}};
    const std::array<std::pair<std::int64_t, std::int64_t>, 6> chans{{{5, 3}, {8, 8}, {16, 20}, {24, 16}, {40, 48}, {64, 32}}};
    const std::array<EpilogueSpec, 5> eps{{{Activation::none, false, false, true},
                                           {Activation::relu, true, false, true},
                                           {Activation::leaky_relu, true, true, true},
                                           {Activation::prelu, false, true, true},
                                           {Activation::sigmoid, true, false, true}}};
    for (std::size_t si = 0; si < sizes.size(); ++si)
      for (std::size_t ci = 0; ci < chans.size(); ++ci)
        for (std::int64_t pad = 0; pad <= 2; ++pad) {
          const std::int64_t pad_end = (pad + si) % 3;
          const auto& sz = sizes[si];
          if (sz[0] + pad + pad_end < 3 || sz[1] + pad + pad_end < 3 || sz[2] + pad + pad_end < 3) continue;
          Case cs;
          cs.p = conv_params(chans[ci].first, chans[ci].second, sz, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {pad, pad, pad},
                             {pad_end, pad_end, pad_end}, 1, 1 + static_cast<std::int64_t>((si + ci) % 2));
          cs.ep = eps[(si + ci + static_cast<std::size_t>(pad)) % eps.size()];
          const bool ok = check_kernel(name, block, kTolerance,
                                       [&](const ConvParams& p, const float* w, const Epilogue& ep, std::string* why) {
                                         return winograd::create(p, w, ep, isa, why);
                                       },
                                       cs, seed++, !(isa == Isa::avx512 && std::max(chans[ci].first, chans[ci].second) <= 8));
          accepted += ok;
        }
    // Many channels: larger chunks (32 or 64 tiles), and output channels split into groups
    // when an image has fewer chunks than slots.
    for (const auto& sz : {std::array<std::int64_t, 3>{3, 5, 4}, std::array<std::int64_t, 3>{6, 6, 7}, std::array<std::int64_t, 3>{2, 2, 2}}) {
      Case cs;
      cs.p = conv_params(96, 160, sz, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1, sz[0] == 2 ? 2 : 1);
      cs.ep = eps[static_cast<std::size_t>(sz[1]) % eps.size()];
      accepted += check_kernel(name, block, kTolerance,
                               [&](const ConvParams& p, const float* w, const Epilogue& ep, std::string* why) {
                                 return winograd::create(p, w, ep, isa, why);
                               },
                               cs, seed++, true);
    }
    EXPECT_GT(accepted, 60) << name;  // AVX-512 leaves layers of at most 8 channels to the 8-channel kernels
  }
}

TEST(ConvWinograd, RejectsWhatItCannotRun) {
  const std::vector<float> w(40 * 40 * 27, 0.1f);
  std::string why;
  const ConvParams strided = conv_params(16, 16, {8, 8, 40}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  EXPECT_EQ(winograd::create(strided, w.data(), Epilogue{}, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("stride"), std::string::npos) << why;
  why.clear();
  const ConvParams k5 = conv_params(16, 16, {8, 8, 20}, {5, 5, 5}, {1, 1, 1}, {1, 1, 1}, {2, 2, 2}, {2, 2, 2});
  EXPECT_EQ(winograd::create(k5, w.data(), Epilogue{}, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("3x3x3"), std::string::npos) << why;
  why.clear();
  const ConvParams first = conv_params(1, 16, {8, 8, 20}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  EXPECT_EQ(winograd::create(first, w.data(), Epilogue{}, Isa::avx2, &why), nullptr);
  const ConvParams narrow = conv_params(16, 16, {8, 8, 8}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  why.clear();
  EXPECT_NE(winograd::create(narrow, w.data(), Epilogue{}, Isa::avx2, &why), nullptr) << why;  // chunks span rows
  EXPECT_EQ(winograd::create(first, w.data(), Epilogue{}, Isa::avx2, &why), nullptr);
  EXPECT_EQ(winograd::create(strided, w.data(), Epilogue{}, Isa::generic, &why), nullptr);
}

// Runs a head kernel (src in its layout, converted from the plain src here) with 1 and 2
// threads into guarded buffers and checks the guards, that both runs give the same bytes, and
// the error against the reference within the test bound scaled by the largest value before
// the activation.
void expect_head_matches(const ConvKernel& k, const ConvParams& p, bool transposed, const std::vector<float>& src,
                         const float* wei, const Epilogue& ep) {
  const Layout l = k.src_layout();
  const std::int64_t isp = p.id * p.ih * p.iw, osp = p.od * p.oh * p.ow;
  std::vector<float> src_k = src;
  if (l != Layout::plain) {
    src_k.assign(static_cast<std::size_t>(activation_elements(l, p.n, p.ic, isp)), sentinel());
    reorder_plain_to_blocked(src.data(), src_k.data(), p.n, p.ic, isp, layout_block(l));
  }
  std::vector<float> ref(static_cast<std::size_t>(p.n * p.oc * osp)), pre(ref.size());
  Epilogue linear = ep;
  linear.act = Activation::none;
  if (transposed) {
    conv_transpose3d_ref(p, src.data(), wei, ep, ref.data());
    conv_transpose3d_ref(p, src.data(), wei, linear, pre.data());
  } else {
    conv3d_ref(p, src.data(), wei, ep, ref.data());
    conv3d_ref(p, src.data(), wei, linear, pre.data());
  }
  auto run = [&](int threads) {
    std::vector<float> buf(ref.size() + 2 * kGuard, sentinel());
    set_num_threads(threads);
    k.run(src_k.data(), buf.data() + kGuard, ep.residual, nullptr);
    set_num_threads(0);
    for (std::size_t j = 0; j < kGuard; ++j) {
      EXPECT_TRUE(is_sentinel(buf[j])) << "write before dst at -" << (kGuard - j);
      EXPECT_TRUE(is_sentinel(buf[kGuard + ref.size() + j])) << "write after dst at +" << j;
    }
    return std::vector<float>(buf.begin() + kGuard, buf.begin() + static_cast<std::ptrdiff_t>(kGuard + ref.size()));
  };
  const auto out1 = run(1), out2 = run(2);
  EXPECT_EQ(0, std::memcmp(out1.data(), out2.data(), out1.size() * sizeof(float))) << "1 and 2 threads differ";
  double max_err = 0, max_pre = 0;
  for (std::size_t j = 0; j < ref.size(); ++j) {
    const double e = std::abs(double(out1[j]) - double(ref[j]));
    if (!(e <= max_err)) max_err = e;
    max_pre = std::max(max_pre, std::abs(double(pre[j])));
  }
  EXPECT_LE(max_err, kTolerance * std::max(1.0, max_pre));
}

// The 1x1x1 head: blocked src, plain dst, against the reference over channel counts, pixel
// counts with partial vector groups and several chunks, batches and activations; guard
// bytes around dst, and 1 and 2 threads bitwise equal.
TEST(ConvHead, MatchesReferenceOverSweep) {
  struct Variant {
    Isa isa;
    Layout src;
    const char* name;
  };
  std::vector<Variant> variants{{Isa::generic, Layout::nCdhw8c, "conv1x1x1_head_nCdhw8c__generic"}};
  if (cpu_has(Isa::avx2)) variants.push_back({Isa::avx2, Layout::nCdhw8c, "conv1x1x1_head_nCdhw8c__avx2_fma"});
  if (cpu_has(Isa::avx512)) variants.push_back({Isa::avx512, Layout::nCdhw16c, "conv1x1x1_head_nCdhw16c__avx512"});
  const std::array<std::pair<std::int64_t, std::int64_t>, 7> chans{{{1, 1}, {3, 2}, {8, 3}, {13, 5}, {32, 3}, {40, 16}, {17, 7}}};
  const std::array<std::array<std::int64_t, 3>, 4> sizes{{{1, 1, 1}, {2, 3, 5}, {4, 4, 37}, {3, 40, 40}}};
  const std::array<Activation, 5> acts{{Activation::none, Activation::relu, Activation::leaky_relu, Activation::sigmoid, Activation::clip}};
  std::uint32_t seed = 5000;
  for (const Variant& v : variants) {
    for (std::size_t ci = 0; ci < chans.size(); ++ci)
      for (std::size_t si = 0; si < sizes.size(); ++si) {
        const auto [ic, oc] = chans[ci];
        ConvParams p = conv_params(ic, oc, sizes[si], {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, 1, 1 + static_cast<std::int64_t>((ci + si) % 2));
        SCOPED_TRACE(std::string(v.name) + " " + p.str());
        std::mt19937 rng(seed++);
        const std::int64_t sp = src_spatial(p);
        const auto src = random_vec(static_cast<std::size_t>(p.n * ic * sp), rng);
        const auto wei = random_vec(static_cast<std::size_t>(oc * ic), rng);
        const auto bias = random_vec(static_cast<std::size_t>(oc), rng);
        Epilogue ep;
        ep.act = acts[(ci + si) % acts.size()];
        ep.bias = (ci % 3) ? bias.data() : nullptr;
        ep.alpha = ep.act == Activation::clip ? -0.5f : 0.1f;
        ep.beta = 0.75f;
        std::string why;
        auto k = make_conv_head_kernel(p, wei.data(), ep, v.src, v.isa, &why);
        ASSERT_NE(k, nullptr) << why;
        EXPECT_STREQ(k->name(), v.name);
        EXPECT_EQ(k->dst_layout(), Layout::plain);
        expect_head_matches(*k, p, false, src, wei.data(), ep);
      }
  }
}

// The transposed head (ConvTranspose, stride 2 along W, few outputs): blocked src, plain
// dst, against the reference over kernels with W taps on either side of the stride, pads,
// output padding, widths that leave partial vector groups and groups at both row edges,
// batches and activations; guard bytes, and 1 and 2 threads bitwise equal.
TEST(ConvHead, TransposedMatchesReferenceOverSweep) {
  struct Variant {
    Isa isa;
    Layout src;
    const char* name;
  };
  std::vector<Variant> variants{{Isa::generic, Layout::nCdhw8c, "deconv_head_nCdhw8c__generic"}};
  if (cpu_has(Isa::avx2)) variants.push_back({Isa::avx2, Layout::nCdhw8c, "deconv_head_nCdhw8c__avx2_fma"});
  if (cpu_has(Isa::avx512)) variants.push_back({Isa::avx512, Layout::nCdhw16c, "deconv_head_nCdhw16c__avx512"});
  struct Geo {
    std::array<std::int64_t, 3> k, s, pad, op;
  };
  const Geo geos[] = {
      {{3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}},  // MONAI's last up-sampling
      {{2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {0, 0, 0}},  // U-Net k2s2
      {{3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}},
      {{1, 3, 4}, {1, 2, 2}, {0, 1, 1}, {0, 1, 0}},
      {{3, 1, 5}, {3, 1, 2}, {2, 0, 3}, {1, 0, 1}},  // pad beyond the kernel's reach on the left
      {{2, 3, 1}, {2, 2, 2}, {0, 1, 0}, {1, 0, 1}},  // W kernel below the stride: bias-only pixels
  };
  const std::array<std::pair<std::int64_t, std::int64_t>, 5> chans{{{1, 1}, {5, 3}, {16, 2}, {32, 3}, {21, 7}}};
  const std::array<Activation, 6> acts{{Activation::none, Activation::relu, Activation::leaky_relu, Activation::prelu,
                                        Activation::sigmoid, Activation::clip}};
  std::uint32_t seed = 7000;
  int i = 0;
  for (const Variant& v : variants) {
    for (const Geo& g : geos)
      for (const auto& [ic, oc] : chans)
        for (std::int64_t iw : {std::int64_t{1}, std::int64_t{4}, std::int64_t{13}, std::int64_t{24}}) {
          ++i;
          ConvParams p;
          p.n = i % 3 == 0 ? 2 : 1, p.ic = ic, p.oc = oc;
          p.id = 2, p.ih = 1 + i % 3, p.iw = iw;
          p.kd = g.k[0], p.kh = g.k[1], p.kw = g.k[2];
          p.sd = g.s[0], p.sh = g.s[1], p.sw = g.s[2];
          p.pd = g.pad[0], p.ph = g.pad[1], p.pw = g.pad[2];
          p.od = deconv_out(p.id, g.k[0], g.s[0], g.pad[0], g.op[0]);
          p.oh = deconv_out(p.ih, g.k[1], g.s[1], g.pad[1], g.op[1]);
          p.ow = deconv_out(p.iw, g.k[2], g.s[2], g.pad[2], g.op[2]);
          if (p.od <= 0 || p.oh <= 0 || p.ow <= 0) continue;
          SCOPED_TRACE(std::string(v.name) + " " + p.str());
          std::mt19937 rng(seed++);
          const std::int64_t isp = p.id * p.ih * p.iw;
          const auto src = random_vec(static_cast<std::size_t>(p.n * ic * isp), rng);
          const auto wei = random_vec(static_cast<std::size_t>(ic * oc * p.kd * p.kh * p.kw), rng);
          const auto bias = random_vec(static_cast<std::size_t>(oc), rng);
          const auto slopes = random_vec(static_cast<std::size_t>(oc), rng);
          Epilogue ep;
          ep.act = acts[static_cast<std::size_t>(i) % acts.size()];
          ep.bias = i % 2 ? bias.data() : nullptr;
          ep.slope = slopes.data();
          ep.slope_per_channel = i % 4 < 2;  // else one slope for every channel
          ep.alpha = ep.act == Activation::clip ? -0.5f : 0.1f;
          ep.beta = 0.75f;
          std::string why;
          auto k = make_deconv_head_kernel(p, wei.data(), ep, v.src, v.isa, &why);
          ASSERT_NE(k, nullptr) << why;
          EXPECT_STREQ(k->name(), v.name);
          EXPECT_EQ(k->dst_layout(), Layout::plain);
          expect_head_matches(*k, p, true, src, wei.data(), ep);
        }
  }
}

// The taps head (a convolution with a kernel and at most 4 outputs, stride 1 along W):
// blocked src, plain dst, against the reference over kernels, dilations, D/H strides, pads,
// widths around the vector group, batches and activations (PRelu per channel or shared);
// guard bytes, and 1 and 2 threads bitwise equal.
TEST(ConvHead, TapsMatchesReferenceOverSweep) {
  struct Variant {
    Isa isa;
    Layout src;
    const char* name;
  };
  std::vector<Variant> variants{{Isa::generic, Layout::nCdhw8c, "conv_taps_head_nCdhw8c__generic"}};
  if (cpu_has(Isa::avx2)) variants.push_back({Isa::avx2, Layout::nCdhw8c, "conv_taps_head_nCdhw8c__avx2_fma"});
  if (cpu_has(Isa::avx512)) variants.push_back({Isa::avx512, Layout::nCdhw16c, "conv_taps_head_nCdhw16c__avx512"});
  struct Geo {
    std::array<std::int64_t, 3> k, s, d, pb, pe;
  };
  const Geo geos[] = {
      {{5, 5, 5}, {1, 1, 1}, {1, 1, 1}, {2, 2, 2}, {2, 2, 2}},  // VNet's output layer
      {{3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}},
      {{3, 1, 3}, {2, 1, 1}, {1, 1, 2}, {1, 0, 2}, {0, 0, 1}},
      {{1, 3, 2}, {1, 2, 1}, {1, 2, 1}, {0, 2, 0}, {0, 1, 1}},
      {{1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 1}, {0, 0, 1}},  // 1x1x1 with W padding: not the pointwise head
  };
  const std::array<std::pair<std::int64_t, std::int64_t>, 4> chans{{{1, 1}, {8, 2}, {21, 3}, {32, 4}}};
  const std::array<Activation, 6> acts{{Activation::none, Activation::relu, Activation::leaky_relu, Activation::prelu,
                                        Activation::sigmoid, Activation::clip}};
  std::uint32_t seed = 8000;
  int i = 0;
  for (const Variant& v : variants) {
    for (const Geo& g : geos)
      for (const auto& [ic, oc] : chans)
        for (std::int64_t w : {std::int64_t{1}, std::int64_t{6}, std::int64_t{17}, std::int64_t{35}}) {
          ++i;
          ConvParams p = conv_params(ic, oc, {3, 2 + i % 3, w}, g.k, g.s, g.d, g.pb, g.pe, 1, i % 3 == 0 ? 2 : 1);
          if (p.od <= 0 || p.oh <= 0 || p.ow <= 0) continue;
          SCOPED_TRACE(std::string(v.name) + " " + p.str());
          std::mt19937 rng(seed++);
          const std::int64_t isp = p.id * p.ih * p.iw;
          const auto src = random_vec(static_cast<std::size_t>(p.n * ic * isp), rng);
          const auto wei = random_vec(static_cast<std::size_t>(oc * ic * p.kd * p.kh * p.kw), rng);
          const auto bias = random_vec(static_cast<std::size_t>(oc), rng);
          const auto slopes = random_vec(static_cast<std::size_t>(oc), rng);
          Epilogue ep;
          ep.act = acts[static_cast<std::size_t>(i) % acts.size()];
          ep.bias = i % 2 ? bias.data() : nullptr;
          ep.slope = slopes.data();
          ep.slope_per_channel = i % 4 < 2;
          ep.alpha = ep.act == Activation::clip ? -0.5f : 0.1f;
          ep.beta = 0.75f;
          std::string why;
          auto k = make_conv_head_kernel(p, wei.data(), ep, v.src, v.isa, &why);
          ASSERT_NE(k, nullptr) << why;
          EXPECT_STREQ(k->name(), v.name);
          expect_head_matches(*k, p, false, src, wei.data(), ep);
        }
  }
}

TEST(ConvHead, TransposedRejectsWhatItCannotRun) {
  const std::vector<float> w(8 * 3 * 27, 0.1f);
  ConvParams p;
  p.ic = 8, p.oc = 3, p.id = p.ih = p.iw = 4, p.kd = p.kh = p.kw = 3, p.pd = p.ph = p.pw = 1;
  p.sd = p.sh = p.sw = 2, p.od = p.oh = p.ow = 8;
  std::string why;
  EXPECT_NE(make_deconv_head_kernel(p, w.data(), Epilogue{}, Layout::nCdhw8c, Isa::avx2, &why), nullptr) << why;
  ConvParams s1 = p;
  s1.sw = 1, s1.ow = 4;
  EXPECT_EQ(make_deconv_head_kernel(s1, w.data(), Epilogue{}, Layout::nCdhw8c, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("stride 2 along W"), std::string::npos) << why;
  why.clear();
  EXPECT_EQ(make_deconv_head_kernel(p, w.data(), Epilogue{}, Layout::plain, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("blocked"), std::string::npos) << why;
  Epilogue res;
  res.residual = w.data();
  why.clear();
  EXPECT_EQ(make_deconv_head_kernel(p, w.data(), res, Layout::nCdhw8c, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("residual"), std::string::npos) << why;
}

// The small plain convolution (few channels, plain in and out, vectors along W): against the
// reference over kernel shapes, dilations and pads, widths around the tile (24 pixels on
// AVX2, 64 on AVX-512), channel counts, batches, residuals and activations; guard bytes, and
// 1 and 2 threads bitwise equal.
TEST(ConvHead, SmallPlainMatchesReferenceOverSweep) {
  std::vector<std::pair<Isa, const char*>> variants{{Isa::generic, "conv3d_small_plain__generic"}};
  if (cpu_has(Isa::avx2)) variants.push_back({Isa::avx2, "conv3d_small_plain__avx2_fma"});
  if (cpu_has(Isa::avx512)) variants.push_back({Isa::avx512, "conv3d_small_plain__avx512"});
  struct Geo {
    std::array<std::int64_t, 3> k, d, pb, pe;
  };
  const Geo geos[] = {
      {{3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}},  // MONAI's last residual unit
      {{1, 3, 3}, {1, 1, 1}, {0, 1, 1}, {0, 1, 1}},
      {{3, 3, 1}, {1, 2, 1}, {1, 2, 0}, {1, 2, 0}},
      {{3, 5, 3}, {2, 1, 3}, {2, 2, 3}, {2, 2, 3}},
      {{1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}},
      {{2, 2, 4}, {1, 1, 1}, {0, 1, 2}, {1, 0, 1}},
  };
  const std::array<std::pair<std::int64_t, std::int64_t>, 5> chans{{{1, 1}, {3, 3}, {2, 4}, {4, 2}, {3, 1}}};
  const std::array<Activation, 6> acts{{Activation::none, Activation::relu, Activation::leaky_relu, Activation::prelu,
                                        Activation::sigmoid, Activation::clip}};
  std::uint32_t seed = 9000;
  int i = 0;
  for (const auto& [isa, name] : variants)
    for (const Geo& g : geos)
      for (const auto& [ic, oc] : chans)
        for (std::int64_t w : {std::int64_t{1}, std::int64_t{7}, std::int64_t{24}, std::int64_t{37}, std::int64_t{70}}) {
          ++i;
          ConvParams p = conv_params(ic, oc, {2 + i % 3, 3, w}, g.k, {1, 1, 1}, g.d, g.pb, g.pe, 1, i % 4 == 0 ? 2 : 1);
          if (p.od <= 0 || p.oh <= 0 || p.ow <= 0) continue;
          SCOPED_TRACE(std::string(name) + " " + p.str());
          std::mt19937 rng(seed++);
          const std::int64_t isp = p.id * p.ih * p.iw, osp = p.od * p.oh * p.ow;
          const auto src = random_vec(static_cast<std::size_t>(p.n * ic * isp), rng);
          const auto wei = random_vec(static_cast<std::size_t>(oc * ic * p.kd * p.kh * p.kw), rng);
          const auto bias = random_vec(static_cast<std::size_t>(oc), rng);
          const auto slopes = random_vec(static_cast<std::size_t>(oc), rng);
          const auto res = random_vec(static_cast<std::size_t>(p.n * oc * osp), rng);
          Epilogue ep;
          ep.act = acts[static_cast<std::size_t>(i) % acts.size()];
          ep.bias = i % 2 ? bias.data() : nullptr;
          ep.slope = slopes.data();
          ep.slope_per_channel = i % 4 < 2;
          ep.alpha = ep.act == Activation::clip ? -0.5f : 0.1f;
          ep.beta = 0.75f;
          ep.residual = i % 3 ? res.data() : nullptr;
          std::string why;
          auto k = make_small_plain_conv_kernel(p, wei.data(), ep, isa, &why);
          ASSERT_NE(k, nullptr) << why;
          EXPECT_STREQ(k->name(), name);
          expect_head_matches(*k, p, false, src, wei.data(), ep);
        }
}

TEST(ConvHead, SmallPlainRejectsWhatItCannotRun) {
  const std::vector<float> w(8 * 8 * 27, 0.1f);
  std::string why;
  const ConvParams wide = conv_params(3, 5, {4, 4, 4}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  EXPECT_EQ(make_small_plain_conv_kernel(wide, w.data(), Epilogue{}, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("more than 4 output"), std::string::npos) << why;
  const ConvParams deep = conv_params(5, 3, {4, 4, 4}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  why.clear();
  EXPECT_EQ(make_small_plain_conv_kernel(deep, w.data(), Epilogue{}, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("more than 4 input"), std::string::npos) << why;
  const ConvParams s2 = conv_params(3, 3, {4, 4, 4}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  why.clear();
  EXPECT_EQ(make_small_plain_conv_kernel(s2, w.data(), Epilogue{}, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("stride 1"), std::string::npos) << why;
}

TEST(ConvHead, RejectsWhatItCannotRun) {
  const std::vector<float> w(40 * 40 * 27, 0.1f);
  std::string why;
  const ConvParams k3s2 = conv_params(8, 3, {4, 4, 4}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  EXPECT_EQ(make_conv_head_kernel(k3s2, w.data(), Epilogue{}, Layout::nCdhw8c, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("stride 1 along W"), std::string::npos) << why;
  const ConvParams k3wide = conv_params(8, 5, {4, 4, 4}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});
  why.clear();
  EXPECT_EQ(make_conv_head_kernel(k3wide, w.data(), Epilogue{}, Layout::nCdhw8c, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("more than 4"), std::string::npos) << why;
  const ConvParams wide = conv_params(8, 17, {4, 4, 4}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0});
  why.clear();
  EXPECT_EQ(make_conv_head_kernel(wide, w.data(), Epilogue{}, Layout::nCdhw8c, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("more than 16"), std::string::npos) << why;
  const ConvParams ok = conv_params(8, 3, {4, 4, 4}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0});
  why.clear();
  EXPECT_EQ(make_conv_head_kernel(ok, w.data(), Epilogue{}, Layout::plain, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("blocked"), std::string::npos) << why;
  Epilogue prelu;
  prelu.act = Activation::prelu;
  prelu.slope = w.data();
  why.clear();
  EXPECT_EQ(make_conv_head_kernel(ok, w.data(), prelu, Layout::nCdhw8c, Isa::avx2, &why), nullptr);
  EXPECT_NE(why.find("PRelu"), std::string::npos) << why;
}

}  // namespace
}  // namespace voxinfer::kernels
