"""``report.md``: the training report a run leaves in its output directory.

When the run ends it has everything: the figures at the start and the end, the
evaluations, the monitor's findings (``fakehw.train.anomalies``) in the words the log
used, the probes, clipping, and the curves, drawn by ``fakehw plot`` into
``curves.png`` beside it (in a process of its own: drawing needs matplotlib, an
optional extra that the training log does not load). Every number in it is one the
log printed or the metrics file holds.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from fakehw.train.events import (
    BenchmarkReport,
    EarlyStop,
    EvalResult,
    GradientReport,
    Incident,
    ProbeResult,
    QuantizeResult,
    StepMetrics,
    Summary,
)
from fakehw.train.output.files import FileWriter
from fakehw.train.output.layouts.base import Layout
from fakehw.train.recorder import Recorder
from fakehw.train.styles.base import (
    clock,
    duration,
    incident_text,
    outcome_words,
    si,
    size,
)

PLOT_TIMEOUT_S = 120.0
REPORT_FILE = "report.md"  # in the output directory


class ReportWriter(Recorder):
    def __init__(self, layout: Layout, files: FileWriter) -> None:
        self.layout = layout
        self.plan = layout.plan
        self.files = files
        self.first: StepMetrics | None = None
        self.last: StepMetrics | None = None
        self.logged = 0
        self.mfu_sum = 0.0
        self.evals: list[EvalResult] = []
        self.findings: list[Incident] = []
        self.probe_seen: ProbeResult | None = None
        self.first_probe: ProbeResult | None = None
        self.gradients_seen: GradientReport | None = None
        self.stopped: EarlyStop | None = None
        self.scored: list[BenchmarkReport] = []
        self.quantization: QuantizeResult | None = None

    # ------------------------------------------------------------ records
    def step(self, m: StepMetrics) -> None:
        if self.first is None:
            self.first = m
        self.last = m
        self.logged += 1
        self.mfu_sum += m.mfu

    def eval(self, r: EvalResult) -> None:
        self.evals.append(r)

    def incident(self, i: Incident) -> None:
        self.findings.append(i)

    def probe(self, p: ProbeResult) -> None:
        self.first_probe = self.first_probe or p
        self.probe_seen = p

    def gradients(self, g: GradientReport) -> None:
        self.gradients_seen = g

    def early_stop(self, e: EarlyStop) -> None:
        self.stopped = e

    def quantized(self, q: QuantizeResult) -> None:
        self.quantization = q

    def benchmarks(self, b: BenchmarkReport) -> None:
        self.scored.append(b)

    def finished(self, s: Summary) -> None:
        root = self.layout.root
        curves = self.draw_curves(root)
        self.files.write_text(root / REPORT_FILE, self.render(s, curves))

    # ------------------------------------------------------------ drawing
    def draw_curves(self, root: Path) -> str:
        """``fakehw plot`` into ``curves.png``; "" when drawn, else why not."""
        if importlib.util.find_spec("matplotlib") is None:
            return (
                f"not drawn: plotting needs matplotlib (`pip install 'fakehw[plot]'`, then "
                f"`fakehw plot {root}`)"
            )
        command = [sys.executable, "-m", "fakehw", "plot", str(root),
                   "--output", str(root / "curves.png")]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=PLOT_TIMEOUT_S, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"not drawn: `fakehw plot` failed ({exc})"
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return f"not drawn: `fakehw plot` failed ({why})"
        return ""

    # ------------------------------------------------------------ writing
    def render(self, s: Summary, curves: str) -> str:
        plan = self.plan
        outcome = outcome_words(s)
        lines = [
            f"# Training report: {plan.run_name}",
            "",
            f"{plan.model.name} ({plan.model.size_label} parameters) · {plan.task} on "
            f"{plan.dataset.name} · {plan.gpus} x {plan.gpu.name} ({plan.nodes} node"
            f"{'s' if plan.nodes > 1 else ''}) · {plan.style} style · seed {plan.seed} · "
            f"{outcome}",
            "",
            "![the run's curves](curves.png)" if not curves else f"Curves: {curves}.",
            "",
            "## Summary",
            "",
            "| | |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in self.summary_rows(s)),
            "",
            *self.mixture_lines(),
            *self.benchmark_lines(),
            "## Findings",
            "",
            *self.finding_lines(),
            "",
            "## Assessment",
            "",
            *(f"- {line}" for line in self.assessment(s)),
            "",
        ]
        return "\n".join(lines)

    def summary_rows(self, s: Summary) -> list[tuple[str, str]]:
        plan = self.plan
        rows = [
            ("steps", f"{s.steps:,} of {s.total_steps:,} ({s.steps_run:,} trained by this run)"),
            ("tokens", f"{si(s.tokens, 2)} ({plan.tokens_per_step:,} per step)"),
            ("time", f"{duration(s.wall_s)} in all, {duration(s.train_s)} training"),
        ]
        if self.first is not None and self.last is not None:
            rows.append((
                "training loss",
                f"{self.first.loss:.4f} at step {self.first.step:,} → {self.last.loss:.4f} at "
                f"step {self.last.step:,}"
                + (f" (mean over the run {s.mean_loss:.4f})" if s.mean_loss is not None else ""),
            ))  # fmt: skip
            trained = s.steps_run * plan.trained_tokens_per_step
            rows.append((
                "throughput",
                f"{si(trained / max(s.train_s, 1e-9))} tokens/s over the training time "
                f"(validations and saves included); MFU {100 * self.mfu_sum / self.logged:.1f}% "
                f"(mean of the {self.logged:,} logged steps)",
            ))  # fmt: skip
        during = [r for r in self.evals if not r.final]
        final = [r for r in self.evals if r.final]
        if during:
            best = min(during, key=lambda r: r.loss)
            text = (
                f"{during[0].loss:.4f} at step {during[0].step:,} → {during[-1].loss:.4f} at "
                f"step {during[-1].step:,}; lowest during training {best.loss:.4f} at step "
                f"{best.step:,}"
            )
            if final:
                text += f"; final evaluation {final[-1].loss:.4f}"
            rows.append(("validation loss", text))
        if self.stopped is not None:
            rows.append((
                "early stopping",
                f"at step {self.stopped.step:,} after {self.stopped.patience} evaluations "
                f"without improvement; best model loaded back from {self.stopped.best_path}",
            ))  # fmt: skip
        if s.steps_run:
            rows.append((
                "gradient clipping",
                f"{s.clipped_steps:,} of the {s.steps_run:,} steps trained above max norm "
                f"{plan.grad_clip:.1f} ({100 * s.clipped_steps / s.steps_run:.1f}%)",
            ))  # fmt: skip
        if self.probe_seen is not None:
            p = self.probe_seen
            rows.append((
                "last probe",
                f"step {p.step:,}: entropy {p.entropy:.3f} nats, top-1 {100 * p.top1_acc:.1f}%, "
                f"top-5 {100 * p.top5_acc:.1f}%, p(true) {p.p_true_mean:.3f}",
            ))  # fmt: skip
        rows.append(("checkpoints", f"`{plan.save_dir}`"))
        return rows

    def mixture_lines(self) -> list[str]:
        """--mixture: per source, what the run took from it and its last losses; the
        total row is the run's own figures, which the sources add up to."""
        plan, last = self.plan, self.last
        if plan.mixture is None or last is None or not last.sources:
            return []
        final = [r for r in self.evals if r.sources]
        val = final[-1] if final else None
        tokens = last.samples_seen * plan.seq
        lines = [
            "## Mixture",
            "",
            f"Samples trained to step {last.step:,}, losses of the logging interval that ends "
            "there" + (f" and of the evaluation at step {val.step:,}." if val else "."),
            "",
            "| source | weight | samples | share | passes | train loss | val loss |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        sources = zip(plan.mixture.sources, last.sources, last.sources_seen, strict=True)
        for i, (source, measured, seen) in enumerate(sources):
            passes = seen * plan.seq / source.dataset.tokens
            val_loss = f"{val.sources[i].loss:.4f}" if val else ""
            lines.append(
                f"| {source.name} | {source.weight:.3f} | {seen:,} | "
                f"{100 * seen / last.samples_seen:.1f}% | {passes:.3g} | {measured.loss:.4f} | "
                f"{val_loss} |"
            )
        lines += [
            f"| all | 1.000 | {last.samples_seen:,} | 100.0% | {tokens / plan.dataset.tokens:.3g}"
            f" | {last.interval_loss:.4f} | {f'{val.loss:.4f}' if val else ''} |",
            "",
        ]
        return lines

    def benchmark_lines(self) -> list[str]:
        """lm-eval-harness's scores of the exported model and of its quantized copy,
        side by side, with what quantizing cost."""
        if not self.scored:
            return []
        exported, *copies = self.scored
        lines = ["## Benchmarks", ""]
        q = self.quantization
        if q is not None:
            lines += [
                f"{q.label}: validation loss {q.val_loss_before:.4f} → {q.val_loss_after:.4f} "
                f"({q.val_loss_after - q.val_loss_before:+.4f}), {size(q.bytes_before)} → "
                f"{size(q.bytes_after)}.",
                "",
            ]
        head = ["task", "filter", "metric", "n-shot", exported.model]
        for copy in copies:
            head += [copy.model, "change"]
        lines += ["| " + " | ".join(head) + " |", "|---|---|---|--:|" + "--:|" * (len(head) - 4)]
        for i, row in enumerate(exported.rows):
            cells = [row.task, row.filter, row.metric, str(row.shots), f"{row.value:.4f}"]
            for copy in copies:
                value = copy.rows[i].value
                cells += [f"{value:.4f}", f"{100 * (value - row.value):+.2f} pts"]
            lines.append("| " + " | ".join(cells) + " |")
        return [*lines, ""]

    def finding_lines(self) -> list[str]:
        found = [i for i in self.findings if i.kind != "recovered"]
        if not found:
            return [
                "The monitor found nothing: no loss spike, gradient explosion, divergence, "
                "plateau or slow rank."
            ]
        return [
            f"- step {i.step:,} ({clock(i.time)}): {incident_text(i, self.plan.grad_clip)[1]}"
            for i in self.findings
        ]

    def assessment(self, s: Summary) -> list[str]:
        kinds = {i.kind for i in self.findings}
        said: list[str] = []
        if self.first is not None and self.last is not None and self.first.loss > 0:
            fall = 100 * (1 - self.last.loss / self.first.loss)
            said.append(
                f"The training loss fell {fall:.1f}% between the first and the last logged "
                f"step ({self.first.loss:.4f} → {self.last.loss:.4f})."
                if fall > 0
                else f"The training loss did not fall ({self.first.loss:.4f} → "
                f"{self.last.loss:.4f})."
            )
        if "no_convergence" in kinds:
            said.append("The loss stopped improving while the learning rate was high: the run "
                        "is not converging (see the findings).")  # fmt: skip
        if "loss_divergence" in kinds:
            rollbacks = sum(1 for i in self.findings if i.kind == "rollback")
            said.append(f"The loss diverged; the run rolled back {rollbacks} time"
                        f"{'s' if rollbacks != 1 else ''} to a checkpoint and skipped the data "
                        "after it.")  # fmt: skip
        spikes = sum(1 for i in self.findings if i.kind == "loss_spike")
        if spikes:
            recovered = sum(1 for i in self.findings if i.kind == "recovered")
            said.append(f"{spikes} loss spike{'s' if spikes > 1 else ''}, {recovered} recovered.")
        ooms = [i for i in self.findings if i.kind == "oom"]
        if ooms:
            last = ooms[-1].details
            said.append(
                f"{len(ooms)} CUDA out-of-memory error{'s' if len(ooms) > 1 else ''} caught: the "
                f"batch-size manager trained on at micro-batch {last.get('micro_to')}, "
                f"grad-accum {last.get('accum_to')}"
                + (
                    ", activation checkpointing on"
                    if any(i.details.get("recompute") for i in ooms)
                    else ""
                )
                + f", the global batch of {last.get('global_batch')} kept."
            )
        slow = [i for i in self.findings if i.kind == "slow_rank"]
        if slow:
            ranks = sorted({str(i.details.get("rank")) for i in slow})
            said.append(f"Slow ranks held the job back {len(slow)} time"
                        f"{'s' if len(slow) > 1 else ''} (rank {', '.join(ranks)}).")  # fmt: skip
        during = [r for r in self.evals if not r.final]
        final = [r for r in self.evals if r.final]
        if during:
            best = min(during, key=lambda r: r.loss)
            if best.step < during[-1].step and during[-1].loss > best.loss:
                said.append(
                    f"The validation loss rose from its lowest ({best.loss:.4f}, step "
                    f"{best.step:,}) to {during[-1].loss:.4f}: the model overfits its data; the "
                    "best checkpoint is the one to keep."
                )
        if self.last is not None and final:
            gap = final[-1].loss - self.last.loss
            said.append(
                f"Final evaluation minus the last logged training loss (step "
                f"{self.last.step:,}): {final[-1].loss:.4f} - {self.last.loss:.4f} = {gap:+.4f}."
            )
        if not said:
            said.append("No step completed: nothing to assess.")
        return said
