// Operator interface of the graph layer. An Op is created per node and per plan
// (input shapes), infers its outputs, prepares (packs weights, sizes its workspace)
// once, then runs many times on tensors the Session places in its arena.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "voxinfer/core/tensor.h"
#include "voxinfer/graph/ir.h"

namespace voxinfer::graph {

// What is known about a value while planning: its shape and dtype, and its contents
// when it is a constant (initializer or folded).
struct ValueMeta {
  bool present = false;  // false for omitted optional inputs
  Shape shape;
  DType dtype = DType::f32;
  const Tensor* constant = nullptr;
};

class Op {
 public:
  Op(const Node& node, std::int64_t opset) : node_(node), opset_(opset) {}
  virtual ~Op() = default;
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;

  // Sets out[i].shape/dtype for every output (out is sized to the node's outputs).
  virtual void infer(const std::vector<ValueMeta>& in, std::vector<ValueMeta>& out) = 0;
  // Called once after infer, when the plan is built; may pack constant weights.
  virtual void prepare(const std::vector<ValueMeta>& /*in*/, const std::vector<ValueMeta>& /*out*/) {}
  virtual std::size_t workspace_bytes() const { return 0; }
  // Computes the outputs. Inputs are contiguous; outputs are preallocated and contiguous.
  virtual void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, void* workspace) = 0;

  // Output `o` may share the buffer of the returned input (views such as Reshape), or -1.
  virtual int alias_input(int /*o*/) const { return -1; }
  // Output 0 may be written over the returned input (elementwise ops), or -1.
  virtual int inplace_input() const { return -1; }
  // True when the outputs depend on input shapes only (Shape, Size): folded at plan time.
  virtual bool shape_only() const { return false; }
  // Layout pass: the layout an output could be written in without a reorder, whether an
  // input may arrive in a blocked layout, and the layouts the Session finally chose
  // (called before workspace_bytes() is read).
  virtual Layout preferred_output_layout(int /*o*/) const { return Layout::plain; }
  virtual bool accepts_input_layout(int /*i*/, Layout l) const { return l == Layout::plain; }
  virtual void set_layouts(const std::vector<Layout>& /*in*/, const std::vector<Layout>& /*out*/) {}
  // Reorders this op performs per run (layout boundaries), for `info`.
  virtual int reorders() const { return 0; }

  // Floating-point operations of one run (for `info`).
  virtual std::int64_t flops(const std::vector<ValueMeta>& /*in*/, const std::vector<ValueMeta>& /*out*/) const { return 0; }
  // Name of the kernel chosen at prepare (for `info`/profiling).
  virtual std::string kernel_name() const { return "ref"; }
  // Why the kernels tried before the chosen one declined, one "kernel: reason" per line
  // (empty for operators with one kernel).
  virtual std::string kernel_declines() const { return {}; }

  const Node& node() const { return node_; }
  // Set by the Session before prepare(): run the reference kernels, not the optimized ones.
  void use_reference_kernels(bool on) { reference_kernels_ = on; }

 protected:
  [[noreturn]] void fail_model(const std::string& what) const {
    throw Error(ErrorCode::invalid_model, node_.label() + ": " + what);
  }
  [[noreturn]] void fail_input(const std::string& what) const {
    throw Error(ErrorCode::invalid_input, node_.label() + ": " + what);
  }
  [[noreturn]] void fail_unsupported(const std::string& what) const {
    throw Error(ErrorCode::unsupported, node_.label() + ": " + what);
  }
  void require_inputs(const std::vector<ValueMeta>& in, int min, int max) const {
    const int n = static_cast<int>(in.size());
    if (n < min || n > max || (min > 0 && !in[0].present))
      fail_model("expects " + std::to_string(min) + (max != min ? ".." + std::to_string(max) : std::string()) +
                 " inputs, got " + std::to_string(n));
    for (int i = 0; i < min; ++i)
      if (!in[static_cast<std::size_t>(i)].present) fail_model("input " + std::to_string(i) + " is required");
  }

  // Largest kernel size, stride, dilation or padding accepted: far above any real network,
  // low enough that output sizes computed from them cannot overflow.
  static constexpr std::int64_t kMaxAxisAttr = std::int64_t{1} << 24;

  // A per-axis integer attribute (kernel_shape, strides, dilations, pads, output_padding):
  // exactly `count` values, each in [min, kMaxAxisAttr]; `count` copies of `def` when absent.
  // Read once at shape inference, so that no kernel sees a stride of 0 or a short array.
  std::vector<std::int64_t> axis_ints(const std::string& key, int count, std::int64_t def, std::int64_t min) const {
    if (!node_.has(key)) return std::vector<std::int64_t>(static_cast<std::size_t>(count), def);
    const auto v = node_.get_ints(key);
    if (static_cast<int>(v.size()) != count)
      fail_model("attribute '" + key + "' has " + std::to_string(v.size()) + " values, expected " +
                 std::to_string(count));
    for (std::size_t i = 0; i < v.size(); ++i)
      if (v[i] < min || v[i] > kMaxAxisAttr)
        fail_model("attribute '" + key + "' value " + std::to_string(v[i]) + " (position " + std::to_string(i) +
                   ") must be in [" + std::to_string(min) + ", " + std::to_string(kMaxAxisAttr) + "]");
    return v;
  }

  Node node_;
  std::int64_t opset_;
  bool reference_kernels_ = false;
};

using OpFactory = std::unique_ptr<Op> (*)(const Node&, std::int64_t opset);

// Creates the operator for a node; throws unsupported naming the node and op when unknown.
std::unique_ptr<Op> create_op(const Node& node, std::int64_t opset);
bool op_supported(const std::string& op_type);
std::vector<std::string> supported_ops();

// Registration, called once by the registry (ops_registry.cpp) from each ops_*.cpp.
void register_op(const std::string& op_type, OpFactory factory);

template <typename T>
std::unique_ptr<Op> make_op(const Node& n, std::int64_t opset) {
  return std::make_unique<T>(n, opset);
}

// Helpers shared by operator files.
std::vector<std::int64_t> tensor_to_int64s(const Tensor& t);  // any integer/float dtype
std::vector<float> tensor_to_floats(const Tensor& t);
// numpy-style broadcast of two shapes; throws naming the node on mismatch.
Shape broadcast_shapes(const Shape& a, const Shape& b, const Node& node);

}  // namespace voxinfer::graph
