"""Build the compiled data plane (Cython extensions) of fastmesh.

Cython is a build requirement (pyproject.toml), so `pip install .` compiles
the extensions on a fresh machine. A missing C compiler stops the build with
a message that says what to install.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The data-plane modules, one extension each (each has a .pxd so the others can
# cimport its C-level API).
MODULES = ["_buffers", "_timers", "_stats", "_http1", "_hpack", "_h2", "_lb", "_router", "_core",
           "_tls_tickets",
           # control side: EDS pushes read from protobuf bytes (control/xds/eds.py)
           "_eds_wire"]

DIRECTIVES = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}


class BuildExt(build_ext):
    """build_ext that turns a missing compiler into a readable error."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated types here
            if "compiler" in str(exc).lower() or "gcc" in str(exc) or "cc" in str(exc).split():
                sys.exit(
                    "fastmesh: building the compiled data plane needs a C compiler "
                    "and the Python headers (Debian/Ubuntu: apt-get install gcc python3-dev). "
                    f"Original error: {exc}"
                )
            raise

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            text = str(exc)
            if "command" in text and ("not found" in text or "failed" in text):
                sys.exit(
                    f"fastmesh: could not compile {ext.name}: {text}. A C compiler and the "
                    "Python headers are required (Debian/Ubuntu: apt-get install gcc python3-dev)."
                )
            raise


def extensions():
    from Cython.Build import cythonize

    macros = []
    if os.environ.get("FASTMESH_DEBUG"):
        macros.append(("FASTMESH_DEBUG", "1"))
    exts = [
        Extension(
            f"fastmesh.{name}",
            [f"src/fastmesh/{name}.pyx"],
            define_macros=macros,
            extra_compile_args=["-O2"],
        )
        for name in MODULES
        # FASTMESH_MODULES=_http1,_lb builds only those (for working on one module)
        if not os.environ.get("FASTMESH_MODULES")
        or name in os.environ["FASTMESH_MODULES"].split(",")
    ]
    return cythonize(
        exts,
        compiler_directives=DIRECTIVES,
        include_path=["src"],
        annotate=bool(os.environ.get("FASTMESH_ANNOTATE")),
        quiet=True,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
