"""How a run learns: the loss it expects at a step, what a step measures (noise, fp16
overflows, spikes and their recovery), the gradient norm and DPO's rewards.

The curves come from ``arithmetic`` (Chinchilla for pretraining, a fine-tune's fall
from its base model's loss); this module adds what one step sees around them. It
knows the plan and a random stream, nothing of time, GPUs or logs: what happens that
a log should tell (an overflow, a spike, its recovery) waits in :meth:`incidents`.
"""

from __future__ import annotations

import math
import random
from typing import Any

from fakehw.train import arithmetic as ar
from fakehw.train.plan import RunPlan

DIVERGENCE_STEPS = 60  # an injected divergence grows the loss e-fold in this many steps
DIVERGENCE_GRAD_POWER = 6  # and its gradient norm e-fold in a sixth of them
FP16_INITIAL_SCALE = 65536.0


class LearningCurve:
    def __init__(self, plan: RunPlan, rng: random.Random) -> None:
        self.plan = plan
        self.rng = rng
        self.loss_noise = 0.0  # slow wander of the batches' difficulty
        self.spike = 0.0  # what a loss spike adds, decaying
        self.diverging_since: int | None = None  # --inject loss-divergence@STEP
        self.plateau_at: int | None = None  # --inject loss-plateau@STEP
        self.loss_scale = FP16_INITIAL_SCALE if plan.precision == "fp16" else None
        self.clean_steps = 0  # since the last overflow (the scaler grows after 1000)
        self.skipped = 0  # steps skipped on overflow, in all
        self.last_loss = 0.0
        self.burst = False  # the last step's gradient burst (a spike's first step)
        self._incidents: list[tuple[str, dict[str, Any]]] = []
        self._end_loss: float | None = None  # the reference loss at the planned end

    def restart(self) -> None:
        """The job restarted from a checkpoint: no spike or divergence carries over (a
        rollback skips the data that diverged)."""
        self.spike = 0.0
        self.diverging_since = None

    def diverge(self, step: int) -> None:
        """``--inject loss-divergence@STEP``: from ``step`` on, updates overshoot."""
        self.diverging_since = step

    def plateau(self, step: int) -> None:
        """``--inject loss-plateau@STEP``: the model stops learning at ``step`` (as when
        the data loader replays one shard, or most parameters are frozen by mistake)."""
        self.plateau_at = step

    def incidents(self) -> list[tuple[str, dict[str, Any]]]:
        """What the last steps did that a log tells (kind, details), once each."""
        found, self._incidents = self._incidents, []
        return found

    def expected_loss(self, step: int) -> float:
        """The training loss the curve expects at ``step`` (before noise), on the run's
        data: the reference data's, times how hard the data is (``Dataset.loss_factor``;
        a mixture's is its sources' weighted mean)."""
        reference = self.reference_loss(step)
        if self.plan.task == "dpo":
            return reference
        return reference * self._data_factor(reference)

    def learned(self, reference: float) -> float:
        """How far a model whose reference loss is ``reference`` has come from knowing
        nothing (a uniform guess, ln V, where every source's loss is the same) to what
        this run ends at: 0 .. 1. Sources differ by their ``loss_factor`` as far as the
        model has learned."""
        end = self._end_loss
        if end is None:
            self._end_loss = end = self.reference_loss(self.plan.total_steps)
        uniform = math.log(self.plan.model.arch.vocab)
        return min(1.0, max(0.0, (uniform - reference) / (uniform - end)))

    def _data_factor(self, reference: float) -> float:
        """The run's data against the reference data where the reference loss is
        ``reference``: a mixture's sources' weighted mean (``fakehw.train.mixture``)."""
        return sum(w * f for w, f in zip(*self._factors(reference), strict=True))

    def source_factors(self, step: int) -> tuple[list[float], list[float]]:
        """The data's sources, as (weights, loss factors at ``step``)."""
        return self._factors(self.reference_loss(step))

    def _factors(self, reference: float) -> tuple[list[float], list[float]]:
        plan = self.plan
        sources = (
            [(s.weight, s.dataset.loss_factor) for s in plan.mixture.sources]
            if plan.mixture
            else [(1.0, plan.dataset.loss_factor)]
        )
        learned = self.learned(reference)
        return [w for w, _ in sources], [1 + (f - 1) * learned for _, f in sources]

    def reference_loss(self, step: int) -> float:
        """The loss at ``step`` on the reference data of the task's kind (web text for
        pretraining, English chat for fine-tunes), what benchmarks follow."""
        plan = self.plan
        if self.plateau_at is not None:
            step = min(step, self.plateau_at)
        arch = plan.model.arch
        progress = step / plan.total_steps
        epoch = step / plan.steps_per_epoch
        if plan.task == "pretrain":
            capacity = math.sqrt(arch.params * arch.active_params)
            tokens = ar.effective_tokens(step, plan.warmup_steps, plan.tokens_per_step)
            return ar.pretrain_loss(capacity, tokens, arch.vocab)
        if plan.task == "dpo":
            return 0.6931 - (0.6931 - 0.41) * (1 - math.exp(-progress * 5))
        start, final = self.finetune_ends()
        return ar.finetune_loss(start, final, progress, epoch)

    def finetune_ends(self) -> tuple[float, float]:
        """A fine-tune's loss on the reference data: from its base model's, towards its
        floor (a LoRA's adapters reach less far than a full fine-tune)."""
        arch = self.plan.model.arch
        if self.plan.task == "lora":
            return 1.2, 0.68
        return 1.55 - 0.05 * math.log10(arch.params / 1e9), 0.92 - 0.08 * math.log10(
            arch.params / 1e9
        )

    def heldout_loss(self, step: int) -> float:
        """The loss the curve expects on held-out data (validation, probes).

        Pretraining sees every token once: held-out loss is the training loss and a
        small gap. A fine-tune's training loss steps down at each new epoch as it
        memorises its examples; held-out data does not: its loss follows the curve
        without those steps, then rises as the model overfits past its first epoch,
        so validation has a minimum (where early stopping and the best checkpoint
        land) and climbs in the last epochs."""
        plan = self.plan
        if self.plateau_at is not None:
            step = min(step, self.plateau_at)
        epoch = step / plan.steps_per_epoch
        if plan.task == "pretrain":
            return self.expected_loss(step) + 0.03
        if plan.task == "dpo":
            return self.expected_loss(step) + 0.04 + 0.03 * epoch
        start, final = self.finetune_ends()
        generalises = ar.finetune_loss(start, final, step / plan.total_steps, 0.0)
        overfit = (0.05 if plan.task == "sft" else 0.03) * (start - final)
        held_out = generalises + 0.04 + overfit * math.pow(max(0.0, epoch - 1.0), 1.5)
        return held_out * self._data_factor(self.reference_loss(step))

    def overconfidence(self, step: int) -> float:
        """How much sharper than the data the model's predictions are: little for a model
        trained on fresh tokens; a fine-tune grows overconfident as it sees its examples
        again (epoch after epoch), the calibration drift of fine-tuned models."""
        if self.plan.task == "pretrain":
            return 0.02  # pretrained LMs are close to calibrated, a little overconfident
        return 0.04 + 0.05 * step / self.plan.steps_per_epoch

    def sample(self, step: int, lr: float) -> tuple[float, float, bool]:
        """Step ``step``'s loss and gradient norm, and whether fp16 skipped it: the
        expected curve, noise, overflows and spikes."""
        rng = self.rng
        expected = self.expected_loss(step)
        # Batch-to-batch noise shrinks with the batch; fine-tuning data is more
        # varied than web text, so its loss wanders more.
        base = 0.005 if self.plan.task == "pretrain" else 0.02
        noise = base * math.sqrt(1e6 / self.plan.tokens_per_step)
        self.loss_noise = 0.9 * self.loss_noise + 0.1 * rng.gauss(0, 3 * noise)
        skipped = self._scale_loss(step)
        grad_norm = self.expected_grad_norm(step, lr) * math.exp(rng.gauss(0, 0.12))
        self.burst = self.plan.task == "pretrain" and step > 300 and rng.random() < 1 / 1500
        if self.burst:  # a loss spike: the monitor (fakehw.train.anomalies) finds it
            self.spike = expected * rng.uniform(0.08, 0.35)
            grad_norm *= rng.uniform(8, 40)
        else:
            self.spike *= 0.9
        loss = expected * (1 + self.loss_noise + rng.gauss(0, noise)) + self.spike
        if self.diverging_since is not None:
            # too large an update for the loss surface here: each step overshoots more,
            # the gradients grow far faster than the loss (clipped, they no longer help)
            growth = math.exp((step - self.diverging_since) / DIVERGENCE_STEPS)
            loss *= growth
            grad_norm *= growth**DIVERGENCE_GRAD_POWER
        if skipped and self.last_loss:
            loss = self.last_loss
        self.last_loss = loss
        return loss, grad_norm, skipped

    def _scale_loss(self, step: int) -> bool:
        """fp16's dynamic loss scaler: an overflow halves the scale and skips the step;
        1000 clean steps double it."""
        if self.loss_scale is None:
            return False
        self.clean_steps += 1
        if self.rng.random() < (0.02 if step < 200 else 0.002):
            old = self.loss_scale
            self.loss_scale = max(1.0, self.loss_scale / 2)
            self.skipped += 1
            self.clean_steps = 0
            self._incidents.append(("overflow", {"old": old, "new": self.loss_scale}))
            return True
        if self.clean_steps >= 1000:
            self.loss_scale *= 2
            self.clean_steps = 0
        return False

    def expected_grad_norm(self, step: int, lr: float) -> float:
        plan = self.plan
        if plan.task == "pretrain":
            return 0.22 + 9.0 * math.exp(-step / 120) + 0.15 * lr / plan.peak_lr
        if plan.task == "dpo":
            return 12.0 + 20.0 * math.exp(-step / 40)
        return 0.45 + 1.2 * math.exp(-step / 80)

    def dpo_metrics(self, step: int) -> dict[str, float]:
        """TRL's reward figures: the chosen answers' margin over the rejected grows."""
        progress = step / self.plan.total_steps
        rng = self.rng
        margin = 2.6 * (1 - math.exp(-progress * 4)) + rng.gauss(0, 0.08)
        chosen = 0.35 * margin - 0.6 * progress + rng.gauss(0, 0.05)
        return {
            "rewards/chosen": chosen,
            "rewards/rejected": chosen - margin,
            "rewards/accuracies": min(
                0.97, 0.5 + 0.32 * (1 - math.exp(-progress * 5)) + rng.gauss(0, 0.01)
            ),
            "rewards/margins": margin,
        }
