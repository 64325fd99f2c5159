"""The log style interface, the pieces styles share, and fake-train's own look.

A style receives events (``fakehw.train.events``) and prints them; it never
computes a figure. ``Style`` itself is the default style; framework styles
(Megatron-LM, Hugging Face Trainer, DeepSpeed) subclass it and replace what
their real logs print differently, keeping the shared pieces: the NCCL init
lines (``fakehw.train.nccl``), torchrun's warnings, the GPU grid, progress
bars and time formats.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from fakehw.train import arithmetic as ar
from fakehw.train import lrchart, tensors
from fakehw.train.events import (
    BenchmarkReport,
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
    QuantizeLayer,
    QuantizeResult,
    SourceLoss,
    StepMetrics,
    Summary,
)
from fakehw.train.plan import LORA_STATE_BUDGET, MEMORY_TARGET, LoraConfig, RunPlan
from fakehw.train.samples import Example
from fakehw.train.terminal import ESCAPE, Terminal, visible_len

BAR_CELLS = " ▏▎▍▌▋▊▉█"
GPU_PROBLEMS_SHOWN = 8  # unhealthy GPUs the pre-flight check lists one by one
PIPE_PROGRESS_S = 2.5  # on a pipe, a long load prints its progress at least this often
SOURCES_EVERY = 10  # a mixture's by-source line follows every this many step lines
PLANS_SHOWN = 4  # layouts the planner's report lists


@dataclass(frozen=True)
class LaunchInfo:
    """Who runs where: what the launcher and NCCL print at start-up."""

    hostnames: tuple[str, ...]
    master_addr: str
    master_port: int
    launcher_pid: int
    local_pids: tuple[int, ...]  # the real child processes, one per local GPU
    node_rank: int
    ip: str
    script: str
    time: float


# ---------------------------------------------------------------- formats
def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def duration(seconds: float) -> str:
    """``1:02:03``, or ``3d 04:05:06`` beyond a day."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {hours:02d}:{minutes:02d}:{secs:02d}" if days else text


def si(value: float, digits: int = 1) -> str:
    """``549.2k``, ``1.26B``, ``300.0T``."""
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.{digits}f}{suffix}"
    return f"{value:.{digits}f}"


def size(num_bytes: float) -> str:
    for limit, suffix in ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if num_bytes >= limit:
            return f"{num_bytes / limit:.1f} {suffix}"
    return f"{int(num_bytes)} B"


def bar(fraction: float, width: int) -> str:
    """A smooth progress bar of ``width`` cells (eighths of a cell)."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (BAR_CELLS[part] if part else "")
    return text.ljust(width)


# -------------------------------------------------------- shared pieces
def burst_text(details: dict[str, object]) -> str:
    """Where a loss spike's gradient burst sits: `` (in layers.0-2)``, or nothing."""
    layers = details.get("layers")
    if not isinstance(layers, (list, tuple)) or not layers:
        return ""
    return f" (in {group_span([str(name) for name in layers])})"


def lora_reasons(lora: LoraConfig) -> list[str]:
    """How the rank was sized from the GPU's memory (``plan._size_lora``)."""
    gib = 1024**3
    lines = []
    for rank, states in lora.tried:
        share = 100 * states / lora.left_bytes if lora.left_bytes else math.inf
        verdict = "chosen" if rank == lora.rank else "too large"
        lines.append(f"sized from memory: rank {rank}: adapters with their grads and AdamW states "
                     f"{states / gib:.2f} GiB, {share:.1f}% of the {lora.left_bytes / gib:.1f} GiB "
                     f"the bf16 base weights leave per GPU (at most "
                     f"{100 * LORA_STATE_BUDGET:.0f}%): {verdict}")  # fmt: skip
    lines.append(f"adapters on every linear module of each layer ({len(lora.targets)}), alpha "
                 f"{lora.alpha} = 2 x rank: updates scaled by alpha/rank = "
                 f"{lora.alpha / lora.rank:g}")  # fmt: skip
    return lines


def layout_words(par: ar.Parallelism) -> str:
    """A layout as an engineer names it: its parallel sizes and how states are sharded."""
    sharding = {0: "DDP", 1: "ZeRO-1", 2: "ZeRO-2", 3: "ZeRO-3"}[par.zero_stage]
    if par.zero_stage == 3 and par.replicas > 1:
        sharding = f"ZeRO-3 hybrid ({par.shard_group} GPUs x {par.replicas})"
    ep = f" · EP {par.ep}" if par.ep > 1 else ""
    return f"TP {par.tp} · PP {par.pp} · DP {par.dp}{ep} · {sharding}"


def rank_memory_gib(plan: RunPlan) -> float:
    """What a GPU leaves one rank beside its CUDA context."""
    return (plan.gpu.memory_usable_mib - plan.gpu.context_mib) / 1024


def planning_reasons(plan: RunPlan) -> list[str]:
    """Why the chosen layout: the rules the planner keeps and the figures behind them."""
    par, gib = plan.par, 1024**3
    states = ar.TRAINED_STATE_BYTES * plan.trainable + ar.BF16 * (plan.params - plan.trainable)
    usable = rank_memory_gib(plan)
    reasons = [
        f"tensor parallelism stays within one node's {plan.gpus_per_node} GPUs (its collectives "
        f"every layer need {plan.fabric.intra}); pipeline and data parallelism cross nodes"
    ]
    split = par.tp * par.pp
    fits = "exceed" if states / gib > usable else "would fit in"
    text = (
        f"model states {states / gib:.1f} GiB (bf16 weights, trainable grads and AdamW states, "
        f"16 bytes per trainable parameter) {fits} one GPU's {usable:.1f} GiB"
    )
    if split > 1:
        text += f"; TP {par.tp} x PP {par.pp} split the layers over {split} GPUs"
    if par.zero_stage == 0:
        text += ": plain DDP" if split == 1 else ", each replica whole: DDP"
    elif par.shard_group > 1:
        sharded = {1: "optimizer states", 2: "gradients and optimizer states",
                   3: "weights, gradients and optimizer states"}[par.zero_stage]  # fmt: skip
        text += f"; ZeRO-{par.zero_stage} shards the {sharded} over {par.shard_group} ranks"
    else:
        text += f"; ZeRO-{par.zero_stage} has one data-parallel rank: nothing to shard"
    reasons.append(
        f"{text}: {ar.reserved_bytes(plan.memory) / gib:.1f} GiB reserved per GPU with activations"
    )
    if len(plan.candidates) > 1:
        first, runner = plan.candidates[0], plan.candidates[1]
        reasons.append(
            f"chosen: the highest throughput, {si(first.performance.tokens_per_s)} tokens/s "
            f"against {si(runner.performance.tokens_per_s)} for the next layout"
        )
    return reasons


def sources_text(sources: tuple[SourceLoss, ...]) -> str:
    """A mixture's sources: each one's loss over its sequences."""
    return " · ".join(f"{s.name} {s.loss:.4f} ({s.samples:,} seq)" for s in sources)


def group_span(names: list[str]) -> str:
    """``embed_tokens, layers.0-2, layers.27``: runs of adjacent decoder layers as a
    span, the other groups by name."""
    layers = sorted({int(n.split(".")[1]) for n in names if n.startswith("layers.")})
    parts = [n for n in names if not n.startswith("layers.")]
    start = 0
    for k in range(1, len(layers) + 1):
        if k == len(layers) or layers[k] != layers[k - 1] + 1:
            first, last = layers[start], layers[k - 1]
            parts.append(f"layers.{first}-{last}" if last > first else f"layers.{first}")
            start = k
    return ", ".join(parts)


# what the training script's own callbacks report, in every style: its monitor
# (fakehw.train.anomalies) and its batch-size manager (fakehw.train.memory)
MONITOR_KINDS = frozenset(
    {"loss_spike", "recovered", "grad_explosion", "loss_divergence", "rollback",
     "no_convergence", "slow_rank", "oom"}
)  # fmt: skip


def incident_text(i: Incident, grad_clip: float) -> tuple[str, str]:
    """(colour, words) of a warning: one wording for every style and the report."""
    d = i.details

    def num(key: str) -> float:
        value = d.get(key, 0)
        return float(value) if isinstance(value, (int, float)) else 0.0

    layers = burst_text(d)
    best = num("best") or 1.0
    messages = {
        "loss_spike": (
            "yellow",
            f"loss spike at step {i.step}: {num('loss'):.3f} against a running mean "
            f"of {num('mean'):.3f} over the last {d.get('window', 0)} steps; grad "
            f"norm {num('grad_norm'):.1f}{layers} "
            + (f"clipped to {grad_clip:.1f}" if num("grad_norm") > grad_clip else "under the clip")
            + ", continuing",
        ),
        "recovered": ("green", f"loss back to {num('loss'):.3f} at step {i.step}"),
        "grad_explosion": (
            "yellow",
            f"gradient explosion at step {i.step}: grad norm {num('grad_norm'):.2f} is "
            f"{num('ratio'):.1f}x the median {num('median'):.3f} of the last "
            f"{d.get('window', 0)} steps{layers}",
        ),
        "loss_divergence": (
            "red",
            f"loss divergence at step {i.step}: the mean loss of the last {d.get('window', 0)} "
            f"steps, {num('mean'):.3f}, is {100 * (num('mean') / best - 1):.0f}% above "
            f"its lowest, {num('best'):.3f} (step {d.get('best_step')}), and has been since "
            f"step {d.get('since')}",
        ),
        "rollback": (
            "yellow",
            f"rolling back to the checkpoint of step {d.get('to')} ({d.get('path')}) and "
            f"skipping the {d.get('batches')} batches that followed it (steps "
            f"{d.get('skip_from')}-{d.get('skip_to')}, {num('samples'):,.0f} samples)",
        ),
        "no_convergence": (
            "yellow",
            f"no convergence at step {i.step}: in {i.step - int(num('best_step'))} steps the "
            f"mean loss over {d.get('window', 0)} steps has not improved on {num('best'):.4f} "
            f"(step {d.get('best_step')}) by more than its noise (now {num('mean'):.4f}; 3 "
            f"standard errors: {num('margin'):.4f}) while the learning rate is "
            f"{100 * num('lr_share'):.0f}% of its peak: check the data pipeline and the "
            "optimizer",
        ),
        "overflow": (
            "yellow",
            f"FP16 gradient overflow at step {i.step}: skipping step, "
            f"loss scale {num('old'):.0f} -> {num('new'):.0f}",
        ),
        "oom": (
            "yellow",
            f"CUDA out of memory on rank {d.get('rank')} at step {d.get('retry_step')} "
            f"({d.get('cause')}): "
            + (
                "activation checkpointing on"
                if d.get("recompute")
                else f"micro-batch {d.get('micro_from')} → {d.get('micro_to')}, grad-accum "
                f"{d.get('accum_from')} → {d.get('accum_to')}"
            )
            + f", global batch {d.get('global_batch')} x {d.get('seq')} kept · activations "
            f"{num('activations_from_gib'):.1f} → {num('activations_to_gib'):.1f} GiB · "
            f"{num('reserved_from_gib'):.1f} → {num('reserved_to_gib'):.1f} GiB reserved · "
            f"{num('step_s_from'):.2f} → {num('step_s_to'):.2f} s/step; retrying the step",
        ),
        "slow_rank": (
            "yellow",
            f"rank {d.get('rank')} ({d.get('host')}) is {num('slowdown'):.0f}% slower than "
            f"the median ({d.get('reason', 'straggler')})",
        ),
    }
    return messages.get(i.kind, ("red", f"{i.kind}: {d}"))


def torchrun_warning(launch: LaunchInfo) -> list[str]:
    """What torchrun prints first on every node (the real H200 log's opening lines)."""
    head = (
        f"W{time.strftime('%m%d %H:%M:%S', time.localtime(launch.time))}."
        f"{int(launch.time % 1 * 1e6):06d} "
        f"{launch.launcher_pid} torch/distributed/run.py:851] "
    )
    return [
        head,
        head + "*****************************************",
        head + "Setting OMP_NUM_THREADS environment variable for each process to be 1 in "
        "default, to avoid your system being overloaded, please further tune the variable "
        "for optimal performance in your application as needed. ",
        head + "*****************************************",
    ]


def grid_lines(
    term: Terminal, cells: list[GpuCell], title: str, color_by_load: bool = True
) -> list[str]:
    """Every GPU of the job, grouped by node, as many per line as the width allows."""
    lines = [term.paint(title, "bold")]
    by_node: dict[str, list[GpuCell]] = {}
    for cell in cells:
        by_node.setdefault(cell.node, []).append(cell)
    label_width = max((len(n) for n in by_node), default=0) + 2
    # A line is "  " + label + cells (each ending in two spaces, stripped at the end).
    cell_width = max((len(_cell(term, c, False)) for c in cells), default=1)
    per_line = max(1, (term.width - label_width + 2) // cell_width)
    for node, members in by_node.items():
        for start in range(0, len(members), per_line):
            chunk = members[start : start + per_line]
            label = node if start == 0 else ""
            text = "".join(_cell(term, c, color_by_load) for c in chunk)
            lines.append(f"  {label:<{label_width - 2}}{text}".rstrip())
    return lines


def _cell(term: Terminal, c: GpuCell, color: bool) -> str:
    used = c.memory_used_mib / 1024
    total = c.memory_total_mib / 1024
    pct = 100 * c.memory_used_mib / c.memory_total_mib if c.memory_total_mib else 0
    util = f"{c.util:>3}%"
    temp = f"{c.temp:>2}C"
    if color:
        util = term.paint(util, "green" if c.util >= 90 else "yellow" if c.util > 10 else "gray")
        temp = term.paint(temp, "red" if c.temp >= 80 else "yellow" if c.temp >= 70 else "cyan")
    text = f"{c.index:>2} {util} {temp} {c.power_w:>3.0f}W {used:>4.1f}/{total:.0f}G {pct:>3.0f}%"
    return text + "  "


# -------------------------------------------------------------- the style
class Style:
    """fake-train's own style: one rich line per step, genact-plain in spirit."""

    name = "default"
    description = "fake-train's own look: rich step lines, live epoch bar, GPU grid"
    uses_live_bar = True
    draws_lr_schedule = True  # fake-train's own chart of the planned learning rate
    probes_by_default = True  # its trainer probes the model at each validation
    # the topology and the planner's layouts, at the start: in its own lines once the
    # model is loaded (False: the launch script's, before torchrun, ``launch_plan``)
    plans_in_log = True
    # whether each validation draws new batches (Megatron's iterator moves on), or the
    # same held-out set (so the same weights give the same loss)
    fresh_validation_batches = False

    def __init__(self, term: Terminal, plan: RunPlan) -> None:
        self.term = term
        self.plan = plan
        self._progress_shown: dict[str, float] = {}
        self._steps_shown = 0

    # ------------------------------------------------------------- helpers
    def _tag(self, t: float, what: str) -> str:
        return (
            self.term.paint(f"[{clock(t)}]", "gray") + " " + self.term.paint(f"{what:<10}", "cyan")
        )

    def say(self, t: float, what: str, text: str) -> None:
        self.term.line(f"{self._tag(t, what)} {text}")

    # ------------------------------------------------------------ start-up
    def launcher(self, launch: LaunchInfo) -> None:
        plan = self.plan
        self.term.lines(torchrun_warning(launch))
        self.say(
            launch.time,
            "launch",
            f"torchrun --nnodes={plan.nodes} --nproc-per-node={plan.gpus_per_node} "
            f"--rdzv-backend=c10d --rdzv-endpoint={launch.master_addr}:{launch.master_port} "
            f"{launch.script}",
        )

    def header(self, t: float) -> None:
        plan = self.plan
        title = (
            f"fake-train · {plan.task} · {plan.model.name} ({plan.model.size_label} params) on "
            f"{plan.gpus} x {plan.gpu.name} ({plan.nodes} node{'s' if plan.nodes > 1 else ''})"
            f" · seed {plan.seed}"
        )
        self.term.line(self.term.paint(title, "bold"))

    def nccl_init(self, lines: list[str]) -> None:
        self.term.lines(lines)

    def model_info(self, t: float) -> None:
        plan, arch = self.plan, self.plan.model.arch
        kv = f" ({arch.kv_heads} KV)" if arch.kv_heads != arch.heads else ""
        moe = ""
        if arch.is_moe:
            moe = f" · {arch.experts} experts, top-{arch.top_k}"
            if arch.shared_experts:
                moe += f" + {arch.shared_experts} shared"
            moe += f" · {arch.active_params:,} active per token"
        self.say(
            t,
            "model",
            f"{plan.model.name}: {arch.layers} layers · hidden {arch.hidden} · {arch.heads} "
            f"heads{kv} · FFN {arch.ffn} · vocab {arch.vocab}{moe} → "
            + self.term.paint(f"{arch.params:,} parameters", "bold"),
        )
        if plan.lora:
            share = 100 * plan.trainable / arch.params
            self.say(
                t,
                "lora",
                f"rank {plan.lora.rank} · alpha {plan.lora.alpha} · dropout "
                f"{plan.lora.dropout} · targets {','.join(plan.lora.targets)} → "
                f"trainable {plan.trainable:,} of {arch.params:,} ({share:.3f}%)",
            )
            for text in lora_reasons(plan.lora):
                self.say(t, "lora", text)

    def loading(
        self, t: float, what: str, done: int, total: int, unit: str, elapsed: float
    ) -> None:
        fraction = done / total if total else 1.0
        text = f"{what:<10} ▕{bar(fraction, 24)}▏ {100 * fraction:5.1f}%  {done:,}/{total:,} {unit}"
        if done >= total:
            self.term.clear_status()
        elif self.term.tty:
            self.term.status(self.term.paint(f"[{clock(t)}] ", "gray") + text)
        elif self.progress_due(what):  # a log gets a line now and then, as loaders print
            self.term.line(f"[{clock(t)}] {text}")

    def progress_due(self, what: str) -> bool:
        """Whether a log (no live line) should get a progress line of ``what`` now: a
        long wait is never silent for more than ``PIPE_PROGRESS_S`` of wall time."""
        now = time.monotonic()
        last = self._progress_shown.setdefault(what, now)
        if now - last < PIPE_PROGRESS_S:
            return False
        self._progress_shown[what] = now
        return True

    def loaded(self, t: float, what: str, detail: str) -> None:
        self.say(t, what, detail)

    def data_example(self, t: float, e: Example) -> None:
        """A row of a fine-tune's data, as its dataset stores it."""
        row = {"messages": [{"role": role, "content": text} for role, text in e.messages]}
        self.say(t, "sample", f"{e.source}[{e.index}] {json.dumps(row, ensure_ascii=False)}")

    def mixture(self, t: float) -> None:
        """--mixture: each source's weight, size and how often the run reads it."""
        plan = self.plan
        assert plan.mixture is not None
        run_tokens = plan.total_steps * plan.trained_tokens_per_step
        passes = plan.mixture.passes(run_tokens)
        width = max(len(s.name) for s in plan.mixture.sources)
        for source, read in zip(plan.mixture.sources, passes, strict=True):
            d = source.dataset
            self.say(
                t,
                "mixture",
                f"{source.name:<{width}}  weight {source.weight:.3f} · {d.samples:,} samples · "
                f"{si(d.tokens)} tokens · {read:.2f} passes in {si(run_tokens)} tokens"
                + (" (upsampled)" if read > 1 else ""),
            )

    def gpu_check(self, t: float, cells: list[GpuCell]) -> None:
        plan = self.plan
        link = f"NVLink NV{plan.gpu.nvlink_count}" if plan.gpu.nvlink_topology == "all" else "PCIe"
        net = " · InfiniBand 8x400G per node" if plan.nodes > 1 else ""
        unhealthy = [c for c in cells if c.problem]
        healthy = sum(1 for c in cells if c.memory_total_mib and not c.problem)
        self.say(
            t,
            "gpus",
            self.term.paint(f"{healthy}/{plan.gpus} healthy", "yellow" if unhealthy else "green")
            + f": {plan.gpu.name} · {plan.gpu.memory_total_mib} MiB · {link}{net}",
        )
        for c in unhealthy[:GPU_PROBLEMS_SHOWN]:
            where = f"{c.node} " if plan.nodes > 1 else ""
            self.say(t, "gpus", self.term.paint(f"{where}GPU {c.index}: {c.problem}", "red"))
        if len(unhealthy) > GPU_PROBLEMS_SHOWN:
            more = len(unhealthy) - GPU_PROBLEMS_SHOWN
            self.say(t, "gpus", self.term.paint(f"... and {more} more unhealthy GPUs", "red"))
        self.term.lines(grid_lines(self.term, cells, "  GPU check (util temp power memory)"))

    def topology(self, t: float, host: str, matrix: str) -> None:
        """How the GPUs connect, as ``nvidia-smi topo -m`` prints it, and the links the
        planner counts on."""
        self.say(t, "topology", f"{host}: nvidia-smi topo -m")
        self.term.lines(["  " + line if line else "" for line in self.matrix_lines(matrix)])
        self.say(t, "topology", self.links_text())

    def matrix_lines(self, matrix: str) -> list[str]:
        """``nvidia-smi topo -m``'s output, its underline codes only on a terminal (this
        is a log)."""
        shown = matrix if self.term.color else ESCAPE.sub("", matrix)
        return shown.rstrip("\n").split("\n")

    def links_text(self) -> str:
        plan, fabric = self.plan, self.plan.fabric
        link = (
            f"NVLink NV{plan.gpu.nvlink_count} between every pair (NVSwitch)"
            if plan.gpu.nvlink_topology == "all"
            else "NVLink bridges in pairs, PCIe between them"
        )
        across = (
            f" · {plan.nodes} nodes over InfiniBand {plan.gpu.host.nic_gbits_per_gpu:.0f} Gb/s "
            f"per GPU ({fabric.inter_gbps:.0f} GB/s bus bandwidth)"
            if plan.nodes > 1
            else " · one node"
        )
        return (f"{plan.gpus_per_node} GPUs per node: {link}, {fabric.intra_gbps:.0f} GB/s ring "
                f"bus bandwidth{across}")  # fmt: skip

    def planning(self, t: float) -> None:
        """The layouts the planner weighed, fastest first, and why the chosen one."""
        for text in self.planning_texts():
            self.say(t, "planner", text)

    def planning_texts(self) -> list[str]:
        plan = self.plan
        shown = plan.candidates[:PLANS_SHOWN]
        texts = [
            f"{len(plan.candidates)} layouts fit {100 * MEMORY_TARGET:.0f}% of the "
            f"{rank_memory_gib(plan):.1f} GiB a rank has beside its CUDA context; the fastest "
            f"{len(shown)}, by the tokens/s of their modelled step:"
        ]
        for index, layout in enumerate(shown):
            par, perf = layout.par, layout.performance
            step_s = perf.step_s()
            texts.append(
                f"  {layout_words(par)} · micro-batch {par.micro_batch} x {par.grad_accum}"
                f"{' · recompute' if par.recompute else ''} · global batch {layout.global_batch}"
                f" → {layout.reserved_mib / 1024:.1f} GiB · {step_s:.2f} s/step · "
                f"{si(perf.tokens_per_s)} tokens/s · MFU {100 * perf.mfu(step_s):.1f}%"
                + (" ← chosen" if index == 0 else "")
            )
        return texts + planning_reasons(plan)

    def launch_plan(self, host: str, matrix: str) -> None:
        """A framework's run: its launch script reads the topology and plans the layout
        before it starts torchrun, in its own plain lines, and hands the framework the
        arguments that set the chosen layout (which the framework's own lines then show)."""
        lines = [f"+ nvidia-smi topo -m   # on {host}", *self.matrix_lines(matrix)]
        texts = [self.links_text(), *self.planning_texts()]
        lora = self.plan.lora
        if lora is not None:
            texts.append(f"LoRA rank {lora.rank} · alpha {lora.alpha} · dropout {lora.dropout} · "
                         f"targets {','.join(lora.targets)}")  # fmt: skip
            texts += lora_reasons(lora)
        texts.append(f"launching with {self.layout_arguments()}")
        self.term.lines(lines + [f"[planner] {text}" for text in texts])

    def layout_arguments(self) -> str:
        """The framework's arguments that set the chosen layout."""
        return layout_words(self.plan.par)

    def parallelism(self, t: float) -> None:
        plan, par = self.plan, self.plan.par
        sharding = {
            0: "DDP",
            1: "ZeRO-1 (optimizer sharded)",
            2: "ZeRO-2 (optimizer + gradients sharded)",
            3: "FSDP full shard (ZeRO-3)",
        }[par.zero_stage]
        if par.zero_stage == 3 and par.replicas > 1:  # HYBRID_SHARD: shards within a node
            sharding = (
                f"FSDP hybrid shard (ZeRO-3 over {par.shard_group} GPUs, {par.replicas} replicas)"
            )
        ep = f" · EP {par.ep}" if par.ep > 1 else ""
        self.say(
            t,
            "parallel",
            f"DP {par.dp} · TP {par.tp} · PP {par.pp}{ep} · {sharding} · micro-batch "
            f"{par.micro_batch} · grad-accum {par.grad_accum} · global batch "
            f"{plan.global_batch}{' pairs x 2' if plan.task == 'dpo' else ''} x {plan.seq} = "
            f"{plan.tokens_per_step:,} tokens"
            + (" · activation recomputation" if par.recompute else ""),
        )
        scale = " with dynamic loss scaling" if plan.precision == "fp16" else ""
        self.say(
            t,
            "precision",
            f"{plan.precision} mixed precision{scale} · AdamW(β=0.9,0.95, wd 0.1) · lr "
            f"{plan.peak_lr:.1e} {plan.schedule}, warmup {plan.warmup_steps} · grad clip "
            f"{plan.grad_clip:.1f}",
        )
        m = plan.memory
        gib = 1024**3
        self.say(
            t,
            "memory",
            f"per GPU: weights {m['weights'] / gib:.1f} GiB · grads {m['gradients'] / gib:.1f} · "
            f"optimizer {m['optimizer'] / gib:.1f} · activations {m['activations'] / gib:.1f} · "
            f"{plan.memory_mib / 1024:.1f} GiB reserved of {plan.gpu.memory_total_mib / 1024:.1f}",
        )

    def training_start(self, t: float) -> None:
        plan = self.plan
        tokens = plan.total_steps * plan.tokens_per_step
        # DPO reads pairs padded to the sequence length: its token count would be padding
        # too, more than the dataset holds; what it goes through is pairs.
        amount = (
            f"{plan.total_steps * plan.global_batch:,} pairs"
            if plan.task == "dpo"
            else f"{si(tokens)} tokens"
        )
        resume = f" · resuming at step {plan.start_step:,}" if plan.start_step else ""
        self.say(
            t,
            "train",
            f"{plan.total_steps:,} steps · {amount} · {epochs_text(plan)} · eval every "
            f"{plan.eval_every} · checkpoint "
            f"every {plan.checkpoint_every} → {plan.save_dir}{resume}",
        )

    def lr_schedule(self, t: float, step: int, at_start: bool) -> None:
        """The planned learning rate, the current step marked: at the start, and at each
        evaluation when a reader watches the terminal."""
        if not self.draws_lr_schedule or (not at_start and not self.term.tty):
            return
        lines = lrchart.chart(self.plan, step)
        self.term.lines([self.term.paint(line, "gray") for line in lines])

    # ------------------------------------------------------------ training
    def step(self, m: StepMetrics) -> None:
        t = self.term
        width = len(str(m.total_steps))
        loss_color = "green" if m.loss < 3 else "yellow" if m.loss < 6 else "red"
        parts = [
            t.paint(f"step {m.step:>{width}}/{m.total_steps}", "bold"),
            "loss " + t.paint(f"{m.loss:.4f}", loss_color),
            *(
                [f"ppl {si(m.ppl, 2) if m.ppl >= 1000 else f'{m.ppl:.2f}'}"]
                if m.ppl is not None
                else []
            ),
            f"lr {m.lr:.2e}",
            f"gnorm {m.grad_norm:.3f}",
            t.paint(f"{si(m.tokens_per_s)} tok/s", "cyan"),
            f"{m.samples_per_s:.1f} samples/s",
            f"{m.tflops_per_gpu:.1f} TFLOP/s/GPU",
            f"MFU {100 * m.mfu:.1f}%",
            f"{m.step_time_s:.2f} s/step",
            f"elapsed {duration(m.elapsed_s)}",
            f"ETA {duration(m.eta_s)}",
        ]
        if m.loss_scale is not None:
            parts.insert(5, f"scale {m.loss_scale:.0f}")
        for key, value in m.extra.items():
            parts.insert(5, f"{key} {value:.3f}")
        # On a narrow terminal, drop the least telling figures rather than wrap.
        stamp_text = t.paint(f"[{clock(m.time)}] ", "gray")
        droppable = ["samples/s", "elapsed", "TFLOP/s/GPU", "gnorm", "s/step", "ppl", "lr ", "ETA"]
        while t.tty and visible_len(stamp_text + " │ ".join(parts)) > t.width - 1 and droppable:
            word = droppable.pop(0)
            parts = [p for p in parts if word not in p]
        self.term.line(stamp_text + " │ ".join(parts))
        self._steps_shown += 1
        if m.sources and self._steps_shown % SOURCES_EVERY == 1:
            steps = sum(s.samples for s in m.sources) // self.plan.global_batch
            span = f"step {m.step}" if steps == 1 else f"steps {m.step - steps + 1}-{m.step}"
            self.say(m.time, "mixture", f"{span} by source: {sources_text(m.sources)}")

    def progress(self, m: StepMetrics) -> None:
        """The epoch bar: live on a terminal, a line now and then elsewhere."""
        label, within = self.progress_of(m)
        text = (
            f"{label} ▕{bar(within, 30)}▏ {100 * within:5.1f}%  "
            f"step {m.step:,}/{m.total_steps:,} · {si(m.tokens_seen, 2)} tokens · "
            f"ETA {duration(m.eta_s)}"
        )
        self.term.status(self.term.paint(text, "blue"))

    def progress_line(self, m: StepMetrics) -> None:
        """The bar as a log line, for pipes (where there is no live line)."""
        label, within = self.progress_of(m)
        self.say(
            m.time,
            "progress",
            f"{label} [{bar(within, 30)}] {100 * within:5.1f}% step {m.step}/{m.total_steps}",
        )

    def progress_of(self, m: StepMetrics) -> tuple[str, float]:
        """What the bar measures: the epoch, or the run when it is a share of one (a
        pretraining budget below the dataset's tokens)."""
        if self.plan.total_steps < self.plan.steps_per_epoch:
            return "run", m.step / max(1, m.total_steps)
        return f"epoch {m.epoch + 1}/{m.epochs}", m.epoch_fraction - m.epoch

    def collective(self, c: CollectiveTiming) -> None:
        per_step = f", {c.calls} per step," if c.calls > 1 else ""
        self.say(
            c.time,
            "nccl",
            f"{c.op} of {c.purpose} {size(c.size_bytes)} over {c.ranks} ranks ({c.transport})"
            f"{per_step} {c.time_ms:.1f} ms each · algbw {c.algbw_gbps:.1f} GB/s · busbw "
            f"{c.busbw_gbps:.1f} GB/s · {100 * c.hidden:.0f}% hidden behind compute",
        )

    def gpu_grid(self, cells: list[GpuCell], m: StepMetrics) -> None:
        total_w = sum(c.power_w for c in cells)
        busy = sum(1 for c in cells if c.util >= 90)
        mean_t = sum(c.temp for c in cells) / max(1, len(cells))
        title = (
            f"  GPU status at step {m.step}: {busy}/{len(cells)} busy · mean {mean_t:.0f}C · "
            f"{total_w / 1000:.1f} kW"
        )
        self.term.lines(grid_lines(self.term, cells, title))

    def incident(self, i: Incident) -> None:
        color, text = incident_text(i, self.plan.grad_clip)
        self.say(i.time, "warning", self.term.paint(text, color))

    def rank_failure(self, lines: list[str]) -> None:
        self.term.lines([self.term.paint(line, "red") for line in lines])

    def eval_start(self, t: float, step: int, batches: int, final: bool = False) -> None:
        what = "final evaluation of the trained model" if final else "validation"
        self.say(t, "eval", f"{what} at step {step}: {batches} batches")

    def eval_progress(self, t: float, done: int, total: int) -> None:
        text = f"validating ▕{bar(done / total, 24)}▏ {done}/{total} batches"
        if done >= total:
            self.term.clear_status()
        else:
            self.term.status(self.term.paint(f"[{clock(t)}] ", "gray") + text)

    def eval_done(self, r: EvalResult) -> None:
        extra = "".join(f" · {k} {v:.3f}" for k, v in r.extra.items())
        ppl = "" if r.ppl is None else f" · val ppl {r.ppl:.2f}"
        label = "final val loss" if r.final else "val loss"
        self.say(
            r.time,
            "eval",
            self.term.paint(f"{label} {r.loss:.4f}{ppl}", "magenta")
            + f" · {r.samples:,} samples in {r.runtime_s:.1f} s "
            f"({si(r.tokens_per_s)} tok/s){extra}",
        )
        if r.sources:
            self.say(r.time, "eval", f"{label} by source: {sources_text(r.sources)}")

    def probe(self, p: ProbeResult) -> None:
        """The model probe at an evaluation: the output distribution, then each probed
        layer's representation figures."""
        self.say(
            p.time,
            "probe",
            f"step {p.step} · {p.tokens:,} held-out tokens · entropy {p.entropy:.3f} nats "
            f"(ln V {math.log(p.vocab):.2f}) · top-1 {100 * p.top1_acc:.1f}% · top-5 "
            f"{100 * p.top5_acc:.1f}% · confidence gap {p.confidence_gap:.3f} · top-{p.topk} "
            f"mass {p.topk_mass:.3f} · p(true) {p.p_true_mean:.3f}",
        )
        for layer in p.layers:
            self.say(
                p.time,
                "probe",
                f"layer {layer.layer:>3}: cosine intra {layer.cosine_sim_intra:.3f} · inter "
                f"{layer.cosine_sim_inter:.3f} · participation ratio "
                f"{layer.participation_ratio:.1f} of {p.hidden}",
            )

    def gradients(self, g: GradientReport) -> None:
        """Per-layer gradient norms of the last step and clipping since the last report."""
        largest = ", ".join(f"{name} {norm:.3f}" for name, norm in g.largest(4))
        self.say(
            g.time,
            "grads",
            f"step {g.step} · norm {g.grad_norm:.3f} over {len(g.layers)} groups · largest: "
            f"{largest} · clipped {g.clipped} of the last {g.steps} steps "
            f"({100 * g.clip_rate:.1f}%, mean clip coef {g.clip_coef:.3f}, max norm "
            f"{g.max_norm:.1f})",
        )

    def early_stop(self, e: EarlyStop) -> None:
        """The early-stopping callback's verdict after an evaluation."""
        self.say(
            e.time,
            "callback",
            self.term.paint(
                f"EarlyStopping: {e.metric} {e.last:.4f} at step {e.step} did not improve on "
                f"{e.best:.4f} (step {e.best_step}) for {e.patience} evaluation"
                f"{'s' if e.patience > 1 else ''}: stopping training",
                "yellow",
            ),
        )

    def best_restored(self, t: float, e: EarlyStop) -> None:
        self.say(
            t,
            "callback",
            f"loaded the best model back from {e.best_path} ({e.metric} {e.best:.4f}, step "
            f"{e.best_step}): evaluating, exporting and benchmarking it",
        )

    def epoch_end(self, e: EpochSummary) -> None:
        """fake-train's MetricsLogger and LRSchedulerCallback at an epoch's end."""
        val = ""
        if e.val_loss is not None:
            val = f" · val loss {e.val_loss:.4f}"
            if e.best_val_loss is not None:
                val += f" (best {e.best_val_loss:.4f} at step {e.best_step})"
        self.say(
            e.time,
            "callback",
            f"MetricsLogger: epoch {e.epoch}/{e.epochs} done at step {e.step:,} · "
            f"{e.steps:,} steps · train loss {e.train_loss:.4f} (epoch mean){val} · "
            f"{si(e.tokens, 2)} tokens in {duration(e.seconds)}",
        )
        if e.epoch < e.epochs:
            done = 100 * e.step / max(1, e.total_steps)
            self.say(
                e.time,
                "callback",
                f"LRSchedulerCallback: epoch {e.epoch + 1} starts at lr {e.lr:.3e} ({e.schedule} "
                f"after {e.warmup_steps} warmup steps, {done:.0f}% of {e.total_steps:,} steps)",
            )

    def checkpoint_start(self, t: float, step: int, path: str, reason: str) -> None:
        why = {"interrupt": " (interrupted)", "final": " (final)"}.get(reason, "")
        self.say(t, "checkpoint", f"saving step {step}{why} to {path} ...")

    def checkpoint_done(self, c: CheckpointInfo) -> None:
        files = ", ".join(f"{name} ({size(b)})" for name, b in c.files[:3])
        more = f" + {len(c.files) - 3} more" if len(c.files) > 3 else ""
        self.say(
            c.time,
            "checkpoint",
            self.term.paint(f"saved {size(c.bytes)}", "green")
            + f" in {c.seconds:.1f} s ({c.bytes / c.seconds / 1e9:.1f} GB/s): {files}{more}",
        )

    def checkpoint_removed(self, t: float, path: str) -> None:
        """An older checkpoint deleted to keep the framework's limit."""
        self.say(t, "checkpoint", f"removed {path} (older than the checkpoints kept)")

    def checkpoint_dir(self, step: int) -> str:
        return f"step_{step:07d}"

    def checkpoint_files(self, step: int, total: int) -> list[tuple[str, int]]:
        """Safetensors weights plus the optimizer: one shard per rank when it is
        sharded (FSDP/ZeRO), one file from rank 0 under plain DDP."""
        plan = self.plan
        weights = weight_bytes(plan)
        optimizer = (
            per_rank("optim/rank_{rank:05d}.pt", plan.gpus, total - weights)
            if plan.par.zero_stage
            else [("optimizer.pt", total - weights)]
        )
        return [
            *weight_files(plan),
            *optimizer,
            ("trainer_state.json", 2841 + 40 * step // max(1, plan.eval_every)),
        ]

    # ------------------------------------------------------------------ end
    def export(self, t: float, a: ExportArtifact) -> None:
        total = sum(b for _, b in a.files)
        self.say(
            t,
            "export",
            f"{a.format} {a.detail}: {len(a.files)} file{'s' if len(a.files) > 1 else ''}, "
            f"{size(total)} → {a.path} ({a.seconds:.0f} s)",
        )

    def quantize_start(self, t: float, label: str, samples: int, seq: int, data: str,
                       layers: int) -> None:  # fmt: skip
        text = (
            f"{label}: calibration {samples} samples x {seq} tokens of {data} "
            f"({samples * seq:,} tokens) · {layers} layers, layer by layer"
        )
        self.say(t, "quantize", text)

    def quantize_layer(self, q: QuantizeLayer) -> None:
        self.say(
            q.time,
            "quantize",
            f"layer {q.layer:>{len(str(q.layers))}}/{q.layers} · {q.modules} modules · "
            f"{si(q.params)} params · {q.seconds:.1f} s · mean error {q.error:.4f}",
        )

    def quantized(self, q: QuantizeResult) -> None:
        rise = q.val_loss_after - q.val_loss_before
        self.say(
            q.time,
            "quantize",
            f"{q.label}: val loss {q.val_loss_before:.4f} → {q.val_loss_after:.4f} "
            f"({rise:+.4f}) · ppl {perplexity(q.val_loss_before):.2f} → "
            f"{perplexity(q.val_loss_after):.2f} · {size(q.bytes_before)} → "
            f"{size(q.bytes_after)} ({q.bytes_before / q.bytes_after:.1f}x smaller) · "
            f"{duration(q.seconds)}",
        )

    def benchmarks(self, report: BenchmarkReport) -> None:
        """The harness's own lines: its model line, then its table."""
        self.term.lines(harness_table(report))

    def benchmarks_compared(self, exported: BenchmarkReport, copy: BenchmarkReport,
                            label: str) -> None:  # fmt: skip
        """The quantized copy's scores beside the exported model's, task by task."""
        scores = {(r.task, r.filter): r.value for r in exported.rows}
        text = " · ".join(
            f"{r.task}{'' if r.filter in ('none', 'custom-extract') else f' ({r.filter})'} "
            f"{scores[(r.task, r.filter)]:.4f} → {r.value:.4f} "
            f"({100 * (r.value - scores[(r.task, r.filter)]):+.2f} pts)"
            for r in copy.rows
        )
        self.say(copy.time, "quantize", f"{label} against bf16: {text}")

    def training_end(self, s: Summary) -> None:
        """The training loop is over (before the final evaluation, export and benchmarks):
        ``s`` as it stands then. Frameworks that report it (HF's train_runtime) do so here."""

    def summary(self, s: Summary) -> None:
        t = self.term
        state = f"run {outcome_words(s)}"
        of = f" of {s.total_steps:,}" if s.outcome != "finished" and s.total_steps else ""
        amount = (
            f"{s.steps * self.plan.global_batch:,} pairs"
            if self.plan.task == "dpo"
            else f"{si(s.tokens, 2)} tokens"
        )
        lines = [
            "",
            t.paint(state, "bold") + f": {s.steps:,}{of} steps · {amount} · {duration(s.wall_s)}",
            (
                f"  final train loss {s.final_loss:.4f}"
                + (f" · final val loss {s.final_eval_loss:.4f}" if s.final_eval_loss else "")
                if s.final_loss is not None
                else "  no training step completed"
            ),
            f"  checkpoints: {s.checkpoint_dir}",
        ]
        lines += [f"  export: {path}" for path in s.exports]
        if self.plan.report_path:
            lines.append(f"  report: {self.plan.report_path}")
        t.lines(lines)


def outcome_words(s: Summary) -> str:
    """How the run ended, in words: the summary's and the report's."""
    return {
        "finished": "finished",
        "limit": f"stopped early ({s.limit})",
        "early_stopped": "stopped early (the validation loss stopped improving)",
        "interrupted": "interrupted",
    }.get(s.outcome, "ended")


def weight_bytes(plan: RunPlan) -> int:
    """The bf16 weights a checkpoint holds (only the adapters, for LoRA)."""
    return ar.BF16 * (plan.trainable if plan.lora else plan.params)


def weights(plan: RunPlan) -> tensors.WeightFiles:
    """The weight files a save writes: the model's safetensors shards (and their index),
    or a LoRA's adapter, with PEFT's adapter_config.json beside it."""
    lora = (plan.lora.rank, plan.lora.targets) if plan.lora else None
    return tensors.weight_files(plan.model.arch, lora)


def weight_files(plan: RunPlan) -> list[tuple[str, int]]:
    files = weights(plan).files
    if plan.lora:
        files.append(("adapter_config.json", len(adapter_config(plan))))
    return files


def adapter_config(plan: RunPlan) -> bytes:
    """PEFT's adapter_config.json for the run's LoRA."""
    import json

    assert plan.lora is not None
    config = {
        "base_model_name_or_path": plan.model.name,
        "bias": "none",
        "lora_alpha": plan.lora.alpha,
        "lora_dropout": plan.lora.dropout,
        "peft_type": "LORA",
        "r": plan.lora.rank,
        "target_modules": sorted(plan.lora.targets),
        "task_type": "CAUSAL_LM",
    }
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def epochs_text(plan: RunPlan) -> str:
    """``3 epochs``, ``1 epoch``, or the share of one a pretraining budget covers."""
    if plan.total_steps < plan.steps_per_epoch:
        return f"{100 * plan.total_steps / plan.steps_per_epoch:.1f}% of an epoch"
    return f"{plan.epochs} epoch{'s' if plan.epochs > 1 else ''}"


def per_rank(pattern: str, ranks: int, total: int) -> list[tuple[str, int]]:
    return [(pattern.format(rank=rank), total // ranks) for rank in range(ranks)]


def harness_table(report: BenchmarkReport) -> list[str]:
    """lm-evaluation-harness's model line and results table (its markdown format)."""
    rows = report.rows
    header = ["Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"]
    body = [
        [
            "" if r.task == previous else r.task,  # a task's second filter: its name once
            "" if r.task == previous else str(r.version),
            r.filter,
            str(r.shots),
            r.metric,
            "↑",
            f"{r.value:.4f}",
            "±",
            f"{r.stderr:.4f}",
        ]
        for previous, r in zip([None, *(row.task for row in rows)], rows, strict=False)
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    right = {1, 3, 6, 8}

    def fmt(row: list[str]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "|" + "|".join(cells) + "|"

    rule = (
        "|"
        + "|".join(("-" * (w - 1) + ":") if i in right else "-" * w for i, w in enumerate(widths))
        + "|"
    )
    model = (
        f"hf ({report.model_args}), gen_kwargs: (None), limit: None, num_fewshot: None, "
        "batch_size: auto"
    )
    return [model, fmt(header), rule, *(fmt(row) for row in body)]


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))
