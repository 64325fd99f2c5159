"""One log file per rank, ``DIR/logs/train_rank{N}.log``, as a training script that
logs with loguru writes them (rank 0 also to the console; every rank to its own
file), in loguru's default format without colours::

    2026-12-02 06:18:45.123 | INFO     | __main__:train:212 - step 120/5000 | loss ...

What each rank writes is its own: its placement and PID, its NCCL set-up (NCCL
writes to the process's standard error, which the launcher sends to the same
file, so those lines are NCCL's own), its step timings (every rank's step takes the
job's time; how much of it was its own kernels and how much waiting for the slowest
rank follows from its GPU's SM clock against the slowest one's), the loss of its own
micro-batches (they average to the logged loss), its warnings only (a slow rank is
named in its own file), and the evaluations and saves as it took part in them.
Lines are buffered and appended every couple of seconds and at the end (however
the run ends), so thousands of ranks cost a few writes.
"""

from __future__ import annotations

import random
import re
import time
from datetime import datetime
from pathlib import Path

from fakehw.train import nccl
from fakehw.train.events import (
    CheckpointInfo,
    EvalResult,
    GpuSample,
    Incident,
    RunStart,
    StepMetrics,
    Summary,
)
from fakehw.train.output.layouts.base import Layout
from fakehw.train.plan import RunPlan
from fakehw.train.recorder import Recorder

FLUSH_EVERY_WALL_S = 2.0
RANK_LOSS_SPREAD = 0.02  # a rank's micro-batches differ from the mean loss by about this
# Where each kind of line comes from in the training script (loguru's name:function:line)
SOURCES = {
    "setup": "__main__:setup_distributed:61",
    "step": "__main__:train:212",
    "eval": "__main__:evaluate:148",
    "save": "__main__:save_checkpoint:176",
    "warning": "__main__:train:231",
    "end": "__main__:main:298",
}


def loguru_time(t: float) -> str:
    """loguru's ``{time:YYYY-MM-DD HH:mm:ss.SSS}``, in local time."""
    moment = datetime.fromtimestamp(t)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def loguru_line(t: float, level: str, source: str, message: str) -> str:
    """loguru's default format: ``time | LEVEL    | name:function:line - message``."""
    return f"{loguru_time(t)} | {level:<8} | {SOURCES[source]} - {message}"


class RankLogs(Recorder):
    def __init__(self, plan: RunPlan, layout: Layout) -> None:
        self.plan = plan
        self.layout = layout
        self.directory = layout.logs
        self.pending: dict[int, list[str]] = {}
        self.flushed = time.monotonic()
        self.clocks: tuple[int, ...] = ()  # the SM clock of each rank's GPU, last read
        self.start: RunStart | None = None

    def path(self, rank: int) -> Path:
        return self.directory / f"train_rank{rank}.log"

    # ----------------------------------------------------------- writing
    def _add(self, rank: int, line: str) -> None:
        self.pending.setdefault(rank, []).append(line)

    def _say(self, rank: int, t: float, level: str, source: str, message: str) -> None:
        # the ranks log the same moment a few hundred microseconds apart
        self._add(rank, loguru_line(t + 0.0004 * (rank % 8), level, source, message))

    def _every(self, t: float, level: str, source: str, message: str) -> None:
        for rank in range(self.plan.gpus):
            self._say(rank, t, level, source, message)

    def flush(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for rank, lines in self.pending.items():
            with open(self.path(rank), "a", encoding="utf-8") as file:
                file.write("\n".join(lines) + "\n")
        self.pending = {}
        self.flushed = time.monotonic()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self.flushed >= FLUSH_EVERY_WALL_S:
            self.flush()

    # ------------------------------------------------------------ records
    def started(self, start: RunStart) -> None:
        self.start = start
        plan = self.plan
        per_node = plan.gpus_per_node
        for node in range(plan.nodes):
            host = start.hostnames[node]
            pids = tuple(start.pids.get(node * per_node + local, 0) for local in range(per_node))
            lines = nccl.init_lines(plan, host, node_ip(start.ip, node), pids, node)
            for local in range(per_node):
                rank = node * per_node + local
                self._say(rank, start.time, "INFO", "setup",
                          f"rank {rank}/{plan.gpus} (local rank {local}) on {host}, pid "
                          f"{pids[local]}, cuda:{local}")  # fmt: skip
                own = f"{host}:{pids[local]}:"  # NCCL's prefix: host:pid:tid
                self.pending[rank] += [line for line in lines if line.startswith(own)]
        self.flush()

    def step(self, m: StepMetrics) -> None:
        plan = self.plan
        rng = random.Random(f"{plan.seed}-rank-loss-{m.step}")
        offsets = [rng.gauss(0, RANK_LOSS_SPREAD) for _ in range(plan.gpus)]
        mean_offset = sum(offsets) / len(offsets)
        slowest = min(self.clocks) if len(self.clocks) == plan.gpus else 0
        per_gpu = m.tokens_per_s / plan.gpus
        loss = self.layout.logged_loss(m)
        for rank in range(plan.gpus):
            own = m.compute_s
            if slowest and self.clocks[rank]:
                own = m.compute_s * slowest / self.clocks[rank]
            waited = m.compute_s - own  # for the slowest rank's kernels
            self._say(rank, m.time, "INFO", "step",
                      f"step {m.step}/{m.total_steps} | loss "
                      f"{loss + offsets[rank] - mean_offset:.4f} | lr {m.lr:.3e} | "
                      f"step {1000 * m.step_time_s:.0f} ms (compute {1000 * own:.0f} ms, "
                      f"waiting {1000 * waited:.0f} ms, exposed comm "
                      f"{1000 * m.exposed_comm_s:.0f} ms) | {per_gpu:,.0f} tok/s | "
                      f"mem {m.memory_gib:.1f} GiB")  # fmt: skip
        self._maybe_flush()

    def gpus(self, sample: GpuSample) -> None:
        self.clocks = sample.sm_clocks

    def eval(self, r: EvalResult) -> None:
        ppl = "" if r.ppl is None else f" (ppl {r.ppl:.2f})"
        label = "final evaluation" if r.final else f"evaluation at step {r.step}"
        self._every(r.time, "INFO", "eval",
                    f"{label}: val loss {r.loss:.4f}{ppl} over {r.batches} batches in "
                    f"{r.runtime_s:.1f} s")  # fmt: skip
        self._maybe_flush()

    def incident(self, i: Incident) -> None:
        d = i.details
        rank = d.get("rank")
        if i.kind == "slow_rank" and isinstance(rank, int):
            self._say(rank, i.time, "WARNING", "warning",
                      f"this rank is {d.get('slowdown', 0):.0f}% slower than the "
                      f"median at step {i.step} ({d.get('reason', 'straggler')})")  # fmt: skip
            return
        messages = {
            "loss_spike": f"loss spike at step {i.step}: {d.get('loss')} (running mean "
            f"{d.get('mean')}), gradients clipped",
            "overflow": f"fp16 gradient overflow at step {i.step}: step skipped, loss scale "
            f"{d.get('old')} -> {d.get('new')}",
            "recovered": f"loss back to {d.get('loss')} at step {i.step}",
        }
        if i.kind in messages:
            level = "INFO" if i.kind == "recovered" else "WARNING"
            self._every(i.time, level, "warning", messages[i.kind])

    def checkpoint(self, c: CheckpointInfo) -> list[str]:
        writers = range(self.plan.gpus) if self.plan.par.sharded_checkpoint else range(1)
        for rank in writers:
            message = f"saved checkpoint of step {c.step} to {c.path} in {c.seconds:.1f} s"
            self._say(rank, c.time, "INFO", "save", message)
        self._maybe_flush()
        return []

    def removed(self, paths: list[str], time: float) -> None:
        for path in paths:
            line = self.layout.removal_line(path)
            if line:
                self._say(0, time, "INFO", "save", line)

    def finished(self, s: Summary) -> None:
        words = {"finished": "training finished", "limit": "training stopped early",
                 "early_stopped": "training stopped by early stopping",
                 "interrupted": "training interrupted"}  # fmt: skip
        self._every(s.time, "INFO", "end",
                    f"{words.get(s.outcome, 'training ended')} at step {s.steps}")  # fmt: skip
        self.flush()

    def failed(self, lines: list[str], time: float) -> None:
        """What the ranks printed as the job failed, each ``[rankN]:`` line in rank N's
        file (the rest, torchrun's, in rank 0's): their standard error, as it is."""
        for line in lines:
            tagged = re.match(r"\[rank(\d+)\]:", line)
            rank = int(tagged[1]) if tagged and int(tagged[1]) < self.plan.gpus else 0
            self._add(rank, line)
        self.flush()

    def close(self) -> None:
        if self.pending:
            self.flush()


def node_ip(first: str, node: int) -> str:
    """A node's address on the job's network: node 0's, counted up."""
    head, _, last = first.rpartition(".")
    return f"{head}.{int(last) + node}"
