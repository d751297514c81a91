#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>

#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/pipeline_spec.h"

namespace voxinfer {
namespace {

using json = nlohmann::json;

// The DESIGN.md example package.
json example() {
  return json::parse(R"({
    "task": "segmentation",
    "model": "model.onnx",
    "axes": "xyz",
    "input": {"channels": 1, "modality": "CT"},
    "preprocess": {
      "orientation": "RAS",
      "spacing": [1.5, 1.5, 2.0],
      "intensity": [
        {"op": "clip", "min": -57, "max": 164},
        {"op": "scale", "from": [-57, 164], "to": [0, 1]}
      ]
    },
    "inference": {"roi_size": [96, 96, 96], "overlap": 0.5, "blend": "gaussian",
                  "sigma_scale": 0.125, "mirror_axes": [], "batch": 1},
    "postprocess": {"activation": "softmax", "keep_largest_component": [1]},
    "labels": [{"value": 1, "name": "spleen", "color": [220, 40, 40],
                "code": {"scheme": "SCT", "value": "78961009", "meaning": "Spleen"}}]
  })");
}

json classification() {
  return json::parse(R"({
    "task": "classification", "model": "model.onnx", "axes": "zyx",
    "input": {"channels": 1, "tabular": {"length": 2, "names": ["age", "sex"]}},
    "preprocess": {"resize": [64, 64, 32], "intensity": [{"op": "zscore", "nonzero": true}]},
    "postprocess": {"activation": "sigmoid"},
    "classes": ["normal", "tumour"]
  })");
}

// Parses `j` and returns the error message, failing the test if it parses.
std::string error_of(const json& j) {
  try {
    (void)parse_pipeline_spec(j.dump());
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model);
    return e.what();
  }
  ADD_FAILURE() << "parsed without error: " << j.dump();
  return {};
}

// The message starts with "pipeline.json: <path>: ".
void expect_names(const json& j, const std::string& path) {
  const std::string msg = error_of(j);
  EXPECT_EQ(msg.rfind("pipeline.json: " + path + ": ", 0), 0u) << msg;
}

TEST(PipelineSpec, ParsesTheDesignExample) {
  const PipelineSpec s = parse_pipeline_spec(example().dump());
  EXPECT_EQ(s.task, Task::segmentation);
  EXPECT_EQ(s.model, "model.onnx");
  EXPECT_EQ(s.axes, AxisOrder::xyz);
  EXPECT_EQ(s.input.channels, 1);
  ASSERT_EQ(s.input.modality.size(), 1u);
  EXPECT_EQ(s.input.modality[0], "CT");
  EXPECT_EQ(s.preprocess.orientation.value(), "RAS");
  EXPECT_EQ(s.preprocess.spacing.value(), (std::array<double, 3>{1.5, 1.5, 2.0}));
  ASSERT_EQ(s.preprocess.intensity.size(), 2u);
  EXPECT_EQ(s.preprocess.intensity[0].kind, IntensityOp::Kind::clip);
  EXPECT_EQ(s.preprocess.intensity[0].min, -57);
  EXPECT_EQ(s.preprocess.intensity[0].max, 164);
  EXPECT_EQ(s.preprocess.intensity[1].kind, IntensityOp::Kind::scale);
  EXPECT_EQ(s.preprocess.intensity[1].from, (std::array<double, 2>{-57, 164}));
  EXPECT_EQ(s.preprocess.intensity[1].to, (std::array<double, 2>{0, 1}));
  EXPECT_EQ(s.inference.roi_size, (std::array<std::int64_t, 3>{96, 96, 96}));
  EXPECT_EQ(s.inference.overlap, (std::array<double, 3>{0.5, 0.5, 0.5}));
  EXPECT_EQ(s.inference.blend, BlendMode::gaussian);
  EXPECT_EQ(s.inference.sigma_scale, 0.125);
  EXPECT_TRUE(s.inference.mirror_axes.empty());
  EXPECT_EQ(s.inference.batch, 1);
  EXPECT_EQ(s.inference.style, WindowStyle::nnunet);
  EXPECT_EQ(s.postprocess.activation, Activation::softmax);
  EXPECT_EQ(s.postprocess.keep_largest_component, std::vector<int>{1});
  EXPECT_EQ(s.postprocess.connectivity, 26);
  ASSERT_EQ(s.labels.size(), 1u);
  EXPECT_EQ(s.labels[0].value, 1);
  EXPECT_EQ(s.labels[0].name, "spleen");
  EXPECT_EQ(s.labels[0].color.value(), (std::array<int, 3>{220, 40, 40}));
  EXPECT_EQ(s.labels[0].code->scheme, "SCT");
  EXPECT_EQ(s.labels[0].code->value, "78961009");
  EXPECT_EQ(s.labels[0].code->meaning, "Spleen");
  EXPECT_EQ(s.find_label(1), &s.labels[0]);
  EXPECT_EQ(s.find_label(2), nullptr);
}

TEST(PipelineSpec, ParsesClassification) {
  const PipelineSpec s = parse_pipeline_spec(classification().dump());
  EXPECT_EQ(s.task, Task::classification);
  EXPECT_EQ(s.axes, AxisOrder::zyx);
  EXPECT_EQ(s.classes, (std::vector<std::string>{"normal", "tumour"}));
  EXPECT_EQ(s.preprocess.resize.value(), (std::array<std::int64_t, 3>{64, 64, 32}));
  ASSERT_EQ(s.preprocess.intensity.size(), 1u);
  EXPECT_FALSE(s.preprocess.intensity[0].mean.has_value());
  EXPECT_TRUE(s.preprocess.intensity[0].nonzero);
  EXPECT_EQ(s.postprocess.activation, Activation::sigmoid);
  EXPECT_EQ(s.input.tabular_length, 2);
  EXPECT_EQ(s.input.tabular_names, (std::vector<std::string>{"age", "sex"}));
}

TEST(PipelineSpec, OptionalFieldsAndDefaults) {
  json j = example();
  j["inference"] = {{"roi_size", {64, 32, 16}}, {"overlap", {0.25, 0.5, 0}}, {"style", "monai"},
                    {"mirror_axes", {2, 0}}, {"batch", 4}, {"blend", "constant"}, {"average", "probabilities"}};
  j["preprocess"]["intensity"] = json::array({{{"op", "zscore"}, {"mean", 10}, {"std", 2}},
                                              {{"op", "percentile_clip"}, {"lo", 0.5}, {"hi", 99.5}},
                                              {{"op", "minmax"}, {"channel_wise", false}}});
  j["input"] = {{"channels", 2}, {"modality", {"T1", "T2"}}};
  const PipelineSpec s = parse_pipeline_spec(j.dump());
  EXPECT_EQ(s.inference.overlap, (std::array<double, 3>{0.25, 0.5, 0}));
  EXPECT_EQ(s.inference.style, WindowStyle::monai);
  EXPECT_EQ(s.inference.mirror_axes, (std::vector<int>{2, 0}));
  EXPECT_EQ(s.inference.batch, 4);
  EXPECT_EQ(s.inference.blend, BlendMode::constant);
  EXPECT_EQ(s.inference.average, AverageSpace::probabilities);
  EXPECT_EQ(parse_pipeline_spec(example().dump()).inference.average, AverageSpace::logits);
  EXPECT_EQ(s.inference.sigma_scale, 0.125);
  EXPECT_EQ(s.inference.average, AverageSpace::probabilities);
  EXPECT_EQ(parse_pipeline_spec(example().dump()).inference.average, AverageSpace::logits);
  EXPECT_EQ(s.preprocess.intensity[0].mean.value(), 10);
  EXPECT_EQ(s.preprocess.intensity[0].std.value(), 2);
  EXPECT_EQ(s.preprocess.intensity[1].lo, 0.5);
  EXPECT_EQ(s.preprocess.intensity[1].hi, 99.5);
  EXPECT_FALSE(s.preprocess.intensity[2].channel_wise);
  EXPECT_EQ(s.input.modality, (std::vector<std::string>{"T1", "T2"}));
  // model_to_xyz reverses zyx triples only.
  EXPECT_EQ(model_to_xyz(std::array<int, 3>{1, 2, 3}, AxisOrder::zyx), (std::array<int, 3>{3, 2, 1}));
  EXPECT_EQ(model_to_xyz(std::array<int, 3>{1, 2, 3}, AxisOrder::xyz), (std::array<int, 3>{1, 2, 3}));
}

TEST(PipelineSpec, ErrorsNameTheField) {
  json j;
  j = example(); j["extra"] = 1;                                  expect_names(j, "extra");
  j = example(); j["preprocess"]["spacingg"] = {1, 1, 1};         expect_names(j, "preprocess.spacingg");
  j = example(); j["labels"][0]["colour"] = {1, 2, 3};            expect_names(j, "labels[0].colour");
  j = example(); j["task"] = "detection";                         expect_names(j, "task");
  j = example(); j.erase("model");                                expect_names(j, "model");
  j = example(); j["model"] = 3;                                  expect_names(j, "model");
  j = example(); j["axes"] = "yxz";                               expect_names(j, "axes");
  j = example(); j["input"]["channels"] = 0;                      expect_names(j, "input.channels");
  j = example(); j["input"]["channels"] = "1";                    expect_names(j, "input.channels");
  j = example(); j["input"]["modality"] = {"CT", "MR"};           expect_names(j, "input.modality");
  j = example(); j["preprocess"]["orientation"] = "RAR";          expect_names(j, "preprocess.orientation");
  j = example(); j["preprocess"]["spacing"] = {1.5, -1, 2};       expect_names(j, "preprocess.spacing[1]");
  j = example(); j["preprocess"]["spacing"] = {1.5, 2};           expect_names(j, "preprocess.spacing");
  j = example(); j["preprocess"]["intensity"][0]["op"] = "gamma"; expect_names(j, "preprocess.intensity[0].op");
  j = example(); j["preprocess"]["intensity"][1]["from"] = "x";   expect_names(j, "preprocess.intensity[1].from");
  j = example(); j["preprocess"]["intensity"][0]["max"] = -100;   expect_names(j, "preprocess.intensity[0].max");
  j = example(); j["preprocess"]["intensity"][0]["mean"] = 1;     expect_names(j, "preprocess.intensity[0].mean");
  j = example(); j["preprocess"]["intensity"] = json::array({{{"op", "zscore"}, {"mean", 1}}});
  expect_names(j, "preprocess.intensity[0].std");
  j = example(); j["preprocess"]["intensity"] = json::array({{{"op", "zscore"}, {"mean", 1}, {"std", 0}}});
  expect_names(j, "preprocess.intensity[0].std");
  j = example(); j["preprocess"]["intensity"] = json::array({{{"op", "percentile_clip"}, {"lo", -1}, {"hi", 99}}});
  expect_names(j, "preprocess.intensity[0].lo");
  j = example(); j["preprocess"]["resize"] = {1, 2, 3};           expect_names(j, "preprocess.resize");
  j = example(); j["inference"]["overlap"] = 1.0;                 expect_names(j, "inference.overlap");
  j = example(); j["inference"]["overlap"] = -0.1;                expect_names(j, "inference.overlap");
  j = example(); j["inference"]["overlap"] = {0.5, 0.5, 1.5};     expect_names(j, "inference.overlap[2]");
  j = example(); j["inference"]["roi_size"] = {96, 0, 96};        expect_names(j, "inference.roi_size[1]");
  j = example(); j["inference"]["roi_size"] = {96, 96.5, 96};     expect_names(j, "inference.roi_size[1]");
  j = example(); j["inference"].erase("roi_size");                expect_names(j, "inference.roi_size");
  j = example(); j.erase("inference");                            expect_names(j, "inference");
  j = example(); j["inference"]["blend"] = "linear";              expect_names(j, "inference.blend");
  j = example(); j["inference"]["sigma_scale"] = 0;               expect_names(j, "inference.sigma_scale");
  j = example(); j["inference"]["mirror_axes"] = {0, 3};          expect_names(j, "inference.mirror_axes[1]");
  j = example(); j["inference"]["mirror_axes"] = {1, 1};          expect_names(j, "inference.mirror_axes[1]");
  j = example(); j["inference"]["batch"] = 0;                     expect_names(j, "inference.batch");
  j = example(); j["inference"]["style"] = "tf";                  expect_names(j, "inference.style");
  j = example(); j["inference"]["average"] = "votes";             expect_names(j, "inference.average");
  j = example(); j["inference"]["average"] = "probabilities"; j["postprocess"]["activation"] = "none";
  expect_names(j, "inference.average");
  j = example(); j["postprocess"]["activation"] = "relu";         expect_names(j, "postprocess.activation");
  j = example(); j["postprocess"]["keep_largest_component"] = {2};
  expect_names(j, "postprocess.keep_largest_component[0]");
  j = example(); j["postprocess"]["remove_small_mm3"] = -5;       expect_names(j, "postprocess.remove_small_mm3");
  j = example(); j["postprocess"]["connectivity"] = 18;           expect_names(j, "postprocess.connectivity");
  j = example(); j["labels"].push_back({{"value", 1}, {"name", "again"}});
  expect_names(j, "labels[1].value");
  j = example(); j["labels"][0]["value"] = 0;                     expect_names(j, "labels[0].value");
  j = example(); j["labels"][0]["color"] = {1, 2, 300};           expect_names(j, "labels[0].color[2]");
  j = example(); j["labels"][0]["code"].erase("meaning");         expect_names(j, "labels[0].code.meaning");
  j = example(); j["labels"] = json::array();                     expect_names(j, "labels");
  j = example(); j["classes"] = {"a"};                            expect_names(j, "classes");
  j = classification(); j["classes"] = {"a", "a"};                expect_names(j, "classes[1]");
  j = classification(); j["inference"] = {{"roi_size", {1, 1, 1}}};
  expect_names(j, "inference");
  j = classification(); j["preprocess"]["crop"] = {{"size", {8, 8, 8}}};
  expect_names(j, "preprocess.crop");
  j = classification(); j["input"]["tabular"]["names"] = {"age"}; expect_names(j, "input.tabular.names");
  // Not JSON at all, or not an object.
  EXPECT_NE(error_of(json("text")).find("pipeline.json"), std::string::npos);
  try {
    (void)parse_pipeline_spec("{\"task\": ");
    ADD_FAILURE() << "truncated JSON parsed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model);
  }
}

TEST(PipelineSpec, UnknownFieldMessageListsKnownFields) {
  json j = example();
  j["inference"]["overlapp"] = 0.5;
  const std::string msg = error_of(j);
  EXPECT_NE(msg.find("unknown field"), std::string::npos) << msg;
  EXPECT_NE(msg.find("overlap"), std::string::npos) << msg;
}

TEST(PipelineSpec, LoadMissingFileNamesIt) {
  try {
    (void)load_pipeline_spec("no/such/pipeline.json");
    ADD_FAILURE() << "loaded a missing file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model);
    EXPECT_NE(std::string(e.what()).find("no/such/pipeline.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace voxinfer
