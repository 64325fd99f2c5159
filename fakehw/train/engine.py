"""The run itself: a timeline of phases that drives the GPUs and feeds a log style.

Time is the run's own ("story") clock: ``--speed-factor 10`` plays ten story
seconds per real second; every timestamp, step time and ETA is story time,
and phases reach the daemon when they happen, so the viewers see the GPUs
load, heat under training, cool during checkpoints and idle after the end.

Every figure obeys the arithmetic of ``fakehw.train.arithmetic``:
tokens/s = GPUs x peak x MFU / (6·N), scaled by the slowest GPU's SM clock as
the daemon reports it (a throttled GPU slows the whole synchronous job);
step time = tokens per step / tokens/s; the loss follows the Chinchilla curve
of the model size and the tokens seen, with noise and rare spikes.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from fakehw.train import arithmetic as ar
from fakehw.train import nccl, torchrun
from fakehw.train.events import (
    BenchmarkRow,
    CheckpointInfo,
    CollectiveTiming,
    EvalResult,
    ExportArtifact,
    Incident,
    StepMetrics,
    Summary,
)
from fakehw.train.learning import LearningCurve
from fakehw.train.metrics import MetricsWriter
from fakehw.train.plan import RunPlan
from fakehw.train.styles.base import LaunchInfo, Style, perplexity, si, size
from fakehw.train.world import World

# The mean SM clock of a power-capped GPU under training, as a share of its
# maximum (the calibrated model: 1678 of 1980 MHz on H100); the plan's MFU holds there.
TRAINING_CLOCK = 0.8475
STRAGGLER_CLOCK = 0.93  # a GPU this far below the median is named as holding the job back
CLOCK_SETTLE_S = 20.0  # real seconds for the clocks to settle after training starts
MAX_RESTARTS = 3
CUDA_ERRORS = {48: "uncorrectable ECC error encountered", 79: "unspecified launch failure"}
WATCHDOG_TIMEOUT_S = 600.0  # NCCL's default collective timeout, story seconds
TORCHRUN_MONITOR_S = 5.0  # torchrun's agent looks at its workers this often
EXPORT_WALL_S = 90.0  # real seconds an export waits at most (its story time is its own)
LINE_EVERY_WALL_S = 0.3  # at high speed factors, log every few steps, not every step
WARMUP_STEPS = 0.8  # steps over which the first steps' extra time decays (e-fold)
# lm-eval-harness on the four tasks: the prompt and choice tokens its loglikelihood
# requests score (HellaSwag 4 endings of ~100 tokens, MMLU 5-shot prompts of ~600 with
# 4 choices, ARC-Easy), and GSM8K's 5-shot generations of up to 256 tokens each.
BENCHMARK_TOKENS = 10042 * 4 * 110 + 14042 * 4 * 620 + 2376 * 4 * 60 + 1319 * 900
BENCHMARK_GENERATED_TOKENS = 1319 * 256
DECODE_TOKENS_PER_S_PER_GPU = 1800.0  # batched greedy decoding of a mid-size model


class JobFailed(Exception):
    """The job cannot run (a GPU is full): what PyTorch and torchrun print, then exit 1."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0] if lines else "job failed")
        self.lines = lines


class RankDied(Exception):
    def __init__(self, ranks: list[int]) -> None:
        super().__init__(f"ranks {ranks} died")
        self.ranks = ranks


class SaveAbandoned(KeyboardInterrupt):
    """Ctrl-C again while a checkpoint was being written: the save is given up."""


class SaveGuard:
    """While a checkpoint is written, Ctrl-C does not cut it short (as a careful
    trainer's signal handler does): the first press is only noted (``pressed``)
    and the save goes on; another press raises ``SaveAbandoned``, and so does
    the first one with ``abandon_at_once`` (the save Ctrl-C itself started)."""

    def __init__(self, abandon_at_once: bool = False) -> None:
        self.abandon_at_once = abandon_at_once
        self.pressed = False
        self._previous: Callable[[int, FrameType | None], object] | int | None = None

    def __enter__(self) -> SaveGuard:
        if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:  # ignored stays ignored
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.pressed or self.abandon_at_once:
            raise SaveAbandoned
        self.pressed = True


@dataclass
class Options:
    speed: float = 1.0
    exit_after_steps: int | None = None
    exit_after_time: float | None = None  # real seconds
    quantize: str | None = None
    injections: tuple[tuple[str, int, int], ...] = ()  # (fault, rank, step)


class StoryClock:
    """The run's own time. It moves by exactly the durations the run plays (a step's
    modelled time, a save's, a load's), so that every timestamp, elapsed time, ETA
    and runtime the log prints adds up; the wall clock follows at ``speed`` where it
    can (sleeping until each duration's end is due), and never pushes the story
    ahead when the machine is slower than that."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.start = time.time()
        self.story = self.start  # where the story stands once the current wait ends
        self._wall0 = time.monotonic()
        self._jumped = 0.0  # story seconds played without waiting (a watchdog's 10 min)

    def advance(self, story_seconds: float) -> float:
        """Play ``story_seconds`` more; returns the monotonic time they end at."""
        self.story += max(0.0, story_seconds)
        return self.due()

    def due(self) -> float:
        return self._wall0 + (self.story - self.start - self._jumped) / self.speed

    def jump(self, story_seconds: float) -> None:
        """Story time that passes at once (nothing to watch during it)."""
        self.story += story_seconds
        self._jumped += story_seconds

    def now(self) -> float:
        """The story's time: inside a wait, as far as the wall clock has got."""
        behind = self.due() - time.monotonic()
        return self.story - behind * self.speed if behind > 0 else self.story

    def elapsed(self) -> float:
        return self.now() - self.start


class Engine:
    def __init__(
        self, plan: RunPlan, world: World, style: Style, metrics: MetricsWriter, options: Options
    ) -> None:
        self.plan = plan
        self.world = world
        self.style = style
        self.metrics = metrics
        self.options = options
        self.clock = StoryClock(options.speed)
        self.rng = random.Random(plan.seed * 7919 + 1)
        self.wall_start = time.monotonic()
        self.step = plan.start_step
        self.steps_done = 0
        self.last_checkpoint = plan.start_step if plan.start_step else None
        self.restarts = 0
        self.curve = LearningCurve(plan, self.rng)
        self.last_eval: float | None = None
        self.step_times: list[float] = []
        self.logged = 0
        self.slow_warned_at = -(10**9)
        self.checkpoints: list[CheckpointInfo] = []
        self.exports: list[str] = []
        self.launch: LaunchInfo | None = None
        self.training_since = time.monotonic()
        self.finishing = False  # the wrap-up after training: save, export, summary
        self.interrupt_told = False  # Ctrl-C came during a save, which said what happens
        self.crash_causes: dict[int, int] = {}  # rank: the XID that killed it
        self.injected: set[tuple[str, int, int]] = set()
        self.steps_since_start = 0  # since the job (re)started: the warm-up
        self.loss_sum = 0.0  # of the steps this run trained
        self.window_loss, self.window_time, self.window_steps = 0.0, 0.0, 0  # since the last log
        self.window_skipped = 0  # fp16 steps skipped since the last log
        self.straggle, self.straggle_until = 1.0, 0  # a slow rank's factor, until a step
        self.training_started: float | None = None  # story time of the first step
        self.early_stop_told = False
        self.warmup_amplitude = self.rng.uniform(1.2, 2.2)
        plan.log_interval = log_interval(self.expected_step_time() / options.speed)

    # --------------------------------------------------------------- pacing
    def wait(self, story_seconds: float, check: bool = True) -> None:
        """Let ``story_seconds`` pass (sleeping story/speed), watching the ranks."""
        self.wait_until(self.deadline(story_seconds), check)

    def deadline(self, story_seconds: float) -> float:
        """Play ``story_seconds`` on the story clock; the monotonic time they end at.

        Once ``--exit-after-time`` is up, the wrap-up still plays in full but
        without sleeping: the story clock jumps over what is not slept, so the
        timestamps agree with the durations printed."""
        if self.finishing and self.options.exit_after_time is not None:
            hard = self.wall_start + self.options.exit_after_time
            if self.clock.due() + story_seconds / self.options.speed > hard:
                self.clock.jump(story_seconds)
                return time.monotonic()
        return self.clock.advance(story_seconds)

    def wait_until(
        self, deadline: float, check: bool = True, stop: Callable[[], bool] | None = None
    ) -> bool:
        """Sleep until ``deadline`` (monotonic), watching the ranks if ``check``;
        False if ``stop()`` came true first."""
        while True:
            if stop is not None and stop():
                return False
            if check:
                crashed = self.world.crashed_by_xid()
                self.crash_causes.update(crashed)
                dead = sorted(set(self.world.dead_ranks()) | set(crashed))
                if dead:
                    raise RankDied(dead)
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 0.1))

    # ----------------------------------------------------------------- run
    def run(self) -> str:
        """Play the run; returns "finished" or "limit" (``KeyboardInterrupt`` and
        ``Terminated`` pass through to the caller, which ends the run)."""
        self.startup()
        while True:
            try:
                outcome = self.train()
                if outcome == "limit" and not self.early_stop_told:
                    self.early_stop_told = True
                    self.announce_early_stop()
                self.final_checkpoint()
                break
            except RankDied as exc:  # in training or in the final save
                self.recover(exc.ranks)
        self.finish(outcome)
        return outcome

    def interrupted(self) -> None:
        """Ctrl-C: save what is not saved yet, as a careful training script does."""
        term = self.style.term
        term.clear_status()
        saving = bool(self.world.pids) and self.unsaved_steps() > 0
        if saving:
            message = "interrupted: saving a checkpoint before exiting (Ctrl-C again to abandon it)"
        elif not self.steps_done:
            message = "interrupted before the first step: nothing to save"
        elif not self.unsaved_steps():
            message = f"interrupted: nothing new to save; {self.last_complete()}"
        else:
            message = f"interrupted while no worker runs: nothing to save; {self.last_complete()}"
        if not self.interrupt_told:  # else the save it came during said what happens
            self.style.say(self.clock.now(), "signal", term.paint(message, "yellow"))
        if saving:
            self.checkpoint(reason="interrupt")
        self.finish("interrupted")

    # ------------------------------------------------------------- start-up
    def startup(self) -> None:
        plan, style, world = self.plan, self.style, self.world
        style.header(self.clock.now())
        world.spawn()
        host = world.hostnames[0]
        self.launch = LaunchInfo(
            hostnames=tuple(world.hostnames[: plan.nodes]),
            master_addr=host,
            master_port=29500,
            launcher_pid=os.getpid(),
            local_pids=world.local_pids,
            node_rank=0,
            ip=f"10.{plan.seed % 200}.{1 + plan.seed % 50}.11",
            script=self.script(),
            time=self.clock.now(),
        )
        style.launcher(self.launch)
        self.wait(1.5, check=False)
        self.check_memory()
        world.attach(self.memory_plan())
        world.watch_xids()
        self.wait(nccl.init_seconds(plan)["total"] + 0.6)
        style.nccl_init(
            nccl.init_lines(plan, self.launch.hostnames[0], self.launch.ip, world.local_pids)
        )
        self.load("tokenizer", plan.model.arch.vocab, "tokens", 1.0)
        style.loaded(
            self.clock.now(),
            "tokenizer",
            f"vocabulary {plan.model.arch.vocab:,} · bos/eos/pad set · max length {plan.seq}",
        )
        shards = max(64, plan.dataset.samples // 2_000_000)
        opening = ar.dataset_open_s(plan.task, shards, plan.dataset.samples)
        self.load("dataset", shards, "shards", opening)
        style.loaded(
            self.clock.now(),
            "dataset",
            f"{plan.dataset.name}: {plan.dataset.samples:,} "
            f"{'pairs' if plan.task == 'dpo' else 'samples'} · {si(plan.dataset.tokens)} tokens · "
            f"{shards} shards · {'padded' if plan.task == 'dpo' else 'packed'} to "
            f"{plan.seq} tokens",
        )
        world.phase("load")
        shards_model = len(ar.safetensor_shards(ar.BF16 * plan.params))
        if plan.start_step:  # a resumed run reads its checkpoint: model and optimizer
            seconds = ar.checkpoint_read_s(plan.checkpoint_bytes, plan.nodes)
            self.load("checkpoint", shards_model, "shards", seconds)
        elif plan.task == "pretrain":  # from scratch: nothing to read, weights initialised
            self.load("init", plan.model.arch.layers, "layers", ar.model_init_s(plan.params))
        else:  # a fine-tune starts from the published weights
            self.load("weights", shards_model, "shards", ar.weights_read_s(plan.params))
        style.model_info(self.clock.now())
        if plan.start_step:
            style.say(
                self.clock.now(),
                "resume",
                f"loaded {plan.save_dir}/{self.checkpoint_name(plan.start_step)} "
                f"(step {plan.start_step:,}, {size(plan.checkpoint_bytes)}): model, "
                "optimizer, scheduler and RNG states",
            )
        style.gpu_check(self.clock.now(), world.cells())
        self.check_lost_gpus()
        style.parallelism(self.clock.now())
        style.training_start(self.clock.now())

    def check_memory(self) -> None:
        """Another job on the same GPUs leaves too little memory: CUDA OOM, as in life."""
        plan = self.plan
        ours = set(self.world.pids.values())
        for rank in range(plan.gpus_per_node):
            others = [p for p in self.world.holders(rank) if p[0] not in ours]
            total = plan.gpu.memory_total_mib - plan.gpu.memory_reserved_mib
            free = total - sum(mib for _, mib in others)
            if plan.memory_mib <= free:
                continue
            gib = 1024
            lines = [
                *torchrun.out_of_memory(
                    rank, self.script().split()[0], plan.memory_mib / gib, total / gib,
                    max(0, free) / gib, [(pid, mib / gib) for pid, mib in others],
                ),
                torchrun.child_failed(
                    self.clock.now(), os.getpid(), rank, self.world.pids.get(rank, 0),
                    self.world.process_name, 1,
                ),
            ]  # fmt: skip
            raise JobFailed(lines)

    def script(self) -> str:
        return {
            "megatron": "pretrain_gpt.py",
            "hf": "run_clm.py" if self.plan.task == "pretrain" else "train_sft.py",
            "deepspeed": "train.py --deepspeed ds_config.json",
            "default": "train.py",
        }[self.plan.style]

    def load(self, what: str, total: int, unit: str, story_seconds: float) -> None:
        steps = max(4, min(total, 24))
        shown = 0
        for k in range(1, steps + 1):
            self.wait(story_seconds / steps)
            done = round(total * k / steps)
            if done > shown:
                elapsed = story_seconds * k / steps
                self.style.loading(self.clock.now(), what, done, total, unit, elapsed)
                shown = done

    def memory_plan(self) -> dict[str, int]:
        plan = self.plan
        # PyTorch's caching allocator keeps what training reserved while the rank
        # evaluates, saves or waits in a collective; only "free" gives it back.
        held = plan.memory_mib
        return {
            "load": plan.load_memory_mib,
            "train": held,
            "eval": held,
            "checkpoint": held,
            "barrier": held,
            "free": plan.gpu.free_floor_mib,
        }

    # ---------------------------------------------------------------- train
    def train(self) -> str:
        plan, world = self.plan, self.world
        self.check_memory()  # the big allocations come with the first step
        world.phase("train", cycle_s=self.expected_step_time())
        self.training_since = time.monotonic()
        while True:
            if self.step >= plan.total_steps:
                return "finished"
            if self.limit_reached():
                return "limit"
            if self.options.exit_after_time is not None and (
                time.monotonic() - self.wall_start
                >= self.options.exit_after_time - self.wrap_up_wall_s()
            ):
                return "limit"
            metrics = self.advance()
            if metrics is not None:
                self.log(metrics)
            self.inject_due()
            if self.step % plan.eval_every == 0 and self.step < plan.total_steps:
                self.evaluate()
                world.phase("train", cycle_s=self.expected_step_time())
            if self.step % plan.checkpoint_every == 0:
                self.checkpoint()
                world.phase("train", cycle_s=self.expected_step_time())

    def inject_due(self) -> None:
        """--inject: faults whose step has come (each fires once)."""
        for fault, rank, step in self.options.injections:
            if step != self.step or (fault, rank, step) in self.injected:
                continue
            self.injected.add((fault, rank, step))
            if fault == "rank-crash":
                self.world.kill_rank(rank)
            else:
                self.world.inject(rank, fault)

    def wrap_up_wall_s(self) -> float:
        """Real seconds to keep for the final save, export and benchmarks when
        ``--exit-after-time`` ends the run (at most 40 % of it)."""
        plan = self.plan
        writers = plan.nodes if plan.par.sharded_checkpoint else 1
        save = ar.checkpoint_write_s(plan.checkpoint_bytes, writers)
        story = save + 3 * EXPORT_WALL_S * self.options.speed + 6.0
        assert self.options.exit_after_time is not None
        return min(0.4 * self.options.exit_after_time, story / self.options.speed)

    def expected_step_time(self) -> float:
        return self.plan.step_s

    def perplexity(self, loss: float) -> float | None:
        """exp(loss) of a language-modelling loss; DPO's is a preference loss: none."""
        return None if self.plan.task == "dpo" else perplexity(loss)

    def warmup_factor(self) -> float:
        """The first steps after a (re)start are slower: the caching allocator grows,
        cuBLAS and NCCL pick algorithms and connect their peers. Step 1 takes a few
        times a steady step, step 3 is within a few per cent."""
        k = self.steps_since_start
        return 1.0 + self.warmup_amplitude * math.exp(-(k - 1) / WARMUP_STEPS)

    def clock_factor(self) -> tuple[float, int, int]:
        """Throughput relative to the plan's, from the GPUs' SM clocks as the daemon
        reports them: the slowest GPU's, as a synchronous job waits for its slowest
        rank. Returns (factor, slowest rank, median clock)."""
        clocks = self.world.clocks()
        if not clocks:
            return 1.0, 0, 0
        slowest = min(range(len(clocks)), key=clocks.__getitem__)
        median = sorted(clocks)[len(clocks) // 2]
        # a synchronous step ends when its slowest rank's kernels do
        factor = clocks[slowest] / (TRAINING_CLOCK * self.plan.gpu.sm_clock_max_mhz)
        return min(1.12, max(0.2, factor)), slowest, median

    def advance(self) -> StepMetrics | None:
        """One optimizer step; the metrics if this step is logged."""
        plan = self.plan
        factor, slowest, median = self.clock_factor()
        jitter = 1.0 + 0.004 * self.rng.gauss(0, 1)
        if self.rng.random() < 1 / 3000:
            # a stall that lasts (a slow data loader, a noisy neighbour): every step
            # waits for that rank until it clears, the logged rate with them
            self.straggle = self.rng.uniform(1.2, 1.5)
            self.straggle_until = self.step + max(2, plan.log_interval) + self.rng.randrange(20)
            rank = self.rng.randrange(plan.gpus)
            self.incident(
                "slow_rank",
                rank=rank,
                host=self.world.hostnames[rank // plan.gpus_per_node],
                slowdown=100 * (self.straggle - 1),
                reason="data loader stall",
            )
        self.steps_since_start += 1
        if self.training_started is None:
            self.training_started = self.clock.now()
        perf = plan.performance
        straggle = self.straggle if self.step < self.straggle_until else 1.0
        step_time = perf.step_s(factor) * self.warmup_factor() * jitter * straggle
        tokens_per_s = plan.tokens_per_step / step_time
        self.wait(step_time)
        self.step += 1
        self.steps_done += 1
        self.step_times.append(step_time)
        if len(self.step_times) > 50:
            self.step_times.pop(0)
        loss, grad_norm, skipped = self.curve.sample(self.step, self.lr())
        for kind, details in self.curve.incidents():
            self.incident(kind, **details)
        self.loss_sum += loss
        self.window_loss += loss
        self.window_time += step_time
        self.window_steps += 1
        self.window_skipped += int(skipped)
        self.check_clocks(slowest, median)
        if not self.should_log():
            return None
        interval_loss = self.window_loss / self.window_steps
        interval_step_s = self.window_time / self.window_steps
        interval_skipped = self.window_skipped
        self.window_loss, self.window_time, self.window_steps = 0.0, 0.0, 0
        self.window_skipped = 0
        epoch_fraction = self.step / plan.steps_per_epoch
        mean_step = sum(self.step_times) / len(self.step_times)
        extra = self.curve.dpo_metrics(self.step) if plan.task == "dpo" else {}
        return StepMetrics(
            step=self.step,
            total_steps=plan.total_steps,
            epoch=min(plan.epochs - 1, int(epoch_fraction)),
            epochs=plan.epochs,
            epoch_fraction=epoch_fraction,
            tokens_seen=self.step * plan.trained_tokens_per_step,
            samples_seen=self.step * plan.global_batch,
            loss=loss,
            interval_loss=interval_loss,
            interval_step_s=interval_step_s,
            interval_skipped=interval_skipped,
            ppl=self.perplexity(loss),
            lr=self.lr(),
            grad_norm=grad_norm,
            tokens_per_s=tokens_per_s,
            samples_per_s=tokens_per_s / plan.tokens_per_step * plan.global_batch,
            step_time_s=step_time,
            elapsed_s=self.clock.elapsed(),
            eta_s=(plan.total_steps - self.step) * mean_step,
            tflops_per_gpu=perf.tflops_per_gpu(step_time),
            mfu=perf.mfu(step_time),
            gpus=plan.gpus,
            global_batch=plan.global_batch,
            global_batch_tokens=plan.tokens_per_step,
            params=plan.active_params,
            loss_scale=self.curve.loss_scale,
            skipped_steps=self.curve.skipped if skipped or self.curve.loss_scale is not None else 0,
            time=self.clock.now(),
            memory_gib=plan.memory_mib / 1024,
            compute_s=step_time
            - perf.exposed_comm_s
            - perf.optimizer_s
            - perf.bubble_s / max(factor, 1e-6),
            exposed_comm_s=perf.exposed_comm_s,
            bubble_fraction=perf.bubble_fraction,
            extra=extra,
        )

    def should_log(self) -> bool:
        last = self.step == self.plan.total_steps or self.limit_reached()
        return last or self.step % self.plan.log_interval == 0

    def limit_reached(self) -> bool:
        """--exit-after-steps N: the run has reached step N past where it started (steps
        lost to a restart are trained again, as the step counter says)."""
        limit = self.options.exit_after_steps
        return limit is not None and self.step - self.plan.start_step >= limit

    def lr(self) -> float:
        plan = self.plan
        return ar.learning_rate(
            self.step, plan.total_steps, plan.warmup_steps, plan.peak_lr, plan.schedule
        )

    def check_clocks(self, slowest: int, median: int) -> None:
        clocks = self.world.clocks()
        settling = time.monotonic() - self.training_since < CLOCK_SETTLE_S
        if not clocks or settling or self.step - self.slow_warned_at < 200:
            return
        if clocks[slowest] < STRAGGLER_CLOCK * median:
            self.slow_warned_at = self.step
            node = slowest // self.plan.gpus_per_node
            self.incident(
                "slow_rank",
                rank=slowest,
                host=self.world.hostnames[node],
                slowdown=100 * (1 - clocks[slowest] / median),
                reason=f"GPU SM clock {clocks[slowest]} MHz vs median {median} MHz",
            )

    def incident(self, kind: str, **details: object) -> None:
        self.style.incident(Incident(kind, self.step, self.clock.now(), dict(details)))

    def log(self, m: StepMetrics) -> None:
        style = self.style
        style.step(m)
        self.metrics.step(m)
        self.logged += 1
        if style.uses_live_bar and style.term.tty:
            style.progress(m)
        elif self.logged % 20 == 0:
            style.progress_line(m)
        if self.logged % 25 == 0:
            self.collective(m)
        if self.logged % 100 == 0:
            style.gpu_grid(self.world.cells(), m)

    def collective(self, m: StepMetrics) -> None:
        """NCCL's timing of the step's heaviest collective, as the model sized it."""
        traffic = self.plan.performance.largest()
        if traffic is None:
            return
        jitter = math.exp(self.rng.gauss(0, 0.03))
        time_ms = 1000 * traffic.call_s * jitter
        self.style.collective(
            CollectiveTiming(
                self.step,
                traffic.op,
                traffic.nbytes,
                traffic.ranks,
                time_ms,
                traffic.algbw_gbps / jitter,
                traffic.achieved_busbw_gbps / jitter,
                traffic.transport,
                m.time,
                calls=traffic.calls,
                purpose=traffic.purpose,
                hidden=traffic.overlap,
                step_s=m.step_time_s,
            )
        )

    # ----------------------------------------------------------------- eval
    def evaluate(self, final: bool = False) -> None:
        plan, style = self.plan, self.style
        style.term.clear_status()
        self.world.phase("eval")
        started = self.clock.now()
        style.eval_start(started, self.step, plan.eval_batches, final)
        batch_s = plan.performance.eval_batch_s(self.clock_factor()[0])
        for k in range(1, plan.eval_batches + 1):  # batches differ a little, as kernels do
            self.wait(batch_s * (1 + 0.02 * self.rng.gauss(0, 1)))
            if k % max(1, plan.eval_batches // 20) == 0 or k == plan.eval_batches:
                style.eval_progress(self.clock.now(), k, plan.eval_batches)
        gap = 0.03 if plan.task == "pretrain" else 0.04 + 0.03 * (self.step / plan.steps_per_epoch)
        loss = self.curve.expected_loss(self.step) + gap + self.rng.gauss(0, 0.004)
        extra = {}
        if plan.task == "dpo":
            pairs = plan.eval_batches * plan.global_batch
            measured = self.curve.dpo_metrics(self.step)
            # an accuracy over the evaluation's pairs is a count of them
            measured["rewards/accuracies"] = round(measured["rewards/accuracies"] * pairs) / pairs
            extra = {f"eval_{k}": v for k, v in measured.items()}
        result = EvalResult(
            step=self.step,
            loss=loss,
            ppl=self.perplexity(loss),
            samples=plan.eval_batches * plan.global_batch,
            runtime_s=self.clock.now() - started,
            time=self.clock.now(),
            batches=plan.eval_batches,
            tokens_per_s=plan.eval_batches
            * plan.tokens_per_step
            / max(self.clock.now() - started, 1e-9),
            final=final,
            extra=extra,
        )
        self.last_eval = loss
        style.eval_done(result)
        self.metrics.eval(result)

    # ----------------------------------------------------------- checkpoint
    def checkpoint_name(self, step: int) -> str:
        return self.style.checkpoint_dir(step)

    def checkpoint_path(self, step: int) -> str:
        return f"{self.plan.save_dir}/{self.checkpoint_name(step)}"

    def unsaved_steps(self) -> int:
        """Training steps since the last complete checkpoint (or since step 0)."""
        return self.step - (self.last_checkpoint or 0)

    def last_complete(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint is complete: the run would start again from step 0"
        return (
            f"the last complete checkpoint is {self.checkpoint_path(self.last_checkpoint)} "
            f"(step {self.last_checkpoint:,})"
        )

    def final_checkpoint(self) -> None:
        """The save at the end of training, of what is not saved yet."""
        self.finishing = True
        if self.unsaved_steps() > 0:
            self.checkpoint(reason="final")

    def checkpoint(self, reason: str = "periodic") -> CheckpointInfo:
        """Write a checkpoint of this step. Ctrl-C while it is written lets it finish,
        then ends the run (``KeyboardInterrupt``); Ctrl-C again abandons it."""
        try:
            with SaveGuard(abandon_at_once=reason == "interrupt") as guard:
                info = self.write_checkpoint(reason, guard)
        except SaveAbandoned:
            if self.last_checkpoint != self.step:  # else it was complete after all
                self.abandoned()
            raise
        if guard.pressed:
            raise KeyboardInterrupt
        return info

    def write_checkpoint(self, reason: str, guard: SaveGuard) -> CheckpointInfo:
        plan, world, style = self.plan, self.world, self.style
        style.term.clear_status()
        if plan.par.sharded_checkpoint:
            world.phase("checkpoint")
        else:
            world.phase("barrier")  # the others wait in a collective while rank 0 writes
            world.phase("checkpoint", ranks=[0])
        path = self.checkpoint_path(self.step)
        started = self.clock.now()
        style.checkpoint_start(started, self.step, path, reason)
        total = plan.checkpoint_bytes
        writers = plan.nodes if plan.par.sharded_checkpoint else 1
        seconds = ar.checkpoint_write_s(total, writers) * self.rng.uniform(0.9, 1.15)
        deadline = self.deadline(seconds)
        if not self.wait_until(deadline, check=reason != "interrupt", stop=lambda: guard.pressed):
            self.interrupt_told = True
            style.term.clear_status()
            message = (
                f"interrupted: letting the checkpoint of step {self.step:,} finish, then "
                "exiting (Ctrl-C again to abandon it)"
            )
            style.say(self.clock.now(), "signal", style.term.paint(message, "yellow"))
            self.wait_until(deadline, check=False)
        info = CheckpointInfo(
            step=self.step,
            path=path,
            files=tuple(style.checkpoint_files(self.step, total)),
            bytes=total,
            seconds=seconds,
            time=self.clock.now(),
            reason=reason,
        )
        self.checkpoints.append(info)
        self.last_checkpoint = self.step
        style.checkpoint_done(info)
        self.metrics.checkpoint(info)
        return info

    def abandoned(self) -> None:
        """Say what a save given up costs: the checkpoint, and the steps since the last."""
        term = self.style.term
        term.clear_status()
        first = (self.last_checkpoint or 0) + 1
        lost = f"steps {first:,}-{self.step:,} are" if first < self.step else f"step {first:,} is"
        message = (
            f"Ctrl-C again: abandoned the checkpoint of step {self.step:,}; "
            f"{self.checkpoint_path(self.step)} is incomplete and {lost} lost; "
            f"{self.last_complete()}"
        )
        self.style.say(self.clock.now(), "signal", term.paint(message, "red"))

    # -------------------------------------------------------------- failure
    def recover(self, dead: list[int]) -> None:
        """A worker died. One of this node's: torchrun's monitor sees it exit within
        seconds and stops the group. One elsewhere: this node's ranks hang in the
        collective until NCCL's watchdog aborts them (10 minutes). Then torchrun
        restarts the group from the last checkpoint."""
        plan, world, style = self.plan, self.world, self.style
        style.term.clear_status()
        self.finishing = False  # a rank died in the final save: training resumes first
        alive = [r for r in world.pids if r not in dead]
        world.phase("barrier", ranks=alive)  # stuck in NCCL: 100 % utilization, low power
        local = any(rank < plan.gpus_per_node for rank in dead)
        hang = TORCHRUN_MONITOR_S if local else WATCHDOG_TIMEOUT_S
        shown = min(4.0 * self.options.speed, 60.0, hang)  # the barrier, seen on the GPUs
        self.wait(shown, check=False)
        self.clock.jump(hang - shown)
        style.rank_failure(self.failure_lines(dead, local))
        world.take_down()
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            raise JobFailed(torchrun.group_gave_up(
                self.clock.now(), os.getpid(), MAX_RESTARTS, self.script().split()[0]
            ))  # fmt: skip
        self.wait(3.0, check=False)
        resume_from = self.last_checkpoint or plan.start_step
        style.rank_failure(self.restart_lines(resume_from))
        self.check_lost_gpus()
        world.spawn()
        world.attach(self.memory_plan())
        world.watch_xids()
        self.wait(2.0)
        world.phase("load")
        self.load(
            "checkpoint",
            len(ar.safetensor_shards(ar.BF16 * plan.params)),
            "shards",
            ar.checkpoint_read_s(plan.checkpoint_bytes, plan.nodes),
        )
        self.step = resume_from
        self.curve.restart()
        style.say(
            self.clock.now(),
            "resume",
            f"restarted worker group ({self.restarts}/{MAX_RESTARTS}); resuming from "
            f"step {resume_from:,}",
        )

    def check_lost_gpus(self) -> None:
        """A GPU off the bus stays off until the machine reboots: CUDA cannot start on
        it, at a restart or at the start of a run (a fault injected from outside)."""
        lost = self.world.lost_gpus()
        if not lost:
            return
        raise JobFailed(torchrun.gpu_gone(
            self.clock.now(), os.getpid(), lost, self.world.process_name,
            self.script().split()[0],
        ))  # fmt: skip

    def failure_lines(self, dead: list[int], local: bool) -> list[str]:
        """What PyTorch prints when a rank dies mid-collective: the dead rank's own error
        (if the GPU killed it) and torchrun's verdict on it; when the rank was on
        another node, this node's ranks' NCCL watchdog and their abort (SIGABRT)."""
        now, pid, binary = self.clock.now(), os.getpid(), self.world.process_name
        lines = []
        for rank in dead:
            cause = self.crash_causes.get(rank)
            if cause is not None:
                lines += torchrun.cuda_error(rank, CUDA_ERRORS.get(cause, "unknown error"))
        if local:
            ended = [(rank, -9) for rank in dead if rank < self.plan.gpus_per_node]
        else:
            ours = range(self.plan.gpus_per_node)
            seq = nccl.seq_num(self.plan, self.step)
            lines += [nccl.watchdog_line(self.plan, rank, seq, now) for rank in ours]
            ended = [(rank, -6) for rank in ours]  # the watchdog aborts the process
        lines += [torchrun.child_failed(now, pid, rank, self.world.pids.get(rank, 0), binary,
                                        code) for rank, code in ended]  # fmt: skip
        lines.append(torchrun.group_will_restart(now, pid, MAX_RESTARTS - self.restarts,
                                                 MAX_RESTARTS))  # fmt: skip
        return lines

    def restart_lines(self, step: int) -> list[str]:
        plan = self.plan
        lines = torchrun.restarting(
            self.clock.now(), os.getpid(), self.restarts, self.world.hostnames[0], plan.nodes
        )
        lines.append(
            f"loading checkpoint from {plan.save_dir}/{self.checkpoint_name(step)} (step {step:,})"
            if step
            else "no checkpoint yet: starting again from step 0"
        )
        return lines

    # ------------------------------------------------------------------ end
    def finish(self, outcome: str) -> None:
        """The wrap-up: a finished run (or one stopped early on purpose, which says so)
        is exported and benchmarked; an interrupted one only stops."""
        style, world = self.style, self.world
        style.term.clear_status()
        self.finishing = True
        train_s = self.clock.now() - (self.training_started or self.clock.now())
        style.training_end(self.summary(outcome, train_s))
        if outcome != "interrupted":
            self.evaluate(final=True)
            world.phase("free")
            self.export()
            world.phase("eval")
            self.run_benchmarks()
        world.phase("free")
        style.summary(self.summary(outcome, train_s))

    def summary(self, outcome: str, train_s: float) -> Summary:
        """The run as it stands, for the style's closing words."""
        plan = self.plan
        return Summary(
            steps=self.step,
            tokens=self.step * plan.trained_tokens_per_step,
            wall_s=self.clock.elapsed(),
            final_loss=self.curve.last_loss if self.steps_done else None,
            final_eval_loss=self.last_eval,
            checkpoint_dir=plan.save_dir,
            exports=tuple(self.exports),
            interrupted=outcome == "interrupted",
            time=self.clock.now(),
            outcome=outcome,
            total_steps=plan.total_steps,
            mean_loss=self.loss_sum / self.steps_done if self.steps_done else None,
            train_s=train_s,
            steps_run=self.steps_done,
            limit=self.limit_text(),
        )

    def limit_text(self) -> str:
        if self.options.exit_after_steps is not None:
            return f"--exit-after-steps {self.options.exit_after_steps}"
        if self.options.exit_after_time is not None:
            return f"--exit-after-time {self.options.exit_after_time:g}"
        return ""

    def announce_early_stop(self) -> None:
        """An early stop on purpose says so before it saves, exports and benchmarks."""
        plan = self.plan
        self.style.term.clear_status()
        self.style.say(
            self.clock.now(),
            "stop",
            f"stopping early at step {self.step:,} of {plan.total_steps:,} ({self.limit_text()})"
            ": saving, exporting and benchmarking the model as trained so far",
        )

    def export(self) -> None:
        plan, style = self.plan, self.style
        name = plan.model.name
        root = f"{plan.save_dir}/export"
        exported = plan.trainable if plan.lora else plan.params
        safetensors = ar.weight_files(int(ar.BF16 * exported), lora=plan.lora is not None)
        if not plan.lora:
            safetensors += [
                ("model.safetensors.index.json", 23950 + 60 * plan.model.arch.layers),
                ("config.json", 1142),
                ("generation_config.json", 184),
                ("tokenizer.json", 17209920),
            ]
        artifacts = [
            ExportArtifact(
                "safetensors",
                "adapter" if plan.lora else "bf16",
                f"{root}/hf",
                tuple(safetensors),
                ar.export_s("safetensors", "", sum(b for _, b in safetensors), exported),
            )
        ]
        for quant, bits in (("F16", 16.0), ("Q8_0", 8.5), ("Q4_K_M", 4.85)):
            if plan.lora and quant == "F16":
                continue
            nbytes = int(plan.params * bits / 8)
            artifacts.append(
                ExportArtifact(
                    "gguf",
                    quant,
                    f"{root}/gguf",
                    ((f"{name}-{quant}.gguf", nbytes),),
                    ar.export_s("gguf", quant, nbytes, plan.params),
                )
            )
        if self.options.quantize:
            bits = {"int8": 8.3, "int4": 4.15, "gptq": 4.15}[self.options.quantize]
            nbytes = int(plan.params * bits / 8)
            label = {
                "int8": "INT8 (bitsandbytes LLM.int8)",
                "int4": "INT4 (NF4)",
                "gptq": "GPTQ 4-bit, group size 128",
            }[self.options.quantize]
            artifacts.append(
                ExportArtifact(
                    self.options.quantize,
                    label,
                    f"{root}/quantized",
                    (("model.safetensors", nbytes), ("quantize_config.json", 311)),
                    ar.export_s(self.options.quantize, label, nbytes, plan.params),
                )
            )
        for artifact in artifacts:
            # The story takes the conversion's real time; the wall waits at most
            # EXPORT_WALL_S of it (a demo does not sit through an hour of GPTQ).
            shown = min(artifact.seconds, EXPORT_WALL_S * self.options.speed)
            self.wait(shown, check=False)
            self.clock.jump(artifact.seconds - shown)
            style.export(self.clock.now(), artifact)
            self.exports.append(f"{artifact.path} ({artifact.format} {artifact.detail})")

    def run_benchmarks(self) -> None:
        """lm-eval-harness on one node: loglikelihood requests at the eval speed, GSM8K
        generations at decoding speed, with the harness's progress bars."""
        plan = self.plan
        per_node = plan.gpus_per_node / plan.gpus
        scoring = BENCHMARK_TOKENS / (plan.performance.eval_tokens_per_s * per_node)
        generating = BENCHMARK_GENERATED_TOKENS / (DECODE_TOKENS_PER_S_PER_GPU * plan.gpus_per_node)
        tasks = ar.BENCHMARK_TASKS
        scored = sum(t.requests for t in tasks if t.name not in ar.GENERATED_TASKS)
        generated = sum(t.requests for t in tasks if t.name in ar.GENERATED_TASKS)
        self.load("benchmarks", scored, "requests", scoring)
        self.load("generations", generated, "requests", generating)
        self.style.benchmarks(self.benchmarks())

    def benchmarks(self) -> list[BenchmarkRow]:
        """lm-eval-harness on the exported model. A fine-tune starts from the published
        model: its published scores (a reasoning fine-tune gains a little on GSM8K). A
        model trained from scratch scores what its loss allows: near chance at first,
        MMLU and GSM8K only once the loss is low."""
        plan = self.plan
        loss = None if plan.task != "pretrain" else self.curve.expected_loss(self.step)
        rows = []
        for task in ar.BENCHMARK_TASKS:
            full = plan.model.published[task.name]
            if plan.task == "lora" and task.name == "gsm8k":
                full = min(0.95, full + 0.03)
            expected = ar.benchmark_expected(task, full, loss)
            noise = self.rng.gauss(0, 1)
            if task.name in ar.GENERATED_TASKS:  # the same generations under both filters
                for name, share in (
                    ("flexible-extract", 1.0),
                    ("strict-match", ar.GSM8K_STRICT_SHARE),
                ):
                    value, stderr = ar.benchmark_result(task, expected * share, noise)
                    rows.append(BenchmarkRow(task.name, task.version, task.metric, task.shots,
                                             value, stderr, name))  # fmt: skip
                continue
            value, stderr = ar.benchmark_result(task, expected, noise)
            rows.append(BenchmarkRow(task.name, task.version, task.metric, task.shots, value,
                                     stderr))  # fmt: skip
        return rows


def log_interval(wall_per_step: float) -> int:
    """Steps per log line: every step, unless steps fly by faster than a reader
    can follow (high --speed-factor); then a round interval, as a config sets."""
    for every in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000):
        if every * wall_per_step >= LINE_EVERY_WALL_S:
            return every
    return 10000
