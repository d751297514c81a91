// DICOM SEG writer on DCMTK's dcmseg: one segment per label, one frame per (segment,
// source slice) holding that segment, in the source image's plane and referencing it.
// Geometry and references come from the source Volume's metadata (read_dicom keeps the
// per-slice SOPInstanceUIDs and ImagePositionPatients); nothing is taken from a file here.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmiod/cielabutil.h>
#include <dcmtk/dcmiod/modcommoninstanceref.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <vector>

#include "io/atomic_file.h"
#include "io/dicom_internal.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/io/dicom_seg.h"
#include "voxinfer/version.h"

namespace voxinfer {
namespace {

// Slices whose position differs from the label grid's by more than this do not lie on it (mm).
constexpr double kPlaneToleranceMm = 0.01;
// Frames whose masks are built in parallel before DCMTK (single-threaded) takes them.
constexpr std::size_t kFrameBatch = 32;
// Label values above this cannot name a segment (and are not converted to int).
constexpr float kMaxLabelValue = 1e9f;
// Characters in a DS (decimal string) value.
constexpr std::size_t kMaxDecimalString = 16;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == '\\') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

// The shortest decimal that reads back as `v`, cut to the 16 characters a DS value holds.
std::string decimal(double v) {
  char buf[384];  // room for any %g of a double, so the compiler can prove no truncation
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  for (int precision = 15; std::strlen(buf) > kMaxDecimalString && precision > 1; --precision)
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
  return buf;
}

// A DS value from the metadata, shortened when it exceeds 16 characters.
std::string ds(const std::string& s) { return s.size() <= kMaxDecimalString ? s : decimal(std::strtod(s.c_str(), nullptr)); }

void check(const OFCondition& c, const std::string& path, const std::string& what) {
  if (c.bad()) throw Error(ErrorCode::internal, path + ": writing the DICOM SEG failed (" + what + ": " + c.text() + ")");
}

CodeSequenceMacro to_macro(const DicomSegCode& c) { return CodeSequenceMacro(c.value.c_str(), c.scheme.c_str(), c.meaning.c_str()); }

// What the writer needs from the source series, validated.
struct Source {
  std::string study_uid, series_uid, frame_of_reference_uid, sop_class_uid;
  std::vector<std::string> sops;
  std::vector<Uint16> frame_numbers;         // multi-frame sources: frame of each slice
  std::vector<std::array<std::string, 3>> positions;  // exact ImagePositionPatient strings
  std::string slice_thickness;
};

Source source_of(const std::string& path, const std::map<std::string, std::string>& m, std::int64_t nz) {
  auto get = [&](const char* k) {
    const auto it = m.find(k);
    return it == m.end() ? std::string() : it->second;
  };
  Source s;
  s.study_uid = get("StudyInstanceUID");
  s.series_uid = get("SeriesInstanceUID");
  s.frame_of_reference_uid = get("FrameOfReferenceUID");
  s.sop_class_uid = get("SOPClassUID");
  const std::string sops = get("SOPInstanceUIDs");
  if (get("source_format") != "DICOM" || s.study_uid.empty() || s.series_uid.empty() || sops.empty() || s.sop_class_uid.empty())
    throw Error(ErrorCode::invalid_input,
                path + ": a DICOM SEG references the DICOM images it was made from, and the input was not a DICOM series "
                       "(or was resampled): give the DICOM series the label map lies on as the reference");
  if (s.frame_of_reference_uid.empty())
    throw Error(ErrorCode::invalid_input, path + ": the source series " + s.series_uid + " has no FrameOfReferenceUID; a SEG needs one");
  s.sops = split(sops);
  if (static_cast<std::int64_t>(s.sops.size()) != nz)
    throw Error(ErrorCode::invalid_input, path + ": the label map has " + std::to_string(nz) + " slices but the source series " +
                                              s.series_uid + " has " + std::to_string(s.sops.size()) + " images");
  if (const std::string f = get("ReferencedFrameNumbers"); !f.empty())
    for (const std::string& v : split(f)) s.frame_numbers.push_back(static_cast<Uint16>(std::strtoul(v.c_str(), nullptr, 10)));
  if (const std::string p = get("ImagePositionPatients"); !p.empty()) {
    const auto v = split(p);
    if (static_cast<std::int64_t>(v.size()) == 3 * nz)
      for (std::int64_t k = 0; k < nz; ++k) {
        const auto i = static_cast<std::size_t>(3 * k);
        s.positions.push_back({ds(v[i]), ds(v[i + 1]), ds(v[i + 2])});
      }
  }
  if (const std::string t = get("SliceThickness"); !t.empty()) s.slice_thickness = ds(t);
  return s;
}

// Patient, study and frame-of-reference attributes of the source, as a dataset that
// DcmSegmentation::importHierarchy takes over.
void fill_hierarchy(DcmItem& item, const std::map<std::string, std::string>& m) {
  const std::pair<DcmTagKey, const char*> tags[] = {
      {DCM_SpecificCharacterSet, "SpecificCharacterSet"},
      {DCM_PatientName, "PatientName"},
      {DCM_PatientID, "PatientID"},
      {DCM_PatientBirthDate, "PatientBirthDate"},
      {DCM_PatientSex, "PatientSex"},
      {DCM_PatientAge, "PatientAge"},
      {DCM_StudyInstanceUID, "StudyInstanceUID"},
      {DCM_StudyDate, "StudyDate"},
      {DCM_StudyTime, "StudyTime"},
      {DCM_StudyID, "StudyID"},
      {DCM_StudyDescription, "StudyDescription"},
      {DCM_AccessionNumber, "AccessionNumber"},
      {DCM_ReferringPhysicianName, "ReferringPhysicianName"},
      {DCM_FrameOfReferenceUID, "FrameOfReferenceUID"},
  };
  for (const auto& [tag, name] : tags) {
    const auto it = m.find(name);
    if (it != m.end() && !it->second.empty()) item.putAndInsertString(tag, it->second.c_str());
  }
  // Type 2 attributes of the modules: present, possibly empty.
  for (const DcmTagKey& tag : {DCM_PatientName, DCM_PatientID, DCM_PatientBirthDate, DCM_PatientSex, DCM_StudyDate, DCM_StudyTime,
                               DCM_StudyID, DCM_AccessionNumber, DCM_ReferringPhysicianName, DCM_PositionReferenceIndicator})
    if (!item.tagExists(tag)) item.putAndInsertString(tag, "");
}

// Sets bits [bit, bit + n) of `dst` (LSB first) from the 0/1 bytes of `mask`; the bits
// must be clear before.
void pack_bits(const Uint8* mask, std::int64_t n, std::uint64_t bit, Uint8* dst) {
  std::int64_t i = 0;
  for (; i < n && (bit & 7u) != 0; ++i, ++bit) dst[bit >> 3] = static_cast<Uint8>(dst[bit >> 3] | (mask[i] << (bit & 7u)));
  Uint8* out = dst + (bit >> 3);
  for (; i + 8 <= n; i += 8, bit += 8) {
    unsigned b = 0;
    for (unsigned j = 0; j < 8; ++j) b |= static_cast<unsigned>(mask[i + j]) << j;
    *out++ = static_cast<Uint8>(b);
  }
  for (; i < n; ++i, ++bit) dst[bit >> 3] = static_cast<Uint8>(dst[bit >> 3] | (mask[i] << (bit & 7u)));
}

// One frame to write: segment (1-based index into options.segments) and source slice.
struct FrameJob {
  Uint16 segment;
  std::int64_t slice;
};

}  // namespace

DicomSegCode dicom_seg_tissue_code() { return {"SCT", "85756007", "Tissue"}; }

void write_dicom_seg(const std::string& path, const Volume& labels, const std::map<std::string, std::string>& source_metadata,
                     const DicomSegWriteOptions& options) {
  dicom::init_dcmtk();
  const std::int64_t nz = labels.nz(), ny = labels.ny(), nx = labels.nx(), plane = ny * nx;
  const std::size_t nseg = options.segments.size();
  VOXINFER_CHECK(nseg > 0, invalid_input, path + ": a DICOM SEG needs at least one segment");
  VOXINFER_CHECK(nseg <= 65535, invalid_input, path + ": more than 65535 segments");
  VOXINFER_CHECK(ny > 0 && nx > 0 && ny <= 65535 && nx <= 65535, invalid_input, path + ": rows and columns must be 1..65535");
  if (options.fractional)
    VOXINFER_CHECK(labels.channels() == static_cast<std::int64_t>(nseg), invalid_input,
                   path + ": a FRACTIONAL SEG needs one probability channel per segment (" + std::to_string(nseg) + "), got " +
                       std::to_string(labels.channels()));
  else
    VOXINFER_CHECK(labels.channels() == 1, invalid_input, path + ": a BINARY SEG is written from a one-channel label map");
  const Source src = source_of(path, source_metadata, nz);
  labels.geometry.validate(path);

  // The label map must lie on the source grid: each slice at its image's position.
  std::vector<std::array<std::string, 3>> positions = src.positions;
  for (std::int64_t k = 0; k < nz; ++k) {
    const Eigen::Vector3d p = labels.geometry.index_to_physical(Eigen::Vector3d(0, 0, static_cast<double>(k)));
    if (positions.size() < static_cast<std::size_t>(nz)) {
      positions.push_back({decimal(p[0]), decimal(p[1]), decimal(p[2])});
      continue;
    }
    const auto& s = positions[static_cast<std::size_t>(k)];
    const Eigen::Vector3d q(std::strtod(s[0].c_str(), nullptr), std::strtod(s[1].c_str(), nullptr), std::strtod(s[2].c_str(), nullptr));
    if ((p - q).norm() > kPlaneToleranceMm)
      throw Error(ErrorCode::invalid_input, path + ": slice " + std::to_string(k) + " of the label map is " +
                                                decimal((p - q).norm()) + " mm from the source image's position: the label map "
                                                                          "is not on the source series' grid");
  }

  // Label value -> segment number (BINARY).
  std::map<int, Uint16> segment_of;
  for (std::size_t i = 0; i < nseg; ++i) {
    const int v = options.segments[i].value;
    VOXINFER_CHECK(options.fractional || v > 0, invalid_input, path + ": segment label values must be positive, got " + std::to_string(v));
    VOXINFER_CHECK(segment_of.emplace(v, static_cast<Uint16>(i + 1)).second, invalid_input,
                   path + ": label value " + std::to_string(v) + " is listed twice");
  }

  // Which segments each slice holds, and between which rows (one pass over the volume,
  // slices in parallel); masks are then built over those rows only.
  std::vector<std::vector<std::uint8_t>> present(static_cast<std::size_t>(nz), std::vector<std::uint8_t>(nseg, 0));
  std::vector<std::array<std::int64_t, 2>> row_span(static_cast<std::size_t>(nz) * nseg, std::array<std::int64_t, 2>{ny, 0});
  std::vector<std::string> problems(static_cast<std::size_t>(nz));
  parallel_for(nz, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t k = b; k < e; ++k) {
      auto& pr = present[static_cast<std::size_t>(k)];
      if (options.fractional) {
        for (std::size_t s = 0; s < nseg; ++s) {
          const float* src_plane = labels.channel(static_cast<std::int64_t>(s)) + k * plane;
          bool any = false;
          for (std::int64_t i = 0; i < plane; ++i) {
            const float v = src_plane[i];
            if (!(v >= 0.f && v <= 1.f)) {
              problems[static_cast<std::size_t>(k)] = "probability " + decimal(v) + " outside [0, 1] in slice " + std::to_string(k);
              return;
            }
            any = any || v > 0.f;
          }
          pr[s] = any ? 1 : 0;
        }
        continue;
      }
      const float* src_plane = labels.channel(0) + k * plane;
      auto* span = row_span.data() + static_cast<std::size_t>(k) * nseg;
      float last = 0;  // runs of one value are common: look it up once
      std::size_t last_segment = 0;
      for (std::int64_t y = 0; y < ny; ++y) {
        const float* src_row = src_plane + y * nx;
        for (std::int64_t x = 0; x < nx; ++x) {
          const float v = src_row[x];
          if (v == 0.f) continue;
          if (v != last) {
            // Range first: a cast of NaN or a huge value to int is undefined.
            const auto it = v >= 1.f && v <= kMaxLabelValue ? segment_of.find(static_cast<int>(v)) : segment_of.end();
            if (it == segment_of.end() || static_cast<float>(it->first) != v) {
              problems[static_cast<std::size_t>(k)] = "label value " + decimal(v) + " in slice " + std::to_string(k) + " has no segment";
              return;
            }
            last = v;
            last_segment = it->second - 1u;
          }
          pr[last_segment] = 1;
          span[last_segment][0] = std::min(span[last_segment][0], y);
          span[last_segment][1] = std::max(span[last_segment][1], y + 1);
        }
      }
    }
  });
  for (const std::string& p : problems)
    if (!p.empty()) throw Error(ErrorCode::invalid_input, path + ": " + p);

  // Every segment keeps at least one frame (DCMTK refuses a segment without frames, and the
  // segment numbers must stay 1..N in label order): an absent structure gets one empty frame
  // on the first slice.
  std::vector<FrameJob> jobs;
  for (std::size_t s = 0; s < nseg; ++s) {
    const std::size_t before = jobs.size();
    for (std::int64_t k = 0; k < nz; ++k)
      if (options.keep_empty_frames || present[static_cast<std::size_t>(k)][s]) jobs.push_back({static_cast<Uint16>(s + 1), k});
    if (jobs.size() == before) jobs.push_back({static_cast<Uint16>(s + 1), 0});
  }

  // The document.
  const std::string version = VOXINFER_VERSION_STRING;
  IODGeneralEquipmentModule::EquipmentInfo equipment("voxinfer", "voxinfer", "1", version.c_str());
  const std::string description = options.series_description.empty()
                                      ? "Segmentation by " + options.algorithm_name +
                                            (options.algorithm_version.empty() ? "" : " " + options.algorithm_version)
                                      : options.series_description;
  ContentIdentificationMacro content("1", "SEGMENTATION", description.substr(0, 64).c_str(), "");
  DcmSegmentation* raw = nullptr;
  if (options.fractional)
    check(DcmSegmentation::createFractionalSegmentation(raw, static_cast<Uint16>(ny), static_cast<Uint16>(nx), DcmSegTypes::SFT_PROBABILITY,
                                                        255, equipment, content),
          path, "create");
  else
    check(DcmSegmentation::createBinarySegmentation(raw, static_cast<Uint16>(ny), static_cast<Uint16>(nx), equipment, content), path,
          "create");
  std::unique_ptr<DcmSegmentation> seg(raw);
  seg->setCheckFGOnWrite(OFFalse);  // the groups are built uniformly below; DCMTK's check is quadratic in frames

  {
    DcmItem hierarchy;
    fill_hierarchy(hierarchy, source_metadata);
    check(seg->importHierarchy(hierarchy, OFTrue, OFTrue, OFTrue, OFFalse), path, "patient and study modules");
  }
  check(seg->getSeries().setSeriesDescription(description.substr(0, 64).c_str()), path, "SeriesDescription");
  check(seg->getSeries().setSeriesNumber(options.series_number.c_str()), path, "SeriesNumber");
  OFString date, time;
  DcmDate::getCurrentDate(date);
  DcmTime::getCurrentTime(time);
  seg->getSeries().setSeriesDate(date);
  seg->getSeries().setSeriesTime(time);
  seg->getGeneralImage().setContentDate(date);
  seg->getGeneralImage().setContentTime(time);

  // Segments.
  const std::string algorithm =
      (options.algorithm_name + (options.algorithm_version.empty() ? "" : " " + options.algorithm_version)).substr(0, 64);
  for (std::size_t i = 0; i < nseg; ++i) {
    const DicomSegSegment& d = options.segments[i];
    const DicomSegCode category = d.category.value_or(dicom_seg_tissue_code());
    const DicomSegCode type = d.type.value_or(dicom_seg_tissue_code());
    const std::string label = (d.name.empty() ? type.meaning : d.name).substr(0, 64);
    DcmSegment* segment = nullptr;
    check(DcmSegment::create(segment, label.c_str(), to_macro(category), to_macro(type), DcmSegTypes::SAT_AUTOMATIC, algorithm.c_str()),
          path, "segment " + std::to_string(i + 1));
    std::unique_ptr<DcmSegment> owned(segment);
    // Segment numbers run 1..N; the label value (which may skip numbers) is kept in words.
    check(segment->setSegmentDescription(("label value " + std::to_string(d.value)).c_str()), path, "SegmentDescription");
    if (d.color) {
      double l = 0, a = 0, b = 0;
      IODCIELabUtil::rgb2DicomLab(l, a, b, (*d.color)[0] / 255.0, (*d.color)[1] / 255.0, (*d.color)[2] / 255.0);
      auto u16 = [](double v) { return static_cast<Uint16>(std::clamp(std::lround(v), 0L, 65535L)); };
      check(segment->setRecommendedDisplayCIELabValue(u16(l), u16(a), u16(b)), path, "segment colour");
    }
    Uint16 number = 0;
    check(seg->addSegment(segment, number), path, "segment " + std::to_string(i + 1));
    owned.release();  // the document owns it now
    if (number != i + 1) throw Error(ErrorCode::internal, path + ": DCMTK numbered segment " + std::to_string(i + 1) + " as " + std::to_string(number));
  }

  // Shared functional groups: orientation and pixel measures of the source grid.
  const Eigen::Matrix3d& dir = labels.geometry.direction;
  std::unique_ptr<FGPlaneOrientationPatient> orientation(FGPlaneOrientationPatient::createMinimal(
      decimal(dir(0, 0)).c_str(), decimal(dir(1, 0)).c_str(), decimal(dir(2, 0)).c_str(), decimal(dir(0, 1)).c_str(),
      decimal(dir(1, 1)).c_str(), decimal(dir(2, 1)).c_str()));
  check(seg->addForAllFrames(*orientation), path, "PlaneOrientationSequence");
  FGPixelMeasures measures;
  const Eigen::Vector3d& sp = labels.geometry.spacing;
  check(measures.setPixelSpacing((decimal(sp[1]) + "\\" + decimal(sp[0])).c_str()), path, "PixelSpacing");  // row \ column
  check(measures.setSliceThickness((src.slice_thickness.empty() ? decimal(sp[2]) : src.slice_thickness).c_str()), path, "SliceThickness");
  check(measures.setSpacingBetweenSlices(decimal(sp[2]).c_str()), path, "SpacingBetweenSlices");
  check(seg->addForAllFrames(measures), path, "PixelMeasuresSequence");

  // Dimensions: segment, then position.
  char dimension_uid[100];
  dcmGenerateUniqueIdentifier(dimension_uid, SITE_INSTANCE_UID_ROOT);
  IODMultiframeDimensionModule& dims = seg->getDimensions();
  check(dims.addDimensionIndex(DCM_ReferencedSegmentNumber, dimension_uid, DCM_SegmentIdentificationSequence, "ReferencedSegmentNumber"),
        path, "DimensionIndexSequence");
  check(dims.addDimensionIndex(DCM_ImagePositionPatient, dimension_uid, DCM_PlanePositionSequence, "ImagePositionPatient"), path,
        "DimensionIndexSequence");

  // Frames. Masks are built in parallel in batches; DCMTK packs and stores them in order.
  const CodeSequenceMacro derivation_code("113076", "DCM", "Segmentation");
  std::set<std::int64_t> referenced;
  // 1-bit pixel data as PS3.5 8.1.1 packs it: frames back to back, with no padding between
  // them (DCMTK 3.6.7 misplaces frames that do not fill whole bytes; its copy is replaced).
  std::vector<Uint8> packed(options.fractional ? 0 : (jobs.size() * static_cast<std::uint64_t>(plane) + 7) / 8, 0);
  std::vector<std::vector<Uint8>> masks(kFrameBatch, std::vector<Uint8>(static_cast<std::size_t>(plane)));
  for (std::size_t first = 0; first < jobs.size(); first += kFrameBatch) {
    const std::size_t count = std::min(kFrameBatch, jobs.size() - first);
    parallel_for(static_cast<std::int64_t>(count), 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t j = b; j < e; ++j) {
        const FrameJob& job = jobs[first + static_cast<std::size_t>(j)];
        Uint8* dst = masks[static_cast<std::size_t>(j)].data();
        if (options.fractional) {
          const float* p = labels.channel(job.segment - 1) + job.slice * plane;
          for (std::int64_t i = 0; i < plane; ++i) dst[i] = static_cast<Uint8>(std::lround(p[i] * 255.f));
        } else {
          const float* p = labels.channel(0) + job.slice * plane;
          const auto value = static_cast<float>(options.segments[job.segment - 1u].value);
          const auto& span = row_span[static_cast<std::size_t>(job.slice) * nseg + job.segment - 1u];
          std::memset(dst, 0, static_cast<std::size_t>(plane));
          for (std::int64_t i = span[0] * nx; i < span[1] * nx; ++i) dst[i] = p[i] == value ? 1 : 0;
          // Whole-byte frames own their bytes of the pixel data: pack them here, in parallel.
          if (plane % 8 == 0) pack_bits(dst, plane, (first + static_cast<std::size_t>(j)) * static_cast<std::uint64_t>(plane), packed.data());
        }
      }
    });
    for (std::size_t j = 0; j < count; ++j) {
      const FrameJob& job = jobs[first + j];
      const auto k = static_cast<std::size_t>(job.slice);
      FGPlanePosPatient position;
      check(position.setImagePositionPatient(positions[k][0].c_str(), positions[k][1].c_str(), positions[k][2].c_str()), path,
            "ImagePositionPatient");
      FGFrameContent frame_content;
      check(frame_content.setDimensionIndexValues(job.segment, 0), path, "DimensionIndexValues");
      check(frame_content.setDimensionIndexValues(static_cast<Uint32>(job.slice + 1), 1), path, "DimensionIndexValues");
      FGDerivationImage derivation;
      DerivationImageItem* item = nullptr;
      check(derivation.addDerivationImageItem(derivation_code, "", item), path, "DerivationImageSequence");
      auto* source_item = new SourceImageItem();
      item->getSourceImageItems().push_back(source_item);
      check(source_item->getPurposeOfReferenceCode().set("121322", "DCM", "Source image for image processing operation"), path, "PurposeOfReferenceCodeSequence");
      ImageSOPInstanceReferenceMacro& ref = source_item->getImageSOPInstanceReference();
      check(ref.setReferencedSOPClassUID(src.sop_class_uid.c_str()), path, "ReferencedSOPClassUID");
      check(ref.setReferencedSOPInstanceUID(src.sops[k].c_str()), path, "ReferencedSOPInstanceUID");
      if (src.frame_numbers.size() == src.sops.size())
        check(ref.addReferencedFrameNumber(src.frame_numbers[k]), path, "ReferencedFrameNumber");
      referenced.insert(job.slice);
      OFVector<FGBase*> groups;
      groups.push_back(&position);
      groups.push_back(&frame_content);
      groups.push_back(&derivation);
      check(seg->addFrame(masks[j].data(), job.segment, groups), path, "frame " + std::to_string(first + j + 1));
      if (!options.fractional && plane % 8 != 0) pack_bits(masks[j].data(), plane, (first + j) * static_cast<std::uint64_t>(plane), packed.data());
    }
  }

  // Referenced Series Sequence: the source instances the frames reference.
  {
    auto* series = new IODSeriesAndInstanceReferenceMacro::ReferencedSeriesItem();
    seg->getCommonInstanceReference().getReferencedSeriesItems().push_back(series);
    check(series->setSeriesInstanceUID(src.series_uid.c_str()), path, "ReferencedSeriesSequence");
    std::set<std::string> seen;
    for (std::int64_t k : referenced) {
      const std::string& uid = src.sops[static_cast<std::size_t>(k)];
      if (!seen.insert(uid).second) continue;  // frames of one multi-frame source
      auto* instance = new SOPInstanceReferenceMacro();
      series->getReferencedInstanceItems().push_back(instance);
      check(instance->setReferencedSOPClassUID(src.sop_class_uid.c_str()), path, "ReferencedInstanceSequence");
      check(instance->setReferencedSOPInstanceUID(uid.c_str()), path, "ReferencedInstanceSequence");
    }
  }

  DcmFileFormat file;
  check(seg->writeDataset(*file.getDataset()), path, "dataset");
  DcmDataset& ds = *file.getDataset();
  if (!options.fractional) {
    if (packed.size() % 2) packed.push_back(0);  // DICOM values have even length
    DcmElement* pixel_data = nullptr;
    if (ds.findAndGetElement(DCM_PixelData, pixel_data).bad() || !pixel_data || pixel_data->getLength() != packed.size())
      throw Error(ErrorCode::internal, path + ": DCMTK wrote " + std::to_string(pixel_data ? pixel_data->getLength() : 0) +
                                           " bytes of pixel data where " + std::to_string(packed.size()) + " were expected");
    check(pixel_data->putUint8Array(packed.data(), static_cast<unsigned long>(packed.size())), path, "PixelData");
  }
  // A label map assigns one label per voxel; probabilities may overlap.
  check(ds.putAndInsertString(DCM_SegmentsOverlap, options.fractional ? "UNDEFINED" : "NO"), path, "SegmentsOverlap");
  AtomicFile out(path, false);
  const OFCondition saved = file.saveFile(out.temp_path().c_str(), EXS_LittleEndianExplicit);
  if (saved.bad()) out.fail(std::string(saved.text()) + " (disk full?)");
  out.commit();
}

}  // namespace voxinfer
