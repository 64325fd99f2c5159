"""A stand-in for ``libnvidia-ml.so.1``, answering pynvml from the fakehw daemon.

pynvml (the nvidia-ml-py package) looks every C entry point up by name on its
module global ``nvmlLib`` and calls it with ctypes arguments: values
(``c_uint(3)``), out-parameters (``byref(c_uint())``, ``byref(struct)``),
string buffers and struct arrays. ``FakeNvmlLibrary`` is installed there
(see ``fakehw.nvml.hook``) and answers each call as the C library would:
it fills the out-parameters pynvml passes and returns an NVML return code.

* Values come from the daemon's snapshot of this node (``FAKEHW_NODE``),
  re-read at most every 50 ms, so a tool's readings within one refresh
  agree with each other and with fake-nvidia-smi at the same instant.
* Calls a real H100 refuses answer with the same code (``NOT_SUPPORTED`` for
  fan speed on passively cooled boards, driver models on Linux, retired
  pages; ``INVALID_ARGUMENT`` for MIG ids on a non-MIG device).
* A function not listed in ``HANDLERS`` does not exist here: pynvml raises
  ``NVMLError_FunctionNotFound``, never a made-up value.

The handler names are the C symbols (``nvmlDeviceGetHandleByIndex_v2``), so
``HANDLERS`` is also the list of what is covered (docs/nvml.md describes it).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import Any

from fakehw.contract import snapshot as records

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_UNKNOWN = 999

ERROR_STRINGS = {
    0: b"Success",
    1: b"Uninitialized",
    2: b"Invalid Argument",
    3: b"Not Supported",
    4: b"Insufficient Permissions",
    5: b"Already Initialized",
    6: b"Not Found",
    7: b"Insufficient Size",
    8: b"Insufficient External Power",
    9: b"Driver Not Loaded",
    10: b"Timeout",
    11: b"Interrupt Request Issue",
    12: b"NVML Shared Library Not Found",
    13: b"Function Not Found",
    14: b"Corrupted infoROM",
    15: b"GPU is lost",
    25: b"Argument version mismatch",
    999: b"Unknown Error",
}

MIB = 1 << 20
SNAPSHOT_TTL_S = 0.05
ARCHITECTURES = {"Ampere": 7, "Hopper": 9, "Blackwell": 10}
NVLINK_VERSIONS = {"Ampere": 3, "Hopper": 4, "Blackwell": 5}
BRAND_NVIDIA = 14  # NVML_BRAND_NVIDIA: what the real H100 reports
# nvmlClockType_t
CLOCK_GRAPHICS, CLOCK_SM, CLOCK_MEM, CLOCK_VIDEO = 0, 1, 2, 3
# nvmlTemperatureThresholds_t
THRESHOLD_SHUTDOWN, THRESHOLD_SLOWDOWN, THRESHOLD_MEM_MAX, THRESHOLD_GPU_MAX = 0, 1, 2, 3
THRESHOLD_ACOUSTIC_MIN, THRESHOLD_ACOUSTIC_CURR, THRESHOLD_ACOUSTIC_MAX = 4, 5, 6
# field ids (nvml.h)
FI_MEMORY_TEMP = 82
FI_TOTAL_ENERGY = 83
FI_NVLINK_LINK_COUNT = 91
FI_PCIE_REPLAY_COUNTER = 94
FI_NVLINK_DATA_TX, FI_NVLINK_DATA_RX = 138, 139
FI_NVLINK_RAW_TX, FI_NVLINK_RAW_RX = 140, 141
FI_POWER_AVERAGE, FI_POWER_INSTANT = 185, 186
VALUE_UINT, VALUE_ULONGLONG = 1, 3  # nvmlValueType_t
EVENT_TYPES_SUPPORTED = 65439  # a real H100's nvmlDeviceGetSupportedEventTypes
GSP_FIRMWARE_VERSION_BUF_SIZE = 0x40
PSTATE_UNKNOWN = 32
# nvmlGpuTopologyLevel_t, nvmlGpuP2PStatus_t, nvmlGpuP2PCapsIndex_t, NVLink far ends
TOPOLOGY_INTERNAL, TOPOLOGY_NODE, TOPOLOGY_SYSTEM = 0, 40, 50
P2P_OK, P2P_NOT_SUPPORTED, P2P_CAPS_NVLINK = 0, 5, 2
NVLINK_DEVICE_GPU, NVLINK_DEVICE_SWITCH = 0, 2
HOPPER_SWITCH_FIRST_LINKS = (0, 5, 9, 13)  # an HGX H100's 4 NVSwitch chips: 5, 4, 4, 5 links
POWER_VALUE_V2 = 12 | 2 << 24  # nvmlPowerValue_v2: its size (12 bytes) and version 2

Handler = Callable[..., Any]
HANDLERS: dict[str, Handler] = {}


def c_function(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler under one or more C symbol names."""

    def register(handler: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = handler
        return handler

    return register


def value(arg: Any) -> Any:
    """The Python value of a ctypes argument passed by value."""
    return arg.value if hasattr(arg, "value") else arg


def target(arg: Any) -> Any:
    """The object behind an out-parameter: ``byref(x)`` gives ``x``."""
    return getattr(arg, "_obj", arg)


def write_string(buffer: Any, size: Any, text: str) -> int:
    data = text.encode()
    if len(data) + 1 > value(size):
        return NVML_ERROR_INSUFFICIENT_SIZE
    ctypes.memmove(buffer, data + b"\0", len(data) + 1)
    return NVML_SUCCESS


class Entry:
    """A C function: callable like the ctypes one, and, like it, carries attributes
    (pynvml sets ``fn.restype`` on ``nvmlErrorString``)."""

    def __init__(self, library: FakeNvmlLibrary, name: str, handler: Handler) -> None:
        self.library = library
        self.__name__ = name
        self.handler = handler
        self.restype: Any = None
        self.argtypes: Any = None

    def __call__(self, *args: Any) -> Any:
        library = self.library
        if (
            self.__name__ not in ("nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlErrorString")
            and library.refcount == 0
        ):
            return NVML_ERROR_UNINITIALIZED
        try:
            return self.handler(library, *args)
        except _Refusal as refusal:
            return refusal.code


class _Refusal(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class FakeNvmlLibrary:
    """What pynvml finds in ``nvmlLib``: the fake cluster's node, as NVML sees it."""

    def __init__(self, pynvml: Any) -> None:
        self.pynvml = pynvml
        self.refcount = 0
        self._lock = threading.Lock()
        self._source: Any = None  # a fakehw.views.source.DaemonSource once initialised
        self._snapshot: Any = None
        self._read_at = 0.0
        self._handles: list[Any] = []
        self._by_address: dict[int, int] = {}

    def __getattr__(self, name: str) -> Entry:
        handler = HANDLERS.get(name)
        if handler is None:
            raise AttributeError(name)  # pynvml turns this into NVMLError_FunctionNotFound
        entry = Entry(self, name, handler)
        self.__dict__[name] = entry
        return entry

    def __eq__(self, other: object) -> bool:  # pynvml tests `nvmlLib == None`
        return other is self

    __hash__ = object.__hash__

    # ------------------------------------------------------------ the daemon
    def connect(self) -> int:
        from fakehw.views.source import DaemonSource, SourceFailed

        with self._lock:
            if self._source is None:
                try:
                    # the node FAKEHW_NODE names when the program initialises NVML
                    self._source = DaemonSource("fakehw-nvml")
                except SourceFailed:
                    return NVML_ERROR_DRIVER_NOT_LOADED
            self.refcount += 1
        return NVML_SUCCESS

    def disconnect(self) -> int:
        with self._lock:
            if self.refcount == 0:
                return NVML_ERROR_UNINITIALIZED
            self.refcount -= 1
            if self.refcount == 0 and self._source is not None:
                self._source.close()
                self._source = None
                self._snapshot = None
        return NVML_SUCCESS

    def snapshot(self) -> Any:
        from fakehw.views.source import SourceFailed

        with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._read_at > SNAPSHOT_TTL_S:
                if self._source is None:
                    raise _Refusal(NVML_ERROR_UNINITIALIZED)
                try:
                    self._snapshot = self._source.snapshot()
                except SourceFailed:
                    raise _Refusal(NVML_ERROR_UNKNOWN) from None
                self._read_at = now
            return self._snapshot

    def node(self) -> Any:
        return self.snapshot()["nodes"][0]

    def gpus(self) -> list[Any]:
        gpus: list[Any] = self.node()["gpus"]
        return gpus

    # -------------------------------------------------------------- handles
    def handle_for(self, index: int) -> Any:
        while len(self._handles) <= index:
            self._handles.append(self.pynvml.struct_c_nvmlDevice_t())
            handle = self._handles[-1]
            self._by_address[ctypes.addressof(handle)] = len(self._handles) - 1
        return self._handles[index]

    def give_handle(self, out: Any, index: int) -> int:
        target(out).contents = self.handle_for(index)
        return NVML_SUCCESS

    def gpu(self, handle: Any) -> Any:
        """The GPU record a handle names (INVALID_ARGUMENT for a stranger)."""
        try:
            index = self._by_address[ctypes.addressof(handle.contents)]
        except (KeyError, ValueError, AttributeError):
            raise _Refusal(NVML_ERROR_INVALID_ARGUMENT) from None
        gpus = self.gpus()
        if index >= len(gpus):
            raise _Refusal(NVML_ERROR_INVALID_ARGUMENT)
        if gpus[index].get("lost"):
            raise _Refusal(NVML_ERROR_GPU_IS_LOST)  # fell off the bus (XID 79)
        return gpus[index]

    def change(self, op: str, **args: Any) -> int:
        """A setter's request to the daemon; the next reading shows its effect."""
        from fakehw.views.source import SourceFailed

        with self._lock:
            if self._source is None:
                return NVML_ERROR_UNINITIALIZED
            try:
                self._source.change(op, **args)
            except SourceFailed as failure:
                return NVML_ERROR_INVALID_ARGUMENT if failure.code else NVML_ERROR_UNKNOWN
            self._snapshot = None
        return NVML_SUCCESS

    def model(self, gpu: Any) -> Any:
        return self.snapshot()["models"][gpu["model"]]

    def processes(self, gpu: Any) -> list[Any]:
        return [p for p in self.node()["processes"] if p["gpu_index"] == gpu["index"]]


def put(out: Any, number: Any) -> int:
    target(out).value = number
    return NVML_SUCCESS


def refuse(code: int) -> Handler:
    """A function the real GPU answers with an error (NOT_SUPPORTED ...)."""

    def handler(lib: FakeNvmlLibrary, handle: Any, *args: Any) -> int:
        lib.gpu(handle)  # a bad handle is refused first, as by the driver
        return code

    return handler


# ------------------------------------------------------------------ system
@c_function("nvmlInit", "nvmlInit_v2")
def _init(lib: FakeNvmlLibrary) -> int:
    return lib.connect()


@c_function("nvmlInitWithFlags")
def _init_flags(lib: FakeNvmlLibrary, flags: Any) -> int:
    return lib.connect()


@c_function("nvmlShutdown")
def _shutdown(lib: FakeNvmlLibrary) -> int:
    return lib.disconnect()


@c_function("nvmlErrorString")
def _error_string(lib: FakeNvmlLibrary, code: Any) -> bytes:
    return ERROR_STRINGS.get(int(value(code)), b"Unknown Error")


@c_function("nvmlSystemGetDriverVersion")
def _driver_version(lib: FakeNvmlLibrary, buffer: Any, size: Any) -> int:
    return write_string(buffer, size, lib.snapshot()["driver_version"])


@c_function("nvmlSystemGetNVMLVersion")
def _nvml_version(lib: FakeNvmlLibrary, buffer: Any, size: Any) -> int:
    return write_string(buffer, size, lib.snapshot()["nvml_version"])


@c_function("nvmlSystemGetCudaDriverVersion", "nvmlSystemGetCudaDriverVersion_v2")
def _cuda_version(lib: FakeNvmlLibrary, out: Any) -> int:
    return put(out, records.cuda_driver_version(lib.snapshot()["cuda_version"]))


@c_function("nvmlSystemGetProcessName")
def _process_name(lib: FakeNvmlLibrary, pid: Any, buffer: Any, size: Any) -> int:
    for process in lib.node()["processes"]:
        if process["pid"] == value(pid):
            return write_string(buffer, size, process["name"])
    return NVML_ERROR_NOT_FOUND


# ----------------------------------------------------------------- devices
@c_function("nvmlDeviceGetCount", "nvmlDeviceGetCount_v2")
def _count(lib: FakeNvmlLibrary, out: Any) -> int:
    return put(out, len(lib.gpus()))


@c_function("nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByIndex_v2")
def _by_index(lib: FakeNvmlLibrary, index: Any, out: Any) -> int:
    wanted = value(index)
    gpus = lib.gpus()
    if not 0 <= wanted < len(gpus):
        return NVML_ERROR_INVALID_ARGUMENT
    if gpus[wanted].get("lost"):
        return NVML_ERROR_GPU_IS_LOST
    return lib.give_handle(out, wanted)


def _find(lib: FakeNvmlLibrary, key: str, wanted: str, out: Any) -> int:
    for k, gpu in enumerate(lib.gpus()):
        if str(gpu[key]).lower() == wanted.lower():
            return lib.give_handle(out, k)
    return NVML_ERROR_NOT_FOUND


@c_function("nvmlDeviceGetHandleByUUID")
def _by_uuid(lib: FakeNvmlLibrary, uuid: Any, out: Any) -> int:
    return _find(lib, "uuid", value(uuid).decode(), out)


@c_function("nvmlDeviceGetHandleBySerial")
def _by_serial(lib: FakeNvmlLibrary, serial: Any, out: Any) -> int:
    return _find(lib, "serial", value(serial).decode(), out)


@c_function("nvmlDeviceGetHandleByPciBusId", "nvmlDeviceGetHandleByPciBusId_v2")
def _by_bus_id(lib: FakeNvmlLibrary, bus_id: Any, out: Any) -> int:
    wanted = value(bus_id).decode().upper()
    if wanted.count(":") == 1:  # "18:00.0"
        wanted = "00000000:" + wanted
    elif len(wanted.split(":")[0]) == 4:  # "0000:18:00.0"
        wanted = "0000" + wanted
    return _find(lib, "bus_id", wanted, out)


def _gpu_int(field: str) -> Handler:
    def handler(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
        return put(out, lib.gpu(handle)[field])

    return handler


def _model_int(compute: Callable[[Any], int]) -> Handler:
    def handler(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
        return put(out, compute(lib.model(lib.gpu(handle))))

    return handler


def _model_string(compute: Callable[[Any, Any], str]) -> Handler:
    def handler(lib: FakeNvmlLibrary, handle: Any, buffer: Any, size: Any) -> int:
        gpu = lib.gpu(handle)
        return write_string(buffer, size, compute(lib.model(gpu), gpu))

    return handler


HANDLERS["nvmlDeviceGetIndex"] = _gpu_int("index")
HANDLERS["nvmlDeviceGetMinorNumber"] = _gpu_int("minor_number")
HANDLERS["nvmlDeviceGetBoardId"] = _gpu_int("board_id")
HANDLERS["nvmlDeviceGetModuleId"] = _gpu_int("module_id")
HANDLERS["nvmlDeviceGetName"] = _model_string(lambda m, g: m["name"])
HANDLERS["nvmlDeviceGetUUID"] = _model_string(lambda m, g: g["uuid"])
HANDLERS["nvmlDeviceGetSerial"] = _model_string(lambda m, g: g["serial"])
HANDLERS["nvmlDeviceGetBoardPartNumber"] = _model_string(lambda m, g: m["board_part_number"])
HANDLERS["nvmlDeviceGetVbiosVersion"] = _model_string(lambda m, g: m["vbios_version"])
HANDLERS["nvmlDeviceGetInforomImageVersion"] = _model_string(lambda m, g: m["inforom_image"])
HANDLERS["nvmlDeviceGetBrand"] = _model_int(lambda m: BRAND_NVIDIA)
HANDLERS["nvmlDeviceGetArchitecture"] = _model_int(lambda m: ARCHITECTURES[m["architecture"]])
HANDLERS["nvmlDeviceGetNumGpuCores"] = _model_int(lambda m: m["cuda_cores"])
HANDLERS["nvmlDeviceGetMemoryBusWidth"] = _model_int(lambda m: m["memory_bus_width_bits"])
HANDLERS["nvmlDeviceGetMultiGpuBoard"] = _model_int(lambda m: 0)
HANDLERS["nvmlDeviceGetNumFans"] = _model_int(lambda m: m["fan_count"])
HANDLERS["nvmlDeviceGetMaxMigDeviceCount"] = _model_int(lambda m: 7)
HANDLERS["nvmlDeviceGetComputeMode"] = _model_int(lambda m: 0)  # NVML_COMPUTEMODE_DEFAULT
HANDLERS["nvmlDeviceGetDisplayMode"] = _model_int(lambda m: 1)
HANDLERS["nvmlDeviceGetDisplayActive"] = _model_int(lambda m: 0)
HANDLERS["nvmlDeviceGetVirtualizationMode"] = _model_int(lambda m: 0)  # bare metal
HANDLERS["nvmlDeviceGetPowerManagementMode"] = _model_int(lambda m: 1)
HANDLERS["nvmlDeviceGetPowerSource"] = _model_int(lambda m: 0)
HANDLERS["nvmlDeviceGetCurrPcieLinkGeneration"] = _gpu_int("pcie_gen_current")
HANDLERS["nvmlDeviceGetCurrPcieLinkWidth"] = _gpu_int("pcie_width_current")
HANDLERS["nvmlDeviceGetMaxPcieLinkGeneration"] = _model_int(lambda m: m["pcie_gen_max"])
HANDLERS["nvmlDeviceGetGpuMaxPcieLinkGeneration"] = _model_int(lambda m: m["pcie_gen_max"])
HANDLERS["nvmlDeviceGetMaxPcieLinkWidth"] = _model_int(lambda m: m["pcie_width_max"])
HANDLERS["nvmlDeviceGetPcieSpeed"] = _model_int(lambda m: {5: 32000, 4: 16000}[m["pcie_gen_max"]])
HANDLERS["nvmlDeviceGetPcieReplayCounter"] = _model_int(lambda m: 0)
HANDLERS["nvmlDeviceGetPersistenceMode"] = _gpu_int("persistence_mode")
HANDLERS["nvmlDeviceGetPowerUsage"] = _gpu_int("power_draw_mw")
HANDLERS["nvmlDeviceGetPowerManagementLimit"] = _gpu_int("power_limit_mw")
HANDLERS["nvmlDeviceGetEnforcedPowerLimit"] = _gpu_int("power_limit_mw")
HANDLERS["nvmlDeviceGetPowerManagementDefaultLimit"] = _model_int(
    lambda m: int(m["power_default_w"] * 1000)
)
HANDLERS["nvmlDeviceGetTotalEnergyConsumption"] = _gpu_int("energy_mj")
HANDLERS["nvmlDeviceGetCurrentClocksEventReasons"] = _gpu_int("clocks_event_reasons")
HANDLERS["nvmlDeviceGetCurrentClocksThrottleReasons"] = _gpu_int("clocks_event_reasons")
HANDLERS["nvmlDeviceGetSupportedClocksEventReasons"] = _model_int(lambda m: 511)
HANDLERS["nvmlDeviceGetSupportedClocksThrottleReasons"] = _model_int(lambda m: 511)
HANDLERS["nvmlDeviceIsMigDeviceHandle"] = _model_int(lambda m: 0)


@c_function("nvmlDeviceGetPerformanceState", "nvmlDeviceGetPowerState")
def _pstate(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    return put(out, int(lib.gpu(handle)["pstate"].removeprefix("P")))


@c_function("nvmlDeviceGetCudaComputeCapability")
def _capability(lib: FakeNvmlLibrary, handle: Any, major: Any, minor: Any) -> int:
    high, low = lib.model(lib.gpu(handle))["compute_capability"].split(".")
    put(major, int(high))
    return put(minor, int(low))


@c_function("nvmlDeviceGetPciInfo", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo_v3")
def _pci(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    gpu = lib.gpu(handle)
    model = lib.model(gpu)
    info = target(out)
    info.busIdLegacy = gpu["bus_id"][4:].encode()
    info.busId = gpu["bus_id"].encode()
    info.domain = gpu["pci_domain"]
    info.bus = gpu["pci_bus"]
    info.device = gpu["pci_device"]
    info.pciDeviceId = model["pci_device_id"]
    info.pciSubSystemId = model["pci_subsystem_id"]
    return NVML_SUCCESS


# ------------------------------------------------------------------ memory
@c_function("nvmlDeviceGetMemoryInfo")
def _memory_v1(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    gpu = lib.gpu(handle)
    memory = target(out)
    memory.total = gpu["memory_total_mib"] * MIB
    # version 1 counts the driver's reservation as used
    memory.used = (gpu["memory_used_mib"] + gpu["memory_reserved_mib"]) * MIB
    memory.free = memory.total - memory.used
    return NVML_SUCCESS


@c_function("nvmlDeviceGetMemoryInfo_v2")
def _memory_v2(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    gpu = lib.gpu(handle)
    memory = target(out)
    memory.total = gpu["memory_total_mib"] * MIB
    memory.reserved = gpu["memory_reserved_mib"] * MIB
    memory.used = gpu["memory_used_mib"] * MIB
    memory.free = memory.total - memory.reserved - memory.used
    return NVML_SUCCESS


@c_function("nvmlDeviceGetBAR1MemoryInfo")
def _bar1(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    gpu = lib.gpu(handle)
    bar1 = target(out)
    bar1.bar1Total = lib.model(gpu)["bar1_total_mib"] * MIB
    bar1.bar1Used = gpu["bar1_used_mib"] * MIB
    bar1.bar1Free = bar1.bar1Total - bar1.bar1Used
    return NVML_SUCCESS


@c_function("nvmlDeviceGetConfComputeMemSizeInfo")
def _cc_memory(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    lib.gpu(handle)
    info = target(out)
    info.protectedMemSizeKib = 0
    info.unprotectedMemSizeKib = 0
    return NVML_SUCCESS


# ------------------------------------------------------------- utilization
@c_function("nvmlDeviceGetUtilizationRates")
def _utilization(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    gpu = lib.gpu(handle)
    rates = target(out)
    rates.gpu = gpu["utilization_gpu_pct"]
    rates.memory = gpu["utilization_memory_pct"]
    return NVML_SUCCESS


@c_function(
    "nvmlDeviceGetEncoderUtilization",
    "nvmlDeviceGetDecoderUtilization",
    "nvmlDeviceGetJpgUtilization",
    "nvmlDeviceGetOfaUtilization",
)
def _codec(lib: FakeNvmlLibrary, handle: Any, out: Any, period: Any) -> int:
    lib.gpu(handle)
    put(out, 0)  # no video work on a training node
    return put(period, 100000)


@c_function("nvmlDeviceGetProcessUtilization")
def _process_utilization(
    lib: FakeNvmlLibrary, handle: Any, samples: Any, count: Any, last_seen: Any
) -> int:
    gpu = lib.gpu(handle)
    processes = lib.processes(gpu)
    counter = target(count)
    if not processes:
        return NVML_ERROR_NOT_FOUND  # no samples since last_seen, as the driver says
    if samples is None or counter.value < len(processes):
        counter.value = len(processes)
        return NVML_ERROR_INSUFFICIENT_SIZE
    stamp = int(lib.snapshot()["time"] * 1e6)
    for k, process in enumerate(processes):
        sample = samples[k]
        sample.pid = process["pid"]
        sample.timeStamp = stamp
        sample.smUtil = process["sm_util_pct"]
        sample.memUtil = process["mem_util_pct"]
        sample.encUtil = 0
        sample.decUtil = 0
    counter.value = len(processes)
    return NVML_SUCCESS


# ---------------------------------------------------- temperature and power
@c_function("nvmlDeviceGetTemperature")
def _temperature(lib: FakeNvmlLibrary, handle: Any, sensor: Any, out: Any) -> int:
    if value(sensor) != 0:  # NVML_TEMPERATURE_GPU is the only sensor
        return NVML_ERROR_INVALID_ARGUMENT
    return put(out, lib.gpu(handle)["temperature_gpu_c"])


@c_function("nvmlDeviceGetTemperatureV")
def _temperature_v(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    reading = target(out)
    if reading.sensorType != 0:
        return NVML_ERROR_INVALID_ARGUMENT
    reading.temperature = lib.gpu(handle)["temperature_gpu_c"]
    return NVML_SUCCESS


@c_function("nvmlDeviceGetTemperatureThreshold")
def _threshold(lib: FakeNvmlLibrary, handle: Any, kind: Any, out: Any) -> int:
    model = lib.model(lib.gpu(handle))
    thresholds = {
        THRESHOLD_SHUTDOWN: model["temp_shutdown_c"],
        THRESHOLD_SLOWDOWN: model["temp_slowdown_c"],
        THRESHOLD_MEM_MAX: model["temp_memory_max_c"],
        THRESHOLD_GPU_MAX: model["temp_max_operating_c"],
    }
    wanted = value(kind)
    if wanted not in thresholds:
        return NVML_ERROR_NOT_SUPPORTED  # acoustic limits: passively cooled boards
    return put(out, thresholds[wanted])


@c_function("nvmlDeviceGetMarginTemperature")
def _margin(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    gpu = lib.gpu(handle)
    reading = target(out)
    margin = records.tlimit_margin_c(lib.model(gpu), gpu)
    if margin is None:
        return NVML_ERROR_NOT_SUPPORTED  # no T.Limit thresholds: an A100
    if hasattr(reading, "marginTemperature"):
        reading.marginTemperature = margin
        return NVML_SUCCESS
    return put(out, margin)


@c_function("nvmlDeviceGetPowerManagementLimitConstraints")
def _limits(lib: FakeNvmlLibrary, handle: Any, low: Any, high: Any) -> int:
    model = lib.model(lib.gpu(handle))
    put(low, int(model["power_min_w"] * 1000))
    return put(high, int(model["power_max_w"] * 1000))


# ------------------------------------------------------------------ clocks
def _clock(lib: FakeNvmlLibrary, gpu: Any, kind: int, which: str) -> int:
    """Current or maximum clock of a domain (graphics and SM run together)."""
    if which == "current":
        fields = {
            CLOCK_GRAPHICS: "clock_sm_mhz",
            CLOCK_SM: "clock_sm_mhz",
            CLOCK_MEM: "clock_memory_mhz",
            CLOCK_VIDEO: "clock_video_mhz",
        }
        return int(gpu[fields[kind]])
    limits = {
        CLOCK_GRAPHICS: "sm_clock_max_mhz",
        CLOCK_SM: "sm_clock_max_mhz",
        CLOCK_MEM: "mem_clock_max_mhz",
        CLOCK_VIDEO: "video_clock_max_mhz",
    }
    return int(lib.model(gpu)[limits[kind]])


def _clock_handler(which: str) -> Handler:
    def handler(lib: FakeNvmlLibrary, handle: Any, kind: Any, out: Any) -> int:
        gpu = lib.gpu(handle)
        if value(kind) not in (CLOCK_GRAPHICS, CLOCK_SM, CLOCK_MEM, CLOCK_VIDEO):
            return NVML_ERROR_INVALID_ARGUMENT
        return put(out, _clock(lib, gpu, value(kind), which))

    return handler


HANDLERS["nvmlDeviceGetClockInfo"] = _clock_handler("current")
HANDLERS["nvmlDeviceGetMaxClockInfo"] = _clock_handler("max")
HANDLERS["nvmlDeviceGetApplicationsClock"] = _clock_handler("max")
HANDLERS["nvmlDeviceGetDefaultApplicationsClock"] = _clock_handler("max")
HANDLERS["nvmlDeviceGetMaxCustomerBoostClock"] = _clock_handler("max")


@c_function("nvmlDeviceGetClock")
def _clock_by_id(lib: FakeNvmlLibrary, handle: Any, kind: Any, clock_id: Any, out: Any) -> int:
    gpu = lib.gpu(handle)
    which = "current" if value(clock_id) == 0 else "max"  # NVML_CLOCK_ID_CURRENT
    if value(kind) not in (CLOCK_GRAPHICS, CLOCK_SM, CLOCK_MEM, CLOCK_VIDEO):
        return NVML_ERROR_INVALID_ARGUMENT
    return put(out, _clock(lib, gpu, value(kind), which))


def put_list(count: Any, array: Any, values: list[int]) -> int:
    """A list into a caller's array, as NVML fills one: INSUFFICIENT_SIZE with the count
    needed when there is no array or too little room."""
    counter = target(count)
    if array is None or counter.value < len(values):
        counter.value = len(values)
        return NVML_ERROR_INSUFFICIENT_SIZE
    for k, number in enumerate(values):
        array[k] = number
    counter.value = len(values)
    return NVML_SUCCESS


@c_function("nvmlDeviceGetSupportedMemoryClocks")
def _memory_clocks(lib: FakeNvmlLibrary, handle: Any, count: Any, clocks: Any) -> int:
    model = lib.model(lib.gpu(handle))
    return put_list(count, clocks, [model["mem_clock_max_mhz"], model["mem_clock_min_mhz"]])


# --------------------------------------------------------- PCIe and NVLink
@c_function("nvmlDeviceGetPcieThroughput")
def _pcie_throughput(lib: FakeNvmlLibrary, handle: Any, counter: Any, out: Any) -> int:
    gpu = lib.gpu(handle)
    kind = value(counter)
    if kind not in (0, 1):  # NVML_PCIE_UTIL_TX_BYTES, RX_BYTES
        return NVML_ERROR_INVALID_ARGUMENT
    return put(out, gpu["pcie_tx_kbps"] if kind == 0 else gpu["pcie_rx_kbps"])


def _link(lib: FakeNvmlLibrary, handle: Any, link: Any) -> Any:
    gpu = lib.gpu(handle)
    if not 0 <= value(link) < lib.model(gpu)["nvlink_count"]:
        raise _Refusal(NVML_ERROR_INVALID_ARGUMENT)
    return gpu


@c_function("nvmlDeviceGetNvLinkState")
def _nvlink_state(lib: FakeNvmlLibrary, handle: Any, link: Any, out: Any) -> int:
    _link(lib, handle, link)
    return put(out, 1)


@c_function("nvmlDeviceGetNvLinkVersion")
def _nvlink_version(lib: FakeNvmlLibrary, handle: Any, link: Any, out: Any) -> int:
    gpu = _link(lib, handle, link)
    return put(out, NVLINK_VERSIONS.get(lib.model(gpu)["architecture"], 4))


@c_function("nvmlDeviceGetFieldValues")
def _field_values(lib: FakeNvmlLibrary, handle: Any, count: Any, values: Any) -> int:
    gpu = lib.gpu(handle)
    model = lib.model(gpu)
    array = target(values)
    links = model["nvlink_count"]
    stamp = int(lib.snapshot()["time"] * 1e6)
    for k in range(value(count)):
        field = array[k]
        field.timestamp = stamp
        field.latencyUsec = 0
        field.nvmlReturn = NVML_SUCCESS
        per_link = (
            gpu["nvlink_tx_kib_total"] // max(1, links),
            gpu["nvlink_rx_kib_total"] // max(1, links),
        )
        answers = {
            FI_MEMORY_TEMP: (VALUE_UINT, gpu["temperature_memory_c"]),
            FI_TOTAL_ENERGY: (VALUE_ULONGLONG, gpu["energy_mj"]),
            FI_NVLINK_LINK_COUNT: (VALUE_UINT, links),
            FI_PCIE_REPLAY_COUNTER: (VALUE_ULONGLONG, 0),
            FI_POWER_AVERAGE: (VALUE_UINT, gpu["power_draw_mw"]),
            FI_POWER_INSTANT: (VALUE_UINT, gpu["power_instant_mw"]),
        }
        if links and field.fieldId in (FI_NVLINK_DATA_TX, FI_NVLINK_RAW_TX):
            total = gpu["nvlink_tx_kib_total"]
            answers[field.fieldId] = (
                VALUE_ULONGLONG,
                total if field.scopeId == 0xFFFFFFFF else per_link[0],
            )
        if links and field.fieldId in (FI_NVLINK_DATA_RX, FI_NVLINK_RAW_RX):
            total = gpu["nvlink_rx_kib_total"]
            answers[field.fieldId] = (
                VALUE_ULONGLONG,
                total if field.scopeId == 0xFFFFFFFF else per_link[1],
            )
        if field.fieldId not in answers:
            field.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
            continue
        kind, number = answers[field.fieldId]
        field.valueType = kind
        if kind == VALUE_UINT:
            field.value.uiVal = number
        else:
            field.value.ullVal = number
    return NVML_SUCCESS


# --------------------------------------------------------------------- ECC
@c_function("nvmlDeviceGetEccMode")
def _ecc_mode(lib: FakeNvmlLibrary, handle: Any, current: Any, pending: Any) -> int:
    lib.gpu(handle)
    put(current, 1)
    return put(pending, 1)


@c_function("nvmlDeviceGetDefaultEccMode")
def _ecc_default(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    lib.gpu(handle)
    return put(out, 1)


@c_function("nvmlDeviceGetTotalEccErrors")
def _ecc_total(lib: FakeNvmlLibrary, handle: Any, error: Any, counter: Any, out: Any) -> int:
    ecc = lib.gpu(handle)["ecc"]
    kind = "corrected" if value(error) == 0 else "uncorrected"  # NVML_MEMORY_ERROR_TYPE_*
    scope = "volatile" if value(counter) == 0 else "aggregate"  # NVML_VOLATILE_ECC
    return put(out, ecc[f"{scope}_dram_{kind}"] + ecc[f"{scope}_sram_{kind}"])


@c_function("nvmlDeviceGetMemoryErrorCounter")
def _ecc_counter(
    lib: FakeNvmlLibrary, handle: Any, error: Any, counter: Any, location: Any, out: Any
) -> int:
    ecc = lib.gpu(handle)["ecc"]
    kind = "corrected" if value(error) == 0 else "uncorrected"
    scope = "volatile" if value(counter) == 0 else "aggregate"
    where = "dram" if value(location) in (1, 5) else "sram"  # device memory, DRAM
    return put(out, ecc[f"{scope}_{where}_{kind}"])


@c_function("nvmlDeviceGetRemappedRows")
def _remapped(
    lib: FakeNvmlLibrary, handle: Any, corr: Any, unc: Any, pending: Any, failure: Any
) -> int:
    rows = records.RemappedRows(lib.gpu(handle)["ecc"])
    for out, number in ((corr, rows.correctable), (unc, rows.uncorrectable),
                        (pending, int(rows.pending)), (failure, int(rows.failure))):  # fmt: skip
        put(out, number)
    return NVML_SUCCESS


# ------------------------------------------------------------------- modes
@c_function("nvmlDeviceGetMigMode")
def _mig_mode(lib: FakeNvmlLibrary, handle: Any, current: Any, pending: Any) -> int:
    lib.gpu(handle)
    put(current, 0)
    return put(pending, 0)


for _name in (
    "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetFanSpeed_v2",
    "nvmlDeviceGetDriverModel",
    "nvmlDeviceGetDriverModel_v2",
    "nvmlDeviceGetCurrentDriverModel",
    "nvmlDeviceGetPendingDriverModel",
    "nvmlDeviceGetGpuOperationMode",
    "nvmlDeviceGetRetiredPages",
    "nvmlDeviceGetRetiredPages_v2",
    "nvmlDeviceGetRetiredPagesPendingStatus",
    "nvmlDeviceGetNumaNodeId",
    "nvmlDeviceGetAutoBoostedClocksEnabled",
    "nvmlDeviceGetAttributes",
    "nvmlDeviceGetAttributes_v2",
):
    HANDLERS[_name] = refuse(NVML_ERROR_NOT_SUPPORTED)
for _name in (
    "nvmlDeviceGetGpuInstanceId",
    "nvmlDeviceGetComputeInstanceId",
    "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
    "nvmlDeviceGetMigDeviceHandleByIndex",
):
    HANDLERS[_name] = refuse(NVML_ERROR_INVALID_ARGUMENT)  # not a MIG device, MIG disabled


# --------------------------------------------------------------- processes
def _process_list(kind: str, version: int) -> Handler:
    def handler(lib: FakeNvmlLibrary, handle: Any, count: Any, infos: Any) -> int:
        gpu = lib.gpu(handle)
        processes = lib.processes(gpu) if kind == "compute" else []
        counter = target(count)
        if not processes:
            counter.value = 0
            return NVML_SUCCESS
        if infos is None or counter.value < len(processes):
            counter.value = len(processes)
            return NVML_ERROR_INSUFFICIENT_SIZE
        for k, process in enumerate(processes):
            info = infos[k]
            info.pid = process["pid"]
            info.usedGpuMemory = process["used_memory_mib"] * MIB
            if version >= 2:
                info.gpuInstanceId = 0xFFFFFFFF
                info.computeInstanceId = 0xFFFFFFFF
        counter.value = len(processes)
        return NVML_SUCCESS

    return handler


for _kind, _prefix in (
    ("compute", "nvmlDeviceGetComputeRunningProcesses"),
    ("graphics", "nvmlDeviceGetGraphicsRunningProcesses"),
    ("mps", "nvmlDeviceGetMPSComputeRunningProcesses"),
):
    HANDLERS[_prefix] = _process_list(_kind, 1)
    HANDLERS[_prefix + "_v2"] = _process_list(_kind, 2)
    HANDLERS[_prefix + "_v3"] = _process_list(_kind, 3)


@c_function("nvmlDeviceGetRunningProcessDetailList")
def _process_details(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    gpu = lib.gpu(handle)
    details = target(out)
    processes = lib.processes(gpu) if details.mode == 0 else []  # NVML_PROCESS_MODE_COMPUTE
    if not processes:
        details.numProcArrayEntries = 0
        return NVML_SUCCESS
    if not details.procArray or details.numProcArrayEntries < len(processes):
        details.numProcArrayEntries = len(processes)
        return NVML_ERROR_INSUFFICIENT_SIZE
    for k, process in enumerate(processes):
        entry = details.procArray[k]
        entry.pid = process["pid"]
        entry.usedGpuMemory = process["used_memory_mib"] * MIB
        entry.gpuInstanceId = 0xFFFFFFFF
        entry.computeInstanceId = 0xFFFFFFFF
        entry.usedGpuCcProtectedMemory = 0
    details.numProcArrayEntries = len(processes)
    return NVML_SUCCESS


# ------------------------- what real clients ask for beyond the basics (as the C library)
HANDLERS["nvmlDeviceGetBusType"] = _model_int(lambda m: 2)  # NVML_BUS_TYPE_PCIE
HANDLERS["nvmlDeviceGetPcieLinkMaxSpeed"] = _model_int(
    # NVML_PCIE_LINK_MAX_SPEED_32000MBPS (5) or _16000MBPS (4): a real H100 answers 5
    lambda m: 5 if m["pcie_gen_max"] >= 5 else 4
)
HANDLERS["nvmlDeviceGetInforomConfigurationChecksum"] = _model_int(lambda m: 0)
HANDLERS["nvmlDeviceGetAccountingMode"] = _model_int(lambda m: 0)  # off, as out of the box
HANDLERS["nvmlDeviceGetAccountingBufferSize"] = _model_int(lambda m: 4000)
HANDLERS["nvmlDeviceGetSupportedEventTypes"] = _model_int(lambda m: EVENT_TYPES_SUPPORTED)


@c_function("nvmlDeviceGetAccountingPids")
def _accounting_pids(lib: FakeNvmlLibrary, handle: Any, count: Any, pids: Any) -> int:
    lib.gpu(handle)
    return put(count, 0)  # accounting is off: no PIDs kept


@c_function("nvmlDeviceGetC2cModeInfoV")
def _c2c(lib: FakeNvmlLibrary, handle: Any, out: Any) -> int:
    lib.gpu(handle)
    target(out).isC2cEnabled = 0  # an H100 SXM: no chip-to-chip link to a Grace CPU
    return NVML_SUCCESS


@c_function("nvmlDeviceGetInforomVersion")
def _inforom(lib: FakeNvmlLibrary, handle: Any, kind: Any, buffer: Any, size: Any) -> int:
    model = lib.model(lib.gpu(handle))
    objects = {0: "inforom_oem", 1: "inforom_ecc"}  # NVML_INFOROM_OEM, _ECC
    if value(kind) == 2:  # NVML_INFOROM_POWER
        return NVML_ERROR_NOT_SUPPORTED
    if value(kind) not in objects:
        return NVML_ERROR_INVALID_ARGUMENT
    return write_string(buffer, size, model[objects[value(kind)]])


@c_function("nvmlDeviceGetSupportedGraphicsClocks")
def _graphics_clocks(lib: FakeNvmlLibrary, handle: Any, memory_mhz: Any, count: Any,
                     clocks: Any) -> int:  # fmt: skip
    model = lib.model(lib.gpu(handle))
    if value(memory_mhz) not in (model["mem_clock_max_mhz"], model["mem_clock_min_mhz"]):
        return NVML_ERROR_NOT_FOUND
    step = model["clock_step_mhz"] or 15
    # highest first, as the driver lists them
    return put_list(
        count, clocks, list(range(model["sm_clock_max_mhz"], model["sm_clock_idle_mhz"] - 1, -step))
    )


@c_function("nvmlDeviceGetGspFirmwareMode")
def _gsp_mode(lib: FakeNvmlLibrary, handle: Any, enabled: Any, default: Any) -> int:
    lib.gpu(handle)
    put(enabled, 1)
    return put(default, 1)


@c_function("nvmlDeviceGetGspFirmwareVersion")
def _gsp_version(lib: FakeNvmlLibrary, handle: Any, buffer: Any) -> int:
    lib.gpu(handle)
    return write_string(buffer, GSP_FIRMWARE_VERSION_BUF_SIZE, lib.snapshot()["driver_version"])


@c_function("nvmlDeviceGetSupportedPerformanceStates")
def _pstates(lib: FakeNvmlLibrary, handle: Any, states: Any, size: Any) -> int:
    lib.gpu(handle)
    room = value(size) // ctypes.sizeof(ctypes.c_uint)
    if states is None or room < 2:
        return NVML_ERROR_INSUFFICIENT_SIZE
    for k in range(room):
        states[k] = PSTATE_UNKNOWN
    states[0], states[1] = 2, 0  # as a real H100 lists them: P2, then P0
    return NVML_SUCCESS


# nvmlSamplingType_t: the record each reads (encoders, decoders, JPEG, OFA: idle)
SAMPLE_FIELDS = {
    0: "power_instant_mw",
    1: "utilization_gpu_pct",
    2: "utilization_memory_pct",
    3: None,
    4: None,
    5: "clock_sm_mhz",
    6: "clock_memory_mhz",
    7: None,
    8: None,
}


@c_function("nvmlDeviceGetSamples")
def _samples(lib: FakeNvmlLibrary, handle: Any, kind: Any, last_seen: Any, value_type: Any,
             count: Any, samples: Any) -> int:  # fmt: skip
    """As the C library: the current reading, one sample at the snapshot's time."""
    gpu = lib.gpu(handle)
    if value(kind) not in SAMPLE_FIELDS:
        return NVML_ERROR_NOT_SUPPORTED
    field = SAMPLE_FIELDS[value(kind)]
    stamp = int(lib.snapshot()["time"] * 1e6)
    put(value_type, VALUE_UINT)
    counter = target(count)
    if samples is None:
        counter.value = 1
        return NVML_SUCCESS
    if counter.value == 0:
        return NVML_ERROR_INVALID_ARGUMENT
    if value(last_seen) >= stamp:
        return NVML_ERROR_NOT_FOUND
    samples[0].timeStamp = stamp
    samples[0].sampleValue.uiVal = gpu[field] if field else 0
    counter.value = 1
    return NVML_SUCCESS


def _pair(lib: FakeNvmlLibrary, first: Any, second: Any) -> tuple[Any, Any]:
    return lib.gpu(first), lib.gpu(second)


@c_function("nvmlDeviceGetTopologyCommonAncestor")
def _common_ancestor(lib: FakeNvmlLibrary, first: Any, second: Any, out: Any) -> int:
    """On a DGX each GPU has a PCIe switch of its own under its NUMA node's socket."""
    one, other = _pair(lib, first, second)
    numa = lib.node()["host"]["gpu_numa_node"]
    if one["index"] == other["index"]:
        return put(out, TOPOLOGY_INTERNAL)
    same = numa[one["index"]] == numa[other["index"]]
    return put(out, TOPOLOGY_NODE if same else TOPOLOGY_SYSTEM)


def _nvlinked(lib: FakeNvmlLibrary, one: Any, other: Any) -> bool:
    topology: str = lib.model(one)["nvlink_topology"]
    return topology == "all" or (topology == "pairs" and int(one["index"]) ^ 1 == other["index"])


@c_function("nvmlDeviceGetP2PStatus")
def _p2p(lib: FakeNvmlLibrary, first: Any, second: Any, index: Any, out: Any) -> int:
    one, other = _pair(lib, first, second)
    if one["index"] == other["index"]:
        return put(out, P2P_NOT_SUPPORTED)
    if value(index) == P2P_CAPS_NVLINK:
        return put(out, P2P_OK if _nvlinked(lib, one, other) else P2P_NOT_SUPPORTED)
    # read, write, atomics, prop: over NVLink, or PCIe peer-to-peer
    return put(out, P2P_OK if value(index) in (0, 1, 3, 4) else P2P_NOT_SUPPORTED)


def _nvlink_far_end(lib: FakeNvmlLibrary, handle: Any, link: Any) -> tuple[bool, int]:
    """(is a switch, which): see the C library's nvlink_remote."""
    gpu = _link(lib, handle, link)
    model = lib.model(gpu)
    if model["nvlink_topology"] == "pairs":
        return False, gpu["index"] ^ 1
    if model["architecture"] == "Ampere":
        return True, value(link) // 2
    return True, sum(value(link) >= first for first in HOPPER_SWITCH_FIRST_LINKS[1:])


@c_function("nvmlDeviceGetNvLinkRemoteDeviceType")
def _nvlink_remote_type(lib: FakeNvmlLibrary, handle: Any, link: Any, out: Any) -> int:
    is_switch, _ = _nvlink_far_end(lib, handle, link)
    return put(out, NVLINK_DEVICE_SWITCH if is_switch else NVLINK_DEVICE_GPU)


@c_function("nvmlDeviceGetNvLinkRemotePciInfo_v2")
def _nvlink_remote_pci(lib: FakeNvmlLibrary, handle: Any, link: Any, out: Any) -> int:
    is_switch, remote = _nvlink_far_end(lib, handle, link)
    if not is_switch:
        code: int = _pci(lib, lib.handle_for(remote), out)
        return code
    device_id = 0x1AF1 if lib.model(lib.gpu(handle))["architecture"] == "Ampere" else 0x22A3
    info = target(out)
    info.domain, info.bus, info.device = 0, 0x05 + remote, 0
    info.busId = f"00000000:{info.bus:02X}:00.0".encode()
    info.busIdLegacy = f"0000:{info.bus:02X}:00.0".encode()
    info.pciDeviceId, info.pciSubSystemId = device_id << 16 | 0x10DE, 0
    return NVML_SUCCESS


# ----------------------------------------------------------------- setters
# As the driver: root only (NVML_ERROR_NO_PERMISSION otherwise), within the board's
# range; the daemon's model then acts on the GPU, and every view shows it.
def _root_gpu(lib: FakeNvmlLibrary, handle: Any) -> Any:
    import os

    gpu = lib.gpu(handle)
    if os.geteuid() != 0:
        raise _Refusal(NVML_ERROR_NO_PERMISSION)
    return gpu


@c_function("nvmlDeviceSetPowerManagementLimit")
def _set_power_limit(lib: FakeNvmlLibrary, handle: Any, limit_mw: Any) -> int:
    gpu = _root_gpu(lib, handle)
    model, limit = lib.model(gpu), int(value(limit_mw))
    if not model["power_min_w"] * 1000 <= limit <= model["power_max_w"] * 1000:
        return NVML_ERROR_INVALID_ARGUMENT
    return lib.change("set_power_limit", gpu=gpu["global_index"], limit_mw=limit)


@c_function("nvmlDeviceSetPowerManagementLimit_v2")
def _set_power_limit_v2(lib: FakeNvmlLibrary, handle: Any, power: Any) -> int:
    request = target(power)
    if request.version != POWER_VALUE_V2:
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    if request.powerScope != 0:  # NVML_POWER_SCOPE_GPU: a board has no other limit
        lib.gpu(handle)
        return NVML_ERROR_NOT_SUPPORTED
    code: int = _set_power_limit(lib, handle, int(request.powerValueMw))
    return code


@c_function("nvmlDeviceSetGpuLockedClocks")
def _lock_sm_clock(lib: FakeNvmlLibrary, handle: Any, min_mhz: Any, max_mhz: Any) -> int:
    gpu = _root_gpu(lib, handle)
    model, low, high = lib.model(gpu), int(value(min_mhz)), int(value(max_mhz))
    if low > high or not model["sm_clock_idle_mhz"] <= high <= model["sm_clock_max_mhz"]:
        return NVML_ERROR_INVALID_ARGUMENT
    return lib.change("lock_clocks", gpu=gpu["global_index"], max_mhz=high)


@c_function("nvmlDeviceResetGpuLockedClocks")
def _unlock_sm_clock(lib: FakeNvmlLibrary, handle: Any) -> int:
    return lib.change("lock_clocks", gpu=_root_gpu(lib, handle)["global_index"])


@c_function("nvmlDeviceSetMemoryLockedClocks")
def _lock_memory_clock(lib: FakeNvmlLibrary, handle: Any, min_mhz: Any, max_mhz: Any) -> int:
    gpu = _root_gpu(lib, handle)
    model, low, high = lib.model(gpu), int(value(min_mhz)), int(value(max_mhz))
    top, bottom = model["mem_clock_max_mhz"], model["mem_clock_min_mhz"]
    clock = top if high >= top else bottom  # the supported memory clocks: top, bottom
    if low > high or high < bottom or clock < low:
        return NVML_ERROR_INVALID_ARGUMENT
    return lib.change("lock_clocks", gpu=gpu["global_index"], clock="memory", max_mhz=clock)


@c_function("nvmlDeviceResetMemoryLockedClocks")
def _unlock_memory_clock(lib: FakeNvmlLibrary, handle: Any) -> int:
    gpu = _root_gpu(lib, handle)
    return lib.change("lock_clocks", gpu=gpu["global_index"], clock="memory")


@c_function("nvmlDeviceSetPersistenceMode")
def _set_persistence(lib: FakeNvmlLibrary, handle: Any, mode: Any) -> int:
    gpu = lib.gpu(handle)
    if value(mode) not in (0, 1):  # NVML_FEATURE_DISABLED, NVML_FEATURE_ENABLED
        return NVML_ERROR_INVALID_ARGUMENT
    _root_gpu(lib, handle)
    return lib.change("set_persistence_mode", gpu=gpu["global_index"], enabled=value(mode) == 1)


def covered() -> list[str]:
    """The C functions this library answers (everything else: FunctionNotFound)."""
    return sorted(HANDLERS)
