// RT Structure Set writer on DCMTK (see dicom_rtstruct.h). Contours follow the voxel borders
// of each slice: every border between a voxel of the ROI and one outside it (or the image's
// edge) is a directed edge with the ROI on its left; the edges are linked into closed loops
// (at a vertex shared by two diagonal voxels the left turn is taken) and collinear vertices
// dropped. Filled with the even-odd rule, the loops give back the voxels exactly.
#include "voxinfer/io/dicom_rtstruct.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <set>

#include "io/atomic_file.h"
#include "voxinfer/core/error.h"
#include "voxinfer/version.h"

namespace voxinfer {
namespace {

std::vector<std::string> split_backslash(const std::string& s) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == '\\')
      out.emplace_back();
    else
      out.back() += c;
  }
  return out;
}

// A coordinate as a DS value (at most 16 characters): 4 decimals, trailing zeros dropped.
std::string ds_value(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4f", std::abs(v) < 5e-5 ? 0.0 : v);
  std::string s(buf);
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  if (s.size() > 16) {
    std::snprintf(buf, sizeof buf, "%.9g", v);
    s = buf;
  }
  return s;
}

struct Edge {
  std::int64_t from, to;
};

}  // namespace

std::vector<RtContour> label_contours(const Volume& labels, int value) {
  const std::int64_t nx = labels.nx(), ny = labels.ny(), nz = labels.nz();
  const std::int64_t w = nx + 1;  // vertices per row of the corner grid
  const auto v = static_cast<float>(value);
  const Geometry& g = labels.geometry;
  std::vector<RtContour> out;
  std::vector<Edge> edges;
  for (std::int64_t k = 0; k < nz; ++k) {
    const float* s = labels.channel(0) + k * nx * ny;
    auto in = [&](std::int64_t i, std::int64_t j) { return i >= 0 && j >= 0 && i < nx && j < ny && s[i + nx * j] == v; };
    edges.clear();
    for (std::int64_t j = 0; j < ny; ++j)
      for (std::int64_t i = 0; i < nx; ++i) {
        if (s[i + nx * j] != v) continue;
        const std::int64_t c00 = i + w * j, c10 = c00 + 1, c01 = c00 + w, c11 = c01 + 1;
        if (!in(i, j - 1)) edges.push_back({c00, c10});
        if (!in(i + 1, j)) edges.push_back({c10, c11});
        if (!in(i, j + 1)) edges.push_back({c11, c01});
        if (!in(i - 1, j)) edges.push_back({c01, c00});
      }
    if (edges.empty()) continue;
    std::sort(edges.begin(), edges.end(), [](const Edge& a, const Edge& b) { return a.from != b.from ? a.from < b.from : a.to < b.to; });
    std::vector<char> used(edges.size(), 0);
    auto first_from = [&](std::int64_t vtx) {
      return static_cast<std::size_t>(std::lower_bound(edges.begin(), edges.end(), vtx,
                                                       [](const Edge& e, std::int64_t x) { return e.from < x; }) -
                                      edges.begin());
    };
    auto dir = [&](const Edge& e) {
      const std::int64_t d = e.to - e.from;
      return std::array<std::int64_t, 2>{d == 1 ? 1 : d == -1 ? -1 : 0, d == w ? 1 : d == -w ? -1 : 0};
    };
    for (std::size_t start = 0; start < edges.size(); ++start) {
      if (used[start]) continue;
      std::vector<std::int64_t> loop;
      std::size_t e = start;
      while (true) {
        used[e] = 1;
        loop.push_back(edges[e].from);
        const std::int64_t next = edges[e].to;
        if (next == edges[start].from) break;
        // The unused edges leaving `next` (two at a vertex shared by diagonal voxels).
        std::size_t pick = edges.size();
        const auto din = dir(edges[e]);
        for (std::size_t c = first_from(next); c < edges.size() && edges[c].from == next; ++c) {
          if (used[c]) continue;
          const auto d = dir(edges[c]);
          const std::int64_t cross = din[0] * d[1] - din[1] * d[0];
          if (pick == edges.size() || cross > 0) pick = c;  // a left turn wins
        }
        if (pick == edges.size()) throw Error(ErrorCode::internal, "RTSTRUCT contour: an open boundary (bug)");
        e = pick;
      }
      // Drop vertices where the direction does not change.
      std::vector<std::int64_t> corners;
      const std::size_t n = loop.size();
      for (std::size_t a = 0; a < n; ++a) {
        const std::int64_t p = loop[(a + n - 1) % n], c = loop[a], q = loop[(a + 1) % n];
        if (c - p != q - c) corners.push_back(c);
      }
      RtContour rc;
      rc.slice = k;
      for (std::int64_t c : corners) {
        // Corner (x, y) of the voxel grid: voxel centres are at integer + 0.5.
        const double x = static_cast<double>(c % w) - 0.5, y = static_cast<double>(c / w) - 0.5;
        std::array<double, 3> pt;
        for (int a = 0; a < 3; ++a)
          pt[static_cast<std::size_t>(a)] = g.origin[a] + x * g.spacing[0] * g.direction(a, 0) +
                                            y * g.spacing[1] * g.direction(a, 1) +
                                            static_cast<double>(k) * g.spacing[2] * g.direction(a, 2);
        rc.points.push_back(pt);
      }
      out.push_back(std::move(rc));
    }
  }
  return out;
}

void write_dicom_rtstruct(const std::string& path, const Volume& labels, const std::map<std::string, std::string>& m,
                          const RtStructWriteOptions& o) {
  auto get = [&](const char* k) {
    const auto it = m.find(k);
    return it == m.end() ? std::string() : it->second;
  };
  const std::string study = get("StudyInstanceUID"), series = get("SeriesInstanceUID"), frame = get("FrameOfReferenceUID"),
                    sop_class = get("SOPClassUID"), sops_joined = get("SOPInstanceUIDs");
  if (get("source_format") != "DICOM" || study.empty() || series.empty() || sops_joined.empty() || sop_class.empty())
    throw Error(ErrorCode::invalid_input, path + ": an RTSTRUCT references the DICOM images it was drawn on, and the input was "
                                                 "not a DICOM series (or was resampled): give the series as the reference");
  if (frame.empty()) throw Error(ErrorCode::invalid_input, path + ": the source series has no FrameOfReferenceUID; an RTSTRUCT needs one");
  const std::vector<std::string> sops = split_backslash(sops_joined);
  if (static_cast<std::int64_t>(sops.size()) != labels.nz())
    throw Error(ErrorCode::invalid_input, path + ": the label map has " + std::to_string(labels.nz()) +
                                              " slices but the source series has " + std::to_string(sops.size()) + " images");
  // Every non-zero value must be an ROI.
  std::set<int> listed;
  for (const RtStructRoi& r : o.rois) listed.insert(r.value);
  const float* p = labels.channel(0);
  float last = 0;
  for (std::int64_t i = 0; i < labels.voxels(); ++i)
    if (p[i] != 0.f && p[i] != last) {
      last = p[i];
      if (!listed.count(static_cast<int>(last)))
        throw Error(ErrorCode::invalid_input, path + ": the label map holds value " + std::to_string(static_cast<int>(last)) +
                                                  " that no ROI names");
    }

  DcmFileFormat file;
  DcmDataset& d = *file.getDataset();
  char uid[100];
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char date[16], time_of_day[16];
  std::strftime(date, sizeof date, "%Y%m%d", &tm);
  std::strftime(time_of_day, sizeof time_of_day, "%H%M%S", &tm);
  auto put = [&](DcmItem& item, const DcmTagKey& tag, const std::string& value) {
    if (item.putAndInsertString(tag, value.c_str()).bad())
      throw Error(ErrorCode::internal, path + ": writing the RTSTRUCT failed at " + DcmTag(tag).getTagName());
  };
  auto item_of = [&](DcmItem& parent, const DcmTagKey& seq, long index) -> DcmItem& {
    DcmItem* item = nullptr;
    if (parent.findOrCreateSequenceItem(seq, item, index).bad() || !item)
      throw Error(ErrorCode::internal, path + ": writing the RTSTRUCT failed at " + DcmTag(seq).getTagName());
    return *item;
  };
  put(d, DCM_SpecificCharacterSet, get("SpecificCharacterSet").empty() ? "ISO_IR 100" : get("SpecificCharacterSet"));
  put(d, DCM_SOPClassUID, UID_RTStructureSetStorage);
  put(d, DCM_SOPInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT));
  put(d, DCM_InstanceCreationDate, date);
  put(d, DCM_InstanceCreationTime, time_of_day);
  // Patient and general study modules, from the source (type 2: present, maybe empty).
  for (const auto& [tag, name] : std::initializer_list<std::pair<DcmTagKey, const char*>>{
           {DCM_PatientName, "PatientName"}, {DCM_PatientID, "PatientID"}, {DCM_PatientBirthDate, "PatientBirthDate"},
           {DCM_PatientSex, "PatientSex"}, {DCM_StudyInstanceUID, "StudyInstanceUID"}, {DCM_StudyDate, "StudyDate"},
           {DCM_StudyTime, "StudyTime"}, {DCM_StudyID, "StudyID"}, {DCM_AccessionNumber, "AccessionNumber"},
           {DCM_ReferringPhysicianName, "ReferringPhysicianName"}, {DCM_StudyDescription, "StudyDescription"}})
    put(d, tag, get(name));
  // Frame of reference module (the source's).
  put(d, DCM_FrameOfReferenceUID, frame);
  put(d, DCM_PositionReferenceIndicator, get("PositionReferenceIndicator"));
  // RT series and equipment.
  put(d, DCM_Modality, "RTSTRUCT");
  put(d, DCM_SeriesInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_SERIES_UID_ROOT));
  put(d, DCM_SeriesNumber, o.series_number);
  put(d, DCM_SeriesDescription, (o.series_description.empty() ? "RTSTRUCT by " + o.algorithm_name : o.series_description).substr(0, 64));
  put(d, DCM_OperatorsName, "");
  put(d, DCM_Manufacturer, "voxinfer");
  put(d, DCM_SoftwareVersions, std::string("voxinfer ") + VOXINFER_VERSION_STRING);
  put(d, DCM_InstanceNumber, "1");
  // Structure set module.
  put(d, DCM_StructureSetLabel, o.label.substr(0, 16));
  put(d, DCM_StructureSetDate, date);
  put(d, DCM_StructureSetTime, time_of_day);
  DcmItem& ref_frame = item_of(d, DCM_ReferencedFrameOfReferenceSequence, 0);
  put(ref_frame, DCM_FrameOfReferenceUID, frame);
  DcmItem& ref_study = item_of(ref_frame, DCM_RTReferencedStudySequence, 0);
  put(ref_study, DCM_ReferencedSOPClassUID, "1.2.840.10008.3.1.2.3.1");  // Detached Study Management (retired), as PS3.3 C.8.8.5 uses
  put(ref_study, DCM_ReferencedSOPInstanceUID, study);
  DcmItem& ref_series = item_of(ref_study, DCM_RTReferencedSeriesSequence, 0);
  put(ref_series, DCM_SeriesInstanceUID, series);
  for (std::size_t k = 0; k < sops.size(); ++k) {
    DcmItem& img = item_of(ref_series, DCM_ContourImageSequence, static_cast<long>(k));
    put(img, DCM_ReferencedSOPClassUID, sop_class);
    put(img, DCM_ReferencedSOPInstanceUID, sops[k]);
  }
  const std::string description = o.algorithm_name + (o.algorithm_version.empty() ? "" : " " + o.algorithm_version);
  for (std::size_t r = 0; r < o.rois.size(); ++r) {
    const RtStructRoi& roi = o.rois[r];
    const std::string number = std::to_string(r + 1);
    DcmItem& ss = item_of(d, DCM_StructureSetROISequence, static_cast<long>(r));
    put(ss, DCM_ROINumber, number);
    put(ss, DCM_ReferencedFrameOfReferenceUID, frame);
    put(ss, DCM_ROIName, roi.name.substr(0, 64));
    put(ss, DCM_ROIGenerationAlgorithm, "AUTOMATIC");
    put(ss, DCM_ROIGenerationDescription, description.substr(0, 64));
    DcmItem& rc = item_of(d, DCM_ROIContourSequence, static_cast<long>(r));
    const auto color = roi.color.value_or(std::array<int, 3>{255, 0, 0});
    put(rc, DCM_ROIDisplayColor, std::to_string(color[0]) + "\\" + std::to_string(color[1]) + "\\" + std::to_string(color[2]));
    put(rc, DCM_ReferencedROINumber, number);
    long n = 0;
    for (const RtContour& c : label_contours(labels, roi.value)) {
      DcmItem& ci = item_of(rc, DCM_ContourSequence, n++);
      DcmItem& img = item_of(ci, DCM_ContourImageSequence, 0);
      put(img, DCM_ReferencedSOPClassUID, sop_class);
      put(img, DCM_ReferencedSOPInstanceUID, sops[static_cast<std::size_t>(c.slice)]);
      put(ci, DCM_ContourGeometricType, "CLOSED_PLANAR");
      put(ci, DCM_NumberOfContourPoints, std::to_string(c.points.size()));
      put(ci, DCM_ContourNumber, std::to_string(n));
      std::string data;
      for (const auto& pt : c.points)
        for (double x : pt) data += (data.empty() ? "" : "\\") + ds_value(x);
      put(ci, DCM_ContourData, data);
    }
    DcmItem& obs = item_of(d, DCM_RTROIObservationsSequence, static_cast<long>(r));
    put(obs, DCM_ObservationNumber, number);
    put(obs, DCM_ReferencedROINumber, number);
    put(obs, DCM_RTROIInterpretedType, roi.interpreted_type);
    put(obs, DCM_ROIInterpreter, "");
  }
  AtomicFile out(path, false);
  // Implicit VR: ContourData of a long contour exceeds the 64 KB an explicit-VR DS can hold.
  const OFCondition saved = file.saveFile(out.temp_path().c_str(), EXS_LittleEndianImplicit);
  if (saved.bad()) out.fail(std::string(saved.text()) + " (disk full?)");
  out.commit();
}

}  // namespace voxinfer
