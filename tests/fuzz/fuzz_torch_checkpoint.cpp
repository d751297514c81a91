// libFuzzer harness for the PyTorch checkpoint reader. Inputs that start like a zip archive
// ("PK") are read as whole checkpoints; any other input is taken as the pickle (data.pkl) of a
// checkpoint whose archive also holds two small storages, so that mutations explore the
// unpickler rather than zip headers. Only voxinfer::Error may escape the reader. Built by
// the VOXINFER_FUZZ option (scripts/fuzz.sh); by hand:
//
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
//     tests/fuzz/fuzz_torch_checkpoint.cpp src/io/torch_checkpoint.cpp src/core/error.cpp \
//     src/core/memory.cpp $(pkg-config --cflags --libs libzip) -o fuzz_torch_checkpoint
#include <zip.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "voxinfer/io/torch_checkpoint.h"

namespace {

// A stored zip with data.pkl and storages "0" (4 floats) and "1" (2 halves), built in memory.
std::vector<std::byte> wrap_pickle(const std::uint8_t* data, std::size_t size) {
  static const char kFloats[16] = {0, 0, static_cast<char>(0x80), 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40,
                                   0, 0, static_cast<char>(0x80), 0x40};
  static const char kHalves[4] = {0, 0x3c, 0, static_cast<char>(0xc0)};
  std::vector<std::byte> out;
  zip_error_t err;
  zip_error_init(&err);
  zip_source_t* src = zip_source_buffer_create(nullptr, 0, 0, &err);
  if (!src) return out;
  zip_source_keep(src);
  if (zip_t* za = zip_open_from_source(src, ZIP_TRUNCATE, &err)) {
    const struct {
      const char* name;
      const void* bytes;
      std::size_t n;
    } files[] = {{"archive/data.pkl", data, size},
                 {"archive/data/0", kFloats, sizeof kFloats},
                 {"archive/data/1", kHalves, sizeof kHalves},
                 {"archive/version", "3\n", 2}};
    for (const auto& f : files) {
      zip_source_t* fs = zip_source_buffer(za, f.bytes, f.n, 0);
      const zip_int64_t idx = fs ? zip_file_add(za, f.name, fs, 0) : -1;
      if (idx < 0) {
        if (fs) zip_source_free(fs);
        continue;
      }
      zip_set_file_compression(za, static_cast<zip_uint64_t>(idx), ZIP_CM_STORE, 0);
    }
    if (zip_close(za) != 0) zip_discard(za);
    if (zip_source_open(src) == 0) {
      zip_source_seek(src, 0, SEEK_END);
      const zip_int64_t n = zip_source_tell(src);
      zip_source_seek(src, 0, SEEK_SET);
      if (n > 0) {
        out.resize(static_cast<std::size_t>(n));
        if (zip_source_read(src, out.data(), out.size()) != n) out.clear();
      }
      zip_source_close(src);
    }
  }
  zip_source_free(src);
  zip_error_fini(&err);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> zip;
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  if (size < 2 || data[0] != 'P' || data[1] != 'K') {
    zip = wrap_pickle(data, size);
    bytes = zip;
  }
  try {
    const voxinfer::PyValue v = voxinfer::load_torch_checkpoint_from_memory(bytes, "fuzz.pth");
    if (v.kind == voxinfer::PyValue::Kind::dict) (void)voxinfer::torch_state_dict(v, "fuzz.pth");
  } catch (const voxinfer::Error&) {
  }
  return 0;
}
