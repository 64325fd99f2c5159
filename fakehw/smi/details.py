"""``nvidia-smi -q``, ``-q -d SECTIONS`` and ``-q -x``: one tree, two renderings.

Each GPU is described once as a tree of nodes carrying both the text label
(``Product Name``) and the XML tag (``product_name``); where the two formats
differ (PCI numbers are ``0x06`` in text and ``06`` in XML, the XML has
``mig_devices`` and ``supported_clocks`` the text lacks) a node carries two
values or belongs to one format only. Order, labels, tags and the odd spots
(the trailing space of "GPU Memory Power Readings ") follow driver 580's
output in ``tests/real/*/static/q.txt`` and ``qx.txt``.
"""

from __future__ import annotations

from fakehw import TYPE_CHECKING
from fakehw.contract import snapshot as records
from fakehw.smi.common import asctime, model_of

if TYPE_CHECKING:
    from typing import Any

    from fakehw.contract.snapshot import GpuRecord, NodeRecord, ProcessRecord, Snapshot

LABEL_WIDTH = 55
NA = "N/A"
DISPLAY_GROUPS = (
    "MEMORY",
    "UTILIZATION",
    "ECC",
    "TEMPERATURE",
    "POWER",
    "CLOCK",
    "COMPUTE",
    "PIDS",
    "PERFORMANCE",
    "SUPPORTED_CLOCKS",
    "PAGE_RETIREMENT",
    "ACCOUNTING",
    "ENCODER_STATS",
    "SUPPORTED_GPU_TARGET_TEMP",
    "VOLTAGE",
    "FBC_STATS",
    "ROW_REMAPPER",
    "GSP_FIRMWARE_VERSION",
    "POWER_SMOOTHING",
    "POWER_PROFILES",
)
# Groups whose figures come from the daemon's sample buffers.


class Node:
    """A line (``value`` set) or a section (``children`` set) of the report."""

    __slots__ = ("children", "group", "label", "only_detail", "raw", "tag", "value", "xml_value")

    def __init__(
        self,
        label: str | None,
        tag: str | None,
        value: str | None = None,
        xml: str | None = None,
        children: list[Node] | None = None,
        group: str | None = None,
        only_detail: bool = False,
        raw: str | None = None,
    ) -> None:
        self.label = label  # None: XML only
        self.tag = tag  # None: text only
        self.value = value
        self.xml_value = value if xml is None else xml
        self.children = children
        self.group = group  # the -d group of a top-level node
        self.only_detail = only_detail  # shown with -d only ("... Samples")
        self.raw = raw  # XML body text of an element without children ("None")


def F(label: str | None, tag: str | None, value: object, xml: object = None) -> Node:
    return Node(label, tag, str(value), None if xml is None else str(xml))


def S(
    label: str | None,
    tag: str | None,
    *children: Node,
    group: str | None = None,
    value: object = None,
    only_detail: bool = False,
) -> Node:
    return Node(
        label,
        tag,
        None if value is None else str(value),
        children=list(children),
        group=group,
        only_detail=only_detail,
    )


# ----------------------------------------------------------------- the tree
def gpu_tree(snapshot: Snapshot, node: NodeRecord, gpu: GpuRecord) -> list[Node]:
    m = model_of(snapshot, gpu)
    g = gpu
    ecc = g["ecc"]
    reasons = g["clocks_event_reasons"]
    counters = g["clocks_event_counters_us"]
    switched = m["nvlink_topology"] == "all" and len(node["gpus"]) > 1
    tlimit = m["tlimit"]
    rows = records.RemappedRows(gpu["ecc"])
    banks_max, banks_high = rows.bank_histogram(m["remapped_rows_banks"])

    def active(bit: int) -> str:
        return "Active" if reasons & bit else "Not Active"

    def watts(milliwatts: float) -> str:
        return f"{milliwatts / 1000:.2f} W"

    current = g["temperature_gpu_c"]
    memory_now = f"{g['temperature_memory_c']} C"
    if tlimit is not None:
        limits = [
            ("GPU T.Limit Temp", "gpu_temp_tlimit", records.tlimit_margin_c(m, g)),
            ("GPU Shutdown T.Limit Temp", "gpu_temp_max_tlimit_threshold", tlimit["shutdown_c"]),
            ("GPU Slowdown T.Limit Temp", "gpu_temp_slow_tlimit_threshold", tlimit["slowdown_c"]),
            ("GPU Max Operating T.Limit Temp", "gpu_temp_max_gpu_tlimit_threshold",
             tlimit["max_operating_c"]),
        ]  # fmt: skip
        memory_limit = ("Memory Max Operating T.Limit Temp", "gpu_temp_max_mem_tlimit_threshold",
                        f"{tlimit['memory_max_c']} C")  # fmt: skip
        temperature = [F("GPU Current Temp", "gpu_temp", f"{current} C")]
    else:
        limits = [
            ("GPU Shutdown Temp", "gpu_temp_max_threshold", m["temp_shutdown_c"]),
            ("GPU Slowdown Temp", "gpu_temp_slow_threshold", m["temp_slowdown_c"]),
            ("GPU Max Operating Temp", "gpu_temp_max_gpu_threshold", m["temp_max_operating_c"]),
        ]
        memory_limit = ("Memory Max Operating Temp", "gpu_temp_max_mem_threshold",
                        f"{m['temp_memory_max_c']} C")  # fmt: skip
        temperature = [
            F("GPU Current Temp", "gpu_temp", f"{current} C"),
            F("GPU T.Limit Temp", "gpu_temp_tlimit", NA),
        ]
    temperature += [F(label, tag, f"{value} C") for label, tag, value in limits]
    temperature += [
        F("GPU Target Temperature", "gpu_target_temperature", NA),
        F("Memory Current Temp", "memory_temp", memory_now),
        F(*memory_limit),
    ]

    power_limits = [
        F("Current Power Limit", "current_power_limit", watts(g["power_limit_mw"])),
        F("Requested Power Limit", "requested_power_limit", watts(g["power_limit_mw"])),
        F("Default Power Limit", "default_power_limit", f"{m['power_default_w']:.2f} W"),
        F("Min Power Limit", "min_power_limit", f"{m['power_min_w']:.2f} W"),
        F("Max Power Limit", "max_power_limit", f"{m['power_max_w']:.2f} W"),
    ]
    na_limits = [
        F(label, tag, NA)
        for label, tag in (
            ("Current Power Limit", "current_power_limit"),
            ("Requested Power Limit", "requested_power_limit"),
            ("Default Power Limit", "default_power_limit"),
            ("Min Power Limit", "min_power_limit"),
            ("Max Power Limit", "max_power_limit"),
        )
    ]
    clocks_max = m["sm_clock_max_mhz"]
    mem_max = m["mem_clock_max_mhz"]

    tree = [
        F("Product Name", "product_name", m["name"]),
        F("Product Brand", "product_brand", "NVIDIA"),
        F("Product Architecture", "product_architecture", m["architecture"]),
        F("Display Mode", "display_mode", "Requested functionality has been deprecated"),
        F("Display Attached", "display_attached", "Yes"),
        F("Display Active", "display_active", "Disabled"),
        F("Persistence Mode", "persistence_mode",
          "Enabled" if g["persistence_mode"] else "Disabled"),
        F("Addressing Mode", "addressing_mode", "None"),
        S("MIG Mode", "mig_mode", F("Current", "current_mig", "Disabled"),
          F("Pending", "pending_mig", "Disabled")),
        Node(None, "mig_devices", raw="None"),
        Node("Accounting Mode", "accounting_mode", "Disabled", group="ACCOUNTING"),
        Node("Accounting Mode Buffer Size", "accounting_mode_buffer_size", "4000",
             group="ACCOUNTING"),
        S("Driver Model", "driver_model", F("Current", "current_dm", NA),
          F("Pending", "pending_dm", NA)),
        F("Serial Number", "serial", g["serial"]),
        F("GPU UUID", "uuid", g["uuid"]),
        F("GPU PDI", "pdi", f"0x{g['pdi']:016x}"),
        F("Minor Number", "minor_number", g["minor_number"]),
        F("VBIOS Version", "vbios_version", m["vbios_version"]),
        F("MultiGPU Board", "multigpu_board", "No"),
        F("Board ID", "board_id", f"0x{g['board_id']:x}"),
        F("Board Part Number", "board_part_number", m["board_part_number"]),
        F("GPU Part Number", "gpu_part_number", m["gpu_part_number"]),
        F("FRU Part Number", "gpu_fru_part_number", NA),
        S("Platform Info", "platformInfo",
          F("Chassis Serial Number", "chassis_serial_number", NA),
          F("Slot Number", "slot_number", NA),
          F("Tray Index", "tray_index", NA),
          F("Host ID", "host_id", NA),
          F("Peer Type", "peer_type", NA),
          F("Module Id", "module_id", g["module_id"]),
          F("GPU Fabric GUID", "gpu_fabric_guid", NA)),
        S("Inforom Version", "inforom_version",
          F("Image Version", "img_version", m["inforom_image"]),
          F("OEM Object", "oem_object", m["inforom_oem"]),
          F("ECC Object", "ecc_object", m["inforom_ecc"]),
          F("Power Management Object", "pwr_object", NA)),
        S("Inforom BBX Object Flush", "inforom_bbx_flush",
          F("Latest Timestamp", "latest_timestamp", NA),
          F("Latest Duration", "latest_duration", NA)),
        S("GPU Operation Mode", "gpu_operation_mode", F("Current", "current_gom", NA),
          F("Pending", "pending_gom", NA)),
        F("GPU C2C Mode", "c2c_mode", "Disabled"),
        S("GPU Virtualization Mode", "gpu_virtualization_mode",
          F("Virtualization Mode", "virtualization_mode", "Pass-Through"),
          F("Host VGPU Mode", "host_vgpu_mode", NA),
          F("vGPU Heterogeneous Mode", "vgpu_heterogeneous_mode", NA)),
        F("GPU Recovery Action", "gpu_recovery_action", "None"),
        Node("GSP Firmware Version", "gsp_firmware_version", snapshot["driver_version"],
             group="GSP_FIRMWARE_VERSION"),
        S("IBMNPU", "ibmnpu", F("Relaxed Ordering Mode", "relaxed_ordering_mode", NA)),
        S("PCI", "pci",
          F("Bus", "pci_bus", f"0x{g['pci_bus']:02X}", f"{g['pci_bus']:02X}"),
          F("Device", "pci_device", f"0x{g['pci_device']:02X}", f"{g['pci_device']:02X}"),
          F("Domain", "pci_domain", f"0x{g['pci_domain']:04X}", f"{g['pci_domain']:04X}"),
          F("Base Classcode", "pci_base_class", "0x3", "3"),
          F("Sub Classcode", "pci_sub_class", "0x2", "2"),
          F("Device Id", "pci_device_id", f"0x{m['pci_device_id']:08X}",
            f"{m['pci_device_id']:08X}"),
          F("Bus Id", "pci_bus_id", g["bus_id"]),
          F("Sub System Id", "pci_sub_system_id", f"0x{m['pci_subsystem_id']:08X}",
            f"{m['pci_subsystem_id']:08X}"),
          S("GPU Link Info", "pci_gpu_link_info",
            S("PCIe Generation", "pcie_gen",
              F("Max", "max_link_gen", m["pcie_gen_max"]),
              F("Current", "current_link_gen", g["pcie_gen_current"]),
              F("Device Current", "device_current_link_gen", g["pcie_gen_current"]),
              F("Device Max", "max_device_link_gen", m["pcie_gen_max"]),
              F("Host Max", "max_host_link_gen", NA)),
            S("Link Width", "link_widths",
              F("Max", "max_link_width", f"{m['pcie_width_max']}x"),
              F("Current", "current_link_width", f"{g['pcie_width_current']}x"))),
          S("Bridge Chip", "pci_bridge_chip", F("Type", "bridge_chip_type", NA),
            F("Firmware", "bridge_chip_fw", NA)),
          F("Replays Since Reset", "replay_counter", 0),
          F("Replay Number Rollovers", "replay_rollover_counter", 0),
          F("Tx Throughput", "tx_util", f"{g['pcie_tx_kbps']} KB/s"),
          F("Rx Throughput", "rx_util", f"{g['pcie_rx_kbps']} KB/s"),
          F("Atomic Caps Outbound", "atomic_caps_outbound", NA),
          F("Atomic Caps Inbound", "atomic_caps_inbound", NA)),
        F("Fan Speed", "fan_speed", NA),
        Node("Performance State", "performance_state", g["pstate"], group="PERFORMANCE"),
        S("Clocks Event Reasons", "clocks_event_reasons",
          F("Idle", "clocks_event_reason_gpu_idle", active(records.REASON_GPU_IDLE)),
          F("Applications Clocks Setting", "clocks_event_reason_applications_clocks_setting",
            active(records.REASON_APPLICATIONS_CLOCKS)),
          F("SW Power Cap", "clocks_event_reason_sw_power_cap",
            active(records.REASON_SW_POWER_CAP)),
          S("HW Slowdown", None,
            F("HW Thermal Slowdown", None, active(records.REASON_HW_THERMAL)),
            F("HW Power Brake Slowdown", None, active(records.REASON_HW_POWER_BRAKE)),
            value=active(records.REASON_HW_SLOWDOWN)),
          F(None, "clocks_event_reason_hw_slowdown", active(records.REASON_HW_SLOWDOWN)),
          F(None, "clocks_event_reason_hw_thermal_slowdown", active(records.REASON_HW_THERMAL)),
          F(None, "clocks_event_reason_hw_power_brake_slowdown",
            active(records.REASON_HW_POWER_BRAKE)),
          F("Sync Boost", "clocks_event_reason_sync_boost", active(records.REASON_SYNC_BOOST)),
          F("SW Thermal Slowdown", "clocks_event_reason_sw_thermal_slowdown",
            active(records.REASON_SW_THERMAL)),
          F("Display Clock Setting", "clocks_event_reason_display_clocks_setting",
            active(records.REASON_DISPLAY_CLOCKS)),
          group="PERFORMANCE"),
        S("Clocks Event Reasons Counters", "clocks_event_reasons_counters",
          F("SW Power Capping", "clocks_event_reasons_counters_sw_power_cap",
            f"{counters['sw_power_cap']} us"),
          F("Sync Boost", "clocks_event_reasons_counters_sync_boost",
            f"{counters['sync_boost']} us"),
          F("SW Thermal Slowdown", "clocks_event_reasons_counters_sw_therm_slowdown",
            f"{counters['sw_thermal_slowdown']} us"),
          F("HW Thermal Slowdown", "clocks_event_reasons_counters_hw_therm_slowdown",
            f"{counters['hw_thermal_slowdown']} us"),
          F("HW Power Braking", "clocks_event_reasons_counters_hw_power_brake",
            f"{counters['hw_power_brake_slowdown']} us"),
          group="PERFORMANCE"),
        Node("Sparse Operation Mode", "sparse_operation_mode", "Disabled", group="PERFORMANCE"),
        S("FB Memory Usage", "fb_memory_usage",
          F("Total", "total", f"{g['memory_total_mib']} MiB"),
          F("Reserved", "reserved", f"{g['memory_reserved_mib']} MiB"),
          F("Used", "used", f"{g['memory_used_mib']} MiB"),
          F("Free", "free",
            f"{g['memory_total_mib'] - g['memory_reserved_mib'] - g['memory_used_mib']} MiB"),
          group="MEMORY"),
        S("BAR1 Memory Usage", "bar1_memory_usage",
          F("Total", "total", f"{m['bar1_total_mib']} MiB"),
          F("Used", "used", f"{g['bar1_used_mib']} MiB"),
          F("Free", "free", f"{m['bar1_total_mib'] - g['bar1_used_mib']} MiB"),
          group="MEMORY"),
        S("Conf Compute Protected Memory Usage", "cc_protected_memory_usage",
          F("Total", "total", "0 MiB"), F("Used", "used", "0 MiB"), F("Free", "free", "0 MiB"),
          group="MEMORY"),
        Node("Compute Mode", "compute_mode", "Default", group="COMPUTE"),
        S("Utilization", "utilization",
          F("GPU", "gpu_util", f"{g['utilization_gpu_pct']} %"),
          F("Memory", "memory_util", f"{g['utilization_memory_pct']} %"),
          F("Encoder", "encoder_util", "0 %"),
          F("Decoder", "decoder_util", "0 %"),
          F("JPEG", "jpeg_util", "0 %"),
          F("OFA", "ofa_util", "0 %"),
          group="UTILIZATION"),
        *_utilization_samples(g),
        S("Encoder Stats", "encoder_stats",
          F("Active Sessions", "session_count", 0), F("Average FPS", "average_fps", 0),
          F("Average Latency", "average_latency", 0), group="ENCODER_STATS"),
        S("FBC Stats", "fbc_stats",
          F("Active Sessions", "session_count", 0), F("Average FPS", "average_fps", 0),
          F("Average Latency", "average_latency", 0), group="FBC_STATS"),
        S("DRAM Encryption Mode", "dram_encryption_mode",
          F("Current", "current_dram_encryption", NA),
          F("Pending", "pending_dram_encryption", NA)),
        S("ECC Mode", "ecc_mode", F("Current", "current_ecc", "Enabled"),
          F("Pending", "pending_ecc", "Enabled"), group="ECC"),
        S("ECC Errors", "ecc_errors",
          S("Volatile", "volatile", *_ecc_counts(ecc, "volatile")),
          S("Aggregate", "aggregate", *_ecc_counts(ecc, "aggregate"),
            F("SRAM Threshold Exceeded", "sram_threshold_exceeded", "No")),
          S("Aggregate Uncorrectable SRAM Sources", "aggregate_uncorrectable_sram_sources",
            F("SRAM L2", "sram_l2", 0), F("SRAM SM", "sram_sm", 0),
            F("SRAM Microcontroller", "sram_microcontroller", 0),
            F("SRAM PCIE", "sram_pcie", 0), F("SRAM Other", "sram_other", 0)),
          F("Channel Repair Pending", "channel_repair_pending", "No"),
          F("TPC Repair Pending", "tpc_repair_pending", "No"),
          F("Unrepairable Memory", "unrepairable_memory", "No"),
          group="ECC"),
        S("Retired Pages", "retired_pages",
          F("Single Bit ECC", None, NA),
          F("Double Bit ECC", None, NA),
          F("Pending Page Blacklist", None, NA),
          S(None, "multiple_single_bit_retirement", F(None, "retired_count", NA),
            F(None, "retired_pagelist", NA)),
          S(None, "double_bit_retirement", F(None, "retired_count", NA),
            F(None, "retired_pagelist", NA)),
          F(None, "pending_blacklist", NA),
          F(None, "pending_retirement", NA),
          group="PAGE_RETIREMENT"),
        S("Remapped Rows", "remapped_rows",
          F("Correctable Error", "remapped_row_corr", rows.correctable),
          F("Inactive Correctable Error", "remapped_row_corr_inactive", 0),
          F("Uncorrectable Error", "remapped_row_unc", rows.uncorrectable),
          F("Inactive Uncorrectable Error", "remapped_row_unc_inactive", 0),
          F("Pending", "remapped_row_pending", "Yes" if rows.pending else "No"),
          F("Remapping Failure Occurred", "remapped_row_failure", "Yes" if rows.failure else "No"),
          S("Bank Remap Availability Histogram", "row_remapper_histogram",
            F("Max", "row_remapper_histogram_max", f"{banks_max} bank(s)"),
            F("High", "row_remapper_histogram_high", f"{banks_high} bank(s)"),
            F("Partial", "row_remapper_histogram_partial", "0 bank(s)"),
            F("Low", "row_remapper_histogram_low", "0 bank(s)"),
            F("None", "row_remapper_histogram_none", "0 bank(s)")),
          group="ROW_REMAPPER"),
        S("Temperature", "temperature", *temperature, group="TEMPERATURE"),
        S("Supported GPU Target Temp", "supported_gpu_target_temp",
          F("GPU Target Temp Min", "gpu_target_temp_min", NA),
          F("GPU Target Temp Max", "gpu_target_temp_max", NA),
          group="SUPPORTED_GPU_TARGET_TEMP", only_detail=True),
        S("GPU Power Readings", "gpu_power_readings",
          F(None, "power_state", g["pstate"]),
          F("Average Power Draw", "average_power_draw", watts(g["power_draw_mw"])),
          F("Instantaneous Power Draw", "instant_power_draw", watts(g["power_instant_mw"])),
          *power_limits,
          group="POWER"),
        *_power_samples(g),
        S("GPU Memory Power Readings ", "gpu_memory_power_readings",
          F("Average Power Draw", "average_power_draw", watts(g["memory_power_mw"])),
          F("Instantaneous Power Draw", "instant_power_draw", NA),
          group="POWER"),
        S("Module Power Readings", "module_power_readings",
          F(None, "power_state", g["pstate"]),
          F("Average Power Draw", "average_power_draw", NA),
          F("Instantaneous Power Draw", "instant_power_draw", NA),
          *na_limits,
          group="POWER"),
        Node("Power Smoothing", "power_smoothing", NA, group="POWER_SMOOTHING"),
        S("Workload Power Profiles", "power_profiles",
          F("Requested Profiles", "power_profile_requested_profiles", NA),
          F("Enforced Profiles", "power_profile_enforced_profiles", NA),
          group="POWER_PROFILES"),
        S("Clocks", "clocks",
          F("Graphics", "graphics_clock", f"{g['clock_sm_mhz']} MHz"),
          F("SM", "sm_clock", f"{g['clock_sm_mhz']} MHz"),
          F("Memory", "mem_clock", f"{g['clock_memory_mhz']} MHz"),
          F("Video", "video_clock", f"{g['clock_video_mhz']} MHz"),
          group="CLOCK"),
        S("Applications Clocks", "applications_clocks",
          F("Graphics", "graphics_clock", f"{clocks_max} MHz"),
          F("Memory", "mem_clock", f"{mem_max} MHz"), group="CLOCK"),
        S("Default Applications Clocks", "default_applications_clocks",
          F("Graphics", "graphics_clock", f"{clocks_max} MHz"),
          F("Memory", "mem_clock", f"{mem_max} MHz"), group="CLOCK"),
        S("Deferred Clocks", "deferred_clocks", F("Memory", "mem_clock", NA), group="CLOCK"),
        S("Max Clocks", "max_clocks",
          F("Graphics", "graphics_clock", f"{clocks_max} MHz"),
          F("SM", "sm_clock", f"{clocks_max} MHz"),
          F("Memory", "mem_clock", f"{mem_max} MHz"),
          F("Video", "video_clock", f"{m['video_clock_max_mhz']} MHz"), group="CLOCK"),
        S("Max Customer Boost Clocks", "max_customer_boost_clocks",
          F("Graphics", "graphics_clock", f"{clocks_max} MHz"), group="CLOCK"),
        *_not_found_samples(("SM Clock Samples", "Memory Clock Samples"), "CLOCK"),
        S("Clock Policy", "clock_policy", F("Auto Boost", "auto_boost", NA),
          F("Auto Boost Default", "auto_boost_default", NA), group="CLOCK"),
        S("Fabric", "fabric",
          F("State", "state", "Completed" if switched else NA),
          F("Status", "status", "Success" if switched else NA),
          F("CliqueId", "cliqueId", "0" if switched else NA),
          F("ClusterUUID", "clusterUuid",
            "00000000-0000-0000-0000-000000000000" if switched else NA),
          S("Health", "health",
            F("Summary", "summary", NA), F("Bandwidth", "bandwidth", NA),
            F("Route Recovery in progress", "route_recovery_in_progress", NA),
            F("Route Unhealthy", "route_unhealthy", NA),
            F("Access Timeout Recovery", "access_timeout_recovery", NA),
            F("Incorrect Configuration", "incorrect_configuration", NA),
            F("Partition Assigned", "partition_assigned", NA))),
        _supported_clocks(m),
        _processes(node, g),
        S(None, "accounted_processes"),
        S("Capabilities", "capabilities", F("EGM", "egm", "disabled")),
    ]  # fmt: skip
    return tree


def _ecc_counts(ecc: Any, scope: str) -> list[Node]:
    return [
        F("SRAM Correctable", "sram_correctable", ecc[f"{scope}_sram_corrected"]),
        F("SRAM Uncorrectable Parity", "sram_uncorrectable_parity",
          ecc[f"{scope}_sram_uncorrected"]),
        F("SRAM Uncorrectable SEC-DED", "sram_uncorrectable_secded", 0),
        F("DRAM Correctable", "dram_correctable", ecc[f"{scope}_dram_corrected"]),
        F("DRAM Uncorrectable", "dram_uncorrectable", ecc[f"{scope}_dram_uncorrected"]),
    ]  # fmt: skip


def _sample_section(label: str, group: str, lines: list[tuple[str, str]]) -> Node:
    children = (F(key, None, value) for key, value in lines)
    return S(label, None, *children, group=group, only_detail=True)


def _stats(samples: list[float] | None, unit: str, decimals: int) -> list[tuple[str, str]]:
    if samples is None:
        keys = ("Duration", "Number of Samples", "Max", "Min", "Avg")
        return [(key, "Not Found") for key in keys]
    duration, count, high, low, mean = samples
    if decimals:
        return [
            ("Duration", f"{duration:.2f} sec"),
            ("Number of Samples", f"{int(count)}"),
            ("Max", f"{high / 1000:.2f} {unit}"),
            ("Min", f"{low / 1000:.2f} {unit}"),
            ("Avg", f"{mean / 1000:.2f} {unit}"),
        ]
    return [
        ("Duration", f"{duration:.2f} sec"),
        ("Number of Samples", f"{int(count)}"),
        ("Max", f"{round(high)} {unit}"),
        ("Min", f"{round(low)} {unit}"),
        ("Avg", f"{round(mean)} {unit}"),
    ]


def _utilization_samples(gpu: GpuRecord) -> list[Node]:
    samples = gpu.get("samples")
    gpu_util = samples["gpu_util"] if samples else None
    memory_util = samples["memory_util"] if samples else None
    idle = None if gpu_util is None else [gpu_util[0], gpu_util[1], 0.0, 0.0, 0.0]
    return [
        _sample_section("GPU Utilization Samples", "UTILIZATION", _stats(gpu_util, "%", 0)),
        _sample_section("Memory Utilization Samples", "UTILIZATION", _stats(memory_util, "%", 0)),
        *(
            _sample_section(f"{engine} Utilization Samples", "UTILIZATION", _stats(idle, "%", 0))
            for engine in ("ENC", "DEC", "JPG", "OFA")
        ),
    ]


def _power_samples(gpu: GpuRecord) -> list[Node]:
    samples = gpu.get("samples")
    power = samples["power_mw"] if samples else None
    return [_sample_section("Power Samples", "POWER", _stats(power, "W", 2))]


def _not_found_samples(labels: tuple[str, ...], group: str) -> list[Node]:
    # The H100 and H200 keep no clock sample buffers: nvidia-smi says so.
    return [_sample_section(label, group, _stats(None, "", 0)) for label in labels]


def _supported_clocks(model: dict[str, Any]) -> Node:
    graphics = list(
        range(model["sm_clock_max_mhz"], model["sm_clock_idle_mhz"] - 1, -model["clock_step_mhz"])
    )
    memories = [model["mem_clock_max_mhz"]]
    if model["mem_clock_min_mhz"] != model["mem_clock_max_mhz"]:
        memories.append(model["mem_clock_min_mhz"])
    sections = []
    for memory in memories:
        section = S(
            "Memory", "supported_mem_clock",
            F(None, "value", f"{memory} MHz"),
            *(F("Graphics", "supported_graphics_clock", f"{clock} MHz") for clock in graphics),
            value=f"{memory} MHz",
        )  # fmt: skip
        sections.append(section)
    # The full text report leaves the list out (-d SUPPORTED_CLOCKS shows it); the XML has it.
    return S("Supported Clocks", "supported_clocks", *sections, group="SUPPORTED_CLOCKS",
             only_detail=True)  # fmt: skip


def _processes(node: NodeRecord, gpu: GpuRecord) -> Node:
    mine: list[ProcessRecord] = [p for p in node["processes"] if p["gpu_index"] == gpu["index"]]
    if not mine:
        return Node("Processes", "processes", value="None", xml="", children=[], group="PIDS")
    children = []
    for process in mine:
        children.append(F("GPU instance ID", None, NA))
        children.append(F("Compute instance ID", None, NA))
        children.append(
            S("Process ID", "process_info",
              F(None, "gpu_instance_id", NA), F(None, "compute_instance_id", NA),
              F(None, "pid", process["pid"]),
              F("Type", "type", process["type"]),
              F("Name", "process_name", process["name"]),
              F("Used GPU Memory", "used_memory", f"{process['used_memory_mib']} MiB"),
              value=process["pid"])
        )  # fmt: skip
    return S("Processes", "processes", *children, group="PIDS")


# ------------------------------------------------------------ rendering
def _text(nodes: list[Node], depth: int, out: list[str]) -> None:
    indent = "    " * depth
    for node in nodes:
        if node.label is None:
            continue
        if node.children is not None and (node.children or node.value is None):
            head = indent + node.label
            out.append(f"{head:<{LABEL_WIDTH}}: {node.value}" if node.value is not None else head)
            _text(node.children, depth + 1, out)
        else:
            out.append(f"{indent + node.label:<{LABEL_WIDTH}}: {node.value}")


def _xml(nodes: list[Node], depth: int, out: list[str]) -> None:
    indent = "\t" * depth
    for node in nodes:
        if node.tag is None:
            continue
        if node.raw is not None:
            out.append(f"{indent}<{node.tag}>\n{indent}\t{node.raw}\n{indent}</{node.tag}>")
        elif node.children is not None:
            out.append(f"{indent}<{node.tag}>")
            _xml(node.children, depth + 1, out)
            out.append(f"{indent}</{node.tag}>")
        else:
            out.append(f"{indent}<{node.tag}>{_escape(node.xml_value or '')}</{node.tag}>")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _selected(tree: list[Node], groups: set[str] | None) -> list[Node]:
    """Top-level nodes of the text report: all but the -d-only ones, or those of ``groups``."""
    if groups is None:
        return [n for n in tree if not n.only_detail]
    return [n for n in tree if n.group in groups]


def report_text(
    snapshot: Snapshot, node: NodeRecord, gpus: list[GpuRecord], groups: set[str] | None = None
) -> str:
    """``nvidia-smi -q`` (all sections) or ``-q -d GROUPS`` as text."""
    out = [
        "",
        "==============NVSMI LOG==============",
        "",
        f"{'Timestamp':<{LABEL_WIDTH}}: {asctime(snapshot['time'])}",
        f"{'Driver Version':<{LABEL_WIDTH}}: {snapshot['driver_version']}",
        f"{'CUDA Version':<{LABEL_WIDTH}}: {snapshot['cuda_version']}",
        "",
        f"{'Attached GPUs':<{LABEL_WIDTH}}: {len(node['gpus'])}",
    ]
    for gpu in gpus:
        out.append(f"GPU {gpu['bus_id']}")
        _text(_selected(gpu_tree(snapshot, node, gpu), groups), 1, out)
        out.append("")
    return "\n".join(out) + "\n"


def report_xml(snapshot: Snapshot, node: NodeRecord, gpus: list[GpuRecord]) -> str:
    """``nvidia-smi -q -x``: the same report as XML (DTD v13, as driver 580)."""
    out = [
        '<?xml version="1.0" ?>',
        '<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v13.dtd">',
        "<nvidia_smi_log>",
        f"\t<timestamp>{asctime(snapshot['time'])}</timestamp>",
        f"\t<driver_version>{snapshot['driver_version']}</driver_version>",
        f"\t<cuda_version>{snapshot['cuda_version']}</cuda_version>",
        f"\t<attached_gpus>{len(node['gpus'])}</attached_gpus>",
    ]
    for gpu in gpus:
        out.append(f'\t<gpu id="{gpu["bus_id"]}">')
        _xml(gpu_tree(snapshot, node, gpu), 2, out)
        out.append("\t</gpu>")
        out.append("")
    out.append("</nvidia_smi_log>")
    return "\n".join(out) + "\n"


def parse_groups(text: str) -> set[str]:
    """``-d MEMORY,utilization`` -> the groups; ``ValueError`` naming an unknown one."""
    groups = {part.strip().upper() for part in text.split(",") if part.strip()}
    unknown = sorted(groups - set(DISPLAY_GROUPS))
    if unknown or not groups:
        raise ValueError(unknown[0] if unknown else text)
    return groups
