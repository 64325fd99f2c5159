"""--query-gpu fields: names, aliases, headers and values as the real nvidia-smi 580."""

from __future__ import annotations

import re

import pytest
from helpers import REAL

from fakehw.contract.config import ClusterConfig
from fakehw.devices import Cluster
from fakehw.smi.fields import (
    FIELDS,
    FieldContext,
    UnknownField,
    csv_header,
    csv_row,
    format_timestamp,
    resolve,
    split_field_list,
)


def help_fields() -> list[list[str]]:
    """Field names with their aliases, from the real ``--help-query-gpu``."""
    names = []
    for line in (REAL / "h100/static/help_query_gpu.txt").read_text().splitlines():
        if line.startswith('"') and not re.match(r'^"\d+:', line):
            names.append(re.findall(r'"([^"]+)"', line))
    return names


def real_values() -> dict[str, tuple[str, str, str]]:
    """field -> (csv header, csv value, nounits value) from fields_values.tsv."""
    table = {}
    for line in (REAL / "h100/static/fields_values.tsv").read_text().splitlines():
        name, with_units, nounits = line.split("\t")[:3]
        if name[0].isdigit():  # the compute-mode legend lines the capture also tried
            continue
        header, value = with_units.split("|")[:2]
        table[name] = (header, value, nounits.rstrip("|"))
    return table


def test_every_real_field_and_alias_is_known():
    for names in help_fields():
        canonical = resolve([names[0]])[0]
        assert canonical.name == names[0]
        for alias in names[1:]:
            assert resolve([alias])[0] is canonical, alias
    assert len(help_fields()) == len(FIELDS)


def test_headers_match_the_real_csv():
    real = real_values()
    for field in FIELDS:
        assert field.header == real[field.name][0], field.name


# Values that legitimately differ between the fake and the captured GPU: the
# moment, this board's identity, its live sensors.
DIFFERS = {
    "timestamp",
    "serial",
    "uuid",
    "pci.bus_id",
    "pci.bus",
    "pci.device",
    "temperature.gpu",
    "temperature.gpu.tlimit",
    "temperature.memory",
    "power.draw",
    "power.draw.average",
    "power.draw.instant",
    "platform.module_id",
}


@pytest.fixture(scope="module")
def idle_h100():  # type: ignore[no-untyped-def]
    cluster = Cluster(ClusterConfig(gpu_model="h100", nodes=1, gpus_per_node=1), 1795357929.0)
    for _ in range(30):
        cluster.step(0.1)
    snap = cluster.snapshot()
    node = snap["nodes"][0]
    return FieldContext.of(snap, node, node["gpus"][0])


def test_idle_values_match_the_real_h100(idle_h100):  # type: ignore[no-untyped-def]
    real = real_values()
    for field in FIELDS:
        if field.name in DIFFERS:
            continue
        _, with_units, nounits = real[field.name]
        assert field.format_value(idle_h100, units=True) == with_units, field.name
        assert field.format_value(idle_h100, units=False) == nounits, field.name


def test_live_values_have_the_real_shape(idle_h100):  # type: ignore[no-untyped-def]
    shapes = {
        "timestamp": r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}",
        "serial": r"1\d{12}",
        "uuid": r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "pci.bus_id": r"00000000:[0-9A-F]{2}:00\.0",
        "temperature.gpu": r"[34]\d",
        "temperature.gpu.tlimit": r"[45]\d",
        "power.draw": r"\d{2}\.\d\d W",
        "power.draw.instant": r"\d{2}\.\d\d W",
    }
    for name, pattern in shapes.items():
        value = resolve([name])[0].format_value(idle_h100)
        assert re.fullmatch(pattern, value), (name, value)
    temp = int(resolve(["temperature.gpu"])[0].format_value(idle_h100))
    margin = int(resolve(["temperature.gpu.tlimit"])[0].format_value(idle_h100))
    assert temp + margin == 87


def test_header_keeps_units_with_nounits_and_rows_drop_them(idle_h100):  # type: ignore[no-untyped-def]
    fields = resolve(["index", "power.draw", "memory.used", "fan.speed"])
    assert csv_header(fields) == "index, power.draw [W], memory.used [MiB], fan.speed [%]"
    with_units = csv_row(fields, idle_h100, units=True)
    bare = csv_row(fields, idle_h100, units=False)
    assert re.fullmatch(r"0, \d+\.\d\d W, 0 MiB, \[N/A\]", with_units)
    assert re.fullmatch(r"0, \d+\.\d\d, 0, \[N/A\]", bare)


def test_real_query_capture_header():
    header = (REAL / "h100/static/query_l1.txt").read_text().splitlines()[0]
    names = [re.sub(r" \[.*\]$", "", column) for column in header.split(", ")]
    assert csv_header(resolve(names)) == header


def test_trace_header_uses_canonical_names_for_aliases():
    header = (REAL / "h100/load/trace.csv").read_text().splitlines()[0]
    names = (
        "timestamp,pstate,temperature.gpu,temperature.memory,power.draw,utilization.gpu,"
        "utilization.memory,memory.used,clocks.sm,clocks.mem,fan.speed"
    )
    assert csv_header(resolve(split_field_list(names))) == header


def test_unknown_field_message_is_the_real_one():
    expected = (REAL / "h100/static/badfield.txt").read_text().splitlines()[1]
    with pytest.raises(UnknownField) as info:
        resolve(["index", "bogus.field"])
    assert str(info.value) == expected


def test_names_are_case_insensitive_and_spaces_tolerated():
    assert resolve([" Temperature.GPU "])[0].name == "temperature.gpu"
    assert split_field_list("index, name,,power.draw ") == ["index", "name", "power.draw"]


def test_timestamp_format():
    assert format_timestamp(1795357948.919) == "2026/11/22 14:32:28.919"
    assert format_timestamp(1795357948.9996) == "2026/11/22 14:32:29.000"
