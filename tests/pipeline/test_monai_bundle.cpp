// MONAI bundles: the config syntax (references, macros, expressions), the translation of each
// transform into the PipelineSpec, the errors for what cannot be translated, and a run of the
// shipped tiny bundle (tests/data/monai_bundle_tiny) with a network written here.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "onnx_builder.h"
#include "pipeline/monai_config.h"
#include "test_util.h"
#include "voxinfer/core/error.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/pipeline/monai_bundle.h"
#include "voxinfer/pipeline/postprocess.h"
#include "voxinfer/pipeline/preprocess.h"
#include "voxinfer/pipeline/segment.h"
#include "voxinfer/pipeline/segmentation.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

monai::Config config(const char* text) {
  return monai::Config(json::parse(text), "inference.json", ".");
}

// The message of the Error `f` throws (and its code), or "" when it throws none.
template <typename F>
std::string error_of(F&& f, ErrorCode* code = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(MonaiConfig, ReferencesMacrosAndRelativeIds) {
  auto c = config(R"js({"a": 2, "b": "@a", "nested": {"x": [10, 20, "@#y"], "y": "@nested#x#1"},
                      "rel": {"p": 5, "q": "@#p", "r": {"s": "@##p"}}})js");
  EXPECT_EQ(c.resolve("b"), json(2));
  EXPECT_EQ(c.resolve("nested#y"), json(20));
  // "@#y" at nested#x#2 is a sibling of the list entry: nested#x#y does not exist.
  EXPECT_TRUE(contains(error_of([&] { c.resolve("nested#x"); }), "nested#x#y"));
  EXPECT_EQ(c.resolve("rel#q"), json(5));
  EXPECT_EQ(c.resolve("rel#r#s"), json(5));
  EXPECT_EQ(monai::absolute_id("#p", "rel#q"), "rel#p");
  EXPECT_EQ(monai::absolute_id("##p", "rel#r#s"), "rel#p");
  EXPECT_EQ(monai::absolute_id("a#b", "x"), "a#b");
  // A macro copies the raw text: its references resolve where it is pasted.
  auto m = config(R"js({"base": {"x": [10, 20], "y": "@#x"}, "copy": "%base", "one": "%base#x#0"})js");
  EXPECT_EQ(m.raw("copy#y"), json("@#x"));
  EXPECT_EQ(m.resolve("copy#y"), json::array({10, 20}));
  EXPECT_EQ(m.resolve("one"), json(10));
  auto loop = [] { config(R"js({"a": "%b", "b": "%a"})js"); };
  EXPECT_TRUE(contains(error_of(loop), "macros nest too deep"));
}

TEST(MonaiConfig, CyclesAndMissingIdsAreErrors) {
  auto c = config(R"js({"a": "@b", "b": "@a", "c": "@nope"})js");
  ErrorCode code{};
  EXPECT_TRUE(contains(error_of([&] { c.resolve("a"); }, &code), "refers to itself"));
  EXPECT_EQ(code, ErrorCode::invalid_model);
  EXPECT_TRUE(contains(error_of([&] { c.resolve("c"); }), "'nope' is not defined"));
}

TEST(MonaiConfig, DisabledEntriesAreDropped) {
  auto c = config(
      R"({"t": [{"_target_": "A"}, {"_target_": "B", "_disabled_": true}, {"_target_": "C", "_disabled_": "$1 > 2"}]})");
  const json t = c.resolve("t");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0]["_target_"], "A");
  EXPECT_EQ(t[1]["_target_"], "C");
}

TEST(MonaiConfig, ExpressionsInTheZoosForms) {
  auto c = config(R"js({"root": "/b", "n": 3, "lst": [1, 2, 3], "w": {"lo": -57}})js");
  auto ev = [&](const char* e) { return c.evaluate(e, "x"); };
  EXPECT_EQ(ev("@root + '/eval'"), json("/b/eval"));
  EXPECT_EQ(ev("os.path.join(@root, 'models', 'model.pt')"), json("/b/models/model.pt"));
  EXPECT_EQ(ev("numpy.float32"), json("float32"));
  EXPECT_EQ(ev("torch.int16"), json("int16"));
  EXPECT_EQ(ev("torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"), json("cpu"));
  EXPECT_EQ(ev("@n * 2 + 1"), json(7));
  EXPECT_EQ(ev("@n / 2"), json(1.5));
  EXPECT_EQ(ev("@n // 2"), json(1));
  EXPECT_EQ(ev("-@w#lo + 0.5"), json(57.5));
  EXPECT_EQ(ev("@lst[1]"), json(2));
  EXPECT_EQ(ev("@lst[-1]"), json(3));
  EXPECT_EQ(ev("[96, 96, @n * 32]"), json::array({96, 96, 96}));
  EXPECT_EQ(ev("(1, 2)"), json::array({1, 2}));
  EXPECT_EQ(ev("{'a': 1}"), json({{"a", 1}}));
  EXPECT_EQ(ev("@n > 2 and not @n == 4"), json(true));
  EXPECT_EQ(ev("True if @n != 3 else None"), json(nullptr));
  EXPECT_EQ(ev("'a' 'b'"), json("ab"));
  EXPECT_EQ(ev("1e-3"), json(1e-3));
}

TEST(MonaiConfig, UnsupportedExpressionsNameTheKeyAndTheExpression) {
  auto c = config(R"js({"f": "$lambda x: torch.where(x[[2]] > 0, 4, 0)", "g": "$__import__('os').system('true')",
                      "h": "$@net.to(@device)", "net": {"_target_": "UNet"}, "device": "cpu", "k": "$open('f')",
                      "m": "$[i for i in @lst]", "lst": [1], "d": "$1 / 0", "kw": "$int(x=1)"})js");
  // A lambda is a function for its transform: resolved as written, compiled by the
  // translation of the transform (ChannelExpression), never evaluated here.
  EXPECT_EQ(c.resolve("f"), json("$lambda x: torch.where(x[[2]] > 0, 4, 0)"));
  for (const char* key : {"g", "h", "k", "m", "d", "kw"}) {
    ErrorCode code{};
    const std::string msg = error_of([&] { c.resolve(key); }, &code);
    EXPECT_EQ(code, ErrorCode::invalid_model) << key;
    EXPECT_TRUE(contains(msg, std::string("inference.json: ") + key + ": cannot evaluate")) << msg;
    EXPECT_TRUE(contains(msg, c.raw(key).get<std::string>())) << msg;  // the expression itself
  }
}

// ---- translation ----------------------------------------------------------------------

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path tiny_dir() {
  return test::test_data_dir() / "monai_bundle_tiny";
}

monai::Bundle translate(const json& inference) {
  return monai::translate_bundle(read(tiny_dir() / "configs" / "metadata.json"), inference.dump(), tiny_dir(),
                                 "net.onnx");
}

json tiny_inference() {
  return json::parse(read(tiny_dir() / "configs" / "inference.json"));
}

TEST(MonaiBundle, TinyBundleTranslatesToTheSpec) {
  const monai::Bundle b = translate(tiny_inference());
  const PipelineSpec& s = b.spec;
  EXPECT_EQ(b.name, "Tiny test bundle");
  EXPECT_EQ(b.version, "0.1.2");
  EXPECT_EQ(s.version, "0.1.2");
  EXPECT_EQ(s.axes, AxisOrder::xyz);
  EXPECT_EQ(s.input.channels, 1);
  ASSERT_TRUE(s.preprocess.orientation);
  EXPECT_EQ(*s.preprocess.orientation, "RAS");
  ASSERT_TRUE(s.preprocess.spacing);
  EXPECT_EQ(*s.preprocess.spacing, (std::array<double, 3>{1.5, 1.5, 2.0}));
  EXPECT_EQ(s.preprocess.size_rule, SizeRule::centres);
  ASSERT_EQ(s.preprocess.intensity.size(), 1u);
  const IntensityOp& op = s.preprocess.intensity[0];
  EXPECT_EQ(op.kind, IntensityOp::Kind::scale);
  EXPECT_EQ(op.from, (std::array<double, 2>{-57, 164}));
  EXPECT_EQ(op.to, (std::array<double, 2>{0, 1}));
  EXPECT_TRUE(op.clip_output);
  EXPECT_EQ(s.inference.style, WindowStyle::monai);
  EXPECT_EQ(s.inference.blend, BlendMode::constant);
  EXPECT_EQ(s.inference.roi_size, (std::array<std::int64_t, 3>{16, 16, 16}));
  EXPECT_EQ(s.inference.overlap, (std::array<double, 3>{0.5, 0.5, 0.5}));
  EXPECT_EQ(s.inference.batch, 2);
  EXPECT_EQ(s.inference.average, AverageSpace::logits);
  EXPECT_EQ(s.postprocess.activation, Activation::softmax);
  EXPECT_EQ(s.postprocess.resample, ResampleSpace::probabilities);
  ASSERT_EQ(s.labels.size(), 1u);
  EXPECT_EQ(s.labels[0].value, 1);
  EXPECT_EQ(s.labels[0].name, "bright");
  EXPECT_EQ(b.output_postfix, "seg");
  // Every transform is listed with what it became (the disabled one is gone).
  ASSERT_EQ(b.steps.size(), 6u + 1u + 5u);
  EXPECT_EQ(b.steps[3].target, "Spacingd");
  EXPECT_TRUE(contains(monai::describe(b), "Spacingd: resample to 1.5 x 1.5 x 2 mm"));
}

TEST(MonaiBundle, InvertdBeforeActivationResamplesLogits) {
  json inf = tiny_inference();
  auto& post = inf["postprocessing"]["transforms"];
  std::swap(post[0], post[1]);
  EXPECT_EQ(translate(inf).spec.postprocess.resample, ResampleSpace::logits);
}

TEST(MonaiBundle, IntensityTransforms) {
  json inf = tiny_inference();
  auto& pre = inf["preprocessing"]["transforms"];
  pre[5] = {{"_target_", "NormalizeIntensityd"}, {"keys", "image"}, {"nonzero", "True"}, {"channel_wise", true}};
  pre.push_back({{"_target_", "ScaleIntensityd"}, {"keys", "image"}, {"minv", -1.0}, {"maxv", 1.0}});
  pre.push_back({{"_target_", "NormalizeIntensityd"}, {"keys", "image"}, {"subtrahend", 10}, {"divisor", 4}});
  const auto ops = translate(inf).spec.preprocess.intensity;
  ASSERT_EQ(ops.size(), 4u);
  EXPECT_EQ(ops[0].kind, IntensityOp::Kind::zscore);
  EXPECT_TRUE(ops[0].nonzero);  // "True" is a true string, as Python reads it
  EXPECT_TRUE(ops[0].channel_wise);
  EXPECT_FALSE(ops[0].mean);
  EXPECT_EQ(ops[1].kind, IntensityOp::Kind::minmax);
  EXPECT_FALSE(ops[1].channel_wise);  // MONAI's default: over all channels
  EXPECT_EQ(ops[2].kind, IntensityOp::Kind::scale);
  EXPECT_EQ(ops[2].to, (std::array<double, 2>{-1, 1}));
  EXPECT_EQ(ops[3].kind, IntensityOp::Kind::zscore);
  EXPECT_EQ(*ops[3].mean, 10);
  EXPECT_EQ(*ops[3].std, 4);
}

TEST(MonaiBundle, GaussianInfererAndLargestComponent) {
  json inf = tiny_inference();
  inf["inferer"] = {{"_target_", "SlidingWindowInferer"},
                    {"roi_size", {32, 32, 16}},
                    {"overlap", 0.625},
                    {"mode", "gaussian"},
                    {"sigma_scale", 0.25}};
  inf["postprocessing"]["transforms"].push_back(
      {{"_target_", "KeepLargestConnectedComponentd"}, {"keys", "pred"}, {"applied_labels", {1}}});
  const monai::Bundle b = translate(inf);
  EXPECT_EQ(b.spec.inference.blend, BlendMode::gaussian);
  EXPECT_EQ(b.spec.inference.sigma_scale, 0.25);
  EXPECT_EQ(b.spec.inference.batch, 1);  // MONAI's default sw_batch_size
  EXPECT_EQ(b.spec.inference.roi_size, (std::array<std::int64_t, 3>{32, 32, 16}));
  EXPECT_EQ(b.spec.postprocess.keep_largest_component, std::vector<int>{1});
  EXPECT_EQ(b.spec.postprocess.connectivity, 26);
}

TEST(MonaiBundle, UntranslatableConfigsNameTransformAndPosition) {
  struct Case {
    std::function<void(json&)> edit;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](json& j) {
         j["preprocessing"]["transforms"].push_back({{"_target_", "RandFlipd"}, {"keys", "image"}});
       },
       "preprocessing#transforms#7 (RandFlipd): the transform RandFlipd is not supported"},
      {[](json& j) { j["preprocessing"]["transforms"][4]["mode"] = "nearest"; },
       "preprocessing#transforms#4 (Spacingd): mode \"nearest\""},
      {[](json& j) { j["preprocessing"]["transforms"][4]["scale_extent"] = true; },
       "preprocessing#transforms#4 (Spacingd): scale_extent = true is not supported"},
      {[](json& j) { j["preprocessing"]["transforms"][5]["mystery"] = 1; },
       "preprocessing#transforms#5 (ScaleIntensityRanged): the argument 'mystery' (1) is not supported"},
      {[](json& j) { std::swap(j["preprocessing"]["transforms"][4], j["preprocessing"]["transforms"][5]); },
       "resampling after an intensity transform is not supported"},
      {[](json& j) {
         j["inferer"] = {{"_target_", "SliceInferer"}, {"roi_size", {16, 16}}};
       },
       "inferer (SliceInferer): the inferer SliceInferer is not supported"},
      {[](json& j) { j["inferer"]["padding_mode"] = "reflect"; }, "padding_mode \"reflect\" is not supported"},
      {[](json& j) { j["postprocessing"]["transforms"][1]["nearest_interp"] = true; },
       "nearest_interp true on continuous outputs is not supported"},
      {[](json& j) { j["postprocessing"]["transforms"].erase(1); }, "without Invertd MONAI writes the model grid"},
      {[](json& j) {
         auto& post = j["postprocessing"]["transforms"];
         post.insert(post.begin() + 1, json{{"_target_", "Lambdad"}, {"keys", "pred"}, {"func", "$lambda x: x * 2"}});
       },
       "Invertd after a Lambdad on continuous outputs is not supported"},
      {[](json& j) {
         j["postprocessing"]["transforms"].push_back(
             {{"_target_", "Lambdad"}, {"keys", "pred"}, {"func", "$lambda x: x.numpy()"}});
       },
       "postprocessing#transforms#5#func: cannot evaluate the expression \"$lambda x: x.numpy()\""},
      {[](json& j) {
         j["postprocessing"]["transforms"].push_back(
             {{"_target_", "Lambdad"}, {"keys", "pred"}, {"func", "$lambda x: x[[2]] > 0"}});
       },
       "the channel index 2 is out of range for 1 channel(s)"},
      {[](json& j) { j["inferer"]["roi_size"] = "$@roi * 2"; },
       "inferer#roi_size: cannot evaluate the expression \"$@roi * 2\""},
  };
  for (const auto& c : cases) {
    json inf = tiny_inference();
    c.edit(inf);
    ErrorCode code{};
    const std::string msg = error_of([&] { translate(inf); }, &code);
    EXPECT_TRUE(contains(msg, c.expected)) << "got: " << msg << "\nexpected: " << c.expected;
    EXPECT_TRUE(code == ErrorCode::unsupported || code == ErrorCode::invalid_model) << msg;
    EXPECT_EQ(exit_status(code), 3) << msg;
  }
}

// ---- a whole run of the tiny bundle ---------------------------------------------------------

// A per-voxel network: logits (0.5 - x, x - 0.5) x 8, so the label is 1 where the scaled
// intensity exceeds 0.5.
void write_network(const fs::path& file) {
  test::OnnxBuilder b;
  b.input("image", {-1, 1, -1, -1, -1});
  b.constant("half", {}, {0.5f});
  b.constant("gain", {}, {8.f});
  b.node("Sub", {"image", "half"}, "d");
  b.node("Mul", {"d", "gain"}, "up");
  b.node("Neg", {"up"}, "down");
  auto* c = b.node("Concat", {"down", "up"}, "pred");
  test::OnnxBuilder::attr_int(c, "axis", 1);
  b.output("pred");
  b.save(file.string());
}

struct TempBundle {
  fs::path dir;
  TempBundle() {
    dir = fs::temp_directory_path() / ("voxinfer_monai_tiny_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir / "models");
    fs::copy(tiny_dir() / "configs", dir / "configs");
  }
  ~TempBundle() { fs::remove_all(dir); }
};

TEST(MonaiBundle, MissingNetworkIsAnInvalidModel) {
  TempBundle t;
  ErrorCode code{};
  const std::string msg = error_of([&] { monai::load_bundle(t.dir); }, &code);
  EXPECT_EQ(code, ErrorCode::invalid_model);
  EXPECT_TRUE(contains(msg, "model.onnx: network file not found")) << msg;
  EXPECT_TRUE(monai::is_bundle(t.dir));
  EXPECT_FALSE(monai::is_bundle(tiny_dir() / "configs"));
}

TEST(MonaiBundle, InspectListsEveryProblemAndGoesOn) {
  TempBundle t;
  json inf = tiny_inference();
  inf["preprocessing"]["transforms"][3]["_target_"] = "RandRotated";
  inf["inferer"]["mode"] = "triangle";
  {
    std::ofstream out(t.dir / "configs" / "inference.json");
    out << inf.dump(2);
  }
  monai::BundleOptions o;
  o.inspect = true;
  const monai::Bundle b = monai::load_bundle(t.dir, o);
  ASSERT_EQ(b.problems.size(), 3u);
  EXPECT_TRUE(contains(b.problems[0], "preprocessing#transforms#3 (RandRotated)")) << b.problems[0];
  EXPECT_TRUE(contains(b.problems[1], "mode \"triangle\" is not supported")) << b.problems[1];
  EXPECT_TRUE(contains(b.problems[2], "network file not found")) << b.problems[2];
  // The transforms after the refused one are still translated.
  EXPECT_TRUE(b.spec.preprocess.spacing.has_value());
  EXPECT_EQ(b.spec.postprocess.resample, ResampleSpace::probabilities);
  const std::string text = monai::describe(b);
  EXPECT_TRUE(contains(text, "3  RandRotated: cannot run")) << text;
  EXPECT_TRUE(contains(text, "cannot run (3 problems)")) << text;
  // Without inspect the first problem is the error.
  EXPECT_TRUE(contains(error_of([&] { monai::load_bundle(t.dir); }), "RandRotated"));
}

TEST(MonaiBundle, TinyBundleSegmentsOnTheInputGrid) {
  TempBundle t;
  write_network(t.dir / "models" / "model.onnx");
  SegmentationPipeline p = monai::open_segmentation(t.dir);
  EXPECT_EQ(p.spec().name, "Tiny test bundle");
  // An LPS-ordered volume (Orientationd flips x and y), 3 x 2.5 x 4 mm, bright where x >= 11.
  Geometry g;
  g.spacing = {3.0, 2.5, 4.0};
  g.origin = {10, -20, 5};
  Volume v(1, 7, 13, 19, g);
  for (std::int64_t z = 0; z < 7; ++z)
    for (std::int64_t y = 0; y < 13; ++y)
      for (std::int64_t x = 0; x < 19; ++x) v.channel(0)[(z * 13 + y) * 19 + x] = x >= 11 ? 400.f : -300.f;
  const SegmentationResult r = p.run(v);
  ASSERT_EQ(r.labels.nx(), 19);
  ASSERT_EQ(r.labels.ny(), 13);
  ASSERT_EQ(r.labels.nz(), 7);
  EXPECT_LT((r.labels.geometry.origin - g.origin).norm(), 1e-9);
  // Probabilities resampled back are exact on either side of the edge: labels follow it.
  for (std::int64_t z = 0; z < 7; ++z)
    for (std::int64_t y = 0; y < 13; ++y)
      for (std::int64_t x = 0; x < 19; ++x)
        ASSERT_EQ(r.labels.channel(0)[(z * 13 + y) * 19 + x], x >= 11 ? 1.f : 0.f) << x << "," << y << "," << z;
  // The model grid: (n - 1) x old / new + 1 voxels per axis, rounded half to even.
  EXPECT_EQ(r.model_grid, (Size3{37, 21, 13}));
}

}  // namespace
}  // namespace voxinfer

namespace voxinfer {
namespace {

TEST(MonaiBundle, CropForegroundTranslationAndOrder) {
  json inf = tiny_inference();
  auto& pre = inf["preprocessing"]["transforms"];
  pre.insert(pre.begin() + 6, json{{"_target_", "CropForegroundd"},
                                   {"keys", "image"},
                                   {"source_key", "image"},
                                   {"margin", 3},
                                   {"mode", {"minimum"}}});
  inf["postprocessing"]["transforms"][2] = "%preprocessing#transforms#7";  // the macro's EnsureTyped moved
  const monai::Bundle b = translate(inf);
  ASSERT_TRUE(b.spec.preprocess.crop_foreground);
  EXPECT_EQ(b.spec.preprocess.crop_foreground->margin, 3);
  // An intensity transform after the crop would see other voxels than voxinfer's crop does.
  pre.push_back({{"_target_", "ScaleIntensityd"}, {"keys", "image"}});
  EXPECT_TRUE(contains(error_of([&] { translate(inf); }), "ScaleIntensityd after CropForegroundd is not supported"));
  pre.erase(pre.size() - 1);
  pre[6]["k_divisible"] = 16;
  EXPECT_EQ(translate(inf).spec.preprocess.crop_foreground->k_divisible, (std::array<std::int64_t, 3>{16, 16, 16}));
  pre[6]["k_divisible"] = json::array({16, 8});
  EXPECT_TRUE(contains(error_of([&] { translate(inf); }), "k_divisible must be an integer or three"));
}

// CropForegroundd then Invertd as MONAI defines them: the network sees the box; its
// probabilities are padded with zeros onto the whole resampled grid, which then goes back to
// the input grid. Built here from whole volumes, compared with the streamed pipeline.
TEST(MonaiBundle, CropForegroundPadsThePredictionBackWithZeros) {
  for (const std::int64_t kdiv : {1, 8}) {
    TempBundle t;
    write_network(t.dir / "models" / "model.onnx");
    json inf = tiny_inference();
    auto& pre = inf["preprocessing"]["transforms"];
    pre.insert(pre.begin() + 6,
               json{{"_target_", "CropForegroundd"}, {"keys", "image"}, {"source_key", "image"}, {"margin", 0},
                    {"k_divisible", kdiv}});
    inf["postprocessing"]["transforms"][2] = "%preprocessing#transforms#7";  // the macro's EnsureTyped moved
    {
      std::ofstream out(t.dir / "configs" / "inference.json");
      out << inf.dump(2);
    }
    Geometry g;
    g.spacing = {2.0, 2.0, 3.0};
    g.origin = {-4, 7, 1};
    Volume v(1, 11, 17, 23, g);
    for (std::int64_t z = 0; z < 11; ++z)
      for (std::int64_t y = 0; y < 17; ++y)
        for (std::int64_t x = 0; x < 23; ++x) {
          float val = -300.f;
          if (x >= 6 && x < 15 && y >= 4 && y < 11 && z >= 3 && z < 7) val = (x + y + z) % 3 == 0 ? 50.f : 1000.f;
          v.channel(0)[(z * 17 + y) * 23 + x] = val;
        }
    const monai::Bundle b = monai::load_bundle(t.dir);
    SegmentationPipeline p = monai::open_segmentation(t.dir);
    const SegmentationResult r = p.run(v);

    const Volume full = preprocess_for_model(v, b.spec);
    auto box = foreground_box(full, 0);
    ASSERT_TRUE(box);
    // MONAI's CropForeground: the box grows about its centre to multiples of k_divisible,
    // box_start -= (size_k - size) // 2 (compute_bounding_box), zero-padded outside.
    for (std::size_t a = 0; a < 3; ++a) {
      const std::int64_t n = box->end[a] - box->begin[a], t = (n + kdiv - 1) / kdiv * kdiv;
      box->begin[a] -= (t - n) / 2;
      box->end[a] = box->begin[a] + t;
    }
    const std::array<std::int64_t, 3> size{box->end[0] - box->begin[0], box->end[1] - box->begin[1],
                                           box->end[2] - box->begin[2]};
    if (kdiv > 1) {
      EXPECT_EQ(size[0] % kdiv + size[1] % kdiv + size[2] % kdiv, 0);
    } else {
      ASSERT_LT(size[0], full.nx());  // the crop removes something on every axis
      ASSERT_LT(size[1], full.ny());
      ASSERT_LT(size[2], full.nz());
    }
    EXPECT_EQ(r.model_grid, xyz_to_model(size, b.spec.axes));
    const Volume crop = crop_or_pad(full, box->begin, size);
    graph::Session session = graph::Session::from_file(b.network.string());
    Tensor prob = sliding_window(to_model_tensor(crop, b.spec.axes), SlidingWindowOptions::from_spec(b.spec.inference),
                                 [&](const Tensor& batch) { return session.run(std::vector<Tensor>{batch}).at(0); });
    softmax_channels(prob);
    const Volume prob_crop = volume_from_model_tensor(prob, b.spec.axes, crop.geometry);
    Volume prob_full(2, full.nz(), full.ny(), full.nx(), full.geometry);
    for (std::int64_t c = 0; c < 2; ++c) {
      float* dst = prob_full.channel(c);
      std::fill_n(dst, full.voxels(), 0.f);
      for (std::int64_t z = 0; z < size[2]; ++z)
        for (std::int64_t y = 0; y < size[1]; ++y)
          for (std::int64_t x = 0; x < size[0]; ++x) {
            const std::int64_t fx = x + box->begin[0], fy = y + box->begin[1], fz = z + box->begin[2];
            if (fx < 0 || fy < 0 || fz < 0 || fx >= full.nx() || fy >= full.ny() || fz >= full.nz()) continue;
            dst[(fz * full.ny() + fy) * full.nx() + fx] = prob_crop.channel(c)[(z * size[1] + y) * size[0] + x];
          }
    }
    const Volume back = resample_to_grid(prob_full, v.geometry, {v.nx(), v.ny(), v.nz()});
    const Tensor expected = argmax_channels(back.data);
    std::int64_t ones = 0;
    for (std::int64_t i = 0; i < v.voxels(); ++i) {
      ASSERT_EQ(r.labels.channel(0)[i], expected.data<float>()[i]) << "voxel " << i;
      ones += r.labels.channel(0)[i] == 1.f;
    }
    EXPECT_GT(ones, 0);
    EXPECT_LT(ones, v.voxels());
    // With the box tight around the bright block, the zeros outside it pull no label back to 0:
    // the label reaches further than without the crop, so the padding is seen in the labels.
    PipelineSpec uncropped = b.spec;
    uncropped.preprocess.crop_foreground.reset();
    const SegmentationResult u = SegmentationPipeline(t.dir, uncropped, b.network).run(v);
    std::int64_t more = 0;
    for (std::int64_t i = 0; i < v.voxels(); ++i) more += r.labels.channel(0)[i] == 1.f && u.labels.channel(0)[i] == 0.f;
    if (kdiv == 1) {
      EXPECT_GT(more, 0);
    }
  }
}

// ---- multi-channel inputs, SimpleInferer, sigmoid outputs and a Lambdad (BraTS's form) -------

// Two images stacked by ConcatItemsd, z-scored per channel over non-zero voxels, a per-voxel
// network with three sigmoid outputs (TC, WT, ET), thresholded and merged into BraTS labels.
json brats_like_metadata() {
  return json::parse(R"js({
    "version": "1.0.0", "name": "Two-channel test bundle",
    "network_data_format": {
      "inputs": {"image": {"type": "image", "modality": "MR", "num_channels": 2, "channel_def": {"0": "T1c", "1": "FLAIR"}}},
      "outputs": {"pred": {"type": "image", "num_channels": 3,
                           "channel_def": {"0": "Tumor core", "1": "Whole tumor", "2": "Enhancing tumor"}}}}})js");
}

json brats_like_inference() {
  return json::parse(R"js({
    "image_key": "image",
    "preprocessing": {"_target_": "Compose", "transforms": [
      {"_target_": "LoadImaged", "keys": ["t1c", "flair"], "image_only": false},
      {"_target_": "EnsureChannelFirstd", "keys": ["t1c", "flair"]},
      {"_target_": "ConcatItemsd", "keys": ["t1c", "flair"], "name": "@image_key"},
      {"_target_": "NormalizeIntensityd", "keys": "@image_key", "nonzero": true, "channel_wise": true}]},
    "inferer": {"_target_": "SimpleInferer"},
    "postprocessing": {"_target_": "Compose", "transforms": [
      {"_target_": "Activationsd", "keys": "pred", "sigmoid": true},
      {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "@image_key",
       "nearest_interp": false, "to_tensor": true},
      {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
      {"_target_": "Lambdad", "keys": "pred",
       "func": "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"},
      {"_target_": "SaveImaged", "keys": "pred", "output_postfix": "seg", "resample": false}]}})js");
}

// pred = W image + b, per voxel (a 1x1x1 convolution).
constexpr float kW[3][2] = {{4, 0}, {0, 4}, {4, 4}};
constexpr float kB[3] = {0, 0, -4};

void write_two_channel_network(const fs::path& file) {
  test::OnnxBuilder b;
  b.input("image", {-1, 2, -1, -1, -1});
  b.constant("w", {3, 2, 1, 1, 1}, {kW[0][0], kW[0][1], kW[1][0], kW[1][1], kW[2][0], kW[2][1]});
  b.constant("b", {3}, {kB[0], kB[1], kB[2]});
  b.node("Conv", {"image", "w", "b"}, "pred");
  b.output("pred");
  b.save(file.string());
}

struct TwoChannelBundle {
  fs::path dir;
  explicit TwoChannelBundle(const json& inference) {
    dir = fs::temp_directory_path() / ("voxinfer_monai_two_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir / "models");
    fs::create_directories(dir / "configs");
    std::ofstream(dir / "configs" / "metadata.json") << brats_like_metadata().dump(2);
    std::ofstream(dir / "configs" / "inference.json") << inference.dump(2);
    write_two_channel_network(dir / "models" / "model.onnx");
  }
  ~TwoChannelBundle() { fs::remove_all(dir); }
};

std::vector<Volume> two_channels() {
  Geometry g;
  g.spacing = {1.0, 1.0, 1.5};
  std::vector<Volume> v{Volume(1, 5, 7, 9, g), Volume(1, 5, 7, 9, g)};
  for (std::int64_t i = 0; i < v[0].voxels(); ++i) {
    v[0].channel(0)[i] = i % 7 == 0 ? 0.f : static_cast<float>((i * 37) % 101);
    v[1].channel(0)[i] = i % 5 == 0 ? 0.f : static_cast<float>((i * 53) % 97) - 20.f;
  }
  return v;
}

TEST(MonaiBundle, ConcatItemsdStacksTheInputsInItsOrder) {
  const monai::Bundle b = monai::translate_bundle(brats_like_metadata().dump(), brats_like_inference().dump(), ".", "n.onnx");
  EXPECT_EQ(b.channel_keys, (std::vector<std::string>{"t1c", "flair"}));
  EXPECT_EQ(b.channel_names, (std::vector<std::string>{"T1c", "FLAIR"}));
  EXPECT_EQ(b.spec.input.channels, 2);
  EXPECT_TRUE(b.spec.inference.single_tile);
  EXPECT_EQ(b.spec.postprocess.discretize, Discretize::threshold);
  ASSERT_EQ(b.spec.postprocess.lambdas.size(), 1u);
  // Label values found by running the lambda over the thresholded channels.
  ASSERT_EQ(b.spec.labels.size(), 3u);
  EXPECT_EQ(b.spec.labels[0].value, 1);
  EXPECT_EQ(b.spec.labels[0].name, "Tumor core");
  EXPECT_EQ(b.spec.labels[1].value, 2);
  EXPECT_EQ(b.spec.labels[1].name, "Whole tumor");
  EXPECT_EQ(b.spec.labels[2].value, 4);
  EXPECT_EQ(b.spec.labels[2].name, "Enhancing tumor");
  EXPECT_TRUE(contains(monai::describe(b), "2 channel(s), MR: t1c, flair (one -i each, in this order)"));
  // A transform of only some of the stacked keys cannot be reproduced.
  json inf = brats_like_inference();
  inf["preprocessing"]["transforms"][1]["keys"] = "t1c";
  EXPECT_TRUE(contains(error_of([&] { monai::translate_bundle(brats_like_metadata().dump(), inf.dump(), ".", "n"); }),
                       "transforms only some of the channels that ConcatItemsd stacks"));
  // The stacked count must be the network's.
  inf = brats_like_inference();
  inf["preprocessing"]["transforms"][2]["keys"] = json::array({"t1c", "flair", "t2"});
  inf["preprocessing"]["transforms"][0]["keys"] = json::array({"t1c", "flair", "t2"});
  inf["preprocessing"]["transforms"][1]["keys"] = json::array({"t1c", "flair", "t2"});
  EXPECT_TRUE(contains(error_of([&] { monai::translate_bundle(brats_like_metadata().dump(), inf.dump(), ".", "n"); }),
                       "ConcatItemsd stacks 3 images but metadata.json's network_data_format gives the network 2"));
}

TEST(MonaiBundle, TwoChannelsSigmoidThresholdAndLambda) {
  TwoChannelBundle t(brats_like_inference());
  const monai::Bundle b = monai::load_bundle(t.dir);
  SegmentationPipeline p(t.dir, b.spec, b.network);
  const std::vector<Volume> in = two_channels();
  const SegmentationResult r = p.run(in);
  EXPECT_FALSE(r.masks.data.defined());  // one channel after the lambda: a plain label map
  // Expected: NormalizeIntensityd(nonzero, channel_wise) as preprocess_for_model does it (tested
  // against MONAI elsewhere), then the network, sigmoid >= 0.5 and the lambda per voxel.
  Volume stacked(2, 5, 7, 9, in[0].geometry);
  std::copy_n(in[0].channel(0), in[0].voxels(), stacked.channel(0));
  std::copy_n(in[1].channel(0), in[1].voxels(), stacked.channel(1));
  const Volume n = preprocess_for_model(stacked, b.spec);
  std::map<float, int> count;
  for (std::int64_t i = 0; i < n.voxels(); ++i) {
    bool on[3];
    for (int c = 0; c < 3; ++c) {
      const float l = kW[c][0] * n.channel(0)[i] + kW[c][1] * n.channel(1)[i] + kB[c];
      on[c] = 1.f / (1.f + std::exp(-l)) >= 0.5f;
    }
    const float want = on[2] ? 4.f : on[0] ? 1.f : on[1] ? 2.f : 0.f;
    ASSERT_EQ(r.labels.channel(0)[i], want) << "voxel " << i;
    ++count[want];
  }
  EXPECT_EQ(count.size(), 4u);  // every label occurs
  // One input: the channel count is checked (bad input).
  ErrorCode code{};
  EXPECT_TRUE(contains(error_of([&] { p.run(std::vector<Volume>{in[0]}); }, &code), "expects 2"));
  EXPECT_EQ(code, ErrorCode::invalid_input);
  // Without the lambda the three sigmoid channels overlap: kept as masks, labels 1..3.
  json inf = brats_like_inference();
  inf["postprocessing"]["transforms"].erase(3);
  TwoChannelBundle t2(inf);
  const monai::Bundle b2 = monai::load_bundle(t2.dir);
  ASSERT_EQ(b2.spec.labels.size(), 3u);
  EXPECT_EQ(b2.spec.labels[2].name, "Enhancing tumor");
  SegmentationOptions o;
  o.probabilities = true;
  const SegmentationResult r2 = SegmentationPipeline(t2.dir, b2.spec, b2.network, o).run(in);
  ASSERT_EQ(r2.masks.channels(), 3);
  ASSERT_EQ(r2.probabilities.channels(), 3);
  std::int64_t overlapping = 0;
  for (std::int64_t i = 0; i < n.voxels(); ++i) {
    int on = 0;
    for (int c = 0; c < 3; ++c) {
      const float l = kW[c][0] * n.channel(0)[i] + kW[c][1] * n.channel(1)[i] + kB[c];
      const float prob = 1.f / (1.f + std::exp(-l));
      ASSERT_NEAR(r2.probabilities.channel(c)[i], prob, 1e-6f);
      ASSERT_EQ(r2.masks.channel(c)[i], prob >= 0.5f ? 1.f : 0.f) << c << " " << i;
      on += prob >= 0.5f;
    }
    overlapping += on > 1;
  }
  EXPECT_GT(overlapping, 0);
}

// AsDiscreted before Invertd, as prostate_mri_anatomy and wholeBody_ct_segmentation have it:
// the argmax (and KeepLargestConnectedComponentd when it precedes Invertd) on the network's
// grid, then the label map resampled onto the input's grid, nearest neighbour for
// nearest_interp true, trilinear (blended label values) for false. Built here from whole volumes.
TEST(MonaiBundle, DiscreteLabelsInvertedFromTheModelGrid) {
  Geometry g;
  g.spacing = {3.0, 1.0, 4.0};  // y: coarser on the model grid, so the inversion interpolates
  g.origin = {10, -20, 5};
  Volume v(1, 7, 13, 19, g);
  for (std::int64_t z = 0; z < 7; ++z)
    for (std::int64_t y = 0; y < 13; ++y)
      for (std::int64_t x = 0; x < 19; ++x) {
        const bool slab = x + y >= 17, blob = x >= 2 && x < 4 && y >= 2 && y < 4 && z >= 2 && z < 4;
        v.channel(0)[(z * 13 + y) * 19 + x] = slab || blob ? 400.f : -300.f;
      }
  for (const bool nearest : {true, false}) {
    TempBundle t;
    write_network(t.dir / "models" / "model.onnx");
    json inf = tiny_inference();
    auto& post = inf["postprocessing"]["transforms"];
    if (nearest) {  // wholeBody_ct_segmentation: softmax, argmax, Invertd(nearest_interp true)
      post = json::array({post[0], {{"_target_", "AsDiscreted"}, {"keys", "pred"}, {"argmax", true}}, post[1], post[4]});
      post[2]["nearest_interp"] = true;
    } else {  // prostate_mri_anatomy: argmax, largest component, Invertd(nearest_interp false)
      post = json::array({{{"_target_", "AsDiscreted"}, {"keys", "pred"}, {"argmax", true}},
                          {{"_target_", "KeepLargestConnectedComponentd"}, {"keys", "pred"}, {"applied_labels", {1}}},
                          post[1], post[4]});
    }
    std::ofstream(t.dir / "configs" / "inference.json") << inf.dump(2);
    const monai::Bundle b = monai::load_bundle(t.dir);
    EXPECT_TRUE(b.spec.postprocess.labels_on_model_grid);
    EXPECT_EQ(b.spec.postprocess.invert_nearest, nearest);
    EXPECT_EQ(b.spec.postprocess.components_on_model_grid, !nearest);
    const SegmentationResult r = SegmentationPipeline(t.dir, b.spec, b.network).run(v);

    const Volume full = preprocess_for_model(v, b.spec);
    graph::Session session = graph::Session::from_file(b.network.string());
    const Tensor logits =
        sliding_window(to_model_tensor(full, b.spec.axes), SlidingWindowOptions::from_spec(b.spec.inference),
                       [&](const Tensor& batch) { return session.run(std::vector<Tensor>{batch}).at(0); });
    Volume labels = volume_from_model_tensor(argmax_channels(logits), b.spec.axes, full.geometry);
    std::int64_t before = 0, after = 0;
    for (std::int64_t i = 0; i < labels.voxels(); ++i) before += labels.channel(0)[i] == 1.f;
    if (!nearest) postprocess_labels(labels, b.spec.postprocess);
    for (std::int64_t i = 0; i < labels.voxels(); ++i) after += labels.channel(0)[i] == 1.f;
    if (!nearest) {
      EXPECT_LT(after, before);  // the blob went
    }
    const Volume want = resample_to_grid(labels, v.geometry, {v.nx(), v.ny(), v.nz()},
                                         nearest ? Interpolation::nearest : Interpolation::linear);
    std::int64_t fractional = 0;
    for (std::int64_t i = 0; i < v.voxels(); ++i) {
      ASSERT_EQ(r.labels.channel(0)[i], want.channel(0)[i]) << (nearest ? "nearest" : "linear") << " voxel " << i;
      fractional += r.labels.channel(0)[i] != std::floor(r.labels.channel(0)[i]);
    }
    // MONAI's bilinear inversion blends the label values; nearest keeps them whole.
    if (nearest) {
      EXPECT_EQ(fractional, 0);
    } else {
      EXPECT_GT(fractional, 0);
    }
  }
}

// SpatialPadd / DivisiblePadd (MONAI's compute_pad_width: symmetric puts the odd voxel after,
// "end" pads after only), inverted by cropping the prediction back: the labels stay on the
// image's edge, and the network saw the padded grid.
TEST(MonaiBundle, PaddingIsInvertedByCroppingBack) {
  Geometry g;
  g.spacing = {3.0, 2.5, 4.0};
  g.origin = {10, -20, 5};
  Volume v(1, 7, 13, 19, g);
  for (std::int64_t z = 0; z < 7; ++z)
    for (std::int64_t y = 0; y < 13; ++y)
      for (std::int64_t x = 0; x < 19; ++x) v.channel(0)[(z * 13 + y) * 19 + x] = x + 2 * z >= 17 ? 400.f : -300.f;
  const json pads[] = {{{"_target_", "DivisiblePadd"}, {"keys", "image"}, {"k", 16}},
                       {{"_target_", "SpatialPadd"}, {"keys", "image"}, {"spatial_size", {48, -1, 20}}, {"method", "end"},
                        {"mode", "constant"}, {"value", 0.25}}};
  const Size3 grids[] = {{48, 32, 16}, {48, 21, 20}};  // the model grid is 37 x 21 x 13
  std::vector<float> reference;
  for (int c = 0; c < 3; ++c) {
    TempBundle t;
    write_network(t.dir / "models" / "model.onnx");
    json inf = tiny_inference();
    if (c < 2) {
      auto& pre = inf["preprocessing"]["transforms"];
      pre.insert(pre.begin() + 6, pads[c]);
      inf["postprocessing"]["transforms"][2] = "%preprocessing#transforms#7";  // the macro's EnsureTyped moved
    }
    std::ofstream(t.dir / "configs" / "inference.json") << inf.dump(2);
    const monai::Bundle b = monai::load_bundle(t.dir);
    const SegmentationResult r = SegmentationPipeline(t.dir, b.spec, b.network).run(v);
    if (c == 2) {
      EXPECT_EQ(r.model_grid, (Size3{37, 21, 13}));
      for (std::int64_t i = 0; i < v.voxels(); ++i) EXPECT_EQ(r.labels.channel(0)[i], reference[static_cast<std::size_t>(i)]) << i;
      continue;
    }
    ASSERT_TRUE(b.spec.preprocess.pad);
    EXPECT_EQ(r.model_grid, grids[c]);
    if (c == 0) reference.assign(r.labels.channel(0), r.labels.channel(0) + v.voxels());
    else
      for (std::int64_t i = 0; i < v.voxels(); ++i) ASSERT_EQ(r.labels.channel(0)[i], reference[static_cast<std::size_t>(i)]) << i;
    std::int64_t ones = 0;
    for (std::int64_t i = 0; i < v.voxels(); ++i) ones += r.labels.channel(0)[i] == 1.f;
    EXPECT_GT(ones, 0);
    EXPECT_LT(ones, v.voxels());
  }
  // A transform after the padding cannot be reproduced (voxinfer pads last).
  json inf = tiny_inference();
  auto& pre = inf["preprocessing"]["transforms"];
  pre.insert(pre.begin() + 5, pads[0]);
  EXPECT_TRUE(contains(error_of([&] { translate(inf); }), "ScaleIntensityRanged after SpatialPadd/DivisiblePadd is not supported"));
}

// AsDiscreted(argmax, to_onehot) feeding a Lambdad, and KeepLargestConnectedComponentd over all
// foreground labels together (independent false) with 6-connectivity (connectivity 1).
TEST(MonaiBundle, OneHotLambdaAndJointLargestComponent) {
  json inf = tiny_inference();
  auto& post = inf["postprocessing"]["transforms"];
  post[3] = {{"_target_", "AsDiscreted"}, {"keys", "pred"}, {"argmax", true}, {"to_onehot", 2}};
  post.insert(post.begin() + 4, json{{"_target_", "Lambdad"}, {"keys", "pred"}, {"func", "$lambda x: x[[1]] * 3"}});
  post.insert(post.begin() + 5, json{{"_target_", "KeepLargestConnectedComponentd"}, {"keys", "pred"},
                                     {"independent", false}, {"connectivity", 1}});
  const monai::Bundle b = translate(inf);
  const PostprocessSpec& p = b.spec.postprocess;
  EXPECT_EQ(p.discretize, Discretize::argmax);
  ASSERT_EQ(p.lambdas.size(), 2u);  // the one-hot expansion, then the bundle's lambda
  EXPECT_EQ(p.lambdas[0], "torch.cat([x == 0, x == 1], dim=0)");
  EXPECT_TRUE(p.keep_largest_foreground);
  EXPECT_EQ(p.connectivity, 6);
  ASSERT_EQ(b.spec.labels.size(), 1u);  // argmax 1 -> one-hot [0, 1] -> 3, named after channel 1
  EXPECT_EQ(b.spec.labels[0].value, 3);
  EXPECT_EQ(b.spec.labels[0].name, "bright");
  const VoxelRule rule(p, 2, {3});
  std::vector<float> scratch(rule.scratch_size());
  const float bright[] = {-1.f, 2.f}, dark[] = {2.f, -1.f};
  EXPECT_EQ(rule.label(bright, false, scratch.data()), 3.f);
  EXPECT_EQ(rule.label(dark, false, scratch.data()), 0.f);
  // Some of the labels together is not MONAI's union of the applied labels with the rest kept.
  post[5]["applied_labels"] = json::array({1, 2});
  EXPECT_TRUE(contains(error_of([&] { translate(inf); }), "independent false is supported for all foreground labels"));
}

}  // namespace
}  // namespace voxinfer
