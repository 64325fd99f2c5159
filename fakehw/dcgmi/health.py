"""``dcgmi health``: the host engine's health watches (``-s``, ``--clear``, ``-f``) and
their check (``-c``), as DCGM 4.6 prints them (``Health.cpp``, ``DcgmiOutputTree``).

The fake host engine reports what the node's GPUs show, as DCGM's health module
(``DcgmHealthWatch.cpp``) would from the same fields: XIDs 48 and 79 always (a failure,
under DCGM's "Internal error" label for them), a volatile double-bit ECC error (the
memory watch, a failure), clocks held by a thermal slowdown or the power cap (the
thermal and power watches, warnings). Messages are DCGM's own (``dcgm_errors.h``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fakehw import TYPE_CHECKING
from fakehw.contract.snapshot import REASON_HW_THERMAL, REASON_SW_POWER_CAP, REASON_SW_THERMAL
from fakehw.dcgmi import status, styled_json, tables
from fakehw.dcgmi.options import HOST, JSON, Command, Option

if TYPE_CHECKING:
    from fakehw.dcgm.values import Subject

# dcgmHealthSystems_t (dcgm_structs.h)
PCIE, NVLINK, PMU, MCU, MEMORY, SM, INFOROM, THERMAL, POWER, DRIVER = (1 << n for n in range(10))
NVSWITCH_NONFATAL, NVSWITCH_FATAL, CONNECTX = 1 << 10, 1 << 11, 1 << 12
# "a": every watch dcgmi sets for it (CommandLineParser.cpp), which leaves out SM, PMU, MCU
ALL = (PCIE | MEMORY | INFOROM | THERMAL | POWER | NVLINK | NVSWITCH_NONFATAL | NVSWITCH_FATAL
       | DRIVER | CONNECTX)  # fmt: skip
SET_LETTERS = {
    "p": PCIE,
    "m": MEMORY,
    "i": INFOROM,
    "d": DRIVER,
    "t": THERMAL | POWER,
    "n": NVLINK,
    "x": CONNECTX,
}
DEFAULT_SET = "pm"
# ``health -f``'s rows, in bit order (PMU and MCU are never shown)
FETCH_ROWS = (
    ("PCIe", PCIE),
    ("NVLINK", NVLINK),
    ("Memory", MEMORY),
    ("SM", SM),
    ("InfoROM", INFOROM),
    ("Thermal", THERMAL),
    ("Power", POWER),
    ("Driver", DRIVER),
    ("NvSwitch NF", NVSWITCH_NONFATAL),
    ("NvSwitch F", NVSWITCH_FATAL),
    ("ConnectX", CONNECTX),
)
SYSTEM_LABELS = {
    PCIE: "PCIe system",
    NVLINK: "NVLINK system",
    PMU: "PMU system",
    MCU: "MCU system",
    MEMORY: "Memory system",
    SM: "SM system",
    INFOROM: "InfoROM system",
    THERMAL: "Thermal system",
    POWER: "Power system",
    DRIVER: "Driver",
    CONNECTX: "ConnectX system",
}
HEALTHY, WARNING, FAILURE = 0, 10, 20  # dcgmHealthWatchResults_t
RESULT_WORDS = {HEALTHY: "Healthy", WARNING: "Warning", FAILURE: "Failure"}
DEFAULT_GROUP = "g"  # DCGM_GROUP_ALL_GPUS
REPORT_TITLE = "Health Monitor Report"
MESSAGE_WIDTH = 54

# The messages: ``DCGM_FR_*_MSG`` + " " + ``DCGM_FR_*_NEXT`` (dcgm_errors.h), and for an XID
# DCGM always watches (``m_devastatingXids``) a detail naming it, after one more space.
DEBUG_COOLING = (
    "Verify that the cooling on this machine is functional, including external, "
    "thermal material interface, fans, and any other components."
)
VOLATILE_DBE = (
    "Detected {count} volatile double-bit ECC error(s) in GPU {gpu}. "
    "Drain the GPU and reset it or reboot the node."
)
CLOCKS_EVENT_THERMAL = (
    "Detected clocks event due to thermal violation in GPU {gpu}. " + DEBUG_COOLING
)
CLOCKS_EVENT_POWER = (
    "Detected clocks event due to power violation in GPU {gpu}. "
    "Monitor the power conditions. This GPU can still perform workload."
)
XID_DOUBLE_BIT = (
    "Detected XID 48 for GPU {gpu} Please consult the documentation for details "
    "of this XID.  (triggered by XID 48: Double Bit ECC Error)"
)
# (DCGM's detail for XID 79 quotes the message's format unfilled: "%d" is what it prints)
XID_FALLEN_OFF_THE_BUS = (
    "GPU {gpu} has fallen off the bus Please re-seat the GPU, check for thermal and power "
    "issues, and verify that there is no outstanding bug against your driver or BIOS versions. "
    "If the issue persists, please run a field diagnostic on the GPU.  (triggered by XID 79: "
    "GPU %d has fallen off the bus)"
)
POWER_UNREADABLE = ("Cannot reliably read the power usage for GPU {gpu}. Check DCGM and system "
                    "logs for errors. Reset GPU. Restart DCGM. Rerun diagnostics.")  # fmt: skip
ALL_SYSTEMS = 0xFFFFFFFF  # DCGM_HEALTH_WATCH_ALL: the system of an always-watched XID

COMMAND = Command(
    "health",
    "health --  Used to manage the health watches of a group. The health of the GPUs in a "
    "group can then be monitored during a process.",
    (
        Option("g", "group", "groupId", "The GPU group to query on the specified host."),
        HOST,
        Option("", "clear", None, "Disable all watches being monitored."),
        Option("f", "fetch", None, "Fetch the current watch status."),
        Option(
            "c",
            "check",
            None,
            "Check to see if any errors or warnings have occurred in the "
            "currently monitored watches.",
        ),
        JSON,
        Option(
            "s",
            "set",
            "flags",
            "Set the watches to be monitored. [default = pm]\n a - all "
            "watches\n d - driver watches\n i - infoROM watches\n m - memory watches (*)\n "
            "n - NVLink watches (*)\n p - PCIe watches (*)\n t - thermal and power watches "
            "(*)\n x - ConnectX watches (*)\n (*) watch requires 60 sec before first query",
        ),
        Option(
            "m",
            "max-keep-age",
            "seconds",
            "How long DCGM should cache the samples in seconds.",
            kind="real",
        ),
        Option(
            "u",
            "update-interval",
            "seconds",
            "How often DCGM should retrieve health from the driver in seconds.",
            kind="real",
        ),
    ),
    one_of=("fetch", "set", "clear", "check"),
    usage_groups=(
        ("host", "group", "check", "json"),
        ("host", "group", "fetch", "json"),
        ("host", "group", "set", "json", "max-keep-age", "update-interval"),
    ),
)


@dataclass(frozen=True)
class Incident:
    """One thing the host engine found: on GPU ``gpu``, by watch ``system``."""

    gpu: int
    system: int
    result: int
    message: str


def parse_set(flags: str) -> int:
    """``-s pmt``: the watch mask, or dcgmi's refusal (exit 254), letter by letter as
    dcgmi reads them: a letter it does not know, or ``a`` with others, is invalid; a
    letter given twice is a duplicate, found when its first comes up."""
    mask = 0
    for position, letter in enumerate(flags):
        if letter == "a" and len(flags) == 1:
            mask |= ALL
        elif letter not in SET_LETTERS:
            raise status.ParseFailed("Invalid flags detected", "set")
        else:
            mask |= SET_LETTERS[letter]
            if letter in flags[position + 1 :]:
                raise status.ParseFailed("Duplicate flags detected", "set")
    if not mask:
        raise status.ParseFailed("No flags detected", "set")
    return mask


GROUP_LETTERS = ("g", "s", "i", "c", "a")  # all GPUs, NvSwitches, GPU instances, ..., all
GROUP_ERROR = ("The only allowed non-digit strings are g (gpus), s (switches), i (instances), "
               "c (compute instances), or a (all entities)")  # fmt: skip
ALL_GPU_GROUPS = ("g", "a", "0")  # the fake host engine's entities are its GPUs


def parse_group(text: str) -> str:
    """``CheckGroupIdArgument``: one of the letters, or a number (as ``strtol`` reads it)."""
    if not text[:1].isdigit():
        if text in GROUP_LETTERS:
            return text
        raise status.ParseFailed(GROUP_ERROR)
    digits = len(text) - len(text.lstrip("0123456789"))
    return str(int(text[:digits]))


def check_group(group: str, doing: str) -> None:
    """The host engine's answer for a group it lacks: it has the group of all GPUs only
    (no NvSwitch, MIG or user-made groups)."""
    if group not in ALL_GPU_GROUPS:
        raise status.DcgmiError(
            [f"Error: Unable to {doing} health watches. Return: The Group is not found"],
            status.GENERIC_ERROR,
        )


def incidents(subjects: list[Subject], mask: int) -> list[Incident]:
    """What the host engine finds on the GPUs now (``MonitorWatches``), GPU by GPU: the
    always-watched XIDs (48, a double-bit error; 79, off the bus), then the watches in
    ``mask`` in bit order. A watch that needs a minute of samples judges by the clock
    event reasons in force (DCGM by the violation counters' rise over that minute)."""
    found = []
    for subject in subjects:
        gpu = subject.gpu
        index = int(gpu["index"])
        faults = gpu["faults"]
        if "ecc-uncorrectable" in faults:
            found.append(Incident(index, ALL_SYSTEMS, FAILURE, XID_DOUBLE_BIT.format(gpu=index)))
        if "xid79" in faults:
            found.append(
                Incident(index, ALL_SYSTEMS, FAILURE, XID_FALLEN_OFF_THE_BUS.format(gpu=index))
            )
        if gpu["lost"]:
            # its fields are blank: only the power watch says so (a blank board power)
            if mask & POWER:
                found.append(Incident(index, POWER, WARNING, POWER_UNREADABLE.format(gpu=index)))
            continue
        ecc = gpu["ecc"]
        double_bit = ecc["volatile_dram_uncorrected"] + ecc["volatile_sram_uncorrected"]
        if mask & MEMORY and double_bit:
            found.append(
                Incident(index, MEMORY, FAILURE, VOLATILE_DBE.format(count=double_bit, gpu=index))
            )
        reasons = int(gpu["clocks_event_reasons"])
        if mask & THERMAL and reasons & (REASON_HW_THERMAL | REASON_SW_THERMAL):
            found.append(Incident(index, THERMAL, WARNING, CLOCKS_EVENT_THERMAL.format(gpu=index)))
        if mask & POWER and reasons & REASON_SW_POWER_CAP:
            found.append(Incident(index, POWER, WARNING, CLOCKS_EVENT_POWER.format(gpu=index)))
    return found


def wrap_message(message: str) -> list[str]:
    """``Health::AddErrorMessage``: the message in pieces of at most 55 characters, cut
    before a space or a ``.``, ``,`` or ``/`` (which is then lost, as DCGM loses it)."""
    text = message.replace("\n", " ")
    if len(text) <= MESSAGE_WIDTH:
        return [text]
    pieces, cut, start = [], 0, 0
    while start < len(text):
        cut += MESSAGE_WIDTH
        if cut >= len(text):
            cut = len(text) - 1
        elif cut != len(text) - 1:
            while text[cut] != " " and text[cut + 1] not in " .,/":
                cut -= 1
            while text[cut] == " ":
                cut -= 1
        while start < len(text) and text[start] == " ":
            start += 1
        if start >= len(text):
            break
        pieces.append(text[start : cut + 1])
        start = cut + 2
    return pieces


@dataclass
class Node:
    """One node of dcgmi's output tree: a value, overflow lines, children by label."""

    value: str = ""
    overflow: list[str] | None = None
    children: dict[str, Node] | None = None

    def child(self, label: str) -> Node:
        if self.children is None:
            self.children = {}
        return self.children.setdefault(label, Node())


def report(found: list[Incident]) -> dict[str, Node]:
    """The report's tree: the overall result, then the GPUs with their systems' results
    and messages (adjacent messages of one GPU and system joined with ", ")."""
    overall = max((incident.result for incident in found), default=HEALTHY)
    body = {"Overall Health": Node(RESULT_WORDS[overall])}
    worst: dict[tuple[int, int | None], int] = {}
    messages: dict[tuple[int, int], list[str]] = {}
    for incident in found:
        for key in ((incident.gpu, None), (incident.gpu, incident.system)):
            worst[key] = max(worst.get(key, HEALTHY), incident.result)
        messages.setdefault((incident.gpu, incident.system), []).append(incident.message)
    if found:
        gpus = body["GPU"] = Node()
        for (gpu, system), texts in messages.items():
            entity = gpus.child(str(gpu))
            entity.value = RESULT_WORDS[worst[(gpu, None)]]
            errors = entity.child("Errors")
            node = errors.child(SYSTEM_LABELS.get(system, "Internal error"))
            node.value = RESULT_WORDS[worst[(gpu, system)]]
            node.overflow = wrap_message(", ".join(texts))
    return body


def tree_lines(body: dict[str, Node]) -> list[str]:
    tree = tables.Tree(28, 60)
    lines = tree.header(REPORT_TITLE)

    def add(label: str, node: Node, level: int) -> None:
        lines.append(tree.row(label, node.value, level))
        lines.extend(tree.row("", text) for text in node.overflow or ())
        for child_label, child in (node.children or {}).items():
            add(child_label, child, level + 1)

    for label, node in body.items():
        add(label, node, 0)
    lines.append(tree.rule)
    return lines


def _json_node(node: Node) -> dict[str, object]:
    shown: dict[str, object] = {}
    if node.value:
        shown["value"] = node.value
    if node.overflow:
        shown["overflow"] = list(node.overflow)
    if node.children:
        shown["children"] = {label: _json_node(child) for label, child in node.children.items()}
    return shown


def json_lines(header: list[str], body: dict[str, Node]) -> list[str]:
    document = {"header": header, "body": {label: _json_node(n) for label, n in body.items()}}
    return styled_json.dumps(document).splitlines()


def check_lines(found: list[Incident], as_json: bool) -> list[str]:
    body = report(found)
    return json_lines([REPORT_TITLE], body) if as_json else tree_lines(body)


def fetch_lines(mask: int, as_json: bool) -> list[str]:
    rows = [(label, "On" if mask & bit else "Off") for label, bit in FETCH_ROWS]
    if as_json:
        return json_lines(
            ["Health monitor systems report"], {label: Node(value) for label, value in rows}
        )
    tree = tables.Tree(18, 70)
    return [
        "Health monitor systems report",
        tree.rule,
        *(tree.row(label, value) for label, value in rows),
        tree.rule,
    ]


SET_SUCCESSFULLY = "Health monitor systems set successfully."
NOT_ENABLED = "Error: Health watches not enabled. Please enable watches. "
