// The operator registry: op type -> factory, filled once from each operator file.
#include <algorithm>
#include <map>
#include <mutex>

#include "graph/op.h"

namespace voxinfer::graph {

void register_elementwise_ops();
void register_shape_ops();
void register_nn_ops();

namespace {
std::map<std::string, OpFactory>& table() {
  static std::map<std::string, OpFactory> t;
  return t;
}
void ensure_registered() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_elementwise_ops();
    register_shape_ops();
    register_nn_ops();
  });
}
}  // namespace

void register_op(const std::string& op_type, OpFactory factory) { table()[op_type] = factory; }

bool op_supported(const std::string& op_type) {
  ensure_registered();
  return table().count(op_type) != 0;
}

std::vector<std::string> supported_ops() {
  ensure_registered();
  std::vector<std::string> v;
  for (const auto& [k, f] : table()) v.push_back(k);
  return v;
}

std::unique_ptr<Op> create_op(const Node& node, std::int64_t opset) {
  ensure_registered();
  if (!node.domain.empty() && node.domain != "ai.onnx" && node.domain != "voxinfer")
    throw Error(ErrorCode::unsupported, node.label() + ": operator domain '" + node.domain + "' is not supported");
  const auto it = table().find(node.op_type);
  if (it == table().end())
    throw Error(ErrorCode::unsupported, node.label() + ": operator '" + node.op_type + "' is not supported");
  return it->second(node, opset);
}

std::vector<std::int64_t> tensor_to_int64s(const Tensor& t0) {
  const Tensor t = t0.contiguous();
  std::vector<std::int64_t> v(static_cast<std::size_t>(t.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) {
    switch (t.dtype()) {
      case DType::i64: v[i] = t.data<std::int64_t>()[i]; break;
      case DType::i32: v[i] = t.data<std::int32_t>()[i]; break;
      case DType::i16: v[i] = t.data<std::int16_t>()[i]; break;
      case DType::u8: v[i] = t.data<std::uint8_t>()[i]; break;
      case DType::boolean: v[i] = t.data<bool>()[i]; break;
      case DType::f32: v[i] = static_cast<std::int64_t>(t.data<float>()[i]); break;
      case DType::f64: v[i] = static_cast<std::int64_t>(t.data<double>()[i]); break;
      default: throw Error(ErrorCode::unsupported, "cannot read integers from a tensor of " + std::string(dtype_name(t.dtype())));
    }
  }
  return v;
}

std::vector<float> tensor_to_floats(const Tensor& t0) {
  const Tensor t = t0.contiguous();
  std::vector<float> v(static_cast<std::size_t>(t.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) {
    switch (t.dtype()) {
      case DType::f32: v[i] = t.data<float>()[i]; break;
      case DType::f64: v[i] = static_cast<float>(t.data<double>()[i]); break;
      case DType::i64: v[i] = static_cast<float>(t.data<std::int64_t>()[i]); break;
      case DType::i32: v[i] = static_cast<float>(t.data<std::int32_t>()[i]); break;
      default: throw Error(ErrorCode::unsupported, "cannot read floats from a tensor of " + std::string(dtype_name(t.dtype())));
    }
  }
  return v;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const Node& node) {
  const int r = std::max(a.rank(), b.rank());
  std::vector<std::int64_t> d(static_cast<std::size_t>(r));
  for (int i = 0; i < r; ++i) {
    const int ia = i - (r - a.rank()), ib = i - (r - b.rank());
    const std::int64_t x = ia >= 0 ? a[ia] : 1, y = ib >= 0 ? b[ib] : 1;
    if (x != y && x != 1 && y != 1)
      throw Error(ErrorCode::invalid_input, node.label() + ": shapes " + a.str() + " and " + b.str() + " do not broadcast");
    d[static_cast<std::size_t>(i)] = (x == 1) ? y : x;
  }
  return Shape(d);
}

}  // namespace voxinfer::graph
