"""``dcgmi diag -r 1``: the quick diagnostic, as DCGM 4.6 runs and prints it. Level 1
runs only the software plugin (``nvvs/src/Software.cpp``), whose sub-tests DCGM 4.x
merges into one ``software`` row (``Diag.cpp``). On the fake GPUs two of them can find
something: persistence mode off (a warning) and rows of memory waiting to be remapped
after a double-bit error (a failure); a GPU off the bus fails its first field query.
Neither plugin sub-test writes information of its own, so ``-v`` adds no rows here.
Deeper levels run hardware tests fakehw does not model, and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fakehw import TYPE_CHECKING
from fakehw.contract.snapshot import RemappedRows
from fakehw.dcgmi import status, styled_json, tables
from fakehw.dcgmi.engine import EntityListError, by_index, gpu_ids
from fakehw.dcgmi.options import HOST, JSON, SUPPORTED_ENTITIES, Command, Option

if TYPE_CHECKING:
    from fakehw.dcgm.values import Subject

DCGM_VERSION = "4.6.0"
QUICK = ("1", "quick", "short", "software")  # the level, or its one test by name
DEEPER = ("2", "medium", "3", "long", "4", "xlong")
PASS, WARN, FAIL = "Pass", "Warn", "Fail"
SEVERITY = {PASS: 0, WARN: 1, FAIL: 2}
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
    "diag -- Used to run diagnostics on the system.",
    (
        Option(
            "r",
            "run",
            "diag",
            "Run a diagnostic. (Note: higher numbered tests include all "
            "beneath.)  \n 1 - Quick (System Validation ~ seconds) \n 2 - Medium (Extended "
            "System Validation ~ 2 minutes) \n 3 - Long (System HW Diagnostics ~ 15 minutes) "
            "\n 4 - Extended (Longer-running System HW Diagnostics) \nSpecific tests to run "
            "may be specified by name, and multiple tests may be specified as a comma "
            'separated list. For example, the command:\n\n dcgmi diag -r "pcie,diagnostic" '
            "\n\nwould run the PCIE and Diagnostic tests together.",
        ),
        Option("g", "group", "groupId", "The group ID to query.", kind="int"),
        HOST,
        Option("v", "verbose", None, "Show information and warnings for each test."),
        JSON,
        Option(
            "i",
            "entity-id",
            "entityId",
            " Comma-separated list of entities to run the diag on." + SUPPORTED_ENTITIES,
        ),
    ),
    usage_groups=(("host", "group", "run", "verbose", "json"),),
    footer="Verbose diagnostic output is currently limited on client, for full diagnostic and "
    "validation logs please check your server.\n",
)


@dataclass(frozen=True)
class Finding:
    """One error a sub-test reports: its text and DCGM's code, category and severity
    for it (``dcgm_errors.h``, ``dcgm_errors.c``)."""

    message: str
    code: int
    category: int
    severity: int


# DCGM_FR_* codes, dcgmErrorCategory_t and dcgmErrorSeverity_t for the findings here
PERSISTENCE_MODE_META = (29, 8, 5)  # SOFTWARE_OTHER, CONFIG
UNCORRECTABLE_ROW_REMAP_META = (84, 10, 6)  # HARDWARE_MEMORY, RESET
PENDING_ROW_REMAP_META = (85, 10, 6)
FIELD_QUERY_META = (27, 16, 1)  # INTERNAL_OTHER, MONITOR
SEVERITY_ISOLATE = 2
ENTITY_GROUP_GPU = 1  # DCGM_FE_GPU


@dataclass
class EntityResult:
    gpu: int
    result: str = PASS
    errors: list[Finding] = field(default_factory=list)

    def worsen(self, result: str) -> None:
        """Sub-tests merge worst first (``DcgmNvvsResponseWrapper``)."""
        if SEVERITY[result] > SEVERITY[self.result]:
            self.result = result


def check_level(level: str) -> None:
    """``-r``: DCGM's checks (a negative level; a one-character one other than 1-4, or
    none at all, is not a level), then what fakehw runs: the quick level and its software
    test; deeper levels and other tests it refuses, not modelling them."""
    if level.startswith("-") and level[1:2].isdigit():  # strtol(...) < 0
        raise status.ParseFailed("Positive value expected, negative value found", "run")
    if len(level) <= 1 and level not in ("1", "2", "3", "4"):
        raise status.ParseFailed(f"Invalid value '{level}' specified for -r.")
    if level in QUICK:
        return
    if level in DEEPER:
        raise status.DcgmiError(
            [f"Error: fake-dcgmi runs the quick diagnostic only (-r 1): level {level!r}'s "
             "hardware tests are not modelled."], status.NOT_SUPPORTED, "stderr")  # fmt: skip
    raise status.DcgmiError(
        [f"Error: fake-dcgmi runs the software test only (-r 1, quick, short or software), "
         f"not {level!r}."], status.NOT_SUPPORTED, "stderr")  # fmt: skip


def software(subjects: list[Subject]) -> list[EntityResult]:
    """The software plugin's sub-tests that can find something here, in its order. A
    result set for the whole test (``SetResult``) is every GPU's, as in nvvs: one GPU with
    persistence mode off, or one whose fields cannot be read, marks them all."""
    outcomes = [EntityResult(int(subject.gpu["index"])) for subject in subjects]
    pairs = list(zip(subjects, outcomes, strict=True))

    def for_every_gpu(result: str) -> None:
        for outcome in outcomes:
            outcome.worsen(result)

    for subject, outcome in pairs:  # Persistence Mode
        if not subject.gpu["lost"] and not subject.gpu["persistence_mode"]:
            outcome.errors.append(
                Finding(PERSISTENCE_MODE.format(gpu=outcome.gpu), *PERSISTENCE_MODE_META)
            )
            for_every_gpu(WARN)
    for subject, outcome in pairs:  # Page Retirement/Row Remap
        if subject.gpu["lost"]:
            outcome.errors.append(
                Finding(FIELD_QUERY_LOST.format(gpu=outcome.gpu), *FIELD_QUERY_META)
            )
            for_every_gpu(FAIL)
            continue
        rows = RemappedRows(subject.gpu["ecc"])
        if rows.pending:
            # (DCGM passes this message's format the GPU only: its row count is whatever
            # the stack holds; the fake prints the count the format asks for)
            if rows.uncorrectable:
                text = UNCORRECTABLE_ROW_REMAP.format(gpu=outcome.gpu, rows=rows.uncorrectable)
                found = Finding(text, *UNCORRECTABLE_ROW_REMAP_META)
            else:
                found = Finding(PENDING_ROW_REMAP.format(gpu=outcome.gpu), *PENDING_ROW_REMAP_META)
            outcome.errors.append(found)
            outcome.worsen(FAIL)
    return outcomes


def select(subjects: list[Subject], entity_ids: str | None) -> list[Subject]:
    """``-i 0,2``: those GPUs; a list it cannot read, or a GPU the node does not have,
    ends the run as DCGM does (stdout, a blank line after)."""
    if entity_ids is None:
        return subjects
    try:
        ids = gpu_ids(entity_ids)
    except EntityListError as exc:
        raise status.DcgmiError([f"Error: {exc.message}", ""], status.BADPARAM) from None
    known = by_index(subjects)
    for index in ids:
        if index not in known:
            raise status.DcgmiError(
                [
                    f"Error: Unable to complete diagnostic for entities {entity_ids}. Return: "
                    f"({status.BADPARAM}) : {status.ERROR_STRINGS[status.BADPARAM]}",
                    "",
                ],
                status.BADPARAM,
            )
    return [known[index] for index in ids]


def _device_id(subject: Subject) -> str:
    """The PCI device id as nvvs reports it: four lower-case hex digits (``2330``)."""
    return f"{int(subject.model['pci_device_id']) >> 16:04x}"


def _message_rows(label: str, message: str) -> list[str]:
    """``DisplayVerboseInfo``: after the last ``***``, trimmed, in 45-character pieces."""
    text = message.partition("***")[2] if "***" in message else message
    text = text.strip()
    pieces = [text[start : start + INFO_WIDTH] for start in range(0, len(text), INFO_WIDTH)]
    return [tables.stencil_row(label if n == 0 else "", piece) for n, piece in enumerate(pieces)]


def render(subjects: list[Subject], driver_version: str) -> tuple[list[str], int]:
    """The report and the status dcgmi exits with (226 when any GPU reported an error)."""
    outcomes = software(subjects)
    device_ids = ", ".join(_device_id(subject) for subject in subjects)
    lines = [
        SUCCESS,
        *HEADER,
        METADATA,
        tables.stencil_row("DCGM Version", DCGM_VERSION),
        tables.stencil_row("Driver Version Detected", driver_version),
        tables.stencil_row("GPU Device IDs Detected", device_ids),
        DEPLOYMENT,
    ]
    worst = max((outcome.result for outcome in outcomes), key=SEVERITY.__getitem__, default=PASS)
    lines.append(tables.stencil_row("software", worst))
    for outcome in outcomes:
        word = ENTITY_WORDS[outcome.result]
        lines.append(tables.stencil_row("", f"GPU{outcome.gpu}: {word}"))
        for found in outcome.errors:
            lines += _message_rows(f"Warning: GPU{outcome.gpu}", found.message)
    lines.append(FOOTER)
    return lines, failure_status(outcomes)


def failure_status(outcomes: list[EntityResult]) -> int:
    """``GetFailureResult``: 205 when an error calls for the GPU to be isolated, 226 for
    any other error the software test reported, else 0."""
    found = [finding for outcome in outcomes for finding in outcome.errors]
    if any(finding.severity == SEVERITY_ISOLATE for finding in found):
        return status.NVVS_ISOLATE_ERROR
    return status.NVVS_ERROR if found else status.OK


def render_json(subjects: list[Subject], driver_version: str) -> tuple[list[str], int]:
    """``-j``: the same run as ``HelperJsonBuildOutput`` writes it (a warning shows as
    ``Fail`` throughout, as there)."""
    outcomes = software(subjects)

    def warnings(found: list[Finding]) -> dict[str, object]:
        return {"warnings": [{"warning": f.message, "error_id": f.code,
                              "error_category": f.category, "error_severity": f.severity}
                             for f in found]} if found else {}  # fmt: skip

    worst = max((outcome.result for outcome in outcomes), key=SEVERITY.__getitem__, default=PASS)
    results = [
        {"entity_group_id": ENTITY_GROUP_GPU, "entity_group": "GPU", "entity_id": outcome.gpu,
         "status": ENTITY_WORDS[outcome.result], **warnings(outcome.errors)}
        for outcome in outcomes
    ]  # fmt: skip
    every_error = [finding for outcome in outcomes for finding in outcome.errors]
    test = {"name": "software", "results": results,
            "test_summary": {"status": ENTITY_WORDS[worst], **warnings(every_error)}}  # fmt: skip
    entities = [
        {
            "entity_id": int(s.gpu["index"]),
            "serial_num": s.gpu["serial"],
            "device_id": _device_id(s),
        }
        for s in subjects
    ]
    document: dict[str, object] = {
        "metadata": {"version": DCGM_VERSION, "Driver Version Detected": driver_version},
        "DCGM Diagnostic": {"test_categories": [{"category": "Deployment", "tests": [test]}]},
    }
    if entities:  # an entity group is shown only with entities in it
        document["entity_groups"] = [
            {"entities": entities, "entity_group_id": ENTITY_GROUP_GPU, "entity_group": "GPU"}
        ]
    return styled_json.dumps(document).splitlines(), failure_status(outcomes)
