"""What each NVML implementation answers, read from the code, and ``docs/nvml.md``
written from it: ``python -m fakehw.nvml.coverage`` regenerates the document (a test
keeps it in step).

The C library's functions are the names its source exports (``EXPORT`` definitions
and the getter macros that define them); the Python layer's are its ``HANDLERS``.
"""

from __future__ import annotations

import re
from pathlib import Path

SOURCE = Path(__file__).parent / "native" / "fakenvml.c"
DOCUMENT = Path(__file__).parents[2] / "docs" / "nvml.md"
DEFINED = re.compile(r"^EXPORT [\w ]+?\**(nvml\w+)\(", re.MULTILINE)
MACROS = re.compile(
    r"^(?:UINT_GETTER|STRING_GETTER|ENUM_GETTER|CODEC_GETTER|CLOCK_GETTER|REFUSED)\((nvml\w+)",
    re.MULTILINE,
)
VERSIONED = re.compile(r"^PROCESS_GETTERS\((nvml\w+)", re.MULTILINE)  # the name, _v2, _v3

INTRO = """# NVML: the fake GPUs for every program that uses the driver's library

`fakehw exec -- COMMAND` (or a shell after `eval "$(fakehw shellenv)"`) gives
COMMAND fakehw's NVML, two implementations of one behaviour:

* **`libnvidia-ml.so.1`**, in C (`fakehw/nvml/native/fakenvml.c`), compiled at install
  against NVIDIA's own `nvml.h` (the `nvidia-nvml-dev` package), installed beside
  itself as a driver installs it (`libnvidia-ml.so.1`, `libnvidia-ml.so`,
  `libnvidia-ml.so.580.159.04`) and put first on `LD_LIBRARY_PATH`. Every program
  that loads the driver's library loads it: pynvml, py3nvml and its `py3smi`,
  glances, nvitop, gpustat, `ctypes.CDLL("libnvidia-ml.so.1")`, C, C++, Go and Rust
  tools. At `nvmlInit` it asks the daemon once to publish the node `FAKEHW_NODE`
  names (default 0) and maps that node's snapshot file read-only
  (docs/protocol.md, "The NVML snapshot file"); each call then copies what it needs
  out of shared memory: no round trip, any number of threads at once, a forked child
  keeps working, and a restarted daemon is found again within a few seconds (once
  the daemon's ticks have stopped for 1.5 s, calls fail with `NVML_ERROR_UNKNOWN`
  rather than repeat the last reading; a call waits at most a second for it). No
  daemon at `nvmlInit`: `NVML_ERROR_DRIVER_NOT_LOADED`, as on a machine without the
  driver (`fakehw exec` starts one first).
* **the Python layer** (`fakehw/nvml/library.py`), the fallback: where the library
  could not be built (no C compiler at install; `fakehw exec` says so), for a daemon
  across the network (`FAKEHW_REMOTE`), or asked for with `FAKEHW_NVML=python`. A
  `sitecustomize.py` on COMMAND's `PYTHONPATH` sets `pynvml.nvmlLib` to
  `FakeNvmlLibrary` when the program imports pynvml; it reads the daemon's snapshot
  over the socket, at most every 50 ms. It serves pynvml programs only.

Both answer from the same records as fake-nvidia-smi and refuse what a real H100
refuses with the same code. A function not listed here does not exist: a caller
gets `NVML_ERROR_FUNCTION_NOT_FOUND` (pynvml) or an undefined symbol, never a made-up
value. Not checked against a real capture: what `nvmlDeviceGetNvLinkRemotePciInfo_v2`
gives for the far end of a link on an NVSwitch baseboard (the switch chips at PCI buses
05-0a, device 22a3 on Hopper, 1af1 on Ampere: fakehw's choice). The setters
(power limit, locked GPU and memory clocks, persistence mode) act on the model for a
root caller and answer `NVML_ERROR_NO_PERMISSION` to anyone else. The table below
is generated from the code (`python -m fakehw.nvml.coverage`).
"""


def native_functions(source: str | None = None) -> list[str]:
    """The functions ``libnvidia-ml.so.1`` exports, read from its source."""
    text = SOURCE.read_text() if source is None else source
    names = set(DEFINED.findall(text)) | set(MACROS.findall(text))
    for prefix in VERSIONED.findall(text):
        names |= {prefix, f"{prefix}_v2", f"{prefix}_v3"}
    return sorted(names)


def python_functions() -> list[str]:
    from fakehw.nvml.library import covered

    return covered()


def document() -> str:
    native, python = set(native_functions()), set(python_functions())
    rows = [
        f"| `{name}` | {'yes' if name in native else ''} | {'yes' if name in python else ''} |"
        for name in sorted(native | python)
    ]
    return "\n".join([
        INTRO,
        f"## Functions ({len(native)} in libnvidia-ml.so.1, {len(python)} in the Python layer)",
        "",
        "| function | libnvidia-ml.so.1 | Python layer |",
        "|---|:-:|:-:|",
        *rows,
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    DOCUMENT.write_text(document())
    print(f"wrote {DOCUMENT}")
