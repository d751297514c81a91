// Bad models and bad inputs give a voxinfer::Error with the right code and a message
// naming the file, node, op or input; never a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "graph_builder.h"
#include "test_util.h"
#include "voxinfer/graph/onnx_import.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

void expect_error(const std::function<void()>& f, ErrorCode code, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no error (expected one mentioning '" << fragment << "')";
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(code)) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

graph::Graph two_node_graph(const char* op2) {
  graph::Graph g;
  graph::ValueInfo in;
  in.name = "x";
  in.has_shape = true;
  in.dims = {{-1, "N"}, {2, ""}, {-1, "D"}};
  g.inputs.push_back(in);
  graph::Node a;
  a.op_type = "Relu";
  a.name = "first";
  a.inputs = {"x"};
  a.outputs = {"h"};
  graph::Node b;
  b.op_type = op2;
  b.name = "second";
  b.inputs = {"h"};
  b.outputs = {"y"};
  g.nodes = {a, b};
  graph::ValueInfo out;
  out.name = "y";
  g.outputs.push_back(out);
  return g;
}

TEST(Errors, UnknownOpIsNamedWithItsNode) {
  expect_error([] { graph::Session s(two_node_graph("FancyNewOp")); }, ErrorCode::unsupported, "node 'second' (FancyNewOp)");
}

TEST(Errors, CycleIsReported) {
  graph::Graph g = two_node_graph("Relu");
  g.nodes[0].inputs = {"y"};  // first <- second <- first
  expect_error([&] { g.toposort(); }, ErrorCode::invalid_model, "cycle");
}

TEST(Errors, UndefinedInputIsReported) {
  graph::Graph g = two_node_graph("Relu");
  g.nodes[1].inputs = {"nowhere"};
  expect_error([&] { g.toposort(); }, ErrorCode::invalid_model, "'nowhere'");
}

TEST(Errors, InputRankDtypeChannelsNameAndZeroSize) {
  graph::Session s(two_node_graph("Relu"));
  expect_error([&] { s.run(std::vector<Tensor>{test::random_tensor(Shape{1, 2}, 1)}); }, ErrorCode::invalid_input, "rank 3");
  expect_error([&] { s.run(std::vector<Tensor>{Tensor(Shape{1, 2, 4}, DType::i32)}); }, ErrorCode::invalid_input, "must be f32");
  expect_error([&] { s.run(std::vector<Tensor>{test::random_tensor(Shape{1, 3, 4}, 1)}); }, ErrorCode::invalid_input, "channel count");
  expect_error([&] { s.run(std::vector<Tensor>{test::random_tensor(Shape{1, 2, 0}, 1)}); }, ErrorCode::invalid_input, "0-sized");
  expect_error([&] { s.run(std::vector<Tensor>{}); }, ErrorCode::invalid_input, "takes 1 input");
  std::map<std::string, Tensor> named{{"wrong", test::random_tensor(Shape{1, 2, 4}, 1)}};
  expect_error([&] { s.run(named); }, ErrorCode::invalid_input, "missing model input 'x'");
}

TEST(Errors, ConcatDimensionMismatch) {
  expect_error([] {
    test::OneOp("Concat").input(test::random_tensor(Shape{1, 2, 3}, 1)).input(test::random_tensor(Shape{1, 2, 4}, 2)).attr("axis", test::i(1)).run1();
  }, ErrorCode::invalid_input, "dimension mismatch");
}

TEST(Errors, ConvChannelMismatchNamesTheNode) {
  expect_error([] {
    test::OneOp("Conv").input(test::random_tensor(Shape{1, 3, 5, 5, 5}, 1)).constant(test::random_tensor(Shape{4, 2, 3, 3, 3}, 2)).run1();
  }, ErrorCode::invalid_input, "Conv_under_test");
}

class BadFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("voxinfer_err_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(BadFiles, NotOnnxTruncatedMissing) {
  const auto text = dir_ / "notes.onnx";
  std::ofstream(text) << "this is not a model";
  expect_error([&] { graph::import_onnx(text.string()); }, ErrorCode::invalid_model, "notes.onnx");
  expect_error([&] { graph::import_onnx((dir_ / "missing.onnx").string()); }, ErrorCode::invalid_input, "no such model file");
  const auto empty = dir_ / "empty.onnx";
  std::ofstream(empty).close();
  expect_error([&] { graph::import_onnx(empty.string()); }, ErrorCode::invalid_model, "empty");
  const auto tiny = test::shared_dir() / "models/tiny/model.onnx";
  if (!fs::exists(tiny)) GTEST_SKIP() << "shared data not found: " << tiny.string();
  std::ifstream in(tiny, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto cut = dir_ / "truncated.onnx";
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error([&] { graph::import_onnx(cut.string()); }, ErrorCode::invalid_model, "truncated.onnx");
}

TEST_F(BadFiles, TfjsWithMissingShard) {
  const auto j = dir_ / "model.json";
  std::ofstream(j) << R"({"modelTopology": {"model_config": {"class_name": "Sequential", "config": {"name": "m", "layers": []}}},
                         "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": [{"name": "a/kernel", "shape": [2], "dtype": "float32"}]}]})";
  expect_error([&] { graph::load_model(j.string()); }, ErrorCode::invalid_model, "weight shard");
  std::ofstream(j) << "{ not json";
  expect_error([&] { graph::load_model(j.string()); }, ErrorCode::invalid_model, "not valid JSON");
}

}  // namespace
}  // namespace voxinfer
