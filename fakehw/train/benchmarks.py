"""lm-evaluation-harness at the end of a run: the tasks, what they cost, and the
scores a model gets on them.

The four English tasks run on every exported model. A run whose data holds Chinese
(``Dataset.language == "zh"``) also runs Chinese tasks: MMLU-ProX's Chinese set and
MGSM's Chinese set with native chain of thought, scored for the models whose
published scores exist (``catalog.PUBLISHED_CHINESE``); for the others the harness is
not asked for them, and the log says so.

A score is ``k`` of the task's ``items`` right, drawn around the expected score: a
fine-tune starts from the published model (its published score); a model trained from
scratch scores what its loss allows (near chance at first; MMLU and GSM8K only once the
loss is low). A quantized copy of the exported model (``--quantize``) answers the same
questions, with what its held-out loss lost taken off each task's score above chance
(``fakehw.train.quantize.SCORE_SENSITIVITY``): the same draw, so its every score is at
most the bf16 model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fakehw.train import quantize as quant
from fakehw.train.events import BenchmarkRow


@dataclass(frozen=True)
class BenchmarkTask:
    """An lm-evaluation-harness task as its table reports it."""

    name: str
    version: int
    metric: str
    shots: int
    items: int  # questions scored: every value is a count of them over this
    requests: int  # what the harness asks the model: an answer choice each, or a generation
    chance: float
    # How the score comes with the loss of a model trained from scratch: half-way
    # from chance to the model's full-training score at ``midpoint_loss``, over
    # ``width`` of loss (MMLU and GSM8K appear late: near chance until the loss is low).
    midpoint_loss: float
    width: float
    prompt_tokens: int  # per request: the few-shot prompt and the scored continuation
    generated_tokens: int = 0  # per request, for a generate_until task (0: loglikelihood)
    # The answer filters the harness applies to a generation, with the share of the
    # answers each keeps (GSM8K's strict "#### 42" loses those given in another form).
    filters: tuple[tuple[str, float], ...] = (("none", 1.0),)

    @property
    def generated(self) -> bool:
        return self.generated_tokens > 0


STRICT_SHARE = 0.96  # of a chain of thought's answers, those in the exact "#### 42" form
EXTRACT_FILTERS = (("flexible-extract", 1.0), ("strict-match", STRICT_SHARE))

# fmt: off
ENGLISH_TASKS = (
    # HellaSwag 4 endings of ~100 tokens, ARC-Easy's short choices, MMLU 5-shot prompts
    # of ~600 tokens with 4 choices, GSM8K's 5-shot prompts and generations
    BenchmarkTask("hellaswag", 1, "acc_norm", 0, 10042, 40168, 0.25, 2.45, 0.30, 110),
    BenchmarkTask("arc_easy", 1, "acc", 0, 2376, 9501, 0.25, 2.50, 0.30, 60),
    BenchmarkTask("mmlu", 2, "acc", 5, 14042, 56168, 0.25, 2.05, 0.10, 620),
    BenchmarkTask("gsm8k", 3, "exact_match", 5, 1319, 1319, 0.0, 1.95, 0.10, 900, 256,
                  EXTRACT_FILTERS),
)
CHINESE_TASKS = (
    # MMLU-ProX (MMLU-Pro's 11,829 questions translated, 10 options), 5-shot chain of
    # thought, the answer letter read by the task's own regular expression
    BenchmarkTask("mmlu_prox_zh", 0, "exact_match", 5, 11829, 11829, 0.1, 1.95, 0.10, 2200,
                  400, (("custom-extract", 1.0),)),
    # MGSM's 250 grade-school problems in Chinese, reasoned in Chinese
    BenchmarkTask("mgsm_native_cot_zh", 3, "exact_match", 8, 250, 250, 0.0, 1.95, 0.10, 1400,
                  256, EXTRACT_FILTERS),
)
# fmt: on


def tasks_for(languages: set[str]) -> tuple[BenchmarkTask, ...]:
    """The tasks a run's data calls for: Chinese ones where it trains on Chinese."""
    return ENGLISH_TASKS + (CHINESE_TASKS if "zh" in languages else ())


def expected_score(task: BenchmarkTask, full_training: float, loss: float | None) -> float:
    """The expected score: the published score of the model's full training
    (``full_training``) when the run starts from it (``loss`` None: fine-tuning),
    else where the run's loss has brought a model trained from scratch."""
    if loss is None:
        return full_training
    progress = 1.0 / (1.0 + math.exp((loss - task.midpoint_loss) / task.width))
    return task.chance + (full_training - task.chance) * progress


def quantized_score(task: BenchmarkTask, expected: float, loss_increase: float) -> float:
    """The expected score of a quantized copy whose held-out loss is ``loss_increase``
    nats higher: its share above chance shrinks by exp(-sensitivity x increase)."""
    sensitivity = quant.SCORE_SENSITIVITY["generate_until" if task.generated else "loglikelihood"]
    above = max(0.0, expected - task.chance)
    return task.chance + above * math.exp(-sensitivity * loss_increase)


def result(task: BenchmarkTask, expected: float, noise: float) -> tuple[float, float]:
    """(value, stderr) as the harness reports them: ``k`` of the task's items right,
    ``noise`` standard deviations of sampling from ``expected``; the stderr of a mean
    of 0/1 scores, sqrt(p (1 - p) / (n - 1))."""
    n = task.items
    spread = math.sqrt(max(expected * (1 - expected), 1e-9) / n)
    right = min(n, max(0, round((expected + noise * spread) * n)))
    value = right / n
    return value, math.sqrt(value * (1 - value) / (n - 1))


def rows(task: BenchmarkTask, expected: float, noise: float) -> list[BenchmarkRow]:
    """The table's rows of one task: one per answer filter (the same generations)."""
    out = []
    for name, share in task.filters:
        value, stderr = result(task, expected * share, noise)
        out.append(BenchmarkRow(task.name, task.version, task.metric, task.shots, value,
                                stderr, name))  # fmt: skip
    return out


def scored_tokens(tasks: tuple[BenchmarkTask, ...]) -> int:
    """The prompt and choice tokens the harness's requests put through the model."""
    return sum(t.requests * t.prompt_tokens for t in tasks)


def generated_tokens(tasks: tuple[BenchmarkTask, ...]) -> int:
    """The tokens the generate_until tasks decode."""
    return sum(t.requests * t.generated_tokens for t in tasks)
