// Operator tests: each op through a Session against a naive formula written here, over
// attribute sweeps. Failures print the whole parameter tuple.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "graph_builder.h"
#include "voxinfer/graph/passes.h"
#include "voxinfer/core/cpu.h"
#include "voxinfer/core/threading.h"
#include "test_util.h"

namespace voxinfer {
namespace {

using test::f32;
using test::i64;
using test::OneOp;

void expect_close(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  const double err = test::max_abs_diff(a, b);
  EXPECT_LE(err, tol) << what << " max_abs_err=" << err;
}

// ---------------------------------------------------------------- Conv sweep

struct ConvCase {
  int ns;  // spatial dims 1..3
  int cin, cout, groups, k, stride, dil, pad;
  std::string auto_pad;
  int size;
  std::string str() const {
    return "ns=" + std::to_string(ns) + " cin=" + std::to_string(cin) + " cout=" + std::to_string(cout) + " groups=" +
           std::to_string(groups) + " k=" + std::to_string(k) + " stride=" + std::to_string(stride) + " dil=" + std::to_string(dil) +
           " pad=" + std::to_string(pad) + " auto_pad=" + auto_pad + " size=" + std::to_string(size);
  }
};

// Naive N-d cross-correlation over the flattened 3D view (leading spatial dims of size 1).
Tensor naive_conv(const Tensor& x, const Tensor& w, const Tensor& b, const ConvCase& c, std::int64_t pb, std::int64_t out) {
  const std::int64_t n = x.dim(0), cin = c.cin, cout = c.cout, cpg = cin / c.groups, opg = cout / c.groups;
  const std::int64_t S = c.size, K = c.k;
  std::vector<std::int64_t> od{n, cout};
  for (int i = 0; i < c.ns; ++i) od.push_back(out);
  Tensor y(Shape(od), DType::f32);
  const std::int64_t s3[3] = {c.ns >= 3 ? S : 1, c.ns >= 2 ? S : 1, S};
  const std::int64_t k3[3] = {c.ns >= 3 ? K : 1, c.ns >= 2 ? K : 1, K};
  const std::int64_t o3[3] = {c.ns >= 3 ? out : 1, c.ns >= 2 ? out : 1, out};
  const std::int64_t p3[3] = {c.ns >= 3 ? pb : 0, c.ns >= 2 ? pb : 0, pb};
  const float* X = x.data<float>();
  const float* W = w.data<float>();
  float* Y = y.data<float>();
  for (std::int64_t bn = 0; bn < n; ++bn)
    for (std::int64_t o = 0; o < cout; ++o)
      for (std::int64_t z = 0; z < o3[0]; ++z)
        for (std::int64_t yy = 0; yy < o3[1]; ++yy)
          for (std::int64_t xx = 0; xx < o3[2]; ++xx) {
            double acc = b.data<float>()[o];
            const std::int64_t g = o / opg;
            for (std::int64_t ci = 0; ci < cpg; ++ci)
              for (std::int64_t a = 0; a < k3[0]; ++a)
                for (std::int64_t bb = 0; bb < k3[1]; ++bb)
                  for (std::int64_t cc = 0; cc < k3[2]; ++cc) {
                    const std::int64_t iz = z * (c.ns >= 3 ? c.stride : 1) - p3[0] + a * c.dil;
                    const std::int64_t iy = yy * (c.ns >= 2 ? c.stride : 1) - p3[1] + bb * c.dil;
                    const std::int64_t ix = xx * c.stride - p3[2] + cc * c.dil;
                    if (iz < 0 || iy < 0 || ix < 0 || iz >= s3[0] || iy >= s3[1] || ix >= s3[2]) continue;
                    const float xv = X[(((bn * cin + g * cpg + ci) * s3[0] + iz) * s3[1] + iy) * s3[2] + ix];
                    const float wv = W[(((o * cpg + ci) * k3[0] + a) * k3[1] + bb) * k3[2] + cc];
                    acc += static_cast<double>(xv) * wv;
                  }
            Y[(((bn * cout + o) * o3[0] + z) * o3[1] + yy) * o3[2] + xx] = static_cast<float>(acc);
          }
  return y;
}

class ConvSweep : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvSweep, MatchesNaive) {
  const ConvCase c = GetParam();
  std::vector<std::int64_t> xs{2, c.cin}, ws{c.cout, c.cin / c.groups};
  for (int i = 0; i < c.ns; ++i) {
    xs.push_back(c.size);
    ws.push_back(c.k);
  }
  const Tensor x = test::random_tensor(Shape(xs), 11);
  const Tensor w = test::random_tensor(Shape(ws), 12);
  const Tensor b = test::random_tensor(Shape{c.cout}, 13);
  const std::int64_t ke = (c.k - 1) * c.dil + 1;
  std::int64_t pb = c.pad, pe = c.pad, out;
  if (c.auto_pad == "SAME_UPPER" || c.auto_pad == "SAME_LOWER") {
    out = (c.size + c.stride - 1) / c.stride;
    const std::int64_t total = std::max<std::int64_t>(0, (out - 1) * c.stride + ke - c.size);
    pb = c.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    pe = total - pb;
  } else if (c.auto_pad == "VALID") {
    pb = pe = 0;
    out = (c.size - ke) / c.stride + 1;
  } else {
    out = (c.size + pb + pe - ke) / c.stride + 1;
  }
  OneOp op("Conv");
  op.input(x).constant(w).constant(b).attr("group", test::i(c.groups)).attr("strides", test::ints(std::vector<std::int64_t>(static_cast<std::size_t>(c.ns), c.stride)))
      .attr("dilations", test::ints(std::vector<std::int64_t>(static_cast<std::size_t>(c.ns), c.dil)));
  if (c.auto_pad.empty()) op.attr("pads", test::ints(std::vector<std::int64_t>(static_cast<std::size_t>(2 * c.ns), c.pad)));
  else op.attr("auto_pad", test::s(c.auto_pad));
  const Tensor y = op.run1();
  const Tensor ref = naive_conv(x, w, b, c, pb, out);
  expect_close(y, ref, 1e-4, c.str());
}

std::vector<ConvCase> conv_cases() {
  std::vector<ConvCase> v;
  for (int ns : {1, 2, 3})
    for (int groups : {1, 2})
      for (int k : {1, 3})
        for (int stride : {1, 2})
          for (int dil : {1, 2}) {
            if (k == 1 && dil > 1) continue;
            v.push_back({ns, 4, 6, groups, k, stride, dil, k / 2 * dil, "", 7});
          }
  for (const char* ap : {"SAME_UPPER", "SAME_LOWER", "VALID"}) {
    v.push_back({3, 3, 5, 1, 3, 2, 1, 0, ap, 8});
    v.push_back({2, 2, 4, 2, 2, 1, 1, 0, ap, 5});
  }
  v.push_back({3, 1, 9, 1, 5, 1, 1, 2, "", 6});   // first layer, 5^3 kernel
  v.push_back({3, 6, 6, 6, 3, 1, 1, 1, "", 5});   // depthwise
  v.push_back({3, 9, 17, 1, 3, 1, 3, 3, "", 9});  // not multiples of 8
  return v;
}

// Test names carry the parameters (ns3_cin4_cout6_groups1_k3_stride1_dil1_pad1_size7).
std::string conv_case_name(const ::testing::TestParamInfo<ConvCase>& info) {
  const ConvCase& c = info.param;
  std::string n = "ns" + std::to_string(c.ns) + "_cin" + std::to_string(c.cin) + "_cout" + std::to_string(c.cout) +
                  "_groups" + std::to_string(c.groups) + "_k" + std::to_string(c.k) + "_stride" +
                  std::to_string(c.stride) + "_dil" + std::to_string(c.dil) +
                  (c.auto_pad.empty() ? "_pad" + std::to_string(c.pad) : "_" + c.auto_pad) + "_size" +
                  std::to_string(c.size);
  return n;
}

INSTANTIATE_TEST_SUITE_P(Ops, ConvSweep, ::testing::ValuesIn(conv_cases()), conv_case_name);

// ---------------------------------------------------------------- ConvTranspose

TEST(ConvTranspose, MatchesScatterFormulaOverSweep) {
  for (int ns : {1, 2, 3})
    for (int k : {2, 3})
      for (int s : {1, 2})
        for (int op_pad : {0, 1})
          for (int groups : {1, 2}) {
            if (op_pad >= s) continue;
            const int cin = 4, cout = 6, size = 5, pad = k == 3 ? 1 : 0;
            std::vector<std::int64_t> xs{1, cin}, ws{cin, cout / groups};
            for (int i = 0; i < ns; ++i) {
              xs.push_back(size);
              ws.push_back(k);
            }
            const Tensor x = test::random_tensor(Shape(xs), 21);
            const Tensor w = test::random_tensor(Shape(ws), 22);
            OneOp op("ConvTranspose");
            op.input(x).constant(w).attr("strides", test::ints(std::vector<std::int64_t>(static_cast<std::size_t>(ns), s)))
                .attr("pads", test::ints(std::vector<std::int64_t>(static_cast<std::size_t>(2 * ns), pad)))
                .attr("output_padding", test::ints(std::vector<std::int64_t>(static_cast<std::size_t>(ns), op_pad)))
                .attr("group", test::i(groups));
            const Tensor y = op.run1();
            const std::int64_t out = s * (size - 1) + op_pad + k - 2 * pad;
            ASSERT_EQ(y.dim(2), out);
            // Scatter: every input voxel adds w * x to the outputs it reaches.
            std::vector<std::int64_t> od{1, cout};
            for (int i = 0; i < ns; ++i) od.push_back(out);
            Tensor ref(Shape(od), DType::f32);
            const std::int64_t sz[3] = {ns >= 3 ? size : 1, ns >= 2 ? size : 1, size};
            const std::int64_t kk[3] = {ns >= 3 ? k : 1, ns >= 2 ? k : 1, k};
            const std::int64_t oo[3] = {ns >= 3 ? out : 1, ns >= 2 ? out : 1, out};
            const std::int64_t ss[3] = {ns >= 3 ? s : 1, ns >= 2 ? s : 1, s};
            const std::int64_t pp[3] = {ns >= 3 ? pad : 0, ns >= 2 ? pad : 0, pad};
            const int opg = cout / groups, cpg = cin / groups;
            for (int ci = 0; ci < cin; ++ci)
              for (std::int64_t z = 0; z < sz[0]; ++z)
                for (std::int64_t yy = 0; yy < sz[1]; ++yy)
                  for (std::int64_t xx = 0; xx < sz[2]; ++xx)
                    for (int j = 0; j < opg; ++j)
                      for (std::int64_t a = 0; a < kk[0]; ++a)
                        for (std::int64_t b = 0; b < kk[1]; ++b)
                          for (std::int64_t c = 0; c < kk[2]; ++c) {
                            const std::int64_t oz = z * ss[0] - pp[0] + a, oy = yy * ss[1] - pp[1] + b, ox = xx * ss[2] - pp[2] + c;
                            if (oz < 0 || oy < 0 || ox < 0 || oz >= oo[0] || oy >= oo[1] || ox >= oo[2]) continue;
                            const int o = (ci / cpg) * opg + j;
                            ref.data<float>()[((o * oo[0] + oz) * oo[1] + oy) * oo[2] + ox] +=
                                x.data<float>()[((ci * sz[0] + z) * sz[1] + yy) * sz[2] + xx] *
                                w.data<float>()[(((ci * opg + j) * kk[0] + a) * kk[1] + b) * kk[2] + c];
                          }
            expect_close(y, ref, 1e-4, "ns=" + std::to_string(ns) + " k=" + std::to_string(k) + " s=" + std::to_string(s) +
                                           " output_padding=" + std::to_string(op_pad) + " groups=" + std::to_string(groups));
          }
}

// ---------------------------------------------------------------- pooling

TEST(Pool, MaxAndAverageOverSweep) {
  for (bool mx : {true, false})
    for (int k : {2, 3})
      for (int s : {1, 2})
        for (int pad : {0, 1})
          for (int ceil_mode : {0, 1})
            for (int cip : {0, 1}) {
              if (pad >= k) continue;
              const int size = 7;
              const Tensor x = test::random_tensor(Shape{1, 2, size, size - 1, size - 2}, 31);
              OneOp op(mx ? "MaxPool" : "AveragePool");
              op.input(x).attr("kernel_shape", test::ints({k, k, k})).attr("strides", test::ints({s, s, s}))
                  .attr("pads", test::ints({pad, pad, pad, pad, pad, pad})).attr("ceil_mode", test::i(ceil_mode));
              if (!mx) op.attr("count_include_pad", test::i(cip));
              const Tensor y = op.run1();
              const std::int64_t in3[3] = {size, size - 1, size - 2};
              std::int64_t o3[3];
              for (int a = 0; a < 3; ++a) {
                const std::int64_t span = in3[a] + 2 * pad - k;
                o3[a] = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
                if (ceil_mode && (o3[a] - 1) * s >= in3[a] + pad) --o3[a];
              }
              ASSERT_EQ(y.shape(), (Shape{1, 2, o3[0], o3[1], o3[2]}));
              for (int c = 0; c < 2; ++c)
                for (std::int64_t z = 0; z < o3[0]; ++z)
                  for (std::int64_t yy = 0; yy < o3[1]; ++yy)
                    for (std::int64_t xx = 0; xx < o3[2]; ++xx) {
                      double acc = mx ? -1e30 : 0;
                      int cnt = 0, cntp = 0;
                      for (int a = 0; a < k; ++a)
                        for (int b = 0; b < k; ++b)
                          for (int d = 0; d < k; ++d) {
                            const std::int64_t iz = z * s - pad + a, iy = yy * s - pad + b, ix = xx * s - pad + d;
                            if (iz < in3[0] + pad && iy < in3[1] + pad && ix < in3[2] + pad) ++cntp;
                            if (iz < 0 || iy < 0 || ix < 0 || iz >= in3[0] || iy >= in3[1] || ix >= in3[2]) continue;
                            const float v = x.at<float>(0, c, iz, iy, ix);
                            acc = mx ? std::max(acc, static_cast<double>(v)) : acc + v;
                            ++cnt;
                          }
                      if (!mx) acc /= cip ? cntp : cnt;
                      ASSERT_NEAR(y.at<float>(0, c, z, yy, xx), acc, 1e-5)
                          << "max=" << mx << " k=" << k << " s=" << s << " pad=" << pad << " ceil=" << ceil_mode << " cip=" << cip;
                    }
            }
}

TEST(Pool, GlobalAverageAndMax) {
  const Tensor x = test::random_tensor(Shape{2, 3, 4, 5, 6}, 32);
  const Tensor a = OneOp("GlobalAveragePool").input(x).run1();
  const Tensor m = OneOp("GlobalMaxPool").input(x).run1();
  ASSERT_EQ(a.shape(), (Shape{2, 3, 1, 1, 1}));
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 3; ++c) {
      double s = 0, mx = -1e30;
      for (int i = 0; i < 120; ++i) {
        const float v = x.data<float>()[(n * 3 + c) * 120 + i];
        s += v;
        mx = std::max(mx, static_cast<double>(v));
      }
      EXPECT_NEAR(a.data<float>()[n * 3 + c], s / 120, 1e-6);
      EXPECT_EQ(m.data<float>()[n * 3 + c], static_cast<float>(mx));
    }
}

// ---------------------------------------------------------------- Resize

TEST(Resize, LinearCoordinateModes1DHandComputed) {
  // Input [0, 10, 20, 30] upsampled x2 along the last axis.
  const Tensor x = f32(Shape{1, 1, 4}, {0, 10, 20, 30});
  auto run = [&](const char* ctm, const char* mode) {
    return OneOp("Resize", 13).input(x).none().constant(f32(Shape{3}, {1, 1, 2})).attr("mode", test::s(mode))
        .attr("coordinate_transformation_mode", test::s(ctm)).run1();
  };
  const Tensor hp = run("half_pixel", "linear");
  const std::vector<float> want_hp{0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30};
  const Tensor ac = run("align_corners", "linear");
  const std::vector<float> want_ac{0, 30.f / 7, 60.f / 7, 90.f / 7, 120.f / 7, 150.f / 7, 180.f / 7, 30};
  const Tensor as = run("asymmetric", "linear");
  const std::vector<float> want_as{0, 5, 10, 15, 20, 25, 30, 30};
  const Tensor ph = run("pytorch_half_pixel", "linear");
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(hp.data<float>()[i], want_hp[static_cast<std::size_t>(i)], 1e-5) << "half_pixel " << i;
    EXPECT_NEAR(ac.data<float>()[i], want_ac[static_cast<std::size_t>(i)], 1e-4) << "align_corners " << i;
    EXPECT_NEAR(as.data<float>()[i], want_as[static_cast<std::size_t>(i)], 1e-5) << "asymmetric " << i;
    EXPECT_NEAR(ph.data<float>()[i], want_hp[static_cast<std::size_t>(i)], 1e-5) << "pytorch_half_pixel " << i;
  }
  const Tensor nn = OneOp("Resize", 13).input(x).none().constant(f32(Shape{3}, {1, 1, 2})).attr("mode", test::s("nearest"))
                        .attr("coordinate_transformation_mode", test::s("asymmetric")).attr("nearest_mode", test::s("floor")).run1();
  const std::vector<float> want_nn{0, 0, 10, 10, 20, 20, 30, 30};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(nn.data<float>()[i], want_nn[static_cast<std::size_t>(i)]);
}

TEST(Resize, TrilinearIsSeparable) {
  // Trilinear of a separable product f(z)g(y)h(x) equals the product of 1D resizes.
  Tensor x(Shape{1, 1, 3, 4, 5}, DType::f32);
  const float fz[3] = {1, 2, 4}, gy[4] = {0, 1, 3, 2}, hx[5] = {5, 1, 0, 2, 2};
  for (int z = 0; z < 3; ++z)
    for (int y = 0; y < 4; ++y)
      for (int xx = 0; xx < 5; ++xx) x.at<float>(0, 0, z, y, xx) = fz[z] * gy[y] * hx[xx];
  const Tensor y = OneOp("Resize", 13).input(x).none().none().constant(i64({1, 1, 6, 8, 10})).attr("mode", test::s("linear")).run1();
  auto lin = [](const float* v, int n, int out, int o) {
    double c = (o + 0.5) * n / out - 0.5;
    c = std::clamp(c, 0.0, static_cast<double>(n - 1));
    const int a = static_cast<int>(std::floor(c)), b = std::min(a + 1, n - 1);
    return v[a] * (1 - (c - a)) + v[b] * (c - a);
  };
  for (int z = 0; z < 6; ++z)
    for (int yy = 0; yy < 8; ++yy)
      for (int xx = 0; xx < 10; ++xx)
        ASSERT_NEAR(y.at<float>(0, 0, z, yy, xx), lin(fz, 3, 6, z) * lin(gy, 4, 8, yy) * lin(hx, 5, 10, xx), 1e-4);
}

// ---------------------------------------------------------------- softmax, norms

TEST(Softmax, AxesAndLog) {
  const Tensor x = test::random_tensor(Shape{2, 3, 4}, 41, -3, 3);
  for (int axis : {0, 1, 2, -1}) {
    const Tensor y = OneOp("Softmax", 13).input(x).attr("axis", test::i(axis)).run1();
    const Tensor l = OneOp("LogSoftmax", 13).input(x).attr("axis", test::i(axis)).run1();
    const int a = axis < 0 ? 2 : axis;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 4; ++k) {
          double s = 0;
          for (int t = 0; t < x.dim(a); ++t) {
            int idx[3] = {i, j, k};
            idx[a] = t;
            s += std::exp(x.at<float>(idx[0], idx[1], idx[2]));
          }
          EXPECT_NEAR(y.at<float>(i, j, k), std::exp(x.at<float>(i, j, k)) / s, 1e-6) << "axis " << axis;
          EXPECT_NEAR(l.at<float>(i, j, k), x.at<float>(i, j, k) - std::log(s), 1e-5) << "axis " << axis;
        }
  }
  // opset < 13: coerced to 2D at axis 1 (normalised over all of dims 1..)
  const Tensor y11 = OneOp("Softmax", 11).input(x).run1();
  double s = 0;
  for (int t = 0; t < 12; ++t) s += std::exp(x.data<float>()[t]);
  EXPECT_NEAR(y11.data<float>()[5], std::exp(x.data<float>()[5]) / s, 1e-6);
}

// Statistics over several chunks (40000 values per channel) of data with a large offset
// (1000 + N(0, 0.1)): the chunked moments must match a double-precision reference, and the
// fused LeakyRelu must act on the normalized values.
TEST(Norms, InstanceNormChunkedStatisticsWithLargeOffset) {
  const Shape shape{2, 3, 20, 40, 50};
  Tensor x = test::random_tensor(shape, 61, -0.1f, 0.1f);
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += 1000.f + 0.05f * static_cast<float>(i % 7);
  const Tensor sc = test::random_tensor(Shape{3}, 62, 0.5, 1.5), bi = test::random_tensor(Shape{3}, 63);
  const Tensor y = OneOp("InstanceNormalization")
                       .input(x).constant(sc).constant(bi)
                       .attr("epsilon", test::f(1e-5f))
                       .attr("voxinfer.activation", test::s("leaky_relu"))
                       .attr("voxinfer.alpha", test::f(0.01f))
                       .run1();
  const std::int64_t sp = 40000;
  double worst = 0, a_max = 0;
  for (std::int64_t r = 0; r < 6; ++r) {
    const float* p = x.data<float>() + r * sp;
    double m = 0, v = 0;
    for (std::int64_t k = 0; k < sp; ++k) m += p[k];
    m /= static_cast<double>(sp);
    for (std::int64_t k = 0; k < sp; ++k) v += (p[k] - m) * (p[k] - m);
    v /= static_cast<double>(sp);
    const double a = sc.data<float>()[r % 3] / std::sqrt(v + 1e-5), b = bi.data<float>()[r % 3];
    a_max = std::max(a_max, a);
    for (std::int64_t k = 0; k < sp; ++k) {
      double e = (p[k] - m) * a + b;
      e = e >= 0 ? e : 0.01 * e;
      worst = std::max(worst, std::abs(y.data<float>()[r * sp + k] - e));
    }
  }
  // The mean is applied as a float: one ulp of 1000 (6.1e-5) times the scale a (about 15
  // here) bounds what that costs; a form x * a + b would lose about 1e-3 at this offset.
  EXPECT_LT(worst, 6.1e-5 * a_max);
  std::printf("[norm] max error %.3g, bound %.3g\n", worst, 6.1e-5 * a_max);
}

TEST(Norms, InstanceGroupLayerBatch) {
  const Tensor x = test::random_tensor(Shape{2, 4, 3, 2, 5}, 51, -2, 3);
  const Tensor sc = test::random_tensor(Shape{4}, 52, 0.5, 1.5), bi = test::random_tensor(Shape{4}, 53);
  const Tensor in = OneOp("InstanceNormalization").input(x).constant(sc).constant(bi).attr("epsilon", test::f(1e-5f)).run1();
  const Tensor sc2 = test::random_tensor(Shape{2}, 54, 0.5, 1.5), bi2 = test::random_tensor(Shape{2}, 55);
  const Tensor gn = OneOp("GroupNormalization", 18).input(x).constant(sc2).constant(bi2).attr("num_groups", test::i(2)).run1();
  for (int n = 0; n < 2; ++n) {
    for (int c = 0; c < 4; ++c) {
      double m = 0, v = 0;
      for (int k = 0; k < 30; ++k) m += x.data<float>()[(n * 4 + c) * 30 + k];
      m /= 30;
      for (int k = 0; k < 30; ++k) v += std::pow(x.data<float>()[(n * 4 + c) * 30 + k] - m, 2);
      v /= 30;
      for (int k = 0; k < 30; ++k)
        ASSERT_NEAR(in.data<float>()[(n * 4 + c) * 30 + k],
                    (x.data<float>()[(n * 4 + c) * 30 + k] - m) / std::sqrt(v + 1e-5) * sc.data<float>()[c] + bi.data<float>()[c], 1e-4);
    }
    for (int g = 0; g < 2; ++g) {
      double m = 0, v = 0;
      for (int k = 0; k < 60; ++k) m += x.data<float>()[(n * 2 + g) * 60 + k];
      m /= 60;
      for (int k = 0; k < 60; ++k) v += std::pow(x.data<float>()[(n * 2 + g) * 60 + k] - m, 2);
      v /= 60;
      for (int k = 0; k < 60; ++k)
        ASSERT_NEAR(gn.data<float>()[(n * 2 + g) * 60 + k],
                    (x.data<float>()[(n * 2 + g) * 60 + k] - m) / std::sqrt(v + 1e-5) * sc2.data<float>()[g] + bi2.data<float>()[g], 1e-4);
    }
  }
  const Tensor ls = test::random_tensor(Shape{2, 5}, 56), lb = test::random_tensor(Shape{2, 5}, 57);
  const Tensor ln = OneOp("LayerNormalization").input(x).constant(ls).constant(lb).attr("axis", test::i(-2)).run1();
  for (int r = 0; r < 2 * 4 * 3; ++r) {
    double m = 0, v = 0;
    for (int k = 0; k < 10; ++k) m += x.data<float>()[r * 10 + k];
    m /= 10;
    for (int k = 0; k < 10; ++k) v += std::pow(x.data<float>()[r * 10 + k] - m, 2);
    v /= 10;
    for (int k = 0; k < 10; ++k)
      ASSERT_NEAR(ln.data<float>()[r * 10 + k], (x.data<float>()[r * 10 + k] - m) / std::sqrt(v + 1e-5) * ls.data<float>()[k] + lb.data<float>()[k], 1e-4);
  }
  const Tensor mean = test::random_tensor(Shape{4}, 58), var = test::random_tensor(Shape{4}, 59, 0.5, 2);
  const Tensor bn = OneOp("BatchNormalization").input(x).constant(sc).constant(bi).constant(mean).constant(var).run1();
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 4; ++c)
      for (int k = 0; k < 30; ++k) {
        const int i = (n * 4 + c) * 30 + k;
        ASSERT_NEAR(bn.data<float>()[i], (x.data<float>()[i] - mean.data<float>()[c]) / std::sqrt(var.data<float>()[c] + 1e-5f) * sc.data<float>()[c] + bi.data<float>()[c], 1e-5);
      }
}

// Bytes of an InstanceNormalization(+LeakyRelu) and a GroupNormalization on n threads.
std::vector<Tensor> run_norms(const Tensor& x, int threads) {
  set_num_threads(threads);
  const std::int64_t c = x.shape()[1];
  graph::Graph g;
  g.opset = 18;
  test::add_input(g, "x");
  g.initializers["s"] = test::random_tensor(Shape{c}, 21, 0.5f, 1.5f);
  g.initializers["t"] = test::random_tensor(Shape{c}, 22);
  g.initializers["gs"] = test::random_tensor(Shape{c / 2}, 23, 0.5f, 1.5f);
  g.initializers["gt"] = test::random_tensor(Shape{c / 2}, 24);
  test::add_node(g, "InstanceNormalization", {"x", "s", "t"}, "n1");
  test::add_node(g, "LeakyRelu", {"n1"}, "y", {{"alpha", test::f(0.01f)}});
  test::add_node(g, "GroupNormalization", {"x", "gs", "gt"}, "z", {{"num_groups", test::i(c / 2)}});
  test::add_output(g, "y");
  test::add_output(g, "z");
  graph::Session session(g);
  std::vector<Tensor> out = session.run(std::vector<Tensor>{x});
  set_num_threads(0);
  return out;
}

TEST(Norms, SameBytesOnAnyThreadCountInEitherOrder) {
  // 40000 voxels per channel: two statistics chunks. 6 channels (instance units) on 1, 2 and 3
  // threads: whole units per thread. 2 images x 2 channels: 4 instance units and 2 group units,
  // so 3 threads (and 2 for the groups) take the two-sweep order. Every order must give the
  // same bytes.
  for (const Shape& shape : {Shape{1, 6, 25, 40, 40}, Shape{2, 2, 25, 40, 41}}) {
    SCOPED_TRACE(shape.str());
    const Tensor x = test::random_tensor(shape, 25, -2.f, 3.f);
    const std::vector<Tensor> one = run_norms(x, 1);
    for (const int threads : {2, 3}) {
      const std::vector<Tensor> more = run_norms(x, threads);
      for (std::size_t k = 0; k < one.size(); ++k)
        EXPECT_EQ(std::memcmp(one[k].data<float>(), more[k].data<float>(), static_cast<std::size_t>(one[k].numel()) * sizeof(float)), 0)
            << threads << " threads, output " << k;
    }
  }
}

// ---------------------------------------------------------------- elementwise

TEST(Elementwise, BroadcastingArithmeticAndComparisons) {
  const Tensor a = test::random_tensor(Shape{2, 3, 4}, 61, 0.5, 2), b = test::random_tensor(Shape{3, 1}, 62, 0.5, 2);
  struct K { const char* op; float (*f)(float, float); };
  const K ks[] = {{"Add", [](float x, float y) { return x + y; }}, {"Sub", [](float x, float y) { return x - y; }},
                  {"Mul", [](float x, float y) { return x * y; }}, {"Div", [](float x, float y) { return x / y; }},
                  {"Pow", [](float x, float y) { return std::pow(x, y); }}, {"Max", [](float x, float y) { return std::max(x, y); }},
                  {"Min", [](float x, float y) { return std::min(x, y); }}};
  for (const auto& k : ks) {
    const Tensor y = OneOp(k.op).input(a).input(b).run1();
    ASSERT_EQ(y.shape(), (Shape{2, 3, 4})) << k.op;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int l = 0; l < 4; ++l) ASSERT_NEAR(y.at<float>(i, j, l), k.f(a.at<float>(i, j, l), b.at<float>(j, 0)), 1e-5) << k.op;
  }
  const Tensor lt = OneOp("Less").input(a).input(b).run1();
  const Tensor eq = OneOp("Equal").input(a).input(a).run1();
  ASSERT_EQ(lt.dtype(), DType::boolean);
  for (int i = 0; i < 24; ++i) {
    EXPECT_EQ(lt.data<bool>()[i], a.data<float>()[i] < b.data<float>()[(i / 4) % 3]);
    EXPECT_TRUE(eq.data<bool>()[i]);
  }
  const Tensor w = OneOp("Where").input(lt).input(a).input(f32(Shape{}, {-7})).run1();
  for (int i = 0; i < 24; ++i) EXPECT_EQ(w.data<float>()[i], lt.data<bool>()[i] ? a.data<float>()[i] : -7.f);
  EXPECT_THROW(OneOp("Add").input(a).input(test::random_tensor(Shape{5}, 1)).run1(), Error);
  // Integer Mod follows Python's sign rule; fmod=1 follows C.
  const Tensor m = OneOp("Mod").input(i64({-7, 7, -7})).input(i64({3, -3, -3})).run1();
  EXPECT_EQ(m.data<std::int64_t>()[0], 2);
  EXPECT_EQ(m.data<std::int64_t>()[1], -2);
  EXPECT_EQ(m.data<std::int64_t>()[2], -1);
}

TEST(Elementwise, UnaryActivations) {
  const Tensor x = test::random_tensor(Shape{3, 7}, 71, -4, 4);
  struct K { const char* op; std::function<double(double)> f; std::map<std::string, graph::Attribute> attrs; };
  const std::vector<K> ks = {
      {"Relu", [](double v) { return std::max(v, 0.0); }, {}},
      {"LeakyRelu", [](double v) { return v >= 0 ? v : 0.1 * v; }, {{"alpha", test::f(0.1f)}}},
      {"Elu", [](double v) { return v >= 0 ? v : 0.5 * (std::exp(v) - 1); }, {{"alpha", test::f(0.5f)}}},
      {"Selu", [](double v) { return v > 0 ? 1.0507009873554805 * v : 1.0507009873554805 * 1.6732632423543772 * (std::exp(v) - 1); }, {}},
      {"Sigmoid", [](double v) { return 1 / (1 + std::exp(-v)); }, {}},
      {"HardSigmoid", [](double v) { return std::clamp(0.2 * v + 0.5, 0.0, 1.0); }, {}},
      {"Tanh", [](double v) { return std::tanh(v); }, {}},
      {"Erf", [](double v) { return std::erf(v); }, {}},
      {"Gelu", [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }, {}},
      {"Exp", [](double v) { return std::exp(v); }, {}},
      {"Abs", [](double v) { return std::abs(v); }, {}},
      {"Neg", [](double v) { return -v; }, {}},
      {"Clip", [](double v) { return std::clamp(v, -1.0, 2.0); }, {{"min", test::f(-1)}, {"max", test::f(2)}}},
  };
  for (const auto& k : ks) {
    OneOp op(k.op, k.op == std::string("Clip") ? 6 : 17);
    op.input(x);
    for (const auto& [n, a] : k.attrs) op.attr(n, a);
    const Tensor y = op.run1();
    for (int i = 0; i < 21; ++i) ASSERT_NEAR(y.data<float>()[i], k.f(x.data<float>()[i]), 1e-5 * std::max(1.0, std::abs(k.f(x.data<float>()[i])))) << k.op;
  }
  const Tensor pos = test::random_tensor(Shape{9}, 72, 0.1, 5);
  const Tensor sq = OneOp("Sqrt").input(pos).run1(), lg = OneOp("Log").input(pos).run1();
  for (int i = 0; i < 9; ++i) {
    EXPECT_NEAR(sq.data<float>()[i], std::sqrt(pos.data<float>()[i]), 1e-6);
    EXPECT_NEAR(lg.data<float>()[i], std::log(pos.data<float>()[i]), 1e-6);
  }
  // PRelu with per-channel slope [C,1,1]
  const Tensor px = test::random_tensor(Shape{1, 2, 2, 2}, 73);
  const Tensor slope = f32(Shape{2, 1, 1}, {0.1f, 0.3f});
  const Tensor py = OneOp("PRelu").input(px).constant(slope).run1();
  for (int i = 0; i < 8; ++i) {
    const float v = px.data<float>()[i];
    EXPECT_FLOAT_EQ(py.data<float>()[i], v >= 0 ? v : v * (i < 4 ? 0.1f : 0.3f));
  }
}

// ---------------------------------------------------------------- data movement

TEST(DataMovement, SliceWithNegativeStepsAndAxes) {
  Tensor x(Shape{4, 5}, DType::f32);
  for (int i = 0; i < 20; ++i) x.data<float>()[i] = static_cast<float>(i);
  const Tensor y = OneOp("Slice", 13).input(x).constant(i64({-1, 1})).constant(i64({0, 100})).constant(i64({0, 1})).constant(i64({-1, 2})).run1();
  ASSERT_EQ(y.shape(), (Shape{3, 2}));  // rows 3,2,1; cols 1,3
  EXPECT_EQ(y.at<float>(0, 0), 16.f);
  EXPECT_EQ(y.at<float>(0, 1), 18.f);
  EXPECT_EQ(y.at<float>(2, 1), 8.f);
}

TEST(DataMovement, PadModes) {
  const Tensor x = f32(Shape{1, 3}, {1, 2, 3});
  auto pad = [&](const char* mode) {
    return OneOp("Pad", 13).input(x).constant(i64({0, 2, 0, 2})).constant(f32(Shape{}, {9})).attr("mode", test::s(mode)).run1();
  };
  const std::vector<float> c{9, 9, 1, 2, 3, 9, 9}, r{3, 2, 1, 2, 3, 2, 1}, e{1, 1, 1, 2, 3, 3, 3};
  const Tensor pc = pad("constant"), pr = pad("reflect"), pe = pad("edge");
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(pc.data<float>()[i], c[static_cast<std::size_t>(i)]);
    EXPECT_EQ(pr.data<float>()[i], r[static_cast<std::size_t>(i)]);
    EXPECT_EQ(pe.data<float>()[i], e[static_cast<std::size_t>(i)]);
  }
  // Negative pads crop.
  const Tensor crop = OneOp("Pad", 13).input(x).constant(i64({0, -1, 0, 0})).run1();
  ASSERT_EQ(crop.shape(), (Shape{1, 2}));
  EXPECT_EQ(crop.data<float>()[0], 2.f);
}

TEST(DataMovement, TransposeConcatSplitGatherExpandTile) {
  const Tensor x = test::random_tensor(Shape{2, 3, 4}, 81);
  const Tensor t = OneOp("Transpose").input(x).attr("perm", test::ints({2, 0, 1})).run1();
  ASSERT_EQ(t.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(t.at<float>(3, 1, 2), x.at<float>(1, 2, 3));
  const Tensor y = test::random_tensor(Shape{2, 5, 4}, 82);
  const Tensor c = OneOp("Concat").input(x).input(y).attr("axis", test::i(1)).run1();
  ASSERT_EQ(c.shape(), (Shape{2, 8, 4}));
  EXPECT_EQ(c.at<float>(1, 2, 3), x.at<float>(1, 2, 3));
  EXPECT_EQ(c.at<float>(1, 6, 0), y.at<float>(1, 3, 0));
  EXPECT_THROW(OneOp("Concat").input(x).input(test::random_tensor(Shape{2, 5, 3}, 1)).attr("axis", test::i(1)).run1(), Error);
  const auto parts = OneOp("Split", 13).input(c).constant(i64({3, 5})).attr("axis", test::i(1)).outputs(2).run();
  ASSERT_EQ(parts[1].shape(), (Shape{2, 5, 4}));
  EXPECT_EQ(test::max_abs_diff(parts[1], y), 0.0);
  const Tensor g = OneOp("Gather").input(x).constant(i64({2, -1, 0})).attr("axis", test::i(2)).run1();
  ASSERT_EQ(g.shape(), (Shape{2, 3, 3}));
  EXPECT_EQ(g.at<float>(1, 1, 1), x.at<float>(1, 1, 3));
  const Tensor e = OneOp("Expand").input(f32(Shape{3, 1}, {1, 2, 3})).constant(i64({2, 3, 4})).run1();
  ASSERT_EQ(e.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(e.at<float>(1, 2, 3), 3.f);
  const Tensor ti = OneOp("Tile").input(f32(Shape{2}, {1, 2})).constant(i64({3})).run1();
  ASSERT_EQ(ti.shape(), (Shape{6}));
  EXPECT_EQ(ti.data<float>()[5], 2.f);
}

// Expand and Tile copy blocks; an element-by-element oracle over shapes where the repeated
// axis is first, last, in the middle, several at once, and a rank-increasing Expand.
TEST(DataMovement, ExpandAndTileMatchElementOracle) {
  struct Case {
    Shape in;
    std::vector<std::int64_t> arg;
    bool tile;
  };
  const Case cases[] = {
      {Shape{1, 1, 4, 5, 3}, {1, 16, 1, 1, 1}, true}, {Shape{2, 3, 4}, {2, 1, 3}, true},   {Shape{2, 3, 4}, {1, 1, 1}, true},
      {Shape{3, 1, 2}, {2, 2, 2}, true},              {Shape{1, 4, 1}, {3, 4, 5}, false},  {Shape{3, 1}, {2, 3, 4}, false},
      {Shape{1}, {2, 3}, false},                      {Shape{2, 1, 1, 3}, {2, 4, 5, 3}, false}, {Shape{2, 3}, {2, 3}, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.in.str() + (c.tile ? " tile" : " expand"));
    const Tensor x = test::random_tensor(c.in, 211);
    const Tensor y = OneOp(c.tile ? "Tile" : "Expand").input(x).constant(i64(c.arg)).run1();
    const Shape& os = y.shape();
    const int r = os.rank(), off = r - c.in.rank();
    for (std::int64_t i = 0; i < y.numel(); ++i) {
      std::int64_t rem = i, so = 0, st = 1;
      for (int k = r - 1; k >= 0; --k) {
        const std::int64_t idx = rem % os[k];
        rem /= os[k];
        if (k < off) continue;
        const std::int64_t n = c.in[k - off];
        so += (c.tile ? idx % n : (n == 1 ? 0 : idx)) * st;
        st *= n;
      }
      ASSERT_EQ(y.data<float>()[i], x.data<float>()[so]) << "element " << i;
    }
  }
}

TEST(DataMovement, ShapeFoldingReshapeFromShapeSubgraph) {
  // y = Reshape(x, Concat(Gather(Shape(x), 0), [-1])) is folded at plan time.
  graph::Graph g;
  g.opset = 13;
  test::add_input(g, "x");
  g.initializers["zero"] = Tensor::from_vector<std::int64_t>(Shape{}, {0});
  g.initializers["minus1"] = i64({-1});
  test::add_node(g, "Shape", {"x"}, "s");
  test::add_node(g, "Gather", {"s", "zero"}, "n");
  test::add_node(g, "Unsqueeze", {"n"}, "n1", {{"axes", test::ints({0})}});
  test::add_node(g, "Concat", {"n1", "minus1"}, "shape", {{"axis", test::i(0)}});
  test::add_node(g, "Reshape", {"x", "shape"}, "y");
  test::add_output(g, "y");
  g.opset = 11;
  graph::Session s(g);
  const Tensor x = test::random_tensor(Shape{3, 2, 5}, 91);
  const auto y = s.run(std::vector<Tensor>{x});
  ASSERT_EQ(y[0].shape(), (Shape{3, 10}));
  const auto st = s.plan_stats({x.shape()});
  EXPECT_EQ(st.folded, 4);
  EXPECT_EQ(st.steps, 1);
}

TEST(Reductions, MeanSumMaxArgMax) {
  const Tensor x = test::random_tensor(Shape{2, 3, 4}, 101);
  const Tensor m = OneOp("ReduceMean", 13).input(x).attr("axes", test::ints({1})).attr("keepdims", test::i(0)).run1();
  const Tensor s = OneOp("ReduceSum", 13).input(x).constant(i64({0, 2})).run1();
  const Tensor mx = OneOp("ReduceMax", 13).input(x).run1();
  const Tensor am = OneOp("ArgMax", 13).input(x).attr("axis", test::i(2)).attr("keepdims", test::i(0)).run1();
  ASSERT_EQ(m.shape(), (Shape{2, 4}));
  ASSERT_EQ(s.shape(), (Shape{1, 3, 1}));
  ASSERT_EQ(mx.shape(), (Shape{1, 1, 1}));
  double tot_max = -1e9;
  for (int i = 0; i < 2; ++i)
    for (int k = 0; k < 4; ++k) {
      double acc = 0;
      for (int j = 0; j < 3; ++j) acc += x.at<float>(i, j, k);
      EXPECT_NEAR(m.at<float>(i, k), acc / 3, 1e-6);
    }
  for (int j = 0; j < 3; ++j) {
    double acc = 0;
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 4; ++k) {
        acc += x.at<float>(i, j, k);
        tot_max = std::max(tot_max, static_cast<double>(x.at<float>(i, j, k)));
      }
    EXPECT_NEAR(s.data<float>()[j], acc, 1e-5);
  }
  EXPECT_EQ(mx.data<float>()[0], static_cast<float>(tot_max));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) {
      int best = 0;
      for (int k = 1; k < 4; ++k)
        if (x.at<float>(i, j, k) > x.at<float>(i, j, best)) best = k;
      EXPECT_EQ(am.at<std::int64_t>(i, j), best);
    }
}

TEST(MatMulGemm, BatchBroadcastAndTransposes) {
  const Tensor a = test::random_tensor(Shape{2, 1, 3, 4}, 111), b = test::random_tensor(Shape{5, 4, 6}, 112);
  const Tensor y = OneOp("MatMul").input(a).input(b).run1();
  ASSERT_EQ(y.shape(), (Shape{2, 5, 3, 6}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 5; ++j)
      for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 6; ++c) {
          double acc = 0;
          for (int k = 0; k < 4; ++k) acc += a.at<float>(i, 0, r, k) * b.at<float>(j, k, c);
          ASSERT_NEAR(y.at<float>(i, j, r, c), acc, 1e-5);
        }
  const Tensor A = test::random_tensor(Shape{4, 3}, 113), B = test::random_tensor(Shape{5, 4}, 114), C = test::random_tensor(Shape{5}, 115);
  const Tensor g = OneOp("Gemm").input(A).input(B).constant(C).attr("transA", test::i(1)).attr("transB", test::i(1))
                       .attr("alpha", test::f(0.5f)).attr("beta", test::f(2.f)).run1();
  ASSERT_EQ(g.shape(), (Shape{3, 5}));
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 5; ++c) {
      double acc = 0;
      for (int k = 0; k < 4; ++k) acc += A.at<float>(k, r) * B.at<float>(c, k);
      ASSERT_NEAR(g.at<float>(r, c), 0.5 * acc + 2 * C.data<float>()[c], 1e-5);
    }
}

TEST(Einsum, AttentionContractionsAndImplicitOutput) {
  const Tensor q = test::random_tensor(Shape{2, 3, 4, 5}, 121), k = test::random_tensor(Shape{2, 3, 6, 5}, 122);
  const Tensor y = OneOp("Einsum", 12).input(q).input(k).attr("equation", test::s("bhid,bhjd->bhij")).run1();
  ASSERT_EQ(y.shape(), (Shape{2, 3, 4, 6}));
  for (int b = 0; b < 2; ++b)
    for (int h = 0; h < 3; ++h)
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 6; ++j) {
          double acc = 0;
          for (int d = 0; d < 5; ++d) acc += q.at<float>(b, h, i, d) * k.at<float>(b, h, j, d);
          ASSERT_NEAR(y.at<float>(b, h, i, j), acc, 1e-5);
        }
  // Implicit output (indices appearing once, alphabetical): "ij,jk" -> "ik"; and a trace.
  const Tensor a = test::random_tensor(Shape{3, 4}, 123), b = test::random_tensor(Shape{4, 2}, 124);
  const Tensor m = OneOp("Einsum", 12).input(a).input(b).attr("equation", test::s("ij,jk")).run1();
  ASSERT_EQ(m.shape(), (Shape{3, 2}));
  EXPECT_NEAR(m.at<float>(2, 1), a.at<float>(2, 0) * b.at<float>(0, 1) + a.at<float>(2, 1) * b.at<float>(1, 1) + a.at<float>(2, 2) * b.at<float>(2, 1) + a.at<float>(2, 3) * b.at<float>(3, 1), 1e-5);
  const Tensor sq = test::random_tensor(Shape{3, 3}, 125);
  const Tensor tr = OneOp("Einsum", 12).input(sq).attr("equation", test::s("ii->")).run1();
  EXPECT_NEAR(tr.data<float>()[0], sq.at<float>(0, 0) + sq.at<float>(1, 1) + sq.at<float>(2, 2), 1e-5);
}

// Conv -> InstanceNorm(+LeakyRelu) -> Conv with 12 channels (not a multiple of 8 or 16):
// with optimized kernels the middle tensors stay blocked; the result must equal the plain
// reference path's.
// A graph output's buffer is reused by the next run only once the caller has let go of it:
// outputs still held keep their values, and every run's values are right.
TEST(Session, OutputBuffersAreReusedOnlyWhenReleased) {
  graph::Graph g;
  g.opset = 13;
  test::add_input(g, "x");
  test::add_node(g, "Neg", {"x"}, "y");
  test::add_output(g, "y");
  graph::Session s(g);
  const Tensor a = test::random_tensor(Shape{4, 300}, 31), b = test::random_tensor(Shape{4, 300}, 32);
  auto first = s.run(std::vector<Tensor>{a});
  const Tensor kept = first[0];
  first.clear();
  auto second = s.run(std::vector<Tensor>{b});  // `kept` is still held: a new buffer
  EXPECT_FALSE(second[0].shares_storage_with(kept));
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    ASSERT_EQ(kept.data<float>()[i], -a.data<float>()[i]);
    ASSERT_EQ(second[0].data<float>()[i], -b.data<float>()[i]);
  }
  const void* second_data = second[0].raw();
  second.clear();  // released: the third run writes into it
  const auto third = s.run(std::vector<Tensor>{a});
  EXPECT_EQ(third[0].raw(), second_data);
  for (std::int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(third[0].data<float>()[i], -a.data<float>()[i]);
}

TEST(LayoutPass, BlockedInstanceNormChainMatchesPlainPath) {
  graph::Graph g;
  g.opset = 13;
  test::add_input(g, "x");
  g.initializers["w1"] = test::random_tensor(Shape{12, 3, 3, 3, 3}, 131, -0.3f, 0.3f);
  g.initializers["b1"] = test::random_tensor(Shape{12}, 132);
  g.initializers["s"] = test::random_tensor(Shape{12}, 133, 0.5f, 1.5f);
  g.initializers["t"] = test::random_tensor(Shape{12}, 134);
  g.initializers["w2"] = test::random_tensor(Shape{5, 12, 3, 3, 3}, 135, -0.3f, 0.3f);
  test::add_node(g, "Conv", {"x", "w1", "b1"}, "c1", {{"pads", test::ints({1, 1, 1, 1, 1, 1})}});
  test::add_node(g, "InstanceNormalization", {"c1", "s", "t"}, "n1");
  test::add_node(g, "LeakyRelu", {"n1"}, "a1", {{"alpha", test::f(0.1f)}});
  test::add_node(g, "Conv", {"a1", "w2"}, "y", {{"pads", test::ints({1, 1, 1, 1, 1, 1})}});
  test::add_output(g, "y");
  // 20x18x16 = 5760 voxels: several statistics chunks per channel block; 5x7x9 = 315: an odd
  // row count (8-lane rows go through in pairs, the last alone). The generic and AVX2 kernels
  // run 8-channel blocks, AVX-512 16-channel ones.
  graph::SessionOptions reference;
  reference.kernels = graph::KernelChoice::reference;
  for (const Shape& shape : {Shape{2, 3, 20, 18, 16}, Shape{1, 3, 5, 7, 9}})
    for (const Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
      if (static_cast<int>(hardware_isa()) < static_cast<int>(isa)) continue;
      SCOPED_TRACE(shape.str() + " " + isa_name(isa));
      const Tensor x = test::random_tensor(shape, 136);
      graph::Session plain(g, reference);
      const Tensor ref = plain.run(std::vector<Tensor>{x})[0];
      set_max_isa(isa);
      graph::Session fast(g);
      const Tensor y = fast.run(std::vector<Tensor>{x})[0];
      const auto st = fast.plan_stats({x.shape()});
      std::printf("[layout] %s blocked values %d, reorders %d, max_abs_err %.3g\n", isa_name(isa), st.blocked_values, st.reorders,
                  test::max_abs_diff(y, ref));
      expect_close(y, ref, 1e-4, "blocked chain");
      EXPECT_GE(st.blocked_values, 2);
    }
  set_max_isa(Isa::avx512);
}

// Runs g on the reference path (reference kernels, no graph passes) and on the optimized one
// (the best ISA, passes on), with the optimized plan's statistics.
struct FastAndReference {
  std::vector<Tensor> ref, fast;
  graph::PlanStats stats;
};
FastAndReference run_fast_and_reference(const graph::Graph& g, const std::vector<Tensor>& inputs) {
  FastAndReference r;
  std::vector<Shape> shapes;
  for (const auto& t : inputs) shapes.push_back(t.shape());
  graph::SessionOptions plain_opts;
  plain_opts.optimize = false;
  plain_opts.kernels = graph::KernelChoice::reference;
  graph::Session plain(g, plain_opts);
  r.ref = plain.run(inputs);
  graph::Session fast(g);
  r.fast = fast.run(inputs);
  r.stats = fast.plan_stats(shapes);
  return r;
}

// A U-Net skip connection: Conv -> InstanceNorm -> LeakyRelu (the skip) and a second Conv
// branch with 12 channels are concatenated (16 + 12: the last input ends in a partial block)
// and convolved. With optimized kernels the Concat stays blocked and both inputs are written
// straight into its output; in a second graph the skip is also read after the Concat, so
// only the other input may be placed. Results must equal the generic path's.
TEST(LayoutPass, SkipConcatStaysBlockedAndWritesInPlace) {
  for (const bool skip_used_later : {false, true}) {
    graph::Graph g;
    g.opset = 13;
    test::add_input(g, "x");
    g.initializers["w1"] = test::random_tensor(Shape{16, 3, 3, 3, 3}, 141, -0.3f, 0.3f);
    g.initializers["s"] = test::random_tensor(Shape{16}, 142, 0.5f, 1.5f);
    g.initializers["t"] = test::random_tensor(Shape{16}, 143);
    g.initializers["w2"] = test::random_tensor(Shape{12, 16, 3, 3, 3}, 144, -0.2f, 0.2f);
    g.initializers["w3"] = test::random_tensor(Shape{5, 28, 3, 3, 3}, 145, -0.2f, 0.2f);
    g.initializers["w4"] = test::random_tensor(Shape{4, 16, 1, 1, 1}, 146, -0.5f, 0.5f);
    const auto pads = test::ints({1, 1, 1, 1, 1, 1});
    test::add_node(g, "Conv", {"x", "w1"}, "c1", {{"pads", pads}});
    test::add_node(g, "InstanceNormalization", {"c1", "s", "t"}, "n1");
    test::add_node(g, "LeakyRelu", {"n1"}, "skip", {{"alpha", test::f(0.01f)}});
    test::add_node(g, "Conv", {"skip", "w2"}, "c2", {{"pads", pads}});
    test::add_node(g, "Relu", {"c2"}, "r2");
    test::add_node(g, "Concat", {"skip", "r2"}, "cat", {{"axis", test::i(1)}});
    test::add_node(g, "Conv", {"cat", "w3"}, "y", {{"pads", pads}});
    test::add_output(g, "y");
    if (skip_used_later) {
      test::add_node(g, "Conv", {"skip", "w4"}, "y2");
      graph::ValueInfo out2;
      out2.name = "y2";
      g.outputs.push_back(out2);
    }
    const Tensor x = test::random_tensor(Shape{1, 3, 9, 10, 11}, 147);
    const FastAndReference run = run_fast_and_reference(g, {x});
    const std::vector<Tensor>& ref = run.ref;
    const std::vector<Tensor>& y = run.fast;
    const auto& st = run.stats;
    std::printf("[concat] skip used later %d: %d inputs in place, %d reorders, max_abs_err %.3g\n", skip_used_later,
                st.concat_in_place, st.reorders, test::max_abs_diff(y[0], ref[0]));
    for (std::size_t i = 0; i < y.size(); ++i) expect_close(y[i], ref[i], 1e-4, "output " + std::to_string(i));
    EXPECT_EQ(st.concat_in_place, skip_used_later ? 1 : 2);
  }
}

// Plain Concat along an axis with only 1s before it: inputs are placed in the output; along
// an axis with a batch in front they are copied. Both give the same values as slicing back.
TEST(DataMovement, ConcatInPlaceWhenTheSlicesAreContiguous) {
  for (const std::int64_t batch : {1, 2}) {
    graph::Graph g;
    g.opset = 13;
    for (const char* name : {"a", "b"}) {
      graph::ValueInfo vi;
      vi.name = name;
      g.inputs.push_back(vi);
    }
    test::add_node(g, "Relu", {"a"}, "ra");
    test::add_node(g, "Sigmoid", {"b"}, "sb");
    test::add_node(g, "Concat", {"ra", "sb"}, "cat", {{"axis", test::i(1)}});
    test::add_node(g, "Neg", {"cat"}, "y");
    test::add_output(g, "y");
    const Tensor a = test::random_tensor(Shape{batch, 2, 4, 4}, 151), b = test::random_tensor(Shape{batch, 3, 4, 4}, 152);
    graph::Session sess(g);
    const Tensor y = sess.run(std::vector<Tensor>{a, b})[0];
    EXPECT_EQ(sess.plan_stats({a.shape(), b.shape()}).concat_in_place, batch == 1 ? 2 : 0);
    ASSERT_EQ(y.shape(), (Shape{batch, 5, 4, 4}));
    for (std::int64_t n = 0; n < batch; ++n)
      for (std::int64_t c = 0; c < 5; ++c)
        for (std::int64_t i = 0; i < 16; ++i) {
          const float want = c < 2 ? -std::max(a.data<float>()[(n * 2 + c) * 16 + i], 0.f)
                                   : -1.f / (1.f + std::exp(-b.data<float>()[(n * 3 + c - 2) * 16 + i]));
          ASSERT_NEAR(y.data<float>()[(n * 5 + c) * 16 + i], want, 1e-6) << n << "," << c << "," << i;
        }
  }
}

// A 1x1x1 head (20 -> 3 channels, fused sigmoid) after a blocked convolution writes the
// plain graph output straight from the blocked input, with no workspace or reorder.
TEST(LayoutPass, OneByOneHeadWritesPlainOutputFromBlockedInput) {
  graph::Graph g;
  g.opset = 13;
  test::add_input(g, "x");
  g.initializers["w1"] = test::random_tensor(Shape{20, 2, 3, 3, 3}, 161, -0.3f, 0.3f);
  g.initializers["w2"] = test::random_tensor(Shape{3, 20, 1, 1, 1}, 162, -0.5f, 0.5f);
  g.initializers["b2"] = test::random_tensor(Shape{3}, 163);
  test::add_node(g, "Conv", {"x", "w1"}, "c1", {{"pads", test::ints({1, 1, 1, 1, 1, 1})}});
  test::add_node(g, "Relu", {"c1"}, "r1");
  test::add_node(g, "Conv", {"r1", "w2", "b2"}, "c2");
  test::add_node(g, "Sigmoid", {"c2"}, "y");
  test::add_output(g, "y");
  const Tensor x = test::random_tensor(Shape{2, 2, 7, 9, 11}, 164);
  const FastAndReference run = run_fast_and_reference(g, {x});
  const Tensor& ref = run.ref[0];
  const Tensor& y = run.fast[0];
  const auto& st = run.stats;
  std::printf("[head] reorders %d, workspace %lld, max_abs_err %.3g\n", st.reorders, static_cast<long long>(st.workspace_bytes),
              test::max_abs_diff(y, ref));
  expect_close(y, ref, 1e-5, "head");
  if (hardware_isa() != Isa::generic) {
    std::size_t heads = 0;
    for (const auto& [name, count] : st.kernels) heads += name.rfind("conv1x1x1_head_", 0) == 0 ? count : 0;
    EXPECT_EQ(heads, 1u);
    EXPECT_EQ(st.reorders, 0);  // the first convolution reads its 2-channel plain input directly
    EXPECT_EQ(st.workspace_bytes, 0);
  }
}

// PyTorch's GroupNorm export (Reshape [0, G, -1], InstanceNorm with unit scale, Reshape back
// through Shape(x), Mul gamma, Add beta) is fused into one GroupNormalization that then runs
// blocked between convolutions; values equal the unfused generic path's.
TEST(LayoutPass, GroupNormChainIsFusedAndStaysBlocked) {
  graph::Graph g;
  g.opset = 13;
  test::add_input(g, "x");
  g.initializers["w1"] = test::random_tensor(Shape{12, 2, 3, 3, 3}, 171, -0.3f, 0.3f);
  g.initializers["w2"] = test::random_tensor(Shape{4, 12, 3, 3, 3}, 172, -0.3f, 0.3f);
  g.initializers["gshape"] = i64({0, 3, -1});
  g.initializers["ones"] = f32(Shape{3}, {1, 1, 1});
  g.initializers["zeros"] = f32(Shape{3}, {0, 0, 0});
  g.initializers["gamma"] = test::random_tensor(Shape{12, 1, 1, 1}, 173, 0.5f, 1.5f);
  g.initializers["beta"] = test::random_tensor(Shape{12, 1, 1, 1}, 174);
  const auto pads = test::ints({1, 1, 1, 1, 1, 1});
  test::add_node(g, "Conv", {"x", "w1"}, "c1", {{"pads", pads}});
  test::add_node(g, "Reshape", {"c1", "gshape"}, "r1");
  test::add_node(g, "InstanceNormalization", {"r1", "ones", "zeros"}, "in", {{"epsilon", test::f(1e-5f)}});
  test::add_node(g, "Shape", {"c1"}, "sh");
  test::add_node(g, "Reshape", {"in", "sh"}, "r2");
  test::add_node(g, "Mul", {"r2", "gamma"}, "m");
  test::add_node(g, "Add", {"m", "beta"}, "a");
  test::add_node(g, "Relu", {"a"}, "act");
  test::add_node(g, "Conv", {"act", "w2"}, "y", {{"pads", pads}});
  test::add_output(g, "y");
  graph::Graph fused = g;
  const auto rep = graph::optimize_graph(fused);
  EXPECT_EQ(rep.group_norms_fused, 1);
  int gn = 0, inorm = 0;
  for (const auto& n : fused.nodes) gn += n.op_type == "GroupNormalization", inorm += n.op_type == "InstanceNormalization";
  EXPECT_EQ(gn, 1);
  EXPECT_EQ(inorm, 0);
  const Tensor x = test::random_tensor(Shape{2, 2, 9, 8, 10}, 175);
  const FastAndReference run = run_fast_and_reference(g, {x});
  const Tensor& ref = run.ref[0];
  const Tensor& y = run.fast[0];
  const auto& st = run.stats;
  std::printf("[groupnorm] blocked values %d, reorders %d, max_abs_err %.3g\n", st.blocked_values, st.reorders, test::max_abs_diff(y, ref));
  expect_close(y, ref, 1e-4, "group norm chain");
  if (hardware_isa() != Isa::generic) {
    EXPECT_GE(st.blocked_values, 2);
  }
}

// Conv -> Add(conv, skip) -> Relu becomes one Conv with the skip as its fused residual and
// the Relu in its epilogue (blocked, through the optimized kernels); a skip that only
// broadcasts ([1, C, 1, 1, 1]) is added after the convolution; Conv -> Relu -> Add keeps its
// Add (the epilogue adds the residual before the activation). Values equal the reference's.
TEST(Passes, ResidualAddFusesIntoTheConvolution) {
  struct Variant {
    Shape skip;
    bool relu_before_add;
    int fused;
  };
  for (const Variant& v : {Variant{Shape{1, 20, 7, 9, 11}, false, 1}, Variant{Shape{1, 20, 1, 1, 1}, false, 1},
                          Variant{Shape{1, 20, 7, 9, 11}, true, 0}}) {
    SCOPED_TRACE(v.skip.str() + (v.relu_before_add ? " relu before add" : ""));
    graph::Graph g;
    g.opset = 13;
    test::add_input(g, "x");
    test::add_input(g, "skip");
    g.initializers["w"] = test::random_tensor(Shape{20, 6, 3, 3, 3}, 191, -0.3f, 0.3f);
    g.initializers["b"] = test::random_tensor(Shape{20}, 192);
    g.initializers["w2"] = test::random_tensor(Shape{4, 20, 3, 3, 3}, 193, -0.3f, 0.3f);
    const auto pads = test::ints({1, 1, 1, 1, 1, 1});
    test::add_node(g, "Conv", {"x", "w", "b"}, "c", {{"pads", pads}});
    if (v.relu_before_add) {
      test::add_node(g, "Relu", {"c"}, "r");
      test::add_node(g, "Add", {"skip", "r"}, "y1");
    } else {
      test::add_node(g, "Add", {"skip", "c"}, "a");
      test::add_node(g, "Relu", {"a"}, "y1");
    }
    test::add_node(g, "Conv", {"y1", "w2"}, "y", {{"pads", pads}});
    test::add_output(g, "y");
    graph::Graph fused = g;
    const auto rep = graph::optimize_graph(fused);
    EXPECT_EQ(rep.residuals_fused, v.fused);
    int adds = 0;
    for (const auto& n : fused.nodes) adds += n.op_type == "Add";
    EXPECT_EQ(adds, 1 - v.fused);
    const Tensor x = test::random_tensor(Shape{1, 6, 7, 9, 11}, 194), skip = test::random_tensor(v.skip, 195);
    const FastAndReference run = run_fast_and_reference(g, {x, skip});
    std::printf("[residual] %s fused %d, max_abs_err %.3g\n", v.skip.str().c_str(), rep.residuals_fused,
                test::max_abs_diff(run.fast[0], run.ref[0]));
    expect_close(run.fast[0], run.ref[0], 1e-4, "residual");
    if (hardware_isa() != Isa::generic) {  // only the broadcast residual takes the reference path
      const auto it = run.stats.kernels.find("conv3d_ref");
      EXPECT_EQ(it == run.stats.kernels.end() ? 0 : it->second, v.fused && v.skip[2] == 1 ? 1 : 0);
    }
  }
}

// InstanceNormalization -> PRelu (MONAI's Norm -> Act blocks) fuses the PRelu into the
// normalisation when its slope is one value or one per channel as [C,1,1,1]; other slope
// shapes (one per W position here) keep the PRelu node. On the blocked path (after a Conv) and the plain one (on the
// graph input), values equal the reference's.
TEST(Passes, PReluFusesIntoInstanceNormalization) {
  struct Variant {
    Shape slope;
    bool after_conv;
    int fused;
  };
  for (const Variant& v : {Variant{Shape{1, 1, 1, 1}, true, 1}, Variant{Shape{12, 1, 1, 1}, true, 1},
                          Variant{Shape{12, 1, 1, 1}, false, 1}, Variant{Shape{1}, false, 1},
                          Variant{Shape{1, 1, 1, 11}, true, 0}}) {
    SCOPED_TRACE(v.slope.str() + (v.after_conv ? " after conv" : " on the input"));
    graph::Graph g;
    g.opset = 13;
    test::add_input(g, "x");
    g.initializers["w"] = test::random_tensor(Shape{12, 3, 3, 3, 3}, 201, -0.3f, 0.3f);
    g.initializers["s"] = test::random_tensor(Shape{12}, 202, 0.5f, 1.5f);
    g.initializers["t"] = test::random_tensor(Shape{12}, 203);
    g.initializers["k"] = test::random_tensor(v.slope, 204, 0.05f, 0.4f);
    g.initializers["w2"] = test::random_tensor(Shape{4, 12, 3, 3, 3}, 205, -0.3f, 0.3f);
    const auto pads = test::ints({1, 1, 1, 1, 1, 1});
    if (v.after_conv) test::add_node(g, "Conv", {"x", "w"}, "c", {{"pads", pads}});
    test::add_node(g, "InstanceNormalization", {v.after_conv ? "c" : "x", "s", "t"}, "n");
    test::add_node(g, "PRelu", {"n", "k"}, "p");
    test::add_node(g, "Conv", {"p", "w2"}, "y", {{"pads", pads}});
    test::add_output(g, "y");
    graph::Graph fused = g;
    graph::optimize_graph(fused);
    int prelus = 0;
    for (const auto& n : fused.nodes) prelus += n.op_type == "PRelu";
    EXPECT_EQ(prelus, 1 - v.fused);
    const Tensor x = test::random_tensor(Shape{1, v.after_conv ? 3 : 12, 7, 9, 11}, 206, -2.f, 3.f);
    const FastAndReference run = run_fast_and_reference(g, {x});
    std::printf("[norm+prelu] %s fused %d, max_abs_err %.3g\n", v.slope.str().c_str(), v.fused,
                test::max_abs_diff(run.fast[0], run.ref[0]));
    expect_close(run.fast[0], run.ref[0], 1e-4, "norm + prelu");
  }
}

// A PRelu that cannot fuse (after a residual Add of two activated convolutions, as in VNet)
// runs on the blocked Add output with one slope or one per channel, without reorders around
// it; on a plain graph input it runs plain. Values equal the reference's.
TEST(LayoutPass, PReluAfterAddRunsBlocked) {
  for (const Shape& slope : {Shape{1}, Shape{12, 1, 1, 1}, Shape{1, 12, 1, 1, 1}}) {
    SCOPED_TRACE(slope.str());
    graph::Graph g;
    g.opset = 13;
    test::add_input(g, "x");
    g.initializers["w1"] = test::random_tensor(Shape{12, 3, 3, 3, 3}, 221, -0.3f, 0.3f);
    g.initializers["w2"] = test::random_tensor(Shape{12, 3, 3, 3, 3}, 222, -0.3f, 0.3f);
    g.initializers["k"] = test::random_tensor(slope, 223, 0.05f, 0.4f);
    g.initializers["w3"] = test::random_tensor(Shape{4, 12, 3, 3, 3}, 224, -0.3f, 0.3f);
    const auto pads = test::ints({1, 1, 1, 1, 1, 1});
    test::add_node(g, "Conv", {"x", "w1"}, "c1", {{"pads", pads}});
    test::add_node(g, "Relu", {"c1"}, "r1");
    test::add_node(g, "Conv", {"x", "w2"}, "c2", {{"pads", pads}});
    test::add_node(g, "Sigmoid", {"c2"}, "r2");
    test::add_node(g, "Add", {"r1", "r2"}, "a");
    test::add_node(g, "PRelu", {"a", "k"}, "p");
    test::add_node(g, "Conv", {"p", "w3"}, "y", {{"pads", pads}});
    test::add_output(g, "y");
    const Tensor x = test::random_tensor(Shape{1, 3, 7, 9, 11}, 225, -2.f, 3.f);
    const FastAndReference run = run_fast_and_reference(g, {x});
    std::printf("[prelu blocked] %s blocked values %d, reorders %d, max_abs_err %.3g\n", slope.str().c_str(),
                run.stats.blocked_values, run.stats.reorders, test::max_abs_diff(run.fast[0], run.ref[0]));
    expect_close(run.fast[0], run.ref[0], 1e-4, "prelu after add");
    if (hardware_isa() != Isa::generic) {
      // None: the first convolutions read x plain, and the last (4 outputs) writes the plain
      // output through the taps head.
      EXPECT_EQ(run.stats.reorders, 0);
    }
  }
  // Plain: PRelu straight on a graph input.
  const Tensor x = test::random_tensor(Shape{2, 5, 3, 4, 6}, 226, -2.f, 2.f);
  const Tensor k = test::random_tensor(Shape{5, 1, 1, 1}, 227, 0.05f, 0.4f);
  const Tensor y = OneOp("PRelu").input(x).constant(k).run1();
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const float v = x.data<float>()[i], s = k.data<float>()[(i / 72) % 5];
    ASSERT_EQ(y.data<float>()[i], v >= 0 ? v : v * s) << i;
  }
}

// MaxPool and AveragePool between blocked convolutions run blocked (no reorders around them)
// and give the reference's values: stride 2 with padding (DenseNet's stem), ceil mode,
// count_include_pad, dilation, and 20 channels (a partial last block).
TEST(LayoutPass, PoolingRunsBlocked) {
  struct Variant {
    const char* op;
    std::vector<std::int64_t> k, s, pads, dil;
    int ceil, cip;
  };
  const Variant variants[] = {
      {"MaxPool", {3, 3, 3}, {2, 2, 2}, {1, 1, 1, 1, 1, 1}, {1, 1, 1}, 0, 0},
      {"MaxPool", {2, 3, 2}, {2, 1, 2}, {0, 1, 0, 1, 1, 0}, {1, 2, 1}, 1, 0},
      {"AveragePool", {3, 3, 3}, {2, 2, 2}, {1, 1, 1, 1, 1, 1}, {1, 1, 1}, 0, 0},
      {"AveragePool", {3, 2, 3}, {1, 2, 2}, {1, 0, 1, 1, 1, 0}, {1, 1, 1}, 1, 1},
  };
  for (const Variant& v : variants) {
    SCOPED_TRACE(std::string(v.op) + (v.cip ? " count_include_pad" : "") + (v.ceil ? " ceil" : ""));
    graph::Graph g;
    g.opset = 13;
    test::add_input(g, "x");
    g.initializers["w1"] = test::random_tensor(Shape{20, 5, 3, 3, 3}, 231, -0.3f, 0.3f);
    g.initializers["w2"] = test::random_tensor(Shape{4, 20, 3, 3, 3}, 232, -0.3f, 0.3f);
    const auto pads = test::ints({1, 1, 1, 1, 1, 1});
    test::add_node(g, "Conv", {"x", "w1"}, "c1", {{"pads", pads}});
    std::map<std::string, graph::Attribute> attrs{{"kernel_shape", test::ints(v.k)}, {"strides", test::ints(v.s)},
                                                  {"pads", test::ints(v.pads)}, {"ceil_mode", test::i(v.ceil)}};
    if (std::string(v.op) == "MaxPool") attrs["dilations"] = test::ints(v.dil);
    else attrs["count_include_pad"] = test::i(v.cip);
    test::add_node(g, v.op, {"c1"}, "p", attrs);
    test::add_node(g, "Conv", {"p", "w2"}, "y", {{"pads", pads}});
    test::add_output(g, "y");
    const Tensor x = test::random_tensor(Shape{2, 5, 9, 10, 11}, 233, -2.f, 3.f);
    const FastAndReference run = run_fast_and_reference(g, {x});
    std::printf("[pool blocked] %s reorders %d, max_abs_err %.3g\n", v.op, run.stats.reorders,
                test::max_abs_diff(run.fast[0], run.ref[0]));
    expect_close(run.fast[0], run.ref[0], 1e-4, "pooling");
    if (hardware_isa() != Isa::generic) {
      // The 5-channel input only: the last convolution (4 outputs) writes the plain output
      // through the taps head.
      EXPECT_EQ(run.stats.reorders, 1);
    }
  }
  // Blocked in, plain out (the pooled value is the graph output): the layout boundary path,
  // lanes stored to their channels' planes.
  for (const char* op : {"MaxPool", "AveragePool"}) {
    SCOPED_TRACE(std::string(op) + " to a plain output");
    graph::Graph g;
    g.opset = 13;
    test::add_input(g, "x");
    g.initializers["w1"] = test::random_tensor(Shape{20, 5, 3, 3, 3}, 234, -0.3f, 0.3f);
    test::add_node(g, "Conv", {"x", "w1"}, "c1", {{"pads", test::ints({1, 1, 1, 1, 1, 1})}});
    test::add_node(g, op, {"c1"}, "y",
                   {{"kernel_shape", test::ints({3, 3, 3})}, {"strides", test::ints({2, 2, 2})}, {"pads", test::ints({1, 1, 1, 1, 1, 1})}});
    test::add_output(g, "y");
    const Tensor x = test::random_tensor(Shape{2, 5, 8, 9, 7}, 235, -2.f, 3.f);  // 2 images, 20 channels
    const FastAndReference run = run_fast_and_reference(g, {x});
    expect_close(run.fast[0], run.ref[0], 1e-4, "pooling to plain");
  }
}

// DenseNet's pre-activation: Concat -> BatchNormalization -> Relu -> Conv. The BN (which cannot
// fold into a convolution) runs on the blocked Concat output with the Relu fused, and into a
// plain graph output across the layout boundary; values equal the reference's.
TEST(LayoutPass, BatchNormRunsBlocked) {
  for (const bool to_output : {false, true}) {
    SCOPED_TRACE(to_output ? "to a plain output" : "between convolutions");
    graph::Graph g;
    g.opset = 13;
    test::add_input(g, "x");
    g.initializers["w1"] = test::random_tensor(Shape{16, 3, 3, 3, 3}, 241, -0.3f, 0.3f);
    g.initializers["w2"] = test::random_tensor(Shape{10, 3, 3, 3, 3}, 242, -0.3f, 0.3f);
    g.initializers["sc"] = test::random_tensor(Shape{26}, 243, 0.5f, 1.5f);
    g.initializers["bi"] = test::random_tensor(Shape{26}, 244);
    g.initializers["mu"] = test::random_tensor(Shape{26}, 245);
    g.initializers["va"] = test::random_tensor(Shape{26}, 246, 0.5f, 2.f);
    g.initializers["w3"] = test::random_tensor(Shape{4, 26, 3, 3, 3}, 247, -0.3f, 0.3f);
    const auto pads = test::ints({1, 1, 1, 1, 1, 1});
    test::add_node(g, "Conv", {"x", "w1"}, "c1", {{"pads", pads}});
    test::add_node(g, "Conv", {"x", "w2"}, "c2", {{"pads", pads}});
    test::add_node(g, "Concat", {"c1", "c2"}, "cat", {{"axis", test::i(1)}});
    test::add_node(g, "BatchNormalization", {"cat", "sc", "bi", "mu", "va"}, "bn");
    test::add_node(g, "Relu", {"bn"}, to_output ? "y" : "r");
    if (!to_output) test::add_node(g, "Conv", {"r", "w3"}, "y", {{"pads", pads}});
    test::add_output(g, "y");
    const Tensor x = test::random_tensor(Shape{1, 3, 7, 9, 11}, 248, -2.f, 3.f);
    const FastAndReference run = run_fast_and_reference(g, {x});
    std::printf("[bn blocked] reorders %d, max_abs_err %.3g\n", run.stats.reorders, test::max_abs_diff(run.fast[0], run.ref[0]));
    expect_close(run.fast[0], run.ref[0], 1e-4, "batch norm");
    if (hardware_isa() != Isa::generic) {
      // None: the BN writes the plain output itself, or the last convolution (4 outputs)
      // does through the taps head.
      EXPECT_EQ(run.stats.reorders, 0);
    }
  }
}

// A normalisation at a layout boundary (blocked input, plain graph output): InstanceNorm with
// LeakyRelu and a per-channel PRelu, and a GroupNorm, on 20 channels (a partial block) and
// 9x10x11 voxels (runs of 256 pixels end early). Values equal the reference's.
TEST(LayoutPass, NormalisationIntoPlainOutput) {
  for (const std::string act : {"LeakyRelu", "PRelu", "GroupNormalization"}) {
    SCOPED_TRACE(act);
    graph::Graph g;
    g.opset = 18;
    test::add_input(g, "x");
    g.initializers["w"] = test::random_tensor(Shape{20, 5, 3, 3, 3}, 251, -0.3f, 0.3f);
    g.initializers["s"] = test::random_tensor(Shape{20}, 252, 0.5f, 1.5f);
    g.initializers["t"] = test::random_tensor(Shape{20}, 253);
    g.initializers["k"] = test::random_tensor(Shape{20, 1, 1, 1}, 254, 0.05f, 0.4f);
    test::add_node(g, "Conv", {"x", "w"}, "c", {{"pads", test::ints({1, 1, 1, 1, 1, 1})}});
    if (act == "GroupNormalization") {
      g.initializers["gs"] = test::random_tensor(Shape{5}, 255, 0.5f, 1.5f);
      g.initializers["gt"] = test::random_tensor(Shape{5}, 256);
      test::add_node(g, "GroupNormalization", {"c", "gs", "gt"}, "y", {{"num_groups", test::i(5)}});
    } else {
      test::add_node(g, "InstanceNormalization", {"c", "s", "t"}, "n");
      if (act == "PRelu") test::add_node(g, "PRelu", {"n", "k"}, "y");
      else test::add_node(g, "LeakyRelu", {"n"}, "y", {{"alpha", test::f(0.1f)}});
    }
    test::add_output(g, "y");
    const Tensor x = test::random_tensor(Shape{2, 5, 9, 10, 11}, 257, -2.f, 3.f);
    const FastAndReference run = run_fast_and_reference(g, {x});
    expect_close(run.fast[0], run.ref[0], 1e-4, "norm into plain output");
  }
}

// Unfused Relu and residual Add on blocked tensors, with both inputs blocked and with one
// plain graph input (mixed layouts), give the generic path's values.
TEST(LayoutPass, ResidualAddAndReluRunBlocked) {
  graph::Graph g;
  g.opset = 13;
  test::add_input(g, "x");
  test::add_input(g, "skip");
  g.initializers["w1"] = test::random_tensor(Shape{12, 3, 3, 3, 3}, 181, -0.3f, 0.3f);
  g.initializers["w2"] = test::random_tensor(Shape{5, 12, 3, 3, 3}, 182, -0.3f, 0.3f);
  const auto pads = test::ints({1, 1, 1, 1, 1, 1});
  test::add_node(g, "Conv", {"x", "w1"}, "c1", {{"pads", pads}});
  test::add_node(g, "Relu", {"c1"}, "r");         // c1 has two readers: the Relu is not fused
  test::add_node(g, "Add", {"c1", "r"}, "sum1");   // both inputs blocked
  test::add_node(g, "Add", {"sum1", "skip"}, "sum2");  // one plain graph input
  test::add_node(g, "Conv", {"sum2", "w2"}, "y", {{"pads", pads}});
  test::add_output(g, "y");
  const Tensor x = test::random_tensor(Shape{1, 3, 7, 9, 8}, 183), skip = test::random_tensor(Shape{1, 12, 7, 9, 8}, 184);
  const FastAndReference run = run_fast_and_reference(g, {x, skip});
  const Tensor& ref = run.ref[0];
  const Tensor& y = run.fast[0];
  const auto& st = run.stats;
  std::printf("[residual] blocked values %d, reorders %d, max_abs_err %.3g\n", st.blocked_values, st.reorders, test::max_abs_diff(y, ref));
  expect_close(y, ref, 1e-4, "residual chain");
  if (hardware_isa() != Isa::generic) {
    EXPECT_GE(st.blocked_values, 4);
  }
}

// Pad in constant mode against an element-by-element oracle: pads and crops on every axis
// of a 4D tensor, rows that are all padding, crops past the row.
TEST(DataMovement, PadConstantMatchesElementOracle) {
  const Tensor x = test::random_tensor(Shape{2, 3, 4, 5}, 611);
  const std::vector<std::vector<std::int64_t>> cases{
      {0, 1, 2, 3, 1, 0, 1, 2}, {1, -1, 0, -2, 0, 2, -1, 1}, {0, 0, 0, 7, 0, 0, 0, -3}, {0, 0, 0, 0, 0, 0, 0, 0}};
  for (const auto& pads : cases) {
    SCOPED_TRACE(::testing::PrintToString(pads));
    const Tensor y = OneOp("Pad", 13).input(x).constant(i64(pads)).constant(f32(Shape{}, {-7.f})).run1();
    const Shape& xs = x.shape();
    const Shape& ys = y.shape();
    for (int k = 0; k < 4; ++k) ASSERT_EQ(ys[k], xs[k] + pads[static_cast<std::size_t>(k)] + pads[static_cast<std::size_t>(k + 4)]);
    for (std::int64_t i = 0; i < y.numel(); ++i) {
      std::int64_t rem = i, src = 0, stride = 1;
      bool inside = true;
      for (int k = 3; k >= 0; --k) {
        const std::int64_t o = rem % ys[k], pos = o - pads[static_cast<std::size_t>(k)];
        rem /= ys[k];
        inside = inside && pos >= 0 && pos < xs[k];
        src += pos * stride;
        stride *= xs[k];
      }
      const float want = inside ? x.data<float>()[src] : -7.f;
      ASSERT_EQ(y.data<float>()[i], want) << "at " << i;
    }
  }
}

// A Concat with a blocked output and plain inputs on block boundaries (a graph input between
// two convolutions, or last with a partial block) reorders each plain input into its blocks;
// values equal the reference's.
TEST(LayoutPass, ConcatWithPlainInputsOnBlockBoundaries) {
  for (const bool plain_last : {false, true}) {
    SCOPED_TRACE(plain_last ? "plain input last" : "plain input in the middle");
    graph::Graph g;
    g.opset = 13;
    test::add_input(g, "x");
    test::add_input(g, "skip");
    g.initializers["w1"] = test::random_tensor(Shape{16, 3, 3, 3, 3}, 621, -0.3f, 0.3f);
    g.initializers["w2"] = test::random_tensor(Shape{plain_last ? 16 : 5, 3, 3, 3, 3}, 622, -0.3f, 0.3f);
    const std::int64_t skip_c = plain_last ? 5 : 16, cat_c = 16 + 16 + 5;
    g.initializers["w3"] = test::random_tensor(Shape{8, cat_c, 3, 3, 3}, 623, -0.3f, 0.3f);
    const auto pads = test::ints({1, 1, 1, 1, 1, 1});
    test::add_node(g, "Conv", {"x", "w1"}, "c1", {{"pads", pads}});
    test::add_node(g, "Conv", {"x", "w2"}, "c2", {{"pads", pads}});
    if (plain_last) test::add_node(g, "Concat", {"c1", "c2", "skip"}, "cat", {{"axis", test::i(1)}});
    else test::add_node(g, "Concat", {"c1", "skip", "c2"}, "cat", {{"axis", test::i(1)}});
    test::add_node(g, "Conv", {"cat", "w3"}, "y", {{"pads", pads}});
    test::add_output(g, "y");
    const Tensor x = test::random_tensor(Shape{2, 3, 5, 6, 7}, 624), skip = test::random_tensor(Shape{2, skip_c, 5, 6, 7}, 625);
    const FastAndReference run = run_fast_and_reference(g, {x, skip});
    expect_close(run.fast[0], run.ref[0], 1e-4, "concat with plain inputs");
  }
}

TEST(Misc, CastRangeConstantOfShape) {
  const Tensor c = OneOp("Cast").input(f32(Shape{3}, {1.7f, -2.2f, 0})).attr("to", test::i(7)).run1();
  EXPECT_EQ(c.dtype(), DType::i64);
  EXPECT_EQ(c.data<std::int64_t>()[0], 1);
  EXPECT_EQ(c.data<std::int64_t>()[1], -2);
  const Tensor r = OneOp("Range").constant(Tensor::from_vector<std::int64_t>(Shape{}, {2})).constant(Tensor::from_vector<std::int64_t>(Shape{}, {9}))
                       .constant(Tensor::from_vector<std::int64_t>(Shape{}, {3})).run1();
  // All of Range's inputs decide its shape, so they must be known at plan time (folded here).
  ASSERT_EQ(r.shape(), (Shape{3}));
  EXPECT_EQ(r.data<std::int64_t>()[2], 8);
  const Tensor z = OneOp("ConstantOfShape").constant(i64({2, 3})).run1();
  ASSERT_EQ(z.shape(), (Shape{2, 3}));
}

}  // namespace
}  // namespace voxinfer
