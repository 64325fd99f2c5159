"""``dcgmi dmon``: DCGM fields of each GPU, one line per GPU per sample, as DCGM 4.6
prints them (``DeviceMonitor.cpp``): a 16-character entity column, then per field a
cell its width + 8 wide; integers as they are, doubles with 3 decimals, a blank value
as ``N/A``; the two header lines again after samples 15, 29, 43, ...; and ``dmon -l``,
DCGM's field table."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fakehw import TYPE_CHECKING
from fakehw.dcgm.catalog import FieldMeta, fields
from fakehw.dcgm.values import Subject, field_value
from fakehw.dcgmi import status, tables
from fakehw.dcgmi.options import HOST, SUPPORTED_ENTITIES, Command, Option

if TYPE_CHECKING:
    from fakehw.dcgm.values import Value

ENTITY_WIDTH = 16  # firstFieldWidth 14 + PADDING 2 (DCGM 4.5 and 4.6)
CELL_EXTRA = 6  # a field's cell is its width + 6 ...
PADDING = 2  # ... and is printed in 2 more
HEADER_EVERY = 14  # samples between repeated headers, after the first 15
MAX_LIST_WIDTH = 120
SHORT_NAME_WIDTH, FIELD_ID_WIDTH = 20, 10
STOPPED = "\n\ndmon was stopped due to receiving a signal"
LEADING_INTEGER = re.compile(r"\s*([+-]?[0-9]+)")
COMMAND = Command(
    "dmon",
    "dmon -- Used to monitor GPUs and their stats.",
    (
        HOST,
        Option(
            "i",
            "entity-id",
            "entityId",
            " Comma-separated list of entities to run the dmon "
            "on. Default is -1 which runs for all supported GPU. Run dcgmi discovery -c to "
            "check list of available GPU entities." + SUPPORTED_ENTITIES,
        ),
        Option("g", "group-id", "groupId", " The group to query on the specified host."),
        Option(
            "f",
            "field-group-id",
            "fieldGroupId",
            " The field group to query on the specified host.",
            kind="int",
        ),
        Option("e", "field-id", "fieldId", " Field identifier to view/inject."),
        Option(
            "d",
            "delay",
            "delay",
            " In milliseconds. Integer representing how often to "
            "query results from DCGM and print them for all of the entities. [default = 1000 "
            "msec,  Minimum value = 1 msec.]",
            kind="int",
        ),
        Option(
            "c",
            "count",
            "count",
            " Integer representing How many times to loop before exiting. [default- runs forever.]",
            kind="int",
        ),
        Option("l", "list", None, "List to look up the long names, short names and field ids."),
    ),
    one_of=("field-group-id", "field-id", "list"),
    usage_groups=(
        ("entity-id", "group-id", "field-group-id", "field-id", "delay", "count", "list"),
    ),
)


def list_lines(columns: int) -> list[str]:
    """``dmon -l`` for a terminal ``columns`` wide (80 when not a terminal)."""
    width = min(MAX_LIST_WIDTH, columns)
    long_width = max(20, width - 30)
    rule = "_" * (long_width + SHORT_NAME_WIDTH + FIELD_ID_WIDTH)
    lines = [
        rule,
        "Long Name".ljust(long_width)
        + "Short Name".ljust(SHORT_NAME_WIDTH)
        + "Field ID".ljust(FIELD_ID_WIDTH),
        rule,
    ]
    for meta in fields().values():
        tag = tables.cut(meta.tag, long_width)
        lines.append(f"{tag:<{long_width}} {meta.short_name:<{SHORT_NAME_WIDTH}}{meta.field_id}")
    return lines


def _atoi(token: str) -> int:
    """C's ``atoi``: leading blanks, a sign, the digits up to the first other character."""
    match = LEADING_INTEGER.match(token)
    return int(match.group(1)) if match else 0


def parse_field_ids(text: str) -> list[FieldMeta]:
    """``-e 150,155,1004``: the fields in the order given (repeats kept), or dcgmi's
    error (stderr, exit 255). As dcgmi, each token is read by ``atoi`` into an unsigned
    short: ``150x`` is 150, ``65536`` is 0 (and so not a number)."""
    chosen = []
    known = fields()
    for token in text.split(","):
        field_id = _atoi(token) & 0xFFFF
        if not field_id and not token.startswith("0"):
            raise status.DcgmiError(
                [f"Error: Expected numerical fieldId. Got '{token}' instead."],
                status.BADPARAM,
                "stderr",
            )
        meta = known.get(field_id)
        if meta is None:
            raise status.DcgmiError(
                [
                    f"Error: Got invalid field ID. '{field_id}'. See dcgm_fields.h for a list of "
                    "valid field IDs."
                ],
                status.BADPARAM,
                "stderr",
            )
        chosen.append(meta)
    return chosen


def _cell(text: str, meta: FieldMeta) -> str:
    width = meta.width + CELL_EXTRA
    return tables.cut(text, width).ljust(width + PADDING)


def header(chosen: list[FieldMeta]) -> list[str]:
    return [
        "#Entity".ljust(ENTITY_WIDTH) + "".join(_cell(m.short_name, m) for m in chosen),
        "ID".ljust(ENTITY_WIDTH) + "".join(_cell(m.unit, m) for m in chosen),
    ]


def format_value(value: Value | None, meta: FieldMeta) -> str:
    if value is None or meta.kind == "BINARY":
        return "N/A"
    if meta.kind == "STRING":
        return str(value)
    if meta.kind == "DOUBLE":
        return f"{float(value):.3f}"
    return str(round(float(value)) if isinstance(value, float) else value)


def row(subject: Subject, chosen: list[FieldMeta]) -> str:
    label = f"GPU {subject.gpu['index']}".ljust(ENTITY_WIDTH)
    return label + "".join(
        _cell(format_value(field_value(m.field_id, subject), m), m) for m in chosen
    )


@dataclass
class HeaderSchedule:
    """When dmon prints its header again: after the first 15 samples, then every 14."""

    since_header: int = 0

    def after_sample(self) -> bool:
        """Call once between two samples; True when the header is due before the next."""
        due = self.since_header == HEADER_EVERY
        if due:
            self.since_header = 0
        self.since_header += 1
        return due
