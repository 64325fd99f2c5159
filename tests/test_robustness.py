"""Trying to break the daemon: fuzzed, partial, oversized, binary and slow input."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import alive, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakehw.service import protocol
from fakehw.service.client import Client

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Client]]:
    """One daemon for the whole module, and a bystander client that must keep working."""
    import tempfile

    root = tempfile.mkdtemp(prefix="fhw-fuzz-")
    client = Client.connect(root=root)
    yield root, client
    client.request("shutdown")
    client.close()


def connection(root: str) -> socket.socket:
    deadline = time.monotonic() + 5
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(os.path.join(root, "daemon.sock"))
            return sock
        except BlockingIOError:  # listen queue full for a moment, as clients retry
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def still_serving(client: Client) -> None:
    began = time.monotonic()
    assert client.request("status")["daemon_pid"] > 0
    assert time.monotonic() - began < 1.0  # nobody else's input blocked it


def read_replies(sock: socket.socket, deadline_s: float = 2.0) -> list[dict[str, object]]:
    sock.settimeout(0.2)
    data = b""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        if data.endswith(b"\n"):
            break
    return [json.loads(line) for line in data.splitlines() if line.strip()]


@FUZZ
@given(st.binary(max_size=4096))
def test_binary_garbage(daemon: tuple[str, Client], blob: bytes) -> None:
    root, bystander = daemon
    with connection(root) as sock:
        sock.sendall(blob + b"\n")
        for reply in read_replies(sock, 0.5):
            assert reply["ok"] is False and reply["error"]["code"] in (  # type: ignore[index]
                "bad_request",
                "unknown_op",
                "too_large",
                "protocol_mismatch",
            )
    still_serving(bystander)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
ops = st.sampled_from(["hello", "status", "snapshot", "subscribe", "unsubscribe", "attach",
                       "set_phase", "detach", "nonsense", ""])  # fmt: skip


@FUZZ
@given(op=ops, args=st.dictionaries(st.sampled_from(
    ["id", "node", "detail", "interval_ms", "pid", "gpus", "name", "phase", "memory_plan",
     "memory_mib", "cycle_s", "intensity", "watch_pid", "job", "user", "subscription",
     "protocol", "nodes"]), json_values, max_size=6))  # fmt: skip
def test_well_formed_json_with_wild_arguments(
    daemon: tuple[str, Client], op: str, args: dict[str, object]
) -> None:
    root, bystander = daemon
    message = {"id": 1, "op": op, **args}
    with connection(root) as sock:
        sock.sendall(json.dumps(message).encode() + b"\n")
        replies = read_replies(sock)
        assert len(replies) == 1 or op == "subscribe"
        if not replies[0]["ok"]:
            assert replies[0]["error"]["code"] != "internal", replies[0]  # type: ignore[index]
    still_serving(bystander)
    # nothing attached by a fuzzed message outlives its (short-lived) connection's checks
    for process in bystander.request("status")["processes"]:
        bystander.request("detach", pid=process["pid"])


def test_partial_lines_and_slow_writers_block_no_one(daemon: tuple[str, Client]) -> None:
    root, bystander = daemon
    slow = [connection(root) for _ in range(50)]
    for sock in slow:
        sock.sendall(b'{"id": 1, "op": "sta')  # and then nothing, for a while
    still_serving(bystander)
    for sock in slow:  # a byte at a time
        for byte in b'tus"}\n':
            sock.sendall(bytes([byte]))
    for sock in slow:
        assert read_replies(sock)[0]["ok"] is True
        sock.close()
    still_serving(bystander)


def test_oversized_and_endless_input_is_cut_off(daemon: tuple[str, Client]) -> None:
    root, bystander = daemon
    daemon_process = psutil.Process(bystander.request("status")["daemon_pid"])
    before = daemon_process.memory_info().rss
    for _ in range(5):
        with connection(root) as sock:
            try:
                for _ in range(64):  # 4 MiB without a newline
                    sock.sendall(b"7" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon hung up: what it should do
            replies = read_replies(sock)
            assert not replies or replies[0]["error"]["code"] == "too_large"  # type: ignore[index]
    still_serving(bystander)
    assert daemon_process.memory_info().rss - before < 32 * 2**20


def test_a_client_that_never_reads_is_dropped(daemon: tuple[str, Client]) -> None:
    root, bystander = daemon
    sock = connection(root)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for k in range(16):
        sock.sendall(json.dumps({"id": k, "op": "subscribe", "interval_ms": 50,
                                 "detail": True}).encode() + b"\n")  # fmt: skip
    time.sleep(3)
    still_serving(bystander)
    assert bystander.request("status")["clients"] <= 3


def test_connection_flood_is_bounded(daemon: tuple[str, Client]) -> None:
    root, bystander = daemon
    daemon_process = psutil.Process(bystander.request("status")["daemon_pid"])
    fds_before = daemon_process.num_fds()
    socks = []
    for _ in range(300):
        socks.append(connection(root))
    wait_for(lambda: bystander.request("status")["clients"] >= 300, timeout=10)
    still_serving(bystander)
    for sock in socks:
        sock.close()
    wait_for(lambda: bystander.request("status")["clients"] <= 2, timeout=10)
    assert daemon_process.num_fds() <= fds_before + 2
    assert alive(daemon_process.pid)


def test_a_crowded_daemon_tells_newcomers_busy_yet_can_be_looked_at_and_stopped(
    daemon: tuple[str, Client],
) -> None:
    """1,000 idle connections: a viewer is told the daemon is busy (not "out of order",
    not "not running"); `fakehw daemon status` still reports it, within a reserve of
    connections that may only ask status or stop; past the reserve, busy at once."""
    from fakehw.service.connections import MAX_CONNECTIONS, RESERVED_CONNECTIONS

    root, bystander = daemon
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = MAX_CONNECTIONS + RESERVED_CONNECTIONS + 200
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    socks: list[socket.socket] = []
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": root}
    try:
        while bystander.request("status")["clients"] < MAX_CONNECTIONS:
            socks.append(connection(root))
            if len(socks) % 100 == 0:
                time.sleep(0.05)  # let the daemon accept
        viewer = subprocess.run([sys.executable, "-m", "fakehw.smi"], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert viewer.returncode != 0 and "busy" in viewer.stderr, viewer.stderr
        assert "Traceback" not in viewer.stderr and "out-of-order" not in viewer.stderr
        status = subprocess.run([sys.executable, "-m", "fakehw", "daemon", "status"], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert status.returncode == 0 and "fakehw daemon: running" in status.stdout, status
        extra = connection(root)
        socks.append(extra)
        extra.sendall(b'{"id": 1, "op": "snapshot", "node": 0}\n')
        (reply,) = read_replies(extra)
        assert reply["ok"] is False and reply["error"]["code"] == "busy"  # type: ignore[index]
        assert extra.recv(1) == b""  # and closed
        for _ in range(RESERVED_CONNECTIONS + 1):
            socks.append(connection(root))
        wait_for(lambda: bystander.request("status")["clients"]
                 >= MAX_CONNECTIONS + RESERVED_CONNECTIONS, timeout=10)  # fmt: skip
        beyond = connection(root)
        socks.append(beyond)
        (reply,) = read_replies(beyond)
        assert reply["ok"] is False and reply["error"]["code"] == "busy"  # type: ignore[index]
        still_serving(bystander)
    finally:
        for sock in socks:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(lambda: bystander.request("status")["clients"] <= 2, timeout=10)


def test_out_of_descriptors_it_pauses_instead_of_spinning(tmp_path: Path) -> None:
    import subprocess
    import sys
    import tempfile

    root = tempfile.mkdtemp(prefix="fhw-fd-")

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    started = subprocess.run([sys.executable, "-m", "fakehw", "daemon", "start"],
                             env={**os.environ, "FAKEHW_RUNTIME_DIR": root},
                             preexec_fn=few_descriptors, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert started.returncode == 0, started.stderr
    client = Client.connect(root=root, autostart=False)
    daemon = psutil.Process(client.request("status")["daemon_pid"])
    socks = [connection(root) for _ in range(60)]  # more than it can hold open
    try:
        time.sleep(1.0)
        before = daemon.cpu_times()
        time.sleep(3.0)
        after = daemon.cpu_times()
        used = (after.user - before.user) + (after.system - before.system)
        assert used < 0.6, f"{used:.2f} s of CPU in 3 s: spinning"
        still_serving(client)
        assert "not accepting for 1 s" in Path(root, "daemon.log").read_text()
    finally:
        for sock in socks:
            sock.close()
    # with descriptors free again, newcomers get in
    wait_for(lambda: client.request("status")["clients"] <= 2, timeout=10)
    with Client.connect(root=root, autostart=False) as newcomer:
        assert newcomer.request("status")["daemon_pid"] == daemon.pid
    client.request("shutdown")
    client.close()


def test_protocol_limits_are_what_the_document_says() -> None:
    text = " ".join((Path(__file__).parents[1] / "docs" / "protocol.md").read_text().split())
    from fakehw.processes import MAX_PROCESSES_PER_GPU
    from fakehw.service.connections import MAX_CONNECTIONS

    assert protocol.MAX_LINE_BYTES == 1 << 20 and "1 MiB" in text
    assert f"{MAX_CONNECTIONS} connections" in text
    assert f"{MAX_PROCESSES_PER_GPU} processes per GPU" in text
    from fakehw.service.connections import MAX_TCP_CONNECTIONS

    assert f"At most {MAX_TCP_CONNECTIONS} TCP connections" in text
    assert f"within {protocol.AUTH_TIMEOUT_S:g} s" in text
    assert protocol.MAX_UNAUTHENTICATED_LINE_BYTES == 4096 and "may not exceed 4 KiB" in text
