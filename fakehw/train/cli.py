"""``fake-train``: plays an LLM training run on the fake cluster.

With no arguments: a pretraining run on 8 nodes x 8 H100 until Ctrl-C (or
until it ends, days later). The GPUs are the daemon's: the run attaches its
ranks there, so ``fake-nvidia-smi`` in another pane shows them working.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NoReturn

from fakehw import TYPE_CHECKING
from fakehw.contract.config import ClusterConfig
from fakehw.programs.argtypes import ascii_float, ascii_int
from fakehw.programs.signals import (
    EXIT_INTERRUPTED,
    Terminated,
    ignore_termination,
    raise_on_termination,
)
from fakehw.service.client import Client
from fakehw.service.protocol import FAULTS
from fakehw.specs import GpuSpec

if TYPE_CHECKING:
    from fakehw.train.plan import RunPlan
    from fakehw.train.recorder import Records
    from fakehw.train.styles.base import Style
    from fakehw.train.terminal import Terminal

EXIT_USAGE = 2
EXIT_FAILURE = 1
DEFAULT_NODES = 8
DEFAULT_GPUS_PER_NODE = 8
MAX_SPEED = 1000.0

DESCRIPTION = """\
Play a large-scale LLM training run that an ML engineer would believe: start-up
(launcher, NCCL, tokenizer, dataset, weights), training steps, validation,
checkpoints, failures and restarts, export and a benchmark table. The GPUs are
those of the fakehw daemon (started if none runs): the run attaches one real
process per local GPU, so fake-nvidia-smi, fake-nvitop and real clients show
the ranks, their memory, heat and power phase by phase.

Every figure is consistent with the others: tokens/s follows 6·N FLOPs per
token, the GPUs' peak, the model FLOPs utilisation and the current SM clocks;
the loss follows a Chinchilla-style curve; checkpoint sizes follow the
parameter count."""

EPILOG = """\
examples:
  fake-train                                  pretraining on 8 nodes x 8 H100 until Ctrl-C
  fake-train --style megatron --seed 7        Megatron-LM's iteration lines
  fake-train --task lora --model Qwen3-4B --gpus 8 --style hf
  fake-train --task sft --gpu-model a100-80gb --nodes 2 --speed-factor 20
  fake-train --exit-after-steps 200 --metrics-jsonl run.jsonl > train.log
  fake-train --style hf --task sft --output-dir runs/sft; fakehw plot runs/sft

Ctrl-C saves a checkpoint and ends the run; during a save, it lets that save
finish first. Ctrl-C again abandons the save (the last complete one is named).
A daemon already running keeps its cluster: without --gpus/--nodes/--gpu-model
the run uses it; `fakehw daemon stop` lets the next run start its own."""


class UsageError(Exception):
    pass


def _duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h30m``, ``2d`` -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text, re.ASCII):  # ASCII: '\d' takes '٩' too
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text, re.ASCII)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a duration (examples: 90, 90s, 5m, 1h30m)"
            )
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        seconds = sum(float(n) * scale[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return seconds


INJECTABLE = FAULTS  # what the daemon can inject, one list (fakehw.service.protocol)
# what the run does to itself: its loss diverges (the monitor rolls back to the last
# checkpoint), or stops falling (the monitor warns of no convergence)
TRAINING_FAULTS = ("loss-divergence", "loss-plateau")
# what the run does to one rank: a batch that does not fit (the batch-size manager
# halves the micro-batch, or switches recomputation on)
RANK_FAULTS = ("oom",)


def _injection(text: str) -> tuple[str, int, int]:
    """``thermal:3@200`` -> ("thermal", 3, 200)."""
    match = re.fullmatch(r"([a-z0-9-]+)(?::(\d+))?@(\d+)", text.strip(), re.ASCII)
    if not match or match.group(1) not in (*INJECTABLE, *RANK_FAULTS, *TRAINING_FAULTS):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FAULT[:GPU]@STEP with FAULT one of "
            f"{', '.join((*INJECTABLE, *RANK_FAULTS, *TRAINING_FAULTS))} (example: thermal:3@200)"
        )
    if match.group(1) in TRAINING_FAULTS and match.group(2) is not None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {match.group(1)} happens to the whole run, not to one GPU "
            f"(example: {match.group(1)}@600)"
        )
    return match.group(1), int(match.group(2) or 0), int(match.group(3))


def _whole(text: str, least: int) -> int:
    try:
        value = ascii_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(
            f"{value} must be at least 1" if least == 1 else f"{value} must be 0 or more"
        )
    return value


def _positive_int(text: str) -> int:
    return _whole(text, 1)


def _count(text: str) -> int:
    return _whole(text, 0)


def _seed(text: str) -> int:
    try:
        value = ascii_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError("the seed must be between 0 and 4294967295")
    return value


def _speed(text: str) -> float:
    try:
        value = ascii_float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 < value <= MAX_SPEED) or math.isnan(value):
        raise argparse.ArgumentTypeError(f"the speed factor must be in (0, {MAX_SPEED:g}]")
    return value


def build_parser() -> argparse.ArgumentParser:
    from fakehw.train.catalog import TASKS
    from fakehw.train.styles import STYLES

    parser = argparse.ArgumentParser(
        prog="fake-train",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run = parser.add_argument_group("what to train")
    run.add_argument(
        "--task", choices=TASKS, default="pretrain", help="pretrain (default), sft, dpo or lora"
    )
    run.add_argument(
        "--model",
        metavar="NAME",
        help="a model of --list-models (default: one that suits the cluster, chosen by --seed)",
    )
    run.add_argument(
        "--dataset",
        metavar="NAME",
        help="a dataset of --list-datasets (default: a general English one that suits the "
        "task, chosen by --seed)",
    )
    run.add_argument(
        "--mixture",
        metavar="NAME:WEIGHT,...",
        help="train on several datasets blended by weight, e.g. pretraining on "
        "fineweb-edu:0.7,starcoderdata:0.2,open-web-math:0.1 or an SFT on "
        "OpenHermes-2.5:2,ultrachat_200k:1,OpenR1-Math-220k:1 (weights are normalised); "
        "every sequence comes from one source, and the log, metrics and report give each "
        "source's samples and training and validation losses, which add up to the run's",
    )
    run.add_argument(
        "--precision",
        choices=("bf16", "fp16"),
        default="bf16",
        help="mixed precision; fp16 shows loss scaling and overflows (default: bf16)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="play a run resumed from a checkpoint part-way through (with --output-dir: "
        "from the newest checkpoint there)",
    )
    run.add_argument(
        "--quantize",
        choices=("int8", "int4", "gptq"),
        help="also quantize the exported model at the end; the benchmarks then score the "
        "quantized copy beside it",
    )
    run.add_argument(
        "--probe-every",
        type=_count,
        metavar="STEPS",
        help="probe the model every STEPS steps on a held-out batch: output entropy, top-1/5 "
        "accuracy, confidence, the true token's probability, and the first, middle and last "
        "layers' cosine similarity and participation ratio; with a report of per-layer "
        "gradient norms and clipping (default: at each validation in the default style, "
        "none in the framework styles, whose stock trainers have no probe; 0: none)",
    )
    run.add_argument(
        "--early-stopping",
        type=_positive_int,
        metavar="PATIENCE",
        help="stop when the validation loss has not improved for PATIENCE evaluations and "
        "load the best checkpoint back (HF's EarlyStoppingCallback with "
        "load_best_model_at_end: a checkpoint at every evaluation); the final evaluation, "
        "export and benchmarks are of that best model",
    )
    where = parser.add_argument_group("where it runs")
    where.add_argument(
        "--gpus",
        type=_positive_int,
        metavar="N",
        help="total GPUs (default 64; up to 8 fit on one node)",
    )
    where.add_argument(
        "--nodes", type=_positive_int, metavar="N", help=f"nodes (default {DEFAULT_NODES})"
    )
    where.add_argument(
        "--gpu-model",
        metavar="MODEL",
        help="GPU model: a name or alias of `fakehw models` (default: h100)",
    )
    show = parser.add_argument_group("how it shows")
    show.add_argument(
        "--style",
        choices=sorted(STYLES),
        default="default",
        help="log style (default: fake-train's own; see --list-styles)",
    )
    show.add_argument(
        "--seed",
        type=_seed,
        help="makes the run repeatable (default: random, printed at the start)",
    )
    show.add_argument(
        "--speed-factor",
        type=_speed,
        default=1.0,
        metavar="X",
        help="play X times faster than real time (default 1)",
    )
    show.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colours: on a terminal only (auto, default), always, never",
    )
    stop = parser.add_argument_group("when it stops")
    stop.add_argument(
        "--exit-after-time",
        type=_duration,
        metavar="DURATION",
        help="end after this much real time (90, 90s, 5m, 1h30m)",
    )
    stop.add_argument(
        "--exit-after-steps", type=_positive_int, metavar="N", help="end after N training steps"
    )
    stop.add_argument(
        "--inject",
        type=_injection,
        action="append",
        default=[],
        metavar="FAULT[:GPU]@STEP",
        help="make a GPU misbehave at a step: thermal, power-brake, ecc, ecc-uncorrectable, "
        "xid79, rank-crash (GPU = rank, default 0); or the training itself: "
        "loss-divergence@STEP (the monitor finds it and rolls back to the last checkpoint, "
        "skipping the data after it), loss-plateau@STEP (the loss stops falling; the monitor "
        "warns of no convergence), oom[:GPU]@STEP (a batch that does not fit: the "
        "batch-size manager catches the CUDA OOM, halves the micro-batch and doubles "
        "gradient accumulation, or turns activation checkpointing on); may be given more "
        "than once, e.g. "
        "--inject thermal:3@200 --inject rank-crash:1@500",
    )
    writes = parser.add_argument_group("what it writes")
    writes.add_argument(
        "--metrics-jsonl",
        metavar="PATH",
        help="write every logged step, eval and checkpoint as JSON lines",
    )
    writes.add_argument(
        "--output-dir",
        metavar="DIR",
        help="really write what the run leaves, as the style's framework lays it out: "
        "TensorBoard event files, one log per rank, checkpoint directories (weights as "
        "sparse files), metrics.jsonl and run.json (default: [train] output_dir of the "
        "config file; none: write nothing)",
    )
    info = parser.add_argument_group("information")
    info.add_argument("--list-models", action="store_true", help="list the models and exit")
    info.add_argument(
        "--list-datasets", action="store_true", help="list the datasets (for --dataset, --mixture)"
    )
    info.add_argument("--list-styles", action="store_true", help="list the log styles and exit")
    return parser


# ------------------------------------------------------------- listings
def list_models() -> str:
    from tabulate import tabulate

    from fakehw.train.catalog import MODELS

    rows = []
    for entry in MODELS:
        arch = entry.arch
        moe = f"{arch.experts} experts, top-{arch.top_k}" if arch.is_moe else ""
        rows.append(
            [
                entry.name,
                f"{arch.params / 1e9:.2f}B",
                f"{arch.active_params / 1e9:.2f}B" if arch.is_moe else "",
                arch.layers,
                arch.hidden,
                f"{arch.heads}/{arch.kv_heads}",
                moe,
                "real" if entry.real else f"parody of {entry.parody_of}",
            ]
        )
    headers = ["model", "params", "active", "layers", "hidden", "heads/kv", "MoE", "name"]
    table: str = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    return table


def list_datasets() -> str:
    from tabulate import tabulate

    from fakehw.train.catalog import DATASETS, TRAINS_ON
    from fakehw.train.styles.base import si

    rows = [
        [
            d.name,
            d.kind,
            ", ".join(t for t, kinds in TRAINS_ON.items() if d.kind in kinds),
            si(d.tokens),
            f"{d.samples:,}",
            d.language,
            d.domain,
            f"{d.loss_factor:.2f}",
            "real" if d.real else "parody",
        ]
        for d in DATASETS
    ]
    headers = ["dataset", "kind", "tasks", "tokens", "samples", "lang", "domain", "loss x", "name"]
    table: str = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    return table + (
        "\n\nloss x: the loss on its tokens relative to the reference data of its kind (web "
        "text, English chat)"
    )


def list_styles() -> str:
    from fakehw.train.styles import STYLES

    width = max(len(name) for name in STYLES)
    return "\n".join(f"{name:<{width}}  {style.description}" for name, style in STYLES.items())


# ------------------------------------------------------------- the cluster
def _shape(args: argparse.Namespace, per_node_default: int) -> tuple[int, int]:
    """(nodes, GPUs per node) from --gpus and --nodes."""
    if args.gpus is None:
        nodes = args.nodes or DEFAULT_NODES
        return nodes, per_node_default
    if args.nodes is None:
        if args.gpus <= per_node_default:
            return 1, args.gpus
        if args.gpus % per_node_default:
            raise UsageError(
                f"--gpus {args.gpus} is not a whole number of {per_node_default}-GPU nodes; "
                f"give --nodes too (e.g. --gpus {args.gpus} --nodes N)"
            )
        return args.gpus // per_node_default, per_node_default
    if args.gpus % args.nodes:
        raise UsageError(f"--gpus {args.gpus} cannot be split evenly over --nodes {args.nodes}")
    per_node = args.gpus // args.nodes
    if per_node > 16:
        raise UsageError(f"{per_node} GPUs per node is more than a node holds (16); add --nodes")
    return args.nodes, per_node


def check_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """fake-train's arguments as it would parse them, for programs that start it
    (``fakehw demo``): a value it would refuse raises UsageError here, up front."""
    from fakehw.train.catalog import UnknownModel, find_model

    parser = build_parser()

    def refuse(message: str) -> NoReturn:
        raise UsageError(message)

    parser.error = refuse  # type: ignore[method-assign]
    args = parser.parse_args(list(argv))
    if args.model is not None:
        try:
            find_model(args.model)
        except UnknownModel as exc:
            raise UsageError(str(exc)) from None
    return args


def connect(
    args: argparse.Namespace, notify: Callable[[str], None]
) -> tuple[Client, GpuSpec, int, int]:
    """Connect to the daemon (starting one with the wanted cluster); returns
    (client, GPU spec, nodes, GPUs per node) of the cluster the run will use.

    A daemon that already runs keeps its cluster. When it cannot hold what was
    asked for explicitly, that is an error; when nothing was asked for, the run
    adopts its cluster, so the viewers and the log always agree.
    """
    from fakehw.contract.config import ConfigError, load_settings
    from fakehw.service.client import Client, DaemonUnavailable
    from fakehw.specs import UnknownGpuModel, lookup

    try:
        defaults, _ = load_settings()
    except ConfigError as exc:  # the file is wrong, not the command line
        raise RuntimeError(str(exc)) from None
    try:
        spec = lookup(args.gpu_model) if args.gpu_model else None
    except UnknownGpuModel as exc:
        raise UsageError(str(exc)) from None
    explicit = args.gpus is not None or args.nodes is not None or args.gpu_model is not None
    nodes, per_node = _shape(args, DEFAULT_GPUS_PER_NODE)
    try:
        wanted = replace(
            defaults,
            gpu_model=spec.key if spec else defaults.gpu_model,
            nodes=nodes,
            gpus_per_node=per_node,
        ).validated()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if os.environ.get("FAKEHW_REMOTE", "").strip():
        raise RuntimeError(
            "FAKEHW_REMOTE is set, but a daemon reached over TCP only serves views; fake-train "
            "attaches its ranks to a local daemon: unset FAKEHW_REMOTE"
        )
    try:
        client = Client.connect(client_name="fake-train", cluster=wanted)
    except DaemonUnavailable as exc:
        raise RuntimeError(f"cannot reach the fakehw daemon: {exc}") from None
    have = ClusterConfig.from_json(client.hello["cluster"])
    fits = (
        have.gpu_model == wanted.gpu_model
        and have.gpus_per_node == wanted.gpus_per_node
        and have.total_gpus >= wanted.total_gpus
    )
    if not fits and explicit:
        status = client.request("status")
        users = len(status["processes"]), status["clients"] - 1
        if users != (0, 0):
            client.close()
            raise UsageError(
                f"the running fakehw daemon simulates {have.describe()}, not "
                f"{wanted.describe()}, and is in use ({users[0]} GPU processes, {users[1]} "
                "other clients); stop it first (`fakehw daemon stop`) or drop "
                "--gpus/--nodes/--gpu-model to train on its GPUs"
            )
        # Nobody uses it: replace it with a daemon of the cluster asked for.
        client = _restart_daemon(client, wanted)
        notify(f"restarted the idle fakehw daemon ({have.describe()}) as {wanted.describe()}")
        have = ClusterConfig.from_json(client.hello["cluster"])
    elif not fits:
        notify(
            f"using the running daemon's cluster, {have.describe()} "
            f"(`fakehw daemon stop` first for {wanted.describe()})"
        )
        nodes, per_node = have.nodes, have.gpus_per_node
    return client, have.spec, nodes, per_node


def _restart_daemon(client: Client, cluster: ClusterConfig) -> Client:
    from fakehw.service.client import DaemonUnavailable

    paths = client.paths
    client.request("shutdown")
    client.close()
    deadline = time.monotonic() + 10
    while os.path.exists(paths.socket) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        return Client.connect(client_name="fake-train", cluster=cluster)
    except DaemonUnavailable as exc:
        raise RuntimeError(f"cannot restart the fakehw daemon: {exc}") from None


# ------------------------------------------------------------------- main
def closed_output() -> int | None:
    """``fake-train >&-``: with standard output or error closed there is no log or
    no way to report an error (and the next file opened would take its place).
    Says so where it still can and returns the exit code; None when both are open."""
    closed = [
        name
        for name, stream in (("standard output", sys.stdout), ("standard error", sys.stderr))
        if stream is None
    ]
    if not closed:
        return None
    what = " and ".join(closed)
    verb = "are" if len(closed) > 1 else "is"
    message = (
        f"fake-train: {what} {verb} closed: redirect it to a file or /dev/null instead "
        "(nothing was started)"
    )
    print(message, file=sys.stderr or sys.stdout)
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    refused = closed_output()
    if refused is not None:
        return refused
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_models:
        print(list_models())
        return 0
    if args.list_styles:
        print(list_styles())
        return 0
    if args.list_datasets:
        print(list_datasets())
        return 0
    raise_on_termination()  # SIGTERM, or SIGHUP when its terminal goes away (a pane closed)
    try:
        return run(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"fake-train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Terminated) as exc:
        # Before the run started (or a second Ctrl-C while saving): just leave.
        return exc.exit_code if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except (RuntimeError, OSError) as exc:
        print(f"fake-train: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def output_dir_of(args: argparse.Namespace) -> str:
    """--output-dir, else the config file's ``[train] output_dir`` ("" for none)."""
    from fakehw.contract.config import ConfigError, load_train_settings

    if args.output_dir is not None:
        if not args.output_dir.strip():
            raise UsageError("--output-dir needs a directory")
        return str(args.output_dir)
    try:
        return load_train_settings().output_dir
    except ConfigError as exc:  # the file is wrong, not the command line
        raise RuntimeError(str(exc)) from None


def open_records(
    args: argparse.Namespace, output_dir: str, plan: RunPlan, style: Style, term: Terminal
) -> Records:
    """Who keeps the run's records: --metrics-jsonl's writer, --output-dir's files. With
    an output directory, the plan's save directory becomes its real one."""
    from fakehw.train.metrics import MetricsWriter
    from fakehw.train.output import rundir
    from fakehw.train.output.report import REPORT_FILE
    from fakehw.train.recorder import Recorder, Records

    kept: list[Recorder] = []
    try:
        if args.metrics_jsonl:
            try:
                kept.append(MetricsWriter(args.metrics_jsonl))
            except OSError as exc:
                raise UsageError(f"--metrics-jsonl {args.metrics_jsonl}: {exc.strerror}") from None
        if output_dir:
            try:
                root = rundir.prepare(output_dir, args.resume)
                layout = rundir.layout_for(plan, root, style.checkpoint_dir)
                found = rundir.resume_point(plan, layout) if args.resume else None
            except rundir.OutputDirError as exc:
                raise UsageError(str(exc)) from None
            if found is not None:  # go on from the newest checkpoint there
                plan.start_step = found
            plan.save_dir = str(layout.checkpoints)  # the log names the real directories
            plan.tensorboard_dir = layout.tensorboard_arg()
            plan.report_path = str(layout.root / REPORT_FILE)

            def notify(text: str) -> None:
                term.line(term.paint(f"fake-train: {text}", "yellow"))

            kept += rundir.recorders(layout, notify, resume=args.resume)
    except BaseException:
        Records(kept).close()
        raise
    return Records(kept)


def probe_every_of(args: argparse.Namespace, plan: RunPlan, style: Style) -> int:
    """Steps between model probes: --probe-every, else each validation where the style's
    framework probes (fake-train's own), else none."""
    if plan.task == "dpo":
        if args.probe_every:
            raise UsageError(
                "--probe-every measures next-token predictions; a DPO run's loss is a "
                "preference loss (drop --probe-every or use another --task)"
            )
        return 0
    if args.probe_every is not None:
        return int(args.probe_every)
    return plan.eval_every if style.probes_by_default else 0


def run(args: argparse.Namespace) -> int:
    from fakehw.train.catalog import UnknownModel
    from fakehw.train.checkpoints import SaveAbandoned
    from fakehw.train.engine import Engine, Options
    from fakehw.train.events import JobFailed
    from fakehw.train.output import rundir
    from fakehw.train.plan import PlanError, make_plan
    from fakehw.train.styles import STYLES
    from fakehw.train.terminal import Terminal
    from fakehw.train.world import World, WorldError

    output_dir = output_dir_of(args)
    if output_dir:
        try:
            rundir.check(output_dir, args.resume)
        except rundir.OutputDirError as exc:
            raise UsageError(str(exc)) from None
    color = {"always": True, "never": False}.get(args.color)
    term = Terminal(color=color)
    notices: list[str] = []
    client, spec, nodes, per_node = connect(args, notices.append)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    try:
        plan = make_plan(
            seed=seed,
            task=args.task,
            style=args.style,
            gpu=spec,
            nodes=nodes,
            gpus_per_node=per_node,
            model=args.model,
            dataset=args.dataset,
            precision=args.precision,
            resume=args.resume,
            early_stopping=args.early_stopping or 0,
            mixture=args.mixture,
        )
    except (UnknownModel, PlanError) as exc:
        client.close()
        raise UsageError(str(exc)) from None
    bad = [gpu for _, gpu, _ in args.inject if gpu >= plan.gpus]
    if bad:
        client.close()
        raise UsageError(f"--inject names GPU {bad[0]}; the job has GPUs 0-{plan.gpus - 1}")
    style = STYLES[args.style](term, plan)
    try:
        plan.probe_every = probe_every_of(args, plan, style)
    except UsageError:
        client.close()
        raise
    try:
        records = open_records(args, output_dir, plan, style, term)
    except UsageError:
        client.close()
        raise
    world = World(plan, client, list(client.hello["hostnames"]))
    options = Options(
        speed=args.speed_factor,
        injections=tuple(args.inject),
        exit_after_steps=args.exit_after_steps,
        exit_after_time=args.exit_after_time,
        quantize=args.quantize,
    )
    engine = Engine(plan, world, style, records, options)
    code = 0
    try:
        for notice in notices:
            term.line(term.paint(f"fake-train: {notice}", "yellow"))
        try:
            engine.run()
        except SaveAbandoned:  # Ctrl-C twice during a save: it said what was lost
            code = EXIT_INTERRUPTED
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
            engine.interrupted()
        except Terminated as exc:
            code = exc.exit_code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED  # Ctrl-C again while saving (abandoned), or while ending
    except Terminated as exc:
        code = exc.exit_code
    except WorldError as exc:
        term.clear_status()
        print(f"fake-train: {exc}", file=sys.stderr)
        records.failed([f"fake-train: {exc}"], engine.clock.now())
        code = EXIT_FAILURE
    except JobFailed as exc:
        term.clear_status()
        term.lines([term.paint(line, "red") for line in exc.lines])
        records.failed(exc.lines, engine.clock.now())
        code = EXIT_FAILURE
    finally:
        # Whatever happened, the ranks leave the GPUs and the terminal is restored.
        # Each step runs even if one before it fails (a vanished terminal gives EIO).
        ignore_termination()
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(records.close)
            cleanup.callback(world.close)
            cleanup.callback(term.close)
    return code


if __name__ == "__main__":
    sys.exit(main())
