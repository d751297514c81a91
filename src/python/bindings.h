// Shared pieces of the Python bindings: NumPy <-> Tensor conversions, the exception
// classes, and the registration function of each part of the module.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "voxinfer/core/tensor.h"

namespace voxinfer::python {

namespace py = pybind11;

// NumPy dtype of a DType (f16 as float16, boolean as bool).
py::dtype numpy_dtype(DType dtype);

// A read-only view of `obj` as a tensor of `want`. A C-contiguous, aligned, native-order array
// of that dtype is wrapped without copying; anything else numpy.asarray accepts is converted
// into a new array appended to `keep` (counted by input_copies()). `what` names the value in
// error messages.
Tensor array_to_tensor(py::handle obj, DType want, const std::string& what, std::vector<py::object>& keep);

// An array over the tensor's storage (contiguous first if needed); the array keeps it alive.
py::array tensor_to_array(const Tensor& tensor);

// Conversions array_to_tensor had to copy since the module was loaded (tests check zero-copy).
std::int64_t input_copies();

void register_errors(py::module_& m);
void register_session(py::module_& m);
void register_volume(py::module_& m);
void register_pipeline(py::module_& m);

}  // namespace voxinfer::python
