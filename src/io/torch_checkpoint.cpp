// PyTorch zip checkpoints: libzip opens the archive; a small pickle interpreter turns data.pkl
// into values. The interpreter builds objects in a flat arena (indices, no recursion, no
// reference cycles to leak) and only at the end copies the reachable graph into a PyValue tree,
// within fixed limits on depth and size, so a hostile file cannot crash, hang or exhaust memory.
#include "voxinfer/io/torch_checkpoint.h"

#include <zip.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <unordered_map>

namespace voxinfer {
namespace {

// Limits far above any real checkpoint and far below what would hurt the machine.
constexpr std::uint64_t kMaxPickleBytes = 64ull << 20;
constexpr std::size_t kMaxStack = 1u << 20;
constexpr std::size_t kMaxMarks = 1000;
constexpr int kMaxNesting = 1000;
constexpr std::size_t kMaxMemo = 1u << 22;
constexpr std::size_t kMaxObjects = 1u << 23;
constexpr std::size_t kMaxValues = 1u << 21;     // nodes of the resulting PyValue tree
constexpr int kMaxCallDepth = 8;                 // _rebuild_from_type_v2 wrapping another rebuild
constexpr std::int64_t kTensorSlack = 1 << 24;   // elements tensors may hold beyond their storages
constexpr std::uint64_t kReadChunk = 16u << 20;  // compressed entries are read (and grown) in chunks
constexpr std::uint64_t kMaxSmallEntry = 64;     // byteorder

const char* const kLegacyHint =
    "not a PyTorch zip checkpoint (legacy format is not supported; re-save it with torch.save in torch >= 1.6)";

[[noreturn]] void bad(const std::string& name, const std::string& what) {
  throw Error(ErrorCode::invalid_model, name + ": " + what);
}

std::string quote_text(std::string_view s) {
  std::string out = "'";
  for (char c : s.substr(0, 200)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      static const char* const kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  if (s.size() > 200) out += "...";
  return out + "'";
}

std::string hex_byte(unsigned v) {
  static const char* const kHex = "0123456789abcdef";
  return std::string("0x") + kHex[(v >> 4) & 15] + kHex[v & 15];
}

std::string shape_text(const std::vector<std::int64_t>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// ---------------------------------------------------------------------------------------------
// The archive.

struct ZipCloser {
  void operator()(zip_t* z) const noexcept { zip_discard(z); }
};
struct ZipFileCloser {
  void operator()(zip_file_t* f) const noexcept { zip_fclose(f); }
};
struct ZipErrorGuard {
  zip_error_t error;
  ZipErrorGuard() { zip_error_init(&error); }
  ~ZipErrorGuard() { zip_error_fini(&error); }
  ZipErrorGuard(const ZipErrorGuard&) = delete;
  ZipErrorGuard& operator=(const ZipErrorGuard&) = delete;
};

class Archive {
 public:
  // Opens a zip held in memory (the bytes must outlive the Archive) or a file.
  static Archive open_memory(std::span<const std::byte> bytes, const std::string& name) {
    ZipErrorGuard err;
    zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &err.error);
    if (!src) bad(name, std::string("cannot read the archive (libzip: ") + zip_error_strerror(&err.error) + ")");
    zip_t* z = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &err.error);
    if (!z) {
      zip_source_free(src);
      open_failed(name, zip_error_code_zip(&err.error), zip_error_strerror(&err.error), first_byte(bytes));
    }
    return Archive(z, name, bytes.size());
  }

  static Archive open_file(const std::filesystem::path& file, const std::string& name) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(file, ec);
    if (ec) throw Error(ErrorCode::io, name + ": cannot read the file size (" + ec.message() + ")");
    int code = 0;
    zip_t* z = zip_open(file.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
    if (!z) {
      ZipErrorGuard err;
      zip_error_init_with_code(&err.error, code);
      int first = -1;
      std::ifstream in(file, std::ios::binary);
      char c = 0;
      if (in.get(c)) first = static_cast<unsigned char>(c);
      open_failed(name, code, zip_error_strerror(&err.error), first);
    }
    return Archive(z, name, size);
  }

  const std::string& prefix() const noexcept { return prefix_; }

  std::optional<zip_uint64_t> locate(const std::string& entry) const {
    if (entry.find('\0') != std::string::npos) return std::nullopt;
    const zip_int64_t i = zip_name_locate(zip_.get(), entry.c_str(), ZIP_FL_ENC_RAW);
    if (i < 0) return std::nullopt;
    return static_cast<zip_uint64_t>(i);
  }

  std::uint64_t size_of(zip_uint64_t index, const std::string& entry) const {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(zip_.get(), index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
      bad(name_, "cannot read the size of archive entry " + quote_text(entry));
    return st.size;
  }

  // Reads an entry whose size was checked by the caller. Memory grows with the data really
  // decompressed, never with the size an entry merely claims.
  std::vector<std::byte> read(zip_uint64_t index, const std::string& entry, std::uint64_t size) const {
    std::unique_ptr<zip_file_t, ZipFileCloser> f(zip_fopen_index(zip_.get(), index, 0));
    if (!f)
      bad(name_, "cannot open archive entry " + quote_text(entry) + " (libzip: " + zip_strerror(zip_.get()) + ")");
    std::vector<std::byte> out;
    out.reserve(static_cast<std::size_t>(std::min(size, archive_bytes_)));
    while (out.size() < size) {
      const std::uint64_t done = out.size();
      const std::uint64_t chunk = std::min<std::uint64_t>(kReadChunk, size - done);
      out.resize(static_cast<std::size_t>(done + chunk));
      const zip_int64_t n = zip_fread(f.get(), out.data() + done, chunk);
      if (n < 0)
        bad(name_, "cannot read archive entry " + quote_text(entry) + " (libzip: " + zip_file_strerror(f.get()) + ")");
      out.resize(static_cast<std::size_t>(done + static_cast<std::uint64_t>(n)));
      if (n == 0) break;
    }
    if (out.size() != size)
      bad(name_, "archive entry " + quote_text(entry) + " is truncated (" + std::to_string(out.size()) + " of " +
                     std::to_string(size) + " bytes)");
    // One more read lets libzip reach the end of the entry and check its CRC.
    std::byte extra{};
    if (zip_fread(f.get(), &extra, 1) != 0)
      bad(name_, "archive entry " + quote_text(entry) + " is damaged (libzip: " + zip_file_strerror(f.get()) + ")");
    return out;
  }

 private:
  Archive(zip_t* z, std::string name, std::uint64_t archive_bytes)
      : zip_(z), name_(std::move(name)), archive_bytes_(archive_bytes) {
    // torch's reader takes the folder of the first entry as the archive's name.
    const zip_int64_t n = zip_get_num_entries(zip_.get(), 0);
    if (n <= 0) bad(name_, "not a PyTorch zip checkpoint (the archive is empty)");
    const char* first = zip_get_name(zip_.get(), 0, ZIP_FL_ENC_RAW);
    const std::string_view first_name = first ? first : "";
    const auto slash = first_name.find('/');
    if (slash == std::string_view::npos || slash == 0)
      bad(name_, "not a PyTorch zip checkpoint (its entries are not inside one top folder)");
    prefix_ = std::string(first_name.substr(0, slash));
  }

  static int first_byte(std::span<const std::byte> bytes) { return bytes.empty() ? -1 : static_cast<int>(bytes[0]); }

  [[noreturn]] static void open_failed(const std::string& name, int code, const char* what, int first) {
    if (code == ZIP_ER_NOZIP) {
      // Files written by torch.save before 1.6 (or with _use_new_zipfile_serialization=False)
      // are a bare pickle, which starts with the PROTO opcode 0x80.
      if (first == 0x80) bad(name, kLegacyHint);
      bad(name, "not a PyTorch zip checkpoint (the file is not a zip archive)");
    }
    if (code == ZIP_ER_OPEN || code == ZIP_ER_READ || code == ZIP_ER_MEMORY)
      throw Error(ErrorCode::io, name + ": cannot read the file (libzip: " + what + ")");
    bad(name, std::string("not a PyTorch zip checkpoint (damaged zip archive; libzip: ") + what + ")");
  }

  std::unique_ptr<zip_t, ZipCloser> zip_;
  std::string name_;
  std::string prefix_;
  std::uint64_t archive_bytes_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Storages and element conversion.

enum class StorageType : std::uint8_t { f32, f16, bf16, f64, i64, i32, i16, i8, u8, boolean };

struct StorageInfo {
  std::string_view cls;
  StorageType type;
  std::uint64_t itemsize;
};

constexpr StorageInfo kStorages[] = {
    {"torch.FloatStorage", StorageType::f32, 4},     {"torch.HalfStorage", StorageType::f16, 2},
    {"torch.BFloat16Storage", StorageType::bf16, 2}, {"torch.DoubleStorage", StorageType::f64, 8},
    {"torch.LongStorage", StorageType::i64, 8},      {"torch.IntStorage", StorageType::i32, 4},
    {"torch.ShortStorage", StorageType::i16, 2},     {"torch.CharStorage", StorageType::i8, 1},
    {"torch.ByteStorage", StorageType::u8, 1},       {"torch.BoolStorage", StorageType::boolean, 1},
};

const StorageInfo* storage_info(std::string_view cls) {
  for (const auto& s : kStorages)
    if (s.cls == cls) return &s;
  return nullptr;
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits = 0;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while (!(mant & 0x400u));
    bits = sign | (static_cast<std::uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

template <typename T>
T load_le(const std::byte* p) {
  using U = std::conditional_t<sizeof(T) == 1, std::uint8_t,
                               std::conditional_t<sizeof(T) == 2, std::uint16_t,
                                                  std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>>>;
  U u = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) u |= static_cast<U>(static_cast<U>(p[i]) << (8 * i));
  return std::bit_cast<T>(u);
}

struct Storage {
  std::string key;
  StorageType type;
  std::uint64_t itemsize;
  std::int64_t numel;
  std::shared_ptr<const std::vector<std::byte>> bytes;
};

// Copies the elements a (size, stride, offset) view reaches into a contiguous tensor; the
// caller has checked that every reached element lies inside the storage.
template <typename Out, typename Read>
void gather(const Storage& s, std::int64_t offset, const std::vector<std::int64_t>& size,
            const std::vector<std::int64_t>& stride, Out* dst, Read read) {
  const std::byte* src = s.bytes->data();
  const auto es = static_cast<std::int64_t>(s.itemsize);
  const int rank = static_cast<int>(size.size());
  if (rank == 0) {
    dst[0] = read(src + offset * es);
    return;
  }
  for (int i = 0; i < rank; ++i)
    if (size[static_cast<std::size_t>(i)] == 0) return;
  const std::int64_t inner = size.back();
  const std::int64_t inner_stride = stride.back();
  std::array<std::int64_t, Shape::kMaxRank> idx{};
  for (;;) {
    std::int64_t off = offset;
    for (int a = 0; a + 1 < rank; ++a) off += idx[static_cast<std::size_t>(a)] * stride[static_cast<std::size_t>(a)];
    for (std::int64_t j = 0; j < inner; ++j) *dst++ = read(src + (off + j * inner_stride) * es);
    int a = rank - 2;
    for (; a >= 0; --a) {
      if (++idx[static_cast<std::size_t>(a)] < size[static_cast<std::size_t>(a)]) break;
      idx[static_cast<std::size_t>(a)] = 0;
    }
    if (a < 0) return;
  }
}

// True when (size, stride) is the C-order layout, so the elements are one run.
bool dense(const std::vector<std::int64_t>& size, const std::vector<std::int64_t>& stride) {
  std::int64_t expect = 1;
  for (std::size_t i = size.size(); i-- > 0;) {
    if (size[i] != 1 && stride[i] != expect) return false;
    expect *= size[i];
  }
  return true;
}

Tensor convert_storage(const Storage& s, std::int64_t offset, const std::vector<std::int64_t>& size,
                       const std::vector<std::int64_t>& stride) {
  const Shape shape(size);
  switch (s.type) {
    case StorageType::f32:
    case StorageType::f16:
    case StorageType::bf16:
    case StorageType::f64: {
      Tensor t(shape, DType::f32);
      float* dst = t.data<float>();
      if (s.type == StorageType::f32 && std::endian::native == std::endian::little && dense(size, stride) &&
          t.numel() > 0)
        std::memcpy(dst, s.bytes->data() + offset * 4, t.nbytes());
      else if (s.type == StorageType::f32)
        gather(s, offset, size, stride, dst, [](const std::byte* p) { return load_le<float>(p); });
      else if (s.type == StorageType::f16)
        gather(s, offset, size, stride, dst,
               [](const std::byte* p) { return half_to_float(load_le<std::uint16_t>(p)); });
      else if (s.type == StorageType::bf16)
        gather(s, offset, size, stride, dst, [](const std::byte* p) {
          return std::bit_cast<float>(static_cast<std::uint32_t>(load_le<std::uint16_t>(p)) << 16);
        });
      else
        gather(s, offset, size, stride, dst, [](const std::byte* p) { return static_cast<float>(load_le<double>(p)); });
      return t;
    }
    case StorageType::boolean: {
      Tensor t(shape, DType::boolean);
      gather(s, offset, size, stride, t.data<bool>(), [](const std::byte* p) { return *p != std::byte{0}; });
      return t;
    }
    default: {
      Tensor t(shape, DType::i64);
      std::int64_t* dst = t.data<std::int64_t>();
      switch (s.type) {
        case StorageType::i64:
          gather(s, offset, size, stride, dst, [](const std::byte* p) { return load_le<std::int64_t>(p); });
          break;
        case StorageType::i32:
          gather(s, offset, size, stride, dst,
                 [](const std::byte* p) { return std::int64_t{load_le<std::int32_t>(p)}; });
          break;
        case StorageType::i16:
          gather(s, offset, size, stride, dst,
                 [](const std::byte* p) { return std::int64_t{load_le<std::int16_t>(p)}; });
          break;
        case StorageType::i8:
          gather(s, offset, size, stride, dst,
                 [](const std::byte* p) { return std::int64_t{load_le<std::int8_t>(p)}; });
          break;
        default:
          gather(s, offset, size, stride, dst,
                 [](const std::byte* p) { return std::int64_t{load_le<std::uint8_t>(p)}; });
          break;
      }
      return t;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Text helpers for the protocol-0 opcodes and latin-1 byte strings.

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// UTF-8 text to latin-1 bytes (what Python's str.encode('latin1') does); nullopt when the
// text is not valid UTF-8 or holds a code point above 255.
std::optional<std::string> utf8_to_latin1(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else if ((c & 0xe0) == 0xc0 && i + 1 < s.size() && (static_cast<unsigned char>(s[i + 1]) & 0xc0) == 0x80) {
      const unsigned cp = ((c & 0x1fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3fu);
      if (cp > 0xff || cp < 0x80) return std::nullopt;
      out += static_cast<char>(cp);
      i += 2;
    } else {
      return std::nullopt;
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// ---------------------------------------------------------------------------------------------
// The unpickler.

enum class ObjKind : std::uint8_t {
  none,
  boolean,
  integer,
  real,
  string,
  bytes,
  list,
  tuple,
  dict,
  set,
  tensor,
  opaque,       // payload: strings_ index of "module.name"
  global,       // a class or function named by GLOBAL / STACK_GLOBAL (payload: its name)
  storage,      // payload: storages_ index
  numpy_dtype,  // payload: dtypes_ index
};

struct Obj {
  ObjKind kind = ObjKind::none;
  bool boolean = false;
  std::int64_t integer = 0;
  double real = 0;
  std::uint32_t ref = 0;
};

struct NumpyDtype {
  std::string code;  // e.g. "f8", "<f4"
  char order = '=';  // from BUILD state
};

namespace op {
constexpr std::uint8_t MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', FLOAT = 'F', INT = 'I',
                       BININT = 'J', BININT1 = 'K', LONG = 'L', BININT2 = 'M', NONE = 'N', PERSID = 'P',
                       BINPERSID = 'Q', REDUCE = 'R', STRING = 'S', BINSTRING = 'T', SHORT_BINSTRING = 'U',
                       UNICODE = 'V', BINUNICODE = 'X', APPEND = 'a', BUILD = 'b', GLOBAL = 'c', DICT = 'd',
                       EMPTY_DICT = '}', APPENDS = 'e', GET = 'g', BINGET = 'h', LONG_BINGET = 'j', LIST = 'l',
                       EMPTY_LIST = ']', PUT = 'p', BINPUT = 'q', LONG_BINPUT = 'r', SETITEM = 's', TUPLE = 't',
                       EMPTY_TUPLE = ')', SETITEMS = 'u', BINFLOAT = 'G', PROTO = 0x80, NEWOBJ = 0x81, TUPLE1 = 0x85,
                       TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a, LONG4 = 0x8b,
                       BINBYTES = 'B', SHORT_BINBYTES = 'C', SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d,
                       BINBYTES8 = 0x8e, EMPTY_SET = 0x8f, ADDITEMS = 0x90, FROZENSET = 0x91, NEWOBJ_EX = 0x92,
                       STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95, BYTEARRAY8 = 0x96;
}  // namespace op

class Unpickler {
 public:
  Unpickler(std::span<const std::byte> data, std::string name, const Archive& archive)
      : data_(data), name_(std::move(name)), archive_(archive) {
    objects_.reserve(1024);
  }

  PyValue load() {
    const std::uint32_t root = run();
    return to_value(root);
  }

 private:
  // --- errors -----------------------------------------------------------------------------
  [[noreturn]] void fail(const std::string& what) const {
    bad(name_, "data.pkl offset " + std::to_string(op_offset_) + ": " + what);
  }

  // --- reading ----------------------------------------------------------------------------
  std::size_t remaining() const noexcept { return data_.size() - pos_; }
  void need(std::uint64_t n, const char* what) const {
    if (n > remaining())
      fail(std::string("truncated pickle: ") + what + " needs " + std::to_string(n) + " bytes, " +
           std::to_string(remaining()) + " left");
  }
  std::uint8_t u8(const char* what) {
    need(1, what);
    return static_cast<std::uint8_t>(data_[pos_++]);
  }
  std::uint64_t uint_le(std::size_t n, const char* what) {
    need(n, what);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(data_[pos_ + i]) << (8 * i);
    pos_ += n;
    return v;
  }
  std::string_view bytes(std::uint64_t n, const char* what) {
    need(n, what);
    const std::string_view s(reinterpret_cast<const char*>(data_.data() + pos_), static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return s;
  }
  std::string_view line(const char* what) {
    const auto* begin = reinterpret_cast<const char*>(data_.data() + pos_);
    const auto* nl = static_cast<const char*>(std::memchr(begin, '\n', remaining()));
    if (!nl) fail(std::string("truncated pickle: ") + what + " has no end of line");
    const std::string_view s(begin, static_cast<std::size_t>(nl - begin));
    pos_ += s.size() + 1;
    return s;
  }

  // --- arena ------------------------------------------------------------------------------
  std::uint32_t add(const Obj& o) {
    if (objects_.size() >= kMaxObjects)
      fail("the pickle creates more than " + std::to_string(kMaxObjects) + " objects");
    objects_.push_back(o);
    return static_cast<std::uint32_t>(objects_.size() - 1);
  }
  std::uint32_t add_text(ObjKind kind, std::string text) {
    strings_.push_back(std::move(text));
    Obj o;
    o.kind = kind;
    o.ref = static_cast<std::uint32_t>(strings_.size() - 1);
    return add(o);
  }
  std::uint32_t add_int(std::int64_t v) {
    Obj o;
    o.kind = ObjKind::integer;
    o.integer = v;
    return add(o);
  }
  std::uint32_t add_real(double v) {
    Obj o;
    o.kind = ObjKind::real;
    o.real = v;
    return add(o);
  }
  std::uint32_t add_bool(bool v) {
    Obj o;
    o.kind = ObjKind::boolean;
    o.boolean = v;
    return add(o);
  }
  std::uint32_t add_none() { return add(Obj{}); }
  std::uint32_t add_seq(ObjKind kind, std::vector<std::uint32_t> items) {
    seqs_.push_back(std::move(items));
    Obj o;
    o.kind = kind;
    o.ref = static_cast<std::uint32_t>(seqs_.size() - 1);
    return add(o);
  }
  std::uint32_t add_dict() {
    dicts_.emplace_back();
    Obj o;
    o.kind = ObjKind::dict;
    o.ref = static_cast<std::uint32_t>(dicts_.size() - 1);
    return add(o);
  }
  std::uint32_t add_opaque(const std::string& name) { return add_text(ObjKind::opaque, name); }

  const Obj& obj(std::uint32_t i) const { return objects_[i]; }
  const std::string& text_of(std::uint32_t i) const { return strings_[objects_[i].ref]; }
  bool is_text(std::uint32_t i) const {
    return objects_[i].kind == ObjKind::string || objects_[i].kind == ObjKind::bytes;
  }
  bool is_seq(std::uint32_t i) const {
    const ObjKind k = objects_[i].kind;
    return k == ObjKind::list || k == ObjKind::tuple || k == ObjKind::set;
  }
  const std::vector<std::uint32_t>& seq_of(std::uint32_t i) const { return seqs_[objects_[i].ref]; }

  std::string describe(std::uint32_t i) const {
    switch (obj(i).kind) {
      case ObjKind::none:
        return "None";
      case ObjKind::boolean:
        return "a bool";
      case ObjKind::integer:
        return "an int";
      case ObjKind::real:
        return "a float";
      case ObjKind::string:
        return "a string";
      case ObjKind::bytes:
        return "bytes";
      case ObjKind::list:
        return "a list";
      case ObjKind::tuple:
        return "a tuple";
      case ObjKind::dict:
        return "a dict";
      case ObjKind::set:
        return "a set";
      case ObjKind::tensor:
        return "a tensor";
      case ObjKind::opaque:
        return "an opaque " + text_of(i);
      case ObjKind::global:
        return "the global " + text_of(i);
      case ObjKind::storage:
        return "a storage";
      case ObjKind::numpy_dtype:
        return "a numpy dtype";
    }
    return "?";
  }

  // --- stack ------------------------------------------------------------------------------
  std::size_t mark_base() const noexcept { return marks_.empty() ? 0 : marks_.back(); }
  void push(std::uint32_t i) {
    if (stack_.size() >= kMaxStack) fail("the pickle stack grows beyond " + std::to_string(kMaxStack) + " entries");
    stack_.push_back(i);
  }
  std::uint32_t pop(const char* opname) {
    if (stack_.size() <= mark_base()) fail(std::string("stack underflow in ") + opname);
    const std::uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  std::uint32_t top(const char* opname) const {
    if (stack_.size() <= mark_base()) fail(std::string("stack underflow in ") + opname);
    return stack_.back();
  }
  std::vector<std::uint32_t> pop_mark(const char* opname) {
    if (marks_.empty()) fail(std::string(opname) + " without a MARK");
    const std::size_t base = marks_.back();
    marks_.pop_back();
    std::vector<std::uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(base), stack_.end());
    stack_.resize(base);
    return items;
  }

  // --- memo -------------------------------------------------------------------------------
  void memo_put(std::uint64_t key, const char* opname) {
    const std::uint32_t v = top(opname);
    if (key > std::numeric_limits<std::uint32_t>::max()) fail(std::string(opname) + " memo key is out of range");
    if (memo_.size() >= kMaxMemo && !memo_.count(static_cast<std::uint32_t>(key)))
      fail("the memo grows beyond " + std::to_string(kMaxMemo) + " entries");
    memo_[static_cast<std::uint32_t>(key)] = v;
  }
  void memo_get(std::uint64_t key, const char* opname) {
    const auto it =
        key > std::numeric_limits<std::uint32_t>::max() ? memo_.end() : memo_.find(static_cast<std::uint32_t>(key));
    if (it == memo_.end()) fail(std::string(opname) + " of memo key " + std::to_string(key) + ", which is not defined");
    push(it->second);
  }

  // --- numbers ----------------------------------------------------------------------------
  std::uint64_t decimal_key(std::string_view s, const char* opname) {
    std::uint64_t v = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size())
      fail(std::string(opname) + " has a bad memo key " + quote_text(s));
    return v;
  }

  // A decimal integer line (INT, LONG); integers beyond 64 bits become an opaque builtins.int.
  std::uint32_t text_int(std::string_view s, const char* opname) {
    if (!s.empty() && s.back() == 'L') s.remove_suffix(1);
    if (!s.empty() && s.front() == '+') s.remove_prefix(1);
    std::int64_t v = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ptr == s.data() + s.size() && r.ec == std::errc::result_out_of_range && !s.empty())
      return add_opaque("builtins.int");
    if (r.ec != std::errc() || r.ptr != s.data() + s.size() || s.empty())
      fail(std::string(opname) + " has a bad integer " + quote_text(s));
    return add_int(v);
  }

  // LONG1 / LONG4: little-endian two's complement of any length.
  std::uint32_t binary_long(std::string_view b) {
    if (b.empty()) return add_int(0);
    const bool negative = static_cast<unsigned char>(b.back()) & 0x80;
    if (b.size() > 8) {
      const char fill = negative ? static_cast<char>(0xff) : 0;
      const bool fits = std::all_of(b.begin() + 8, b.end(), [fill](char c) { return c == fill; }) &&
                        ((static_cast<unsigned char>(b[7]) & 0x80) != 0) == negative;
      if (!fits) return add_opaque("builtins.int");
      b = b.substr(0, 8);
    }
    std::uint64_t u = negative ? ~std::uint64_t{0} : 0;
    for (std::size_t i = 0; i < b.size(); ++i) {
      u &= ~(std::uint64_t{0xff} << (8 * i));
      u |= static_cast<std::uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
    }
    return add_int(static_cast<std::int64_t>(u));
  }

  std::uint32_t text_float(std::string_view s) {
    std::string_view t = s;
    if (!t.empty() && t.front() == '+') t.remove_prefix(1);
    double v = 0;
    const auto r = std::from_chars(t.data(), t.data() + t.size(), v);
    if (r.ec != std::errc() || r.ptr != t.data() + t.size() || t.empty())
      fail("FLOAT has a bad number " + quote_text(s));
    return add_real(v);
  }

  // STRING: a Python repr of a byte string, quotes included.
  std::string escaped_string(std::string_view s) {
    if (s.size() < 2 || (s.front() != '\'' && s.front() != '"') || s.back() != s.front())
      fail("STRING argument is not a quoted string");
    s = s.substr(1, s.size() - 2);
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\\' || i + 1 == s.size()) {
        out += s[i];
        continue;
      }
      const char c = s[++i];
      static constexpr std::string_view kFrom = "ntrabfv\\'\"";
      static constexpr std::string_view kTo = "\n\t\r\a\b\f\v\\'\"";
      if (const auto k = kFrom.find(c); k != std::string_view::npos) {
        out += kTo[k];
      } else if (c == 'x') {
        const int hi = i + 1 < s.size() ? hex_value(s[i + 1]) : -1;
        const int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) fail("STRING has a bad \\x escape");
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
      } else if (c >= '0' && c <= '7') {
        int v = c - '0';
        for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k)
          v = v * 8 + (s[++i] - '0');
        out += static_cast<char>(v & 0xff);
      } else {  // Python keeps unknown escapes as they are
        out += '\\';
        out += c;
      }
    }
    return out;
  }

  // UNICODE: raw-unicode-escape (\uXXXX, \UXXXXXXXX; other bytes are latin-1 code points).
  std::string raw_unicode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
        const std::size_t n = s[i + 1] == 'u' ? 4 : 8;
        if (i + 2 + n > s.size()) fail("UNICODE has a truncated escape");
        std::uint32_t cp = 0;
        for (std::size_t k = 0; k < n; ++k) {
          const int h = hex_value(s[i + 2 + k]);
          if (h < 0) fail("UNICODE has a bad escape");
          cp = cp * 16 + static_cast<std::uint32_t>(h);
        }
        if (cp > 0x10ffff) fail("UNICODE escape is beyond U+10FFFF");
        append_utf8(out, cp);
        i += 1 + n;
      } else {
        append_utf8(out, static_cast<unsigned char>(s[i]));
      }
    }
    return out;
  }

  // --- persistent ids: torch storages -----------------------------------------------------
  std::uint32_t persistent_load(std::uint32_t pid) {
    if (obj(pid).kind != ObjKind::tuple || seq_of(pid).size() != 5 || !is_text(seq_of(pid)[0]) ||
        text_of(seq_of(pid)[0]) != "storage")
      fail("persistent id is " + describe(pid) + ", not a ('storage', class, key, location, numel) tuple");
    const std::vector<std::uint32_t> f = seq_of(pid);
    const ObjKind cls_kind = obj(f[1]).kind;
    if (cls_kind != ObjKind::global && cls_kind != ObjKind::opaque)
      fail("storage class is " + describe(f[1]) + ", not a torch storage type");
    if (!is_text(f[2])) fail("storage key is " + describe(f[2]) + ", not a string");
    if (obj(f[4]).kind != ObjKind::integer || obj(f[4]).integer < 0)
      fail("storage element count is " + describe(f[4]) + ", not a non-negative int");
    const std::string cls = text_of(f[1]);
    const std::string key = text_of(f[2]);
    const std::int64_t numel = obj(f[4]).integer;
    const StorageInfo* info = storage_info(cls);
    // Storages of other element types (complex, quantized ...) stay unread and opaque: a
    // tensor built on one is opaque too, and only a caller that needs it fails.
    if (!info) return add_opaque(cls);

    std::uint64_t nbytes = 0;
    if (__builtin_mul_overflow(static_cast<std::uint64_t>(numel), info->itemsize, &nbytes))
      fail("storage " + quote_text(key) + " element count " + std::to_string(numel) + " overflows");
    std::shared_ptr<const std::vector<std::byte>> data;
    if (auto it = storage_cache_.find(key); it != storage_cache_.end()) {
      data = it->second;
      if (data->size() != nbytes)
        fail("storage " + quote_text(key) + " holds " + std::to_string(data->size()) + " bytes, but " +
             std::to_string(numel) + " elements of " + cls + " need " + std::to_string(nbytes));
    } else {
      const std::string entry = archive_.prefix() + "/data/" + key;
      const auto index = archive_.locate(entry);
      if (!index) fail("storage " + quote_text(key) + " has no entry " + quote_text(entry) + " in the archive");
      const std::uint64_t size = archive_.size_of(*index, entry);
      if (size != nbytes)
        fail("storage " + quote_text(key) + " holds " + std::to_string(size) + " bytes, but " + std::to_string(numel) +
             " elements of " + cls + " need " + std::to_string(nbytes));
      data = std::make_shared<const std::vector<std::byte>>(archive_.read(*index, entry, size));
      storage_cache_.emplace(key, data);
      storage_elements_ += numel;
    }
    storages_.push_back(Storage{key, info->type, info->itemsize, numel, std::move(data)});
    Obj o;
    o.kind = ObjKind::storage;
    o.ref = static_cast<std::uint32_t>(storages_.size() - 1);
    return add(o);
  }

  // --- calls --------------------------------------------------------------------------------
  std::vector<std::int64_t> int_list(std::uint32_t i, const std::string& what) const {
    if (!is_seq(i)) fail(what + " is " + describe(i) + ", not a tuple of ints");
    std::vector<std::int64_t> out;
    for (std::uint32_t x : seq_of(i)) {
      if (obj(x).kind != ObjKind::integer) fail(what + " holds " + describe(x) + ", not an int");
      out.push_back(obj(x).integer);
    }
    return out;
  }

  // _rebuild_tensor(_v2): (storage, storage_offset, size, stride, ...).
  std::uint32_t rebuild_tensor(const std::vector<std::uint32_t>& a, const std::string& fn) {
    if (a.size() < 4) fail(fn + " takes at least 4 arguments, got " + std::to_string(a.size()));
    if (obj(a[0]).kind == ObjKind::opaque) return add_opaque(text_of(a[0]));
    if (obj(a[0]).kind != ObjKind::storage) fail(fn + ": the storage is " + describe(a[0]));
    const Storage& s = storages_[obj(a[0]).ref];
    if (obj(a[1]).kind != ObjKind::integer) fail(fn + ": the storage offset is " + describe(a[1]));
    const std::int64_t offset = obj(a[1]).integer;
    const std::vector<std::int64_t> size = int_list(a[2], fn + " size");
    const std::vector<std::int64_t> stride = int_list(a[3], fn + " stride");
    const std::string where = "tensor on storage " + quote_text(s.key) + " (size " + shape_text(size) + ", stride " +
                              shape_text(stride) + ", offset " + std::to_string(offset) + ")";
    if (size.size() != stride.size()) fail(where + ": size and stride differ in length");
    if (size.size() > static_cast<std::size_t>(Shape::kMaxRank))
      fail(where + ": rank " + std::to_string(size.size()) + " is above the supported " +
           std::to_string(Shape::kMaxRank));
    if (offset < 0) fail(where + ": negative storage offset");
    std::int64_t numel = 1;
    std::int64_t last = offset;
    for (std::size_t i = 0; i < size.size(); ++i) {
      if (size[i] < 0) fail(where + ": negative size");
      if (stride[i] < 0) fail(where + ": negative stride");
      if (__builtin_mul_overflow(numel, size[i], &numel)) fail(where + ": the element count overflows 64 bits");
    }
    if (numel > 0) {
      for (std::size_t i = 0; i < size.size(); ++i) {
        std::int64_t reach = 0;
        if (__builtin_mul_overflow(size[i] - 1, stride[i], &reach) || __builtin_add_overflow(last, reach, &last))
          fail(where + ": the last element's index overflows 64 bits");
      }
      if (last >= s.numel)
        fail(where + " reaches element " + std::to_string(last) + ", but the storage holds " + std::to_string(s.numel));
    } else if (offset > s.numel) {
      fail(where + ": the offset is beyond the storage's " + std::to_string(s.numel) + " elements");
    }
    // Views that repeat elements (stride 0) could otherwise turn a small file into huge tensors.
    const std::int64_t budget = 4 * storage_elements_ + kTensorSlack;
    if (numel > budget - tensor_elements_)
      fail(where + ": the checkpoint's tensors would hold more than " + std::to_string(budget) +
           " elements, far more than its storages");
    tensor_elements_ += numel;
    tensors_.push_back(convert_storage(s, offset, size, stride));
    Obj o;
    o.kind = ObjKind::tensor;
    o.ref = static_cast<std::uint32_t>(tensors_.size() - 1);
    return add(o);
  }

  std::uint32_t numpy_scalar(const std::vector<std::uint32_t>& a, const std::string& fn) {
    if (a.size() != 2 || obj(a[0]).kind != ObjKind::numpy_dtype || !is_text(a[1])) return add_opaque(fn);
    const NumpyDtype& dt = dtypes_[obj(a[0]).ref];
    std::string_view code = dt.code;
    char order = dt.order;
    if (!code.empty() && (code[0] == '<' || code[0] == '>' || code[0] == '|' || code[0] == '=')) {
      order = code[0];
      code.remove_prefix(1);
    }
    if (code.size() != 2 || (code[0] != 'f' && code[0] != 'i' && code[0] != 'u' && code[0] != 'b') ||
        (code[1] != '1' && code[1] != '2' && code[1] != '4' && code[1] != '8'))
      return add_opaque(fn);
    const std::size_t n = static_cast<std::size_t>(code[1] - '0');
    std::string raw = text_of(a[1]);
    if (raw.size() != n)
      fail(fn + ": a numpy " + std::string(code) + " scalar needs " + std::to_string(n) + " bytes, got " +
           std::to_string(raw.size()));
    if (order == '>') std::reverse(raw.begin(), raw.end());
    const auto* p = reinterpret_cast<const std::byte*>(raw.data());
    switch (code[0]) {
      case 'b':
        return n == 1 ? add_bool(raw[0] != 0) : add_opaque(fn);
      case 'f':
        if (n == 2) return add_real(half_to_float(load_le<std::uint16_t>(p)));
        if (n == 4) return add_real(load_le<float>(p));
        if (n == 8) return add_real(load_le<double>(p));
        return add_opaque(fn);
      case 'i':
        if (n == 1) return add_int(load_le<std::int8_t>(p));
        if (n == 2) return add_int(load_le<std::int16_t>(p));
        if (n == 4) return add_int(load_le<std::int32_t>(p));
        return add_int(load_le<std::int64_t>(p));
      default: {
        const std::uint64_t u = n == 1   ? load_le<std::uint8_t>(p)
                                : n == 2 ? load_le<std::uint16_t>(p)
                                : n == 4 ? load_le<std::uint32_t>(p)
                                         : load_le<std::uint64_t>(p);
        if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return add_opaque("builtins.int");
        return add_int(static_cast<std::int64_t>(u));
      }
    }
  }

  // _codecs.encode(text, encoding): how protocol 2 stores bytes (numpy scalars' raw data).
  std::uint32_t codecs_encode(const std::vector<std::uint32_t>& a, const std::string& fn) {
    if (a.empty() || a.size() > 3 || obj(a[0]).kind != ObjKind::string) return add_opaque(fn);
    std::string enc = a.size() >= 2 && is_text(a[1]) ? text_of(a[1]) : std::string("utf-8");
    std::transform(enc.begin(), enc.end(), enc.begin(), [](char c) {
      return c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    });
    if (enc == "latin1" || enc == "latin-1" || enc == "iso-8859-1" || enc == "iso8859-1" || enc == "l1") {
      auto b = utf8_to_latin1(text_of(a[0]));
      if (!b) fail(fn + ": the text cannot be encoded as latin-1");
      return add_text(ObjKind::bytes, std::move(*b));
    }
    if (enc == "utf-8" || enc == "utf8" || enc == "ascii") return add_text(ObjKind::bytes, text_of(a[0]));
    return add_opaque(fn);
  }

  std::vector<std::uint32_t> seq_or_empty(const std::vector<std::uint32_t>& a) const {
    if (a.empty()) return {};
    if (is_seq(a[0])) return seq_of(a[0]);
    if (obj(a[0]).kind == ObjKind::dict) {
      std::vector<std::uint32_t> keys;
      for (const auto& kv : dicts_[obj(a[0]).ref]) keys.push_back(kv.first);
      return keys;
    }
    return {};
  }

  // Calls a global with positional arguments. Only the functions below are understood; any
  // other callable yields an opaque value of the same name, and nothing is ever executed.
  std::uint32_t call(std::uint32_t callable, std::uint32_t args_obj, int depth) {
    const ObjKind ck = obj(callable).kind;
    if (ck == ObjKind::opaque) return callable;
    if (ck != ObjKind::global) fail("cannot call " + describe(callable));
    const std::string fn = text_of(callable);
    if (!is_seq(args_obj)) fail(fn + " is called with " + describe(args_obj) + " instead of an argument tuple");
    const std::vector<std::uint32_t> a = seq_of(args_obj);

    if (fn == "collections.OrderedDict" || fn == "builtins.dict") {
      const std::uint32_t d = add_dict();
      if (a.empty()) return d;
      if (a.size() != 1 || !is_seq(a[0])) fail(fn + " is called with arguments other than a list of pairs");
      for (std::uint32_t pair : seq_of(a[0])) {
        if (!is_seq(pair) || seq_of(pair).size() != 2) fail(fn + " item is " + describe(pair) + ", not a pair");
        dicts_[obj(d).ref].emplace_back(seq_of(pair)[0], seq_of(pair)[1]);
      }
      return d;
    }
    if (fn == "torch._utils._rebuild_tensor_v2" || fn == "torch._utils._rebuild_tensor") return rebuild_tensor(a, fn);
    if (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty()) fail(fn + " needs the parameter's data");
      const ObjKind k = obj(a[0]).kind;
      if (k != ObjKind::tensor && k != ObjKind::opaque) fail(fn + ": the data is " + describe(a[0]) + ", not a tensor");
      return a[0];
    }
    if (fn == "torch._tensor._rebuild_from_type_v2") {
      // (rebuild function, tensor subclass, its arguments, state): the plain tensor inside.
      if (a.size() < 3) fail(fn + " takes 4 arguments, got " + std::to_string(a.size()));
      if (depth >= kMaxCallDepth) fail(fn + " is nested too deeply");
      return call(a[0], a[2], depth + 1);
    }
    if (fn == "numpy.core.multiarray.scalar" || fn == "numpy._core.multiarray.scalar") return numpy_scalar(a, fn);
    if (fn == "numpy.dtype") {
      if (a.empty() || !is_text(a[0])) return add_opaque(fn);
      dtypes_.push_back(NumpyDtype{text_of(a[0]), '='});
      Obj o;
      o.kind = ObjKind::numpy_dtype;
      o.ref = static_cast<std::uint32_t>(dtypes_.size() - 1);
      return add(o);
    }
    if (fn == "_codecs.encode") return codecs_encode(a, fn);
    if (fn == "builtins.bytes" || fn == "builtins.bytearray" || fn == "__builtin__.bytearray") {
      if (a.empty()) return add_text(ObjKind::bytes, "");
      if (obj(a[0]).kind == ObjKind::bytes && a.size() == 1) return a[0];
      if (obj(a[0]).kind == ObjKind::string) return codecs_encode(a, fn);
      return add_opaque(fn);
    }
    if (fn == "builtins.set" || fn == "builtins.frozenset" || fn == "__builtin__.set" || fn == "__builtin__.frozenset")
      return add_seq(ObjKind::set, seq_or_empty(a));
    if (fn == "torch.Size") return add_seq(ObjKind::tuple, seq_or_empty(a));
    if (fn == "torch.device") {
      if (a.size() == 1 && obj(a[0]).kind == ObjKind::string) return a[0];
      if (a.size() == 2 && obj(a[0]).kind == ObjKind::string && obj(a[1]).kind == ObjKind::integer)
        return add_text(ObjKind::string, text_of(a[0]) + ":" + std::to_string(obj(a[1]).integer));
      return add_opaque(fn);
    }
    return add_opaque(fn);
  }

  // cls.__new__(cls, ...): the empty container for the builtin containers, opaque otherwise.
  std::uint32_t new_object(std::uint32_t cls, const char* opname) {
    const ObjKind ck = obj(cls).kind;
    if (ck == ObjKind::opaque) return cls;
    if (ck != ObjKind::global) fail(std::string(opname) + " on " + describe(cls) + ", not a class");
    const std::string& n = text_of(cls);
    if (n == "collections.OrderedDict" || n == "builtins.dict") return add_dict();
    if (n == "builtins.list") return add_seq(ObjKind::list, {});
    if (n == "builtins.set" || n == "builtins.frozenset") return add_seq(ObjKind::set, {});
    return add_opaque(n);
  }

  void build(std::uint32_t target, std::uint32_t state) {
    // A numpy dtype's state tuple carries its byte order; other state (attributes of
    // OrderedDicts such as a state dict's _metadata, of opaque objects ...) is not kept.
    if (obj(target).kind == ObjKind::numpy_dtype && is_seq(state) && seq_of(state).size() >= 2 &&
        is_text(seq_of(state)[1]) && text_of(seq_of(state)[1]).size() == 1)
      dtypes_[obj(target).ref].order = text_of(seq_of(state)[1])[0];
  }

  void append_items(std::uint32_t target, const std::vector<std::uint32_t>& items, const char* opname) {
    const ObjKind k = obj(target).kind;
    if (k == ObjKind::opaque) return;
    const bool ok = k == ObjKind::set || (k == ObjKind::list && std::strcmp(opname, "ADDITEMS") != 0);
    if (!ok) fail(std::string(opname) + " on " + describe(target));
    auto& v = seqs_[obj(target).ref];
    v.insert(v.end(), items.begin(), items.end());
  }

  void set_items(std::uint32_t target, const std::vector<std::uint32_t>& kv, const char* opname) {
    const ObjKind k = obj(target).kind;
    if (k == ObjKind::opaque) return;
    if (k != ObjKind::dict) fail(std::string(opname) + " on " + describe(target));
    if (kv.size() % 2) fail(std::string(opname) + " with an odd number of items");
    auto& d = dicts_[obj(target).ref];
    for (std::size_t i = 0; i < kv.size(); i += 2) d.emplace_back(kv[i], kv[i + 1]);
  }

  std::uint32_t global(std::string_view module, std::string_view name, const char* opname) {
    if (module.empty() || name.empty() || module.size() > 256 || name.size() > 256)
      fail(std::string(opname) + " has a bad name " + quote_text(std::string(module) + "." + std::string(name)));
    return add_text(ObjKind::global, std::string(module) + "." + std::string(name));
  }

  // --- the interpreter loop ---------------------------------------------------------------
  std::uint32_t run() {
    while (true) {
      op_offset_ = pos_;
      if (pos_ >= data_.size()) fail("truncated pickle: the data ends without a STOP opcode");
      const std::uint8_t code = static_cast<std::uint8_t>(data_[pos_++]);
      switch (code) {
        case op::PROTO: {
          const unsigned v = u8("PROTO");
          if (v > 5) fail("pickle protocol " + std::to_string(v) + " is not supported");
          break;
        }
        case op::FRAME:
          uint_le(8, "FRAME");
          break;
        case op::STOP:
          return pop("STOP");
        case op::MARK:
          if (marks_.size() >= kMaxMarks) fail("more than " + std::to_string(kMaxMarks) + " nested MARKs");
          marks_.push_back(stack_.size());
          break;
        case op::POP:
          if (stack_.size() > mark_base())
            stack_.pop_back();
          else
            pop_mark("POP");
          break;
        case op::POP_MARK:
          pop_mark("POP_MARK");
          break;
        case op::DUP:
          push(top("DUP"));
          break;
        case op::NONE:
          push(add_none());
          break;
        case op::NEWTRUE:
          push(add_bool(true));
          break;
        case op::NEWFALSE:
          push(add_bool(false));
          break;
        case op::INT: {
          const std::string_view s = line("INT");
          if (s == "00" || s == "01")
            push(add_bool(s == "01"));
          else
            push(text_int(s, "INT"));
          break;
        }
        case op::BININT:
          push(add_int(static_cast<std::int32_t>(static_cast<std::uint32_t>(uint_le(4, "BININT")))));
          break;
        case op::BININT1:
          push(add_int(u8("BININT1")));
          break;
        case op::BININT2:
          push(add_int(static_cast<std::int64_t>(uint_le(2, "BININT2"))));
          break;
        case op::LONG:
          push(text_int(line("LONG"), "LONG"));
          break;
        case op::LONG1: {
          const std::size_t n = u8("LONG1");
          push(binary_long(bytes(n, "LONG1")));
          break;
        }
        case op::LONG4: {
          const auto n = static_cast<std::int32_t>(static_cast<std::uint32_t>(uint_le(4, "LONG4")));
          if (n < 0) fail("LONG4 has a negative length");
          push(binary_long(bytes(static_cast<std::uint64_t>(n), "LONG4")));
          break;
        }
        case op::FLOAT:
          push(text_float(line("FLOAT")));
          break;
        case op::BINFLOAT: {
          need(8, "BINFLOAT");
          std::uint64_t u = 0;
          for (std::size_t i = 0; i < 8; ++i) u = (u << 8) | static_cast<std::uint64_t>(data_[pos_ + i]);
          pos_ += 8;
          push(add_real(std::bit_cast<double>(u)));
          break;
        }
        case op::STRING:
          push(add_text(ObjKind::string, escaped_string(line("STRING"))));
          break;
        case op::BINSTRING: {
          const auto n = static_cast<std::int32_t>(static_cast<std::uint32_t>(uint_le(4, "BINSTRING")));
          if (n < 0) fail("BINSTRING has a negative length");
          push(add_text(ObjKind::string, std::string(bytes(static_cast<std::uint64_t>(n), "BINSTRING"))));
          break;
        }
        case op::SHORT_BINSTRING: {
          const std::size_t n = u8("SHORT_BINSTRING");
          push(add_text(ObjKind::string, std::string(bytes(n, "SHORT_BINSTRING"))));
          break;
        }
        case op::UNICODE:
          push(add_text(ObjKind::string, raw_unicode(line("UNICODE"))));
          break;
        case op::BINUNICODE:
          push(add_text(ObjKind::string, std::string(bytes(uint_le(4, "BINUNICODE"), "BINUNICODE"))));
          break;
        case op::SHORT_BINUNICODE: {
          const std::size_t n = u8("SHORT_BINUNICODE");
          push(add_text(ObjKind::string, std::string(bytes(n, "SHORT_BINUNICODE"))));
          break;
        }
        case op::BINUNICODE8:
          push(add_text(ObjKind::string, std::string(bytes(uint_le(8, "BINUNICODE8"), "BINUNICODE8"))));
          break;
        case op::BINBYTES:
          push(add_text(ObjKind::bytes, std::string(bytes(uint_le(4, "BINBYTES"), "BINBYTES"))));
          break;
        case op::SHORT_BINBYTES: {
          const std::size_t n = u8("SHORT_BINBYTES");
          push(add_text(ObjKind::bytes, std::string(bytes(n, "SHORT_BINBYTES"))));
          break;
        }
        case op::BINBYTES8:
          push(add_text(ObjKind::bytes, std::string(bytes(uint_le(8, "BINBYTES8"), "BINBYTES8"))));
          break;
        case op::BYTEARRAY8:
          push(add_text(ObjKind::bytes, std::string(bytes(uint_le(8, "BYTEARRAY8"), "BYTEARRAY8"))));
          break;
        case op::EMPTY_LIST:
          push(add_seq(ObjKind::list, {}));
          break;
        case op::APPEND: {
          const std::uint32_t v = pop("APPEND");
          append_items(top("APPEND"), {v}, "APPEND");
          break;
        }
        case op::APPENDS: {
          auto items = pop_mark("APPENDS");
          append_items(top("APPENDS"), items, "APPENDS");
          break;
        }
        case op::LIST:
          push(add_seq(ObjKind::list, pop_mark("LIST")));
          break;
        case op::EMPTY_TUPLE:
          push(add_seq(ObjKind::tuple, {}));
          break;
        case op::TUPLE:
          push(add_seq(ObjKind::tuple, pop_mark("TUPLE")));
          break;
        case op::TUPLE1: {
          const std::uint32_t a = pop("TUPLE1");
          push(add_seq(ObjKind::tuple, {a}));
          break;
        }
        case op::TUPLE2: {
          const std::uint32_t b = pop("TUPLE2");
          const std::uint32_t a = pop("TUPLE2");
          push(add_seq(ObjKind::tuple, {a, b}));
          break;
        }
        case op::TUPLE3: {
          const std::uint32_t c = pop("TUPLE3");
          const std::uint32_t b = pop("TUPLE3");
          const std::uint32_t a = pop("TUPLE3");
          push(add_seq(ObjKind::tuple, {a, b, c}));
          break;
        }
        case op::EMPTY_DICT:
          push(add_dict());
          break;
        case op::DICT: {
          auto kv = pop_mark("DICT");
          const std::uint32_t d = add_dict();
          set_items(d, kv, "DICT");
          push(d);
          break;
        }
        case op::SETITEM: {
          const std::uint32_t v = pop("SETITEM");
          const std::uint32_t k = pop("SETITEM");
          set_items(top("SETITEM"), {k, v}, "SETITEM");
          break;
        }
        case op::SETITEMS: {
          auto kv = pop_mark("SETITEMS");
          set_items(top("SETITEMS"), kv, "SETITEMS");
          break;
        }
        case op::EMPTY_SET:
          push(add_seq(ObjKind::set, {}));
          break;
        case op::ADDITEMS: {
          auto items = pop_mark("ADDITEMS");
          append_items(top("ADDITEMS"), items, "ADDITEMS");
          break;
        }
        case op::FROZENSET:
          push(add_seq(ObjKind::set, pop_mark("FROZENSET")));
          break;
        case op::GLOBAL: {
          const std::string_view module = line("GLOBAL");
          const std::string_view name = line("GLOBAL");
          push(global(module, name, "GLOBAL"));
          break;
        }
        case op::STACK_GLOBAL: {
          const std::uint32_t name = pop("STACK_GLOBAL");
          const std::uint32_t module = pop("STACK_GLOBAL");
          if (obj(name).kind != ObjKind::string || obj(module).kind != ObjKind::string)
            fail("STACK_GLOBAL needs two strings, got " + describe(module) + " and " + describe(name));
          push(global(text_of(module), text_of(name), "STACK_GLOBAL"));
          break;
        }
        case op::REDUCE: {
          const std::uint32_t args = pop("REDUCE");
          const std::uint32_t fn = pop("REDUCE");
          push(call(fn, args, 0));
          break;
        }
        case op::BUILD: {
          const std::uint32_t state = pop("BUILD");
          build(top("BUILD"), state);
          break;
        }
        case op::NEWOBJ: {
          pop("NEWOBJ");
          push(new_object(pop("NEWOBJ"), "NEWOBJ"));
          break;
        }
        case op::NEWOBJ_EX: {
          pop("NEWOBJ_EX");
          pop("NEWOBJ_EX");
          push(new_object(pop("NEWOBJ_EX"), "NEWOBJ_EX"));
          break;
        }
        case op::PERSID:
          push(persistent_load(add_text(ObjKind::string, std::string(line("PERSID")))));
          break;
        case op::BINPERSID:
          push(persistent_load(pop("BINPERSID")));
          break;
        case op::GET:
          memo_get(decimal_key(line("GET"), "GET"), "GET");
          break;
        case op::BINGET:
          memo_get(u8("BINGET"), "BINGET");
          break;
        case op::LONG_BINGET:
          memo_get(uint_le(4, "LONG_BINGET"), "LONG_BINGET");
          break;
        case op::PUT:
          memo_put(decimal_key(line("PUT"), "PUT"), "PUT");
          break;
        case op::BINPUT:
          memo_put(u8("BINPUT"), "BINPUT");
          break;
        case op::LONG_BINPUT:
          memo_put(uint_le(4, "LONG_BINPUT"), "LONG_BINPUT");
          break;
        case op::MEMOIZE:
          memo_put(memo_.size(), "MEMOIZE");
          break;
        default: {
          std::string what = "unsupported pickle opcode " + hex_byte(code);
          if (code >= 0x21 && code < 0x7f) what += std::string(" ('") + static_cast<char>(code) + "')";
          fail(what);
        }
      }
    }
  }

  // --- arena -> PyValue tree ----------------------------------------------------------------
  std::size_t child_count(std::uint32_t i) const {
    const Obj& o = obj(i);
    if (o.kind == ObjKind::list || o.kind == ObjKind::tuple || o.kind == ObjKind::set) return seqs_[o.ref].size();
    if (o.kind == ObjKind::dict) return 2 * dicts_[o.ref].size();
    return 0;
  }
  std::uint32_t child(std::uint32_t i, std::size_t k) const {
    const Obj& o = obj(i);
    if (o.kind == ObjKind::dict) {
      const auto& e = dicts_[o.ref][k / 2];
      return k % 2 ? e.second : e.first;
    }
    return seqs_[o.ref][k];
  }
  std::uint64_t own_text(std::uint32_t i) const {
    const ObjKind k = obj(i).kind;
    const bool texty = k == ObjKind::string || k == ObjKind::bytes || k == ObjKind::opaque || k == ObjKind::global;
    return texty ? strings_[obj(i).ref].size() : 0;
  }

  // Shared objects are copied wherever they are referenced, so before building anything this
  // measures the tree the graph unfolds into (nodes, text bytes, depth) and refuses cycles:
  // a small pickle whose references multiply or loop is an error, not an exhausted machine.
  void measure(std::uint32_t root) const {
    constexpr std::uint64_t kSaturate = std::uint64_t{1} << 62;
    const std::uint64_t text_budget = 4 * static_cast<std::uint64_t>(data_.size()) + (16u << 20);
    std::vector<std::uint8_t> state(objects_.size(), 0);  // 0 new, 1 on the path, 2 measured
    std::vector<std::uint64_t> nodes(objects_.size(), 0), text(objects_.size(), 0);
    struct Frame {
      std::uint32_t obj;
      std::size_t next;
    };
    std::vector<Frame> path{{root, 0}};
    state[root] = 1;
    while (!path.empty()) {
      Frame& f = path.back();
      if (f.next < child_count(f.obj)) {
        const std::uint32_t c = child(f.obj, f.next++);
        if (state[c] == 2) continue;
        if (state[c] == 1) bad(name_, "data.pkl: a value contains itself (a reference cycle voxinfer does not follow)");
        if (path.size() >= static_cast<std::size_t>(kMaxNesting))
          bad(name_, "data.pkl: values are nested deeper than " + std::to_string(kMaxNesting) + " levels");
        state[c] = 1;
        path.push_back({c, 0});
        continue;
      }
      std::uint64_t n = 1;
      std::uint64_t t = own_text(f.obj);
      for (std::size_t k = 0, e = child_count(f.obj); k < e; ++k) {
        const std::uint32_t c = child(f.obj, k);
        n = std::min(kSaturate, n + nodes[c]);
        t = std::min(kSaturate, t + text[c]);
      }
      if (n > kMaxValues)
        bad(name_, "data.pkl: the checkpoint holds more than " + std::to_string(kMaxValues) + " values");
      if (t > text_budget)
        bad(name_, "data.pkl: the checkpoint's strings would take more than " + std::to_string(text_budget) + " bytes");
      nodes[f.obj] = n;
      text[f.obj] = t;
      state[f.obj] = 2;
      path.pop_back();
    }
  }

  PyValue to_value(std::uint32_t root) {
    measure(root);
    struct Work {
      std::uint32_t obj;
      PyValue* dst;
    };
    PyValue result;
    std::vector<Work> work{{root, &result}};
    while (!work.empty()) {
      const Work w = work.back();
      work.pop_back();
      const Obj& o = obj(w.obj);
      PyValue& v = *w.dst;
      using K = PyValue::Kind;
      switch (o.kind) {
        case ObjKind::none:
          v.kind = K::none;
          break;
        case ObjKind::boolean:
          v.kind = K::boolean;
          v.boolean = o.boolean;
          break;
        case ObjKind::integer:
          v.kind = K::integer;
          v.integer = o.integer;
          break;
        case ObjKind::real:
          v.kind = K::real;
          v.real = o.real;
          break;
        case ObjKind::string:
          v.kind = K::string;
          v.text = strings_[o.ref];
          break;
        case ObjKind::bytes:
          v.kind = K::bytes;
          v.text = strings_[o.ref];
          break;
        case ObjKind::opaque:
        case ObjKind::global:
          v.kind = K::opaque;
          v.text = strings_[o.ref];
          break;
        case ObjKind::storage: {
          v.kind = K::opaque;
          for (const auto& si : kStorages)
            if (si.type == storages_[o.ref].type) v.text = std::string(si.cls);
          break;
        }
        case ObjKind::numpy_dtype:
          v.kind = K::opaque;
          v.text = "numpy.dtype";
          break;
        case ObjKind::tensor:
          v.kind = K::tensor;
          v.tensor = tensors_[o.ref];
          break;
        case ObjKind::list:
        case ObjKind::set:
        case ObjKind::tuple: {
          v.kind = o.kind == ObjKind::tuple ? K::tuple : K::list;
          const auto& items = seqs_[o.ref];
          v.items.resize(items.size());
          for (std::size_t i = items.size(); i-- > 0;) work.push_back({items[i], &v.items[i]});
          break;
        }
        case ObjKind::dict: {
          v.kind = K::dict;
          // A key set twice keeps its first position and its last value, as in Python.
          std::vector<std::pair<std::uint32_t, std::uint32_t>> unique;
          std::unordered_map<std::string, std::size_t> seen;
          for (const auto& [k, val] : dicts_[o.ref]) {
            std::string id = key_identity(k);
            if (!id.empty()) {
              const auto [it, inserted] = seen.emplace(std::move(id), unique.size());
              if (!inserted) {
                unique[it->second].second = val;
                continue;
              }
            }
            unique.emplace_back(k, val);
          }
          v.entries.resize(unique.size());
          for (std::size_t i = unique.size(); i-- > 0;) {
            work.push_back({unique[i].second, &v.entries[i].second});
            work.push_back({unique[i].first, &v.entries[i].first});
          }
          break;
        }
      }
    }
    return result;
  }

  // A hashable identity for scalar dict keys; empty for keys compared by identity here.
  std::string key_identity(std::uint32_t k) const {
    const Obj& o = obj(k);
    switch (o.kind) {
      case ObjKind::string:
        return "s" + strings_[o.ref];
      case ObjKind::bytes:
        return "b" + strings_[o.ref];
      case ObjKind::integer:
        return "i" + std::to_string(o.integer);
      case ObjKind::boolean:
        return "i" + std::to_string(o.boolean ? 1 : 0);
      case ObjKind::none:
        return "n";
      default:
        return {};
    }
  }

  std::span<const std::byte> data_;
  std::size_t pos_ = 0;
  std::size_t op_offset_ = 0;
  std::string name_;
  const Archive& archive_;

  std::vector<Obj> objects_;
  std::vector<std::string> strings_;
  std::vector<std::vector<std::uint32_t>> seqs_;
  std::vector<std::vector<std::pair<std::uint32_t, std::uint32_t>>> dicts_;
  std::vector<Tensor> tensors_;
  std::vector<Storage> storages_;
  std::vector<NumpyDtype> dtypes_;
  std::unordered_map<std::string, std::shared_ptr<const std::vector<std::byte>>> storage_cache_;
  std::int64_t storage_elements_ = 0;
  std::int64_t tensor_elements_ = 0;

  std::vector<std::uint32_t> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint32_t, std::uint32_t> memo_;
};

PyValue load_archive(const Archive& archive, const std::string& name) {
  const std::string& prefix = archive.prefix();
  if (const auto bo = archive.locate(prefix + "/byteorder")) {
    const std::uint64_t size = archive.size_of(*bo, prefix + "/byteorder");
    if (size > kMaxSmallEntry)
      bad(name, "the byteorder entry is implausibly large (" + std::to_string(size) + " bytes)");
    const auto b = archive.read(*bo, prefix + "/byteorder", size);
    std::string order(reinterpret_cast<const char*>(b.data()), b.size());
    while (!order.empty() && (order.back() == '\n' || order.back() == '\r' || order.back() == ' ')) order.pop_back();
    if (order == "big") bad(name, "the checkpoint stores big-endian data (byteorder 'big'), which is not supported");
    if (order != "little") bad(name, "unknown byteorder " + quote_text(order) + " (expected 'little')");
  }
  const std::string pkl = prefix + "/data.pkl";
  const auto index = archive.locate(pkl);
  if (!index) bad(name, "not a PyTorch zip checkpoint (the archive has no " + quote_text(pkl) + " entry)");
  const std::uint64_t size = archive.size_of(*index, pkl);
  if (size > kMaxPickleBytes)
    bad(name, "data.pkl is " + std::to_string(size) + " bytes, above the supported " + std::to_string(kMaxPickleBytes));
  const std::vector<std::byte> pickle = archive.read(*index, pkl, size);
  Unpickler u(pickle, name, archive);
  return u.load();
}

[[noreturn]] void wrong_kind(const PyValue& v, const std::string& what, const char* expected) {
  std::string msg = what + ": expected " + expected + ", got " + v.describe();
  if (v.kind == PyValue::Kind::opaque) msg += " (a Python object voxinfer does not evaluate)";
  throw Error(ErrorCode::invalid_model, msg);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// PyValue

PyValue::PyValue() = default;
PyValue::PyValue(const PyValue&) = default;
PyValue::PyValue(PyValue&&) noexcept = default;
PyValue& PyValue::operator=(const PyValue&) = default;
PyValue& PyValue::operator=(PyValue&&) noexcept = default;
PyValue::~PyValue() = default;

std::string_view py_kind_name(PyValue::Kind kind) noexcept {
  switch (kind) {
    case PyValue::Kind::none:
      return "None";
    case PyValue::Kind::boolean:
      return "bool";
    case PyValue::Kind::integer:
      return "int";
    case PyValue::Kind::real:
      return "float";
    case PyValue::Kind::string:
      return "str";
    case PyValue::Kind::bytes:
      return "bytes";
    case PyValue::Kind::list:
      return "list";
    case PyValue::Kind::tuple:
      return "tuple";
    case PyValue::Kind::dict:
      return "dict";
    case PyValue::Kind::tensor:
      return "tensor";
    case PyValue::Kind::opaque:
      return "opaque";
  }
  return "?";
}

std::string PyValue::describe() const {
  switch (kind) {
    case Kind::none:
      return "None";
    case Kind::boolean:
      return boolean ? "True" : "False";
    case Kind::integer:
      return "the int " + std::to_string(integer);
    case Kind::real:
      return "a float";
    case Kind::string:
      return "the string " + quote_text(text);
    case Kind::bytes:
      return "bytes";
    case Kind::list:
      return "a list";
    case Kind::tuple:
      return "a tuple";
    case Kind::dict:
      return "a dict";
    case Kind::tensor:
      return "a tensor";
    case Kind::opaque:
      return "an opaque " + text;
  }
  return "?";
}

const PyValue* PyValue::find(std::string_view key) const {
  if (kind != Kind::dict) return nullptr;
  for (const auto& [k, v] : entries)
    if (k.kind == Kind::string && k.text == key) return &v;
  return nullptr;
}

const PyValue& PyValue::at(std::string_view key, const std::string& what) const {
  if (kind != Kind::dict) wrong_kind(*this, what, "a dict");
  if (const PyValue* v = find(key)) return *v;
  throw Error(ErrorCode::invalid_model, what + ": no entry " + quote_text(key));
}

bool PyValue::as_bool(const std::string& what) const {
  if (kind != Kind::boolean) wrong_kind(*this, what, "a bool");
  return boolean;
}

std::int64_t PyValue::as_int(const std::string& what) const {
  if (kind == Kind::integer) return integer;
  if (kind == Kind::boolean) return boolean ? 1 : 0;
  wrong_kind(*this, what, "an int");
}

double PyValue::as_real(const std::string& what) const {
  if (kind == Kind::real) return real;
  if (kind == Kind::integer) return static_cast<double>(integer);
  if (kind == Kind::boolean) return boolean ? 1.0 : 0.0;
  wrong_kind(*this, what, "a number");
}

const std::string& PyValue::as_string(const std::string& what) const {
  if (kind != Kind::string) wrong_kind(*this, what, "a string");
  return text;
}

const Tensor& PyValue::as_tensor(const std::string& what) const {
  if (kind != Kind::tensor) wrong_kind(*this, what, "a tensor");
  return tensor;
}

const std::vector<PyValue>& PyValue::as_sequence(const std::string& what) const {
  if (kind != Kind::list && kind != Kind::tuple) wrong_kind(*this, what, "a list or tuple");
  return items;
}

std::vector<std::int64_t> PyValue::as_int_list(const std::string& what) const {
  std::vector<std::int64_t> out;
  for (const PyValue& v : as_sequence(what)) {
    if (v.kind != Kind::integer) wrong_kind(v, what + " item " + std::to_string(out.size()), "an int");
    out.push_back(v.integer);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Entry points

PyValue load_torch_checkpoint(const std::filesystem::path& file) {
  const std::string name = file.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    throw Error(ErrorCode::invalid_input, name + ": no such file (expected a PyTorch checkpoint .pth)");
  const Archive archive = Archive::open_file(file, name);
  return load_archive(archive, name);
}

PyValue load_torch_checkpoint_from_memory(std::span<const std::byte> bytes, const std::string& name) {
  const Archive archive = Archive::open_memory(bytes, name);
  return load_archive(archive, name);
}

std::map<std::string, Tensor> torch_state_dict(const PyValue& dict, const std::string& what) {
  if (dict.kind != PyValue::Kind::dict) wrong_kind(dict, what, "a state dict (a dict of tensors)");
  std::map<std::string, Tensor> out;
  for (const auto& [k, v] : dict.entries) {
    if (k.kind != PyValue::Kind::string) wrong_kind(k, what + ": a state dict key", "a string");
    const std::string field = what + ": " + quote_text(k.text);
    const Tensor& t = v.as_tensor(field);
    if (t.dtype() == DType::f32) {
      out[k.text] = t;
      continue;
    }
    Tensor f(t.shape(), DType::f32);
    float* dst = f.data<float>();
    const std::int64_t n = t.numel();
    if (t.dtype() == DType::i64) {
      const std::int64_t* src = t.data<std::int64_t>();
      for (std::int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
    } else if (t.dtype() == DType::boolean) {
      const bool* src = t.data<bool>();
      for (std::int64_t i = 0; i < n; ++i) dst[i] = src[i] ? 1.f : 0.f;
    } else {
      throw Error(ErrorCode::invalid_model,
                  field + ": tensor of " + std::string(dtype_name(t.dtype())) + " is not supported");
    }
    out[k.text] = f;
  }
  return out;
}

}  // namespace voxinfer
