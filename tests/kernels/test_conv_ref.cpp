// The reference convolutions against hand-computed cases and the adjoint identity
// <conv(x), y> = <x, convT(y)>, which ties conv_transpose3d_ref to conv3d_ref.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "voxinfer/kernels/conv.h"

namespace voxinfer::kernels {
namespace {

std::vector<float> random_vec(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::size_t src_size(const ConvParams& p) { return static_cast<std::size_t>(p.n * p.ic * p.id * p.ih * p.iw); }
std::size_t dst_size(const ConvParams& p) { return static_cast<std::size_t>(p.n * p.oc * p.od * p.oh * p.ow); }
std::size_t wei_size(const ConvParams& p) {
  return static_cast<std::size_t>(p.oc * (p.ic / p.groups) * p.kd * p.kh * p.kw);
}

// Fills o* from the input size, kernel, stride, dilation and symmetric padding.
ConvParams make(std::int64_t ic, std::int64_t oc, std::int64_t d, std::int64_t h, std::int64_t w, std::int64_t k,
                std::int64_t s = 1, std::int64_t pad = 0, std::int64_t dil = 1, std::int64_t groups = 1) {
  ConvParams p;
  p.ic = ic, p.oc = oc, p.id = d, p.ih = h, p.iw = w;
  p.kd = p.kh = p.kw = k;
  p.sd = p.sh = p.sw = s;
  p.dd = p.dh = p.dw = dil;
  p.pd = p.ph = p.pw = pad;
  p.groups = groups;
  p.od = ConvParams::conv_out(d, k, s, dil, pad, pad);
  p.oh = ConvParams::conv_out(h, k, s, dil, pad, pad);
  p.ow = ConvParams::conv_out(w, k, s, dil, pad, pad);
  return p;
}

TEST(ConvRef, StrListsEveryParameter) {
  ConvParams p = make(3, 5, 7, 8, 9, 3, 2, 1, 1, 1);
  const std::string s = p.str();
  EXPECT_NE(s.find("ic=3"), std::string::npos) << s;
  EXPECT_NE(s.find("oc=5"), std::string::npos) << s;
  EXPECT_NE(s.find("iw=9"), std::string::npos) << s;
  EXPECT_NE(s.find("sd=2"), std::string::npos) << s;
  EXPECT_NE(s.find("groups=1"), std::string::npos) << s;
  EXPECT_NE(s.find("pw=1"), std::string::npos) << s;
}

TEST(ConvRef, Identity1x1) {
  const ConvParams p = make(3, 3, 2, 3, 4, 1);
  const auto x = random_vec(src_size(p), 1);
  std::vector<float> w(9, 0.f);
  for (int i = 0; i < 3; ++i) w[static_cast<std::size_t>(i * 3 + i)] = 1.f;
  std::vector<float> y(dst_size(p), -7.f);
  conv3d_ref(p, x.data(), w.data(), Epilogue{}, y.data());
  EXPECT_EQ(x, y);
}

TEST(ConvRef, Channel1x1MixesChannels) {
  // y0 = 2*x0 - x1, y1 = x1 + 3 (bias)
  const ConvParams p = make(2, 2, 1, 2, 2, 1);
  const std::vector<float> x = {1, 2, 3, 4, /* c1 */ 10, 20, 30, 40};
  const std::vector<float> w = {2, -1, 0, 1};
  const std::vector<float> b = {0, 3};
  Epilogue ep;
  ep.bias = b.data();
  std::vector<float> y(dst_size(p));
  conv3d_ref(p, x.data(), w.data(), ep, y.data());
  const std::vector<float> expect = {-8, -16, -24, -32, 13, 23, 33, 43};
  EXPECT_EQ(y, expect);
}

TEST(ConvRef, Ones3x3x3CountsNeighbours) {
  // All-ones input and weights with zero padding 1: each output counts the in-bounds taps.
  const ConvParams p = make(1, 1, 3, 4, 5, 3, 1, 1);
  std::vector<float> x(src_size(p), 1.f), w(27, 1.f), y(dst_size(p));
  conv3d_ref(p, x.data(), w.data(), Epilogue{}, y.data());
  auto span = [](std::int64_t o, std::int64_t n) { return static_cast<float>((o > 0) + 1 + (o + 1 < n)); };
  for (std::int64_t d = 0; d < 3; ++d)
    for (std::int64_t h = 0; h < 4; ++h)
      for (std::int64_t w_ = 0; w_ < 5; ++w_)
        EXPECT_EQ(y[static_cast<std::size_t>((d * 4 + h) * 5 + w_)], span(d, 3) * span(h, 4) * span(w_, 5))
            << d << "," << h << "," << w_;
}

TEST(ConvRef, Known3x3x3Sum) {
  // Input x[d,h,w] = d*100 + h*10 + w, weight 1 at every tap, no padding: output at (0,0,0)
  // is the sum over the 3x3x3 cube = 27*(100+10+1) = 2997, and shifting by one along W adds 27.
  const ConvParams p = make(1, 1, 3, 3, 4, 3);
  std::vector<float> x(src_size(p));
  for (int d = 0; d < 3; ++d)
    for (int h = 0; h < 3; ++h)
      for (int w = 0; w < 4; ++w) x[static_cast<std::size_t>((d * 3 + h) * 4 + w)] = static_cast<float>(d * 100 + h * 10 + w);
  std::vector<float> w(27, 1.f), y(dst_size(p));
  ASSERT_EQ(y.size(), 2u);
  conv3d_ref(p, x.data(), w.data(), Epilogue{}, y.data());
  EXPECT_EQ(y[0], 2997.f);
  EXPECT_EQ(y[1], 3024.f);
}

TEST(ConvRef, StrideAndPadding) {
  // 1D along W: x = 1..5, kernel [1, 2, 3], stride 2, pad 1 -> taps at x-1, x, x+1 around 0, 2, 4.
  ConvParams p = make(1, 1, 1, 1, 5, 1);
  p.kw = 3, p.sw = 2, p.pw = 1;
  p.ow = ConvParams::conv_out(5, 3, 2, 1, 1, 1);
  ASSERT_EQ(p.ow, 3);
  const std::vector<float> x = {1, 2, 3, 4, 5}, w = {1, 2, 3};
  std::vector<float> y(3);
  conv3d_ref(p, x.data(), w.data(), Epilogue{}, y.data());
  const std::vector<float> expect = {0 * 1 + 1 * 2 + 2 * 3, 2 * 1 + 3 * 2 + 4 * 3, 4 * 1 + 5 * 2 + 0 * 3};
  EXPECT_EQ(y, expect);
}

TEST(ConvRef, Dilation) {
  // 1D along H: kernel [1, 10] with dilation 3 -> y[i] = x[i] + 10*x[i+3].
  ConvParams p = make(1, 1, 1, 7, 1, 1);
  p.kh = 2, p.dh = 3;
  p.oh = ConvParams::conv_out(7, 2, 1, 3, 0, 0);
  ASSERT_EQ(p.oh, 4);
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7}, w = {1, 10};
  std::vector<float> y(4);
  conv3d_ref(p, x.data(), w.data(), Epilogue{}, y.data());
  const std::vector<float> expect = {41, 52, 63, 74};
  EXPECT_EQ(y, expect);
}

TEST(ConvRef, GroupsAreIndependent) {
  // groups=2, 4->2 channels, 1x1: y0 = x0 + 2*x1, y1 = 3*x2 + 4*x3.
  const ConvParams p = make(4, 2, 1, 1, 2, 1, 1, 0, 1, 2);
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8}, w = {1, 2, 3, 4};
  std::vector<float> y(4);
  conv3d_ref(p, x.data(), w.data(), Epilogue{}, y.data());
  const std::vector<float> expect = {1 + 2 * 3, 2 + 2 * 4, 3 * 5 + 4 * 7, 3 * 6 + 4 * 8};
  EXPECT_EQ(y, expect);
}

TEST(ConvRef, EpilogueOrderBiasResidualActivation) {
  const ConvParams p = make(1, 2, 1, 1, 2, 1);
  const std::vector<float> x = {1, -2}, w = {1, 1}, b = {0.5f, -0.5f}, r = {-3, 1, 0.25f, 4};
  const std::vector<float> slopes = {0.1f, 0.2f};
  auto run = [&](Epilogue ep) {
    ep.bias = b.data();
    ep.residual = r.data();
    std::vector<float> y(4);
    conv3d_ref(p, x.data(), w.data(), ep, y.data());
    return y;
  };
  // Pre-activation values: c0 = x + 0.5 + r[0..1] = {-1.5, -0.5}; c1 = x - 0.5 + r[2..3] = {0.75, 1.5}.
  Epilogue ep;
  EXPECT_EQ(run(ep), (std::vector<float>{-1.5f, -0.5f, 0.75f, 1.5f}));
  ep.act = Activation::relu;
  EXPECT_EQ(run(ep), (std::vector<float>{0, 0, 0.75f, 1.5f}));
  ep.act = Activation::leaky_relu, ep.alpha = 0.5f;
  EXPECT_EQ(run(ep), (std::vector<float>{-0.75f, -0.25f, 0.75f, 1.5f}));
  ep.act = Activation::clip, ep.alpha = -1.f, ep.beta = 1.f;
  EXPECT_EQ(run(ep), (std::vector<float>{-1.f, -0.5f, 0.75f, 1.f}));
  ep = Epilogue{};
  ep.act = Activation::prelu, ep.slope = slopes.data();
  const auto pr = run(ep);
  EXPECT_FLOAT_EQ(pr[0], -0.15f);
  EXPECT_FLOAT_EQ(pr[1], -0.05f);
  ep.slope_per_channel = false;
  EXPECT_FLOAT_EQ(run(ep)[1], -0.05f);
  ep = Epilogue{};
  ep.act = Activation::sigmoid;
  const auto sg = run(ep);
  EXPECT_FLOAT_EQ(sg[0], 1.f / (1.f + std::exp(1.5f)));
  EXPECT_FLOAT_EQ(sg[3], 1.f / (1.f + std::exp(-1.5f)));
}

TEST(ConvRef, TransposedK2S2ScattersEachInput) {
  // 1 channel, k2s2 along W only: y[2i + k] = x[i] * w[k].
  ConvParams p;
  p.iw = 3, p.ow = 6, p.kw = 2, p.sw = 2;
  const std::vector<float> x = {1, 2, 3}, w = {10, 1};
  std::vector<float> y(6);
  conv_transpose3d_ref(p, x.data(), w.data(), Epilogue{}, y.data());
  EXPECT_EQ(y, (std::vector<float>{10, 1, 20, 2, 30, 3}));
}

TEST(ConvRef, TransposedK3S2Pad1OutputPadding) {
  // ONNX ConvTranspose, k3 s2 pad 1, output_padding 1: out = (3-1)*2 - 2 + 3 + 1 = 6.
  // Output o receives x[i]*w[k] where o = 2i - 1 + k.
  ConvParams p;
  p.iw = 3, p.ow = 6, p.kw = 3, p.sw = 2, p.pw = 1;
  const std::vector<float> x = {1, 2, 3}, w = {1, 10, 100};
  std::vector<float> y(6);
  conv_transpose3d_ref(p, x.data(), w.data(), Epilogue{}, y.data());
  // o0: i0 k1 -> 10; o1: i0 k2 + i1 k0 -> 100 + 2; o2: i1 k1 -> 20; o3: i1 k2 + i2 k0 -> 200 + 3;
  // o4: i2 k1 -> 30; o5: i2 k2 -> 300 (the output_padding column).
  EXPECT_EQ(y, (std::vector<float>{10, 102, 20, 203, 30, 300}));
}

// <conv(x), y> == <x, convT(y)> for the same weights (conv's [O, I/g, K] is convT's [I, O/g, K]).
void check_adjoint(const ConvParams& p, std::uint32_t seed) {
  ConvParams t = p;
  t.ic = p.oc, t.id = p.od, t.ih = p.oh, t.iw = p.ow;
  t.oc = p.ic, t.od = p.id, t.oh = p.ih, t.ow = p.iw;
  const auto x = random_vec(src_size(p), seed), y = random_vec(dst_size(p), seed + 1);
  const auto w = random_vec(wei_size(p), seed + 2);
  std::vector<float> cx(dst_size(p)), ty(src_size(p));
  conv3d_ref(p, x.data(), w.data(), Epilogue{}, cx.data());
  conv_transpose3d_ref(t, y.data(), w.data(), Epilogue{}, ty.data());
  double lhs = 0, rhs = 0, scale = 0;
  for (std::size_t i = 0; i < cx.size(); ++i) lhs += double(cx[i]) * y[i], scale += std::abs(double(cx[i]) * y[i]);
  for (std::size_t i = 0; i < ty.size(); ++i) rhs += double(x[i]) * ty[i];
  EXPECT_NEAR(lhs, rhs, 1e-5 * std::max(1.0, scale)) << p.str();
}

TEST(ConvRef, TransposeIsAdjointOfConv) {
  check_adjoint(make(2, 3, 4, 5, 6, 3, 1, 1), 10);
  check_adjoint(make(3, 2, 7, 6, 5, 3, 2, 1), 20);
  check_adjoint(make(2, 2, 8, 8, 8, 2, 2, 0), 30);
  check_adjoint(make(4, 6, 5, 7, 6, 3, 1, 2, 2, 2), 40);
  check_adjoint(make(6, 4, 9, 5, 5, 3, 2, 1, 2, 2), 50);
  ConvParams an = make(3, 5, 5, 6, 7, 1);
  an.kd = 1, an.kh = 3, an.kw = 5, an.ph = 1, an.pw = 2, an.sw = 2;
  an.oh = ConvParams::conv_out(6, 3, 1, 1, 1, 1);
  an.ow = ConvParams::conv_out(7, 5, 2, 1, 2, 2);
  check_adjoint(an, 60);
}

}  // namespace
}  // namespace voxinfer::kernels
