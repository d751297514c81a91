"""Builds the extension voxinfer._voxinfer with CMake (pyproject.toml holds the metadata).

The CMake build folder is build-pip/cmake (VOXINFER_PIP_BUILD_DIR overrides it); extra
configure options go in CMAKE_ARGS. The wheel holds the module and the voxinfer shared
library beside it (the module's run path includes $ORIGIN).
"""

import os
import pathlib
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build = pathlib.Path(os.environ.get("VOXINFER_PIP_BUILD_DIR", ROOT / "build-pip" / "cmake")).resolve()
        stage = build / "stage"
        configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                     "-DVOXINFER_PYTHON=ON", "-DVOXINFER_BUILD_TESTS=OFF", "-DVOXINFER_BUILD_EXAMPLES=OFF",
                     "-DVOXINFER_BUILD_BENCHMARKS=OFF", f"-DPython_EXECUTABLE={sys.executable}",
                     "-DVOXINFER_PYTHON_INSTALL_DIR=python"]
        if shutil.which("ninja") and not (build / "CMakeCache.txt").exists():
            configure += ["-G", "Ninja"]
        configure += os.environ.get("CMAKE_ARGS", "").split()
        subprocess.check_call(configure)
        subprocess.check_call(["cmake", "--build", str(build), "--target", "_voxinfer", "--parallel", str(os.cpu_count() or 1)])
        # Installing rewrites the module's run path from the build tree's to $ORIGIN.
        shutil.rmtree(stage, ignore_errors=True)
        subprocess.check_call(["cmake", "--install", str(build), "--component", "python", "--prefix", str(stage)])
        built = list((stage / "python" / "voxinfer").glob("_voxinfer*.so"))
        if len(built) != 1:
            raise RuntimeError(f"expected one built module in {stage}, found {built}")
        target = pathlib.Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[0], target)
        library, soname = (build / "python" / "library.txt").read_text().split()
        shutil.copyfile(library, target.parent / soname)


setup(ext_modules=[CMakeExtension("voxinfer._voxinfer")], cmdclass={"build_ext": CMakeBuild},
      options={"build": {"build_base": "build-pip"}})
