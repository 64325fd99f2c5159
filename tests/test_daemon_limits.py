"""The daemon under misuse and at its limits (issue 12): a stopped daemon, settings it
cannot honour, oversized and odd requests, full GPUs, huge clusters, floods, strangers."""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Node, alive, fakehw, training, wait_for

from fakehw.service import protocol
from fakehw.service.client import Client, RequestFailed


def daemon_pid(runtime: Path) -> int:
    return int((runtime / "daemon.pid").read_text())


def raw_connection(runtime: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(runtime / "daemon.sock"))
    return sock


def read_line(sock: socket.socket) -> dict[str, object]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    reply: dict[str, object] = json.loads(data)
    return reply


# ------------------------------------------------------------ a stopped daemon
@pytest.fixture
def stopped_daemon(runtime_dir: Path) -> Iterator[int]:
    assert fakehw("daemon", "start").returncode == 0
    pid = daemon_pid(runtime_dir)
    os.kill(pid, signal.SIGSTOP)
    yield pid
    os.kill(pid, signal.SIGCONT)


def test_a_stopped_daemon_is_reported_as_not_answering(stopped_daemon: int) -> None:
    began = time.monotonic()
    status = fakehw("daemon", "status")
    assert status.returncode == 4
    assert f"not answering (the fakehw daemon (pid {stopped_daemon}) is stopped" in status.stdout
    assert f"kill -CONT {stopped_daemon}" in status.stdout
    stop = fakehw("daemon", "stop")
    assert stop.returncode == 1
    assert "is stopped" in stop.stderr and "cannot stop until it runs again" in stop.stderr
    assert time.monotonic() - began < 15  # not a 10 s wait each
    assert json.loads(fakehw("daemon", "status", "--json").stdout)["answering"] is False
    os.kill(stopped_daemon, signal.SIGCONT)
    assert fakehw("daemon", "status").returncode == 0
    assert alive(stopped_daemon)


def test_fake_train_rides_out_a_stopped_daemon(runtime_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    with training(log, speed_factor=20) as train:
        pid = daemon_pid(runtime_dir)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(40)  # fake-train used to give up after ~30 s
            assert train.poll() is None, log.read_text()[-2000:]
        finally:
            os.kill(pid, signal.SIGCONT)
        steps = log.read_text().count("│ loss")
        wait_for(lambda: log.read_text().count("│ loss") > steps + 2, timeout=60)
        assert train.poll() is None and daemon_pid(runtime_dir) == pid  # the same daemon
        assert "Traceback" not in log.read_text()


# ------------------------------------------------------------ settings
def test_start_refuses_daemon_settings_the_running_daemon_does_not_have(runtime_dir: Path) -> None:
    assert fakehw("daemon", "start", "--idle-timeout", "300").returncode == 0
    for flags, message in (
        (["--idle-timeout", "30"], "--idle-timeout 300 (asked 30)"),
        (["--tick-hz", "20"], "--tick-hz 10 (asked 20)"),
        (["--tcp", "0"], "no TCP listener"),
    ):
        result = fakehw("daemon", "start", *flags)
        assert result.returncode == 1, flags
        assert f"a daemon already runs with {message}" in result.stderr, result.stderr
    assert fakehw("daemon", "start", "--idle-timeout", "300").returncode == 0  # the same: fine


def test_a_foreground_daemon_that_cannot_listen_says_why(runtime_dir: Path, tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        taken = fakehw("daemon", "start", "--foreground", "--tcp", f"127.0.0.1:{port}", timeout=30)
    finally:
        busy.close()
    assert taken.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in taken.stderr
    missing = fakehw("daemon", "start", "--foreground", "--tcp", "0", "--tcp-token-file",
                     str(tmp_path / "absent"), timeout=30)  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    for result in (taken, missing):
        assert "Traceback" not in result.stderr
    assert not (runtime_dir / "daemon.sock").exists()


def test_a_corrupt_state_file_is_said_to_be_corrupt_and_kept_aside(runtime_dir: Path) -> None:
    runtime_dir.mkdir(mode=0o700)
    (runtime_dir / "state.npz").write_bytes(b"PK\x03\x04 this is not a state")
    assert fakehw("daemon", "start").returncode == 0
    log = (runtime_dir / "daemon.log").read_text()
    assert "the saved state is unreadable, starting fresh" in log
    assert "did not fit" not in log and "another cluster" not in log
    assert (runtime_dir / "state.npz.corrupt").exists()


# ------------------------------------------------------------ protocol limits
def test_a_complete_line_over_1_mib_is_refused_and_the_connection_closed(runtime_dir: Path) -> None:
    assert fakehw("daemon", "start").returncode == 0
    sock = raw_connection(runtime_dir)
    padding = "x" * (protocol.MAX_LINE_BYTES + 10)
    sock.sendall(json.dumps({"id": 1, "op": "status", "pad": padding}).encode() + b"\n")
    reply = read_line(sock)
    assert reply["ok"] is False and reply["error"]["code"] == "too_large"  # type: ignore[index]
    sock.settimeout(5)
    assert sock.recv(100) == b""  # closed, as docs/protocol.md says
    sock.close()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"id": ' + b"7" * 5000 + b', "op": "status"}', "number in the request is too long"),
        (b'{"id": 1, "op": "status", "x": ' + b"[" * 50000 + b"]" * 50000 + b"}",
         "nested too deeply"),
        (b'{"id": ' + b"9" * 30 + b', "op": "status"}', '"id" must be an integer of at most'),
    ],
    ids=["5000-digit id", "nested 50000 deep", "30-digit id"],
)  # fmt: skip
def test_odd_json_is_a_bad_request_not_an_internal_error(
    runtime_dir: Path, line: bytes, message: str
) -> None:
    assert fakehw("daemon", "start").returncode == 0
    sock = raw_connection(runtime_dir)
    sock.sendall(line + b"\n")
    reply = read_line(sock)
    assert reply["error"]["code"] == "bad_request", reply  # type: ignore[index]
    assert message in reply["error"]["message"]  # type: ignore[index]
    sock.close()
    assert "Traceback" not in (runtime_dir / "daemon.log").read_text()


def test_the_memory_limit_is_one_figure_everywhere(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    assert fakehw("daemon", "start", "--gpus-per-node", "1").returncode == 0
    with Client.connect(autostart=False) as client:
        client.request("attach", pid=sleeper.pid, name="p", gpus=[0])
        with pytest.raises(RequestFailed) as refused:
            client.request("set_phase", pid=sleeper.pid, phase="train", memory_mib=81071)
        assert "from 0 to 81070" in refused.value.message
        client.request("set_phase", pid=sleeper.pid, phase="train", memory_mib=81070)
        wait_for(lambda: client.snapshot(0)["nodes"][0]["gpus"][0]["memory_used_mib"] == 81079)


# ------------------------------------------------------------ full GPUs
def test_attaching_beyond_a_gpus_memory_is_out_of_memory_and_free_never_negative() -> None:
    node = Node("h100", 1)
    try:
        for _ in range(4):  # 4 x 20000 MiB fit the 81070 an H100 leaves to processes
            node.run_process("python3", 0, 20000)
        with pytest.raises(RequestFailed) as refused:
            node.run_process("python3", 0, 20000)
        assert refused.value.code == "out_of_memory"
        assert "CUDA out of memory on GPU 0" in refused.value.message
        # processes that do not say what they need get what is left, never more
        for _ in range(40):
            node.run_process("python3", 0, 0, phase="context")
        wait_for(lambda: node.smi("--query-compute-apps=pid", "--format=csv,noheader")
                 .stdout.count("\n") == 44, timeout=10)  # fmt: skip
        for _ in range(3):
            row = node.smi("--query-gpu=memory.total,memory.reserved,memory.used,memory.free",
                           "--format=csv,noheader,nounits").stdout  # fmt: skip
            total, reserved, used, free = (int(v) for v in row.split(", "))
            assert free >= 0 and used + reserved + free == total and used <= total - reserved
            time.sleep(0.3)
        assert "Free                              : -" not in node.smi("-q", "-d", "MEMORY").stdout
    finally:
        node.close()


# ------------------------------------------------------------ scale
def test_a_cluster_too_big_for_one_snapshot_is_refused_and_summarised(runtime_dir: Path) -> None:
    assert fakehw("daemon", "start", "--nodes", "8192", "--gpus-per-node", "8").returncode == 0
    with Client.connect(autostart=False) as client:
        with pytest.raises(RequestFailed) as refused:
            client.snapshot()
        assert refused.value.code == "too_large" and "65536 GPUs" in refused.value.message
        assert client.request("status")["cluster"]["nodes"] == 8192  # still connected
        summary = client.request("summary")
        assert len(summary["columns"]["temperature_gpu_c"]) == 65536
        assert len(summary["hostnames"]) == 8192
        some = client.request("snapshot", nodes=[0, 8191, "dgx-h100-4000"])
        assert [n["hostname"] for n in some["nodes"]] == ["dgx-h100-0001", "dgx-h100-8192",
                                                          "dgx-h100-4000"]  # fmt: skip
    began = time.monotonic()
    grid = subprocess.run([sys.executable, "-m", "fakehw.nvitop", "--cluster", "-1"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert grid.returncode == 0, grid.stderr
    assert grid.stdout.startswith("65536 x NVIDIA H100 80GB HBM3 on 8192 nodes\n")
    assert grid.stdout.count("dgx-h100-") == 8192
    assert time.monotonic() - began < 30  # the bench measures it; here: it finishes


# ------------------------------------------------------------ floods
def test_refused_tcp_hellos_do_not_fill_the_log(runtime_dir: Path) -> None:
    assert fakehw("daemon", "start", "--tcp", "0").returncode == 0
    port = int(json.loads(fakehw("daemon", "status", "--json").stdout)["tcp"].rsplit(":", 1)[1])
    for _ in range(300):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b'{"id":1,"op":"hello","token":"wrong-wrong-wrong-wrong"}\n')
            sock.recv(4096)
    time.sleep(0.5)
    log = (runtime_dir / "daemon.log").read_text()
    assert log.count("refused TCP peer") <= 3
    assert "more like it in the last" in log or log.count("refused TCP peer") == 1
    assert len(log) < 4096


def test_the_daemon_log_is_rotated(runtime_dir: Path) -> None:
    runtime_dir.mkdir(mode=0o700)
    (runtime_dir / "daemon.log").write_bytes(b"old line\n" * 120_000)  # ~1.1 MB
    assert fakehw("daemon", "start").returncode == 0
    assert fakehw("daemon", "stop").returncode == 0
    assert (runtime_dir / "daemon.log").stat().st_size < 100_000
    assert (runtime_dir / "daemon.log.1").stat().st_size > 1_000_000


# ------------------------------------------------------------ strangers
class _Stranger(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


@pytest.fixture
def listening() -> Iterator[Callable[[type[socketserver.BaseRequestHandler]], str]]:
    """Starts TCP servers on loopback with a handler of the test's ("127.0.0.1:PORT"),
    and stops them after."""
    servers: list[_Stranger] = []

    def listen(handler: type[socketserver.BaseRequestHandler]) -> str:
        server = _Stranger(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    yield listen
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stranger(
    listening: Callable[[type[socketserver.BaseRequestHandler]], str],
) -> Callable[[bytes], str]:
    """A TCP server that answers whatever the test says: what FAKEHW_REMOTE points at."""

    def serve(reply: bytes) -> str:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.recv(4096)
                self.request.sendall(reply)

        return listening(Handler)

    return serve


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html></html>\n",
        b"[1, 2, 3]\n",
        b'{"id": 1, "ok": true, "result": {"protocol": 1}}\n',
        b'{"id": 1, "ok": true, "result": []}\n',
    ],
    ids=["an HTTP server", "a JSON array", "a hello without a cluster", "a list as result"],
)
def test_a_remote_that_is_not_fakehw_is_named_not_a_traceback(
    stranger: Callable[[bytes], str], reply: bytes
) -> None:
    address = stranger(reply)
    env = {**os.environ, "FAKEHW_REMOTE": address, "FAKEHW_TOKEN": "x" * 20}
    python = sys.executable
    for argv in ([python, "-m", "fakehw.smi", "-L"], [python, "-m", "fakehw.gpustat"],
                 [python, "-m", "fakehw.nvitop", "-1"]):  # fmt: skip
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30,
                                check=False)  # fmt: skip
        assert result.returncode != 0, argv
        assert "Traceback" not in result.stderr + result.stdout, (argv, result.stderr)
        assert "not a fakehw daemon" in result.stderr + result.stdout, (argv, result.stderr)


@pytest.mark.parametrize("kind", ["readable by others", "a symlink", "not text"])
def test_the_client_refuses_a_token_file_the_daemon_would_refuse(tmp_path: Path, kind: str) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe" * 20 if kind == "not text" else b"s3cret-s3cret-s3cret\n")
    token.chmod(0o600)
    path = token
    if kind == "readable by others":
        token.chmod(0o644)
    elif kind == "a symlink":
        path = tmp_path / "link"
        path.symlink_to(token)
    env = {**os.environ, "FAKEHW_REMOTE": "127.0.0.1:9", "FAKEHW_TOKEN_FILE": str(path)}
    result = subprocess.run([sys.executable, "-m", "fakehw.smi", "-L"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in said
    expected = {"readable by others": "is readable by others", "a symlink": "is a symbolic link",
                "not text": "does not hold a text token"}[kind]  # fmt: skip
    assert expected in said, said


def test_unicode_digits_name_no_node(runtime_dir: Path) -> None:
    assert fakehw("daemon", "start", "--nodes", "4", "--gpus-per-node", "1").returncode == 0
    env = {**os.environ, "FAKEHW_NODE": "٣"}
    result = subprocess.run([sys.executable, "-m", "fakehw.smi", "-L"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert result.returncode != 0 and "dgx-h100-04" not in result.stdout
    plain = subprocess.run([sys.executable, "-m", "fakehw.smi", "-L"],
                           env={**os.environ, "FAKEHW_NODE": "3"}, capture_output=True, text=True,
                           timeout=30, check=False)  # fmt: skip
    assert plain.returncode == 0 and plain.stdout.startswith("GPU 0:")


# ------------------------------------------------------------ issue 12, second audit
def test_a_fifo_as_the_state_file_does_not_hang_the_start(runtime_dir: Path) -> None:
    runtime_dir.mkdir(mode=0o700)
    os.mkfifo(runtime_dir / "state.npz", 0o600)
    started = fakehw("daemon", "start", timeout=30)
    assert started.returncode == 0, started.stderr
    assert "not a regular file" in (runtime_dir / "daemon.log").read_text()
    assert (runtime_dir / "state.npz.corrupt").exists()
    assert fakehw("daemon", "status").returncode == 0


def test_a_hostname_prefix_beyond_ascii_is_refused(runtime_dir: Path) -> None:
    """'日' x 40 made every hostname 240 bytes of JSON escapes: a hello too big to send."""
    for prefix in ("日" * 40, "node٣-"):
        refused = fakehw("daemon", "start", "--hostname-prefix", prefix)
        assert refused.returncode == 2 and "ASCII letters, digits" in refused.stderr, refused
        assert "Traceback" not in refused.stderr
    assert not (runtime_dir / "daemon.sock").exists()


def test_a_client_pipelining_big_snapshots_gets_every_reply(runtime_dir: Path) -> None:
    """Three snapshots of 4,096 GPUs (6 MB each) asked at once, as fake-train asks for a
    6,144-GPU job: each is within the limits, so all three are answered (the daemon
    waits for the client to take each before it answers the next)."""
    assert fakehw("daemon", "start", "--nodes", "1536", "--gpus-per-node", "8").returncode == 0
    with Client.connect(autostart=False) as client:
        chunks = [list(range(first, first + 512)) for first in (0, 512, 1024)]
        replies = client.request_many([("snapshot", {"nodes": nodes}) for nodes in chunks])
        assert [len(reply["nodes"]) for reply in replies] == [512, 512, 512]
        assert replies[2]["nodes"][-1]["hostname"] == "dgx-h100-1536"
        assert client.request("status")["clients"] >= 1


def test_a_reply_over_the_limit_is_refused_not_the_client_dropped(runtime_dir: Path) -> None:
    """A snapshot of 4,096 GPUs is allowed; with eight processes on each it would be
    a reply of 30 MB: refused as too large, and the connection goes on."""
    assert fakehw("daemon", "start", "--nodes", "512", "--gpus-per-node", "8").returncode == 0
    with Client.connect(autostart=False) as client:
        every_gpu = list(range(4096))
        client.request_many([("attach", {"pid": 900_000 + k, "name": "python", "gpus": every_gpu,
                                         "watch_pid": os.getpid()}) for k in range(8)])  # fmt: skip
        with pytest.raises(RequestFailed) as refused:
            client.snapshot()
        assert refused.value.code == "too_large" and "the reply would be" in refused.value.message
        one_node = client.snapshot(0)["nodes"][0]
        assert len(one_node["processes"]) == 64
        client.request("detach", pids=[900_000 + k for k in range(8)])


def test_a_job_ending_at_once_is_detached_in_one_go_and_told_in_one_line(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """4,096 records watched through one launcher that dies: detached together (they
    cost one detach, not 4,096 that each rebuild the tables), one log line."""
    assert fakehw("daemon", "start", "--nodes", "512", "--gpus-per-node", "8").returncode == 0
    with Client.connect(autostart=False) as client:
        results = client.request_many([("attach", {"pid": 800_000 + gpu, "name": "python",
                                                   "gpus": [gpu], "watch_pid": sleeper.pid})
                                       for gpu in range(4096)])  # fmt: skip
        assert not [r for r in results if isinstance(r, RequestFailed)]
        assert client.request("status")["process_count"] == 4096
        sleeper.kill()
        sleeper.wait()
        wait_for(lambda: client.request("status")["process_count"] == 0, timeout=30)
        log = (runtime_dir / "daemon.log").read_text()
        assert log.count(f"pid {sleeper.pid} is gone: detaching") == 1
        assert "and 4088 more" in log
        # and a job's end asked for in one request: those attached are freed, others ignored
        client.request("attach", pid=700_001, name="python", gpus=[0], watch_pid=os.getpid())
        assert client.request("detach", pids=[700_001, 700_002]) == {"pids": [700_001]}


def test_nodes_over_the_limit_are_refused_before_they_are_looked_up(runtime_dir: Path) -> None:
    """61,000 hostnames used to be looked up one by one (seconds) before the size check."""
    assert fakehw("daemon", "start", "--nodes", "1024", "--gpus-per-node", "8").returncode == 0
    with Client.connect(autostart=False) as client:
        with pytest.raises(RequestFailed) as refused:
            client.request("snapshot", nodes=[f"nowhere-{k}" for k in range(1000)])
        assert refused.value.code == "too_large"
        with pytest.raises(RequestFailed) as unknown:
            client.request("snapshot", nodes=["nowhere-1"])
        assert unknown.value.code == "not_found"


def test_a_token_that_is_not_text_is_refused_without_a_traceback(runtime_dir: Path) -> None:
    assert fakehw("daemon", "start", "--tcp", "0").returncode == 0
    port = int(json.loads(fakehw("daemon", "status", "--json").stdout)["tcp"].rsplit(":", 1)[1])
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b'{"id":1,"op":"hello","token":"\\ud800"}\n')
            reply = json.loads(sock.recv(4096))
            assert reply["ok"] is False and reply["error"]["code"] != "internal", reply
    log = (runtime_dir / "daemon.log").read_text()
    assert "Traceback" not in log and len(log) < 4096


def test_clients_that_do_not_read_cannot_make_the_daemon_hoard_memory(runtime_dir: Path) -> None:
    """Sixty clients each ask for a snapshot of 4,096 GPUs (6 MB) and never read it:
    360 MB, each within the per-client limits. Past its budget the daemon closes the
    stalest; its memory stays bounded and the others are served."""
    import psutil

    assert fakehw("daemon", "start", "--nodes", "512", "--gpus-per-node", "8").returncode == 0
    daemon = psutil.Process(daemon_pid(runtime_dir))
    rss_before = daemon.memory_info().rss
    request = b'{"id":1,"op":"snapshot"}\n'
    hoarders = []
    with Client.connect(autostart=False) as bystander:
        for _ in range(60):
            sock = raw_connection(runtime_dir)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request)
            hoarders.append(sock)
            bystander.request("status")  # served meanwhile
        time.sleep(2)  # the budget is checked twice a second
        grown_mib = (daemon.memory_info().rss - rss_before) / 2**20
        assert grown_mib < 250, f"the daemon grew by {grown_mib:.0f} MiB"
        assert bystander.snapshot(0)["nodes"][0]["hostname"] == "dgx-h100-001"
        assert "together hold more than" in (runtime_dir / "daemon.log").read_text()
    for sock in hoarders:
        sock.close()


@pytest.fixture
def half_daemon(
    listening: Callable[[type[socketserver.BaseRequestHandler]], str],
) -> Callable[[bytes], str]:
    """A TCP server that says a fakehw daemon's hello, then answers the next request
    with what the test says: a broken daemon behind FAKEHW_REMOTE."""
    hello = {"protocol": protocol.PROTOCOL_VERSION, "server": "fakehw 0", "daemon_pid": 1,
             "cluster": {"nodes": 1, "gpus_per_node": 8, "gpu_model": "h100-sxm"},
             "model_name": "NVIDIA H100 80GB HBM3", "gpus": 8, "hostnames": ["dgx-h100-1"],
             "phases": []}  # fmt: skip

    def serve(reply: bytes) -> str:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                first = json.loads(self.rfile.readline())
                answer = {"id": first["id"], "ok": True, "result": hello}
                self.wfile.write(json.dumps(answer).encode() + b"\n")
                second = json.loads(self.rfile.readline())
                self.wfile.write(reply.replace(b"ID", str(second["id"]).encode()))

        return listening(Handler)

    return serve


@pytest.mark.parametrize(
    "reply",
    [
        b'{"id": ID, "ok": false, "error": "not an object"}\n',
        b'{"id": ID, "ok": true, "result": {}}\n',
        b'{"id": ID, "ok": true, "result": [1]}\n',
        b'{"id": ID, "ok": true, "result": {"nodes": null}}\n',
    ],
    ids=["an error that is not an object", "an empty result", "a list", "nodes null"],
)
def test_a_remote_whose_later_replies_are_malformed_is_named_not_a_traceback(
    half_daemon: Callable[[bytes], str], reply: bytes
) -> None:
    env = {**os.environ, "FAKEHW_REMOTE": half_daemon(reply), "FAKEHW_TOKEN": "x" * 20}
    python = sys.executable
    for argv in ([python, "-m", "fakehw.smi", "-L"], [python, "-m", "fakehw.gpustat"],
                 [python, "-m", "fakehw.nvitop", "-1"]):  # fmt: skip
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30,
                                check=False)  # fmt: skip
        said = result.stderr + result.stdout
        assert result.returncode != 0 and "Traceback" not in said, (argv, said)


def test_a_node_number_of_thousands_of_digits_is_no_node_not_a_traceback(
    runtime_dir: Path,
) -> None:
    assert fakehw("daemon", "start", "--nodes", "2", "--gpus-per-node", "1").returncode == 0
    env = {**os.environ, "FAKEHW_NODE": "7" * 5000}
    for module in ("fakehw.smi", "fakehw.gpustat"):
        result = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True,
                                text=True, timeout=30, check=False)  # fmt: skip
        said = result.stderr + result.stdout
        assert result.returncode != 0 and "Traceback" not in said, (module, said)
