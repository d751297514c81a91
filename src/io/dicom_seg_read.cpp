// DICOM SEG reader on DCMTK's dcmseg: every frame is placed on a voxel grid by its own
// ImagePositionPatient (never by frame order), and its segment's label value is written
// where the frame is set.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fginterface.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmfg/fgseg.h>
#include <dcmtk/dcmiod/cielabutil.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

#include "io/dicom_internal.h"
#include "voxinfer/io/dicom.h"
#include "voxinfer/io/dicom_seg.h"

namespace voxinfer {
namespace {

// A frame further than this from a slice plane of the grid does not lie on it (mm).
constexpr double kPlaneToleranceMm = 0.01;
// Direction cosines of the frames and the grid must agree this closely.
constexpr double kCosineTolerance = 1e-4;

DicomSegCode code_of(CodeSequenceMacro& m) {
  OFString v, s, meaning;
  m.getCodeValue(v);
  m.getCodingSchemeDesignator(s);
  m.getCodeMeaning(meaning);
  return {s.c_str(), v.c_str(), meaning.c_str()};
}

struct FrameGeometry {
  Eigen::Vector3d position = Eigen::Vector3d::Zero();
  Uint16 segment = 0;
  std::int64_t slice = 0;
  std::string source;  // referenced SOPInstanceUID
  int source_frame = 0;
};

}  // namespace

bool is_dicom_seg_file(const std::string& path) {
  if (!is_dicom_file(path) || !dicom::structure_problem(path).empty()) return false;
  dicom::init_dcmtk();
  DcmFileFormat ff;
  if (ff.loadFile(OFFilename(path.c_str()), EXS_Unknown, EGL_noChange, 256, ERM_autoDetect).bad()) return false;
  OFString uid;
  if (ff.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPClassUID, uid).bad() || uid.empty())
    ff.getDataset()->findAndGetOFString(DCM_SOPClassUID, uid);
  return uid == UID_SegmentationStorage;
}

Volume read_dicom_seg(const std::string& path, const DicomSegReadOptions& options, DicomSegInfo* info) {
  dicom::init_dcmtk();
  if (is_dicom_file(path)) dicom::structure_check(path);
  if (!is_dicom_seg_file(path)) throw Error(ErrorCode::invalid_input, path + ": not a DICOM Segmentation object");
  DcmFileFormat file;
  OFCondition loaded = file.loadFile(OFFilename(path.c_str()));
  DcmSegmentation* raw = nullptr;
  if (loaded.good()) loaded = DcmSegmentation::loadDataset(*file.getDataset(), raw);
  std::unique_ptr<DcmSegmentation> seg(raw);
  if (loaded.bad() || !seg) throw Error(ErrorCode::invalid_input, path + ": cannot read the DICOM SEG (" + loaded.text() + ")");
  const std::string what = path + ": DICOM SEG";
  // Frames are cut from the pixel data here: 1-bit frames follow each other without padding,
  // so a frame whose pixel count is not a multiple of 8 starts inside a byte.
  const Uint8* pixel_data = nullptr;
  unsigned long pixel_bytes = 0;
  DcmElement* pixel_element = nullptr;
  if (file.getDataset()->findAndGetElement(DCM_PixelData, pixel_element).good() && pixel_element) {
    Uint8* bytes = nullptr;
    if (pixel_element->getUint8Array(bytes).good()) {
      pixel_data = bytes;
      pixel_bytes = pixel_element->getLength();
    }
  }
  VOXINFER_CHECK(pixel_data != nullptr, invalid_input, what + ": no uncompressed pixel data");

  Uint16 rows = 0, columns = 0;
  auto& image = static_cast<DcmIODImage<IODImagePixelModule<Uint8>>&>(*seg);
  image.getImagePixel().getRows(rows);
  image.getImagePixel().getColumns(columns);
  VOXINFER_CHECK(rows > 0 && columns > 0, invalid_input, what + " has no Rows/Columns");
  const bool fractional = seg->getSegmentationType() == DcmSegTypes::ST_FRACTIONAL;
  Uint16 max_fraction = 255;
  if (fractional) {
    DcmFileFormat ff;  // MaximumFractionalValue is not exposed by DcmSegmentation
    if (ff.loadFile(OFFilename(path.c_str()), EXS_Unknown, EGL_noChange, 256, ERM_autoDetect).good())
      ff.getDataset()->findAndGetUint16(DCM_MaximumFractionalValue, max_fraction);
    if (max_fraction == 0) max_fraction = 255;
  }

  FGInterface& fg = seg->getFunctionalGroups();
  const auto nframes = static_cast<Uint32>(fg.getNumberOfFrames());
  VOXINFER_CHECK(nframes > 0, invalid_input, what + " has no frames");

  // Per-frame geometry: position, orientation (all alike), pixel spacing, segment.
  std::vector<FrameGeometry> frames(nframes);
  Eigen::Vector3d row = Eigen::Vector3d::UnitX(), col = Eigen::Vector3d::UnitY();
  double row_spacing = 0, column_spacing = 0, between = 0, thickness = 0;
  for (Uint32 i = 0; i < nframes; ++i) {
    auto* pos = OFstatic_cast(FGPlanePosPatient*, fg.get(i, DcmFGTypes::EFG_PLANEPOSPATIENT));
    auto* ori = OFstatic_cast(FGPlaneOrientationPatient*, fg.get(i, DcmFGTypes::EFG_PLANEORIENTPATIENT));
    auto* msr = OFstatic_cast(FGPixelMeasures*, fg.get(i, DcmFGTypes::EFG_PIXELMEASURES));
    auto* sid = OFstatic_cast(FGSegmentation*, fg.get(i, DcmFGTypes::EFG_SEGMENTATION));
    const std::string frame = what + " frame " + std::to_string(i + 1);
    VOXINFER_CHECK(pos && ori && msr && sid, invalid_input,
                   frame + " lacks its plane position, plane orientation, pixel measures or segment identification");
    Float64 x = 0, y = 0, z = 0, o[6] = {};
    VOXINFER_CHECK(pos->getImagePositionPatient(x, y, z).good(), invalid_input, frame + ": no ImagePositionPatient");
    VOXINFER_CHECK(ori->getImageOrientationPatient(o[0], o[1], o[2], o[3], o[4], o[5]).good(), invalid_input,
                   frame + ": no ImageOrientationPatient");
    frames[i].position = Eigen::Vector3d(x, y, z);
    const Eigen::Vector3d r(o[0], o[1], o[2]), c(o[3], o[4], o[5]);
    if (i == 0) {
      row = r;
      col = c;
      Float64 v = 0;
      VOXINFER_CHECK(msr->getPixelSpacing(v, 0).good(), invalid_input, frame + ": no PixelSpacing");
      row_spacing = v;
      VOXINFER_CHECK(msr->getPixelSpacing(v, 1).good(), invalid_input, frame + ": PixelSpacing needs two values");
      column_spacing = v;
      if (msr->getSpacingBetweenSlices(v).good()) between = v;
      if (msr->getSliceThickness(v).good()) thickness = v;
    } else {
      VOXINFER_CHECK((r - row).cwiseAbs().maxCoeff() < kCosineTolerance && (c - col).cwiseAbs().maxCoeff() < kCosineTolerance,
                     invalid_input, frame + " is not parallel to the first frame (mixed orientations are not supported)");
    }
    VOXINFER_CHECK(sid->getReferencedSegmentNumber(frames[i].segment).good() && frames[i].segment > 0, invalid_input,
                   frame + ": no ReferencedSegmentNumber");
    if (auto* der = OFstatic_cast(FGDerivationImage*, fg.get(i, DcmFGTypes::EFG_DERIVATIONIMAGE));
        der && !der->getDerivationImageItems().empty() && !der->getDerivationImageItems()[0]->getSourceImageItems().empty()) {
      OFString uid;
      ImageSOPInstanceReferenceMacro& ref = der->getDerivationImageItems()[0]->getSourceImageItems()[0]->getImageSOPInstanceReference();
      ref.getReferencedSOPInstanceUID(uid);
      frames[i].source = uid.c_str();
      OFVector<Uint16> numbers;
      if (ref.getReferencedFrameNumber(numbers).good() && !numbers.empty()) frames[i].source_frame = numbers[0];
    }
  }

  // The grid: the caller's, or the span of the frames along the slice normal.
  Geometry g;
  std::int64_t nz = 0;
  if (options.grid) {
    g = *options.grid;
    nz = options.grid_slices;
    VOXINFER_CHECK(nz > 0, invalid_input, what + ": the reference grid has no slices");
    VOXINFER_CHECK((g.direction.col(0) - row).cwiseAbs().maxCoeff() < kCosineTolerance &&
                       (g.direction.col(1) - col).cwiseAbs().maxCoeff() < kCosineTolerance,
                   invalid_input, what + ": its frames are not parallel to the reference series' slices");
    VOXINFER_CHECK(std::abs(g.spacing[0] - column_spacing) < 1e-4 && std::abs(g.spacing[1] - row_spacing) < 1e-4, invalid_input,
                   what + ": its PixelSpacing differs from the reference series'");
  } else {
    const Eigen::Vector3d normal = row.cross(col);
    std::vector<double> along(nframes);
    for (Uint32 i = 0; i < nframes; ++i) along[i] = frames[i].position.dot(normal);
    std::vector<double> sorted = along;
    std::sort(sorted.begin(), sorted.end());
    double step = between;
    if (step <= 0) {
      for (std::size_t i = 1; i < sorted.size(); ++i)
        if (sorted[i] - sorted[i - 1] > kPlaneToleranceMm && (step <= 0 || sorted[i] - sorted[i - 1] < step)) step = sorted[i] - sorted[i - 1];
    }
    if (step <= 0) step = thickness > 0 ? thickness : 1.0;
    const auto lowest = static_cast<std::size_t>(std::min_element(along.begin(), along.end()) - along.begin());
    g.origin = frames[lowest].position;
    g.direction.col(0) = row;
    g.direction.col(1) = col;
    g.direction.col(2) = normal;
    g.spacing = Eigen::Vector3d(column_spacing, row_spacing, step);
    nz = static_cast<std::int64_t>(std::llround((sorted.back() - sorted.front()) / step)) + 1;
  }
  g.validate(what);

  Volume out(1, nz, rows, columns, g);
  float* dst = out.channel(0);
  const std::int64_t plane = static_cast<std::int64_t>(rows) * columns;
  // Label value of each segment: the caller's, else the one voxinfer wrote in the segment's
  // description, else the segment number.
  std::map<int, int> values = options.segment_values;
  std::map<int, int> recorded;
  for (std::size_t n = 1; n <= seg->getNumberOfSegments(); ++n) {
    DcmSegment* segment = seg->getSegment(n);
    OFString d;
    if (!segment || segment->getSegmentDescription(d).bad()) continue;
    const std::string text = d.c_str();
    const std::string prefix = "label value ";
    if (text.rfind(prefix, 0) == 0 && text.size() > prefix.size() &&
        text.find_first_not_of("0123456789", prefix.size()) == std::string::npos && text.size() - prefix.size() < 9) {
      recorded[static_cast<int>(n)] = std::stoi(text.substr(prefix.size()));
      values.emplace(static_cast<int>(n), recorded[static_cast<int>(n)]);
    }
  }
  // Frames in segment order, so that where segments overlap the higher number wins.
  std::vector<Uint32> order(nframes);
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](Uint32 a, Uint32 b) { return frames[a].segment < frames[b].segment; });
  std::int64_t overlaps = 0;
  for (Uint32 i : order) {
    const std::string frame = what + " frame " + std::to_string(i + 1);
    const Eigen::Vector3d index = g.physical_to_index(frames[i].position);
    const auto k = static_cast<std::int64_t>(std::llround(index[2]));
    const Eigen::Vector3d offset = g.direction * g.spacing.asDiagonal() * (index - Eigen::Vector3d(0, 0, static_cast<double>(k)));
    VOXINFER_CHECK(offset.norm() <= kPlaneToleranceMm && k >= 0 && k < nz, invalid_input,
                   frame + " does not lie on a slice of the grid (" + std::to_string(offset.norm()) + " mm off, slice " +
                       std::to_string(k) + " of " + std::to_string(nz) + ")");
    frames[i].slice = k;
    const Uint16 number = frames[i].segment;
    const auto mapped = values.find(number);
    const auto value = static_cast<float>(mapped == values.end() ? number : mapped->second);
    const auto first_bit = static_cast<std::uint64_t>(i) * static_cast<std::uint64_t>(plane) * (fractional ? 8u : 1u);
    const auto last_bit = first_bit + static_cast<std::uint64_t>(plane) * (fractional ? 8u : 1u);
    VOXINFER_CHECK(last_bit <= static_cast<std::uint64_t>(pixel_bytes) * 8u, invalid_input, frame + ": the pixel data is truncated");
    float* d = dst + k * plane;
    const Uint8* px = pixel_data + first_bit / 8;
    for (std::int64_t p = 0; p < plane; ++p) {
      bool on = false;
      if (fractional) {
        on = 2u * px[p] >= max_fraction;
      } else {
        const std::uint64_t bit = first_bit + static_cast<std::uint64_t>(p);
        on = (pixel_data[bit >> 3] >> (bit & 7u)) & 1u;
      }
      if (!on) continue;
      if (d[p] != 0.f) ++overlaps;  // set by an earlier (lower-numbered) segment's frame
      d[p] = value;
    }
  }

  out.metadata["source_format"] = "DICOM SEG";
  OFString s;
  if (seg->getSeries().getSeriesDescription(s).good()) out.metadata["SeriesDescription"] = s.c_str();
  if (overlaps > 0)
    out.metadata["warning"] = std::to_string(overlaps) + " voxels belong to more than one segment; the higher segment number was kept";
  if (info) {
    info->type = fractional ? "FRACTIONAL" : "BINARY";
    info->frames = nframes;
    info->overlapping_voxels = overlaps;
    info->series_description = s.c_str();
    info->frame_list.clear();
    for (const FrameGeometry& f : frames) info->frame_list.push_back({f.segment, f.slice, f.source, f.source_frame});
    info->segments.clear();
    for (std::size_t n = 1; n <= seg->getNumberOfSegments(); ++n) {
      DcmSegment* segment = seg->getSegment(n);
      if (!segment) continue;
      DicomSegSegment d;
      d.value = static_cast<int>(n);
      if (recorded.count(d.value)) d.label_value = recorded[d.value];
      OFString v;
      if (segment->getSegmentLabel(v).good()) d.name = v.c_str();
      d.category = code_of(segment->getSegmentedPropertyCategoryCode());
      d.type = code_of(segment->getSegmentedPropertyTypeCode());
      d.algorithm_type = DcmSegTypes::algoType2OFString(segment->getSegmentAlgorithmType()).c_str();
      if (segment->getSegmentAlgorithmName(v).good()) d.algorithm_name = v.c_str();
      Uint16 l = 0, a = 0, b = 0;
      if (segment->getRecommendedDisplayCIELabValue(l, a, b).good()) {
        double r = 0, gg = 0, bb = 0;
        IODCIELabUtil::dicomLab2RGB(r, gg, bb, l, a, b);
        auto c255 = [](double x) { return static_cast<int>(std::clamp(std::lround(x * 255.0), 0L, 255L)); };
        d.color = std::array<int, 3>{c255(r), c255(gg), c255(bb)};
      }
      info->segments.push_back(std::move(d));
    }
    DcmFileFormat ff;
    if (ff.loadFile(OFFilename(path.c_str()), EXS_Unknown, EGL_noChange, 256, ERM_autoDetect).good()) {
      DcmItem* series = nullptr;
      OFString uid;
      if (ff.getDataset()->findAndGetSequenceItem(DCM_ReferencedSeriesSequence, series, 0).good() && series &&
          series->findAndGetOFString(DCM_SeriesInstanceUID, uid).good())
        info->referenced_series_uid = uid.c_str();
    }
  }
  return out;
}

}  // namespace voxinfer
