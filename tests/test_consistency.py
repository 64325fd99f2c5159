"""At one instant every nvidia-smi view tells the same numbers.

The views render one snapshot; this checks that the table, the query CSV, the
``-q`` text and the XML agree on each value they share, for a busy GPU and an
idle one (rounding as nvidia-smi rounds: whole watts in the table, 2 decimals
elsewhere).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from fakehw.contract.config import ClusterConfig
from fakehw.devices import Cluster
from fakehw.smi import details, table
from fakehw.smi.fields import FieldContext, csv_row, resolve

FIELDS = resolve(
    [
        "index", "temperature.gpu", "temperature.memory", "power.draw", "power.limit",
        "memory.used", "memory.total", "memory.free", "utilization.gpu", "utilization.memory",
        "clocks.sm", "clocks.mem", "pstate", "uuid", "pci.bus_id", "clocks_event_reasons.active",
    ]
)  # fmt: skip


@pytest.fixture(scope="module")
def snapshot():  # type: ignore[no-untyped-def]
    cluster = Cluster(ClusterConfig(gpu_model="h100", gpus_per_node=2, seed=4), 1_800_000_000.0)
    cluster.attach(4242, "python3", [0], phase="train", memory_plan={"train": 40000})
    for _ in range(120):
        cluster.step(0.1)
    return cluster.snapshot()


def test_every_view_agrees(snapshot) -> None:  # type: ignore[no-untyped-def]
    node = snapshot["nodes"][0]
    table_text = table.render(snapshot, node, node["gpus"])
    report = details.report_text(snapshot, node, node["gpus"])
    root = ET.fromstring(details.report_xml(snapshot, node, node["gpus"]).split("\n", 2)[2])
    sections = report.split("\nGPU ")[1:]
    for gpu, section, xml_gpu in zip(node["gpus"], sections, root.findall("gpu"), strict=True):
        row = csv_row(FIELDS, FieldContext.of(snapshot, node, gpu), units=False).split(", ")
        csv = dict(zip([f.name for f in FIELDS], row, strict=True))
        text = dict(
            (k.strip(), v) for k, _, v in (line.partition(" : ") for line in section.splitlines())
        )

        def q(label: str, section: str = section) -> str:
            """The first value under ``label`` in this GPU's -q section."""
            match = re.search(rf"\n\s+{re.escape(label)}\s+: (.*)", section)
            assert match, label
            return match.group(1)

        # Temperatures
        assert csv["temperature.gpu"] + " C" == text["GPU Current Temp"]
        assert xml_gpu.findtext("temperature/gpu_temp") == text["GPU Current Temp"]
        assert csv["temperature.memory"] + " C" == xml_gpu.findtext("temperature/memory_temp")
        # Power: 2 decimals in CSV, -q and XML; whole watts in the table
        assert csv["power.draw"] + " W" == q("Average Power Draw")
        assert xml_gpu.findtext("gpu_power_readings/average_power_draw") == csv["power.draw"] + " W"
        assert f"{round(float(csv['power.draw']))}W / " in table_text
        assert csv["power.limit"] + " W" == xml_gpu.findtext(
            "gpu_power_readings/current_power_limit"
        )
        # Memory
        assert q("Used") == csv["memory.used"] + " MiB"
        assert xml_gpu.findtext("fb_memory_usage/used") == csv["memory.used"] + " MiB"
        assert xml_gpu.findtext("fb_memory_usage/free") == csv["memory.free"] + " MiB"
        assert f"{csv['memory.used']:>8}MiB / {csv['memory.total']:>6}MiB" in table_text
        # Utilization and clocks
        assert q("GPU") == csv["utilization.gpu"] + " %"
        assert xml_gpu.findtext("utilization/memory_util") == csv["utilization.memory"] + " %"
        assert f"{csv['utilization.gpu']:>7}%      Default" in table_text
        assert q("SM") == csv["clocks.current.sm"] + " MHz"
        assert xml_gpu.findtext("clocks/sm_clock") == csv["clocks.current.sm"] + " MHz"
        assert xml_gpu.findtext("clocks/mem_clock") == csv["clocks.current.memory"] + " MHz"
        # Identity and state
        assert xml_gpu.get("id") == csv["pci.bus_id"] == section.splitlines()[0]
        assert xml_gpu.findtext("uuid") == csv["uuid"] == text["GPU UUID"]
        assert text["Performance State"] == csv["pstate"]
        capped = int(csv["clocks_event_reasons.active"], 16) & 0x4
        expected = "Active" if capped else "Not Active"
        assert text["SW Power Cap"] == expected
        assert xml_gpu.findtext("clocks_event_reasons/clocks_event_reason_sw_power_cap") == expected


def test_the_busy_gpu_looks_busy_everywhere(snapshot) -> None:  # type: ignore[no-untyped-def]
    node = snapshot["nodes"][0]
    busy, idle = node["gpus"]
    assert busy["utilization_gpu_pct"] == 100 and idle["utilization_gpu_pct"] == 0
    assert busy["memory_used_mib"] == 40009 and idle["memory_used_mib"] == 0
    table_text = table.render(snapshot, node, node["gpus"])
    assert "|    0   N/A  N/A            4242      C   python3" in table_text
    report = details.report_text(snapshot, node, node["gpus"])
    assert "Process ID                                     : 4242" in report
    assert report.count("Processes                                          : None") == 1
