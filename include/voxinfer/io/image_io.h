// Reading and writing medical volumes: NIfTI-1/2, NRRD and MetaImage files (through ITK)
// and DICOM series (through DCMTK, see dicom.h), behind one entry point. Volumes are
// float32 [C, Z, Y, X] with LPS geometry; 4D files and multi-volume series become channels.
#pragma once

#include <cstdint>
#include <string>

#include "voxinfer/core/volume.h"

namespace voxinfer {

struct ReadOptions {
  // DICOM: the SeriesInstanceUID to read (empty: the largest readable 3D series).
  std::string series_uid;
  // DICOM: resample a series whose slices are unevenly spaced (or miss a slice) onto an
  // even grid instead of refusing it.
  bool allow_uneven = false;
  // DICOM: leave out damaged files of a folder (truncated, unparsable, non-finite rescale or
  // geometry) with a warning in the Volume's metadata, instead of refusing the folder.
  bool skip_unreadable = false;
  // Refuse anything whose header claims more voxels (all channels) than this, before
  // allocating: a corrupt header must not be able to ask for terabytes.
  std::int64_t max_voxels = std::int64_t{1} << 31;
};

// On-disk voxel type of a written file.
enum class PixelType {
  automatic,  // integer-valued data: the smallest of uint8, int16, uint16 that holds it; else float32
  float32,
  int16,
  uint8,   // label maps
  uint16,  // label maps
};

struct WriteOptions {
  PixelType pixel_type = PixelType::automatic;
  bool compress = true;  // .nrrd and .mha only (.nii.gz is always compressed, .nii never)
};

// True when the file name ends in an extension the ITK adapter reads
// (.nii, .nii.gz, .hdr, .img, .img.gz, .nrrd, .nhdr, .mha, .mhd).
bool is_image_file_name(const std::string& path);

// Reads a NIfTI, NRRD or MetaImage file (any scalar on-disk type; NIfTI scl_slope/scl_inter
// applied) with the geometry ITK gives it, in LPS. Throws voxinfer::Error naming the file:
// invalid_input for unreadable, truncated or inconsistent files; unsupported for complex,
// RGB or vector pixels and more than 4 dimensions; io when the path cannot be read.
Volume read_image(const std::string& path, const ReadOptions& options = {});

// Writes a volume as .nii, .nii.gz, .nrrd or .mha (the extension decides), keeping the
// geometry exactly; several channels are written as a 4D image. Values that the chosen
// integer pixel type cannot hold exactly are an error, never silently rounded or clipped.
// The file appears atomically (temporary name, then rename).
void write_image(const std::string& path, const Volume& volume, const WriteOptions& options = {});

// The single entry point: a folder, a DICOM file (by content, whatever its name) goes to
// the DICOM reader; an image file name to read_image.
Volume read_volume(const std::string& path, const ReadOptions& options = {});

// Writes any supported output format (today the same formats as write_image).
void write_volume(const std::string& path, const Volume& volume, const WriteOptions& options = {});

// Name of a pixel type ("float32", "int16", ...); parse_pixel_type is its inverse (and "auto").
const char* pixel_type_name(PixelType type) noexcept;
PixelType parse_pixel_type(const std::string& name);

}  // namespace voxinfer
