"""The catalog says what the real nvidia-smi says about the same GPUs."""

from __future__ import annotations

import re

import pytest
from helpers import REAL

from fakehw.specs import CATALOG, H100_SXM, H200, UnknownGpuModel, lookup


def q_values(path: str) -> dict[str, str]:
    """``Key : value`` pairs of an ``nvidia-smi -q`` capture, first occurrence,
    keyed by the indented path (``Max Clocks/Graphics``)."""
    values: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (REAL / path).read_text().splitlines():
        match = re.match(r"^( *)(\S.*?)\s*(?::\s(.*))?$", line)
        if not match or line.startswith(("$", "[exit", "=")):
            continue
        indent, key, value = len(match.group(1)), match.group(2).rstrip(" :"), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        full = "/".join([k for _, k in stack] + [key])
        if value is None:
            stack.append((indent, key))
        else:
            values.setdefault(full.split("/", 1)[1] if full.startswith("GPU ") else full, value)
    return values


@pytest.mark.parametrize(("spec", "folder"), [(H100_SXM, "h100"), (H200, "h200x2")])
def test_catalog_matches_the_real_gpu(spec, folder):  # type: ignore[no-untyped-def]
    q = q_values(f"{folder}/static/q.txt")
    assert q["Product Name"] == spec.name
    assert q["Product Architecture"] == spec.architecture
    assert q["FB Memory Usage/Total"] == f"{spec.memory_total_mib} MiB"
    assert q["FB Memory Usage/Reserved"] == f"{spec.memory_reserved_mib} MiB"
    assert q["BAR1 Memory Usage/Total"] == f"{spec.bar1_total_mib} MiB"
    assert q["GPU Power Readings/Default Power Limit"] == f"{spec.power_default_w:.2f} W"
    assert q["GPU Power Readings/Min Power Limit"] == f"{spec.power_min_w:.2f} W"
    assert q["GPU Power Readings/Max Power Limit"] == f"{spec.power_max_w:.2f} W"
    assert q["Max Clocks/Graphics"] == f"{spec.sm_clock_max_mhz} MHz"
    assert q["Max Clocks/Memory"] == f"{spec.mem_clock_max_mhz} MHz"
    assert q["Max Clocks/Video"] == f"{spec.video_clock_max_mhz} MHz"
    assert q["Clocks/SM"] == f"{spec.sm_clock_idle_mhz} MHz"  # idle capture
    assert q["Clocks/Video"] == f"{spec.video_clock_idle_mhz} MHz"
    assert q["PCI/Device Id"] == f"0x{spec.pci_device_id:08X}"
    assert q["PCI/Sub System Id"] == f"0x{spec.pci_subsystem_id:08X}"
    assert q["PCI/GPU Link Info/PCIe Generation/Max"] == str(spec.pcie_gen_max)
    assert q["PCI/GPU Link Info/Link Width/Max"] == f"{spec.pcie_width_max}x"
    assert q["VBIOS Version"] == spec.vbios_version
    assert q["Board Part Number"] == spec.board_part_number
    assert q["GPU Part Number"] == spec.gpu_part_number
    assert q["Inforom Version/Image Version"] == spec.inforom_image
    assert q["Inforom Version/OEM Object"] == spec.inforom_oem
    assert q["Inforom Version/ECC Object"] == spec.inforom_ecc
    assert q["Fan Speed"] == "N/A" and spec.fan_count == 0
    banks = q["Remapped Rows/Bank Remap Availability Histogram/Max"]
    assert banks == f"{spec.remapped_rows_banks} bank(s)"
    assert spec.tlimit is not None
    assert q["Temperature/GPU Shutdown T.Limit Temp"] == f"{spec.tlimit.shutdown_c} C"
    assert q["Temperature/GPU Slowdown T.Limit Temp"] == f"{spec.tlimit.slowdown_c} C"
    margin = int(q["Temperature/GPU T.Limit Temp"].split()[0])
    current = int(q["Temperature/GPU Current Temp"].split()[0])
    assert spec.tlimit.base_c == margin + current


@pytest.mark.parametrize(("spec", "folder"), [(H100_SXM, "h100"), (H200, "h200x2")])
def test_nvlink_matches_the_real_gpu(spec, folder):  # type: ignore[no-untyped-def]
    text = (REAL / folder / "static" / "nvlink_s.txt").read_text()
    links = re.findall(r"Link (\d+): ([\d.]+) GB/s", text)
    if folder == "h100":  # a single GPU in a VM: no links to show
        assert not links
        return
    per_gpu = {int(n) for n, _ in links}
    assert len(per_gpu) == spec.nvlink_count
    assert {float(rate) for _, rate in links} == {spec.nvlink_link_gbps}
    assert f"NV{spec.nvlink_count}" in (REAL / folder / "static" / "topo_m.txt").read_text()


@pytest.mark.parametrize("spec", CATALOG, ids=lambda s: s.key)
def test_every_model_is_found_by_name_key_and_aliases(spec):  # type: ignore[no-untyped-def]
    assert lookup(spec.name) is spec
    assert lookup(spec.name.lower()) is spec
    assert lookup(spec.name.upper()) is spec
    assert lookup(f"  {spec.key} ") is spec
    for alias in spec.aliases:
        assert lookup(alias) is spec


def test_aliases_are_unambiguous():
    names = [n.lower() for s in CATALOG for n in (s.key, s.name, *s.aliases)]
    assert len(names) == len(set(names))


def test_the_short_aliases_the_issue_names_exist():
    assert lookup("h100").name == "NVIDIA H100 80GB HBM3"
    assert lookup("h100-pcie").name == "NVIDIA H100 PCIe"
    assert lookup("h200").name == "NVIDIA H200"
    assert lookup("a100-80gb").name == "NVIDIA A100-SXM4-80GB"
    assert lookup("a100-40gb").name == "NVIDIA A100-SXM4-40GB"
    assert lookup("h100-nvl").name == "NVIDIA H100 NVL"
    assert lookup("a100-pcie").name == "NVIDIA A100 80GB PCIe"


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownGpuModel) as info:
        lookup("h10O")
    message = str(info.value)
    assert "h100" in message and "Known models" in message


@pytest.mark.parametrize("spec", CATALOG, ids=lambda s: s.key)
def test_models_are_physically_consistent(spec):  # type: ignore[no-untyped-def]
    # The lowest settable cap is still above what an idle board draws.
    assert spec.idle_power_w < spec.power_min_w < spec.power_default_w <= spec.power_max_w
    assert spec.sm_clock_idle_mhz < spec.sm_clock_max_mhz
    assert (spec.sm_clock_max_mhz - spec.sm_clock_idle_mhz) % spec.clock_step_mhz == 0
    assert spec.idle_temp_c < spec.load_temp_c < spec.temp_max_operating_c
    assert spec.temp_max_operating_c < spec.temp_slowdown_c < spec.temp_shutdown_c
    assert spec.context_mib < spec.free_floor_mib < spec.memory_usable_mib
    # Full-intensity work at the top clock must exceed the cap: training is capped.
    assert spec.idle_power_w + spec.context_extra_power_w + spec.dynamic_power_max_w > (
        spec.power_default_w
    )


def test_the_readme_physics_table_is_the_catalogs() -> None:
    """Each model's row says measured or derived as its ThermalFit does, and gives its
    idle and context power; only the measured ones name a calibration test."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [line.split(" | ") for line in readme.splitlines()
            if line.startswith("| ") and ("measured:" in line or "derived:" in line)]  # fmt: skip
    assert len(rows) == 4
    by_name = {row[0].removeprefix("| "): row for row in rows}
    groups = {
        "H100 SXM 80GB HBM3": ["h100-sxm"],
        "H200 141GB HBM3e": ["h200"],
        "H100 PCIe, H100 NVL": ["h100-pcie", "h100-nvl"],
        "A100 SXM4 40/80GB, A100 PCIe 80GB": ["a100-sxm4-40gb", "a100-sxm4-80gb", "a100-pcie-80gb"],
    }
    assert sorted(k for keys in groups.values() for k in keys) == sorted(s.key for s in CATALOG)
    for name, keys in groups.items():
        row = by_name[name]
        specs = [lookup(k) for k in keys]
        assert {s.thermal_fit.measured for s in specs} == {row[1].startswith("measured")}
        if row[1].startswith("measured"):
            assert specs[0].thermal_fit.source.split(": ")[1].startswith(row[1].split("`")[1])
            test = row[-1].strip(" |`")  # the calibration test that checks it
            assert "test_calibration" in test and (Path(__file__).parents[1] / test).is_file()
        idle = [float(x) for x in row[2].split(", ")]
        context = [float(x) for x in row[3].split(", ")]
        assert idle == [s.idle_power_w for s in specs]
        assert context == [round(s.idle_power_w + s.context_extra_power_w, 1) for s in specs] or (
            [round(c) for c in context]
            == [round(s.idle_power_w + s.context_extra_power_w) for s in specs]
        )
