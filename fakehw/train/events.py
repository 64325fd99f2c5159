"""What happens in a run, as plain records: the engine emits them, styles print them.

The engine never formats text and a style never computes a number: every
figure a style shows comes from one of these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fakehw.contract import snapshot as records


@dataclass(frozen=True)
class SourceLoss:
    """One source of a --mixture in a logging interval or an evaluation."""

    name: str
    samples: int  # its sequences there
    loss: float  # their mean loss


@dataclass(frozen=True)
class StepMetrics:
    step: int
    total_steps: int
    epoch: int  # zero-based
    epochs: int
    epoch_fraction: float  # fractional epochs done, as HF Trainer counts
    tokens_seen: int
    samples_seen: int
    loss: float
    # the mean loss of the steps since the previous logged one: what HF Trainer,
    # Megatron and DeepSpeed log (they average over the logging interval)
    interval_loss: float
    interval_step_s: float  # their mean step time ("elapsed time per iteration")
    interval_tflops_per_gpu: float  # the model FLOPs at that mean time (Megatron's throughput)
    interval_skipped: int  # of them, the steps fp16 skipped on an overflow
    ppl: float | None  # none for DPO: a preference loss is no language model's
    lr: float
    grad_norm: float
    tokens_per_s: float
    samples_per_s: float
    step_time_s: float
    elapsed_s: float
    eta_s: float
    tflops_per_gpu: float
    mfu: float
    gpus: int
    global_batch: int
    global_batch_tokens: int
    params: int
    loss_scale: float | None  # FP16 runs only
    skipped_steps: int
    time: float  # unix time in the run's own (possibly accelerated) clock
    memory_gib: float  # what this rank holds (torch.cuda.max_memory_reserved)
    # The step's time, piece by piece (arithmetic.StepPerformance): kernels, the
    # pipeline's idle share, communication not hidden behind compute.
    compute_s: float = 0.0
    exposed_comm_s: float = 0.0
    bubble_fraction: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)  # DPO rewards and the like
    # the logged step's gradient norm per parameter group (their squares add up to
    # grad_norm's), and clipping over the logging interval
    layer_grad_norms: tuple[tuple[str, float], ...] = ()
    clip_rate: float = 0.0
    clip_coef: float = 1.0
    # --mixture: each source over the logging interval (their samples add up to the
    # interval's, their sample-weighted mean loss is interval_loss), and what each has
    # given since the run began (adding up to samples_seen)
    sources: tuple[SourceLoss, ...] = ()
    sources_seen: tuple[int, ...] = ()


@dataclass(frozen=True)
class StepSample:
    """Every optimizer step, logged or not: what frameworks that write TensorBoard at
    every step (Megatron's ``--tensorboard-log-interval 1``, DeepSpeed's monitor) record."""

    step: int
    time: float
    loss: float
    lr: float
    grad_norm: float
    samples_seen: int
    global_batch: int
    loss_scale: float | None


@dataclass(frozen=True)
class EvalResult:
    step: int
    loss: float
    ppl: float | None  # none for DPO: a preference loss is no language model's
    samples: int
    runtime_s: float
    time: float
    batches: int = 0
    tokens_per_s: float = 0.0  # forward only: ~3x training's
    final: bool = False  # the evaluation of the trained model, after training
    extra: dict[str, float] = field(default_factory=dict)
    sources: tuple[SourceLoss, ...] = ()  # --mixture: each source's share of the samples


@dataclass(frozen=True)
class LayerProbe:
    """A probed layer's hidden states (``fakehw.train.probes``)."""

    layer: int  # its index (0: the first decoder layer)
    cosine_sim_intra: float  # mean cosine similarity of tokens of one sequence
    cosine_sim_inter: float  # ... of tokens of different sequences
    participation_ratio: float  # (sum of eigenvalues)^2 / sum of their squares


@dataclass(frozen=True)
class ProbeResult:
    """A model probe on held-out tokens: the output distribution and the probed layers."""

    step: int
    time: float
    tokens: int  # held-out tokens probed
    runtime_s: float
    loss: float  # their mean cross-entropy (nats)
    vocab: int
    hidden: int
    entropy: float  # mean entropy of the predicted distribution (nats, <= ln vocab)
    top1_acc: float
    top5_acc: float
    confidence_gap: float  # mean margin of the top prediction over the second
    topk_mass: float  # mean probability of the top ``topk`` predictions
    topk: int
    p_true_mean: float  # mean probability given to the token that came
    layers: tuple[LayerProbe, ...] = ()

    def values(self) -> dict[str, float]:
        """Every figure under one flat name (``entropy``, ``layer_18/cosine_sim_intra``):
        what a tracker logs, TensorBoard's tags (under ``probe/``) and the HF dicts."""
        flat = {
            "loss": self.loss,
            "entropy": self.entropy,
            "top1_acc": self.top1_acc,
            "top5_acc": self.top5_acc,
            "confidence_gap": self.confidence_gap,
            "topk_mass": self.topk_mass,
            "p_true_mean": self.p_true_mean,
        }
        for layer in self.layers:
            flat[f"layer_{layer.layer}/cosine_sim_intra"] = layer.cosine_sim_intra
            flat[f"layer_{layer.layer}/cosine_sim_inter"] = layer.cosine_sim_inter
            flat[f"layer_{layer.layer}/participation_ratio"] = layer.participation_ratio
        return flat


@dataclass(frozen=True)
class GradientReport:
    """Per-group gradient norms of a step and gradient clipping over the steps since the
    last report (``fakehw.train.gradients``)."""

    step: int
    time: float
    grad_norm: float  # the global norm: sqrt of the sum of the groups' squares
    layers: tuple[tuple[str, float], ...]  # (group, norm)
    steps: int  # steps the clipping figures cover
    clipped: int  # of them, those whose norm exceeded ``max_norm``
    clip_rate: float
    clip_coef: float  # mean max_norm / norm over the clipped steps (1.0: none clipped)
    max_norm: float

    def largest(self, count: int) -> list[tuple[str, float]]:
        return largest(self.layers, count)


def largest(pairs: tuple[tuple[str, float], ...], count: int) -> list[tuple[str, float]]:
    """The ``count`` (group, norm) pairs of largest norm, largest first."""
    return sorted(pairs, key=lambda kv: -kv[1])[:count]


@dataclass(frozen=True)
class EarlyStop:
    """``--early-stopping``: the validation loss stopped improving; training ends and the
    best checkpoint is loaded back."""

    step: int  # where training stops
    time: float
    metric: str  # "eval_loss"
    best: float
    best_step: int
    best_path: str  # the best checkpoint's directory
    patience: int
    last: float  # the evaluation that used up the patience


@dataclass(frozen=True)
class EpochSummary:
    """An epoch's end, as a metrics logger reports it (multi-epoch tasks)."""

    epoch: int  # one-based: the epoch that ended
    epochs: int
    step: int
    time: float
    steps: int  # steps trained in it by this run
    train_loss: float  # the mean of their losses
    tokens: int
    seconds: float
    val_loss: float | None  # the last validation's
    best_val_loss: float | None
    best_step: int | None
    lr: float  # the learning rate the next epoch starts at
    schedule: str
    warmup_steps: int
    total_steps: int


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: str
    files: tuple[tuple[str, int], ...]  # (file name, bytes)
    bytes: int
    seconds: float
    time: float
    reason: str = "periodic"  # "periodic", "final", "interrupt"


@dataclass(frozen=True)
class CollectiveTiming:
    step: int
    op: str
    size_bytes: int
    ranks: int
    time_ms: float
    algbw_gbps: float
    busbw_gbps: float
    transport: str  # "NVLink" or "InfiniBand"
    time: float
    calls: int = 1  # of this collective per optimizer step
    purpose: str = "gradients"  # gradients, parameters, tensor, pipeline, experts
    hidden: float = 0.0  # the share that overlaps with compute
    step_s: float = 0.0


@dataclass(frozen=True)
class GpuCell:
    node: str
    index: int
    util: int
    temp: int
    power_w: float
    memory_used_mib: int
    memory_total_mib: int
    lost: bool = False  # fallen off the bus (XID 79)
    xid_count: int = 0
    last_xid: int = 0
    faults: tuple[str, ...] = ()  # injected faults in force, as the daemon reports them
    clock_sm_mhz: int = 0
    clock_reasons: int = 0  # NVML clock event reason bits

    @property
    def problem(self) -> str:
        """What a pre-flight GPU check reports about this GPU ("" when it is healthy):
        off the bus, thermal slowdown, failed cooling, a power brake, an ECC error."""
        problems = []
        if self.lost or "xid79" in self.faults:
            problems.append("fallen off the bus (XID 79)")
        if self.clock_reasons & (records.REASON_HW_THERMAL | records.REASON_SW_THERMAL):
            problems.append(f"thermal slowdown at {self.temp} C (SM clock {self.clock_sm_mhz} MHz)")
        elif "thermal" in self.faults:
            problems.append(f"cooling failure ({self.temp} C)")
        if self.clock_reasons & records.REASON_HW_POWER_BRAKE or "power-brake" in self.faults:
            problems.append(f"HW power brake (SM clock {self.clock_sm_mhz} MHz)")
        if "ecc-uncorrectable" in self.faults:
            problems.append("uncorrectable ECC error (XID 48)")
        return ", ".join(problems)


@dataclass(frozen=True)
class GpuSample:
    """The job's GPUs as the daemon reports them at a logged step: what TensorBoard's
    GPU panels and ``fakehw plot`` show beside the loss."""

    step: int
    time: float
    power_w_mean: float
    power_w_max: float
    temp_c_mean: float
    temp_c_max: int
    sm_clock_mhz_mean: float
    memory_used_gib_mean: float
    util_mean: float
    sm_clocks: tuple[int, ...] = ()  # each job GPU's, in rank order (0: off the bus)

    @classmethod
    def of(cls, step: int, time: float, cells: list[GpuCell]) -> GpuSample | None:
        live = [c for c in cells if not c.lost]
        if not live:
            return None
        count = len(live)
        return cls(
            step=step,
            time=time,
            power_w_mean=sum(c.power_w for c in live) / count,
            power_w_max=max(c.power_w for c in live),
            temp_c_mean=sum(c.temp for c in live) / count,
            temp_c_max=max(c.temp for c in live),
            sm_clock_mhz_mean=sum(c.clock_sm_mhz for c in live) / count,
            memory_used_gib_mean=sum(c.memory_used_mib for c in live) / count / 1024,
            util_mean=sum(c.util for c in live) / count,
            sm_clocks=tuple(0 if c.lost else c.clock_sm_mhz for c in cells),
        )


@dataclass(frozen=True)
class RunStart:
    """The job as it starts its ranks: where each runs, under which PID."""

    time: float
    hostnames: tuple[str, ...]  # one per node
    pids: dict[int, int]  # rank: PID
    ip: str  # node 0's address (NCCL's bootstrap interface)
    master_port: int


@dataclass(frozen=True)
class Incident:
    kind: str  # "loss_spike", "overflow", "slow_rank", "rank_failure", "restart", "recovered"
    step: int
    time: float
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportArtifact:
    format: str  # "safetensors", "gguf", "gptq"...
    detail: str  # "bf16", "Q4_K_M"...
    path: str
    files: tuple[tuple[str, int], ...]
    seconds: float


@dataclass(frozen=True)
class QuantizeLayer:
    """GPTQ has quantized one decoder layer (``fakehw.train.quantize``)."""

    layer: int  # 1-based
    layers: int
    modules: int
    params: int
    seconds: float
    error: float  # mean squared error of the layer's outputs on the calibration set
    time: float


@dataclass(frozen=True)
class QuantizeResult:
    """The quantized model and what it cost: size, time, held-out loss."""

    method: str  # int8, int4, gptq
    label: str
    calibration_samples: int  # 0: no calibration
    calibration_tokens: int
    calibration_data: str
    val_loss_before: float
    val_loss_after: float
    bytes_before: int
    bytes_after: int
    seconds: float
    time: float
    step: int  # whose weights were quantized


@dataclass(frozen=True)
class BenchmarkRow:
    task: str
    version: int
    metric: str
    shots: int
    value: float
    stderr: float
    filter: str = "none"  # the harness's answer filter (GSM8K: flexible-extract, strict-match)


@dataclass(frozen=True)
class BenchmarkReport:
    """lm-eval-harness's results for one model: the exported one, or its quantized copy."""

    model: str  # "bf16", or the quantization method ("gptq", "int8", "int4")
    model_args: str  # as the harness's --model_args names it
    rows: tuple[BenchmarkRow, ...]
    time: float
    step: int  # whose weights: the exported model's step


@dataclass(frozen=True)
class Summary:
    steps: int
    tokens: int
    wall_s: float
    final_loss: float | None  # None: no step ran
    final_eval_loss: float | None
    checkpoint_dir: str
    exports: tuple[str, ...]
    interrupted: bool
    time: float
    # "finished", "limit" (stopped early on purpose), "early_stopped" (the validation loss
    # stopped improving: --early-stopping), "interrupted"
    outcome: str = "finished"
    total_steps: int = 0
    mean_loss: float | None = None  # over the steps this run trained (HF's train_loss)
    train_s: float = 0.0  # from the first step to the end of training (HF's train_runtime)
    steps_run: int = 0  # steps this run trained (a resumed run starts past 0)
    limit: str = ""  # what stopped it early: "--exit-after-steps 400"
    clipped_steps: int = 0  # of the steps run, those whose gradient norm was clipped


# ---------------------------------------------------------- the job's end
class JobFailed(Exception):
    """The job cannot run (a GPU is full): what PyTorch and torchrun print, then exit 1."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0] if lines else "job failed")
        self.lines = lines


class RankDied(Exception):
    """Ranks died mid-run (the engine recovers: ``fakehw.train.recovery``)."""

    def __init__(self, ranks: list[int]) -> None:
        super().__init__(f"ranks {ranks} died")
        self.ranks = ranks
