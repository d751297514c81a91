// Internal types of the DCMTK adapter, shared by the scan (headers, grouping, slice
// geometry) and the pixel decoding. No DCMTK types appear here.
#pragma once

#include <Eigen/Dense>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace voxinfer::dicom {

// What the scan learnt about one file (from its header only; pixel data is not loaded).
struct FileHeader {
  std::string path;
  std::string series_uid, frame_of_reference_uid, sop_class_uid, sop_instance_uid;
  std::string transfer_syntax;  // UID
  int rows = 0, columns = 0, frames = 1;
  int samples_per_pixel = 1, bits_allocated = 0, bits_stored = 0, high_bit = 0, pixel_representation = 0;
  std::string photometric;
  double slice_thickness = 0, spacing_between_slices = 0;
  long instance_number = 0;
  bool has_pixel_data = false;
  std::map<std::string, std::string> modules;  // patient/study/series values for Volume::metadata
};

// One 2D image: a frame of a file, with the geometry that applies to it.
struct Frame {
  int file = 0;   // index into the scan's files
  int index = 0;  // frame number in the file (0-based)
  bool has_position = false, has_orientation = false, has_spacing = false;
  Eigen::Vector3d position = Eigen::Vector3d::Zero();
  std::array<double, 6> orientation{1, 0, 0, 0, 1, 0};
  double row_spacing = 1, column_spacing = 1;  // (0028,0030): between rows, between columns
  double slope = 1, intercept = 0;
  long temporal = 0;  // TemporalPositionIndex / TemporalPositionIdentifier when given
  long stack = 0;     // numeric StackID when given
  long segment = 0;   // DICOM SEG: ReferencedSegmentNumber of the frame (0 otherwise)
};

struct Series {
  std::string key;  // series UID + orientation + frame of reference + size
  std::vector<int> frames;  // indices into Scan::frames
};

struct Scan {
  std::vector<FileHeader> files;
  std::vector<Frame> frames;
  std::vector<Series> series;  // largest first
  std::vector<std::string> skipped;  // damaged files left out (only when asked to skip them)
};

// Reads the headers of one file or of every DICOM file under a folder and groups the frames.
// A damaged DICOM file in a folder is an error naming it, or with skip_unreadable left out
// and listed in Scan::skipped.
Scan scan(const std::string& path, bool skip_unreadable = false);

// Where each image of a series goes, and the grid it forms.
struct Plan {
  // [position][volume] -> frame index (-1: no image, left zero), positions sorted along the
  // normal. Volumes are time points or stacks, or the segments of a DICOM SEG.
  std::vector<std::vector<int>> slices;
  std::vector<long> segments;  // DICOM SEG: the segment number of each channel
  std::vector<double> positions;         // distance of each position along the normal (mm)
  Eigen::Vector3d origin = Eigen::Vector3d::Zero();
  Eigen::Matrix3d direction = Eigen::Matrix3d::Identity();
  Eigen::Vector3d spacing = Eigen::Vector3d::Ones();
  int rows = 0, columns = 0;
  double tilt_degrees = 0;  // angle between the slice step and the slice normal
  std::string problem;       // non-empty when the series cannot be read as a regular grid
  bool uneven = false;       // the problem is uneven spacing (resamplable)
  bool has_geometry = true;
};

Plan plan_series(const Scan& s, const Series& series);

// Decodes frame `f` into `dst` (rows*columns floats, rescale applied). Thread-safe for
// distinct files; frames of one multi-frame file are decoded together by decode_file.
class FileDecoder {
 public:
  explicit FileDecoder(const FileHeader& header);
  ~FileDecoder();
  FileDecoder(const FileDecoder&) = delete;
  FileDecoder& operator=(const FileDecoder&) = delete;
  void decode(const Frame& f, float* dst);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Name of a transfer syntax UID ("JPEG 2000 Image Compression (Lossless Only)"...).
std::string transfer_syntax_name(const std::string& uid);

// Sequences nested deeper than this are refused before DCMTK (which recurses) reads a file.
constexpr std::size_t kMaxSequenceDepth = 64;

// Why DCMTK must not parse the file (sequences nested too deep), or empty. Reads element
// headers only. structure_check throws that problem as invalid_input naming the file.
std::string structure_problem(const std::string& path);
void structure_check(const std::string& path);

// `s` with control characters (newlines, escapes) replaced by '?', for messages.
std::string printable(const std::string& s);

// Registers the DCMTK decoders and quiets its logger (once).
void init_dcmtk();

}  // namespace voxinfer::dicom
