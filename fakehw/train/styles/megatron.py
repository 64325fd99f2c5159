"""Megatron-LM's log, as ``megatron/training/training.py`` prints it.

Iteration lines are ``training_log``'s format string for string (date stamp,
``iteration {:8d}/{:8d}``, ``lm loss: {:.6E}``...); validation is
``evaluate_and_print_results``' dashed block; checkpoints are
``save_checkpoint``'s messages and the timers' "(min, max) time across ranks".
"""

from __future__ import annotations

from fakehw.train.events import (
    CheckpointInfo,
    CollectiveTiming,
    EpochSummary,
    EvalResult,
    GpuCell,
    GradientReport,
    Incident,
    ProbeResult,
    StepMetrics,
    Summary,
)
from fakehw.train.plan import RunPlan
from fakehw.train.samples import Example
from fakehw.train.styles.base import (
    MONITOR_KINDS,
    LaunchInfo,
    Style,
    burst_text,
    incident_text,
    per_rank,
    stamp,
    torchrun_warning,
)
from fakehw.train.terminal import Terminal


def validation_block(r: EvalResult) -> list[str]:
    """Megatron-LM's ``evaluate_and_print_results``: the loss and its PPL between rules
    as long as the line and one more; at the end, "at the end of training for val data"."""
    where = "the end of training for val data" if r.final else f"iteration {r.step}"
    text = f" validation loss at {where} | lm loss value: {r.loss:.6E} | "
    if r.ppl is not None:
        text += f"lm loss PPL: {min(r.ppl, 4.85e8):.6E} | "
    rule = "-" * (len(text) + 1)
    return [rule, text, rule]


def probe_block(p: ProbeResult) -> list[str]:
    """The probe as the training script's tracker logs it, in Megatron's ``| key: value |``
    form: the output distribution, then one line per probed layer."""
    lines = [
        f" probe at iteration {p.step:8d} | tokens: {p.tokens} | entropy: {p.entropy:.6E} | "
        f"top1 acc: {p.top1_acc:.6E} | top5 acc: {p.top5_acc:.6E} | confidence gap: "
        f"{p.confidence_gap:.6E} | top{p.topk} mass: {p.topk_mass:.6E} | p true mean: "
        f"{p.p_true_mean:.6E} |"
    ]
    lines += [
        f" probe at iteration {p.step:8d} | layer: {layer.layer} | cosine sim intra: "
        f"{layer.cosine_sim_intra:.6E} | cosine sim inter: {layer.cosine_sim_inter:.6E} | "
        f"participation ratio: {layer.participation_ratio:.6E} |"
        for layer in p.layers
    ]
    return lines


class MegatronStyle(Style):
    name = "megatron"
    description = "Megatron-LM: '[date] iteration N/M | consumed samples: ...' lines"
    uses_live_bar = False
    draws_lr_schedule = False  # the framework draws no such chart
    probes_by_default = False  # a stock trainer has no probe callback
    plans_in_log = False  # its framework prints no such report: its launch script does
    fresh_validation_batches = True  # its validation iterator moves on

    def __init__(self, term: Terminal, plan: RunPlan) -> None:
        super().__init__(term, plan)
        self.dataset_started = False  # "> building train, validation, ..." printed
        self.sources_opened = False  # a mixture's index files, each opened once
        self.checkpoint_reading = False  # between load_checkpoint's first and last lines
        self.checkpoint_loaded = False  # the resumed run's save is read (once)

    def layout_arguments(self) -> str:
        par = self.plan.par
        words = [f"--tensor-model-parallel-size {par.tp}",
                 f"--pipeline-model-parallel-size {par.pp}"]  # fmt: skip
        if par.ep > 1:
            words.append(f"--expert-model-parallel-size {par.ep}")
        words += [f"--micro-batch-size {par.micro_batch}",
                  f"--global-batch-size {self.plan.global_batch}"]  # fmt: skip
        if par.zero_stage >= 1:
            words.append("--use-distributed-optimizer")
        if par.recompute:
            words.append("--recompute-granularity full --recompute-method uniform")
        return " ".join(words)

    def launcher(self, launch: LaunchInfo) -> None:
        plan, par = self.plan, self.plan.par
        # the embedding is padded to a multiple of 128 x TP (make-vocab-size-divisible-by)
        vocab, multiple = plan.model.arch.vocab, 128 * par.tp
        padded = -(-vocab // multiple) * multiple
        self.launched_at = launch.time
        self.term.lines(torchrun_warning(launch))
        self.term.lines(
            [
                f"using world size: {plan.gpus}, data-parallel size: {par.dp}, "
                f"context-parallel size: 1, hierarchical context-parallel sizes: None, "
                f"tensor-model-parallel size: {par.tp}, encoder-tensor-model-parallel size: 0, "
                f"pipeline-model-parallel size: {par.pp}, encoder-pipeline-model-parallel "
                "size: 0",
                "using torch.bfloat16 for parameters ..."
                if plan.precision == "bf16"
                else "using torch.float16 for parameters ...",
                "------------------------ arguments ------------------------",
                *self._arguments(),
                "-------------------- end of arguments ---------------------",
                f"setting number of micro-batches to constant {par.grad_accum}",
                "> building HuggingFaceTokenizer tokenizer ...",
                f" > padded vocab (size: {vocab}) with {padded - vocab} dummy tokens "
                f"(new size: {padded})",
                "> initializing torch distributed ...",
            ]
        )

    def data_path(self) -> list[str]:
        """``--data-path`` of a mixture: each source's weight before its prefix."""
        plan = self.plan
        assert plan.mixture is not None
        prefixes = [f"/data/{c}/{c}_text_document" for c in self.corpora()]
        weights = [f"{s.weight:g}" for s in plan.mixture.sources]
        return [item for pair in zip(weights, prefixes, strict=True) for item in pair]

    def _arguments(self) -> list[str]:
        plan, par, arch = self.plan, self.plan.par, self.plan.model.arch
        values: dict[str, object] = {
            "bf16": plan.precision == "bf16",
            "clip_grad": 1.0,
            "data_parallel_size": par.dp,
            "expert_model_parallel_size": par.ep,
            "ffn_hidden_size": arch.ffn,
            "fp16": plan.precision == "fp16",
            "global_batch_size": plan.global_batch,
            "group_query_attention": arch.kv_heads != arch.heads,
            "hidden_size": arch.hidden,
            "log_interval": self.plan.log_interval,
            "lr": plan.peak_lr,
            "lr_decay_style": plan.schedule,
            "lr_warmup_iters": plan.warmup_steps,
            "micro_batch_size": par.micro_batch,
            "moe_router_topk": arch.top_k if arch.is_moe else 2,  # Megatron's default: 2
            "num_attention_heads": arch.heads,
            "num_experts": arch.experts or None,
            "num_layers": arch.layers,
            "num_query_groups": arch.kv_heads,
            "pipeline_model_parallel_size": par.pp,
            "recompute_granularity": "full" if par.recompute else None,
            "save": plan.save_dir,
            "save_interval": plan.checkpoint_every,
            "seed": plan.seed,
            "seq_length": plan.seq,
            "swiglu": True,
            "tensor_model_parallel_size": par.tp,
            "tensorboard_dir": plan.tensorboard_dir or None,
            "tensorboard_log_interval": 1,
            "train_iters": plan.total_steps,
            "use_distributed_optimizer": par.zero_stage >= 1,
            "world_size": plan.gpus,
        }
        if plan.mixture is not None:
            values["data_path"] = self.data_path()
        # arguments.py's _print_args: sorted, '.' * (48 - len(name))
        return [f"  {key} {'.' * (48 - len(key))} {values[key]}" for key in sorted(values)]

    def header(self, t: float) -> None:
        pass  # Megatron prints no banner: the arguments block is its header

    def nccl_init(self, lines: list[str]) -> None:
        par = self.plan.par
        self.term.lines(lines)
        self.term.lines(
            [
                f"> initialized tensor model parallel with size {par.tp}",
                f"> initialized pipeline model parallel with size {par.pp}",
                f"> setting random seeds to {self.plan.seed} ...",
                "> compiling dataset index builder ...",
                ">>> done with dataset index builder. Compilation time: 0.052 seconds",
            ]
        )

    def loading(
        self, t: float, what: str, done: int, total: int, unit: str, elapsed: float
    ) -> None:
        """Megatron reports stages, not progress bars; opening the dataset, megatron.core
        logs each indexed file it maps (here: the one the loader has reached)."""
        if what == "checkpoint":  # a resumed run reads its save (a restart says its own)
            if not self.checkpoint_loaded:
                self.checkpoint_loading(done, total)
            return
        if what != "dataset":
            return
        if not self.dataset_started:
            self.dataset_started = True
            self.term.line("> building train, validation, and test datasets ...")
        if self.plan.mixture is None:
            prefixes = [f"/data/{self.corpora()[0]}/shard_{done - 1:05d}_text_document"]
        elif not self.sources_opened:  # --data-path's prefixes, one per source
            self.sources_opened = True
            prefixes = self.data_path()[1::2]
        else:
            return
        self.term.lines(
            [
                f"INFO:megatron.core.datasets.indexed_dataset:Load the _IndexReader from {p}.idx"
                for p in prefixes
            ]
        )

    def corpora(self) -> list[str]:
        """The data's directories under /data: one per source of a mixture."""
        plan = self.plan
        names = [s.name for s in plan.mixture.sources] if plan.mixture else [plan.dataset.name]
        return [name.rsplit("/", 1)[-1].lower() for name in names]

    def mixture(self, t: float) -> None:
        """megatron.core's BlendedDataset builds its index of which source each sample
        comes from (``--data-path`` gives the weights)."""
        logger = "INFO:megatron.core.datasets.blended_dataset:"
        self.term.lines(
            [
                f"{logger}Build and save the BlendedDataset indices",
                f"{logger}\tBuild and save the dataset and dataset sample indexes",
            ]
        )

    def data_example(self, t: float, e: Example) -> None:
        pass  # Megatron's data loader prints no rows

    def checkpoint_loading(self, done: int, total: int) -> None:
        """checkpointing.py's load_checkpoint: its first line as it starts, its last when
        every rank has its shard."""
        plan, par = self.plan, self.plan.par
        if done >= total:
            self.checkpoint_loaded = True
            self.term.line(
                f"  successfully loaded checkpoint from {plan.save_dir} [ t 1/{par.tp}, "
                f"p 1/{par.pp} ] at iteration {plan.start_step}"
            )
        elif not self.checkpoint_reading:
            self.term.line(f" loading checkpoint from {plan.save_dir} at iteration "
                           f"{plan.start_step}")  # fmt: skip
        self.checkpoint_reading = done < total

    def loaded(self, t: float, what: str, detail: str) -> None:
        if what == "dataset":
            plan = self.plan
            samples = plan.total_steps * plan.global_batch
            # training.py's train_val_test_num_samples: an evaluation every eval_interval
            # iterations and one at the end, eval_iters batches each
            validations = plan.total_steps // plan.eval_every + 1
            if not self.dataset_started:
                self.term.line("> building train, validation, and test datasets ...")
            self.term.lines(
                [
                    " > datasets target sizes (minimum size):",
                    f"    train:      {samples}",
                    f"    validation: {validations * plan.eval_batches * plan.global_batch}",
                    f"    test:       {plan.eval_batches * plan.global_batch}",
                    f"> finished creating GPT datasets ... [{plan.dataset.name}]",
                ]
            )

    def model_info(self, t: float) -> None:
        par = self.plan.par
        self.term.lines(
            [
                f"time to initialize megatron (seconds): {t - self.launched_at:.3f}",
                f"[after megatron is initialized] datetime: {stamp(t)} ",
                "building GPT model ...",
                *(
                    f" > number of parameters on (tensor, pipeline) model parallel rank "
                    f"({tp}, {pp}): {self.stage_params(pp)}"
                    for tp in range(par.tp)
                    for pp in range(par.pp)
                ),
            ]
        )

    def stage_params(self, stage: int) -> int:
        """Parameters on one tensor-parallel rank of a pipeline stage: its share of the
        layers, plus the embeddings on the first stage and the output layer on the last
        (with tied embeddings and several stages, Megatron keeps a copy there)."""
        par, arch = self.plan.par, self.plan.model.arch
        embedding = arch.vocab * arch.hidden
        untied_output = 0 if arch.tied_embeddings else embedding
        per_layer = (arch.params - embedding - untied_output - arch.hidden) / arch.layers
        layers = arch.layers // par.pp + (1 if stage < arch.layers % par.pp else 0)
        held = layers * per_layer
        if arch.is_moe and par.ep > 1:  # this rank's experts only: 1/EP of each layer's
            held -= arch.expert_params * (1 - 1 / par.ep) * layers / arch.layers
        if stage == 0:
            held += embedding
        if stage == par.pp - 1:
            copy = embedding if arch.tied_embeddings and par.pp > 1 else untied_output
            held += copy + arch.hidden  # the output layer and the final norm
        return int(held // par.tp)

    def gpu_check(self, t: float, cells: list[GpuCell]) -> None:
        pass  # Megatron does not list GPUs

    def parallelism(self, t: float) -> None:
        plan = self.plan
        m = plan.memory
        mb = 1024**2
        weights_and_opt = (m["weights"] + m["gradients"] + m["optimizer"]) / mb
        self.term.lines(
            [
                f"[after model, optimizer, and learning rate scheduler are built] datetime: "
                f"{stamp(t)} ",
                f"Theoretical memory footprints: weight and optimizer={weights_and_opt:.2f} MB, "
                f"activation={m['activations'] / mb:.2f} MB, "
                f"total={(weights_and_opt + m['activations'] / mb):.2f} MB",
                f"[after dataloaders are built] datetime: {stamp(t)} ",
                "done with setup ...",
            ]
        )

    def training_start(self, t: float) -> None:
        self.term.lines(
            [
                "training ...",
                f"[before the start of training step] datetime: {stamp(t)} ",
            ]
        )

    def step(self, m: StepMetrics) -> None:
        # the interval's averages, as training_log computes them from its timer
        loss_scale = m.loss_scale if m.loss_scale is not None else 1.0
        line = (
            f" [{stamp(m.time)}] iteration {m.step:8d}/{m.total_steps:8d} |"
            f" consumed samples: {m.samples_seen:12d} |"
            f" elapsed time per iteration (ms): {m.interval_step_s * 1000:.1f} |"
            f" throughput per GPU (TFLOP/s/GPU): {m.interval_tflops_per_gpu:.1f} |"
            f" learning rate: {m.lr:.6E} |"
            f" global batch size: {m.global_batch:5d} |"
            f" lm loss: {m.interval_loss:.6E} |"
            f" loss scale: {loss_scale:.1f} |"
            f" grad norm: {m.grad_norm:.3f} |"
            f" number of skipped iterations: {m.interval_skipped:3d} |"
            f" number of nan iterations: {0:3d} |"
        )
        self.term.line(line)

    def progress_line(self, m: StepMetrics) -> None:
        pass  # the iteration counter is Megatron's progress

    def collective(self, c: CollectiveTiming) -> None:
        pass  # Megatron logs no collective timings

    def gpu_grid(self, cells: list[GpuCell], m: StepMetrics) -> None:
        rank0 = self.plan.memory_mib
        self.term.line(
            f"[Rank 0] (after {m.step} iterations) memory (MB) | allocated: "
            f"{rank0 * 0.82:.1f} | max allocated: {rank0 * 0.9:.1f} | reserved: {rank0:.1f} | "
            f"max reserved: {rank0:.1f}"
        )

    def incident(self, i: Incident) -> None:
        if i.kind == "slow_rank":
            d = i.details
            self.term.line(
                f"WARNING: straggler detected: rank {d.get('rank')} ({d.get('host')}) "
                f"{d.get('slowdown', 0):.1f}% slower than the median rank ({d.get('reason')})"
            )
        elif i.kind == "loss_spike":
            self.term.line(
                f"WARNING: grad norm spiked to {i.details.get('grad_norm', 0):.3f} "
                f"at iteration {i.step}{burst_text(i.details)} "
                f"(clipped to {self.plan.grad_clip:.1f})"
            )
        elif i.kind in MONITOR_KINDS and i.kind != "recovered":
            # the training script's monitor, through Megatron's print_rank_0
            self.term.line(f"WARNING: {incident_text(i, self.plan.grad_clip)[1]}")

    def eval_start(self, t: float, step: int, batches: int, final: bool = False) -> None:
        pass

    def eval_progress(self, t: float, done: int, total: int) -> None:
        pass

    def eval_done(self, r: EvalResult) -> None:
        self.term.lines(validation_block(r))

    def probe(self, p: ProbeResult) -> None:
        self.term.lines(probe_block(p))

    def epoch_end(self, e: EpochSummary) -> None:
        pass  # its log counts iterations, not epochs

    def gradients(self, g: GradientReport) -> None:
        pass  # Megatron logs the global grad norm in its iteration line only

    def checkpoint_dir(self, step: int) -> str:
        return f"iter_{step:07d}"

    def checkpoint_files(self, step: int, total: int) -> list[tuple[str, int]]:
        """torch_dist format: one distcp file per rank, plus metadata."""
        files = per_rank("__{rank}_0.distcp", self.plan.gpus, total)
        metadata = [(".metadata", 180000 + 900 * self.plan.gpus), ("common.pt", 4500)]
        return [*files, *metadata, ("metadata.json", 73)]

    def checkpoint_start(self, t: float, step: int, path: str, reason: str) -> None:
        save = path.rsplit("/", 1)[0]
        self.term.line(f"saving checkpoint at iteration {step:7d} to {save} in torch_dist format")

    def checkpoint_done(self, c: CheckpointInfo) -> None:
        par = self.plan.par
        save = c.path.rsplit("/", 1)[0]
        ms = c.seconds * 1000
        self.term.lines(
            [
                f"  successfully saved checkpoint from iteration {c.step:7d} to {save} "
                f"[ t 1/{par.tp}, p 1/{par.pp} ]",
                "(min, max) time across ranks (ms):",
                f"    save-checkpoint ................................: "
                f"({ms * 0.997:.2f}, {ms:.2f})",
            ]
        )

    def training_end(self, s: Summary) -> None:
        self.term.line(f"[after training is done] datetime: {stamp(s.time)} ")
