"""The learning-rate schedule the default style draws: the plan's warm-up and decay,
the current step marked; at the start, and again at evaluations on a terminal."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import wait_for

from fakehw.specs import lookup
from fakehw.train import arithmetic as ar
from fakehw.train.lrchart import chart
from fakehw.train.plan import make_plan

RUN = ["--task", "sft", "--gpus", "8", "--seed", "5", "--speed-factor", "1000"]


def test_the_chart_follows_the_plans_schedule() -> None:
    plan = make_plan(seed=1, task="sft", style="default", gpu=lookup("h100"), nodes=1,
                     gpus_per_node=8)  # fmt: skip
    lines = chart(plan, plan.total_steps // 2, width=40, height=4)
    bars = [line.split("┤" if "┤" in line else "│", 1)[1] for line in lines[:4]]
    heights = [sum(" ▁▂▃▄▅▆▇█".index(row[k]) for row in bars) for k in range(40)]
    peak = max(range(40), key=heights.__getitem__)
    assert peak <= 2 and heights[-1] < heights[peak] / 4  # warm-up first, decayed at the end
    assert all(a >= b for a, b in zip(heights[peak:], heights[peak + 1 :], strict=False))
    axis = lines[4]
    assert axis.index("▲") - axis.index("└") - 1 == 20  # half-way along
    half = ar.learning_rate(plan.total_steps // 2, plan.total_steps, plan.warmup_steps,
                            plan.peak_lr, plan.schedule)  # fmt: skip
    assert f"step {plan.total_steps // 2:,} (lr {half:.2e})" in lines[5]
    assert lines[0].startswith(f"lr {plan.peak_lr:.2e} ┤")
    assert f"warm-up {plan.warmup_steps:,} steps" in lines[6]


def test_on_a_pipe_the_chart_is_plain_text_once(runtime_dir) -> None:  # type: ignore[no-untyped-def]
    command = [sys.executable, "-m", "fakehw.train", *RUN, "--exit-after-steps", "250"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.count("└") == 1 and "\x1b" not in out  # drawn once, no colour codes
    assert re.search(r"step 0 \(lr 0\.00e\+00\)", out)
    assert out.index("└") < out.index("validation at step 100")


def test_on_a_terminal_it_is_redrawn_at_each_evaluation(tmux) -> None:  # type: ignore[no-untyped-def]
    tmux("send-keys", "-t", "t",
         f"{sys.executable} -m fakehw.train {' '.join(RUN)} --exit-after-steps 250; "
         "echo EXIT=$?", "Enter")  # fmt: skip

    def history() -> str:
        return tmux("capture-pane", "-p", "-t", "t", "-S", "-3000")

    text = wait_for(lambda: re.search(r"^EXIT=\d+", h := history(), re.MULTILINE) and h,
                    timeout=120)  # fmt: skip
    marks = re.findall(r"step ([\d,]+) \(lr ([\d.e+-]+)\)", text)
    assert [m[0] for m in marks][:3] == ["0", "100", "200"]
    evals = re.findall(r"validation at step (\d+)", text)
    assert evals[:2] == ["100", "200"]
    logged = dict(re.findall(r"step +(\d+)/\d+ │ loss [\d.]+ │ ppl [\d.]+ │ lr ([\d.e+-]+)", text))
    assert float(logged["100"]) == float(marks[1][1])  # the mark's lr is the log's
