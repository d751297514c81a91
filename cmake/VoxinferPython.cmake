# The Python module (src/python): on by default when a Python 3 with its development files
# and pybind11 are found. Python_EXECUTABLE picks the interpreter (the one with NumPy).
include_guard(GLOBAL)

find_package(Python 3.8 QUIET COMPONENTS Interpreter Development.Module)
if(Python_FOUND)
  # Found after Python, pybind11 uses FindPython's targets and interpreter.
  find_package(pybind11 2.6 CONFIG QUIET)
endif()
# A sanitized module could only be imported with the sanitizer runtime preloaded: off there.
if(Python_FOUND AND pybind11_FOUND AND NOT VOXINFER_SANITIZE)
  set(_voxinfer_python_default ON)
else()
  set(_voxinfer_python_default OFF)
endif()
option(VOXINFER_PYTHON "Build the Python module (needs pybind11 and Python development files)" ${_voxinfer_python_default})
if(VOXINFER_PYTHON AND NOT (Python_FOUND AND pybind11_FOUND))
  message(FATAL_ERROR "VOXINFER_PYTHON=ON needs Python 3 with its development files and pybind11 "
                      "(Debian: python3-dev pybind11-dev)")
endif()
