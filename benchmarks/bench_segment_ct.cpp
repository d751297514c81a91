// Whole segmentation of a CT-sized volume (512x512x300, synthetic) with a 3-class 3D UNet
// from the model zoo at 96^3 tiles: wall time and peak memory, the predicted and measured
// sliding-window accumulator. One run, not a Google Benchmark: the point is the peak RSS.
//   voxinfer_bench_segment_ct MODEL.onnx [SIZE_X SIZE_Y SIZE_Z] [OVERLAP]
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "voxinfer/core/error.h"
#include "voxinfer/pipeline/segmentation.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.onnx [NX NY NZ] [OVERLAP]\n", argv[0]);
    return 2;
  }
  const std::int64_t nx = argc > 4 ? std::atoll(argv[2]) : 512, ny = argc > 4 ? std::atoll(argv[3]) : 512,
                     nz = argc > 4 ? std::atoll(argv[4]) : 300;
  const double overlap = argc > 5 ? std::atof(argv[5]) : 0.25;
  const fs::path pkg = fs::temp_directory_path() / "voxinfer_bench_segment_ct";
  fs::create_directories(pkg);
  fs::copy_file(argv[1], pkg / "model.onnx", fs::copy_options::overwrite_existing);
  std::ofstream(pkg / "pipeline.json") << R"({"task": "segmentation", "model": "model.onnx", "axes": "zyx",
    "input": {"channels": 1, "modality": "CT"},
    "preprocess": {"intensity": [{"op": "clip", "min": -200, "max": 300}, {"op": "scale", "from": [-200, 300], "to": [0, 1]}]},
    "inference": {"roi_size": [96, 96, 96], "overlap": )" << overlap << R"(, "blend": "gaussian", "batch": 1},
    "postprocess": {"activation": "softmax"},
    "labels": [{"value": 1, "name": "a"}, {"value": 2, "name": "b"}]})";
  try {
    voxinfer::Geometry g;
    g.spacing = {0.8, 0.8, 1.5};
    voxinfer::Volume ct(1, nz, ny, nx, g);
    std::mt19937 rng(7);
    std::normal_distribution<float> noise(0.f, 20.f);
    for (std::int64_t z = 0; z < nz; ++z)
      for (std::int64_t y = 0; y < ny; ++y)
        for (std::int64_t x = 0; x < nx; ++x) {
          const double r = std::hypot(static_cast<double>(x - nx / 2), static_cast<double>(y - ny / 2));
          ct.at(0, z, y, x) = (r < 0.4 * static_cast<double>(nx) ? 40.f : -1000.f) + noise(rng);
        }
    const auto t0 = std::chrono::steady_clock::now();
    voxinfer::SegmentationPipeline pipeline(pkg);
    const auto r = pipeline.run(ct);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    std::printf("segment %lldx%lldx%lld, 96^3 tiles, overlap %.2f: %lld tiles in %.1f s (network %.1f s)\n", static_cast<long long>(nx),
                static_cast<long long>(ny), static_cast<long long>(nz), overlap, static_cast<long long>(r.window.tiles), s, r.seconds_inference);
    std::printf("accumulator predicted %.1f MiB, measured %.1f MiB; input volume %.1f MiB; peak RSS %.1f MiB\n",
                static_cast<double>(r.window.predicted_peak_bytes) / (1 << 20), static_cast<double>(r.window.measured_peak_bytes) / (1 << 20),
                static_cast<double>(ct.data.nbytes()) / (1 << 20), static_cast<double>(u.ru_maxrss) / 1024);
  } catch (const voxinfer::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return voxinfer::exit_status(e.code());
  }
  fs::remove_all(pkg);
  return 0;
}
