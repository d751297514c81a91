// voxinfer.Session: a model loaded once and run on NumPy arrays with the GIL released.
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "voxinfer/core/error.h"
#include "voxinfer/graph/session.h"

namespace voxinfer::python {
namespace {

// A Session is not re-entrant (cached plans, reused output buffers): one run at a time.
struct PySession {
  graph::Session session;
  std::string path;
  std::mutex mutex;

  PySession(graph::Session s, std::string p) : session(std::move(s)), path(std::move(p)) {}

  std::vector<Tensor> run(const std::vector<Tensor>& inputs) {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex);
    return session.run(inputs);
  }
};

// A dimension as Python shows it: the size, the symbol's name, or None when unknown.
py::object dim_to_python(const graph::Dim& d) {
  if (d.known()) return py::int_(d.value);
  if (!d.symbol.empty()) return py::str(d.symbol);
  return py::none();
}

py::object shape_to_python(const graph::ValueInfo& v) {
  if (!v.has_shape) return py::none();
  py::tuple t(v.dims.size());
  for (std::size_t i = 0; i < v.dims.size(); ++i) t[i] = dim_to_python(v.dims[i]);
  return t;
}

std::string info_repr(const graph::ValueInfo& v) {
  return "TensorInfo(name='" + v.name + "', shape=" + py::repr(shape_to_python(v)).cast<std::string>() +
         ", dtype=" + py::str(numpy_dtype(v.dtype)).cast<std::string>() + ")";
}

std::vector<Tensor> inputs_in_order(PySession& s, const py::handle& inputs, std::vector<py::object>& keep) {
  const auto& infos = s.session.inputs();
  std::vector<Tensor> tensors;
  if (py::isinstance<py::dict>(inputs)) {
    auto d = py::reinterpret_borrow<py::dict>(inputs);
    for (const auto& [key, value] : d) {
      if (!py::isinstance<py::str>(key))
        throw Error(ErrorCode::invalid_input, "input names must be strings, got " + py::repr(key).cast<std::string>());
      const auto name = key.cast<std::string>();
      bool known = false;
      for (const auto& vi : infos) known = known || vi.name == name;
      if (!known) throw Error(ErrorCode::invalid_input, "the model has no input named '" + name + "'");
    }
    for (const auto& vi : infos) {
      if (!d.contains(vi.name)) throw Error(ErrorCode::invalid_input, "missing model input '" + vi.name + "'");
      tensors.push_back(array_to_tensor(d[py::str(vi.name)], vi.dtype, "input '" + vi.name + "'", keep));
    }
    return tensors;
  }
  if (py::isinstance<py::list>(inputs) || py::isinstance<py::tuple>(inputs)) {
    auto seq = py::reinterpret_borrow<py::sequence>(inputs);
    if (seq.size() != infos.size())
      throw Error(ErrorCode::invalid_input,
                  "the model takes " + std::to_string(infos.size()) + " input(s), got " + std::to_string(seq.size()));
    for (std::size_t i = 0; i < infos.size(); ++i)
      tensors.push_back(array_to_tensor(seq[i], infos[i].dtype, "input '" + infos[i].name + "'", keep));
    return tensors;
  }
  if (infos.size() != 1)
    throw Error(ErrorCode::invalid_input, "the model takes " + std::to_string(infos.size()) +
                                              " inputs: pass a dict {name: array} or a list in input order");
  tensors.push_back(array_to_tensor(inputs, infos[0].dtype, "input '" + infos[0].name + "'", keep));
  return tensors;
}

py::object run(PySession& s, const py::handle& inputs) {
  std::vector<py::object> keep;  // arrays the tensors point into, alive until the run ends
  const std::vector<Tensor> tensors = inputs_in_order(s, inputs, keep);
  const std::vector<Tensor> outputs = s.run(tensors);
  const auto& infos = s.session.outputs();
  if (py::isinstance<py::dict>(inputs)) {
    py::dict d;
    for (std::size_t i = 0; i < outputs.size(); ++i) d[py::str(infos[i].name)] = tensor_to_array(outputs[i]);
    return d;
  }
  py::list l;
  for (const auto& t : outputs) l.append(tensor_to_array(t));
  const bool single_array = !py::isinstance<py::list>(inputs) && !py::isinstance<py::tuple>(inputs);
  if (single_array && outputs.size() == 1) return l[0];
  return l;
}

}  // namespace

void register_session(py::module_& m) {
  py::class_<graph::ValueInfo>(m, "TensorInfo", "Name, shape and dtype of a model input or output.")
      .def_readonly("name", &graph::ValueInfo::name)
      .def_property_readonly("shape", &shape_to_python,
                             "Tuple of dimensions: an int when fixed, the symbol's name (str) when symbolic, "
                             "None when unknown; None when even the rank is unknown.")
      .def_property_readonly(
          "dtype", [](const graph::ValueInfo& v) { return numpy_dtype(v.dtype); }, "NumPy dtype.")
      .def("__repr__", &info_repr);

  py::class_<PySession>(m, "Session", R"doc(A model loaded once and run many times on NumPy arrays.

Session(path, threads=None, optimize=True)

path: an ONNX file (.onnx) or a TF.js/Keras layers model (model.json, weights beside it).
threads: threads for each run (None: VOXINFER_NUM_THREADS or all cores). voxinfer has one
    thread pool per process, so this sets it at each run of this session.
optimize: run the graph passes (BatchNorm folding, activation fusion, ...).

A float32 C-contiguous input is read in place, without a copy; other arrays are converted
to the input's dtype first. Outputs are new arrays. The GIL is released while the network
runs, so sessions in several Python threads run at the same time; one session runs one call
at a time (concurrent calls on the same session wait for each other).)doc")
      .def(py::init([](const std::string& path, std::optional<int> threads, bool optimize) {
             if (threads && *threads < 0) throw Error(ErrorCode::invalid_input, "threads must be >= 0");
             graph::SessionOptions o;
             o.threads = threads.value_or(0);
             o.optimize = optimize;
             std::unique_ptr<PySession> s;
             {
               py::gil_scoped_release release;
               s = std::make_unique<PySession>(graph::Session::from_file(path, o), path);
             }
             return s;
           }),
           py::arg("path"), py::arg("threads") = py::none(), py::arg("optimize") = true)
      .def_property_readonly(
          "inputs", [](const PySession& s) { return s.session.inputs(); },
          "List of TensorInfo, in the order run() takes a list.")
      .def_property_readonly(
          "outputs", [](const PySession& s) { return s.session.outputs(); },
          "List of TensorInfo, in the order run() returns a list.")
      .def_readonly("path", &PySession::path)
      .def("run", &run, py::arg("inputs"), R"doc(Runs the model.

inputs: one array (models with one input), a list or tuple of arrays in the order of
    .inputs, or a dict {input name: array}.
Returns: for one array, the output array when the model has one output, else a list in
    the order of .outputs; for a list or tuple, a list; for a dict, a dict {output name: array}.
Raises InvalidInputError naming the input when a name, rank, dtype or dimension is wrong.)doc")
      .def("__call__", &run, py::arg("inputs"), "Same as run().")
      .def("__repr__", [](const PySession& s) {
        std::string r = "Session('" + s.path + "', inputs=[";
        for (std::size_t i = 0; i < s.session.inputs().size(); ++i)
          r += (i ? ", " : "") + info_repr(s.session.inputs()[i]);
        return r + "])";
      });
}

}  // namespace voxinfer::python
