// voxinfer's graph IR, independent of any file format: named values, nodes with typed
// attributes, constant initializers and (possibly symbolic) input/output dimensions.
// Importers (ONNX, TF.js/Keras) produce it; passes rewrite it; Session runs it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "voxinfer/core/error.h"
#include "voxinfer/core/tensor.h"

namespace voxinfer::graph {

// A dimension: a fixed size, or a symbol ("N", "D") or unknown (-1 with an empty symbol).
struct Dim {
  std::int64_t value = -1;
  std::string symbol;
  bool known() const { return value >= 0; }
};

struct ValueInfo {
  std::string name;
  DType dtype = DType::f32;
  std::vector<Dim> dims;  // empty with has_shape == false when the rank is unknown
  bool has_shape = false;
  std::string dims_str() const;
};

struct Attribute {
  enum class Kind { none, i, f, s, ints, floats, strings, tensor };
  Kind kind = Kind::none;
  std::int64_t i = 0;
  float f = 0;
  std::string s;
  std::vector<std::int64_t> ints;
  std::vector<float> floats;
  std::vector<std::string> strings;
  Tensor t;

  static Attribute make_int(std::int64_t v) { Attribute a; a.kind = Kind::i; a.i = v; return a; }
  static Attribute make_float(float v) { Attribute a; a.kind = Kind::f; a.f = v; return a; }
  static Attribute make_string(std::string v) { Attribute a; a.kind = Kind::s; a.s = std::move(v); return a; }
  static Attribute make_ints(std::vector<std::int64_t> v) { Attribute a; a.kind = Kind::ints; a.ints = std::move(v); return a; }
  static Attribute make_floats(std::vector<float> v) { Attribute a; a.kind = Kind::floats; a.floats = std::move(v); return a; }
  static Attribute make_tensor(Tensor v) { Attribute a; a.kind = Kind::tensor; a.t = std::move(v); return a; }
};

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;                // "" is the default ONNX domain
  std::vector<std::string> inputs;   // "" marks an omitted optional input
  std::vector<std::string> outputs;
  std::map<std::string, Attribute> attrs;

  bool has(const std::string& key) const { return attrs.count(key) != 0; }
  // Typed attribute getters; a present attribute of the wrong kind is an invalid-model error
  // naming the node, the op and the attribute.
  std::int64_t get_int(const std::string& key, std::int64_t def) const;
  float get_float(const std::string& key, float def) const;
  std::string get_string(const std::string& key, const std::string& def) const;
  std::vector<std::int64_t> get_ints(const std::string& key, std::vector<std::int64_t> def = {}) const;
  std::vector<float> get_floats(const std::string& key, std::vector<float> def = {}) const;
  const Tensor* get_tensor(const std::string& key) const;

  // "node 'name' (Op)" for messages.
  std::string label() const { return "node '" + name + "' (" + op_type + ")"; }
  int num_inputs() const { return static_cast<int>(inputs.size()); }
  bool has_input(int i) const { return i < num_inputs() && !inputs[static_cast<std::size_t>(i)].empty(); }
};

struct Graph {
  std::string name;
  std::string producer;
  std::int64_t opset = 13;
  std::vector<ValueInfo> inputs;   // runtime inputs (initializers excluded)
  std::vector<ValueInfo> outputs;
  std::vector<Node> nodes;         // topologically sorted after import (toposort() checks)
  std::map<std::string, Tensor> initializers;

  bool is_constant(const std::string& value) const { return initializers.count(value) != 0; }
  // Sorts nodes topologically; throws invalid_model naming a node on a cycle or an undefined input.
  void toposort();
  // Producer node index of every value (initializers and graph inputs have none).
  std::map<std::string, int> producers() const;
  // Number of nodes consuming each value (+1 for graph outputs).
  std::map<std::string, int> use_counts() const;
  std::int64_t parameter_count() const;
};

}  // namespace voxinfer::graph
