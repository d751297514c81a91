// A cheap structural pre-scan of a DICOM file before DCMTK parses it. DCMTK reads
// sequences recursively, so a file of a few hundred kilobytes nesting sequences
// thousands deep overflows the stack; this walk reads element headers only (values are
// skipped with a seek), keeps its own stack of open containers and refuses a file whose
// sequences nest deeper than any real object does.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "io/dicom_internal.h"
#include "voxinfer/core/error.h"

namespace voxinfer::dicom {
namespace {

constexpr std::uint32_t kUndefined = 0xFFFFFFFFu;

struct Reader {
  std::FILE* f;
  std::uint64_t pos = 0;
  bool read(void* dst, std::size_t n) {
    if (std::fread(dst, 1, n, f) != n) return false;
    pos += n;
    return true;
  }
  bool skip(std::uint64_t n) {
    if (n > static_cast<std::uint64_t>(INT64_MAX) - pos) return false;
    if (::fseeko(f, static_cast<off_t>(pos + n), SEEK_SET) != 0) return false;
    pos += n;
    return true;
  }
};

std::uint16_t u16(const unsigned char* p, bool big) {
  return big ? static_cast<std::uint16_t>((p[0] << 8) | p[1]) : static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
std::uint32_t u32(const unsigned char* p, bool big) {
  return big ? (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3]
             : std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8) | (std::uint32_t{p[2]} << 16) |
                   (std::uint32_t{p[3]} << 24);
}

// VRs whose explicit encoding has two reserved bytes and a 32-bit length.
bool long_vr(const char* vr) {
  static const char* const kLong[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
  for (const char* v : kLong)
    if (std::memcmp(v, vr, 2) == 0) return true;
  return !(vr[0] >= 'A' && vr[0] <= 'Z' && vr[1] >= 'A' && vr[1] <= 'Z');  // unknown: read as UN
}

// One open sequence or item: where it ends (kNoEnd: at its delimiter) and how its
// content is encoded (an undefined-length UN holds implicit little endian).
struct Open {
  std::uint64_t end;
  bool explicit_vr, big_endian, is_sequence;
  bool fragments;  // encapsulated pixel data: its items hold bytes, not elements
};
constexpr std::uint64_t kNoEnd = ~std::uint64_t{0};

}  // namespace

std::string structure_problem(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) return {};  // DCMTK reports unreadable files itself
  Reader r{file.get()};
  unsigned char buf[8];
  bool explicit_vr = true, big_endian = false;
  char magic[132];
  if (std::fread(magic, 1, sizeof magic, r.f) == sizeof magic && std::memcmp(magic + 128, "DICM", 4) == 0) {
    r.pos = sizeof magic;
    // File meta group: explicit VR little endian; it names the dataset's transfer syntax.
    std::string syntax;
    for (;;) {
      const std::uint64_t at = r.pos;
      if (!r.read(buf, 4)) return {};
      if (u16(buf, false) != 0x0002) {
        if (::fseeko(r.f, static_cast<off_t>(at), SEEK_SET) != 0) return {};
        r.pos = at;
        break;
      }
      const std::uint16_t element = u16(buf + 2, false);
      char vr[2];
      if (!r.read(vr, 2)) return {};
      std::uint32_t len = 0;
      if (long_vr(vr)) {
        if (!r.read(buf, 6)) return {};
        len = u32(buf + 2, false);
      } else {
        if (!r.read(buf, 2)) return {};
        len = u16(buf, false);
      }
      if (len == kUndefined) return {};
      if (element == 0x0010 && len <= 64) {
        syntax.resize(len);
        if (!r.read(syntax.data(), len)) return {};
      } else if (!r.skip(len)) {
        return {};
      }
    }
    while (!syntax.empty() && (syntax.back() == '\0' || syntax.back() == ' ')) syntax.pop_back();
    if (syntax == "1.2.840.10008.1.2") explicit_vr = false;
    if (syntax == "1.2.840.10008.1.2.2") big_endian = true;
    // Deflated datasets are inflated by DCMTK; nesting cannot be seen without inflating.
    if (syntax == "1.2.840.10008.1.2.1.99") return {};
  } else {
    // No preamble: DCMTK guesses the encoding from the first element as well.
    if (::fseeko(r.f, 0, SEEK_SET) != 0) return {};
    r.pos = 0;
    unsigned char first[6];
    if (std::fread(first, 1, 6, r.f) != 6) return {};
    explicit_vr = first[4] >= 'A' && first[4] <= 'Z' && first[5] >= 'A' && first[5] <= 'Z';
    if (::fseeko(r.f, 0, SEEK_SET) != 0) return {};
  }

  std::vector<Open> open;
  std::size_t sequences = 0;  // sequences among `open`
  auto close_finished = [&] {
    while (!open.empty() && open.back().end != kNoEnd && r.pos >= open.back().end) {
      sequences -= open.back().is_sequence ? 1 : 0;
      open.pop_back();
    }
  };
  for (;;) {
    close_finished();
    const bool ex = open.empty() ? explicit_vr : open.back().explicit_vr;
    const bool big = open.empty() ? big_endian : open.back().big_endian;
    if (!r.read(buf, 4)) return {};
    const std::uint16_t group = u16(buf, big), element = u16(buf + 2, big);
    std::uint32_t len = 0;
    if (group == 0xFFFE) {
      // Items and delimiters: always a 32-bit length, never a VR.
      if (!r.read(buf, 4)) return {};
      len = u32(buf, big);
      if (element == 0xE000) {
        if (!open.empty() && open.back().fragments) {
          if (len == kUndefined || !r.skip(len)) return {};
          continue;
        }
        open.push_back({len == kUndefined ? kNoEnd : r.pos + len, ex, big, false, false});
      } else if (!open.empty()) {
        // Item delimiter closes the item; sequence delimiter closes the sequence (and a
        // dangling item, if any).
        if (element == 0xE0DD && !open.back().is_sequence) open.pop_back();
        if (!open.empty()) {
          sequences -= open.back().is_sequence ? 1 : 0;
          open.pop_back();
        }
      }
      continue;
    }
    bool sequence = false, implicit_content = false, bytes = group == 0x7FE0 && element == 0x0010;
    if (ex) {
      char vr[2];
      if (!r.read(vr, 2)) return {};
      if (long_vr(vr)) {
        if (!r.read(buf, 6)) return {};
        len = u32(buf + 2, big);
      } else {
        if (!r.read(buf, 2)) return {};
        len = u16(buf, big);
      }
      sequence = std::memcmp(vr, "SQ", 2) == 0;
      implicit_content = std::memcmp(vr, "UN", 2) == 0 && len == kUndefined;
      bytes = bytes || std::memcmp(vr, "OB", 2) == 0 || std::memcmp(vr, "OW", 2) == 0;
    } else {
      if (!r.read(buf, 4)) return {};
      len = u32(buf, big);
      sequence = DcmTag(group, element).getEVR() == EVR_SQ;
    }
    if (len == kUndefined || sequence) {
      // Sequences, encapsulated pixel data and undefined-length UN all hold items.
      const bool content_explicit = implicit_content ? false : ex;
      const bool content_big = implicit_content ? false : big;
      open.push_back(
          {len == kUndefined ? kNoEnd : r.pos + len, content_explicit, content_big, true, bytes && !sequence});
      if (++sequences > kMaxSequenceDepth)
        return "sequences nest more than " + std::to_string(kMaxSequenceDepth) +
               " deep (a corrupt or hostile file; no real DICOM object does)";
      continue;
    }
    if (!r.skip(len)) return {};
  }
}

void structure_check(const std::string& path) {
  const std::string problem = structure_problem(path);
  if (!problem.empty()) throw Error(ErrorCode::invalid_input, path + ": " + problem);
}

std::string printable(const std::string& s) {
  std::string r = s;
  for (char& c : r)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = '?';
  return r;
}

}  // namespace voxinfer::dicom
