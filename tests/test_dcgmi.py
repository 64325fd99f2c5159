"""fake-dcgmi: DCGM 4.6's dcgmi layouts (docs/design/dcgmi.md, read from DCGM's source),
values that agree with fake-nvidia-smi, DCGM's error texts and exit codes, and faults
that fail the check DCGM would fail them in."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Node, fakehw, wait_for

from fakehw.dcgmi import health, styled_json
from fakehw.dcgmi.diag import FOOTER

SPEC = Path(__file__).resolve().parents[1] / "docs" / "design" / "dcgmi.md"


def dcgmi(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return node.tool("fakehw.dcgmi", *args)


def inject(node: Node, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "fakehw", "inject", *args], env=node.env,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def spec_block(after: str) -> list[str]:
    """The first fenced block in the spec after the line ``after``."""
    text = SPEC.read_text().split(after, 1)[1]
    return text.split("```\n", 2)[1].splitlines()


@pytest.fixture(scope="module")
def h200x2() -> Iterator[Node]:
    node = Node("h200", 2)
    yield node
    node.close()


@pytest.fixture
def fresh() -> Iterator[Node]:
    """A node of its own: health watches and faults set here touch no other test."""
    node = Node("h100", 2)
    yield node
    node.close()


def smi_values(node: Node, fields: str) -> list[list[str]]:
    result = node.smi(f"--query-gpu={fields}", "--format=csv,noheader,nounits")
    return [line.split(", ") for line in result.stdout.splitlines()]


# ------------------------------------------------------------------ discovery
def test_discovery_lists_the_gpus_nvidia_smi_shows_in_dcgms_table(h200x2: Node) -> None:
    result = dcgmi(h200x2, "discovery", "-l")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    spec = spec_block("### 1.1 Example")
    rule = spec[1]
    assert lines[:4] == ["2 GPUs found (Active).", *spec[1:4]]
    bus_ids_uuids = smi_values(h200x2, "pci.bus_id,uuid")
    for gpu, (bus_id, uuid) in enumerate(bus_ids_uuids):
        block = lines[4 + 4 * gpu : 8 + 4 * gpu]
        assert block == [
            f"| {gpu}      | {'Name: NVIDIA H200':<68} |",
            f"|        | {'PCI Bus ID: ' + bus_id:<68} |",
            f"|        | {'Device UUID: ' + uuid:<68} |",
            rule,
        ]
    # no NvSwitch, ConnectX or CPU entity: their tables are empty, as the spec shows them
    assert lines[12:] == spec[12:]


# ---------------------------------------------------------------------- dmon
def test_dmon_list_is_dcgms_field_table(h200x2: Node) -> None:
    result = dcgmi(h200x2, "dmon", "-l")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == spec_block("## Appendix A.")


def _cells(line: str, widths: list[int]) -> list[str]:
    """A dmon line cut at its columns: the entity (16), then each field's width + 8."""
    cells, start = [line[:16].rstrip()], 16
    for width in widths:
        cells.append(line[start : start + width + 8].rstrip())
        start += width + 8
    return cells


def test_dmon_prints_dcgms_columns_with_the_values_nvidia_smi_shows(h200x2: Node) -> None:
    if not h200x2.children:
        for gpu in (0, 1):
            h200x2.run_process("python3", gpu, 52806)
        h200x2.wait_busy(2)
    fields = "temperature.gpu,power.draw,utilization.gpu,memory.used"
    before = smi_values(h200x2, fields)
    result = dcgmi(h200x2, "dmon", "-e", "150,155,203,252,1004", "-c", "2", "-d", "100")
    after = smi_values(h200x2, fields)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # TMPTR width 5, POWER 10, GPUTL 10, FBUSD 10, TENSO 5: each cell width + 8, padded
    assert lines[0] == "#Entity".ljust(16) + "TMPTR".ljust(13) + "".join(
        name.ljust(18) for name in ("POWER", "GPUTL", "FBUSD")
    ) + "TENSO".ljust(13)
    assert lines[1] == "ID".ljust(16) + " C".ljust(13) + " W".ljust(18) + " " * (18 * 2 + 13)
    widths = [5, 10, 10, 10, 5]
    rows = [_cells(line, widths) for line in lines[2:]]
    assert [row[0] for row in rows] == ["GPU 0", "GPU 1", "GPU 0", "GPU 1"]
    for row in rows[2:]:
        gpu = int(row[0].split()[1])
        temperature, power, util, used = after[gpu]
        assert abs(int(row[1]) - int(temperature)) <= 2
        assert re.fullmatch(r"\d+\.\d{3}", row[2]), row  # a double: three decimals
        assert float(row[2]) == pytest.approx(float(power), rel=0.15)
        assert row[3] == util == "100"
        # MiB both; read between the two nvidia-smi readings (the allocator may still grow)
        assert sorted([int(before[gpu][3]), int(row[4]), int(used)])[1] == int(row[4])
        assert 0.3 < float(row[5]) <= 1.0  # a bf16 training step keeps the tensor cores busy


def test_dmon_answers_identity_fields_as_dcgm_encodes_them(h200x2: Node) -> None:
    result = dcgmi(h200x2, "dmon", "-i", "0", "-e", "63,58,80,82,301,150,153", "-c", "1")
    assert result.returncode == 0, result.stderr
    cells = result.stdout.splitlines()[2].split()
    (ecc_version, image) = smi_values(h200x2, "inforom.ecc,inforom.img")[0]
    # compute capability 9.0: the major in the upper 32 bits; the PCI id as NVML's int
    assert cells[2:7] == [str(9 << 32), str(0x233510DE), ecc_version, image, "1"]
    # the margin to the slowdown (T.Limit) and the temperature always add up to the same
    temperature, tlimit = smi_values(h200x2, "temperature.gpu,temperature.gpu.tlimit")[0]
    assert int(cells[7]) + int(cells[8]) == int(temperature) + int(tlimit)


def test_dmon_prints_its_header_again_after_fifteen_samples(h200x2: Node) -> None:
    result = dcgmi(h200x2, "dmon", "-e", "150", "-c", "17", "-d", "1", "-i", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = ["#Entity         TMPTR        ", "ID               C           "]
    assert lines[:2] == header
    assert all(line.startswith("GPU 1 ") for line in lines[2:17])
    assert lines[17:19] == header  # after sample 15
    assert len(lines) == 21


@pytest.mark.parametrize(
    ("args", "code", "stream", "text"),
    [
        (["dmon", "-e", "9999", "-c", "1"], 255, "stderr",
         "Error: Got invalid field ID. '9999'. See dcgm_fields.h for a list of valid field IDs.\n"),
        (["dmon", "-e", "150,abc", "-c", "1"], 255, "stderr",
         "Error: Expected numerical fieldId. Got 'abc' instead.\n"),
        (["dmon", "-e", "150", "-d", "0"], 254, "stderr",
         "Error: Invalid value for arg delay.\n"
         "An error occurred trying to parse the command line.\n"),
        (["dmon", "-l", "-c", "3"], 254, "stderr",
         "Error: Invalid parameters with list arg. Usage : dmon -l.\n"
         "An error occurred trying to parse the command line.\n"),
        (["dmon", "-e", "150", "-i", "99", "-c", "1"], 255, "stderr",
         "Error: Got error -1 Bad parameter passed to function while adding GPU 99 to our "
         "entity group.\n"),
        (["discovery", "-l", "--host", "10.0.0.5"], 235, "stdout",
         "Error: unable to establish a connection to the specified host: 10.0.0.5\n"
         "Error: Unable to connect to host engine. Host engine connection invalid/disconnected.\n"),
        (["health", "-s", "pz"], 254, "stderr",
         "Error: Invalid flags detected for arg set.\n"
         "An error occurred trying to parse the command line.\n"),
        (["health", "-c", "-g", "7"], 253, "stdout",
         "Error: Unable to check health watches. Return: The Group is not found\n"),
        (["health", "-c", "-g", "abc"], 254, "stderr",
         "Error: The only allowed non-digit strings are g (gpus), s (switches), i (instances), "
         "c (compute instances), or a (all entities).\n"
         "An error occurred trying to parse the command line.\n"),
        (["health", "-s", "ap"], 254, "stderr",
         "Error: Invalid flags detected for arg set.\n"
         "An error occurred trying to parse the command line.\n"),
        (["health", "-s", "pmp"], 254, "stderr",
         "Error: Duplicate flags detected for arg set.\n"
         "An error occurred trying to parse the command line.\n"),
        (["dmon", "-e", "65536", "-c", "1"], 255, "stderr",
         "Error: Expected numerical fieldId. Got '65536' instead.\n"),
        (["dmon", "-e", "150", "-i", "0,,1", "-c", "1"], 255, "stderr",
         "Error: Comma without a value detected at token 2 of input 0,,1\n"),
        (["diag"], 254, "stderr",
         "Error: Invalid value '' specified for -r..\n"
         "An error occurred trying to parse the command line.\n"),
        (["diag", "-r", "5"], 254, "stderr",
         "Error: Invalid value '5' specified for -r..\n"
         "An error occurred trying to parse the command line.\n"),
        (["diag", "-r", "1", "-g", "0", "-i", "1"], 254, "stderr",
         "Error: Specifying a group id and a entity id are mutually exclusive.\n"
         "An error occurred trying to parse the command line.\n"),
    ],
)  # fmt: skip
def test_errors_are_dcgms_words_and_exit_codes(
    h200x2: Node, args: list[str], code: int, stream: str, text: str
) -> None:
    result = dcgmi(h200x2, *args)
    assert (result.returncode, getattr(result, stream)) == (code, text)
    assert "Traceback" not in result.stderr


def test_an_unknown_option_is_tclaps_parse_error(h200x2: Node) -> None:
    result = dcgmi(h200x2, "dmon", "-x")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    tclap = ["PARSE ERROR: Argument: -x", "             Couldn't find match for argument"]
    assert lines[:4] == [*tclap, "", "Usage: "]
    assert lines[4].startswith("   dcgmi dmon ")
    assert lines[-3:] == ["For complete USAGE and HELP type: ", "   dcgmi dmon --help", ""]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["dmon"], [" ", "Required argument missing: {field-group-id | field-id | list}"]),
        (["dmon", "-l", "-e", "150"], ["Argument: -l AND -e provided.", "Only one is allowed."]),
        (["dmon", "-e", "150", "-d", "99999999999"],
         ["Argument: -d (--delay)", "Couldn't read argument value from string '99999999999'"]),
        (["health", "-s", "pm", "-u", "often"],
         ["Argument: -u (--update-interval)", "Couldn't read argument value from string 'often'"]),
    ],
)  # fmt: skip
def test_tclap_refuses_what_it_cannot_parse(
    h200x2: Node, args: list[str], error: list[str]
) -> None:
    result = dcgmi(h200x2, *args)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[:2] == ["PARSE ERROR: " + error[0], "             " + error[1]]
    program = f"dcgmi {args[0]}"
    assert lines[4].startswith(f"   {program} [")
    assert lines[-5:] == ["", "", "For complete USAGE and HELP type: ", f"   {program} --help", ""]


def test_an_unknown_subsystem_prints_the_usage(h200x2: Node) -> None:
    result = dcgmi(h200x2, "bogus")
    assert result.returncode == 255
    assert result.stdout.startswith("ERROR: Invalid subsystem.\n\n")
    lines = result.stdout.splitlines()
    # DCGM's descriptions, en dash included, wrapped by byte count as its spacePrint does
    assert (
        "        dmon        Stats Monitoring of GPUs [dcgmi dmon \u2013h for more info]" in lines
    )
    where = lines.index(
        "        discovery   Discover GPUs on the system [dcgmi discovery \u2013h for more"
    )
    assert lines[where + 1] == " " * 21 + "info]"


def test_ctrl_c_stops_dmon_as_dcgm_says_it_does(tmux) -> None:  # type: ignore[no-untyped-def]
    command = f"{sys.executable} -m fakehw.dcgmi dmon -e 150 -d 200; echo EXIT=$?"
    tmux("send-keys", "-t", "t", command, "Enter")

    def screen() -> str:
        return str(tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t"))

    wait_for(lambda: screen().count("GPU 7 ") >= 2, timeout=60)
    tmux("send-keys", "-t", "t", "C-c")
    found = wait_for(lambda: re.search(r"EXIT=(\d+)$", screen(), re.MULTILINE), timeout=30)
    assert found.group(1) == "0"
    assert "\n\ndmon was stopped due to receiving a signal\nEXIT=0" in screen()
    assert "Traceback" not in screen()


# -------------------------------------------------------------------- health
def test_health_check_needs_watches_then_reports_healthy(fresh: Node) -> None:
    result = dcgmi(fresh, "health", "-c")
    assert (result.returncode, result.stdout) == (
        253, "Error: Health watches not enabled. Please enable watches. \n")  # fmt: skip
    assert dcgmi(fresh, "health", "-s", "pm").stdout == "Health monitor systems set successfully.\n"
    fetched = dcgmi(fresh, "health", "-f").stdout.splitlines()
    assert fetched == spec_block("`dcgmi health -f` (stdout):")
    result = dcgmi(fresh, "health", "-c")
    assert result.returncode == 0
    assert result.stdout.splitlines() == spec_block("### 3.2 Healthy system")
    as_json = dcgmi(fresh, "health", "-c", "-j").stdout
    assert as_json.splitlines() == spec_block(
        "For the healthy case that is (keys come out sorted):"
    )
    assert dcgmi(fresh, "health", "--clear").returncode == 0
    assert dcgmi(fresh, "health", "-c").returncode == 253
    # "a" is every watch dcgmi sets for it: all but SM
    assert dcgmi(fresh, "health", "-g", "g", "-s", "a").returncode == 0
    states = dict(
        line.split("|")[1:3] for line in dcgmi(fresh, "health", "-f").stdout.splitlines()[2:-1]
    )
    assert {name.strip(): state.strip() for name, state in states.items()}["SM"] == "Off"
    assert sorted(state.strip() for state in states.values()) == ["Off"] + ["On"] * 10


def test_a_double_bit_error_fails_the_memory_watch(fresh: Node) -> None:
    assert dcgmi(fresh, "health", "-s", "m").returncode == 0
    inject(fresh, "ecc-uncorrectable", "--gpu", "1")
    result = dcgmi(fresh, "health", "-c")
    assert result.returncode == 0  # dcgmi exits 0 whenever it could print the report
    lines = result.stdout.splitlines()
    assert lines[3:6] == [
        "| Overall Health            | Failure                                                  |",
        "| GPU                       |                                                          |",
        "| -> 1                      | Failure                                                  |",
    ]
    # DCGM always watches XID 48, and reports it under its "Internal error" label
    assert "|       -> Internal error   | Failure" in lines[7]
    memory = lines.index(
        "|       -> Memory system    | Failure                                                  |"
    )
    # the spec's example of this failure, for GPU 1 and one error
    expected = spec_block("Double-bit ECC on GPU 0 (memory watch, FAIL):")[8:10]
    expected = [
        line.replace("2 volatile", "1 volatile").replace("GPU 0.", "GPU 1.") for line in expected
    ]
    assert lines[memory + 1 : memory + 3] == expected
    assert lines[-1] == lines[0]
    # dmon's row-remap fields (the exporter's for 393) and nvidia-smi agree: one row
    # remapped for the uncorrectable error, the remapping pending until a reset
    remap = dcgmi(fresh, "dmon", "-i", "1", "-e", "393,396,311,385,386", "-c", "1").stdout
    histogram = smi_values(fresh, "remapped_rows.histogram.max,remapped_rows.histogram.high")[1]
    assert histogram == ["2559", "1"]  # an H100's 2560 banks, one with a row used
    assert remap.splitlines()[2].split() == ["GPU", "1", "1", "1", "1", *histogram]
    assert smi_values(fresh, "ecc.errors.uncorrected.volatile.total,remapped_rows.pending")[1] == [
        "1", "Yes"]  # fmt: skip


def test_health_message_wrapping_follows_dcgm() -> None:
    message = ("Detected more than 8 PCIe replays per minute for GPU 0 : 24 Reconnect PCIe card. "
               "Run system side PCIE diagnostic utilities to verify hops off the GPU board. If "
               "issue is on the board, run the field diagnostic.")  # fmt: skip
    block = spec_block("PCIe replay warning (shows the line-wrapping quirks, see 3.5):")
    expected = [line[30:-2].rstrip() for line in block[8:12]]
    assert health.wrap_message(message) == expected


def test_styled_json_puts_short_arrays_on_one_line() -> None:
    text = styled_json.dumps({"b": [1, 2], "a": {"c": "x"}, "long": ["y" * 40, "z" * 40]})
    assert text == (
        '{\n   "a" : {\n      "c" : "x"\n   },\n   "b" : [ 1, 2 ],\n   "long" : [\n'
        f'      "{"y" * 40}",\n      "{"z" * 40}"\n   ]\n}}\n'
    )


# ---------------------------------------------------------------------- diag
def test_diag_quick_passes_a_healthy_node(fresh: Node) -> None:
    result = dcgmi(fresh, "diag", "-r", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    (driver,) = {row[0] for row in smi_values(fresh, "driver_version")}
    lines = result.stdout.splitlines()
    spec = spec_block("### 4.2 Example, DCGM 4.6.0, all pass")
    assert lines[:6] == spec[:6]
    assert lines[6] == f"| {'Driver Version Detected':<25} | {driver:<46} |"
    assert lines[7] == f"| {'GPU Device IDs Detected':<25} | {'2330, 2330':<46} |"  # H100 SXM
    assert lines[8:] == spec[8:]


def test_diag_finds_persistence_mode_off_and_a_pending_row_remap(fresh: Node) -> None:
    from fakehw.service.client import Client

    with Client.connect(root=fresh.runtime, autostart=False) as client:
        client.request("set_persistence_mode", gpu=0, enabled=False)
    # nvvs sets a persistence-mode warning as the whole test's result: every GPU's
    warned = dcgmi(fresh, "diag", "-r", "1")
    assert warned.returncode == 226
    assert warned.stdout.splitlines()[9:] == [
        "| software                  | Warn                                           |",
        *spec_block("### 4.3 Example, DCGM 4.6.0, a software check reports a problem")[10:14],
        "|                           | GPU1: Fail                                     |",
        FOOTER,
    ]
    inject(fresh, "ecc-uncorrectable", "--gpu", "1")
    result = dcgmi(fresh, "diag", "-r", "1")
    assert result.returncode == 226  # DCGM_ST_NVVS_ERROR
    lines = result.stdout.splitlines()
    spec = spec_block("### 4.3 Example, DCGM 4.6.0, a software check reports a problem")
    assert (
        lines[9:14]
        == [
            "| software                  | Fail                                           |",
            spec[10],  # GPU0: Fail (a warning shows as Fail per GPU)
            *spec[11:14],  # DCGM's persistence-mode message, cut every 45 characters
        ]
    )
    assert lines[14:17] == [
        "|                           | GPU1: Fail                                     |",
        "| Warning: GPU1             | GPU 1 had uncorrectable memory errors and 1 r  |",
        "|                           | ows were remapped                              |",
    ]
    # a reset completes the remapping: the row stays remapped, nothing is pending
    inject(fresh, "clear", "--gpu", "1")
    after = dcgmi(fresh, "diag", "-r", "1", "-i", "1")
    assert after.returncode == 0, after.stdout
    assert smi_values(fresh, "remapped_rows.uncorrectable,remapped_rows.pending")[1] == ["1", "No"]


def test_diag_refuses_the_levels_it_does_not_model(fresh: Node) -> None:
    result = dcgmi(fresh, "diag", "-r", "3")
    assert result.returncode == 250
    assert "quick diagnostic only" in result.stderr
    assert result.stdout == ""


# ---------------------------------------------------------------------- exec
def test_fakehw_exec_puts_dcgmi_on_path(runtime_dir: Path) -> None:
    result = fakehw("exec", "--", "dcgmi", "discovery", "-l")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("8 GPUs found (Active).\n")


def test_a_gpu_off_the_bus_is_lost_to_discovery_health_and_diag(fresh: Node) -> None:
    assert dcgmi(fresh, "health", "-s", "a").returncode == 0
    inject(fresh, "xid79", "--gpu", "0")
    listed = dcgmi(fresh, "discovery", "-l").stdout.splitlines()
    assert listed[:2] == [
        "1 GPU found (Active).",
        "Note: Use -a flag to show all GPUs, including those that are not active.",
    ]
    every = dcgmi(fresh, "discovery", "-l", "-a").stdout
    assert "| 0      | Status: LOST" in every and "(last known)" in every
    report = dcgmi(fresh, "health", "-c").stdout.splitlines()
    rows = [(line[2:27].strip() + " = " + line[30:-2].strip()).strip() for line in report[3:-1]]
    assert rows[:5] == [
        "Overall Health = Failure", "GPU =", "-> 0 = Failure", "-> Errors =",
        "-> Internal error = Failure"]  # fmt: skip
    assert rows[5] == "= GPU 0 has fallen off the bus Please re-seat the GPU,"
    assert "-> Power system = Warning" in rows
    assert "= Cannot reliably read the power usage for GPU 0. Check" in rows
    diagnosed = dcgmi(fresh, "diag", "-r", "1")
    assert diagnosed.returncode == 226
    lines = diagnosed.stdout.splitlines()
    assert lines[10:14] == [
        "|                           | GPU0: Fail                                     |",
        "| Warning: GPU0             | Could not query field retired_pages_pending f  |",
        "|                           | or GPU 0: GPU is lost (-18)                    |",
        # (nvvs sets a failed field query as the whole test's result)
        "|                           | GPU1: Fail                                     |",
    ]


def test_diag_json_reports_what_the_table_does(fresh: Node) -> None:
    import json

    inject(fresh, "ecc-uncorrectable", "--gpu", "1")
    result = dcgmi(fresh, "diag", "-r", "1", "-j")
    assert result.returncode == 226
    document = json.loads(result.stdout)
    assert result.stdout.startswith('{\n   "DCGM Diagnostic" : {\n')  # jsoncpp's style, keys sorted
    (category,) = document["DCGM Diagnostic"]["test_categories"]
    (test,) = category["tests"]
    assert (category["category"], test["name"]) == ("Deployment", "software")
    assert [r["status"] for r in test["results"]] == ["Pass", "Fail"]
    (warning,) = test["results"][1]["warnings"]
    assert warning == {"warning": "GPU 1 had uncorrectable memory errors and 1 rows were remapped",
                       "error_id": 84, "error_category": 10, "error_severity": 6}  # fmt: skip
    assert test["test_summary"] == {"status": "Fail", "warnings": [warning]}
    serials = [row[0] for row in smi_values(fresh, "serial")]
    (group,) = document["entity_groups"]
    assert [e["serial_num"] for e in group["entities"]] == serials
    assert {e["device_id"] for e in group["entities"]} == {"2330"}
    assert document["metadata"]["version"] == "4.6.0"
