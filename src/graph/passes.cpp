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

// Removes the nodes at the given indices, keeping the order of the rest.
void erase_nodes(Graph& g, const std::set<std::size_t>& drop) {
  std::vector<Node> kept;
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    if (!drop.count(i)) kept.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(kept);
}

std::string fresh_name(const Graph& g, const std::string& base) {
  std::string n = base;
  int k = 0;
  while (g.initializers.count(n)) n = base + "_" + std::to_string(++k);
  return n;
}

// The value of a constant: an initializer or the output of a Constant node.
const Tensor* constant_value(const Graph& g, const std::string& v) {
  const auto it = g.initializers.find(v);
  if (it != g.initializers.end()) return &it->second;
  for (const auto& n : g.nodes)
    if (n.op_type == "Constant" && n.outputs.size() == 1 && n.outputs[0] == v) {
      const auto a = n.attrs.find("value");
      if (a != n.attrs.end() && a->second.kind == Attribute::Kind::tensor) return &a->second.t;
    }
  return nullptr;
}

// The index of the node producing v, or -1.
int producer(const Graph& g, const std::string& v) {
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& o : g.nodes[i].outputs)
      if (o == v) return static_cast<int>(i);
  return -1;
}

// A per-channel constant as PyTorch exports it for [N, C, ...] data: [C, 1, ..., 1] with
// rank - 1 dims, or [1, C, 1, ..., 1]; the channel count, or -1.
std::int64_t per_channel_count(const Tensor& t, int data_rank) {
  if (t.dtype() != DType::f32) return -1;
  const int lead = t.rank() == data_rank - 1 ? 0 : (t.rank() == data_rank && t.dim(0) == 1 ? 1 : -1);
  if (lead < 0) return -1;
  for (int k = lead + 1; k < t.rank(); ++k)
    if (t.dim(k) != 1) return -1;
  return t.dim(lead);
}

}  // namespace

PassReport fuse_group_norm(Graph& g) {
  // PyTorch exports GroupNorm(G, C) on [N, C, D, H, W] data as
  //   Reshape(x, [0, G, -1]) -> InstanceNormalization(ones(G), zeros(G)) -> Reshape(., Shape(x))
  //   -> Mul(gamma [C,1,1,1]) -> Add(beta [C,1,1,1]);
  // the chain becomes one GroupNormalization(x, gamma, beta) with per-channel scale and bias.
  PassReport r;
  std::set<std::size_t> drop;
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& in = g.nodes[i];
    if (in.op_type != "InstanceNormalization" || !in.domain.empty() || in.inputs.size() != 3 || in.outputs.size() != 1) continue;
    const int r1i = producer(g, in.inputs[0]);
    if (r1i < 0 || single_consumer(g, in.inputs[0]) != static_cast<int>(i)) continue;
    const Node& r1 = g.nodes[static_cast<std::size_t>(r1i)];
    if (r1.op_type != "Reshape" || r1.inputs.size() < 2) continue;
    const Tensor* shape = constant_value(g, r1.inputs[1]);
    if (!shape || shape->dtype() != DType::i64 || shape->numel() != 3) continue;
    const std::int64_t* sv = shape->data<std::int64_t>();
    const std::int64_t groups = sv[1];
    if (sv[0] != 0 || groups < 1 || sv[2] != -1) continue;
    const Tensor* ones = constant_value(g, in.inputs[1]);
    const Tensor* zeros = constant_value(g, in.inputs[2]);
    if (!ones || !zeros || ones->dtype() != DType::f32 || zeros->dtype() != DType::f32 || ones->numel() != groups ||
        zeros->numel() != groups)
      continue;
    bool unit = true;
    for (std::int64_t k = 0; k < groups; ++k) unit = unit && ones->data<float>()[k] == 1.f && zeros->data<float>()[k] == 0.f;
    if (!unit) continue;
    const std::string& x = r1.inputs[0];
    const int r2i = single_consumer(g, in.outputs[0]);
    if (r2i < 0) continue;
    const Node& r2 = g.nodes[static_cast<std::size_t>(r2i)];
    if (r2.op_type != "Reshape" || r2.inputs.size() < 2 || r2.inputs[0] != in.outputs[0]) continue;
    const int shi = producer(g, r2.inputs[1]);
    if (shi < 0 || g.nodes[static_cast<std::size_t>(shi)].op_type != "Shape" || g.nodes[static_cast<std::size_t>(shi)].inputs.at(0) != x ||
        g.nodes[static_cast<std::size_t>(shi)].has("start") || g.nodes[static_cast<std::size_t>(shi)].has("end"))
      continue;
    const int mi = single_consumer(g, r2.outputs[0]);
    if (mi < 0) continue;
    const Node& mul = g.nodes[static_cast<std::size_t>(mi)];
    if (mul.op_type != "Mul" || mul.inputs.size() != 2 || mul.inputs[0] != r2.outputs[0]) continue;
    const int ai = single_consumer(g, mul.outputs[0]);
    if (ai < 0) continue;
    Node& add = g.nodes[static_cast<std::size_t>(ai)];
    if (add.op_type != "Add" || add.inputs.size() != 2 || add.inputs[0] != mul.outputs[0]) continue;
    const Tensor* gamma = constant_f32(g, mul.inputs[1]);
    const Tensor* beta = constant_f32(g, add.inputs[1]);
    if (!gamma || !beta) continue;
    const std::int64_t c = per_channel_count(*gamma, 5);
    if (c < 1 || per_channel_count(*beta, 5) != c || c % groups) continue;
    const std::string gn = fresh_name(g, mul.inputs[1] + "_gn_scale"), bn = fresh_name(g, add.inputs[1] + "_gn_bias");
    g.initializers[gn] = gamma->reshape(Shape{c});
    g.initializers[bn] = beta->reshape(Shape{c});
    Node fused;
    fused.op_type = "GroupNormalization";
    fused.name = in.name + "_group";
    fused.inputs = {x, gn, bn};
    fused.outputs = add.outputs;
    fused.attrs["num_groups"] = Attribute::make_int(groups);
    fused.attrs["epsilon"] = Attribute::make_float(in.get_float("epsilon", 1e-5f));
    add = fused;  // the Add's position: every input is computed by then
    for (int k : {r1i, static_cast<int>(i), r2i, mi}) drop.insert(static_cast<std::size_t>(k));
    ++r.group_norms_fused;
  }
  erase_nodes(g, drop);
  return r;
}

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
  erase_nodes(g, drop);
  return r;
}

PassReport fuse_residual_add(Graph& g) {
  PassReport r;
  std::set<std::size_t> drop;
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& conv = g.nodes[i];
    // Bias, then residual, then activation is the epilogue's order: a convolution whose
    // activation is already fused (it comes before the Add) cannot take the residual.
    if (conv.op_type != "Conv" || conv.has("voxinfer.activation") || conv.outputs.size() != 1 || conv.inputs.size() > 3 ||
        is_graph_output(g, conv.outputs[0]))
      continue;
    const int c = single_consumer(g, conv.outputs[0]);
    if (c < 0) continue;
    Node& add = g.nodes[static_cast<std::size_t>(c)];
    if (add.op_type != "Add" || add.inputs.size() != 2 || add.outputs.size() != 1 || add.inputs[0] == add.inputs[1]) continue;
    const std::string& other = add.inputs[0] == conv.outputs[0] ? add.inputs[1] : add.inputs[0];
    if (other.empty() || constant_value(g, other)) continue;  // a bias-like constant
    Node fused = conv;
    fused.inputs.resize(5);
    fused.inputs[4] = other;
    fused.outputs = add.outputs;
    add = fused;  // the Add's position: the residual is computed by then
    drop.insert(i);
    ++r.residuals_fused;
  }
  erase_nodes(g, drop);
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
    // Normalizations take Relu, LeakyRelu, Sigmoid, and (Instance/Group) PRelu with one slope
    // or one per channel as [C,1,1,1] (5D data); no Clip, no BatchNormalization PRelu.
    if (is_norm && act.op_type != "Relu" && act.op_type != "LeakyRelu" && act.op_type != "Sigmoid" &&
        !(act.op_type == "PRelu" && conv.op_type != "BatchNormalization"))
      continue;
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
    } else if (act.op_type == "PRelu" && act.inputs.size() == 2 && is_norm) {
      const Tensor* s = constant_f32(g, act.inputs[1]);
      if (!s) continue;
      if (s->numel() != 1) {
        const Tensor* scale = conv.inputs.size() > 1 ? constant_f32(g, conv.inputs[1]) : nullptr;
        const std::int64_t ch = s->rank() == 4 ? s->dim(0) : 0;
        if (!scale || conv.op_type != "InstanceNormalization" || ch != scale->numel() || s->numel() != ch) continue;
      }
      kind = "prelu";
      slope = fresh_name(g, act.inputs[1] + "_flat");
      g.initializers[slope] = s->reshape(Shape{s->numel()});
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
      if (conv.inputs.size() < 4) conv.inputs.resize(4);  // a fused residual stays input 4
      conv.inputs[3] = slope;
    }
    conv.outputs[0] = act.outputs[0];
    drop.insert(static_cast<std::size_t>(c));
    ++r.activations_fused;
  }
  erase_nodes(g, drop);
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
  erase_nodes(g, drop);
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
    total.group_norms_fused += p.group_norms_fused;
    total.residuals_fused += p.residuals_fused;
  };
  add(drop_identities(g));
  add(fold_batchnorm(g));
  add(fuse_group_norm(g));
  add(fuse_residual_add(g));
  add(fuse_activations(g));
  add(collapse_reshapes(g));
  add(remove_dead_nodes(g));
  return total;
}

}  // namespace voxinfer::graph
