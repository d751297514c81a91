// ONNX ModelProto -> graph IR.
#include "voxinfer/graph/onnx_import.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <onnx/onnx_pb.h>

#include <charconv>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace voxinfer::graph {
namespace {

constexpr std::int64_t kMinOpset = 7;
constexpr std::int64_t kMaxOpset = 21;

struct Ctx {
  std::string file;
  std::string base_dir;
};

[[noreturn]] void bad(const Ctx& c, const std::string& what) { throw Error(ErrorCode::invalid_model, c.file + ": " + what); }

DType map_dtype(const Ctx& c, int t, const std::string& what, bool* widen = nullptr) {
  if (widen) *widen = false;
  switch (t) {
    case onnx::TensorProto::FLOAT: return DType::f32;
    case onnx::TensorProto::DOUBLE: return DType::f64;
    case onnx::TensorProto::INT64: return DType::i64;
    case onnx::TensorProto::INT32: return DType::i32;
    case onnx::TensorProto::INT16: return DType::i16;
    case onnx::TensorProto::UINT8: return DType::u8;
    case onnx::TensorProto::BOOL: return DType::boolean;
    case onnx::TensorProto::FLOAT16: return DType::f16;
    case onnx::TensorProto::INT8:
    case onnx::TensorProto::UINT16:
      if (widen) *widen = true;
      return DType::i32;
    default: break;
  }
  throw Error(ErrorCode::unsupported, c.file + ": " + what + " has ONNX element type " + std::to_string(t) + ", which is not supported");
}

std::string read_file(const std::string& path, std::uint64_t offset, std::uint64_t length, const std::string& what) {
  // A FIFO or a device would block the open or never end: only regular files hold data.
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    throw Error(ErrorCode::invalid_model, what + ": external data '" + path + "' is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::invalid_model, what + ": cannot open external data file '" + path + "'");
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::uint64_t>(in.tellg());
  if (offset > size || (length != UINT64_MAX && length > size - offset))
    throw Error(ErrorCode::invalid_model, what + ": external data '" + path + "' is shorter than offset+length");
  if (length == UINT64_MAX) length = size - offset;
  std::string buf(length, '\0');
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(buf.data(), static_cast<std::streamsize>(length));
  if (static_cast<std::uint64_t>(in.gcount()) != length) throw Error(ErrorCode::invalid_model, what + ": failed reading external data");
  return buf;
}

std::uint64_t parse_u64(const Ctx& c, const std::string& text, const std::string& what) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty())
    bad(c, what + " '" + text + "' is not a number");
  return v;
}

Tensor convert_tensor(const Ctx& c, const onnx::TensorProto& tp, const std::string& what_in) {
  const std::string what = what_in + (tp.name().empty() ? "" : " '" + tp.name() + "'");
  std::vector<std::int64_t> dims(tp.dims().begin(), tp.dims().end());
  for (auto d : dims)
    if (d < 0) bad(c, what + " has a negative dimension");
  if (dims.size() > static_cast<std::size_t>(Shape::kMaxRank)) throw Error(ErrorCode::unsupported, c.file + ": " + what + " has rank above 8");
  // Before any size is computed from them: dims whose product overflows would make a tiny
  // payload pass the size check below and describe far more elements than were allocated.
  if (!Shape::numel_fits(dims)) {
    std::string d;
    for (const auto v : dims) d += (d.empty() ? "" : ",") + std::to_string(v);
    bad(c, what + " has the shape [" + d + "], whose element count is too large");
  }
  bool widen = false;
  const DType dt = map_dtype(c, tp.data_type(), what, &widen);
  const Shape shape(dims);
  const std::int64_t n = shape.numel();

  std::string external;
  const std::string* raw = tp.has_raw_data() ? &tp.raw_data() : nullptr;
  if (tp.data_location() == onnx::TensorProto::EXTERNAL) {
    std::string location;
    std::uint64_t offset = 0, length = UINT64_MAX;
    for (const auto& kv : tp.external_data()) {
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset")
        offset = parse_u64(c, kv.value(), what + ": external data offset");
      else if (kv.key() == "length")
        length = parse_u64(c, kv.value(), what + ": external data length");
    }
    if (location.empty()) bad(c, what + " has external data without a location");
    const std::filesystem::path loc(location);
    if (loc.is_absolute() || location.find("..") != std::string::npos)
      bad(c, what + ": external data location '" + location + "' must be a relative path inside the model's folder");
    external = read_file((std::filesystem::path(c.base_dir) / loc).string(), offset, length, c.file + ": " + what);
    raw = &external;
  }

  const int src_elem = tp.data_type() == onnx::TensorProto::INT8 || tp.data_type() == onnx::TensorProto::UINT8 ||
                               tp.data_type() == onnx::TensorProto::BOOL
                           ? 1
                           : (tp.data_type() == onnx::TensorProto::INT16 || tp.data_type() == onnx::TensorProto::UINT16 ||
                              tp.data_type() == onnx::TensorProto::FLOAT16)
                                 ? 2
                                 : static_cast<int>(dtype_size(dt));
  // Check what the file holds against the declared shape before allocating, so that a
  // corrupt header cannot ask for more memory than the data it carries.
  if (raw) {
    if (raw->size() != static_cast<std::size_t>(n) * static_cast<std::size_t>(src_elem))
      bad(c, what + " holds " + std::to_string(raw->size()) + " bytes, its shape " + shape.str() + " needs " +
                 std::to_string(n * src_elem));
  } else {
    const std::int64_t have = tp.data_type() == onnx::TensorProto::FLOAT    ? tp.float_data_size()
                              : tp.data_type() == onnx::TensorProto::DOUBLE ? tp.double_data_size()
                              : tp.data_type() == onnx::TensorProto::INT64  ? tp.int64_data_size()
                                                                            : tp.int32_data_size();
    if (have != n) bad(c, what + " holds " + std::to_string(have) + " values, its shape " + shape.str() + " needs " + std::to_string(n));
  }
  Tensor t(shape, dt);
  if (raw) {
    if (!widen) {
      std::memcpy(t.raw(), raw->data(), raw->size());
    } else {
      auto* d = t.data<std::int32_t>();
      for (std::int64_t i = 0; i < n; ++i) {
        if (tp.data_type() == onnx::TensorProto::INT8) d[i] = static_cast<std::int8_t>((*raw)[static_cast<std::size_t>(i)]);
        else {
          std::uint16_t v;
          std::memcpy(&v, raw->data() + 2 * i, 2);
          d[i] = v;
        }
      }
    }
    return t;
  }
  auto check = [&](std::int64_t have) {
    if (have != n) bad(c, what + " holds " + std::to_string(have) + " values, its shape " + shape.str() + " needs " + std::to_string(n));
  };
  switch (tp.data_type()) {
    case onnx::TensorProto::FLOAT:
      check(tp.float_data_size());
      std::memcpy(t.raw(), tp.float_data().data(), static_cast<std::size_t>(n) * 4);
      break;
    case onnx::TensorProto::DOUBLE:
      check(tp.double_data_size());
      std::memcpy(t.raw(), tp.double_data().data(), static_cast<std::size_t>(n) * 8);
      break;
    case onnx::TensorProto::INT64:
      check(tp.int64_data_size());
      std::memcpy(t.raw(), tp.int64_data().data(), static_cast<std::size_t>(n) * 8);
      break;
    default: {
      check(tp.int32_data_size());
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int32_t v = tp.int32_data(static_cast<int>(i));
        switch (dt) {
          case DType::i32: t.data<std::int32_t>()[i] = v; break;
          case DType::i16: t.data<std::int16_t>()[i] = static_cast<std::int16_t>(v); break;
          case DType::u8: t.data<std::uint8_t>()[i] = static_cast<std::uint8_t>(v); break;
          case DType::boolean: t.data<bool>()[i] = v != 0; break;
          case DType::f16: {
            const auto h = static_cast<std::uint16_t>(v);
            std::memcpy(static_cast<std::byte*>(t.raw()) + 2 * i, &h, 2);
            break;
          }
          default: bad(c, what + ": unexpected element storage");
        }
      }
    }
  }
  return t;
}

ValueInfo convert_value_info(const Ctx& c, const onnx::ValueInfoProto& v) {
  ValueInfo info;
  info.name = v.name();
  if (v.type().has_tensor_type()) {
    const auto& tt = v.type().tensor_type();
    info.dtype = map_dtype(c, tt.elem_type(), "value '" + v.name() + "'");
    if (tt.has_shape()) {
      info.has_shape = true;
      for (const auto& d : tt.shape().dim()) {
        Dim dim;
        if (d.has_dim_value()) dim.value = d.dim_value();
        else if (d.has_dim_param()) dim.symbol = d.dim_param();
        info.dims.push_back(dim);
      }
    }
  } else if (v.has_type()) {
    throw Error(ErrorCode::unsupported, c.file + ": value '" + v.name() + "' is not a tensor (sequences and maps are not supported)");
  }
  return info;
}

Attribute convert_attribute(const Ctx& c, const onnx::AttributeProto& a, const Node& node) {
  using AP = onnx::AttributeProto;
  switch (a.type()) {
    case AP::INT: return Attribute::make_int(a.i());
    case AP::FLOAT: return Attribute::make_float(a.f());
    case AP::STRING: return Attribute::make_string(a.s());
    case AP::INTS: return Attribute::make_ints({a.ints().begin(), a.ints().end()});
    case AP::FLOATS: return Attribute::make_floats({a.floats().begin(), a.floats().end()});
    case AP::TENSOR: return Attribute::make_tensor(convert_tensor(c, a.t(), node.label() + " attribute '" + a.name() + "'"));
    case AP::STRINGS: {
      Attribute r;
      r.kind = Attribute::Kind::strings;
      r.strings.assign(a.strings().begin(), a.strings().end());
      return r;
    }
    default: break;
  }
  throw Error(ErrorCode::unsupported, c.file + ": " + node.label() + ": attribute '" + a.name() + "' has an unsupported type (" +
                                          std::to_string(a.type()) + ")");
}

// Converts `m`, releasing each initializer's bytes once copied (the peak holds one copy of
// the weights, not two).
Graph convert_model(const Ctx& c, onnx::ModelProto& m) {
  Graph g;
  g.producer = m.producer_name() + (m.producer_version().empty() ? "" : " " + m.producer_version());
  g.opset = -1;
  for (const auto& op : m.opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx") g.opset = op.version();
  if (g.opset < 0) {
    if (m.opset_import_size() == 0) g.opset = 1;
    else bad(c, "no opset for the default ONNX domain");
  }
  if (g.opset < kMinOpset || g.opset > kMaxOpset)
    throw Error(ErrorCode::unsupported, c.file + ": opset " + std::to_string(g.opset) + " is not supported (voxinfer reads opsets " +
                                            std::to_string(kMinOpset) + " to " + std::to_string(kMaxOpset) + ")");
  if (!m.has_graph()) bad(c, "the model has no graph (is this an ONNX file?)");
  auto& gp = *m.mutable_graph();
  g.name = gp.name();
  for (auto& t : *gp.mutable_initializer()) {
    if (t.name().empty()) bad(c, "an initializer has no name");
    g.initializers[t.name()] = convert_tensor(c, t, "initializer");
    if (t.has_raw_data()) std::string().swap(*t.mutable_raw_data());
  }
  if (gp.sparse_initializer_size()) throw Error(ErrorCode::unsupported, c.file + ": sparse initializers are not supported");
  for (const auto& v : gp.input())
    if (!g.initializers.count(v.name())) g.inputs.push_back(convert_value_info(c, v));
  for (const auto& v : gp.output()) g.outputs.push_back(convert_value_info(c, v));
  int idx = 0;
  for (const auto& np : gp.node()) {
    Node n;
    n.name = np.name().empty() ? np.op_type() + "_" + std::to_string(idx) : np.name();
    n.op_type = np.op_type();
    n.domain = np.domain();
    n.inputs.assign(np.input().begin(), np.input().end());
    n.outputs.assign(np.output().begin(), np.output().end());
    for (const auto& a : np.attribute()) {
      if (!a.ref_attr_name().empty())
        throw Error(ErrorCode::unsupported, c.file + ": " + n.label() + ": attribute '" + a.name() + "' refers to a function attribute");
      n.attrs[a.name()] = convert_attribute(c, a, n);
    }
    g.nodes.push_back(std::move(n));
    ++idx;
  }
  if (g.inputs.empty()) bad(c, "the graph has no runtime inputs");
  if (g.outputs.empty()) bad(c, "the graph has no outputs");
  try {
    g.toposort();
  } catch (const Error& e) {
    throw Error(e.code(), c.file + ": " + e.what());
  }
  return g;
}

}  // namespace

namespace {

void parse_model(const Ctx& c, const std::string& bytes, onnx::ModelProto& m) {
  google::protobuf::io::ArrayInputStream raw(bytes.data(), static_cast<int>(std::min<std::size_t>(bytes.size(), INT_MAX)));
  google::protobuf::io::CodedInputStream coded(&raw);
  coded.SetTotalBytesLimit(INT_MAX);
  if (!m.ParseFromCodedStream(&coded) || !coded.ConsumedEntireMessage())
    bad(c, "not a valid ONNX model (protobuf parsing failed: truncated or not an ONNX file)");
}

}  // namespace

Graph import_onnx_bytes(const std::string& bytes, const std::string& name, const std::string& base_dir) {
  const Ctx c{name, base_dir};
  onnx::ModelProto m;
  parse_model(c, bytes, m);
  return convert_model(c, m);
}

Graph import_onnx(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(ErrorCode::invalid_input, path + ": no such model file");
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(ErrorCode::io, path + ": cannot read its size");
  if (size >= static_cast<std::uintmax_t>(INT_MAX))
    throw Error(ErrorCode::unsupported, path + ": model files of 2 GB or more must keep their weights as external data");
  if (size == 0) throw Error(ErrorCode::invalid_model, path + ": empty file");
  const auto dir = std::filesystem::path(path).parent_path().string();
  const Ctx c{path, dir.empty() ? "." : dir};
  Graph g;
  {
    onnx::ModelProto m;
    {
      std::ifstream in(path, std::ios::binary);
      std::string bytes(static_cast<std::size_t>(size), '\0');
      if (!in || !in.read(bytes.data(), static_cast<std::streamsize>(size))) throw Error(ErrorCode::io, path + ": cannot read the file");
      parse_model(c, bytes, m);
    }  // the file's bytes go before the weights are copied out of the message
    g = convert_model(c, m);
  }
#ifdef __GLIBC__
  malloc_trim(0);  // hand the parser's freed heap back before the session allocates
#endif
  return g;
}

}  // namespace voxinfer::graph
