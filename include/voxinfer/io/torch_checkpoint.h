// PyTorch checkpoints (.pth files in the zip format torch.save writes since torch 1.6): the
// pickled object as a tree of plain values, with tensors loaded from the archive's storages.
// The pickle is interpreted, never executed: no Python class is resolved or called, and any
// object voxinfer does not know becomes an opaque value that the caller may ignore.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "voxinfer/core/tensor.h"

namespace voxinfer {

// One Python value from a checkpoint's pickle.
struct PyValue {
  enum class Kind { none, boolean, integer, real, string, bytes, list, tuple, dict, tensor, opaque };

  Kind kind = Kind::none;
  bool boolean = false;
  std::int64_t integer = 0;
  double real = 0;
  std::string text;                                  // string / bytes; for opaque: the global's "module.name"
  std::vector<PyValue> items;                        // list, tuple (sets and frozensets read as lists)
  std::vector<std::pair<PyValue, PyValue>> entries;  // dict / OrderedDict, in insertion order
  Tensor tensor;                                     // kind == tensor: contiguous, plain layout

  // Defaulted in the source, where PyValue is complete: std::pair<PyValue, PyValue> needs a
  // complete type (clang with libstdc++ rejects inline defaults here).
  PyValue();
  PyValue(const PyValue&);
  PyValue(PyValue&&) noexcept;
  PyValue& operator=(const PyValue&);
  PyValue& operator=(PyValue&&) noexcept;
  ~PyValue();

  bool is_none() const noexcept { return kind == Kind::none; }
  bool is_opaque() const noexcept { return kind == Kind::opaque; }

  // The dict entry with this string key, or nullptr (also when this value is not a dict).
  const PyValue* find(std::string_view key) const;
  // The dict entry with this string key; throws Error(invalid_model) naming `what` and the key.
  const PyValue& at(std::string_view key, const std::string& what) const;

  // Typed access; a value of another kind throws Error(invalid_model) naming `what` and the
  // kind found (an opaque value names its Python class).
  bool as_bool(const std::string& what) const;
  std::int64_t as_int(const std::string& what) const;  // integer or boolean
  double as_real(const std::string& what) const;       // real, integer or boolean
  const std::string& as_string(const std::string& what) const;
  const Tensor& as_tensor(const std::string& what) const;
  // The items of a list or tuple.
  const std::vector<PyValue>& as_sequence(const std::string& what) const;
  // A list or tuple of integers.
  std::vector<std::int64_t> as_int_list(const std::string& what) const;

  // A short description for messages: "a string", "an opaque numpy.ndarray", ...
  std::string describe() const;
};

std::string_view py_kind_name(PyValue::Kind kind) noexcept;

// Reads a checkpoint. A missing file is Error(invalid_input); anything malformed or hostile
// (not a zip, legacy pre-1.6 format, bad pickle, storages that do not match the tensors
// built on them, big-endian data) is Error(invalid_model) naming the file and the problem.
PyValue load_torch_checkpoint(const std::filesystem::path& file);

// The same from the bytes of a checkpoint in memory; `name` stands for the file in messages.
PyValue load_torch_checkpoint_from_memory(std::span<const std::byte> bytes, const std::string& name);

// A state dict (str -> tensor) as name -> f32 tensor (integer and bool tensors converted).
// A value that is not a dict, a non-string key or a non-tensor value is Error(invalid_model)
// naming `what` and the key.
std::map<std::string, Tensor> torch_state_dict(const PyValue& dict, const std::string& what);

}  // namespace voxinfer
