// Builds one-node (or small) graphs in the IR for operator tests.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "voxinfer/graph/session.h"

namespace voxinfer::test {

struct OneOp {
  graph::Graph g;
  std::vector<Tensor> feeds;

  OneOp(const std::string& op, std::int64_t opset = 17) {
    g.opset = opset;
    node.op_type = op;
    node.name = op + "_under_test";
  }
  // A runtime input.
  OneOp& input(const Tensor& t) {
    const std::string name = "x" + std::to_string(node.inputs.size());
    graph::ValueInfo vi;
    vi.name = name;
    vi.dtype = t.dtype();
    g.inputs.push_back(vi);
    feeds.push_back(t);
    node.inputs.push_back(name);
    return *this;
  }
  // A constant (initializer) input.
  OneOp& constant(const Tensor& t) {
    const std::string name = "c" + std::to_string(node.inputs.size());
    g.initializers[name] = t;
    node.inputs.push_back(name);
    return *this;
  }
  OneOp& none() {
    node.inputs.push_back("");
    return *this;
  }
  OneOp& attr(const std::string& k, graph::Attribute a) {
    node.attrs[k] = std::move(a);
    return *this;
  }
  OneOp& outputs(int n) {
    n_out = n;
    return *this;
  }
  std::vector<Tensor> run(bool optimize = true) {
    graph::Graph gg = g;
    graph::Node n = node;
    for (int i = 0; i < n_out; ++i) {
      n.outputs.push_back("y" + std::to_string(i));
      graph::ValueInfo vi;
      vi.name = "y" + std::to_string(i);
      gg.outputs.push_back(vi);
    }
    gg.nodes.push_back(n);
    graph::SessionOptions o;
    o.optimize = optimize;
    graph::Session s(gg, o);
    return s.run(feeds);
  }
  Tensor run1() { return run()[0]; }

  graph::Node node;
  int n_out = 1;
};

// Appends a node with one output to g.
inline void add_node(graph::Graph& g, const std::string& op, std::vector<std::string> in, const std::string& out,
                     std::map<std::string, graph::Attribute> attrs = {}) {
  graph::Node n;
  n.op_type = op;
  n.name = out;
  n.inputs = std::move(in);
  n.outputs = {out};
  n.attrs = std::move(attrs);
  g.nodes.push_back(std::move(n));
}

// Declares a runtime input or an output of g by name (f32, shape from the data).
inline void add_input(graph::Graph& g, const std::string& name) {
  graph::ValueInfo vi;
  vi.name = name;
  g.inputs.push_back(vi);
}
inline void add_output(graph::Graph& g, const std::string& name) {
  graph::ValueInfo vi;
  vi.name = name;
  g.outputs.push_back(vi);
}

inline graph::Attribute ints(std::vector<std::int64_t> v) { return graph::Attribute::make_ints(std::move(v)); }
inline graph::Attribute i(std::int64_t v) { return graph::Attribute::make_int(v); }
inline graph::Attribute f(float v) { return graph::Attribute::make_float(v); }
inline graph::Attribute s(std::string v) { return graph::Attribute::make_string(std::move(v)); }

inline Tensor i64(std::vector<std::int64_t> v) {
  return Tensor::from_vector(Shape{static_cast<std::int64_t>(v.size())}, v);
}
inline Tensor f32(const Shape& s, std::vector<float> v) { return Tensor::from_vector(s, v); }

}  // namespace voxinfer::test
