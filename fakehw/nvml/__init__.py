"""The NVML layer: programs that use NVML see the fake GPUs.

Two implementations answer from the same daemon records:

* ``native/``: ``libnvidia-ml.so.1`` in C (``fakenvml.c``, built at install when a C
  compiler is there), which every program that loads NVML finds first on the
  ``LD_LIBRARY_PATH`` that ``fakehw exec`` sets: pynvml, py3nvml, glances, C, Go or
  Rust tools. It reads the node's snapshot from shared memory
  (``fakehw.contract.nvmlshm``).
* ``library.py``: ``FakeNvmlLibrary`` in Python, which ``fakehw exec``'s
  ``sitecustomize`` installs as ``pynvml.nvmlLib`` (``fakehw.nvml.hook``), for pynvml
  programs, and for a daemon across the network (``FAKEHW_REMOTE``).
"""

from __future__ import annotations

import os

LIBRARY = "libnvidia-ml.so.1"


def native_directory() -> str | None:
    """The directory of the built ``libnvidia-ml.so.1``, or None if it was not built."""
    directory = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native")
    return directory if os.path.isfile(os.path.join(directory, LIBRARY)) else None
