"""The daemon for real: a process in an isolated runtime dir, talked to over its socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import alive, fakehw, wait_for

from fakehw.service import protocol
from fakehw.service.client import Client, DaemonUnavailable, RequestFailed


def daemon_pid(runtime: Path) -> int:
    return int((runtime / "daemon.pid").read_text())


def test_client_starts_a_private_daemon(runtime_dir: Path) -> None:
    with Client.connect(client_name="test") as client:
        hello = client.hello
    assert hello["protocol"] == protocol.PROTOCOL_VERSION
    assert hello["cluster"]["gpu_model"] == "h100-sxm"
    assert hello["gpus"] == 8 and hello["hostnames"] == ["dgx-h100-01"]
    assert stat.S_IMODE(runtime_dir.stat().st_mode) == 0o700
    sock = runtime_dir / "daemon.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert alive(daemon_pid(runtime_dir))


def test_snapshot_of_the_default_node(runtime_dir: Path) -> None:
    with Client.connect() as client:
        snap = client.snapshot()
        by_name = client.snapshot("dgx-h100-01")
    node = snap["nodes"][0]
    assert len(snap["nodes"]) == 1 and len(node["gpus"]) == 8
    assert [g["bus_id"][9:11] for g in node["gpus"]] == [
        "18", "2A", "3A", "5D", "9A", "AB", "BA", "DB",
    ]  # fmt: skip
    assert len({g["uuid"] for g in node["gpus"]}) == 8
    assert snap["models"]["h100-sxm"]["name"] == "NVIDIA H100 80GB HBM3"
    assert by_name["nodes"][0]["hostname"] == "dgx-h100-01"
    assert all(g["memory_used_mib"] == 0 and g["clock_sm_mhz"] == 345 for g in node["gpus"])
    assert node["host"]["gpu_numa_node"] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_unknown_node_is_a_clear_error(runtime_dir: Path) -> None:
    with Client.connect() as client, pytest.raises(RequestFailed) as info:
        client.snapshot(3)
    assert info.value.code == protocol.NOT_FOUND
    assert "0-0" in info.value.message


def test_subscription_pushes_at_its_interval(runtime_dir: Path) -> None:
    with Client.connect() as client:
        started = time.monotonic()
        seen = []
        for snap in client.subscribe(100):
            seen.append(snap)
            if len(seen) == 6:
                break
        elapsed = time.monotonic() - started
    assert 0.45 <= elapsed <= 1.5  # the first at once, then every 100 ms
    times = [s["time"] for s in seen]
    assert times == sorted(times) and times[-1] - times[0] >= 0.3


def test_attached_process_works_the_gpu_and_dies_with_its_pid(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    with Client.connect() as client:
        client.request("attach", pid=sleeper.pid, name="python3", gpus=[2, 3], job="t")
        client.request("set_phase", pid=sleeper.pid, phase="train", memory_mib=30000)

        def busy() -> list[dict[str, object]]:
            gpus = client.snapshot()["nodes"][0]["gpus"]
            hot = [g for g in gpus if g["utilization_gpu_pct"] == 100]
            done = len(hot) == 2 and all(g["memory_used_mib"] == 30009 for g in hot)
            return gpus if done and all(g["power_draw_mw"] > 600_000 for g in hot) else []

        gpus = wait_for(busy, timeout=10)
        assert [g["index"] for g in gpus if g["utilization_gpu_pct"] == 100] == [2, 3]
        node = client.snapshot()["nodes"][0]
        assert [(p["pid"], p["name"], p["gpu_index"]) for p in node["processes"]] == [
            (sleeper.pid, "python3", 2),
            (sleeper.pid, "python3", 3),
        ]
        assert all(p["used_memory_mib"] == 30000 for p in node["processes"])
        assert node["gpus"][2]["nvlink_tx_kbps"] > 1_000_000  # a 2-GPU job talks over NVLink
        sleeper.kill()
        sleeper.wait()
        wait_for(lambda: not client.snapshot()["nodes"][0]["processes"], timeout=2.0)
        assert all(g["memory_used_mib"] == 0 for g in client.snapshot()["nodes"][0]["gpus"])


def test_attach_needs_a_live_pid_and_valid_gpus(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    with Client.connect() as client:
        dead = subprocess.Popen(["true"])
        dead.wait()
        with pytest.raises(RequestFailed) as info:
            client.request("attach", pid=dead.pid, name="x", gpus=[0])
        assert info.value.code == protocol.NOT_FOUND
        with pytest.raises(RequestFailed) as info:
            client.request("attach", pid=sleeper.pid, name="x", gpus=[8])
        assert "GPU index 8 does not exist" in info.value.message
        client.request("attach", pid=sleeper.pid, name="x", gpus=[0])
        with pytest.raises(RequestFailed, match="already attached"):
            client.request("attach", pid=sleeper.pid, name="x", gpus=[1])
        with pytest.raises(RequestFailed, match="unknown phase"):
            client.request("set_phase", pid=sleeper.pid, phase="dance")
        with pytest.raises(RequestFailed, match="memory_mib"):
            client.request("set_phase", pid=sleeper.pid, phase="train", memory_mib=10**7)
        client.request("detach", pid=sleeper.pid)
        with pytest.raises(RequestFailed) as info:
            client.request("detach", pid=sleeper.pid)
        assert info.value.code == protocol.NOT_FOUND


def raw_connection(runtime: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(runtime / "daemon.sock"))
    return sock


def read_lines(sock: socket.socket, count: int) -> list[dict[str, object]]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.splitlines()[:count]]


def test_bad_requests_get_clear_errors_and_the_connection_survives(runtime_dir: Path) -> None:
    Client.connect().close()
    sock = raw_connection(runtime_dir)
    sock.sendall(b'this is not json\n[1,2]\n{"op": 7}\n{"id": 4, "op": "fly"}\n')
    sock.sendall(b'{"id": 5, "op": "subscribe", "interval_ms": 1}\n')
    sock.sendall(b'{"id": 6, "op": "hello", "protocol": 99}\n{"id": 7, "op": "status"}\n')
    replies = read_lines(sock, 7)
    codes = [r["error"]["code"] if not r["ok"] else "ok" for r in replies]  # type: ignore[index]
    assert codes == [
        "bad_request", "bad_request", "bad_request", "unknown_op", "bad_request",
        "protocol_mismatch", "ok",
    ]  # fmt: skip
    assert [r["id"] for r in replies[3:]] == [4, 5, 6, 7]
    sock.close()


def test_an_oversized_request_closes_only_that_connection(runtime_dir: Path) -> None:
    with Client.connect() as bystander:
        sock = raw_connection(runtime_dir)
        sock.sendall(b"x" * (protocol.MAX_LINE_BYTES + 10))
        reply = read_lines(sock, 1)[0]
        assert reply["error"]["code"] == "too_large"  # type: ignore[index]
        assert sock.recv(10) == b""  # closed by the daemon
        assert bystander.request("status")["daemon_pid"] == daemon_pid(runtime_dir)


def test_clients_starting_at_once_share_one_daemon(runtime_dir: Path) -> None:
    code = (
        "from fakehw.service.client import Client\n"
        "with Client.connect() as c: print(c.hello['daemon_pid'])\n"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    pids = {child.communicate(timeout=30)[0].strip() for child in children}
    assert len(pids) == 1 and pids != {""}
    assert int(pids.pop()) == daemon_pid(runtime_dir)


def test_a_stale_socket_is_replaced(runtime_dir: Path) -> None:
    runtime_dir.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(runtime_dir / "daemon.sock"))
    stale.close()  # the file stays, nobody listens: a crashed daemon's leftover
    with Client.connect() as client:
        assert client.request("status")["clients"] == 1


def test_daemon_exits_when_idle(runtime_dir: Path) -> None:
    result = fakehw("daemon", "start", "--idle-timeout", "1")
    assert result.returncode == 0, result.stderr
    pid = daemon_pid(runtime_dir)
    wait_for(lambda: not alive(pid), timeout=6)
    assert not (runtime_dir / "daemon.sock").exists()
    assert not (runtime_dir / "daemon.pid").exists()


def test_an_attached_process_keeps_the_daemon_alive(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    assert fakehw("daemon", "start", "--idle-timeout", "1").returncode == 0
    with Client.connect() as client:
        client.request("attach", pid=sleeper.pid, name="job", gpus=[0])
    time.sleep(2.5)
    assert alive(daemon_pid(runtime_dir))


def test_sigterm_stops_cleanly(runtime_dir: Path) -> None:
    Client.connect().close()
    pid = daemon_pid(runtime_dir)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), timeout=5)
    assert not (runtime_dir / "daemon.sock").exists()
    with pytest.raises(DaemonUnavailable):
        Client.connect(autostart=False)


def test_second_daemon_in_the_same_dir_refuses(runtime_dir: Path) -> None:
    Client.connect().close()
    second = fakehw("daemon", "start", "--foreground", timeout=30)
    assert second.returncode == 1
    assert "already runs" in second.stderr
    assert "Traceback" not in second.stderr


def test_cli_start_status_stop(runtime_dir: Path) -> None:
    assert fakehw("daemon", "status").returncode == 3
    started = fakehw("daemon", "start", "--nodes", "2", "--gpu-model", "a100-80gb")
    assert started.returncode == 0, started.stderr
    assert "2 nodes x 8 NVIDIA A100-SXM4-80GB" in started.stdout
    again = fakehw("daemon", "start")
    assert again.returncode == 0 and "already running" in again.stdout
    clash = fakehw("daemon", "start", "--nodes", "4")
    assert clash.returncode == 1 and "fakehw daemon stop" in clash.stderr
    status = fakehw("daemon", "status", "--json")
    assert status.returncode == 0
    parsed = json.loads(status.stdout)
    assert parsed["running"] and parsed["cluster"]["nodes"] == 2
    human = fakehw("daemon", "status")
    assert "2 nodes x 8 NVIDIA A100-SXM4-80GB" in human.stdout
    stopped = fakehw("daemon", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert fakehw("daemon", "status").returncode == 3
    assert fakehw("daemon", "stop").returncode == 0  # stopping twice is not an error


def test_config_file_sets_defaults_and_bad_files_are_explained(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "fakehw.toml"
    config.write_text('[cluster]\ngpu_model = "h200"\nnodes = 3\ngpus_per_node = 4\n')
    monkeypatch.setenv("FAKEHW_CONFIG", str(config))
    assert fakehw("daemon", "start").returncode == 0
    with Client.connect() as client:
        assert client.hello["gpus"] == 12 and client.hello["model_name"] == "NVIDIA H200"
    fakehw("daemon", "stop")
    for text, expected in (
        ("[cluster\n", "not valid TOML"),
        ("[cluster]\ngpus = 3\n", "unknown setting(s) in [cluster]: gpus"),
        ('[cluster]\nnodes = "two"\n', "nodes must be a whole number"),
        ('[cluster]\ngpu_model = "v100"\n', "unknown GPU model"),
        ("[gpu]\n", "unknown section(s) gpu"),
    ):
        config.write_text(text)
        result = fakehw("daemon", "start")
        assert result.returncode == 1, text
        assert expected in result.stderr and str(config) in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_cli_values_are_explained(runtime_dir: Path) -> None:
    for args, expected in (
        (("daemon", "start", "--nodes", "0"), "--nodes must be between 1"),
        (("daemon", "start", "--gpus-per-node", "17"), "--gpus-per-node must be between 1 and 16"),
        (("daemon", "start", "--gpu-model", "h1000"), "unknown GPU model"),
        (("daemon", "start", "--tick-hz", "1000"), "--tick-hz must be between 1 and 100"),
        (("daemon", "start", "--nodes", "many"), "invalid int value"),
        (("daemon", "frobnicate"), "invalid choice"),
    ):
        result = fakehw(*args)
        assert result.returncode == 2, args  # a usage error, as argparse's own
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_large_cluster_serves_one_node_quickly(runtime_dir: Path) -> None:
    assert fakehw("daemon", "start", "--nodes", "128").returncode == 0
    with Client.connect() as client:
        assert client.hello["gpus"] == 1024
        started = time.monotonic()
        snap = client.snapshot("dgx-h100-100")
        assert time.monotonic() - started < 0.5
        assert snap["nodes"][0]["gpus"][0]["global_index"] == 99 * 8
        full = client.snapshot()
        assert sum(len(n["gpus"]) for n in full["nodes"]) == 1024


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a foreign-owned directory")
def test_a_runtime_dir_owned_by_someone_else_is_refused(runtime_dir: Path) -> None:
    runtime_dir.mkdir(mode=0o700)
    os.chown(runtime_dir, 65534, 65534)
    with pytest.raises(DaemonUnavailable, match="belongs to uid 65534"):
        Client.connect()
    result = fakehw("daemon", "status")
    assert result.returncode == 3 and "belongs to uid 65534" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a foreign-owned socket")
def test_a_socket_owned_by_someone_else_is_refused(runtime_dir: Path) -> None:
    Client.connect().close()  # a daemon of ours runs; now someone else "owns" its socket
    socket_path = runtime_dir / "daemon.sock"
    os.chown(socket_path, 65534, 65534)
    try:
        with pytest.raises(DaemonUnavailable, match="belongs to uid 65534"):
            Client.connect()
    finally:
        os.chown(socket_path, os.getuid(), os.getgid())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_the_daemon_refuses_peers_of_another_uid(runtime_dir: Path) -> None:
    Client.connect().close()
    socket_path = runtime_dir / "daemon.sock"
    # Open the door wide on purpose, so only the daemon's SO_PEERCRED check stands: the
    # socket made world-writable and linked where another user can reach it.
    door = Path(tempfile.mkdtemp(prefix="fhw-door-", dir="/tmp"))  # where others can go
    door.chmod(0o711)
    try:
        os.link(socket_path, door / "daemon.sock")
    except OSError as exc:
        pytest.skip(f"cannot link the socket outside the test directory: {exc}")
    socket_path.chmod(0o666)
    probe = """if True:
        import os, socket, sys
        os.setgid(65534)
        os.setuid(65534)
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        s.settimeout(5)
        try:
            s.sendall(b'{"id": 1, "op": "status"}\\n')
            print("answered" if s.recv(65536) else "closed")
        except (ConnectionResetError, BrokenPipeError):
            print("closed")
    """
    try:
        result = subprocess.run([sys.executable, "-c", probe, str(door / "daemon.sock")],
                                capture_output=True, text=True, timeout=30)  # fmt: skip
    finally:
        socket_path.chmod(0o600)
        shutil.rmtree(door)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "closed"  # without a word
    with Client.connect() as client:  # and the owner is still served
        assert client.request("status")["clients"] >= 1
    log = (runtime_dir / "daemon.log").read_text()
    assert "refused a peer with uid 65534" in log


def test_the_protocol_document_covers_every_op() -> None:
    from fakehw.service.ops import TABLE

    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    for op, row in TABLE.items():
        assert f"`{op}`" in doc, op
        for limit in row.limits:  # each limit an op enforces is one of the protocol's
            assert isinstance(getattr(protocol, limit, None), int), (op, limit)
    for code in ("bad_request", "unknown_op", "not_found", "conflict", "protocol_mismatch"):
        assert f"`{code}`" in doc, code
