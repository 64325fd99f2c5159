"""Every ``nvidia-smi --query-gpu`` field: its name, aliases, unit and value.

Built from the real tool's ``--help-query-gpu`` and the values it printed on
an H100 and two H200s (``tests/real/*/static/``). A field reads one GPU record
of a snapshot and returns its text without unit; ``format_value`` adds the unit
the way nvidia-smi does (``--format=csv``) or leaves it off (``nounits``).
Bracketed texts such as ``[N/A]`` never get a unit.
"""

from __future__ import annotations

import time

from fakehw import TYPE_CHECKING
from fakehw.contract import snapshot as records

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from fakehw.contract.snapshot import GpuRecord, NodeRecord, ProcessRecord, Snapshot

    Reader = Callable[["FieldContext"], str]

NA = "[N/A]"


class FieldContext:
    """What a field may read: the GPU, its node, its model and the moment (``at``: when
    the row was asked for, as nvidia-smi stamps a query; the snapshot's own time when
    no one asked, as in ``fakehw simulate``)."""

    __slots__ = ("at", "gpu", "model", "node", "snapshot")

    def __init__(
        self, snapshot: Snapshot, node: NodeRecord, gpu: GpuRecord, model: dict[str, Any],
        at: float,
    ) -> None:  # fmt: skip
        self.snapshot, self.node, self.gpu, self.model, self.at = snapshot, node, gpu, model, at

    @classmethod
    def of(
        cls, snapshot: Snapshot, node: NodeRecord, gpu: GpuRecord, at: float | None = None
    ) -> FieldContext:
        moment = snapshot["time"] if at is None else at
        return cls(snapshot, node, gpu, snapshot["models"][gpu["model"]], moment)


class QueryField:
    """One ``--query-gpu`` property (plain class: viewers import this at start-up)."""

    __slots__ = ("aliases", "header", "name", "read", "unit")

    def __init__(self, name: str, read: Reader, unit: str = "", aliases: tuple[str, ...] = ()):
        self.name = name
        self.read = read
        self.unit = unit
        self.aliases = aliases
        self.header = f"{name} [{unit}]" if unit else name

    def format_value(self, context: FieldContext, units: bool = True) -> str:
        text = self.read(context)
        if units and self.unit and not text.startswith("["):
            return f"{text} {self.unit}"
        return text


def format_timestamp(unix_time: float) -> str:
    """``2026/11/22 14:32:09.933``: local time with milliseconds."""
    whole = int(unix_time)
    millis = round((unix_time - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(whole)) + f".{millis:03d}"


def _const(text: str) -> Reader:
    return lambda _ctx: text


def _gpu(key: str) -> Reader:
    return lambda ctx: str(ctx.gpu[key])  # type: ignore[literal-required]


def _enabled(on: bool) -> str:
    return "Enabled" if on else "Disabled"


def _model(key: str) -> Reader:
    return lambda ctx: str(ctx.model[key])


def _rows(read: Callable[[records.RemappedRows], object]) -> Reader:
    return lambda ctx: str(read(records.RemappedRows(ctx.gpu["ecc"])))


def _banks(ctx: FieldContext) -> tuple[int, int]:
    """The row remapper's banks at "Max" and at "High"."""
    return records.RemappedRows(ctx.gpu["ecc"]).bank_histogram(ctx.model["remapped_rows_banks"])


def _watts_from_mw(key: str) -> Reader:
    return lambda ctx: f"{ctx.gpu[key] / 1000:.2f}"  # type: ignore[literal-required]


def _watts_model(key: str) -> Reader:
    return lambda ctx: f"{float(ctx.model[key]):.2f}"


def _active(bit: int) -> Reader:
    return lambda ctx: "Active" if ctx.gpu["clocks_event_reasons"] & bit else "Not Active"


def _counter(name: str) -> Reader:
    return lambda ctx: str(ctx.gpu["clocks_event_counters_us"][name])


def _tlimit(ctx: FieldContext) -> str:
    margin = records.tlimit_margin_c(ctx.model, ctx.gpu)
    return NA if margin is None else str(margin)


def _fabric(value: str) -> Reader:
    """NVSwitch systems report a registered fabric; others print N/A (no brackets)."""

    def read(ctx: FieldContext) -> str:
        switched = ctx.model["nvlink_topology"] == "all" and len(ctx.node["gpus"]) > 1
        return value if switched else "N/A"

    return read


def _ecc(kind: str, scope: str, where: str) -> Reader:
    """``ecc.errors.<kind>.<scope>.<where>``: DRAM and SRAM are counted, the rest N/A."""
    ecc_kind = "corrected" if kind == "corrected" else "uncorrected"

    def count(ctx: FieldContext, memory: str) -> int:
        key = f"{scope}_{memory}_{ecc_kind}"
        value: int = ctx.gpu["ecc"][key]  # type: ignore[literal-required]
        return value

    def read(ctx: FieldContext) -> str:
        if where in ("device_memory", "dram"):
            return str(count(ctx, "dram"))
        if where == "sram":
            return str(count(ctx, "sram"))
        if where == "total":
            return str(count(ctx, "dram") + count(ctx, "sram"))
        return NA

    return read


def _memory_free(ctx: FieldContext) -> str:
    gpu = ctx.gpu
    return str(gpu["memory_total_mib"] - gpu["memory_reserved_mib"] - gpu["memory_used_mib"])


def _fields() -> list[QueryField]:
    f = QueryField
    reasons = [
        ("gpu_idle", records.REASON_GPU_IDLE),
        ("applications_clocks_setting", records.REASON_APPLICATIONS_CLOCKS),
        ("sw_power_cap", records.REASON_SW_POWER_CAP),
        ("hw_slowdown", records.REASON_HW_SLOWDOWN),
        ("hw_thermal_slowdown", records.REASON_HW_THERMAL),
        ("hw_power_brake_slowdown", records.REASON_HW_POWER_BRAKE),
        ("sw_thermal_slowdown", records.REASON_SW_THERMAL),
        ("sync_boost", records.REASON_SYNC_BOOST),
    ]
    vgpu_caps = (
        "fractional_multiVgpu",
        "heterogeneous_timeSlice_profile",
        "heterogeneous_timeSlice_sizes",
        "homogeneous_placements",
        "mig_timeSlicing",
        "mig_timeSlicing_mode",
    )
    ecc_places = (
        "device_memory",
        "dram",
        "register_file",
        "l1_cache",
        "l2_cache",
        "texture_memory",
        "cbu",
        "sram",
        "total",
    )
    smoothing = (
        ("delayed_power_smoothing_supported", ""),
        ("primary_power_floor", "W"),
        ("secondary_power_floor", "W"),
        ("min_primary_floor_activation_offset", "W"),
        ("min_primary_floor_activation_point", "W"),
        ("window_multiplier", "ms"),
        ("curr_profile.secondary_power_floor", "W"),
        ("curr_profile.primary_floor_act_window_multiplier", ""),
        ("curr_profile.primary_floor_tar_window_multiplier", ""),
        ("curr_profile.primary_floor_act_offset", "W"),
        ("admin_override.secondary_power_floor", "W"),
        ("admin_override.primary_floor_act_window_multiplier", ""),
        ("admin_override.primary_floor_tar_window_multiplier", ""),
        ("admin_override.primary_floor_act_offset", "W"),
    )
    fabric_health = (
        "summary",
        "bandwidth",
        "route_recovery_in_progress",
        "route_unhealthy",
        "access_timeout_recovery",
        "incorrect_configuration",
        "partition_assigned",
    )
    table = [
        f("timestamp", lambda ctx: format_timestamp(ctx.at)),
        f("driver_version", lambda ctx: ctx.snapshot["driver_version"]),
        f("vgpu_driver_capability.heterogenous_multivGPU", _const(NA)),
        f("count", lambda ctx: str(len(ctx.node["gpus"]))),
        f("name", _model("name"), aliases=("gpu_name",)),
        f("serial", _gpu("serial"), aliases=("gpu_serial",)),
        f("uuid", _gpu("uuid"), aliases=("gpu_uuid",)),
        f("pci.bus_id", _gpu("bus_id"), aliases=("gpu_bus_id",)),
        f("pci.domain", lambda ctx: f"0x{ctx.gpu['pci_domain']:04X}"),
        f("pci.bus", lambda ctx: f"0x{ctx.gpu['pci_bus']:02X}"),
        f("pci.device", lambda ctx: f"0x{ctx.gpu['pci_device']:02X}"),
        f("pci.baseClass", _const("0x3")),
        f("pci.subClass", _const("0x2")),
        f("pci.device_id", lambda ctx: f"0x{ctx.model['pci_device_id']:08X}"),
        f("pci.sub_device_id", lambda ctx: f"0x{ctx.model['pci_subsystem_id']:08X}"),
        *(f(f"vgpu_device_capability.{cap}", _const(NA)) for cap in vgpu_caps),
        f("pcie.link.gen.current", _gpu("pcie_gen_current")),
        f("pcie.link.gen.gpucurrent", _gpu("pcie_gen_current")),
        f("pcie.link.gen.max", _model("pcie_gen_max")),
        f("pcie.link.gen.gpumax", _model("pcie_gen_max")),
        f("pcie.link.gen.hostmax", _const(NA)),
        f("pcie.link.width.current", _gpu("pcie_width_current")),
        f("pcie.link.width.max", _model("pcie_width_max")),
        f("index", _gpu("index")),
        f("display_mode", _const("[Requested functionality has been deprecated]")),
        f("display_attached", _const("Yes")),
        f("display_active", _const("Disabled")),
        f("persistence_mode", lambda ctx: _enabled(ctx.gpu["persistence_mode"])),
        f("addressing_mode", _const("None")),
        f("accounting.mode", _const("Disabled")),
        f("accounting.buffer_size", _const("4000")),
        f("driver_model.current", _const(NA)),
        f("driver_model.pending", _const(NA)),
        f("vbios_version", _model("vbios_version")),
        f("inforom.img", _model("inforom_image"), aliases=("inforom.image",)),
        f("inforom.oem", _model("inforom_oem")),
        f("inforom.ecc", _model("inforom_ecc")),
        f("inforom.pwr", _const(NA), aliases=("inforom.power",)),
        f("inforom.checksum_validation", _const("valid")),
        f("gpu_recovery_action", _const("None")),
        f("gom.current", _const(NA), aliases=("gpu_operation_mode.current",)),
        f("gom.pending", _const(NA), aliases=("gpu_operation_mode.pending",)),
        f("fan.speed", _const(NA), unit="%"),
        f("pstate", _gpu("pstate")),
        f(
            "clocks_event_reasons.supported",
            _const(f"0x{records.REASONS_SUPPORTED:016X}"),
            aliases=("clocks_throttle_reasons.supported",),
        ),
        f(
            "clocks_event_reasons.active",
            lambda ctx: f"0x{ctx.gpu['clocks_event_reasons']:016X}",
            aliases=("clocks_throttle_reasons.active",),
        ),
        *(
            f(
                f"clocks_event_reasons.{name}",
                _active(bit),
                aliases=(f"clocks_throttle_reasons.{name}",),
            )
            for name, bit in reasons
        ),
        *(
            f(f"clocks_event_reasons_counters.{name}", _counter(name), unit="us")
            for name in records.COUNTER_NAMES
        ),
        f("memory.total", _gpu("memory_total_mib"), unit="MiB"),
        f("memory.reserved", _gpu("memory_reserved_mib"), unit="MiB"),
        f("memory.used", _gpu("memory_used_mib"), unit="MiB"),
        f("memory.free", _memory_free, unit="MiB"),
        f("compute_mode", _const("Default")),
        f("compute_cap", _model("compute_capability")),
        f("utilization.gpu", _gpu("utilization_gpu_pct"), unit="%"),
        f("utilization.memory", _gpu("utilization_memory_pct"), unit="%"),
        f("utilization.encoder", _const("0"), unit="%"),
        f("utilization.decoder", _const("0"), unit="%"),
        f("utilization.jpeg", _const("0"), unit="%"),
        f("utilization.ofa", _const("0"), unit="%"),
        f("encoder.stats.sessionCount", _const("0")),
        f("encoder.stats.averageFps", _const("0")),
        f("encoder.stats.averageLatency", _const("0")),
        f("dramEncryption.mode.current", _const(NA)),
        f("dramEncryption.mode.pending", _const(NA)),
        f("ecc.mode.current", _const("Enabled")),
        f("ecc.mode.pending", _const("Enabled")),
        *(
            f(f"ecc.errors.{kind}.{scope}.{where}", _ecc(kind, scope, where))
            for kind in ("corrected", "uncorrected")
            for scope in ("volatile", "aggregate")
            for where in ecc_places
        ),
        f("ecc.errors.uncorrected.volatile.sram.parity", _ecc("uncorrected", "volatile", "sram")),
        f("ecc.errors.uncorrected.volatile.sram.secded", _const("0")),
        f(
            "ecc.errors.uncorrected.aggregate.sram.parity",
            _ecc("uncorrected", "aggregate", "sram"),
        ),
        f("ecc.errors.uncorrected.aggregate.sram.secded", _const("0")),
        f("ecc.errors.uncorrected.aggregate.sram.thresholdExceeded", _const("No")),
        *(
            f(f"ecc.errors.uncorrected.aggregate.sram.{part}", _const("0"))
            for part in ("l2", "sm", "mcu", "pcie", "other")
        ),
        f(
            "retired_pages.single_bit_ecc.count",
            _const(NA),
            aliases=("retired_pages.sbe",),
        ),
        f("retired_pages.double_bit.count", _const(NA), aliases=("retired_pages.dbe",)),
        f("retired_pages.pending", _const(NA)),
        f(
            "remapped_rows.correctable",
            _rows(lambda r: r.correctable),
            aliases=("remapped_rows.sbe",),
        ),
        f("remapped_rows.correctable_inactive", _const("0")),
        f(
            "remapped_rows.uncorrectable",
            _rows(lambda r: r.uncorrectable),
            aliases=("remapped_rows.dbe",),
        ),
        f("remapped_rows.uncorrectable_inactive", _const("0")),
        f("remapped_rows.pending", _rows(lambda r: "Yes" if r.pending else "No")),
        f("remapped_rows.failure", _rows(lambda r: "Yes" if r.failure else "No")),
        f(
            "remapped_rows.histogram.max",
            lambda ctx: str(_banks(ctx)[0]),
        ),
        f("remapped_rows.histogram.high", lambda ctx: str(_banks(ctx)[1])),
        *(
            f(f"remapped_rows.histogram.{level}", _const("0"))
            for level in ("partial", "low", "none")
        ),
        f("temperature.gpu", _gpu("temperature_gpu_c")),
        f("temperature.gpu.tlimit", _tlimit),
        f("temperature.memory", _gpu("temperature_memory_c")),
        f("power.management", _const("Enabled")),
        f("power.draw", _watts_from_mw("power_draw_mw"), unit="W"),
        f(
            "power.draw.average",
            _watts_from_mw("power_draw_mw"),
            unit="W",
            aliases=("gpu.power.draw.average",),
        ),
        f(
            "power.draw.instant",
            _watts_from_mw("power_instant_mw"),
            unit="W",
            aliases=("gpu.power.draw.instant",),
        ),
        f(
            "power.limit",
            _watts_from_mw("power_limit_mw"),
            unit="W",
            aliases=("gpu.power.requested_limit",),
        ),
        f(
            "enforced.power.limit",
            _watts_from_mw("power_limit_mw"),
            unit="W",
            aliases=("gpu.power.current_limit",),
        ),
        f(
            "power.default_limit",
            _watts_model("power_default_w"),
            unit="W",
            aliases=("gpu.power.default_limit",),
        ),
        f(
            "power.min_limit",
            _watts_model("power_min_w"),
            unit="W",
            aliases=("gpu.power.min_limit",),
        ),
        f(
            "power.max_limit",
            _watts_model("power_max_w"),
            unit="W",
            aliases=("gpu.power.max_limit",),
        ),
        f("module.power.draw.average", _const(NA), unit="W"),
        f("module.power.draw.instant", _const(NA), unit="W"),
        f("module.power.limit", _const(NA), unit="W", aliases=("module.power.requested_limit",)),
        f(
            "module.enforced.power.limit",
            _const(NA),
            unit="W",
            aliases=("module.power.current_limit",),
        ),
        f("module.power.default_limit", _const(NA), unit="W"),
        f("module.power.min_limit", _const(NA), unit="W"),
        f("module.power.max_limit", _const(NA), unit="W"),
        *(f(f"power_smoothing.{name}", _const(NA), unit=unit) for name, unit in smoothing),
        f("clocks.current.graphics", _gpu("clock_sm_mhz"), unit="MHz", aliases=("clocks.gr",)),
        f("clocks.current.sm", _gpu("clock_sm_mhz"), unit="MHz", aliases=("clocks.sm",)),
        f(
            "clocks.current.memory",
            _gpu("clock_memory_mhz"),
            unit="MHz",
            aliases=("clocks.mem",),
        ),
        f(
            "clocks.current.video",
            _gpu("clock_video_mhz"),
            unit="MHz",
            aliases=("clocks.video",),
        ),
        f(
            "clocks.applications.graphics",
            _model("sm_clock_max_mhz"),
            unit="MHz",
            aliases=("clocks.applications.gr",),
        ),
        f(
            "clocks.applications.memory",
            _model("mem_clock_max_mhz"),
            unit="MHz",
            aliases=("clocks.applications.mem",),
        ),
        f(
            "clocks.default_applications.graphics",
            _model("sm_clock_max_mhz"),
            unit="MHz",
            aliases=("clocks.default_applications.gr",),
        ),
        f(
            "clocks.default_applications.memory",
            _model("mem_clock_max_mhz"),
            unit="MHz",
            aliases=("clocks.default_applications.mem",),
        ),
        f(
            "clocks.max.graphics",
            _model("sm_clock_max_mhz"),
            unit="MHz",
            aliases=("clocks.max.gr",),
        ),
        f("clocks.max.sm", _model("sm_clock_max_mhz"), unit="MHz"),
        f(
            "clocks.max.memory",
            _model("mem_clock_max_mhz"),
            unit="MHz",
            aliases=("clocks.max.mem",),
        ),
        f("mig.mode.current", _const("Disabled")),
        f("mig.mode.pending", _const("Disabled")),
        f("gsp.mode.current", _const("Enabled")),
        f("gsp.mode.default", _const("Enabled")),
        f("c2c.mode", _const("Disabled")),
        f("protected_memory.total", _const("0"), unit="MiB"),
        f("protected_memory.used", _const("0"), unit="MiB"),
        f("protected_memory.free", _const("0"), unit="MiB"),
        f("fabric.state", _fabric("Completed")),
        f("fabric.status", _fabric("Success")),
        f("fabric.cliqueId", _fabric("0")),
        f("fabric.clusterUuid", _fabric("00000000-0000-0000-0000-000000000000")),
        *(f(f"fabric.health.{name}", _const("N/A")) for name in fabric_health),
        f("platform.chassis_serial_number", _const("")),
        f("platform.slot_number", _const("0")),
        f("platform.tray_index", _const("0")),
        f("platform.host_id", _const("1")),
        f("platform.peer_type", _const("Direct Connected")),
        f("platform.module_id", _gpu("module_id")),
        f("platform.gpu_fabric_guid", _const("0x0000000000000000")),
        f("hostname", _const(NA)),
    ]
    return table


FIELDS: tuple[QueryField, ...] = tuple(_fields())
_BY_NAME: dict[str, QueryField] = {}
for _field in FIELDS:
    for _name in (_field.name, *_field.aliases):
        _BY_NAME[_name.lower()] = _field


class UnknownField(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f'Field "{self.name}" is not a valid field to query.'


def resolve(names: Sequence[str]) -> list[QueryField]:
    """Fields for a ``--query-gpu`` list; raises ``UnknownField`` like the real tool."""
    resolved = []
    for raw in names:
        name = raw.strip()
        field = _BY_NAME.get(name.lower())
        if field is None:
            raise UnknownField(name)
        resolved.append(field)
    return resolved


def split_field_list(text: str) -> list[str]:
    """``a,b, c`` -> ``["a", "b", "c"]`` (empty items are dropped, as nvidia-smi does)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def csv_header(fields: Sequence[QueryField]) -> str:
    """The header line; nvidia-smi keeps the units there even with ``nounits``."""
    return ", ".join(f.header for f in fields)


def csv_row(fields: Sequence[QueryField], context: FieldContext, units: bool = True) -> str:
    return ", ".join(f.format_value(context, units) for f in fields)


class AppContext(FieldContext):
    """What a ``--query-compute-apps`` field reads: one process, and its GPU at a moment."""

    __slots__ = ("process",)

    def __init__(self, context: FieldContext, process: ProcessRecord) -> None:
        super().__init__(context.snapshot, context.node, context.gpu, context.model, context.at)
        self.process = process


class AppField:
    __slots__ = ("aliases", "header", "name", "read", "unit")

    def __init__(
        self,
        name: str,
        read: Callable[[AppContext], str],
        unit: str = "",
        aliases: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.read = read
        self.unit = unit
        self.aliases = aliases
        self.header = f"{name} [{unit}]" if unit else name

    def format_value(self, context: AppContext, units: bool = True) -> str:
        text = self.read(context)
        if units and self.unit and not text.startswith("["):
            return f"{text} {self.unit}"
        return text


APP_FIELDS: tuple[AppField, ...] = (
    AppField("timestamp", lambda ctx: format_timestamp(ctx.at)),
    AppField("gpu_name", lambda ctx: str(ctx.model["name"])),
    AppField("gpu_bus_id", lambda ctx: ctx.gpu["bus_id"]),
    AppField("gpu_serial", lambda ctx: ctx.gpu["serial"]),
    AppField("gpu_uuid", lambda ctx: ctx.gpu["uuid"]),
    AppField("pid", lambda ctx: str(ctx.process["pid"])),
    AppField("process_name", lambda ctx: ctx.process["name"], aliases=("name",)),
    AppField(
        "used_gpu_memory",
        lambda ctx: str(ctx.process["used_memory_mib"]),
        unit="MiB",
        aliases=("used_memory",),
    ),
)
_APPS_BY_NAME = {n.lower(): f for f in APP_FIELDS for n in (f.name, *f.aliases)}


def resolve_apps(names: Sequence[str]) -> list[AppField]:
    """Fields for a ``--query-compute-apps`` list; ``UnknownField`` like the real tool."""
    resolved = []
    for raw in names:
        field = _APPS_BY_NAME.get(raw.strip().lower())
        if field is None:
            raise UnknownField(raw.strip())
        resolved.append(field)
    return resolved
