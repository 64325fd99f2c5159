"""``dcgmi diag -r 1``: the quick diagnostic, as DCGM 4.6 runs and prints it. Level 1
runs only the software plugin (``nvvs/src/Software.cpp``), whose sub-tests DCGM 4.x
merges into one ``software`` row (``Diag.cpp``). On the fake GPUs two of them can find
something: persistence mode off (a warning) and rows of memory waiting to be remapped
after a double-bit error (a failure); a GPU off the bus fails its first field query.
Deeper levels run hardware tests fakehw does not model, and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fakehw import TYPE_CHECKING
from fakehw.contract.snapshot import RemappedRows
from fakehw.dcgmi import status, tables
from fakehw.dcgmi.options import Command, Option

if TYPE_CHECKING:
    from fakehw.dcgm.values import Subject

DCGM_VERSION = "4.6.0"
QUICK = ("1", "quick", "short")
DEEPER = ("2", "medium", "3", "long", "4", "xlong")
PASS, WARN, FAIL = "Pass", "Warn", "Fail"
ENTITY_WORDS = {PASS: "Pass", WARN: "Fail", FAIL: "Fail"}  # WARN shows as Fail per entity
INFO_WIDTH = 45  # a message's pieces (DATA_INFO_TAG_LEN)
SUCCESS = "Successfully ran diagnostic for group."
HEADER = [
    "+---------------------------+------------------------------------------------+",
    "| Diagnostic                | Result                                         |",
    "+===========================+================================================+",
]
METADATA = "|-----  Metadata  ----------+------------------------------------------------|"
DEPLOYMENT = "|-----  Deployment  --------+------------------------------------------------|"
FOOTER = HEADER[0]

# DCGM_FR_*_MSG (+ " " + _NEXT where DCGM sets one), dcgm_errors.h
PERSISTENCE_MODE = (
    "Persistence mode for GPU {gpu} is disabled. Enable persistence mode by "
    'running "nvidia-smi -i <gpuId> -pm 1 " as root.'
)
UNCORRECTABLE_ROW_REMAP = "GPU {gpu} had uncorrectable memory errors and {rows} rows were remapped"
PENDING_ROW_REMAP = (
    "GPU {gpu} had memory errors and row remappings are pending Check DCGM and "
    "system logs for errors. Reset GPU. Restart DCGM. Rerun diagnostics."
)
FIELD_QUERY_LOST = "Could not query field retired_pages_pending for GPU {gpu}: GPU is lost (-18)"

COMMAND = Command(
    "diag",
    "Used to run diagnostics on the system.",
    (
        Option("g", "group", "groupId", "The group ID to query."),
        Option(
            "r",
            "run",
            "diag",
            "Run a diagnostic. (Note: higher numbered tests include "
            "all beneath.)  1 - Quick (System Validation ~ seconds)  2 - Medium (Extended "
            "System Validation ~ 2 minutes)  3 - Long (System HW Diagnostics ~ 15 minutes)  "
            "4 - Extended (Longer-running System HW Diagnostics)",
        ),
        Option(
            "i",
            "entity-id",
            "entityId",
            "Comma-separated list of GPU ids to run the diagnostic on (default: all of them).",
        ),
        Option(
            "",
            "host",
            "IP/FQDN",
            "Connects to specified IP or fully-qualified domain name. [default = localhost]",
        ),
    ),
    one_of=("run",),
)


@dataclass
class EntityResult:
    gpu: int
    result: str = PASS
    errors: list[str] = field(default_factory=list)

    def add(self, result: str, message: str) -> None:
        if result == FAIL or self.result == PASS:
            self.result = result
        self.errors.append(message)


def check_level(level: str) -> None:
    if level in QUICK:
        return
    if level in DEEPER:
        raise status.DcgmiError(
            [
                f"Error: fake-dcgmi runs the quick diagnostic only (-r 1): level {level!r}'s "
                "hardware tests are not modelled."
            ],
            status.NOT_SUPPORTED,
            "stderr",
        )
    raise status.DcgmiError(
        [f"Error: unknown diagnostic {level!r}; fake-dcgmi runs -r 1 (also 'quick', 'short')."],
        status.BADPARAM,
        "stderr",
    )


def software(subject: Subject) -> EntityResult:
    """The software plugin's sub-tests on one GPU, in DCGM's order, merged."""
    gpu = subject.gpu
    index = int(gpu["index"])
    outcome = EntityResult(index)
    if gpu["lost"]:
        outcome.add(FAIL, FIELD_QUERY_LOST.format(gpu=index))
        return outcome
    if not gpu["persistence_mode"]:
        outcome.add(WARN, PERSISTENCE_MODE.format(gpu=index))
    rows = RemappedRows(gpu["ecc"])
    if rows.pending:
        if rows.uncorrectable:
            outcome.add(FAIL, UNCORRECTABLE_ROW_REMAP.format(gpu=index, rows=rows.uncorrectable))
        else:
            outcome.add(FAIL, PENDING_ROW_REMAP.format(gpu=index))
    return outcome


def select(subjects: list[Subject], entity_ids: str | None) -> list[Subject]:
    """``-i 0,2``: those GPUs; a GPU the node does not have ends the run as DCGM does."""
    if entity_ids is None:
        return subjects
    by_index = {int(s.gpu["index"]): s for s in subjects}
    chosen = []
    for token in entity_ids.split(","):
        if not token.strip().isdigit():
            raise status.DcgmiError(
                [f"Error: Error: Expected numerical entityId instead of {token.strip()}", ""],
                status.BADPARAM,
            )
        index = int(token)
        if index not in by_index:
            raise status.DcgmiError(
                [
                    f"Error: Unable to complete diagnostic for entities {entity_ids}. Return: "
                    f"({status.BADPARAM}) : {status.ERROR_STRINGS[status.BADPARAM]}",
                    "",
                ],
                status.BADPARAM,
            )
        chosen.append(by_index[index])
    return chosen


def _message_rows(label: str, message: str) -> list[str]:
    """``DisplayVerboseInfo``: after the last ``***``, trimmed, in 45-character pieces."""
    text = message.partition("***")[2] if "***" in message else message
    text = text.strip()
    pieces = [text[start : start + INFO_WIDTH] for start in range(0, len(text), INFO_WIDTH)]
    return [tables.stencil_row(label if n == 0 else "", piece) for n, piece in enumerate(pieces)]


def render(subjects: list[Subject], driver_version: str) -> tuple[list[str], int]:
    """The report and the status dcgmi exits with (226 when any GPU reported an error)."""
    outcomes = [software(subject) for subject in subjects]
    device_ids = ", ".join(f"{int(s.model['pci_device_id']) >> 16:04x}" for s in subjects)
    lines = [
        SUCCESS,
        *HEADER,
        METADATA,
        tables.stencil_row("DCGM Version", DCGM_VERSION),
        tables.stencil_row("Driver Version Detected", driver_version),
        tables.stencil_row("GPU Device IDs Detected", device_ids),
        DEPLOYMENT,
    ]
    worst = PASS
    for outcome in outcomes:
        if outcome.result == FAIL or worst == PASS:
            worst = outcome.result
    lines.append(tables.stencil_row("software", worst))
    for outcome in outcomes:
        word = ENTITY_WORDS[outcome.result]
        lines.append(tables.stencil_row("", f"GPU{outcome.gpu}: {word}"))
        for message in outcome.errors:
            lines += _message_rows(f"Warning: GPU{outcome.gpu}", message)
    lines.append(FOOTER)
    failed = any(outcome.errors for outcome in outcomes)
    return lines, status.NVVS_ERROR if failed else status.OK
