// ITK adapter: NIfTI-1/2, NRRD and MetaImage files to and from Volumes. ITK's ImageIO
// objects are used directly (no ImageFileReader), so that sizes are checked before any
// buffer is allocated and every on-disk component type converts to float32 in one place.
#include <fcntl.h>
#include <itkImageIOBase.h>
#include <itkMetaDataObject.h>
#include <itkMetaImageIO.h>
#include <itkNiftiImageIO.h>
#include <itkNrrdImageIO.h>
#include <itkObject.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <mutex>
#include <sstream>
#include <vector>

#include "io/atomic_file.h"
#include "io/nifti2.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/io/image_io.h"

// nifti_clib, as ITK links it (its header is not included: it would bring nifti1.h's macros).
extern "C" void nifti_set_debug_level(int level);

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
  std::call_once(once, [] {
    itk::Object::SetGlobalWarningDisplay(false);
    // nifti_clib prints its errors (a short write among them) on stderr; voxinfer reports them.
    nifti_set_debug_level(0);
  });
}

// nifti_clib and MetaIO print their write errors on stderr and go on; voxinfer checks the
// file and reports them as one error instead, so stderr is muted while they write.
class MuteStderr {
 public:
  MuteStderr() {
    std::fflush(stderr);
    std::cerr.flush();
    saved_ = ::dup(2);
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (saved_ >= 0 && null >= 0) ::dup2(null, 2);
    if (null >= 0) ::close(null);
  }
  ~MuteStderr() {
    std::fflush(stderr);
    std::cerr.flush();
    if (saved_ >= 0) {
      ::dup2(saved_, 2);
      ::close(saved_);
    }
  }
  MuteStderr(const MuteStderr&) = delete;
  MuteStderr& operator=(const MuteStderr&) = delete;

 private:
  int saved_ = -1;
};

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
  // nifti_clib also prints with fprintf(stderr): the descriptor is muted as well.
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
  MuteStderr mute_;
  std::ostringstream buffer_;
  std::streambuf* out_;
  std::streambuf* err_;
};

using Component = itk::IOComponentEnum;

// The on-disk voxel type's name (metadata "voxel_type"): NiiVue's conform treats uint8 apart.
const char* component_name(Component c) {
  switch (c) {
    case Component::UCHAR: return "uint8";
    case Component::CHAR: return "int8";
    case Component::USHORT: return "uint16";
    case Component::SHORT: return "int16";
    case Component::UINT: return "uint32";
    case Component::INT: return "int32";
    case Component::ULONG: case Component::ULONGLONG: return "uint64";
    case Component::LONG: case Component::LONGLONG: return "int64";
    case Component::FLOAT: return "float32";
    case Component::DOUBLE: return "float64";
    default: return "unknown";
  }
}

const char* nifti_datatype_name(int datatype) {
  switch (datatype) {
    case 2: return "uint8";
    case 4: return "int16";
    case 8: return "int32";
    case 16: return "float32";
    case 64: return "float64";
    case 256: return "int8";
    case 512: return "uint16";
    case 768: return "uint32";
    case 1024: return "int64";
    case 1280: return "uint64";
    default: return "unknown";
  }
}

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
        throw Error(ErrorCode::invalid_input,
                    path + ": the sform is sheared (voxel axes " + std::to_string(a) + " and " + std::to_string(b) +
                        " are " + std::to_string(angle) +
                        " degrees from perpendicular, as in a gantry-tilted CT saved without resampling); "
                        "voxinfer needs orthogonal axes: resample the image first");
      }
    }
}

// ------------------------------------------------------------------ NIfTI-1 header checks
// ITK reads NIfTI-1 through nifti_clib, which aborts on a NaN in the sform, replaces a zero or
// NaN pixdim by 1, accepts a vox_offset inside the header and zeroes NaN/Inf voxels. The raw
// header is therefore read and checked here first, and float voxels are read here too.

struct GzHandle {
  gzFile f = nullptr;
  explicit GzHandle(const std::string& path) : f(gzopen(path.c_str(), "rb")) {}
  ~GzHandle() {
    if (f) gzclose(f);
  }
  GzHandle(const GzHandle&) = delete;
  GzHandle& operator=(const GzHandle&) = delete;
  // Reads up to n bytes (gzread takes an unsigned count); returns how many were read.
  std::uint64_t read(void* dst, std::uint64_t n) {
    auto* p = static_cast<unsigned char*>(dst);
    std::uint64_t done = 0;
    while (done < n) {
      const int got = gzread(f, p + done, static_cast<unsigned>(std::min<std::uint64_t>(n - done, 1u << 30)));
      if (got <= 0) break;
      done += static_cast<std::uint64_t>(got);
    }
    return done;
  }
};

struct Nifti1Header {
  bool swap = false;
  bool single_file = false;  // magic "n+1": header and voxels in one file
  std::int16_t dim[8] = {};
  std::int16_t datatype = 0, bitpix = 0;
  float pixdim[8] = {};
  float vox_offset = 0, scl_slope = 0, scl_inter = 0;
  std::int16_t qform_code = 0, sform_code = 0;
  float quatern[6] = {};  // quatern_b, c, d, qoffset_x, y, z
  float srow[12] = {};
};

template <typename T>
T header_field(const unsigned char* h, std::size_t offset, bool swap) {
  T v;
  std::memcpy(&v, h + offset, sizeof(T));
  if (swap) {
    auto* b = reinterpret_cast<unsigned char*>(&v);
    for (std::size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
  }
  return v;
}

// Reads the 348-byte NIfTI-1 (or ANALYZE) header of a .nii, .nii.gz or .hdr file; false if
// the file does not start with one (ITK then says what is wrong).
bool read_nifti1_header(const std::string& path, Nifti1Header& h) {
  constexpr std::int32_t kSize = 348;
  unsigned char b[kSize];
  GzHandle g(path);
  if (!g.f || g.read(b, kSize) != kSize) return false;
  h.swap = header_field<std::int32_t>(b, 0, false) != kSize;
  if (header_field<std::int32_t>(b, 0, h.swap) != kSize) return false;
  h.single_file = std::memcmp(b + 344, "n+1", 4) == 0;
  for (std::size_t i = 0; i < 8; ++i) {
    h.dim[i] = header_field<std::int16_t>(b, 40 + 2 * i, h.swap);
    h.pixdim[i] = header_field<float>(b, 76 + 4 * i, h.swap);
  }
  h.datatype = header_field<std::int16_t>(b, 70, h.swap);
  h.bitpix = header_field<std::int16_t>(b, 72, h.swap);
  h.vox_offset = header_field<float>(b, 108, h.swap);
  h.scl_slope = header_field<float>(b, 112, h.swap);
  h.scl_inter = header_field<float>(b, 116, h.swap);
  h.qform_code = header_field<std::int16_t>(b, 252, h.swap);
  h.sform_code = header_field<std::int16_t>(b, 254, h.swap);
  for (std::size_t i = 0; i < 6; ++i) h.quatern[i] = header_field<float>(b, 256 + 4 * i, h.swap);
  for (std::size_t i = 0; i < 12; ++i) h.srow[i] = header_field<float>(b, 280 + 4 * i, h.swap);
  return true;
}

// Spacings, offsets and affine entries beyond a kilometre are no medical image; ITK's SVD of
// such an orientation (float 1e38 entries) does not converge and never returns.
constexpr float kMaxGeometryMm = 1e6f;

// Geometry fields must be finite, spacings positive, the sform invertible and the voxels
// after the header: each failure names the file and the field.
void check_nifti1_header(const Nifti1Header& h, const std::string& path) {
  const std::string what = path + ": NIfTI header field ";
  if (h.dim[0] < 1 || h.dim[0] > 7)
    throw Error(ErrorCode::invalid_input, what + "dim[0] = " + std::to_string(h.dim[0]) + " is not 1 to 7");
  for (int i = 1; i <= h.dim[0]; ++i)
    if (h.dim[i] < 1)
      throw Error(ErrorCode::invalid_input, what + "dim[" + std::to_string(i) + "] = " + std::to_string(h.dim[i]) +
                                                " is not a size (at least 1)");
  static const std::int16_t kDatatypes[] = {2,   4,   8,    16,   32,   64,   128,  256,
                                            512, 768, 1024, 1280, 1536, 1792, 2048, 2304};
  if (std::find(std::begin(kDatatypes), std::end(kDatatypes), h.datatype) == std::end(kDatatypes))
    throw Error(ErrorCode::invalid_input,
                what + "datatype = " + std::to_string(h.datatype) + " is not a NIfTI data type");
  for (int i = 1; i <= std::min<int>(h.dim[0], 3); ++i) {
    const float p = h.pixdim[i];
    // A zero spacing is tolerated on an axis of one voxel only (2D images often have one).
    if (!std::isfinite(p) || p < 0 || (p == 0 && h.dim[i] > 1) || p > kMaxGeometryMm)
      throw Error(ErrorCode::invalid_input, what + "pixdim[" + std::to_string(i) + "] = " + std::to_string(p) +
                                                ": voxel spacing must be a positive finite number of at most 1 km");
  }
  if (h.qform_code > 0)
    for (int i = 0; i < 6; ++i)
      if (!std::isfinite(h.quatern[i]) || std::abs(h.quatern[i]) > kMaxGeometryMm)
        throw Error(ErrorCode::invalid_input,
                    what + (i < 3 ? std::string("quatern_") + "bcd"[i] : std::string("qoffset_") + "xyz"[i - 3]) +
                        " is not finite or beyond 1 km (the qform is unusable)");
  if (h.sform_code > 0) {
    Eigen::Matrix3d m;
    for (int i = 0; i < 12; ++i) {
      if (!std::isfinite(h.srow[i]) || std::abs(h.srow[i]) > kMaxGeometryMm)
        throw Error(ErrorCode::invalid_input, what + "srow_" + "xyz"[i / 4] + "[" + std::to_string(i % 4) +
                                                  "] is not finite or beyond 1 km (the sform is unusable)");
      if (i % 4 < 3) m(i / 4, i % 4) = h.srow[i];
    }
    if (!(std::abs(m.determinant()) > 1e-12))
      throw Error(ErrorCode::invalid_input,
                  what + "srow_x/y/z: the sform is degenerate (its voxel axes are not independent)");
  }
  if (!std::isfinite(h.vox_offset) || h.vox_offset < 0)
    throw Error(ErrorCode::invalid_input,
                what + "vox_offset = " + std::to_string(h.vox_offset) + " is not a file position");
  if (h.single_file && h.vox_offset < 352)
    throw Error(ErrorCode::invalid_input,
                what + "vox_offset = " + std::to_string(h.vox_offset) +
                    " points inside the header (a single-file NIfTI-1 keeps its voxels at 352 or later)");
}

// The bytes a gzip file inflates to, counted by streaming up to `limit` (so a bomb costs
// time bounded by the limit, never memory); the trailer holds the size modulo 2^32 only.
std::uint64_t gzip_size_up_to(const std::string& path, std::uint64_t limit) {
  GzHandle g(path);
  if (!g.f) return 0;
  std::vector<unsigned char> chunk(1 << 20);
  std::uint64_t total = 0;
  while (total < limit) {
    const std::uint64_t got = g.read(chunk.data(), std::min<std::uint64_t>(chunk.size(), limit - total));
    if (got == 0) break;
    total += got;
  }
  return total;
}

// ITK's NIfTI reader accepts a truncated .nii.gz and zero-fills what is missing, and a
// small bomb that claims gigabytes would be allocated first. Deflate inflates at most
// ~1032:1, which refuses bombs from the file size alone; otherwise the gzip trailer gives the
// size modulo 2^32, exact below 4 GiB, and larger streams are counted by inflating them.
void check_gzip_nifti_size(const std::string& path, std::uint64_t needed) {
  if (!ends_with(lower(path), ".gz")) return;
  std::error_code ec;
  const std::uint64_t compressed = fs::file_size(path, ec);
  if (ec) return;
  constexpr std::uint64_t kMaxRatio = 1100, kSlack = 1u << 20;  // trailing bytes some writers add after the voxels
  const auto truncated = [&](const std::string& why) {
    return Error(ErrorCode::invalid_input, path + ": truncated or corrupt: " + why + " the " + std::to_string(needed) +
                                               " bytes the header describes");
  };
  if (compressed < (std::numeric_limits<std::uint64_t>::max() - kSlack) / kMaxRatio &&
      needed > compressed * kMaxRatio + kSlack)
    throw truncated("a gzip stream of " + std::to_string(compressed) + " bytes cannot hold");
  if (needed + kSlack < (std::uint64_t{1} << 32)) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return;
    unsigned char trailer[4] = {0, 0, 0, 0};
    const bool ok = std::fseek(f, -4, SEEK_END) == 0 && std::fread(trailer, 1, 4, f) == 4;
    std::fclose(f);
    if (!ok) return;
    const std::uint64_t isize = trailer[0] | (trailer[1] << 8) | (trailer[2] << 16) | (std::uint32_t{trailer[3]} << 24);
    if (isize < needed || isize > needed + kSlack) throw truncated("the gzip stream does not hold");
  } else if (gzip_size_up_to(path, needed) < needed) {
    throw truncated("the gzip stream inflates to fewer than");
  }
}

// Reads float32/float64 NIfTI-1 voxels as stored (NaN and Inf kept), scaled as ITK scales
// them; the geometry still comes from ITK.
void read_nifti1_float_voxels(const Nifti1Header& h, const std::string& path, Component comp, std::int64_t total,
                              float* dst) {
  const std::size_t elem = comp == Component::DOUBLE ? 8 : 4;
  const std::uint64_t bytes = static_cast<std::uint64_t>(total) * elem;
  GzHandle g(path);
  if (!g.f) throw Error(ErrorCode::io, path + ": cannot open for reading");
  const auto offset = static_cast<z_off_t>(h.vox_offset);
  if (gzseek(g.f, offset, SEEK_SET) != offset)
    throw Error(ErrorCode::invalid_input, path + ": truncated before the voxel data");
  std::vector<unsigned char> raw(static_cast<std::size_t>(bytes));
  if (g.read(raw.data(), bytes) != bytes)
    throw Error(ErrorCode::invalid_input, path + ": truncated: fewer voxel bytes than the header describes");
  const bool rescale = std::isfinite(h.scl_slope) && h.scl_slope != 0 && std::isfinite(h.scl_inter) &&
                       (h.scl_slope != 1 || h.scl_inter != 0);
  const double slope = rescale ? h.scl_slope : 1.0, inter = rescale ? h.scl_inter : 0.0;
  const bool swap = h.swap;
  parallel_for(total, 1 << 16, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      const unsigned char* p = raw.data() + static_cast<std::size_t>(i) * elem;
      const double v = elem == 8 ? header_field<double>(p, 0, swap) : header_field<float>(p, 0, swap);
      dst[i] = rescale ? static_cast<float>(v * slope + inter) : static_cast<float>(v);
    }
  });
}

// ------------------------------------------------------------------ detached data files
// A .nhdr/.nrrd or .mhd/.mha header may name the file that holds its voxels. That file must
// lie in the header's folder (after following links: no "/etc/passwd" read into a volume)
// and be a regular file (a FIFO would block the read forever).

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

void check_data_file(const std::string& header, const std::string& name) {
  const fs::path dir = fs::path(header).parent_path().empty() ? fs::path(".") : fs::path(header).parent_path();
  const auto refuse = [&](const std::string& why) {
    throw Error(ErrorCode::invalid_input, header + ": data file '" + name + "' " + why);
  };
  if (name.empty()) refuse("is empty");
  if (fs::path(name).is_absolute()) refuse("must be a relative path inside the header's folder");
  std::error_code ec;
  const fs::path base = fs::weakly_canonical(dir, ec);
  const fs::path target = fs::weakly_canonical(dir / name, ec);
  if (ec) refuse("cannot be resolved");
  const auto rel = target.lexically_relative(base);
  if (rel.empty() || *rel.begin() == "..") refuse("is outside the header's folder");
  const auto st = fs::status(target, ec);
  if (!ec && fs::exists(st) && !fs::is_regular_file(st)) refuse("is not a regular file (a pipe or a device?)");
}

// A MetaImage with its data in the file (ElementDataFile = LOCAL): MetaIO reads a short or
// corrupt (compressed) data block as zeros without a word, so the block is measured first:
// raw data must hold every voxel, compressed data must inflate to exactly that many bytes.
void check_attached_meta_data(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string line, element_type;
  std::vector<std::uint64_t> sizes;
  std::uint64_t channels = 1;
  bool compressed = false, local = false;
  std::uint64_t header = 0;
  for (int lines = 0; lines < 1000 && std::getline(in, line); ++lines) {
    header += line.size() + 1;
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    auto trim = [](std::string& t) {
      while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
      t.erase(0, std::min(t.size(), t.find_first_not_of(" \t")));
    };
    trim(key);
    trim(value);
    std::istringstream v(value);
    if (key == "DimSize") {
      sizes.clear();
      for (std::int64_t d; v >> d;) sizes.push_back(d > 0 ? static_cast<std::uint64_t>(d) : 0);
    } else if (key == "ElementType") {
      element_type = value;
    } else if (key == "ElementNumberOfChannels") {
      v >> channels;
    } else if (key == "CompressedData") {
      compressed = value == "True" || value == "true";
    } else if (key == "ElementDataFile") {
      local = value == "LOCAL";
      break;
    }
  }
  if (!local || sizes.empty()) return;
  static const std::pair<const char*, std::uint64_t> kSizes[] = {
      {"MET_UCHAR", 1}, {"MET_CHAR", 1},  {"MET_USHORT", 2}, {"MET_SHORT", 2},     {"MET_UINT", 4},
      {"MET_INT", 4},   {"MET_FLOAT", 4}, {"MET_DOUBLE", 8}, {"MET_LONG_LONG", 8}, {"MET_ULONG_LONG", 8}};
  std::uint64_t bytes = 0;
  for (const auto& [name, size] : kSizes)
    if (element_type == name) bytes = size;
  if (bytes == 0) return;  // ITK says what is wrong with other types
  std::uint64_t voxels = channels;
  for (std::uint64_t d : sizes) {
    if (d == 0 || voxels > (std::uint64_t{1} << 58) / d) return;  // ITK refuses these sizes itself
    voxels *= d;
  }
  bytes *= voxels;
  std::error_code ec;
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec || size < header) return;
  const std::uint64_t stored = size - header;
  if (!compressed) {
    if (stored < bytes)
      throw Error(ErrorCode::invalid_input, path + ": the MetaImage data is truncated: " + std::to_string(stored) +
                                                " bytes where its " + std::to_string(voxels) + " voxels need " +
                                                std::to_string(bytes));
    return;
  }
  in.clear();
  in.seekg(static_cast<std::streamoff>(header));
  z_stream z{};
  if (inflateInit2(&z, 47) != Z_OK) return;  // zlib or gzip wrapper, as MetaIO accepts
  std::vector<unsigned char> src(1 << 16), dst(1 << 16);
  std::uint64_t out = 0;
  int rc = Z_OK;
  while (rc == Z_OK && out <= bytes) {
    if (z.avail_in == 0) {
      in.read(reinterpret_cast<char*>(src.data()), static_cast<std::streamsize>(src.size()));
      z.avail_in = static_cast<uInt>(in.gcount());
      z.next_in = src.data();
      if (z.avail_in == 0) break;
    }
    z.next_out = dst.data();
    z.avail_out = static_cast<uInt>(dst.size());
    rc = inflate(&z, Z_NO_FLUSH);
    out += dst.size() - z.avail_out;
  }
  inflateEnd(&z);
  if (rc == Z_BUF_ERROR) rc = Z_OK;  // no more input: judged by the count below
  if ((rc != Z_OK && rc != Z_STREAM_END) || out != bytes)
    throw Error(ErrorCode::invalid_input,
                path + ": the compressed MetaImage data is corrupt or truncated (" +
                    (rc == Z_OK || rc == Z_STREAM_END ? "inflates to " + std::to_string(out) + " bytes"
                                                      : std::string("zlib error")) +
                    " where its " + std::to_string(voxels) + " voxels need " + std::to_string(bytes) + ")");
}

// The data files a NRRD or MetaImage header names (none for attached data). A printf-style
// pattern is checked as a name: its folder is what matters.
void check_detached_data_files(const std::string& path, Format format) {
  if (format != Format::nrrd && format != Format::meta) return;
  std::ifstream in(path, std::ios::binary);
  if (!in) return;
  constexpr std::size_t kMaxHeader = 1 << 20;  // headers are a few hundred bytes; LISTs longer
  std::string text(kMaxHeader, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  std::istringstream lines(text);
  std::string line;
  std::vector<std::string> names;
  bool list = false;
  const bool nrrd = format == Format::nrrd;
  if (nrrd && text.rfind("NRRD", 0) != 0) return;  // ITK reports what it is
  while (std::getline(lines, line)) {
    const std::string t = trim(line);
    if (list) {
      if (!t.empty()) names.push_back(t);
      continue;
    }
    if (nrrd && t.empty()) break;  // end of the header: the data (or nothing) follows
    std::string key, value;
    const auto sep = nrrd ? line.find(':') : line.find('=');
    if (sep == std::string::npos) continue;
    key = lower(trim(line.substr(0, sep)));
    value = trim(line.substr(sep + 1));
    if (nrrd && !value.empty() && value[0] == '=') continue;  // "key:=value" pairs
    const bool data_key = nrrd ? (key == "data file" || key == "datafile") : key == "elementdatafile";
    if (!data_key) continue;
    if (!nrrd && value == "LOCAL") return;
    if (value.rfind("LIST", 0) == 0) {
      list = true;
      if (nrrd) {  // NRRD lists its files after the header's blank line
        while (std::getline(lines, line) && !trim(line).empty()) {
        }
      }
      continue;
    }
    if (value.find('%') != std::string::npos) value = value.substr(0, value.find_first_of(" \t"));
    names.push_back(value);
    if (!nrrd) break;  // MetaImage: ElementDataFile is the last field
  }
  for (const auto& n : names) check_data_file(path, n);
}

void check_readable(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error(ErrorCode::io, path + ": no such file");
  if (fs::is_directory(st)) throw Error(ErrorCode::invalid_input, path + ": is a folder, not an image file");
  // A FIFO or a device would block the read or never end.
  if (!fs::is_regular_file(st))
    throw Error(ErrorCode::invalid_input, path + ": is not a regular file (a pipe or a device?)");
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
  check_detached_data_files(path, format);
  Nifti1Header nifti1;
  const bool have_nifti1 = format == Format::nifti && read_nifti1_header(path, nifti1);
  if (have_nifti1) check_nifti1_header(nifti1, path);
  // ITK would guess at a header whose sizeof_hdr is neither 348 nor 540 (in either byte order).
  if (format == Format::nifti && !have_nifti1)
    throw Error(ErrorCode::invalid_input, path + ": not a NIfTI file (no 348-byte NIfTI-1 or 540-byte NIfTI-2 header)");
  if (format == Format::meta) check_attached_meta_data(path);
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
    throw Error(ErrorCode::invalid_input, what + itk::ImageIOBase::GetPixelTypeAsString(pixel) + " pixels with " +
                                            std::to_string(io->GetNumberOfComponents()) +
                                            " components are not supported (only scalar images)");
  const Component comp = io->GetComponentType();
  if (component_size(comp) == 0)
    throw Error(ErrorCode::invalid_input,
                what + "voxel type " + itk::ImageIOBase::GetComponentTypeAsString(comp) + " is not supported");

  const unsigned nd = io->GetNumberOfDimensions();
  if (nd < 2 || nd > 4) throw Error(ErrorCode::invalid_input, what + std::to_string(nd) + "D images are not supported (2D to 4D)");
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
    const double bitpix = nifti_number(*io, "bitpix", 0), offset = nifti_number(*io, "vox_offset", 0);
    if (bitpix > 0 && bitpix <= 128 && offset >= 0 && offset < 1e15) {
      const auto voxels = static_cast<std::uint64_t>(total), bits = static_cast<std::uint64_t>(bitpix);
      const std::uint64_t data = voxels > std::numeric_limits<std::uint64_t>::max() / 256
                                     ? std::numeric_limits<std::uint64_t>::max() / 2
                                     : voxels * bits / 8;
      check_gzip_nifti_size(path, static_cast<std::uint64_t>(offset) + data);
    }
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
    if (have_nifti1 && nifti1.single_file && (comp == Component::FLOAT || comp == Component::DOUBLE) &&
        (nifti1.datatype == 16 || nifti1.datatype == 64)) {
      read_nifti1_float_voxels(nifti1, path, comp, total, vol.data.data<float>());
    } else if (comp == Component::FLOAT) {
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
  // NIfTI: the header's datatype (ITK reports float for scaled integers).
  vol.metadata["voxel_type"] = have_nifti1 ? nifti_datatype_name(nifti1.datatype) : component_name(comp);
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

// ITK's writers report some failed writes (a full disk, a file-size limit) only on stderr
// and return normally, so the finished temporary is checked before it is committed:
// uncompressed files must hold every data byte; a gzip stream (NIfTI .gz, NRRD) must end in
// the trailer of all the data, and MetaImage's zlib stream in the Adler-32 of the data.
void verify_written(const AtomicFile& out, Format format, bool compressed, const void* data, std::uint64_t nbytes) {
  std::error_code ec;
  const std::uint64_t size = std::filesystem::file_size(out.temp_path(), ec);
  if (ec) out.fail("the written file cannot be found: " + ec.message());
  constexpr std::uint64_t kNiftiHeader = 352;  // header and extension flag before the voxels
  std::uint64_t header = format == Format::nifti ? kNiftiHeader : 0;
  if (!compressed && format != Format::nifti) {
    // NRRD and MetaImage headers are text: the voxels start after a blank line (NRRD) or
    // after the ElementDataFile line (MetaImage).
    std::string head(static_cast<std::size_t>(std::min<std::uint64_t>(size, 1 << 16)), '\0');
    std::ifstream in(out.temp_path(), std::ios::binary);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    const std::size_t end = format == Format::nrrd ? head.find("\n\n") : head.find("ElementDataFile");
    const std::size_t eol = end == std::string::npos ? end : head.find('\n', end + (format == Format::nrrd ? 1 : 0));
    if (eol == std::string::npos) out.fail("the written file has no complete header (disk full?)");
    header = eol + 1;
  }
  if (!compressed) {
    if (size != header + nbytes)
      out.fail("the file holds " + std::to_string(size) + " bytes where the voxels alone need " +
               std::to_string(nbytes) + " (disk full?)");
    return;
  }
  unsigned char tail[8] = {};
  std::ifstream in(out.temp_path(), std::ios::binary);
  if (size < 8 || !in.seekg(static_cast<std::streamoff>(size - 8)) || !in.read(reinterpret_cast<char*>(tail), 8))
    out.fail("the compressed file is " + std::to_string(size) + " bytes long (disk full?)");
  auto le32 = [&](int at) {
    return std::uint32_t{tail[at]} | (std::uint32_t{tail[at + 1]} << 8) | (std::uint32_t{tail[at + 2]} << 16) |
           (std::uint32_t{tail[at + 3]} << 24);
  };
  const std::uint32_t be_last = (std::uint32_t{tail[4]} << 24) | (std::uint32_t{tail[5]} << 16) |
                                (std::uint32_t{tail[6]} << 8) | std::uint32_t{tail[7]};
  // zlib's checksums take at most 4 GiB per call.
  const auto* bytes = static_cast<const Bytef*>(data);
  auto checksum = [&](auto fn, uLong init) {
    uLong c = init;
    for (std::uint64_t at = 0; at < nbytes;) {
      const auto n = static_cast<uInt>(std::min<std::uint64_t>(nbytes - at, std::uint64_t{1} << 30));
      c = fn(c, bytes + at, n);
      at += n;
    }
    return static_cast<std::uint32_t>(c);
  };
  bool ok = true;
  if (format == Format::nifti) {
    ok = le32(4) == static_cast<std::uint32_t>(header + nbytes);
  } else if (format == Format::nrrd) {
    ok = le32(4) == static_cast<std::uint32_t>(nbytes) && le32(0) == checksum(crc32, crc32(0L, Z_NULL, 0));
  } else {
    ok = be_last == checksum(adler32, adler32(0L, Z_NULL, 0));
  }
  if (!ok) out.fail("the compressed data is incomplete (" + std::to_string(size) + " bytes written; disk full?)");
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
  const bool compressed = format == Format::nifti ? ends_with(p, ".gz") : options.compress;
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
    io->SetUseCompression(compressed);
    io->SetIORegion(region);
    const MuteStderr quiet;
    io->Write(src);
  } catch (const itk::ExceptionObject& e) {
    out.fail("the " + std::string(format_name(format)) + " writer failed (disk full?): " + itk_message(e));
  }
  verify_written(out, format, compressed, src, static_cast<std::uint64_t>(n) * type.size);
  out.commit();
}

}  // namespace voxinfer
