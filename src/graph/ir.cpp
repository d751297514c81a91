// Graph IR helpers: typed attribute access, topological sort, use counts.
#include "voxinfer/graph/ir.h"

#include <functional>
#include <set>

namespace voxinfer::graph {

std::string ValueInfo::dims_str() const {
  if (!has_shape) return "[?]";
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ",";
    s += dims[i].known() ? std::to_string(dims[i].value) : (dims[i].symbol.empty() ? "?" : dims[i].symbol);
  }
  return s + "]";
}

namespace {
[[noreturn]] void wrong_kind(const Node& n, const std::string& key, const char* want) {
  throw Error(ErrorCode::invalid_model, n.label() + ": attribute '" + key + "' must be " + want);
}
}  // namespace

std::int64_t Node::get_int(const std::string& key, std::int64_t def) const {
  const auto it = attrs.find(key);
  if (it == attrs.end()) return def;
  if (it->second.kind != Attribute::Kind::i) wrong_kind(*this, key, "an integer");
  return it->second.i;
}

float Node::get_float(const std::string& key, float def) const {
  const auto it = attrs.find(key);
  if (it == attrs.end()) return def;
  if (it->second.kind == Attribute::Kind::i) return static_cast<float>(it->second.i);
  if (it->second.kind != Attribute::Kind::f) wrong_kind(*this, key, "a float");
  return it->second.f;
}

std::string Node::get_string(const std::string& key, const std::string& def) const {
  const auto it = attrs.find(key);
  if (it == attrs.end()) return def;
  if (it->second.kind != Attribute::Kind::s) wrong_kind(*this, key, "a string");
  return it->second.s;
}

std::vector<std::int64_t> Node::get_ints(const std::string& key, std::vector<std::int64_t> def) const {
  const auto it = attrs.find(key);
  if (it == attrs.end()) return def;
  if (it->second.kind != Attribute::Kind::ints) wrong_kind(*this, key, "a list of integers");
  return it->second.ints;
}

std::vector<float> Node::get_floats(const std::string& key, std::vector<float> def) const {
  const auto it = attrs.find(key);
  if (it == attrs.end()) return def;
  if (it->second.kind != Attribute::Kind::floats) wrong_kind(*this, key, "a list of floats");
  return it->second.floats;
}

const Tensor* Node::get_tensor(const std::string& key) const {
  const auto it = attrs.find(key);
  if (it == attrs.end()) return nullptr;
  if (it->second.kind != Attribute::Kind::tensor) wrong_kind(*this, key, "a tensor");
  return &it->second.t;
}

void Graph::toposort() {
  std::map<std::string, int> producer;
  for (std::size_t i = 0; i < nodes.size(); ++i)
    for (const auto& o : nodes[i].outputs)
      if (!o.empty()) {
        if (producer.count(o) || initializers.count(o))
          throw Error(ErrorCode::invalid_model, nodes[i].label() + ": value '" + o + "' is produced twice");
        producer[o] = static_cast<int>(i);
      }
  std::set<std::string> available;
  for (const auto& v : inputs) available.insert(v.name);
  for (const auto& [k, t] : initializers) available.insert(k);
  std::vector<int> state(nodes.size(), 0);  // 0 new, 1 visiting, 2 done
  std::vector<Node> sorted;
  sorted.reserve(nodes.size());
  std::function<void(int)> visit = [&](int i) {
    if (state[static_cast<std::size_t>(i)] == 2) return;
    if (state[static_cast<std::size_t>(i)] == 1)
      throw Error(ErrorCode::invalid_model, nodes[static_cast<std::size_t>(i)].label() + ": the graph has a cycle through this node");
    state[static_cast<std::size_t>(i)] = 1;
    for (const auto& in : nodes[static_cast<std::size_t>(i)].inputs) {
      if (in.empty() || available.count(in)) continue;
      const auto it = producer.find(in);
      if (it == producer.end())
        throw Error(ErrorCode::invalid_model, nodes[static_cast<std::size_t>(i)].label() + ": input '" + in + "' is not defined by any node, input or initializer");
      visit(it->second);
    }
    state[static_cast<std::size_t>(i)] = 2;
    sorted.push_back(nodes[static_cast<std::size_t>(i)]);
  };
  for (std::size_t i = 0; i < nodes.size(); ++i) visit(static_cast<int>(i));
  for (const auto& o : outputs)
    if (!producer.count(o.name) && !available.count(o.name))
      throw Error(ErrorCode::invalid_model, "graph output '" + o.name + "' is not produced by any node");
  nodes = std::move(sorted);
}

std::map<std::string, int> Graph::producers() const {
  std::map<std::string, int> p;
  for (std::size_t i = 0; i < nodes.size(); ++i)
    for (const auto& o : nodes[i].outputs)
      if (!o.empty()) p[o] = static_cast<int>(i);
  return p;
}

std::map<std::string, int> Graph::use_counts() const {
  std::map<std::string, int> u;
  for (const auto& n : nodes)
    for (const auto& i : n.inputs)
      if (!i.empty()) u[i]++;
  for (const auto& o : outputs) u[o.name]++;
  return u;
}

std::int64_t Graph::parameter_count() const {
  std::int64_t n = 0;
  for (const auto& [k, t] : initializers)
    if (dtype_is_float(t.dtype())) n += t.numel();
  return n;
}

}  // namespace voxinfer::graph
