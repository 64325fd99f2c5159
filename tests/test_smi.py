"""fake-nvidia-smi against the real nvidia-smi 580 captures, mode by mode.

Each fake node is set up like the captured machine (1 x H100, 2 x H200, the
same memory in use, processes of the same names) so outputs can be compared
line by line. What legitimately differs is masked: the date, UUIDs, bus ids,
PIDs and the digits of live sensors; line lengths and column positions never.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import REAL, Node, alive

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "bin" / "fake-nvidia-smi"


def capture(path: str) -> tuple[list[str], int | None]:
    """A real capture's output lines (without "$ command" and "[exit N]") and exit code."""
    lines = (REAL / path).read_text().splitlines()
    if lines and lines[0].startswith("$ "):
        lines = lines[1:]
    code = None
    if lines and lines[-1].startswith("[exit "):
        code = int(lines[-1][6:-1])
        lines = lines[:-1]
    return lines, code


MASKS = [
    (re.compile(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"), "DATE"),
    (re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}"), "TIMESTAMP"),
    (re.compile(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "UUID"),
    (re.compile(r"[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.\d"), "BUSID"),
    (re.compile(r"\d+"), "#"),
]


def structure(lines: list[str]) -> list[str]:
    """-q lines with values blanked (and bus ids, which name the GPU sections, masked)."""
    return [MASKS[3][0].sub("BUSID", re.sub(r"(:\s).*$", r"\1", line)) for line in lines]


def shape(line: str) -> str:
    for pattern, replacement in MASKS:
        line = pattern.sub(replacement, line)
    return re.sub(r"\s+", " ", line)


def assert_same_layout(real: list[str], fake: list[str]) -> None:
    assert len(fake) == len(real), "\n".join(fake)
    for number, (want, got) in enumerate(zip(real, fake, strict=True)):
        assert shape(got) == shape(want), f"line {number}:\n{want}\n{got}"
        assert len(got) == len(want), f"line {number} width:\n{want}\n{got}"
        rules = [i for i, ch in enumerate(want) if ch in "|+"]
        assert [i for i, ch in enumerate(got) if ch in "|+"] == rules, f"line {number}"


# ---------------------------------------------------------------- tables
def test_idle_table_h100(h100: Node) -> None:
    real, code = capture("h100/static/default.txt")
    result = h100.smi()
    assert result.returncode == code == 0
    assert_same_layout(real, result.stdout.splitlines())
    assert "|   0  NVIDIA H100 80GB HBM3          On  |" in result.stdout
    assert "/  700W |       0MiB /  81559MiB |      0%      Default |" in result.stdout


def test_idle_table_two_h200(h200x2: Node) -> None:
    real, _ = capture("h200x2/static/default.txt")
    result = h200x2.smi()
    assert_same_layout(real, result.stdout.splitlines())
    assert result.stdout.count("NVIDIA H200                    On") == 2


def test_busy_tables_show_the_attached_processes(busy_h100: Node, busy_h200x2: Node) -> None:
    pid = busy_h100.children[0].pid
    real, _ = capture("h100/load/default_busy.txt")
    fake = busy_h100.smi().stdout.splitlines()
    assert_same_layout(real, fake)
    assert f"|    0   N/A  N/A {pid:>15}      C   python3" in "\n".join(fake)
    assert "|   46617MiB /  81559MiB |    100%      Default |" in "\n".join(fake)
    real, _ = capture("h200x2/load/default_busy.txt")
    fake = busy_h200x2.smi().stdout.splitlines()
    assert_same_layout(real, fake)
    assert fake[-3].endswith("   /opt/torch/.venv/bin/python           52806MiB |")


def test_table_of_one_gpu_and_of_a_missing_one(h200x2: Node) -> None:
    real, _ = capture("h200x2/static/i0.txt")
    assert_same_layout(real, h200x2.smi("-i", "0").stdout.splitlines())
    real, _ = capture("h100/static/i9.txt")
    result = h200x2.smi("-i", "9")
    assert result.returncode == 6
    assert result.stdout.splitlines() == real


def test_gpus_are_found_by_index_uuid_and_bus_id(h200x2: Node) -> None:
    listed = h200x2.smi("-L").stdout.splitlines()
    uuid = re.search(r"UUID: (GPU-[^)]+)", listed[1])
    assert uuid is not None
    bus = h200x2.smi("--query-gpu=pci.bus_id", "--format=csv,noheader", "-i", "1").stdout.strip()
    for ident in ("1", uuid.group(1), bus, bus[4:], bus.lower()):
        result = h200x2.smi("--query-gpu=index", "--format=csv,noheader", "-i", ident)
        assert result.stdout == "1\n", ident
    both = h200x2.smi("--query-gpu=index", "--format=csv,noheader", "-i", f"1,{uuid.group(1)[:12]}")
    assert both.stdout == "1\n"
    assert h200x2.smi("--query-gpu=index", "--format=csv,noheader", "-i", "0,1").stdout == "0\n1\n"


def test_loop_repeats_the_table(h200x2: Node) -> None:
    real, _ = capture("h200x2/static/l1.txt")
    frames = loop_output(h200x2, ["-l", "1"], seconds=2.6)
    tables = [t for t in frames.split("+\n") if t]
    per_table = len(capture("h200x2/static/default.txt")[0])
    assert frames.count("NVIDIA-SMI 580.159.04") >= 3
    assert_same_layout(real[:per_table], frames.splitlines()[:per_table])
    assert len(tables) >= 3


def loop_output(node: Node, args: list[str], seconds: float, sig: int = signal.SIGINT) -> str:
    process = subprocess.Popen(
        [sys.executable, str(LAUNCHER), *args],
        env=node.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(seconds)
    process.send_signal(sig)
    out, err = process.communicate(timeout=10)
    assert "Traceback" not in err
    assert process.returncode == (130 if sig == signal.SIGINT else 143)
    return out


# ---------------------------------------------------------------- queries
def test_query_gpu_with_units_and_repeats(h100: Node) -> None:
    real, _ = capture("h100/static/query_l1.txt")
    names = ",".join(re.sub(r" \[.*\]$", "", c) for c in real[0].split(", "))
    out = loop_output(h100, [f"--query-gpu={names}", "--format=csv", "-l", "1"], seconds=2.5)
    lines = out.splitlines()
    assert lines[0] == real[0]
    assert len(lines) >= 3 and all(shape(line) == shape(real[1]) for line in lines[1:])


def test_query_missing_format_is_csv(h100: Node) -> None:
    real, code = capture("h100/static/noformat.txt")
    result = h100.smi("--query-gpu=name")
    assert (result.stdout.splitlines(), result.returncode) == (real, code)


@pytest.mark.parametrize("interval_ms", [100, 50])  # 50: faster than the model ticks
def test_query_lms_keeps_up(h100: Node, interval_ms: int) -> None:
    """Every row is stamped when it was asked for, as the real tool stamps its queries
    (tests/real/h100/load/trace.csv: 2,854 rows at -lms 100, no timestamp twice), even
    when the values have not changed since the row before."""
    args = ["--query-gpu=timestamp", "--format=csv,noheader", "-lms", str(interval_ms)]
    out = loop_output(h100, args, 2.2)
    stamps = [time.mktime(time.strptime(s[:19], "%Y/%m/%d %H:%M:%S")) + float(s[19:])
              for s in out.splitlines()]  # fmt: skip
    assert len(stamps) >= 1000 / interval_ms + 5  # ~2200 / interval_ms in 2.2 s
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
    period = interval_ms / 1000
    assert 0.8 * period <= gaps[len(gaps) // 2] <= 1.2 * period, gaps  # the cadence holds
    assert gaps[0] > 0 and gaps[-1] < 0.5, gaps  # in order, no timestamp twice, no stall


def test_query_compute_apps(h200x2: Node, busy_h100: Node) -> None:
    real, _ = capture("h100/static/apps_idle.txt")
    idle = h200x2.smi("--query-compute-apps=pid,process_name,used_memory", "--format=csv")
    assert idle.stdout.splitlines() == real
    busy, _ = capture("h100/load/apps_busy.txt")
    result = busy_h100.smi("--query-compute-apps=pid,process_name,used_memory", "--format=csv")
    lines = result.stdout.splitlines()
    assert lines[0] == busy[0]
    assert lines[1:] == [f"{busy_h100.children[0].pid}, python3, 46608 MiB"]
    bare = busy_h100.smi(
        "--query-compute-apps=gpu_uuid,pid,used_gpu_memory", "--format=csv,noheader,nounits"
    )
    assert re.fullmatch(r"GPU-[0-9a-f-]{36}, \d+, 46608\n", bare.stdout)


# ---------------------------------------------------------- -q, -d, -x
def test_detailed_report_h100(busy_h100: Node) -> None:
    real, _ = capture("h100/static/q.txt")
    fake = structure(busy_h100.smi("-q").stdout.splitlines())
    want = structure(real)
    processes = want.index("    Processes                                          : ")
    assert fake[:processes] == want[:processes]
    # A running process gets its own block, then the report goes on as the real one.
    assert fake[processes : processes + 7] == [
        "    Processes",
        "        GPU instance ID                                : ",
        "        Compute instance ID                            : ",
        "        Process ID                                     : ",
        "            Type                                       : ",
        "            Name                                       : ",
        "            Used GPU Memory                            : ",
    ]
    assert fake[processes + 7 :] == want[processes + 1 :]


def test_detailed_report_two_idle_h200_with_fabric(h200x2: Node) -> None:
    real, code = capture("h200x2/static/q.txt")
    result = h200x2.smi("-q")
    assert result.returncode == code
    fake = result.stdout.splitlines()
    assert structure(fake) == structure(real)
    assert fake.count(f"{'        State':<55}: Completed") == 2
    assert fake.count(f"{'    Product Name':<55}: NVIDIA H200") == 2


def test_display_sections(h100: Node) -> None:
    real, _ = capture("h100/static/qd.txt")
    result = h100.smi("-q", "-d", "MEMORY,UTILIZATION,TEMPERATURE,POWER,CLOCK,PERFORMANCE,PIDS")
    fake = structure(result.stdout.splitlines())
    want = structure(real)
    processes = want.index("    Processes                                          : ")
    assert fake[:processes] == want[:processes]
    text = result.stdout
    assert re.search(
        r"GPU Utilization Samples\n\s+Duration\s+: \d+\.\d\d sec\n\s+Number of Samples\s+: \d+",
        text,
    )
    assert re.search(
        r"Power Samples\n\s+Duration\s+: \d\.\d\d sec\n(.*\n){3}\s+Avg\s+: \d+\.\d\d W", text
    )
    assert (
        "SM Clock Samples\n        Duration                                       : Not Found"
        in text
    )


def test_xml_report_has_the_real_structure(h200x2: Node) -> None:
    real, _ = capture("h200x2/static/qx.txt")
    fake = h200x2.smi("-q", "-x").stdout
    tags = [MASKS[3][0].sub("BUSID", re.sub(r">[^<]*<", "><", line)) for line in real]
    got = [MASKS[3][0].sub("BUSID", re.sub(r">[^<]*<", "><", line)) for line in fake.splitlines()]
    assert got == tags
    assert fake.startswith(
        '<?xml version="1.0" ?>\n<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v13.dtd">\n'
    )
    root = ET.fromstring(fake.split("\n", 2)[2])
    assert root.tag == "nvidia_smi_log" and len(root.findall("gpu")) == 2
    assert root.findtext("gpu/fabric/state") == "Completed"


def test_xml_report_lists_processes(busy_h100: Node) -> None:
    root = ET.fromstring(busy_h100.smi("-q", "-x").stdout.split("\n", 2)[2])
    info = root.find("gpu/processes/process_info")
    assert info is not None
    assert info.findtext("process_name") == "python3"
    assert info.findtext("used_memory") == "46608 MiB"


# -------------------------------------------------------------- monitors
def test_dmon_default_and_all_groups(h100: Node) -> None:
    for capture_name, args in (
        ("dmon_idle", ["-c", "3"]),
        ("dmon_all_idle", ["-s", "pucvmet", "-c", "2"]),
    ):
        real, code = capture(f"h100/static/{capture_name}.txt")
        result = h100.smi("dmon", *args)
        assert result.returncode == code == 0
        fake = result.stdout.splitlines()
        assert fake[:2] == real[:2]
        assert len(fake) == len(real)
        assert all(len(line) == len(real[2]) for line in fake[2:])


def test_dmon_with_time_matches_the_trace_header(h100: Node) -> None:
    real = (REAL / "h100/load/dmon_trace.txt").read_text().splitlines()
    fake = h100.smi("dmon", "-s", "pucm", "-o", "T", "-c", "2").stdout.splitlines()
    assert fake[:2] == real[:2]
    assert re.fullmatch(r" \d\d:\d\d:\d\d       0 .*", fake[2])
    assert len(fake[2]) == len(real[2])


def test_pmon_idle_and_busy(h200x2: Node, busy_h200x2: Node) -> None:
    real, code = capture("h200x2/static/pmon_idle.txt")
    result = h200x2.smi("pmon", "-c", "2")
    assert result.returncode == code and result.stdout.splitlines() == real
    busy = (REAL / "h200x2/load/pmon_busy.txt").read_text().splitlines()
    fake = busy_h200x2.smi("pmon", "-c", "1").stdout.splitlines()
    assert fake[:2] == busy[:2]
    for line in fake[2:]:
        assert re.fullmatch(
            r"    [01] +\d+     C     \d\d     \d\d      -      -      -      -    python         ",
            line,
        )


def test_topology_of_two_h200(h200x2: Node) -> None:  # the model fixture is idle
    real, _ = capture("h200x2/static/topo_m.txt")
    fake = h200x2.smi("topo", "-m").stdout.splitlines()
    assert fake[0] == real[0]  # the header, underlined to a pipe too, as the real one
    assert re.fullmatch(r"GPU0\t X \tNV18\t[\d,-]+\t0\t\tN/A", fake[1])
    assert fake[3:] == real[3:]
    p2p, _ = capture("h200x2/static/topo_p2p.txt")
    assert h200x2.smi("topo", "-p2p", "n").stdout.splitlines() == p2p


def test_nvlink_status_and_capabilities(h100: Node, h200x2: Node) -> None:  # idle models
    for flag, name in (("-s", "nvlink_s"), ("--status", "nvlink_status"), ("-c", "nvlink_c")):
        real, _ = capture(f"h200x2/static/{name}.txt")
        fake = h200x2.smi("nvlink", flag).stdout.splitlines()
        assert [shape(line) for line in fake] == [shape(line) for line in real]
    single, _ = capture("h100/static/nvlink_s.txt")
    assert h100.smi("nvlink", "-s").stdout.splitlines() == single  # one GPU: no links


# ----------------------------------------------------- texts and errors
@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--help"], "help"),
        (["-h"], "help"),
        (["--version"], "version"),
        (["--help-query-gpu"], "help_query_gpu"),
        (["--help-query-compute-apps"], "help_query_apps"),
        (["dmon", "-h"], "dmon_help"),
        (["pmon", "-h"], "pmon_help"),
        (["topo", "-h"], "topo_help"),
        (["--frobnicate"], "badflag"),
        (["--query-gpu=bogus.field", "--format=csv"], "badfield"),
    ],
)
def test_texts_and_errors_are_the_real_ones(h100: Node, args: list[str], name: str) -> None:
    real, code = capture(f"h100/static/{name}.txt")
    result = h100.smi(*args)
    assert result.stdout.splitlines() == real
    assert result.returncode == code


def test_list_gpus(h200x2: Node) -> None:
    real, _ = capture("h200x2/static/L.txt")
    assert [shape(x) for x in h200x2.smi("-L").stdout.splitlines()] == [shape(x) for x in real]


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (
            ["stray"],
            "ERROR: Option stray is not recognized. Please run 'nvidia-smi -h' for help.",
            255,
        ),
        (["-q", "--query-gpu=name"], "Invalid combination of input arguments.", 2),
        (["-q", "-x", "-d", "MEMORY"], "Invalid combination of input arguments.", 2),
        (["-q", "-d", "NOPE"], "Invalid combination of input arguments.", 2),
        (["-x"], "Invalid combination of input arguments.", 2),
        (["-l", "0"], "Invalid combination of input arguments.", 2),
        (["-lms", "fast"], "Invalid combination of input arguments.", 2),
        (["--query-gpu=name", "--format=xml"], "Invalid combination of input arguments.", 2),
        (["--query-compute-apps=pid,colour"], 'Field "colour" is not a valid field to query.', 2),
        (["-i"], "Invalid combination of input arguments.", 2),
        (["dmon", "-s", "z"], "Invalid combination of input arguments.", 2),
        (["dmon", "--bogus"], "ERROR: Option --bogus is not recognized.", 255),
        (["pmon", "-d", "11", "-c", "1"], "Invalid combination of input arguments.", 2),
    ],
)
def test_bad_arguments(h100: Node, args: list[str], message: str, code: int) -> None:
    result = h100.smi(*args)
    assert result.returncode == code
    assert result.stdout.startswith(message)
    assert "Traceback" not in result.stderr


def test_unreachable_driver_message(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text("[cluster]\nnodes = 0\n")  # the daemon cannot start with this
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": tempfile.mkdtemp(prefix="fhw-x-"),
           "FAKEHW_CONFIG": str(broken)}  # fmt: skip
    result = subprocess.run([sys.executable, str(LAUNCHER)], env=env, capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 9
    assert result.stdout.startswith("NVIDIA-SMI has failed because it couldn't communicate")
    assert "nodes must be between 1" in result.stderr  # and fakehw says why


def test_sigterm_ends_a_loop_cleanly(h100: Node) -> None:
    out = loop_output(h100, ["dmon"], seconds=1.5, sig=signal.SIGTERM)
    assert out.startswith("# gpu")


def test_output_file(h100: Node, tmp_path: Path) -> None:
    target = tmp_path / "smi.log"
    result = h100.smi("--query-gpu=index,name", "--format=csv", "-f", str(target))
    assert result.returncode == 0 and result.stdout == ""
    assert target.read_text().splitlines()[1] == "0, NVIDIA H100 80GB HBM3"


def test_node_selection_by_environment(tmp_path: Path) -> None:
    runtime = tempfile.mkdtemp(prefix="fhw-n-")
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": runtime}
    subprocess.run([sys.executable, "-m", "fakehw", "daemon", "start", "--nodes", "3"], env=env,
                   check=True, capture_output=True)  # fmt: skip
    try:
        uuids = set()
        for node in ("0", "2", "dgx-h100-02"):
            result = subprocess.run(
                [sys.executable, str(LAUNCHER), "--query-gpu=uuid", "--format=csv,noheader"],
                env={**env, "FAKEHW_NODE": node}, capture_output=True, text=True, check=True,
            )  # fmt: skip
            uuids.add(result.stdout)
        assert len(uuids) == 3
        missing = subprocess.run([sys.executable, str(LAUNCHER)], env={**env, "FAKEHW_NODE": "9"},
                                 capture_output=True, text=True, check=False)  # fmt: skip
        assert missing.returncode == 6 and "FAKEHW_NODE=9" in missing.stderr
    finally:
        subprocess.run([sys.executable, "-m", "fakehw", "daemon", "stop"], env=env, check=False,
                       capture_output=True)  # fmt: skip


def test_exec_puts_the_fake_first_on_path(h100: Node) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fakehw", "exec", "--", "sh", "-c",
         "nvidia-smi --query-gpu=name --format=csv,noheader; exit 3"],
        env=h100.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.stdout == "NVIDIA H100 80GB HBM3\n" and result.returncode == 3
    shellenv = subprocess.run(
        ["sh", "-c", f'eval "$({sys.executable} -m fakehw shellenv)"; command -v nvidia-smi'],
        env=h100.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shellenv.stdout.strip() == os.path.join(h100.runtime, "bin", "nvidia-smi")


def test_daemon_reachable_after_all(h100: Node) -> None:
    pid = int(Path(h100.runtime, "daemon.pid").read_text())
    assert alive(pid)
