"""Install the fake NVML library into pynvml when (and if) a program imports it.

Called from the ``sitecustomize`` that ``fakehw exec`` puts on ``PYTHONPATH``.
Importing pynvml eagerly would slow every Python program down; instead an
import hook wraps pynvml's loader and sets ``pynvml.nvmlLib`` right after the
module is executed, before the program can call ``nvmlInit``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

MODULE = "pynvml"


def patch(module: ModuleType) -> None:
    from fakehw.nvml.library import FakeNvmlLibrary

    if not isinstance(getattr(module, "nvmlLib", None), FakeNvmlLibrary):
        module.nvmlLib = FakeNvmlLibrary(module)  # type: ignore[attr-defined]
        cache = getattr(module, "_nvmlGetFunctionPointer_cache", None)
        if isinstance(cache, dict):
            cache.clear()


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self.inner.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


def install() -> None:
    """Make pynvml use the fake library, now if imported, else on import."""
    if MODULE in sys.modules:
        patch(sys.modules[MODULE])
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
