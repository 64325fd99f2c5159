"""The cluster on the wall clock: a background thread ticks it at a steady rate.

Everything that touches the cluster goes through the ``Simulator`` and its lock.
Snapshots are encoded once per tick and node set, then served from cache: the
state only changes when the model ticks, so a thousand readers between two
ticks cost one encoding.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fakehw import persist
from fakehw.contract.config import ClusterConfig
from fakehw.devices import Cluster
from fakehw.processes import AttachedProcess

# After a pause (laptop suspend, a stopped process) the model catches up in
# steps of at most this many seconds, up to MAX_CATCH_UP_S; beyond that one
# long step carries the thermal state (exact for the Foster network).
CATCH_UP_STEP_S = 0.5
MAX_CATCH_UP_S = 120.0
RESTART_CATCH_UP_STEPS = 20  # a restarted daemon crosses the gap in at most this many steps


class Simulator:
    def __init__(
        self,
        config: ClusterConfig,
        tick_hz: float = 10.0,
        clock: Callable[[], float] = time.time,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.clock = clock
        # The model thread never dies quietly: whatever ends it is kept here and
        # handed to ``on_failure`` (the daemon then goes down, loudly).
        self.failure: BaseException | None = None
        self._on_failure = on_failure
        self.tick_hz = tick_hz
        self.lock = threading.RLock()
        self.cluster = Cluster(config, start_time=clock())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # (tick, the nodes or ("summary",), detail) -> the encoded reply
        self._cache: dict[tuple[int, tuple[int | str, ...] | None, bool], bytes] = {}
        self.step_seconds_total = 0.0  # CPU spent stepping, for status and benches
        self.steps = 0
        self.after_tick: Callable[[], None] | None = None  # the daemon's NVML publisher

    # ----------------------------------------------------------------- clock
    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fakehw-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            self._tick_until_stopped()
        except BaseException as exc:  # handed on, not swallowed: the daemon stops on it
            self.failure = exc
            if self._on_failure is not None:
                self._on_failure(exc)

    def _tick_until_stopped(self) -> None:
        period = 1.0 / self.tick_hz
        next_tick = time.monotonic() + period
        while not self._stop.is_set():
            delay = next_tick - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self.advance_to(self.clock())
            if self.after_tick is not None:
                self.after_tick()
            next_tick += period
            if next_tick < time.monotonic() - period:  # fell behind: do not spin
                next_tick = time.monotonic() + period

    def advance_to(self, now: float) -> None:
        """Step the model up to wall-clock ``now`` (no-op if it is not later)."""
        with self.lock:
            began = time.thread_time()
            cluster = self.cluster
            behind = now - cluster.time
            if behind <= 0:
                return
            if behind > MAX_CATCH_UP_S:
                cluster.step(behind - MAX_CATCH_UP_S)
                behind = MAX_CATCH_UP_S
            while behind > CATCH_UP_STEP_S:
                cluster.step(CATCH_UP_STEP_S)
                behind -= CATCH_UP_STEP_S
            cluster.step(behind)
            self._cache.clear()
            self.step_seconds_total += time.thread_time() - began
            self.steps += 1

    def catch_up(self, now: float, steps: int = RESTART_CATCH_UP_STEPS) -> None:
        """Step a restored model through the time no daemon ran, in a few long steps
        (the thermal network is exact over any step; a cluster of 65,536 GPUs must not
        take seconds to start)."""
        with self.lock:
            behind = now - self.cluster.time
            if behind <= 0:
                return
            step = max(behind / steps, CATCH_UP_STEP_S)
            while behind > 1e-6:
                self.cluster.step(min(step, behind))
                behind -= step
            self._cache.clear()

    # ------------------------------------------------------------- snapshots
    def snapshot_json(self, nodes: Sequence[int] | None = None, detail: bool = False) -> bytes:
        """The current snapshot (all nodes or some), JSON-encoded, cached per tick."""
        key = (self.cluster.tick, None if nodes is None else tuple(nodes), detail)
        with self.lock:
            cached = self._cache.get(key)
            if cached is None:
                snap = self.cluster.snapshot(nodes, detail)
                cached = json.dumps(snap, separators=(",", ":")).encode()
                if len(self._cache) > 256:
                    self._cache.clear()
                self._cache[key] = cached
            return cached

    def summary_json(self) -> bytes:
        """The whole cluster's summary (``Cluster.summary``), JSON-encoded, cached per tick."""
        key = (self.cluster.tick, ("summary",), False)
        with self.lock:
            cached = self._cache.get(key)
            if cached is None:
                cached = json.dumps(self.cluster.summary(), separators=(",", ":")).encode()
                self._cache[key] = cached
            return cached

    def consistency_problem(self) -> str | None:
        with self.lock:
            return self.cluster.consistency_problem()

    def node_index(self, node: int | str) -> int:
        """A node by index or hostname; ``KeyError`` if there is none."""
        cluster = self.cluster
        if isinstance(node, int) and 0 <= node < cluster.nodes:
            return node
        if isinstance(node, str):
            index = cluster.node_of_hostname.get(node)
            if index is not None:
                return index
        raise KeyError(node)

    # ------------------------------------------------------------- processes
    def attach(self, pid: int, name: str, gpus: Sequence[int], **options: Any) -> AttachedProcess:
        with self.lock:
            process = self.cluster.attach(pid, name, gpus, **options)
            self._cache.clear()
            return process

    def set_phase(self, pid: int, phase: str, **options: Any) -> None:
        with self.lock:
            self.cluster.set_phase(pid, phase, **options)
            self._cache.clear()

    def detach(self, pid: int) -> AttachedProcess:
        with self.lock:
            process = self.cluster.detach(pid)
            self._cache.clear()
            return process

    def detach_many(self, pids: Sequence[int]) -> list[int]:
        with self.lock:
            gone = self.cluster.detach_many(pids)
            self._cache.clear()
            return gone

    def save_state(self, path: str) -> None:
        """Write the cluster's lasting state (atomically: a crash, or a full disk, leaves
        the previous file as it was). Private to the user, as the socket is."""
        with self.lock:
            state = persist.state_of(self.cluster)
        temporary = path + ".tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                persist.write(state, handle)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def load_state(self, path: str) -> bool:
        """Carry on from a saved state; False if it is of another cluster.
        Raises ``StateUnreadable`` for a file that is not a fakehw state."""
        state = persist.read(path)
        with self.lock:
            restored = persist.restore(self.cluster, state)
            self._cache.clear()
            return restored

    def inject(self, gpu: int, fault: str, count: int = 1) -> list[str]:
        with self.lock:
            faults = self.cluster.inject(gpu, fault, count)
            self._cache.clear()
            return faults

    def set_power_limit(self, gpu: int, watts: float) -> None:
        with self.lock:
            self.cluster.set_power_limit(gpu, watts)
            self._cache.clear()

    def lock_sm_clock(self, gpu: int, max_mhz: float | None) -> None:
        with self.lock:
            self.cluster.lock_sm_clock(gpu, max_mhz)
            self._cache.clear()

    def lock_memory_clock(self, gpu: int, max_mhz: float | None) -> None:
        with self.lock:
            self.cluster.lock_memory_clock(gpu, max_mhz)
            self._cache.clear()

    def set_persistence_mode(self, gpu: int, enabled: bool) -> None:
        with self.lock:
            self.cluster.set_persistence_mode(gpu, enabled)
            self._cache.clear()

    def processes(self) -> list[AttachedProcess]:
        with self.lock:
            return list(self.cluster.processes.values())
