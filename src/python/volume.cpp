// voxinfer.Volume (voxels + LPS geometry), read_volume and write_volume.
#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "bindings.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/volume.h"
#include "voxinfer/io/image_io.h"

namespace voxinfer::python {
namespace {

Eigen::Vector3d vector3(py::handle obj, const char* what) {
  auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(obj);
  if (!a || a.size() != 3 || a.ndim() != 1) {
    throw Error(ErrorCode::invalid_input, std::string(what) + " must be three numbers (x, y, z)");
  }
  return {a.at(0), a.at(1), a.at(2)};
}

Eigen::Matrix3d matrix3(py::handle obj, const char* what) {
  auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(obj);
  // SimpleITK gives the direction as 9 numbers, row by row; NumPy users a 3x3 array.
  if (!a || a.size() != 9 || !(a.ndim() == 1 || (a.ndim() == 2 && a.shape(0) == 3))) {
    throw Error(ErrorCode::invalid_input, std::string(what) + " must be a 3x3 matrix or 9 numbers row by row");
  }
  Eigen::Matrix3d m;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) m(r, c) = a.data()[r * 3 + c];
  return m;
}

py::tuple tuple3(const Eigen::Vector3d& v) {
  return py::make_tuple(v[0], v[1], v[2]);
}

py::array_t<double> matrix_array(const Eigen::MatrixXd& m) {
  py::array_t<double> a({m.rows(), m.cols()});
  auto r = a.mutable_unchecked<2>();
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) r(i, j) = m(i, j);
  return a;
}

// Copies a [Z, Y, X] or [C, Z, Y, X] array into a new float32 Volume.
Volume volume_from_array(py::handle obj, const Geometry& g) {
  auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(obj);
  if (!a) {
    throw Error(ErrorCode::invalid_input, "Volume: the voxels must be a numeric array");
  }
  if (a.ndim() != 3 && a.ndim() != 4)
    throw Error(ErrorCode::invalid_input,
                "Volume: the array must be [Z, Y, X] or [C, Z, Y, X], got " + std::to_string(a.ndim()) + " dimensions");
  const bool c = a.ndim() == 4;
  const std::int64_t channels = c ? a.shape(0) : 1;
  Volume v(channels, a.shape(c ? 1 : 0), a.shape(c ? 2 : 1), a.shape(c ? 3 : 2), g);
  if (a.size() > 0) std::memcpy(v.data.raw(), a.data(), static_cast<std::size_t>(a.size()) * sizeof(float));
  return v;
}

Geometry geometry_from(py::handle spacing, py::handle origin, py::handle direction) {
  Geometry g;
  if (!spacing.is_none()) g.spacing = vector3(spacing, "spacing");
  if (!origin.is_none()) g.origin = vector3(origin, "origin");
  if (!direction.is_none()) g.direction = matrix3(direction, "direction");
  g.validate("Volume");
  return g;
}

py::array volume_array(py::object self) {
  auto& v = self.cast<Volume&>();
  const Tensor& t = v.data;
  VOXINFER_CHECK(t.dtype() == DType::f32 && t.rank() == 4 && t.layout() == Layout::plain, internal,
                 "a Volume holds a float32 [C, Z, Y, X] tensor");
  std::vector<py::ssize_t> shape, strides;
  for (int i = 0; i < 4; ++i) {
    shape.push_back(static_cast<py::ssize_t>(t.dim(i)));
    strides.push_back(static_cast<py::ssize_t>(t.stride(i) * 4));
  }
  // A view: writes go to the volume; the array keeps the Volume alive.
  return py::array(py::dtype::of<float>(), shape, strides, v.data.raw(), self);
}

std::string volume_repr(const Volume& v) {
  const auto& g = v.geometry;
  char buf[256];
  std::snprintf(buf, sizeof buf, "Volume(shape=(%lld, %lld, %lld, %lld), spacing=(%g, %g, %g), orientation='%s')",
                static_cast<long long>(v.channels()), static_cast<long long>(v.nz()), static_cast<long long>(v.ny()),
                static_cast<long long>(v.nx()), g.spacing[0], g.spacing[1], g.spacing[2], g.orientation_code().c_str());
  return buf;
}

}  // namespace

void register_volume(py::module_& m) {
  py::class_<Volume>(m, "Volume", R"doc(Voxels with their place in patient space, as ITK and DICOM define it.

Volume(array, spacing=None, origin=None, direction=None)

array: [Z, Y, X] or [C, Z, Y, X] (X fastest: SimpleITK's GetArrayFromImage order), copied
    as float32. spacing and origin are (x, y, z) in mm; direction is the 3x3 LPS direction
    matrix whose column i is index axis i's unit vector (SimpleITK's GetDirection as 3x3).
    The defaults are 1 mm, the origin at 0 and the identity.

.array is always [C, Z, Y, X] float32 and a view: writing to it changes the volume. A
NIfTI/nibabel array is [X, Y, Z]: volume.array[0].T is nibabel's order, and .affine is
nibabel's RAS affine for that order.)doc")
      .def(py::init([](py::handle array, py::handle spacing, py::handle origin, py::handle direction) {
             return volume_from_array(array, geometry_from(spacing, origin, direction));
           }),
           py::arg("array"), py::arg("spacing") = py::none(), py::arg("origin") = py::none(),
           py::arg("direction") = py::none())
      .def_static(
          "from_affine",
          [](py::handle array, py::handle affine) {
            auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(affine);
            if (!a || a.ndim() != 2 || a.shape(0) != 4 || a.shape(1) != 4) {
              throw Error(ErrorCode::invalid_input, "affine must be a 4x4 matrix");
            }
            Eigen::Matrix4d ras;
            for (int r = 0; r < 4; ++r)
              for (int c = 0; c < 4; ++c) ras(r, c) = a.at(r, c);
            Geometry g = Geometry::from_affine_ras(ras);
            g.validate("Volume");
            return volume_from_array(array, g);
          },
          py::arg("array"), py::arg("affine"),
          "A Volume from a [Z, Y, X] or [C, Z, Y, X] array and a voxel -> RAS affine (nibabel's) of (x, y, z) "
          "indices. The affine must have no shear.")
      .def_property_readonly("array", &volume_array, "The voxels, float32 [C, Z, Y, X], a view of the volume.")
      .def_property_readonly(
          "shape", [](const Volume& v) { return py::make_tuple(v.channels(), v.nz(), v.ny(), v.nx()); }, "(C, Z, Y, X)")
      .def_property_readonly("channels", &Volume::channels)
      .def_property(
          "spacing", [](const Volume& v) { return tuple3(v.geometry.spacing); },
          [](Volume& v, py::handle s) {
            Geometry g = v.geometry;
            g.spacing = vector3(s, "spacing");
            g.validate("Volume");
            v.geometry = g;
          },
          "Voxel size (x, y, z) in mm.")
      .def_property(
          "origin", [](const Volume& v) { return tuple3(v.geometry.origin); },
          [](Volume& v, py::handle o) {
            Geometry g = v.geometry;
            g.origin = vector3(o, "origin");
            g.validate("Volume");
            v.geometry = g;
          },
          "LPS position (mm) of the first voxel's centre, as SimpleITK's GetOrigin.")
      .def_property(
          "direction", [](const Volume& v) { return matrix_array(v.geometry.direction); },
          [](Volume& v, py::handle d) {
            Geometry g = v.geometry;
            g.direction = matrix3(d, "direction");
            g.validate("Volume");
            v.geometry = g;
          },
          "3x3 LPS direction matrix, column i the unit vector of index axis i (x, y, z); "
          "SimpleITK's GetDirection reshaped to 3x3.")
      .def_property_readonly(
          "affine", [](const Volume& v) { return matrix_array(v.geometry.affine_ras()); },
          "4x4 voxel (x, y, z) -> RAS mm affine, as nibabel's img.affine.")
      .def_property_readonly(
          "affine_lps", [](const Volume& v) { return matrix_array(v.geometry.affine_lps()); },
          "4x4 voxel (x, y, z) -> LPS mm affine (ITK's physical space).")
      .def_property_readonly(
          "orientation", [](const Volume& v) { return v.geometry.orientation_code(); },
          "Three-letter code of the axes' directions, nibabel's convention ('RAS', 'LPS', ...).")
      .def_property_readonly(
          "metadata", [](const Volume& v) { return v.metadata; },
          "Source metadata (DICOM identifiers and modules), a dict of strings.")
      .def(
          "copy",
          [](const Volume& v) {
            Volume c = v;
            c.data = v.data.clone();
            return c;
          },
          "A deep copy.")
      .def("__repr__", &volume_repr);

  m.def(
      "read_volume",
      [](const std::string& path, std::optional<std::string> series, bool allow_uneven) {
        ReadOptions o;
        o.series_uid = series.value_or("");
        o.allow_uneven = allow_uneven;
        py::gil_scoped_release release;
        return read_volume(path, o);
      },
      py::arg("path"), py::arg("series") = py::none(), py::arg("allow_uneven") = false,
      R"doc(Reads a NIfTI, NRRD or MetaImage file, or a DICOM series (a folder or one file).

series: the SeriesInstanceUID to read from a DICOM folder (default: the largest 3D series).
allow_uneven: resample a series with unevenly spaced slices instead of refusing it.
Returns a Volume, float32 [C, Z, Y, X] with LPS geometry (4D files: one channel per volume).)doc");
  m.def(
      "write_volume",
      [](const std::string& path, const Volume& volume, const std::string& pixel_type) {
        WriteOptions o;
        o.pixel_type = parse_pixel_type(pixel_type);
        py::gil_scoped_release release;
        write_volume(path, volume, o);
      },
      py::arg("path"), py::arg("volume"), py::arg("pixel_type") = "auto",
      R"doc(Writes a Volume as .nii, .nii.gz, .nrrd or .mha (the extension decides), geometry exact.

pixel_type: 'auto' (integer-valued data: the smallest of uint8, int16, uint16 that holds it;
else float32), 'float32', 'int16', 'uint8' or 'uint16'. Values the type cannot hold exactly
are an error. The file appears atomically.)doc");
}

}  // namespace voxinfer::python
