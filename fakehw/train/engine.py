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
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from fakehw.train import arithmetic as ar
from fakehw.train.anomalies import AnomalyDetector, Finding
from fakehw.train.callbacks import EarlyStopping, EpochMeter
from fakehw.train.checkpoints import Checkpoints
from fakehw.train.events import (
    CheckpointInfo,
    CollectiveTiming,
    EarlyStop,
    EpochSummary,
    EvalResult,
    GpuSample,
    GradientReport,
    Incident,
    JobFailed,
    RankDied,
    StepMetrics,
    StepSample,
)
from fakehw.train.gradients import ClipCounter, GradientProfile, GradientSplit
from fakehw.train.learning import LearningCurve
from fakehw.train.memory import BatchSizeManager
from fakehw.train.mixture import SEQUENCE_LOSS_SPREAD, Blend
from fakehw.train.plan import RunPlan, sequences_per_sample
from fakehw.train.probes import ModelProbe
from fakehw.train.recorder import Records
from fakehw.train.recovery import Recovery
from fakehw.train.startup import Startup
from fakehw.train.styles.base import LaunchInfo, Style, perplexity
from fakehw.train.world import World
from fakehw.train.wrapup import EXPORT_WALL_S, WrapUp

# The mean SM clock of a power-capped GPU under training, as a share of its
# maximum (the calibrated model: 1678 of 1980 MHz on H100); the plan's MFU holds there.
TRAINING_CLOCK = 0.8475
STRAGGLER_CLOCK = 0.93  # a GPU this far below the median is named as holding the job back
CLOCK_SETTLE_S = 20.0  # real seconds for the clocks to settle after training starts
LINE_EVERY_WALL_S = 0.3  # at high speed factors, log every few steps, not every step
WARMUP_STEPS = 0.8  # steps over which the first steps' extra time decays (e-fold)
PROBE_BATCH_COST = 1.15  # a probe batch against a validation batch (hidden states kept)
PROBE_SEQUENCES = 64  # the probe set: held-out sequences


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
    """One run on its story clock: the training loop, its pacing and evaluations.

    The parts of a run that are not the loop are its collaborators, each reading and
    updating the engine's state: ``starting`` (``fakehw.train.startup``), ``saving``
    (``fakehw.train.checkpoints``), ``recovery`` (``fakehw.train.recovery``) and
    ``wrap_up`` (``fakehw.train.wrapup``). What they change of it: ``launch`` (start-up);
    ``saved``, ``last_checkpoint``, ``interrupt_told`` (checkpoints); ``step`` and
    ``restarts`` (recovery, resuming from the last checkpoint); ``exports`` (wrap-up);
    ``finishing`` (set by the final save and the wrap-up, cleared by a recovery).
    """

    def __init__(
        self, plan: RunPlan, world: World, style: Style, records: Records, options: Options
    ) -> None:
        self.plan = plan
        self.world = world
        self.style = style
        self.records = records  # the metrics JSONL, the output directory
        self.options = options
        self.clock = StoryClock(options.speed)
        self.rng = random.Random(plan.seed * 7919 + 1)
        self.wall_start = time.monotonic()
        self.step = plan.start_step
        self.steps_done = 0
        self.last_checkpoint = plan.start_step if plan.start_step else None
        self.restarts = 0
        self.curve = LearningCurve(plan, self.rng)
        # streams of their own: probing or splitting the gradient changes nothing else
        self.gradient_profile = GradientProfile(
            plan.model.arch, plan.lora is not None, random.Random(plan.seed * 7919 + 2)
        )
        self.clips_logged = ClipCounter(plan.grad_clip)  # since the last logged step
        self.clips_reported = ClipCounter(plan.grad_clip)  # since the last gradient report
        self.clips_total = ClipCounter(plan.grad_clip)  # every step this run trained
        self.last_split: GradientSplit | None = None
        self.probe = ModelProbe(
            plan.model.arch,
            self.curve.expected_loss(plan.total_steps),
            random.Random(plan.seed * 7919 + 3),
        )
        self.blend = (
            Blend(plan.mixture, plan.global_batch, plan.seed * 7919 + 5) if plan.mixture else None
        )
        self.last_eval: float | None = None
        self.evals_seen: list[tuple[int, float]] = []  # (step, val loss) during training
        self.step_times: list[float] = []
        self.logged = 0
        self.slow_warned_at = -(10**9)
        self.saved: list[CheckpointInfo] = []  # the checkpoints written, in order
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
        self.straggle_rank = 0
        self.monitor = AnomalyDetector(plan.peak_lr, plan.warmup_steps)
        self.rollback_due = False  # the monitor found a divergence
        self.training_started: float | None = None  # story time of the first step
        self.early_stop_told = False
        self.warmup_amplitude = self.rng.uniform(1.2, 2.2)
        patience = plan.early_stopping_patience
        self.early_stopping = EarlyStopping(patience) if patience else None
        self.stopping: EarlyStop | None = None  # the early stop, once it came
        self.model_step: int | None = None  # the weights are an earlier step's (the best)
        self.epoch_meter = EpochMeter(plan.start_step // plan.steps_per_epoch, self.clock.now())
        plan.log_interval = log_interval(self.expected_step_time() / options.speed)
        self.starting = Startup(self)
        self.saving = Checkpoints(self)
        self.recovery = Recovery(self)
        self.memory = BatchSizeManager(self)
        self.wrap_up = WrapUp(self)

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
        """Play the run; returns "finished", "limit" or "early_stopped" (``KeyboardInterrupt`` and
        ``Terminated`` pass through to the caller, which ends the run)."""
        self.starting.run()
        while True:
            try:
                outcome = self.train()
                if outcome == "limit" and not self.early_stop_told:
                    self.early_stop_told = True
                    self.wrap_up.announce_early_stop()
                self.saving.final_checkpoint()
                if outcome == "early_stopped":
                    self.restore_best()
                break
            except RankDied as exc:  # in training or in the final save
                self.recovery.recover(exc.ranks)
        self.wrap_up.finish(outcome)
        return outcome

    def interrupted(self) -> None:
        """Ctrl-C: save what is not saved yet, as a careful training script does."""
        term = self.style.term
        term.clear_status()
        saving = bool(self.world.pids) and self.saving.unsaved_steps() > 0
        if saving:
            message = "interrupted: saving a checkpoint before exiting (Ctrl-C again to abandon it)"
        elif not self.steps_done:
            message = "interrupted before the first step: nothing to save"
        elif not self.saving.unsaved_steps():
            message = f"interrupted: nothing new to save; {self.saving.last_complete()}"
        else:
            message = (
                f"interrupted while no worker runs: nothing to save; {self.saving.last_complete()}"
            )
        if not self.interrupt_told:  # else the save it came during said what happens
            self.style.say(self.clock.now(), "signal", term.paint(message, "yellow"))
        if saving:
            self.saving.checkpoint(reason="interrupt")
        self.wrap_up.finish("interrupted")

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
            "light": held,
            "membound": held,
            "free": plan.gpu.free_floor_mib,
        }

    # ---------------------------------------------------------------- train
    def train(self) -> str:
        plan, world = self.plan, self.world
        self.starting.check_memory()  # the big allocations come with the first step
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
            if self.rollback_due:
                self.roll_back()
                continue
            self.inject_due()
            if self.step % plan.eval_every == 0 and self.step < plan.total_steps:
                self.evaluate()
                self.check_early_stopping()
                world.phase("train", cycle_s=self.expected_step_time())
            if plan.probe_every and self.step % plan.probe_every == 0:
                self.probe_model()
                world.phase("train", cycle_s=self.expected_step_time())
            if self.step % plan.checkpoint_every == 0:
                self.saving.checkpoint()
                world.phase("train", cycle_s=self.expected_step_time())
            if plan.epochs > 1 and self.step % plan.steps_per_epoch == 0:
                self.end_epoch()
            if self.stopping is not None:
                return "early_stopped"

    def check_early_stopping(self) -> None:
        """``--early-stopping``: after an evaluation, whether patience has run out."""
        stopper = self.early_stopping
        if stopper is None or self.last_eval is None:
            return
        if not stopper.observe(self.step, self.last_eval):
            return
        assert stopper.best is not None and stopper.best_step is not None
        self.stopping = EarlyStop(
            step=self.step,
            time=self.clock.now(),
            metric=stopper.metric,
            best=stopper.best,
            best_step=stopper.best_step,
            best_path=self.saving.checkpoint_path(stopper.best_step),
            patience=stopper.patience,
            last=self.last_eval,
        )
        self.style.early_stop(self.stopping)
        self.records.early_stop(self.stopping)

    def restore_best(self) -> None:
        """``load_best_model_at_end``: the best checkpoint's weights are read back (the
        model only: training is over) and are what the run evaluates and exports."""
        stop = self.stopping
        assert stop is not None
        plan = self.plan
        weights = ar.checkpoint_bytes(plan.params, plan.trainable, with_optimizer=False)
        shards = max(1, len(self.style.checkpoint_files(stop.best_step, weights)))
        self.world.phase("load")
        self.load("checkpoint", shards, "shards", ar.checkpoint_read_s(weights, plan.nodes))
        self.model_step = stop.best_step
        self.style.best_restored(self.clock.now(), stop)

    def rewound(self, step: int) -> None:
        """The job restarts from its checkpoint of ``step``: the callbacks' state as it
        was saved there."""
        self.evals_seen = [(s, v) for s, v in self.evals_seen if s <= step]
        if self.early_stopping is not None:  # its state as that checkpoint saved it
            self.early_stopping = EarlyStopping(self.early_stopping.patience)
            for seen, value in self.evals_seen:
                self.early_stopping.observe(seen, value)
        self.epoch_meter = EpochMeter(step // self.plan.steps_per_epoch, self.clock.now())
        # the steps since the last logged one are lost: a new process logs from here
        self.window_loss, self.window_time, self.window_steps = 0.0, 0.0, 0
        self.window_skipped = 0
        if self.blend is not None:
            self.blend.interval()

    def end_epoch(self) -> None:
        """A multi-epoch task's epoch is over: the metrics logger's and the scheduler
        callback's report."""
        plan = self.plan
        now = self.clock.now()
        totals = self.epoch_meter.close(now)
        if not totals.steps:
            return
        best = min(self.evals_seen, key=lambda kv: kv[1]) if self.evals_seen else None
        summary = EpochSummary(
            epoch=totals.epoch + 1,
            epochs=plan.epochs,
            step=self.step,
            time=now,
            steps=totals.steps,
            train_loss=totals.loss_sum / totals.steps,
            tokens=totals.tokens,
            seconds=now - totals.started,
            val_loss=self.last_eval,
            best_val_loss=best[1] if best else None,
            best_step=best[0] if best else None,
            lr=self.lr_at(self.step + 1),
            schedule=plan.schedule,
            warmup_steps=plan.warmup_steps,
            total_steps=plan.total_steps,
        )
        self.style.epoch_end(summary)
        self.records.epoch_end(summary)

    def inject_due(self) -> None:
        """--inject: faults whose step has come (each fires once)."""
        for fault, rank, step in self.options.injections:
            if step != self.step or (fault, rank, step) in self.injected:
                continue
            self.injected.add((fault, rank, step))
            if fault == "rank-crash":
                self.world.kill_rank(rank)
            elif fault == "loss-divergence":
                self.curve.diverge(step)
            elif fault == "loss-plateau":
                self.curve.plateau(step)
            elif fault == "oom":
                self.memory.injected(rank)
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
            self.straggle_rank = self.rng.randrange(plan.gpus)  # the monitor finds it
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
        lr = self.lr()
        loss, grad_norm, skipped = self.curve.sample(self.step, lr)
        self.clips_logged.add(grad_norm)
        self.clips_total.add(grad_norm)
        self.clips_reported.add(grad_norm)
        split = None
        probing = plan.probe_every and self.step % plan.probe_every == 0
        if self.curve.burst or self.should_log() or probing:
            split = self.gradient_profile.split(grad_norm, self.curve.burst)
            self.last_split = split
        for kind, details in self.curve.incidents():
            self.incident(kind, **details)
        straggling = self.step <= self.straggle_until and straggle > 1.0
        findings = self.monitor.observe(self.step, loss, grad_norm, step_time, lr,
                                        self.straggle_rank if straggling else slowest)  # fmt: skip
        for finding in findings:
            self.found(finding, split, grad_norm)
        self.loss_sum += loss
        if self.blend is not None:
            self.blend.step(self.step, loss, self.curve.source_factors(self.step)[1])
        self.epoch_meter.add(loss, plan.trained_tokens_per_step)
        self.window_loss += loss
        self.window_time += step_time
        self.window_steps += 1
        self.window_skipped += int(skipped)
        self.check_clocks(slowest, median)
        if self.records.keeping:
            self.records.step_taken(
                StepSample(
                    step=self.step,
                    time=self.clock.now(),
                    loss=loss,
                    lr=lr,
                    grad_norm=grad_norm,
                    samples_seen=self.step * plan.global_batch,
                    global_batch=plan.global_batch,
                    loss_scale=self.curve.loss_scale,
                )
            )
        if not self.should_log():
            return None
        interval_loss = self.window_loss / self.window_steps
        interval_step_s = self.window_time / self.window_steps
        interval_skipped = self.window_skipped
        clip_rate, clip_coef = self.clips_logged.rate, self.clips_logged.mean_coef
        self.clips_logged.reset()
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
            interval_tflops_per_gpu=perf.tflops_per_gpu(interval_step_s),
            interval_skipped=interval_skipped,
            ppl=self.perplexity(loss),
            lr=lr,
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
            layer_grad_norms=split.pairs() if split is not None else (),
            clip_rate=clip_rate,
            clip_coef=clip_coef,
            sources=self.blend.interval() if self.blend is not None else (),
            sources_seen=self.blend.taken(self.step) if self.blend is not None else (),
        )

    def found(self, finding: Finding, split: GradientSplit | None, grad_norm: float) -> None:
        """What the monitor found at this step, told as the run's warning."""
        kind, details = finding
        if kind in ("loss_spike", "grad_explosion"):
            if split is None:
                split = self.gradient_profile.split(grad_norm, self.curve.burst)
            named = split.burst or tuple(name for name, _ in split.largest(3))
            details["layers"] = list(named)
            details["layer_grad_norms"] = dict(split.pairs())
        if kind == "slow_rank":
            if self.step - self.slow_warned_at < 200:  # the clocks' check told it already
                return
            self.slow_warned_at = self.step
            rank = int(details["rank"])
            details["host"] = self.world.hostnames[rank // self.plan.gpus_per_node]
            traffic = self.plan.performance.largest()
            waits = f"in the {traffic.op} of {traffic.purpose}" if traffic else "at each step"
            details["reason"] = (
                f"step {details['step_s']:.2f} s against a median of {details['median_s']:.2f} s; "
                f"the other ranks wait for it {waits}"
            )
        if kind == "loss_divergence":
            self.rollback_due = True
        self.incident(kind, **details)

    def roll_back(self) -> None:
        """After a divergence: back to the last checkpoint, skipping the batches that
        followed it (the recipe of PaLM and OPT: the same data at that point of training
        diverges again), and on."""
        self.rollback_due = False
        plan = self.plan
        target = self.last_checkpoint
        if target is None or target >= self.step:
            raise JobFailed([
                f"loss diverged at step {self.step} before any checkpoint was saved: nothing "
                "to roll back to (lower the learning rate and start again)"
            ])  # fmt: skip
        skipped = self.step - target
        self.incident(
            "rollback",
            to=target,
            path=self.saving.checkpoint_path(target),
            skip_from=target + 1,
            skip_to=self.step,
            batches=skipped,
            samples=skipped * plan.global_batch,
        )
        self.world.phase("load")
        seconds = ar.checkpoint_read_s(plan.checkpoint_bytes, plan.nodes)
        shards = max(1, len(self.style.checkpoint_files(target, plan.checkpoint_bytes)))
        self.load("checkpoint", shards, "shards", seconds)
        self.saving.loaded(
            target, f"; the data loader skips to the batch of step {self.step + 1:,}"
        )
        self.step = target
        self.curve.restart()
        self.monitor.restart()
        self.rewound(target)
        self.steps_since_start = 0
        self.world.phase("train", cycle_s=self.expected_step_time())

    def should_log(self) -> bool:
        last = self.step == self.plan.total_steps or self.limit_reached()
        return last or self.step % self.plan.log_interval == 0

    def limit_reached(self) -> bool:
        """--exit-after-steps N: the run has reached step N past where it started (steps
        lost to a restart are trained again, as the step counter says)."""
        limit = self.options.exit_after_steps
        return limit is not None and self.step - self.plan.start_step >= limit

    def lr(self) -> float:
        return self.lr_at(self.step)

    def lr_at(self, step: int) -> float:
        plan = self.plan
        return ar.learning_rate(
            step, plan.total_steps, plan.warmup_steps, plan.peak_lr, plan.schedule
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
        incident = Incident(kind, self.step, self.clock.now(), dict(details))
        self.style.incident(incident)
        self.records.incident(incident)

    def log(self, m: StepMetrics) -> None:
        style = self.style
        style.step(m)
        self.records.step(m)
        sample = GpuSample.of(m.step, m.time, self.world.cells()) if self.records.keeping else None
        if sample is not None:
            self.records.gpus(sample)
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
        weights_step = self.model_step if self.model_step is not None else self.step
        style.eval_start(started, weights_step, plan.eval_batches, final)
        batch_s = plan.performance.eval_batch_s(self.clock_factor()[0])
        for k in range(1, plan.eval_batches + 1):  # batches differ a little, as kernels do
            self.wait(batch_s * (1 + 0.02 * self.rng.gauss(0, 1)))
            if k % max(1, plan.eval_batches // 20) == 0 or k == plan.eval_batches:
                style.eval_progress(self.clock.now(), k, plan.eval_batches)
        loss = self.curve.heldout_loss(self.step) + self.rng.gauss(0, 0.004)
        evaluated = dict(self.evals_seen)
        same_batches = self.model_step is not None or not style.fresh_validation_batches
        if final and same_batches and weights_step in evaluated:
            # weights already evaluated, on the same held-out batches: the same loss
            loss = evaluated[weights_step]
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
            sources=(
                self.blend.evaluate(
                    weights_step,
                    plan.eval_batches * plan.global_batch,
                    loss,
                    self.curve.source_factors(weights_step)[1],
                )
                if self.blend is not None
                else ()
            ),
        )
        self.last_eval = loss
        if not final:
            self.evals_seen.append((self.step, loss))
        style.eval_done(result)
        self.records.eval(result)
        if not final:
            style.lr_schedule(self.clock.now(), self.step, at_start=False)

    def probe_model(self) -> None:
        """``--probe-every``: the probe set (``PROBE_SEQUENCES`` held-out sequences) forward
        with its hidden states kept, a little slower than validation; then the gradients'
        report."""
        plan = self.plan
        self.world.phase("eval")
        started = self.clock.now()
        # validation batches are a global batch of sequences each
        batches = PROBE_SEQUENCES / (plan.global_batch * sequences_per_sample(plan.task))
        batch_s = plan.performance.eval_batch_s(self.clock_factor()[0])
        self.wait(PROBE_BATCH_COST * batch_s * batches)
        tokens = PROBE_SEQUENCES * plan.seq
        # a sample of the held-out set: its mean loss scatters around the whole set's by
        # the spread of sequences' losses over the square root of their count
        noise = self.probe.rng.gauss(0, SEQUENCE_LOSS_SPREAD / PROBE_SEQUENCES**0.5)
        loss = self.curve.heldout_loss(self.step) + noise
        result = self.probe.measure(
            self.step, loss, self.curve.overconfidence(self.step), tokens,
            self.clock.now(), self.clock.now() - started,
        )  # fmt: skip
        self.style.probe(result)
        self.records.probe(result)
        self.report_gradients()

    def report_gradients(self) -> None:
        """Per-group gradient norms of the last step, clipping since the last report."""
        split, clips = self.last_split, self.clips_reported
        if split is None or not clips.steps:
            return
        report = GradientReport(
            step=self.step,
            time=self.clock.now(),
            grad_norm=math.sqrt(sum(n * n for n in split.norms)),
            layers=split.pairs(),
            steps=clips.steps,
            clipped=clips.clipped,
            clip_rate=clips.rate,
            clip_coef=clips.mean_coef,
            max_norm=clips.max_norm,
        )
        clips.reset()
        self.style.gradients(report)
        self.records.gradients(report)


def log_interval(wall_per_step: float) -> int:
    """Steps per log line: every step, unless steps fly by faster than a reader
    can follow (high --speed-factor); then a round interval, as a config sets."""
    for every in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000):
        if every * wall_per_step >= LINE_EVERY_WALL_S:
            return every
    return 10000
