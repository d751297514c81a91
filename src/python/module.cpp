// The extension module voxinfer._voxinfer: exceptions, NumPy conversions and the parts
// registered by session.cpp, volume.cpp and pipeline.cpp. The package voxinfer re-exports it.
#include <pybind11/pybind11.h>

#include <array>
#include <atomic>
#include <cstring>
#include <exception>
#include <utility>

#include "bindings.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/version.h"

namespace voxinfer::python {
namespace {

std::atomic<std::int64_t> g_input_copies{0};

// One Python class per ErrorCode, in the enum's order; created once at import.
std::array<PyObject*, 5> g_error_classes{};

template <typename T>
Tensor wrap_or_convert(py::handle obj, DType want, const std::string& what, std::vector<py::object>& keep) {
  using Exact = py::array_t<T, py::array::c_style>;
  if (Exact::check_(obj) && py::detail::check_flags(obj.ptr(), py::detail::npy_api::NPY_ARRAY_ALIGNED_)) {
    auto a = py::reinterpret_borrow<py::array>(obj);
    std::vector<std::int64_t> dims(a.shape(), a.shape() + a.ndim());
    keep.push_back(a);
    return Tensor::wrap(const_cast<void*>(a.data()), Shape(dims), want);
  }
  // forcecast: float64 (NumPy's default) and integer arrays become the model's dtype.
  auto converted = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(obj);  // clears NumPy's error
  if (!converted)
    throw Error(ErrorCode::invalid_input, what + ": cannot be read as a " + std::string(dtype_name(want)) +
                                              " array (got " +
                                              py::str(py::type::of(obj).attr("__name__")).cast<std::string>() + ")");
  ++g_input_copies;
  std::vector<std::int64_t> dims(converted.shape(), converted.shape() + converted.ndim());
  keep.push_back(converted);
  return Tensor::wrap(const_cast<void*>(static_cast<const void*>(converted.data())), Shape(dims), want);
}

}  // namespace

py::dtype numpy_dtype(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return py::dtype::of<float>();
    case DType::f16:
      return py::dtype("float16");
    case DType::f64:
      return py::dtype::of<double>();
    case DType::i64:
      return py::dtype::of<std::int64_t>();
    case DType::i32:
      return py::dtype::of<std::int32_t>();
    case DType::i16:
      return py::dtype::of<std::int16_t>();
    case DType::u8:
      return py::dtype::of<std::uint8_t>();
    case DType::boolean:
      return py::dtype::of<bool>();
  }
  throw Error(ErrorCode::internal, "unknown dtype");
}

Tensor array_to_tensor(py::handle obj, DType want, const std::string& what, std::vector<py::object>& keep) {
  if (obj.is_none()) throw Error(ErrorCode::invalid_input, what + ": expected an array, got None");
  switch (want) {
    case DType::f32:
      return wrap_or_convert<float>(obj, want, what, keep);
    case DType::f64:
      return wrap_or_convert<double>(obj, want, what, keep);
    case DType::i64:
      return wrap_or_convert<std::int64_t>(obj, want, what, keep);
    case DType::i32:
      return wrap_or_convert<std::int32_t>(obj, want, what, keep);
    case DType::i16:
      return wrap_or_convert<std::int16_t>(obj, want, what, keep);
    case DType::u8:
      return wrap_or_convert<std::uint8_t>(obj, want, what, keep);
    case DType::boolean:
      return wrap_or_convert<bool>(obj, want, what, keep);
    case DType::f16:
      break;
  }
  throw Error(ErrorCode::unsupported, what + ": float16 inputs are not supported");
}

py::array tensor_to_array(const Tensor& tensor) {
  VOXINFER_CHECK(tensor.layout() == Layout::plain, internal, "a blocked tensor cannot be returned to Python");
  auto* held = new Tensor(tensor.contiguous());
  py::capsule owner(held, [](void* p) { delete static_cast<Tensor*>(p); });
  std::vector<py::ssize_t> shape, strides;
  const auto itemsize = static_cast<py::ssize_t>(dtype_size(held->dtype()));
  for (int i = 0; i < held->rank(); ++i) {
    shape.push_back(static_cast<py::ssize_t>(held->dim(i)));
    strides.push_back(static_cast<py::ssize_t>(held->stride(i)) * itemsize);
  }
  return py::array(numpy_dtype(held->dtype()), shape, strides, held->raw(), owner);
}

std::int64_t input_copies() {
  return g_input_copies.load();
}

void register_errors(py::module_& m) {
  struct Spec {
    ErrorCode code;
    const char* name;
    const char* doc;
    bool value_error;
  };
  const Spec specs[] = {
      {ErrorCode::invalid_input, "InvalidInputError",
       "A wrong input: a missing file, a bad array shape or dtype, an unreadable volume (exit status 2 on the command "
       "line).",
       true},
      {ErrorCode::invalid_model, "InvalidModelError",
       "A model or model package voxinfer cannot load: a broken file, a wrong field (exit status 3).", false},
      {ErrorCode::unsupported, "UnsupportedError",
       "Something valid that voxinfer does not support (an operator, a transform, a pixel type; exit status 3).",
       false},
      {ErrorCode::io, "IoError", "A file or folder that cannot be read or written (exit status 2).", false},
      {ErrorCode::internal, "InternalError", "A bug in voxinfer (exit status 1).", false},
  };
  PyObject* base = PyErr_NewExceptionWithDoc(
      "voxinfer.Error",
      "Base class of every voxinfer error. str(e) is the same one-line message the command line prints; "
      "e.code is the error code name ('invalid_input', 'invalid_model', 'unsupported', 'io', 'internal').",
      PyExc_RuntimeError, nullptr);
  if (!base) throw py::error_already_set();
  m.add_object("Error", py::handle(base));
  for (const Spec& s : specs) {
    const std::string qualified = std::string("voxinfer.") + s.name;
    py::tuple bases = s.value_error ? py::make_tuple(py::handle(base), py::handle(PyExc_ValueError))
                                    : py::make_tuple(py::handle(base));
    PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), s.doc, bases.ptr(), nullptr);
    if (!cls) throw py::error_already_set();
    py::handle(cls).attr("code") = error_code_name(s.code);
    m.add_object(s.name, py::handle(cls));
    g_error_classes[static_cast<std::size_t>(s.code)] = cls;
  }
  py::handle(base).attr("code") = py::none();

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      PyErr_SetString(g_error_classes[static_cast<std::size_t>(e.code())], e.what());
    }
  });
}

}  // namespace voxinfer::python

PYBIND11_MODULE(_voxinfer, m) {
  namespace py = pybind11;
  using namespace voxinfer::python;
  m.doc() = "voxinfer's compiled core; use the package voxinfer, which re-exports it.";
  m.attr("__version__") = VOXINFER_VERSION_STRING;
  register_errors(m);
  register_session(m);
  register_volume(m);
  register_pipeline(m);
  m.def("set_num_threads", &voxinfer::set_num_threads, py::arg("n"),
        "Sets the threads every later run uses (0: VOXINFER_NUM_THREADS, else all cores). Process-wide.");
  m.def("num_threads", &voxinfer::num_threads, "Threads the next run uses.");
  m.def("_input_copies", &input_copies, "Inputs converted by copying since import (for tests of zero-copy).");
}
