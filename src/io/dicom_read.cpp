// DICOM series to Volume: picks a series from a scan, decodes its images in parallel
// (one task per file) into the [C, Z, Y, X] grid the plan describes, and keeps the
// identifiers a DICOM SEG writer needs in the Volume's metadata.
#include <sys/mman.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <tuple>

#include "io/dicom_internal.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/io/dicom.h"

namespace voxinfer {
namespace {

using dicom::Plan;
using dicom::Scan;
using dicom::Series;

const std::string& series_uid_of(const Scan& s, const Series& series) {
  return s.files[static_cast<std::size_t>(s.frames[static_cast<std::size_t>(series.frames.front())].file)].series_uid;
}

std::int64_t volumes_of(const Plan& p) { return p.slices.empty() ? 0 : static_cast<std::int64_t>(p.slices.front().size()); }

// Index of the series to read: the one asked for, else the largest readable one (no
// problem such as a gantry tilt) with several slice positions, else the largest readable
// one, else the largest (whose problem then becomes the error).
std::size_t choose(const std::string& path, const Scan& s, const std::vector<Plan>& plans, const std::string& uid) {
  std::size_t best = s.series.size();
  for (std::size_t i = 0; i < s.series.size(); ++i) {
    if (!uid.empty() && series_uid_of(s, s.series[i]) != uid) continue;
    if (best == s.series.size()) {
      best = i;
      continue;
    }
    const bool ok = plans[i].problem.empty(), best_ok = plans[best].problem.empty();
    const bool is3d = plans[i].slices.size() > 1, best3d = plans[best].slices.size() > 1;
    const auto key = [](bool readable, bool three_d, std::size_t frames) { return std::tuple(readable, three_d, frames); };
    if (key(ok, is3d, s.series[i].frames.size()) > key(best_ok, best3d, s.series[best].frames.size())) best = i;
  }
  if (best == s.series.size()) {
    std::string found;
    for (const Series& series : s.series) found += (found.empty() ? "" : ", ") + series_uid_of(s, series);
    throw Error(ErrorCode::invalid_input, path + ": no series with SeriesInstanceUID " + dicom::printable(uid) +
                                              " (found: " + dicom::printable(found) + ")");
  }
  return best;
}

// Linear interpolation along the slice normal onto evenly spaced positions.
Volume resample_even(const Volume& in, const std::vector<double>& positions) {
  std::vector<double> gaps;
  for (std::size_t k = 0; k + 1 < positions.size(); ++k) gaps.push_back(positions[k + 1] - positions[k]);
  std::sort(gaps.begin(), gaps.end());
  const double median = gaps[gaps.size() / 2];
  const double extent = positions.back() - positions.front();
  const auto nz = static_cast<std::int64_t>(std::llround(extent / median)) + 1;
  const double step = extent / static_cast<double>(nz - 1);
  Geometry g = in.geometry;
  g.spacing[2] = step;
  Volume out(in.channels(), nz, in.ny(), in.nx(), g);
  out.metadata = in.metadata;
  const std::int64_t plane = in.ny() * in.nx();
  parallel_for(nz, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t k = b; k < e; ++k) {
      const double p = positions.front() + static_cast<double>(k) * step;
      std::size_t j = 0;
      while (j + 2 < positions.size() && positions[j + 1] < p) ++j;
      const double w = std::clamp((p - positions[j]) / (positions[j + 1] - positions[j]), 0.0, 1.0);
      for (std::int64_t c = 0; c < in.channels(); ++c) {
        const float* a = in.channel(c) + static_cast<std::int64_t>(j) * plane;
        const float* bsrc = a + plane;
        float* d = out.channel(c) + k * plane;
        for (std::int64_t i = 0; i < plane; ++i)
          d[i] = static_cast<float>((1.0 - w) * static_cast<double>(a[i]) + w * static_cast<double>(bsrc[i]));
      }
    }
  });
  return out;
}

Tensor uninitialized_f32(const Shape& shape) {
  // Large volumes are aligned to 2 MiB and asked for transparent huge pages: first-touch
  // page faults on a 400 MB volume otherwise cost as much as decoding it.
  constexpr std::size_t kHugePage = std::size_t{2} << 20;
  const auto raw = static_cast<std::size_t>(std::max<std::int64_t>(shape.numel() * 4, 1));
  const std::size_t align = raw >= 4 * kHugePage ? kHugePage : kTensorAlignment;
  const std::size_t bytes = (raw + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes);
  if (!p) throw Error(ErrorCode::internal, "out of memory allocating " + std::to_string(bytes) + " bytes");
#ifdef MADV_HUGEPAGE
  if (align == kHugePage) ::madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return Tensor::wrap(p, shape, DType::f32, std::shared_ptr<void>(p, [](void* q) { std::free(q); }));
}

// The shortest decimal that reads back as the same double (a DS value parsed from the
// file comes back as its own digits, within the 16 characters DS allows).
std::string shortest_decimal(double v) {
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string join(const std::vector<std::string>& v) {
  std::string r;
  for (std::size_t i = 0; i < v.size(); ++i) r += (i ? "\\" : "") + v[i];
  return r;
}

}  // namespace

bool is_dicom_file(const std::string& path) {
  // Opening a FIFO would block until someone writes to it.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char buf[132];
  const bool ok = std::fread(buf, 1, sizeof buf, f) == sizeof buf && std::memcmp(buf + 128, "DICM", 4) == 0;
  std::fclose(f);
  return ok;
}

std::vector<DicomSeriesInfo> list_dicom_series(const std::string& path) {
  const Scan s = dicom::scan(path);
  std::vector<DicomSeriesInfo> out;
  for (const Series& series : s.series) {
    const Plan p = dicom::plan_series(s, series);
    const dicom::FileHeader& h =
        s.files[static_cast<std::size_t>(s.frames[static_cast<std::size_t>(series.frames.front())].file)];
    DicomSeriesInfo info;
    info.series_uid = dicom::printable(h.series_uid);
    auto module = [&](const char* k) { return h.modules.count(k) ? h.modules.at(k) : std::string(); };
    info.modality = dicom::printable(module("Modality"));
    info.description = dicom::printable(module("SeriesDescription"));
    info.series_number = dicom::printable(module("SeriesNumber"));
    info.sop_class_uid = h.sop_class_uid;
    std::vector<int> files;
    for (int f : series.frames) files.push_back(s.frames[static_cast<std::size_t>(f)].file);
    std::sort(files.begin(), files.end());
    info.files = std::unique(files.begin(), files.end()) - files.begin();
    info.images = static_cast<std::int64_t>(series.frames.size());
    info.size = {p.columns, p.rows, static_cast<std::int64_t>(p.slices.size())};
    info.volumes = volumes_of(p);
    info.spacing = {p.spacing[0], p.spacing[1], p.spacing[2]};
    Geometry g;
    g.direction = p.direction;
    info.orientation = g.orientation_code();
    info.problem = p.problem;
    out.push_back(std::move(info));
  }
  return out;
}

Volume read_dicom(const std::string& path, const ReadOptions& options) {
  const Scan s = dicom::scan(path, options.skip_unreadable);
  std::vector<Plan> plans;
  for (const Series& series : s.series) plans.push_back(dicom::plan_series(s, series));
  const std::size_t chosen = choose(path, s, plans, options.series_uid);
  const Plan& plan = plans[chosen];
  const std::string& uid = series_uid_of(s, s.series[chosen]);
  const std::string what = path + ": series " + dicom::printable(uid);
  if (!plan.problem.empty() && !(plan.uneven && options.allow_uneven))
    throw Error(ErrorCode::invalid_input,
                what + ": " + plan.problem + (plan.uneven ? "; use --allow-uneven to resample onto an even grid" : ""));

  Geometry g;
  g.origin = plan.origin;
  g.direction = plan.direction;
  g.spacing = plan.spacing;
  g.validate(what);
  const std::int64_t channels = volumes_of(plan), nz = static_cast<std::int64_t>(plan.slices.size());
  const std::int64_t ny = plan.rows, nx = plan.columns;
  if (channels * nz > options.max_voxels / std::max<std::int64_t>(1, ny * nx))
    throw Error(ErrorCode::invalid_input, what + ": " + std::to_string(channels * nz) + " images of " + std::to_string(nx) +
                                              "x" + std::to_string(ny) + " exceed the voxel limit");
  // Every voxel is written by the decoders, so the tensor is not zero-filled first (that
  // would cost a serial pass over the whole volume); SEGs with absent frames need zeros.
  const bool complete = std::all_of(plan.slices.begin(), plan.slices.end(), [](const std::vector<int>& v) {
    return std::all_of(v.begin(), v.end(), [](int i) { return i >= 0; });
  });
  Volume vol;
  if (complete) {
    vol.data = uninitialized_f32(Shape{channels, nz, ny, nx});
    vol.geometry = g;
  } else {
    vol = Volume(channels, nz, ny, nx, g);
  }

  // Destination of every frame, grouped by file so that each file is read once.
  std::map<int, std::vector<std::pair<int, float*>>> by_file;
  for (std::int64_t z = 0; z < nz; ++z)
    for (std::int64_t c = 0; c < channels; ++c) {
      const int f = plan.slices[static_cast<std::size_t>(z)][static_cast<std::size_t>(c)];
      if (f < 0) continue;  // a SEG segment absent from this slice: zeros
      by_file[s.frames[static_cast<std::size_t>(f)].file].emplace_back(f, vol.channel(c) + z * ny * nx);
    }
  std::vector<std::pair<int, std::vector<std::pair<int, float*>>>> jobs(by_file.begin(), by_file.end());
  std::mutex error_mutex;
  std::exception_ptr error;
  parallel_for(static_cast<std::int64_t>(jobs.size()), 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t j = b; j < e; ++j) {
      try {
        // Not a structured binding: clang 14 cannot capture one in the lambda below.
        const int file = jobs[static_cast<std::size_t>(j)].first;
        const auto& targets = jobs[static_cast<std::size_t>(j)].second;
        dicom::FileDecoder decoder(s.files[static_cast<std::size_t>(file)]);
        parallel_for(static_cast<std::int64_t>(targets.size()), 4, [&](std::int64_t fb, std::int64_t fe) {
          for (std::int64_t t = fb; t < fe; ++t) {
            const auto& [frame, dst] = targets[static_cast<std::size_t>(t)];
            decoder.decode(s.frames[static_cast<std::size_t>(frame)], dst);
          }
        });
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  });
  if (error) std::rethrow_exception(error);

  // Identifiers for a DICOM SEG: modules of the first image, SOP instances slice by slice.
  auto first_present = [&](const std::vector<int>& slice) {
    for (int i : slice)
      if (i >= 0) return i;
    return slice.front();
  };
  const dicom::FileHeader& first =
      s.files[static_cast<std::size_t>(s.frames[static_cast<std::size_t>(first_present(plan.slices.front()))].file)];
  vol.metadata.insert(first.modules.begin(), first.modules.end());
  vol.metadata["SOPClassUID"] = first.sop_class_uid;
  vol.metadata["TransferSyntaxUID"] = first.transfer_syntax;
  vol.metadata["source_format"] = "DICOM";
  std::vector<std::string> sops, frame_numbers, positions;
  bool multiframe = false;
  for (const auto& slice : plan.slices) {
    const dicom::Frame& f = s.frames[static_cast<std::size_t>(first_present(slice))];
    const dicom::FileHeader& h = s.files[static_cast<std::size_t>(f.file)];
    sops.push_back(h.sop_instance_uid);
    for (int i = 0; i < 3; ++i) positions.push_back(shortest_decimal(f.position[i]));
    frame_numbers.push_back(std::to_string(f.index + 1));
    multiframe = multiframe || h.frames > 1;
  }
  vol.metadata["SOPInstanceUIDs"] = join(sops);
  // Exact ImagePositionPatient of each slice (x\y\z per slice, Z order), for DICOM SEG frames.
  if (plan.has_geometry) vol.metadata["ImagePositionPatients"] = join(positions);
  if (first.slice_thickness > 0) vol.metadata["SliceThickness"] = shortest_decimal(first.slice_thickness);
  if (multiframe) vol.metadata["ReferencedFrameNumbers"] = join(frame_numbers);
  if (!plan.segments.empty()) {
    std::vector<std::string> numbers;
    for (long n : plan.segments) numbers.push_back(std::to_string(n));
    vol.metadata["SegmentNumbers"] = join(numbers);
  }
  if (!plan.has_geometry)
    vol.metadata["warning"] = "the images carry no plane position; slices are stacked in acquisition order";

  if (!s.skipped.empty()) {
    const std::string note = "skipped " + std::to_string(s.skipped.size()) + " unreadable file" +
                             (s.skipped.size() > 1 ? "s" : "") + ", the first " + s.skipped.front();
    auto& w = vol.metadata["warning"];
    w = w.empty() ? note : w + "; " + note;
  }

  if (!plan.problem.empty()) {
    // allow_uneven: the slices no longer correspond one to one with the source images.
    Volume out = resample_even(vol, plan.positions);
    out.metadata.erase("SOPInstanceUIDs");
    out.metadata.erase("ReferencedFrameNumbers");
    out.metadata.erase("ImagePositionPatients");
    const std::string note = plan.problem + "; resampled by linear interpolation to " +
                             std::to_string(out.geometry.spacing[2]) + " mm slices";
    auto& w = out.metadata["warning"];
    w = w.empty() ? note : note + "; " + w;
    return out;
  }
  return vol;
}

}  // namespace voxinfer
