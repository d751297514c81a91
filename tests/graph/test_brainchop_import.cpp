// What brainchop's zoo needs from the TF.js importer: GELU (erf form) and ELU activations,
// dilations up to 16 with "same" padding on volumes smaller than the dilated kernel, and the
// per-channel normalisation a package inserts after "*_gn" layers. A small layers model is
// written here and checked against plain double-precision loops.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "test_util.h"
#include "voxinfer/core/error.h"
#include "voxinfer/graph/graph_edits.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/graph/tfjs_import.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A channels_last activation [D, H, W, C] in double.
struct Act {
  std::int64_t d = 0, h = 0, w = 0, c = 0;
  std::vector<double> v;
  double& at(std::int64_t z, std::int64_t y, std::int64_t x, std::int64_t k) {
    return v[static_cast<std::size_t>(((z * h + y) * w + x) * c + k)];
  }
  double at(std::int64_t z, std::int64_t y, std::int64_t x, std::int64_t k) const {
    return v[static_cast<std::size_t>(((z * h + y) * w + x) * c + k)];
  }
};

// Keras Conv3D, "same" padding, stride 1: kernel [k, k, k, cin, cout] (channels_last).
Act conv_same(const Act& in, const std::vector<float>& kernel, const std::vector<float>& bias, std::int64_t k,
              std::int64_t cout, std::int64_t dil) {
  Act out{in.d, in.h, in.w, cout, std::vector<double>(static_cast<std::size_t>(in.d * in.h * in.w * cout), 0.0)};
  const std::int64_t half = (k - 1) * dil / 2;  // odd kernels: symmetric padding
  for (std::int64_t z = 0; z < in.d; ++z)
    for (std::int64_t y = 0; y < in.h; ++y)
      for (std::int64_t x = 0; x < in.w; ++x)
        for (std::int64_t o = 0; o < cout; ++o) {
          double s = bias.empty() ? 0.0 : bias[static_cast<std::size_t>(o)];
          for (std::int64_t a = 0; a < k; ++a)
            for (std::int64_t b = 0; b < k; ++b)
              for (std::int64_t e = 0; e < k; ++e) {
                const std::int64_t zz = z + a * dil - half, yy = y + b * dil - half, xx = x + e * dil - half;
                if (zz < 0 || yy < 0 || xx < 0 || zz >= in.d || yy >= in.h || xx >= in.w) continue;
                for (std::int64_t i = 0; i < in.c; ++i)
                  s += in.at(zz, yy, xx, i) *
                       kernel[static_cast<std::size_t>((((a * k + b) * k + e) * in.c + i) * cout + o)];
              }
          out.at(z, y, x, o) = s;
        }
  return out;
}

// Per channel over D, H, W: (x - mean) / sqrt(population variance + eps).
void instance_norm(Act& a, double eps) {
  const std::int64_t n = a.d * a.h * a.w;
  for (std::int64_t k = 0; k < a.c; ++k) {
    double m = 0, q = 0;
    for (std::int64_t i = 0; i < n; ++i) m += a.v[static_cast<std::size_t>(i * a.c + k)];
    m /= static_cast<double>(n);
    for (std::int64_t i = 0; i < n; ++i) q += std::pow(a.v[static_cast<std::size_t>(i * a.c + k)] - m, 2);
    const double inv = 1 / std::sqrt(q / static_cast<double>(n) + eps);
    for (std::int64_t i = 0; i < n; ++i)
      a.v[static_cast<std::size_t>(i * a.c + k)] = (a.v[static_cast<std::size_t>(i * a.c + k)] - m) * inv;
  }
}

template <typename F>
void apply(Act& a, F f) {
  for (auto& x : a.v) x = f(x);
}

struct LayerDef {
  std::string name;
  std::int64_t filters, k, dil;
  bool bias;
  std::string activation;  // the Activation layer after it ("" = none)
};

// Writes a TF.js layers model (Functional, channels_last) with one weight shard.
void write_model(const fs::path& dir, const std::vector<LayerDef>& layers, std::int64_t cin,
                 std::vector<std::vector<float>>& kernels, std::vector<std::vector<float>>& biases) {
  fs::create_directories(dir);
  json lays = json::array();
  lays.push_back(
      {{"class_name", "InputLayer"},
       {"name", "input"},
       {"config", {{"name", "input"}, {"batch_input_shape", {nullptr, 40, 40, 40, cin}}, {"dtype", "float32"}}},
       {"inbound_nodes", json::array()}});
  json weights = json::array();
  std::string blob;
  std::mt19937 rng(7);
  std::string prev = "input";
  std::int64_t c = cin;
  for (const auto& L : layers) {
    lays.push_back({{"class_name", "Conv3D"},
                    {"name", L.name},
                    {"config",
                     {{"name", L.name},
                      {"filters", L.filters},
                      {"kernel_size", {L.k, L.k, L.k}},
                      {"strides", {1, 1, 1}},
                      {"padding", "same"},
                      {"dilation_rate", {L.dil, L.dil, L.dil}},
                      {"activation", "linear"},
                      {"use_bias", L.bias},
                      {"data_format", "channels_last"}}},
                    {"inbound_nodes", {{{prev, 0, 0, json::object()}}}}});
    prev = L.name;
    const std::int64_t nk = L.k * L.k * L.k * c * L.filters;
    std::normal_distribution<float> dist(0.f, 1.f / std::sqrt(static_cast<float>(L.k * L.k * L.k * c)));
    std::vector<float> kw(static_cast<std::size_t>(nk)), bw;
    for (auto& x : kw) x = dist(rng);
    weights.push_back({{"name", L.name + "/kernel"}, {"shape", {L.k, L.k, L.k, c, L.filters}}, {"dtype", "float32"}});
    blob.append(reinterpret_cast<const char*>(kw.data()), kw.size() * sizeof(float));
    if (L.bias) {
      bw.resize(static_cast<std::size_t>(L.filters));
      for (auto& x : bw) x = dist(rng);
      weights.push_back({{"name", L.name + "/bias"}, {"shape", {L.filters}}, {"dtype", "float32"}});
      blob.append(reinterpret_cast<const char*>(bw.data()), bw.size() * sizeof(float));
    }
    kernels.push_back(kw);
    biases.push_back(bw);
    c = L.filters;
    if (!L.activation.empty()) {
      const std::string an = L.name + "_act";
      lays.push_back({{"class_name", "Activation"},
                      {"name", an},
                      {"config", {{"name", an}, {"activation", L.activation}}},
                      {"inbound_nodes", {{{prev, 0, 0, json::object()}}}}});
      prev = an;
    }
  }
  json model = {{"format", "layers-model"},
                {"modelTopology",
                 {{"class_name", "Functional"},
                  {"config",
                   {{"name", "model"},
                    {"layers", lays},
                    {"input_layers", {{"input", 0, 0}}},
                    {"output_layers", {{prev, 0, 0}}}}}}},
                {"weightsManifest", {{{"paths", {"w.bin"}}, {"weights", weights}}}}};
  std::ofstream(dir / "model.json") << model.dump();
  std::ofstream(dir / "w.bin", std::ios::binary).write(blob.data(), static_cast<std::streamsize>(blob.size()));
}

TEST(BrainchopImport, GlobMatch) {
  EXPECT_TRUE(graph::glob_match("*_gn", "conv3d_0_gn"));
  EXPECT_TRUE(graph::glob_match("conv3d_*_gn", "conv3d_24_gn"));
  EXPECT_TRUE(graph::glob_match("*", ""));
  EXPECT_TRUE(graph::glob_match("a*b*c", "aXbYbZc"));
  EXPECT_FALSE(graph::glob_match("*_gn", "conv3d_0_gn_x"));
  EXPECT_FALSE(graph::glob_match("conv", "conv3d"));
  EXPECT_FALSE(graph::glob_match("a*b", "ba"));
}

// A mindgrab-like and a model18cls-like stack on a 20 x 21 x 19 volume (smaller than the
// 33-voxel reach of a dilation-16 kernel), 15 channels (not a multiple of the vector width).
TEST(BrainchopImport, DilatedGeluEluAndNormalisationMatchLoops) {
  const fs::path dir = fs::temp_directory_path() / ("voxinfer_bc_import_" + std::to_string(::getpid()));
  const std::vector<LayerDef> layers{{"conv3d_0_gn", 15, 3, 16, false, "gelu"},
                                     {"conv3d_1_gn", 15, 3, 8, false, "gelu"},
                                     {"conv3d_2", 15, 3, 2, true, "elu"},
                                     {"conv3d_3", 15, 3, 1, true, "relu"},
                                     {"output", 3, 1, 1, true, ""}};
  std::vector<std::vector<float>> kw, bw;
  write_model(dir, layers, 1, kw, bw);
  graph::Graph g = graph::import_tfjs((dir / "model.json").string());
  EXPECT_EQ(graph::insert_instance_norm_after(g, "*_gn", 1e-5f), 2);
  graph::Session session(std::move(g));
  const std::int64_t d = 20, h = 21, w = 19;
  const Tensor x = test::random_tensor(Shape{1, 1, d, h, w}, 3, 0.f, 1.f);
  const Tensor y = session.run(std::vector<Tensor>{x}).at(0);
  ASSERT_EQ(y.shape(), (Shape{1, 3, d, h, w}));

  Act a{d, h, w, 1, std::vector<double>(x.data<float>(), x.data<float>() + x.numel())};
  for (std::size_t l = 0; l < layers.size(); ++l) {
    a = conv_same(a, kw[l], bw[l], layers[l].k, layers[l].filters, layers[l].dil);
    if (layers[l].name.ends_with("_gn")) instance_norm(a, 1e-5);
    if (layers[l].activation == "gelu") apply(a, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); });
    if (layers[l].activation == "elu") apply(a, [](double v) { return v > 0 ? v : std::expm1(v); });
    if (layers[l].activation == "relu") apply(a, [](double v) { return std::max(v, 0.0); });
  }
  double err = 0, ref_max = 0;
  for (std::int64_t k = 0; k < 3; ++k)
    for (std::int64_t z = 0; z < d; ++z)
      for (std::int64_t yy = 0; yy < h; ++yy)
        for (std::int64_t xx = 0; xx < w; ++xx) {
          const double r = a.at(z, yy, xx, k);
          ref_max = std::max(ref_max, std::abs(r));
          err = std::max(err, std::abs(r - y.data<float>()[((k * d + z) * h + yy) * w + xx]));
        }
  EXPECT_LE(err, 1e-4 * std::max(1.0, ref_max)) << "max |ref| " << ref_max;
  fs::remove_all(dir);
}

TEST(BrainchopImport, NormalisationOnlyAfterConvolutions) {
  const fs::path dir = fs::temp_directory_path() / ("voxinfer_bc_import2_" + std::to_string(::getpid()));
  std::vector<std::vector<float>> kw, bw;
  write_model(dir, {{"conv3d_0", 2, 3, 1, true, "gelu"}}, 1, kw, bw);
  graph::Graph g = graph::import_tfjs((dir / "model.json").string());
  EXPECT_EQ(graph::insert_instance_norm_after(g, "nothing_*", 1e-5f), 0);
  EXPECT_THROW(graph::insert_instance_norm_after(g, "*_act", 1e-5f), Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace voxinfer
