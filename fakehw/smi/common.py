"""Pieces every nvidia-smi view shares: the moment, GPU selection, units.

Views receive a snapshot (see ``fakehw.contract.snapshot``) and only format it.
"""

from __future__ import annotations

import time

from fakehw import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from fakehw.contract.snapshot import GpuRecord, NodeRecord, Snapshot

EXIT_OK = 0
EXIT_INVALID_ARGUMENT = 2  # NVML_ERROR_INVALID_ARGUMENT
EXIT_NOT_FOUND = 6  # NVML_ERROR_NOT_FOUND: "No devices were found"
EXIT_DRIVER_NOT_LOADED = 9  # NVML_ERROR_DRIVER_NOT_LOADED
EXIT_GPU_IS_LOST = 15  # NVML_ERROR_GPU_IS_LOST
EXIT_UNKNOWN_OPTION = 255

DRIVER_UNREACHABLE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n\n"
)
NO_DEVICES = "No devices were found"
INVALID_ARGUMENTS = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
ID_BLANKS = " \t"  # ASCII blanks around an -i id are ignored; any other character is part of it


class SmiError(Exception):
    """Ends the program with nvidia-smi's own message and exit code."""

    def __init__(self, message: str, code: int, to_stderr: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.to_stderr = to_stderr


def asctime(unix_time: float) -> str:
    """``Sun Nov 22 14:32:02 2026``: the table header's and ``-q``'s timestamp."""
    return time.asctime(time.localtime(unix_time))


def model_of(snapshot: Snapshot, gpu: GpuRecord) -> dict[str, Any]:
    model: dict[str, Any] = snapshot["models"][gpu["model"]]
    return model


def select_gpus(node: NodeRecord, ids: list[str] | None) -> list[GpuRecord]:
    """GPUs named by ``-i``: indexes, UUIDs (or their prefixes) or PCI bus ids.

    Raises ``SmiError`` ("No devices were found", exit 6) if any id matches no GPU.
    """
    gpus = node["gpus"]
    if not ids:
        return _reachable(list(gpus))
    chosen: list[GpuRecord] = []
    for raw in ids:
        ident = raw.strip(ID_BLANKS)
        match = _find(gpus, ident)
        if match is None:
            raise SmiError(NO_DEVICES, EXIT_NOT_FOUND)
        if match not in chosen:
            chosen.append(match)
    chosen.sort(key=lambda g: g["index"])
    return _reachable(chosen)


def _reachable(gpus: list[GpuRecord]) -> list[GpuRecord]:
    """A GPU that fell off the bus (XID 79) stops nvidia-smi, as the real driver does."""
    lost = [g for g in gpus if g.get("lost")]
    if lost:
        message = "".join(
            f"Unable to determine the device handle for GPU{g['bus_id']}: GPU is lost.  "
            "Reboot the system to recover this GPU\n"
            for g in lost
        )
        raise SmiError(message, EXIT_GPU_IS_LOST)
    return gpus


def is_ascii_number(text: str) -> bool:
    """Whether ``text`` is a number as nvidia-smi reads one: ASCII digits only.

    ``str.isdigit`` alone also takes "\u0663" (Arabic-indic three) or "\u00b3" (superscript
    three), which the real tool does not read as numbers.
    """
    return text.isascii() and text.isdigit()


def _find(gpus: list[GpuRecord], ident: str) -> GpuRecord | None:
    if not ident.isascii():  # indexes, UUIDs and PCI bus ids are ASCII
        return None
    if ident.isdigit():
        index = ident.lstrip("0") or "0"  # compared as text: no int() of a 5000-digit id
        return next((g for g in gpus if str(g["index"]) == index), None)
    lowered = ident.lower()
    if lowered.startswith("gpu-"):
        return next((g for g in gpus if g["uuid"].lower().startswith(lowered)), None)
    wanted = _normal_bus_id(lowered)
    if wanted is not None:
        return next((g for g in gpus if _normal_bus_id(g["bus_id"].lower()) == wanted), None)
    return None


def _normal_bus_id(text: str) -> tuple[int, int, int, int] | None:
    """``00000000:18:00.0``, ``0000:18:00.0`` and ``18:00.0`` all name one device."""
    parts = text.split(":")
    try:
        if len(parts) == 3:
            domain, bus, rest = _hex(parts[0]), _hex(parts[1]), parts[2]
        elif len(parts) == 2:
            domain, bus, rest = 0, _hex(parts[0]), parts[1]
        else:
            return None
        device, _, function = rest.partition(".")
        return domain, bus, _hex(device), _hex(function or "0")
    except ValueError:
        return None


HEX_DIGITS = frozenset("0123456789abcdef")


def _hex(text: str) -> int:
    """Lower-case ASCII hex digits only: ``int(text, 16)`` would also take " 18", "+18", "1_8"."""
    if not text or not set(text) <= HEX_DIGITS:
        raise ValueError(text)
    return int(text, 16)


def split_ids(text: str) -> list[str]:
    return [part for part in text.split(",") if part.strip(ID_BLANKS)]
