// DICOM scan: reads file headers with DCMTK (pixel data is left on disk), expands
// Enhanced multi-frame files into frames with their functional-group geometry, groups
// frames into series and works out the voxel grid of a series.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <optional>
#include <sstream>

#include "io/dicom_internal.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"

namespace voxinfer::dicom {
namespace {

namespace fs = std::filesystem;

// Large values (the pixel data) are not loaded while scanning headers.
constexpr Uint32 kHeaderMaxReadLength = 4096;
// Two images closer than this along the slice normal share a slice position (mm).
constexpr double kSamePositionMm = 0.01;
// More frames than any real multi-frame object holds: a corrupt NumberOfFrames.
constexpr int kMaxFrames = 1 << 16;

std::string trim(const OFString& s) {
  std::string r(s.c_str());
  while (!r.empty() && (r.back() == ' ' || r.back() == '\0')) r.pop_back();
  std::size_t b = 0;
  while (b < r.size() && r[b] == ' ') ++b;
  return r.substr(b);
}

std::string get_string(DcmItem* item, const DcmTagKey& tag) {
  OFString v;
  if (item && item->findAndGetOFStringArray(tag, v).good()) return trim(v);
  return {};
}

bool get_doubles(DcmItem* item, const DcmTagKey& tag, double* out, int n) {
  if (!item) return false;
  for (int i = 0; i < n; ++i) {
    Float64 v = 0;
    if (item->findAndGetFloat64(tag, v, static_cast<unsigned long>(i)).bad()) return false;
    out[i] = v;
  }
  return true;
}

long get_long(DcmItem* item, const DcmTagKey& tag, long fallback) {
  if (!item) return fallback;
  Sint32 s = 0;
  if (item->findAndGetSint32(tag, s).good()) return s;
  Uint32 u = 0;
  if (item->findAndGetUint32(tag, u).good()) return static_cast<long>(u);
  Uint16 w = 0;
  if (item->findAndGetUint16(tag, w).good()) return w;
  return fallback;
}

DcmItem* macro(DcmItem* group, const DcmTagKey& sequence) {
  DcmItem* item = nullptr;
  if (group && group->findAndGetSequenceItem(sequence, item, 0).good()) return item;
  return nullptr;
}

// Patient, study and series module values kept for a later DICOM SEG (never logged).
const std::pair<DcmTagKey, const char*> kKeptTags[] = {
    {DCM_StudyInstanceUID, "StudyInstanceUID"},
    {DCM_SeriesInstanceUID, "SeriesInstanceUID"},
    {DCM_FrameOfReferenceUID, "FrameOfReferenceUID"},
    {DCM_SOPClassUID, "SOPClassUID"},
    {DCM_PatientName, "PatientName"},
    {DCM_PatientID, "PatientID"},
    {DCM_PatientBirthDate, "PatientBirthDate"},
    {DCM_PatientSex, "PatientSex"},
    {DCM_PatientAge, "PatientAge"},
    {DCM_StudyDate, "StudyDate"},
    {DCM_StudyTime, "StudyTime"},
    {DCM_StudyID, "StudyID"},
    {DCM_StudyDescription, "StudyDescription"},
    {DCM_AccessionNumber, "AccessionNumber"},
    {DCM_ReferringPhysicianName, "ReferringPhysicianName"},
    {DCM_Modality, "Modality"},
    {DCM_Manufacturer, "Manufacturer"},
    {DCM_ManufacturerModelName, "ManufacturerModelName"},
    {DCM_DeviceSerialNumber, "DeviceSerialNumber"},
    {DCM_SoftwareVersions, "SoftwareVersions"},
    {DCM_SeriesNumber, "SeriesNumber"},
    {DCM_SeriesDescription, "SeriesDescription"},
    {DCM_SeriesDate, "SeriesDate"},
    {DCM_SeriesTime, "SeriesTime"},
    {DCM_BodyPartExamined, "BodyPartExamined"},
    {DCM_PatientPosition, "PatientPosition"},
    {DCM_InstitutionName, "InstitutionName"},
    {DCM_SpecificCharacterSet, "SpecificCharacterSet"},
    {DCM_GantryDetectorTilt, "GantryDetectorTilt"},
    {DCM_ImageType, "ImageType"},
};

std::string fmt(double v, int precision = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

struct Parsed {
  FileHeader header;
  std::vector<Frame> frames;
};

bool finite(const double* v, int n) {
  for (int i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}

// Parses one file's header. Returns nothing (and sets `why`) when it is not a readable
// image; `broken` then says whether the file is damaged (rather than, say, a report or a
// presentation state without pixels, which a folder may hold next to its images).
std::optional<Parsed> parse(const std::string& path, std::string& why, bool& broken) {
  broken = true;
  why = structure_problem(path);
  if (!why.empty()) return std::nullopt;
  DcmFileFormat ff;
  const OFCondition c = ff.loadFile(OFFilename(path.c_str()), EXS_Unknown, EGL_noChange, kHeaderMaxReadLength, ERM_autoDetect);
  if (c.bad()) {
    why = std::string("not a readable DICOM file (") + c.text() + ")";
    return std::nullopt;
  }
  DcmDataset* ds = ff.getDataset();
  Parsed p;
  FileHeader& h = p.header;
  h.path = path;
  h.series_uid = get_string(ds, DCM_SeriesInstanceUID);
  h.frame_of_reference_uid = get_string(ds, DCM_FrameOfReferenceUID);
  h.sop_class_uid = get_string(ds, DCM_SOPClassUID);
  if (h.sop_class_uid.empty()) h.sop_class_uid = get_string(ff.getMetaInfo(), DCM_MediaStorageSOPClassUID);
  h.sop_instance_uid = get_string(ds, DCM_SOPInstanceUID);
  h.transfer_syntax = DcmXfer(ds->getOriginalXfer()).getXferID();
  h.rows = static_cast<int>(get_long(ds, DCM_Rows, 0));
  h.columns = static_cast<int>(get_long(ds, DCM_Columns, 0));
  h.frames = static_cast<int>(get_long(ds, DCM_NumberOfFrames, 1));
  h.samples_per_pixel = static_cast<int>(get_long(ds, DCM_SamplesPerPixel, 1));
  h.bits_allocated = static_cast<int>(get_long(ds, DCM_BitsAllocated, 0));
  h.bits_stored = static_cast<int>(get_long(ds, DCM_BitsStored, h.bits_allocated));
  h.high_bit = static_cast<int>(get_long(ds, DCM_HighBit, h.bits_stored - 1));
  h.pixel_representation = static_cast<int>(get_long(ds, DCM_PixelRepresentation, 0));
  h.photometric = get_string(ds, DCM_PhotometricInterpretation);
  h.instance_number = get_long(ds, DCM_InstanceNumber, 0);
  h.has_pixel_data = ds->tagExistsWithValue(DCM_PixelData);
  get_doubles(ds, DCM_SliceThickness, &h.slice_thickness, 1);
  get_doubles(ds, DCM_SpacingBetweenSlices, &h.spacing_between_slices, 1);
  for (const auto& [tag, name] : kKeptTags) {
    const std::string v = get_string(ds, tag);
    if (!v.empty()) h.modules[name] = v;
  }
  if (h.rows <= 0 || h.columns <= 0) {
    why = "not an image (no Rows/Columns)";
    broken = false;
    return std::nullopt;
  }
  if (h.frames < 1) h.frames = 1;
  // A corrupt header must not make the scan allocate per-frame records (or the reader a
  // volume) for data that is not there: native pixel data must hold every frame.
  if (h.frames > kMaxFrames) {
    why = "NumberOfFrames " + std::to_string(h.frames) + " is implausible (more than " + std::to_string(kMaxFrames) + ")";
    return std::nullopt;
  }
  DcmElement* pixel_data = nullptr;
  if (h.has_pixel_data && ds->findAndGetElement(DCM_PixelData, pixel_data).good() && pixel_data &&
      !DcmXfer(ds->getOriginalXfer()).isEncapsulated()) {
    const std::uint64_t pixels = static_cast<std::uint64_t>(h.rows) * static_cast<std::uint64_t>(h.columns) *
                                 static_cast<std::uint64_t>(h.frames);
    const std::uint64_t needed = h.bits_allocated <= 1 ? (pixels + 7) / 8 : pixels * static_cast<std::uint64_t>(h.bits_allocated / 8);
    if (pixel_data->getLength() < needed) {
      why = "pixel data is truncated: " + std::to_string(pixel_data->getLength()) + " bytes where Rows " +
            std::to_string(h.rows) + ", Columns " + std::to_string(h.columns) + " and NumberOfFrames " +
            std::to_string(h.frames) + " need " + std::to_string(needed);
      return std::nullopt;
    }
  }

  DcmSequenceOfItems* per_frame = nullptr;
  ds->findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, per_frame);
  DcmItem* shared = nullptr;
  ds->findAndGetSequenceItem(DCM_SharedFunctionalGroupsSequence, shared, 0);
  DcmItem* frame_item = per_frame ? per_frame->getItem(0) : nullptr;
  p.frames.resize(static_cast<std::size_t>(h.frames));
  for (int i = 0; i < h.frames; ++i) {
    if (per_frame && i > 0) frame_item = OFstatic_cast(DcmItem*, per_frame->nextInContainer(frame_item));
    Frame& f = p.frames[static_cast<std::size_t>(i)];
    f.index = i;
    // Per-frame group first, then the shared group, then the top-level dataset.
    auto find = [&](const DcmTagKey& seq, const DcmTagKey& tag, double* out, int n) {
      return get_doubles(macro(frame_item, seq), tag, out, n) || get_doubles(macro(shared, seq), tag, out, n) ||
             get_doubles(ds, tag, out, n);
    };
    double ipp[3], spacing[2], rescale[1];
    f.has_position = find(DCM_PlanePositionSequence, DCM_ImagePositionPatient, ipp, 3);
    if (f.has_position) f.position = Eigen::Vector3d(ipp[0], ipp[1], ipp[2]);
    f.has_orientation = find(DCM_PlaneOrientationSequence, DCM_ImageOrientationPatient, f.orientation.data(), 6);
    f.has_spacing = find(DCM_PixelMeasuresSequence, DCM_PixelSpacing, spacing, 2);
    if (f.has_spacing) {
      f.row_spacing = spacing[0];
      f.column_spacing = spacing[1];
    }
    if (find(DCM_PixelValueTransformationSequence, DCM_RescaleSlope, rescale, 1)) f.slope = rescale[0];
    if (find(DCM_PixelValueTransformationSequence, DCM_RescaleIntercept, rescale, 1)) f.intercept = rescale[0];
    // Non-finite geometry or rescale would silently give a sheared grid or NaN voxels.
    const char* bad = !std::isfinite(f.slope)             ? "RescaleSlope is not a finite number"
                      : !std::isfinite(f.intercept)       ? "RescaleIntercept is not a finite number"
                      : f.has_position && !finite(ipp, 3) ? "ImagePositionPatient is not finite"
                      : f.has_orientation && !finite(f.orientation.data(), 6) ? "ImageOrientationPatient is not finite"
                      : f.has_spacing && !finite(spacing, 2)                  ? "PixelSpacing is not finite"
                      : f.has_spacing && (spacing[0] <= 0 || spacing[1] <= 0) ? "PixelSpacing is zero or negative"
                                                                              : nullptr;
    if (bad) {
      why = bad;
      if (f.has_spacing && bad[0] == 'P') why += " (" + fmt(spacing[0], 4) + "\\" + fmt(spacing[1], 4) + ")";
      if (h.frames > 1) why += " in frame " + std::to_string(i + 1);
      return std::nullopt;
    }
    DcmItem* content = macro(frame_item, DCM_FrameContentSequence);
    f.temporal = get_long(content, DCM_TemporalPositionIndex, get_long(ds, DCM_TemporalPositionIdentifier, 0));
    DcmItem* segment = macro(frame_item, DCM_SegmentIdentificationSequence);
    f.segment = get_long(segment, DCM_ReferencedSegmentNumber, 0);
    const std::string stack = get_string(content, DCM_StackID);
    f.stack = std::strtol(stack.c_str(), nullptr, 10);
    if (h.slice_thickness <= 0) {
      double t = 0;
      if (find(DCM_PixelMeasuresSequence, DCM_SliceThickness, &t, 1)) h.slice_thickness = t;
    }
  }
  return p;
}

bool has_dicm_magic(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char buf[132];
  const bool ok = std::fread(buf, 1, sizeof buf, f) == sizeof buf && std::memcmp(buf + 128, "DICM", 4) == 0;
  std::fclose(f);
  return ok;
}

std::string group_key(const FileHeader& h, const Frame& f) {
  std::ostringstream k;
  k << h.series_uid << '|' << h.frame_of_reference_uid << '|' << h.rows << 'x' << h.columns << '|';
  if (f.has_orientation) {
    for (double v : f.orientation) k << std::lround(v * 1e4) << ',';
  } else {
    k << "no-orientation";
  }
  return k.str();
}

// Order of the images that share a slice position: acquisition order.
bool acquired_before(const Scan& s, int a, int b) {
  const Frame& fa = s.frames[static_cast<std::size_t>(a)];
  const Frame& fb = s.frames[static_cast<std::size_t>(b)];
  const FileHeader& ha = s.files[static_cast<std::size_t>(fa.file)];
  const FileHeader& hb = s.files[static_cast<std::size_t>(fb.file)];
  if (fa.temporal != fb.temporal) return fa.temporal < fb.temporal;
  if (fa.stack != fb.stack) return fa.stack < fb.stack;
  if (ha.instance_number != hb.instance_number) return ha.instance_number < hb.instance_number;
  if (fa.file != fb.file) return ha.path < hb.path;
  return fa.index < fb.index;
}

}  // namespace

void init_dcmtk() {
  static std::once_flag once;
  std::call_once(once, [] {
    // DCMTK logs warnings about odd files on stderr; the adapter reports through errors.
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
  });
}

std::string transfer_syntax_name(const std::string& uid) {
  const DcmXfer x(uid.c_str());
  return x.getXfer() == EXS_Unknown ? std::string("unknown") : std::string(x.getXferName());
}

Scan scan(const std::string& path, bool skip_unreadable) {
  init_dcmtk();
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error(ErrorCode::io, path + ": no such file or folder");
  std::vector<std::string> candidates;
  const bool folder = fs::is_directory(st);
  if (folder) {
    fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec), end;
    if (ec) throw Error(ErrorCode::io, path + ": cannot list the folder: " + ec.message());
    for (; it != end; it.increment(ec)) {
      if (ec) break;
      std::error_code e2;
      if (it->is_regular_file(e2) && has_dicm_magic(it->path().string())) candidates.push_back(it->path().string());
    }
    std::sort(candidates.begin(), candidates.end());
    if (candidates.empty()) throw Error(ErrorCode::invalid_input, path + ": no DICOM files found in this folder");
  } else {
    if (!fs::is_regular_file(st))
      throw Error(ErrorCode::invalid_input, path + ": is not a regular file (a pipe or a device?)");
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw Error(ErrorCode::io, path + ": cannot open for reading (permission denied?)");
    std::fclose(f);
    candidates.push_back(path);
  }

  std::vector<std::optional<Parsed>> parsed(candidates.size());
  std::vector<std::string> why(candidates.size());
  std::vector<char> broken(candidates.size(), 0);
  parallel_for(static_cast<std::int64_t>(candidates.size()), 8, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      const auto k = static_cast<std::size_t>(i);
      bool damaged = false;
      parsed[k] = parse(candidates[k], why[k], damaged);
      broken[k] = parsed[k] ? 0 : static_cast<char>(damaged);
      if (parsed[k] && !parsed[k]->header.has_pixel_data) {
        why[k] = "has no pixel data";
        parsed[k].reset();
      }
    }
  });

  Scan s;
  for (std::size_t i = 0; i < parsed.size(); ++i) {
    if (!parsed[i]) {
      // A damaged file may be a slice of the series: dropping it silently would give a
      // volume with a slice missing at an end (which no spacing check can see).
      if (broken[i] && folder) {
        if (!skip_unreadable)
          throw Error(ErrorCode::invalid_input,
                      candidates[i] + ": " + printable(why[i]) +
                          " (a damaged file in the folder; remove it, or skip unreadable files explicitly)");
        s.skipped.push_back(candidates[i] + ": " + printable(why[i]));
      }
      continue;
    }
    const int file = static_cast<int>(s.files.size());
    s.files.push_back(std::move(parsed[i]->header));
    for (Frame& f : parsed[i]->frames) {
      f.file = file;
      s.frames.push_back(f);
    }
  }
  if (s.files.empty()) {
    if (!folder) throw Error(ErrorCode::invalid_input, path + ": " + printable(why[0]));
    throw Error(ErrorCode::invalid_input, path + ": no readable DICOM image in this folder (" +
                                              std::to_string(candidates.size()) + " DICOM files; the first " +
                                              printable(why[0]) + ")");
  }

  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < s.frames.size(); ++i) {
    const Frame& f = s.frames[i];
    const std::string key = group_key(s.files[static_cast<std::size_t>(f.file)], f);
    auto [it, inserted] = index.emplace(key, s.series.size());
    if (inserted) s.series.push_back(Series{key, {}});
    s.series[it->second].frames.push_back(static_cast<int>(i));
  }
  std::stable_sort(s.series.begin(), s.series.end(),
                   [](const Series& a, const Series& b) { return a.frames.size() > b.frames.size(); });
  return s;
}

Plan plan_series(const Scan& s, const Series& series) {
  Plan p;
  const Frame& first = s.frames[static_cast<std::size_t>(series.frames.front())];
  const FileHeader& h0 = s.files[static_cast<std::size_t>(first.file)];
  p.rows = h0.rows;
  p.columns = h0.columns;
  p.has_geometry = std::all_of(series.frames.begin(), series.frames.end(), [&](int i) {
    const Frame& f = s.frames[static_cast<std::size_t>(i)];
    return f.has_position && f.has_orientation;
  });

  const Eigen::Vector3d row(first.orientation[0], first.orientation[1], first.orientation[2]);
  const Eigen::Vector3d col(first.orientation[3], first.orientation[4], first.orientation[5]);
  const Eigen::Vector3d normal = row.cross(col);
  p.direction.col(0) = row;
  p.direction.col(1) = col;
  p.direction.col(2) = normal;
  p.spacing = Eigen::Vector3d(first.column_spacing, first.row_spacing, 1.0);

  std::vector<int> order = series.frames;
  if (!p.has_geometry) {
    // No plane positions (some Enhanced objects): frames stack in acquisition order.
    std::sort(order.begin(), order.end(), [&](int a, int b) { return acquired_before(s, a, b); });
    for (int i : order) {
      p.slices.push_back({i});
      p.positions.push_back(static_cast<double>(p.positions.size()));
    }
    p.direction = Eigen::Matrix3d::Identity();
    if (first.has_orientation) {
      p.direction.col(0) = row;
      p.direction.col(1) = col;
      p.direction.col(2) = normal;
    }
    if (first.has_position) p.origin = first.position;
    const double t = h0.spacing_between_slices > 0 ? h0.spacing_between_slices : h0.slice_thickness;
    p.spacing[2] = t > 0 ? t : 1.0;
    return p;
  }

  auto along = [&](int i) { return s.frames[static_cast<std::size_t>(i)].position.dot(normal); };
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const double da = along(a), db = along(b);
    if (std::abs(da - db) > kSamePositionMm) return da < db;
    return acquired_before(s, a, b);
  });
  for (std::size_t i = 0; i < order.size(); ++i) {
    if (i == 0 || along(order[i]) - p.positions.back() > kSamePositionMm) {
      p.slices.push_back({});
      p.positions.push_back(along(order[i]));
    }
    p.slices.back().push_back(order[i]);
  }
  // Images at one position must be sorted by acquisition (the sort above only breaks ties).
  for (auto& v : p.slices) std::sort(v.begin(), v.end(), [&](int a, int b) { return acquired_before(s, a, b); });

  // A DICOM SEG stores frames only where a segment is present: one channel per segment,
  // and positions without a frame of that segment stay empty (zero).
  const bool seg = std::any_of(order.begin(), order.end(), [&](int i) { return s.frames[static_cast<std::size_t>(i)].segment > 0; });
  if (seg) {
    for (int i : order) p.segments.push_back(s.frames[static_cast<std::size_t>(i)].segment);
    std::sort(p.segments.begin(), p.segments.end());
    p.segments.erase(std::unique(p.segments.begin(), p.segments.end()), p.segments.end());
    for (std::size_t k = 0; k < p.slices.size(); ++k) {
      std::vector<int> by_segment(p.segments.size(), -1);
      for (int i : p.slices[k]) {
        const auto at = std::lower_bound(p.segments.begin(), p.segments.end(), s.frames[static_cast<std::size_t>(i)].segment);
        int& slot = by_segment[static_cast<std::size_t>(at - p.segments.begin())];
        if (slot >= 0) {
          p.problem = "segment " + std::to_string(*at) + " has two frames at slice position " + std::to_string(k);
          return p;
        }
        slot = i;
      }
      p.slices[k] = by_segment;
    }
  }
  auto first_present = [&](std::size_t k) {
    for (int i : p.slices[k])
      if (i >= 0) return i;
    return -1;
  };

  const std::size_t volumes = p.slices.front().size();
  for (std::size_t k = 0; k < p.slices.size(); ++k)
    if (p.slices[k].size() != volumes) {
      p.problem = "slice positions hold different numbers of images (" + std::to_string(volumes) +
                  " at the first position, " + std::to_string(p.slices[k].size()) + " at position " +
                  std::to_string(k) + "): mixed stacks or an incomplete time series";
      return p;
    }

  p.origin = s.frames[static_cast<std::size_t>(first_present(0))].position;
  const std::size_t nz = p.slices.size();
  if (nz == 1) {
    const double t = h0.spacing_between_slices > 0 ? h0.spacing_between_slices : h0.slice_thickness;
    p.spacing[2] = t > 0 ? t : 1.0;
    return p;
  }
  p.spacing[2] = (p.positions.back() - p.positions.front()) / static_cast<double>(nz - 1);

  // Gantry tilt: the slice step leaves the slice normal, so the grid would be sheared.
  const Eigen::Vector3d last = s.frames[static_cast<std::size_t>(first_present(p.slices.size() - 1))].position;
  const Eigen::Vector3d step = (last - p.origin) / static_cast<double>(nz - 1);
  const Eigen::Vector3d lateral = step - step.dot(normal) * normal;
  p.tilt_degrees = std::atan2(lateral.norm(), std::abs(step.dot(normal))) * 180.0 / 3.14159265358979323846;
  const double drift = lateral.norm() * static_cast<double>(nz - 1);
  if (drift > 0.1 * std::min(p.spacing[0], p.spacing[1])) {
    p.problem = "gantry tilt: the slices are sheared " + fmt(p.tilt_degrees) +
                " degrees off the slice normal (GantryDetectorTilt " +
                (h0.modules.count("GantryDetectorTilt") ? printable(h0.modules.at("GantryDetectorTilt"))
                                                        : std::string("not given")) +
                "); voxinfer does not resample tilted series";
    return p;
  }

  // Uneven spacing or a missing slice: every gap must match the mean.
  std::vector<double> gaps(nz - 1);
  for (std::size_t k = 0; k + 1 < nz; ++k) gaps[k] = p.positions[k + 1] - p.positions[k];
  std::vector<double> sorted = gaps;
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2), sorted.end());
  const double median = sorted[sorted.size() / 2];
  const double tolerance = std::max(0.01, 0.01 * p.spacing[2]);
  std::size_t worst = 0;
  for (std::size_t k = 0; k < gaps.size(); ++k)
    if (std::abs(gaps[k] - median) > std::abs(gaps[worst] - median)) worst = k;
  bool uneven = false;
  for (double g : gaps) uneven = uneven || std::abs(g - p.spacing[2]) > tolerance;
  if (uneven) {
    p.uneven = true;
    p.problem = "uneven slice spacing: the gap between slices " + std::to_string(worst) + " and " +
                std::to_string(worst + 1) + " is " + fmt(gaps[worst], 3) + " mm where the usual gap is " +
                fmt(median, 3) + " mm" + (gaps[worst] > 1.5 * median ? " (a missing slice?)" : "");
  }
  return p;
}

}  // namespace voxinfer::dicom
