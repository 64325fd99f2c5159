"""fakehw's libnvidia-ml.so.1, loaded as the driver's is by programs that are not
Python's pynvml: a ctypes caller, py3nvml's py3smi, glances, a C program compiled
against NVIDIA's nvml.h (struct versions, threads, fork), and a client that outlives
its daemon. Every value is checked against what fake-nvidia-smi shows of the same
GPUs. (pynvml, nvitop and gpustat run on both implementations in test_nvml.py.)
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Node, fakehw, wait_for

from fakehw.nvml import native_directory

BIN = Path(sys.executable).parent
NATIVE = native_directory()
DRIVER = "580.159.04"

pytestmark = pytest.mark.skipif(
    NATIVE is None and os.environ.get("FAKEHW_EXPECT_NATIVE") != "1",
    reason="libnvidia-ml.so.1 was not built (no C compiler at install)",
)


def nvml_header() -> Path:
    """NVIDIA's nvml.h from the nvidia-nvml-dev package (a test dependency)."""
    spec = importlib.util.find_spec("nvidia")
    assert spec and spec.submodule_search_locations
    for root in spec.submodule_search_locations:
        for sub in ("cu13", "nvml_dev"):
            header = Path(root) / sub / "include" / "nvml.h"
            if header.is_file():
                return header.parent
    raise AssertionError("nvml.h not found: pip install nvidia-nvml-dev")


@pytest.fixture(scope="module")
def busy() -> Iterator[Node]:
    node = Node("h100", 4).training_on({1: 46608, 2: 30000})
    yield node
    node.close()


def native_env(node: Node) -> dict[str, str]:
    """Only LD_LIBRARY_PATH, as a shell after `eval "$(fakehw shellenv)"`: no Python hook."""
    assert NATIVE is not None
    return {**node.env, "LD_LIBRARY_PATH": NATIVE, "PATH": f"{BIN}:{node.env['PATH']}"}


def run(node: Node, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(command), env=native_env(node), capture_output=True, text=True,
                            timeout=timeout, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def smi_rows(node: Node, fields: str) -> list[list[str]]:
    out = node.smi(f"--query-gpu={fields}", "--format=csv,noheader,nounits").stdout
    return [line.split(", ") for line in out.splitlines()]


def test_it_is_installed_under_the_names_a_driver_installs() -> None:
    assert NATIVE is not None
    names = sorted(p.name for p in Path(NATIVE).glob("libnvidia-ml.so*"))
    assert names == ["libnvidia-ml.so", "libnvidia-ml.so.1", f"libnvidia-ml.so.{DRIVER}"]
    dynamic = subprocess.run(["readelf", "-d", str(Path(NATIVE) / "libnvidia-ml.so.1")],
                             capture_output=True, text=True, check=False).stdout  # fmt: skip
    assert "Library soname: [libnvidia-ml.so.1]" in dynamic or not dynamic  # readelf optional


CTYPES = """
    import ctypes, json
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    out = {"init": lib.nvmlInit_v2(), "gpus": []}
    count = ctypes.c_uint()
    out["count"] = (lib.nvmlDeviceGetCount_v2(ctypes.byref(count)), count.value)
    text = ctypes.create_string_buffer(96)
    lib.nvmlSystemGetDriverVersion(text, 96)
    out["driver"] = text.value.decode()
    for i in range(count.value):
        handle = ctypes.c_void_p()
        assert lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) == 0
        gpu = {}
        for name in ("Name", "UUID", "Serial", "VbiosVersion"):
            getattr(lib, "nvmlDeviceGet" + name)(handle, text, 96)
            gpu[name] = text.value.decode()
        value = ctypes.c_uint()
        for name in ("PowerUsage", "EnforcedPowerLimit", "Index"):
            getattr(lib, "nvmlDeviceGet" + name)(handle, ctypes.byref(value))
            gpu[name] = value.value
        lib.nvmlDeviceGetTemperature(handle, 0, ctypes.byref(value))
        gpu["temperature"] = value.value
        lib.nvmlDeviceGetMaxClockInfo(handle, 1, ctypes.byref(value))
        gpu["max_sm"] = value.value
        memory = (ctypes.c_ulonglong * 3)()  # nvmlMemory_t: total, free, used
        lib.nvmlDeviceGetMemoryInfo(handle, memory)
        gpu["memory"] = list(memory)
        small = ctypes.create_string_buffer(4)
        gpu["small_buffer"] = lib.nvmlDeviceGetName(handle, small, 4)
        out["gpus"].append(gpu)
    out["bad_index"] = lib.nvmlDeviceGetHandleByIndex_v2(99, ctypes.byref(ctypes.c_void_p()))
    out["shutdown"] = (lib.nvmlShutdown(), lib.nvmlShutdown())
    lib.nvmlErrorString.restype = ctypes.c_char_p
    out["errors"] = [lib.nvmlErrorString(code).decode() for code in (0, 1, 3, 15)]
    print(json.dumps(out))
"""


def test_a_ctypes_caller_reads_what_nvidia_smi_shows(busy: Node) -> None:
    data = json.loads(run(busy, sys.executable, "-c", textwrap.dedent(CTYPES)).stdout)
    assert data["init"] == 0 and data["count"] == [0, 4] and data["driver"] == DRIVER
    fields = (
        "name,uuid,serial,vbios_version,power.limit,clocks.max.sm,memory.total,"
        "memory.used,memory.reserved,power.draw,temperature.gpu"
    )
    rows = smi_rows(busy, fields)
    for gpu, row in zip(data["gpus"], rows, strict=True):
        name, uuid, serial, vbios, limit, max_sm, total, used, reserved, draw, temp = row
        assert [gpu["Name"], gpu["UUID"], gpu["Serial"], gpu["VbiosVersion"]] == [
            name, uuid, serial, vbios.upper()]  # fmt: skip
        assert gpu["EnforcedPowerLimit"] == round(float(limit) * 1000)
        assert gpu["max_sm"] == int(max_sm)
        total_b, free_b, used_b = gpu["memory"]
        assert total_b == int(total) * 2**20 and total_b == free_b + used_b
        assert used_b == (int(used) + int(reserved)) * 2**20  # v1 counts the reservation
        # a reading an instant apart: within the model's tick-to-tick noise
        assert abs(gpu["PowerUsage"] / 1000 - float(draw)) < 0.05 * float(draw) + 5
        assert abs(gpu["temperature"] - int(temp)) <= 2
        assert gpu["small_buffer"] == 7  # NVML_ERROR_INSUFFICIENT_SIZE
    assert [g["Index"] for g in data["gpus"]] == [0, 1, 2, 3]
    assert data["bad_index"] == 2  # NVML_ERROR_INVALID_ARGUMENT
    assert data["shutdown"] == [0, 1]  # the second: NVML_ERROR_UNINITIALIZED
    assert data["errors"] == ["Success", "Uninitialized", "Not Supported", "GPU is lost"]


def test_py3nvml_and_its_py3smi_see_the_gpus_and_their_processes(busy: Node) -> None:
    table = run(busy, "py3smi").stdout
    rows = re.findall(r"^\|\s+(\d) N/A%\s+(\d+)C\s+0\s+(\d+)W / 700W \|\s+(\d+)MiB / 81559MiB \|"
                      r"\s+(\d+)%\s+Default \|$", table, re.MULTILINE)  # fmt: skip
    assert [r[0] for r in rows] == ["0", "1", "2", "3"], table
    smi = smi_rows(busy, "memory.used,memory.reserved")
    for row, (used, reserved) in zip(rows, smi, strict=True):
        assert int(row[3]) == int(used) + int(reserved)  # nvmlMemory_t v1: with the reservation
    pid = busy.children[0].pid
    assert re.search(rf"^\|\s+1\s+\S+\s+{pid}\s+.*46608MiB \|$", table, re.MULTILINE), table


def test_glances_gpu_plugin_is_enabled_and_reads_them(busy: Node) -> None:
    out = run(busy, "glances", "--stdout", "gpu", "--stop-after", "1", timeout=90).stdout
    line = next(line for line in out.splitlines() if line.startswith("gpu: "))
    gpus = ast.literal_eval(line.removeprefix("gpu: "))
    assert [g["gpu_id"] for g in gpus] == ["nvidia0", "nvidia1", "nvidia2", "nvidia3"]
    assert {g["name"] for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    smi = smi_rows(busy, "memory.used,memory.reserved,memory.total")
    for gpu, (used, reserved, total) in zip(gpus, smi, strict=True):
        assert gpu["mem"] == pytest.approx(100 * (int(used) + int(reserved)) / int(total), abs=0.2)
        assert gpu["fan_speed"] is None  # passively cooled: NOT_SUPPORTED


C_PROGRAM = r"""
#define NVML_NO_UNVERSIONED_FUNC_DEFS  /* the old entry points by their own names */
#include <nvml.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#define CHECK(call) do { nvmlReturn_t r = (call); if (r != NVML_SUCCESS) { \
    printf("{\"failed\": \"%s\", \"code\": %d}\n", #call, r); return 1; } } while (0)

static unsigned int count;
static int inconsistent[8];

static void *reader(void *arg) {
    long id = (long)arg;
    for (int k = 0; k < 20000; k++) {
        nvmlDevice_t device;
        nvmlMemory_v2_t memory = {.version = nvmlMemory_v2};
        char name[96];
        if (nvmlDeviceGetHandleByIndex_v2((unsigned)(k % count), &device) != NVML_SUCCESS ||
            nvmlDeviceGetMemoryInfo_v2(device, &memory) != NVML_SUCCESS ||
            nvmlDeviceGetName(device, name, sizeof name) != NVML_SUCCESS ||
            memory.total != memory.free + memory.used + memory.reserved ||
            strcmp(name, "NVIDIA H100 80GB HBM3") != 0)
            inconsistent[id]++;
    }
    return NULL;
}

int main(void) {
    CHECK(nvmlInit_v2());
    CHECK(nvmlDeviceGetCount_v2(&count));
    nvmlDevice_t device;
    CHECK(nvmlDeviceGetHandleByIndex_v2(1, &device));
    nvmlPciInfo_t pci;
    CHECK(nvmlDeviceGetPciInfo_v3(device, &pci));
    unsigned char canvas[sizeof(nvmlPciInfo_t)];  /* v1 writes the old, shorter layout */
    memset(canvas, 0xAB, sizeof canvas);
    CHECK(nvmlDeviceGetPciInfo(device, (nvmlPciInfo_t *)canvas));
    int beyond = 0;
    for (size_t i = 52; i < sizeof canvas; i++) beyond += canvas[i] != 0xAB;
    nvmlMemory_v2_t memory = {.version = nvmlMemory_v2};
    CHECK(nvmlDeviceGetMemoryInfo_v2(device, &memory));
    nvmlMemory_v2_t wrong = {.version = 1};
    nvmlReturn_t mismatch = nvmlDeviceGetMemoryInfo_v2(device, &wrong);
    unsigned int n = 0;
    nvmlReturn_t sizing = nvmlDeviceGetComputeRunningProcesses_v3(device, &n, NULL);
    nvmlProcessInfo_t infos[8];
    unsigned int room = 8;
    CHECK(nvmlDeviceGetComputeRunningProcesses_v3(device, &room, infos));
    nvmlProcessInfo_v1_t old[8];
    unsigned int old_room = 8;
    CHECK(nvmlDeviceGetComputeRunningProcesses(device, &old_room, old));
    nvmlC2cModeInfo_v1_t c2c = {.isC2cEnabled = 7};
    CHECK(nvmlDeviceGetC2cModeInfoV(device, &c2c));
    char inforom[32];
    CHECK(nvmlDeviceGetInforomVersion(device, NVML_INFOROM_OEM, inforom, sizeof inforom));
    unsigned int clocks[256], clock_count = 256;
    CHECK(nvmlDeviceGetSupportedGraphicsClocks(device, 2619, &clock_count, clocks));
    nvmlFieldValue_t fields[3] = {{.fieldId = NVML_FI_DEV_POWER_INSTANT},
        {.fieldId = NVML_FI_DEV_POWER_INSTANT, .scopeId = NVML_POWER_SCOPE_MEMORY},
        {.fieldId = NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION}};
    CHECK(nvmlDeviceGetFieldValues(device, 3, fields));
    unsigned int power;
    CHECK(nvmlDeviceGetPowerUsage(device, &power));
    pthread_t threads[8];
    for (long t = 0; t < 8; t++) pthread_create(&threads[t], NULL, reader, (void *)t);
    int bad = 0;
    for (int t = 0; t < 8; t++) { pthread_join(threads[t], NULL); bad += inconsistent[t]; }
    pid_t child = fork();
    if (child == 0) {  /* a forked child keeps its parent's NVML */
        unsigned int c = 0;
        _exit(nvmlDeviceGetCount_v2(&c) == NVML_SUCCESS && c == count ? 0 : 3);
    }
    int status = 0;
    waitpid(child, &status, 0);
    printf("{\"count\": %u, \"bus_id\": \"%s\", \"legacy\": \"%s\", \"total\": %llu, "
           "\"reserved\": %llu, \"used\": %llu, \"mismatch\": %d, \"sizing\": [%d, %u], "
           "\"pids\": [%u, %u], \"memory\": [%llu, %llu], \"c2c\": %u, \"inforom\": \"%s\", "
           "\"clocks\": [%u, %u, %u], \"fields\": [%d, %u, %d, %u, %d, %llu], \"power\": %u, "
           "\"inconsistent\": %d, \"child\": %d, \"sizes\": [%zu, %zu, %zu], "
           "\"v1\": [\"%s\", %d]}\n",
           count, pci.busId, pci.busIdLegacy, memory.total, memory.reserved, memory.used,
           mismatch, sizing, n, infos[0].pid, old[0].pid, infos[0].usedGpuMemory,
           old[0].usedGpuMemory, c2c.isC2cEnabled, inforom, clock_count, clocks[0],
           clocks[clock_count - 1], fields[0].nvmlReturn, fields[0].value.uiVal,
           fields[1].nvmlReturn, fields[1].value.uiVal, fields[2].valueType,
           fields[2].value.ullVal, power, bad,
           WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status),
           sizeof(nvmlProcessInfo_t), sizeof(nvmlMemory_v2_t), sizeof(nvmlPciInfo_t),
           (char *)canvas, beyond);
    CHECK(nvmlShutdown());
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C program above, compiled against nvml.h and linked as a driver's client is
    (-lnvidia-ml, the unversioned name)."""
    return compile_c(tmp_path_factory.mktemp("nvml-c"), "client", C_PROGRAM)


def test_a_c_program_built_against_nvml_h(busy: Node, c_program: Path) -> None:
    data = json.loads(run(busy, str(c_program), timeout=120).stdout)
    bus, reserved, used, total = smi_rows(
        busy, "pci.bus_id,memory.reserved,memory.used,memory.total")[1]  # fmt: skip
    assert data["count"] == 4 and data["bus_id"] == bus and data["legacy"] == bus[4:]
    assert data["total"] == int(total) * 2**20
    assert (data["reserved"], data["used"]) == (int(reserved) * 2**20, int(used) * 2**20)
    assert data["mismatch"] == 25  # NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    pid = busy.children[0].pid
    assert data["sizing"] == [7, 1]  # NVML_ERROR_INSUFFICIENT_SIZE, and the count
    assert data["pids"] == [pid, pid]  # v3 and v1 structs, each at its own stride
    assert data["memory"] == [46608 * 2**20, 46608 * 2**20]
    assert data["c2c"] == 0 and data["inforom"]  # a real H100: isC2cEnabled=0
    count, highest, lowest = data["clocks"]
    assert (highest, lowest) == (1980, 345) and count == (1980 - 345) // 15 + 1
    instant_ok, instant, memory_ok, memory_mw, energy_type, energy = data["fields"]
    assert instant_ok == 0 and memory_ok == 0 and energy_type == 3 and energy > 0
    assert 0 < memory_mw < instant  # NVML_POWER_SCOPE_MEMORY: the memory's own share
    assert abs(data["power"] - instant) < 0.15 * instant
    assert data["inconsistent"] == 0  # 8 threads x 20,000 reads, every one whole
    assert data["child"] == 0
    # nvml.h's own layout: nvmlProcessInfo_t, nvmlMemory_v2_t, nvmlPciInfo_t
    assert data["sizes"] == [24, 40, 68]
    assert data["v1"] == [bus[4:], 0]  # its 16-byte bus id, and not a byte past its 52


LOOP = """
    import ctypes, sys, time
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    assert lib.nvmlInit_v2() == 0
    power = ctypes.c_uint()
    handle = ctypes.c_void_p()
    lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle))
    end = time.monotonic() + 40
    while time.monotonic() < end:
        code = lib.nvmlDeviceGetPowerUsage(handle, ctypes.byref(power))
        print(code, power.value, flush=True)
        time.sleep(0.1)
"""


def test_a_client_carries_on_across_a_daemon_restart(tmp_path: Path) -> None:
    node = Node("h100", 2)
    out = tmp_path / "loop.txt"
    try:
        with open(out, "w") as sink:
            client = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LOOP)],
                                      env=native_env(node), stdout=sink, text=True)  # fmt: skip
        lines = lambda: out.read_text().splitlines()  # noqa: E731
        wait_for(lambda: len(lines()) > 5, timeout=30)
        stopped = node.tool("fakehw", "daemon", "stop")
        assert stopped.returncode == 0, stopped.stderr
        before_restart = len(lines())
        wait_for(lambda: len(lines()) > before_restart + 5, timeout=30)
        # with no daemon: an error, never a frozen reading passed off as current
        assert all(line.split()[0] != "0" for line in lines()[before_restart + 2 :])
        started = node.tool("fakehw", "daemon", "start", "--gpu-model", "h100",
                            "--gpus-per-node", "2")  # fmt: skip
        assert started.returncode == 0, started.stderr
        resumed = len(lines())
        wait_for(lambda: any(line.startswith("0 ") for line in lines()[resumed:]), timeout=30)
        last = lines()[-1].split()
        assert last[0] == "0" and 40_000 < int(last[1]) < 120_000  # an idle H100's watts
    finally:
        client.kill()
        client.wait()
        node.close()


def test_exec_gives_every_program_the_library_and_says_when_it_cannot(busy: Node) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "fakehw", "exec", "--", sys.executable, "-c",
         "import os; print(os.environ['LD_LIBRARY_PATH'].split(':')[0], "
         "os.environ['FAKEHW_NVML'])"],
        env=busy.env, capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    assert shown == [NATIVE, "native"]
    refused = subprocess.run(
        [sys.executable, "-m", "fakehw", "exec", "--", "true"],
        env={**busy.env, "FAKEHW_NVML": "cuda"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "FAKEHW_NVML must be native or python" in refused.stderr
    shell = subprocess.run([sys.executable, "-m", "fakehw", "shellenv"], env=busy.env,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"export LD_LIBRARY_PATH={NATIVE}" in shell


def test_the_c_header_is_the_layouts_own() -> None:
    """fakehw_snapshot.h is generated from fakehw/contract/nvmlshm.py: the C library reads
    the file the daemon writes field for field."""
    from fakehw.contract import nvmlshm

    header = Path(__file__).parents[1] / "fakehw" / "nvml" / "native" / "fakehw_snapshot.h"
    assert header.read_text() == nvmlshm.c_header(), "regenerate: python -m fakehw.contract.nvmlshm"
    protocol = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
    assert f"layout version {nvmlshm.LAYOUT_VERSION}:" in protocol  # the one documented


EVENTS = r"""
#include <nvml.h>
#include <stdio.h>
int main(void) {
    if (nvmlInit_v2() != NVML_SUCCESS) return 1;
    unsigned int count;
    nvmlDeviceGetCount_v2(&count);
    nvmlEventSet_t set;
    if (nvmlEventSetCreate(&set) != NVML_SUCCESS) return 2;
    unsigned long long wanted = nvmlEventTypeXidCriticalError | nvmlEventTypeDoubleBitEccError
                                | nvmlEventTypeSingleBitEccError;  /* the device plugin's */
    nvmlDevice_t handles[64];
    for (unsigned int i = 0; i < count; i++) {
        nvmlDeviceGetHandleByIndex_v2(i, &handles[i]);
        if (nvmlDeviceRegisterEvents(handles[i], wanted, set) != NVML_SUCCESS) return 3;
    }
    printf("ready\n");
    fflush(stdout);
    for (int k = 0; k < 4; k++) {
        nvmlEventData_t data;
        nvmlReturn_t got = nvmlEventSetWait_v2(set, &data, k < 3 ? 20000 : 300);
        unsigned int index = 99;  /* by handle: a GPU off the bus answers nothing more */
        for (unsigned int i = 0; got == NVML_SUCCESS && i < count; i++)
            if (handles[i] == data.device) index = i;
        printf("%d %u %llu %llu\n", got, got == NVML_SUCCESS ? index : 99,
               got == NVML_SUCCESS ? data.eventType : 0, got == NVML_SUCCESS ? data.eventData : 0);
        fflush(stdout);
    }
    nvmlEventSetFree(set);
    return 0;
}
"""


def compile_c(directory: Path, name: str, source: str) -> Path:
    assert NATIVE is not None
    (directory / f"{name}.c").write_text(source)
    compiled = subprocess.run(
        ["cc", "-std=c11", "-D_GNU_SOURCE", "-O1", "-Wall", "-I", str(nvml_header()),
         str(directory / f"{name}.c"), "-o", str(directory / name), "-L", NATIVE,
         "-lnvidia-ml", "-lpthread"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    return directory / name


def test_injected_faults_reach_a_waiting_health_check(tmp_path: Path) -> None:
    """As the Kubernetes device plugin waits: an uncorrectable ECC error (XID 48, a
    double-bit event) and a GPU off the bus (XID 79) each wake it, on the right GPU;
    with nothing happening, the wait times out."""
    node = Node("h100", 4)
    waiter = subprocess.Popen([str(compile_c(tmp_path, "events", EVENTS))], env=native_env(node),
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert waiter.stdout is not None and waiter.stdout.readline().strip() == "ready"
        assert node.tool("fakehw", "inject", "ecc-uncorrectable", "--gpu", "1").returncode == 0
        first, second = (waiter.stdout.readline().split() for _ in range(2))
        assert node.tool("fakehw", "inject", "xid79", "--gpu", "2").returncode == 0
        third = waiter.stdout.readline().split()
        quiet = waiter.stdout.readline().split()
    finally:
        waiter.kill()
        waiter.wait()
        node.close()
    assert sorted([first, second]) == sorted([["0", "1", "8", "48"], ["0", "1", "2", "0"]])
    assert third == ["0", "2", "8", "79"]  # nvmlEventTypeXidCriticalError, XID 79
    assert quiet == ["10", "99", "0", "0"]  # NVML_ERROR_TIMEOUT


TOPOLOGY = """
    import ctypes, json
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    lib.nvmlInit_v2()
    handles = []
    for i in range(4):
        h = ctypes.c_void_p()
        lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(h))
        handles.append(h)
    value = ctypes.c_uint()
    out = {"ancestor": [], "p2p": [], "samples": [], "accounting": []}
    for b in handles:
        lib.nvmlDeviceGetTopologyCommonAncestor(handles[0], b, ctypes.byref(value))
        out["ancestor"].append(value.value)
        lib.nvmlDeviceGetP2PStatus(handles[0], b, 2, ctypes.byref(value))  # NVLINK
        out["p2p"].append(value.value)
    kind, count = ctypes.c_uint(), ctypes.c_uint(1)
    sample = (ctypes.c_ulonglong * 2)()  # nvmlSample_t: timeStamp, value
    code = lib.nvmlDeviceGetSamples(handles[3], 0, ctypes.c_ulonglong(0), ctypes.byref(kind),
                                    ctypes.byref(count), sample)
    out["samples"] = [code, kind.value, count.value, sample[1] & 0xFFFFFFFF]
    again = lib.nvmlDeviceGetSamples(handles[3], 0, ctypes.c_ulonglong(sample[0]),
                                     ctypes.byref(kind), ctypes.byref(count), sample)
    out["samples"].append(again)
    lib.nvmlDeviceGetAccountingMode(handles[0], ctypes.byref(value))
    out["accounting"].append(value.value)
    lib.nvmlDeviceGetAccountingBufferSize(handles[0], ctypes.byref(value))
    out["accounting"].append(value.value)
    pids = (ctypes.c_uint * 8)()
    count.value = 8
    out["accounting"] += [lib.nvmlDeviceGetAccountingPids(handles[0], ctypes.byref(count), pids),
                          count.value]
    lib.nvmlDeviceGetSupportedEventTypes.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    types = ctypes.c_ulonglong()
    lib.nvmlDeviceGetSupportedEventTypes(handles[0], ctypes.byref(types))
    out["events"] = types.value
    import pynvml as N  # what is at the far end of each of GPU 0's 18 links
    N.nvmlInit()
    h = N.nvmlDeviceGetHandleByIndex(0)
    links = N.nvmlDeviceGetFieldValues(h, [N.NVML_FI_DEV_NVLINK_LINK_COUNT])[0].value.uiVal
    out["links"] = [[N.nvmlDeviceGetNvLinkRemoteDeviceType(h, link),
                     N.nvmlDeviceGetNvLinkRemotePciInfo(h, link).busId,
                     N.nvmlDeviceGetNvLinkRemotePciInfo(h, link).pciDeviceId]
                    for link in range(links)]
    try:
        N.nvmlDeviceGetNvLinkRemotePciInfo(h, 18)
    except N.NVMLError as exc:
        out["beyond"] = type(exc).__name__
    print(json.dumps(out))
"""


def test_topology_samples_and_accounting_as_a_real_h100_gives_them(busy: Node) -> None:
    data = json.loads(run(busy, sys.executable, "-c", textwrap.dedent(TOPOLOGY)).stdout)
    # GPU 0 against 0-3: itself, then NODE (40) for a GPU on its NUMA node, SYS (50) for
    # one across the sockets, by the NUMA affinity `nvidia-smi topo -m` shows
    matrix = re.sub(r"\x1b\[[0-9;]*m", "", busy.smi("topo", "-m").stdout).split("\n")
    column = matrix[0].split("\t").index("NUMA Affinity")
    numa = [line.split("\t")[column] for line in matrix[1:5]]
    assert data["ancestor"] == [0] + [40 if n == numa[0] else 50 for n in numa[1:]]
    assert data["p2p"] == [5, 0, 0, 0]  # NVSwitch: every pair over NVLink (OK), not itself
    code, kind, count, watts = data["samples"][:4]
    draw = float(smi_rows(busy, "power.draw.instant")[3][0]) * 1000  # an idle GPU's: steady
    assert (code, kind, count) == (0, 1, 1) and abs(watts - draw) < 0.1 * draw
    assert data["samples"][4] == 6  # NVML_ERROR_NOT_FOUND: nothing newer than what it saw
    assert data["accounting"] == [0, 4000, 0, 0]  # pynvml.txt: off, 4000, []
    assert data["events"] == 65439
    # an HGX H100: each link ends at one of the baseboard's four NVSwitch chips (PCI
    # device 22a3), which take the 18 links 5, 4, 4 and 5
    assert {kind for kind, _, _ in data["links"]} == {2}  # NVML_NVLINK_DEVICE_TYPE_SWITCH
    switches = [bus for _, bus, _ in data["links"]]
    assert [switches.count(bus) for bus in dict.fromkeys(switches)] == [5, 4, 4, 5]
    assert {device_id for _, _, device_id in data["links"]} == {0x22A310DE}
    assert data["beyond"] == "NVMLError_InvalidArgument"  # link 18 of links 0-17


ROBUST = r"""
#include <nvml.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static void *reader(void *arg) {
    nvmlDevice_t d;
    unsigned int t = 0;
    nvmlDeviceGetHandleByIndex_v2(0, &d);
    *(int *)arg = nvmlDeviceGetTemperature(d, NVML_TEMPERATURE_GPU, &t) == NVML_SUCCESS && t > 0;
    return NULL;
}
int main(int argc, char **argv) {
    unsigned int count = 0, pid = (unsigned int)atoi(argv[1]);
    int before = nvmlDeviceGetCount_v2(NULL); /* UNINITIALIZED, whatever the arguments */
    for (int i = 0; i < 300; i++) { nvmlInit_v2(); nvmlShutdown(); }
    nvmlInit_v2();
    nvmlDeviceGetCount_v2(&count);
    char maps[256], line[4096];
    snprintf(maps, sizeof maps, "/proc/self/maps");
    FILE *f = fopen(maps, "r");
    int mapped = 0;
    while (f && fgets(line, sizeof line, f))
        mapped += strstr(line, "node-0.snap") != NULL;
    if (f) fclose(f);
    char name[512], small[8];
    int full = nvmlSystemGetProcessName(pid, name, sizeof name);
    int cut = nvmlSystemGetProcessName(pid, small, sizeof small);
    int empty = nvmlSystemGetProcessName(pid, small, 0);
    pthread_attr_t attr; /* a program's small thread stack: the library needs no big TLS */
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t thread;
    int read_ok = 0;
    int created = pthread_create(&thread, &attr, reader, &read_ok);
    if (created == 0) pthread_join(thread, NULL);
    nvmlDevice_t d;
    nvmlDeviceGetHandleByIndex_v2(0, &d);
    nvmlTemperature_t reading = {.version = 12345, .sensorType = NVML_TEMPERATURE_GPU};
    int version = nvmlDeviceGetTemperatureV(d, &reading);
    unsigned long long errors;
    int l1 = nvmlDeviceGetMemoryErrorCounter(d, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC,
                                             NVML_MEMORY_LOCATION_L1_CACHE, &errors);
    int dram = nvmlDeviceGetMemoryErrorCounter(d, NVML_MEMORY_ERROR_TYPE_CORRECTED,
                                               NVML_VOLATILE_ECC, NVML_MEMORY_LOCATION_DRAM,
                                               &errors);
    unsigned int mhz;
    int clock = nvmlDeviceGetClock(d, NVML_CLOCK_SM, (nvmlClockId_t)77, &mhz);
    printf("{\"before\": %d, \"count\": %u, \"mapped\": %d, \"full\": [%d, \"%s\"], "
           "\"cut\": [%d, \"%s\"], \"empty\": %d, \"thread\": [%d, %d], \"version\": %d, "
           "\"l1\": %d, \"dram\": %d, \"clock\": %d}\n", before, count, mapped, full, name, cut,
           small, empty, created, read_ok, version, l1, dram, clock);
    return 0;
}
"""


def test_the_library_holds_up_as_a_long_running_client_uses_it(tmp_path: Path) -> None:
    """What an audit of the library found, each as a client meets it: a call before init;
    init and shutdown in a loop (one mapping, not one per init); a process name longer
    than a short buffer (cut, as the driver cuts it) and one of 100 characters (whole);
    a thread with a 64 KiB stack; bad struct versions and enums; locations an H100 does
    not count ([N/A] in nvidia-smi)."""
    program = compile_c(
        tmp_path,
        "robust",
        ROBUST.replace("#include <string.h>", "#include <string.h>\n#include <stdlib.h>"),
    )
    node = Node("h100", 2)
    try:
        name = "python3 -m torch.distributed.run --nproc-per-node 8 train.py --config " + "x" * 40
        pid = node.run_process(name, 0, 20000)
        out = json.loads(run(node, str(program), str(pid)).stdout)
        listed = node.smi("--query-compute-apps=pid,process_name", "--format=csv,noheader").stdout
    finally:
        node.close()
    assert out["before"] == 1 and out["count"] == 2  # NVML_ERROR_UNINITIALIZED first
    assert out["mapped"] == 1  # 301 inits, one mapping of the node's file
    assert out["full"] == [0, name] and f"{pid}, {name}" in listed  # as nvidia-smi names it
    assert out["cut"] == [0, name[:7]] and out["empty"] == 2  # cut to the buffer; none: refused
    assert out["thread"] == [0, 1]  # created, and it read a temperature
    assert out["version"] == 25  # NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    assert (out["l1"], out["dram"], out["clock"]) == (3, 0, 2)  # NOT_SUPPORTED, 0, INVALID


def test_an_a100_without_tlimit_is_published_and_says_not_supported() -> None:
    """An A100 has no T.Limit thresholds: the shared-memory snapshot still carries it (the
    model thread once died on it, taking the daemon down), and its margin temperature is
    Not Supported, from the C library and the Python layer alike."""
    node = Node("a100-80gb", 1)
    try:
        script = textwrap.dedent("""
            import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            try:
                margin = pynvml.nvmlDeviceGetMarginTemperature(handle)
            except pynvml.NVMLError as exc:
                margin = str(exc)
            print(pynvml.nvmlDeviceGetName(handle), margin, sep="|")
        """)
        native = run(node, sys.executable, "-c", script).stdout.strip()
        assert native == "NVIDIA A100-SXM4-80GB|Not Supported"
        python_layer = fakehw("exec", "--", sys.executable, "-c", script,
                              env={**node.env, "FAKEHW_NVML": "python"})  # fmt: skip
        assert python_layer.stdout.strip() == native, python_layer.stderr
        assert "A100-SXM4-80GB" in node.smi("-L").stdout  # the same daemon still serves
    finally:
        node.close()
