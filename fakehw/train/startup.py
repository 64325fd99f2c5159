"""The start of a run, as torchrun and the trainer tell it: the launch, the ranks
attaching to their GPUs (or CUDA's out-of-memory when another job holds them), NCCL's
initialisation, the tokenizer, the dataset and the weights (or the checkpoint of a
resumed run), and the checks before the first step. Called by the engine
(``fakehw.train.engine``)."""

from __future__ import annotations

import os
import random
import time
from typing import TYPE_CHECKING

from fakehw.train import arithmetic as ar
from fakehw.train import nccl, tensors, torchrun
from fakehw.train.events import JobFailed, RunStart
from fakehw.train.memory import MIB, DoesNotFit
from fakehw.train.samples import example
from fakehw.train.styles.base import LaunchInfo, si
from fakehw.train.world import WorldError

if TYPE_CHECKING:
    from fakehw.train.engine import Engine


SETTLE_WALL_S = 5.0  # real seconds to wait at most for another job's memory to settle
SETTLE_POLL_S = 0.25


class Startup:
    """Starts one run, from the launcher to the first step."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self) -> None:
        engine = self.engine
        plan, style, world = engine.plan, engine.style, engine.world
        if not style.plans_in_log:  # the launch script's, before the framework starts
            style.launch_plan(world.hostnames[0], self.topology())
        style.header(engine.clock.now())
        world.spawn()
        host = world.hostnames[0]
        engine.launch = LaunchInfo(
            hostnames=tuple(world.hostnames[: plan.nodes]),
            master_addr=host,
            master_port=29500,
            launcher_pid=os.getpid(),
            local_pids=world.local_pids,
            node_rank=0,
            ip=f"10.{plan.seed % 200}.{1 + plan.seed % 50}.11",
            script=engine.script(),
            time=engine.clock.now(),
        )
        style.launcher(engine.launch)
        engine.wait(1.5, check=False)
        self.check_memory()
        world.attach(engine.memory_plan())
        world.watch_xids()
        engine.wait(nccl.init_seconds(plan)["total"] + 0.6)
        style.nccl_init(
            nccl.init_lines(plan, engine.launch.hostnames[0], engine.launch.ip, world.local_pids)
        )
        engine.records.started(
            RunStart(
                time=engine.clock.now(),
                hostnames=tuple(world.hostnames[: plan.nodes]),
                pids=dict(world.pids),
                ip=engine.launch.ip,
                master_port=engine.launch.master_port,
            )
        )
        engine.load("tokenizer", plan.model.arch.vocab, "tokens", 1.0)
        style.loaded(
            engine.clock.now(),
            "tokenizer",
            f"vocabulary {plan.model.arch.vocab:,} · bos/eos/pad set · max length {plan.seq}",
        )
        shards = max(64, plan.dataset.samples // 2_000_000)
        opening = ar.dataset_open_s(plan.task, shards, plan.dataset.samples)
        engine.load("dataset", shards, "shards", opening)
        style.loaded(
            engine.clock.now(),
            "dataset",
            f"{plan.dataset.name}: {plan.dataset.samples:,} "
            f"{'pairs' if plan.task == 'dpo' else 'samples'} · {si(plan.dataset.tokens)} tokens · "
            f"{shards} shards · {'padded' if plan.task == 'dpo' else 'packed'} to "
            f"{plan.seq} tokens",
        )
        if plan.mixture:
            style.mixture(engine.clock.now())
        rows = random.Random(plan.seed * 7919 + 6)  # which rows: a stream of their own
        for dataset in plan.datasets:
            row = example(dataset, rows)
            if row is not None:
                style.data_example(engine.clock.now(), row)
        world.phase("load")
        shards_model = len(tensors.weight_files(plan.model.arch).shards)
        if plan.start_step:  # a resumed run reads its checkpoint: model and optimizer
            seconds = ar.checkpoint_read_s(plan.checkpoint_bytes, plan.nodes)
            engine.load("checkpoint", shards_model, "shards", seconds)
        elif plan.task == "pretrain":  # from scratch: nothing to read, weights initialised
            engine.load("init", plan.model.arch.layers, "layers", ar.model_init_s(plan.params))
        else:  # a fine-tune starts from the published weights
            engine.load("weights", shards_model, "shards", ar.weights_read_s(plan.params))
        style.model_info(engine.clock.now())
        if plan.start_step:
            resumed = engine.saving.checkpoint_path(plan.start_step)
            files = style.checkpoint_files(plan.start_step, plan.checkpoint_bytes)
            engine.records.resumed(plan.start_step, resumed, files)
            engine.saving.loaded(plan.start_step)
        style.gpu_check(engine.clock.now(), world.cells())
        engine.recovery.check_lost_gpus()
        if style.plans_in_log:
            style.topology(engine.clock.now(), world.hostnames[0], self.topology())
            style.planning(engine.clock.now())
        style.parallelism(engine.clock.now())
        style.training_start(engine.clock.now())
        style.lr_schedule(engine.clock.now(), plan.start_step, at_start=True)

    def topology(self) -> str:
        """Node 0's ``nvidia-smi topo -m``, or why it could not be read (a report the run
        can do without)."""
        try:
            return self.engine.world.topology()
        except WorldError as exc:
            return f"({exc})\n"

    def settled_others(self, rank: int, ours: set[int]) -> list[tuple[int, int]]:
        """(pid, MiB) of the other processes on ``rank``'s GPU, once their allocators
        have taken what they are taking (a job that just started grows for a second)."""
        world = self.engine.world
        others = [p for p in world.holders(rank) if p[0] not in ours]
        deadline = time.monotonic() + SETTLE_WALL_S
        while others and time.monotonic() < deadline:
            time.sleep(SETTLE_POLL_S)
            now = [p for p in world.holders(rank) if p[0] not in ours]
            if now == others:
                break
            others = now
        return others

    def check_memory(self) -> None:
        """Another job on the same GPUs leaves too little memory: CUDA OOM, as in life."""
        engine = self.engine
        plan = engine.plan
        ours = set(engine.world.pids.values())
        for rank in range(plan.gpus_per_node):
            others = self.settled_others(rank, ours)
            total = plan.gpu.memory_total_mib - plan.gpu.memory_reserved_mib
            free = total - sum(mib for _, mib in others)
            if plan.memory_mib <= free:
                continue
            try:  # the batch-size manager shrinks the layout until it fits what is left
                engine.memory.out_of_memory(
                    rank, (free - plan.gpu.context_mib) * MIB, 0.0, "another job on the GPU",
                    [(pid, mib / 1024) for pid, mib in others],
                )  # fmt: skip
                continue
            except DoesNotFit:
                pass  # nothing fits: the job fails with PyTorch's error
            gib = 1024
            lines = [
                *torchrun.out_of_memory(
                    rank, engine.script().split()[0], plan.memory_mib / gib, total / gib,
                    max(0, free) / gib, [(pid, mib / gib) for pid, mib in others],
                ),
                torchrun.child_failed(
                    engine.clock.now(), os.getpid(), rank, engine.world.pids.get(rank, 0),
                    engine.world.process_name, 1,
                ),
            ]  # fmt: skip
            raise JobFailed(lines)
