"""Real clients on fake GPUs: pynvml, nvitop and gpustat under `fakehw exec`, and the exporter."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Node, wait_for
from prometheus_client.parser import text_string_to_metric_families

BIN = Path(sys.executable).parent


def run_exec(node: Node, *command: str, timeout: float = 60,
             nvml: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``fakehw exec -- command``; ``nvml``: which NVML it gets (FAKEHW_NVML), native
    libnvidia-ml.so.1 or the Python layer, else exec's own choice."""
    env = {**node.env, "PATH": f"{BIN}:{node.env['PATH']}", "COLUMNS": "79"}
    if nvml is not None:
        env["FAKEHW_NVML"] = nvml
    return subprocess.run(
        [sys.executable, "-m", "fakehw", "exec", "--", *command],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def pynvml(node: Node, code: str, nvml: str) -> object:
    """Run a pynvml script under fakehw exec; it prints one JSON document."""
    result = run_exec(node, sys.executable, "-c", textwrap.dedent(code), nvml=nvml)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(params=["native", "python"])
def nvml(request: pytest.FixtureRequest) -> str:
    """Each NVML client test runs on both implementations: the C library and the Python
    layer it falls back to."""
    return str(request.param)


@pytest.fixture(scope="module")
def busy() -> Iterator[Node]:
    node = Node("h100", 4).training_on({1: 46608, 2: 30000})
    yield node
    node.close()


def test_pynvml_reads_the_fake_gpus_as_nvidia_smi_does(busy: Node, nvml: str) -> None:
    data = pynvml(busy, """
        import json, pynvml as N
        N.nvmlInit()
        out = {"count": N.nvmlDeviceGetCount(), "driver": N.nvmlSystemGetDriverVersion(),
               "cuda": N.nvmlSystemGetCudaDriverVersion(), "gpus": []}
        for i in range(out["count"]):
            h = N.nvmlDeviceGetHandleByIndex(i)
            m = N.nvmlDeviceGetMemoryInfo(h, version=N.nvmlMemory_v2)
            pci = N.nvmlDeviceGetPciInfo(h)
            out["gpus"].append({
                "name": N.nvmlDeviceGetName(h), "uuid": N.nvmlDeviceGetUUID(h),
                "serial": N.nvmlDeviceGetSerial(h), "bus_id": pci.busId,
                "index": N.nvmlDeviceGetIndex(h), "used_mib": m.used // 2**20,
                "total_mib": m.total // 2**20, "limit_mw": N.nvmlDeviceGetEnforcedPowerLimit(h),
                "max_sm": N.nvmlDeviceGetMaxClockInfo(h, N.NVML_CLOCK_SM),
                "cc": N.nvmlDeviceGetCudaComputeCapability(h),
                "procs": [[p.pid, p.usedGpuMemory // 2**20]
                          for p in N.nvmlDeviceGetComputeRunningProcesses(h)],
                "by_uuid": N.nvmlDeviceGetIndex(
                    N.nvmlDeviceGetHandleByUUID(N.nvmlDeviceGetUUID(h))),
                "by_bus": N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByPciBusId(pci.busId)),
            })
        N.nvmlShutdown()
        print(json.dumps(out))
    """, nvml)  # fmt: skip
    assert isinstance(data, dict)
    assert data["count"] == 4 and data["driver"] == "580.159.04" and data["cuda"] == 13000
    fields = "name,uuid,serial,pci.bus_id,memory.used,memory.total,enforced.power.limit,"
    smi = busy.smi(f"--query-gpu={fields}clocks.max.sm", "--format=csv,noheader,nounits")
    for gpu, line in zip(data["gpus"], smi.stdout.splitlines(), strict=True):
        name, uuid, serial, bus, used, total, limit, max_sm = line.split(", ")
        assert (gpu["name"], gpu["uuid"], gpu["serial"], gpu["bus_id"]) == (name, uuid, serial, bus)
        assert gpu["used_mib"] == int(used) and gpu["total_mib"] == int(total)
        assert gpu["limit_mw"] == round(float(limit) * 1000) and gpu["max_sm"] == int(max_sm)
        assert gpu["cc"] == [9, 0]
        assert gpu["by_uuid"] == gpu["index"] == gpu["by_bus"]
    pids = [child.pid for child in busy.children]
    assert data["gpus"][1]["procs"] == [[pids[0], 46608]]
    assert data["gpus"][2]["procs"] == [[pids[1], 30000]]
    assert data["gpus"][0]["procs"] == []


def test_pynvml_refuses_what_a_real_h100_refuses(busy: Node, nvml: str) -> None:
    data = pynvml(busy, """
        import json, pynvml as N
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        out = {}
        for name, call in [("fan", lambda: N.nvmlDeviceGetFanSpeed(h)),
                           ("driver_model", lambda: N.nvmlDeviceGetCurrentDriverModel(h)),
                           ("gpu_instance", lambda: N.nvmlDeviceGetGpuInstanceId(h)),
                           ("bad_index", lambda: N.nvmlDeviceGetHandleByIndex(9)),
                           # the real 580 driver has no such symbol either (pynvml.txt)
                           ("unknown_call", lambda: N.nvmlDeviceGetBBXTimeData_v1(h)),
                           ("bad_uuid", lambda: N.nvmlDeviceGetHandleByUUID("GPU-nope"))]:
            try:
                call()
                out[name] = "no error"
            except N.NVMLError as exc:
                out[name] = type(exc).__name__
        print(json.dumps(out))
    """, nvml)  # fmt: skip
    assert data == {
        "fan": "NVMLError_NotSupported",
        "driver_model": "NVMLError_NotSupported",
        "gpu_instance": "NVMLError_InvalidArgument",
        "bad_index": "NVMLError_InvalidArgument",
        "unknown_call": "NVMLError_FunctionNotFound",
        "bad_uuid": "NVMLError_NotFound",
    }


def test_calls_before_init_are_uninitialized(busy: Node, nvml: str) -> None:
    data = pynvml(
        busy,
        """
        import json, pynvml as N
        try:
            N.nvmlDeviceGetCount()
            print(json.dumps("no error"))
        except N.NVMLError as exc:
            print(json.dumps(type(exc).__name__))
    """,
        nvml,
    )
    assert data in ("NVMLError_Uninitialized", "NVMLError_LibraryNotFound")


def test_real_gpustat_runs_on_the_fake_gpus(busy: Node, nvml: str) -> None:
    plain = run_exec(busy, "gpustat", nvml=nvml)
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 5 and lines[0].endswith("580.159.04")
    assert re.match(r"\[1\] NVIDIA H100 80GB HBM3 \|\s*\d+°C, +\d+ % \| +46617 / 81559 MB \|",
                    lines[2])  # fmt: skip
    detailed = run_exec(busy, "gpustat", "-cpu", nvml=nvml)
    pid = busy.children[0].pid
    assert re.search(rf"root:python3?[\d.]*/{pid}\(46608M\)", detailed.stdout), detailed.stdout
    document = json.loads(run_exec(busy, "gpustat", "--json", nvml=nvml).stdout)
    assert [g["memory.used"] for g in document["gpus"]][1:3] == [46617, 30009]
    assert document["gpus"][1]["processes"][0]["pid"] == pid


def test_real_nvitop_runs_on_the_fake_gpus(busy: Node, nvml: str) -> None:
    result = run_exec(busy, "nvitop", "-1", nvml=nvml)
    assert result.returncode == 0, result.stderr  # no NVML function it needs is missing
    assert "ERROR" not in result.stderr
    text = result.stdout
    assert "NVITOP 1.7" in text and "Driver Version: 580.159.04" in text
    assert text.count("H100 80GB HBM3") == 4
    for child in busy.children:
        assert re.search(rf"│ +\d +{child.pid} C ", text), text
    assert "45.52GiB" in text  # the rank holding 46608 MiB


def test_real_nvitop_live_mode(busy: Node, nvml: str, tmux) -> None:  # type: ignore[no-untyped-def]
    command = (f"FAKEHW_NVML={nvml} FAKEHW_RUNTIME_DIR={busy.runtime} PATH={BIN}:$PATH "
               f"{sys.executable} -m fakehw "
               "exec -- nvitop; echo EXIT=$?")  # fmt: skip
    tmux("send-keys", "-t", "t", command, "Enter")
    pid = busy.children[0].pid
    wait_for(lambda: str(pid) in tmux("capture-pane", "-p", "-t", "t"), timeout=30)
    tmux("send-keys", "-t", "t", "q")
    wait_for(lambda: re.search(r"^EXIT=0", tmux("capture-pane", "-p", "-t", "t"), re.M),
             timeout=20)  # fmt: skip


BEYOND_THE_BASICS = """
    import json, pynvml as N
    N.nvmlInit()
    handles = [N.nvmlDeviceGetHandleByIndex(i) for i in range(N.nvmlDeviceGetCount())]
    h = handles[0]

    def answer(call, *args):
        try:
            result = call(*args)
        except N.NVMLError as exc:
            return type(exc).__name__
        return result.decode() if isinstance(result, bytes) else result

    clocks = N.nvmlDeviceGetSupportedGraphicsClocks(h, 2619)
    print(json.dumps({
        "bus": answer(N.nvmlDeviceGetBusType, h),
        "pcie_max": answer(N.nvmlDeviceGetPcieLinkMaxSpeed, h),
        "checksum": answer(N.nvmlDeviceGetInforomConfigurationChecksum, h),
        "accounting": [answer(N.nvmlDeviceGetAccountingMode, h),
                       answer(N.nvmlDeviceGetAccountingBufferSize, h),
                       answer(N.nvmlDeviceGetAccountingPids, h)],
        "c2c": N.nvmlDeviceGetC2cModeInfoV(h).isC2cEnabled,
        "inforom": [answer(N.nvmlDeviceGetInforomVersion, h, kind) for kind in (0, 1, 2, 9)],
        "clocks": [len(clocks), clocks[0], clocks[-1]],
        "clocks_other_memory": answer(N.nvmlDeviceGetSupportedGraphicsClocks, h, 1000),
        "gsp": [answer(N.nvmlDeviceGetGspFirmwareMode, h),
                answer(N.nvmlDeviceGetGspFirmwareVersion, h)],
        "pstates": answer(N.nvmlDeviceGetSupportedPerformanceStates, h),
        "events": answer(N.nvmlDeviceGetSupportedEventTypes, h),
        "ancestor": [answer(N.nvmlDeviceGetTopologyCommonAncestor, h, b) for b in handles],
        "p2p": [[answer(N.nvmlDeviceGetP2PStatus, h, b, i) for i in range(5)]
                for b in handles],
        "links": [[answer(N.nvmlDeviceGetNvLinkRemoteDeviceType, h, link),
                   N.nvmlDeviceGetNvLinkRemotePciInfo(h, link).busId]
                  for link in range(18)],
        "beyond": answer(N.nvmlDeviceGetNvLinkRemoteDeviceType, h, 18),
        "samples": [[kind, [s.sampleValue.uiVal for s in samples]]
                    for kind, samples in [N.nvmlDeviceGetSamples(h, 6, 0)]],  # memory clock
        "sample_kind": answer(N.nvmlDeviceGetSamples, h, 99, 0),
    }))
"""


def test_both_implementations_answer_what_real_clients_ask_beyond_the_basics(
    busy: Node,
) -> None:
    """The Python layer, the fallback, answers these as libnvidia-ml.so.1 does, from the
    same records; the figures are a real H100's (pynvml.txt) where it has them."""
    native = pynvml(busy, BEYOND_THE_BASICS, "native")
    python = pynvml(busy, BEYOND_THE_BASICS, "python")
    assert python == native
    assert isinstance(native, dict)
    # tests/real/h100/static/pynvml.txt: PCIe, 32 GT/s (5), accounting off with a 4000
    # buffer and no PIDs, no C2C link, GSP firmware on; P2 then P0 of the performance states
    assert native["bus"] == 2 and native["pcie_max"] == 5 and native["c2c"] == 0
    assert native["accounting"] == [0, 4000, []]
    assert native["gsp"] == [[1, 1], "580.159.04"]
    assert native["pstates"] == [2, 0]
    assert native["inforom"][2:] == ["NVMLError_NotSupported", "NVMLError_InvalidArgument"]
    # every 15 MHz from 1980 down to the idle clock, for each supported memory clock
    assert native["clocks"] == [(1980 - 345) // 15 + 1, 1980, 345]
    assert native["clocks_other_memory"] == "NVMLError_NotFound"
    assert native["beyond"] == "NVMLError_InvalidArgument"
    assert native["samples"] == [[1, [2619]]]  # an unsigned int: the memory clock now
    assert native["sample_kind"] == "NVMLError_NotSupported"


SETTER = """
    import json, sys, pynvml as N
    N.nvmlInit()
    h = N.nvmlDeviceGetHandleByIndex(%d)
    try:
        %s
        print(json.dumps("ok"))
    except N.NVMLError as exc:
        print(json.dumps(type(exc).__name__))
"""


def set_through_nvml(node: Node, nvml: str, gpu: int, call: str) -> object:
    """``call`` (pynvml, on GPU ``gpu``'s handle ``h``) under fakehw exec: "ok" or the
    pynvml error it raised."""
    return pynvml(node, SETTER % (gpu, call), nvml)


def smi_rows(node: Node, fields: str) -> list[list[str]]:
    out = node.smi(f"--query-gpu={fields}", "--format=csv,noheader,nounits").stdout
    return [line.split(", ") for line in out.splitlines()]


def smi_value(node: Node, field: str, gpu: int) -> float:
    return float(smi_rows(node, field)[gpu][0])


@pytest.mark.skipif(os.geteuid() != 0, reason="the driver lets only root use its setters")
def test_setters_act_on_the_model_as_on_a_real_gpu(nvml: str) -> None:
    node = Node("h100", 2).training_on({1: 30000})
    try:
        # nvmlDeviceSetPowerManagementLimit: below the board's 200 W floor refused, nothing
        # changed; 450 W taken, and the model caps the GPU there (power.draw: a 1 s average)
        assert (
            set_through_nvml(node, nvml, 1, "N.nvmlDeviceSetPowerManagementLimit(h, 100000)")
            == "NVMLError_InvalidArgument"
        )
        clock_at_cap = smi_value(node, "clocks.sm", 1)
        assert (
            set_through_nvml(node, nvml, 1, "N.nvmlDeviceSetPowerManagementLimit(h, 450000)")
            == "ok"
        )
        assert smi_rows(node, "power.limit,enforced.power.limit") == [
            ["700.00", "700.00"], ["450.00", "450.00"]]  # fmt: skip
        wait_for(lambda: smi_value(node, "power.draw", 1) < 455, timeout=30)
        assert smi_value(node, "clocks.sm", 1) < 0.95 * clock_at_cap  # fewer watts, lower clock
        assert (
            set_through_nvml(node, nvml, 1, "N.nvmlDeviceSetPowerManagementLimit(h, 700000)")
            == "ok"
        )
        wait_for(lambda: smi_value(node, "power.draw", 1) > 650, timeout=30)

        # nvmlDeviceSetGpuLockedClocks: at 1200 MHz the same work draws well under the cap
        assert (
            set_through_nvml(node, nvml, 1, "N.nvmlDeviceSetGpuLockedClocks(h, 1200, 1200)") == "ok"
        )
        wait_for(lambda: smi_value(node, "clocks.sm", 1) <= 1200, timeout=10)
        wait_for(lambda: smi_value(node, "power.draw", 1) < 600, timeout=20)
        assert (
            set_through_nvml(node, nvml, 1, "N.nvmlDeviceSetGpuLockedClocks(h, 0, 5000)")
            == "NVMLError_InvalidArgument"
        )  # above the GPU's 1980 MHz
        assert set_through_nvml(node, nvml, 1, "N.nvmlDeviceResetGpuLockedClocks(h)") == "ok"
        wait_for(lambda: smi_value(node, "power.draw", 1) > 650, timeout=20)

        # nvmlDeviceSetMemoryLockedClocks: the supported memory clocks are 2619 and 1593 MHz
        assert (
            set_through_nvml(node, nvml, 1, "N.nvmlDeviceSetMemoryLockedClocks(h, 0, 2000)") == "ok"
        )
        assert smi_rows(node, "clocks.mem,clocks.max.mem") == [["2619", "2619"],
                                                               ["1593", "2619"]]  # fmt: skip
        clocks = node.smi("-q", "-i", "1", "-d", "CLOCK").stdout.split("    Max Clocks")[0]
        assert re.search(r"\n        Memory +: 1593 MHz\n", clocks)  # nvidia-smi -q: Clocks
        assert (
            set_through_nvml(node, nvml, 1, "N.nvmlDeviceSetMemoryLockedClocks(h, 0, 1000)")
            == "NVMLError_InvalidArgument"
        )  # below the lowest supported clock
        assert set_through_nvml(node, nvml, 1, "N.nvmlDeviceResetMemoryLockedClocks(h)") == "ok"
        assert smi_rows(node, "clocks.mem")[1] == ["2619"]

        # nvmlDeviceSetPersistenceMode: the table's Persistence-M column, -q and NVML follow
        assert set_through_nvml(node, nvml, 0, "N.nvmlDeviceSetPersistenceMode(h, 0)") == "ok"
        assert smi_rows(node, "persistence_mode") == [["Disabled"], ["Enabled"]]
        rows = [line for line in node.smi().stdout.splitlines() if "NVIDIA H100" in line]
        assert [row.split("|")[1].split()[-1] for row in rows] == ["Off", "On"]
        assert pynvml(
            node,
            """
            import json, pynvml as N
            N.nvmlInit()
            print(json.dumps([N.nvmlDeviceGetPersistenceMode(N.nvmlDeviceGetHandleByIndex(i))
                              for i in range(2)]))
        """,
            nvml,
        ) == [0, 1]
        assert (
            set_through_nvml(node, nvml, 0, "N.nvmlDeviceSetPersistenceMode(h, 7)")
            == "NVMLError_InvalidArgument"
        )
        assert set_through_nvml(node, nvml, 0, "N.nvmlDeviceSetPersistenceMode(h, 1)") == "ok"
        assert smi_rows(node, "persistence_mode") == [["Enabled"], ["Enabled"]]
    finally:
        node.close()


SETTERS = (
    "N.nvmlDeviceSetPowerManagementLimit(h, 450000)",
    "N.nvmlDeviceSetGpuLockedClocks(h, 1200, 1200)",
    "N.nvmlDeviceResetGpuLockedClocks(h)",
    "N.nvmlDeviceSetMemoryLockedClocks(h, 1593, 1593)",
    "N.nvmlDeviceResetMemoryLockedClocks(h)",
    "N.nvmlDeviceSetPersistenceMode(h, 0)",
)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root to run the daemon and its client as another user",
)
def test_a_caller_who_is_not_root_is_refused_and_nothing_changes(nvml: str, tmp_path: Path) -> None:
    """As the driver: every setter answers NVML_ERROR_NO_PERMISSION to a user who is
    not root. The daemon and its client run as ``nobody`` in a directory of theirs."""
    runtime = Path(tempfile.mkdtemp(prefix="fhw-nobody-", dir="/tmp"))  # in /tmp: theirs to reach
    os.chown(runtime, 65534, 65534)
    # nobody's uid, with root's right to read and run files kept (this machine's Python
    # lives under /root): what the driver checks is the caller's effective uid
    reach = "+dac_override,+dac_read_search"
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    as_nobody = [*nobody, f"--inh-caps={reach}", f"--ambient-caps={reach}"]
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime), "HOME": str(runtime),
           "PATH": f"{BIN}:{os.environ['PATH']}", "FAKEHW_NVML": nvml,
           "XDG_CONFIG_HOME": str(runtime), "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_nobody, *command], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip

    # a config file the user may not read: said in one line, not a traceback
    private = tmp_path / "private"
    (private / "fakehw").mkdir(parents=True)
    (private / "fakehw" / "config.toml").write_text("[cluster]\n")
    private.chmod(0o700)
    refused = subprocess.run([*nobody, sys.executable, "-m", "fakehw", "daemon", "start"],
                             env={**env, "XDG_CONFIG_HOME": str(private)}, capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"cannot read config file {private}/fakehw/config.toml: Permission denied" in (
        refused.stderr
    )
    started = run(sys.executable, "-m", "fakehw", "daemon", "start", "--gpus-per-node", "2")
    assert started.returncode == 0, started.stderr
    try:
        before = run(sys.executable, "-m", "fakehw.smi", "--query-gpu=power.limit,clocks.mem,"
                     "persistence_mode", "--format=csv,noheader").stdout  # fmt: skip
        assert before.splitlines() == ["700.00 W, 2619 MHz, Enabled"] * 2
        answers = []
        for call in SETTERS:
            # (through env: exec looks for a command with access(), which knows only nobody)
            done = run(sys.executable, "-m", "fakehw", "exec", "--", "env", sys.executable, "-c",
                       textwrap.dedent(SETTER % (1, call)))  # fmt: skip
            assert done.returncode == 0, done.stderr
            answers.append(json.loads(done.stdout))
        assert answers == ["NVMLError_NoPermission"] * len(SETTERS)
        after = run(sys.executable, "-m", "fakehw.smi", "--query-gpu=power.limit,clocks.mem,"
                    "persistence_mode", "--format=csv,noheader").stdout  # fmt: skip
        assert after == before
    finally:
        run(sys.executable, "-m", "fakehw", "daemon", "stop")
        shutil.rmtree(runtime, ignore_errors=True)


def test_nvidia_smi_on_path_is_the_fake_one(busy: Node) -> None:
    result = run_exec(busy, "nvidia-smi", "-L")
    assert result.returncode == 0
    assert result.stdout.count("NVIDIA H100 80GB HBM3") == 4


# ------------------------------------------------------------------ exporter
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def exporter(busy: Node) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fakehw", "exporter", "--listen", f"127.0.0.1:{port}",
         "--host-label", "both"],
        env=busy.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"

    def up() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            return False

    wait_for(up, timeout=20)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_exporter_serves_dcgm_metrics(exporter: str, busy: Node) -> None:
    with urllib.request.urlopen(exporter, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "DCGM_FI_DEV_GPU_UTIL": "gauge", "DCGM_FI_DEV_FB_USED": "gauge",
        "DCGM_FI_DEV_FB_FREE": "gauge", "DCGM_FI_DEV_POWER_USAGE": "gauge",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "counter", "DCGM_FI_DEV_GPU_TEMP": "gauge",
        "DCGM_FI_DEV_MEMORY_TEMP": "gauge", "DCGM_FI_DEV_SM_CLOCK": "gauge",
        "DCGM_FI_DEV_MEM_CLOCK": "gauge", "DCGM_FI_DEV_XID_ERRORS": "gauge",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "gauge", "DCGM_FI_PROF_DRAM_ACTIVE": "gauge",
    }  # fmt: skip
    for name, kind in expected.items():
        assert families[name].type == kind, name
        assert len(families[name].samples) == 4, name
    # dcgm-exporter's own text: counters keep their name, HELP as in default-counters.csv
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter" in text
    assert "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz)." in text
    sample = next(s for s in families["DCGM_FI_DEV_FB_USED"].samples if s.labels["gpu"] == "1")
    assert sample.value == 46617
    assert set(sample.labels) == {"gpu", "UUID", "pci_bus_id", "device", "modelName",
                                  "Hostname", "hostname", "DCGM_FI_DRIVER_VERSION"}  # fmt: skip
    assert sample.labels["device"] == "nvidia1"
    assert sample.labels["modelName"] == "NVIDIA H100 80GB HBM3"
    assert sample.labels["Hostname"] == sample.labels["hostname"] == "dgx-h100-01"
    util = next(s for s in families["DCGM_FI_DEV_GPU_UTIL"].samples if s.labels["gpu"] == "1")
    assert util.value >= 90
    smi = busy.smi("-i", "1", "--query-gpu=uuid", "--format=csv,noheader")
    assert sample.labels["UUID"] == smi.stdout.strip()


def test_exporter_energy_counter_grows(exporter: str) -> None:
    def energy() -> float:
        with urllib.request.urlopen(exporter, timeout=5) as response:
            text = response.read().decode()
        family = next(f for f in text_string_to_metric_families(text)
                      if f.name == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")  # fmt: skip
        return sum(s.value for s in family.samples)

    first = energy()
    assert wait_for(lambda: energy() > first, timeout=5)


def test_grafana_dashboard_queries_served_metrics() -> None:
    dashboard = json.loads((Path(__file__).parents[1] / "docs" / "grafana-dashboard.json")
                           .read_text())  # fmt: skip
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert expressions
    from fakehw.dcgm import counters

    served = {c.field for c in counters.load() if c.kind != "label"}
    for expression in expressions:
        used = set(re.findall(r"DCGM_[A-Z0-9_]+", expression))
        assert used and used <= served, expression


def test_the_coverage_document_lists_exactly_what_each_implementation_answers() -> None:
    from fakehw.nvml.coverage import DOCUMENT, document, native_functions, python_functions

    assert DOCUMENT.read_text() == document(), "regenerate: python -m fakehw.nvml.coverage"
    rows = re.findall(r"^\| `(nvml\w+)` \| (yes|) \| (yes|) \|$", DOCUMENT.read_text(), re.M)
    assert sorted(n for n, native, _ in rows if native) == native_functions()
    assert sorted(n for n, _, python in rows if python) == python_functions()
    # the source's list is the library's: every name it exports, and no other
    from fakehw.nvml import native_directory

    directory = native_directory()
    if directory is not None:
        symbols = subprocess.run(["nm", "-D", "--defined-only", f"{directory}/libnvidia-ml.so.1"],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        exported = sorted(line.split()[2] for line in symbols.splitlines()
                          if line.split()[1] == "T")  # fmt: skip
        assert exported == native_functions()
    # everything the Python layer answers, the library answers too
    assert set(python_functions()) <= set(native_functions())
