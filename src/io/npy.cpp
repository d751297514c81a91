// .npy reader and writer (the NumPy format spec: magic, version, little-endian header
// length, a Python-literal dict header, then raw data).
#include "voxinfer/io/npy.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string_view>

#include "io/atomic_file.h"

namespace voxinfer {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;
constexpr std::size_t kMaxHeaderLen = 1u << 20;

[[noreturn]] void bad(const std::string& path, const std::string& why) {
  throw Error(ErrorCode::invalid_input, path + ": not a valid .npy file: " + why);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

// Finds the value text that follows 'key': in the header dict.
std::string_view dict_value(const std::string& path, std::string_view header, std::string_view key) {
  const std::string quoted1 = "'" + std::string(key) + "'";
  const std::string quoted2 = "\"" + std::string(key) + "\"";
  auto pos = header.find(quoted1);
  if (pos == std::string_view::npos) pos = header.find(quoted2);
  if (pos == std::string_view::npos) bad(path, "header has no '" + std::string(key) + "' field");
  pos = header.find(':', pos);
  if (pos == std::string_view::npos) bad(path, "header field '" + std::string(key) + "' has no value");
  std::string_view rest = trim(header.substr(pos + 1));
  std::size_t end = 0;
  if (!rest.empty() && rest.front() == '(') {
    end = rest.find(')');
    if (end == std::string_view::npos) bad(path, "unterminated shape tuple");
    return rest.substr(0, end + 1);
  }
  if (!rest.empty() && (rest.front() == '\'' || rest.front() == '"')) {
    end = rest.find(rest.front(), 1);
    if (end == std::string_view::npos) bad(path, "unterminated string in header");
    return rest.substr(0, end + 1);
  }
  end = rest.find_first_of(",}");
  return trim(rest.substr(0, end));
}

struct Descr {
  DType dtype;
  bool swap;
};

Descr parse_descr(const std::string& path, std::string_view v) {
  if (v.size() < 4) bad(path, "bad descr " + std::string(v));
  const std::string d(v.substr(1, v.size() - 2));
  if (d.size() < 3) bad(path, "bad descr '" + d + "'");
  const char order = d[0];
  const std::string code = d.substr(1);
  const bool big = order == '>';
  if (order != '<' && order != '>' && order != '|' && order != '=') bad(path, "bad byte order in descr '" + d + "'");
  DType t;
  if (code == "f4") t = DType::f32;
  else if (code == "f2") t = DType::f16;
  else if (code == "f8") t = DType::f64;
  else if (code == "i8") t = DType::i64;
  else if (code == "i4") t = DType::i32;
  else if (code == "i2") t = DType::i16;
  else if (code == "u1") t = DType::u8;
  else if (code == "b1") t = DType::boolean;
  else
    throw Error(ErrorCode::invalid_input, path + ": .npy dtype '" + d + "' is not supported (f4, f2, f8, i8, i4, i2, u1, b1 are)");
  const bool native_little = std::endian::native == std::endian::little;
  const bool swap = dtype_size(t) > 1 && ((big && native_little) || (order == '<' && !native_little));
  return {t, swap};
}

Shape parse_shape(const std::string& path, std::string_view v) {
  if (v.size() < 2 || v.front() != '(' || v.back() != ')') bad(path, "shape is not a tuple: " + std::string(v));
  std::vector<std::int64_t> dims;
  std::string_view inner = v.substr(1, v.size() - 2);
  while (!inner.empty()) {
    const auto comma = inner.find(',');
    const std::string_view tok = trim(inner.substr(0, comma));
    if (!tok.empty()) {
      std::int64_t x = 0;
      for (char ch : tok) {
        if (ch == 'L') break;  // Python 2 long suffix
        if (ch < '0' || ch > '9') bad(path, "bad dimension '" + std::string(tok) + "' in shape");
        if (x > (std::numeric_limits<std::int64_t>::max() - 9) / 10) bad(path, "dimension overflows in shape");
        x = x * 10 + (ch - '0');
      }
      dims.push_back(x);
    }
    if (comma == std::string_view::npos) break;
    inner.remove_prefix(comma + 1);
  }
  if (dims.size() > static_cast<std::size_t>(Shape::kMaxRank))
    throw Error(ErrorCode::invalid_input, path + ": rank " + std::to_string(dims.size()) + " is above the supported 8");
  return Shape(dims);
}

void byteswap_inplace(void* data, std::int64_t n, std::size_t es) {
  auto* p = static_cast<unsigned char*>(data);
  for (std::int64_t i = 0; i < n; ++i, p += es) std::reverse(p, p + es);
}

}  // namespace

Tensor read_npy(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(ErrorCode::invalid_input, path + ": no such file (expected a .npy file)");
  const auto file_size = static_cast<std::uint64_t>(std::filesystem::file_size(path, ec));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::io, path + ": cannot open for reading");

  char pre[kMagicLen + 2] = {};
  in.read(pre, sizeof pre);
  if (in.gcount() != static_cast<std::streamsize>(sizeof pre) || std::memcmp(pre, kMagic, kMagicLen) != 0)
    bad(path, "bad magic (the file does not start with \\x93NUMPY)");
  const int major = static_cast<unsigned char>(pre[kMagicLen]);
  if (major < 1 || major > 3) bad(path, "unknown format version " + std::to_string(major));
  std::uint32_t header_len = 0;
  unsigned char lenbuf[4] = {};
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  in.read(reinterpret_cast<char*>(lenbuf), static_cast<std::streamsize>(len_bytes));
  if (in.gcount() != static_cast<std::streamsize>(len_bytes)) bad(path, "truncated header");
  for (std::size_t i = 0; i < len_bytes; ++i) header_len |= static_cast<std::uint32_t>(lenbuf[i]) << (8 * i);
  if (header_len > kMaxHeaderLen) bad(path, "header length " + std::to_string(header_len) + " is implausible");
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (in.gcount() != static_cast<std::streamsize>(header_len)) bad(path, "truncated header");

  const Descr descr = parse_descr(path, dict_value(path, header, "descr"));
  const std::string_view fortran = dict_value(path, header, "fortran_order");
  if (fortran != "True" && fortran != "False") bad(path, "fortran_order must be True or False");
  const Shape shape = parse_shape(path, dict_value(path, header, "shape"));

  // Check the claimed size against the file before allocating anything.
  const std::uint64_t data_offset = kMagicLen + 2 + len_bytes + header_len;
  const std::size_t es = dtype_size(descr.dtype);
  std::uint64_t need = es;
  bool overflow = false;
  for (int i = 0; i < shape.rank(); ++i)
    overflow = overflow || __builtin_mul_overflow(need, static_cast<std::uint64_t>(shape[i]), &need);
  if (overflow || data_offset > file_size || need > file_size - data_offset)
    bad(path, "truncated: header declares shape " + shape.str() + " of " + std::string(dtype_name(descr.dtype)) +
                  " but the file holds only " + std::to_string(file_size - std::min(file_size, data_offset)) + " data bytes");

  Shape storage_shape = shape;
  if (fortran == "True") {
    std::vector<std::int64_t> rev(shape.dims().rbegin(), shape.dims().rend());
    storage_shape = Shape(rev);
  }
  Tensor t(storage_shape, descr.dtype);
  const auto nbytes = static_cast<std::streamsize>(need);
  in.read(static_cast<char*>(t.raw()), nbytes);
  if (in.gcount() != nbytes) bad(path, "truncated data");
  if (descr.swap) byteswap_inplace(t.raw(), t.numel(), es);
  if (descr.dtype == DType::boolean) {
    auto* b = static_cast<std::uint8_t*>(t.raw());
    for (std::int64_t i = 0; i < t.numel(); ++i) b[i] = b[i] != 0;
  }
  if (fortran == "True" && shape.rank() > 1) {
    std::vector<int> perm(static_cast<std::size_t>(shape.rank()));
    for (int i = 0; i < shape.rank(); ++i) perm[static_cast<std::size_t>(i)] = shape.rank() - 1 - i;
    return t.permute(perm).clone();
  }
  return t.reshape(shape);
}

void write_npy(const std::string& path, const Tensor& tensor) {
  VOXINFER_CHECK(tensor.layout() == Layout::plain, invalid_input, "write_npy: reorder blocked tensors to plain first");
  const Tensor t = tensor.contiguous();
  std::string descr;
  switch (t.dtype()) {
    case DType::f32: descr = "<f4"; break;
    case DType::f16: descr = "<f2"; break;
    case DType::f64: descr = "<f8"; break;
    case DType::i64: descr = "<i8"; break;
    case DType::i32: descr = "<i4"; break;
    case DType::i16: descr = "<i2"; break;
    case DType::u8: descr = "|u1"; break;
    case DType::boolean: descr = "|b1"; break;
  }
  std::string shape = "(";
  for (int i = 0; i < t.rank(); ++i) shape += std::to_string(t.shape()[i]) + (t.rank() == 1 ? "," : (i + 1 < t.rank() ? ", " : ""));
  shape += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so that the data starts on a 64-byte boundary; the header ends in '\n'.
  std::size_t prefix = kMagicLen + 2 + 2;
  int major = 1;
  if (prefix + header.size() + 1 > 65535) {
    major = 2;
    prefix = kMagicLen + 2 + 4;
  }
  const std::size_t total = round_up(static_cast<std::int64_t>(prefix + header.size() + 1), 64);
  header.append(total - prefix - header.size() - 1, ' ');
  header += '\n';

  AtomicFile out(path);
  std::string pre(kMagic, kMagicLen);
  pre += static_cast<char>(major);
  pre += '\0';
  const auto hl = static_cast<std::uint32_t>(header.size());
  for (std::size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) pre += static_cast<char>((hl >> (8 * i)) & 0xff);
  out.write(pre.data(), pre.size());
  out.write(header.data(), header.size());
  if constexpr (std::endian::native == std::endian::little) {
    out.write(t.raw(), t.nbytes());
  } else {
    std::vector<unsigned char> buf(static_cast<const unsigned char*>(t.raw()),
                                   static_cast<const unsigned char*>(t.raw()) + t.nbytes());
    byteswap_inplace(buf.data(), t.numel(), dtype_size(t.dtype()));
    out.write(buf.data(), buf.size());
  }
  out.commit();
}

}  // namespace voxinfer
