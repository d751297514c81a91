// Convolution kernels over the 3D U-Net layer suite a-i of the performance anchors
// (layer j, InstanceNorm+LeakyReLU, is not a convolution): the optimized kernel per ISA
// and thread count, and the reference kernel on a reduced size. Counters: GFLOP/s and %
// of the FMA peak measured on this machine for that ISA and thread count.
//
// Timed region: ConvKernel::run with bias, on the kernel's own layouts (reorders and
// weight packing happen before timing, as in the oneDNN anchor).
//
// Also: --spec op=conv,cin=32,cout=32,k=3,s=1,p=1,size=128 [--threads N] [--runs N]
// [--warmup N] [--isa avx2|avx512] [--nb N --icb-step N --rows N --kd-split 0|1 --plane 0|1] times one layer and prints
// "engine median_ms=... min_ms=... gflops=... times_ms=t1;t2;...", the line the anchor
// drivers (run_suite.py --engine-cmd) read.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fma_peak.h"
#include "kernels/conv_direct.h"
#include "voxinfer/core/cpu.h"
#include "voxinfer/core/tensor.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/kernels/conv.h"

namespace voxinfer::bench {

double fma_peak_gflops(Isa isa, int threads) {
  static std::mutex mutex;
  static std::map<std::pair<int, int>, double> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(static_cast<int>(isa), threads);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  // Best of a few trials: on a shared machine a trial can lose its core for a while.
  double best = 0;
  for (int trial = 0; trial < 5; ++trial) {
    std::vector<double> g(static_cast<std::size_t>(threads));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&g, t, isa] {
        g[static_cast<std::size_t>(t)] = isa == Isa::avx512 ? fma_peak_gflops_avx512() : fma_peak_gflops_avx2();
      });
    for (auto& th : pool) th.join();
    double sum = 0;
    for (double x : g) sum += x;
    best = std::max(best, sum);
  }
  return cache[key] = best;
}

}  // namespace voxinfer::bench

namespace {

using voxinfer::Isa;
using voxinfer::kernels::ConvKernel;
using voxinfer::kernels::ConvParams;
using voxinfer::kernels::Epilogue;

struct Spec {
  std::string op = "conv";
  std::int64_t cin = 32, cout = 32, k = 3, s = 1, p = 1, size = 128;
  // dst=plain: the layer is a network's output head and writes plain NCDHW from the blocked
  // input (make_conv_head_kernel), as a session runs it.
  bool dst_plain = false;
};

struct Layer {
  const char* id;
  Spec spec;
  const char* desc;
};

// The anchors' layer table (anchors/common.py LAYERS).
const Layer kLayers[] = {
    {"a", {"conv", 1, 32, 3, 1, 1, 128}, "conv3x3x3 1->32 @128^3"},
    {"b", {"conv", 32, 32, 3, 1, 1, 128}, "conv3x3x3 32->32 @128^3"},
    {"c", {"conv", 64, 64, 3, 1, 1, 64}, "conv3x3x3 64->64 @64^3"},
    {"d", {"conv", 128, 128, 3, 1, 1, 32}, "conv3x3x3 128->128 @32^3"},
    {"e", {"conv", 256, 256, 3, 1, 1, 16}, "conv3x3x3 256->256 @16^3"},
    {"f", {"conv", 320, 320, 3, 1, 1, 8}, "conv3x3x3 320->320 @8^3"},
    {"g", {"conv", 32, 64, 3, 2, 1, 128}, "conv3x3x3 s2 32->64 128^3->64^3"},
    {"h", {"deconv", 64, 32, 2, 2, 0, 64}, "convT k2s2 64->32 64^3->128^3"},
    {"i", {"conv", 32, 3, 1, 1, 0, 128, true}, "conv1x1x1 32->3 @128^3, plain logits"},
};

ConvParams params(const Spec& s) {
  ConvParams p;
  p.ic = s.cin, p.oc = s.cout;
  p.id = p.ih = p.iw = s.size;
  p.kd = p.kh = p.kw = s.k;
  p.sd = p.sh = p.sw = s.s;
  p.pd = p.ph = p.pw = s.p;
  const std::int64_t o =
      s.op == "deconv" ? (s.size - 1) * s.s - 2 * s.p + s.k : ConvParams::conv_out(s.size, s.k, s.s, 1, s.p, s.p);
  p.od = p.oh = p.ow = o;
  return p;
}

// FLOPs as the anchors count them (ConvTranspose: per input voxel).
double flops(const Spec& s) {
  const double k3 = static_cast<double>(s.k * s.k * s.k);
  if (s.op == "deconv") return 2.0 * s.cin * s.cout * k3 * static_cast<double>(s.size * s.size * s.size);
  const ConvParams p = params(s);
  return 2.0 * s.cin * s.cout * k3 * static_cast<double>(p.od * p.oh * p.ow);
}

std::shared_ptr<std::byte> random_buffer(std::int64_t n, std::uint32_t seed) {
  auto buf = voxinfer::aligned_bytes(static_cast<std::size_t>(n) * sizeof(float));
  float* f = reinterpret_cast<float*>(buf.get());
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (std::int64_t i = 0; i < n; ++i) f[i] = dist(rng);
  return buf;
}

// One layer ready to run: kernel built, buffers in the kernel's layouts.
struct Problem {
  std::unique_ptr<ConvKernel> kernel;
  std::shared_ptr<std::byte> src, dst, ws;
  std::string why;

  // tuning: forces a variant of the direct implementation (for tuning the heuristics).
  Problem(const Spec& s, Isa isa, const voxinfer::kernels::direct::Tuning* tuning = nullptr) {
    const ConvParams p = params(s);
    const bool transposed = s.op == "deconv";
    const std::int64_t wsize = p.ic * p.oc * p.kd * p.kh * p.kw;
    auto wei = random_buffer(wsize, 1);
    auto bias = random_buffer(p.oc, 2);
    Epilogue ep;
    ep.bias = reinterpret_cast<const float*>(bias.get());
    const auto* w = reinterpret_cast<const float*>(wei.get());
    if (tuning) {
      std::size_t count = 0;
      const auto* list = voxinfer::kernels::direct::impls(&count);
      for (std::size_t i = 0; i < count && !kernel; ++i)
        if (list[i].isa == isa && list[i].transposed == transposed)
          kernel = voxinfer::kernels::direct::create(list[i], p, w, ep, transposed, *tuning, &why);
    } else {
      kernel = voxinfer::kernels::make_conv_kernel(p, w, ep, transposed, isa, &why);
      if (kernel && s.dst_plain) kernel = voxinfer::kernels::make_conv_head_kernel(p, w, ep, kernel->src_layout(), isa, &why);
    }
    if (!kernel) return;
    const auto act_elems = [](voxinfer::Layout l, std::int64_t c, std::int64_t sp) {
      return voxinfer::round_up(c, voxinfer::layout_block(l)) * sp;
    };
    src = random_buffer(act_elems(kernel->src_layout(), p.ic, p.id * p.ih * p.iw), 3);
    dst = voxinfer::aligned_bytes(static_cast<std::size_t>(act_elems(kernel->dst_layout(), p.oc, p.od * p.oh * p.ow)) *
                                  sizeof(float));
    ws = voxinfer::aligned_bytes(kernel->workspace_bytes());
  }
  void run() const {
    kernel->run(reinterpret_cast<const float*>(src.get()), reinterpret_cast<float*>(dst.get()), nullptr, ws.get());
  }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void set_counters(benchmark::State& state, double flop, double total_s, Isa isa, int threads) {
  const double gflops = flop * static_cast<double>(state.iterations()) / total_s * 1e-9;
  state.counters["GFLOP/s"] = gflops;
  state.counters["%peak"] = 100.0 * gflops / voxinfer::bench::fma_peak_gflops(isa, threads);
}

void bm_optimized(benchmark::State& state, const Layer& layer, Isa isa, int threads) {
  if (static_cast<int>(voxinfer::hardware_isa()) < static_cast<int>(isa)) {
    state.SkipWithError((std::string("this CPU lacks ") + voxinfer::isa_name(isa)).c_str());
    return;
  }
  voxinfer::set_num_threads(threads);
  Problem prob(layer.spec, isa);
  if (!prob.kernel) {
    state.SkipWithError(("no kernel: " + prob.why).c_str());
    return;
  }
  prob.run();  // warm-up: first touch of dst, caches
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    prob.run();
    const double s = seconds_since(t0);
    state.SetIterationTime(s);
    total += s;
  }
  state.SetLabel(prob.kernel->name());
  set_counters(state, flops(layer.spec), total, isa, threads);
  voxinfer::set_num_threads(0);
}

// The reference on the same layer shrunk to about 0.2 GFLOP (it runs at a few GFLOP/s).
void bm_reference(benchmark::State& state, const Layer& layer) {
  Spec s = layer.spec;
  while (flops(s) > 2e8 && s.size > 4) s.size /= 2;
  const ConvParams p = params(s);
  const bool transposed = s.op == "deconv";
  auto wei = random_buffer(p.ic * p.oc * p.kd * p.kh * p.kw, 1);
  auto bias = random_buffer(p.oc, 2);
  auto src = random_buffer(p.ic * p.id * p.ih * p.iw, 3);
  auto dst = voxinfer::aligned_bytes(static_cast<std::size_t>(p.oc * p.od * p.oh * p.ow) * sizeof(float));
  Epilogue ep;
  ep.bias = reinterpret_cast<const float*>(bias.get());
  const auto* w = reinterpret_cast<const float*>(wei.get());
  const auto* x = reinterpret_cast<const float*>(src.get());
  auto* y = reinterpret_cast<float*>(dst.get());
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    if (transposed) voxinfer::kernels::conv_transpose3d_ref(p, x, w, ep, y);
    else voxinfer::kernels::conv3d_ref(p, x, w, ep, y);
    const double sec = seconds_since(t0);
    state.SetIterationTime(sec);
    total += sec;
  }
  state.SetLabel("size " + std::to_string(s.size));
  set_counters(state, flops(s), total, voxinfer::hardware_isa() == Isa::avx512 ? Isa::avx512 : Isa::avx2, 1);
}

void register_all() {
  for (const Layer& l : kLayers) {
    benchmark::RegisterBenchmark((std::string("ref/") + l.id).c_str(), bm_reference, l)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1);
    for (Isa isa : {Isa::avx2, Isa::avx512})
      for (int threads : {1, 2})
        benchmark::RegisterBenchmark(
            (std::string("conv/") + l.id + "/" + voxinfer::isa_name(isa) + "/threads:" + std::to_string(threads)).c_str(),
            bm_optimized, l, isa, threads)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond)
            ->MinTime(1.0);
  }
}

Spec parse_spec(const std::string& text) {
  Spec s;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = std::min(text.find(',', pos), text.size());
    const std::string kv = text.substr(pos, end - pos);
    pos = end + 1;
    const std::size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
    if (k == "op") s.op = v;
    else if (k == "cin") s.cin = std::stoll(v);
    else if (k == "cout") s.cout = std::stoll(v);
    else if (k == "k") s.k = std::stoll(v);
    else if (k == "s") s.s = std::stoll(v);
    else if (k == "p") s.p = std::stoll(v);
    else if (k == "size") s.size = std::stoll(v);
    else if (k == "dst") s.dst_plain = v == "plain";
  }
  return s;
}

// --spec mode for the anchor drivers.
int run_spec(int argc, char** argv) {
  Spec spec;
  int threads = 1, runs = 10, warmup = 2;
  Isa isa = voxinfer::active_isa();
  voxinfer::kernels::direct::Tuning tuning;
  bool tuned = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--spec") spec = parse_spec(v);
    else if (a == "--threads") threads = std::stoi(v);
    else if (a == "--runs") runs = std::stoi(v);
    else if (a == "--warmup") warmup = std::stoi(v);
    else if (a == "--isa") isa = voxinfer::parse_isa(v);
    else if (a == "--nb") tuning.nb = std::stoi(v), tuned = true;
    else if (a == "--icb-step") tuning.icb_step = std::stoll(v), tuned = true;
    else if (a == "--rows") tuning.rows = std::stoll(v), tuned = true;
    else if (a == "--kd-split") tuning.kd_split = std::stoi(v), tuned = true;
    else if (a == "--plane") tuning.plane = std::stoi(v), tuned = true;
  }
  if (spec.op != "conv" && spec.op != "deconv") {
    std::fprintf(stderr, "unsupported op '%s' (conv, deconv)\n", spec.op.c_str());
    return 2;
  }
  voxinfer::set_num_threads(threads);
  Problem prob(spec, isa, tuned ? &tuning : nullptr);
  if (!prob.kernel) {
    std::fprintf(stderr, "no optimized kernel:\n%s", prob.why.c_str());
    return 3;
  }
  for (int i = 0; i < warmup; ++i) prob.run();
  std::vector<double> ms;
  double cpu_ms = 1e300;  // least process CPU time of a run: a noise-free hint on a shared machine
  for (int i = 0; i < runs; ++i) {
    const std::clock_t c0 = std::clock();
    const auto t0 = std::chrono::steady_clock::now();
    prob.run();
    ms.push_back(seconds_since(t0) * 1e3);
    cpu_ms = std::min(cpu_ms, 1e3 * static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC);
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                          : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
  std::string times;
  for (double t : ms) times += (times.empty() ? "" : ";") + std::to_string(t);
  std::printf("engine median_ms=%.3f min_ms=%.3f gflops=%.2f times_ms=%s\n", median, sorted.front(),
              flops(spec) / (median * 1e-3) * 1e-9, times.c_str());
  std::printf("engine_info impl=%s threads=%d min_cpu_ms=%.3f peak_gflops=%.1f\n", prob.kernel->name(), threads, cpu_ms,
              voxinfer::bench::fma_peak_gflops(isa, threads));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--spec") == 0) return run_spec(argc, argv);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
