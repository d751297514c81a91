// Hostile models: operator attributes that break the ONNX/Keras specification (stride or
// dilation 0, short or long per-axis arrays, negative pads, groups that do not divide the
// channels), normalisation parameters shorter than the channels and initializers whose
// element count overflows are refused at load or plan time with an invalid-model error
// naming the node, never a division by zero or a read past a buffer.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "graph_builder.h"
#include "test_util.h"
#include "voxinfer/graph/onnx_import.h"
#include "voxinfer/graph/session.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;
using test::ints;

// Runs f and checks that it throws a voxinfer::Error of `code` whose message holds every fragment.
void expect_error(const std::function<void()>& f, ErrorCode code, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "no error (expected one mentioning '" << *fragments.begin() << "')";
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(code)) << e.what();
    for (const auto& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << "'" << f << "' not in: " << e.what();
  }
}

test::OneOp conv(const char* op = "Conv") {
  test::OneOp o(op);
  if (std::string(op) == "Conv")
    o.input(test::random_tensor(Shape{1, 2, 5, 5, 5}, 1)).constant(test::random_tensor(Shape{4, 2, 3, 3, 3}, 2));
  else
    o.input(test::random_tensor(Shape{1, 2, 4, 4, 4}, 1)).constant(test::random_tensor(Shape{2, 3, 2, 2, 2}, 2));
  return o;
}

void expect_model_error(test::OneOp o, std::initializer_list<std::string> fragments) {
  expect_error([&] { o.run1(); }, ErrorCode::invalid_model, fragments);
}

TEST(HostileAttributes, StrideZeroIsRefusedNamingTheNode) {
  expect_model_error(conv().attr("strides", ints({1, 0, 1})), {"Conv_under_test", "'strides'", "value 0"});
  expect_model_error(conv("ConvTranspose").attr("strides", ints({0, 1, 1})), {"ConvTranspose_under_test", "'strides'"});
  for (const char* pool : {"MaxPool", "AveragePool"}) {
    test::OneOp o(pool);
    o.input(test::random_tensor(Shape{1, 1, 4, 4, 4}, 1))
        .attr("kernel_shape", ints({2, 2, 2}))
        .attr("strides", ints({2, 0, 2}));
    expect_model_error(o, {std::string(pool) + "_under_test", "'strides'"});
    // With SAME padding the stride divides the input size first.
    o.attr("auto_pad", test::s("SAME_UPPER"));
    expect_model_error(o, {"'strides'"});
  }
}

TEST(HostileAttributes, PerAxisArraysMustMatchTheSpatialRank) {
  expect_model_error(conv().attr("strides", ints({1})), {"Conv_under_test", "'strides' has 1 values, expected 3"});
  expect_model_error(conv().attr("strides", ints({1, 1, 1, 1})), {"'strides' has 4 values"});
  expect_model_error(conv().attr("kernel_shape", ints({3})), {"'kernel_shape' has 1 values"});
  expect_model_error(conv().attr("dilations", ints({1, 1})), {"'dilations'"});
  expect_model_error(conv().attr("pads", ints({0, 0, 0})), {"'pads' has 3 values, expected 6"});
  expect_model_error(conv("ConvTranspose").attr("output_padding", ints({0})), {"'output_padding' has 1 values"});
  expect_model_error(conv("ConvTranspose").attr("output_shape", ints({8, 8})), {"'output_shape' has 2 values"});
  test::OneOp pool("MaxPool");
  pool.input(test::random_tensor(Shape{1, 1, 4, 4, 4}, 1)).attr("kernel_shape", ints({2, 2}));
  expect_model_error(pool, {"MaxPool_under_test", "'kernel_shape' has 2 values"});
  pool.attr("kernel_shape", ints({2, 2, 2})).attr("pads", ints({0}));
  expect_model_error(pool, {"'pads'"});
}

TEST(HostileAttributes, SpecInvalidValuesAreRefused) {
  expect_model_error(conv().attr("dilations", ints({1, 0, 1})), {"Conv_under_test", "'dilations'"});
  expect_model_error(conv().attr("pads", ints({0, 0, 0, 0, 0, -1})), {"'pads' value -1"});
  expect_model_error(conv().attr("strides", ints({1, 1, std::int64_t{1} << 40})), {"'strides'"});
  expect_model_error(conv().attr("auto_pad", test::s("SAME_MIDDLE")), {"auto_pad"});
  // A kernel of size 0, in the weights or in kernel_shape.
  {
    test::OneOp o("Conv");
    o.input(test::random_tensor(Shape{1, 2, 5, 5, 5}, 1)).constant(Tensor(Shape{4, 2, 0, 3, 3}, DType::f32));
    expect_model_error(o, {"Conv_under_test", "kernel"});
  }
  expect_model_error(conv().attr("kernel_shape", ints({0, 3, 3})), {"'kernel_shape'"});
  // Groups that do not divide the channels.
  {
    test::OneOp o("Conv");
    o.input(test::random_tensor(Shape{1, 6, 5, 5, 5}, 1))
        .constant(test::random_tensor(Shape{4, 2, 3, 3, 3}, 2))
        .attr("group", test::i(3));
    expect_model_error(o, {"Conv_under_test", "group"});
  }
  {
    test::OneOp o("ConvTranspose");
    o.input(test::random_tensor(Shape{1, 3, 4, 4, 4}, 1))
        .constant(test::random_tensor(Shape{3, 1, 2, 2, 2}, 2))
        .attr("group", test::i(2));
    expect_model_error(o, {"ConvTranspose_under_test", "group 2"});
  }
  expect_model_error(conv("ConvTranspose").attr("group", test::i(5)), {"group 5"});
  // output_padding must stay below the stride (or the dilation).
  expect_model_error(conv("ConvTranspose").attr("strides", ints({2, 2, 2})).attr("output_padding", ints({0, 2, 0})),
                     {"'output_padding'"});
  // Pooling: pads as large as the window would average nothing.
  test::OneOp pool("AveragePool");
  pool.input(test::random_tensor(Shape{1, 1, 4, 4, 4}, 1))
      .attr("kernel_shape", ints({2, 2, 2}))
      .attr("pads", ints({2, 0, 0, 0, 0, 0}));
  expect_model_error(pool, {"AveragePool_under_test", "'pads'"});
  pool.attr("pads", ints({0, 0, 0, 0, 0, -1}));
  expect_model_error(pool, {"'pads' value -1"});
  pool.attr("pads", ints({0, 0, 0, 0, 0, 0})).attr("dilations", ints({0, 1, 1}));
  expect_model_error(pool, {"'dilations'"});
}

TEST(HostileAttributes, ValidAttributesStillRun) {
  EXPECT_EQ(conv().attr("strides", ints({2, 2, 2})).attr("pads", ints({1, 1, 1, 1, 1, 1})).run1().shape(),
            Shape({1, 4, 3, 3, 3}));
  EXPECT_EQ(
      conv("ConvTranspose").attr("strides", ints({2, 2, 2})).attr("output_padding", ints({1, 1, 1})).run1().shape(),
      Shape({1, 3, 9, 9, 9}));
  test::OneOp pool("MaxPool");
  pool.input(test::random_tensor(Shape{1, 1, 4, 4, 4}, 1))
      .attr("kernel_shape", ints({2, 2, 2}))
      .attr("strides", ints({2, 2, 2}));
  EXPECT_EQ(pool.run1().shape(), Shape({1, 1, 2, 2, 2}));
}

TEST(HostileNormalization, ScaleOrBiasShorterThanTheChannelsIsRefused) {
  const Tensor x = test::random_tensor(Shape{1, 4, 3, 3, 3}, 1);
  auto norm = [&](const char* op, std::int64_t scale, std::int64_t bias, std::int64_t opset = 17) {
    test::OneOp o(op, opset);
    o.input(x).constant(test::random_tensor(Shape{scale}, 2)).constant(test::random_tensor(Shape{bias}, 3));
    return o;
  };
  expect_model_error(norm("InstanceNormalization", 2, 4), {"InstanceNormalization_under_test", "scale has 2 values"});
  expect_model_error(norm("InstanceNormalization", 4, 1), {"bias has 1 values"});
  EXPECT_EQ(norm("InstanceNormalization", 4, 4).run1().shape(), x.shape());
  expect_model_error(norm("GroupNormalization", 4, 2, 21).attr("num_groups", test::i(2)),
                     {"GroupNormalization_under_test", "bias"});
  expect_model_error(norm("GroupNormalization", 3, 3, 21).attr("num_groups", test::i(2)), {"scale"});
  test::OneOp bn("BatchNormalization");
  bn.input(x);
  for (int i = 0; i < 4; ++i)
    bn.constant(test::random_tensor(Shape{i == 3 ? 2 : 4}, static_cast<std::uint32_t>(i + 2), 0.5f, 1.f));
  expect_model_error(bn, {"BatchNormalization_under_test", "parameter 4 has 2 values"});
}

// An ONNX model whose initializer claims 2^32 x 2^32 floats and carries no data: the element
// count wraps to 0 in 64 bits, so without an overflow-safe count it passes the size check and
// a Gather reads the heap.
TEST(HostileOnnx, InitializerWhoseElementCountOverflowsIsRefused) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  auto* in = g->add_input();
  in->set_name("idx");
  in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
  g->add_output()->set_name("y");
  auto* w = g->add_initializer();
  w->set_name("table");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(std::int64_t{1} << 32);
  w->add_dims(std::int64_t{1} << 32);
  w->set_raw_data("");
  auto* n = g->add_node();
  n->set_op_type("Gather");
  n->add_input("table");
  n->add_input("idx");
  n->add_output("y");
  std::string bytes;
  ASSERT_TRUE(m.SerializeToString(&bytes));
  expect_error([&] { graph::import_onnx_bytes(bytes, "big.onnx", "."); }, ErrorCode::invalid_model,
               {"big.onnx", "initializer 'table'", "too large"});
  // The same with three dims whose product wraps to a small non-zero count.
  w->clear_dims();
  w->add_dims((std::int64_t{1} << 62) + 1);
  w->add_dims(4);
  w->set_raw_data(std::string(16, '\0'));
  ASSERT_TRUE(m.SerializeToString(&bytes));
  expect_error([&] { graph::import_onnx_bytes(bytes, "big.onnx", "."); }, ErrorCode::invalid_model, {"too large"});
}

class HostileFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("voxinfer_hostile_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A one-layer Keras Sequential model with a 1x1x1 Conv3D (or a pooling layer) and the given config fields.
  fs::path keras_model(const std::string& cls, const std::string& extra) {
    const bool conv = cls == "Conv3D";
    std::ofstream(dir_ / "model.json")
        << R"({"modelTopology": {"model_config": {"class_name": "Sequential", "config": {"name": "m", "layers": [{"class_name": ")"
        << cls
        << R"(", "config": {"name": "layer1", "batch_input_shape": [null, 4, 4, 4, 1], "padding": "valid", "use_bias": false, "filters": 1)"
        << extra << R"(}}]}}}, "weightsManifest": [{"paths": ["w.bin"], "weights": [)"
        << (conv ? R"({"name": "layer1/kernel", "shape": [1, 1, 1, 1, 1], "dtype": "float32"})" : "") << "]}]}";
    const float one = 1.f;
    std::ofstream(dir_ / "w.bin", std::ios::binary).write(reinterpret_cast<const char*>(&one), conv ? 4 : 0);
    return dir_ / "model.json";
  }
  fs::path dir_;
};

TEST_F(HostileFiles, KerasStrideZeroOrShortArraysAreRefusedNamingTheLayer) {
  auto load = [&](const std::string& cls, const std::string& extra) {
    const fs::path j = keras_model(cls, extra);
    graph::Session s(graph::load_model(j.string()));
    (void)s.run(std::vector<Tensor>{test::random_tensor(Shape{1, 1, 4, 4, 4}, 1)});
  };
  EXPECT_NO_THROW(load("Conv3D", R"(, "strides": [2, 2, 2])"));
  expect_error([&] { load("Conv3D", R"(, "strides": [1, 0, 1])"); }, ErrorCode::invalid_model,
               {"layer1", "'strides' value 0"});
  expect_error([&] { load("Conv3D", R"(, "strides": 0)"); }, ErrorCode::invalid_model, {"layer1", "'strides'"});
  expect_error([&] { load("Conv3D", R"(, "strides": [2])"); }, ErrorCode::invalid_model,
               {"layer1", "'strides' has 1 values, expected 3"});
  expect_error([&] { load("Conv3D", R"(, "dilation_rate": [1, 1, 1, 1])"); }, ErrorCode::invalid_model,
               {"'dilation_rate' has 4 values"});
  expect_error([&] { load("Conv3D", R"(, "strides": "wide")"); }, ErrorCode::invalid_model,
               {"'strides' must be an integer"});
  expect_error([&] { load("Conv3D", R"(, "groups": 0)"); }, ErrorCode::invalid_model, {"groups"});
  EXPECT_NO_THROW(load("MaxPooling3D", R"(, "pool_size": [2, 2, 2])"));
  expect_error([&] { load("MaxPooling3D", R"(, "pool_size": [2, 2, 2], "strides": [0, 1, 1])"); },
               ErrorCode::invalid_model, {"layer1", "'strides' value 0"});
  expect_error([&] { load("AveragePooling3D", R"(, "pool_size": [2])"); }, ErrorCode::invalid_model,
               {"layer1", "'pool_size' has 1"});
  expect_error([&] { load("AveragePooling3D", R"(, "pool_size": 0)"); }, ErrorCode::invalid_model,
               {"'pool_size' value 0"});
  expect_error([&] { load("MaxPooling2D", R"(, "pool_size": 2)"); }, ErrorCode::invalid_model, {"rank-5 input"});
}

// A FIFO named as external data would block the open forever: refused as not a regular file.
TEST_F(HostileFiles, ExternalDataThatIsAFifoIsRefused) {
  ASSERT_EQ(::mkfifo((dir_ / "weights.bin").c_str(), 0600), 0);
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  auto* in = g->add_input();
  in->set_name("x");
  in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  g->add_output()->set_name("y");
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* e = w->add_external_data();
  e->set_key("location");
  e->set_value("weights.bin");
  e = w->add_external_data();
  e->set_key("offset");
  e->set_value("x12");
  auto* n = g->add_node();
  n->set_op_type("Add");
  n->add_input("x");
  n->add_input("w");
  n->add_output("y");
  std::string bytes;
  ASSERT_TRUE(m.SerializeToString(&bytes));
  // A malformed offset is a model error, not an uncaught std::invalid_argument.
  expect_error([&] { graph::import_onnx_bytes(bytes, "m.onnx", dir_.string()); }, ErrorCode::invalid_model,
               {"offset 'x12'"});
  e->set_value("0");
  ASSERT_TRUE(m.SerializeToString(&bytes));
  expect_error([&] { graph::import_onnx_bytes(bytes, "m.onnx", dir_.string()); }, ErrorCode::invalid_model,
               {"not a regular file"});
}

}  // namespace
}  // namespace voxinfer
