// ITK adapter: NIfTI-1/2, NRRD and MetaImage files to and from Volumes. ITK's ImageIO
// objects are used directly (no ImageFileReader), so that sizes are checked before any
// buffer is allocated and every on-disk component type converts to float32 in one place.
#include <itkImageIOBase.h>
#include <itkMetaDataObject.h>
#include <itkMetaImageIO.h>
#include <itkNiftiImageIO.h>
#include <itkNrrdImageIO.h>
#include <itkObject.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <mutex>
#include <sstream>
#include <vector>

#include "io/atomic_file.h"
#include "io/nifti2.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer {
namespace {

namespace fs = std::filesystem;

enum class Format { nifti, nrrd, meta, unknown };

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Format format_of(const std::string& path) {
  const std::string p = lower(path);
  for (const char* e : {".nii", ".nii.gz", ".hdr", ".img", ".img.gz", ".hdr.gz"})
    if (ends_with(p, e)) return Format::nifti;
  for (const char* e : {".nrrd", ".nhdr"})
    if (ends_with(p, e)) return Format::nrrd;
  for (const char* e : {".mha", ".mhd"})
    if (ends_with(p, e)) return Format::meta;
  return Format::unknown;
}

const char* format_name(Format f) {
  switch (f) {
    case Format::nifti: return "NIfTI";
    case Format::nrrd: return "NRRD";
    case Format::meta: return "MetaImage";
    case Format::unknown: break;
  }
  return "image";
}

// ITK prints warnings (for example about non-orthogonal NIfTI sforms) on stderr by
// default; the adapter reports problems through exceptions only.
void quiet_itk() {
  static std::once_flag once;
  std::call_once(once, [] { itk::Object::SetGlobalWarningDisplay(false); });
}

itk::ImageIOBase::Pointer make_io(Format f) {
  // The factories are named explicitly: voxinfer does not use ITK's global factory
  // registration (ITK_USE_FILE), so only these three formats are ever tried.
  switch (f) {
    case Format::nifti: return itk::NiftiImageIO::New().GetPointer();
    case Format::nrrd: return itk::NrrdImageIO::New().GetPointer();
    case Format::meta: return itk::MetaImageIO::New().GetPointer();
    case Format::unknown: break;
  }
  return nullptr;
}

// ITK's description as one line, without the "ITK ERROR: Class(0x...): " prefix.
std::string itk_message(const itk::ExceptionObject& e) {
  std::string m = e.GetDescription();
  const auto prefix = m.find("): ");
  if (m.rfind("ITK ERROR", 0) == 0 && prefix != std::string::npos) m = m.substr(prefix + 3);
  std::string out;
  for (char c : m) {
    if (c == '\n') {
      if (!out.empty() && out.back() != ' ') out += "; ";
    } else {
      out += c;
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == ';')) out.pop_back();
  return out;
}

// MetaIO and NrrdIO print their parse errors on std::cout/std::cerr. While a header is
// read, both streams go into a buffer instead, whose text then joins the error message.
// (The streams are process-wide; header reads are short and rarely concurrent.)
class CaptureConsole {
 public:
  CaptureConsole() : out_(std::cout.rdbuf(buffer_.rdbuf())), err_(std::cerr.rdbuf(buffer_.rdbuf())) {}
  ~CaptureConsole() {
    std::cout.rdbuf(out_);
    std::cerr.rdbuf(err_);
  }
  CaptureConsole(const CaptureConsole&) = delete;
  CaptureConsole& operator=(const CaptureConsole&) = delete;
  // The first captured line, if any, as extra detail for an error message.
  std::string first_line() const {
    std::string t = buffer_.str();
    const auto nl = t.find('\n');
    if (nl != std::string::npos) t.resize(nl);
    return t.empty() ? t : " (" + t + ")";
  }

 private:
  std::ostringstream buffer_;
  std::streambuf* out_;
  std::streambuf* err_;
};

using Component = itk::IOComponentEnum;

std::size_t component_size(Component c) {
  switch (c) {
    case Component::UCHAR: case Component::CHAR: return 1;
    case Component::USHORT: case Component::SHORT: return 2;
    case Component::UINT: case Component::INT: case Component::FLOAT: return 4;
    case Component::ULONG: case Component::LONG: case Component::ULONGLONG: case Component::LONGLONG:
    case Component::DOUBLE: return 8;
    default: return 0;
  }
}

template <typename T>
void convert_to_float(const std::byte* src, float* dst, std::int64_t n) {
  parallel_for(n, 1 << 16, [&](std::int64_t b, std::int64_t e) {
    const T* s = reinterpret_cast<const T*>(src);
    for (std::int64_t i = b; i < e; ++i) dst[i] = static_cast<float>(s[i]);
  });
}

void to_float(Component c, const std::byte* src, float* dst, std::int64_t n) {
  switch (c) {
    case Component::UCHAR: convert_to_float<std::uint8_t>(src, dst, n); return;
    case Component::CHAR: convert_to_float<std::int8_t>(src, dst, n); return;
    case Component::USHORT: convert_to_float<std::uint16_t>(src, dst, n); return;
    case Component::SHORT: convert_to_float<std::int16_t>(src, dst, n); return;
    case Component::UINT: convert_to_float<std::uint32_t>(src, dst, n); return;
    case Component::INT: convert_to_float<std::int32_t>(src, dst, n); return;
    case Component::ULONG: case Component::ULONGLONG: convert_to_float<std::uint64_t>(src, dst, n); return;
    case Component::LONG: case Component::LONGLONG: convert_to_float<std::int64_t>(src, dst, n); return;
    case Component::DOUBLE: convert_to_float<double>(src, dst, n); return;
    case Component::FLOAT: std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float)); return;
    default: break;
  }
  throw Error(ErrorCode::internal, "unhandled ITK component type");
}

// A NIfTI header field, as ITK's NiftiImageIO exposes it in the image's dictionary.
bool nifti_field(const itk::ImageIOBase& io, const std::string& key, std::string& value) {
  return itk::ExposeMetaData<std::string>(io.GetMetaDataDictionary(), key, value);
}

double nifti_number(const itk::ImageIOBase& io, const std::string& key, double fallback) {
  std::string v;
  if (!nifti_field(io, key, v)) return fallback;
  try {
    return std::stod(v);
  } catch (const std::exception&) {
    return fallback;
  }
}

// Uncompressed NIfTI data must fit in the file; checking this before allocating means a
// header that claims a huge size fails fast instead of trying to read it.
void check_raw_nifti_size(const itk::ImageIOBase& io, const std::string& path, std::uint64_t voxels) {
  const std::string p = lower(path);
  std::string data_file;
  double offset = 0;
  if (ends_with(p, ".nii")) {
    data_file = path;
    offset = nifti_number(io, "vox_offset", 0);
  } else if (ends_with(p, ".hdr")) {
    data_file = path.substr(0, path.size() - 4) + (ends_with(path, ".HDR") ? ".IMG" : ".img");
  } else if (ends_with(p, ".img")) {
    data_file = path;
  }
  const double bitpix = nifti_number(io, "bitpix", 0);
  if (data_file.empty() || bitpix <= 0) return;
  std::error_code ec;
  const auto size = fs::file_size(data_file, ec);
  if (ec) return;  // ITK reports a missing .img itself
  const double needed = offset + static_cast<double>(voxels) * bitpix / 8.0;
  if (static_cast<double>(size) < needed)
    throw Error(ErrorCode::invalid_input, path + ": truncated: the header describes " +
                                              std::to_string(static_cast<std::uint64_t>(needed)) +
                                              " bytes but the file holds only " + std::to_string(size));
}

// ITK's NIfTI reader accepts a truncated .nii.gz and zero-fills what is missing. The gzip
// trailer holds the uncompressed size (mod 2^32); a cut file ends in compressed bytes
// instead, which almost never land in the narrow window a real file's size falls in.
void check_gzip_nifti_size(const itk::ImageIOBase& io, const std::string& path, std::uint64_t voxels) {
  if (!ends_with(lower(path), ".gz")) return;
  const double bitpix = nifti_number(io, "bitpix", 0);
  const double offset = nifti_number(io, "vox_offset", 0);
  if (bitpix <= 0) return;
  const auto needed = static_cast<std::uint64_t>(offset + static_cast<double>(voxels) * bitpix / 8.0);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return;
  unsigned char trailer[4] = {0, 0, 0, 0};
  const bool ok = std::fseek(f, -4, SEEK_END) == 0 && std::fread(trailer, 1, 4, f) == 4;
  std::fclose(f);
  if (!ok) return;
  const std::uint32_t isize = trailer[0] | (trailer[1] << 8) | (trailer[2] << 16) | (std::uint32_t{trailer[3]} << 24);
  const std::uint32_t expected = static_cast<std::uint32_t>(needed & 0xffffffffu);
  constexpr std::uint32_t kSlack = 1u << 20;  // trailing bytes some writers add after the voxels
  if (static_cast<std::uint32_t>(isize - expected) > kSlack)
    throw Error(ErrorCode::invalid_input, path + ": truncated or corrupt: the gzip stream does not hold the " +
                                              std::to_string(needed) + " bytes the header describes");
}

// A Volume's geometry is spacing x rotation; a NIfTI sform with non-orthogonal columns
// (a gantry-tilted CT stacked without resampling, for example) cannot be represented.
// ITK would silently fall back to the qform and move the voxels, so such files are refused.
void check_nifti_not_sheared(const itk::ImageIOBase& io, const std::string& path) {
  if (nifti_number(io, "sform_code", 0) <= 0) return;
  Eigen::Matrix3d m;
  for (int r = 0; r < 3; ++r) {
    std::string row;
    if (!nifti_field(io, std::string("srow_") + "xyz"[r], row)) return;
    std::istringstream in(row);
    for (int c = 0; c < 3; ++c)
      if (!(in >> m(r, c))) return;
  }
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b) {
      const double na = m.col(a).norm(), nb = m.col(b).norm();
      if (na == 0 || nb == 0) return;
      const double cosine = m.col(a).dot(m.col(b)) / (na * nb);
      if (std::abs(cosine) > 1e-4) {
        const double angle = 90.0 - std::acos(std::min(1.0, std::abs(cosine))) * 180.0 / 3.14159265358979323846;
        throw Error(ErrorCode::unsupported,
                    path + ": the sform is sheared (voxel axes " + std::to_string(a) + " and " + std::to_string(b) +
                        " are " + std::to_string(angle) +
                        " degrees from perpendicular, as in a gantry-tilted CT saved without resampling); "
                        "voxinfer needs orthogonal axes: resample the image first");
      }
    }
}

void check_readable(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error(ErrorCode::io, path + ": no such file");
  if (fs::is_directory(st)) throw Error(ErrorCode::invalid_input, path + ": is a folder, not an image file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(ErrorCode::io, path + ": cannot open for reading (permission denied?)");
  std::fclose(f);
}

}  // namespace

bool is_image_file_name(const std::string& path) { return format_of(path) != Format::unknown; }

const char* pixel_type_name(PixelType type) noexcept {
  switch (type) {
    case PixelType::automatic: return "auto";
    case PixelType::float32: return "float32";
    case PixelType::int16: return "int16";
    case PixelType::uint8: return "uint8";
    case PixelType::uint16: return "uint16";
  }
  return "?";
}

PixelType parse_pixel_type(const std::string& name) {
  for (PixelType t : {PixelType::automatic, PixelType::float32, PixelType::int16, PixelType::uint8, PixelType::uint16})
    if (name == pixel_type_name(t)) return t;
  throw Error(ErrorCode::invalid_input, "unknown pixel type '" + name + "' (expected auto, float32, int16, uint8 or uint16)");
}

Volume read_image(const std::string& path, const ReadOptions& options) {
  quiet_itk();
  check_readable(path);
  const Format format = format_of(path);
  if (format == Format::unknown)
    throw Error(ErrorCode::invalid_input,
                path + ": not a NIfTI (.nii, .nii.gz, .hdr/.img), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd) file name");
  if (format == Format::nifti && is_nifti2_file(path)) return read_nifti2(path, options.max_voxels);
  itk::ImageIOBase::Pointer io = make_io(format);
  const std::string what = path + ": ";
  {
    CaptureConsole console;
    try {
      if (!io->CanReadFile(path.c_str()))
        throw Error(ErrorCode::invalid_input,
                    what + "not a readable " + std::string(format_name(format)) + " file" + console.first_line());
      io->SetFileName(path);
      io->ReadImageInformation();
    } catch (const itk::ExceptionObject& e) {
      throw Error(ErrorCode::invalid_input, what + "cannot read the " + format_name(format) + " header: " +
                                                itk_message(e) + console.first_line());
    }
  }

  const auto pixel = io->GetPixelType();
  if (pixel != itk::IOPixelEnum::SCALAR || io->GetNumberOfComponents() != 1)
    throw Error(ErrorCode::unsupported, what + itk::ImageIOBase::GetPixelTypeAsString(pixel) + " pixels with " +
                                            std::to_string(io->GetNumberOfComponents()) +
                                            " components are not supported (only scalar images)");
  const Component comp = io->GetComponentType();
  if (component_size(comp) == 0)
    throw Error(ErrorCode::unsupported,
                what + "voxel type " + itk::ImageIOBase::GetComponentTypeAsString(comp) + " is not supported");

  const unsigned nd = io->GetNumberOfDimensions();
  if (nd < 2 || nd > 4) throw Error(ErrorCode::unsupported, what + std::to_string(nd) + "D images are not supported (2D to 4D)");
  std::int64_t dims[4] = {1, 1, 1, 1};
  std::int64_t total = 1;
  for (unsigned i = 0; i < nd; ++i) {
    dims[i] = static_cast<std::int64_t>(io->GetDimensions(i));
    if (dims[i] <= 0) throw Error(ErrorCode::invalid_input, what + "dimension " + std::to_string(i) + " has size 0");
    if (total > options.max_voxels / dims[i])
      throw Error(ErrorCode::invalid_input, what + "the header claims more than " + std::to_string(options.max_voxels) +
                                                " voxels; refusing to allocate it (corrupt header?)");
    total *= dims[i];
  }
  const std::uint64_t raw_bytes = static_cast<std::uint64_t>(total) * component_size(comp);
  if (format == Format::nifti) {
    check_raw_nifti_size(*io, path, static_cast<std::uint64_t>(total));
    check_gzip_nifti_size(*io, path, static_cast<std::uint64_t>(total));
    check_nifti_not_sheared(*io, path);
  }

  Geometry g;
  for (unsigned i = 0; i < std::min(nd, 3u); ++i) {
    g.spacing[i] = io->GetSpacing(i);
    g.origin[i] = io->GetOrigin(i);
    const std::vector<double> col = io->GetDirection(i);
    for (unsigned r = 0; r < std::min<std::size_t>(col.size(), 3); ++r) g.direction(r, i) = col[r];
    if (nd == 2) g.direction(2, i) = 0;
  }
  g.validate(path);

  Volume vol(dims[3], dims[2], dims[1], dims[0], g);
  itk::ImageIORegion region(nd);
  for (unsigned i = 0; i < nd; ++i) {
    region.SetIndex(i, 0);
    region.SetSize(i, static_cast<itk::SizeValueType>(dims[i]));
  }
  CaptureConsole console;
  try {
    io->SetIORegion(region);
    if (comp == Component::FLOAT) {
      io->Read(vol.data.raw());
    } else {
      std::vector<std::byte> buffer(static_cast<std::size_t>(raw_bytes));
      io->Read(buffer.data());
      to_float(comp, buffer.data(), vol.data.data<float>(), total);
    }
  } catch (const itk::ExceptionObject& e) {
    throw Error(ErrorCode::invalid_input, what + "cannot read the voxel data (truncated or corrupt file?): " + itk_message(e) +
                                              console.first_line());
  }
  vol.metadata["source_format"] = format_name(format);
  return vol;
}

namespace {

struct TypeChoice {
  Component component;
  std::size_t size;
};

TypeChoice resolve_type(PixelType requested, const Tensor& data) {
  PixelType t = requested;
  if (t == PixelType::automatic) {
    const float* p = data.data<float>();
    const std::int64_t n = data.numel();
    bool integral = n > 0;
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    for (std::int64_t i = 0; i < n && integral; ++i) {
      if (!(std::nearbyint(p[i]) == p[i])) integral = false;
      lo = std::min(lo, p[i]);
      hi = std::max(hi, p[i]);
    }
    if (integral && lo >= 0 && hi <= 255) t = PixelType::uint8;
    else if (integral && lo >= -32768 && hi <= 32767) t = PixelType::int16;
    else if (integral && lo >= 0 && hi <= 65535) t = PixelType::uint16;
    else t = PixelType::float32;
  }
  switch (t) {
    case PixelType::uint8: return {Component::UCHAR, 1};
    case PixelType::int16: return {Component::SHORT, 2};
    case PixelType::uint16: return {Component::USHORT, 2};
    default: return {Component::FLOAT, 4};
  }
}

template <typename T>
void from_float(const std::string& path, const float* src, std::byte* dst, std::int64_t n) {
  T* d = reinterpret_cast<T*>(dst);
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = src[i];
    if (!(std::nearbyint(v) == v) || v < static_cast<float>(std::numeric_limits<T>::min()) ||
        v > static_cast<float>(std::numeric_limits<T>::max()))
      throw Error(ErrorCode::invalid_input, path + ": value " + std::to_string(v) + " at voxel " + std::to_string(i) +
                                                " cannot be stored exactly in the chosen integer voxel type");
    d[i] = static_cast<T>(v);
  }
}

}  // namespace

void write_image(const std::string& path, const Volume& volume, const WriteOptions& options) {
  quiet_itk();
  const Format format = format_of(path);
  const std::string p = lower(path);
  if (format == Format::unknown || ends_with(p, ".nhdr") || ends_with(p, ".mhd") || ends_with(p, ".hdr") ||
      ends_with(p, ".img") || ends_with(p, ".img.gz") || ends_with(p, ".hdr.gz"))
    throw Error(ErrorCode::invalid_input,
                path + ": cannot write this file type; use .nii, .nii.gz, .nrrd or .mha (single-file formats)");
  VOXINFER_CHECK(volume.data.defined() && volume.data.rank() == 4 && volume.data.dtype() == DType::f32, invalid_input,
                 path + ": the volume to write must be a float32 [C, Z, Y, X] tensor");
  volume.geometry.validate(path);
  const Tensor data = volume.data.contiguous();
  const std::int64_t n = data.numel();
  const TypeChoice type = resolve_type(options.pixel_type, data);
  std::vector<std::byte> buffer;
  const void* src = data.raw();
  if (type.component != Component::FLOAT) {
    buffer.resize(static_cast<std::size_t>(n) * type.size);
    const float* f = data.data<float>();
    if (type.component == Component::UCHAR) from_float<std::uint8_t>(path, f, buffer.data(), n);
    else if (type.component == Component::SHORT) from_float<std::int16_t>(path, f, buffer.data(), n);
    else from_float<std::uint16_t>(path, f, buffer.data(), n);
    src = buffer.data();
  }

  const std::int64_t dims[4] = {volume.nx(), volume.ny(), volume.nz(), volume.channels()};
  const unsigned nd = volume.channels() > 1 ? 4 : 3;
  AtomicFile out(path, /*open_stream=*/false);
  itk::ImageIOBase::Pointer io = make_io(format);
  try {
    io->SetNumberOfDimensions(nd);
    itk::ImageIORegion region(nd);
    for (unsigned i = 0; i < nd; ++i) {
      io->SetDimensions(i, static_cast<unsigned>(dims[i]));
      io->SetSpacing(i, i < 3 ? volume.geometry.spacing[i] : 1.0);
      io->SetOrigin(i, i < 3 ? volume.geometry.origin[i] : 0.0);
      std::vector<double> col(nd, 0.0);
      for (unsigned r = 0; r < nd; ++r) col[r] = (i < 3 && r < 3) ? volume.geometry.direction(r, i) : (r == i ? 1.0 : 0.0);
      io->SetDirection(i, col);
      region.SetIndex(i, 0);
      region.SetSize(i, static_cast<itk::SizeValueType>(dims[i]));
    }
    io->SetPixelType(itk::IOPixelEnum::SCALAR);
    io->SetNumberOfComponents(1);
    io->SetComponentType(type.component);
    io->SetFileName(out.temp_path());
    io->SetUseCompression(format == Format::nifti ? ends_with(p, ".gz") : options.compress);
    io->SetIORegion(region);
    io->Write(src);
  } catch (const itk::ExceptionObject& e) {
    throw Error(ErrorCode::io, path + ": cannot write the " + std::string(format_name(format)) + " file: " + itk_message(e));
  }
  out.commit();
}

}  // namespace voxinfer
