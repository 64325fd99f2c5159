"""The optional TCP listener: off by default, loopback by default, token required,
read-only, and no way for strangers to crowd out local tools."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SMI_LAUNCHER, fakehw, wait_for

from fakehw.service import protocol
from fakehw.service.connections import MAX_TCP_CONNECTIONS


class TcpDaemon:
    def __init__(self, *flags: str) -> None:
        self.runtime = tempfile.mkdtemp(prefix="fhw-tcp-")
        self.env = {**os.environ, "FAKEHW_RUNTIME_DIR": self.runtime}
        started = fakehw("daemon", "start", "--idle-timeout", "120", *flags, env=self.env)
        self.start_result = started
        if started.returncode == 0:
            self.status = json.loads(fakehw("daemon", "status", "--json", env=self.env).stdout)

    @property
    def address(self) -> str:
        return str(self.status["tcp"])

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def token(self) -> str:
        return Path(self.status["tcp_token_file"]).read_text().strip()

    def remote_env(self, **extra: str) -> dict[str, str]:
        """A viewer elsewhere: its own (empty) runtime dir, the daemon by address."""
        elsewhere = tempfile.mkdtemp(prefix="fhw-far-")
        return {**os.environ, "FAKEHW_RUNTIME_DIR": elsewhere, "FAKEHW_REMOTE": self.address,
                **extra}  # fmt: skip

    def stop(self) -> None:
        fakehw("daemon", "stop", env=self.env)
        shutil.rmtree(self.runtime, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon() -> Iterator[TcpDaemon]:
    node = TcpDaemon("--tcp", "0")
    assert node.start_result.returncode == 0, node.start_result.stderr
    yield node
    node.stop()


def raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def replies(sock: socket.socket) -> tuple[list[dict[str, object]], bool]:
    """What the daemon sends until it closes (True) or goes quiet or 2 s pass (False)."""
    data = b""
    sock.settimeout(1.0)
    closed = False
    deadline = time.monotonic() + 2.0  # pushes would keep it talking forever
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
    except TimeoutError:
        pass
    except ConnectionResetError:
        closed = True
    return [json.loads(line) for line in data.splitlines() if line.strip()], closed


def smi(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SMI_LAUNCHER), *args], env=env,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


def test_off_by_default(runtime_dir: Path) -> None:
    assert fakehw("daemon", "start").returncode == 0
    status = json.loads(fakehw("daemon", "status", "--json").stdout)
    assert status["tcp"] is None
    assert not (runtime_dir / "tcp.token").exists()


def test_loopback_by_default_with_a_private_random_token(daemon: TcpDaemon) -> None:
    assert daemon.address.startswith("127.0.0.1:")
    token_file = Path(daemon.status["tcp_token_file"])
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(daemon.token) >= 32
    text = fakehw("daemon", "status", env=daemon.env).stdout
    assert f"tcp:       {daemon.address}" in text and str(token_file) in text


def test_viewers_work_remotely_with_the_token(daemon: TcpDaemon) -> None:
    local = smi(daemon.env, "-L")
    far_env = daemon.remote_env(FAKEHW_TOKEN_FILE=daemon.status["tcp_token_file"])
    far = smi(far_env, "-L")
    assert far.returncode == 0, far.stderr
    assert far.stdout == local.stdout and far.stdout.count("GPU-") == 8
    # Nothing was started on the viewer's side.
    assert not os.path.exists(os.path.join(far_env["FAKEHW_RUNTIME_DIR"], "daemon.sock"))
    query = smi({**far_env, "FAKEHW_TOKEN": daemon.token},
                "--query-gpu=index,name,memory.total", "--format=csv,noheader")  # fmt: skip
    assert query.returncode == 0
    assert query.stdout.splitlines()[7] == "7, NVIDIA H100 80GB HBM3, 81559 MiB"
    gpustat = subprocess.run([sys.executable, "-m", "fakehw.gpustat", "--no-color"], env=far_env,
                             capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert gpustat.returncode == 0 and gpustat.stdout.count("NVIDIA H100 80GB HBM3") == 8
    nvitop = subprocess.run([sys.executable, "-m", "fakehw.nvitop", "-1"], env=far_env,
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert nvitop.returncode == 0 and nvitop.stdout.count("H100 80GB HBM3") == 8
    dmon = smi(far_env, "dmon", "-c", "2")  # a subscription over TCP
    assert dmon.returncode == 0 and len(dmon.stdout.splitlines()) == 2 + 2 * 8


def test_no_token_or_a_wrong_one_is_refused(daemon: TcpDaemon) -> None:
    missing = smi(daemon.remote_env(), "-L")
    assert missing.returncode == 9  # nvidia-smi's "cannot talk to the driver"
    assert "couldn't communicate with the NVIDIA driver" in missing.stdout
    assert "FAKEHW_REMOTE is set but no token" in missing.stderr
    wrong = smi(daemon.remote_env(FAKEHW_TOKEN="x" * 43), "-L")
    assert wrong.returncode == 9 and "wrong token" in wrong.stderr
    assert "Traceback" not in missing.stderr + wrong.stderr


def test_a_stranger_gets_one_try_then_the_door(daemon: TcpDaemon) -> None:
    cases = [
        {"op": "hello", "token": "guess-guess-guess-guess"},  # wrong token
        {"op": "snapshot"},  # no hello at all
        {"op": "hello"},  # no token
        {"op": "attach", "pid": os.getpid(), "name": "x", "gpus": [0], "token": daemon.token},
    ]
    for request in cases:
        with raw(daemon.port) as sock:
            sock.sendall(protocol.encode({"id": 1, **request}))
            sock.sendall(protocol.encode({"id": 2, "op": "snapshot"}))  # never answered
            answers, closed = replies(sock)
        assert closed, request
        assert [a["error"]["code"] for a in answers] == ["unauthorized"], request  # type: ignore[index]
    with raw(daemon.port) as sock:  # an endless first line is cut off early
        sock.sendall(b"x" * (protocol.MAX_UNAUTHENTICATED_LINE_BYTES + 10))
        answers, closed = replies(sock)
    assert closed and answers[0]["error"]["code"] == "too_large"  # type: ignore[index]


def test_a_silent_stranger_is_dropped_after_the_auth_timeout(daemon: TcpDaemon) -> None:
    with raw(daemon.port) as sock:
        began = time.monotonic()
        sock.settimeout(protocol.AUTH_TIMEOUT_S + 3)
        assert sock.recv(100) == b""
        waited = time.monotonic() - began
    assert protocol.AUTH_TIMEOUT_S - 0.1 <= waited <= protocol.AUTH_TIMEOUT_S + 1.5


def test_an_authenticated_peer_may_only_look(daemon: TcpDaemon) -> None:
    with raw(daemon.port) as sock:
        sock.sendall(protocol.encode({"id": 1, "op": "hello", "protocol": 1,
                                      "token": daemon.token}))  # fmt: skip
        for ident, op in enumerate(("attach", "set_phase", "detach", "inject", "shutdown"), 2):
            sock.sendall(protocol.encode({"id": ident, "op": op}))
        sock.sendall(protocol.encode({"id": 9, "op": "subscribe", "interval_ms": 100}))
        time.sleep(0.5)
        answers, closed = replies(sock)
    assert not closed
    assert answers[0]["ok"] and answers[0]["result"]["gpus"] == 8  # type: ignore[index]
    refused = [a for a in answers if a.get("id") in range(2, 7)]
    assert [a["error"]["code"] for a in refused] == ["forbidden"] * 5  # type: ignore[index]
    pushes = [a for a in answers if "subscription" in a and "id" not in a]
    assert len(pushes) >= 3 and len(pushes[0]["snapshot"]["nodes"][0]["gpus"]) == 8  # type: ignore[index]
    far_env = daemon.remote_env(FAKEHW_TOKEN=daemon.token)
    inject = fakehw("inject", "thermal", "--gpu", "0", env=far_env)
    assert inject.returncode == 1 and "not allowed over TCP" in inject.stderr
    stop = fakehw("daemon", "stop", env=far_env)
    assert stop.returncode == 1 and "not allowed over TCP" in stop.stderr
    train = subprocess.run([sys.executable, "-m", "fakehw.train", "--exit-after-steps", "2"],
                           env=far_env, capture_output=True, text=True, timeout=30,
                           check=False)  # fmt: skip
    assert train.returncode == 1 and "unset FAKEHW_REMOTE" in train.stderr
    assert json.loads(fakehw("daemon", "status", "--json", env=daemon.env).stdout)["running"]


def test_strangers_never_crowd_out_local_tools(daemon: TcpDaemon) -> None:
    crowd = [raw(daemon.port) for _ in range(MAX_TCP_CONNECTIONS + 20)]
    try:
        time.sleep(0.5)
        local = smi(daemon.env, "-L")
        assert local.returncode == 0 and local.stdout.count("GPU-") == 8
        # Beyond the TCP budget, newcomers are told the daemon is busy.
        answers, closed = replies(crowd[-1])
        assert closed and answers[0]["error"]["code"] == "busy"  # type: ignore[index]
    finally:
        for sock in crowd:
            sock.close()
    wait_for(lambda: smi(daemon.remote_env(FAKEHW_TOKEN=daemon.token), "-L").returncode == 0,
             timeout=10)  # fmt: skip


def test_token_file_must_be_private_and_bad_addresses_are_explained(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-s3cret-s3cret-s3cret\n")
    token.chmod(0o644)
    loose = TcpDaemon("--tcp", "0", "--tcp-token-file", str(token))
    assert loose.start_result.returncode == 2  # a bad flag value: a usage error
    assert f"readable by others: chmod 600 {token}" in loose.start_result.stderr
    token.chmod(0o600)
    good = TcpDaemon("--tcp", "0", "--tcp-token-file", str(token))
    try:
        assert good.start_result.returncode == 0, good.start_result.stderr
        listed = smi(good.remote_env(FAKEHW_TOKEN="s3cret-s3cret-s3cret-s3cret"), "-L")
        assert listed.returncode == 0 and listed.stdout.count("GPU-") == 8
    finally:
        good.stop()
    for value, message, code in (
        ("1.2.3.4:99999", "PORT 0-65535", 2),  # a usage error
        ("localhost:http", "PORT 0-65535", 2),
        ("192.0.2.1:7000", "cannot listen on 192.0.2.1:7000", 1),  # not an address of ours
    ):
        bad = TcpDaemon("--tcp", value)
        assert bad.start_result.returncode == code, value
        assert message in bad.start_result.stderr and "Traceback" not in bad.start_result.stderr
        shutil.rmtree(bad.runtime, ignore_errors=True)
