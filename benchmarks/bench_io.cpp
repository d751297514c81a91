// Reading a 512 x 512 x 400 CT series (int16, explicit VR little endian, one file per
// slice), the speed target, next to dcm2niix converting the same folder when it
// is installed (Debian package dcm2niix). The series is synthetic and written once to a
// temporary folder (about 200 MB).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "io/dicom_writer.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/io/image_io.h"

namespace {

namespace fs = std::filesystem;
constexpr int kSize = 512, kSlices = 400;

// Writes the series once per machine; later runs reuse it.
const std::string& series_dir() {
  static const std::string dir = [] {
    const fs::path d = fs::temp_directory_path() / "voxinfer_bench_ct_512x512x400";
    if (fs::exists(d / "done")) return d.string();
    fs::create_directories(d);
    voxinfer::test::SliceSpec s;
    s.rows = s.columns = kSize;
    s.pixel_representation = 1;
    s.intercept = "-1024";
    s.pixel_spacing = "0.7\\0.7";
    std::vector<std::uint16_t> px(static_cast<std::size_t>(kSize) * kSize);
    for (int k = 0; k < kSlices; ++k) {
      for (int y = 0; y < kSize; ++y)
        for (int x = 0; x < kSize; ++x) {
          const int r2 = (x - 256) * (x - 256) + (y - 256) * (y - 256);
          px[static_cast<std::size_t>(y * kSize + x)] =
              static_cast<std::uint16_t>(r2 < 200 * 200 ? 1000 + (x * 7 + y * 13 + k) % 400 : 24);
        }
      s.instance = k + 1;
      s.position[2] = 1.25 * k;
      s.sop_instance = "1.2.826.0.1.3680043.9.9999.77." + std::to_string(k + 1);
      s.pixels = px;
      voxinfer::test::write_slice((d / ("CT" + std::to_string(100000 + k))).string(), s);
    }
    std::ofstream(d / "done") << "ok";
    return d.string();
  }();
  return dir;
}

constexpr double kSeriesBytes = double(kSize) * kSize * kSlices * 2;

// Argument: threads (0: all hardware threads).
void BM_ReadDicomSeries(benchmark::State& state) {
  const std::string& dir = series_dir();
  voxinfer::set_num_threads(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    voxinfer::Volume v = voxinfer::read_volume(dir);
    benchmark::DoNotOptimize(v.data.raw());
  }
  state.counters["threads"] = voxinfer::num_threads();
  voxinfer::set_num_threads(0);
  state.SetBytesProcessed(static_cast<std::int64_t>(kSeriesBytes) * state.iterations());
}
BENCHMARK(BM_ReadDicomSeries)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// dcm2niix on the same folder, uncompressed output without a sidecar (its fastest setting).
void BM_Dcm2niixSameSeries(benchmark::State& state) {
  if (std::system("command -v dcm2niix > /dev/null 2>&1") != 0) {
    state.SkipWithError("dcm2niix is not installed (Debian package dcm2niix)");
    return;
  }
  const std::string& dir = series_dir();
  const fs::path out = fs::temp_directory_path() / "voxinfer_bench_dcm2niix_out";
  fs::create_directories(out);
  const std::string cmd = "dcm2niix -z n -b n -f bench -o '" + out.string() + "' '" + dir + "' > /dev/null 2>&1";
  for (auto _ : state) {
    if (std::system(cmd.c_str()) != 0) {
      state.SkipWithError("dcm2niix failed");
      break;
    }
    state.PauseTiming();
    fs::remove_all(out);
    fs::create_directories(out);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(kSeriesBytes) * state.iterations());
}
BENCHMARK(BM_Dcm2niixSameSeries)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
