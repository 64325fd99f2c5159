"""The job's ranks in the fake cluster: real processes on this node, phases, GPU state.

Each GPU of the local node (node 0) gets a light child process: a real PID
that ``ps`` lists and fake-nvidia-smi shows, exactly as torchrun's workers.
Ranks on the other (imaginary) nodes are attached with PIDs of their own and
watched through this launcher's PID: they are records in the daemon, and one
whose record vanishes (``fakehw inject rank-crash`` on that node detaches it)
is dead. The daemon frees a rank's memory the moment its process dies; the
engine learns of a dead rank from ``dead_ranks`` and plays what a real job does.

Faults the run injects itself (``--inject``) are the run's: ``close`` clears
them, whatever ended the run. Faults injected from outside stay, as hardware
faults do, and the next run's GPU check reports them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import psutil

from fakehw.service.client import Client, DaemonUnavailable, RequestFailed, ResilientClient
from fakehw.service.protocol import MAX_DETACH_PIDS, MAX_SNAPSHOT_GPUS
from fakehw.train.events import GpuCell
from fakehw.train.plan import RunPlan

if TYPE_CHECKING:
    from fakehw.contract.snapshot import GpuRecord, Snapshot

# A rank: sleeps, and leaves as soon as its launcher does (prctl death signal,
# and polling the parent for platforms without it). It runs as ``train.py`` so
# that ps, gpustat -f and nvitop show the command line of a torchrun worker.
# Ctrl-C reaches the whole foreground process group; the launcher decides what
# it means (finish a save, then stop the ranks), so a rank ignores it. What a real
# rank shows the host that costs nothing is real: a few hundred MiB resident (its
# CUDA context and pinned buffers, here plain touched pages) and the threads of a
# PyTorch process (CUDA, NCCL, the autograd engine, pin-memory), all asleep. Its
# CPU stays near zero (a real one spins at 100 % of a core): fakehw's own views show
# the modelled host load instead.
RANK_RSS_MIB = 192
RANK_THREADS = 28
RANK_PROGRAM = f"""\
import ctypes, os, signal, sys, threading, time
parent = os.getppid()
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except Exception:
    pass
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGINT, signal.SIG_IGN)
held = bytearray({RANK_RSS_MIB} << 20)
for page in range(0, len(held), 4096):
    held[page] = 1
for _ in range({RANK_THREADS}):
    threading.Thread(target=threading.Event().wait, daemon=True).start()
while os.getppid() == parent:
    time.sleep(0.5)
"""
CONTROL_STALE_S = 1.0
FATAL_XIDS = (48, 79)  # double-bit ECC error; GPU fallen off the bus
# Faults that stay in force once injected (the daemon's ``clear`` undoes them, as a GPU
# reset does); of those, the ones that can be injected again exactly as they were (the
# others would count another error and raise another XID).
LASTING_FAULTS = frozenset({"thermal", "power-brake", "xid79", "ecc-uncorrectable"})
REINJECTABLE_FAULTS = frozenset({"thermal", "power-brake"})
PHASE_SETTLE_S = 0.3  # the daemon applies a phase at its next tick (10 Hz)


class WorldError(RuntimeError):
    pass


class World:
    def __init__(self, plan: RunPlan, client: Client, hostnames: list[str]) -> None:
        self.plan = plan
        # Resilient: if the daemon is killed, the next request starts a new one (same
        # cluster, state restored from its last save) and the ranks are attached again.
        self.client = ResilientClient("fake-train", client=client)
        self._generation = 0
        self._memory_plan: dict[str, int] = {}
        self._replanned = False  # the memory plan changed since the ranks attached
        self._phase_args: tuple[str, dict[str, object]] = ("context", {})
        self.hostnames = hostnames
        self.children: dict[int, subprocess.Popen[bytes]] = {}  # rank -> process
        self.pids: dict[int, int] = {}  # rank -> pid shown in the views
        self.job = f"fake-train-{plan.run_name}-{os.getpid()}"
        self._cells: list[GpuCell] = []
        self._clocks: list[int] = []
        self._read_at = 0.0
        self._phase_at = 0.0
        self._script_dir: str | None = None
        self._xids_seen: dict[int, int] = {}
        self._remote_dead: set[int] = set()
        self._remote_attached: set[int] = set()  # remote ranks the daemon holds a record of
        self._injected: dict[int, set[str]] = {}  # GPU -> faults this run put there

    @property
    def process_name(self) -> str:
        """What every view shows as the ranks' executable: the real one, so that
        nvidia-smi, ps and gpustat agree."""
        return sys.executable

    @property
    def local_ranks(self) -> range:
        return range(self.plan.gpus_per_node)

    @property
    def local_pids(self) -> tuple[int, ...]:
        return tuple(self.pids[r] for r in self.local_ranks)

    def spawn(self) -> None:
        """Start one process per local GPU (the workers torchrun would start)."""
        if self._script_dir is None:
            self._script_dir = tempfile.mkdtemp(prefix="fake-train-")
            with open(os.path.join(self._script_dir, "train.py"), "w") as script:
                script.write(RANK_PROGRAM)
        config = f"configs/{self.plan.run_name}.yaml"
        for rank in self.local_ranks:
            child = subprocess.Popen(
                [sys.executable, "-u", "train.py", "--config", config],
                cwd=self._script_dir,
                env={**os.environ, "LOCAL_RANK": str(rank), "RANK": str(rank),
                     "WORLD_SIZE": str(self.plan.gpus)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.children[rank] = child
            self.pids[rank] = child.pid
        base = 1000 + self.plan.seed % 50000
        taken = set(self.pids.values())
        for rank in range(self.plan.gpus_per_node, self.plan.gpus):
            node, local = divmod(rank, self.plan.gpus_per_node)
            pid = base + 97 * node + local
            # A record's PID is another host's, but it must not be one of this host's live
            # processes (the views would describe that program) nor another rank's.
            while pid in taken or psutil.pid_exists(pid):
                pid += 1
            taken.add(pid)
            self.pids[rank] = pid

    def attach(self, memory_plan: dict[str, int]) -> None:
        """Put every rank on its GPU with a bare CUDA context."""
        self._memory_plan = dict(memory_plan)
        self._phase_args = ("context", {})
        user = os.environ.get("USER", "root")
        requests = [
            (
                "attach",
                {
                    "pid": pid,
                    "name": self.process_name,
                    "gpus": [rank],
                    "job": self.job,
                    "user": user,
                    "watch_pid": pid if rank in self.children else os.getpid(),
                    "memory_plan": memory_plan,
                },
            )
            for rank, pid in self.pids.items()
        ]
        for rank, result in zip(self.pids, self._request_many(requests), strict=True):
            # A conflict: a restarted daemon restored the rank already.
            if isinstance(result, RequestFailed) and result.code != "conflict":
                if rank not in self.dead_ranks():
                    raise WorldError(f"the daemon refused rank {rank}: {result.message}")
            elif rank not in self.children:
                self._remote_attached.add(rank)

    def replan(self, memory_plan: dict[str, int]) -> None:
        """The job holds other amounts from now on (its batch-size manager changed the
        layout): each phase asks for its new figure (after a "free", as the allocator
        only gives memory back on empty_cache); a daemon restart attaches with it."""
        self._memory_plan = dict(memory_plan)
        self._replanned = True

    def phase(self, phase: str, ranks: Iterable[int] | None = None, **options: object) -> None:
        """Set a phase on the given ranks (default: all live ranks)."""
        chosen = list(self.pids) if ranks is None else list(ranks)
        if self._replanned and phase in self._memory_plan and phase != "free":
            options.setdefault("memory_mib", self._memory_plan[phase])
        # A rank that died meanwhile is refused (not found): what the engine
        # learns from dead_ranks() instead.
        self._request_many(
            [("set_phase", {"pid": self.pids[r], "phase": phase, **options}) for r in chosen]
        )
        if ranks is None:
            self._phase_args = (phase, dict(options))
        self._phase_at = time.monotonic()

    def dead_ranks(self) -> list[int]:
        local = [rank for rank, child in self.children.items() if child.poll() is not None]
        return sorted({*local, *self._remote_dead})

    def watch_xids(self) -> None:
        """From now on, an XID on a job GPU crashes its rank (see ``crashed_by_xid``)."""
        self._xids_seen = {rank: cell.xid_count for rank, cell in enumerate(self.cells())}

    def crashed_by_xid(self) -> dict[int, int]:
        """Ranks whose GPU raised a fatal XID since last asked ({rank: XID}): their
        process dies, as a CUDA process does on an uncorrectable ECC error (48) or
        when its GPU falls off the bus (79)."""
        crashed = {}
        for rank, cell in enumerate(self.cells()):
            seen = self._xids_seen.get(rank, cell.xid_count)
            if cell.xid_count > seen and cell.last_xid in FATAL_XIDS:
                crashed[rank] = cell.last_xid
                child = self.children.get(rank)
                if child is not None and child.poll() is None:
                    child.kill()
                    child.wait()
            self._xids_seen[rank] = cell.xid_count
        return crashed

    def kill_rank(self, rank: int) -> None:
        """A rank crashes (SIGKILL, as the OOM killer or a segfault would end it)."""
        child = self.children.get(rank)
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        elif rank in self.pids:  # a rank on another (fake) node: its process ends
            with contextlib.suppress(WorldError):
                self._request_many([("detach", {"pid": self.pids[rank]})])
            self._remote_dead.add(rank)

    def inject(self, rank: int, fault: str) -> None:
        """Make a job GPU misbehave (its GPU is the job's global index ``rank``).
        A fault that was not in force already is the run's, to clear at the end."""
        before = self._faults_now().get(rank, set())
        if fault in LASTING_FAULTS and fault not in before:
            # counted as the run's before it is asked for: a signal that ends the run
            # the moment the daemon has put it there must still find it to clear
            self._injected.setdefault(rank, set()).add(fault)
        self._request_many([("inject", {"gpu": rank, "fault": fault})])
        self._read_at = 0.0

    def clear_injected(self) -> None:
        """Undo the faults this run injected, keeping those injected from outside:
        the daemon's ``clear`` undoes all of a GPU's, so the others are put back. Where
        one from outside could not be put back as it was (an XID 79, an uncorrectable
        ECC error), the GPU is left as it is: an outside fault is never lost."""
        if not self._injected:
            return
        now = self._faults_now()
        requests: list[tuple[str, dict[str, object]]] = []
        for gpu, ours in sorted(self._injected.items()):
            keep = now.get(gpu, set()) - ours
            if keep - REINJECTABLE_FAULTS:
                continue
            requests.append(("inject", {"gpu": gpu, "fault": "clear"}))
            requests += [
                ("inject", {"gpu": gpu, "fault": f}) for f in sorted(keep & REINJECTABLE_FAULTS)
            ]
        self._request_many(requests)
        self._injected.clear()

    def lost_gpus(self) -> list[int]:
        """Ranks whose GPU fell off the bus."""
        return [rank for rank, cell in enumerate(self.cells()) if cell.lost]

    def take_down(self) -> None:
        """Every worker exits (what torchrun does before restarting a group)."""
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
        # The daemon would notice the exits by itself; detaching now frees the
        # GPUs at once, as the driver does when a process ends.
        pids = list(self.pids.values())
        with contextlib.suppress(WorldError):
            self._request_many(
                [
                    ("detach", {"pids": pids[first : first + MAX_DETACH_PIDS]})
                    for first in range(0, len(pids), MAX_DETACH_PIDS)
                ]
            )
        self.children.clear()
        self.pids.clear()
        self._remote_dead.clear()
        self._remote_attached.clear()

    def close(self) -> None:
        """The run is over, however it ended: its faults cleared, its ranks gone."""
        with contextlib.suppress(WorldError, OSError):
            self.clear_injected()
        with contextlib.suppress(WorldError, OSError):
            self.take_down()
        self.client.close()
        if self._script_dir is not None:
            shutil.rmtree(self._script_dir, ignore_errors=True)

    # ------------------------------------------------------------ GPU state
    def refresh(self) -> None:
        """Read the job's GPUs from the daemon (at most once a second)."""
        now = time.monotonic()
        fresh = self._read_at >= self._phase_at + PHASE_SETTLE_S
        if fresh and now - self._read_at < CONTROL_STALE_S and self._cells:
            return
        settling = now < self._phase_at + PHASE_SETTLE_S
        if not fresh and settling and self._cells and now - self._read_at < CONTROL_STALE_S:
            # too early to see the new phase: keep what we have, unless it is over a
            # second old (phases that change faster than they settle, at high speed
            # factors, would keep it forever)
            return
        self._read_at = now
        generation = self.client.generation
        snap = self._snapshot()
        self._check_generation()
        cells, clocks = [], []
        for node in snap["nodes"]:
            for gpu in node["gpus"]:
                if gpu["global_index"] >= self.plan.gpus:
                    continue
                cells.append(_cell(node["hostname"], gpu))
                clocks.append(gpu["clock_sm_mhz"])
        self._cells, self._clocks = cells, clocks
        if generation == self.client.generation:  # else: taken before the ranks came back
            self._remote_dead |= self._vanished_remote_ranks(snap)

    def _vanished_remote_ranks(self, snap: Snapshot) -> set[int]:
        """Remote ranks whose record the daemon no longer holds on their GPU: their
        process is gone (``fakehw inject rank-crash`` on another node detaches it)."""
        held = {
            (node["index"], p["gpu_index"], p["pid"])
            for node in snap["nodes"]
            for p in node["processes"]
        }
        per_node = self.plan.gpus_per_node
        return {
            rank
            for rank in self._remote_attached
            if (rank // per_node, rank % per_node, self.pids[rank]) not in held
        }

    def _snapshot(self) -> Snapshot:
        """The job's nodes (not the whole cluster, which may be far larger), in pipelined
        requests a quarter of the daemon's snapshot limit each (a reply of 4,096 GPUs
        with their processes would pass its reply limit)."""
        per_request = max(1, MAX_SNAPSHOT_GPUS // 4 // self.plan.gpus_per_node)
        nodes = list(range(self.plan.nodes))
        requests: list[tuple[str, dict[str, object]]] = [
            ("snapshot", {"nodes": nodes[first : first + per_request]})
            for first in range(0, len(nodes), per_request)
        ]
        try:
            parts = self.client.request_many(requests)
        except DaemonUnavailable as exc:
            raise WorldError(f"lost the fakehw daemon: {exc}") from None
        for part in parts:
            if isinstance(part, RequestFailed):
                raise WorldError(f"the daemon refused a snapshot: {part.message}")
        snapshot: Snapshot = parts[0]
        for part in parts[1:]:
            snapshot["nodes"].extend(part["nodes"])
        return snapshot

    def _faults_now(self) -> dict[int, set[str]]:
        """The faults in force on each job GPU, read from the daemon now."""
        return {
            gpu["global_index"]: set(gpu.get("faults", ()))
            for node in self._snapshot()["nodes"]
            for gpu in node["gpus"]
            if gpu["global_index"] < self.plan.gpus
        }

    def topology(self) -> str:
        """``nvidia-smi topo -m`` of the job's first node, as a launch script gets it: by
        running the tool (the fake one, reading this daemon)."""
        command = [sys.executable, "-m", "fakehw.smi", "topo", "-m"]
        env = {**os.environ, "FAKEHW_NODE": "0"}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                  check=False, env=env, stdin=subprocess.DEVNULL)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise WorldError(f"nvidia-smi topo -m failed: {exc}") from None
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise WorldError(f"nvidia-smi topo -m failed: {why}")
        return done.stdout

    def holders(self, gpu: int) -> list[tuple[int, int]]:
        """(pid, MiB) of every process on one of this node's GPUs, from the daemon."""
        try:
            node = self.client.snapshot(0)["nodes"][0]
        except DaemonUnavailable as exc:
            raise WorldError(f"lost the fakehw daemon: {exc}") from None
        return [
            (p["pid"], p["used_memory_mib"]) for p in node["processes"] if p["gpu_index"] == gpu
        ]

    def cells(self) -> list[GpuCell]:
        self.refresh()
        return list(self._cells)

    def clocks(self) -> list[int]:
        """The job's SM clocks, once they reflect the current phase (else [])."""
        self.refresh()
        if self._read_at < self._phase_at + PHASE_SETTLE_S:
            return []
        return list(self._clocks)

    def _request_many(self, requests: list[tuple[str, dict[str, object]]]) -> list[object]:
        try:
            results = self.client.request_many(requests)
        except DaemonUnavailable as exc:
            raise WorldError(f"lost the fakehw daemon: {exc}") from None
        self._check_generation()
        return results

    def _check_generation(self) -> None:
        """After a daemon restart: attach the ranks again, in the phase they were in."""
        if self.client.generation == self._generation:
            return
        self._generation = self.client.generation
        if not self.pids or not self._memory_plan:
            return
        phase, options = self._phase_args
        plan = dict(self._memory_plan)
        self.attach(plan)
        if phase != "context":
            self.phase(phase, None, **options)


def _cell(host: str, gpu: GpuRecord) -> GpuCell:
    return GpuCell(
        node=host,
        index=gpu["index"],
        util=gpu["utilization_gpu_pct"],
        temp=gpu["temperature_gpu_c"],
        power_w=gpu["power_draw_mw"] / 1000,
        memory_used_mib=gpu["memory_used_mib"],
        memory_total_mib=gpu["memory_total_mib"],
        lost=bool(gpu.get("lost")),
        xid_count=gpu["xid_count"],
        last_xid=gpu["last_xid"],
        faults=tuple(gpu.get("faults", ())),
        clock_sm_mhz=gpu["clock_sm_mhz"],
        clock_reasons=gpu["clocks_event_reasons"],
    )
