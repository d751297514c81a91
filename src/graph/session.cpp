// Session: plans per input-shape set (fold constants and shape sub-graphs, prepare
// operators, lay out one arena from liveness), then runs the remaining steps.
#include "voxinfer/graph/session.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>

#include "graph/op.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/graph/onnx_import.h"
#include "voxinfer/graph/passes.h"
#include "voxinfer/graph/planner.h"
#include "voxinfer/graph/tfjs_import.h"

namespace voxinfer::graph {

Graph load_model(const std::string& path) {
  const std::filesystem::path p(path);
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec)) {
    for (const char* name : {"model.onnx", "model.json"})
      if (std::filesystem::exists(p / name, ec)) return load_model((p / name).string());
    throw Error(ErrorCode::invalid_input, path + ": folder holds neither model.onnx nor model.json");
  }
  if (!std::filesystem::exists(p, ec)) throw Error(ErrorCode::invalid_input, path + ": no such model file");
  if (p.extension() == ".json") return import_tfjs(path);
  return import_onnx(path);
}

namespace {

enum class Kind { absent, constant, input, dynamic };

struct Slot {
  Kind kind = Kind::absent;
  ValueMeta meta;
  Tensor constant;
  int buffer = -1;      // arena buffer for dynamic values
  int graph_input = -1;
  int graph_output = -1;
  int last_use = -1;
};

struct Step {
  std::unique_ptr<Op> op;
  std::vector<int> in, out;  // slot indices, -1 when omitted
  std::int64_t flops = 0;
  double ms = 0;  // accumulated when profiling
  int runs = 0;
};

}  // namespace

struct Plan {
  std::vector<Slot> slots;
  std::vector<Step> steps;
  std::vector<BufferRequest> buffers;
  ArenaPlan arena;
  std::shared_ptr<std::byte> arena_mem;
  std::shared_ptr<std::byte> workspace;
  std::size_t workspace_bytes = 0;
  std::vector<Layout> layouts;  // per slot
  // Per slot, the graph output of the last run: reused by the next run once the caller has
  // let go of it (no page faults or zeroing for a fresh buffer per run).
  std::vector<Tensor> spare_outputs;
  PlanStats stats;
};

struct Session::Impl {
  Graph graph;
  SessionOptions options;
  std::map<std::vector<std::vector<std::int64_t>>, std::shared_ptr<Plan>> plans;
  std::shared_ptr<Plan> last_plan;
  std::mutex mutex;

  std::shared_ptr<Plan> plan_for(const std::vector<Shape>& shapes, const std::vector<DType>& dtypes);
  std::shared_ptr<Plan> build(const std::vector<Shape>& shapes, const std::vector<DType>& dtypes);
  void check_inputs(const std::vector<Shape>& shapes, const std::vector<DType>& dtypes) const;
};

void Session::Impl::check_inputs(const std::vector<Shape>& shapes, const std::vector<DType>& dtypes) const {
  if (shapes.size() != graph.inputs.size())
    throw Error(ErrorCode::invalid_input, "the model takes " + std::to_string(graph.inputs.size()) + " input(s), got " + std::to_string(shapes.size()));
  std::map<std::string, std::int64_t> symbols;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const ValueInfo& vi = graph.inputs[i];
    const Shape& s = shapes[i];
    if (dtypes[i] != vi.dtype)
      throw Error(ErrorCode::invalid_input, "input '" + vi.name + "' must be " + std::string(dtype_name(vi.dtype)) + ", got " + std::string(dtype_name(dtypes[i])));
    for (int k = 0; k < s.rank(); ++k)
      if (s[k] == 0) throw Error(ErrorCode::invalid_input, "input '" + vi.name + "' has a 0-sized dimension " + std::to_string(k) + " (" + s.str() + ")");
    if (!vi.has_shape) continue;
    if (static_cast<int>(vi.dims.size()) != s.rank())
      throw Error(ErrorCode::invalid_input, "input '" + vi.name + "' must have rank " + std::to_string(vi.dims.size()) + " " + vi.dims_str() + ", got " + s.str());
    for (int k = 0; k < s.rank(); ++k) {
      const Dim& d = vi.dims[static_cast<std::size_t>(k)];
      if (d.known() && d.value != s[k])
        throw Error(ErrorCode::invalid_input, "input '" + vi.name + "' dimension " + std::to_string(k) + " must be " + std::to_string(d.value) +
                                                  " " + vi.dims_str() + ", got " + s.str() + (k == 1 ? " (channel count mismatch)" : ""));
      if (!d.known() && !d.symbol.empty()) {
        auto [it, inserted] = symbols.emplace(d.symbol, s[k]);
        if (!inserted && it->second != s[k])
          throw Error(ErrorCode::invalid_input, "input '" + vi.name + "' dimension '" + d.symbol + "' is " + std::to_string(s[k]) +
                                                    " but another input has " + std::to_string(it->second));
      }
    }
  }
}

std::shared_ptr<Plan> Session::Impl::plan_for(const std::vector<Shape>& shapes, const std::vector<DType>& dtypes) {
  std::vector<std::vector<std::int64_t>> key;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    auto v = shapes[i].vec();
    v.push_back(static_cast<std::int64_t>(dtypes[i]));
    key.push_back(std::move(v));
  }
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  check_inputs(shapes, dtypes);
  auto plan = build(shapes, dtypes);
  plans[key] = plan;
  return plan;
}

std::shared_ptr<Plan> Session::Impl::build(const std::vector<Shape>& shapes, const std::vector<DType>& dtypes) {
  auto plan = std::make_shared<Plan>();
  // ValueMeta::constant points into plan->slots while an operator is prepared, and creating
  // its output slots must not move them: room for every name the graph can mention.
  std::size_t names = graph.initializers.size() + graph.inputs.size() + graph.outputs.size();
  for (const Node& node : graph.nodes) names += node.inputs.size() + node.outputs.size();
  plan->slots.reserve(names);
  std::map<std::string, int> index;
  auto slot_of = [&](const std::string& name) -> int {
    auto it = index.find(name);
    if (it != index.end()) return it->second;
    const int k = static_cast<int>(plan->slots.size());
    plan->slots.emplace_back();
    index[name] = k;
    return k;
  };
  for (const auto& [name, t] : graph.initializers) {
    Slot& s = plan->slots[static_cast<std::size_t>(slot_of(name))];
    s.kind = Kind::constant;
    s.constant = t;
    s.meta = {true, t.shape(), t.dtype(), nullptr};
  }
  for (std::size_t i = 0; i < graph.inputs.size(); ++i) {
    Slot& s = plan->slots[static_cast<std::size_t>(slot_of(graph.inputs[i].name))];
    s.kind = Kind::input;
    s.graph_input = static_cast<int>(i);
    s.meta = {true, shapes[i], dtypes[i], nullptr};
  }
  for (std::size_t i = 0; i < graph.outputs.size(); ++i) plan->slots[static_cast<std::size_t>(slot_of(graph.outputs[i].name))].graph_output = static_cast<int>(i);

  PlanStats& st = plan->stats;
  for (const Node& node : graph.nodes) {
    auto op = create_op(node, graph.opset);
    std::vector<ValueMeta> in;
    std::vector<int> in_idx;
    bool all_const = true;
    for (const auto& name : node.inputs) {
      if (name.empty()) {
        in.push_back({});
        in_idx.push_back(-1);
        continue;
      }
      const int k = slot_of(name);
      Slot& s = plan->slots[static_cast<std::size_t>(k)];
      if (s.kind == Kind::absent) throw Error(ErrorCode::invalid_model, node.label() + ": input '" + name + "' is not available");
      ValueMeta m = s.meta;
      m.constant = s.kind == Kind::constant ? &s.constant : nullptr;
      all_const = all_const && s.kind == Kind::constant;
      in.push_back(m);
      in_idx.push_back(k);
    }
    std::vector<ValueMeta> out(node.outputs.size());
    for (auto& o : out) o.present = true;
    op->infer(in, out);
    std::vector<int> out_idx;
    for (std::size_t i = 0; i < node.outputs.size(); ++i) {
      if (node.outputs[i].empty() || !out[i].present) {
        out_idx.push_back(-1);
        continue;
      }
      const int k = slot_of(node.outputs[i]);
      plan->slots[static_cast<std::size_t>(k)].meta = out[i];
      out_idx.push_back(k);
    }
    op->use_reference_kernels(options.kernels == KernelChoice::reference);
    op->prepare(in, out);
    if (all_const || op->shape_only()) {
      // Fold: run now, keep the outputs as constants.
      std::vector<const Tensor*> ins;
      std::vector<Tensor> holders;
      for (int k : in_idx) {
        if (k < 0) {
          ins.push_back(nullptr);
          continue;
        }
        Slot& s = plan->slots[static_cast<std::size_t>(k)];
        if (s.kind == Kind::constant) ins.push_back(&s.constant);
        else {  // shape-only op on a runtime value: give it a shape-only tensor (no data read)
          holders.push_back(Tensor::wrap(nullptr, s.meta.shape, s.meta.dtype));
          ins.push_back(&holders.back());
        }
      }
      std::vector<Tensor> outs;
      std::vector<Tensor*> outp;
      outs.reserve(out_idx.size());
      for (std::size_t i = 0; i < out_idx.size(); ++i) {
        outs.emplace_back(out_idx[i] >= 0 ? Tensor(out[i].shape, out[i].dtype) : Tensor());
        outp.push_back(out_idx[i] >= 0 ? &outs.back() : nullptr);
      }
      std::vector<std::byte> ws(op->workspace_bytes());
      op->run(ins, outp, ws.data());
      for (std::size_t i = 0; i < out_idx.size(); ++i) {
        if (out_idx[i] < 0) continue;
        Slot& s = plan->slots[static_cast<std::size_t>(out_idx[i])];
        s.kind = Kind::constant;
        s.constant = outs[i];
        s.meta.constant = nullptr;
      }
      ++st.folded;
      continue;
    }
    for (int k : out_idx)
      if (k >= 0) plan->slots[static_cast<std::size_t>(k)].kind = Kind::dynamic;
    st.flops += op->flops(in, out);
    st.ops[node.op_type]++;
    const std::int64_t step_flops = op->flops(in, out);
    plan->steps.push_back({std::move(op), in_idx, out_idx, step_flops});
  }
  for (const auto& o : graph.outputs) {
    const Slot& s = plan->slots[static_cast<std::size_t>(index.at(o.name))];
    if (s.kind == Kind::absent) throw Error(ErrorCode::invalid_model, "graph output '" + o.name + "' is never computed");
  }
  st.steps = static_cast<int>(plan->steps.size());

  // Layout pass: a value stays in a blocked layout when its producer can write it blocked
  // and every consumer reads that layout; reorders remain only at the boundaries.
  std::vector<Layout> layout(plan->slots.size(), Layout::plain);
  {
    std::vector<std::vector<std::pair<int, int>>> consumers(plan->slots.size());
    for (std::size_t i = 0; i < plan->steps.size(); ++i)
      for (std::size_t j = 0; j < plan->steps[i].in.size(); ++j)
        if (plan->steps[i].in[j] >= 0) consumers[static_cast<std::size_t>(plan->steps[i].in[j])].emplace_back(static_cast<int>(i), static_cast<int>(j));
    for (auto& step : plan->steps) {
      // The op learns its (already decided) input layouts first: its preferred output
      // layout may follow them (InstanceNormalization keeps a blocked input blocked).
      std::vector<Layout> li, lo(step.out.size(), Layout::plain);
      for (int k : step.in) li.push_back(k >= 0 ? layout[static_cast<std::size_t>(k)] : Layout::plain);
      step.op->set_layouts(li, lo);
      for (std::size_t o = 0; o < step.out.size(); ++o) {
        const int k = step.out[o];
        if (k < 0) continue;
        const Slot& sl = plan->slots[static_cast<std::size_t>(k)];
        if (sl.graph_output >= 0 || sl.kind != Kind::dynamic || sl.meta.dtype != DType::f32 || sl.meta.shape.rank() != 5) continue;
        const Layout want = step.op->preferred_output_layout(static_cast<int>(o));
        const auto& cons = consumers[static_cast<std::size_t>(k)];
        if (want == Layout::plain || cons.empty()) continue;
        bool ok = true;
        for (const auto& [ci, cj] : cons) ok = ok && plan->steps[static_cast<std::size_t>(ci)].op->accepts_input_layout(cj, want);
        if (ok) layout[static_cast<std::size_t>(k)] = want;
      }
    }
    for (auto& step : plan->steps) {
      std::vector<Layout> li, lo;
      for (int k : step.in) li.push_back(k >= 0 ? layout[static_cast<std::size_t>(k)] : Layout::plain);
      for (int k : step.out) lo.push_back(k >= 0 ? layout[static_cast<std::size_t>(k)] : Layout::plain);
      step.op->set_layouts(li, lo);
      st.kernels[step.op->kernel_name()]++;  // after the layouts: they can change the kernel
      const std::string node_type = step.op->node().op_type;
      if (node_type == "Conv" || node_type == "ConvTranspose") {
        KernelChoiceNote note{step.op->node().name, node_type, step.op->kernel_name(), {}};
        std::istringstream lines(step.op->kernel_declines());
        for (std::string line; std::getline(lines, line);)
          if (!line.empty()) note.declined.push_back(line);
        st.kernel_choices.push_back(std::move(note));
      }
      st.reorders += step.op->reorders();
      plan->workspace_bytes = std::max(plan->workspace_bytes, step.op->workspace_bytes());
    }
    for (std::size_t k = 0; k < layout.size(); ++k) st.blocked_values += layout[k] != Layout::plain;
  }
  plan->layouts = layout;

  // Liveness: last step reading each slot.
  const int nsteps = static_cast<int>(plan->steps.size());
  for (int i = 0; i < nsteps; ++i)
    for (int k : plan->steps[static_cast<std::size_t>(i)].in)
      if (k >= 0) plan->slots[static_cast<std::size_t>(k)].last_use = i;

  // Buffers: graph outputs get their own tensors; aliases and in-place outputs share.
  std::vector<int> buffer_last;
  for (int i = 0; i < nsteps; ++i) {
    Step& step = plan->steps[static_cast<std::size_t>(i)];
    for (std::size_t o = 0; o < step.out.size(); ++o) {
      const int k = step.out[o];
      if (k < 0) continue;
      Slot& s = plan->slots[static_cast<std::size_t>(k)];
      if (s.graph_output >= 0) continue;
      std::int64_t bytes = s.meta.shape.numel() * static_cast<std::int64_t>(dtype_size(s.meta.dtype));
      const Layout lk = layout[static_cast<std::size_t>(k)];
      if (lk != Layout::plain) bytes = bytes / s.meta.shape[1] * round_up(s.meta.shape[1], layout_block(lk));
      const int last = std::max(s.last_use, i);
      int share = -1;
      const int alias = step.op->alias_input(static_cast<int>(o));
      if (alias >= 0 && alias < static_cast<int>(step.in.size()) && step.in[static_cast<std::size_t>(alias)] >= 0) {
        const Slot& src = plan->slots[static_cast<std::size_t>(step.in[static_cast<std::size_t>(alias)])];
        if (src.kind == Kind::dynamic && src.buffer >= 0 && lk == Layout::plain &&
            layout[static_cast<std::size_t>(step.in[static_cast<std::size_t>(alias)])] == Layout::plain) {
          share = src.buffer;
          ++st.aliased;
        }
      }
      const int inplace = o == 0 ? step.op->inplace_input() : -1;
      if (share < 0 && inplace >= 0 && inplace < static_cast<int>(step.in.size()) && step.in[static_cast<std::size_t>(inplace)] >= 0) {
        const Slot& src = plan->slots[static_cast<std::size_t>(step.in[static_cast<std::size_t>(inplace)])];
        if (src.kind == Kind::dynamic && src.buffer >= 0 && buffer_last[static_cast<std::size_t>(src.buffer)] == i &&
            src.meta.shape == s.meta.shape && src.meta.dtype == s.meta.dtype &&
            layout[static_cast<std::size_t>(step.in[static_cast<std::size_t>(inplace)])] == lk) {
          share = src.buffer;
          ++st.inplace;
        }
      }
      if (share >= 0) {
        s.buffer = share;
        buffer_last[static_cast<std::size_t>(share)] = std::max(buffer_last[static_cast<std::size_t>(share)], last);
      } else {
        s.buffer = static_cast<int>(plan->buffers.size());
        plan->buffers.push_back({bytes, i, last});
        buffer_last.push_back(last);
        st.activation_bytes += bytes;
      }
    }
  }
  for (std::size_t b = 0; b < plan->buffers.size(); ++b) plan->buffers[b].last = buffer_last[b];

  // Concat without copies: an input whose buffer the Concat reads for the last time is
  // placed inside the Concat's output at its slice (axis with nothing but 1s before it), so
  // its producers write there directly and Concat skips the copy. The output's buffer then
  // lives from the earliest of those producers. No nesting: a buffer is a parent or a child.
  const std::size_t nbuf = plan->buffers.size();
  std::vector<int> parent(nbuf, -1);
  std::vector<std::int64_t> sub_offset(nbuf, 0);
  std::vector<char> is_parent(nbuf, 0);
  for (int i = 0; i < nsteps; ++i) {
    const Step& step = plan->steps[static_cast<std::size_t>(i)];
    if (step.op->node().op_type != "Concat" || step.out.size() != 1 || step.out[0] < 0) continue;
    const int ko = step.out[0];
    const Slot& os = plan->slots[static_cast<std::size_t>(ko)];
    if (os.graph_output >= 0 || os.kind != Kind::dynamic || os.buffer < 0 || parent[static_cast<std::size_t>(os.buffer)] >= 0) continue;
    const Shape& shape = os.meta.shape;
    std::int64_t axis = step.op->node().get_int("axis", 1);
    if (axis < 0) axis += shape.rank();
    std::int64_t outer = 1, inner = static_cast<std::int64_t>(dtype_size(os.meta.dtype));
    for (int d = 0; d < axis; ++d) outer *= shape[d];
    for (int d = static_cast<int>(axis) + 1; d < shape.rank(); ++d) inner *= shape[d];
    if (outer != 1) continue;
    const Layout lo = layout[static_cast<std::size_t>(ko)];
    const std::int64_t block = layout_block(lo);
    const std::int64_t out_units = round_up(shape[static_cast<int>(axis)], block);
    std::int64_t off = 0;
    for (int k : step.in) {
      if (k < 0) break;
      const Slot& in_slot = plan->slots[static_cast<std::size_t>(k)];
      const std::int64_t units = in_slot.meta.shape[static_cast<int>(axis)];
      const int b = in_slot.buffer;
      const auto bu = static_cast<std::size_t>(b);
      const bool fits = in_slot.kind == Kind::dynamic && in_slot.graph_output < 0 && b >= 0 && b != os.buffer &&
                        parent[bu] < 0 && !is_parent[bu] && buffer_last[bu] == i && layout[static_cast<std::size_t>(k)] == lo &&
                        off % block == 0 && (off * inner) % 64 == 0 && plan->buffers[bu].bytes <= (out_units - off) * inner;
      if (fits) {
        const auto root = static_cast<std::size_t>(os.buffer);
        parent[bu] = os.buffer;
        sub_offset[bu] = off * inner;
        is_parent[root] = 1;
        plan->buffers[root].first = std::min(plan->buffers[root].first, plan->buffers[bu].first);
        ++st.concat_in_place;
      }
      off += units;
    }
  }
  std::vector<BufferRequest> roots;
  std::vector<std::size_t> root_of(nbuf);
  for (std::size_t b = 0; b < nbuf; ++b)
    if (parent[b] < 0) {
      root_of[b] = roots.size();
      roots.push_back(plan->buffers[b]);
    }
  const ArenaPlan root_plan = plan_arena(roots);
  plan->arena.total_bytes = root_plan.total_bytes;
  plan->arena.offsets.assign(nbuf, 0);
  for (std::size_t b = 0; b < nbuf; ++b)
    plan->arena.offsets[b] = parent[b] < 0 ? root_plan.offsets[root_of[b]]
                                           : root_plan.offsets[root_of[static_cast<std::size_t>(parent[b])]] + sub_offset[b];
  plan->arena_mem = aligned_bytes(static_cast<std::size_t>(plan->arena.total_bytes));
  plan->workspace = aligned_bytes(plan->workspace_bytes);
  st.arena_bytes = plan->arena.total_bytes;
  st.workspace_bytes = static_cast<std::int64_t>(plan->workspace_bytes);
  for (const auto& o : graph.outputs) {
    const Slot& s = plan->slots[static_cast<std::size_t>(index.at(o.name))];
    st.output_bytes += s.meta.shape.numel() * static_cast<std::int64_t>(dtype_size(s.meta.dtype));
  }
  return plan;
}

KernelChoice kernel_choice_from_env() {
  const char* env = std::getenv("VOXINFER_KERNELS");
  const std::string v = env ? env : "";
  if (v.empty() || v == "optimized") return KernelChoice::optimized;
  if (v == "reference") return KernelChoice::reference;
  throw Error(ErrorCode::invalid_input, "VOXINFER_KERNELS='" + v + "' is not 'optimized' or 'reference'");
}

Session::Session(Graph graph, SessionOptions options) : impl_(std::make_unique<Impl>()) {
  if (options.kernels == KernelChoice::from_env) options.kernels = kernel_choice_from_env();
  if (options.optimize) optimize_graph(graph);
  impl_->graph = std::move(graph);
  impl_->options = options;
  // Fail early on unknown operators, naming every node that cannot run.
  for (const Node& n : impl_->graph.nodes)
    if (!op_supported(n.op_type) || (!n.domain.empty() && n.domain != "ai.onnx" && n.domain != "voxinfer"))
      throw Error(ErrorCode::unsupported, n.label() + ": operator '" + (n.domain.empty() ? "" : n.domain + ".") + n.op_type + "' is not supported");
}

Session Session::from_file(const std::string& path, SessionOptions options) { return Session(load_model(path), options); }

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

const Graph& Session::graph() const { return impl_->graph; }
const std::vector<ValueInfo>& Session::inputs() const { return impl_->graph.inputs; }
const std::vector<ValueInfo>& Session::outputs() const { return impl_->graph.outputs; }

std::vector<StepProfile> Session::profile() const {
  std::vector<StepProfile> v;
  if (!impl_->last_plan) return v;
  for (const auto& s : impl_->last_plan->steps)
    v.push_back({s.op->node().name, s.op->node().op_type, s.op->kernel_name(), s.ms, s.flops, s.runs});
  std::sort(v.begin(), v.end(), [](const StepProfile& a, const StepProfile& b) { return a.ms > b.ms; });
  return v;
}

PlanStats Session::plan_stats(const std::vector<Shape>& shapes) {
  std::vector<DType> dtypes;
  for (std::size_t i = 0; i < shapes.size() && i < impl_->graph.inputs.size(); ++i) dtypes.push_back(impl_->graph.inputs[i].dtype);
  dtypes.resize(shapes.size(), DType::f32);
  return impl_->plan_for(shapes, dtypes)->stats;
}

std::vector<Tensor> Session::run(const std::vector<Tensor>& inputs_in) {
  if (impl_->options.threads > 0) set_num_threads(impl_->options.threads);
  std::vector<Tensor> inputs;
  std::vector<Shape> shapes;
  std::vector<DType> dtypes;
  for (const Tensor& t : inputs_in) {
    if (t.layout() != Layout::plain) throw Error(ErrorCode::invalid_input, "inputs must be in the plain layout");
    inputs.push_back(t.contiguous());
    shapes.push_back(t.shape());
    dtypes.push_back(t.dtype());
  }
  auto plan = impl_->plan_for(shapes, dtypes);
  std::vector<Tensor> vals(plan->slots.size());
  std::vector<Tensor> outputs(impl_->graph.outputs.size());
  for (std::size_t k = 0; k < plan->slots.size(); ++k) {
    const Slot& s = plan->slots[k];
    switch (s.kind) {
      case Kind::constant: vals[k] = s.constant; break;
      case Kind::input: vals[k] = inputs[static_cast<std::size_t>(s.graph_input)]; break;
      case Kind::dynamic:
        if (s.graph_output >= 0) {
          if (plan->spare_outputs.size() != plan->slots.size()) plan->spare_outputs.resize(plan->slots.size());
          Tensor& spare = plan->spare_outputs[k];
          // Every operator writes all of its output, so an old buffer needs no clearing.
          vals[k] = spare.owns_storage_alone() ? spare : Tensor(s.meta.shape, s.meta.dtype);
          spare = vals[k];
        }
        else
          vals[k] = Tensor::wrap(plan->arena_mem.get() + plan->arena.offsets[static_cast<std::size_t>(s.buffer)], s.meta.shape, s.meta.dtype,
                                 plan->arena_mem, plan->layouts[k]);
        break;
      case Kind::absent: break;
    }
  }
  std::vector<const Tensor*> in;
  std::vector<Tensor*> out;
  for (auto& step : plan->steps) {
    in.clear();
    out.clear();
    for (int k : step.in) in.push_back(k >= 0 ? &vals[static_cast<std::size_t>(k)] : nullptr);
    for (int k : step.out) out.push_back(k >= 0 ? &vals[static_cast<std::size_t>(k)] : nullptr);
    if (impl_->options.profile) {
      const auto t0 = std::chrono::steady_clock::now();
      step.op->run(in, out, plan->workspace.get());
      step.ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      step.runs++;
    } else {
      step.op->run(in, out, plan->workspace.get());
    }
  }
  impl_->last_plan = plan;
  for (std::size_t k = 0; k < plan->slots.size(); ++k) {
    const Slot& s = plan->slots[k];
    if (s.graph_output < 0) continue;
    // Graph outputs that are constants or graph inputs are returned as copies.
    outputs[static_cast<std::size_t>(s.graph_output)] = s.kind == Kind::dynamic ? vals[k] : vals[k].clone();
  }
  return outputs;
}

std::map<std::string, Tensor> Session::run(const std::map<std::string, Tensor>& named) {
  std::vector<Tensor> in;
  for (const auto& vi : impl_->graph.inputs) {
    auto it = named.find(vi.name);
    if (it == named.end()) throw Error(ErrorCode::invalid_input, "missing model input '" + vi.name + "'");
    in.push_back(it->second);
  }
  for (const auto& [name, t] : named) {
    bool known = false;
    for (const auto& vi : impl_->graph.inputs) known = known || vi.name == name;
    if (!known) throw Error(ErrorCode::invalid_input, "the model has no input named '" + name + "'");
  }
  auto outs = run(in);
  std::map<std::string, Tensor> r;
  for (std::size_t i = 0; i < outs.size(); ++i) r[impl_->graph.outputs[i].name] = outs[i];
  return r;
}

}  // namespace voxinfer::graph
