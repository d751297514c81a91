// Kernel choice of a Session: VOXINFER_MAX_ISA=generic (or a CPU without AVX2) runs the
// generic blocked kernels, and the reference loops run only when asked for
// (SessionOptions::kernels or VOXINFER_KERNELS=reference). Whole models (small ones built
// here, the shipped MeshNet on a crop of the shipped T1, and the shared zoo when present) must
// give the reference's outputs with the generic kernels and with the best ISA's.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "graph/graph_builder.h"
#include "test_util.h"
#include "voxinfer/core/cpu.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/io/image_io.h"
#include "voxinfer/io/npy.h"

namespace voxinfer {
namespace {

using test::add_input;
using test::add_node;
using test::add_output;

// Restores the ISA cap and VOXINFER_KERNELS whatever a test did to them.
class KernelChoiceTest : public ::testing::Test {
 protected:
  void TearDown() override {
    set_max_isa(Isa::avx512);
    unsetenv("VOXINFER_KERNELS");
  }
};

bool is_reference_kernel(const std::string& name) {
  return name == "conv3d_ref" || name == "conv_transpose3d_ref";
}

int reference_convolutions(const graph::PlanStats& st) {
  int n = 0;
  for (const auto& [name, count] : st.kernels) n += is_reference_kernel(name) ? count : 0;
  return n;
}

int generic_convolutions(const graph::PlanStats& st) {
  int n = 0;
  for (const auto& [name, count] : st.kernels)
    n += name.size() > 9 && name.compare(name.size() - 9, 9, "__generic") == 0 ? count : 0;
  return n;
}

// Two 3x3x3 convolutions (2 -> 12 -> 4 channels): blocked in between.
graph::Graph two_convs() {
  graph::Graph g;
  g.opset = 13;
  add_input(g, "x");
  g.initializers["w1"] = test::random_tensor(Shape{12, 2, 3, 3, 3}, 301, -0.3f, 0.3f);
  g.initializers["w2"] = test::random_tensor(Shape{4, 12, 3, 3, 3}, 302, -0.3f, 0.3f);
  const auto pads = test::ints({1, 1, 1, 1, 1, 1});
  add_node(g, "Conv", {"x", "w1"}, "c1", {{"pads", pads}});
  add_node(g, "Relu", {"c1"}, "r1");
  add_node(g, "Conv", {"r1", "w2"}, "y", {{"pads", pads}});
  add_output(g, "y");
  return g;
}

TEST_F(KernelChoiceTest, GenericCapRunsTheGenericBlockedKernels) {
  set_max_isa(Isa::generic);
  graph::Session s(two_convs());
  const auto st = s.plan_stats({Shape{1, 2, 6, 7, 9}});
  EXPECT_EQ(reference_convolutions(st), 0);
  EXPECT_EQ(generic_convolutions(st), 2);
  EXPECT_GE(st.blocked_values, 1);
}

TEST_F(KernelChoiceTest, ReferenceKernelsOnlyWhenAskedFor) {
  graph::SessionOptions o;
  o.kernels = graph::KernelChoice::reference;
  EXPECT_EQ(reference_convolutions(graph::Session(two_convs(), o).plan_stats({Shape{1, 2, 6, 7, 9}})), 2);
  setenv("VOXINFER_KERNELS", "reference", 1);
  EXPECT_EQ(reference_convolutions(graph::Session(two_convs()).plan_stats({Shape{1, 2, 6, 7, 9}})), 2);
  o.kernels = graph::KernelChoice::optimized;  // the option wins over the environment
  EXPECT_EQ(reference_convolutions(graph::Session(two_convs(), o).plan_stats({Shape{1, 2, 6, 7, 9}})), 0);
  setenv("VOXINFER_KERNELS", "optimized", 1);
  EXPECT_EQ(reference_convolutions(graph::Session(two_convs()).plan_stats({Shape{1, 2, 6, 7, 9}})), 0);
  setenv("VOXINFER_KERNELS", "fast", 1);
  try {
    graph::Session bad(two_convs());
    ADD_FAILURE() << "VOXINFER_KERNELS=fast accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_input);
    EXPECT_NE(std::string(e.what()).find("VOXINFER_KERNELS"), std::string::npos) << e.what();
  }
}

// The plan names each convolution's kernel and why the kernels tried before it declined.
TEST_F(KernelChoiceTest, PlanSaysWhyEarlierKernelsDeclined) {
  set_max_isa(Isa::generic);
  const auto st = graph::Session(two_convs()).plan_stats({Shape{1, 2, 6, 7, 9}});
  ASSERT_EQ(st.kernel_choices.size(), 2u);
  for (const auto& c : st.kernel_choices) {
    SCOPED_TRACE(c.node + " " + c.kernel);
    EXPECT_EQ(c.op, "Conv");
    EXPECT_NE(c.kernel.find("__generic"), std::string::npos);
#if defined(__x86_64__) || defined(_M_X64)
    bool avx2_declined = false;
    for (const auto& d : c.declined) avx2_declined = avx2_declined || d.find("avx2") != std::string::npos;
    EXPECT_TRUE(avx2_declined);
#endif
  }
  graph::SessionOptions o;
  o.kernels = graph::KernelChoice::reference;
  const auto ref = graph::Session(two_convs(), o).plan_stats({Shape{1, 2, 6, 7, 9}});
  ASSERT_EQ(ref.kernel_choices.size(), 2u);
  EXPECT_EQ(ref.kernel_choices[0].kernel, "conv3d_ref");
  ASSERT_EQ(ref.kernel_choices[0].declined.size(), 1u);
  EXPECT_NE(ref.kernel_choices[0].declined[0].find("asked for the reference kernels"), std::string::npos);
}

// ------------------------------------------------------------------ models

struct ModelCase {
  std::string name;
  std::function<graph::Graph()> graph;  // built here, or loaded from `path`
  std::string path;                     // relative to the shared folder when `shared`
  bool shared = false;
  std::function<Tensor()> input;
  bool all_optimized = true;  // every convolution must have an optimized kernel
};

// A U-Net level: Conv -> InstanceNorm -> LeakyRelu (the skip), a stride-2 Conv, a k2s2
// ConvTranspose back, Concat with the skip, a Conv with 9 outputs and a 1x1x1 head.
graph::Graph unet_level() {
  graph::Graph g;
  g.opset = 13;
  add_input(g, "x");
  g.initializers["w1"] = test::random_tensor(Shape{12, 2, 3, 3, 3}, 311, -0.3f, 0.3f);
  g.initializers["b1"] = test::random_tensor(Shape{12}, 312);
  g.initializers["s"] = test::random_tensor(Shape{12}, 313, 0.5f, 1.5f);
  g.initializers["t"] = test::random_tensor(Shape{12}, 314);
  g.initializers["w2"] = test::random_tensor(Shape{20, 12, 3, 3, 3}, 315, -0.2f, 0.2f);
  g.initializers["wt"] = test::random_tensor(Shape{20, 12, 2, 2, 2}, 316, -0.3f, 0.3f);
  g.initializers["w3"] = test::random_tensor(Shape{9, 24, 3, 3, 3}, 317, -0.2f, 0.2f);
  g.initializers["w4"] = test::random_tensor(Shape{3, 9, 1, 1, 1}, 318, -0.5f, 0.5f);
  g.initializers["b4"] = test::random_tensor(Shape{3}, 319);
  const auto pads = test::ints({1, 1, 1, 1, 1, 1});
  add_node(g, "Conv", {"x", "w1", "b1"}, "c1", {{"pads", pads}});
  add_node(g, "InstanceNormalization", {"c1", "s", "t"}, "n1");
  add_node(g, "LeakyRelu", {"n1"}, "skip", {{"alpha", test::f(0.01f)}});
  add_node(g, "Conv", {"skip", "w2"}, "c2", {{"pads", pads}, {"strides", test::ints({2, 2, 2})}});
  add_node(g, "Relu", {"c2"}, "r2");
  add_node(g, "ConvTranspose", {"r2", "wt"}, "up", {{"strides", test::ints({2, 2, 2})}});
  add_node(g, "Concat", {"skip", "up"}, "cat", {{"axis", test::i(1)}});
  add_node(g, "Conv", {"cat", "w3"}, "c3", {{"pads", pads}});
  add_node(g, "Relu", {"c3"}, "r3");
  add_node(g, "Conv", {"r3", "w4", "b4"}, "y");
  add_output(g, "y");
  return g;
}

// MeshNet's shape: one plain input channel, 5-channel dilated 3x3x3 layers, a 1x1x1 head.
graph::Graph dilated_stack() {
  graph::Graph g;
  g.opset = 13;
  add_input(g, "x");
  std::string cur = "x";
  std::int64_t ic = 1;
  std::uint32_t seed = 321;
  for (const std::int64_t d : {1, 2, 4, 2, 1}) {
    const std::string id = std::to_string(seed);
    g.initializers["w" + id] = test::random_tensor(Shape{5, ic, 3, 3, 3}, seed, -0.4f, 0.4f);
    g.initializers["b" + id] = test::random_tensor(Shape{5}, seed + 100);
    add_node(g, "Conv", {cur, "w" + id, "b" + id}, "c" + id,
             {{"pads", test::ints({d, d, d, d, d, d})}, {"dilations", test::ints({d, d, d})}});
    add_node(g, "Relu", {"c" + id}, "r" + id);
    cur = "r" + id;
    ic = 5;
    ++seed;
  }
  g.initializers["wh"] = test::random_tensor(Shape{3, 5, 1, 1, 1}, 330, -0.5f, 0.5f);
  add_node(g, "Conv", {cur, "wh"}, "y");
  add_output(g, "y");
  return g;
}

// A residual block with groups and PRelu, a 5x5x5 stride-2 stem with 17 outputs (not a
// multiple of 8), a taps head (3x3x3, 2 outputs) and a small plain layer on the 2 classes.
graph::Graph residual_groups() {
  graph::Graph g;
  g.opset = 13;
  add_input(g, "x");
  g.initializers["w0"] = test::random_tensor(Shape{17, 3, 5, 5, 5}, 341, -0.2f, 0.2f);
  g.initializers["w1"] = test::random_tensor(Shape{16, 17, 3, 3, 3}, 342, -0.2f, 0.2f);
  g.initializers["wg"] = test::random_tensor(Shape{16, 8, 3, 3, 3}, 343, -0.2f, 0.2f);
  g.initializers["bg"] = test::random_tensor(Shape{16}, 344);
  g.initializers["slope"] = test::random_tensor(Shape{16, 1, 1, 1}, 345, 0.05f, 0.3f);
  g.initializers["wh"] = test::random_tensor(Shape{2, 16, 3, 3, 3}, 346, -0.2f, 0.2f);
  g.initializers["ws"] = test::random_tensor(Shape{2, 2, 3, 3, 3}, 347, -0.4f, 0.4f);
  const auto pads = test::ints({1, 1, 1, 1, 1, 1});
  add_node(g, "Conv", {"x", "w0"}, "stem",
           {{"pads", test::ints({2, 2, 2, 2, 2, 2})}, {"strides", test::ints({2, 2, 2})}});
  add_node(g, "Conv", {"stem", "w1"}, "c1", {{"pads", pads}});
  add_node(g, "Relu", {"c1"}, "r1");
  add_node(g, "Conv", {"r1", "wg", "bg"}, "cg", {{"pads", pads}, {"group", test::i(2)}});
  add_node(g, "Add", {"cg", "r1"}, "sum");
  add_node(g, "PRelu", {"sum", "slope"}, "a");
  add_node(g, "Conv", {"a", "wh"}, "h", {{"pads", pads}});
  add_node(g, "Sigmoid", {"h"}, "hs");
  add_node(g, "Conv", {"hs", "ws"}, "y", {{"pads", pads}});
  add_output(g, "y");
  return g;
}

std::filesystem::path examples_dir() {
  return test::test_data_dir().parent_path().parent_path() / "examples";
}

// A 37x45x41 block of the shipped T1 (odd sizes), min-max normalised, as [1, 1, X, Y, Z].
Tensor meshnet_input() {
  const Volume v = read_image((examples_dir() / "data/t1_crop.nii.gz").string());
  constexpr std::int64_t kx = 37, ky = 45, kz = 41;
  const std::int64_t x0 = (v.nx() - kx) / 2, y0 = (v.ny() - ky) / 2, z0 = (v.nz() - kz) / 2;
  Tensor t(Shape{1, 1, kx, ky, kz}, DType::f32);
  float lo = v.channel(0)[0], hi = lo;
  for (std::int64_t i = 0; i < v.voxels(); ++i) {
    lo = std::min(lo, v.channel(0)[i]);
    hi = std::max(hi, v.channel(0)[i]);
  }
  float* d = t.data<float>();
  for (std::int64_t x = 0; x < kx; ++x)
    for (std::int64_t y = 0; y < ky; ++y)
      for (std::int64_t z = 0; z < kz; ++z)
        d[(x * ky + y) * kz + z] = (v.at(0, z0 + z, y0 + y, x0 + x) - lo) / (hi - lo);
  return t;
}

std::vector<ModelCase> model_cases() {
  std::vector<ModelCase> v;
  v.push_back({"unet_level", unet_level, "", false, [] { return test::random_tensor(Shape{1, 2, 12, 10, 14}, 391); }});
  v.push_back({"dilated_stack", dilated_stack, "", false, [] {
                 return test::random_tensor(Shape{2, 1, 15, 13, 11}, 392);
               }});
  v.push_back({"residual_groups", residual_groups, "", false, [] {
                 return test::random_tensor(Shape{1, 3, 17, 13, 19}, 393);
               }});
  v.push_back({"meshnet_gwm", nullptr, "", false, meshnet_input});
  for (const char* m :
       {"tiny", "unet_spleen", "basicunet_s", "segresnet_s", "attentionunet_s", "vnet_s", "densenet121_s"}) {
    const std::string dir = std::string("models/") + m;
    v.push_back({std::string("zoo_") + m, nullptr, dir + "/model.onnx", true,
                 [dir] { return read_npy((test::shared_dir() / dir / "input.npy").string()); }, false});
  }
  return v;
}

std::string model_case_name(const ::testing::TestParamInfo<ModelCase>& info) {
  return info.param.name;
}

// Milliseconds of the zoo's models at the reference and the generic kernels, summed over the suite.
double g_zoo_reference_ms = 0, g_zoo_generic_ms = 0;
int g_zoo_models = 0;

class ModelKernels : public ::testing::TestWithParam<ModelCase> {
 protected:
  void TearDown() override { set_max_isa(Isa::avx512); }
  static void TearDownTestSuite() {
    if (g_zoo_models)
      std::printf("[kernels] zoo (%d models, input.npy, 1 run each): reference %.0f ms, generic %.0f ms (%.1fx)\n",
                  g_zoo_models, g_zoo_reference_ms, g_zoo_generic_ms, g_zoo_reference_ms / g_zoo_generic_ms);
  }
};

graph::Graph load_case(const ModelCase& c) {
  if (c.graph) return c.graph();
  if (c.name == "meshnet_gwm") return graph::load_model((examples_dir() / "models/meshnet_gwm/model.json").string());
  return graph::load_model((test::shared_dir() / c.path).string());
}

struct Timed {
  Tensor out;
  double ms = 0;
  graph::PlanStats stats;
};

Timed run_timed(const graph::Graph& g, const Tensor& x, graph::KernelChoice kernels) {
  graph::SessionOptions o;
  o.kernels = kernels;
  graph::Session s(g, o);
  Timed r;
  r.stats = s.plan_stats({x.shape()});  // plans (packs weights) outside the timed run
  const auto t0 = std::chrono::steady_clock::now();
  auto out = s.run(std::vector<Tensor>{x});
  r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  r.out = out[0];
  return r;
}

TEST_P(ModelKernels, GenericAndBestIsaMatchTheReference) {
  const ModelCase& c = GetParam();
  if (c.shared) VOXINFER_REQUIRE_SHARED(c.path);
  const graph::Graph g = load_case(c);
  const Tensor x = c.input();
  const Timed ref = run_timed(g, x, graph::KernelChoice::reference);
  set_max_isa(Isa::generic);
  const Timed generic = run_timed(g, x, graph::KernelChoice::optimized);
  set_max_isa(Isa::avx512);
  const Timed best = run_timed(g, x, graph::KernelChoice::optimized);
  const double bound = 1e-4 * std::max(1.0, test::max_abs(ref.out));
  const double err_generic = test::max_abs_diff(generic.out, ref.out), err_best = test::max_abs_diff(best.out, ref.out);
  std::printf(
      "[kernels] %s: reference %.1f ms, generic %.1f ms (%d generic, %d reference convolutions), %s %.1f ms; "
      "max_abs_err generic %.3g %s %.3g bound %.3g\n",
      c.name.c_str(), ref.ms, generic.ms, generic_convolutions(generic.stats), reference_convolutions(generic.stats),
      isa_name(hardware_isa()), best.ms, err_generic, isa_name(hardware_isa()), err_best, bound);
  EXPECT_LE(err_generic, bound);
  EXPECT_LE(err_best, bound);
  EXPECT_GT(generic_convolutions(generic.stats), 0);
  EXPECT_GT(reference_convolutions(ref.stats), 0);
  if (c.all_optimized) {
    EXPECT_EQ(reference_convolutions(generic.stats), 0);
    EXPECT_EQ(reference_convolutions(best.stats), 0);
  }
  if (c.shared) {
    g_zoo_reference_ms += ref.ms;
    g_zoo_generic_ms += generic.ms;
    ++g_zoo_models;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ModelKernels, ::testing::ValuesIn(model_cases()), model_case_name);

}  // namespace
}  // namespace voxinfer
