// ONNX models whose weights live in external data files (the format for models over 2 GB):
// offsets and lengths are honoured, and a path leaving the model's folder is refused.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "voxinfer/graph/onnx_import.h"
#include "voxinfer/graph/session.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

void write_model(const fs::path& file, const std::string& location, std::int64_t offset) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  auto* in = g->add_input();
  in->set_name("x");
  in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  in->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(4);
  g->add_output()->set_name("y");
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto kv = [&](const char* k, const std::string& v) {
    auto* e = w->add_external_data();
    e->set_key(k);
    e->set_value(v);
  };
  kv("location", location);
  kv("offset", std::to_string(offset));
  kv("length", "16");
  auto* n = g->add_node();
  n->set_op_type("Add");
  n->add_input("x");
  n->add_input("w");
  n->add_output("y");
  std::ofstream out(file, std::ios::binary);
  m.SerializeToOstream(&out);
}

TEST(ExternalData, WeightsAreReadFromTheDataFileAtTheirOffset) {
  const fs::path dir = fs::temp_directory_path() / ("voxinfer_ext_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const float weights[4] = {1.5f, -2.f, 3.25f, 0.5f};
  {
    std::ofstream data(dir / "weights.bin", std::ios::binary);
    const char pad[8] = {};
    data.write(pad, 8);  // the tensor starts at offset 8
    data.write(reinterpret_cast<const char*>(weights), sizeof weights);
  }
  write_model(dir / "model.onnx", "weights.bin", 8);
  graph::Session s = graph::Session::from_file((dir / "model.onnx").string());
  const Tensor x = Tensor::from_vector<float>(Shape{4}, {1, 1, 1, 1});
  const auto y = s.run(std::vector<Tensor>{x});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y[0].data<float>()[i], 1.f + weights[i]);
  // Escaping the model folder and reading past the file's end are both refused.
  write_model(dir / "escape.onnx", "../weights.bin", 0);
  EXPECT_THROW(graph::import_onnx((dir / "escape.onnx").string()), Error);
  write_model(dir / "short.onnx", "weights.bin", 16);
  EXPECT_THROW(graph::import_onnx((dir / "short.onnx").string()), Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace voxinfer
