// Plane streaming of whole-volume convolution chains (see streaming.h).
//
// The graph (after Session's passes) is cut into stages at each normalisation. A stage is a
// list of convolutions, each followed by its elementwise operators, fed from a whole buffer
// (the network input, or the activation a normalisation worked on) and ending either in a
// whole buffer (the next normalisation's input) or in the argmax. Layer l computes its output
// planes in chunks of P_l planes; before a chunk it pulls from upstream every input plane the
// chunk reads (halo h_l on each side, zeros past the faces are the kernels' own padding), so
// the stage advances like a pipeline from its last layer.
//
// Input buffers: a convolution that spans several planes (kd > 1) reads a ring of
// R_l = 2 h_l + P_l + P_{l-1} - 1 planes (input plane d at d % R_l) through
// ConvKernel::run_planes; a 1x1x1 convolution whose kernel cannot stream (the heads) reads
// its chunk packed, with a kernel made for that chunk's depth, and its chunks are sized so that
// they start where the head kernel's vector groups start in a whole run.
#include "voxinfer/graph/streaming.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <set>

#include "graph/op.h"
#include "graph/ops_common.h"
#include "voxinfer/core/cpu.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/kernels/conv.h"

namespace voxinfer::graph {

bool streaming_enabled_from_env() {
  const char* env = std::getenv("VOXINFER_STREAMING");
  const std::string v = env ? env : "";
  if (v.empty() || v == "1") return true;
  if (v == "0") return false;
  throw Error(ErrorCode::invalid_input, "VOXINFER_STREAMING='" + v + "' is not '0' or '1'");
}

namespace {

using kernels::Activation;
using kernels::ConvKernel;
using kernels::ConvParams;
using kernels::Epilogue;

// Floats of a buffer laid out as `l` for c channels, `planes` planes of `plane` pixels.
std::int64_t buffer_floats(Layout l, std::int64_t c, std::int64_t planes, std::int64_t plane) {
  return round_up(c, layout_block(l)) * planes * plane;
}

// A buffer of planes: channel c, plane slot j, pixel x lives at
// plain: base[(c * stride + j) * plane + x]; blocked (B lanes): base[((c / B) * stride + j) * plane * B + x * B + c % B].
struct Planes {
  float* base = nullptr;
  Layout layout = Layout::plain;
  std::int64_t channels = 1, stride = 1, plane = 1;

  std::int64_t block() const { return layout_block(layout); }
  std::int64_t groups() const { return layout == Layout::plain ? channels : round_up(channels, block()) / block(); }
  float* at(std::int64_t g, std::int64_t j) const { return base + (g * stride + j) * plane * block(); }
};

// Copies plane slot js of `s` to slot jd of `d` (same channels), converting the layout; the
// padding lanes of a blocked destination get zeros.
void copy_plane(const Planes& s, std::int64_t js, const Planes& d, std::int64_t jd) {
  const std::int64_t plane = s.plane;
  constexpr std::int64_t kPieces = 8;  // per channel group, so that both threads copy
  if (s.layout == d.layout) {
    const std::int64_t n = plane * s.block();
    parallel_for(s.groups() * kPieces, 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t it = b; it < e; ++it) {
        const std::int64_t g = it / kPieces, k = it % kPieces;
        const std::int64_t x0 = n * k / kPieces, x1 = n * (k + 1) / kPieces;
        std::memcpy(d.at(g, jd) + x0, s.at(g, js) + x0, static_cast<std::size_t>(x1 - x0) * sizeof(float));
      }
    });
    return;
  }
  if (s.layout == Layout::plain) {  // plain -> blocked
    const std::int64_t B = d.block(), c = s.channels;
    parallel_for(d.groups() * kPieces, 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t it = b; it < e; ++it) {
        const std::int64_t g = it / kPieces, k = it % kPieces;
        const std::int64_t x0 = plane * k / kPieces, x1 = plane * (k + 1) / kPieces;
        float* dst = d.at(g, jd);
        for (std::int64_t l = 0; l < B; ++l) {
          const std::int64_t ch = g * B + l;
          const float* src = ch < c ? s.at(ch, js) : nullptr;
          for (std::int64_t x = x0; x < x1; ++x) dst[x * B + l] = src ? src[x] : 0.f;
        }
      }
    });
    return;
  }
  if (d.layout == Layout::plain) {  // blocked -> plain
    const std::int64_t B = s.block();
    parallel_for(d.channels * kPieces, 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t it = b; it < e; ++it) {
        const std::int64_t ch = it / kPieces, k = it % kPieces;
        const std::int64_t x0 = plane * k / kPieces, x1 = plane * (k + 1) / kPieces;
        const float* src = s.at(ch / B, js) + ch % B;
        float* dst = d.at(ch, jd);
        for (std::int64_t x = x0; x < x1; ++x) dst[x] = src[x * B];
      }
    });
    return;
  }
  // Blocked with different blocks: through plain values, one channel at a time.
  const std::int64_t bs = s.block(), bd = d.block();
  parallel_for(round_up(d.channels, bd), 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t ch = b; ch < e; ++ch) {
      float* dst = d.at(ch / bd, jd) + ch % bd;
      if (ch >= s.channels) {
        for (std::int64_t x = 0; x < plane; ++x) dst[x * bd] = 0.f;
        continue;
      }
      const float* src = s.at(ch / bs, js) + ch % bs;
      for (std::int64_t x = 0; x < plane; ++x) dst[x * bd] = src[x * bs];
    }
  });
}

// Elementwise operators with one input whose value per element does not depend on where the
// element lies (scalar functions), and that are finite at 0 (channel padding lanes).
bool streamable_unary(const Node& n) {
  static const std::set<std::string> kOps = {"Relu", "LeakyRelu", "Elu",  "Selu",     "Sigmoid",  "Tanh",
                                             "Gelu", "Softplus",  "Erf",  "HardSigmoid", "HardSwish", "Neg", "Abs"};
  return kOps.count(n.op_type) && n.num_inputs() == 1 && (n.domain.empty() || n.domain == "ai.onnx");
}

struct Unary {
  std::unique_ptr<Op> op;
  // Applies the operator in place to `count` floats.
  void apply(float* p, std::int64_t count) const {
    Tensor t = Tensor::wrap(p, Shape{count}, DType::f32);
    std::vector<const Tensor*> in{&t};
    std::vector<Tensor*> out{&t};
    op->run(in, out, nullptr);
  }
};

Unary make_unary(const Node& n, std::int64_t opset) {
  Unary u{create_op(n, opset)};
  std::vector<ValueMeta> in{{true, Shape{1}, DType::f32, nullptr}}, out(1);
  out[0].present = true;
  u.op->infer(in, out);
  u.op->prepare(in, out);
  return u;
}

struct ConvLayer {
  std::string name;
  ConvParams p;  // the whole-volume problem
  Epilogue ep;
  const float* wei = nullptr;
  std::string kernel_name;
  std::unique_ptr<ConvKernel> kernel;              // streaming kernel (kd > 1 or one that streams)
  std::map<std::int64_t, std::unique_ptr<ConvKernel>> packed;  // per chunk depth, for the others
  Layout src = Layout::plain, dst = Layout::plain;
  std::int64_t halo = 0, chunk = 1;
  bool ring = true;  // input through a ring and run_planes, else packed chunks
  std::vector<Unary> post;

  // Run state.
  std::int64_t ring_planes = 0;      // R (ring); chunk planes (packed)
  std::shared_ptr<std::byte> in_mem, out_mem;
  std::int64_t have = 0;             // input planes delivered
  std::int64_t produced = 0;         // output planes done
  std::int64_t cur_begin = 0, cur_planes = 0;  // the chunk being filled (packed input)
  bool direct_source = false;        // reads the stage's source buffer itself (no ring)

  Planes input_view() const {
    return {reinterpret_cast<float*>(in_mem.get()), src, p.ic, ring ? ring_planes : cur_planes, p.ih * p.iw};
  }
  std::int64_t input_slot(std::int64_t d) const { return ring ? d % ring_planes : d - cur_begin; }
};

// Which kernels ConvOp::prepare makes for a layer; the one named `want` (what Session's plan
// runs) or null.
std::unique_ptr<ConvKernel> make_named_kernel(const ConvParams& p, const float* wei, const Epilogue& ep,
                                              const std::string& want) {
  Isa isa = active_isa();
  if (isa == Isa::avx512 && std::max(p.ic / p.groups, p.oc / p.groups) <= 8) isa = Isa::avx2;
  auto kernel = kernels::make_conv_kernel(p, wei, ep, false, isa);
  if (!kernel) return nullptr;
  if (kernel->name() == want) return kernel;
  if (kernel->src_layout() != Layout::plain) {
    auto head = kernels::make_conv_head_kernel(p, wei, ep, kernel->src_layout(), isa);
    if (head && head->name() == want) return head;
  } else {
    auto small = kernels::make_small_plain_conv_kernel(p, wei, ep, active_isa());
    if (small && small->name() == want) return small;
  }
  return nullptr;
}

struct Stage {
  std::vector<ConvLayer> convs;
  std::unique_ptr<Op> norm;   // null: the stage ends in the argmax
  const Tensor* norm_scale = nullptr;
  const Tensor* norm_bias = nullptr;
  std::vector<Unary> norm_post;
};

}  // namespace

struct StreamingArgmax::Impl {
  std::vector<Stage> stages;
  std::int64_t d = 1, h = 1, w = 1, in_channels = 1;
  int threads = 0;
  std::shared_ptr<std::byte> workspace;
  std::size_t workspace_bytes = 0;
  StreamingStats stats;

  // Stage run state.
  Planes source;                // the stage's input (whole volume)
  Planes sink;                  // the stage's output (whole volume), when it ends in a normalisation
  float* labels = nullptr;
  Planes output;                // run_output(): the last convolution's output, whole

  void pull(Stage& st, std::size_t l, std::int64_t target);
  void deliver_to_sink(Stage& st, const ConvLayer& c, std::int64_t z0, std::int64_t n);
};

namespace {

// The padded whole-volume problem of a Conv node on [1, C, D, H, W], or why it cannot stream.
bool conv_params(const Node& n, const Shape& x, const Tensor& w, ConvParams& p, std::string& why) {
  if (w.rank() != 5) return why = n.label() + ": not a 3D convolution", false;
  if (n.get_int("group", 1) != 1) return why = n.label() + ": grouped", false;
  const auto strides = n.get_ints("strides", {1, 1, 1}), dil = n.get_ints("dilations", {1, 1, 1});
  auto pads = n.get_ints("pads", {0, 0, 0, 0, 0, 0});
  if (strides.size() != 3 || dil.size() != 3 || pads.size() != 6) return why = n.label() + ": attributes", false;
  if (strides[0] != 1 || strides[1] != 1 || strides[2] != 1) return why = n.label() + ": strided", false;
  const std::string auto_pad = n.get_string("auto_pad", "NOTSET");
  p.n = 1;
  p.ic = x[1], p.id = x[2], p.ih = x[3], p.iw = x[4];
  p.oc = w.dim(0);
  p.kd = w.dim(2), p.kh = w.dim(3), p.kw = w.dim(4);
  p.dd = dil[0], p.dh = dil[1], p.dw = dil[2];
  const std::int64_t k3[3] = {p.kd, p.kh, p.kw}, d3[3] = {p.dd, p.dh, p.dw}, in3[3] = {p.id, p.ih, p.iw};
  std::int64_t o3[3];
  for (int a = 0; a < 3; ++a) {
    const std::int64_t ke = (k3[a] - 1) * d3[a] + 1;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      const std::int64_t total = std::max<std::int64_t>(0, ke - 1);
      pads[static_cast<std::size_t>(a)] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      pads[static_cast<std::size_t>(a + 3)] = total - pads[static_cast<std::size_t>(a)];
    } else if (auto_pad == "VALID") {
      pads[static_cast<std::size_t>(a)] = pads[static_cast<std::size_t>(a + 3)] = 0;
    }
    o3[a] = ConvParams::conv_out(in3[a], k3[a], 1, d3[a], pads[static_cast<std::size_t>(a)], pads[static_cast<std::size_t>(a + 3)]);
  }
  p.pd = pads[0], p.ph = pads[1], p.pw = pads[2];
  p.od = o3[0], p.oh = o3[1], p.ow = o3[2];
  if (p.od != p.id || p.oh != p.ih || p.ow != p.iw) return why = n.label() + ": does not keep the spatial size", false;
  if (pads[0] != pads[3]) return why = n.label() + ": asymmetric padding along D", false;
  if (w.dim(1) != p.ic) return why = n.label() + ": channels do not match the weights", false;
  return true;
}

}  // namespace

StreamingArgmax::StreamingArgmax(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StreamingArgmax::~StreamingArgmax() = default;
StreamingStats StreamingArgmax::stats() const { return impl_->stats; }

std::unique_ptr<StreamingArgmax> StreamingArgmax::create(Session& session, const Shape& input_shape, int threads,
                                                         std::string* why_out) {
  std::string why;
  auto no = [&](const std::string& reason) -> std::unique_ptr<StreamingArgmax> {
    if (why_out) *why_out = reason;
    return nullptr;
  };
  const Graph& g = session.graph();
  if (g.inputs.size() != 1 || g.outputs.size() != 1) return no("the network has several inputs or outputs");
  if (input_shape.rank() != 5 || input_shape[0] != 1) return no("the input is not [1, C, D, H, W]");
  if (g.inputs[0].dtype != DType::f32) return no("the input is not f32");

  // The chain: each node reads the previous one's output (its other inputs are constants) and
  // is the only reader of it.
  const auto uses = g.use_counts();
  std::map<std::string, int> consumer;
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    for (std::size_t j = 0; j < g.nodes[i].inputs.size(); ++j) {
      const std::string& v = g.nodes[i].inputs[j];
      if (v.empty() || g.is_constant(v)) continue;
      if (j != 0) return no(g.nodes[i].label() + ": a second runtime input");
      if (consumer.count(v)) return no("value '" + v + "' has several readers");
      consumer[v] = static_cast<int>(i);
    }
  std::vector<const Node*> chain;
  std::string value = g.inputs[0].name;
  while (value != g.outputs[0].name) {
    auto it = consumer.find(value);
    if (it == consumer.end()) return no("value '" + value + "' is not read");
    const Node& n = g.nodes[static_cast<std::size_t>(it->second)];
    if (n.outputs.size() != 1) return no(n.label() + ": several outputs");
    if (uses.at(n.outputs[0]) != 1 && n.outputs[0] != g.outputs[0].name) return no(n.label() + ": output read twice");
    chain.push_back(&n);
    value = n.outputs[0];
  }
  if (chain.size() != g.nodes.size()) return no("the graph is not a single chain");
  for (const Node* n : chain)
    if (n->op_type != "Conv" && n->op_type != "InstanceNormalization" && !streamable_unary(*n))
      return no(n->label() + ": operator " + n->op_type + " does not stream");

  // Kernels Session picks for this input (they do not depend on D: plan one plane). A layer
  // that does not keep the grid may make that plan fail: such a graph does not stream.
  Shape small = input_shape;
  small[2] = 1;
  PlanStats plan;
  try {
    plan = session.plan_stats({small});
  } catch (const Error& e) {
    return no(std::string("the network cannot be planned for one plane: ") + e.what());
  }
  std::size_t conv_index = 0;

  auto impl = std::make_unique<Impl>();
  impl->d = input_shape[2], impl->h = input_shape[3], impl->w = input_shape[4];
  impl->in_channels = input_shape[1];
  impl->threads = threads;
  const std::int64_t plane = impl->h * impl->w;
  // Packed chunks of head kernels start at a multiple of 16 pixels (their vector groups).
  const std::int64_t head_align = 16 / std::gcd(plane, std::int64_t{16});

  Shape x = input_shape;
  impl->stages.emplace_back();
  for (std::size_t i = 0; i < chain.size(); ++i) {
    const Node& n = *chain[i];
    Stage& st = impl->stages.back();
    if (n.op_type == "Conv") {
      if (!n.domain.empty() && n.domain != "ai.onnx") return no(n.label() + ": domain " + n.domain);
      if (n.num_inputs() > 4 || !g.is_constant(n.inputs[1]) || (n.has_input(2) && !g.is_constant(n.inputs[2])))
        return no(n.label() + ": residual or runtime weights");
      ConvLayer c;
      c.name = n.name;
      const Tensor& w = g.initializers.at(n.inputs[1]);
      if (w.dtype() != DType::f32 || x.rank() != 5) return no(n.label() + ": not f32 3D");
      if (!conv_params(n, x, w, c.p, why)) return no(why);
      c.wei = w.data<float>();
      c.ep.act = parse_activation(n, c.ep.alpha, c.ep.beta);
      c.ep.bias = n.has_input(2) ? g.initializers.at(n.inputs[2]).data<float>() : nullptr;
      if (n.has_input(3)) {
        const Tensor& s = g.initializers.at(n.inputs[3]);
        c.ep.slope = s.data<float>();
        c.ep.slope_per_channel = s.numel() != 1;
      }
      if (conv_index >= plan.kernel_choices.size() || plan.kernel_choices[conv_index].node != n.name)
        return no(n.label() + ": not found in the session's plan");
      c.kernel_name = plan.kernel_choices[conv_index++].kernel;
      c.kernel = make_named_kernel(c.p, c.wei, c.ep, c.kernel_name);
      if (!c.kernel) return no(n.label() + ": kernel " + c.kernel_name + " is not one the optimized list makes");
      c.src = c.kernel->src_layout();
      c.dst = c.kernel->dst_layout();
      c.halo = c.p.pd;
      if (c.kernel->plane_alignment() > 0) {
        c.ring = true;
        c.chunk = c.kernel->plane_alignment();
      } else if (c.p.kd == 1 && c.p.pd == 0) {
        c.ring = false;
        const std::int64_t prev = st.convs.empty() ? 1 : st.convs.back().chunk;
        c.chunk = std::lcm(prev, head_align);
      } else {
        return no(n.label() + ": kernel " + c.kernel_name + " cannot stream planes");
      }
      st.convs.push_back(std::move(c));
      x = Shape{1, st.convs.back().p.oc, x[2], x[3], x[4]};
      continue;
    }
    if (streamable_unary(n)) {
      if (!st.convs.empty()) st.convs.back().post.push_back(make_unary(n, g.opset));
      else if (impl->stages.size() > 1) impl->stages[impl->stages.size() - 2].norm_post.push_back(make_unary(n, g.opset));
      else return no(n.label() + ": before the first convolution");
      continue;
    }
    if (n.op_type == "InstanceNormalization") {
      if (st.convs.empty() || !st.convs.back().post.empty())
        return no(n.label() + ": not right after a convolution");
      if (!g.is_constant(n.inputs.at(1)) || !g.is_constant(n.inputs.at(2)) || n.num_inputs() != 3)
        return no(n.label() + ": runtime scale or bias");
      st.norm = create_op(n, g.opset);
      st.norm_scale = &g.initializers.at(n.inputs[1]);
      st.norm_bias = &g.initializers.at(n.inputs[2]);
      std::vector<ValueMeta> in{{true, x, DType::f32, nullptr},
                                {true, st.norm_scale->shape(), DType::f32, st.norm_scale},
                                {true, st.norm_bias->shape(), DType::f32, st.norm_bias}},
          out(1);
      out[0].present = true;
      st.norm->infer(in, out);
      st.norm->prepare(in, out);
      const Layout l = st.convs.back().dst;
      st.norm->set_layouts({l, Layout::plain, Layout::plain}, {l});
      impl->stages.emplace_back();
      continue;
    }
    return no(n.label() + ": operator " + n.op_type + " does not stream");
  }
  if (impl->stages.back().convs.empty()) return no("the network does not end in a convolution");

  // Buffers: rings, chunk outputs, whole activations for the normalisations.
  const std::int64_t D = impl->d;
  StreamingStats& s = impl->stats;
  std::int64_t full_floats = 0, prev_full = 0;
  bool have_full = false;
  for (std::size_t si = 0; si < impl->stages.size(); ++si) {
    Stage& st = impl->stages[si];
    s.normalisations += st.norm ? 1 : 0;
    // Stages run one after the other: only one stage's rings exist at a time.
    std::int64_t stage_bytes = 0, stage_planes = 0;
    for (std::size_t l = 0; l < st.convs.size(); ++l) {
      ConvLayer& c = st.convs[l];
      ++s.convolutions;
      const std::int64_t prev_chunk = l == 0 ? 1 : st.convs[l - 1].chunk;
      c.ring_planes = c.ring ? std::min(D, 2 * c.halo + c.chunk + prev_chunk - 1) : c.chunk;
      stage_bytes += (buffer_floats(c.src, c.p.ic, c.ring_planes, plane) + buffer_floats(c.dst, c.p.oc, c.chunk, plane)) *
                     static_cast<std::int64_t>(sizeof(float));
      stage_planes += c.ring_planes;
      if (c.kernel) impl->workspace_bytes = std::max(impl->workspace_bytes, c.kernel->workspace_bytes());
    }
    s.ring_bytes = std::max(s.ring_bytes, stage_bytes);
    s.planes_held = std::max(s.planes_held, stage_planes);
    if (st.norm) {
      const ConvLayer& last = st.convs.back();
      const std::int64_t f = buffer_floats(last.dst, last.p.oc, D, plane);
      // In place over the stage's source when both have the same layout and size.
      const bool in_place = have_full && f == prev_full && si > 0 &&
                            impl->stages[si - 1].convs.back().dst == last.dst;
      if (!in_place) full_floats += f;
      else full_floats = std::max(full_floats, f);
      prev_full = f;
      have_full = true;
    }
  }
  s.full_bytes = full_floats * static_cast<std::int64_t>(sizeof(float));
  impl->workspace = aligned_bytes(impl->workspace_bytes);
  return std::unique_ptr<StreamingArgmax>(new StreamingArgmax(std::move(impl)));
}

// Makes layer l of the stage produce its outputs up to plane `target`, each chunk passed on
// (to layer l + 1's input, the whole-volume sink, or the argmax) as it is done.
void StreamingArgmax::Impl::pull(Stage& st, std::size_t l, std::int64_t target) {
  ConvLayer& c = st.convs[l];
  const std::int64_t plane = h * w;
  while (c.produced < target) {
    const std::int64_t z0 = c.produced, n = std::min(c.chunk, d - z0), z1 = z0 + n;
    const std::int64_t need = std::min(d, z1 + c.halo);
    if (!c.ring) {
      c.cur_begin = z0;
      c.cur_planes = n;
    }
    if (c.direct_source) {
      c.have = need;
    } else if (l == 0) {
      const Planes in = c.input_view();
      for (std::int64_t q = std::max(c.have, c.ring ? std::int64_t{0} : z0); q < need; ++q)
        copy_plane(source, q, in, c.input_slot(q));
      c.have = need;
    } else {
      pull(st, l - 1, need);
    }
    float* out = reinterpret_cast<float*>(c.out_mem.get());
    // The chunk goes straight into the next layer's ring when that ring holds one channel
    // block in this layer's layout and the chunk's slots do not wrap: no copy.
    bool in_next = false;
    if (l + 1 < st.convs.size()) {
      const ConvLayer& next = st.convs[l + 1];
      const Planes to = next.input_view();
      const std::int64_t slot = next.ring ? next.input_slot(z0) : -1;
      in_next = next.ring && next.src == c.dst && next.p.ic == c.p.oc && to.groups() == 1 &&
                slot + n <= next.ring_planes;
      if (in_next) out = to.at(0, slot);
    }
    if (c.ring) {
      const float* src = c.direct_source ? source.base : reinterpret_cast<const float*>(c.in_mem.get());
      c.kernel->run_planes(src, c.direct_source ? 0 : c.ring_planes, out, z0, n, workspace.get());
    } else {
      auto& k = c.packed[n];
      if (!k) {
        ConvParams q = c.p;
        q.id = q.od = n;
        k = make_named_kernel(q, c.wei, c.ep, c.kernel_name);
        VOXINFER_CHECK(k, internal, "streaming: " + c.name + ": no " + c.kernel_name + " for a chunk of " + std::to_string(n) + " planes");
        if (k->workspace_bytes() > workspace_bytes) {
          workspace_bytes = k->workspace_bytes();
          workspace = aligned_bytes(workspace_bytes);
        }
      }
      k->run(reinterpret_cast<const float*>(c.in_mem.get()), out, nullptr, workspace.get());
    }
    const std::int64_t out_count = buffer_floats(c.dst, c.p.oc, n, plane);
    for (const Unary& u : c.post) u.apply(out, out_count);
    if (l + 1 < st.convs.size()) {
      ConvLayer& next = st.convs[l + 1];
      if (!in_next) {
        const Planes from{out, c.dst, c.p.oc, n, plane};
        const Planes to = next.input_view();
        for (std::int64_t j = 0; j < n; ++j) copy_plane(from, j, to, next.input_slot(z0 + j));
      }
      next.have = z1;
    } else {
      deliver_to_sink(st, c, z0, n);
    }
    c.produced = z1;
  }
}

void StreamingArgmax::Impl::deliver_to_sink(Stage& st, const ConvLayer& c, std::int64_t z0, std::int64_t n) {
  const std::int64_t plane = h * w;
  float* out = reinterpret_cast<float*>(c.out_mem.get());
  if (st.norm) {
    const Planes from{out, c.dst, c.p.oc, n, plane};
    for (std::int64_t j = 0; j < n; ++j) copy_plane(from, j, sink, z0 + j);
    return;
  }
  if (output.base) {
    const Planes from{out, c.dst, c.p.oc, n, plane};
    for (std::int64_t j = 0; j < n; ++j) copy_plane(from, j, output, z0 + j);
    return;
  }
  // The argmax over the real channels, as argmax_channels: the first largest value wins.
  const std::int64_t k = c.p.oc, count = n * plane, B = layout_block(c.dst);
  const bool blocked = c.dst != Layout::plain;
  float* dst = labels + z0 * plane;
  parallel_for(count, 4096, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      auto value = [&](std::int64_t ch) {
        return blocked ? out[((ch / B) * count + i) * B + ch % B] : out[ch * count + i];
      };
      std::int64_t best = 0;
      float m = value(0);
      for (std::int64_t ch = 1; ch < k; ++ch) {
        const float v = value(ch);
        if (v > m) {
          m = v;
          best = ch;
        }
      }
      dst[i] = static_cast<float>(best);
    }
  });
}

Tensor StreamingArgmax::run_output(const Tensor& input) {
  const StreamingArgmax::Impl& m = *impl_;
  const std::int64_t k = m.stages.back().convs.back().p.oc;
  Tensor out(Shape{1, k, m.d, m.h, m.w}, DType::f32);
  impl_->output = {out.data<float>(), Layout::plain, k, m.d, m.h * m.w};
  try {
    run(input);
  } catch (...) {
    impl_->output = Planes{};
    throw;
  }
  impl_->output = Planes{};
  return out;
}

Tensor StreamingArgmax::run(Tensor input_in) {
  Impl& m = *impl_;
  Tensor input = input_in.contiguous();
  input_in = Tensor();
  VOXINFER_CHECK(input.dtype() == DType::f32 && input.layout() == Layout::plain && input.rank() == 5 &&
                     input.dim(0) == 1 && input.dim(1) == m.in_channels && input.dim(2) == m.d && input.dim(3) == m.h &&
                     input.dim(4) == m.w,
                 invalid_input, "streaming: the input " + input.shape().str() + " is not the planned one");
  if (m.threads > 0) set_num_threads(m.threads);
  const std::int64_t plane = m.h * m.w;
  Tensor labels(Shape{1, m.d, m.h, m.w}, DType::f32);
  m.labels = labels.data<float>();
  m.source = {const_cast<float*>(input.data<float>()), Layout::plain, m.in_channels, m.d, plane};
  std::shared_ptr<std::byte> source_mem;  // the whole activation the stage reads, when not the input
  for (std::size_t si = 0; si < m.stages.size(); ++si) {
    Stage& st = m.stages[si];
    for (ConvLayer& c : st.convs) {
      c.have = c.produced = 0;
      c.in_mem = aligned_bytes(static_cast<std::size_t>(buffer_floats(c.src, c.p.ic, c.ring_planes, plane)) * sizeof(float));
      c.out_mem = aligned_bytes(static_cast<std::size_t>(buffer_floats(c.dst, c.p.oc, c.chunk, plane)) * sizeof(float));
    }
    ConvLayer& first = st.convs.front();
    std::shared_ptr<std::byte> sink_mem;
    if (st.norm) {
      const ConvLayer& last = st.convs.back();
      const std::int64_t f = buffer_floats(last.dst, last.p.oc, m.d, plane);
      if (source_mem && m.source.layout == last.dst && buffer_floats(m.source.layout, m.source.channels, m.d, plane) == f) {
        sink_mem = source_mem;  // in place: a plane is overwritten only after every read of it
      } else {
        sink_mem = aligned_bytes(static_cast<std::size_t>(f) * sizeof(float));
      }
      m.sink = {reinterpret_cast<float*>(sink_mem.get()), last.dst, last.p.oc, m.d, plane};
    }
    // The first convolution reads the source itself when nothing overwrites it meanwhile and it
    // is in the kernel's layout.
    first.direct_source = first.ring && m.source.layout == first.src && sink_mem != source_mem &&
                          (first.src != Layout::plain || m.source.channels == first.p.ic);
    if (first.direct_source) first.in_mem.reset();
    m.pull(st, st.convs.size() - 1, m.d);
    for (ConvLayer& c : st.convs) c.in_mem.reset(), c.out_mem.reset();
    if (!st.norm) break;
    // The normalisation over the whole volume, then its elementwise operators, in place.
    Tensor t = Tensor::wrap(m.sink.base, Shape{1, m.sink.channels, m.d, m.h, m.w}, DType::f32, {}, m.sink.layout);
    std::vector<const Tensor*> in{&t, st.norm_scale, st.norm_bias};
    std::vector<Tensor*> out{&t};
    st.norm->run(in, out, nullptr);
    const std::int64_t count = buffer_floats(m.sink.layout, m.sink.channels, m.d, plane);
    for (const Unary& u : st.norm_post) u.apply(m.sink.base, count);
    source_mem = sink_mem;
    m.source = m.sink;
    input = Tensor();  // only the first stage reads the network input
  }
  m.labels = nullptr;
  return labels;
}

}  // namespace voxinfer::graph
