"""``dcgmi discovery -l``: the GPUs, NvSwitches, ConnectX cards and CPUs the host engine
sees, as DCGM 4.6 lists them (``Query.cpp``). The fake node's GPUs are all active; a
GPU off the bus (XID 79) is listed only with ``-a``, as ``Status: LOST`` with its last
known name and bus id."""

from __future__ import annotations

from fakehw import TYPE_CHECKING
from fakehw.dcgmi import tables
from fakehw.dcgmi.options import HOST, Command, Option

if TYPE_CHECKING:
    from fakehw.dcgm.values import Subject

DEVICE_WIDTHS = (8, 70)
COMMAND = Command(
    "discovery",
    "discovery -- Used to discover and identify GPUs and their attributes.",
    (
        HOST,
        Option(
            "l",
            "list",
            None,
            "List GPUs and NVIDIA CPUs discovered on the host. By "
            "default, only active GPUs are shown.",
        ),
        Option("a", "all", None, "Display all GPUs including inactive ones."),
    ),
    one_of=("list",),
    usage_groups=(("host", "list", "all"),),
)


def _plural(count: int, word: str, plural: str) -> str:
    return f"{count} {word if count == 1 else plural}"


def _gpu_lines(subject: Subject) -> list[str]:
    gpu = subject.gpu
    suffix = " (last known)" if gpu["lost"] else ""
    lines = ["Status: LOST"] if gpu["lost"] else []
    return [
        *lines,
        f"Name: {subject.model['name']}{suffix}",
        f"PCI Bus ID: {gpu['bus_id']}{suffix}",
        f"Device UUID: {gpu['uuid']}",
    ]


def render(subjects: list[Subject], show_all: bool) -> list[str]:
    listed = [s for s in subjects if show_all or not s.gpu["lost"]]
    lines = [f"{_plural(len(listed), 'GPU', 'GPUs')} found ({'All' if show_all else 'Active'})."]
    if len(listed) != len(subjects):
        lines.append("Note: Use -a flag to show all GPUs, including those that are not active.")
    gpu_sections = [[[str(s.gpu["index"])], _gpu_lines(s)] for s in listed]
    lines += tables.column_table(
        DEVICE_WIDTHS, ("GPU ID", "Device Information"), gpu_sections, separate_sections=True
    )
    # No NvSwitch, ConnectX or Grace CPU is modelled as a DCGM entity: their tables are empty,
    # as on a host engine without the NvSwitch module.
    lines.append(_plural(0, "NvSwitch", "NvSwitches") + " found.")
    lines += tables.column_table((11,), ("Switch ID",), [], separate_sections=False)
    lines.append("0 ConnectX found.")
    lines += tables.column_table((10,), ("ConnectX",), [], separate_sections=False)
    lines.append(_plural(0, "CPU", "CPUs") + " found.")
    lines += tables.column_table(
        DEVICE_WIDTHS, ("CPU ID", "Device Information"), [], separate_sections=True
    )
    return lines
