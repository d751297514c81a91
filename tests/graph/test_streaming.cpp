// Plane streaming (graph/streaming.h) against the whole graph run by Session: small random
// MeshNets (dilated 'same' convolutions, ReLU/ELU/GELU, a per-channel normalisation after
// every convolution like mindgrab's, heads from 2 to 40 classes) must give exactly the argmax
// of Session's output, for every thread count; graphs that are no such chain are refused.
// The shared brainchop zoo, when present, is checked on a crop of its T1.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "graph/graph_builder.h"
#include "test_util.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/graph/graph_edits.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/graph/streaming.h"

namespace voxinfer {
namespace {

using test::add_input;
using test::add_node;
using test::add_output;

struct NetSpec {
  std::int64_t in_channels = 1, width = 5, classes = 3;
  std::vector<std::int64_t> dilations;
  std::string act = "Relu";  // after every 3x3x3 convolution ("" for none)
  bool norm = false;         // InstanceNormalization after every 3x3x3 convolution (before act)
  std::uint32_t seed = 1;
};

// A MeshNet: 3x3x3 convolutions with the given dilations and 'same' padding, then 1x1x1 to
// the classes.
graph::Graph meshnet(const NetSpec& s) {
  graph::Graph g;
  g.opset = 17;
  add_input(g, "x");
  std::string v = "x";
  std::int64_t c = s.in_channels;
  std::uint32_t seed = s.seed * 1000;
  for (std::size_t i = 0; i < s.dilations.size(); ++i) {
    const std::int64_t d = s.dilations[i];
    const std::string w = "w" + std::to_string(i), b = "b" + std::to_string(i), y = "conv" + std::to_string(i) + "_gn";
    const float r = 1.5f / std::sqrt(static_cast<float>(27 * c));
    g.initializers[w] = test::random_tensor(Shape{s.width, c, 3, 3, 3}, ++seed, -r, r);
    g.initializers[b] = test::random_tensor(Shape{s.width}, ++seed, -0.1f, 0.1f);
    add_node(g, "Conv", {v, w, b}, y,
             {{"pads", test::ints({d, d, d, d, d, d})}, {"dilations", test::ints({d, d, d})},
              {"kernel_shape", test::ints({3, 3, 3})}});
    v = y;
    if (!s.act.empty()) {
      add_node(g, s.act, {v}, "act" + std::to_string(i));
      v = "act" + std::to_string(i);
    }
    c = s.width;
  }
  g.initializers["wh"] = test::random_tensor(Shape{s.classes, c, 1, 1, 1}, ++seed, -0.5f, 0.5f);
  g.initializers["bh"] = test::random_tensor(Shape{s.classes}, ++seed, -0.1f, 0.1f);
  add_node(g, "Conv", {v, "wh", "bh"}, "y", {{"kernel_shape", test::ints({1, 1, 1})}});
  add_output(g, "y");
  if (s.norm) graph::insert_instance_norm_after(g, "*_gn", 1e-5f);
  return g;
}

// The first largest channel per voxel of [1, K, D, H, W], as f32 [1, D, H, W].
Tensor argmax(const Tensor& logits) {
  const std::int64_t k = logits.dim(1), n = logits.numel() / k;
  Tensor out(Shape{1, logits.dim(2), logits.dim(3), logits.dim(4)}, DType::f32);
  const float* p = logits.data<float>();
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t best = 0;
    for (std::int64_t c = 1; c < k; ++c)
      if (p[c * n + i] > p[best * n + i]) best = c;
    out.data<float>()[i] = static_cast<float>(best);
  }
  return out;
}

std::int64_t differing(const Tensor& a, const Tensor& b) {
  std::int64_t n = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) n += a.data<float>()[i] != b.data<float>()[i];
  return n;
}

// Streams `g` on a random input of `shape` with 1 and 2 threads and compares with the argmax of
// Session's whole run.
void check_equal(const graph::Graph& g, const Shape& shape, std::uint32_t seed) {
  graph::Session session(g);
  const Tensor x = test::random_tensor(shape, seed, 0.f, 1.f);
  const Tensor logits = session.run(std::vector<Tensor>{x}).at(0).clone();
  const Tensor want = argmax(logits);
  std::set<float> labels(want.data<float>(), want.data<float>() + want.numel());
  EXPECT_GE(labels.size(), 2u) << "a test net that gives one label checks little";
  for (int threads : {1, 2}) {
    std::string why;
    auto s = graph::StreamingArgmax::create(session, shape, threads, &why);
    ASSERT_TRUE(s) << why;
    const Tensor got = s->run(x);
    ASSERT_EQ(got.shape(), want.shape());
    EXPECT_EQ(differing(got, want), 0) << "shape " << shape.str() << " threads " << threads;
    EXPECT_GT(s->stats().ring_bytes, 0);
    // The logits themselves, bit for bit.
    const Tensor out = s->run_output(x);
    ASSERT_EQ(out.shape(), logits.shape());
    EXPECT_EQ(std::memcmp(out.data<float>(), logits.data<float>(), logits.nbytes()), 0)
        << "shape " << shape.str() << " threads " << threads << " max |diff| " << test::max_abs_diff(out, logits);
  }
  set_num_threads(0);
}

TEST(Streaming, ReluMeshNetWithHeadKernelEqualsWholeRun) {
  NetSpec s;
  s.dilations = {1, 2, 4, 8, 4, 2, 1};
  s.seed = 1;
  // Planes of 13 x 11 pixels: the head kernel's chunks need several planes to stay aligned.
  check_equal(meshnet(s), Shape{1, 1, 23, 13, 11}, 11);
  check_equal(meshnet(s), Shape{1, 1, 7, 16, 9}, 12);  // D below the largest halo
}

TEST(Streaming, EluMeshNetWideEqualsWholeRun) {
  NetSpec s;
  s.width = 21;
  s.classes = 18;
  s.act = "Elu";
  s.dilations = {1, 2, 4, 8, 16, 8, 4, 2, 1};
  s.seed = 2;
  check_equal(meshnet(s), Shape{1, 1, 37, 12, 10}, 21);
}

TEST(Streaming, ManyClassesEqualsWholeRun) {
  NetSpec s;
  s.width = 21;
  s.classes = 40;
  s.dilations = {1, 2, 2, 4};
  s.seed = 3;
  check_equal(meshnet(s), Shape{1, 1, 18, 9, 14}, 31);
}

TEST(Streaming, NormalisedGeluMeshNetEqualsWholeRun) {
  NetSpec s;
  s.width = 15;
  s.classes = 2;
  s.act = "Gelu";
  s.norm = true;
  s.dilations = {4, 2, 1, 2, 4, 1};
  s.seed = 4;
  check_equal(meshnet(s), Shape{1, 1, 21, 14, 12}, 41);
}

TEST(Streaming, NormalisedNarrowNetEqualsWholeRun) {
  NetSpec s;
  s.width = 5;
  s.classes = 3;
  s.act = "Relu";
  s.norm = true;
  s.dilations = {1, 2, 1};
  s.seed = 5;
  check_equal(meshnet(s), Shape{1, 1, 11, 8, 8}, 51);
}

TEST(Streaming, TwoInputChannels) {
  NetSpec s;
  s.in_channels = 2;
  s.width = 8;
  s.classes = 4;
  s.dilations = {1, 3};
  s.seed = 6;
  check_equal(meshnet(s), Shape{1, 2, 10, 9, 7}, 61);
}

TEST(Streaming, RefusesWhatIsNoChain) {
  NetSpec s;
  s.dilations = {1, 2};
  graph::Graph g = meshnet(s);
  // A Softmax after the head: not an elementwise operator that streams.
  g.nodes.back().outputs = {"logits"};
  add_node(g, "Softmax", {"logits"}, "y", {{"axis", graph::Attribute::make_int(1)}});
  graph::Session session(g);
  std::string why;
  EXPECT_FALSE(graph::StreamingArgmax::create(session, Shape{1, 1, 8, 8, 8}, 0, &why));
  EXPECT_NE(why.find("Softmax"), std::string::npos) << why;

  // A strided convolution does not keep the grid.
  graph::Graph h = meshnet(s);
  h.nodes.front().attrs["strides"] = test::ints({2, 2, 2});
  graph::Session strided(h);
  EXPECT_FALSE(graph::StreamingArgmax::create(strided, Shape{1, 1, 8, 8, 8}, 0, &why));

  // Nor does one without padding, whose one-plane plan fails: refused, not thrown.
  graph::Graph v = meshnet(s);
  v.nodes.front().attrs.erase("pads");
  graph::Session valid(v);
  EXPECT_NO_THROW(EXPECT_FALSE(graph::StreamingArgmax::create(valid, Shape{1, 1, 8, 8, 8}, 0, &why)));
  EXPECT_EQ(valid.run(std::vector<Tensor>{test::random_tensor(Shape{1, 1, 8, 8, 8}, 3)}).at(0).dim(2), 6);
}

TEST(Streaming, EnvironmentSwitch) {
  unsetenv("VOXINFER_STREAMING");
  EXPECT_TRUE(graph::streaming_enabled_from_env());
  setenv("VOXINFER_STREAMING", "0", 1);
  EXPECT_FALSE(graph::streaming_enabled_from_env());
  setenv("VOXINFER_STREAMING", "maybe", 1);
  EXPECT_THROW(graph::streaming_enabled_from_env(), Error);
  unsetenv("VOXINFER_STREAMING");
}

}  // namespace
}  // namespace voxinfer
