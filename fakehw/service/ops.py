"""The daemon's operations: one table says, for every op a client may send, what
handles it, whether it changes the cluster, whether a TCP peer may use it, and
whether a connection let in beyond the limit may (docs/protocol.md lists them).

Adding an op is one method of ``Operations`` and one row of ``TABLE``. The wire's
limits (line and reply sizes, argument ranges) are ``fakehw.service.protocol``'s:
clients read them too; each row names the ones its op enforces.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fakehw import __version__
from fakehw.contract import nvmlshm
from fakehw.contract.limits import CYCLE_S_RANGE, INTENSITY_RANGE
from fakehw.processes import ClusterError
from fakehw.service import auth, pidwatch
from fakehw.service import protocol as proto
from fakehw.service.connections import MAX_CONNECTIONS, Connection, Subscription
from fakehw.workload import PHASE_NAMES

if TYPE_CHECKING:
    from fakehw.service.daemon import Daemon

log = logging.getLogger(__name__)


class Operations:
    """The handlers, each ``(connection, request) -> result``, for one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon  # its connections, its stop and its failure
        self.simulator = daemon.simulator
        self.cluster_config = daemon.cluster_config
        self.settings = daemon.settings
        self.next_subscription = 1  # subscription ids, unique for the daemon's life
        self.health_watch_masks: dict[int, int] = {}  # node -> DCGM health watch mask (dcgmi)

    def dispatch(self, conn: Connection, request_id: object, message: dict[str, Any]) -> bytes:
        """The encoded reply to one decoded request, or ``ProtocolError`` (refused) or
        ``ClusterError`` (the cluster refused it), either before anything changed."""
        name = message["op"]
        op = TABLE[name]
        if conn.remote is not None:
            auth.authenticate(conn, name, message, self.daemon.tcp_token)
            if not op.over_tcp:
                raise proto.ProtocolError(
                    proto.FORBIDDEN,
                    f"{name!r} is not allowed over TCP, which only serves views "
                    f"({', '.join(TCP_OPS)}); run it on the daemon's host",
                )
        if conn.reserved and not op.when_busy:  # told, then closed
            raise proto.ProtocolError(
                proto.BUSY,
                f"the daemon is busy: it serves as many clients as it will "
                f"({MAX_CONNECTIONS}); close some, or see `fakehw daemon status`",
            )
        if not op.changes_state:
            return self._encoded(op, request_id, op.handler(self, conn, message))
        try:
            result = op.handler(self, conn, message)
        except (proto.ProtocolError, ClusterError):
            raise  # refused before anything changed
        except Exception:
            # A bug in the middle of a change: carry on only if the cluster is whole.
            problem = self.simulator.consistency_problem()
            if problem is not None:
                log.critical("a failed %s left the cluster inconsistent (%s)", name, problem)
                self.daemon.fail(f"inconsistent after a failed {name}: {problem}")
            raise
        self.daemon.state_changed()
        return self._encoded(op, request_id, result)

    @staticmethod
    def _encoded(op: Op, request_id: object, result: Any) -> bytes:
        return proto.ok_raw(request_id, result) if op.encoded else proto.ok(request_id, result)

    # ------------------------------------------------------------ arguments
    @staticmethod
    def _detail_arg(message: dict[str, Any]) -> bool:
        detail = message.get("detail", False)
        if not isinstance(detail, bool):
            raise proto.ProtocolError(proto.BAD_REQUEST, '"detail" must be true or false')
        return detail

    def _nodes_arg(self, message: dict[str, Any]) -> list[int] | None:
        """The nodes a snapshot or subscription covers: ``node`` (one index or hostname),
        ``nodes`` (a list of them), or, with neither, all. One covering more than
        ``MAX_SNAPSHOT_GPUS`` GPUs is refused (too_large) before anything is encoded."""
        if "node" in message and "nodes" in message:
            raise proto.ProtocolError(proto.BAD_REQUEST, 'give "node" or "nodes", not both')
        if message.get("nodes") is not None:
            wanted = message["nodes"]
            if (
                not isinstance(wanted, list)
                or not wanted
                or len(wanted) > self.cluster_config.nodes
            ):
                raise proto.ProtocolError(
                    proto.BAD_REQUEST, '"nodes" must be a non-empty list of node indices or names'
                )
            count = len(wanted)
        else:
            count = 1 if message.get("node") is not None else self.cluster_config.nodes
        gpus = count * self.cluster_config.gpus_per_node
        if gpus > proto.MAX_SNAPSHOT_GPUS:
            raise proto.ProtocolError(
                proto.TOO_LARGE,
                f"a snapshot of {gpus} GPUs is too large to send (at most "
                f'{proto.MAX_SNAPSHOT_GPUS}): ask for some nodes ("node" or "nodes"), or for '
                'the whole cluster\'s "summary"',
            )
        if message.get("nodes") is not None:
            return [self._node_index(node) for node in message["nodes"]]
        if message.get("node") is not None:
            return [self._node_index(message["node"])]
        return None

    def _node_index(self, node: object) -> int:
        if isinstance(node, bool) or not isinstance(node, int | str):
            raise proto.ProtocolError(proto.BAD_REQUEST, '"node" must be an index or hostname')
        try:
            return self.simulator.node_index(node)
        except KeyError:
            raise proto.ProtocolError(
                proto.NOT_FOUND,
                f"no node {node!r} (the cluster's nodes are 0-{self.cluster_config.nodes - 1}: "
                f"{self.simulator.cluster.hostnames[0]} ...)",
            ) from None

    # ------------------------------------------------------------- sessions
    def hello(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        version = message.get("protocol", proto.PROTOCOL_VERSION)
        if version != proto.PROTOCOL_VERSION:
            raise proto.ProtocolError(
                proto.PROTOCOL_MISMATCH,
                f"daemon speaks protocol {proto.PROTOCOL_VERSION}, client {version!r}: "
                "restart the daemon (`fakehw daemon stop`) after upgrading fakehw",
            )
        conn.client_name = str(message.get("client", ""))[:64]
        cluster = self.simulator.cluster
        return {
            "protocol": proto.PROTOCOL_VERSION,
            "server": f"fakehw {__version__}",
            "daemon_pid": os.getpid(),
            "cluster": self.cluster_config.to_json(),
            "model_name": cluster.spec.name,
            "gpus": cluster.gpu_count,
            "hostnames": cluster.hostnames,
            "phases": list(PHASE_NAMES),
        }

    def status(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        sim = self.simulator
        return {
            "daemon_pid": os.getpid(),
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.daemon.started, 3),
            "cluster": self.cluster_config.to_json(),
            "description": self.cluster_config.describe(),
            "tick_hz": self.settings.tick_hz,
            "ticks": sim.cluster.tick,
            "step_cpu_ms_mean": round(1000 * sim.step_seconds_total / max(1, sim.steps), 4),
            "idle_timeout_s": self.settings.idle_timeout_s,
            "clients": len(self.daemon.connections),
            "subscriptions": sum(len(c.subscriptions) for c in self.daemon.connections.values()),
            "process_count": len(sim.cluster.processes),
            "processes": [
                {
                    "pid": p.pid,
                    "name": p.name,
                    "gpus": list(p.gpus),
                    "phase": p.phase,
                    "watch_pid": p.watch_pid,
                    "watch_started": p.watch_started,
                    "host_process": p.is_host_process,
                    "job": p.job,
                }
                for p in sim.processes()[: proto.MAX_STATUS_PROCESSES]
            ],
            "socket": str(self.daemon.paths.socket),
            "tcp": self.daemon.tcp_address,
            "tcp_token_file": (self.settings.tcp_token_file or self.daemon.paths.tcp_token_file)
            if self.daemon.tcp_address
            else None,
            "tcp_clients": sum(c.remote is not None for c in self.daemon.connections.values()),
        }

    # ---------------------------------------------------------------- views
    def snapshot(self, conn: Connection, message: dict[str, Any]) -> bytes:
        nodes = self._nodes_arg(message)
        detail = self._detail_arg(message)
        return self.simulator.snapshot_json(nodes, detail)

    def summary(self, conn: Connection, message: dict[str, Any]) -> bytes:
        return self.simulator.summary_json()

    def subscribe(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        interval = proto.arg_int(
            message,
            "interval_ms",
            low=proto.MIN_SUBSCRIBE_INTERVAL_MS,
            high=proto.MAX_SUBSCRIBE_INTERVAL_MS,
        )
        nodes = self._nodes_arg(message)
        if len(conn.subscriptions) >= proto.MAX_SUBSCRIPTIONS:
            raise proto.ProtocolError(
                proto.CONFLICT, f"at most {proto.MAX_SUBSCRIPTIONS} subscriptions per connection"
            )
        ident = self.next_subscription
        self.next_subscription += 1
        # The first push follows the response at once.
        detail = self._detail_arg(message)
        conn.subscriptions[ident] = Subscription(ident, interval / 1000.0, nodes, detail, 0.0)
        return {"subscription": ident}

    def unsubscribe(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        ident = proto.arg_int(message, "subscription")
        if conn.subscriptions.pop(ident, None) is None:
            raise proto.ProtocolError(proto.NOT_FOUND, f"no subscription {ident}")
        return {"subscription": ident}

    def publish(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        """The calling process's node as an NVML snapshot file, rewritten each tick while
        the process lives (``fakehw.service.nvmlpublish``)."""
        node = self._node_index(message.get("node", 0))
        if conn.pid is None:
            raise proto.ProtocolError(proto.NOT_FOUND, "the peer's process is unknown")
        try:
            path = self.daemon.publisher.lease(node, conn.pid)
        except ValueError as exc:
            raise proto.ProtocolError(proto.NOT_FOUND, str(exc)) from None
        return {"path": path, "node": node, "layout": nvmlshm.LAYOUT_VERSION,
                "bytes": os.path.getsize(path)}  # fmt: skip

    # ------------------------------------------------------ state changes
    def attach(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        pid = proto.arg_int(message, "pid", low=1, high=proto.MAX_PID)
        name = proto.arg_str(message, "name")
        gpus = proto.arg_int_list(message, "gpus")
        user = proto.arg_optional_str(message, "user", max_length=64)
        watch_pid = proto.arg_optional_int(message, "watch_pid", low=1, high=proto.MAX_PID)
        job = proto.arg_optional_str(message, "job", max_length=128)
        phase = proto.arg_optional_str(message, "phase", max_length=32) or "context"
        plan = message.get("memory_plan")
        if plan is not None and not (
            isinstance(plan, dict) and all(isinstance(k, str) for k in plan)
        ):
            raise proto.ProtocolError(proto.BAD_REQUEST, '"memory_plan" must map phases to MiB')
        if conn.foreign_pids:
            raise proto.ProtocolError(
                proto.FORBIDDEN,
                "this client runs in another PID namespace (a container?), whose PIDs name "
                "other processes here: attach from the daemon's namespace, or give the "
                "container a FAKEHW_RUNTIME_DIR of its own",
            )
        if pid in self.simulator.cluster.processes:
            raise proto.ProtocolError(proto.CONFLICT, f"pid {pid} is already attached")
        watch = pid if watch_pid is None else watch_pid
        started = pidwatch.start_time(watch)
        if started is None:
            raise proto.ProtocolError(
                proto.NOT_FOUND, f"no running process with pid {watch} to watch"
            )
        self.simulator.attach(
            pid,
            name,
            gpus,
            user=user or pidwatch.owner_name(watch),
            watch_pid=watch,
            watch_started=started,
            memory_plan=plan,
            phase=phase,
            job=job,
        )
        return {"pid": pid, "gpus": gpus, "phase": phase}

    def set_phase(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        pid = proto.arg_int(message, "pid")
        phase = proto.arg_str(message, "phase", max_length=32)
        (shortest, longest), (least, most) = CYCLE_S_RANGE, INTENSITY_RANGE
        self.simulator.set_phase(
            pid,
            phase,
            memory_mib=proto.arg_optional_int(message, "memory_mib"),  # the cluster checks it
            cycle_s=proto.arg_optional_number(message, "cycle_s", low=shortest, high=longest),
            intensity=proto.arg_optional_number(message, "intensity", low=least, high=most),
        )
        return {"pid": pid, "phase": phase}

    def detach(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        if "pids" in message:  # a job's end: all its processes in one go
            pids = proto.arg_int_list(message, "pids", max_items=proto.MAX_DETACH_PIDS)
            gone = self.simulator.detach_many(pids)
            log.info("detached %d processes at a client's request", len(gone))
            return {"pids": gone}
        pid = proto.arg_int(message, "pid")
        try:
            self.simulator.detach(pid)
        except ClusterError as exc:
            raise proto.ProtocolError(proto.NOT_FOUND, str(exc)) from None
        return {"pid": pid}

    def inject(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        cluster = self.simulator.cluster
        gpu = proto.arg_int(message, "gpu", low=0, high=cluster.gpu_count - 1)
        fault = proto.arg_choice(message, "fault", (*proto.FAULTS, proto.CLEAR_FAULTS))
        count = proto.arg_optional_int(message, "count", low=1, high=proto.MAX_ECC_COUNT) or 1
        if fault == proto.RANK_CRASH:
            return {"gpu": gpu, "fault": fault, **self._crash_ranks(gpu)}
        faults = self.simulator.inject(gpu, fault, count)
        log.info("injected %s on GPU %d (now: %s)", fault, gpu, ", ".join(faults) or "none")
        return {"gpu": gpu, "fault": fault, "faults": faults}

    def set_power_limit(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        cluster = self.simulator.cluster
        gpu = proto.arg_int(message, "gpu", low=0, high=cluster.gpu_count - 1)
        limit_mw = proto.arg_int(message, "limit_mw", low=0, high=10_000_000)
        self.simulator.set_power_limit(gpu, limit_mw / 1000.0)
        log.info("power limit of GPU %d set to %.0f W (pid %s)", gpu, limit_mw / 1000, conn.pid)
        return {"gpu": gpu, "limit_mw": limit_mw}

    def lock_clocks(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        cluster = self.simulator.cluster
        gpu = proto.arg_int(message, "gpu", low=0, high=cluster.gpu_count - 1)
        max_mhz = proto.arg_optional_int(message, "max_mhz", low=1, high=100_000)
        clock = "sm"
        if "clock" in message:
            clock = proto.arg_choice(message, "clock", proto.CLOCK_DOMAINS)
        if clock == "memory":
            self.simulator.lock_memory_clock(gpu, max_mhz)
        else:
            self.simulator.lock_sm_clock(gpu, max_mhz)
        log.info("%s clock of GPU %d %s (pid %s)", clock, gpu,
                 f"locked at {max_mhz} MHz" if max_mhz else "unlocked", conn.pid)  # fmt: skip
        return {"gpu": gpu, "clock": clock, "max_mhz": max_mhz}

    def set_persistence_mode(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        cluster = self.simulator.cluster
        gpu = proto.arg_int(message, "gpu", low=0, high=cluster.gpu_count - 1)
        enabled = proto.arg_bool(message, "enabled")
        self.simulator.set_persistence_mode(gpu, enabled)
        log.info("persistence mode of GPU %d %s (pid %s)", gpu,
                 "enabled" if enabled else "disabled", conn.pid)  # fmt: skip
        return {"gpu": gpu, "enabled": enabled}

    def _crash_ranks(self, gpu: int) -> dict[str, Any]:
        """Every process on ``gpu`` ends. One that is provably a process of this
        machine (its own watched PID, same start time, same user) is SIGKILLed, as
        the OOM killer or a segfault would end it; a record standing for a process
        elsewhere (a rank on another node) ends as a record: detached, nothing signalled.
        """
        victims = [p for p in self.simulator.processes() if gpu in p.gpus]
        if not victims:
            raise proto.ProtocolError(proto.NOT_FOUND, f"no process runs on GPU {gpu}")
        killed, ended = [], []
        for process in victims:
            if process.is_host_process:
                try:
                    pidwatch.kill_verified(process.pid, process.watch_started)
                    killed.append(process.pid)
                except pidwatch.NotOurs as exc:
                    log.warning("rank-crash: not signalling pid %d: %s", process.pid, exc)
                    ended.append(process.pid)
            else:
                ended.append(process.pid)
            # The driver frees a dead process's memory at once.
            with contextlib.suppress(ClusterError):
                self.simulator.detach(process.pid)
        log.info("rank-crash on GPU %d: killed %s, ended records %s", gpu, killed, ended)
        return {"killed": killed, "ended": ended, "faults": self.simulator.cluster.faults_of(gpu)}

    def health_watches(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        """The DCGM health watches of a node's host engine (``dcgmi health -s``): set to
        ``mask`` when given, and answered. Kept for the daemon's life, as nv-hostengine
        keeps them for its own: not saved with the state."""
        node = self._node_index(message.get("node", 0))
        if "mask" in message:
            mask = proto.arg_int(message, "mask", low=0, high=proto.MAX_HEALTH_WATCH_MASK)
            self.health_watch_masks[node] = mask
            log.info("DCGM health watches of node %d set to %#x (pid %s)", node, mask, conn.pid)
        return {"node": node, "mask": self.health_watch_masks.get(node, 0)}

    def shutdown(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        log.info("shutdown requested by a client (pid %s)", conn.pid)
        self.daemon.stop()
        return {"stopping": True, "daemon_pid": os.getpid()}


@dataclass(frozen=True)
class Op:
    handler: Callable[[Operations, Connection, dict[str, Any]], Any]
    changes_state: bool = False  # saved soon after; a failure is checked for consistency
    over_tcp: bool = False  # a TCP peer may use it (views only: they never change anything)
    when_busy: bool = False  # allowed on a connection let in beyond the limit
    encoded: bool = False  # the handler returns the result's JSON already encoded
    limits: tuple[str, ...] = ()  # the protocol's limits it enforces (their names there)


TABLE: dict[str, Op] = {
    "hello": Op(Operations.hello, over_tcp=True, when_busy=True),
    "status": Op(Operations.status, over_tcp=True, when_busy=True,
                 limits=("MAX_STATUS_PROCESSES",)),
    "snapshot": Op(Operations.snapshot, over_tcp=True, encoded=True,
                   limits=("MAX_SNAPSHOT_GPUS", "MAX_REPLY_BYTES")),
    "summary": Op(Operations.summary, over_tcp=True, encoded=True, limits=("MAX_REPLY_BYTES",)),
    "subscribe": Op(Operations.subscribe, over_tcp=True,
                    limits=("MIN_SUBSCRIBE_INTERVAL_MS", "MAX_SUBSCRIBE_INTERVAL_MS",
                            "MAX_SUBSCRIPTIONS", "MAX_SNAPSHOT_GPUS")),
    "unsubscribe": Op(Operations.unsubscribe, over_tcp=True),
    "publish": Op(Operations.publish),
    "attach": Op(Operations.attach, changes_state=True, limits=("MAX_PID",)),
    "set_phase": Op(Operations.set_phase, changes_state=True),
    "detach": Op(Operations.detach, changes_state=True, limits=("MAX_DETACH_PIDS",)),
    "inject": Op(Operations.inject, changes_state=True, limits=("MAX_ECC_COUNT",)),
    "set_power_limit": Op(Operations.set_power_limit, changes_state=True),
    "lock_clocks": Op(Operations.lock_clocks, changes_state=True),
    "set_persistence_mode": Op(Operations.set_persistence_mode, changes_state=True),
    "health_watches": Op(Operations.health_watches, limits=("MAX_HEALTH_WATCH_MASK",)),
    "shutdown": Op(Operations.shutdown, when_busy=True),
}  # fmt: skip
OPS = tuple(TABLE)
TCP_OPS = tuple(name for name, op in TABLE.items() if op.over_tcp)
