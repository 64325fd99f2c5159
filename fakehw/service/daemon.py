"""The daemon: hosts the Simulator and serves snapshots on a Unix socket.

One event loop (``selectors``) serves every client without threads; the
Simulator ticks in its own thread. The daemon

* holds ``daemon.lock`` for its whole life, so two daemons never share a
  runtime directory (a second one exits at once);
* listens on ``daemon.sock``, mode 0600, and answers only peers of its own uid;
* optionally (``tcp_listen``) also on TCP, loopback unless told otherwise, for
  viewers on other hosts: a TCP client must present the token in its first
  line (``hello``) within 5 s, and may then only look (``fakehw.service.ops.TCP_OPS``);
* detaches a process whose real PID has died (freeing its memory, as the
  driver does) within half a second;
* exits after ``idle_timeout_s`` with no client connected and no process
  attached, and on SIGTERM/SIGINT, removing its socket and pid file.

A misbehaving client (garbage, huge lines, not reading) loses its own
connection; it never stalls or crashes the daemon.

What a request does is ``fakehw.service.ops``'s (one table of operations); who may
ask is ``auth``'s; the log is ``logs``'s. ``Daemon`` is the life of the process
and its event loop (listen, accept, read, answer, push, watch PIDs, save), which
is why it is the longest class here.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import selectors
import signal
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

from fakehw import __version__
from fakehw.contract.config import ClusterConfig, DaemonConfig
from fakehw.devices import MAX_UNSAVED_STATE_S
from fakehw.persist import StateUnreadable
from fakehw.processes import ClusterError, OutOfMemory
from fakehw.service import auth, pidwatch
from fakehw.service import protocol as proto
from fakehw.service.connections import (
    MAX_CONNECTIONS,
    MAX_TCP_CONNECTIONS,
    RESERVED_CONNECTIONS,
    Connection,
)
from fakehw.service.logs import Throttle
from fakehw.service.nvmlpublish import NvmlPublisher
from fakehw.service.ops import OPS, Operations
from fakehw.service.runtime import (
    RuntimeDirError,
    RuntimePaths,
    TokenError,
    check_socket_path,
    open_private,
)
from fakehw.service.simulator import Simulator

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.5
# A client's further requests wait (unread, in the kernel's buffers) while this much of
# its replies is unsent: one that pipelines many requests gets them in turn, and one
# that stops reading makes the daemon hold at most this plus one reply.
BACKPRESSURE_BYTES = 1 << 20
MAX_OUTBOX_BYTES = BACKPRESSURE_BYTES + proto.MAX_REPLY_BYTES + (1 << 20)  # then dropped
# What all clients together may make the daemon hold (unsent replies, unfinished
# request lines): beyond it, the connection that has gone longest without reading
# or sending anything is closed.
MEMORY_BUDGET_BYTES = 128 << 20
BIG_SEND_BYTES = 256 << 10  # a send this big checks the budget at once
# What a daemon killed with -9 can lose: a change (attach, phase, fault) is saved
# within CHANGE_SAVE_S; heat and energy, which drift slowly, within SAVE_INTERVAL_S.
SAVE_INTERVAL_S = 2.0
CHANGE_SAVE_S = 0.5
# A big cluster's state takes a while to write (0.3 s at 65,536 GPUs): saves are then
# spaced to at least this many times their cost, so saving never takes more than a
# twentieth of a core; never more than MAX_UNSAVED_S apart, which restores count on.
SAVE_COST_FACTOR = 20.0
MAX_UNSAVED_S = MAX_UNSAVED_STATE_S
# Out of file descriptors, the daemon stops accepting for this long (and serves
# the clients it has) instead of spinning on a listener it cannot accept from.
ACCEPT_BACKOFF_S = 1.0
SKIP_PUSH_OUTBOX_BYTES = 1 << 20  # a subscriber this far behind misses pushes
READ_CHUNK = 65536


class AlreadyRunning(RuntimeError):
    pass


class StartFailed(RuntimeError):
    """The daemon cannot serve (cannot listen, bad token file, cannot write its files)."""


class DaemonFailed(RuntimeError):
    """The daemon broke while serving (its model thread died, or its loop did)."""


class Daemon:
    def __init__(
        self,
        paths: RuntimePaths,
        cluster: ClusterConfig,
        settings: DaemonConfig,
        clock: Callable[[], float] = time.time,
        ready_fd: int | None = None,
    ) -> None:
        self.paths = paths
        self._ready_fd = ready_fd
        self.cluster_config = cluster.validated()
        self.settings = settings.validated()
        self.clock = clock
        self.simulator = Simulator(
            self.cluster_config, settings.tick_hz, clock, on_failure=self._model_failed
        )
        self.publisher = NvmlPublisher(self.simulator, os.path.join(paths.root, "nvml"))
        self.simulator.after_tick = self.publisher.publish
        self.ops = Operations(self)
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, Connection] = {}
        self.throttle = Throttle(log)
        self._failure: BaseException | None = None  # what broke the daemon, if anything
        self.started = time.monotonic()
        self._pid_namespace = pidwatch.pid_namespace()
        self.last_activity = time.monotonic()
        self.running = False
        self._lock_handle: Any = None
        self._listener: socket.socket | None = None
        self._tcp_listener: socket.socket | None = None
        self.tcp_token = b""  # what a TCP peer must present
        self.tcp_address: str | None = None  # "host:port" actually bound
        self._accept_resume_at: float | None = None  # accepting paused until then
        self._state_changed = False  # since the last save
        self._last_save_cost_s = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # ---------------------------------------------------------------- setup
    def _acquire_lock(self) -> None:
        try:
            handle = os.fdopen(open_private(self.paths.lock_file, os.O_RDWR), "r+")
        except OSError as exc:
            raise StartFailed(f"cannot create {self.paths.lock_file}: {exc.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AlreadyRunning(
                f"a fakehw daemon already runs in {self.paths.root} (see `fakehw daemon status`)"
            ) from None
        self._lock_handle = handle

    def _listen(self) -> None:
        # We hold the lock, so a socket file left here is stale: a crashed daemon's.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths.socket)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(self.paths.socket)
        finally:
            os.umask(old_umask)
        os.chmod(self.paths.socket, 0o600)
        listener.listen(1024)
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, data="unix")
        self.selector.register(self._wake_r, selectors.EVENT_READ, data="wake")
        self._listener = listener
        if self.settings.tcp_address is not None:
            self._listen_tcp(*self.settings.tcp_address)

    def _listen_tcp(self, host: str, port: int) -> None:
        token_file = self.settings.tcp_token_file or self.paths.tcp_token_file
        self.tcp_token = auth.load_or_create_token(
            token_file, create=not self.settings.tcp_token_file
        )
        try:
            addresses = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as exc:
            raise StartFailed(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        family, kind, _, _, address = addresses[0]
        listener = socket.socket(family, kind)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(address)
        except OSError as exc:
            listener.close()
            raise StartFailed(
                f"cannot listen on {self.settings.tcp_listen}: {exc.strerror or exc}"
            ) from None
        listener.listen(256)
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, data="tcp")
        self._tcp_listener = listener
        bound_host, bound_port = listener.getsockname()[:2]
        self.tcp_address = (
            f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        )
        if not ipaddress.ip_address(bound_host).is_loopback:
            log.warning("serving views on %s to other hosts (token required)", self.tcp_address)

    def _notify(self, message: str) -> None:
        """Tell the launcher we are serving (or why we are not), once."""
        if self._ready_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._ready_fd, message.encode())
            os.close(self._ready_fd)
        self._ready_fd = None

    def serve_forever(self) -> None:
        """Run until stopped, idle for too long, or signalled.

        Raises ``AlreadyRunning`` or ``StartFailed`` (the launcher is told why) and
        ``DaemonFailed`` when something breaks while serving: the failure is logged
        with its traceback, the socket and pid file go, and the process exits non-zero,
        never lingering half alive.
        """
        try:
            self._acquire_lock()
        except (AlreadyRunning, StartFailed) as exc:
            self._notify(f"error: {exc}")
            raise
        try:
            try:
                self._start()
            except (StartFailed, TokenError, RuntimeDirError) as exc:
                self._notify(f"error: {exc}")
                raise StartFailed(str(exc)) from None
            self._loop()
            if self._failure is not None:
                raise DaemonFailed(
                    f"the daemon failed: {self._failure!r} (see {self.paths.log_file})"
                )
        except (StartFailed, DaemonFailed):
            raise
        except Exception as exc:
            log.critical("the daemon failed", exc_info=True)
            self._failure = exc
            self._notify(f"error: the daemon failed while starting: {exc!r}")
            raise DaemonFailed(f"the daemon failed: {exc!r} (see {self.paths.log_file})") from exc
        finally:
            self._shutdown()

    def _start(self) -> None:
        raise_descriptor_limit(MAX_CONNECTIONS + MAX_TCP_CONNECTIONS + 64)
        check_socket_path(self.paths.socket)
        try:
            self._listen()
        except OSError as exc:
            raise StartFailed(f"cannot listen on {self.paths.socket}: {exc.strerror}") from None
        # The pid file first: a slow restore is then told as a daemon not answering yet.
        self._write_pid_file()
        self._restore_state()
        self.simulator.start()
        self.running = True
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)  # SIGHUP: its terminal closed (--foreground)
        self._notify("ready")
        log.info(
            "fakehw %s daemon pid %d serving %s on %s",
            __version__,
            os.getpid(),
            self.cluster_config.describe(),
            self.paths.socket,
        )

    def _restore_state(self) -> None:
        """Carry on from the previous daemon's state, keeping only the processes that
        are provably still the ones it saw (same PID, same start time)."""
        path = self.paths.state_file
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):  # a FIFO would block the read
                raise StateUnreadable("not a regular file")
            restored = self.simulator.load_state(path)
        except FileNotFoundError:
            return
        except (StateUnreadable, OSError) as exc:
            aside = path + ".corrupt"
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.warning("the saved state is unreadable, starting fresh (kept as %s): %s",
                        aside, exc)  # fmt: skip
            return
        if not restored:
            log.info("the saved state is of another cluster: starting fresh")
            return
        log.info("state of the previous daemon restored")
        for process in self.simulator.processes():
            now_started = pidwatch.start_time(process.watch_pid)
            if not pidwatch.is_same_process(process.watch_pid, process.watch_started,
                                            pidwatch.RESTORE_TOLERANCE_S):  # fmt: skip
                log.info("pid %d: its process %d %s: detached", process.pid, process.watch_pid,
                         "ended" if now_started is None else "is now another program")  # fmt: skip
                self.simulator.detach(process.pid)
            else:  # from now on compared with this daemon's own, exact, reading
                process.watch_started = now_started
        # The GPUs went on meanwhile (the live processes in their phases): catch up now,
        # so that the first snapshot served follows on from the last one before the restart.
        self.simulator.catch_up(self.clock())

    def _write_pid_file(self) -> None:
        try:
            fd = open_private(self.paths.pid_file, os.O_WRONLY | os.O_TRUNC)
            with os.fdopen(fd, "w") as pid_file:
                pid_file.write(f"{os.getpid()}\n")
        except OSError as exc:
            raise StartFailed(f"cannot write {self.paths.pid_file}: {exc.strerror}") from None

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        self.stop()

    def _model_failed(self, error: BaseException) -> None:
        """Called in the model thread as it dies: stop the daemon, with the reason."""
        log.critical("the model thread died: stopping the daemon", exc_info=error)
        self._failure = error
        self.stop()

    def stop(self) -> None:
        self.running = False
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def fail(self, reason: str) -> None:
        """Something left the daemon unable to serve correctly: stop, loudly."""
        self._failure = DaemonFailed(reason)
        self.stop()

    def state_changed(self) -> None:
        """The cluster changed at a client's request: save it soon."""
        self._state_changed = True

    def _shutdown(self) -> None:
        """Tear down, each step on its own: one that fails does not keep the socket alive."""
        steps: list[tuple[str, Callable[[], None]]] = [("stopping the model", self.simulator.stop)]
        if self._failure is None and self.simulator.started and os.path.isdir(self.paths.root):
            # A clean stop keeps the state for the next daemon; after a failure the
            # last periodic save (at most 2 s old) is the one to trust.
            steps.append(("saving the state", self._save_state))
        steps += [
            ("closing the NVML snapshots", self.publisher.close),
            ("closing connections", self._close_all),
            ("closing the listeners", self._close_listeners),
            ("releasing the lock", self._release_lock),
        ]
        for what, step in steps:
            try:
                step()
            except Exception:
                log.exception("while %s", what)
        log.info("daemon stopped" if self._failure is None else "daemon stopped after a failure")

    def _close_all(self) -> None:
        for conn in list(self.connections.values()):
            self._close(conn)

    def _close_listeners(self) -> None:
        for listener in (self._tcp_listener, self._listener):
            if listener is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(listener)
                listener.close()
        if self._listener is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.socket)
            if _read_pid(self.paths.pid_file) == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.paths.pid_file)
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()

    # ----------------------------------------------------------------- loop
    def _save_interval_s(self, wanted: float) -> float:
        return min(MAX_UNSAVED_S, max(wanted, SAVE_COST_FACTOR * self._last_save_cost_s))

    def _save_state(self) -> None:
        self._state_changed = False
        began = time.monotonic()
        try:
            self.simulator.save_state(self.paths.state_file)
            self._last_save_cost_s = time.monotonic() - began
        except OSError as exc:
            self.throttle.warning("save", "cannot save the state to %s: %s",
                                  self.paths.state_file, exc.strerror or exc)  # fmt: skip

    def _loop(self) -> None:
        next_watch = time.monotonic() + WATCH_INTERVAL_S
        last_save = time.monotonic()
        while self.running and self._failure is None:
            now = time.monotonic()
            timeout = min(next_watch, self._next_push_due(now)) - now
            for key, events in self.selector.select(max(0.0, min(timeout, 0.5))):
                if key.data == "unix":
                    self._accept()
                elif key.data == "tcp":
                    self._accept_tcp()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                else:
                    conn: Connection = key.data
                    if events & selectors.EVENT_READ:
                        self._read(conn)
                    if events & selectors.EVENT_WRITE and not conn.closing:
                        self._flush(conn)
                        if conn.inbox:
                            self._serve_inbox(conn)
            now = time.monotonic()
            if self._accept_resume_at is not None and now >= self._accept_resume_at:
                self._resume_accepting()
            self._push_due(now)
            if now >= next_watch:
                self._watch_pids()
                self._drop_silent_strangers(now)
                self._keep_to_memory_budget()
                next_watch = now + WATCH_INTERVAL_S
                self._check_idle(now)
            since_save = now - last_save
            if since_save >= self._save_interval_s(CHANGE_SAVE_S if self._state_changed
                                                   else SAVE_INTERVAL_S):  # fmt: skip
                self._save_state()
                last_save = now

    def _check_idle(self, now: float) -> None:
        if self.connections or self.simulator.cluster.processes or self.publisher.leased:
            self.last_activity = now
        elif now - self.last_activity >= self.settings.idle_timeout_s:
            log.info("idle for %.0f s: exiting", now - self.last_activity)
            self.running = False

    def _accept(self) -> None:
        assert self._listener is not None
        while (accepted := self._accept_from(self._listener)) is not None:
            sock, _ = accepted
            pid, uid = auth.peer_credentials(sock)
            if uid is not None and uid != os.getuid():
                self.throttle.warning("uid", "refused a peer with uid %s", uid)
                sock.close()
                continue
            local = sum(conn.remote is None for conn in self.connections.values())
            if local >= MAX_CONNECTIONS + RESERVED_CONNECTIONS:
                self._refuse_busy(sock, local)
                continue
            self._register(
                Connection(sock=sock, pid=pid, opened=time.monotonic(),
                           foreign_pids=auth.in_another_pid_namespace(pid, self._pid_namespace),
                           reserved=local >= MAX_CONNECTIONS)
            )  # fmt: skip

    def _accept_from(self, listener: socket.socket) -> tuple[socket.socket, Any] | None:
        """The next waiting connection, or None when there is none for now."""
        try:
            return listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:  # out of descriptors: keep serving the others
            self._pause_accepting(exc)
            return None

    def _pause_accepting(self, error: OSError) -> None:
        self.throttle.warning("accept", "accept failed: %s; not accepting for %.0f s", error,
                              ACCEPT_BACKOFF_S)  # fmt: skip
        for listener in (self._listener, self._tcp_listener):
            if listener is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(listener)
        self._accept_resume_at = time.monotonic() + ACCEPT_BACKOFF_S

    def _resume_accepting(self) -> None:
        self._accept_resume_at = None
        for listener, name in ((self._listener, "unix"), (self._tcp_listener, "tcp")):
            if listener is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.register(listener, selectors.EVENT_READ, data=name)

    def _accept_tcp(self) -> None:
        assert self._tcp_listener is not None
        while (accepted := self._accept_from(self._tcp_listener)) is not None:
            sock, address = accepted
            remote = sum(conn.remote is not None for conn in self.connections.values())
            if remote >= MAX_TCP_CONNECTIONS:
                self._refuse_busy(sock, remote)
                continue
            peer = f"{address[0]}:{address[1]}"
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._register(
                Connection(sock=sock, pid=None, remote=peer, authenticated=False,
                           opened=time.monotonic())
            )  # fmt: skip

    def _refuse_busy(self, sock: socket.socket, count: int) -> None:
        self.throttle.warning("busy", "refused a connection: %d already open", count)
        with contextlib.suppress(OSError):
            sock.sendall(proto.error(None, proto.BUSY, "too many connections"))
        sock.close()

    def _register(self, conn: Connection) -> None:
        conn.last_progress = conn.opened
        conn.sock.setblocking(False)
        self.connections[conn.sock.fileno()] = conn
        self.selector.register(conn.sock, selectors.EVENT_READ, data=conn)

    def _drop_silent_strangers(self, now: float) -> None:
        """Close TCP connections that have not authenticated in time."""
        for conn in list(self.connections.values()):
            if not conn.authenticated and now - conn.opened > proto.AUTH_TIMEOUT_S:
                self.throttle.warning("silent", "closing %s: no hello with a token within %.0f s",
                                      conn.remote, proto.AUTH_TIMEOUT_S)  # fmt: skip
                self._close(conn)

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.inbox += data
        self._serve_inbox(conn)

    def _serve_inbox(self, conn: Connection) -> None:
        """Answer the whole request lines received, in order, while the client takes
        its replies (``BACKPRESSURE_BYTES``); the rest wait for it to read."""
        while not conn.closing and len(conn.outbox) <= BACKPRESSURE_BYTES:
            end = conn.inbox.find(b"\n")
            if end < 0:
                limit = proto.MAX_LINE_BYTES if conn.authenticated else (
                    proto.MAX_UNAUTHENTICATED_LINE_BYTES)  # fmt: skip
                if len(conn.inbox) > limit:
                    self._send(conn, proto.error(None, proto.TOO_LARGE, "request too long"))
                    self._close_after_flush(conn)
                return
            line = bytes(conn.inbox[:end])
            del conn.inbox[: end + 1]
            conn.last_progress = time.monotonic()
            if line.strip():
                reply, closes = self._handle_line(conn, line)
                self._send(conn, reply)
                if not conn.authenticated:  # a stranger gets one try
                    self.throttle.warning("stranger", "refused TCP peer %s: no valid token",
                                          conn.remote)  # fmt: skip
                    self._close_after_flush(conn)
                elif closes:
                    self._close_after_flush(conn)

    def _handle_line(self, conn: Connection, line: bytes) -> tuple[bytes, bool]:
        """The reply to one request line, and whether the connection then closes
        (a line over the limit: what follows it cannot be trusted to be framed)."""
        request_id: object = None
        try:
            message = proto.decode_request(line, OPS)
            request_id = message.get("id")
            return self._checked_size(request_id, self.ops.dispatch(conn, request_id, message))
        except proto.ProtocolError as exc:
            closes = exc.code == proto.BUSY or (
                exc.code == proto.TOO_LARGE and len(line) > proto.MAX_LINE_BYTES
            )
            return proto.error(request_id or exc.request_id, exc.code, exc.message), closes
        except OutOfMemory as exc:
            return proto.error(request_id, proto.OUT_OF_MEMORY, str(exc)), False
        except ClusterError as exc:
            return proto.error(request_id, proto.BAD_REQUEST, str(exc)), False
        except Exception as exc:  # a bug in one op: that request fails, the daemon carries on
            self.throttle.log(logging.ERROR, "internal", "internal error handling %r",
                              line[:200], exc_info=True)  # fmt: skip
            return proto.error(request_id, proto.INTERNAL, f"internal error: {exc!r}"), False

    @staticmethod
    def _checked_size(request_id: object, reply: bytes) -> tuple[bytes, bool]:
        if len(reply) <= proto.MAX_REPLY_BYTES:
            return reply, False
        return proto.error(
            request_id,
            proto.TOO_LARGE,
            f"the reply would be {len(reply) / 1e6:.1f} MB, more than the "
            f"{proto.MAX_REPLY_BYTES >> 20} MiB one may be: ask for fewer nodes",
        ), False

    # ----------------------------------------------------------- processes
    def _watch_pids(self) -> None:
        """Detach every process whose watched process ended (or whose PID is now another
        program's), freeing its memory as the driver does."""
        verdicts: dict[tuple[int, float | None], bool] = {}
        gone: dict[int, list[int]] = {}  # watched PID: the records it held
        for process in self.simulator.processes():
            key = (process.watch_pid, process.watch_started)
            if key not in verdicts:
                verdicts[key] = pidwatch.is_same_process(*key)
            if not verdicts[key]:
                gone.setdefault(process.watch_pid, []).append(process.pid)
        if not gone:
            return
        for watched, pids in gone.items():
            shown = ", ".join(map(str, pids[:8])) + (f" and {len(pids) - 8} more" if
                                                    len(pids) > 8 else "")  # fmt: skip
            log.info("pid %d is gone: detaching %s", watched, shown)
        self.simulator.detach_many([pid for pids in gone.values() for pid in pids])
        self._state_changed = True

    # ------------------------------------------------------------ delivery
    def _next_push_due(self, now: float) -> float:
        due = now + 1.0
        for conn in self.connections.values():
            for sub in conn.subscriptions.values():
                due = min(due, sub.next_due)
        return due

    def _push_due(self, now: float) -> None:
        for conn in list(self.connections.values()):
            for sub in list(conn.subscriptions.values()):
                if now < sub.next_due:
                    continue
                # Keep the cadence; after a stall, restart it from now.
                sub.next_due += sub.interval_s
                if sub.next_due <= now:
                    sub.next_due = now + sub.interval_s
                if len(conn.outbox) > SKIP_PUSH_OUTBOX_BYTES:
                    continue  # a slow reader misses a frame instead of piling them up
                payload = self.simulator.snapshot_json(sub.nodes, sub.detail)
                self._send(conn, proto.push_raw(sub.ident, payload))

    def _send(self, conn: Connection, data: bytes) -> None:
        if conn.closing:
            return
        conn.outbox += data
        if len(conn.outbox) > MAX_OUTBOX_BYTES:
            log.warning("dropping a client that does not read (%d bytes queued)", len(conn.outbox))
            self._close(conn)
            return
        self._flush(conn)
        if len(data) >= BIG_SEND_BYTES:
            self._keep_to_memory_budget()

    def _keep_to_memory_budget(self) -> None:
        """Close the stalest connections while all of them hold more than the budget."""
        held = [(conn, len(conn.outbox) + len(conn.inbox)) for conn in self.connections.values()]
        total = sum(size for _, size in held)
        for conn, size in sorted(held, key=lambda pair: pair[0].last_progress):
            if total <= MEMORY_BUDGET_BYTES:
                return
            if size:
                self.throttle.warning(
                    "budget", "closing a client that holds %d bytes unread (%s): all clients "
                    "together hold more than %d MiB", size, conn.remote or f"pid {conn.pid}",
                    MEMORY_BUDGET_BYTES >> 20,
                )  # fmt: skip
                total -= size
                self._close(conn)

    def _flush(self, conn: Connection) -> None:
        if conn.outbox:
            try:
                sent = conn.sock.send(conn.outbox)
                del conn.outbox[:sent]
                if sent:
                    conn.last_progress = time.monotonic()
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close(conn)
                return
        # A client behind on its replies is not read from: its requests wait.
        reading = selectors.EVENT_READ if len(conn.outbox) <= BACKPRESSURE_BYTES else 0
        events = reading | (selectors.EVENT_WRITE if conn.outbox else 0)
        if conn.closing and not conn.outbox:
            self._close(conn)
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.modify(conn.sock, events, data=conn)

    def _close_after_flush(self, conn: Connection) -> None:
        conn.closing = True
        conn.subscriptions.clear()
        if not conn.outbox:
            self._close(conn)

    def _close(self, conn: Connection) -> None:
        fileno = conn.sock.fileno()
        if fileno >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn.sock)
            self.connections.pop(fileno, None)
        conn.subscriptions.clear()
        conn.closing = True
        conn.sock.close()


def raise_descriptor_limit(wanted: int) -> None:
    """Lift the soft limit on open files (often 1024) towards ``wanted``, within the
    hard limit, so the connection limits, not the kernel, decide who is refused."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None
