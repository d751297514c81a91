// Output-preserving graph rewrites.
#include "voxinfer/graph/passes.h"

#include <cmath>
#include <set>

namespace voxinfer::graph {
namespace {

bool is_graph_output(const Graph& g, const std::string& v) {
  for (const auto& o : g.outputs)
    if (o.name == v) return true;
  return false;
}

// Replaces every use of `from` by `to`.
void rename_uses(Graph& g, const std::string& from, const std::string& to) {
  for (auto& n : g.nodes)
    for (auto& i : n.inputs)
      if (i == from) i = to;
}

// The single consumer of a value (index), or -1 when it has 0 or several or is a graph output.
int single_consumer(const Graph& g, const std::string& v) {
  if (is_graph_output(g, v)) return -1;
  int found = -1;
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& in : g.nodes[i].inputs)
      if (in == v) {
        if (found >= 0 && found != static_cast<int>(i)) return -1;
        if (found == static_cast<int>(i)) return -1;  // used twice by the same node
        found = static_cast<int>(i);
      }
  return found;
}

const Tensor* constant_f32(const Graph& g, const std::string& v) {
  const auto it = g.initializers.find(v);
  if (it == g.initializers.end() || it->second.dtype() != DType::f32) return nullptr;
  return &it->second;
}

std::string fresh_name(const Graph& g, const std::string& base) {
  std::string n = base;
  int k = 0;
  while (g.initializers.count(n)) n = base + "_" + std::to_string(++k);
  return n;
}

}  // namespace

PassReport drop_identities(Graph& g) {
  PassReport r;
  std::vector<Node> kept;
  for (auto& n : g.nodes) {
    const bool identity = n.op_type == "Identity" || (n.op_type == "Dropout" && (n.outputs.size() < 2 || n.outputs[1].empty()));
    if (identity && n.domain.empty() && !n.inputs.empty() && !is_graph_output(g, n.outputs[0])) {
      rename_uses(g, n.outputs[0], n.inputs[0]);
      ++r.identities_removed;
      continue;
    }
    kept.push_back(std::move(n));
  }
  g.nodes = std::move(kept);
  return r;
}

PassReport fold_batchnorm(Graph& g) {
  PassReport r;
  std::set<std::size_t> drop;
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    Node& conv = g.nodes[i];
    if ((conv.op_type != "Conv" && conv.op_type != "ConvTranspose") || conv.outputs.size() != 1 || conv.has("voxinfer.activation"))
      continue;
    const int c = single_consumer(g, conv.outputs[0]);
    if (c < 0) continue;
    Node& bn = g.nodes[static_cast<std::size_t>(c)];
    if (bn.op_type != "BatchNormalization" || bn.inputs.size() < 5 || bn.inputs[0] != conv.outputs[0]) continue;
    if (bn.outputs.size() > 1 && !std::all_of(bn.outputs.begin() + 1, bn.outputs.end(), [](const std::string& s) { return s.empty(); }))
      continue;
    const Tensor* w = constant_f32(g, conv.inputs[1]);
    const Tensor *sc = constant_f32(g, bn.inputs[1]), *bb = constant_f32(g, bn.inputs[2]), *mu = constant_f32(g, bn.inputs[3]),
                 *var = constant_f32(g, bn.inputs[4]);
    const Tensor* bias = conv.has_input(2) ? constant_f32(g, conv.inputs[2]) : nullptr;
    if (!w || !sc || !bb || !mu || !var || (conv.has_input(2) && !bias) || w->rank() < 3) continue;
    const std::int64_t groups = conv.get_int("group", 1);
    const bool transposed = conv.op_type == "ConvTranspose";
    const std::int64_t oc = transposed ? w->dim(1) * groups : w->dim(0);
    if (sc->numel() != oc || bb->numel() != oc || mu->numel() != oc || var->numel() != oc) continue;
    const float eps = bn.get_float("epsilon", 1e-5f);
    std::vector<float> a(static_cast<std::size_t>(oc)), b(static_cast<std::size_t>(oc));
    for (std::int64_t o = 0; o < oc; ++o) {
      const float s = sc->data<float>()[o] / std::sqrt(var->data<float>()[o] + eps);
      a[static_cast<std::size_t>(o)] = s;
      b[static_cast<std::size_t>(o)] = (bias ? bias->data<float>()[o] : 0.f) * s + bb->data<float>()[o] - mu->data<float>()[o] * s;
    }
    Tensor nw = w->clone();
    float* pw = nw.data<float>();
    const std::int64_t per = nw.numel() / (nw.dim(0) * nw.dim(1));
    for (std::int64_t x = 0; x < nw.dim(0); ++x)
      for (std::int64_t y = 0; y < nw.dim(1); ++y) {
        // Conv: [O, I/g, k...] scales along dim 0; ConvTranspose: [I, O/g, k...], output channel
        // = group(x) * (O/g) + y.
        const std::int64_t o = transposed ? (x / (nw.dim(0) / groups)) * nw.dim(1) + y : x;
        for (std::int64_t k = 0; k < per; ++k) pw[(x * nw.dim(1) + y) * per + k] *= a[static_cast<std::size_t>(o)];
      }
    const std::string wn = fresh_name(g, conv.inputs[1] + "_bnfold");
    const std::string bn_name = fresh_name(g, conv.name + "_bias_bnfold");
    g.initializers[wn] = nw;
    g.initializers[bn_name] = Tensor::from_vector(Shape{oc}, b);
    conv.inputs[1] = wn;
    if (conv.inputs.size() < 3) conv.inputs.resize(3);
    conv.inputs[2] = bn_name;
    conv.outputs[0] = bn.outputs[0];
    drop.insert(static_cast<std::size_t>(c));
    ++r.batchnorms_folded;
  }
  std::vector<Node> kept;
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    if (!drop.count(i)) kept.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(kept);
  return r;
}

PassReport fuse_activations(Graph& g) {
  PassReport r;
  std::set<std::size_t> drop;
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    Node& conv = g.nodes[i];
    const bool is_conv = conv.op_type == "Conv" || conv.op_type == "ConvTranspose";
    const bool is_norm = conv.op_type == "InstanceNormalization" || conv.op_type == "BatchNormalization" ||
                         conv.op_type == "GroupNormalization";
    if ((!is_conv && !is_norm) || conv.outputs.empty() || conv.has("voxinfer.activation")) continue;
    if (conv.outputs.size() > 1 && !std::all_of(conv.outputs.begin() + 1, conv.outputs.end(), [](const std::string& o) { return o.empty(); }))
      continue;
    const int c = single_consumer(g, conv.outputs[0]);
    if (c < 0) continue;
    Node& act = g.nodes[static_cast<std::size_t>(c)];
    if (act.inputs.empty() || act.inputs[0] != conv.outputs[0] || act.outputs.size() != 1) continue;
    // Normalizations take the simple activations only (no PRelu slopes, no Clip inputs).
    if (is_norm && act.op_type != "Relu" && act.op_type != "LeakyRelu" && act.op_type != "Sigmoid") continue;
    std::string kind;
    float alpha = 0, beta = 0;
    std::string slope;
    if (act.op_type == "Relu") kind = "relu";
    else if (act.op_type == "LeakyRelu") { kind = "leaky_relu"; alpha = act.get_float("alpha", 0.01f); }
    else if (act.op_type == "Sigmoid") kind = "sigmoid";
    else if (act.op_type == "Clip") {
      alpha = act.get_float("min", -INFINITY);
      beta = act.get_float("max", INFINITY);
      bool ok = true;
      if (act.has_input(1)) { const Tensor* t = constant_f32(g, act.inputs[1]); ok = ok && t && t->numel() == 1; if (ok) alpha = t->data<float>()[0]; }
      if (act.has_input(2)) { const Tensor* t = constant_f32(g, act.inputs[2]); ok = ok && t && t->numel() == 1; if (ok) beta = t->data<float>()[0]; }
      if (!ok) continue;
      kind = "clip";
    } else if (act.op_type == "PRelu" && act.inputs.size() == 2) {
      const Tensor* s = constant_f32(g, act.inputs[1]);
      if (!s) continue;
      // The slope must be one value or one per channel laid out along axis 1 ([C], [C,1,1,1] ...).
      const Tensor* w = constant_f32(g, conv.inputs[1]);
      if (!w) continue;
      const std::int64_t oc = conv.op_type == "ConvTranspose" ? w->dim(1) * conv.get_int("group", 1) : w->dim(0);
      bool per_channel = s->numel() == oc;
      if (per_channel && s->rank() >= 1) {
        // rank-1 [C] broadcasts against the LAST axis in numpy rules, which is only per-channel when it equals 1.
        if (s->rank() == 1 && oc != 1) continue;
        std::int64_t lead = 0;
        for (int k = 0; k < s->rank(); ++k) if (s->dim(k) != 1) lead = k;
        // [C,1,1,1] against [N,C,D,H,W]: C sits at axis rank-4+... require trailing ones after C and the rank to align with axis 1
        if (s->dim(static_cast<int>(lead)) != oc || s->rank() != w->rank() - 1) continue;
      } else if (s->numel() != 1) {
        continue;
      }
      kind = "prelu";
      slope = fresh_name(g, act.inputs[1] + "_flat");
      g.initializers[slope] = s->reshape(Shape{s->numel()});
    } else {
      continue;
    }
    conv.attrs["voxinfer.activation"] = Attribute::make_string(kind);
    conv.attrs["voxinfer.alpha"] = Attribute::make_float(alpha);
    conv.attrs["voxinfer.beta"] = Attribute::make_float(beta);
    if (!slope.empty()) {
      conv.inputs.resize(4);
      conv.inputs[3] = slope;
    }
    conv.outputs[0] = act.outputs[0];
    drop.insert(static_cast<std::size_t>(c));
    ++r.activations_fused;
  }
  std::vector<Node> kept;
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    if (!drop.count(i)) kept.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(kept);
  return r;
}

PassReport collapse_reshapes(Graph& g) {
  PassReport r;
  std::set<std::size_t> drop;
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    Node& a = g.nodes[i];
    if (a.op_type != "Reshape" || drop.count(i)) continue;
    const int c = single_consumer(g, a.outputs[0]);
    if (c < 0) continue;
    Node& b = g.nodes[static_cast<std::size_t>(c)];
    if (b.op_type != "Reshape" || b.inputs.size() < 2 || b.inputs[0] != a.outputs[0]) continue;
    const auto it = g.initializers.find(b.inputs[1]);
    if (it == g.initializers.end()) continue;
    bool has_zero = false;
    const Tensor& s = it->second;
    for (std::int64_t k = 0; k < s.numel(); ++k) has_zero = has_zero || (s.dtype() == DType::i64 && s.data<std::int64_t>()[k] == 0);
    if (has_zero || s.dtype() != DType::i64) continue;
    b.inputs[0] = a.inputs[0];
    drop.insert(i);
    ++r.reshapes_collapsed;
  }
  std::vector<Node> kept;
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    if (!drop.count(i)) kept.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(kept);
  return r;
}

PassReport remove_dead_nodes(Graph& g) {
  PassReport r;
  std::set<std::string> needed;
  for (const auto& o : g.outputs) needed.insert(o.name);
  std::vector<bool> keep(g.nodes.size(), false);
  for (std::size_t j = g.nodes.size(); j-- > 0;) {
    const Node& n = g.nodes[j];
    bool used = false;
    for (const auto& o : n.outputs) used = used || (!o.empty() && needed.count(o));
    if (!used) continue;
    keep[j] = true;
    for (const auto& i : n.inputs)
      if (!i.empty()) needed.insert(i);
  }
  std::vector<Node> kept;
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    if (keep[i]) kept.push_back(std::move(g.nodes[i]));
    else ++r.dead_removed;
  }
  g.nodes = std::move(kept);
  for (auto it = g.initializers.begin(); it != g.initializers.end();)
    it = needed.count(it->first) ? std::next(it) : g.initializers.erase(it);
  return r;
}

PassReport optimize_graph(Graph& g) {
  PassReport total;
  auto add = [&](const PassReport& p) {
    total.identities_removed += p.identities_removed;
    total.batchnorms_folded += p.batchnorms_folded;
    total.activations_fused += p.activations_fused;
    total.reshapes_collapsed += p.reshapes_collapsed;
    total.dead_removed += p.dead_removed;
  };
  add(drop_identities(g));
  add(fold_batchnorm(g));
  add(fuse_activations(g));
  add(collapse_reshapes(g));
  add(remove_dead_nodes(g));
  return total;
}

}  // namespace voxinfer::graph
