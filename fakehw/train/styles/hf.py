"""Hugging Face Trainer (transformers 5), as ``tests/real/hf-trainer/`` shows it.

stdout carries what the Trainer logs: one dict per ``logging_steps`` with every
value a string of four significant digits (``{'loss': '10.47', 'grad_norm':
'1.104', 'learning_rate': '0.00015', 'epoch': '0.03333'}``), the eval dicts, the
final ``train_runtime`` dict, then the script's own ``print(trainer.evaluate())``
with plain floats. stderr carries the tqdm bars, drawn the way tqdm draws them:
``\\r`` updates of the training bar, the evaluation bar one line below it
(``\\x1b[A`` back up), ``Writing model shards`` at each save, and the loading bars
(checkpoint shards of a fine-tune's base model, ``Map (num_proc=32)``). A model
trained from scratch loads no shards. No ``[INFO|...]`` lines: the Trainer's
default verbosity is a warning.
"""

from __future__ import annotations

import sys

from fakehw.train.events import (
    CheckpointInfo,
    CollectiveTiming,
    EarlyStop,
    EpochSummary,
    EvalResult,
    ExportArtifact,
    GpuCell,
    GradientReport,
    Incident,
    ProbeResult,
    StepMetrics,
    Summary,
)
from fakehw.train.hflogs import eval_logs, final_logs, probe_logs, train_logs
from fakehw.train.plan import RunPlan
from fakehw.train.samples import Example
from fakehw.train.styles.base import (
    MONITOR_KINDS,
    LaunchInfo,
    Style,
    incident_text,
    per_rank,
    size,
    torchrun_warning,
    weight_bytes,
    weight_files,
)
from fakehw.train.terminal import Terminal

TQDM_FILE_CELLS = 10  # tqdm's bar width when it cannot ask the stream for one


def tqdm_clock(seconds: float) -> str:
    """tqdm's elapsed/remaining format: ``MM:SS`` or ``H:MM:SS``."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def tqdm_line(
    done: int,
    total: int,
    elapsed: float,
    seconds_per_it: float | None,
    width: int | None = None,
    unit: str = "it",
    desc: str = "",
) -> str:
    """One state of a tqdm bar: ``  3%|▎         | 10/300 [00:02<01:14,  3.88it/s]``.
    ``seconds_per_it`` None: nothing measured yet (``[00:00<?, ?it/s]``); ``width``
    None: the fixed 10 cells tqdm draws on a file."""
    fraction = done / total if total else 1.0
    left = f"{desc}{100 * fraction:3.0f}%|"
    if seconds_per_it is None or seconds_per_it <= 0:
        right = f"| {done}/{total} [{tqdm_clock(elapsed)}<?, ?{unit}/s]"
    else:
        remaining = (total - done) * seconds_per_it
        rate = (
            f"{seconds_per_it:5.2f}s/{unit}"
            if seconds_per_it >= 1
            else f"{1 / seconds_per_it:5.2f}{unit}/s"
        )
        right = f"| {done}/{total} [{tqdm_clock(elapsed)}<{tqdm_clock(remaining)}, {rate}]"
    cells = TQDM_FILE_CELLS if width is None else max(10, width - len(left) - len(right))
    filled = fraction * cells
    full = int(filled)
    partial = " ▏▎▍▌▋▊▉"[int((filled - full) * 8)] if full < cells else ""
    return left + ("█" * full + partial).ljust(cells)[:cells] + right


def hf_value(value: float) -> str:
    """A logged value as transformers 5 prints it: four significant digits, a string."""
    return f"{value:.4g}"


class TqdmBar:
    """A tqdm bar on its stream: redrawn in place with ``\\r`` (padded over what it
    replaces), at ``position`` lines below the cursor's (``\\n`` down, ``\\x1b[A`` up)."""

    def __init__(self, term: Terminal, position: int = 0) -> None:
        self.term = term
        self.position = position
        self.shown = ""

    def draw(self, text: str) -> None:
        pad = " " * max(0, len(self.shown) - len(text))
        down, up = ("\n" * self.position, "\x1b[A" * self.position)
        self.term.write(down + "\r" + text + pad + up)
        self.shown = text

    def clear(self) -> None:
        if self.shown:
            down, up = ("\n" * self.position, "\x1b[A" * self.position)
            self.term.write(down + "\r" + " " * len(self.shown) + "\r" + up)

    def close(self, leave: bool = True) -> None:
        """The bar's last state stays on its line (``leave``), or is wiped."""
        if leave:
            self.term.write("\n" * self.position + "\r" + self.shown + "\n")
        else:
            self.clear()
        self.shown = ""


class HfStyle(Style):
    name = "hf"
    description = "Hugging Face Trainer: {'loss': '10.47', ...} dicts, tqdm bars on stderr"
    uses_live_bar = False
    draws_lr_schedule = False  # the framework draws no such chart
    probes_by_default = False  # a stock trainer has no probe callback
    plans_in_log = False  # its framework prints no such report: its launch script does

    def __init__(self, term: Terminal, plan: RunPlan, err: Terminal | None = None) -> None:
        super().__init__(term, plan)
        self.err = err or Terminal(sys.stderr)
        self.bar = TqdmBar(self.err)
        self.inner = TqdmBar(self.err, position=1)
        self.training_from = 0.0  # story time the training bar started at
        self.start_step = plan.start_step

    @property
    def _width(self) -> int | None:
        return self.err.width if self.err.tty else None

    def write_logs(self, logs: dict[str, object]) -> None:
        """``tqdm.write``: the bar steps aside, the line goes to stdout, the bar returns."""
        self.bar.clear()
        self.term.line(str(logs))
        if self.bar.shown:
            self.bar.draw(self.bar.shown)

    def say(self, t: float, what: str, text: str) -> None:
        """The training script's own messages (stopping early, exports), on stderr."""
        self.bar.clear()
        self.err.line(text)
        if self.bar.shown:
            self.bar.draw(self.bar.shown)

    def export(self, t: float, a: ExportArtifact) -> None:
        total = sum(b for _, b in a.files)
        self.say(t, "export", f"saved {a.format} {a.detail} ({size(total)}) to {a.path}")

    # ------------------------------------------------------------ start-up
    def header(self, t: float) -> None:
        pass

    def layout_arguments(self) -> str:
        plan, par = self.plan, self.plan.par
        words = [f"--per_device_train_batch_size {par.micro_batch}",
                 f"--gradient_accumulation_steps {par.grad_accum}"]  # fmt: skip
        if par.zero_stage == 3:
            shard = "hybrid_shard" if par.replicas > 1 else "full_shard"
            words.append(f"--fsdp '{shard} auto_wrap'")
        elif par.zero_stage:
            words.append(f"--deepspeed ds_zero{par.zero_stage}.json")
        if par.tp > 1:
            words.append(f"--tp_size {par.tp}")
        if par.recompute:
            words.append("--gradient_checkpointing")
        if plan.lora is not None:
            words.append(f"--lora_r {plan.lora.rank} --lora_alpha {plan.lora.alpha} "
                         f"--lora_target_modules {','.join(plan.lora.targets)}")  # fmt: skip
        return " ".join(words)

    def launcher(self, launch: LaunchInfo) -> None:
        self.err.lines(torchrun_warning(launch))

    def nccl_init(self, lines: list[str]) -> None:
        pass  # NCCL_DEBUG is not set

    def model_info(self, t: float) -> None:
        plan = self.plan
        if plan.lora:  # PEFT's print_trainable_parameters()
            share = 100 * plan.trainable / (plan.params + plan.trainable)
            self.term.line(
                f"trainable params: {plan.trainable:,} || all params: "
                f"{plan.params + plan.trainable:,} || trainable%: {share:.4f}"
            )

    def loading(
        self, t: float, what: str, done: int, total: int, unit: str, elapsed: float
    ) -> None:
        """The bars ``datasets`` and ``transformers`` draw (on stderr)."""
        rate = elapsed / done if done else None
        if what in ("weights", "checkpoint"):
            text = tqdm_line(done, total, elapsed, rate, self._width,
                             desc="Loading checkpoint shards: ")  # fmt: skip
        elif what == "dataset" and self.plan.task == "pretrain":
            text = tqdm_line(done, total, elapsed, rate, self._width,
                             desc="Loading dataset shards: ")  # fmt: skip
        elif what == "dataset":
            samples = self.plan.dataset.samples
            seen = samples * done // total
            text = tqdm_line(seen, samples, elapsed, elapsed / max(1, seen), self._width,
                             unit="examples", desc="Map (num_proc=32): ")  # fmt: skip
        elif what in ("benchmarks", "generations"):
            kind = "loglikelihood" if what == "benchmarks" else "generate_until"
            text = tqdm_line(done, total, elapsed, rate, self._width,
                             desc=f"Running {kind} requests: ")  # fmt: skip
        else:
            return
        self.bar.draw(text)
        if done >= total:
            self.bar.close()

    def loaded(self, t: float, what: str, detail: str) -> None:
        pass  # the bars said it

    def mixture(self, t: float) -> None:
        pass  # a script's interleave_datasets says nothing at the Trainer's verbosity

    def data_example(self, t: float, e: Example) -> None:
        pass

    def gpu_check(self, t: float, cells: list[GpuCell]) -> None:
        pass

    def parallelism(self, t: float) -> None:
        pass

    def training_start(self, t: float) -> None:
        self.training_from = t
        total = self.plan.total_steps
        self.bar.draw(tqdm_line(self.start_step, total, 0.0, None, self._width))

    # ------------------------------------------------------------ training
    def _training_bar(self, m: StepMetrics) -> str:
        return tqdm_line(m.step, m.total_steps, m.time - self.training_from, m.step_time_s,
                         self._width)  # fmt: skip

    def step(self, m: StepMetrics) -> None:
        logs: dict[str, object] = {k: hf_value(v) for k, v in train_logs(m).items()}
        self.bar.draw(self._training_bar(m))
        self.write_logs(logs)

    def progress(self, m: StepMetrics) -> None:
        self.bar.draw(self._training_bar(m))

    def progress_line(self, m: StepMetrics) -> None:
        self.bar.draw(self._training_bar(m))

    def collective(self, c: CollectiveTiming) -> None:
        pass

    def gpu_grid(self, cells: list[GpuCell], m: StepMetrics) -> None:
        pass

    def incident(self, i: Incident) -> None:
        """The Trainer logs no such warnings at its default verbosity; the training
        script's monitor callback does (``logger.warning``, on stderr)."""
        if i.kind in MONITOR_KINDS:
            self.say(i.time, "warning", incident_text(i, self.plan.grad_clip)[1])

    def eval_start(self, t: float, step: int, batches: int, final: bool = False) -> None:
        if not final and step > self.start_step:  # tqdm drew every step up to this one
            elapsed = t - self.training_from
            rate = elapsed / (step - self.start_step)
            self.bar.draw(tqdm_line(step, self.plan.total_steps, elapsed, rate, self._width))
        self.eval_from = t
        self.inner.draw(tqdm_line(0, batches, 0.0, None, self._width))

    def eval_progress(self, t: float, done: int, total: int) -> None:
        elapsed = t - self.eval_from
        self.inner.draw(tqdm_line(done, total, elapsed, elapsed / max(1, done), self._width))

    def eval_done(self, r: EvalResult) -> None:
        metrics = eval_logs(r, self.plan.steps_per_epoch)
        self.inner.close(leave=False)
        if r.final:  # the script's own print(trainer.evaluate()): plain floats, rounded
            self.term.line(str({k: round(v, 2) if k == "epoch" else v
                                for k, v in metrics.items()}))  # fmt: skip
            return
        self.write_logs({k: hf_value(v) for k, v in metrics.items()})

    def probe(self, p: ProbeResult) -> None:
        """A callback's ``trainer.log(...)`` of the probe: the ProgressCallback prints it
        as any other logs dict (``epoch`` added)."""
        self.write_logs({k: hf_value(v) for k, v in probe_logs(p, self.plan).items()})

    def gradients(self, g: GradientReport) -> None:
        pass  # the Trainer logs the global grad_norm only

    def early_stop(self, e: EarlyStop) -> None:
        """EarlyStoppingCallback stops the loop without a word; the training script says
        why (on stderr, beside the bars)."""
        self.say(
            e.time,
            "callback",
            f"early stopping at step {e.step}: {e.metric} has not improved on {e.best:.4g} "
            f"(step {e.best_step}) for {e.patience} evaluations",
        )

    def best_restored(self, t: float, e: EarlyStop) -> None:
        """``Loading best model from ... (score: ...)`` is an INFO line; the bars show
        the load."""

    def epoch_end(self, e: EpochSummary) -> None:
        pass  # the Trainer logs nothing of its own at an epoch's end

    def checkpoint_dir(self, step: int) -> str:
        return f"checkpoint-{step}"

    def checkpoint_files(self, step: int, total: int) -> list[tuple[str, int]]:
        plan = self.plan
        weights = weight_bytes(plan)
        files = weight_files(plan)
        if plan.par.zero_stage >= 3:
            files += per_rank("optimizer_0/__{rank}_0.distcp", plan.gpus, total - weights)
        else:
            files += [("optimizer.pt", total - weights)]
        state = [("scheduler.pt", 1465), ("rng_state.pth", 14645),
                 ("trainer_state.json", 4792), ("training_args.bin", 5201),
                 ("config.json", 879), ("generation_config.json", 153)]  # fmt: skip
        return files + state

    def checkpoint_start(self, t: float, step: int, path: str, reason: str) -> None:
        """The Trainer says nothing as a save starts: its shard bar follows."""

    def checkpoint_removed(self, t: float, path: str) -> None:
        """``Deleting older checkpoint [...]`` is an INFO line: not shown at the Trainer's
        default verbosity (rank 0's log file has it)."""

    def checkpoint_done(self, c: CheckpointInfo) -> None:
        shards = [name for name, _ in c.files if name.endswith(".safetensors")]
        desc = "Writing model shards: "
        self.inner.draw(tqdm_line(0, len(shards), 0.0, None, self._width, desc=desc))
        rate = c.seconds / len(shards)
        self.inner.draw(tqdm_line(len(shards), len(shards), c.seconds, rate, self._width,
                                  desc=desc))  # fmt: skip
        self.inner.close(leave=False)

    def training_end(self, s: Summary) -> None:
        """``trainer.train()`` returns: its bar closes and its final dict follows (the
        script's ``print(trainer.evaluate())`` comes after, as in the real capture)."""
        self.bar.close()
        if s.final_loss is None:  # stopped before the first step: the Trainer prints nothing
            return
        # the progress callback leaves total_flos out of what it prints
        final = {k: hf_value(v) for k, v in final_logs(s, self.plan).items() if k != "total_flos"}
        self.term.line(str(final))

    def summary(self, s: Summary) -> None:
        if s.outcome != "finished" or s.final_loss is None:
            super().summary(s)
