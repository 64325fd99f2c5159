"""DeepSpeed under its launcher: ``[date] [INFO] [file.py:line:func]`` lines.

The engine's ``log_dist`` step line (``step=10, skipped=0, lr=[...], mom=[...]``),
``timer.py``'s throughput line (``epoch=0/micro_step=20/global_step=10,
RunningAvgSamplesPerSec=..., CurrSamplesPerSec=..., MemAllocated=...GB``), the
loss scaler's OVERFLOW lines and the checkpoint engine's messages, as real
DeepSpeed 0.16 logs print them; the training script adds a Megatron-DeepSpeed
iteration line with samples/s, tokens per GPU per second and TFLOPs.
"""

from __future__ import annotations

import base64
import json
import time

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
)
from fakehw.train.plan import RunPlan
from fakehw.train.styles.base import (
    MONITOR_KINDS,
    LaunchInfo,
    Style,
    incident_text,
    per_rank,
    weight_bytes,
)
from fakehw.train.styles.megatron import probe_block, validation_block
from fakehw.train.terminal import Terminal


class DeepSpeedStyle(Style):
    name = "deepspeed"
    description = "DeepSpeed/torchrun: '[date] [INFO] [logging.py:96:log_dist] [Rank 0] step=...'"
    uses_live_bar = False
    draws_lr_schedule = False  # the framework draws no such chart
    probes_by_default = False  # a stock trainer has no probe callback
    plans_in_log = False  # its framework prints no such report: its launch script does
    fresh_validation_batches = True  # its validation iterator moves on

    def __init__(self, term: Terminal, plan: RunPlan) -> None:
        super().__init__(term, plan)

    def ds(self, t: float, where: str, text: str) -> None:
        millis = int((t % 1) * 1000)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f",{millis:03d}"
        self.term.line(f"[{when}] [INFO] [{where}] {text}")

    def header(self, t: float) -> None:
        self.ds(
            t,
            "real_accelerator.py:239:get_accelerator",
            "Setting ds_accelerator to cuda (auto detect)",
        )

    def layout_arguments(self) -> str:
        par = self.plan.par
        words = [f"train_micro_batch_size_per_gpu {par.micro_batch}",
                 f"gradient_accumulation_steps {par.grad_accum}",
                 f"zero_optimization.stage {par.zero_stage}"]  # fmt: skip
        if par.recompute:
            words.append("activation_checkpointing.partition_activations true")
        return "ds_config.json: " + ", ".join(words)

    def launcher(self, launch: LaunchInfo) -> None:
        plan, t = self.plan, launch.time
        hosts = launch.hostnames
        world = {h: list(range(plan.gpus_per_node)) for h in hosts}
        # as deepspeed.launcher.runner.encode_world_info encodes it
        world_info = base64.urlsafe_b64encode(json.dumps(world).encode()).decode()
        self.ds(
            t,
            "runner.py:607:main",
            f"cmd = /usr/bin/python3 -u -m deepspeed.launcher.launch --world_info={world_info} "
            f"--master_addr={launch.master_addr} --master_port={launch.master_port} "
            f"--enable_each_rank_log=None {launch.script}",
        )
        self.ds(t, "launch.py:146:main", f"WORLD INFO DICT: {world}")
        self.ds(
            t,
            "launch.py:152:main",
            f"nnodes={plan.nodes}, num_local_procs={plan.gpus_per_node}, node_rank=0",
        )
        self.ds(t, "launch.py:164:main", f"dist_world_size={plan.gpus}")
        self.ds(
            t,
            "launch.py:168:main",
            "Setting CUDA_VISIBLE_DEVICES=" + ",".join(map(str, range(plan.gpus_per_node))),
        )
        self.ds(
            t,
            "comm.py:668:init_distributed",
            "Initializing TorchBackend in DeepSpeed with backend nccl",
        )

    def model_info(self, t: float) -> None:
        plan = self.plan
        self.ds(
            t,
            "logging.py:96:log_dist",
            "[Rank 0] DeepSpeed info: version=0.16.4, git-hash=unknown, git-branch=unknown",
        )
        self.ds(t, "logging.py:96:log_dist", "[Rank 0] DeepSpeed Flops Profiler Enabled: False")
        arch, ep = plan.model.arch, plan.par.ep
        if arch.is_moe:  # deepspeed.moe.layer.MoE, once per MoE layer; rank 0 says it once
            self.ds(
                t,
                "logging.py:96:log_dist",
                f"[Rank 0] Creating MoE layer with num_experts: {arch.experts} | "
                f"num_local_experts: {arch.experts // ep} | expert_parallel_size: {ep}",
            )
        self.ds(t, "logging.py:96:log_dist", "[Rank 0] Using client Optimizer as basic optimizer")
        self.ds(
            t,
            "logging.py:96:log_dist",
            f"[Rank 0] Creating torch.bfloat16 ZeRO stage {plan.par.zero_stage} optimizer"
            if plan.precision == "bf16"
            else f"[Rank 0] Creating fp16 ZeRO stage {plan.par.zero_stage} optimizer",
        )
        if plan.par.zero_stage >= 3:  # stage3.py's own set-up lines
            self.ds(t, "stage3.py:130:__init__", "Reduce bucket size 500000000")
            self.ds(t, "stage3.py:131:__init__", "Prefetch bucket size 50000000")
        else:
            self.ds(
                t,
                "stage_1_and_2.py:151:__init__",
                "Reduce bucket size 500000000, Allgather bucket size 500000000, "
                "CPU Offload: False, Round robin gradient partitioning: False",
            )
        self.ds(t, "logging.py:96:log_dist", f"[Rank 0] DeepSpeed Final Optimizer = FusedAdam")  # noqa: F541
        self.ds(t, "config.py:1000:print", "DeepSpeedEngine configuration:")
        settings = {
            "train_batch_size": plan.global_batch,
            "train_micro_batch_size_per_gpu": plan.par.micro_batch,
            "gradient_accumulation_steps": plan.par.grad_accum,
            "zero_optimization_stage": plan.par.zero_stage,
            "bfloat16_enabled": plan.precision == "bf16",
            "fp16_enabled": plan.precision == "fp16",
            "gradient_clipping": 1.0,
            "steps_per_print": self.plan.log_interval,
        }
        for key in sorted(settings):  # DeepSpeedConfig.print: sorted, 29 - len(name) dots
            self.ds(t, "config.py:1004:print", f"  {key} {'.' * (29 - len(key))} {settings[key]}")

    def loading(
        self, t: float, what: str, done: int, total: int, unit: str, elapsed: float
    ) -> None:
        pass

    def loaded(self, t: float, what: str, detail: str) -> None:
        if what in ("tokenizer", "dataset"):
            self.term.line(f"{what}: {detail}")

    def gpu_check(self, t: float, cells: list[GpuCell]) -> None:
        pass

    def parallelism(self, t: float) -> None:
        pass

    def training_start(self, t: float) -> None:
        self.term.line("training ...")

    def step(self, m: StepMetrics) -> None:
        plan = self.plan
        # the ThroughputTimer's average since training began (its warm-up steps and
        # all), against this step's own rate
        done = (m.step - self.plan.start_step) * m.global_batch
        running = done / max(m.elapsed_s, 1e-9)
        mom = ", ".join(["(0.9, 0.95)"] * 2)
        lrs = ", ".join([repr(m.lr)] * 2)
        self.ds(
            m.time,
            "logging.py:96:log_dist",
            f"[Rank 0] step={m.step}, skipped={m.skipped_steps}, lr=[{lrs}], mom=[{mom}]",
        )
        micro = m.step * plan.par.grad_accum
        allocated = m.memory_gib * 0.78
        self.ds(
            m.time,
            "timer.py:264:stop",
            f"epoch={m.epoch}/micro_step={micro}/global_step={m.step}, "
            f"RunningAvgSamplesPerSec={running}, CurrSamplesPerSec={m.samples_per_s}, "
            f"MemAllocated={allocated:.2f}GB, MaxMemAllocated={m.memory_gib * 0.9:.2f}GB",
        )
        # the Megatron-DeepSpeed script's line: the interval's averages
        per_s = 1.0 / m.interval_step_s
        tgs = m.global_batch_tokens * per_s / m.gpus
        interval_tflops = m.tflops_per_gpu * m.step_time_s * per_s
        self.term.line(
            f" iteration {m.step:8d}/{m.total_steps:8d} | consumed samples: {m.samples_seen:12d}"
            f" | consumed tokens: {m.tokens_seen:12d} | elapsed time per iteration (ms): "
            f"{m.interval_step_s * 1000:.1f} | learning rate: {m.lr:.3E} | global batch size: "
            f"{m.global_batch:5d} | lm loss: {m.interval_loss:.6E} | loss scale: "
            f"{m.loss_scale if m.loss_scale is not None else 1.0:.1f} | actual seqlen: "
            f"{plan.seq:5d} | number of skipped iterations: {m.interval_skipped:3d} | number of "
            f"nan iterations: {0:3d} | samples per second: {m.global_batch * per_s:.3f} | tokens "
            f"per gpu per second (tgs): {tgs:.3f} | TFLOPs: {interval_tflops:.2f} |"
        )

    def progress_line(self, m: StepMetrics) -> None:
        pass

    def collective(self, c: CollectiveTiming) -> None:
        self.ds(
            c.time,
            "logging.py:96:log_dist",
            f"[Rank 0] comm op: {c.op.lower()} | time (ms): {c.time_ms:.2f} | msg size: "
            f"{c.size_bytes / 1e9:.2f} GB | algbw (Gbps): {c.algbw_gbps * 8:.2f} | busbw "
            f"(Gbps): {c.busbw_gbps * 8:.2f}",
        )

    def gpu_grid(self, cells: list[GpuCell], m: StepMetrics) -> None:
        pass

    def incident(self, i: Incident) -> None:
        if i.kind == "overflow":
            old, new = i.details.get("old"), i.details.get("new")
            self.ds(
                i.time,
                "loss_scaler.py:183:update_scale",
                f"[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: "
                f"{old or 0:.0f}, reducing to {new or 0:.0f}",
            )
        elif i.kind == "slow_rank":
            self.ds(
                i.time,
                "logging.py:96:log_dist",
                f"[Rank 0] rank {i.details.get('rank')} is a straggler ({i.details.get('reason')})",
            )
        elif i.kind in MONITOR_KINDS:  # the training script's monitor, through log_dist
            self.ds(i.time, "logging.py:96:log_dist",
                    f"[Rank 0] {incident_text(i, self.plan.grad_clip)[1]}")  # fmt: skip

    def eval_start(self, t: float, step: int, batches: int, final: bool = False) -> None:
        self.term.line(f"Evaluating at step {step} on {batches} batches ...")

    def eval_progress(self, t: float, done: int, total: int) -> None:
        pass

    def eval_done(self, r: EvalResult) -> None:
        self.term.lines(validation_block(r))  # the Megatron-DeepSpeed script's

    def probe(self, p: ProbeResult) -> None:
        self.term.lines(probe_block(p))

    def epoch_end(self, e: EpochSummary) -> None:
        pass  # its log counts iterations, not epochs

    def gradients(self, g: GradientReport) -> None:
        pass  # DeepSpeed logs no per-layer norms

    def checkpoint_dir(self, step: int) -> str:
        return f"global_step{step}"

    def checkpoint_files(self, step: int, total: int) -> list[tuple[str, int]]:
        plan = self.plan
        weights = weight_bytes(plan)
        optimizer = per_rank(self.optim_states(), plan.gpus, total - weights)
        if plan.par.zero_stage >= 3:  # every rank saves its shard of the weights too
            return per_rank("zero_pp_rank_{rank}_mp_rank_00_model_states.pt", plan.gpus,
                            weights) + optimizer  # fmt: skip
        return [("mp_rank_00_model_states.pt", weights), *optimizer]

    def optim_states(self) -> str:
        """A rank's optimizer-state file ({rank} to fill): bf16 runs prefix it."""
        prefix = "bf16_" if self.plan.precision == "bf16" else ""
        return prefix + "zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"

    def model_states(self) -> str:
        """The file the engine names when it saves the model."""
        if self.plan.par.zero_stage >= 3:
            return "zero_pp_rank_0_mp_rank_00_model_states.pt"
        return "mp_rank_00_model_states.pt"

    def checkpoint_start(self, t: float, step: int, path: str, reason: str) -> None:
        self.ds(
            t,
            "logging.py:96:log_dist",
            f"[Rank 0] [Torch] Checkpoint global_step{step} is about to be saved!",
        )
        self.ds(
            t,
            "logging.py:96:log_dist",
            f"[Rank 0] Saving model checkpoint: {path}/{self.model_states()}",
        )
        self.ds(
            t,
            "torch_checkpoint_engine.py:21:save",
            f"[Torch] Saving {path}/{self.model_states()}...",
        )

    def checkpoint_done(self, c: CheckpointInfo) -> None:
        self.ds(
            c.time,
            "torch_checkpoint_engine.py:23:save",
            f"[Torch] Saved {c.path}/{self.model_states()}.",
        )
        self.ds(
            c.time,
            "engine.py:3536:_save_zero_checkpoint",
            f"zero checkpoint saved {c.path}/{self.optim_states().format(rank=0)}",
        )
        self.ds(
            c.time,
            "torch_checkpoint_engine.py:33:commit",
            f"[Torch] Checkpoint global_step{c.step} is ready now!",
        )
