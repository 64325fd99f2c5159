"""The end of a run: the final evaluation, the exports (safetensors, GGUF, a
quantized copy) and lm-eval-harness benchmarks of a finished run, and the closing
summary. Called by the engine (``fakehw.train.engine``)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from fakehw.train import arithmetic as ar
from fakehw.train import benchmarks as bm
from fakehw.train import quantize as quant
from fakehw.train.events import (
    BenchmarkReport,
    ExportArtifact,
    QuantizeLayer,
    QuantizeResult,
    Summary,
)
from fakehw.train.gguf import gguf_file
from fakehw.train.output.hfconfig import model_files
from fakehw.train.styles.base import weight_files

if TYPE_CHECKING:
    from fakehw.train.engine import Engine

EXPORT_WALL_S = 90.0  # real seconds an export waits at most (its story time is its own)
REASONING_GSM8K_GAIN = 0.03  # a LoRA on reasoning traces gains a little on GSM8K
DECODE_TOKENS_PER_S_PER_GPU = 1800.0  # batched greedy decoding of a mid-size model


class WrapUp:
    """Ends one run: exports, benchmarks and the summary."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.quantized: QuantizeResult | None = None

    @property
    def weights_step(self) -> int:
        """The step whose weights are exported: the best one after an early stop."""
        engine = self.engine
        return engine.model_step if engine.model_step is not None else engine.step

    @property
    def export_root(self) -> str:
        return f"{self.engine.plan.save_dir}/export"

    def finish(self, outcome: str) -> None:
        """The wrap-up: a finished run (or one stopped early on purpose, which says so)
        is exported and benchmarked; an interrupted one only stops."""
        engine = self.engine
        style, world = engine.style, engine.world
        style.term.clear_status()
        engine.finishing = True
        train_s = engine.clock.now() - (engine.training_started or engine.clock.now())
        ended = self.summary(outcome, train_s)
        style.training_end(ended)
        engine.records.training_ended(ended)
        if outcome != "interrupted":
            engine.evaluate(final=True)  # of the best checkpoint's weights after an early stop
            world.phase("free")
            self.export()
            world.phase("eval")
            self.run_benchmarks()
        world.phase("free")
        summary = self.summary(outcome, train_s)
        style.summary(summary)
        engine.records.finished(summary)

    def summary(self, outcome: str, train_s: float) -> Summary:
        """The run as it stands, for the style's closing words."""
        engine = self.engine
        plan = engine.plan
        return Summary(
            steps=engine.step,
            tokens=engine.step * plan.trained_tokens_per_step,
            wall_s=engine.clock.elapsed(),
            final_loss=engine.curve.last_loss if engine.steps_done else None,
            final_eval_loss=engine.last_eval,
            checkpoint_dir=plan.save_dir,
            exports=tuple(engine.exports),
            interrupted=outcome == "interrupted",
            time=engine.clock.now(),
            outcome=outcome,
            total_steps=plan.total_steps,
            mean_loss=engine.loss_sum / engine.steps_done if engine.steps_done else None,
            train_s=train_s,
            steps_run=engine.steps_done,
            limit=self.limit_text(),
            clipped_steps=engine.clips_total.clipped,
        )

    def limit_text(self) -> str:
        engine = self.engine
        if engine.options.exit_after_steps is not None:
            return f"--exit-after-steps {engine.options.exit_after_steps}"
        if engine.options.exit_after_time is not None:
            return f"--exit-after-time {engine.options.exit_after_time:g}"
        return ""

    def announce_early_stop(self) -> None:
        """An early stop on purpose says so before it saves, exports and benchmarks."""
        engine = self.engine
        plan = engine.plan
        engine.style.term.clear_status()
        engine.style.say(
            engine.clock.now(),
            "stop",
            f"stopping early at step {engine.step:,} of {plan.total_steps:,} ({self.limit_text()})"
            ": saving, exporting and benchmarking the model as trained so far",
        )

    def export(self) -> None:
        engine = self.engine
        plan = engine.plan
        name = plan.model.name
        root = self.export_root
        exported = plan.trainable if plan.lora else plan.params
        safetensors = weight_files(plan)
        if not plan.lora:  # the model's save_pretrained (the tokenizer is not modelled)
            safetensors += [
                (file, len(content)) for file, content in model_files(plan.model.arch).items()
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
        for gguf_type in ("F16", "Q8_0", "Q4_K_M"):
            if plan.lora and gguf_type == "F16":
                continue
            nbytes = gguf_file(plan.model.arch, name, gguf_type).size
            artifacts.append(
                ExportArtifact(
                    "gguf",
                    gguf_type,
                    f"{root}/gguf",
                    ((f"{name}-{gguf_type}.gguf", nbytes),),
                    ar.export_s("gguf", gguf_type, nbytes, plan.params),
                )
            )
        for artifact in artifacts:
            self.spend(artifact.seconds, self.wall_share(artifact.seconds))
            self.exported(artifact)
        if engine.options.quantize:
            self.quantize(engine.options.quantize, f"{root}/quantized")

    def wall_share(self, story_s: float) -> float:
        """The share of a conversion's real time the wall waits: the story takes all of
        it, the wall at most EXPORT_WALL_S (a demo does not sit through an hour of GPTQ)."""
        return min(1.0, EXPORT_WALL_S * self.engine.options.speed / max(story_s, 1e-9))

    def spend(self, story_s: float, wall_share: float) -> None:
        """``story_s`` of story time, ``wall_share`` of it waited for, the rest jumped."""
        self.engine.wait(story_s * wall_share, check=False)
        self.engine.clock.jump(story_s * (1 - wall_share))

    def exported(self, artifact: ExportArtifact) -> None:
        engine = self.engine
        engine.records.export(artifact)
        engine.style.export(engine.clock.now(), artifact)
        engine.exports.append(f"{artifact.path} ({artifact.format} {artifact.detail})")

    def quantize(self, method: str, path: str) -> None:
        """--quantize: GPTQ calibrates on the run's data and quantizes layer by layer
        (each layer's line as it is done); then the quantized model is evaluated on the
        final evaluation's batches (``fakehw.train.quantize``)."""
        engine = self.engine
        plan, style = engine.plan, engine.style
        arch = plan.model.arch
        label = quant.LABELS[method]
        nbytes = quant.quantized_bytes(method, plan.params)
        seconds = ar.export_s(method, label, nbytes, plan.params)
        started = engine.clock.now()
        wall_share = self.wall_share(seconds)
        calibrated = method == "gptq"
        data = plan.datasets[0].short_name if plan.mixture is None else plan.dataset.name
        # GPTQ works a layer at a time: small kernels (the calibration batch through one
        # layer, a Hessian, a Cholesky) that leave the GPUs below their power cap
        engine.world.phase("light" if calibrated else "eval")
        if calibrated:
            style.quantize_start(engine.clock.now(), label, quant.CALIBRATION_SAMPLES,
                                 quant.CALIBRATION_SEQ, data, arch.layers)  # fmt: skip
            per_layer_params = (plan.params - arch.vocab * arch.hidden) // arch.layers
            layer_s = seconds / arch.layers
            rng = random.Random(plan.seed * 7919 + 7)
            for index, error in enumerate(quant.layer_errors(arch.layers, rng), start=1):
                self.spend(layer_s, wall_share)
                style.quantize_layer(
                    QuantizeLayer(index, arch.layers, len(quant.MODULES_PER_LAYER),
                                  per_layer_params, layer_s, error, engine.clock.now())
                )  # fmt: skip
        else:
            self.spend(seconds, wall_share)
        artifact = ExportArtifact(method, label, path,
                                  (("model.safetensors", nbytes), ("quantize_config.json", 311)),
                                  engine.clock.now() - started)  # fmt: skip
        self.exported(artifact)
        engine.world.phase("eval")
        before = engine.last_eval
        if before is None or plan.task == "dpo":
            return  # no language-model loss to compare
        batch_s = plan.performance.eval_batch_s(engine.clock_factor()[0])
        engine.wait(plan.eval_batches * batch_s, check=False)
        result = QuantizeResult(
            method, label,
            quant.CALIBRATION_SAMPLES if calibrated else 0,
            quant.CALIBRATION_SAMPLES * quant.CALIBRATION_SEQ if calibrated else 0,
            data if calibrated else "",
            before, before + quant.loss_increase(method, plan.params),
            ar.BF16 * plan.params, nbytes, engine.clock.now() - started, engine.clock.now(),
            self.weights_step,
        )  # fmt: skip
        engine.records.quantized(result)
        style.quantized(result)
        self.quantized = result

    def run_benchmarks(self) -> None:
        """lm-eval-harness on one node (``fakehw.train.benchmarks``): the exported model,
        then its quantized copy on the same questions, each with the harness's progress
        bars, its model line and its table; the quantized copy's scores beside the
        bf16 model's."""
        engine = self.engine
        plan, style = engine.plan, engine.style
        wanted = bm.tasks_for({d.language for d in plan.datasets})
        tasks = tuple(t for t in wanted if t.name in plan.model.published)
        unscored = [t.name for t in wanted if t not in tasks]
        if unscored:
            style.say(engine.clock.now(), "eval",
                      f"{', '.join(unscored)}: no published score of {plan.model.scored_as} "
                      "to start from; the harness runs without them")  # fmt: skip
        expected = [self.expected_score(task) for task in tasks]
        noises = [engine.rng.gauss(0, 1) for _ in tasks]
        root = self.export_root
        exported = (
            f"pretrained={plan.model.name},peft={root}/hf,dtype=bfloat16"
            if plan.lora
            else f"pretrained={root}/hf,dtype=bfloat16"
        )
        bf16 = self.harness(tasks, "bf16", exported, expected, noises)
        quantized = self.quantized
        if quantized is None:
            return
        rise = quantized.val_loss_after - quantized.val_loss_before
        after = [bm.quantized_score(t, e, rise) for t, e in zip(tasks, expected, strict=True)]
        copy = self.harness(tasks, quantized.method, f"pretrained={root}/quantized", after, noises)
        style.benchmarks_compared(bf16, copy, quantized.label)

    def harness(self, tasks: tuple[bm.BenchmarkTask, ...], model: str, model_args: str,
                expected: list[float], noises: list[float]) -> BenchmarkReport:  # fmt: skip
        """One lm-eval run: loglikelihood requests at the eval speed, generations at
        decoding speed; its table printed and recorded."""
        engine = self.engine
        plan = engine.plan
        per_node = plan.gpus_per_node / plan.gpus
        scoring = bm.scored_tokens(tasks) / (plan.performance.eval_tokens_per_s * per_node)
        decoding = bm.generated_tokens(tasks) / (DECODE_TOKENS_PER_S_PER_GPU * plan.gpus_per_node)
        engine.world.phase("eval")  # scoring: batched forward passes, at the power cap
        engine.load("benchmarks", sum(t.requests for t in tasks if not t.generated), "requests",
                    scoring)  # fmt: skip
        # generation decodes a token at a time: each step streams the weights from HBM
        engine.world.phase("membound")
        engine.load("generations", sum(t.requests for t in tasks if t.generated), "requests",
                    decoding)  # fmt: skip
        engine.world.phase("eval")
        rows = [
            row
            for task, score, noise in zip(tasks, expected, noises, strict=True)
            for row in bm.rows(task, score, noise)
        ]
        report = BenchmarkReport(model, model_args, tuple(rows), engine.clock.now(),
                                 self.weights_step)  # fmt: skip
        engine.records.benchmarks(report)
        engine.style.benchmarks(report)
        return report

    def expected_score(self, task: bm.BenchmarkTask) -> float:
        """What the exported model should score on ``task``. A fine-tune starts from the
        published model: its published score (a reasoning fine-tune gains a little on
        GSM8K). A model trained from scratch scores what its loss allows: near chance
        at first, MMLU and GSM8K only once the loss is low."""
        engine = self.engine
        plan = engine.plan
        loss = None if plan.task != "pretrain" else engine.curve.reference_loss(self.weights_step)
        full = plan.model.published[task.name]
        if plan.task == "lora" and task.name == "gsm8k":
            full = min(0.95, full + REASONING_GSM8K_GAIN)
        return bm.expected_score(task, full, loss)
