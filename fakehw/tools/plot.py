"""``fakehw plot RUN``: a training run's curves as one PNG.

RUN is what a run left: an ``--output-dir`` (its ``metrics.jsonl``), a
``--metrics-jsonl`` file, or a TensorBoard directory (event files of any fake-train
style, or of anything that writes the same tags). Nine panels against the step:
the loss (raw and smoothed, the evaluations on it), perplexity, learning rate,
gradient norm, tokens/s, MFU, the validation loss, and the GPUs' power and
temperature (mean and hottest) as the daemon reported them during the run. A panel
whose figures the run did not record says so instead of a curve.

matplotlib is an optional extra (``pip install 'fakehw[plot]'``); reading a run
needs nothing but the standard library and, for event files, tensorboardX's
protobuf classes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from fakehw import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SMOOTHING = 0.6  # TensorBoard's slider at its default: a debiased exponential moving average
Series = tuple[list[float], list[float]]  # (steps, values)


class PlotError(Exception):
    """RUN cannot be plotted; the message says why."""


@dataclass
class Curves:
    source: str
    series: dict[str, Series] = field(default_factory=dict)
    # the loss the run's framework logs: each logged step's own (fake-train's style), or
    # the mean over the logging interval (HF Trainer, Megatron, DeepSpeed)
    loss_key: str = "loss"

    def add(self, name: str, step: float, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            return
        steps, values = self.series.setdefault(name, ([], []))
        steps.append(step)
        values.append(value)


# ------------------------------------------------------------------ reading
JSONL_STEP = {"ppl": "ppl", "lr": "lr", "grad_norm": "grad_norm",
              "tokens_per_s": "tokens_per_s", "mfu": "mfu"}  # fmt: skip
JSONL_GPUS = {"power_w": "power_w", "power_w_max": "power_w_max", "temp_c": "temp_c",
              "temp_c_max": "temp_c_max"}  # fmt: skip
# TensorBoard tags of each framework (fakehw.train.output.layouts) -> series
TAGS = {
    "train/loss": "loss", "lm loss": "loss",
    "train/ppl": "ppl",
    "train/learning_rate": "lr", "learning-rate": "lr",
    "train/grad_norm": "grad_norm", "grad-norm": "grad_norm",
    "train/tokens_per_s": "tokens_per_s",
    "train/mfu": "mfu",
    "eval/loss": "eval_loss", "lm loss validation": "eval_loss",
    "gpu/power_w": "power_w", "gpu/power_w_max": "power_w_max",
    "gpu/temp_c": "temp_c", "gpu/temp_c_max": "temp_c_max",
}  # fmt: skip


def read_run(path: Path) -> Curves:
    if path.is_file():
        return read_jsonl(path)
    if not path.is_dir():
        raise PlotError(f"{path}: no such file or directory")
    metrics = path / "metrics.jsonl"
    if metrics.is_file():
        info = run_info(path)
        averaged = info is not None and info.get("style") not in (None, "default")
        curves = read_jsonl(metrics, "interval_loss" if averaged else "loss")
        curves.source = run_title(info) or curves.source
        return curves
    events = sorted(path.rglob("events.out.tfevents.*"))
    if events:
        return read_events(events, str(path))
    raise PlotError(
        f"{path}: neither a run's output directory (metrics.jsonl) nor a TensorBoard "
        "directory (events.out.tfevents.*)"
    )


def run_info(directory: Path) -> dict[str, object] | None:
    """An output directory's run.json, if it has a readable one."""
    try:
        info = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def run_title(info: dict[str, object] | None) -> str | None:
    """``run name (model, task, style)`` from a run.json."""
    try:
        config = info["config"]  # type: ignore[index]
        return f"{info['run_name']} ({config['model']}, {config['task']}, {info['style']} style)"  # type: ignore[index]
    except (KeyError, TypeError):
        return None


def read_jsonl(path: Path, loss_key: str = "loss") -> Curves:
    """A metrics JSONL; ``loss_key``: which loss of a step record the loss curve draws."""
    curves = Curves(str(path), loss_key=loss_key)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlotError(f"{path}: cannot read it ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = float(record["step"])
        except (ValueError, KeyError, TypeError):
            raise PlotError(f"{path}:{number}: not a fake-train metrics line") from None
        event = record.get("event")
        if event is None:
            for key, name in JSONL_STEP.items():
                curves.add(name, step, _number(record.get(key)))
            curves.add("loss", step, _number(record.get(loss_key, record.get("loss"))))
        elif event == "eval":
            series = "final_eval_loss" if record.get("final") else "eval_loss"
            curves.add(series, step, _number(record.get("loss")))
        elif event == "gpus":
            for key, name in JSONL_GPUS.items():
                curves.add(name, step, _number(record.get(key)))
    if not curves.series:
        raise PlotError(f"{path}: no steps in it")
    return curves


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_events(files: list[Path], source: str) -> Curves:
    """Scalars of TensorBoard event files (TFRecord framing: length, its CRC, the
    serialized ``Event``, its CRC), decoded with tensorboardX's protobuf classes."""
    from tensorboardX.proto import event_pb2

    curves = Curves(source)
    for file in files:
        data = file.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            body = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            if len(body) < length:
                break  # a record still being written
            event = event_pb2.Event.FromString(body)
            for value in event.summary.value:
                name = TAGS.get(value.tag)
                if name is not None and value.HasField("simple_value"):
                    curves.add(name, float(event.step), value.simple_value)
    if not curves.series:
        raise PlotError(f"{source}: its event files hold none of the tags fakehw plots")
    return curves


# ----------------------------------------------------------------- drawing
def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start."""
    out, last = [], 0.0
    for count, value in enumerate(values, 1):
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**count))
    return out


PANELS = [  # (title, series, y label)
    ("loss", ("loss",), "loss"),
    ("perplexity", ("ppl",), "exp(loss)"),
    ("learning rate", ("lr",), "lr"),
    ("gradient norm", ("grad_norm",), "norm"),
    ("tokens/s", ("tokens_per_s",), "tokens/s"),
    ("MFU", ("mfu",), "share of peak"),
    ("validation loss", ("eval_loss",), "loss"),
    ("GPU power", ("power_w", "power_w_max"), "W"),
    ("GPU temperature", ("temp_c", "temp_c_max"), "°C"),
]
LABELS = {"power_w": "mean", "power_w_max": "highest", "temp_c": "mean", "temp_c_max": "hottest"}


def figure(curves: Curves) -> Figure:
    from matplotlib.figure import Figure

    # a fixed layout: the constrained engine doubles the drawing time for the same look
    fig = Figure(figsize=(15, 11))
    fig.subplots_adjust(left=0.06, right=0.985, top=0.93, bottom=0.05, hspace=0.38, wspace=0.24)
    fig.suptitle(f"fake-train run: {curves.source}")
    axes = fig.subplots(3, 3).flatten()
    for ax, (title, names, unit) in zip(axes, PANELS, strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        present = [name for name in names if name in curves.series]
        if not present:
            ax.text(0.5, 0.5, "not recorded by this run", ha="center", va="center",
                    transform=ax.transAxes, color="gray")  # fmt: skip
            continue
        for name in present:
            steps, values = curves.series[name]
            if name == "loss":
                ax.plot(steps, values, color="tab:blue", alpha=0.3, label="raw")
                ax.plot(steps, smoothed(values), color="tab:blue", label="smoothed")
                if "eval_loss" in curves.series:
                    ax.plot(*curves.series["eval_loss"], "o", color="tab:red", label="eval")
                ax.legend()
            elif name == "eval_loss":
                ax.plot(steps, values, "o-", color="tab:red", label="during training")
                if "final_eval_loss" in curves.series:
                    ax.plot(*curves.series["final_eval_loss"], "D", color="black",
                            label="final")  # fmt: skip
                    ax.legend()
            else:
                ax.plot(steps, values, label=LABELS.get(name))
        if title in ("GPU power", "GPU temperature"):
            ax.legend()
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return fig


def plot(run: Path, output: Path) -> Figure:
    """Draw RUN's curves into ``output`` (a PNG); returns the figure drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError(
            "plotting needs matplotlib, an optional extra: pip install 'fakehw[plot]'"
        ) from None
    curves = read_run(run)
    fig = figure(curves)
    try:
        fig.savefig(output, dpi=100)
    except OSError as exc:
        raise PlotError(f"cannot write {output}: {exc.strerror}") from None
    return fig
