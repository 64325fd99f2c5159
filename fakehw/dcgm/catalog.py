"""DCGM's own table of fields (``dcgm_fields.cpp``): for every field id its tag, the
short name and unit ``dcgmi dmon`` prints over its column, the column's width and the
value's type. Read from ``data/dcgm-fields.tsv`` (DCGM 4.6.0's 643 fields), once.

Which of them the fake GPUs answer, and with what, is ``fakehw.dcgm.values``'s concern.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

FIELD_TABLE = Path(__file__).parent / "data" / "dcgm-fields.tsv"
TYPES = ("INT64", "DOUBLE", "STRING", "BINARY")


@dataclass(frozen=True)
class FieldMeta:
    field_id: int  # 150
    tag: str  # gpu_temp: dmon -l's long name
    short_name: str  # TMPTR: dmon's column header
    unit: str  # " C": dmon's second header line (at most 3 characters)
    width: int  # dmon's cell is width + 6 wide
    kind: str  # INT64, DOUBLE, STRING or BINARY
    entity_level: str  # GPU, GPU_I, GPU_CI, NONE, ...


@cache
def fields() -> dict[int, FieldMeta]:
    """Every field DCGM defines, by id, in increasing id order."""
    table: dict[int, FieldMeta] = {}
    for line in FIELD_TABLE.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        field_id, tag, short_name, unit, width, kind, level = line.split("\t")
        if kind not in TYPES:
            raise ValueError(f"{FIELD_TABLE}: field {field_id} has an unknown type {kind!r}")
        table[int(field_id)] = FieldMeta(int(field_id), tag, short_name, unit, int(width), kind,
                                         level)  # fmt: skip
    return dict(sorted(table.items()))
