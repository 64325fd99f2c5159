"""The optional native part of fakehw: ``libnvidia-ml.so.1``, NVML in C
(``fakehw/nvml/native/fakenvml.c``), compiled against NVIDIA's own ``nvml.h`` from the
``nvidia-nvml-dev`` build requirement, and installed beside itself under the names a
driver installs: ``libnvidia-ml.so.1``, ``libnvidia-ml.so`` and
``libnvidia-ml.so.<driver version>``.

Optional: without a C compiler (or the header) ``pip install`` still succeeds, with a
warning, and ``fakehw exec`` says that only Python clients are served. Everything else
about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DRIVER_VERSION = "580.159.04"  # fakehw.contract.versions.DRIVER_VERSION
LIBRARY = "libnvidia-ml.so.1"
ALIASES = ("libnvidia-ml.so", f"libnvidia-ml.so.{DRIVER_VERSION}")
NATIVE = os.path.join("fakehw", "nvml", "native")


def nvml_include() -> str | None:
    """The directory of nvml.h in the nvidia-nvml-dev package (CUDA 13: nvidia/cu13)."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for sub in ("cu13", "nvml_dev", "cu12"):
            candidate = os.path.join(root, sub, "include")
            if os.path.isfile(os.path.join(candidate, "nvml.h")):
                return candidate
    return None


class BuildNvml(build_ext):
    """Builds the library as a plain shared object with the driver's soname."""

    def get_ext_filename(self, fullname: str) -> str:
        # asked with the module's last name (for its path) and with its full name
        if fullname == "libnvidia-ml":
            return LIBRARY
        if fullname == "fakehw.nvml.native.libnvidia-ml":
            return os.path.join(NATIVE, LIBRARY)
        return str(super().get_ext_filename(fullname))

    def build_extension(self, ext: Extension) -> None:
        include = nvml_include()
        if include is None:
            from setuptools.errors import CompileError

            raise CompileError("nvml.h not found (the nvidia-nvml-dev build requirement)")
        ext.include_dirs = [include, NATIVE]
        super().build_extension(ext)
        self.copy_aliases(self.get_ext_fullpath(ext.name))

    @staticmethod
    def copy_aliases(built: str) -> None:
        """The driver's other names (a wheel holds no symlinks: copies, 0.2 MB each)."""
        for alias in ALIASES:
            shutil.copyfile(built, os.path.join(os.path.dirname(built), alias))

    def copy_extensions_to_source(self) -> None:  # an editable install: into the tree
        super().copy_extensions_to_source()
        library = os.path.join(NATIVE, LIBRARY)
        if os.path.exists(library):
            self.copy_aliases(library)

    def get_outputs(self) -> list[str]:
        outputs = list(super().get_outputs())
        for path in list(outputs):
            if path.endswith(LIBRARY):
                outputs += [os.path.join(os.path.dirname(path), alias) for alias in ALIASES]
        return outputs


setup(
    ext_modules=[
        Extension(
            "fakehw.nvml.native.libnvidia-ml",
            sources=[os.path.join(NATIVE, "fakenvml.c")],
            depends=[os.path.join(NATIVE, "fakehw_snapshot.h")],
            extra_compile_args=[
                "-std=c11",
                "-O2",
                "-fvisibility=hidden",
                "-Wall",
                "-Wno-unused-parameter",
            ],
            extra_link_args=[f"-Wl,-soname,{LIBRARY}", "-lpthread"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildNvml},
)
