"""Build the compiled extension ``fastdl_ext`` (Cython, OpenMP, BLAS through SciPy).

Every ``fastdl_ext/*.pyx`` becomes one extension module. Nothing is linked
against a BLAS: the Cython code cimports ``scipy.linalg.cython_blas``, whose
function pointers arrive at import time through SciPy's capsule. The hand-written C
the ``.pxd`` files declare lives in ``fastdl_ext/include/*.h``; MANIFEST.in ships it
and the Cython sources in the sdist (and, as package data, in the wheel).
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
"""


def _check_openmp(compiler_cmd):
    """Compile and link a tiny OpenMP program; raise a clear error if that fails."""
    tmpdir = tempfile.mkdtemp()
    try:
        source = os.path.join(tmpdir, "probe.c")
        with open(source, "w") as f:
            f.write(OPENMP_PROBE)
        cmd = list(compiler_cmd) + ["-fopenmp", source, "-o", os.path.join(tmpdir, "probe")]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError:
            raise SystemExit(
                "fastdl: no C compiler found (tried %r). Install one, e.g. "
                "'apt-get install build-essential' (Debian/Ubuntu)." % compiler_cmd[0])
        if result.returncode != 0:
            raise SystemExit(
                "fastdl: the C compiler %r cannot build OpenMP code (-fopenmp). "
                "Install GCC with libgomp, e.g. 'apt-get install build-essential'.\n%s"
                % (compiler_cmd[0], result.stderr.strip()))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


class BuildExtWithChecks(build_ext):
    """build_ext that fails early and clearly without a compiler or OpenMP."""

    def build_extensions(self):
        compiler_so = getattr(self.compiler, "compiler_so", None)
        if compiler_so:
            _check_openmp(compiler_so[:1])
        elif shutil.which("cc") is None and sys.platform != "win32":
            raise SystemExit("fastdl: no C compiler found; install gcc.")
        super().build_extensions()


# the hand-written C the .pxd files declare (``cdef extern from "fastdl_*.h"``)
INCLUDE = os.path.join("fastdl_ext", "include")


def _extensions():
    compile_args = ["-O3", "-fopenmp", "-fno-math-errno"]
    if os.environ.get("FASTDL_NATIVE", "0") == "1":
        compile_args.append("-march=native")
    headers = sorted(glob.glob(os.path.join(INCLUDE, "*.h")))
    modules = []
    for pyx in sorted(glob.glob(os.path.join("fastdl_ext", "*.pyx"))):
        name = "fastdl_ext." + os.path.splitext(os.path.basename(pyx))[0]
        modules.append(Extension(
            name, [pyx],
            include_dirs=[INCLUDE, numpy.get_include()],
            depends=headers,
            extra_compile_args=compile_args,
            extra_link_args=["-fopenmp"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    return cythonize(modules, language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True,
        "initializedcheck": False,
    })


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExtWithChecks})
