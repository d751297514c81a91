// Writing a DICOM SEG for a 512 x 512 x 300 CT grid with 20 labels (the target:
// under 3 s on 2 cores). The labels are 20 ellipsoids of different sizes spread through the
// volume, the way organs fill an abdominal CT; the source series is described by metadata
// alone (as read_dicom leaves it), so no DICOM files are needed.
#include <benchmark/benchmark.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "voxinfer/core/threading.h"
#include "voxinfer/io/dicom_seg.h"

namespace {

namespace fs = std::filesystem;
constexpr int kSize = 512, kSlices = 300, kLabels = 20;

struct Fixture {
  voxinfer::Volume labels;
  std::map<std::string, std::string> source;
  voxinfer::DicomSegWriteOptions options;
  std::int64_t frames = 0;
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture x;
    voxinfer::Geometry g;
    g.spacing = Eigen::Vector3d(0.7, 0.7, 1.25);
    g.origin = Eigen::Vector3d(-179.2, -179.2, -400);
    x.labels = voxinfer::Volume(1, kSlices, kSize, kSize, g);
    for (int l = 1; l <= kLabels; ++l) {
      // Centres on a spiral, radii 20..68 voxels in-plane and 15..110 slices deep.
      const double a = l * 2.4;
      const double cx = 256 + 150 * std::cos(a) * l / kLabels, cy = 256 + 150 * std::sin(a) * l / kLabels;
      const double cz = 20 + (kSlices - 40) * (l - 1) / double(kLabels - 1);
      const double rx = 20 + (l * 7) % 49, ry = 20 + (l * 11) % 49, rz = 15 + (l * 37) % 96;
      for (int z = std::max(0, int(cz - rz)); z < std::min(kSlices, int(cz + rz) + 1); ++z)
        for (int y = std::max(0, int(cy - ry)); y < std::min(kSize, int(cy + ry) + 1); ++y)
          for (int xx = std::max(0, int(cx - rx)); xx < std::min(kSize, int(cx + rx) + 1); ++xx) {
            const double d = (xx - cx) * (xx - cx) / (rx * rx) + (y - cy) * (y - cy) / (ry * ry) + (z - cz) * (z - cz) / (rz * rz);
            if (d <= 1) x.labels.at(0, z, y, xx) = static_cast<float>(l);
          }
    }
    std::string sops, positions;
    for (int k = 0; k < kSlices; ++k) {
      sops += (k ? "\\" : "") + std::string("1.2.826.0.1.3680043.9.9999.77.") + std::to_string(k + 1);
      const Eigen::Vector3d p = g.index_to_physical(Eigen::Vector3d(0, 0, k));
      char buf[96];
      std::snprintf(buf, sizeof buf, "%s%.6g\\%.6g\\%.6g", k ? "\\" : "", p[0], p[1], p[2]);
      positions += buf;
    }
    x.source = {{"source_format", "DICOM"},
                {"StudyInstanceUID", "1.2.826.0.1.3680043.9.9999.2"},
                {"SeriesInstanceUID", "1.2.826.0.1.3680043.9.9999.1"},
                {"FrameOfReferenceUID", "1.2.826.0.1.3680043.9.9999.3"},
                {"SOPClassUID", "1.2.840.10008.5.1.4.1.1.2"},
                {"SOPInstanceUIDs", sops},
                {"ImagePositionPatients", positions},
                {"PatientID", "BENCH"}};
    for (int l = 1; l <= kLabels; ++l) {
      voxinfer::DicomSegSegment s;
      s.value = l;
      s.name = "structure " + std::to_string(l);
      s.color = std::array<int, 3>{(l * 67) % 256, (l * 131) % 256, (l * 29) % 256};
      x.options.segments.push_back(s);
    }
    x.options.algorithm_name = "bench";
    for (int z = 0; z < kSlices; ++z)
      for (int l = 1; l <= kLabels; ++l) {
        const float* p = x.labels.channel(0) + static_cast<std::int64_t>(z) * kSize * kSize;
        for (int i = 0; i < kSize * kSize; ++i)
          if (p[i] == static_cast<float>(l)) {
            ++x.frames;
            break;
          }
      }
    return x;
  }();
  return f;
}

// Argument: threads (0: all hardware threads).
void BM_WriteDicomSeg(benchmark::State& state) {
  const Fixture& f = fixture();
  voxinfer::set_num_threads(static_cast<int>(state.range(0)));
  const std::string path = (fs::temp_directory_path() / "voxinfer_bench_seg.dcm").string();
  for (auto _ : state) voxinfer::write_dicom_seg(path, f.labels, f.source, f.options);
  state.counters["frames"] = static_cast<double>(f.frames);
  state.counters["file_MB"] = static_cast<double>(fs::file_size(path)) / 1e6;
  state.counters["threads"] = voxinfer::num_threads();
  fs::remove(path);
}
BENCHMARK(BM_WriteDicomSeg)->Arg(2)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
