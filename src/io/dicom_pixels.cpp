// DICOM pixel decoding: DCMTK for the native, RLE, JPEG and JPEG-LS transfer syntaxes,
// OpenJPEG for JPEG 2000 (which Debian's DCMTK cannot decode). Stored values are masked
// to BitsStored and sign-extended from the high bit (PS3.5 8.1.1), then rescaled.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include VOXINFER_OPENJPEG_HEADER  // the system OpenJPEG, not ITK's bundled copy

#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "io/dicom_internal.h"
#include "voxinfer/core/error.h"

namespace voxinfer::dicom {
namespace {

bool is_jpeg2000(E_TransferSyntax x) { return x == EXS_JPEG2000LosslessOnly || x == EXS_JPEG2000; }

// OpenJPEG reads the codestream from memory through these callbacks.
struct MemoryStream {
  const std::uint8_t* data;
  std::size_t size;
  std::size_t pos;
};

OPJ_SIZE_T opj_read(void* buffer, OPJ_SIZE_T n, void* user) {
  auto* m = static_cast<MemoryStream*>(user);
  if (m->pos >= m->size) return static_cast<OPJ_SIZE_T>(-1);
  const std::size_t k = std::min<std::size_t>(n, m->size - m->pos);
  std::memcpy(buffer, m->data + m->pos, k);
  m->pos += k;
  return k;
}
OPJ_OFF_T opj_skip(OPJ_OFF_T n, void* user) {
  auto* m = static_cast<MemoryStream*>(user);
  const auto target = static_cast<std::int64_t>(m->pos) + n;
  const auto clamped = std::clamp<std::int64_t>(target, 0, static_cast<std::int64_t>(m->size));
  m->pos = static_cast<std::size_t>(clamped);
  return n;
}
OPJ_BOOL opj_seek(OPJ_OFF_T n, void* user) {
  auto* m = static_cast<MemoryStream*>(user);
  if (n < 0 || static_cast<std::size_t>(n) > m->size) return OPJ_FALSE;
  m->pos = static_cast<std::size_t>(n);
  return OPJ_TRUE;
}
void opj_quiet(const char*, void*) {}

// Decodes one JPEG 2000 frame (a raw codestream or a JP2 file) into integers.
std::vector<std::int32_t> decode_j2k(const std::vector<std::uint8_t>& bytes, int rows, int columns, const std::string& what) {
  const bool jp2 = bytes.size() > 12 && bytes[4] == 'j' && bytes[5] == 'P';
  MemoryStream mem{bytes.data(), bytes.size(), 0};
  opj_stream_t* stream = opj_stream_create(1 << 16, OPJ_TRUE);
  opj_codec_t* codec = opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
  opj_image_t* image = nullptr;
  struct Cleanup {
    opj_stream_t*& s;
    opj_codec_t*& c;
    opj_image_t*& i;
    ~Cleanup() {
      if (i) opj_image_destroy(i);
      if (c) opj_destroy_codec(c);
      if (s) opj_stream_destroy(s);
    }
  } cleanup{stream, codec, image};
  if (!stream || !codec) throw Error(ErrorCode::internal, what + ": cannot create a JPEG 2000 decoder");
  opj_stream_set_user_data(stream, &mem, nullptr);
  opj_stream_set_user_data_length(stream, bytes.size());
  opj_stream_set_read_function(stream, opj_read);
  opj_stream_set_skip_function(stream, opj_skip);
  opj_stream_set_seek_function(stream, opj_seek);
  opj_set_error_handler(codec, opj_quiet, nullptr);
  opj_set_warning_handler(codec, opj_quiet, nullptr);
  opj_set_info_handler(codec, opj_quiet, nullptr);
  opj_dparameters_t params;
  opj_set_default_decoder_parameters(&params);
  if (!opj_setup_decoder(codec, &params) || !opj_read_header(stream, codec, &image) ||
      !opj_decode(codec, stream, image) || !opj_end_decompress(codec, stream))
    throw Error(ErrorCode::invalid_input, what + ": corrupt JPEG 2000 pixel data");
  if (image->numcomps != 1)
    throw Error(ErrorCode::invalid_input, what + ": JPEG 2000 image with " + std::to_string(image->numcomps) +
                                            " components (only grayscale is supported)");
  const opj_image_comp_t& c = image->comps[0];
  if (static_cast<int>(c.w) != columns || static_cast<int>(c.h) != rows || !c.data)
    throw Error(ErrorCode::invalid_input, what + ": JPEG 2000 frame is " + std::to_string(c.w) + "x" +
                                              std::to_string(c.h) + " but the header says " + std::to_string(columns) +
                                              "x" + std::to_string(rows));
  return std::vector<std::int32_t>(c.data, c.data + static_cast<std::size_t>(rows) * static_cast<std::size_t>(columns));
}

template <typename T>
void convert(const T* src, float* dst, std::size_t n, int bits_stored, int high_bit, bool is_signed, double slope,
             double intercept) {
  const int shift = std::max(0, high_bit + 1 - bits_stored);
  const std::uint64_t mask = bits_stored >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << bits_stored) - 1;
  // Integer rescale of values of up to 16 bits is exact in float arithmetic (every
  // intermediate stays below 2^24), and this loop vectorizes; it gives the same floats
  // as the double path below.
  if (bits_stored <= 16 && slope == std::nearbyint(slope) && intercept == std::nearbyint(intercept) &&
      std::abs(slope) <= 64 && std::abs(intercept) <= (1 << 22)) {
    const auto m = static_cast<std::uint32_t>(mask);
    const int up = 32 - bits_stored;
    const auto fs = static_cast<float>(slope), fi = static_cast<float>(intercept);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t v = (static_cast<std::uint32_t>(src[i]) >> shift) & m;
      const std::int32_t sv = is_signed ? static_cast<std::int32_t>(v << up) >> up : static_cast<std::int32_t>(v);
      dst[i] = static_cast<float>(sv) * fs + fi;
    }
    return;
  }
  const std::uint64_t sign = std::uint64_t{1} << (bits_stored - 1);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t v = (static_cast<std::uint64_t>(src[i]) >> shift) & mask;
    const std::int64_t s = (is_signed && (v & sign)) ? static_cast<std::int64_t>(v) - static_cast<std::int64_t>(mask) - 1
                                                     : static_cast<std::int64_t>(v);
    dst[i] = static_cast<float>(static_cast<double>(s) * slope + intercept);
  }
}

// The encapsulated fragments of each frame (PS3.5 A.4): one frame per fragment, all
// fragments for a single frame, else a new frame at each JPEG 2000 start-of-codestream.
std::vector<std::vector<std::uint8_t>> frame_fragments(DcmElement* element, E_TransferSyntax xfer, int frames,
                                                       const std::string& what) {
  auto* pixel_data = OFstatic_cast(DcmPixelData*, element);
  DcmPixelSequence* seq = nullptr;
  if (pixel_data->getEncapsulatedRepresentation(xfer, nullptr, seq).bad() || !seq)
    throw Error(ErrorCode::invalid_input, what + ": the compressed pixel data is not encapsulated");
  std::vector<std::vector<std::uint8_t>> fragments, out;
  for (unsigned long i = 1; i < seq->card(); ++i) {
    DcmPixelItem* item = nullptr;
    Uint8* bytes = nullptr;
    if (seq->getItem(item, i).bad() || !item || item->getUint8Array(bytes).bad() || !bytes) continue;
    fragments.emplace_back(bytes, bytes + item->getLength());
  }
  if (fragments.empty()) throw Error(ErrorCode::invalid_input, what + ": empty compressed pixel data");
  if (frames == 1) {
    out.emplace_back();
    for (const auto& f : fragments) out.back().insert(out.back().end(), f.begin(), f.end());
  } else if (static_cast<int>(fragments.size()) == frames) {
    out = std::move(fragments);
  } else {
    for (const auto& f : fragments) {
      const bool starts = f.size() >= 4 && f[0] == 0xFF && f[1] == 0x4F && f[2] == 0xFF && f[3] == 0x51;
      if (starts || out.empty()) out.emplace_back();
      out.back().insert(out.back().end(), f.begin(), f.end());
    }
  }
  if (static_cast<int>(out.size()) < frames)
    throw Error(ErrorCode::invalid_input, what + ": the compressed pixel data holds " + std::to_string(out.size()) +
                                              " frames, the header says " + std::to_string(frames));
  return out;
}

// RLE Lossless (PS3.5 Annex G) for BitsAllocated 1, which DCMTK's RLE decoder refuses:
// one PackBits segment holding the frame's packed bits.
std::vector<std::uint8_t> unpack_rle_bits(const std::vector<std::uint8_t>& f, std::size_t bytes, const std::string& what) {
  auto le32 = [&](std::size_t at) {
    return static_cast<std::uint32_t>(f[at]) | (static_cast<std::uint32_t>(f[at + 1]) << 8) |
           (static_cast<std::uint32_t>(f[at + 2]) << 16) | (static_cast<std::uint32_t>(f[at + 3]) << 24);
  };
  if (f.size() < 64) throw Error(ErrorCode::invalid_input, what + ": RLE frame shorter than its header");
  if (le32(0) != 1)
    throw Error(ErrorCode::invalid_input, what + ": 1-bit RLE frame with " + std::to_string(le32(0)) + " segments");
  std::vector<std::uint8_t> out;
  out.reserve(bytes);
  std::size_t i = le32(4);
  while (i < f.size() && out.size() < bytes) {
    const auto n = static_cast<std::int8_t>(f[i++]);
    if (n >= 0) {
      const std::size_t k = std::min<std::size_t>(static_cast<std::size_t>(n) + 1, f.size() - i);
      out.insert(out.end(), f.begin() + static_cast<std::ptrdiff_t>(i), f.begin() + static_cast<std::ptrdiff_t>(i + k));
      i += k;
    } else if (n != -128 && i < f.size()) {
      out.insert(out.end(), static_cast<std::size_t>(1 - n), f[i++]);
    }
  }
  if (out.size() < bytes) throw Error(ErrorCode::invalid_input, what + ": RLE frame decodes to too few bytes");
  return out;
}

// Size of a JPEG frame from its start-of-frame marker (any JPEG process, JPEG-LS
// included): {rows, columns}, or {-1, -1} when the stream holds no frame header.
std::pair<int, int> jpeg_frame_size(const std::vector<std::uint8_t>& b) {
  std::size_t i = 2;  // after SOI
  while (i + 4 <= b.size()) {
    if (b[i] != 0xFF) return {-1, -1};
    const std::uint8_t marker = b[i + 1];
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    const std::size_t len = (std::size_t{b[i + 2]} << 8) | b[i + 3];
    const bool sof =
        (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) || marker == 0xF7;
    if (sof) {
      if (i + 9 > b.size()) return {-1, -1};
      return {(b[i + 5] << 8) | b[i + 6], (b[i + 7] << 8) | b[i + 8]};
    }
    if (marker == 0xDA || len < 2) return {-1, -1};  // scan data before any frame header
    i += 2 + len;
  }
  return {-1, -1};
}

// Bytes one RLE segment decodes to (PackBits), counted without decoding.
std::size_t rle_segment_size(const std::uint8_t* p, std::size_t n) {
  std::size_t out = 0, i = 0;
  while (i < n) {
    const auto c = static_cast<std::int8_t>(p[i++]);
    if (c >= 0) {
      const std::size_t k = std::min<std::size_t>(static_cast<std::size_t>(c) + 1, n - i);
      out += k;
      i += k;
    } else if (c != -128 && i < n) {
      out += static_cast<std::size_t>(1 - c);
      ++i;
    }
  }
  return out;
}

// A compressed frame whose own size disagrees with Rows/Columns decodes into a garbled
// image (DCMTK fills the buffer the header asks for), so the sizes are compared first.
void check_frame_sizes(DcmElement* element, E_TransferSyntax xfer, int rows, int columns, int frames,
                       int bits_allocated, const std::string& what) {
  const DcmXfer x(xfer);
  const bool jpeg = x.isEncapsulated() && xfer != EXS_RLELossless && !is_jpeg2000(xfer);
  if (!jpeg && xfer != EXS_RLELossless) return;
  auto* pixel_data = OFstatic_cast(DcmPixelData*, element);
  DcmPixelSequence* seq = nullptr;
  if (pixel_data->getEncapsulatedRepresentation(xfer, nullptr, seq).bad() || !seq) return;
  const auto size_error = [&](int frame, std::uint64_t got_rows, std::uint64_t got_columns, const char* unit) {
    throw Error(ErrorCode::invalid_input, what + ": compressed frame " + std::to_string(frame) + " is " +
                                              std::to_string(got_columns) + "x" + std::to_string(got_rows) + unit +
                                              " but Columns/Rows say " + std::to_string(columns) + "x" +
                                              std::to_string(rows));
  };
  if (jpeg) {
    // Every fragment that starts a JPEG stream (SOI) starts a frame.
    int frame = 0;
    for (unsigned long i = 1; i < seq->card(); ++i) {
      DcmPixelItem* item = nullptr;
      Uint8* bytes = nullptr;
      if (seq->getItem(item, i).bad() || !item || item->getUint8Array(bytes).bad() || !bytes) continue;
      const std::size_t n = item->getLength();
      if (n < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8) continue;
      ++frame;
      const auto [r, c] = jpeg_frame_size(std::vector<std::uint8_t>(bytes, bytes + std::min<std::size_t>(n, 1 << 16)));
      if (r < 0)
        throw Error(ErrorCode::invalid_input,
                    what + ": compressed frame " + std::to_string(frame) + " has no JPEG frame header");
      if (r != rows || c != columns)
        size_error(frame, static_cast<std::uint64_t>(r), static_cast<std::uint64_t>(c), "");
    }
    return;
  }
  if (bits_allocated == 1) return;  // checked while unpacking
  if (frames != 1 && static_cast<int>(seq->card()) - 1 != frames) return;
  const std::size_t plane = static_cast<std::size_t>(rows) * static_cast<std::size_t>(columns);
  const std::size_t expected_segments = static_cast<std::size_t>(std::max(1, bits_allocated / 8));
  const std::vector<std::vector<std::uint8_t>> all = frame_fragments(element, xfer, frames, what);
  for (std::size_t k = 0; k < all.size(); ++k) {
    const auto& f = all[k];
    const int frame = static_cast<int>(k) + 1;
    if (f.size() < 64)
      throw Error(ErrorCode::invalid_input,
                  what + ": RLE frame " + std::to_string(frame) + " is shorter than its header");
    auto le32 = [&](std::size_t at) {
      return static_cast<std::uint32_t>(f[at]) | (static_cast<std::uint32_t>(f[at + 1]) << 8) |
             (static_cast<std::uint32_t>(f[at + 2]) << 16) | (static_cast<std::uint32_t>(f[at + 3]) << 24);
    };
    const std::uint32_t segments = le32(0);
    if (segments != expected_segments)
      throw Error(ErrorCode::invalid_input, what + ": RLE frame " + std::to_string(frame) + " has " +
                                                std::to_string(segments) + " segments where BitsAllocated " +
                                                std::to_string(bits_allocated) + " needs " +
                                                std::to_string(expected_segments));
    for (std::uint32_t seg = 0; seg < segments; ++seg) {
      const std::size_t begin = le32(4 + 4 * seg);
      const std::size_t end = seg + 1 < segments ? le32(8 + 4 * seg) : f.size();
      if (begin < 64 || begin > end || end > f.size())
        throw Error(ErrorCode::invalid_input,
                    what + ": RLE frame " + std::to_string(frame) + " has a segment outside the frame");
      const std::size_t got = rle_segment_size(f.data() + begin, end - begin);
      // A segment may carry one byte of padding.
      if (got != plane && got != plane + 1)
        throw Error(ErrorCode::invalid_input, what + ": RLE frame " + std::to_string(frame) + " decodes to " +
                                                  std::to_string(got) + " pixels where Columns x Rows is " +
                                                  std::to_string(columns) + "x" + std::to_string(rows) + " = " +
                                                  std::to_string(plane));
    }
  }
}

}  // namespace

struct FileDecoder::Impl {
  std::string path;
  DcmFileFormat file;
  int rows = 0, columns = 0, frames = 1;
  int bits_allocated = 0, bits_stored = 0, high_bit = 0, pixel_representation = 0;
  const std::uint8_t* pixels = nullptr;  // native pixel data, all frames
  std::size_t pixel_bytes = 0;
  bool j2k = false;
  std::vector<std::vector<std::uint8_t>> codestreams;  // JPEG 2000: one per frame
  std::vector<std::vector<std::uint8_t>> bit_frames;   // 1-bit RLE: unpacked bytes per frame
  // Native 8/16/32-bit data is read frame by frame from the file into a per-thread
  // buffer (DcmElement::getPartialValue), never loaded whole into DCMTK's memory.
  DcmElement* native = nullptr;
  std::size_t frame_bytes = 0;
  std::mutex read_mutex;  // DCMTK reads of one element are not made concurrently
};

FileDecoder::FileDecoder(const FileHeader& header) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = header.path;
  const std::string& what = header.path;
  structure_check(header.path);
  // Large values (the pixel data) stay on disk until asked for.
  const OFCondition loaded =
      m.file.loadFile(OFFilename(header.path.c_str()), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
  if (loaded.bad()) throw Error(ErrorCode::invalid_input, what + ": cannot read the DICOM file (" + loaded.text() + ")");
  DcmDataset* ds = m.file.getDataset();
  if (header.samples_per_pixel != 1)
    throw Error(ErrorCode::invalid_input, what + ": color images (SamplesPerPixel " +
                                            std::to_string(header.samples_per_pixel) + ", " +
                                            printable(header.photometric) + ") are not supported");
  if (header.photometric == "PALETTE COLOR")
    throw Error(ErrorCode::invalid_input, what + ": PALETTE COLOR images are not supported (only grayscale)");
  const E_TransferSyntax xfer = ds->getOriginalXfer();
  const DcmXfer x(xfer);
  DcmElement* element = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, element).bad() || !element)
    throw Error(ErrorCode::invalid_input, what + ": has no pixel data");
  m.rows = header.rows;
  m.columns = header.columns;
  m.frames = header.frames;

  if (is_jpeg2000(xfer)) {
    m.j2k = true;
    m.codestreams = frame_fragments(element, xfer, m.frames, what);
    return;
  }
  if (xfer == EXS_RLELossless && header.bits_allocated == 1) {
    const std::size_t bytes = (static_cast<std::size_t>(m.rows) * static_cast<std::size_t>(m.columns) + 7) / 8;
    for (const auto& f : frame_fragments(element, xfer, m.frames, what)) m.bit_frames.push_back(unpack_rle_bits(f, bytes, what));
    m.bits_allocated = m.bits_stored = 1;
    return;
  }

  if (x.isEncapsulated()) {
    check_frame_sizes(element, xfer, m.rows, m.columns, m.frames, header.bits_allocated, what);
    const OFCondition c = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
    if (c.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit))
      throw Error(ErrorCode::invalid_input, what + ": unsupported transfer syntax <" + printable(header.transfer_syntax) +
                                              ", " + transfer_syntax_name(header.transfer_syntax) + ">" +
                                              (c.bad() ? std::string(" (") + c.text() + ")" : std::string()));
    if (ds->findAndGetElement(DCM_PixelData, element).bad() || !element)
      throw Error(ErrorCode::invalid_input, what + ": has no pixel data after decompression");
  }
  // Decoders may change the bit layout (for example to the JPEG sample precision).
  auto get = [&](const DcmTagKey& tag, int fallback) {
    Uint16 v = 0;
    return ds->findAndGetUint16(tag, v).good() ? static_cast<int>(v) : fallback;
  };
  m.bits_allocated = get(DCM_BitsAllocated, header.bits_allocated);
  m.bits_stored = get(DCM_BitsStored, m.bits_allocated);
  m.high_bit = get(DCM_HighBit, m.bits_stored - 1);
  m.pixel_representation = get(DCM_PixelRepresentation, 0);
  if (m.bits_allocated != 1 && m.bits_allocated != 8 && m.bits_allocated != 16 && m.bits_allocated != 32)
    throw Error(ErrorCode::invalid_input, what + ": BitsAllocated " + std::to_string(m.bits_allocated) + " is not supported");
  if (m.bits_stored < 1 || m.bits_stored > m.bits_allocated || m.high_bit < m.bits_stored - 1 || m.high_bit >= m.bits_allocated)
    throw Error(ErrorCode::invalid_input, what + ": inconsistent BitsStored " + std::to_string(m.bits_stored) + " / HighBit " +
                                              std::to_string(m.high_bit) + " for BitsAllocated " +
                                              std::to_string(m.bits_allocated));
  if (m.bits_allocated == 32 && x.getByteOrder() == EBO_BigEndian)
    throw Error(ErrorCode::invalid_input, what + ": 32-bit big-endian pixel data is not supported");

  const std::uint64_t pixels_per_frame = static_cast<std::uint64_t>(m.rows) * static_cast<std::uint64_t>(m.columns);
  const std::uint64_t needed = m.bits_allocated == 1
                                   ? (pixels_per_frame * static_cast<std::uint64_t>(m.frames) + 7) / 8
                                   : pixels_per_frame * static_cast<std::uint64_t>(m.frames) *
                                         static_cast<std::uint64_t>(m.bits_allocated / 8);
  m.pixel_bytes = element->getLength();
  if (m.pixel_bytes < needed)
    throw Error(ErrorCode::invalid_input, what + ": pixel data is truncated (" + std::to_string(m.pixel_bytes) +
                                              " bytes for " + std::to_string(m.frames) + " frames of " +
                                              std::to_string(m.columns) + "x" + std::to_string(m.rows) + " needing " +
                                              std::to_string(needed) + ")");
  if (m.bits_allocated >= 8 && !x.isEncapsulated()) {
    m.native = element;
    m.frame_bytes = static_cast<std::size_t>(pixels_per_frame) * static_cast<std::size_t>(m.bits_allocated / 8);
    return;
  }
  // getUint16Array returns OW data in host byte order (DCMTK swaps big-endian files on access).
  if (element->getVR() == EVR_OW || m.bits_allocated >= 16) {
    Uint16* words = nullptr;
    if (element->getUint16Array(words).bad() || !words) {
      Uint8* bytes = nullptr;
      if (element->getUint8Array(bytes).bad() || !bytes) throw Error(ErrorCode::invalid_input, what + ": cannot read the pixel data");
      m.pixels = bytes;
    } else {
      m.pixels = reinterpret_cast<const std::uint8_t*>(words);
    }
  } else {
    Uint8* bytes = nullptr;
    if (element->getUint8Array(bytes).bad() || !bytes) throw Error(ErrorCode::invalid_input, what + ": cannot read the pixel data");
    m.pixels = bytes;
  }
}

FileDecoder::~FileDecoder() = default;

void FileDecoder::decode(const Frame& f, float* dst) {
  Impl& m = *impl_;
  const std::size_t n = static_cast<std::size_t>(m.rows) * static_cast<std::size_t>(m.columns);
  if (f.index < 0 || f.index >= m.frames)
    throw Error(ErrorCode::invalid_input, m.path + ": frame " + std::to_string(f.index) + " does not exist");
  if (m.j2k) {
    const std::vector<std::int32_t> v =
        decode_j2k(m.codestreams[static_cast<std::size_t>(f.index)], m.rows, m.columns, m.path);
    for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(static_cast<double>(v[i]) * f.slope + f.intercept);
    return;
  }
  const bool is_signed = m.pixel_representation == 1;
  const std::uint8_t* frame = nullptr;  // this frame's native bytes
  thread_local std::vector<std::uint8_t> buffer;
  if (m.native) {
    buffer.resize(m.frame_bytes);
    std::lock_guard<std::mutex> lock(m.read_mutex);
    const OFCondition c = m.native->getPartialValue(buffer.data(), static_cast<Uint32>(m.frame_bytes * static_cast<std::size_t>(f.index)),
                                                    static_cast<Uint32>(m.frame_bytes));
    if (c.bad()) throw Error(ErrorCode::invalid_input, m.path + ": cannot read the pixel data (" + c.text() + ")");
    frame = buffer.data();
  } else if (m.pixels) {
    frame = m.pixels + n * static_cast<std::size_t>(f.index) * static_cast<std::size_t>(std::max(1, m.bits_allocated / 8));
  }
  switch (m.bits_allocated) {
    case 1: {
      // Native frames follow each other bit by bit; RLE frames each start on a byte.
      const bool rle = !m.bit_frames.empty();
      const std::uint8_t* bits = rle ? m.bit_frames[static_cast<std::size_t>(f.index)].data() : m.pixels;
      const std::size_t first_bit = rle ? 0 : n * static_cast<std::size_t>(f.index);
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t bit = first_bit + i;
        const int v = (bits[bit / 8] >> (bit % 8)) & 1;
        dst[i] = static_cast<float>(v * f.slope + f.intercept);
      }
      return;
    }
    case 8:
      convert(frame, dst, n, m.bits_stored, m.high_bit, is_signed, f.slope, f.intercept);
      return;
    case 16:
      convert(reinterpret_cast<const std::uint16_t*>(frame), dst, n, m.bits_stored, m.high_bit, is_signed, f.slope,
              f.intercept);
      return;
    case 32:
      convert(reinterpret_cast<const std::uint32_t*>(frame), dst, n, m.bits_stored, m.high_bit, is_signed, f.slope,
              f.intercept);
      return;
    default: break;
  }
  throw Error(ErrorCode::internal, m.path + ": unhandled BitsAllocated");
}

}  // namespace voxinfer::dicom
