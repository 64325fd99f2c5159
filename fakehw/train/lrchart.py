"""The learning-rate schedule as a small text chart: the planned warm-up and decay,
the current step marked. The default style shows it as training starts and, on a
terminal, again at each evaluation; it is plain text (the style decides colour).

    lr 6.00e-04 ┤████▇▇▇▆▆▅▅▄▄▃▂▁▁
                │██████████████████▇▆▅▄▃▂▁
                │██████████████████████████▇▆▆▅▄▃▂▁▁
              0 ┤████████████████████████████████████▇▇▆▅▅▅▄▄▄▃▃▃
                └┬───────▲──────────────────────────────────────┬
                 0  step 50,000 (lr 5.41e-04)              286,102
                 warm-up 2,000 steps to 6.00e-04, then cosine decay to 6.00e-05
"""

from __future__ import annotations

from fakehw.train import arithmetic as ar
from fakehw.train.plan import RunPlan

BLOCKS = " ▁▂▃▄▅▆▇█"
WIDTH = 48
HEIGHT = 4


def lr_at(plan: RunPlan, step: int) -> float:
    return ar.learning_rate(step, plan.total_steps, plan.warmup_steps, plan.peak_lr, plan.schedule)


def chart(plan: RunPlan, step: int, width: int = WIDTH, height: int = HEIGHT) -> list[str]:
    """The schedule over the run's steps, one column per ``total / width`` steps, with
    a ``▲`` under the column of ``step``."""
    total = max(1, plan.total_steps)
    columns = [lr_at(plan, round((k + 0.5) * total / width)) for k in range(width)]
    top = plan.peak_lr
    levels = [max(0, min(height * 8, round(value / top * height * 8))) for value in columns]
    rows = []
    for row in range(height, 0, -1):
        cells = "".join(BLOCKS[max(0, min(8, level - (row - 1) * 8))] for level in levels)
        rows.append(cells)
    labels = [f"lr {top:.2e}", *[""] * (height - 2), "0"]
    pad = max(len(label) for label in labels)
    lines = [
        f"{label:>{pad}} {'┤' if label else '│'}{cells}"
        for label, cells in zip(labels, rows, strict=True)
    ]
    marked = min(width - 1, int(step / total * width))
    axis = ["─"] * width
    axis[0], axis[-1] = "┬", "┬"
    axis[marked] = "▲"
    lines.append(" " * pad + " └" + "".join(axis))
    here = f"step {step:,} (lr {lr_at(plan, step):.2e})"
    end = f"{plan.total_steps:,}"
    under = [" "] * (width + len(end))
    under[0] = "0"
    start = max(2, min(marked - len(here) // 2, width - len(here) - len(end) - 1))
    under[start : start + len(here)] = here
    under[width - len(end) + 1 : width + 1] = end
    lines.append(" " * (pad + 2) + "".join(under).rstrip())
    warm = f"warm-up {plan.warmup_steps:,} steps to {plan.peak_lr:.2e}, then {plan.schedule}"
    lines.append(" " * (pad + 2) + f"{warm} decay to {0.1 * plan.peak_lr:.2e}")
    return lines
