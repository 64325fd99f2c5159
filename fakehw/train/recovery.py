"""A rank that dies mid-run: what PyTorch, NCCL's watchdog and torchrun print, the
hang until the group is stopped, and the restart from the last checkpoint (at most
``MAX_RESTARTS`` times). Called by the engine (``fakehw.train.engine``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fakehw.train import arithmetic as ar
from fakehw.train import nccl, tensors, torchrun
from fakehw.train.events import JobFailed

if TYPE_CHECKING:
    from fakehw.train.engine import Engine

MAX_RESTARTS = 3
CUDA_ERRORS = {48: "uncorrectable ECC error encountered", 79: "unspecified launch failure"}
WATCHDOG_TIMEOUT_S = 600.0  # NCCL's default collective timeout, story seconds
TORCHRUN_MONITOR_S = 5.0  # torchrun's agent looks at its workers this often


class Recovery:
    """Takes one run through the death of a rank and its restart."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def recover(self, dead: list[int]) -> None:
        """A worker died. One of this node's: torchrun's monitor sees it exit within
        seconds and stops the group. One elsewhere: this node's ranks hang in the
        collective until NCCL's watchdog aborts them (10 minutes). Then torchrun
        restarts the group from the last checkpoint."""
        engine = self.engine
        plan, world, style = engine.plan, engine.world, engine.style
        style.term.clear_status()
        engine.finishing = False  # a rank died in the final save: training resumes first
        alive = [r for r in world.pids if r not in dead]
        world.phase("barrier", ranks=alive)  # stuck in NCCL: 100 % utilization, low power
        local = any(rank < plan.gpus_per_node for rank in dead)
        hang = TORCHRUN_MONITOR_S if local else WATCHDOG_TIMEOUT_S
        shown = min(4.0 * engine.options.speed, 60.0, hang)  # the barrier, seen on the GPUs
        engine.wait(shown, check=False)
        engine.clock.jump(hang - shown)
        style.rank_failure(self.failure_lines(dead, local))
        world.take_down()
        engine.restarts += 1
        if engine.restarts > MAX_RESTARTS:
            raise JobFailed(torchrun.group_gave_up(
                engine.clock.now(), os.getpid(), MAX_RESTARTS, engine.script().split()[0]
            ))  # fmt: skip
        engine.wait(3.0, check=False)
        resume_from = engine.last_checkpoint or plan.start_step
        style.rank_failure(self.restart_lines(resume_from))
        self.check_lost_gpus()
        world.spawn()
        world.attach(engine.memory_plan())
        world.watch_xids()
        engine.wait(2.0)
        world.phase("load")
        engine.load(
            "checkpoint",
            len(tensors.weight_files(plan.model.arch).shards),
            "shards",
            ar.checkpoint_read_s(plan.checkpoint_bytes, plan.nodes),
        )
        engine.step = resume_from
        engine.curve.restart()
        engine.monitor.restart()
        engine.rewound(resume_from)
        style.say(
            engine.clock.now(),
            "resume",
            f"restarted worker group ({engine.restarts}/{MAX_RESTARTS}); resuming from "
            f"step {resume_from:,}",
        )

    def check_lost_gpus(self) -> None:
        """A GPU off the bus stays off until the machine reboots: CUDA cannot start on
        it, at a restart or at the start of a run (a fault injected from outside)."""
        engine = self.engine
        lost = engine.world.lost_gpus()
        if not lost:
            return
        raise JobFailed(torchrun.gpu_gone(
            engine.clock.now(), os.getpid(), lost, engine.world.process_name,
            engine.script().split()[0],
        ))  # fmt: skip

    def failure_lines(self, dead: list[int], local: bool) -> list[str]:
        """What PyTorch prints when a rank dies mid-collective: the dead rank's own error
        (if the GPU killed it) and torchrun's verdict on it; when the rank was on
        another node, this node's ranks' NCCL watchdog and their abort (SIGABRT)."""
        engine = self.engine
        now, pid, binary = engine.clock.now(), os.getpid(), engine.world.process_name
        lines = []
        for rank in dead:
            cause = engine.crash_causes.get(rank)
            if cause is not None:
                lines += torchrun.cuda_error(rank, CUDA_ERRORS.get(cause, "unknown error"))
        if local:
            ended = [(rank, -9) for rank in dead if rank < engine.plan.gpus_per_node]
        else:
            ours = range(engine.plan.gpus_per_node)
            seq = nccl.seq_num(engine.plan, engine.step)
            lines += [nccl.watchdog_line(engine.plan, rank, seq, now) for rank in ours]
            ended = [(rank, -6) for rank in ours]  # the watchdog aborts the process
        lines += [torchrun.child_failed(now, pid, rank, engine.world.pids.get(rank, 0), binary,
                                        code) for rank, code in ended]  # fmt: skip
        lines.append(torchrun.group_will_restart(now, pid, MAX_RESTARTS - engine.restarts,
                                                 MAX_RESTARTS))  # fmt: skip
        return lines

    def restart_lines(self, step: int) -> list[str]:
        engine = self.engine
        plan = engine.plan
        lines = torchrun.restarting(
            engine.clock.now(),
            os.getpid(),
            engine.restarts,
            engine.world.hostnames[0],
            plan.nodes,
        )
        lines.append(
            f"loading checkpoint from {engine.saving.checkpoint_path(step)} (step {step:,})"
            if step
            else "no checkpoint yet: starting again from step 0"
        )
        return lines
