"""Hugging Face Trainer: a tqdm bar and the metric dicts ``Trainer.log`` prints.

Dicts are built as the Trainer builds them (loss rounded to 4 places,
``grad_norm`` and ``learning_rate`` as full floats, ``epoch`` rounded to 2 by
the progress callback) and printed with ``str()``, so they read exactly like
``{'loss': 1.6232, 'grad_norm': 0.8212348818778992, ...}``. Info lines carry
transformers' ``[INFO|file:line] date >>`` prefix, as with
``set_verbosity_info()``.
"""

from __future__ import annotations

import time

from fakehw.train.events import (
    CheckpointInfo,
    CollectiveTiming,
    EvalResult,
    GpuCell,
    Incident,
    StepMetrics,
    Summary,
)
from fakehw.train.styles.base import LaunchInfo, Style, per_rank, safetensor_shards, weight_bytes


def tqdm_clock(seconds: float) -> str:
    """tqdm's elapsed/remaining format: ``MM:SS`` or ``H:MM:SS``."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def tqdm_line(
    done: int, total: int, elapsed: float, seconds_per_it: float, width: int, unit: str = "it"
) -> str:
    """``  4%|▍         | 100/2436 [03:11<1:14:23,  1.91s/it]`` fitted to ``width``."""
    fraction = done / total if total else 1.0
    remaining = (total - done) * seconds_per_it
    rate = (
        f"{seconds_per_it:5.2f}s/{unit}"
        if seconds_per_it >= 1
        else f"{1 / seconds_per_it:5.2f}{unit}/s"
    )
    left = f"{100 * fraction:3.0f}%|"
    right = f"| {done}/{total} [{tqdm_clock(elapsed)}<{tqdm_clock(remaining)}, {rate}]"
    cells = max(10, width - len(left) - len(right))
    filled = fraction * cells
    full = int(filled)
    partial = " ▏▎▍▌▋▊▉"[int((filled - full) * 8)] if full < cells else ""
    return left + ("█" * full + partial).ljust(cells) + right


class HfStyle(Style):
    name = "hf"
    description = "Hugging Face Trainer: tqdm bar plus {'loss': ..., 'grad_norm': ...} dicts"

    def info(self, t: float, where: str, text: str) -> None:
        millis = int((t % 1) * 1000)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f",{millis:03d}"
        self.term.line(f"[INFO|{where}] {when} >> {text}")

    def header(self, t: float) -> None:
        pass

    def model_info(self, t: float) -> None:
        plan = self.plan
        arch = plan.model.arch
        self.info(
            t,
            "configuration_utils.py:763",
            f"Model config {arch.family.capitalize()}Config {{ hidden_size: {arch.hidden}, "
            f"num_hidden_layers: {arch.layers}, num_attention_heads: {arch.heads}, "
            f"num_key_value_heads: {arch.kv_heads}, intermediate_size: {arch.ffn}, "
            f"vocab_size: {arch.vocab} }}",
        )
        self.info(
            t,
            "modeling_utils.py:4874",
            f"All model checkpoint weights were used when initializing "
            f"{arch.family.capitalize()}ForCausalLM.",
        )
        if plan.lora:
            share = 100 * plan.trainable / plan.params
            self.term.line(
                f"trainable params: {plan.trainable:,} || all params: "
                f"{plan.params + plan.trainable:,} || trainable%: {share:.4f}"
            )

    def loading(
        self, t: float, what: str, done: int, total: int, unit: str, elapsed: float
    ) -> None:
        """tqdm bars as ``datasets`` and ``transformers`` draw them: live on a
        terminal, the finished bar only in a log."""
        if what in ("weights", "checkpoint"):
            text = "Loading checkpoint shards: " + tqdm_line(
                done, total, elapsed, elapsed / max(1, done), 70
            )
        elif what == "dataset" and self.plan.dataset.samples > 10_000_000:
            # pretraining corpora come pre-tokenized, in shards
            text = "Loading dataset shards: " + tqdm_line(
                done, total, elapsed, elapsed / max(1, done), 70
            )
        elif what == "dataset":
            samples = self.plan.dataset.samples
            seen = samples * done // total
            text = "Map (num_proc=32): " + tqdm_line(
                seen, samples, elapsed, elapsed / max(1, seen), 70, unit="examples"
            )
        else:
            return
        if done < total:
            self.term.status(text)
        else:
            self.term.clear_status()
            self.term.line(text)

    def loaded(self, t: float, what: str, detail: str) -> None:
        pass  # the bars said it

    def gpu_check(self, t: float, cells: list[GpuCell]) -> None:
        pass

    def parallelism(self, t: float) -> None:
        plan, par = self.plan, self.plan.par
        num_examples = plan.steps_per_epoch * plan.global_batch
        lines = [
            ("***** Running training *****", 2418),
            (f"  Num examples = {num_examples:,}", 2419),
            (f"  Num Epochs = {plan.epochs:,}", 2420),
            (f"  Instantaneous batch size per device = {par.micro_batch:,}", 2421),
            (
                f"  Total train batch size (w. parallel, distributed & accumulation) = "
                f"{plan.global_batch:,}",
                2424,
            ),
            (f"  Gradient Accumulation steps = {par.grad_accum}", 2425),
            (f"  Total optimization steps = {plan.total_steps:,}", 2426),
            (f"  Number of trainable parameters = {plan.trainable:,}", 2427),
        ]
        for text, line in lines:
            self.info(t, f"trainer.py:{line}", text)

    def training_start(self, t: float) -> None:
        pass

    def step(self, m: StepMetrics) -> None:
        logs: dict[str, float] = {
            "loss": round(m.loss, 4),
            "grad_norm": m.grad_norm,
            "learning_rate": m.lr,
        }
        for key, value in m.extra.items():
            logs[key] = value
        logs["epoch"] = round(m.epoch_fraction, 2)
        self.term.line(str(logs))

    def _bar(self, m: StepMetrics) -> str:
        return tqdm_line(m.step, m.total_steps, m.elapsed_s, m.step_time_s, self.term.width)

    def progress(self, m: StepMetrics) -> None:
        self.term.status(self._bar(m))

    def progress_line(self, m: StepMetrics) -> None:
        self.term.line(self._bar(m))

    def collective(self, c: CollectiveTiming) -> None:
        pass

    def gpu_grid(self, cells: list[GpuCell], m: StepMetrics) -> None:
        pass

    def incident(self, i: Incident) -> None:
        if i.kind == "overflow":
            self.info(
                i.time,
                "trainer.py:2596",
                f"Gradient overflow. Skipping step, loss scaler 0 reducing loss scale to "
                f"{i.details.get('new', 0)}",
            )

    def eval_start(self, t: float, step: int, batches: int) -> None:
        plan = self.plan
        self.info(t, "trainer.py:4257", "***** Running Evaluation *****")
        self.info(t, "trainer.py:4259", f"  Num examples = {batches * plan.global_batch:,}")
        self.info(t, "trainer.py:4262", f"  Batch size = {plan.par.micro_batch * 2}")

    def eval_progress(self, t: float, done: int, total: int) -> None:
        text = tqdm_line(done, total, done * 0.24, 0.24, self.term.width)
        self.term.status(text) if done < total else self.term.line(text)

    def eval_done(self, r: EvalResult) -> None:
        metrics: dict[str, float] = {"eval_loss": r.loss}
        metrics.update(r.extra)
        metrics.update(
            {
                "eval_runtime": round(r.runtime_s, 4),
                "eval_samples_per_second": round(r.samples / r.runtime_s, 3),
                "eval_steps_per_second": round(r.samples / r.runtime_s / self.plan.global_batch, 3),
                "epoch": round(r.step / self.plan.steps_per_epoch, 2),
            }
        )
        self.term.line(str(metrics))

    def checkpoint_dir(self, step: int) -> str:
        return f"checkpoint-{step}"

    def checkpoint_files(self, step: int, total: int) -> list[tuple[str, int]]:
        plan = self.plan
        weights = weight_bytes(plan)
        files = safetensor_shards(weights)
        if plan.par.zero_stage >= 3:
            files += per_rank("optimizer_0/__{rank}_0.distcp", plan.gpus, total - weights)
        else:
            files += [("optimizer.pt", total - weights)]
        state = [("scheduler.pt", 1064), ("trainer_state.json", 4219), ("training_args.bin", 5432)]
        return files + state

    def checkpoint_start(self, t: float, step: int, path: str, reason: str) -> None:
        self.info(t, "trainer.py:3984", f"Saving model checkpoint to {path}")

    def checkpoint_done(self, c: CheckpointInfo) -> None:
        shards = [name for name, _ in c.files if name.endswith(".safetensors")]
        self.info(
            c.time, "configuration_utils.py:419", f"Configuration saved in {c.path}/config.json"
        )
        if len(shards) > 1:
            self.info(
                c.time,
                "modeling_utils.py:3048",
                f"The model is bigger than the maximum size per checkpoint (5GB) and is "
                f"going to be split in {len(shards)} checkpoint shards. You can find where "
                f"each parameters has been saved in the index located at "
                f"{c.path}/model.safetensors.index.json.",
            )
        else:
            self.info(
                c.time,
                "modeling_utils.py:3053",
                f"Model weights saved in {c.path}/model.safetensors",
            )

    def launcher(self, launch: LaunchInfo) -> None:
        super().launcher(launch)

    def summary(self, s: Summary) -> None:
        plan = self.plan
        if s.final_loss is None:  # stopped before the first step: the Trainer prints nothing
            super().summary(s)
            return
        self.info(
            s.time,
            "trainer.py:2681",
            "\n\nTraining completed. Do not forget to share your "
            "model on huggingface.co/models =)\n\n",
        )
        runtime = max(s.wall_s, 1e-3)
        final = {
            "train_runtime": round(runtime, 4),
            "train_samples_per_second": round(s.steps * plan.global_batch / runtime, 3),
            "train_steps_per_second": round(s.steps / runtime, 3),
            "train_loss": s.final_loss,
            "epoch": round(s.steps / plan.steps_per_epoch, 2),
        }
        self.term.line(str(final))
        super().summary(s)
