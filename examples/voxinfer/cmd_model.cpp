// `voxinfer info` (models; volumes go to print_volume_info), `voxinfer run` and `voxinfer bench`.
#include <sys/resource.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>

#include "voxinfer/app/nnunet.h"
#include "commands.h"
#include "voxinfer/pipeline/monai_bundle.h"
#include "voxinfer/core/cpu.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/graph/session.h"
#include "voxinfer/io/npy.h"
#include "voxinfer/io/output_file.h"

namespace voxinfer::cli {
namespace {

namespace fs = std::filesystem;

bool looks_like_model(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p, ec)) return fs::exists(p / "model.onnx", ec) || fs::exists(p / "model.json", ec);
  return p.extension() == ".onnx" || p.filename() == "model.json";
}

Shape parse_shape(const std::string& text) {
  std::vector<std::int64_t> d;
  std::stringstream ss(text);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    try {
      std::size_t used = 0;
      const long long v = std::stoll(tok, &used);
      if (used != tok.size() || v <= 0) throw std::invalid_argument("x");
      d.push_back(v);
    } catch (const std::exception&) {
      throw Error(ErrorCode::invalid_input, "--shape '" + text + "': expected positive integers separated by commas, e.g. 1,1,96,96,96");
    }
  }
  if (d.empty()) throw Error(ErrorCode::invalid_input, "--shape is empty");
  return Shape(d);
}

std::string human_bytes(std::int64_t b) {
  char buf[64];
  if (b >= (1LL << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1 << 30));
  else if (b >= (1LL << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1 << 20));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(b) / 1024);
  return buf;
}

// Shapes for planning: --shape for the first input, else the model's static shape.
std::vector<Shape> plan_shapes(const graph::Graph& g, const std::vector<std::string>& shape_args) {
  std::vector<Shape> shapes;
  for (std::size_t i = 0; i < g.inputs.size(); ++i) {
    if (i < shape_args.size()) {
      shapes.push_back(parse_shape(shape_args[i]));
      continue;
    }
    const auto& vi = g.inputs[i];
    std::vector<std::int64_t> d;
    for (const auto& dim : vi.dims) {
      if (!dim.known()) return {};
      d.push_back(dim.value);
    }
    if (!vi.has_shape) return {};
    shapes.push_back(Shape(d));
  }
  return shapes;
}

std::int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<std::int64_t>(u.ru_maxrss) * 1024;
}

// Each convolution's kernel and why the kernels tried before it declined.
void print_kernel_choices(const graph::PlanStats& st) {
  std::printf("convolution kernels (and why earlier ones declined):\n");
  for (const auto& c : st.kernel_choices) {
    std::printf("  %s %s: %s\n", c.op.c_str(), c.node.c_str(), c.kernel.c_str());
    for (const auto& d : c.declined) std::printf("      declined %s\n", d.c_str());
  }
}

void model_info(const std::string& path, const std::vector<std::string>& shape_args, bool as_json) {
  graph::Graph g = graph::load_model(path);
  std::map<std::string, int> hist;
  for (const auto& n : g.nodes) hist[n.op_type]++;
  const std::int64_t params = g.parameter_count();
  const int nodes = static_cast<int>(g.nodes.size());
  graph::Session session(g);
  const auto shapes = plan_shapes(session.graph(), shape_args);
  graph::PlanStats st;
  const bool planned = !shapes.empty();
  if (planned) st = session.plan_stats(shapes);

  nlohmann::json j;
  j["model"] = path;
  j["producer"] = g.producer;
  j["opset"] = g.opset;
  j["parameters"] = params;
  j["nodes"] = nodes;
  j["ops"] = hist;
  for (const auto& vi : g.inputs) j["inputs"].push_back({{"name", vi.name}, {"dtype", std::string(dtype_name(vi.dtype))}, {"shape", vi.dims_str()}});
  for (const auto& vi : g.outputs) j["outputs"].push_back({{"name", vi.name}, {"dtype", std::string(dtype_name(vi.dtype))}, {"shape", vi.dims_str()}});
  if (planned) {
    std::string s;
    for (const auto& sh : shapes) s += sh.str();
    j["plan"] = {{"input_shapes", s},
                 {"flops", st.flops},
                 {"arena_bytes", st.arena_bytes},
                 {"activation_bytes", st.activation_bytes},
                 {"output_bytes", st.output_bytes},
                 {"workspace_bytes", st.workspace_bytes},
                 {"steps", st.steps},
                 {"folded_nodes", st.folded},
                 {"inplace", st.inplace},
                 {"aliased", st.aliased},
                 {"reorders", st.reorders},
                 {"blocked_values", st.blocked_values},
                 {"concat_in_place", st.concat_in_place},
                 {"kernels", st.kernels}};
    for (const auto& c : st.kernel_choices)
      j["plan"]["convolutions"].push_back(
          {{"node", c.node}, {"op", c.op}, {"kernel", c.kernel}, {"declined", c.declined}});
  }
  if (as_json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("model      %s\n", path.c_str());
  std::printf("producer   %s, opset %lld\n", g.producer.c_str(), static_cast<long long>(g.opset));
  std::printf("parameters %lld (%s)\n", static_cast<long long>(params), human_bytes(params * 4).c_str());
  for (const auto& vi : g.inputs) std::printf("input      %s %s %s\n", vi.name.c_str(), std::string(dtype_name(vi.dtype)).c_str(), vi.dims_str().c_str());
  for (const auto& vi : g.outputs) std::printf("output     %s %s %s\n", vi.name.c_str(), std::string(dtype_name(vi.dtype)).c_str(), vi.dims_str().c_str());
  std::printf("nodes      %d:", nodes);
  for (const auto& [op, n] : hist) std::printf(" %s %d", op.c_str(), n);
  std::printf("\n");
  if (!planned) {
    std::printf("plan       (give --shape N,C,D,H,W to plan memory and count FLOPs)\n");
    return;
  }
  std::printf("plan for   %s\n", j["plan"]["input_shapes"].get<std::string>().c_str());
  std::printf("  FLOPs             %.3f G\n", static_cast<double>(st.flops) / 1e9);
  std::printf("  arena (peak)      %s\n", human_bytes(st.arena_bytes).c_str());
  std::printf("  sum of activations %s (arena/sum = %.3f)\n", human_bytes(st.activation_bytes).c_str(),
              st.activation_bytes ? static_cast<double>(st.arena_bytes) / static_cast<double>(st.activation_bytes) : 0.0);
  std::printf("  outputs           %s, workspace %s\n", human_bytes(st.output_bytes).c_str(), human_bytes(st.workspace_bytes).c_str());
  std::printf("  steps             %d run, %d folded at plan time, %d in place, %d views\n", st.steps, st.folded, st.inplace, st.aliased);
  std::printf("  layouts           %d tensors stay blocked, %d reorders per run at layout boundaries\n", st.blocked_values, st.reorders);
  std::printf("  concat            %d inputs written in place into their Concat's output (no copy)\n", st.concat_in_place);
  std::printf("  kernels          ");
  for (const auto& [k, n] : st.kernels) std::printf(" %s x%d", k.c_str(), n);
  std::printf("\n");
  print_kernel_choices(st);
}

std::string safe_file_name(std::string s) {
  for (auto& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') c = '_';
  return s;
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Describe a model (ONNX, TF.js/Keras model.json) or a volume (image file or DICOM folder)");
  auto input = std::make_shared<std::string>();
  auto series = std::make_shared<std::string>();
  auto shapes = std::make_shared<std::vector<std::string>>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("INPUT", *input, "model file (.onnx, model.json), model package folder, image file or DICOM folder")->required();
  cmd->add_option("--shape", *shapes, "input shape to plan for, e.g. 1,1,96,96,96 (models; once per input)");
  cmd->add_option("--series", *series, "DICOM SeriesInstanceUID to describe (volumes)");
  cmd->add_flag("--json", *json, "print JSON instead of text");
  cmd->footer("nnU-Net v2 model folders (<trainer>__<plans>__<configuration>): configuration, network, folds, patch size,\n"
              "spacing, normalization, labels and parameter count.\n"
              "Models: inputs, outputs, op histogram, parameters and, for a shape, FLOPs and planned memory.\n"
              "Volumes: size, spacing, origin, direction, orientation, intensity range; DICOM folders list their series.");
  cmd->callback([=] {
    if (monai::is_bundle(*input)) {  // a MONAI bundle: the translated steps and what cannot run
      monai::BundleOptions bo;
      bo.inspect = true;
      const monai::Bundle b = monai::load_bundle(*input, bo);
      std::fputs(monai::describe(b).c_str(), stdout);
      if (!b.problems.empty()) throw Error(ErrorCode::unsupported, b.problems.front());
      return;
    }
    if (nnunet::is_model_folder(*input)) {
      nnunet::LoadOptions lo;
      std::fputs(nnunet::describe(app::open_nnunet_model(*input, lo)).c_str(), stdout);
    } else if (looks_like_model(*input)) model_info(*input, *shapes, *json);
    else print_volume_info(*input, *series, *json);
  });
}

void add_run_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Run a model on .npy inputs and write its outputs as .npy");
  auto model = std::make_shared<std::string>();
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto output = std::make_shared<std::string>();
  auto threads = std::make_shared<int>(0);
  auto no_opt = std::make_shared<bool>(false);
  cmd->add_option("MODEL", *model, "model file (.onnx or model.json), or an nnU-Net results folder (its first fold's network)")->required();
  cmd->add_option("--input,-i", *inputs, "FILE.npy, or NAME=FILE.npy for a named input; repeat for several")->required();
  cmd->add_option("--output,-o", *output, "OUT.npy for a single output, or a folder (one NAME.npy per output)")->required();
  cmd->add_option("--threads", *threads, "threads (default: VOXINFER_NUM_THREADS or all cores)");
  cmd->add_flag("--no-optimize", *no_opt, "skip the graph passes (for debugging)");
  cmd->footer("Example: voxinfer run model.onnx --input input.npy --output out.npy");
  cmd->callback([=] {
    if (*threads < 0) throw Error(ErrorCode::invalid_input, "--threads must be >= 0");
    if (*threads) set_num_threads(*threads);
    for (const auto& arg : *inputs) refuse_overwriting_inputs({*model, arg, arg.substr(arg.find('=') + 1)}, {*output});
    graph::SessionOptions opt;
    opt.threads = *threads;
    opt.optimize = !*no_opt;
    auto session = graph::Session::from_file(*model, opt);
    std::map<std::string, Tensor> named;
    std::vector<Tensor> positional;
    for (const auto& arg : *inputs) {
      const auto eq = arg.find('=');
      if (eq != std::string::npos && !fs::exists(arg)) named[arg.substr(0, eq)] = read_npy(arg.substr(eq + 1));
      else positional.push_back(read_npy(arg));
    }
    if (!named.empty() && !positional.empty())
      throw Error(ErrorCode::invalid_input, "give either all inputs by position or all as NAME=FILE.npy");
    std::map<std::string, Tensor> outs;
    if (!named.empty()) {
      outs = session.run(named);
    } else {
      const auto v = session.run(positional);
      for (std::size_t i = 0; i < v.size(); ++i) outs[session.outputs()[i].name] = v[i];
    }
    const bool to_file = fs::path(*output).extension() == ".npy";
    if (to_file) {
      if (outs.size() != 1)
        throw Error(ErrorCode::invalid_input, "the model has " + std::to_string(outs.size()) + " outputs: give a folder as --output");
      write_npy(*output, outs.begin()->second);
      std::fprintf(stderr, "wrote %s %s\n", output->c_str(), outs.begin()->second.shape().str().c_str());
    } else {
      std::error_code ec;
      fs::create_directories(*output, ec);
      if (ec) throw Error(ErrorCode::io, *output + ": cannot create folder: " + ec.message());
      for (const auto& [name, t] : outs) {
        const auto file = (fs::path(*output) / (safe_file_name(name) + ".npy")).string();
        write_npy(file, t);
        std::fprintf(stderr, "wrote %s %s\n", file.c_str(), t.shape().str().c_str());
      }
    }
  });
}

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Time a model's forward pass on random input");
  auto model = std::make_shared<std::string>();
  auto shapes = std::make_shared<std::vector<std::string>>();
  auto threads = std::make_shared<int>(0);
  auto runs = std::make_shared<int>(10);
  auto warmup = std::make_shared<int>(2);
  auto profile = std::make_shared<bool>(false);
  cmd->add_option("MODEL", *model, "model file (.onnx or model.json), or an nnU-Net results folder (its first fold's network)")->required();
  cmd->add_flag("--profile", *profile, "print the time per operator type and the slowest nodes");
  cmd->add_option("--shape", *shapes, "input shape, e.g. 1,1,96,96,96 (once per input; default: the model's static shape)");
  cmd->add_option("--threads", *threads, "threads (default: VOXINFER_NUM_THREADS or all cores)");
  cmd->add_option("--runs", *runs, "timed runs")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", *warmup, "untimed runs first")->check(CLI::NonNegativeNumber);
  cmd->footer("The last line reads 'voxinfer median_ms=<m> min_ms=<n> times_ms=<t1>;<t2>;...', the format of the\n"
              "peer comparison scripts, so voxinfer can be timed side by side with ONNX Runtime, PyTorch and oneDNN.");
  cmd->callback([=] {
    if (*threads < 0) throw Error(ErrorCode::invalid_input, "--threads must be >= 0");
    if (*threads) set_num_threads(*threads);
    graph::SessionOptions opt;
    opt.threads = *threads;
    opt.profile = *profile;
    // An nnU-Net folder: the first fold's network, built from plans.json and its checkpoint.
    std::optional<nnunet::Model> nn;
    std::optional<graph::Session> own;
    if (nnunet::is_model_folder(*model)) {
      nnunet::LoadOptions lo;
      lo.threads = *threads;
      lo.profile = *profile;
      nn.emplace(app::open_nnunet_model(*model, lo));
      own.emplace(nn->graph(0), opt);
    } else {
      own.emplace(graph::Session::from_file(*model, opt));
    }
    graph::Session& session = *own;
    const auto sh = plan_shapes(session.graph(), *shapes);
    if (sh.empty()) throw Error(ErrorCode::invalid_input, "the model has dynamic dimensions: give --shape");
    std::vector<Tensor> in;
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.f, 1.f);
    for (std::size_t i = 0; i < sh.size(); ++i) {
      Tensor t(sh[i], session.inputs()[i].dtype);
      if (t.dtype() == DType::f32)
        for (std::int64_t k = 0; k < t.numel(); ++k) t.data<float>()[k] = dist(rng);
      in.push_back(t);
    }
    const auto st = session.plan_stats(sh);
    for (int i = 0; i < *warmup; ++i) session.run(in);
    std::vector<double> times;
    for (int i = 0; i < *runs; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      session.run(in);
      times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    if (*profile) {
      const auto prof = session.profile();
      std::map<std::string, std::pair<double, std::int64_t>> by_op;
      double total = 0;
      for (const auto& p : prof) {
        by_op[p.op + " [" + p.kernel + "]"].first += p.ms;
        by_op[p.op + " [" + p.kernel + "]"].second += p.flops;
        total += p.ms;
      }
      std::vector<std::pair<std::string, std::pair<double, std::int64_t>>> ops(by_op.begin(), by_op.end());
      std::sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
      const double runs_total = static_cast<double>(*runs + *warmup);
      std::printf("profile (per run, %d runs):\n", *runs + *warmup);
      for (const auto& [name, v] : ops)
        std::printf("  %-60s %9.2f ms %5.1f%%  %7.1f GFLOP/s\n", name.c_str(), v.first / runs_total, 100 * v.first / total,
                    v.first > 0 ? static_cast<double>(v.second) * runs_total / (v.first * 1e6) : 0.0);
      print_kernel_choices(st);
      std::printf("slowest nodes:\n");
      for (std::size_t i = 0; i < std::min<std::size_t>(16, prof.size()); ++i) {
        const double ms = prof[i].ms / runs_total;
        std::printf("  %-40s %-14s %9.2f ms", prof[i].node.c_str(), prof[i].op.c_str(), ms);
        if (prof[i].flops > 0 && ms > 0) std::printf("  %7.1f GFLOP/s", static_cast<double>(prof[i].flops) / (ms * 1e6));
        std::printf("\n");
      }
    }
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted.size() % 2 ? sorted[sorted.size() / 2] : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
    std::printf("model %s shape %s threads %d isa %s\n", model->c_str(), sh[0].str().c_str(), num_threads(), isa_name(active_isa()));
    std::printf("flops %.3f G, %.1f GFLOP/s at the median, arena %s, peak RSS %s\n", static_cast<double>(st.flops) / 1e9,
                static_cast<double>(st.flops) / (median * 1e6), human_bytes(st.arena_bytes).c_str(), human_bytes(peak_rss_bytes()).c_str());
    std::printf("voxinfer median_ms=%.3f min_ms=%.3f peak_rss_mb=%.1f times_ms=", median, sorted.front(),
                static_cast<double>(peak_rss_bytes()) / (1 << 20));
    for (std::size_t i = 0; i < times.size(); ++i) std::printf("%s%.3f", i ? ";" : "", times[i]);
    std::printf("\n");
  });
}

}  // namespace voxinfer::cli
