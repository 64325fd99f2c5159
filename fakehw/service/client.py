"""Talking to the daemon: connect (starting it if needed), ask, subscribe.

On every viewer's start-up path (``fakehw.programs.startup``): it imports only
``os``, ``select``, ``json`` and ``_socket`` (the C module under ``socket``, whose
Python layer costs a viewer's start-up more than its whole connection) and fakehw's
light modules until it has to start a daemon or reach one over TCP. No numpy, no
psutil.
"""

from __future__ import annotations

import _socket
import json
import os
import select

from fakehw import TYPE_CHECKING
from fakehw.service import protocol as proto
from fakehw.service.runtime import (
    RuntimeDirError,
    RuntimePaths,
    TokenError,
    check_socket_owner,
    open_private,
    read_token_file,
    runtime_paths,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from fakehw.contract.config import ClusterConfig, DaemonConfig
    from fakehw.contract.snapshot import Snapshot

START_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 10.0
RECONNECT_S = 5.0  # how long a resilient client keeps trying to reach a (re)started daemon
BUSY_RETRY_S = 2.0


MAX_REPLY_BYTES = 64 << 20  # a reply line longer than this is not from a fakehw daemon


class DaemonUnavailable(RuntimeError):
    """No daemon answers and none could be started; the message says why."""


class DaemonNotAnswering(DaemonUnavailable):
    """A daemon runs (its process exists) but does not answer: stopped, or stuck."""


class DaemonBusy(DaemonNotAnswering):
    """The daemon serves as many clients as it will: it answers only to say so."""


class DaemonBroken(DaemonUnavailable):
    """A daemon runs (its process exists) but its answers fail: it closed the connection
    on hello, or answered nonsense. Waiting does not help; the message says what failed."""


class RequestFailed(RuntimeError):
    """The daemon answered with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Client:
    """One connection to the daemon. Not thread-safe: one per thread."""

    def __init__(self, sock: _socket.socket, paths: RuntimePaths) -> None:
        self.sock = sock
        self.paths = paths
        self._buffer = bytearray()
        self._next_id = 1
        self._pushes: list[dict[str, Any]] = []
        self.hello: dict[str, Any] = {}

    # ------------------------------------------------------------ connecting
    @classmethod
    def connect(
        cls,
        *,
        client_name: str = "fakehw",
        autostart: bool = True,
        cluster: ClusterConfig | None = None,
        root: str | os.PathLike[str] | None = None,
        timeout: float = 0.0,
    ) -> Client:
        """Connect to the user's daemon, starting one if none runs.

        ``cluster`` is only used to start a daemon; an already running daemon
        keeps its own cluster (``client.hello["cluster"]`` tells which).
        With ``FAKEHW_REMOTE=HOST:PORT`` set (and no ``root``), connect to a
        daemon's TCP listener instead, with the token of ``FAKEHW_TOKEN`` or
        ``FAKEHW_TOKEN_FILE``; such a daemon is never started from here.
        ``timeout``: seconds to wait for each answer (default ``REQUEST_TIMEOUT_S``);
        a daemon whose process is there but does not answer in time raises
        ``DaemonNotAnswering``.
        """
        remote = os.environ.get("FAKEHW_REMOTE", "").strip() if root is None else ""
        hello: dict[str, Any] = {"protocol": proto.PROTOCOL_VERSION, "client": client_name}
        if remote:
            paths = RuntimePaths(remote)
            hello["token"] = remote_token()  # a bad token file is said before any connection
            sock = connect_remote(remote)
        else:
            try:
                paths = runtime_paths(root, create=autostart)
            except RuntimeDirError as exc:
                raise DaemonUnavailable(str(exc)) from None
            found = try_connect(paths)
            if found is None:
                if not autostart:
                    raise DaemonUnavailable(f"no daemon listens on {paths.socket}")
                found = start_daemon(paths, cluster)
            sock = found
        sock.settimeout(timeout or REQUEST_TIMEOUT_S)
        client = cls(sock, paths)
        try:
            client.hello = _checked_hello(client.request("hello", **hello), paths)
        except DaemonNotAnswering:
            client.close()
            raise
        except (DaemonUnavailable, OSError, RequestFailed) as exc:
            client.close()
            process = daemon_process(paths)
            if process is not None:
                raise DaemonBroken(
                    f"the fakehw daemon (pid {process[0]}) runs but its hello failed: {exc}"
                ) from None
            if isinstance(exc, DaemonUnavailable):
                raise
            raise DaemonUnavailable(f"the daemon did not answer hello: {exc}") from None
        return client

    def close(self) -> None:
        # not contextlib.suppress: a viewer's start-up does not load contextlib
        try:  # noqa: SIM105
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- requests
    def request(self, op: str, **args: Any) -> Any:
        """Send one request and wait for its response; raise ``RequestFailed``."""
        result = self.request_many([(op, args)])[0]
        if isinstance(result, RequestFailed):
            raise result
        return result

    def request_many(self, requests: list[tuple[str, dict[str, Any]]]) -> list[Any | RequestFailed]:
        """Send many requests at once (pipelined) and collect their responses in
        order: a result, or the ``RequestFailed`` of a request that failed. Replies
        are read while the requests are still being sent: the daemon answers the next
        request only once its client takes the replies to the earlier ones."""
        first = self._next_id
        self._next_id += len(requests)
        payload = memoryview(
            b"".join(
                proto.encode({"id": first + k, "op": op, **args})
                for k, (op, args) in enumerate(requests)
            )
        )
        replies: dict[Any, dict[str, Any]] = {}
        sent = 0
        try:
            while len(replies) < len(requests):
                for reply in self._buffered_messages():
                    self._file_reply(reply, replies, first, len(requests))
                if len(replies) == len(requests):
                    break
                sending = sent < len(payload)
                readable, writable, _ = select.select(
                    [self.sock], [self.sock] if sending else [], [], self.sock.gettimeout()
                )
                if not readable and not writable:
                    raise TimeoutError
                if writable:
                    sent += self.sock.send(payload[sent : sent + (1 << 20)])
                if readable:
                    self._receive()
        except TimeoutError:
            raise not_answering(self.paths, requests[0][0] if requests else "") from None
        except OSError as exc:
            raise DaemonUnavailable(f"lost the connection to the daemon: {exc}") from None
        return [_outcome(replies[first + k]) for k in range(len(requests))]

    def _file_reply(
        self, reply: dict[str, Any], replies: dict[Any, dict[str, Any]], first: int, count: int
    ) -> None:
        """Keep a reply to one of the requests in flight; a push for later."""
        if "subscription" in reply and "id" not in reply:
            self._pushes.append(reply)
            return
        request_id = reply.get("id")
        if isinstance(request_id, int) and first <= request_id < first + count:
            replies[request_id] = reply
            return
        error = reply.get("error")
        if request_id is None and isinstance(error, dict) and error.get("code") == proto.BUSY:
            raise DaemonBusy(f"the fakehw daemon is busy: {error.get('message')}")
        raise DaemonUnavailable(f"out-of-order reply from the daemon: {reply!r:.200}")

    def snapshot(self, node: int | str | None = None, detail: bool = False) -> Snapshot:
        args: dict[str, Any] = {} if node is None else {"node": node}
        if detail:
            args["detail"] = True
        result = self.request("snapshot", **args)
        if not _is_snapshot(result):
            raise DaemonBroken(f"{self.paths.root} answered a snapshot without its nodes")
        snapshot: Snapshot = result
        return snapshot

    def subscribe(
        self, interval_ms: int, node: int | str | None = None, detail: bool = False
    ) -> Iterator[Snapshot]:
        """Snapshots pushed every ``interval_ms``, starting at once, until closed."""
        args: dict[str, Any] = {"interval_ms": interval_ms}
        if node is not None:
            args["node"] = node
        if detail:
            args["detail"] = True
        ident = self.request("subscribe", **args)["subscription"]
        self.sock.settimeout(None)
        while True:
            if self._pushes:
                message = self._pushes.pop(0)
            else:
                try:
                    message = self._read_message()
                except OSError as exc:
                    raise DaemonUnavailable(f"lost the connection to the daemon: {exc}") from None
            if message.get("subscription") == ident:
                snapshot: Snapshot = message["snapshot"]
                yield snapshot

    def _read_message(self) -> dict[str, Any]:
        """The next line from the daemon, as an object (waiting for it)."""
        while True:
            for message in self._buffered_messages(limit=1):
                return message
            self._receive()

    def _receive(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionResetError("the daemon closed the connection")
        self._buffer += chunk
        if len(self._buffer) > MAX_REPLY_BYTES and self._buffer.find(b"\n") < 0:
            raise DaemonUnavailable(f"{self.paths.root} is not a fakehw daemon (no line end)")

    def _buffered_messages(self, limit: int = 0) -> Iterator[dict[str, Any]]:
        """The whole lines received so far, as objects; ``DaemonUnavailable`` if what
        answers is not a fakehw daemon (an HTTP server, say, behind FAKEHW_REMOTE)."""
        taken = 0
        while (end := self._buffer.find(b"\n")) >= 0 and (not limit or taken < limit):
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            try:
                message = json.loads(line)
            except (ValueError, RecursionError):
                message = None
            if not isinstance(message, dict) or not _well_formed(message):
                raise DaemonUnavailable(
                    f"{self.paths.root} is not a fakehw daemon: it answered "
                    f"{line[:60].decode(errors='replace')!r}"
                )
            taken += 1
            yield message


def _well_formed(message: dict[str, Any]) -> bool:
    """A reply of the protocol's shape (docs/protocol.md): a push, a result or an error."""
    if "subscription" in message and "id" not in message:
        return _is_snapshot(message.get("snapshot"))
    if message.get("ok") is True:
        return "result" in message
    error = message.get("error")
    return message.get("ok") is False and isinstance(error, dict)


def _is_snapshot(result: Any) -> bool:
    return (
        isinstance(result, dict)
        and isinstance(result.get("nodes"), list)
        and all(isinstance(node, dict) for node in result["nodes"])
    )


def _outcome(reply: dict[str, Any]) -> Any | RequestFailed:
    if reply.get("ok"):
        return reply.get("result")
    error = reply["error"]
    if error.get("code") == proto.BUSY:  # not this request's fault: the daemon's crowd
        raise DaemonBusy(str(error.get("message")))
    return RequestFailed(str(error.get("code")), str(error.get("message")))


class ResilientClient:
    """A ``Client`` that outlives its daemon: when the connection is lost (the
    daemon was killed, or restarted), it reconnects, starting a daemon of the
    same cluster if none runs, and retries; ``generation`` counts reconnections
    so that a caller can re-attach what it had attached."""

    def __init__(self, client_name: str, cluster: ClusterConfig | None = None,
                 retry_s: float = RECONNECT_S, client: Client | None = None) -> None:  # fmt: skip
        self.client_name = client_name
        self.retry_s = retry_s
        self.generation = 0
        if client is None:
            client = Client.connect(client_name=client_name, cluster=cluster)
        self.client = client
        # The cluster to start again if the daemon is gone (read lazily: cheap start-up).
        self._cluster_json = dict(self.client.hello["cluster"])

    @property
    def hello(self) -> dict[str, Any]:
        return self.client.hello

    @property
    def paths(self) -> RuntimePaths:
        return self.client.paths

    def reconnect(self) -> None:
        import time

        from fakehw.contract.config import ClusterConfig

        self.client.close()
        cluster = ClusterConfig.from_json(self._cluster_json)
        deadline = time.monotonic() + self.retry_s
        while True:
            try:
                self.client = Client.connect(client_name=self.client_name, cluster=cluster)
                self.generation += 1
                return
            except DaemonBusy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
            except DaemonNotAnswering:
                # Its process is there (stopped, or busy): it will answer once it runs
                # again, as after a restart; a daemon that died meanwhile is replaced.
                deadline = time.monotonic() + self.retry_s
                time.sleep(0.1)
            except DaemonUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def request(self, op: str, **args: Any) -> Any:
        try:
            return self.client.request(op, **args)
        except DaemonUnavailable:
            self.reconnect()
            return self.client.request(op, **args)

    def request_many(self, requests: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        try:
            return self.client.request_many(requests)
        except DaemonUnavailable:
            self.reconnect()
            return self.client.request_many(requests)

    def snapshot(self, node: int | str | None = None, detail: bool = False) -> Snapshot:
        try:
            return self.client.snapshot(node, detail)
        except DaemonUnavailable:
            self.reconnect()
            return self.client.snapshot(node, detail)

    def subscribe(
        self, interval_ms: int, node: int | str | None = None, detail: bool = False
    ) -> Iterator[Snapshot]:
        while True:
            try:
                yield from self.client.subscribe(interval_ms, node, detail)
            except DaemonUnavailable:
                self.reconnect()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ResilientClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checked_hello(result: Any, paths: RuntimePaths) -> dict[str, Any]:
    """The daemon's hello, checked to be a fakehw daemon's before anyone relies on it."""
    cluster = result.get("cluster") if isinstance(result, dict) else None
    if (
        not isinstance(cluster, dict)
        or not isinstance(result.get("hostnames"), list)
        or not isinstance(result.get("gpus"), int)
        or not all(isinstance(cluster.get(key), int) for key in ("nodes", "gpus_per_node"))
    ):
        raise DaemonUnavailable(
            f"{paths.root} is not a fakehw daemon: its hello lacks the cluster it serves"
        )
    hello: dict[str, Any] = result
    return hello


def daemon_process(paths: RuntimePaths) -> tuple[int, str] | None:
    """The PID in the pid file and its process's state ("stopped", "running", ...), if
    that process exists and is a fakehw daemon; None otherwise. (psutil: error paths only.)"""
    if not os.path.isabs(paths.root):
        return None  # a remote daemon ("HOST:PORT"): nothing of it on this machine
    try:
        with open(paths.pid_file) as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    import psutil

    try:
        process = psutil.Process(pid)
        command = process.cmdline()
        status = str(process.status())
    except (psutil.Error, OSError):
        return None
    if "fakehw" not in command or "daemon" not in command:
        return None
    return pid, status


def not_answering(paths: RuntimePaths, op: str) -> DaemonUnavailable:
    """What to say when the daemon did not answer in time: a stopped or stuck daemon
    (its process is there) is ``DaemonNotAnswering``; else the daemon is gone."""
    found = daemon_process(paths)
    if found is None:
        return DaemonUnavailable(f"the daemon did not answer {op!r} in time")
    pid, status = found
    if status == "stopped":
        return DaemonNotAnswering(
            f"the fakehw daemon (pid {pid}) is stopped (SIGSTOP, Ctrl-Z) and does not answer; "
            f"`kill -CONT {pid}` resumes it"
        )
    return DaemonNotAnswering(
        f"the fakehw daemon (pid {pid}) does not answer (its process is {status}: busy or stuck)"
    )


def try_connect(paths: RuntimePaths) -> _socket.socket | None:
    """A connected socket, or ``None`` if no daemon listens (stale file or none)."""
    if not os.path.lexists(paths.socket):
        return None
    try:
        check_socket_owner(paths.socket)
    except RuntimeDirError as exc:
        raise DaemonUnavailable(str(exc)) from None
    import time

    deadline = time.monotonic() + BUSY_RETRY_S
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(REQUEST_TIMEOUT_S)
        try:
            sock.connect(paths.socket)
            return sock
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            return None
        except BlockingIOError:  # the listen queue is full: the daemon is busy accepting
            sock.close()
            if time.monotonic() > deadline:
                raise DaemonUnavailable(f"{paths.socket} is too busy to accept") from None
            time.sleep(0.01)
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(f"cannot connect to {paths.socket}: {exc.strerror}") from None


def connect_remote(address: str) -> _socket.socket:
    """A TCP connection to a daemon's listener at ``[HOST:]PORT``."""
    import socket

    try:
        host, port = proto.parse_tcp_address(address)
    except ValueError as exc:
        raise DaemonUnavailable(f"FAKEHW_REMOTE: {exc}") from None
    try:
        sock = socket.create_connection((host, port), timeout=REQUEST_TIMEOUT_S)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DaemonUnavailable(
            f"cannot connect to the fakehw daemon at {address}: {reason}"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def remote_token() -> str:
    """The token for ``FAKEHW_REMOTE``: ``FAKEHW_TOKEN``, else ``FAKEHW_TOKEN_FILE``'s line."""
    token = os.environ.get("FAKEHW_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("FAKEHW_TOKEN_FILE", "").strip()
    if not path:
        raise DaemonUnavailable(
            "FAKEHW_REMOTE is set but no token: set FAKEHW_TOKEN, or FAKEHW_TOKEN_FILE to a copy "
            "of the daemon host's token file (`fakehw daemon status` names it)"
        )
    try:
        return read_token_file(path)
    except TokenError as exc:
        raise DaemonUnavailable(f"FAKEHW_TOKEN_FILE: {exc}") from None


def daemon_command(
    paths: RuntimePaths, cluster: ClusterConfig | None, settings: DaemonConfig | None = None
) -> list[str]:
    import sys

    command = [sys.executable, "-m", "fakehw", "daemon", "run", "--runtime-dir", paths.root]
    options: list[tuple[str, str]] = []
    if settings is not None:
        options += [("--idle-timeout", repr(settings.idle_timeout_s)),
                    ("--tick-hz", repr(settings.tick_hz)), ("--tcp", settings.tcp_listen),
                    ("--tcp-token-file", settings.tcp_token_file)]  # fmt: skip
    if cluster is not None:
        options += [("--gpu-model", cluster.gpu_model), ("--nodes", str(cluster.nodes)),
                    ("--gpus-per-node", str(cluster.gpus_per_node)),
                    ("--seed", str(cluster.seed)),
                    ("--hostname-prefix", cluster.hostname_prefix)]  # fmt: skip
    for flag, value in options:
        if value:  # an empty setting is the default: not said
            command += [flag, value]
    return command


def start_daemon(
    paths: RuntimePaths, cluster: ClusterConfig | None, settings: DaemonConfig | None = None
) -> _socket.socket:
    """Start a daemon in the background and return a connection to it.

    Clients racing to start one take ``start.lock`` in turn; whoever comes
    second finds the first one's daemon and uses it. The launcher returns once
    the daemon listens (it detaches itself: no zombie is left to reap).
    """
    import fcntl
    import subprocess

    try:
        lock = os.fdopen(open_private(paths.start_lock_file, os.O_RDWR), "r+")
    except OSError as exc:
        raise DaemonUnavailable(
            f"cannot start a daemon: cannot create {paths.start_lock_file}: {exc.strerror}"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = try_connect(paths)
        if sock is not None:
            return sock
        try:
            launcher = subprocess.run(
                [*daemon_command(paths, cluster, settings), "--detach"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                timeout=START_TIMEOUT_S,
                env={**os.environ, "FAKEHW_RUNTIME_DIR": paths.root},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DaemonUnavailable(
                f"the fakehw daemon did not come up within {START_TIMEOUT_S:.0f} s "
                f"(log: {paths.log_file})"
            ) from None
        except OSError as exc:  # the interpreter itself cannot be run
            raise DaemonUnavailable(f"cannot start a daemon: {exc}") from None
        if launcher.returncode != 0:
            reason = launcher.stderr.strip().removeprefix("fakehw: ") or _log_tail(paths.log_file)
            raise DaemonUnavailable(f"the fakehw daemon failed to start: {reason}")
        sock = try_connect(paths)
        if sock is None:
            raise DaemonUnavailable(f"the daemon started but {paths.socket} does not answer")
        return sock


def _log_tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, errors="replace") as handle:
            text = handle.read().strip().splitlines()
    except OSError:
        return f"see {path}"
    return " | ".join(text[-lines:]) or f"see {path}"


def parse_node(text: str) -> int | str:
    """A node as a user names it: an index (ASCII digits only, as nvidia-smi reads
    numbers: '٣' is not 3) or a hostname."""
    wanted = text.strip()
    if wanted.isascii() and wanted.isdigit() and len(wanted) <= proto.MAX_ID_DIGITS:
        return int(wanted)
    return wanted  # a name (a number that long is no node's index either)


def node_from_env() -> int | str:
    """The node a viewer shows: ``FAKEHW_NODE`` (an index or a hostname), else 0."""
    return parse_node(os.environ.get("FAKEHW_NODE", "0").strip() or "0")
