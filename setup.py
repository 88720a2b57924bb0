"""Build the optional compiled training engine, `mnist_xp._cengine._epoch`.

Everything else about the package is in pyproject.toml; this file only declares the
C extension, because its flags come from `scipy_openblas32` at build time. The
extension is optional: where no C compiler (or no OpenMP) is found, or the build fails,
setuptools prints a warning and installs the package without it, and the NumPy engine
trains (the engine line says why). See README, "Engines".
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    """build_ext with OpenMP and optimisation flags for the compiler in use."""

    def build_extensions(self):
        """Add the compiler-specific flags, then build as usual."""
        if self.compiler.compiler_type == "msvc":
            compile_args, link_args = ["/O2", "/openmp"], []
        else:
            # -O3 vectorises the hand-written loops (-fno-math-errno lets sqrtf vectorise:
            # nothing reads errno); no -march: the AVX2/FMA versions are target_clones
            # picked at load time, so the build runs on any x86-64
            compile_args = ["-O3", "-fopenmp", "-fno-math-errno", "-std=gnu11"]
            link_args = ["-fopenmp"]
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()


def extensions():
    """The compiled engine, linked against scipy-openblas32 (none if it is missing)."""
    try:
        import scipy_openblas32 as openblas
    except ImportError:
        print("mnist_xp: scipy-openblas32 not importable; building without the compiled "
              "engine", file=sys.stderr)
        return []
    return [Extension(
        "mnist_xp._cengine._epoch",
        sources=["src/mnist_xp/_cengine/epoch.c"],
        include_dirs=[openblas.get_include_dir()],
        library_dirs=[openblas.get_lib_dir()],
        libraries=[openblas.get_library()],
        # found at run time through `import scipy_openblas32`, which loads it first
        # (RTLD_GLOBAL); no rpath into the temporary build environment
        optional=True,
    )]


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
